//! Pooled VMs' blank writable layers: made with the VM (a shape with
//! `upper_mib`) in `<upper root>/<domain>/`, attached as its xvdc, and taken
//! over by the container that claims the VM (renamed into its image
//! directory: the loop device follows the file). What a VM's unmaking, or a
//! claimant SIGKILLed before the rename, leaves is removed with its VM, or
//! by the next fill's or drain's sweep once no entry names it and its VM is
//! gone.

use std::fs;
use std::path::{Path, PathBuf};

use super::store::{PoolStore, Pooled};
use crate::hypervisor::Hypervisor;
use crate::storage::layers::upper::UPPER_IMAGE;
use crate::storage::rootfs::RootfsExport;

#[derive(Debug, thiserror::Error)]
#[error("pooled VM {domain}: its blank writable layer: {detail}")]
pub struct LayerError {
    pub domain: String,
    pub detail: String,
}

/// Make the blank writable layer of a VM about to be pooled: its disk, or
/// None when its shape has none. On error nothing of it is left.
pub(super) async fn make(
    store: &PoolStore,
    exporter: &dyn RootfsExport,
    p: &Pooled,
) -> Result<Option<PathBuf>, LayerError> {
    let (Some(dir), Some(mib)) = (store.upper_dir_of(p), p.shape.upper_mib) else {
        return Ok(None);
    };
    let failed = |detail: String| LayerError {
        domain: p.domain.clone(),
        detail,
    };
    match exporter.blank_upper(&dir, mib).await {
        Some(Ok(disk)) => Ok(Some(disk)),
        Some(Err(e)) => {
            remove(store, exporter, p).await;
            Err(failed(e.to_string()))
        }
        None => Err(failed("this backend makes no blank writable layer".into())),
    }
}

/// Remove a pooled VM's writable layer (after its VM is gone: blkback let
/// go of the disk), its disk detached.
pub async fn remove(store: &PoolStore, exporter: &dyn RootfsExport, p: &Pooled) {
    if let Some(dir) = store.upper_dir_of(p) {
        remove_dir(exporter, &dir).await;
    }
}

async fn remove_dir(exporter: &dyn RootfsExport, dir: &Path) {
    exporter.cleanup(dir).await;
    let _ = fs::remove_dir_all(dir);
}

/// The writable layers no pooled VM holds any more (as `fill::sweep_shares`
/// for shares): directories named as pool VMs that no entry records (a
/// filler records its VM before it makes the layer) and whose VM is gone.
pub(super) async fn sweep(
    store: &PoolStore,
    hv: &dyn Hypervisor,
    exporter: &dyn RootfsExport,
) -> usize {
    let unheld = super::orphans::unheld(store, hv, store.upper_root()).await;
    for dir in &unheld {
        remove_dir(exporter, dir).await;
    }
    unheld.len()
}

/// Move a claimed VM's writable layer into the container's image directory
/// `to` (as `upper.ext4`, where the container's teardown finds it).
pub fn take(store: &PoolStore, p: &Pooled, to: &Path) -> std::io::Result<()> {
    let Some(dir) = store.upper_dir_of(p) else {
        return Ok(());
    };
    fs::create_dir_all(to)?;
    fs::rename(dir.join(UPPER_IMAGE), to.join(UPPER_IMAGE))?;
    let _ = fs::remove_dir(&dir);
    Ok(())
}
