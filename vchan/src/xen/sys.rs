//! Small libc helpers shared by the device backends, and the grant mapping
//! both grant devices (gntalloc, gntdev) hand out.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::error::{Result, VchanError};

pub(crate) fn open_dev(path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; the fd is owned on success.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ioctl(fd, request, arg)`; returns the (non-negative) result.
///
/// # Safety
///
/// `arg` must point to a buffer of the layout `request` expects, big enough
/// for its variable part.
pub(crate) unsafe fn ioctl<T>(fd: &OwnedFd, request: u32, arg: *mut T) -> io::Result<i32> {
    // The request type differs between libcs (c_ulong on glibc, c_int on musl).
    #[allow(clippy::useless_conversion)]
    let rc = libc::ioctl(fd.as_raw_fd(), request as _, arg);
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A `MAP_SHARED` mapping of `len` bytes at `offset` of `fd`.
pub(crate) fn mmap(fd: &OwnedFd, len: usize, writable: bool, offset: u64) -> Result<NonNull<u8>> {
    let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
    let off = libc::off_t::try_from(offset)
        .map_err(|_| VchanError::Grant(format!("mmap offset {offset} out of range")))?;
    // SAFETY: a fresh mapping; nothing else is at the returned address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(VchanError::Grant(format!(
            "mmap: {}",
            io::Error::last_os_error()
        )));
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| VchanError::Grant("mmap returned null".into()))
}

/// # Safety
///
/// `ptr`/`len` must be a mapping from [`mmap`] nobody uses any more.
pub(crate) unsafe fn munmap(ptr: NonNull<u8>, len: usize) {
    libc::munmap(ptr.as_ptr().cast(), len);
}

/// A zeroed, 8-aligned buffer for a grant ioctl's request: a header of
/// `header` bytes (at least `min` in all), then `n` entries of `entry` bytes.
pub(crate) fn request_buf(header: usize, entry: usize, n: usize, min: usize) -> Vec<u64> {
    vec![0u64; (header + entry * n).max(min).div_ceil(8)]
}

pub(crate) fn grant_err(what: &str, e: io::Error) -> VchanError {
    VchanError::Grant(format!("{what}: {e}"))
}

/// Pages of a grant device (gntalloc or gntdev) mapped in our address
/// space; on drop, unmapped and then handed back with `release` (the
/// device's dealloc / unmap ioctl for `index`, `pages`).
pub struct GrantRegion {
    pub(crate) fd: std::sync::Arc<OwnedFd>,
    pub(crate) ptr: NonNull<u8>,
    pub(crate) pages: usize,
    pub(crate) index: u64,
    pub(crate) release: fn(&OwnedFd, u64, u32),
}

// SAFETY: a MAP_SHARED mapping of `pages` pages, page aligned, alive until
// drop (read-only if mapped so: the core never writes a read-only ring);
// accessed only through raw pointers and atomics.
unsafe impl crate::shm::SharedMemory for GrantRegion {
    fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }
    fn len(&self) -> usize {
        self.pages * crate::layout::PAGE_SIZE
    }
}
// SAFETY: see above.
unsafe impl Send for GrantRegion {}
unsafe impl Sync for GrantRegion {}

impl GrantRegion {
    /// Map the `pages` pages the device holds at `index` (its allocation or
    /// mapping); if that fails they are handed back with `release` at once.
    pub(crate) fn map(
        fd: &std::sync::Arc<OwnedFd>,
        pages: usize,
        writable: bool,
        index: u64,
        release: fn(&OwnedFd, u64, u32),
    ) -> Result<Self> {
        match mmap(fd, pages * crate::layout::PAGE_SIZE, writable, index) {
            Ok(ptr) => Ok(GrantRegion {
                fd: fd.clone(),
                ptr,
                pages,
                index,
                release,
            }),
            Err(e) => {
                release(fd, index, pages as u32);
                Err(e)
            }
        }
    }

    /// Have the kernel clear the byte at `byte` in this region and kick
    /// `port` when the mapping goes, even by our death: the peer's view of
    /// our liveness. `request` is the device's SET_UNMAP_NOTIFY.
    pub(crate) fn notify_on_unmap(
        &self,
        request: u32,
        byte: usize,
        port: u32,
        what: &str,
    ) -> Result<()> {
        use super::ioctl::{UnmapNotify, UNMAP_NOTIFY_CLEAR_BYTE, UNMAP_NOTIFY_SEND_EVENT};
        let mut n = UnmapNotify {
            index: self.index + byte as u64,
            action: UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT,
            event_channel_port: port,
        };
        // SAFETY: both devices' SET_UNMAP_NOTIFY take this request.
        unsafe { ioctl(&self.fd, request, &mut n) }
            .map(drop)
            .map_err(|e| grant_err(what, e))
    }
}

impl Drop for GrantRegion {
    fn drop(&mut self) {
        // SAFETY: our mapping; the endpoint that used it is gone.
        unsafe { munmap(self.ptr, self.pages * crate::layout::PAGE_SIZE) };
        (self.release)(&self.fd, self.index, self.pages as u32);
    }
}
