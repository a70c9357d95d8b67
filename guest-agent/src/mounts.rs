//! Container filesystem setup: the rootfs, the OCI mounts that make sense in
//! a VM, and a populated /dev. Every mount is recorded so teardown can undo
//! exactly what setup did, in reverse.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use vxn_runtime_core::protocol::{AgentError, ErrorKind, MountKind, MountSpec, RootfsSource};

/// Kernel filesystems a container may ask for.
const KERNEL_FS: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];
/// How long to wait for a block device to appear (xen-blkfront probes async).
const DEVICE_WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
pub struct MountTable {
    mounted: Vec<PathBuf>,
}

impl MountTable {
    fn mount(
        &mut self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), AgentError> {
        mount(source, target, fstype, flags, data).map_err(|e| {
            internal(format!(
                "mount {} on {} ({}): {e}",
                source.unwrap_or("none"),
                target.display(),
                fstype.unwrap_or("bind")
            ))
        })?;
        self.mounted.push(target.to_path_buf());
        Ok(())
    }

    /// Unmount everything in reverse order; lazily, so a busy mount can't
    /// keep the container from being deleted.
    pub fn unmount_all(&mut self) {
        while let Some(p) = self.mounted.pop() {
            if let Err(e) = umount2(&p, MntFlags::MNT_DETACH) {
                tracing::warn!(path = %p.display(), error = %e, "unmount failed");
            }
        }
    }
}

fn internal(msg: String) -> AgentError {
    AgentError::new(ErrorKind::Internal, msg)
}

fn invalid(msg: String) -> AgentError {
    AgentError::new(ErrorKind::InvalidArgument, msg)
}

/// `dest` inside `rootfs`, refusing relative paths and `..`.
pub fn join_in(rootfs: &Path, dest: &str) -> Result<PathBuf, AgentError> {
    let p = Path::new(dest);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(invalid(format!(
            "mount destination {dest:?} must be absolute, without '..'"
        )));
    }
    Ok(rootfs.join(p.strip_prefix("/").unwrap_or(p)))
}

/// Make the container's root filesystem available at `target` (or use a
/// directory in place) and return the rootfs path.
pub async fn mount_rootfs(
    src: &RootfsSource,
    target: &Path,
    table: &mut MountTable,
) -> Result<PathBuf, AgentError> {
    match src {
        RootfsSource::Directory { path } => {
            let p = PathBuf::from(path);
            if !p.is_dir() {
                return Err(invalid(format!("rootfs directory {path} does not exist")));
            }
            Ok(p)
        }
        RootfsSource::Block {
            device,
            fstype,
            options,
        } => {
            wait_for(Path::new(device)).await?;
            mkdir(target)?;
            let (flags, data) = parse_options(options);
            table.mount(Some(device), target, Some(fstype), flags, opt(&data))?;
            Ok(target.to_path_buf())
        }
        RootfsSource::Share { tag } => {
            mkdir(target)?;
            table.mount(
                Some(tag),
                target,
                Some("9p"),
                MsFlags::empty(),
                Some(NINEP_OPTS),
            )?;
            Ok(target.to_path_buf())
        }
    }
}

const NINEP_OPTS: &str = "trans=xen,version=9p2000.L,msize=262144";

