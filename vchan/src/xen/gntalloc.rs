//! [`GrantShare`] over `/dev/xen/gntalloc` (the vchan server: the guest
//! agent in vxn).
//!
//! Sequence per share (as `xengntshr_share_pages` / `_share_page_notify`):
//! `IOCTL_GNTALLOC_ALLOC_GREF{domid, WRITABLE, count}` → `index` + refs;
//! `mmap(fd, index)`; for the control page
//! `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY{index + offsetof(srv_live),
//! CLEAR_BYTE | SEND_EVENT, port}` so that if we die the kernel clears
//! `srv_live` and kicks the client. Drop: `munmap` (the kernel keeps the
//! pages until the peer unmaps) and `IOCTL_GNTALLOC_DEALLOC_GREF`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::ioctl::{
    GntallocAllocGref, GntallocDeallocGref, GNTALLOC_FLAG_WRITABLE, IOCTL_GNTALLOC_ALLOC_GREF,
    IOCTL_GNTALLOC_DEALLOC_GREF, IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
};
use super::sys::{grant_err, ioctl, open_dev, request_buf, GrantRegion};
use crate::error::{Result, VchanError};
use crate::layout::offset;
use crate::shm::{GrantShare, Purpose};

/// Shares pages with one peer domain.
pub struct GntAlloc {
    fd: Arc<OwnedFd>,
    peer: u16,
    /// Kicked by the kernel's unmap notify if we die.
    event_port: u32,
}

impl GntAlloc {
    pub fn open(peer_domid: u16, event_port: u32) -> Result<Self> {
        let fd = open_dev(c"/dev/xen/gntalloc").map_err(|e| grant_err("open gntalloc", e))?;
        Ok(GntAlloc {
            fd: Arc::new(fd),
            peer: peer_domid,
            event_port,
        })
    }
}

/// Pages we granted, mapped in our address space.
pub type GntAllocRegion = GrantRegion;

fn dealloc(fd: &OwnedFd, index: u64, count: u32) {
    let mut req = GntallocDeallocGref { index, count };
    // SAFETY: the request matches IOCTL_GNTALLOC_DEALLOC_GREF.
    let _ = unsafe { ioctl(fd, IOCTL_GNTALLOC_DEALLOC_GREF, &mut req) };
}

impl GrantShare for GntAlloc {
    type Memory = GntAllocRegion;

    fn share(&mut self, pages: usize, purpose: Purpose) -> Result<(GntAllocRegion, Vec<u32>)> {
        let count = u32::try_from(pages)
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| VchanError::Grant(format!("cannot share {pages} pages")))?;
        // The header then `count` refs, in a u64 buffer for alignment.
        let header = std::mem::offset_of!(GntallocAllocGref, gref_ids);
        let min = std::mem::size_of::<GntallocAllocGref>();
        let mut buf = request_buf(header, 4, pages, min);
        let req = buf.as_mut_ptr().cast::<GntallocAllocGref>();
        // SAFETY: `buf` holds the header plus `count` refs and is 8-aligned.
        unsafe {
            (*req).domid = self.peer;
            (*req).flags = GNTALLOC_FLAG_WRITABLE;
            (*req).count = count;
            ioctl(&self.fd, IOCTL_GNTALLOC_ALLOC_GREF, req)
                .map_err(|e| grant_err("gntalloc alloc", e))?;
        }
        // SAFETY: filled in by the kernel, inside `buf`.
        let (index, grefs) = unsafe {
            let refs = req.cast::<u8>().add(header).cast::<u32>();
            (
                (*req).index,
                (0..pages).map(|i| refs.add(i).read()).collect::<Vec<u32>>(),
            )
        };
        let region = GrantRegion::map(&self.fd, pages, true, index, dealloc)?;
        if purpose == Purpose::Control {
            region.notify_on_unmap(
                IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
                offset::SRV_LIVE,
                self.event_port,
                "gntalloc unmap notify",
            )?;
        }
        Ok((region, grefs))
    }
}
