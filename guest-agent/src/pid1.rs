//! Duties of PID 1 in a vxn DomU: the base mounts, the console, kernel
//! modules, and powering off. Also the test-mode isolation when not PID 1.

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::mount::{mount, MsFlags};

fn mount_fs(fstype: &str, target: &str, flags: MsFlags, data: Option<&str>) {
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = mount(Some(fstype), target, Some(fstype), flags, data) {
        // EBUSY: already mounted (the kernel mounts devtmpfs itself with CONFIG_DEVTMPFS_MOUNT).
        if e != nix::errno::Errno::EBUSY {
            eprintln!("vxn-agent: mount {fstype} on {target}: {e}");
        }
    }
}

/// Make sure fds 0-2 exist so pipes never land on them.
pub fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: fcntl F_GETFD probes an fd number; open returns a new fd.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                let n = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if n >= 0 && n != fd {
                    libc::dup2(n, fd);
                    libc::close(n);
                }
            }
        }
    }
}

/// The base system of the guest, before anything else runs.
pub fn early_setup() {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", nosuid, None);
    mount_fs("sysfs", "/sys", nosuid, None);
    mount_fs("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755"));
    mount_fs(
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    );
    mount_fs(
        "tmpfs",
        "/dev/shm",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    mount_fs(
        "tmpfs",
        "/run",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    );
    mount_fs(
        "tmpfs",
        "/tmp",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    mount_fs("cgroup2", "/sys/fs/cgroup", nosuid, None);
    let _ = std::fs::remove_file("/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    // Log to the primary console: the initramfs may have had no /dev/console.
    if let Ok(con) = std::fs::OpenOptions::new().write(true).open("/dev/hvc0") {
        // SAFETY: dup2 onto stdout/stderr.
        unsafe {
            libc::dup2(con.as_raw_fd(), 1);
            libc::dup2(con.as_raw_fd(), 2);
        }
    }
    // SAFETY: signal(2): container processes reset dispositions before exec.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Load the modules listed in `list` (deps first) with finit_module(2).
pub fn load_modules(list: &Path) {
    let Ok(text) = std::fs::read_to_string(list) else {
        tracing::debug!(list = %list.display(), "no module list");
        return;
    };
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = Path::new("/lib/modules").join(release);
    for rel in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let path = base.join(rel);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(module = %path.display(), error = %e, "cannot open module");
                continue;
            }
        };
        // SAFETY: finit_module with a valid fd and an empty parameter string.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), c"".as_ptr(), 0) };
        if r < 0 {
            let e = nix::errno::Errno::last();
            if e != nix::errno::Errno::EEXIST {
                tracing::warn!(module = rel, error = %e, "module load failed");
            }
        } else {
            tracing::debug!(module = rel, "module loaded");
        }
    }
}

/// Leave the initramfs: containers get their own root with pivot_root(2),
/// which refuses to work while the caller's root is the initramfs (rootfs).
/// As switch_root does: the agent's mounts move onto a tmpfs that becomes its
/// root. The initramfs stays underneath, made read-only, nodev, nosuid and
/// noexec first, so a container process that escapes its root (CAP_SYS_CHROOT)
/// finds nothing it can write, run or open a device through. The loaded
/// modules are removed first: they only cost guest memory from now on.
pub fn switch_root() -> Result<(), String> {
    let _ = std::fs::remove_dir_all("/lib/modules");
    let new = Path::new("/.vxn-root");
    std::fs::create_dir_all(new).map_err(|e| format!("mkdir {}: {e}", new.display()))?;
    let tmpfs = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some("tmpfs"), new, Some("tmpfs"), tmpfs, Some("mode=0755"))
        .map_err(|e| format!("mount the agent's root: {e}"))?;
    for dir in ["dev", "proc", "sys", "run", "tmp"] {
        let to = new.join(dir);
        std::fs::create_dir_all(&to).map_err(|e| format!("mkdir {}: {e}", to.display()))?;
        let from = Path::new("/").join(dir);
        mount(
            Some(&from),
            &to,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| format!("move {} to the agent's root: {e}", from.display()))?;
    }
    let sealed = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, "/", None::<&str>, sealed, None::<&str>)
        .map_err(|e| format!("seal the initramfs: {e}"))?;
    nix::unistd::chdir(new).map_err(|e| format!("chdir {}: {e}", new.display()))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move the agent's root onto /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// Test mode: a private UTS and network namespace (nothing we name or
/// configure leaks to the host) and subreaping of orphans. The agent stays
/// in the host's mount namespace, so a rootfs the host mounts later (a
/// pod's next container) is there to take; every mount it makes is in a
/// container's own private namespace ([`crate::rootfs_ns`]).
/// `die_with_parent`: SIGKILL when the parent dies (test harnesses).
/// Must run before any thread exists.
pub fn isolate_for_tests(die_with_parent: bool) -> Result<(), String> {
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare (test mode needs root): {e}"))?;
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        if die_with_parent {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    Ok(())
}

/// Sync and power the domain off. Never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // reboot(2) only fails without CAP_SYS_BOOT; nothing sane is left to do.
    std::process::exit(1)
}
