//! A container's own mount namespace. It is built on a dedicated thread
//! (`unshare(CLONE_FS | CLONE_NEWNS)` affects only that thread): the rootfs is
//! mounted there, every container mount is made inside it, and pivot_root
//! leaves the agent's filesystem out of the namespace. The namespace lives as
//! long as its fd (held by the container) or a process in it.
//!
//! Processes enter it with setns(2) in the forked child; the agent's own work
//! in the container's files (a missing cwd, /etc/passwd, the tty) runs on a
//! short-lived thread that entered it the same way, so paths resolve in the
//! container's view and never outside it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sched::{setns, unshare, CloneFlags};
use vxn_wire::protocol::{AgentError, ErrorKind};

use crate::mounts::{self, Setup};

pub struct ContainerNs {
    fd: OwnedFd,
    /// Where the container's init mounts procfs (its own PID namespace).
    proc_mounts: Vec<String>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::new(ErrorKind::Internal, format!("{what}: {e}"))
}

/// Run `f` on a new OS thread and await its result without blocking the
/// agent's (single-threaded) runtime.
async fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("vxn-container-ns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| internal("start a thread", e))?;
    rx.await
        .map_err(|_| internal("container namespace thread", "it died"))?
}

impl ContainerNs {
    /// Build the namespace: see the module doc. Nothing outlives an error:
    /// the namespace dies with the thread that made it.
    pub async fn create(setup: Setup) -> Result<Self, AgentError> {
        on_thread(move || {
            unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
                .map_err(|e| internal("unshare the mount namespace", e))?;
            let fd: OwnedFd = std::fs::File::open("/proc/thread-self/ns/mnt")
                .map_err(|e| internal("open the new mount namespace", e))?
                .into();
            let proc_mounts = mounts::build(&setup)?;
            Ok(Self { fd, proc_mounts })
        })
        .await
    }

    /// The namespace's inode: a process is the container's when its
    /// `/proc/PID/ns/mnt` is this one (a pod's VM holds several containers).
    pub fn inode(&self) -> u64 {
        nix::sys::stat::fstat(self.fd.as_raw_fd()).map_or(0, |st| st.st_ino)
    }

    /// Where its init mounts procfs (empty: the namespace has it already).
    pub fn proc_mounts(&self) -> &[String] {
        &self.proc_mounts
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Run `f` inside the container's view, with an fd of its root (for
    /// [`crate::safe_path`] lookups), on a short-lived thread.
    pub async fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce(BorrowedFd) -> Result<T, AgentError> + Send + 'static,
    ) -> Result<T, AgentError> {
        let ns = self
            .fd
            .try_clone()
            .map_err(|e| internal("dup the namespace fd", e))?;
        on_thread(move || {
            unshare(CloneFlags::CLONE_FS).map_err(|e| internal("unshare fs", e))?;
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNS)
                .map_err(|e| internal("enter the container's mount namespace", e))?;
            // setns put this thread's root and cwd at the container root.
            // SAFETY: open of a constant path; the new fd is ours.
            let root = unsafe {
                libc::open(
                    c"/".as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if root < 0 {
                return Err(internal(
                    "open the container root",
                    std::io::Error::last_os_error(),
                ));
            }
            // SAFETY: a new fd we own.
            let root = unsafe { OwnedFd::from_raw_fd(root) };
            f(root.as_fd())
        })
        .await
    }
}
