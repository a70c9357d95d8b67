//! Child reaping. The agent reaps every child (it is PID 1, or a subreaper
//! in test mode); processes it started are reported to their waiter.
//!
//! Spawning happens under the same lock as reaping, so a child that exits
//! before its pid is registered cannot be reaped unnoticed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use vxn_wire::protocol::ExitStatus;

#[derive(Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// Start reaping; call before any child is spawned.
    pub fn start() -> std::io::Result<Arc<Self>> {
        let reaper = Arc::new(Self::default());
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Run `spawn` (which forks and returns the pid) and register the pid
    /// before any exit can be collected.
    pub fn spawn_registered<T, E>(
        &self,
        spawn: impl FnOnce() -> Result<(i32, T), E>,
    ) -> Result<(i32, T, oneshot::Receiver<ExitStatus>), E> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let (pid, extra) = spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        Ok((pid, extra, rx))
    }

    fn reap_all(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, exit_status(code, None)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid, exit_status(128 + sig as i32, Some(sig as i32)))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    break;
                }
            };
            match waiters.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => tracing::trace!(pid = pid.as_raw(), "reaped an orphan"),
            }
        }
    }
}

fn exit_status(code: i32, signal: Option<i32>) -> ExitStatus {
    let exited_at_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    ExitStatus {
        code,
        signal,
        exited_at_ns,
    }
}
