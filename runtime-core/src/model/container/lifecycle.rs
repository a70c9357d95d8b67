//! Start, signals, exec, exits and delete. The agent is the authority on how
//! a process ended (its code and signal); the host only speaks for a process
//! when the VM it ran in is gone.

use std::sync::Arc;
use std::time::Duration;

use vxn_wire::protocol::{ErrorKind, ProcessSpec, WindowSize};

use super::{Container, OUTPUT_DRAIN};
use crate::error::{Error, Result};
use crate::ids::ExecId;
use crate::model::events::TaskEvent;
use crate::model::process::{Exit, Process, Status};
use crate::persist;
use crate::stdio::{ProcessStdio, Relay};

/// How long the agent may take to tell the exit of a process it failed to
/// start or killed before it ran.
const SETTLED_EXIT_WAIT: Duration = Duration::from_secs(10);

impl<S: ProcessStdio> Container<S> {
    /// Start the init (letting the VM run) or a created exec.
    pub async fn start(self: &Arc<Self>, exec: &ExecId) -> Result<()> {
        let p = self.process(exec)?;
        if self.is_paused() {
            return Err(Error::FailedPrecondition(format!(
                "task {} is paused",
                self.id()
            )));
        }
        let relay = p.begin_start()?;
        let t = std::time::Instant::now();
        if exec.is_init() {
            if let Err(e) = self.sandbox.thaw().await {
                p.set_exited(Exit::vm_gone());
                return Err(e.context("start"));
            }
        }
        match self.sandbox.agent().start(self.id(), exec.as_wire()).await {
            Ok(pid) => {
                tracing::info!(process = %exec, guest_pid = pid, took_ms = t.elapsed().as_millis() as u64, "timing: process started")
            }
            Err(e) => {
                drop(relay);
                // The agent refused it: it says how the process ended (a
                // shell's 127). No answer at all: as far as we know it never ran.
                let exit = match e.agent_kind() {
                    Some(_) => self.settled_exit(exec).await,
                    None => Exit::never_started(),
                };
                p.set_exited(exit);
                return Err(Error::from(e).context("start"));
            }
        }
        p.started(&relay);
        self.events.publish(TaskEvent::Started(exec.clone()));
        self.watch_exit(p, relay);
        Ok(())
    }

    /// The exit the agent holds for a process that is over or about to be;
    /// the VM's end if it cannot say in time.
    async fn settled_exit(&self, exec: &ExecId) -> Exit {
        let wait = self.sandbox.agent().wait(self.id(), exec.as_wire());
        match tokio::time::timeout(SETTLED_EXIT_WAIT, wait).await {
            Ok(Ok(st)) => Exit::from_agent(&st),
            Ok(Err(e)) => {
                tracing::warn!(process = %exec, error = %e, "no exit from the agent");
                Exit::vm_gone()
            }
            Err(_) => {
                tracing::warn!(process = %exec, "the agent did not tell the exit in time");
                Exit::vm_gone()
            }
        }
    }

    /// Publish the exit of `p` once the agent tells it (or the VM is gone),
    /// after its output reached the front-end.
    fn watch_exit(self: &Arc<Self>, p: Arc<Process<S>>, mut relay: Relay) {
        let c = self.clone();
        tokio::spawn(async move {
            let exit = match c.sandbox.agent().wait(c.id(), p.id.as_wire()).await {
                Ok(st) => Exit::from_agent(&st),
                Err(e) => {
                    tracing::warn!(process = %p.id, error = %e, "lost the process with its VM");
                    Exit::vm_gone()
                }
            };
            // Nothing reads stdin any more; this also frees a stdin open still waiting for a writer.
            relay.stdin_closer().notify_one();
            relay.wait_output(OUTPUT_DRAIN).await;
            c.sandbox.settled().await;
            c.publish_exit(&p, exit);
        });
    }

