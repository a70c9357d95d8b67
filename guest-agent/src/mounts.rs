//! The container's filesystem, made inside its own mount namespace (see
//! [`crate::rootfs_ns`]): the rootfs (always nodev: device nodes come only
//! from the /dev made here), the OCI mounts that make sense in a VM, a /dev
//! whose device nodes are bind mounts of the agent's own, then pivot_root.
//!
//! The image is hostile: every mount target is resolved inside the rootfs
//! ([`crate::safe_path`]) and the mount is made on the resolved inode through
//! `/proc/self/fd/N`, so no symlink of the image can point a mount elsewhere.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use vxn_wire::protocol::{AgentError, ErrorKind, MountKind, MountSpec, RootfsSource};

use crate::safe_path::{mkdir_all, mkfile, open_in, proc_path};
use crate::sys_mount::do_mount;

/// Kernel filesystems a container may ask for.
const KERNEL_FS: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];
/// How long to wait for a block device to appear (xen-blkfront probes async).
const DEVICE_WAIT: Duration = Duration::from_secs(20);
const NINEP_OPTS: &str = "trans=xen,version=9p2000.L,msize=262144";
/// The device nodes an OCI runtime provides in a fresh /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
const DEV_LINKS: &[(&str, &str)] = &[
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

fn internal(msg: String) -> AgentError {
    AgentError::new(ErrorKind::Internal, msg)
}

fn invalid(msg: String) -> AgentError {
    AgentError::new(ErrorKind::InvalidArgument, msg)
}

/// What goes into a new container namespace.
pub struct Setup {
    pub rootfs: RootfsSource,
    /// An empty directory of the agent's where the rootfs is mounted (inside
    /// the new namespace only).
    pub staging: PathBuf,
    /// Where file mounts' contents were written (`file-<index>`).
    pub files: PathBuf,
    /// Where the VM's 9p shares are mounted once (`<tag>`, see [`stage_shares`]).
    pub shares: PathBuf,
    pub mounts: Vec<MountSpec>,
    pub readonly: bool,
    /// The container gets a PID namespace of its own (procfs is its init's).
    pub own_pid_ns: bool,
}

/// Bind `src` onto the resolved `target`.
fn bind(src: &str, target: &OwnedFd, what: &str) -> Result<(), AgentError> {
    do_mount(
        Some(src),
        &proc_path(target),
        None,
        MsFlags::MS_BIND,
        None,
        what,
    )
}

/// Make every mount of this namespace private: nothing mounted or unmounted
/// here propagates to another namespace, or back.
pub fn make_root_private() -> nix::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

/// Tags already mounted once for the whole VM.
static STAGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Mount each 9p share `mounts` use, once per VM, at `<shares>/<tag>` in the
/// agent's own namespace (containers' namespaces copy it and bind from it).
/// Xen's 9p transport serves one mount per tag: a second mount of the same
/// tag would take the channel from the first, failing its reads with EIO.
pub fn stage_shares(mounts: &[MountSpec], shares: &Path) -> Result<(), AgentError> {
    let mut staged = STAGED.lock().unwrap_or_else(|p| p.into_inner());
    for m in mounts {
        let MountKind::Share { tag, .. } = &m.kind else {
            continue;
        };
        if staged.contains(tag) {
            continue;
        }
        if tag.is_empty() || tag.contains('/') || tag.starts_with('.') {
            return Err(invalid(format!("share tag {tag:?}")));
        }
        let target = shares.join(tag);
        std::fs::create_dir_all(&target)
            .map_err(|e| internal(format!("mkdir {}: {e}", target.display())))?;
        do_mount(
            Some(tag),
            &target,
            Some("9p"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            Some(NINEP_OPTS),
            &format!("share {tag}"),
        )?;
        staged.push(tag.clone());
    }
    Ok(())
}

fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(me), Some(Ok(parent))) => me.dev() != parent.dev(),
        _ => false,
    }
}

