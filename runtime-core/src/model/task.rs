//! What a front-end calls a task: a container (standalone or in a pod), or
//! a pod's sandbox (the pod VM itself). One set of operations over both, so
//! front-ends translate requests without knowing which it is.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vxn_wire::protocol::{ProcessInfo, ProcessSpec, Stats};

use crate::error::{Error, Result};
use crate::ids::ExecId;
use crate::model::container::{Container, TaskStatus};
use crate::model::pod::Pod;
use crate::model::process::{Exit, Process, Status};
use crate::stdio::ProcessStdio;

pub enum Task<S> {
    Container(Arc<Container<S>>),
    Sandbox(Arc<Pod>),
}

impl<S> Clone for Task<S> {
    fn clone(&self) -> Self {
        match self {
            Self::Container(c) => Self::Container(c.clone()),
            Self::Sandbox(p) => Self::Sandbox(p.clone()),
        }
    }
}

/// A process as a front-end reports it (State).
pub struct ProcessState<S> {
    pub status: TaskStatus,
    pub exit: Option<Exit>,
    /// None for a pod sandbox: it has no stdio.
    pub process: Option<Arc<Process<S>>>,
}

fn no_processes(what: &str) -> Error {
    Error::Unimplemented(format!(
        "{what} of a pod sandbox: it has no processes of its own (use one of its containers)"
    ))
}

impl<S: ProcessStdio> Task<S> {
    pub fn bundle(&self) -> &Path {
        match self {
            Self::Container(c) => &c.bundle,
            Self::Sandbox(p) => &p.bundle,
        }
    }

    pub fn as_pod(&self) -> Option<&Arc<Pod>> {
        match self {
            Self::Sandbox(p) => Some(p),
            Self::Container(_) => None,
        }
    }

    pub async fn start(&self, exec: &ExecId) -> Result<()> {
        match self {
            Self::Container(c) => c.start(exec).await,
            Self::Sandbox(p) => p.start(exec),
        }
    }

    pub fn state(&self, exec: &ExecId) -> Result<ProcessState<S>> {
        match self {
            Self::Container(c) => {
                let p = c.process(exec)?;
                Ok(ProcessState {
                    status: c.status(&p),
                    exit: p.exit(),
                    process: Some(p),
                })
            }
            Self::Sandbox(pod) => {
                if !exec.is_init() {
                    return Err(no_processes("an exec"));
                }
                Ok(ProcessState {
                    status: match pod.status() {
                        Status::Created => TaskStatus::Created,
                        Status::Running => TaskStatus::Running,
                        Status::Stopped => TaskStatus::Stopped,
                    },
                    exit: pod.exit(),
                    process: None,
                })
            }
        }
    }

    pub async fn wait(&self, exec: &ExecId) -> Result<Exit> {
        match self {
            Self::Container(c) => Ok(c.process(exec)?.wait().await),
            Self::Sandbox(p) if exec.is_init() => Ok(p.wait().await),
            Self::Sandbox(_) => Err(no_processes("an exec")),
        }
    }

    pub async fn kill(&self, exec: &ExecId, signal: u32, all: bool) -> Result<()> {
        match self {
            Self::Container(c) => c.kill(exec, signal, all).await,
            Self::Sandbox(p) => p.kill(exec, signal).await,
        }
    }

    pub async fn exec(&self, exec: &ExecId, spec: ProcessSpec, stdio: S) -> Result<()> {
        match self {
            Self::Container(c) => c.exec(exec, spec, stdio).await,
            Self::Sandbox(_) => Err(no_processes("exec")),
        }
    }

    pub async fn resize_pty(&self, exec: &ExecId, rows: u32, cols: u32) -> Result<()> {
        match self {
            Self::Container(c) => c.resize_pty(exec, rows, cols).await,
            Self::Sandbox(_) => Err(no_processes("a terminal resize")),
        }
    }

    pub fn close_io(&self, exec: &ExecId) -> Result<()> {
        match self {
            Self::Container(c) => c.close_io(exec),
            Self::Sandbox(_) => Err(no_processes("CloseIO")),
        }
    }

    pub async fn pause(&self) -> Result<()> {
        match self {
            Self::Container(c) => c.pause().await,
            Self::Sandbox(_) => Err(Error::Unimplemented(
                "pause of a pod sandbox is not supported by vxn".into(),
            )),
        }
    }

    pub async fn resume(&self) -> Result<()> {
        match self {
            Self::Container(c) => c.resume().await,
            Self::Sandbox(_) => Err(Error::Unimplemented(
                "resume of a pod sandbox is not supported by vxn".into(),
            )),
        }
    }

    pub async fn pids(&self) -> Result<Vec<ProcessInfo>> {
        match self {
            Self::Container(c) => c.pids().await,
            Self::Sandbox(p) => p.pids().await,
        }
    }

    pub async fn stats(&self) -> Result<(Stats, Option<Duration>)> {
        match self {
            Self::Container(c) => c.stats().await,
            Self::Sandbox(p) => p.stats().await,
        }
    }

    /// `limit_mib`: the new memory limit, MiB.
    pub async fn update(&self, limit_mib: Option<u64>, vcpus: Option<u32>) -> Result<()> {
        match self {
            Self::Container(c) => c.update(limit_mib, vcpus).await,
            Self::Sandbox(_) => Err(Error::Unimplemented(
                "update of a pod sandbox: vxn sizes the pod's VM from its containers' limits"
                    .into(),
            )),
        }
    }

    /// Delete the task (init) or one of its execs.
    pub async fn delete(&self, exec: &ExecId) -> Result<Exit> {
        match (self, exec) {
            (Self::Container(c), ExecId::Init) => c.delete().await,
            (Self::Container(c), exec) => c.delete_exec(exec).await,
            (Self::Sandbox(p), ExecId::Init) => p.delete().await,
            (Self::Sandbox(_), _) => Err(no_processes("an exec")),
        }
    }
}
