//! The Xen backend's rootfs exporter: every disk reaches the VM as a dom0
//! loop device, so xl gives it blkback (`phy`), never a QEMU. A layered
//! rootfs (containerd's overlay snapshot) becomes the image cache's shared
//! read-only EROFS image plus a small writable ext4 of the container's own;
//! any other rootfs is copied into an ext4 image ([`Ext4Image`]).
//!
//! Loop devices are found again by their backing files (all in the
//! container's image directory), so cleanup needs no state and works for a
//! lost shim's container too; it runs after the domain is destroyed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use vxn_wire::boot::{ROOTFS_DEVICE, UPPER_DEVICE};
use vxn_wire::protocol::{BlockFs, RootfsSource};

use crate::storage::layers::cache::ImageCache;
use crate::storage::layers::{gc, upper, Layers};
use crate::storage::loopdev;
use crate::storage::rootfs::{ExportError, ExportedRootfs, Ext4Image, RootfsExport};

/// The container's link to its cached image.
pub const LOWER_IMAGE: &str = "lower.erofs";

#[derive(Debug, Clone)]
pub struct XenDisks {
    pub ext4: Ext4Image,
    pub cache: ImageCache,
}

fn failed(what: impl Into<String>, e: impl std::fmt::Display) -> ExportError {
    ExportError::Failed {
        what: what.into(),
        detail: e.to_string(),
    }
}

impl XenDisks {
    async fn layered(
        &self,
        layers: &Layers,
        work_dir: &Path,
        owner: &Path,
        blank_upper_later: bool,
    ) -> Result<ExportedRootfs, ExportError> {
        let t0 = Instant::now();
        std::fs::create_dir_all(work_dir)
            .map_err(|e| failed(format!("mkdir {}", work_dir.display()), e))?;
        let link = work_dir.join(LOWER_IMAGE);
        let taken = self
            .cache
            .take(layers, &link, owner)
            .await
            .map_err(|e| failed("the read-only image", e))?;
        let blank_later = (blank_upper_later && !upper::has_content(layers.upper.as_deref()))
            .then(|| upper::blank_mib(self.ext4.extra_mib));
        let upper = match blank_later {
            Some(_) => None,
            None => Some(
                upper::build(layers.upper.as_deref(), work_dir, self.ext4.extra_mib)
                    .await
                    .map_err(|e| failed("the writable layer", e))?,
            ),
        };
        // Attached last: an error before leaves no device (cleanup detaches these).
        let lower_dev = loopdev::attach(&link, true)
            .await
            .map_err(|e| failed("the read-only image", e))?;
        let mut upper_bytes = blank_later.map_or(0, |mib| mib << 20);
        let mut upper_dev = None;
        if let Some((image, bytes)) = upper {
            upper_bytes = bytes;
            upper_dev = Some(
                loopdev::attach(&image, false)
                    .await
                    .map_err(|e| failed("the writable layer", e))?,
            );
        }
        tracing::info!(
            cached = !taken.built,
            image_mib = taken.bytes >> 20,
            took_ms = t0.elapsed().as_millis() as u64,
            "timing: layered rootfs ready"
        );
        Ok(ExportedRootfs {
            disk: Some(lower_dev),
            disk_writable: false,
            upper_disk: upper_dev,
            blank_upper_mib: blank_later,
            guest: RootfsSource::Overlay {
                lower: BlockFs {
                    device: ROOTFS_DEVICE.into(),
                    fstype: "erofs".into(),
                },
                upper: BlockFs {
                    device: UPPER_DEVICE.into(),
                    fstype: "ext4".into(),
                },
            },
            size_bytes: taken.bytes + upper_bytes,
            took: t0.elapsed(),
        })
    }
}

#[async_trait]
impl RootfsExport for XenDisks {
    async fn export(&self, rootfs: &Path, work_dir: &Path) -> Result<ExportedRootfs, ExportError> {
        let mut exported = self.ext4.export(rootfs, work_dir).await?;
        if let Some(image) = exported.disk.take() {
            let dev = loopdev::attach(&image, false)
                .await
                .map_err(|e| failed("the rootfs image", e))?;
            exported.disk = Some(dev);
        }
        Ok(exported)
    }

    async fn export_layers(
        &self,
        layers: &Layers,
        work_dir: &Path,
        owner: &Path,
        blank_upper_later: bool,
    ) -> Option<Result<ExportedRootfs, ExportError>> {
        Some(
            self.layered(layers, work_dir, owner, blank_upper_later)
                .await,
        )
    }

    async fn blank_upper(&self, work_dir: &Path, mib: u64) -> Option<Result<PathBuf, ExportError>> {
        let made = async {
            let t0 = Instant::now();
            std::fs::create_dir_all(work_dir)
                .map_err(|e| failed(format!("mkdir {}", work_dir.display()), e))?;
            // One there already (a claimed VM's that did not come up) is replaced.
            let old = work_dir.join(upper::UPPER_IMAGE);
            loopdev::detach_all(&old)
                .await
                .map_err(|e| failed("the writable layer", e))?;
            let _ = std::fs::remove_file(&old);
            let (image, _) = upper::build(None, work_dir, mib)
                .await
                .map_err(|e| failed("the writable layer", e))?;
            let dev = loopdev::attach(&image, false)
                .await
                .map_err(|e| failed("the writable layer", e))?;
            // (debug: `vxnctl pool fill` makes one per VM)
            tracing::debug!(
                took_ms = t0.elapsed().as_millis() as u64,
                "timing: blank writable layer made"
            );
            Ok(dev)
        };
        Some(made.await)
    }

    async fn cleanup(&self, work_dir: &Path) {
        if let Err(e) = loopdev::detach_all(work_dir).await {
            tracing::error!(dir = %work_dir.display(), error = %e, "loop devices left");
        }
        upper::remove_staging(&work_dir.join(upper::STAGING), false);
        let _ = std::fs::remove_file(work_dir.join(upper::UPPER_IMAGE));
        let _ = std::fs::remove_file(work_dir.join(LOWER_IMAGE));
        self.ext4.cleanup(work_dir).await;
        let cache = self.cache.clone();
        let _ = tokio::task::spawn_blocking(move || gc::collect(&cache)).await;
    }
}
