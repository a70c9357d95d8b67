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

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use vxn_wire::protocol::{MountKind, MountSpec};

use crate::error::{Error, Result};
use crate::persist::unmount_all;

/// The 9p tag of a VM's share (`p9=` in the xl config).
pub const SHARE_TAG: &str = "vxn-share";

/// A bind of a host directory, as the spec asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
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
        let rel = format!("{owner}/{n}");
        let target = share.join(&rel);
        std::fs::create_dir_all(&target).map_err(|e| io_err("mkdir", &target, e))?;
        mount(&b.source, &target, libc::MS_BIND | libc::MS_REC)
            .map_err(|e| io_err("bind", &b.source, e))?;
        if b.readonly {
            mount(
                Path::new("none"),
                &target,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            )
            .map_err(|e| io_err("make read-only", &target, e))?;
        }
        let mut options: Vec<String> = b
            .options
            .iter()
            .filter(|o| !matches!(o.as_str(), "bind" | "rbind" | "ro" | "rw"))
            .cloned()
            .collect();
        options.push(if b.readonly { "ro" } else { "rw" }.into());
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

/// Unmount every bind under `dir` (deepest first) and remove what vxn made
/// there. Ok once nothing is left; never deletes through a mount point.
pub fn remove(dir: &Path) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut under: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(dir))
        .collect();
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
            readonly: false,
            options: vec![],
        })];
        let e = expose(Some(&share), "c1", plan, |_| Ok(())).unwrap_err();
        assert!(matches!(e, Error::Unimplemented(_)), "{e}");
        assert!(!share.exists());
        remove(&share).unwrap();
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
