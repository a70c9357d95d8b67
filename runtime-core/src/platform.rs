//! The one place that knows every backend: from the config, the VM backend
//! (Xen, or the test-only host process) and how its VMs get their rootfs.

use std::sync::Arc;

use crate::config::Config;
use crate::hypervisor::{Backend, Hypervisor, ProcessHypervisor, VmError};
use crate::storage::layers::cache::ImageCache;
use crate::storage::rootfs::{Directory, Ext4Image, RootfsExport};
use crate::xen::disks::XenDisks;
use crate::xen::domain::XenHypervisor;
use crate::xen::Xl;

/// A VM backend and its rootfs exporter: what every front-end creates with.
pub type Platform = (Arc<dyn Hypervisor>, Arc<dyn RootfsExport>);

/// The platform `cfg` names.
pub fn build(cfg: &Config) -> Result<Platform, String> {
    let backend = cfg.backend()?;
    let hv = hypervisor(&backend, cfg).map_err(|e| e.to_string())?;
    let cache = ImageCache::new(cfg.image_cache_dir.clone(), cfg.image_cache_max_mib);
    Ok((hv, exporter(&backend, cfg.rootfs_extra_mib, cache)))
}

/// The backend's hypervisor; the Xen one writes its hotplug scripts to the
/// config's `hotplug_dir` (on a filesystem that allows exec).
pub fn hypervisor(backend: &Backend, cfg: &Config) -> Result<Arc<dyn Hypervisor>, VmError> {
    Ok(match backend {
        Backend::Xen { channel } => Arc::new(XenHypervisor::new(
            Xl::default(),
            *channel,
            Some(cfg.hotplug_dir()),
        )),
        Backend::Process { agent } => Arc::new(ProcessHypervisor::new(agent.clone())?),
    })
}

/// How this backend's VMs get their rootfs: block devices for a DomU (the
/// image cache's layers, or an ext4 image), the directory itself for an agent
/// on the host.
pub fn exporter(
    backend: &Backend,
    image_extra_mib: u64,
    cache: ImageCache,
) -> Arc<dyn RootfsExport> {
    match backend {
        Backend::Xen { .. } => Arc::new(XenDisks {
            ext4: Ext4Image {
                extra_mib: image_extra_mib,
            },
            cache,
        }),
        Backend::Process { .. } => Arc::new(Directory),
    }
}
