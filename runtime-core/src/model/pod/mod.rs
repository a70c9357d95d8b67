//! A CRI pod: one VM (its [`Sandbox`]) that the pod's containers share.
//!
//! CRI creates a pod as a "sandbox" container (the pause image) and then each
//! app container with the sandbox's id. Here the sandbox container *is* the
//! VM: nothing runs for the pause process but the VM and its agent. Its task
//! has a small state machine of its own:
//!
//! ```text
//! Created --start--> Running --terminating signal--> Stopped (VM destroyed)
//!    +------------------terminating signal--------------^
//! ```
//!
//! App containers join with [`Container::create_in_pod`](crate::model::container::Container::create_in_pod):
//! their rootfs is hot-plugged as a disk (`membership`), the VM grows by
//! their limits, and they leave at their Delete. See docs/pods.md.

mod create;
mod membership;

pub use create::PodRequest;
pub use membership::Membership;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use vxn_wire::protocol::{ProcessInfo, Stats};

use crate::error::{Error, Result};
use crate::ids::ExecId;
use crate::model::events::{EventSink, GuestEvents, TaskEvent};
use crate::model::process::{Exit, Status};
use crate::model::sandbox::Sandbox;
use crate::names::ContainerName;
use crate::persist::{self, Record, StateDir};
use crate::storage::rootfs::RootfsExport;

/// `io.kubernetes.cri.container-type`: "sandbox" or "container".
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// `io.kubernetes.cri.sandbox-id`: the pod an app container belongs to.
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// What a spec's annotations make of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A container of its own VM (ctr, Docker, Podman).
    Standalone,
    /// A CRI pod's sandbox: the pod VM.
    PodSandbox,
    /// A CRI app container of the pod with this sandbox id.
    PodMember { sandbox_id: String },
}