    fn publish_exit(&self, p: &Process<S>, exit: Exit) {
        if !p.set_exited(exit) {
            return;
        }
        tracing::info!(process = %p.id, code = exit.code, signal = ?exit.signal, "process exited");
        // An OOM kill the agent reported before this exit goes first.
        self.guest_events.forward_pending();
        self.events.publish(TaskEvent::Exited {
            exec: p.id.clone(),
            exit,
        });
    }

    /// Signal a process. SIGKILL of the init always ends the task: if the
    /// agent does not report the exit within the grace period (or the VM is
    /// paused), the VM is destroyed.
    pub async fn kill(self: &Arc<Self>, exec: &ExecId, signal: u32, all: bool) -> Result<()> {
        let p = self.process(exec)?;
        let sig = i32::try_from(signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| Error::InvalidArgument(format!("signal {signal} is not a signal")))?;
        if p.status() == Status::Stopped {
            return Err(Error::NotFound(format!("{} already finished", p.id)));
        }
        let kill_task = sig == libc::SIGKILL && exec.is_init();
        if self.is_paused() {
            // The frozen guest cannot take a signal; SIGKILL of the task ends the VM
            // (like SIGKILL into a frozen cgroup), anything else waits for Resume.
            if !kill_task {
                return Err(Error::FailedPrecondition(format!(
                    "task {} is paused: only SIGKILL of the task can be delivered (resume it first)",
                    self.id()
                )));
            }
            return self.sandbox.destroy().await;
        }
        if p.status() == Status::Created {
            return self.kill_created(&p, sig, all).await;
        }
        if kill_task {
            // Whatever the guest answers, or if it never does, the task ends.
            let c = self.clone();
            tokio::spawn(async move {
                if let Err(e) = c.sandbox.agent().signal(c.id(), None, sig, all).await {
                    tracing::warn!(error = %e, "the guest did not take SIGKILL");
                }
            });
            self.ensure_killed();
            return Ok(());
        }
        self.sandbox
            .agent()
            .signal(self.id(), exec.as_wire(), sig, all)
            .await
            .map_err(|e| Error::from(e).context("kill"))
    }

    /// A process that never ran: the agent decides whether the signal ends
    /// it and with what status (it refuses the ones that would not).
    async fn kill_created(self: &Arc<Self>, p: &Process<S>, sig: i32, all: bool) -> Result<()> {
        // The init waits for Start in a frozen VM; the agent must run to answer.
        if p.id.is_init() {
            self.sandbox.thaw().await?;
        }
        if let Err(e) = self
            .sandbox
            .agent()
            .signal(self.id(), p.id.as_wire(), sig, all)
            .await
        {
            if sig == libc::SIGKILL && p.id.is_init() {
                tracing::warn!(error = %e, "the guest did not take SIGKILL");
                return self.end_unresponsive().await;
            }
            return Err(Error::from(e).context("kill"));
        }
        let exit = self.settled_exit(&p.id).await;
        self.publish_exit(p, exit);
        Ok(())
    }

