//! One container: one Xen domain, one agent connection, its processes.
//!
//! Lifecycle of the domain: Create boots it (`xl create -p`, unpause, agent
//! handshake, container prepared), then pauses it again, so a created task
//! is frozen until Start (`xl unpause`). Every process has an explicit state
//! (Created -> Running -> Exited); an illegal transition is FailedPrecondition.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::events::task::{TaskExit, TaskIO};
use tokio::sync::{watch, Notify};
use vxn_runtime_core::client::Timeouts;
use vxn_runtime_core::names::ContainerName;
use vxn_runtime_core::rootfs::RootfsExport;
use vxn_runtime_core::vm::{Hypervisor, Resize, VmError, VmSpec};
use vxn_runtime_core::AgentClient;
use vxn_wire::protocol::{CreateContainer, ErrorKind, ProcessInfo, Stats};

use crate::config::Config;
use crate::error::{Result, ShimError};
use crate::events::{Events, GuestEvents};
use crate::io::{self, StdioPaths};
use crate::spec;
use crate::state::{self, Record, StateDir};

/// How long output may still flow after an exit before we report it anyway.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);
/// What a process "exits" with when its VM vanished under it.
pub const VM_GONE_EXIT: u32 = 137;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: u32,
    pub at: SystemTime,
}

enum PState {
    Created(Option<io::ProcessIo>),
    Running { close_stdin: Arc<Notify> },
    Exited,
}

