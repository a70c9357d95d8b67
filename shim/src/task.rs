//! The ttrpc Task service: containerd's requests translated onto the model
//! (`vxn_runtime_core::model::container`), answers and errors translated back. No
//! decision about a container is made here; events come from the model.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api::{self, *};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext};
use containerd_shim_protos::types::task::Status as ApiStatus;
use tokio::sync::{Mutex, Notify, RwLock};
use vxn_runtime_core::config::Config;
use vxn_runtime_core::ids::ExecId;
use vxn_runtime_core::model::container::{Container, CreateRequest, RootfsSource, TaskStatus};
use vxn_runtime_core::model::pod::{Pod, PodRequest, Role};
use vxn_runtime_core::model::process::Exit;
use vxn_runtime_core::model::task::Task as ModelTask;
use vxn_runtime_core::names::ContainerName;
use vxn_runtime_core::oci;

use crate::error::{to_ttrpc, Error, Result};
use crate::events::{timestamp, Events, TaskEvents};
use crate::io::StdioPaths;
use crate::metrics;
use vxn_runtime_core::platform::Platform;

/// A task as this shim holds it: a container whose stdio is containerd's
/// fifos, or a pod's sandbox (this shim then serves the pod's containers too).
type VxnTask = ModelTask<StdioPaths>;

pub struct TaskService {
    pub namespace: String,
    pub cfg: Arc<Config>,
    /// The VM backend, or why the config gives none.
    pub platform: std::result::Result<Platform, String>,
    pub events: Events,
    pub exit: Arc<ExitSignal>,
    tasks: RwLock<HashMap<String, VxnTask>>,
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

/// The shape of every handler: counted as in flight, failures logged with
/// the method and mapped to their ttrpc code.
async fn serve<T>(
    busy: &Arc<Busy>,
    method: &'static str,
    id: &str,
    f: impl Future<Output = Result<T>>,
) -> ttrpc::Result<T> {
    let _busy = busy.enter();
    f.await.map_err(|e| {
        tracing::warn!(method, id, error = %e, "request failed");
        to_ttrpc(e)
    })
}

fn api_status(s: TaskStatus) -> ApiStatus {
    match s {
        TaskStatus::Created => ApiStatus::CREATED,
        TaskStatus::Running => ApiStatus::RUNNING,
        TaskStatus::Paused => ApiStatus::PAUSED,
        TaskStatus::Stopped => ApiStatus::STOPPED,
    }
}

type ApiTimestamp =
    MessageField<containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp>;

fn exit_fields(e: Option<Exit>) -> (u32, ApiTimestamp) {
    match e {
        Some(e) => (e.code, MessageField::some(timestamp(e.at))),
        None => (0, MessageField::none()),
    }
}

fn stdio(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> StdioPaths {
    StdioPaths {
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
        terminal,
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

    async fn task(&self, id: &str) -> Result<VxnTask> {
        self.tasks
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("task {id} not found")))
    }

    async fn create_task(&self, req: &CreateTaskRequest) -> Result<CreateTaskResponse> {
        let _g = self.creating.lock().await;
        if self.tasks.read().await.contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "task {} already exists",
                req.id
            )));
        }
        if !req.checkpoint.is_empty() {
            return Err(Error::Unimplemented(
                "checkpoint/restore is not supported by vxn".into(),
            ));
        }
        let name = ContainerName::new(&self.namespace, &req.id)?;
        let (hv, exporter) = self.platform.clone().map_err(Error::FailedPrecondition)?;
        let paths = stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let events = Arc::new(TaskEvents {
            events: self.events.clone(),
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            stdio: paths.clone(),
            pid: std::process::id(),
        });
        let bundle = PathBuf::from(&req.bundle);
        let role = Role::of(&oci::load(&bundle)?.annotations)?;
        if role == Role::PodSandbox {
            // Nothing runs for the pause image: its snapshot is never mounted.
            let pod = Pod::create(PodRequest { name, bundle }, &self.cfg, hv, exporter, events);
            let task = ModelTask::Sandbox(pod.await?);
            self.tasks.write().await.insert(req.id.clone(), task);
            return Ok(CreateTaskResponse {
                pid: std::process::id(),
                ..Default::default()
            });
        }
        let rootfs = match (req.rootfs.is_empty(), snapshot_layers(&req.rootfs)) {
            (true, _) => RootfsSource::Bundle,
            (false, Some(layers)) => RootfsSource::Layers {
                layers,
                mount: mount_snapshot(req.rootfs.clone()),
            },
            (false, None) => RootfsSource::Mount(mount_snapshot(req.rootfs.clone())),
        };
        let request = CreateRequest {
            name,
            bundle,
            rootfs,
            stdio: paths,
            network: None,
        };
        let task = match role {
            Role::PodMember { sandbox_id } => {
                let pod = self.task(&sandbox_id).await.ok();
                let pod = pod.as_ref().and_then(VxnTask::as_pod).ok_or_else(|| {
                    Error::NotFound(format!(
                        "pod sandbox {sandbox_id} of container {} is not served by this shim",
                        req.id
                    ))
                })?;
                Container::create_in_pod(pod.clone(), request, &self.cfg, exporter, events).await?
            }
            _ => Container::create(request, &self.cfg, hv, exporter, events).await?,
        };
        self.tasks
            .write()
            .await
            .insert(req.id.clone(), ModelTask::Container(task));
        Ok(CreateTaskResponse {
            pid: std::process::id(),
            ..Default::default()
        })
    }
}