async fn wait_for(dev: &Path) -> Result<(), AgentError> {
    let deadline = tokio::time::Instant::now() + DEVICE_WAIT;
    while !dev.exists() {
        if tokio::time::Instant::now() > deadline {
            return Err(AgentError::new(
                ErrorKind::NotFound,
                format!(
                    "rootfs device {} did not appear within {DEVICE_WAIT:?}",
                    dev.display()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn mkdir(p: &Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(p).map_err(|e| internal(format!("mkdir {}: {e}", p.display())))
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
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

/// Apply the container's mounts in spec order (`/dev` before `/dev/pts`).
pub fn apply_mounts(
    rootfs: &Path,
    mounts: &[MountSpec],
    files_dir: &Path,
    table: &mut MountTable,
) -> Result<(), AgentError> {
    for (i, m) in mounts.iter().enumerate() {
        let dest = join_in(rootfs, &m.destination)?;
        match &m.kind {
            MountKind::Kernel { fstype } => {
                if !KERNEL_FS.contains(&fstype.as_str()) {
                    return Err(AgentError::new(
                        ErrorKind::Unsupported,
                        format!(
                            "mount type {fstype:?} at {} is not supported in a vxn guest",
                            m.destination
                        ),
                    ));
                }
                // The guest runs cgroup v2 whatever the host's layout.
                let fstype = if fstype == "cgroup" {
                    "cgroup2"
                } else {
                    fstype.as_str()
                };
                mkdir(&dest)?;
                let (flags, data) = parse_options(&m.options);
                let data = if fstype == "cgroup2" {
                    String::new()
                } else {
                    data
                };
                table.mount(Some(fstype), &dest, Some(fstype), flags, opt(&data))?;
                if m.destination == "/dev" && fstype == "tmpfs" {
                    populate_dev(&dest)?;
                }
            }
            MountKind::Share { tag, subpath } => {
                mkdir(&dest)?;
                match subpath {
                    None => table.mount(
                        Some(tag),
                        &dest,
                        Some("9p"),
                        MsFlags::empty(),
                        Some(NINEP_OPTS),
                    )?,
                    Some(sub) => {
                        let stage = files_dir.join(format!("share-{i}"));
                        mkdir(&stage)?;
                        table.mount(
                            Some(tag),
                            &stage,
                            Some("9p"),
                            MsFlags::empty(),
                            Some(NINEP_OPTS),
                        )?;
                        let src = join_in(&stage, &format!("/{sub}"))?;
                        table.mount(Some(path_str(&src)?), &dest, None, MsFlags::MS_BIND, None)?;
                    }
                }
            }
            MountKind::File { contents, mode } => {
                // Bind a file from agent memory: the container image is not modified.
                mkdir(files_dir)?;
                let src = files_dir.join(format!("file-{i}"));
                std::fs::write(&src, contents)
                    .map_err(|e| internal(format!("write {}: {e}", src.display())))?;
                set_mode(&src, *mode)?;
                if let Some(parent) = dest.parent() {
                    mkdir(parent)?;
                }
                if !dest.exists() {
                    std::fs::write(&dest, b"")
                        .map_err(|e| internal(format!("create {}: {e}", dest.display())))?;
                }
                let (flags, _) = parse_options(&m.options);
                table.mount(Some(path_str(&src)?), &dest, None, MsFlags::MS_BIND, None)?;
                if flags.contains(MsFlags::MS_RDONLY) {
                    table.mounted.pop(); // same mount point, remount only
                    table.mount(
                        None,
                        &dest,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None,
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn path_str(p: &Path) -> Result<&str, AgentError> {
    p.to_str()
        .ok_or_else(|| invalid(format!("non-UTF-8 path {}", p.display())))
}

fn set_mode(p: &Path, mode: u32) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| internal(format!("chmod {}: {e}", p.display())))
}

/// The device nodes and links an OCI runtime provides in a fresh /dev.
pub fn populate_dev(dev: &Path) -> Result<(), AgentError> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    const NODES: &[(&str, u64, u64)] = &[
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in NODES {
        let p = dev.join(name);
        if p.exists() {
            continue;
        }
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        )
        .map_err(|e| internal(format!("mknod {}: {e}", p.display())))?;
        set_mode(&p, 0o666)?;
    }
    const LINKS: &[(&str, &str)] = &[
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in LINKS {
        let p = dev.join(name);
        if p.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(target, &p)
                .map_err(|e| internal(format!("symlink {}: {e}", p.display())))?;
        }
    }
    Ok(())
}

/// Make a directory rootfs a mount point of its own, so it can later be
/// remounted read-only. Must run before the container's mounts.
pub fn bind_self(rootfs: &Path, table: &mut MountTable) -> Result<(), AgentError> {
    table.mount(
        Some(path_str(rootfs)?),
        rootfs,
        None,
        MsFlags::MS_BIND,
        None,
    )
}

/// Remount the rootfs read-only, after all mounts are in place.
pub fn remount_readonly(rootfs: &Path) -> Result<(), AgentError> {
    mount(
        None::<&str>,
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| internal(format!("remount {} read-only: {e}", rootfs.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_stay_inside_the_rootfs() {
        let r = Path::new("/r");
        assert_eq!(join_in(r, "/dev/pts").unwrap(), PathBuf::from("/r/dev/pts"));
        assert!(join_in(r, "/../etc").is_err());
        assert!(join_in(r, "relative").is_err());
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let o: Vec<String> = ["nosuid", "noexec", "mode=755", "size=65536k", "ro"]
            .map(String::from)
            .into();
        let (f, d) = parse_options(&o);
        assert!(f.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY));
        assert_eq!(d, "mode=755,size=65536k");
    }
}