pub struct Proc {
    pub exec_id: Option<String>,
    pub paths: StdioPaths,
    state: Mutex<PState>,
    exit: watch::Sender<Option<Exit>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Proc {
    fn new(exec_id: Option<String>, paths: StdioPaths, pio: io::ProcessIo) -> Arc<Self> {
        Arc::new(Self {
            exec_id,
            paths,
            state: Mutex::new(PState::Created(Some(pio))),
            exit: watch::channel(None).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    pub fn status(&self) -> Status {
        match &*self.lock() {
            PState::Created(_) => Status::Created,
            PState::Running { .. } => Status::Running,
            PState::Exited => Status::Stopped,
        }
    }

    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.subscribe();
        let r = rx.wait_for(|e| e.is_some()).await;
        r.ok().and_then(|e| *e).unwrap_or(Exit {
            code: VM_GONE_EXIT,
            at: SystemTime::now(),
        })
    }

    fn set_exited(&self, exit: Exit) -> bool {
        *self.lock() = PState::Exited;
        let mut first = false;
        self.exit.send_if_modified(|e| {
            first = e.is_none();
            if first {
                *e = Some(exit);
            }
            first
        });
        first
    }

    fn name(&self) -> &str {
        self.exec_id.as_deref().unwrap_or("init")
    }
}

pub struct Instance {
    pub id: String,
    pub bundle: PathBuf,
    pub domain: String,
    pub shim_pid: u32,
    hv: Arc<dyn Hypervisor>,
    exporter: Arc<dyn RootfsExport>,
    agent: AgentClient,
    events: Events,
    /// The agent's OOM events, forwarded before the exits they explain.
    guest_events: Arc<GuestEvents>,
    state: StateDir,
    record: Record,
    kill_grace: Duration,
    init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    paused: Mutex<bool>,
    /// Held while the domain is destroyed for a SIGKILL; exits wait for it.
    destroying: tokio::sync::Mutex<()>,
    /// Current memory and vcpus, and the maximums the domain was created with.
    size: Mutex<spec::Sizing>,
}

/// What Create needs from containerd's request.
pub struct CreateParams {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<containerd_shim_protos::types::mount::Mount>,
    pub stdio: StdioPaths,
}

fn now() -> SystemTime {
    SystemTime::now()
}

impl Instance {
    pub async fn create(
        p: CreateParams,
        cfg: &Config,
        hv: Arc<dyn Hypervisor>,
        exporter: Arc<dyn RootfsExport>,
        events: Events,
    ) -> Result<Arc<Self>> {
        // Everything that can be checked without touching the host is checked first.
        let name = ContainerName::new(&p.namespace, &p.id)?;
        let spec = spec::load(&p.bundle)?;
        let process = spec
            .process
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("config.json has no process".into()))?;
        if process.args.is_empty() || process.args[0].is_empty() {
            return Err(ShimError::InvalidArgument(
                "process args must not be empty".into(),
            ));
        }
        let mounts = spec::mounts(&spec)?;
        let sizing = spec::sizing(&spec, cfg);
        let domain = name.domain();

        // From here on, each thing is recorded before it is made, and a failure
        // undoes exactly what the record names: never anything this create did not make.
        let state = StateDir::create(&cfg.state_dir, &name)?;
        let mut record = Record {
            backend: hv.kind().into(),
            ..Default::default()
        };
        let made = async {
            state.save(&record)?;
            let rootfs_dir = mount_rootfs(&p, &spec, &state, &mut record)?;
            let image_dir = name.dir_under(&cfg.image_dir);
            record.image_dir = Some(image_dir.clone());
            state.save(&record)?;
            // A leftover of this same (namespace, id) is ours to replace: no live
            // task of this name exists, it would own the state directory.
            let _ = std::fs::remove_dir_all(&image_dir);
            let exported = exporter
                .export(&rootfs_dir, &image_dir)
                .await
                .map_err(|e| ShimError::InvalidArgument(format!("rootfs: {e}")))?;
            tracing::info!(
                size_mib = exported.size_bytes >> 20,
                took_ms = exported.took.as_millis() as u64,
                "rootfs image built"
            );
            if hv.exists(&domain).await? {
                return Err(VmError::Exists(domain.clone()).into());
            }
            record.domain = Some(domain.clone());
            state.save(&record)?;
            let vm = VmSpec {
                name: domain.clone(),
                kernel: cfg.kernel.clone(),
                initramfs: cfg.initramfs.clone(),
                cmdline_extra: cfg.kernel_cmdline_extra.clone(),
                agent_log: cfg.agent_log_level.clone(),
                memory_mib: sizing.memory_mib,
                max_memory_mib: sizing.max_memory_mib,
                vcpus: sizing.vcpus,
                max_vcpus: sizing.max_vcpus,
                rootfs_disk: exported.disk.clone(),
                bridge: (!cfg.bridge.is_empty()).then(|| cfg.bridge.clone()),
                state_dir: state.path().to_path_buf(),
            };
            let t = std::time::Instant::now();
            let channel = match hv.create_paused(&vm).await {
                Ok(c) => c,
                Err(e @ VmError::Exists(_)) => {
                    // Not ours: it must outlive our cleanup.
                    record.domain = None;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            tracing::info!(domain = %domain, took_ms = t.elapsed().as_millis() as u64, "timing: create paused");
            let t = std::time::Instant::now();
            let timeout = Duration::from_secs(cfg.agent_timeout_secs);
            let connecting = tokio::spawn(AgentClient::connect(channel, timeout));
            hv.unpause(&domain).await?;
            let mut agent = connecting
                .await
                .map_err(|e| ShimError::Internal(e.to_string()))?
                .map_err(|e| ShimError::Unavailable(format!("guest agent of {domain}: {e}")))?;
            agent.set_timeouts(Timeouts {
                call: Duration::from_secs(cfg.agent_call_timeout_secs.max(1)),
                ..Timeouts::default()
            });
            tracing::info!(agent = agent.agent_software(), took_ms = t.elapsed().as_millis() as u64, "timing: agent ready");
            let t = std::time::Instant::now();

            let (ids, host) = agent.open_stdio(p.stdio.request())?;
            agent
                .create_container(CreateContainer {
                    container_id: p.id.clone(),
                    hostname: spec.hostname.clone(),
                    rootfs: exported.guest.clone(),
                    readonly_rootfs: spec.root.as_ref().map(|r| r.readonly).unwrap_or(false),
                    mounts,
                    process: process.to_agent(),
                    stdio: ids,
                })
                .await
                .map_err(|e| ShimError::from(e).context("create container in the guest"))?;
            // Frozen until Start.
            hv.pause(&domain).await?;
            tracing::info!(took_ms = t.elapsed().as_millis() as u64, "timing: container prepared");
            let pio = io::attach(&p.stdio, host)?;
            Ok((agent, Proc::new(None, p.stdio.clone(), pio)))
        }
        .await;

        let (agent, init) = match made {
            Ok(v) => v,
            Err(e) => {
                if let Err(left) =
                    state::teardown(&record, &state, hv.as_ref(), exporter.as_ref()).await
                {
                    tracing::error!(error = %left, "cleaning up after a failed create");
                }
                return Err(e);
            }
        };
        let guest_events = GuestEvents::start(p.id.clone(), events.clone(), agent.take_events());
        let inst = Arc::new(Self {
            id: p.id,
            bundle: p.bundle,
            domain,
            shim_pid: std::process::id(),
            hv,
            exporter,
            agent,
            events,
            guest_events,
            state,
            record,
            kill_grace: Duration::from_secs(cfg.kill_grace_secs.max(1)),
            init: init.clone(),
            execs: Mutex::default(),
            paused: Mutex::new(false),
            destroying: tokio::sync::Mutex::new(()),
            size: Mutex::new(sizing),
        });
        Ok(inst)
    }

    fn execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Proc>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The process `exec_id` names ("" = init).
    pub fn process(&self, exec_id: &str) -> Result<Arc<Proc>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs().get(exec_id).cloned().ok_or_else(|| {
            ShimError::NotFound(format!("exec {exec_id} not found in task {}", self.id))
        })
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self, p: &Proc) -> Status {
        match p.status() {
            Status::Running if self.is_paused() => Status::Paused,
            s => s,
        }
    }

    pub fn task_io(&self) -> TaskIO {
        TaskIO {
            stdin: self.init.paths.stdin.clone(),
            stdout: self.init.paths.stdout.clone(),
            stderr: self.init.paths.stderr.clone(),
            terminal: self.init.paths.terminal,
            ..Default::default()
        }
    }

    /// Start init (unpausing the domain) or a created exec.
    pub async fn start(self: &Arc<Self>, exec_id: &str) -> Result<()> {
        let p = self.process(exec_id)?;
        let pio = {
            let mut st = p.lock();
            match &mut *st {
                PState::Created(pio) => pio.take(),
                PState::Running { .. } => {
                    return Err(ShimError::FailedPrecondition(format!(
                        "process {} is already running",
                        p.name()
                    )))
                }
                PState::Exited => {
                    return Err(ShimError::FailedPrecondition(format!(
                        "process {} has already exited",
                        p.name()
                    )))
                }
            }
        };
        let Some(pio) = pio else {
            return Err(ShimError::FailedPrecondition(format!(
                "process {} is being started",
                p.name()
            )));
        };
        if self.is_paused() {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is paused",
                self.id
            )));
        }
        let exec = (!exec_id.is_empty()).then_some(exec_id);
        let t = std::time::Instant::now();
        if exec.is_none() {
            self.hv.unpause(&self.domain).await?;
        }
        match self.agent.start(&self.id, exec).await {
            Ok(pid) => tracing::info!(
                process = p.name(),
                guest_pid = pid,
                took_ms = t.elapsed().as_millis() as u64,
                "timing: process started"
            ),
            Err(e) => {
                // The process never ran: report it like a shell (127), as runc would fail it.
                p.set_exited(Exit {
                    code: 127,
                    at: now(),
                });
                return Err(ShimError::from(e).context("start"));
            }
        }
        *p.lock() = PState::Running {
            close_stdin: pio.close_stdin.clone(),
        };
        self.watch_exit(p, pio);
        Ok(())
    }

