//! Linux's Xen device ioctls, as in the kernel's uapi headers
//! `include/uapi/xen/{gntalloc,gntdev,evtchn}.h` (6.1). Numbers and struct
//! layouts only; the tests pin them to what gcc printed for those headers on
//! x86_64 (`_IOC(_IOC_NONE, type, nr, sizeof(struct))`).
//!
//! Variable-length requests (`gref_ids[]`, `refs[]`) are declared with one
//! element, as in C; callers pass a bigger buffer with the same prefix. The
//! ioctl number always encodes the one-element size.

/// `_IOC(_IOC_NONE, ty, nr, size)` for the asm-generic layout (x86, arm,
/// arm64, riscv): dir in bits 30-31 (0 = none), size 16-29, type 8-15, nr 0-7.
pub const fn ioc_none(ty: u8, nr: u8, size: usize) -> u32 {
    ((size as u32 & 0x3fff) << 16) | ((ty as u32) << 8) | nr as u32
}

// ---- /dev/xen/gntalloc (server: share our pages) ----

pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;
/// `unmap_notify` actions (same values for gntalloc and gntdev).
pub const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
pub const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntallocAllocGref {
    pub domid: u16,
    pub flags: u16,
    pub count: u32,
    /// OUT: the offset to `mmap` the pages at.
    pub index: u64,
    /// OUT: `count` grant refs (the buffer continues past this struct).
    pub gref_ids: [u32; 1],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntallocDeallocGref {
    pub index: u64,
    pub count: u32,
}

/// Also `struct ioctl_gntdev_unmap_notify` (same layout).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UnmapNotify {
    /// `mmap` offset of the byte to clear (the page's index + byte offset).
    pub index: u64,
    pub action: u32,
    pub event_channel_port: u32,
}

pub const IOCTL_GNTALLOC_ALLOC_GREF: u32 =
    ioc_none(b'G', 5, std::mem::size_of::<GntallocAllocGref>());
pub const IOCTL_GNTALLOC_DEALLOC_GREF: u32 =
    ioc_none(b'G', 6, std::mem::size_of::<GntallocDeallocGref>());
pub const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: u32 =
    ioc_none(b'G', 7, std::mem::size_of::<UnmapNotify>());

// ---- /dev/xen/gntdev (client: map the peer's pages) ----

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntdevGrantRef {
    pub domid: u32,
    pub gref: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntdevMapGrantRef {
    pub count: u32,
    pub pad: u32,
    /// OUT: the offset to `mmap` the pages at.
    pub index: u64,
    /// IN: `count` refs (the buffer continues past this struct).
    pub refs: [GntdevGrantRef; 1],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntdevUnmapGrantRef {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntdevSetMaxGrants {
    pub count: u32,
}

pub const IOCTL_GNTDEV_MAP_GRANT_REF: u32 =
    ioc_none(b'G', 0, std::mem::size_of::<GntdevMapGrantRef>());
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u32 =
    ioc_none(b'G', 1, std::mem::size_of::<GntdevUnmapGrantRef>());
pub const IOCTL_GNTDEV_SET_MAX_GRANTS: u32 =
    ioc_none(b'G', 3, std::mem::size_of::<GntdevSetMaxGrants>());
pub const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: u32 =
    ioc_none(b'G', 7, std::mem::size_of::<UnmapNotify>());

// ---- /dev/xen/evtchn ----

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct EvtchnBindInterdomain {
    pub remote_domain: u32,
    pub remote_port: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct EvtchnBindUnboundPort {
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct EvtchnPort {
    pub port: u32,
}

pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u32 =
    ioc_none(b'E', 1, std::mem::size_of::<EvtchnBindInterdomain>());
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u32 =
    ioc_none(b'E', 2, std::mem::size_of::<EvtchnBindUnboundPort>());
pub const IOCTL_EVTCHN_UNBIND: u32 = ioc_none(b'E', 3, std::mem::size_of::<EvtchnPort>());
pub const IOCTL_EVTCHN_NOTIFY: u32 = ioc_none(b'E', 4, std::mem::size_of::<EvtchnPort>());
pub const IOCTL_EVTCHN_RESET: u32 = ioc_none(b'E', 5, 0);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Values printed by a C program including the 6.1 uapi headers (gcc, x86_64).
    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF, 0x0018_4705);
        assert_eq!(IOCTL_GNTALLOC_DEALLOC_GREF, 0x0010_4706);
        assert_eq!(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, 0x0010_4707);
        assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x0018_4700);
        assert_eq!(IOCTL_GNTDEV_UNMAP_GRANT_REF, 0x0010_4701);
        assert_eq!(IOCTL_GNTDEV_SET_MAX_GRANTS, 0x0004_4703);
        assert_eq!(IOCTL_GNTDEV_SET_UNMAP_NOTIFY, 0x0010_4707);
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x0004_4502);
        assert_eq!(IOCTL_EVTCHN_UNBIND, 0x0004_4503);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
        assert_eq!(IOCTL_EVTCHN_RESET, 0x0000_4505);
    }

    #[test]
    fn struct_layouts_match_the_kernel_headers() {
        assert_eq!(size_of::<GntallocAllocGref>(), 24);
        assert_eq!(offset_of!(GntallocAllocGref, index), 8);
        assert_eq!(offset_of!(GntallocAllocGref, gref_ids), 16);
        assert_eq!(size_of::<GntallocDeallocGref>(), 16);
        assert_eq!(size_of::<UnmapNotify>(), 16);
        assert_eq!(size_of::<GntdevMapGrantRef>(), 24);
        assert_eq!(offset_of!(GntdevMapGrantRef, index), 8);
        assert_eq!(offset_of!(GntdevMapGrantRef, refs), 16);
        assert_eq!(size_of::<GntdevGrantRef>(), 8);
        assert_eq!(size_of::<GntdevUnmapGrantRef>(), 16);
    }
}