    /// After SIGKILL of the init: destroy the VM unless the exit arrives in time.
    fn ensure_killed(self: &Arc<Self>) {
        let c = self.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(c.kill_grace, c.init.wait())
                .await
                .is_ok()
            {
                return;
            }
            tracing::warn!(grace = ?c.kill_grace, "no exit reported for the SIGKILLed task");
            if let Err(e) = c.end_unresponsive().await {
                tracing::error!(error = %e, "ending the SIGKILLed task failed");
            }
        });
    }

    /// The guest did not end the init on SIGKILL: a VM of its own is
    /// destroyed; in a pod's VM (the pod's to end) the task is told ended.
    async fn end_unresponsive(&self) -> Result<()> {
        match &self.pod {
            None => self.sandbox.destroy().await,
            Some(pod) => {
                tracing::warn!(pod = %pod.id(), "reporting the task killed; its processes go with the pod's VM");
                self.publish_exit(&self.init, Exit::vm_gone());
                Ok(())
            }
        }
    }

    /// Add a process to the running container (created, not started).
    pub async fn exec(&self, exec: &ExecId, spec: ProcessSpec, stdio: S) -> Result<()> {
        let ExecId::Exec(id) = exec else {
            return Err(Error::InvalidArgument("exec id must not be empty".into()));
        };
        spec.validate().map_err(Error::InvalidArgument)?;
        if self.execs().contains_key(id) {
            return Err(Error::AlreadyExists(format!("exec {id} already exists")));
        }
        self.require_running()?;
        let agent = self.sandbox.agent();
        let (ids, host) = agent.open_stdio(stdio.request())?;
        agent
            .exec(self.id(), id, spec, ids)
            .await
            .map_err(|e| Error::from(e).context("exec"))?;
        let relay = stdio.attach(host)?;
        self.execs()
            .insert(id.clone(), Process::created(exec.clone(), stdio, relay));
        self.events.publish(TaskEvent::ExecAdded(exec.clone()));
        Ok(())
    }

    pub async fn resize_pty(&self, exec: &ExecId, rows: u32, cols: u32) -> Result<()> {
        let p = self.process(exec)?;
        let size = WindowSize::clamped(rows.into(), cols.into());
        if p.status() != Status::Running {
            return Ok(()); // resized early: the agent applies console_size at start
        }
        match self
            .sandbox
            .agent()
            .resize_tty(self.id(), exec.as_wire(), size)
            .await
        {
            // It exited while the resize was on its way: nothing left to resize (as runc).
            Err(e) if e.agent_kind() == Some(ErrorKind::NotFound) => Ok(()),
            r => r.map_err(|e| Error::from(e).context("resize")),
        }
    }

    pub fn close_io(&self, exec: &ExecId) -> Result<()> {
        self.process(exec)?.close_stdin();
        Ok(())
    }

    /// Forget an exec that exited or never started.
    pub async fn delete_exec(&self, exec: &ExecId) -> Result<Exit> {
        let ExecId::Exec(id) = exec else {
            return Err(Error::InvalidArgument("not an exec".into()));
        };
        let p = self.process(exec)?;
        let exit = match (p.status(), p.exit()) {
            (Status::Stopped, Some(e)) => e,
            (Status::Created, _) => Exit::never_ran(),
            _ => {
                return Err(Error::FailedPrecondition(format!(
                    "exec {id} is still running"
                )))
            }
        };
        let _ = self.sandbox.agent().delete(self.id(), Some(id)).await;
        self.execs().remove(id);
        Ok(exit)
    }

    /// Tear the container down: VM, image, mounts, state. The init must have
    /// exited (or never started). An error means something is left (the VM
    /// survived a destroy): the container stays, Delete can be retried.
    pub async fn delete(&self) -> Result<Exit> {
        let exit = match self.init.status() {
            Status::Running => {
                return Err(Error::FailedPrecondition(format!(
                    "task {} is running: kill it first",
                    self.id()
                )))
            }
            _ => self.init.exit().unwrap_or_else(Exit::never_ran),
        };
        // Nothing is attached to a VM on its way out.
        drop(
            self.follower
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        match &self.pod {
            None => self.sandbox.disconnect(),
            // Its rootfs must be unmounted in the guest before its disk leaves.
            Some(_) => {
                if let Err(e) = self.sandbox.agent().delete(self.id(), None).await {
                    tracing::warn!(error = %e, "the guest did not remove the container");
                }
            }
        }
        let t = std::time::Instant::now();
        persist::teardown(
            &self.record,
            &self.state,
            self.sandbox.hypervisor(),
            self.exporter.as_ref(),
        )
        .await
        .map_err(|e| e.context("delete"))?;
        tracing::info!(took_ms = t.elapsed().as_millis() as u64, "timing: deleted");
        if let Some(pod) = &self.pod {
            pod.guest_events().unroute(self.id());
            pod.members().leave(self.id());
            pod.fit_members().await;
        }
        self.init.set_exited(exit);
        self.events.publish(TaskEvent::Deleted { exit });
        Ok(exit)
    }
}
