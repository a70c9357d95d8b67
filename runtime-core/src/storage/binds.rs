//! Host directories a container binds (CRI volumes: emptyDir, hostPath,
//! configMap and secret directories; `ctr --mount`, `docker -v`) reach its VM
//! over 9p. The VM gets one share, a dom0 directory of vxn's; each bind is
//! bind-mounted into it at `<container id>/<n>` (read-only on the host too
//! when asked), and the agent binds that subpath at the destination. Writes
//! go straight to the host directory, so a pod's containers share an
//! emptyDir. Small files (hosts, resolv.conf, termination-log) are copied
//! by value instead (`oci::mounts`).
//!
//! Every target is recorded before it is mounted; removal never crosses a
//! mount point, so a host directory still bound is never deleted from.
//!
//! Read-only is runc's: `ro` the bind's top mount only (its submounts stay as
//! they are), `rro` every mount down to the last. Bidirectional propagation
//! is refused (`oci::mounts`): a mount made in the VM cannot reach dom0.
//!
//! The guest is not trusted with the host's directories: each bind is
//! nosuid and nodev down to its last submount, QEMU
//! keeps the guest's owners, modes and device nodes in xattrs
//! (`security_model=mapped-xattr`) instead of making them on the host, and
//! the share roots are root's alone (0700).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use vxn_wire::protocol::{MountKind, MountSpec};

use crate::error::{Error, Result};
use crate::storage::mounts::unmount_all;

/// The 9p tag of a VM's share (`p9=` in the xl config).
pub const SHARE_TAG: &str = "vxn-share";

/// How much of a bind is read-only. runc's `ro` makes the bind's top mount
/// read-only and leaves its submounts as they are (Kubernetes' readOnly
/// volume); `rro` (containerd 2.x's recursive read-only) makes every one so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnly {
    No,
    Top,
    Recursive,
}

impl ReadOnly {
    /// From a spec mount's options.
    pub fn of(options: &[String]) -> Self {
        if options.iter().any(|o| o == "rro") {
            ReadOnly::Recursive
        } else if options.iter().any(|o| o == "ro") {
            ReadOnly::Top
        } else {
            ReadOnly::No
        }
    }
}

/// A bind of a host directory, as the spec asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: ReadOnly,
    /// The spec's options (propagation and the like), passed on to the guest.
    pub options: Vec<String>,
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{what} {}: {e}", p.display()))
}

fn mount(src: &Path, target: &Path, flags: libc::c_ulong) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (src, target) = (c(src)?, c(target)?);
    // SAFETY: valid NUL-terminated strings for the duration of the call; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// nosuid and nodev on `target` and every mount below it (a plain remount
/// changes only the top one, and a hostPath with submounts would stay
/// setuid-capable below them), read-only as asked, and slave propagation.
fn lock_down(target: &Path, readonly: ReadOnly) -> std::io::Result<()> {
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = libc::MOUNT_ATTR_NOSUID
        | libc::MOUNT_ATTR_NODEV
        | if readonly == ReadOnly::Recursive {
            libc::MOUNT_ATTR_RDONLY
        } else {
            0
        };
    // A follower of the host's mounts, never a peer: unmounting the copy's
    // submounts at teardown must not unmount the host's own.
    attr.propagation = libc::MS_SLAVE;
    set_mount_attr(target, &attr, libc::AT_RECURSIVE)?;
    if readonly == ReadOnly::Top {
        // SAFETY: a plain-old-data struct, all zeroes meaning "change nothing".
        let mut top: libc::mount_attr = unsafe { std::mem::zeroed() };
        top.attr_set = libc::MOUNT_ATTR_RDONLY;
        set_mount_attr(target, &top, 0)?;
    }
    Ok(())
}

fn set_mount_attr(
    target: &Path,
    attr: &libc::mount_attr,
    flags: libc::c_int,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path =
        std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated path and a mount_attr of the size passed, both
    // alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags | libc::AT_SYMLINK_NOFOLLOW,
            attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `dir`'s filesystem stores `user.*` xattrs (QEMU's mapped-xattr
/// model needs them for anything the guest creates).
fn keeps_user_xattrs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and name; a zero-size query writes nothing.
    let rc = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.vxn.probe".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    rc >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EOPNOTSUPP)
}

/// The directory a VM's share is made in: `top` (every share's parent) and
/// the share itself are root's alone, so no dom0 user walks into a pod's
/// secrets.
pub fn make_share_dir(top: &Path, share: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    b.create(top).map_err(|e| io_err("mkdir", top, e))?;
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err("chmod", top, e))?;
    b.create(share).map_err(|e| io_err("mkdir", share, e))
}

/// A spec mount as vxn will make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// Made by the agent from what the request carries.
    Guest(MountSpec),
    /// A host directory, through the VM's share.
    HostDir(HostBind),
}

pub fn needs_share(plan: &[Planned]) -> bool {
    plan.iter().any(|p| matches!(p, Planned::HostDir(_)))
}

