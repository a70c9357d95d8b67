//! One process of a container and its state machine:
//!
//! ```text
//! Created --start--> Starting --agent accepted--> Running --exit--> Exited
//!    |                  |
//!    |                  +--agent refused--> Exited (the agent's 127)
//!    +--fatal signal (the agent's 128+n)--> Exited
//! ```
//!
//! Every other transition is a FailedPrecondition. The exit itself is the
//! agent's word (code and signal); the host only speaks when the VM is gone.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};
use vxn_wire::protocol::ExitStatus;

use crate::error::{Error, Result};
use crate::ids::ExecId;
use crate::stdio::{ProcessStdio, Relay};

/// The exit status when the VM vanished under a process: as if SIGKILLed.
pub const VM_GONE_CODE: u32 = 137;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The shell convention: the exit code, or 128 + signal.
    pub code: u32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub at: SystemTime,
}

impl Exit {
    /// As the agent reported it.
    pub fn from_agent(st: &ExitStatus) -> Self {
        Self {
            code: st.code.clamp(0, 255) as u32,
            signal: st.signal,
            at: UNIX_EPOCH + Duration::from_nanos(st.exited_at_ns),
        }
    }

    /// The VM is gone, and every process in it with SIGKILL's status.
    pub fn vm_gone() -> Self {
        Self {
            code: VM_GONE_CODE,
            signal: Some(libc::SIGKILL),
            at: SystemTime::now(),
        }
    }

    /// A process whose start got no answer: a shell's "could not run it".
    pub fn never_started() -> Self {
        Self {
            code: 127,
            signal: None,
            at: SystemTime::now(),
        }
    }

    /// What a process that never ran and was never signalled reports.
    pub fn never_ran() -> Self {
        Self {
            code: 0,
            signal: None,
            at: SystemTime::now(),
        }
    }
}

/// What a front-end reports (the container's Paused is layered on top).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

enum Phase {
    /// Its relay waits for Start.
    Created(Relay),
    Starting,
    Running {
        close_stdin: Arc<Notify>,
    },
    Exited,
}

pub struct Process<S> {
    pub id: ExecId,
    pub stdio: S,
    phase: Mutex<Phase>,
    exit: watch::Sender<Option<Exit>>,
}

impl<S: ProcessStdio> Process<S> {
    /// A process the agent accepted, its stdio relayed.
    pub fn created(id: ExecId, stdio: S, relay: Relay) -> Arc<Self> {
        Arc::new(Self {
            id,
            stdio,
            phase: Mutex::new(Phase::Created(relay)),
            exit: watch::channel(None).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> Status {
        match &*self.lock() {
            Phase::Created(_) => Status::Created,
            Phase::Starting | Phase::Running { .. } => Status::Running,
            Phase::Exited => Status::Stopped,
        }
    }

    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Created -> Starting: the relay goes to whoever starts it.
    pub fn begin_start(&self) -> Result<Relay> {
        let mut phase = self.lock();
        let why = match &*phase {
            Phase::Created(_) => {
                let Phase::Created(relay) = std::mem::replace(&mut *phase, Phase::Starting) else {
                    unreachable!("matched above")
                };
                return Ok(relay);
            }
            Phase::Starting => "is being started",
            Phase::Running { .. } => "is already running",
            Phase::Exited => "has already exited",
        };
        Err(Error::FailedPrecondition(format!("{} {why}", self.id)))
    }

    /// Starting -> Running.
    pub fn started(&self, relay: &Relay) {
        let mut phase = self.lock();
        if matches!(*phase, Phase::Starting) {
            *phase = Phase::Running {
                close_stdin: relay.stdin_closer(),
            };
        }
    }

    /// Any -> Exited; true the first time (whoever gets true publishes it).
    pub fn set_exited(&self, exit: Exit) -> bool {
        *self.lock() = Phase::Exited;
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

    /// The exit, once there is one (the VM's end, if it goes first).
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.subscribe();
        let r = rx.wait_for(|e| e.is_some()).await;
        r.ok().and_then(|e| *e).unwrap_or_else(Exit::vm_gone)
    }

    /// End the process's stdin (what was written is delivered first).
    pub fn close_stdin(&self) {
        match &*self.lock() {
            Phase::Running { close_stdin } => close_stdin.notify_one(),
            Phase::Created(relay) => relay.stdin_closer().notify_one(),
            Phase::Starting | Phase::Exited => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::NoStdio;

    fn process() -> Arc<Process<NoStdio>> {
        Process::created(
            ExecId::Init,
            NoStdio,
            Relay::new(vec![], Arc::new(Notify::new())),
        )
    }

    #[test]
    fn created_starting_running_exited() {
        let p = process();
        assert_eq!(p.status(), Status::Created);
        let relay = p.begin_start().unwrap();
        assert_eq!(p.status(), Status::Running);
        let again = p.begin_start().unwrap_err();
        assert!(matches!(again, Error::FailedPrecondition(_)), "{again}");
        p.started(&relay);
        assert!(p
            .begin_start()
            .unwrap_err()
            .to_string()
            .contains("already running"));
        let exit = Exit {
            code: 3,
            signal: None,
            at: SystemTime::now(),
        };
        assert!(p.set_exited(exit));
        assert!(!p.set_exited(Exit::vm_gone()), "the first exit is the one");
        assert_eq!(p.exit(), Some(exit));
        assert_eq!(p.status(), Status::Stopped);
        assert!(p
            .begin_start()
            .unwrap_err()
            .to_string()
            .contains("already exited"));
    }

    #[test]
    fn an_exit_while_starting_is_not_undone_by_the_start() {
        let p = process();
        let relay = p.begin_start().unwrap();
        p.set_exited(Exit::vm_gone());
        p.started(&relay);
        assert_eq!(p.status(), Status::Stopped);
    }

    #[test]
    fn the_agents_status_is_carried_whole() {
        let e = Exit::from_agent(&ExitStatus {
            code: 137,
            signal: Some(9),
            exited_at_ns: 1_000_000_000,
        });
        assert_eq!((e.code, e.signal), (137, Some(9)));
        assert_eq!(e.at, UNIX_EPOCH + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn wait_returns_the_exit() {
        let p = process();
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.wait().await }
        });
        tokio::task::yield_now().await;
        p.set_exited(Exit::never_ran());
        assert_eq!(waiter.await.unwrap().code, 0);
    }
}