/// The layers of containerd's snapshot when it is one overlay mount with
/// layers vxn accepts; anything else (a bind, odd paths) is mounted as given.
fn snapshot_layers(
    mounts: &[containerd_shim_protos::types::mount::Mount],
) -> Option<vxn_runtime_core::storage::layers::Layers> {
    let [m] = mounts else { return None };
    if m.type_ != "overlay" {
        return None;
    }
    match vxn_runtime_core::storage::layers::Layers::from_overlay_options(&m.options) {
        Ok(l) if l.fit_one_mount() => Some(l),
        Ok(l) => {
            tracing::info!(
                layers = l.lower.len(),
                "a long layer chain is mounted and copied, not layered"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "overlay snapshot mounted and copied, not layered");
            None
        }
    }
}

/// Mount containerd's snapshot (the mounts of a CreateTaskRequest).
fn mount_snapshot(
    mounts: Vec<containerd_shim_protos::types::mount::Mount>,
) -> vxn_runtime_core::model::container::create::MountRootfs {
    Box::new(move |target| {
        for m in &mounts {
            let fstype = (!m.type_.is_empty()).then_some(m.type_.as_str());
            let source = (!m.source.is_empty()).then_some(m.source.as_str());
            containerd_shim::mount::mount_rootfs(fstype, source, &m.options, target)
                .map_err(|e| Error::Internal(format!("mount rootfs {}: {e}", target.display())))?;
        }
        Ok(())
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
        serve(&self.busy, "create", &req.id, self.create_task(&req)).await
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        serve(&self.busy, "start", &req.id, async {
            self.task(&req.id)
                .await?
                .start(&ExecId::from_api(&req.exec_id))
                .await?;
            Ok(StartResponse {
                pid: std::process::id(),
                ..Default::default()
            })
        })
        .await
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        serve(&self.busy, "delete", &req.id, async {
            let task = self.task(&req.id).await?;
            let exec = ExecId::from_api(&req.exec_id);
            let exit = task.delete(&exec).await?;
            if exec.is_init() {
                self.tasks.write().await.remove(&req.id);
            }
            let (exit_status, exited_at) = exit_fields(Some(exit));
            Ok(api::DeleteResponse {
                pid: std::process::id(),
                exit_status,
                exited_at,
                ..Default::default()
            })
        })
        .await
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        serve(&self.busy, "state", &req.id, async {
            let task = self.task(&req.id).await?;
            let st = task.state(&ExecId::from_api(&req.exec_id))?;
            let (exit_status, exited_at) = exit_fields(st.exit);
            let none = stdio("", "", "", false);
            let io = st.process.as_ref().map_or(&none, |p| &p.stdio);
            Ok(StateResponse {
                id: req.id.clone(),
                bundle: task.bundle().to_string_lossy().into_owned(),
                pid: std::process::id(),
                status: api_status(st.status).into(),
                stdin: io.stdin.clone(),
                stdout: io.stdout.clone(),
                stderr: io.stderr.clone(),
                terminal: io.terminal,
                exit_status,
                exited_at,
                exec_id: req.exec_id.clone(),
                ..Default::default()
            })
        })
        .await
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        serve(&self.busy, "wait", &req.id, async {
            let task = self.task(&req.id).await?;
            let exit = task.wait(&ExecId::from_api(&req.exec_id)).await?;
            let (exit_status, exited_at) = exit_fields(Some(exit));
            Ok(WaitResponse {
                exit_status,
                exited_at,
                ..Default::default()
            })
        })
        .await
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<api::Empty> {
        tracing::info!(id = %req.id, exec_id = %req.exec_id, signal = req.signal, all = req.all, "kill");
        serve(&self.busy, "kill", &req.id, async {
            self.task(&req.id)
                .await?
                .kill(&ExecId::from_api(&req.exec_id), req.signal, req.all)
                .await?;
            Ok(api::Empty::new())
        })
        .await
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<api::Empty> {
        serve(&self.busy, "exec", &req.id, async {
            let task = self.task(&req.id).await?;
            let exec = ExecId::new_exec(&req.exec_id)?;
            let value = req
                .spec
                .as_ref()
                .map(|a| a.value.as_slice())
                .unwrap_or_default();
            let process: oci::Process = serde_json::from_slice(value)
                .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))?;
            let paths = stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal);
            task.exec(&exec, process.to_agent(), paths).await?;
            Ok(api::Empty::new())
        })
        .await
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: ResizePtyRequest,
    ) -> ttrpc::Result<api::Empty> {
        serve(&self.busy, "resize_pty", &req.id, async {
            self.task(&req.id)
                .await?
                .resize_pty(&ExecId::from_api(&req.exec_id), req.height, req.width)
                .await?;
            Ok(api::Empty::new())
        })
        .await
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: CloseIORequest,
    ) -> ttrpc::Result<api::Empty> {
        serve(&self.busy, "close_io", &req.id, async {
            self.task(&req.id)
                .await?
                .close_io(&ExecId::from_api(&req.exec_id))?;
            Ok(api::Empty::new())
        })
        .await
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<api::Empty> {
        serve(&self.busy, "pause", &req.id, async {
            self.task(&req.id).await?.pause().await?;
            Ok(api::Empty::new())
        })
        .await
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<api::Empty> {
        serve(&self.busy, "resume", &req.id, async {
            self.task(&req.id).await?.resume().await?;
            Ok(api::Empty::new())
        })
        .await
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        serve(&self.busy, "pids", &req.id, async {
            let procs = self.task(&req.id).await?.pids().await?;
            Ok(PidsResponse {
                processes: metrics::process_list(&procs),
                ..Default::default()
            })
        })
        .await
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        serve(&self.busy, "stats", &req.id, async {
            let (stats, cpu) = self.task(&req.id).await?.stats().await?;
            let format = metrics::Format::from_config(&self.cfg.metrics)?;
            Ok(StatsResponse {
                stats: MessageField::some(metrics::to_any(&stats, cpu, format)?),
                ..Default::default()
            })
        })
        .await
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        serve(&self.busy, "update", &req.id, async {
            let task = self.task(&req.id).await?;
            let res = oci::parse_resources(&req.resources.value)?;
            task.update(oci::limit_mib(&res), oci::vcpus(&res)).await?;
            Ok(api::Empty::new())
        })
        .await
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: CheckpointTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        serve(&self.busy, "checkpoint", &req.id, async {
            Err(Error::Unimplemented(
                "checkpoint is not supported by vxn".into(),
            ))
        })
        .await
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let pid = std::process::id();
        let has_task = self.tasks.read().await.contains_key(&req.id);
        Ok(ConnectResponse {
            shim_pid: pid,
            task_pid: if has_task { pid } else { 0 },
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

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