/// The guest's mounts, in order: each host directory bound under
/// `<share>/<owner>/<n>` first. `recorded(dir)` is called once, with
/// `<share>/<owner>`, before anything is made there (to record it).
pub fn expose(
    share: Option<&Path>,
    owner: &str,
    plan: Vec<Planned>,
    recorded: impl FnOnce(&Path) -> Result<()>,
) -> Result<Vec<MountSpec>> {
    if !needs_share(&plan) {
        return Ok(plan
            .into_iter()
            .filter_map(|p| match p {
                Planned::Guest(m) => Some(m),
                Planned::HostDir(_) => None,
            })
            .collect());
    }
    let share = share.ok_or_else(|| {
        Error::Unimplemented("host directory binds need a VM with a share (the xen backend)".into())
    })?;
    recorded(&share.join(owner))?;
    let mut out = Vec::new();
    for (n, p) in plan.into_iter().enumerate() {
        let b = match p {
            Planned::Guest(m) => {
                out.push(m);
                continue;
            }
            Planned::HostDir(b) => b,
        };
        let meta = std::fs::metadata(&b.source).map_err(|e| {
            Error::InvalidArgument(format!("bind mount source {}: {e}", b.source.display()))
        })?;
        if !meta.is_dir() {
            return Err(Error::Unimplemented(format!(
                "bind mount of {} at {}: vxn shares host directories and copies files up to 64 KiB; bind its directory instead",
                b.source.display(),
                b.destination
            )));
        }
        if b.readonly == ReadOnly::No && !keeps_user_xattrs(&b.source) {
            return Err(Error::InvalidArgument(format!(
                "bind mount of {} at {}: its filesystem keeps no user xattrs (tmpfs before Linux 6.6), \
                 where vxn keeps what the guest sets of owners, modes and device nodes; bind it \
                 read-only, or use a directory on a disk filesystem",
                b.source.display(),
                b.destination
            )));
        }
        let rel = format!("{owner}/{n}");
        let target = share.join(&rel);
        std::fs::create_dir_all(&target).map_err(|e| io_err("mkdir", &target, e))?;
        mount(&b.source, &target, libc::MS_BIND | libc::MS_REC)
            .map_err(|e| io_err("bind", &b.source, e))?;
        lock_down(&target, b.readonly).map_err(|e| io_err("restrict the bind", &target, e))?;
        let mut options: Vec<String> = b
            .options
            .iter()
            .filter(|o| !matches!(o.as_str(), "bind" | "rbind" | "ro" | "rro" | "rw"))
            .cloned()
            .collect();
        // The guest sees the whole bind as one 9p mount: read-only there would
        // take the submounts a top-only `ro` leaves writable. dom0 refuses
        // writes to the top mount itself then.
        let guest_ro = match b.readonly {
            ReadOnly::No => false,
            ReadOnly::Recursive => true,
            ReadOnly::Top => !has_submounts(&target),
        };
        options.push(if guest_ro { "ro" } else { "rw" }.into());
        out.push(MountSpec {
            destination: b.destination.clone(),
            kind: MountKind::Share {
                tag: SHARE_TAG.into(),
                subpath: Some(rel),
            },
            options,
        });
    }
    Ok(out)
}

/// The mount points at or below `dir`, from this process's mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn has_submounts(target: &Path) -> bool {
    mounts_under(target).iter().any(|p| p != target)
}

