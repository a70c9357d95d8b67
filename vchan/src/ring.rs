//! One direction of a vchan: a byte ring in memory the peer also writes.
//!
//! The indices are free-running `u32`s (`prod` counts bytes ever written,
//! `cons` bytes ever consumed), positions are `idx & (size - 1)`. Each side
//! keeps its *own* index privately and only publishes it, so a peer that
//! scribbles over our index in the shared page cannot make us misbehave; the
//! peer's index is read once per operation and checked: a `prod - cons`
//! distance above the ring size is [`VchanError::BadIndices`], never an
//! out-of-bounds access.
//!
//! Memory ordering mirrors libxenvchan's `io.c` barriers with C11 atomics:
//! * writer: load `cons` (Acquire: the reader's reads of the bytes it freed
//!   happen before we overwrite them), copy in, store `prod` (Release:
//!   publishes the bytes);
//! * reader: load `prod` (Acquire: the bytes are visible), copy out, store
//!   `cons` (Release: we are done reading before the writer reuses them).
//!
//! The notify handshake on top (full fences) lives in [`crate::endpoint`].

use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Result, RingName, VchanError};
use crate::layout::offset;

/// The shared `struct ring_shared` and the ring's bytes.
#[derive(Debug)]
struct Shared {
    /// Points to `struct ring_shared { u32 cons, prod; }`.
    indices: NonNull<u8>,
    /// Ring bytes, `size` of them.
    buf: NonNull<u8>,
    size: u32,
    name: RingName,
}

// SAFETY: the memory is only accessed through atomics and raw-pointer copies.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// # Safety
    ///
    /// `indices` must point to 8 readable+writable bytes, 4-aligned; `buf` to
    /// `size` readable bytes (writable for a write ring); `size` a power of
    /// two; all valid for the life of the returned value.
    unsafe fn new(indices: NonNull<u8>, buf: NonNull<u8>, size: u32, name: RingName) -> Self {
        debug_assert!(size.is_power_of_two());
        Shared {
            indices,
            buf,
            size,
            name,
        }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: see `new`.
        unsafe { self.indices.add(offset::CONS).cast::<AtomicU32>().as_ref() }
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: see `new`.
        unsafe { self.indices.add(offset::PROD).cast::<AtomicU32>().as_ref() }
    }

    fn mask(&self, idx: u32) -> usize {
        (idx & (self.size - 1)) as usize
    }

    /// `prod - cons`, checked against the ring size.
    fn used(&self, prod: u32, cons: u32) -> Result<u32> {
        let used = prod.wrapping_sub(cons);
        if used > self.size {
            return Err(VchanError::BadIndices {
                ring: self.name,
                prod,
                cons,
                size: self.size,
            });
        }
        Ok(used)
    }
}

/// The ring we consume: we own `cons`, the peer owns `prod`.
#[derive(Debug)]
pub struct ReadRing {
    shared: Shared,
    cons: u32,
}

impl ReadRing {
    /// Adopts the current `cons` in the shared page (zero on a fresh vchan).
    ///
    /// # Safety
    ///
    /// As for the private `Shared::new`: `indices` points to a 4-aligned
    /// `struct ring_shared`, `buf` to `size` (a power of two) readable bytes,
    /// both valid while the ring is used.
    pub unsafe fn new(indices: NonNull<u8>, buf: NonNull<u8>, size: u32, name: RingName) -> Self {
        let shared = Shared::new(indices, buf, size, name);
        let cons = shared.cons().load(Ordering::Acquire);
        ReadRing { shared, cons }
    }

    pub fn size(&self) -> usize {
        self.shared.size as usize
    }

    /// Bytes ready to read, or an error if the peer's `prod` is impossible.
    pub fn available(&self) -> Result<usize> {
        let prod = self.shared.prod().load(Ordering::Acquire);
        Ok(self.shared.used(prod, self.cons)? as usize)
    }