/// Wait for the rootfs block device (before the namespace is built: this may take a while).
pub async fn wait_for_rootfs(src: &RootfsSource) -> Result<(), AgentError> {
    let devices: Vec<&str> = match src {
        RootfsSource::Block { device, .. } => vec![device],
        RootfsSource::Overlay { lower, upper } => crate::layered::devices(lower, upper)?.into(),
        _ => return Ok(()),
    };
    let deadline = tokio::time::Instant::now() + DEVICE_WAIT;
    while let Some(device) = devices.iter().find(|d| !Path::new(d).exists()) {
        if tokio::time::Instant::now() > deadline {
            return Err(AgentError::new(
                ErrorKind::NotFound,
                format!("rootfs device {device} did not appear within {DEVICE_WAIT:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// In a fresh mount namespace (the calling thread's): everything, then
/// pivot_root. With a PID namespace of its own, procfs is left to the
/// container's init (a procfs shows its mounter's PID namespace): the
/// destinations it must mount are returned, made as directories.
pub fn build(s: &Setup) -> Result<Vec<String>, AgentError> {
    make_root_private().map_err(|e| internal(format!("make / private: {e}")))?;
    mount_rootfs(&s.rootfs, &s.staging)?;
    let root: OwnedFd = std::fs::File::open(&s.staging)
        .map_err(|e| internal(format!("open {}: {e}", s.staging.display())))?
        .into();
    let root = root.as_fd();
    let mut deferred_proc = Vec::new();
    for (i, m) in s.mounts.iter().enumerate() {
        if s.own_pid_ns && matches!(&m.kind, MountKind::Kernel { fstype } if fstype == "proc") {
            target_dir(root, &m.destination)?;
            deferred_proc.push(m.destination.clone());
            continue;
        }
        apply(root, i, m, &s.files, &s.shares)?;
    }
    if !s.mounts.iter().any(|m| m.destination == "/dev") {
        // Every container gets the basic device nodes.
        let dev = MountSpec {
            destination: "/dev".into(),
            kind: MountKind::Kernel {
                fstype: "tmpfs".into(),
            },
            options: vec!["nosuid".into(), "mode=755".into()],
        };
        apply(root, usize::MAX, &dev, &s.files, &s.shares)?;
    }
    if s.readonly {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NODEV;
        do_mount(None, &s.staging, None, flags, None, "/ (read-only)")?;
    }
    pivot_into(root)?;
    Ok(deferred_proc)
}

fn mount_rootfs(src: &RootfsSource, staging: &Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(staging)
        .map_err(|e| internal(format!("mkdir {}: {e}", staging.display())))?;
    match src {
        RootfsSource::Block {
            device,
            fstype,
            options,
        } => {
            let (flags, data) = parse_options(options);
            do_mount(
                Some(device),
                staging,
                Some(fstype),
                flags | MsFlags::MS_NODEV,
                opt(&data),
                "/",
            )
        }
        RootfsSource::Directory { path } => {
            if !Path::new(path).is_dir() {
                return Err(invalid(format!("rootfs directory {path} does not exist")));
            }
            do_mount(
                Some(path),
                staging,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
                "/",
            )?;
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NODEV;
            do_mount(None, staging, None, flags, None, "/ (nodev)")
        }
        RootfsSource::Share { tag } => do_mount(
            Some(tag),
            staging,
            Some("9p"),
            MsFlags::MS_NODEV,
            Some(NINEP_OPTS),
            "/",
        ),
        RootfsSource::Overlay { lower, upper } => crate::layered::mount(lower, upper, staging),
    }
}

/// Resolve `dest` inside the root as a directory, creating what is missing.
fn target_dir(root: BorrowedFd, dest: &str) -> Result<OwnedFd, AgentError> {
    check_destination(dest)?;
    mkdir_all(root, Path::new(dest), 0o755)
        .map_err(|e| invalid(format!("mount destination {dest}: {e}")))
}

fn check_destination(dest: &str) -> Result<(), AgentError> {
    let p = Path::new(dest);
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(invalid(format!(
            "mount destination {dest:?} must be absolute, without '..'"
        )));
    }
    Ok(())
}

fn apply(
    root: BorrowedFd,
    i: usize,
    m: &MountSpec,
    files: &Path,
    shares: &Path,
) -> Result<(), AgentError> {
    let dest = m.destination.as_str();
    let (flags, data) = parse_options(&m.options);
    match &m.kind {
        MountKind::Kernel { fstype } => {
            if !KERNEL_FS.contains(&fstype.as_str()) {
                return Err(AgentError::new(
                    ErrorKind::Unsupported,
                    format!("mount type {fstype:?} at {dest} is not supported in a vxn guest"),
                ));
            }
            // The guest runs cgroup v2 whatever the host's layout.
            let fstype = if fstype == "cgroup" {
                "cgroup2"
            } else {
                fstype.as_str()
            };
            let data = if fstype == "cgroup2" {
                String::new()
            } else {
                data
            };
            let is_dev = dest == "/dev" && fstype == "tmpfs";
            // A container-writable /dev is nodev: its nodes are bind mounts (below),
            // so a node made with mknod there opens nothing.
            let flags = if is_dev {
                flags | MsFlags::MS_NODEV | MsFlags::MS_NOSUID
            } else {
                flags
            };
            let target = target_dir(root, dest)?;
            do_mount(
                Some(fstype),
                &proc_path(&target),
                Some(fstype),
                flags,
                opt(&data),
                dest,
            )?;
            if is_dev {
                populate_dev(root)?;
            }
        }
        MountKind::Share { tag, subpath } => {
            let target = target_dir(root, dest)?;
            match subpath {
                None => do_mount(
                    Some(tag),
                    &proc_path(&target),
                    Some("9p"),
                    flags,
                    Some(NINEP_OPTS),
                    dest,
                )?,
                Some(sub) => {
                    // The VM's one mount of the share (staged by the agent, copied
                    // into this namespace); a mount of its own where there is none.
                    let staged = shares.join(tag);
                    let stage = if is_mount_point(&staged) {
                        staged
                    } else {
                        let stage = files.join(format!("share-{i}"));
                        std::fs::create_dir_all(&stage)
                            .map_err(|e| internal(format!("mkdir {}: {e}", stage.display())))?;
                        do_mount(
                            Some(tag),
                            &stage,
                            Some("9p"),
                            MsFlags::empty(),
                            Some(NINEP_OPTS),
                            dest,
                        )?;
                        stage
                    };
                    let stage_fd: OwnedFd = std::fs::File::open(&stage)
                        .map_err(|e| internal(format!("open {}: {e}", stage.display())))?
                        .into();
                    // The share is a host directory: its subpath is resolved inside it too.
                    let src = mkdir_all(stage_fd.as_fd(), Path::new(sub), 0o755)
                        .map_err(|e| invalid(format!("share subpath {sub}: {e}")))?;
                    bind(&path_str(&proc_path(&src))?, &target, dest)?;
                    if flags.contains(MsFlags::MS_RDONLY) {
                        remount_readonly(root, dest)?;
                    }
                }
            }
        }
        MountKind::File { .. } => {
            check_destination(dest)?;
            let src = files.join(format!("file-{i}"));
            let target = mkfile(root, Path::new(dest), 0o644)
                .map_err(|e| invalid(format!("mount destination {dest}: {e}")))?;
            bind(&path_str(&src)?, &target, dest)?;
            if flags.contains(MsFlags::MS_RDONLY) {
                remount_readonly(root, dest)?;
            }
        }
    }
    Ok(())
}

/// A bind is a new mount over its target: look it up again to make it read-only.
fn remount_readonly(root: BorrowedFd, dest: &str) -> Result<(), AgentError> {
    let bound = open_in(root, Path::new(dest), libc::O_PATH, 0)
        .map_err(|e| internal(format!("reopen {dest}: {e}")))?;
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    do_mount(None, &proc_path(&bound), None, ro, None, dest)
}

fn path_str(p: &Path) -> Result<String, AgentError> {
    p.to_str()
        .map(String::from)
        .ok_or_else(|| invalid(format!("non-UTF-8 path {}", p.display())))
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The device nodes and links of a fresh /dev: each node a bind mount of the
/// agent's own (a bind keeps its source's device access on a nodev /dev).
fn populate_dev(root: BorrowedFd) -> Result<(), AgentError> {
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let rel = format!("/dev/{name}");
        let target = mkfile(root, Path::new(&rel), 0o666)
            .map_err(|e| internal(format!("create {rel}: {e}")))?;
        bind(&path_str(&host)?, &target, &rel)?;
    }
    let dev = open_in(root, Path::new("/dev"), libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|e| internal(format!("open /dev: {e}")))?;
    for (name, to) in DEV_LINKS {
        if let Err(e) = nix::unistd::symlinkat(*to, Some(dev.as_raw_fd()), *name) {
            if e != Errno::EEXIST {
                return Err(internal(format!("symlink /dev/{name}: {e}")));
            }
        }
    }
    Ok(())
}

/// Make the rootfs this namespace's root and drop the agent's filesystem from it.
fn pivot_into(root: BorrowedFd) -> Result<(), AgentError> {
    nix::unistd::fchdir(root.as_raw_fd())
        .map_err(|e| internal(format!("chdir to the rootfs: {e}")))?;
    // pivot_root(".", "."): the old root is stacked on the new one, then detached.
    // SAFETY: pivot_root(2) with two valid C strings.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } < 0 {
        return Err(internal(format!(
            "pivot_root into the rootfs: {}",
            std::io::Error::last_os_error()
        )));
    }
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| internal(format!("detach the old root: {e}")))?;
    nix::unistd::chdir("/").map_err(|e| internal(format!("chdir /: {e}")))?;
    Ok(())
}

/// Split OCI mount options into mount flags and filesystem data.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" | "bind" | "rbind" | "private" | "rprivate" | "relatime" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o: Vec<String> = ["nosuid", "noexec", "mode=755", "size=65536k", "ro"]
            .map(String::from)
            .into();
        let (f, d) = parse_options(&o);
        assert!(f.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY));
        assert_eq!(d, "mode=755,size=65536k");
        assert!(check_destination("/../etc").is_err());
        assert!(check_destination("relative").is_err());
        assert!(check_destination("/dev/pts").is_ok());
    }
}
