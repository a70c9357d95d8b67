//! What the protocol core needs from a backend's memory: regions shared with
//! the peer, and a way to share (server) or map (client) them by grant ref.
//! The Xen backends implement these over gntalloc / gntdev; the in-memory
//! backend ([`crate::memory`]) over heap pages.

use std::ptr::NonNull;

use crate::error::Result;

/// A region of memory shared with the peer.
///
/// # Safety
///
/// An implementation promises that for as long as the value lives:
/// * `as_ptr()` is non-null, 4096-byte aligned, and the same on every call;
/// * `len()` bytes from it stay mapped and readable, and writable unless
///   the region was mapped with [`Access::ReadOnly`];
/// * nothing in this process holds a Rust reference (`&`/`&mut`) to those
///   bytes: they are only accessed through raw pointers and atomics, because
///   the peer writes them concurrently.
pub unsafe trait SharedMemory: Send + Sync + 'static {
    fn as_ptr(&self) -> NonNull<u8>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a shared region is for; backends attach Xen's unmap notification to
/// the control page (the byte that tells the peer we are gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The one-page `struct vchan_interface`. On Xen the server asks the
    /// kernel to clear `srv_live` and kick the event channel if the server
    /// process dies (`UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT`);
    /// the client does the same for `cli_live`.
    Control,
    /// Pages of a ring that does not fit in the control page.
    Ring,
}

/// How the client maps a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// The ring the client only reads (libxenvchan maps it `PROT_READ`).
    ReadOnly,
}

/// Server side: allocate pages and grant them to the peer domain.
pub trait GrantShare {
    type Memory: SharedMemory;
    /// Share `pages` contiguous (in our address space) zeroed pages; returns
    /// the mapping and one grant ref per page, in order.
    fn share(&mut self, pages: usize, purpose: Purpose) -> Result<(Self::Memory, Vec<u32>)>;
}

/// Client side: map pages the peer granted, contiguously and in order.
pub trait GrantMap {
    type Memory: SharedMemory;
    fn map(&mut self, grants: &[u32], access: Access, purpose: Purpose) -> Result<Self::Memory>;
}