    /// Report the exit of `p` once the agent says so (or the VM is gone),
    /// after its output reached the fifos.
    fn watch_exit(self: &Arc<Self>, p: Arc<Proc>, mut pio: io::ProcessIo) {
        let inst = self.clone();
        tokio::spawn(async move {
            let exit = match inst.agent.wait(&inst.id, p.exec_id.as_deref()).await {
                Ok(st) => Exit {
                    code: st.code as u32,
                    at: UNIX_EPOCH + Duration::from_nanos(st.exited_at_ns),
                },
                Err(e) => {
                    tracing::warn!(process = p.name(), error = %e, "lost the process with its VM");
                    Exit {
                        code: VM_GONE_EXIT,
                        at: now(),
                    }
                }
            };
            // Nothing reads stdin any more; this also frees a stdin open still waiting for a writer.
            pio.close_stdin.notify_one();
            pio.wait_output(OUTPUT_DRAIN).await;
            // An exit caused by a destroy is told once the destroy is done: the
            // Kill that asked for it is answered before anyone acts on the exit.
            let _destroyed = inst.destroying.lock().await;
            inst.publish_exit(&p, exit);
        });
    }

    fn publish_exit(&self, p: &Proc, exit: Exit) {
        if !p.set_exited(exit) {
            return;
        }
        tracing::info!(process = p.name(), code = exit.code, "process exited");
        // An OOM kill the agent reported before this exit goes first.
        self.guest_events.forward_pending();
        self.events.send(TaskExit {
            container_id: self.id.clone(),
            id: p.exec_id.clone().unwrap_or_else(|| self.id.clone()),
            pid: self.shim_pid,
            exit_status: exit.code,
            exited_at: containerd_shim_protos::protobuf::MessageField::some(timestamp(exit.at)),
            ..Default::default()
        });
    }