impl Role {
    pub fn of(annotations: &std::collections::HashMap<String, String>) -> Result<Self> {
        match annotations
            .get(ANNOTATION_CONTAINER_TYPE)
            .map(String::as_str)
        {
            None => Ok(Self::Standalone),
            Some("sandbox") => Ok(Self::PodSandbox),
            Some("container") => match annotations.get(ANNOTATION_SANDBOX_ID) {
                Some(id) if !id.is_empty() => Ok(Self::PodMember {
                    sandbox_id: id.clone(),
                }),
                _ => Err(Error::InvalidArgument(format!(
                    "a CRI container without {ANNOTATION_SANDBOX_ID}"
                ))),
            },
            Some(other) => Err(Error::InvalidArgument(format!(
                "{ANNOTATION_CONTAINER_TYPE}={other:?} is neither sandbox nor container"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Stopped(Exit),
}

pub struct Pod {
    name: ContainerName,
    pub bundle: PathBuf,
    /// The pod's hostname (the sandbox spec's), which its containers share.
    pub hostname: Option<String>,
    /// The pod's sysctls (the sandbox spec's `linux.sysctl`: CRI puts them
    /// there only). They are the VM's, which its containers share; the
    /// agent sets them as each container is created.
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// The dom0 directory shared with the VM (9p): containers' host binds go under it.
    share: PathBuf,
    sandbox: Arc<Sandbox>,
    exporter: Arc<dyn RootfsExport>,
    state: StateDir,
    record: Record,
    events: Arc<dyn EventSink>,
    /// The agent's OOM events: a container's go to it (its cgroup in the
    /// guest says whose), the rest to the sandbox.
    guest_events: Arc<GuestEvents>,
    phase: watch::Sender<Phase>,
    members: Mutex<Membership>,
}

/// Signals whose default action is not to end a process: the pause process
/// takes them and goes on.
const HARMLESS: &[i32] = &[libc::SIGCHLD, libc::SIGCONT, libc::SIGURG, libc::SIGWINCH];

impl Pod {
    pub fn id(&self) -> &str {
        self.name.id()
    }

    pub fn domain(&self) -> &str {
        self.sandbox.domain()
    }

    pub fn share(&self) -> &std::path::Path {
        &self.share
    }

    /// The pod's agent events, which a container joins with its own sink.
    pub(crate) fn guest_events(&self) -> &Arc<GuestEvents> {
        &self.guest_events
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    pub(crate) fn members(&self) -> MutexGuard<'_, Membership> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn status(&self) -> Status {
        match self.phase() {
            Phase::Created => Status::Created,
            Phase::Running => Status::Running,
            Phase::Stopped(_) => Status::Stopped,
        }
    }

    pub fn exit(&self) -> Option<Exit> {
        match self.phase() {
            Phase::Stopped(e) => Some(e),
            _ => None,
        }
    }

    /// Whether app containers can join: the VM is there.
    pub fn require_alive(&self) -> Result<()> {
        match self.phase() {
            Phase::Stopped(_) => Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is stopped",
                self.id()
            ))),
            _ => Ok(()),
        }
    }

    fn require_init(exec: &ExecId) -> Result<()> {
        match exec {
            ExecId::Init => Ok(()),
            ExecId::Exec(id) => Err(Error::NotFound(format!(
                "exec {id}: a pod sandbox has no processes of its own (exec into one of its containers)"
            ))),
        }
    }

    pub fn start(&self, exec: &ExecId) -> Result<()> {
        Self::require_init(exec)?;
        let mut started = false;
        self.phase.send_if_modified(|p| {
            started = *p == Phase::Created;
            if started {
                *p = Phase::Running;
            }
            started
        });
        if !started {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not created",
                self.id()
            )));
        }
        self.events.publish(TaskEvent::Started(ExecId::Init));
        Ok(())
    }

    /// A signal to the pause process: one that would end it ends the pod's
    /// VM, and every container in it (CRI stops them first).
    pub async fn kill(&self, exec: &ExecId, signal: u32) -> Result<()> {
        Self::require_init(exec)?;
        let sig = i32::try_from(signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| Error::InvalidArgument(format!("signal {signal} is not a signal")))?;
        if let Phase::Stopped(_) = self.phase() {
            return Err(Error::NotFound(format!(
                "pod sandbox {} already stopped",
                self.id()
            )));
        }
        if HARMLESS.contains(&sig) {
            return Ok(());
        }
        self.sandbox.destroy().await?;
        // The pause process exits 0 on SIGINT and SIGTERM, as the real one.
        let code = match sig {
            libc::SIGINT | libc::SIGTERM => 0,
            s => 128 + s as u32,
        };
        let exit = Exit {
            code,
            signal: (code != 0).then_some(sig),
            at: std::time::SystemTime::now(),
        };
        let mut stopped = false;
        self.phase.send_if_modified(|p| {
            stopped = !matches!(p, Phase::Stopped(_));
            if stopped {
                *p = Phase::Stopped(exit);
            }
            stopped
        });
        if stopped {
            tracing::info!(code, "pod sandbox stopped");
            self.events.publish(TaskEvent::Exited {
                exec: ExecId::Init,
                exit,
            });
        }
        Ok(())
    }

    /// The VM's death however it comes (a guest crash or poweroff, `xl
    /// destroy` behind our back): the agent's connection ends, and a running
    /// sandbox task ends as a killed pause process would, once, so CRI marks
    /// the pod NOTREADY and kubelet makes it anew. Our own kills and deletes
    /// stop the phase first and are not reported twice.
    fn watch_vm(self: &Arc<Self>) {
        let pod = Arc::downgrade(self);
        let sandbox = self.sandbox.clone();
        tokio::spawn(async move {
            let why = sandbox.agent().closed().await;
            // A kill's destroy reports its own exit first.
            sandbox.settled().await;
            if let Some(pod) = pod.upgrade() {
                pod.vm_gone(&why);
            }
        });
    }

    fn vm_gone(&self, why: &str) {
        let exit = Exit::vm_gone();
        let mut ended = false;
        self.phase.send_if_modified(|p| {
            ended = *p == Phase::Running;
            if ended {
                *p = Phase::Stopped(exit);
            }
            ended
        });
        if ended {
            tracing::warn!(why, "the pod's VM is gone: the sandbox task ends");
            self.events.publish(TaskEvent::Exited {
                exec: ExecId::Init,
                exit,
            });
        }
    }

    pub async fn wait(&self) -> Exit {
        let mut rx = self.phase.subscribe();
        loop {
            if let Phase::Stopped(e) = *rx.borrow_and_update() {
                return e;
            }
            if rx.changed().await.is_err() {
                return Exit::vm_gone();
            }
        }
    }

    /// The processes of every container in the pod.
    pub async fn pids(&self) -> Result<Vec<ProcessInfo>> {
        if self.status() != Status::Running {
            return Ok(vec![]);
        }
        let ids = self.members().ids();
        let mut all = Vec::new();
        for id in ids {
            // A member that just left has nothing to list.
            if let Ok(mut p) = self.sandbox.agent().list_pids(&id).await {
                all.append(&mut p);
            }
        }
        Ok(all)
    }

    /// The whole VM's counters and CPU time.
    pub async fn stats(&self) -> Result<(Stats, Option<Duration>)> {
        if self.status() != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not running",
                self.id()
            )));
        }
        let s = self.sandbox.agent().stats("", false).await?;
        Ok((s, self.sandbox.cpu_time().await))
    }

    /// Destroy the VM (if a kill did not) and everything the pod made.
    pub async fn delete(&self) -> Result<Exit> {
        let exit = match self.phase() {
            Phase::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "pod sandbox {} is running: kill it first",
                    self.id()
                )))
            }
            Phase::Stopped(e) => e,
            Phase::Created => Exit::never_ran(),
        };
        let left = self.members().ids();
        if !left.is_empty() {
            tracing::warn!(containers = ?left, "deleting a pod sandbox whose containers were not deleted");
        }
        self.sandbox.disconnect();
        persist::teardown(
            &self.record,
            &self.state,
            self.sandbox.hypervisor(),
            self.exporter.as_ref(),
        )
        .await
        .map_err(|e| e.context("delete"))?;
        self.phase.send_replace(Phase::Stopped(exit));
        self.events.publish(TaskEvent::Deleted { exit });
        Ok(exit)
    }
}

#[cfg(test)]
mod tests;
