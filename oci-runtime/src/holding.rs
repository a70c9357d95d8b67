//! What a keeper holds while it stands for a container's init: the container
//! (once created), the init's terminal, its execs' keepers. The control
//! socket's requests (`serve`) read and act on it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::net::UnixStream;
use tokio::sync::Notify;
use vxn_runtime_core::config::Config;
use vxn_runtime_core::ids::ExecId;
use vxn_runtime_core::model::container::{Container, TaskStatus};
use vxn_runtime_core::Error as Core;

use crate::error::{Error, Result};
use crate::state::ContainerDir;
use crate::stdio::FdStdio;
use crate::tty;

pub struct Keeper {
    pub dir: ContainerDir,
    container: OnceLock<Arc<Container<FdStdio>>>,
    /// The terminal's slave, when the init has one: resizes are read from it.
    tty: Option<OwnedFd>,
    pub cfg: Config,
    next_exec: AtomicU64,
    /// Host pids of connected exec keepers (what `ps --format json` lists).
    pub exec_pids: Mutex<Vec<u32>>,
    /// Delete was served: the keeper exits.
    pub deleted: Notify,
}

impl Keeper {
    /// A keeper serving `dir` before its container exists (`state` says
    /// "creating" until [`created`](Self::created)).
    pub fn new(dir: ContainerDir, cfg: Config, tty: Option<OwnedFd>) -> Self {
        Self {
            dir,
            container: OnceLock::new(),
            tty,
            cfg,
            next_exec: AtomicU64::new(1),
            exec_pids: Mutex::default(),
            deleted: Notify::new(),
        }
    }

    /// The init has a terminal (its resizes are followed).
    pub fn has_tty(&self) -> bool {
        self.tty.is_some()
    }

    pub fn created(&self, c: Arc<Container<FdStdio>>) {
        let _ = self.container.set(c);
    }

    pub fn container(&self) -> Result<&Arc<Container<FdStdio>>> {
        self.container.get().ok_or_else(|| {
            Error::Core(Core::FailedPrecondition(format!(
                "container {} is being created",
                self.dir.id()
            )))
        })
    }

    pub fn new_exec_id(&self) -> Result<ExecId> {
        let n = self.next_exec.fetch_add(1, Ordering::Relaxed);
        Ok(ExecId::new_exec(&format!("exec-{n}"))?)
    }

    /// runc's status words.
    pub fn status(&self) -> &'static str {
        let Some(c) = self.container.get() else {
            return "creating";
        };
        match c.status(c.init()) {
            TaskStatus::Created => "created",
            TaskStatus::Running => "running",
            TaskStatus::Paused => "paused",
            TaskStatus::Stopped => "stopped",
        }
    }

    /// The init's terminal size changed (or it just started): tell the guest.
    pub async fn sync_size(&self) {
        let (Some(tty), Ok(c)) = (&self.tty, self.container()) else {
            return;
        };
        if let Some(s) = tty::size(tty) {
            let r = c
                .resize_pty(&ExecId::Init, s.rows.into(), s.cols.into())
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "terminal resize not applied");
            }
        }
    }

    /// Peer pid of an exec keeper's connection, for `ps --format json`.
    pub fn track_exec(&self, conn: &UnixStream) -> Option<u32> {
        let pid = conn.peer_cred().ok()?.pid()? as u32;
        self.exec_pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pid);
        Some(pid)
    }

    pub fn untrack_exec(&self, pid: Option<u32>) {
        let mut pids = self.exec_pids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pid) = pid {
            pids.retain(|p| *p != pid);
        }
    }
}