    pub async fn kill(self: &Arc<Self>, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let p = self.process(exec_id)?;
        let sig = signal as i32;
        match p.status() {
            Status::Stopped => {
                return Err(ShimError::NotFound(format!(
                    "process {} already finished",
                    p.name()
                )));
            }
            Status::Created if matches!(sig, libc::SIGKILL | libc::SIGTERM | libc::SIGINT) => {
                // Never started: it is over without running.
                self.publish_exit(
                    &p,
                    Exit {
                        code: 128 + signal,
                        at: now(),
                    },
                );
                return Ok(());
            }
            Status::Created => {
                return Err(ShimError::FailedPrecondition(format!(
                    "process {} is not started",
                    p.name()
                )));
            }
            _ => {}
        }
        let kill_task = sig == libc::SIGKILL && exec_id.is_empty();
        if self.is_paused() {
            // The frozen guest cannot take a signal; SIGKILL of the task ends the VM
            // (like SIGKILL into a frozen cgroup), anything else waits for Resume.
            if !kill_task {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {} is paused: only SIGKILL of the task can be delivered (resume it first)",
                    self.id
                )));
            }
            return self.kill_vm().await;
        }
        if kill_task {
            // Whatever the guest answers, or if it never does, the task ends:
            // the signal goes to the guest, and if no exit is reported within
            // the grace period the domain is destroyed.
            let inst = self.clone();
            tokio::spawn(async move {
                if let Err(e) = inst.agent.signal(&inst.id, None, sig, all).await {
                    tracing::warn!(error = %e, "the guest did not take SIGKILL");
                }
            });
            self.ensure_killed();
            return Ok(());
        }
        let exec = (!exec_id.is_empty()).then_some(exec_id);
        self.agent
            .signal(&self.id, exec, sig, all)
            .await
            .map_err(|e| ShimError::from(e).context("kill"))
    }

    /// After SIGKILL of init: destroy the domain unless the exit arrives in time.
    fn ensure_killed(self: &Arc<Self>) {
        let inst = self.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(inst.kill_grace, inst.init.wait())
                .await
                .is_ok()
            {
                return;
            }
            tracing::warn!(grace = ?inst.kill_grace, "no exit reported for the SIGKILLed task");
            if let Err(e) = inst.kill_vm().await {
                tracing::error!(error = %e, "destroying the domain of the SIGKILLed task failed");
            }
        });
    }

    /// Destroy the domain: every process of the task exits with 137.
    async fn kill_vm(&self) -> Result<()> {
        let _destroying = self.destroying.lock().await;
        tracing::warn!(domain = %self.domain, "destroying the domain to deliver SIGKILL");
        // Closing the channel fails the pending Waits: their exits are published as 137.
        let destroyed = self.hv.destroy(&self.domain).await;
        self.agent.close();
        Ok(destroyed?)
    }

    pub async fn exec(
        &self,
        exec_id: &str,
        process: spec::Process,
        paths: StdioPaths,
    ) -> Result<()> {
        if exec_id.is_empty() {
            return Err(ShimError::InvalidArgument(
                "exec id must not be empty".into(),
            ));
        }
        if self.execs().contains_key(exec_id) {
            return Err(ShimError::AlreadyExists(format!(
                "exec {exec_id} already exists"
            )));
        }
        if self.init.status() != Status::Running {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is not running",
                self.id
            )));
        }
        if self.is_paused() {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is paused",
                self.id
            )));
        }
        let (ids, host) = self.agent.open_stdio(paths.request())?;
        self.agent
            .exec(&self.id, exec_id, process.to_agent(), ids)
            .await
            .map_err(|e| ShimError::from(e).context("exec"))?;
        let pio = io::attach(&paths, host)?;
        self.execs().insert(
            exec_id.to_string(),
            Proc::new(Some(exec_id.to_string()), paths, pio),
        );
        Ok(())
    }

    pub async fn resize_pty(&self, exec_id: &str, rows: u32, cols: u32) -> Result<()> {
        let p = self.process(exec_id)?;
        let size = vxn_wire::protocol::WindowSize {
            rows: rows.min(u16::MAX as u32) as u16,
            cols: cols.min(u16::MAX as u32) as u16,
        };
        if p.status() != Status::Running {
            return Ok(()); // containerd resizes early; the agent applies console_size at start
        }
        let exec = (!exec_id.is_empty()).then_some(exec_id);
        match self.agent.resize_tty(&self.id, exec, size).await {
            // It exited while the resize was on its way: nothing left to resize (as runc).
            Err(e) if e.agent_kind() == Some(ErrorKind::NotFound) => Ok(()),
            r => r.map_err(|e| ShimError::from(e).context("resize")),
        }
    }

    pub fn close_io(&self, exec_id: &str) -> Result<()> {
        let p = self.process(exec_id)?;
        match &mut *p.lock() {
            PState::Running { close_stdin } => close_stdin.notify_one(),
            PState::Created(Some(pio)) => pio.close_stdin.notify_one(),
            _ => {}
        }
        Ok(())
    }

    pub async fn pause(&self) -> Result<()> {
        if self.init.status() != Status::Running {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is not running",
                self.id
            )));
        }
        self.hv.pause(&self.domain).await?;
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = true;
        Ok(())
    }

    pub async fn resume(&self) -> Result<()> {
        if !self.is_paused() {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is not paused",
                self.id
            )));
        }
        self.hv.unpause(&self.domain).await?;
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = false;
        Ok(())
    }

    pub async fn pids(&self) -> Result<Vec<ProcessInfo>> {
        if self.is_paused() || self.init.status() != Status::Running {
            return Ok(vec![]);
        }
        Ok(self.agent.list_pids(&self.id).await?)
    }

    pub async fn stats(&self) -> Result<(Stats, Option<Duration>)> {
        if self.is_paused() || self.init.status() != Status::Running {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is not running",
                self.id
            )));
        }
        let s = self.agent.stats(&self.id).await?;
        Ok((s, self.hv.cpu_time(&self.domain).await))
    }

    /// Update: memory through the balloon (`xl mem-set`), vcpus online (`xl vcpu-set`),
    /// both within the maximums fixed at Create; beyond them is InvalidArgument.
    pub async fn update(&self, memory_mib: Option<u64>, vcpus: Option<u32>) -> Result<()> {
        if self.init.status() == Status::Stopped {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is not running",
                self.id
            )));
        }
        let cur = *self.size.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = memory_mib.filter(|m| *m > cur.max_memory_mib) {
            return Err(ShimError::InvalidArgument(format!(
                "memory {m} MiB is above the maximum of domain {} ({} MiB; max_memory_factor in /etc/vxn/config.toml sets the headroom)",
                self.domain, cur.max_memory_mib
            )));
        }
        if let Some(n) = vcpus.filter(|n| *n > cur.max_vcpus) {
            return Err(ShimError::InvalidArgument(format!(
                "{n} vcpus is above the maximum of domain {} ({}; max_vcpus in /etc/vxn/config.toml)",
                self.domain, cur.max_vcpus
            )));
        }
        let resize = Resize {
            memory_mib: memory_mib.filter(|m| *m != cur.memory_mib),
            vcpus: vcpus.filter(|n| *n != cur.vcpus),
        };
        if resize == Resize::default() {
            return Ok(());
        }
        self.hv.resize(&self.domain, resize).await?;
        let mut size = self.size.lock().unwrap_or_else(|p| p.into_inner());
        size.memory_mib = resize.memory_mib.unwrap_or(size.memory_mib);
        size.vcpus = resize.vcpus.unwrap_or(size.vcpus);
        tracing::info!(memory_mib = size.memory_mib, vcpus = size.vcpus, "resized");
        Ok(())
    }

    /// Forget an exited exec.
    pub async fn delete_exec(&self, exec_id: &str) -> Result<Exit> {
        let p = self.process(exec_id)?;
        let exit = match (p.status(), p.exit()) {
            (Status::Stopped, Some(e)) => e,
            (Status::Created, _) => Exit { code: 0, at: now() },
            _ => {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} is still running"
                )))
            }
        };
        let _ = self.agent.delete(&self.id, Some(exec_id)).await;
        self.execs().remove(exec_id);
        Ok(exit)
    }

    /// Tear the container down: domain, image, mounts, state. The init must
    /// have exited (or never started). An error means something is left (the
    /// domain survived a destroy): the task stays, Delete can be retried.
    pub async fn delete(&self) -> Result<Exit> {
        let exit = match self.init.status() {
            Status::Running => {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {} is running: kill it first",
                    self.id
                )))
            }
            _ => self.init.exit().unwrap_or(Exit { code: 0, at: now() }),
        };
        self.agent.close();
        let t = std::time::Instant::now();
        state::teardown(
            &self.record,
            &self.state,
            self.hv.as_ref(),
            self.exporter.as_ref(),
        )
        .await
        .map_err(|e| e.context("delete"))?;
        tracing::info!(took_ms = t.elapsed().as_millis() as u64, "timing: deleted");
        self.init.set_exited(exit);
        Ok(exit)
    }
}

