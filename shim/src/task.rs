//! The ttrpc Task service: a thin translation between containerd's API and
//! [`Instance`]. Events are published here, in the order containerd expects.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api::{self, *};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext};
use containerd_shim_protos::types::task::Status as ApiStatus;
use tokio::sync::{Mutex, Notify, RwLock};

use crate::config::Config;
use crate::error::{Result, ShimError};
use crate::events::Events;
use crate::instance::{timestamp, CreateParams, Exit, Instance, Status};
use crate::io::StdioPaths;
use crate::service::Platform;
use crate::{metrics, spec};

pub struct TaskService {
    pub namespace: String,
    pub cfg: Arc<Config>,
    /// The VM backend, or why the config gives none.
    pub platform: std::result::Result<Platform, String>,
    pub events: Events,
    pub exit: Arc<ExitSignal>,
    tasks: RwLock<HashMap<String, Arc<Instance>>>,
    /// Serializes Create so an id is checked and claimed atomically.
    creating: Mutex<()>,
    /// Requests being served: the shim exits only once they are answered.
    busy: Arc<Busy>,
}

/// How long Shutdown lets requests in flight finish before the shim exits.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// Counts requests in flight. The ttrpc server drops unfinished handlers when
/// the shim exits: a Kill whose exit event let `ctr run --rm` delete the task
/// (and shut the shim down) must still get its answer.
#[derive(Default)]
pub struct Busy {
    n: AtomicUsize,
    idle: Notify,
}

pub struct BusyGuard(Arc<Busy>);

impl Busy {
    fn enter(self: &Arc<Self>) -> BusyGuard {
        self.n.fetch_add(1, Ordering::SeqCst);
        BusyGuard(self.clone())
    }

    async fn idle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let notified = self.idle.notified();
                if self.n.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl TaskService {
    pub fn new(
        namespace: String,
        cfg: Arc<Config>,
        platform: std::result::Result<Platform, String>,
        events: Events,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Self {
            namespace,
            cfg,
            platform,
            events,
            exit,
            tasks: RwLock::default(),
            creating: Mutex::default(),
            busy: Arc::default(),
        }
    }

    async fn task(&self, id: &str) -> Result<Arc<Instance>> {
        self.tasks
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("task {id} not found")))
    }

    fn status(s: Status) -> ApiStatus {
        match s {
            Status::Created => ApiStatus::CREATED,
            Status::Running => ApiStatus::RUNNING,
            Status::Paused => ApiStatus::PAUSED,
            Status::Stopped => ApiStatus::STOPPED,
        }
    }
}

fn exit_fields(
    e: Option<Exit>,
) -> (
    u32,
    MessageField<containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp>,
) {
    match e {
        Some(e) => (e.code, MessageField::some(timestamp(e.at))),
        None => (0, MessageField::none()),
    }
}