    /// Copy up to `out.len()` bytes out; returns how many (0 when empty).
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize> {
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and we
        // only ever write initialised bytes into it.
        let out = unsafe { &mut *(out as *mut [u8] as *mut [MaybeUninit<u8>]) };
        self.read_uninit(out)
    }

    /// As [`read`](Self::read), into possibly uninitialised memory: the
    /// first `n` bytes of `out` are initialised on return `Ok(n)`.
    pub fn read_uninit(&mut self, out: &mut [MaybeUninit<u8>]) -> Result<usize> {
        let n = self.available()?.min(out.len());
        if n == 0 {
            return Ok(0);
        }
        let start = self.shared.mask(self.cons);
        let first = n.min(self.size() - start);
        let dst = out.as_mut_ptr().cast::<u8>();
        // SAFETY: `start + first <= size` and `n - first <= size` stay inside
        // the ring; `dst` has room for `n <= out.len()` bytes; the ring is
        // not a Rust allocation `out` could alias.
        unsafe {
            std::ptr::copy_nonoverlapping(self.shared.buf.as_ptr().add(start), dst, first);
            std::ptr::copy_nonoverlapping(self.shared.buf.as_ptr(), dst.add(first), n - first);
        }
        self.cons = self.cons.wrapping_add(n as u32);
        self.shared.cons().store(self.cons, Ordering::Release);
        Ok(n)
    }
}

/// The ring we produce into: we own `prod`, the peer owns `cons`.
#[derive(Debug)]
pub struct WriteRing {
    shared: Shared,
    prod: u32,
}

impl WriteRing {
    /// Adopts the current `prod` in the shared page (zero on a fresh vchan).
    ///
    /// # Safety
    ///
    /// As [`ReadRing::new`], and `buf` must be writable.
    pub unsafe fn new(indices: NonNull<u8>, buf: NonNull<u8>, size: u32, name: RingName) -> Self {
        let shared = Shared::new(indices, buf, size, name);
        let prod = shared.prod().load(Ordering::Acquire);
        WriteRing { shared, prod }
    }

    pub fn size(&self) -> usize {
        self.shared.size as usize
    }

    /// Free space, or an error if the peer's `cons` is impossible.
    pub fn space(&self) -> Result<usize> {
        let cons = self.shared.cons().load(Ordering::Acquire);
        let used = self.shared.used(self.prod, cons)?;
        Ok((self.shared.size - used) as usize)
    }

