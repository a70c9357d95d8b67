//! Getting a container's root filesystem into its VM. [`Ext4Image`] copies
//! it into an ext4 image (`mkfs.ext4 -d`), as the bash vxn did, for the Xen
//! backend; [`Directory`] hands the directory itself to an agent running on
//! the host (process backend, tests only). The trait is the seam a
//! shared-filesystem exporter would replace them at. The Xen backend's
//! exporter ([`crate::xen::disks::XenDisks`]) gives the VM block devices: a
//! layered rootfs as a shared read-only image and a writable layer, anything
//! else as an [`Ext4Image`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::command;
use crate::storage::layers::Layers;
use vxn_wire::boot::ROOTFS_DEVICE;
use vxn_wire::protocol::RootfsSource;

/// mkfs.ext4 -d copies every byte: allow a slow disk, not forever.
const MKFS_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("rootfs {0} does not exist or is empty")]
    Empty(PathBuf),
    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },
}

/// What the VM gets.
#[derive(Debug, Clone)]
pub struct ExportedRootfs {
    /// A disk for the VM's config, if the export made one (the rootfs disk;
    /// for a layered rootfs, its read-only image).
    pub disk: Option<PathBuf>,
    /// Whether the guest may write to `disk`.
    pub disk_writable: bool,
    /// A layered rootfs's writable layer (the second disk).
    pub upper_disk: Option<PathBuf>,
    /// The writable layer is blank and not made yet (asked with
    /// `blank_upper_later`): this many MiB, from a pooled VM that has one
    /// attached already, or made by [`RootfsExport::blank_upper`].
    pub blank_upper_mib: Option<u64>,
    /// How the agent finds the rootfs in the guest.
    pub guest: RootfsSource,
    pub size_bytes: u64,
    pub took: Duration,
}

#[async_trait]
pub trait RootfsExport: Send + Sync + 'static {
    /// Make `rootfs` available to a VM; artefacts go under `work_dir`.
    async fn export(&self, rootfs: &Path, work_dir: &Path) -> Result<ExportedRootfs, ExportError>;
    /// Make an overlay's `layers` available to a VM (a shared read-only
    /// image and a writable layer); `owner` is the container's state
    /// directory. None: this exporter does not, the caller mounts the
    /// overlay and calls `export`. `blank_upper_later`: a writable layer
    /// that would be blank (the snapshot's upper is empty) is not made now
    /// (`ExportedRootfs::blank_upper_mib`).
    async fn export_layers(
        &self,
        _layers: &Layers,
        _work_dir: &Path,
        _owner: &Path,
        _blank_upper_later: bool,
    ) -> Option<Result<ExportedRootfs, ExportError>> {
        None
    }
    /// A blank writable layer of `mib` MiB made in `work_dir` (as
    /// `upper.ext4`, which a claim of a pooled VM moves) and made a disk for
    /// a VM: the disk. None: this exporter makes none.
    async fn blank_upper(
        &self,
        _work_dir: &Path,
        _mib: u64,
    ) -> Option<Result<PathBuf, ExportError>> {
        None
    }
    /// Remove whatever `export` or `export_layers` created in `work_dir`.
    async fn cleanup(&self, work_dir: &Path);
}

/// Copy the rootfs into a sparse ext4 image with room to write.
#[derive(Debug, Clone)]
pub struct Ext4Image {
    /// Free space added on top of the content, in MiB.
    pub extra_mib: u64,
}

pub const IMAGE_NAME: &str = "rootfs.ext4";

pub(crate) fn disk_usage(dir: &Path) -> u64 {
    fn walk(p: &Path, total: &mut u64, depth: usize) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            // Round every file up to a 4 KiB block, plus an inode's worth.
            *total += m.len().div_ceil(4096) * 4096 + 256;
            if m.is_dir() && depth < 256 {
                walk(&e.path(), total, depth + 1);
            }
        }
    }
    let mut total = 0;
    walk(dir, &mut total, 0);
    total
}