/// Unmount every bind under `dir` (deepest first) and remove what vxn made
/// there. Ok once nothing is left; never deletes through a mount point.
pub fn remove(dir: &Path) -> Result<()> {
    let mut under = mounts_under(dir);
    under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in under {
        unmount_all(&p).map_err(|e| io_err("unmount", &p, e))?;
    }
    match std::fs::symlink_metadata(dir) {
        Ok(m) => remove_same_fs(dir, m.dev()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("stat", dir, e)),
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> PathBuf {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    PathBuf::from(out)
}

/// rm -r that stops at mount points (a different device): those are an error.
fn remove_same_fs(dir: &Path, dev: u64) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io_err("stat", dir, e))?;
    if meta.dev() != dev {
        return Err(Error::Internal(format!(
            "{} is still a mount point: not removed",
            dir.display()
        )));
    }
    if !meta.is_dir() {
        return std::fs::remove_file(dir).map_err(|e| io_err("remove", dir, e));
    }
    for e in std::fs::read_dir(dir).map_err(|e| io_err("read", dir, e))? {
        let e = e.map_err(|e| io_err("read", dir, e))?;
        remove_same_fs(&e.path(), dev)?;
    }
    std::fs::remove_dir(dir).map_err(|e| io_err("remove", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape("/a\\040b/c"), PathBuf::from("/a b/c"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape("/odd\\x"), PathBuf::from("/odd\\x"));
    }

    #[test]
    fn a_file_bind_is_refused_and_nothing_is_made() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("big");
        std::fs::write(&f, b"x").unwrap();
        let share = d.path().join("share");
        let plan = vec![Planned::HostDir(HostBind {
            source: f,
            destination: "/data".into(),
            readonly: ReadOnly::No,
            options: vec![],
        })];
        let e = expose(Some(&share), "c1", plan, |_| Ok(())).unwrap_err();
        assert!(matches!(e, Error::Unimplemented(_)), "{e}");
        assert!(!share.exists());
        remove(&share).unwrap();
    }

    /// Every bind is nosuid and nodev down to its submounts; `rro` read-only
    /// down to them too, `ro` at its top only (needs root for the mounts:
    /// skipped otherwise).
    #[test]
    fn binds_are_locked_down_below_their_submounts() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        // The source a shared mount (as / is on systemd hosts), with a submount.
        let c = |p: &Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        let (src_c, sub_c) = (c(&src), c(&src.join("sub")));
        // SAFETY: NUL-terminated strings alive for the calls.
        let rc = unsafe {
            let tmpfs = |at: &std::ffi::CString| {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    at.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            let mut rc = tmpfs(&src_c);
            rc |= libc::mount(
                std::ptr::null(),
                src_c.as_ptr(),
                std::ptr::null(),
                libc::MS_SHARED,
                std::ptr::null(),
            );
            std::fs::create_dir_all(src.join("sub")).unwrap();
            rc | tmpfs(&sub_c)
        };
        if rc != 0 {
            eprintln!("cannot mount here (not root?): not checked");
            return;
        }
        let share = d.path().join("share");
        make_share_dir(&d.path().join("top"), &share).unwrap();
        let plan = |readonly| {
            vec![Planned::HostDir(HostBind {
                source: src.clone(),
                destination: "/data".into(),
                readonly,
                options: vec![],
            })]
        };
        let ro = expose(Some(&share), "c1", plan(ReadOnly::Recursive), |_| Ok(())).unwrap();
        assert!(ro[0].options.contains(&"ro".to_string()));
        let err = std::fs::write(share.join("c1/0/sub/planted"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        expose(Some(&share), "c2", plan(ReadOnly::No), |_| Ok(())).unwrap();
        std::fs::write(share.join("c2/0/sub/ok"), b"x").unwrap();
        // runc's ro: the top is read-only, the submount below stays writable,
        // so the guest's one 9p mount must not be read-only.
        let top = expose(Some(&share), "c3", plan(ReadOnly::Top), |_| Ok(())).unwrap();
        assert!(top[0].options.contains(&"rw".to_string()), "{:?}", top[0]);
        let err = std::fs::write(share.join("c3/0/planted"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        std::fs::write(share.join("c3/0/sub/ok3"), b"x").unwrap();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for sub in ["c1/0/sub", "c2/0/sub", "c2/0", "c3/0", "c3/0/sub"] {
            let at = share.join(sub);
            let line = info
                .lines()
                .find(|l| l.split(' ').nth(4).map(unescape).as_deref() == Some(at.as_path()))
                .unwrap_or_else(|| panic!("{} is not a mount", at.display()));
            let opts = line.split(' ').nth(5).unwrap();
            assert!(
                opts.contains("nosuid") && opts.contains("nodev"),
                "{sub}: {opts}"
            );
        }
        remove(&share).unwrap();
        assert!(!share.exists());
        // Unmounting the share's copies never reaches the host's own mounts.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let still = info.lines().any(|l| {
            l.split(' ').nth(4).map(unescape).as_deref() == Some(src.join("sub").as_path())
        });
        let _ = crate::storage::mounts::unmount_all(&src.join("sub"));
        let _ = crate::storage::mounts::unmount_all(&src);
        assert!(still, "removing the share unmounted the source's submount");
    }

    #[test]
    fn share_dirs_are_roots_alone() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("shares");
        std::fs::create_dir(&top).unwrap();
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o755)).unwrap();
        make_share_dir(&top, &top.join("k8s.io/pod1")).unwrap();
        for p in [top.clone(), top.join("k8s.io"), top.join("k8s.io/pod1")] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
    }

    #[test]
    fn a_writable_bind_needs_user_xattrs() {
        // procfs keeps no xattrs at all.
        assert!(!keeps_user_xattrs(Path::new("/proc")));
        let d = tempfile::tempdir().unwrap();
        let plan = vec![Planned::HostDir(HostBind {
            source: "/proc".into(),
            destination: "/data".into(),
            readonly: ReadOnly::No,
            options: vec![],
        })];
        let e = expose(Some(&d.path().join("s")), "c1", plan, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("no user xattrs"), "{e}");
        assert!(!d.path().join("s/c1/0").exists());
    }

    #[test]
    fn remove_takes_what_vxn_made() {
        let d = tempfile::tempdir().unwrap();
        let share = d.path().join("share");
        std::fs::create_dir_all(share.join("c1/0")).unwrap();
        std::fs::create_dir_all(share.join("c2/0")).unwrap();
        remove(&share.join("c1")).unwrap();
        assert!(!share.join("c1").exists() && share.join("c2/0").exists());
        remove(&share).unwrap();
        assert!(!share.exists());
    }
}