/// Run a handler, logging failures with the method name.
fn log_result<T>(method: &str, id: &str, r: Result<T>) -> ttrpc::Result<T> {
    r.map_err(|e| {
        tracing::warn!(method, id, error = %e, "request failed");
        e.into()
    })
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        tracing::info!(id = %req.id, bundle = %req.bundle, "create");
        let _busy = self.busy.enter();
        let r = async {
            let _g = self.creating.lock().await;
            if self.tasks.read().await.contains_key(&req.id) {
                return Err(ShimError::AlreadyExists(format!(
                    "task {} already exists",
                    req.id
                )));
            }
            if !req.checkpoint.is_empty() {
                return Err(ShimError::Unimplemented(
                    "checkpoint/restore is not supported by vxn".into(),
                ));
            }
            let params = CreateParams {
                id: req.id.clone(),
                namespace: self.namespace.clone(),
                bundle: PathBuf::from(&req.bundle),
                rootfs: req.rootfs.clone(),
                stdio: StdioPaths {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
            };
            let (hv, exporter) = self
                .platform
                .clone()
                .map_err(|e| ShimError::InvalidArgument(format!("/etc/vxn/config.toml: {e}")))?;
            let inst =
                Instance::create(params, &self.cfg, hv, exporter, self.events.clone()).await?;
            self.tasks
                .write()
                .await
                .insert(req.id.clone(), inst.clone());
            self.events.send(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(inst.task_io()),
                pid: inst.shim_pid,
                ..Default::default()
            });
            Ok(CreateTaskResponse {
                pid: inst.shim_pid,
                ..Default::default()
            })
        }
        .await;
        log_result("create", &req.id, r)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let _busy = self.busy.enter();
        let r = async {
            let inst = self.task(&req.id).await?;
            inst.start(&req.exec_id).await?;
            if req.exec_id.is_empty() {
                self.events.send(TaskStart {
                    container_id: req.id.clone(),
                    pid: inst.shim_pid,
                    ..Default::default()
                });
            } else {
                self.events.send(TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid: inst.shim_pid,
                    ..Default::default()
                });
            }
            Ok(StartResponse {
                pid: inst.shim_pid,
                ..Default::default()
            })
        }
        .await;
        log_result("start", &req.id, r)
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        let _busy = self.busy.enter();
        let r = async {
            let inst = self.task(&req.id).await?;
            let exit = if req.exec_id.is_empty() {
                let exit = inst.delete().await?;
                self.tasks.write().await.remove(&req.id);
                let (exit_status, exited_at) = exit_fields(Some(exit));
                self.events.send(TaskDelete {
                    container_id: req.id.clone(),
                    pid: inst.shim_pid,
                    exit_status,
                    exited_at,
                    id: req.id.clone(),
                    ..Default::default()
                });
                exit
            } else {
                inst.delete_exec(&req.exec_id).await?
            };
            let (exit_status, exited_at) = exit_fields(Some(exit));
            Ok(api::DeleteResponse {
                pid: inst.shim_pid,
                exit_status,
                exited_at,
                ..Default::default()
            })
        }
        .await;
        log_result("delete", &req.id, r)
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let _busy = self.busy.enter();
        let r = async {
            let inst = self.task(&req.id).await?;
            let p = inst.process(&req.exec_id)?;
            let (exit_status, exited_at) = exit_fields(p.exit());
            Ok(StateResponse {
                id: req.id.clone(),
                bundle: inst.bundle.to_string_lossy().into_owned(),
                pid: inst.shim_pid,
                status: Self::status(inst.status(&p)).into(),
                stdin: p.paths.stdin.clone(),
                stdout: p.paths.stdout.clone(),
                stderr: p.paths.stderr.clone(),
                terminal: p.paths.terminal,
                exit_status,
                exited_at,
                exec_id: req.exec_id.clone(),
                ..Default::default()
            })
        }
        .await;
        log_result("state", &req.id, r)
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let _busy = self.busy.enter();
        let r = async {
            let p = self.task(&req.id).await?.process(&req.exec_id)?;
            let (exit_status, exited_at) = exit_fields(Some(p.wait().await));
            Ok(WaitResponse {
                exit_status,
                exited_at,
                ..Default::default()
            })
        }
        .await;
        log_result("wait", &req.id, r)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<api::Empty> {
        tracing::info!(id = %req.id, exec_id = %req.exec_id, signal = req.signal, all = req.all, "kill");
        let _busy = self.busy.enter();
        let r = async {
            self.task(&req.id)
                .await?
                .kill(&req.exec_id, req.signal, req.all)
                .await?;
            Ok(api::Empty::new())
        }
        .await;
        log_result("kill", &req.id, r)
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<api::Empty> {
        let _busy = self.busy.enter();
        let r = async {
            let inst = self.task(&req.id).await?;
            let value = req
                .spec
                .as_ref()
                .map(|a| a.value.as_slice())
                .unwrap_or_default();
            let process: spec::Process = serde_json::from_slice(value)
                .map_err(|e| ShimError::InvalidArgument(format!("exec process spec: {e}")))?;
            if process.args.is_empty() {
                return Err(ShimError::InvalidArgument(
                    "exec args must not be empty".into(),
                ));
            }
            let paths = StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            };
            inst.exec(&req.exec_id, process, paths).await?;
            self.events.send(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            });
            Ok(api::Empty::new())
        }
        .await;
        log_result("exec", &req.id, r)
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: ResizePtyRequest,
    ) -> ttrpc::Result<api::Empty> {
        let _busy = self.busy.enter();
        let r = async {
            self.task(&req.id)
                .await?
                .resize_pty(&req.exec_id, req.height, req.width)
                .await?;
            Ok(api::Empty::new())
        }
        .await;
        log_result("resize_pty", &req.id, r)
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: CloseIORequest,
    ) -> ttrpc::Result<api::Empty> {
        let _busy = self.busy.enter();
        let r = async {
            self.task(&req.id).await?.close_io(&req.exec_id)?;
            Ok(api::Empty::new())
        }
        .await;
        log_result("close_io", &req.id, r)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<api::Empty> {
        let _busy = self.busy.enter();
        let r = async {
            self.task(&req.id).await?.pause().await?;
            self.events.send(TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            });
            Ok(api::Empty::new())
        }
        .await;
        log_result("pause", &req.id, r)
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<api::Empty> {
        let _busy = self.busy.enter();
        let r = async {
            self.task(&req.id).await?.resume().await?;
            self.events.send(TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            });
            Ok(api::Empty::new())
        }
        .await;
        log_result("resume", &req.id, r)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let _busy = self.busy.enter();
        let r = async {
            let procs = self.task(&req.id).await?.pids().await?;
            Ok(PidsResponse {
                processes: metrics::process_list(&procs),
                ..Default::default()
            })
        }
        .await;
        log_result("pids", &req.id, r)
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let _busy = self.busy.enter();
        let r = async {
            let (stats, cpu) = self.task(&req.id).await?.stats().await?;
            Ok(StatsResponse {
                stats: MessageField::some(metrics::to_any(
                    &stats,
                    cpu,
                    metrics::Format::from_config(&self.cfg.metrics)?,
                )?),
                ..Default::default()
            })
        }
        .await;
        log_result("stats", &req.id, r)
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        let _busy = self.busy.enter();
        let r: Result<api::Empty> = async {
            let task = self.task(&req.id).await?;
            let res = spec::parse_resources(&req.resources.value)?;
            task.update(spec::memory_mib(&res, &self.cfg), spec::vcpus(&res))
                .await?;
            Ok(api::Empty::new())
        }
        .await;
        log_result("update", &req.id, r)
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: CheckpointTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        log_result(
            "checkpoint",
            &req.id,
            Err(ShimError::Unimplemented(
                "checkpoint is not supported by vxn".into(),
            )),
        )
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let pid = std::process::id();
        let task_pid = self
            .tasks
            .read()
            .await
            .get(&req.id)
            .map(|i| i.shim_pid)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: pid,
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: ShutdownRequest,
    ) -> ttrpc::Result<api::Empty> {
        // The shim lives as long as it has a task; containerd calls Shutdown
        // after every Delete (and after a failed Create).
        if self.tasks.read().await.is_empty() {
            tracing::info!("no task left, shutting down");
            let (busy, exit) = (self.busy.clone(), self.exit.clone());
            tokio::spawn(async move {
                busy.idle(SHUTDOWN_DRAIN).await;
                // The last handler has returned; let ttrpc write its answer.
                tokio::time::sleep(Duration::from_millis(100)).await;
                exit.signal();
            });
        }
        Ok(api::Empty::new())
    }
}