/// `mkfs.ext4 -d CONTENT IMAGE SIZE`: a sparse ext4 image holding a copy of
/// `content`, owned by root, no reserved blocks. A failed run leaves no image.
pub async fn mkfs_ext4(
    content: &Path,
    image: &Path,
    size_mib: u64,
) -> Result<(), command::CommandError> {
    let mut args: Vec<std::ffi::OsString> = [
        "-q",
        "-F",
        "-b",
        "4096",
        "-m",
        "0",
        "-E",
        "root_owner=0:0",
        "-d",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.push(content.into());
    args.push(image.into());
    args.push(format!("{size_mib}M").into());
    let made = command::run("mkfs.ext4", &args, MKFS_TIMEOUT).await;
    if made.is_err() {
        let _ = std::fs::remove_file(image);
    }
    made.map(drop)
}

#[async_trait]
impl RootfsExport for Ext4Image {
    async fn export(&self, rootfs: &Path, work_dir: &Path) -> Result<ExportedRootfs, ExportError> {
        let t0 = Instant::now();
        let empty = std::fs::read_dir(rootfs)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        if empty {
            return Err(ExportError::Empty(rootfs.to_path_buf()));
        }
        std::fs::create_dir_all(work_dir).map_err(|e| ExportError::Failed {
            what: format!("mkdir {}", work_dir.display()),
            detail: e.to_string(),
        })?;
        let content = {
            let r = rootfs.to_path_buf();
            tokio::task::spawn_blocking(move || disk_usage(&r))
                .await
                .unwrap_or(0)
        };
        // ext4 metadata (~5%) plus the requested headroom, in whole MiB.
        let size_mib = (content + content / 20).div_ceil(1 << 20) + self.extra_mib.max(16);
        let image = work_dir.join(IMAGE_NAME);
        if let Err(e) = mkfs_ext4(rootfs, &image, size_mib).await {
            return Err(ExportError::Failed {
                what: format!("mkfs.ext4 -d {}", rootfs.display()),
                detail: e.to_string(),
            });
        }
        Ok(ExportedRootfs {
            disk: Some(image),
            disk_writable: true,
            upper_disk: None,
            blank_upper_mib: None,
            guest: RootfsSource::Block {
                device: ROOTFS_DEVICE.into(),
                fstype: "ext4".into(),
                options: vec![],
            },
            size_bytes: size_mib << 20,
            took: t0.elapsed(),
        })
    }

    async fn cleanup(&self, work_dir: &Path) {
        let _ = std::fs::remove_file(work_dir.join(IMAGE_NAME));
    }
}

/// The directory itself: the agent runs on the host (process backend) and
/// mounts it in the container's own mount namespace. No copy, no isolation.
#[derive(Debug, Clone, Default)]
pub struct Directory;

#[async_trait]
impl RootfsExport for Directory {
    async fn export(&self, rootfs: &Path, _work_dir: &Path) -> Result<ExportedRootfs, ExportError> {
        let empty = std::fs::read_dir(rootfs)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        if empty {
            return Err(ExportError::Empty(rootfs.to_path_buf()));
        }
        Ok(ExportedRootfs {
            disk: None,
            disk_writable: false,
            upper_disk: None,
            blank_upper_mib: None,
            guest: RootfsSource::Directory {
                path: rootfs.to_string_lossy().into_owned(),
            },
            size_bytes: 0,
            took: Duration::ZERO,
        })
    }

    async fn cleanup(&self, _work_dir: &Path) {}
}

impl From<ExportError> for crate::Error {
    fn from(e: crate::storage::rootfs::ExportError) -> Self {
        let msg = format!("rootfs: {e}");
        match e {
            // The bundle gave no usable rootfs: the request is at fault.
            ExportError::Empty(_) => crate::Error::InvalidArgument(msg),
            // Building the image failed on this host (mkfs, disk space, timeout).
            ExportError::Failed { .. } => crate::Error::Internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_an_image_and_refuses_an_empty_rootfs() {
        if std::process::Command::new("mkfs.ext4")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!("skipping: mkfs.ext4 not installed");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let exp = Ext4Image { extra_mib: 16 };
        assert!(matches!(
            exp.export(root.path(), work.path()).await,
            Err(ExportError::Empty(_))
        ));
        std::fs::write(root.path().join("hello"), b"hi").unwrap();
        let img = exp.export(root.path(), work.path()).await.unwrap();
        let disk = img.disk.unwrap();
        assert!(disk.is_file() && img.size_bytes >= 16 << 20);
        exp.cleanup(work.path()).await;
        assert!(!disk.exists());
    }
}
