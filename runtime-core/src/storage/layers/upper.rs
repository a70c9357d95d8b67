//! A container's writable layer: a sparse ext4 file holding `upper/` (the
//! overlay's upper directory, with whatever the container's active snapshot
//! already has) and `work/` (overlayfs's work directory), so the guest uses
//! it as it is.

use std::path::{Path, PathBuf};

use crate::command;
use crate::storage::mounts::unmount_all;

pub const UPPER_IMAGE: &str = "upper.ext4";
/// Staging directory in the container's image directory (`upper/`, `work/`).
pub const STAGING: &str = "upper-src";

#[derive(Debug, thiserror::Error)]
pub enum UpperError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("mkfs.ext4 of the writable layer: {0}")]
    Mkfs(#[from] command::CommandError),
}

fn io(what: impl std::fmt::Display, p: &Path) -> impl FnOnce(std::io::Error) -> UpperError {
    let what = format!("{what} {}", p.display());
    move |source| UpperError::Io { what, source }
}

/// The staging directory; the snapshot bound on its `upper/` is unmounted,
/// and only then are the (empty) directories removed, on every path.
struct Staging {
    dir: PathBuf,
    bound: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        remove_staging(&self.dir, self.bound);
    }
}

/// Remove a staging directory; never through a mount of the snapshot.
pub fn remove_staging(dir: &Path, bound: bool) {
    let upper = dir.join("upper");
    if bound || upper.exists() {
        if let Err(e) = unmount_all(&upper) {
            tracing::error!(dir = %upper.display(), error = %e, "snapshot not unmounted");
            return;
        }
    }
    for d in [upper, dir.join("work"), dir.to_path_buf()] {
        let _ = std::fs::remove_dir(&d);
    }
}

/// Whether the snapshot's upper directory holds anything (a fresh
/// container's is empty: its writable layer is blank).
pub fn has_content(upper: Option<&Path>) -> bool {
    upper.is_some_and(|u| std::fs::read_dir(u).is_ok_and(|mut d| d.next().is_some()))
}

/// The size of a blank writable layer, MiB: what [`build`] makes of an
/// empty upper directory and `extra_mib`.
pub fn blank_mib(extra_mib: u64) -> u64 {
    extra_mib.max(16)
}

/// Build `<work_dir>/upper.ext4`: the snapshot's `upper` content (if any)
/// plus `extra_mib` free. Returns its path and size in bytes.
pub async fn build(
    upper: Option<&Path>,
    work_dir: &Path,
    extra_mib: u64,
) -> Result<(PathBuf, u64), UpperError> {
    let staging = Staging {
        dir: work_dir.join(STAGING),
        bound: false,
    };
    remove_staging(&staging.dir, false);
    let mut staging = staging;
    for d in [
        staging.dir.clone(),
        staging.dir.join("upper"),
        staging.dir.join("work"),
    ] {
        std::fs::create_dir(&d).map_err(io("mkdir", &d))?;
    }
    let mut content = 0;
    if let Some(src) = upper.filter(|u| has_content(Some(u))) {
        use nix::mount::{mount, MsFlags};
        let target = staging.dir.join("upper");
        mount(
            Some(src),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| UpperError::Io {
            what: format!("bind {} on {}", src.display(), target.display()),
            source: e.into(),
        })?;
        staging.bound = true;
        let s = src.to_path_buf();
        content = tokio::task::spawn_blocking(move || crate::storage::rootfs::disk_usage(&s))
            .await
            .unwrap_or(0);
    }
    let size_mib = (content + content / 20).div_ceil(1 << 20) + blank_mib(extra_mib);
    let image = work_dir.join(UPPER_IMAGE);
    let made = crate::storage::rootfs::mkfs_ext4(&staging.dir, &image, size_mib).await;
    drop(staging);
    made?;
    Ok((image, size_mib << 20))
}