    /// Copy in as much of `data` as fits; returns how many bytes (0 when full).
    pub fn write(&mut self, data: &[u8]) -> Result<usize> {
        let n = self.space()?.min(data.len());
        if n == 0 {
            return Ok(0);
        }
        let start = self.shared.mask(self.prod);
        let first = n.min(self.size() - start);
        let src = data.as_ptr();
        // SAFETY: as in `ReadRing::read_uninit`, with the roles swapped.
        unsafe {
            std::ptr::copy_nonoverlapping(src, self.shared.buf.as_ptr().add(start), first);
            std::ptr::copy_nonoverlapping(src.add(first), self.shared.buf.as_ptr(), n - first);
        }
        self.prod = self.prod.wrapping_add(n as u32);
        self.shared.prod().store(self.prod, Ordering::Release);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::PageBuf;

    /// A ring of `size` bytes at offset 64 of a page, indices at offset 0,
    /// with one reader and one writer over it (as both peers would be).
    fn ring(size: u32, start: u32) -> (PageBuf, ReadRing, WriteRing) {
        let page = PageBuf::new(1).unwrap();
        let base = page.ptr();
        // SAFETY: test setup; the page is zeroed, 4-aligned, outlives the rings.
        unsafe {
            base.cast::<u32>().write(start);
            base.add(4).cast::<u32>().write(start);
            let buf = base.add(64);
            let r = ReadRing::new(base, buf, size, RingName::Left);
            let w = WriteRing::new(base, buf, size, RingName::Left);
            (page, r, w)
        }
    }

    fn poke(page: &PageBuf, off: usize, v: u32) {
        // SAFETY: in-page, aligned; the test plays the hostile peer.
        unsafe { (*page.ptr().add(off).cast::<AtomicU32>().as_ptr()).store(v, Ordering::SeqCst) }
    }

    #[test]
    fn empty_then_full_then_empty() {
        let (_p, mut r, mut w) = ring(16, 0);
        assert_eq!(r.available().unwrap(), 0);
        assert_eq!(w.space().unwrap(), 16);
        assert_eq!(w.write(&[7u8; 20]).unwrap(), 16, "partial write");
        assert_eq!(w.write(&[1]).unwrap(), 0, "full");
        assert_eq!(r.available().unwrap(), 16);
        let mut out = [0u8; 10];
        assert_eq!(r.read(&mut out).unwrap(), 10, "partial read");
        assert_eq!(w.space().unwrap(), 10);
        let mut rest = [0u8; 10];
        assert_eq!(r.read(&mut rest).unwrap(), 6);
        assert_eq!(r.read(&mut rest).unwrap(), 0, "empty");
    }

    #[test]
    fn wraps_around_the_end_of_the_ring() {
        let (_p, mut r, mut w) = ring(16, 0);
        let mut sink = [0u8; 16];
        w.write(&[0; 12]).unwrap();
        r.read(&mut sink[..12]).unwrap();
        // 12 bytes at position 12: 4 before the end, 8 after the start.
        let data: Vec<u8> = (1..=12).collect();
        assert_eq!(w.write(&data).unwrap(), 12);
        let mut out = [0u8; 12];
        assert_eq!(r.read(&mut out).unwrap(), 12);
        assert_eq!(&out[..], &data[..]);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let (_p, mut r, mut w) = ring(1024, u32::MAX - 100);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        for _ in 0..5 {
            assert_eq!(w.write(&data).unwrap(), 1000);
            let mut out = vec![0u8; 1000];
            assert_eq!(r.read(&mut out).unwrap(), 1000);
            assert_eq!(out, data);
        }
        assert!(w.prod < 10_000, "prod wrapped past zero: {}", w.prod);
    }

    #[test]
    fn bogus_producer_index_is_an_error() {
        let (page, mut r, _w) = ring(16, 0);
        poke(&page, offset::PROD, 17);
        assert!(matches!(
            r.available(),
            Err(VchanError::BadIndices {
                prod: 17,
                cons: 0,
                size: 16,
                ..
            })
        ));
        assert!(r.read(&mut [0u8; 4]).is_err());
        // `prod` behind `cons` is a huge distance too.
        poke(&page, offset::PROD, u32::MAX);
        assert!(r.available().is_err());
    }

    #[test]
    fn bogus_consumer_index_is_an_error() {
        let (page, _r, mut w) = ring(16, 0);
        w.write(&[1; 4]).unwrap();
        // The reader claims to have consumed more than was produced.
        poke(&page, offset::CONS, 5);
        assert!(matches!(w.space(), Err(VchanError::BadIndices { .. })));
        assert!(w.write(&[1]).is_err());
        // A consumer far behind (more than a ring) is refused too.
        poke(&page, offset::CONS, 4u32.wrapping_sub(17));
        assert!(w.write(&[1]).is_err());
    }

    #[test]
    fn peer_overwriting_our_own_index_changes_nothing() {
        let (page, mut r, mut w) = ring(16, 0);
        w.write(&[1, 2, 3]).unwrap();
        // The peer scribbles over the index we own; we trust our copy.
        poke(&page, offset::PROD, 1000);
        assert_eq!(w.space().unwrap(), 13);
        w.write(&[4]).unwrap();
        let mut out = [0u8; 8];
        assert_eq!(r.read(&mut out).unwrap(), 4);
        assert_eq!(&out[..4], &[1, 2, 3, 4]);
    }
}
