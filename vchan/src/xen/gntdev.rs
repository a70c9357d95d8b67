//! [`GrantMap`] over `/dev/xen/gntdev` (the vchan client: dom0's shim in
//! vxn).
//!
//! Sequence per mapping (as `xengnttab_map_domain_grant_refs` /
//! `_map_grant_ref_notify`): `IOCTL_GNTDEV_MAP_GRANT_REF{count, refs[]}` →
//! `index`; `mmap(fd, index)` read-only or read-write; for the control page
//! `IOCTL_GNTDEV_SET_UNMAP_NOTIFY{index + offsetof(cli_live), CLEAR_BYTE |
//! SEND_EVENT, port}`. Drop: `munmap` and `IOCTL_GNTDEV_UNMAP_GRANT_REF`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::ioctl::{
    GntdevGrantRef, GntdevMapGrantRef, GntdevUnmapGrantRef, IOCTL_GNTDEV_MAP_GRANT_REF,
    IOCTL_GNTDEV_SET_UNMAP_NOTIFY, IOCTL_GNTDEV_UNMAP_GRANT_REF,
};
use super::sys::{grant_err, ioctl, open_dev, request_buf, GrantRegion};
use crate::error::{Result, VchanError};
use crate::layout::offset;
use crate::shm::{Access, GrantMap, Purpose};

/// Maps pages granted by one peer domain.
pub struct GntDev {
    fd: Arc<OwnedFd>,
    peer: u16,
    /// Kicked by the kernel's unmap notify if we die.
    event_port: u32,
}

impl GntDev {
    pub fn open(peer_domid: u16, event_port: u32) -> Result<Self> {
        let fd = open_dev(c"/dev/xen/gntdev").map_err(|e| grant_err("open gntdev", e))?;
        Ok(GntDev {
            fd: Arc::new(fd),
            peer: peer_domid,
            event_port,
        })
    }
}

/// The peer's pages, mapped in our address space.
pub type GntDevRegion = GrantRegion;

fn unmap_grants(fd: &OwnedFd, index: u64, count: u32) {
    let mut req = GntdevUnmapGrantRef {
        index,
        count,
        pad: 0,
    };
    // SAFETY: the request matches IOCTL_GNTDEV_UNMAP_GRANT_REF.
    let _ = unsafe { ioctl(fd, IOCTL_GNTDEV_UNMAP_GRANT_REF, &mut req) };
}

impl GrantMap for GntDev {
    type Memory = GntDevRegion;

    fn map(&mut self, grants: &[u32], access: Access, purpose: Purpose) -> Result<GntDevRegion> {
        let pages = grants.len();
        let count = u32::try_from(pages)
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| VchanError::Grant(format!("cannot map {pages} grants")))?;
        let header = std::mem::offset_of!(GntdevMapGrantRef, refs);
        let min = std::mem::size_of::<GntdevMapGrantRef>();
        let mut buf = request_buf(header, 8, pages, min);
        let req = buf.as_mut_ptr().cast::<GntdevMapGrantRef>();
        // SAFETY: `buf` holds the header plus `count` refs and is 8-aligned.
        let index = unsafe {
            (*req).count = count;
            let refs = req.cast::<u8>().add(header).cast::<GntdevGrantRef>();
            for (i, g) in grants.iter().enumerate() {
                refs.add(i).write(GntdevGrantRef {
                    domid: self.peer.into(),
                    gref: *g,
                });
            }
            ioctl(&self.fd, IOCTL_GNTDEV_MAP_GRANT_REF, req)
                .map_err(|e| grant_err("gntdev map", e))?;
            (*req).index
        };
        let writable = access == Access::ReadWrite;
        let region = GrantRegion::map(&self.fd, pages, writable, index, unmap_grants)?;
        if purpose == Purpose::Control {
            region.notify_on_unmap(
                IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
                offset::CLI_LIVE,
                self.event_port,
                "gntdev unmap notify",
            )?;
        }
        Ok(region)
    }
}
