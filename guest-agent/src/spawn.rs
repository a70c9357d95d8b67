//! fork/exec of container processes.
//!
//! Everything the child needs is prepared before `fork` (C strings, the list
//! of executable candidates, ids, limits) so the child only makes
//! async-signal-safe system calls: no allocation, no locks. Failures in the
//! child are written to a close-on-exec pipe as (stage, errno); the parent
//! reads it to tell "exec succeeded" (EOF) from a precise error.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use crate::caps::{self, CapPlan};

/// Which step failed in the child; reported with the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    Stdio = 1,
    Session = 2,
    Tty = 3,
    OomScore = 4,
    MountNs = 5,
    Cwd = 6,
    Rlimit = 7,
    Groups = 8,
    Gid = 9,
    Uid = 10,
    NoNewPrivs = 11,
    Exec = 12,
    Caps = 13,
    Cgroup = 14,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Self> {
        use Stage::*;
        [
            Stdio, Session, Tty, OomScore, MountNs, Cwd, Rlimit, Groups, Gid, Uid, NoNewPrivs,
            Exec, Caps, Cgroup,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("fork: {0}")]
    Fork(Errno),
    #[error("{stage:?}: {errno}")]
    Child { stage: Stage, errno: Errno },
    #[error("child reported a malformed status")]
    Garbled,
}

/// A fully prepared process start.
pub struct SpawnPlan {
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Paths to try with execve, in order (a PATH search, resolved in the child
    /// inside the container's mount namespace, so symlinks resolve in it).
    pub candidates: Vec<CString>,
    /// The container's mount namespace, entered before anything else of it.
    pub mount_ns: Option<RawFd>,
    /// The cwd, in the container's view.
    pub cwd: CString,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    pub umask: Option<libc::mode_t>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    pub no_new_privs: bool,
    pub oom_score_adj: Option<CString>,
    /// OCI capabilities; `None` keeps the agent's.
    pub caps: Option<CapPlan>,
    /// fds that become the child's 0, 1, 2.
    pub stdio: [RawFd; 3],
    /// fd 0 is a tty slave that becomes the controlling terminal.
    pub tty: bool,
    /// The container cgroup's `cgroup.procs`, joined first of all.
    pub cgroup_procs: Option<RawFd>,
}

struct CPtrs {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

fn null_terminated(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Fork and exec `plan`. `register` runs in the parent right after fork with
/// the child's pid (while the caller may hold the reaper's lock).
/// Returns the pid and the read end of the status pipe.
pub fn fork_exec(plan: &SpawnPlan) -> Result<(i32, OwnedFd), SpawnError> {
    let ptrs = CPtrs {
        argv: null_terminated(&plan.argv),
        envp: null_terminated(&plan.envp),
    };
    let mut fds = [0 as RawFd; 2];
    // SAFETY: plain syscall with a valid 2-int buffer.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SpawnError::Fork(Errno::last()));
    }
    // SAFETY: pipe2 returned two new fds we now own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only calls async-signal-safe functions on data
    // prepared above and ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Fork(Errno::last()));
    }
    if pid == 0 {
        // SAFETY: in the forked child; `child` keeps to async-signal-safe calls.
        let (stage, errno) = unsafe { child(plan, &ptrs) };
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: write and _exit are async-signal-safe; `msg` lives on our stack.
        unsafe {
            libc::write(wr.as_raw_fd(), msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    }
    drop(wr);
    Ok((pid, rd))
}

/// Decode what the child wrote to the status pipe (empty = exec succeeded).
pub fn decode_status(buf: &[u8]) -> Result<(), SpawnError> {
    if buf.is_empty() {
        return Ok(());
    }
    if buf.len() != 8 {
        return Err(SpawnError::Garbled);
    }
    let stage = u32::from_ne_bytes(buf[..4].try_into().unwrap_or_default());
    let errno = i32::from_ne_bytes(buf[4..].try_into().unwrap_or_default());
    let stage = Stage::from_u32(stage).ok_or(SpawnError::Garbled)?;
    Err(SpawnError::Child {
        stage,
        errno: Errno::from_raw(errno),
    })
}

/// Runs in the forked child. Returns only on failure.
unsafe fn child(plan: &SpawnPlan, ptrs: &CPtrs) -> (Stage, i32) {
    macro_rules! check {
        ($stage:expr, $e:expr) => {
            if $e < 0 {
                return ($stage, *libc::__errno_location());
            }
        };
    }
    // The agent ignores SIGPIPE and handles others; exec keeps ignored
    // dispositions and the mask, so reset both.
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    for sig in 1..libc::SIGRTMIN() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    if let Some(fd) = plan.cgroup_procs {
        // "0" moves the writer: the child is in the container's cgroup before it runs anything.
        check!(
            Stage::Cgroup,
            libc::write(fd, c"0".as_ptr().cast(), 1) as i32
        );
    }
    // Own session and process group: signals for the agent's group never hit
    // it, and a tty can become its controlling terminal.
    check!(Stage::Session, libc::setsid());
    for (target, &src) in plan.stdio.iter().enumerate() {
        check!(Stage::Stdio, libc::dup2(src, target as i32));
    }
    if plan.tty {
        check!(Stage::Tty, libc::ioctl(0, libc::TIOCSCTTY, 0));
    }
    if let Some(adj) = &plan.oom_score_adj {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        check!(Stage::OomScore, fd);
        let bytes = adj.as_bytes();
        check!(
            Stage::OomScore,
            libc::write(fd, bytes.as_ptr().cast(), bytes.len()) as i32
        );
        libc::close(fd);
    }
    if let Some(ns) = plan.mount_ns {
        // Also moves root and cwd to the container's root.
        check!(Stage::MountNs, libc::setns(ns, libc::CLONE_NEWNS));
    }
    check!(Stage::Cwd, libc::chdir(plan.cwd.as_ptr()));
    for (res, lim) in &plan.rlimits {
        check!(Stage::Rlimit, libc::setrlimit(*res, lim));
    }
    if let Some(c) = &plan.caps {
        // While still fully privileged; then keep the permitted set across setuid.
        check!(Stage::Caps, caps::drop_bounding(c));
        check!(Stage::Caps, libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0));
    }
    check!(
        Stage::Groups,
        libc::setgroups(plan.groups.len(), plan.groups.as_ptr())
    );
    check!(Stage::Gid, libc::setgid(plan.gid));
    check!(Stage::Uid, libc::setuid(plan.uid));
    if let Some(c) = &plan.caps {
        check!(Stage::Caps, libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0));
        check!(Stage::Caps, caps::apply_sets(c));
    }
    if plan.no_new_privs {
        check!(
            Stage::NoNewPrivs,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        );
    }
    if let Some(mask) = plan.umask {
        libc::umask(mask);
    }
    // Like execvp: ENOENT/ENOTDIR mean "try the next", EACCES is remembered.
    let mut err = libc::ENOENT;
    for path in &plan.candidates {
        libc::execve(path.as_ptr(), ptrs.argv.as_ptr(), ptrs.envp.as_ptr());
        let e = *libc::__errno_location();
        match e {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => err = libc::EACCES,
            _ => return (Stage::Exec, e),
        }
    }
    (Stage::Exec, err)
}