pub fn timestamp(
    t: SystemTime,
) -> containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut ts = containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

/// The bundle's rootfs directory, mounting containerd's snapshot there first
/// (recorded before the mount is made).
fn mount_rootfs(
    p: &CreateParams,
    spec: &spec::Spec,
    state: &StateDir,
    record: &mut Record,
) -> Result<PathBuf> {
    let target = p.bundle.join("rootfs");
    if !p.rootfs.is_empty() {
        std::fs::create_dir_all(&target)
            .map_err(|e| ShimError::Internal(format!("mkdir {}: {e}", target.display())))?;
        record.rootfs_mount = Some(target.clone());
        state.save(record)?;
        for m in &p.rootfs {
            let fstype = (!m.type_.is_empty()).then_some(m.type_.as_str());
            let source = (!m.source.is_empty()).then_some(m.source.as_str());
            containerd_shim::mount::mount_rootfs(fstype, source, &m.options, &target).map_err(
                |e| ShimError::Internal(format!("mount rootfs {}: {e}", target.display())),
            )?;
        }
        return Ok(target);
    }
    let root = spec
        .root
        .as_ref()
        .map(|r| r.path.as_str())
        .unwrap_or("rootfs");
    let path = Path::new(root);
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        p.bundle.join(path)
    })
}
