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
    PidNs = 15,
    MountProc = 16,
    MaskPath = 17,
    ReadonlyPath = 18,
    Seccomp = 19,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Self> {
        use Stage::*;
        [
            Stdio,
            Session,
            Tty,
            OomScore,
            MountNs,
            Cwd,
            Rlimit,
            Groups,
            Gid,
            Uid,
            NoNewPrivs,
            Exec,
            Caps,
            Cgroup,
            PidNs,
            MountProc,
            MaskPath,
            ReadonlyPath,
            Seccomp,
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

/// What a container's init sets up in its namespaces before it execs (and
/// its later processes find made): like runc's init, from inside, because a
/// procfs shows the PID namespace of the process that mounts it.
#[derive(Debug, Default)]
pub struct InitSetup {
    /// Start in a new PID namespace, as its PID 1.
    pub new_pid_ns: bool,
    /// Where procfs is mounted (from inside the new PID namespace).
    pub proc_mounts: Vec<CString>,
    /// Files get /dev/null bound over them, directories an empty read-only tmpfs.
    pub masked: Vec<CString>,
    /// Bound over themselves read-only, submounts included.
    pub readonly: Vec<CString>,
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
    /// The container's own PID namespace, for a process started in it later.
    pub pid_ns: Option<RawFd>,
    /// The container's init: the namespaces' setup before exec.
    pub init: Option<InitSetup>,
    /// The container's seccomp filter, loaded last before exec (or, without
    /// no_new_privs, while the child still has CAP_SYS_ADMIN to load it).
    pub seccomp: Option<std::sync::Arc<Vec<libc::sock_filter>>>,
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
    let pid = fork_into_pid_ns(plan)?;
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

/// fork(2), the child in the plan's PID namespace: a new one (clone with
/// CLONE_NEWPID, fork's semantics otherwise) or the container's (setns of
/// this thread's namespace for children around the fork, then back).
fn fork_into_pid_ns(plan: &SpawnPlan) -> Result<i32, SpawnError> {
    let fail = |stage| SpawnError::Child {
        stage,
        errno: Errno::last(),
    };
    if plan.init.as_ref().is_some_and(|i| i.new_pid_ns) {
        // SAFETY: clone without CLONE_VM and with no new stack is fork; the
        // child keeps to async-signal-safe calls as after fork.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        return if pid < 0 {
            Err(fail(Stage::PidNs))
        } else {
            Ok(pid as i32)
        };
    }
    let Some(ns) = plan.pid_ns else {
        // SAFETY: the child only calls async-signal-safe functions on data
        // prepared before and ends in execve or _exit.
        let pid = unsafe { libc::fork() };
        return if pid < 0 {
            Err(SpawnError::Fork(Errno::last()))
        } else {
            Ok(pid)
        };
    };
    let own = std::fs::File::open("/proc/thread-self/ns/pid").map_err(|e| SpawnError::Child {
        stage: Stage::PidNs,
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    // SAFETY: setns on fds we hold; it changes only this thread's namespace
    // for children, put back before returning.
    if unsafe { libc::setns(ns, libc::CLONE_NEWPID) } < 0 {
        return Err(fail(Stage::PidNs));
    }
    // SAFETY: as for fork above.
    let pid = unsafe { libc::fork() };
    let forked = if pid < 0 {
        Err(SpawnError::Fork(Errno::last()))
    } else {
        Ok(pid)
    };
    if pid != 0 {
        // SAFETY: as above; our own namespace is always ours to return to.
        unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) };
    }
    forked
}

/// In the child, in the container's mount namespace: procfs, masks,
/// read-only paths. A path the image lacks is skipped, as runc does.
unsafe fn setup_init(init: &InitSetup) -> Result<(), (Stage, i32)> {
    let errno = || *libc::__errno_location();
    for dest in &init.proc_mounts {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(
            c"proc".as_ptr(),
            dest.as_ptr(),
            c"proc".as_ptr(),
            flags,
            std::ptr::null(),
        ) < 0
        {
            return Err((Stage::MountProc, errno()));
        }
    }
    for p in &init.masked {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(p.as_ptr(), &mut st) < 0 {
            match errno() {
                libc::ENOENT | libc::ENOTDIR => continue,
                e => return Err((Stage::MaskPath, e)),
            }
        }
        let rc = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            libc::mount(
                c"tmpfs".as_ptr(),
                p.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY,
                std::ptr::null(),
            )
        } else {
            libc::mount(
                c"/dev/null".as_ptr(),
                p.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            return Err((Stage::MaskPath, errno()));
        }
    }
    for p in &init.readonly {
        if libc::mount(
            p.as_ptr(),
            p.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ) < 0
        {
            match errno() {
                libc::ENOENT | libc::ENOTDIR => continue,
                e => return Err((Stage::ReadonlyPath, e)),
            }
        }
        let mut attr: libc::mount_attr = std::mem::zeroed();
        attr.attr_set = libc::MOUNT_ATTR_RDONLY;
        let rc = libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            p.as_ptr(),
            libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        );
        if rc < 0 {
            return Err((Stage::ReadonlyPath, errno()));
        }
    }
    Ok(())
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
    if let Some(init) = &plan.init {
        if let Err(failed) = setup_init(init) {
            return failed;
        }
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
    if let (Some(filter), false) = (&plan.seccomp, plan.no_new_privs) {
        // Without no_new_privs only CAP_SYS_ADMIN may load it: now, before the
        // ids and capabilities change (the profile must allow those calls).
        check!(Stage::Seccomp, crate::seccomp::load(filter));
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
    if let (Some(filter), true) = (&plan.seccomp, plan.no_new_privs) {
        check!(Stage::Seccomp, crate::seccomp::load(filter));
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
