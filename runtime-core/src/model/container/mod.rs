//! A container: a rootfs exported to a sandbox, an init and its execs. A
//! standalone container has a sandbox (VM) of its own; a pod's containers
//! share the pod's.
//!
//! * [`create`](Container::create): everything recorded before it is made,
//!   and a failure undoes exactly what the record names;
//! * `join`: [`create_in_pod`](Container::create_in_pod), a container in a pod's VM;
//! * `lifecycle`: start, kill, exec, delete, and the exits the agent reports;
//! * here: lookups, pause/resume, stats, update.

pub mod create;
mod join;
mod lifecycle;

pub use create::{CreateRequest, EngineNetwork, RootfsSource};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vxn_wire::protocol::{ProcessInfo, Stats};

use crate::error::{Error, Result};
use crate::ids::ExecId;
use crate::model::events::{EventSink, GuestEvents, TaskEvent};
use crate::model::pod::Pod;
use crate::model::process::{Process, Status};
use crate::model::sandbox::Sandbox;
use crate::names::ContainerName;
use crate::persist::{Record, StateDir};
use crate::stdio::ProcessStdio;
use crate::storage::rootfs::RootfsExport;

/// How long output may still flow after an exit before the exit is told anyway.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

pub struct Container<S> {
    name: ContainerName,
    pub bundle: PathBuf,
    sandbox: Arc<Sandbox>,
    /// The pod whose VM this container shares; None: the VM is its own.
    pod: Option<Arc<Pod>>,
    exporter: Arc<dyn RootfsExport>,
    state: StateDir,
    record: Record,
    events: Arc<dyn EventSink>,
    /// The agent's OOM events, published before the exits they explain.
    guest_events: Arc<GuestEvents>,
    kill_grace: Duration,
    /// How a memory limit sizes this container's own VM (Update).
    vm_memory: crate::oci::VmMemory,
    init: Arc<Process<S>>,
    execs: Mutex<HashMap<String, Arc<Process<S>>>>,
    /// Paused by the user (Pause), not just frozen until Start.
    paused: Mutex<bool>,
    /// Held (flocked) while the container exists: its address is not stale.
    _lease: Option<crate::network::lease::HeldLease>,
    /// The host's half of the DNS relay to an engine's resolver.
    _dns: Option<crate::network::netns_dns::NetnsDns>,
    /// Takes the networks an engine connects the container to later.
    follower: Mutex<Option<crate::model::netns_follow::NetnsFollower>>,
}

/// A process's status as a front-end reports it: the container's pause on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Created,
    Running,
    Paused,
    Stopped,
}

impl<S: ProcessStdio> Container<S> {
    pub fn id(&self) -> &str {
        self.name.id()
    }

    pub fn domain(&self) -> &str {
        self.sandbox.domain()
    }

    pub fn init(&self) -> &Arc<Process<S>> {
        &self.init
    }

    fn execs(&self) -> MutexGuard<'_, HashMap<String, Arc<Process<S>>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn process(&self, exec: &ExecId) -> Result<Arc<Process<S>>> {
        match exec {
            ExecId::Init => Ok(self.init.clone()),
            ExecId::Exec(id) => self.execs().get(id).cloned().ok_or_else(|| {
                Error::NotFound(format!("exec {id} not found in task {}", self.id()))
            }),
        }
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self, p: &Process<S>) -> TaskStatus {
        match p.status() {
            Status::Created => TaskStatus::Created,
            Status::Running if self.is_paused() => TaskStatus::Paused,
            Status::Running => TaskStatus::Running,
            Status::Stopped => TaskStatus::Stopped,
        }
    }

    fn not_running(&self) -> Error {
        Error::FailedPrecondition(format!("task {} is not running", self.id()))
    }

    fn require_running(&self) -> Result<()> {
        if self.is_paused() {
            return Err(Error::FailedPrecondition(format!(
                "task {} is paused",
                self.id()
            )));
        }
        if self.init.status() != Status::Running {
            return Err(self.not_running());
        }
        Ok(())
    }

    /// The VM is shared: what the whole VM does cannot be done for one container.
    fn require_own_vm(&self, what: &str) -> Result<()> {
        match &self.pod {
            None => Ok(()),
            Some(pod) => Err(Error::Unimplemented(format!(
                "{what} of container {} alone: it shares the VM of pod {}",
                self.id(),
                pod.id()
            ))),
        }
    }

    /// Freeze the whole VM (its clock included).
    pub async fn pause(&self) -> Result<()> {
        self.require_own_vm("pause")?;
        if self.init.status() != Status::Running {
            return Err(self.not_running());
        }
        if self.is_paused() {
            return Err(Error::FailedPrecondition(format!(
                "task {} is already paused",
                self.id()
            )));
        }
        self.sandbox.freeze().await?;
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.events.publish(TaskEvent::Paused);
        Ok(())
    }

    pub async fn resume(&self) -> Result<()> {
        if !self.is_paused() {
            return Err(Error::FailedPrecondition(format!(
                "task {} is not paused",
                self.id()
            )));
        }
        self.sandbox.thaw().await?;
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.events.publish(TaskEvent::Resumed);
        Ok(())
    }

    /// The guest's processes of this container (none while paused or not running).
    pub async fn pids(&self) -> Result<Vec<ProcessInfo>> {
        if self.require_running().is_err() {
            return Ok(vec![]);
        }
        Ok(self.sandbox.agent().list_pids(self.id()).await?)
    }

    /// The guest's counters, and the VM's CPU time if the backend knows it.
    pub async fn stats(&self) -> Result<(Stats, Option<Duration>)> {
        if self.is_paused() || self.init.status() != Status::Running {
            return Err(self.not_running());
        }
        if self.pod.is_some() {
            // The VM's CPU time is the pod's; the container's own is in its counters.
            return Ok((self.sandbox.agent().stats(self.id(), true).await?, None));
        }
        let s = self.sandbox.agent().stats(self.id(), false).await?;
        Ok((s, self.sandbox.cpu_time().await))
    }

    /// Resize the VM: memory through the balloon, vcpus online.
    /// New limits (`limit_mib`: the memory limit, MiB): a pod's VM is
    /// refitted to its members' limits; a VM of its own gets the limit plus
    /// the guest's own memory, as at create.
    pub async fn update(&self, limit_mib: Option<u64>, vcpus: Option<u32>) -> Result<()> {
        if self.init.status() == Status::Stopped {
            return Err(self.not_running());
        }
        if let Some(pod) = &self.pod {
            pod.members().set_limits(self.id(), limit_mib, vcpus);
            pod.fit_members().await;
            return Ok(());
        }
        let memory_mib = limit_mib.map(|l| self.vm_memory.for_limit(l));
        self.sandbox.resize(memory_mib, vcpus).await
    }
}

#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod tests;
