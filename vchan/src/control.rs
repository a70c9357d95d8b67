//! Typed access to the shared control page (`struct vchan_interface`).
//!
//! Every field is read and written with atomics: the peer (another domain,
//! possibly hostile) writes the same page at any time, so plain loads could
//! be torn or re-read by the compiler, and Rust references to the page's
//! plain data would be unsound.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU8, Ordering};

use crate::layout::{offset, PAGE_SIZE};

/// Which end of the vchan we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Allocates and grants the pages (the guest agent in vxn).
    Server,
    /// Maps the server's pages (dom0's shim in vxn).
    Client,
}

impl Role {
    pub fn peer(self) -> Role {
        match self {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        }
    }
}

/// A view of one mapped control page. Copyable: it owns nothing, the
/// [`Endpoint`](crate::Endpoint) that holds it keeps the mapping alive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ControlPage {
    base: NonNull<u8>,
}

// SAFETY: the page is only accessed through atomics and raw pointers.
unsafe impl Send for ControlPage {}
unsafe impl Sync for ControlPage {}

impl ControlPage {
    /// # Safety
    ///
    /// `base` must point to a 4096-byte aligned, readable and writable page
    /// that stays mapped for as long as this value (and its copies) is used.
    pub(crate) unsafe fn new(base: NonNull<u8>) -> ControlPage {
        ControlPage { base }
    }

    fn at(&self, off: usize) -> NonNull<u8> {
        debug_assert!(off < PAGE_SIZE);
        // SAFETY: all offsets used are constants inside the page.
        unsafe { self.base.add(off) }
    }

    fn u8(&self, off: usize) -> &AtomicU8 {
        // SAFETY: inside the page (see `new`); AtomicU8 has alignment 1.
        unsafe { self.at(off).cast::<AtomicU8>().as_ref() }
    }

    fn u16(&self, off: usize) -> &AtomicU16 {
        debug_assert_eq!(off % 2, 0);
        // SAFETY: inside the page, which is page aligned; `off` is even.
        unsafe { self.at(off).cast::<AtomicU16>().as_ref() }
    }

    fn u32(&self, off: usize) -> &AtomicU32 {
        debug_assert_eq!(off % 4, 0);
        // SAFETY: inside the page, which is page aligned; `off` is a multiple of 4.
        unsafe { self.at(off).cast::<AtomicU32>().as_ref() }
    }

    /// Zero the whole page (server, before sharing it with anyone).
    pub(crate) fn zero(&self) {
        for off in (0..PAGE_SIZE).step_by(4) {
            self.u32(off).store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Pointer to `left` or `right` (`struct ring_shared`) for the ring code.
    pub(crate) fn ring_shared(&self, left: bool) -> NonNull<u8> {
        self.at(if left { offset::LEFT } else { offset::RIGHT })
    }

    pub(crate) fn orders(&self) -> (u16, u16) {
        (
            self.u16(offset::LEFT_ORDER).load(Ordering::Acquire),
            self.u16(offset::RIGHT_ORDER).load(Ordering::Acquire),
        )
    }

    pub(crate) fn set_orders(&self, left: u16, right: u16) {
        self.u16(offset::LEFT_ORDER).store(left, Ordering::Relaxed);
        self.u16(offset::RIGHT_ORDER)
            .store(right, Ordering::Release);
    }

    /// The `*_live` byte of `side`.
    pub(crate) fn live(&self, side: Role) -> &AtomicU8 {
        self.u8(match side {
            Role::Client => offset::CLI_LIVE,
            Role::Server => offset::SRV_LIVE,
        })
    }

    /// The `*_notify` byte of `side`: the events `side` must signal, as
    /// requested by the other side.
    pub(crate) fn notify(&self, side: Role) -> &AtomicU8 {
        self.u8(match side {
            Role::Client => offset::CLI_NOTIFY,
            Role::Server => offset::SRV_NOTIFY,
        })
    }

    /// Grant ref `i` of `grants[]`; `None` past the page (never read there).
    pub(crate) fn grant(&self, i: usize) -> Option<u32> {
        let off = offset::GRANTS.checked_add(i.checked_mul(4)?)?;
        (off + 4 <= PAGE_SIZE).then(|| self.u32(off).load(Ordering::Acquire))
    }

    /// Store grant ref `i`; false if it would not fit in the page.
    pub(crate) fn set_grant(&self, i: usize, gref: u32) -> bool {
        let Some(off) = i
            .checked_mul(4)
            .and_then(|b| b.checked_add(offset::GRANTS))
            .filter(|off| off + 4 <= PAGE_SIZE)
        else {
            return false;
        };
        self.u32(off).store(gref, Ordering::Relaxed);
        true
    }
}
