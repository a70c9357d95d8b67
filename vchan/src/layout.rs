//! The shared control page exactly as libxenvchan lays it out, and the ring
//! geometry (sizes, placement) that follows from the two orders.
//!
//! Source of truth: `struct vchan_interface` in Xen's
//! `xen/include/public/io/libxenvchan.h` (MIT) and the sizing rules of
//! `tools/libs/vchan/init.c`. The offsets below were checked with `offsetof`
//! on that header with gcc (x86_64); the tests pin them.

use crate::error::{Result, RingName, VchanError};

/// Xen's page size (grants are per 4 KiB page on every architecture vxn runs on).
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u16 = 12;

/// `VCHAN_NOTIFY_WRITE`: "send notify when data is written".
pub const NOTIFY_WRITE: u8 = 0x1;
/// `VCHAN_NOTIFY_READ`: "send notify when data is read (consumed)".
pub const NOTIFY_READ: u8 = 0x2;

/// Values of `cli_live` / `srv_live`.
pub const LIVE_CLOSED: u8 = 0;
pub const LIVE_CONNECTED: u8 = 1;
/// Only ever in `cli_live`: the server has published, no client yet.
pub const LIVE_NOT_YET: u8 = 2;

/// Byte offsets inside the control page (`struct vchan_interface`).
pub mod offset {
    /// `struct ring_shared left` (client writes, server reads).
    pub const LEFT: usize = 0;
    /// `struct ring_shared right` (server writes, client reads).
    pub const RIGHT: usize = 8;
    /// Inside a `struct ring_shared`.
    pub const CONS: usize = 0;
    pub const PROD: usize = 4;
    pub const LEFT_ORDER: usize = 16;
    pub const RIGHT_ORDER: usize = 18;
    pub const CLI_LIVE: usize = 20;
    pub const SRV_LIVE: usize = 21;
    pub const CLI_NOTIFY: usize = 22;
    pub const SRV_NOTIFY: usize = 23;
    /// `uint32_t grants[]`: the left ring's pages, then the right ring's.
    pub const GRANTS: usize = 24;
}

/// A Rust mirror of `struct vchan_interface`, for layout checks only: the
/// protocol code never forms references to shared memory of this type (the
/// peer writes it concurrently), it uses the [`offset`]s with atomics.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VchanInterface {
    pub left: RingShared,
    pub right: RingShared,
    pub left_order: u16,
    pub right_order: u16,
    pub cli_live: u8,
    pub srv_live: u8,
    pub cli_notify: u8,
    pub srv_notify: u8,
    /// `uint32_t grants[0]`: a flexible array member, zero-sized.
    pub grants: [u32; 0],
}

/// `struct ring_shared { uint32_t cons, prod; }`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RingShared {
    pub cons: u32,
    pub prod: u32,
}

/// Order of the ring that lives at offset 1024 of the control page.
pub const SMALL_RING_ORDER: u16 = 10;
/// Order of the ring that lives at offset 2048 of the control page.
pub const LARGE_RING_ORDER: u16 = 11;
pub const SMALL_RING_OFFSET: usize = 1024;
pub const LARGE_RING_OFFSET: usize = 2048;
/// The biggest ring: more would need more grants than fit in the page.
pub const MAX_RING_ORDER: u16 = 20;
pub const MAX_RING_SIZE: usize = 1 << MAX_RING_ORDER;

/// Where a ring's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Inside the control page, at this byte offset.
    InPage { offset: usize },
    /// In this many separately granted pages (grant refs in `grants[]`).
    Granted { pages: usize },
}

/// A validated ring order (10..=20): the ring is `1 << order` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RingOrder(u16);

impl RingOrder {
    pub fn new(ring: RingName, order: u16) -> Result<Self> {
        if (SMALL_RING_ORDER..=MAX_RING_ORDER).contains(&order) {
            Ok(RingOrder(order))
        } else {
            Err(VchanError::BadOrder {
                ring,
                order,
                min: SMALL_RING_ORDER,
                max: MAX_RING_ORDER,
            })
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// Ring size in bytes (a power of two, 1 KiB..=1 MiB).
    pub fn size(self) -> usize {
        1 << self.0
    }

    pub fn placement(self) -> Placement {
        match self.0 {
            SMALL_RING_ORDER => Placement::InPage {
                offset: SMALL_RING_OFFSET,
            },
            LARGE_RING_ORDER => Placement::InPage {
                offset: LARGE_RING_OFFSET,
            },
            o => Placement::Granted {
                pages: 1 << (o - PAGE_SHIFT),
            },
        }
    }

    /// Pages to grant for this ring (0 for an in-page ring).
    pub fn pages(self) -> usize {
        match self.placement() {
            Placement::InPage { .. } => 0,
            Placement::Granted { pages } => pages,
        }
    }

    /// The smallest granted-page order holding `size` bytes (libxenvchan's
    /// `min_order`: never below a page).
    fn for_pages(size: usize) -> RingOrder {
        let mut order = PAGE_SHIFT;
        while (1usize << order) < size {
            order += 1;
        }
        RingOrder(order)
    }
}

/// The two ring orders of a vchan, checked to describe a layout that fits
/// the control page. `left` = client→server, `right` = server→client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orders {
    pub left: RingOrder,
    pub right: RingOrder,
}

impl Orders {
    /// Validate orders as read from a (possibly hostile) control page.
    /// Stricter than libxenvchan's client in one way: a grant list that
    /// would overlap an in-page ring is refused (libxenvchan's server never
    /// produces one).
    pub fn validate(left: u16, right: u16) -> Result<Orders> {
        let left = RingOrder::new(RingName::Left, left)?;
        let right = RingOrder::new(RingName::Right, right)?;
        if left == right && left.get() < PAGE_SHIFT {
            return Err(VchanError::OverlappingRings(left.get()));
        }
        let orders = Orders { left, right };
        let count = orders.grant_count();
        let end = offset::GRANTS + 4 * count;
        let limit = [left, right]
            .iter()
            .filter_map(|o| match o.placement() {
                Placement::InPage { offset } => Some(offset),
                Placement::Granted { .. } => None,
            })
            .min()
            .unwrap_or(PAGE_SIZE);
        if end > limit {
            return Err(VchanError::GrantsOverflow { count, end, limit });
        }
        Ok(orders)
    }

    /// The orders libxenvchan's server picks for rings of at least
    /// `left_min` (client→server) and `right_min` (server→client) bytes:
    /// both in the control page when they fit (1 KiB + 2 KiB), else one
    /// 2 KiB in-page ring if one fits, else granted pages.
    pub fn for_server(left_min: usize, right_min: usize) -> Result<Orders> {
        for requested in [left_min, right_min] {
            if requested > MAX_RING_SIZE {
                return Err(VchanError::RingTooLarge {
                    requested,
                    max: MAX_RING_SIZE,
                });
            }
        }
        const SMALL: usize = 1 << SMALL_RING_ORDER;
        const LARGE: usize = 1 << LARGE_RING_ORDER;
        let mut left = RingOrder::for_pages(left_min);
        let mut right = RingOrder::for_pages(right_min);
        if left_min <= SMALL && right_min <= LARGE {
            (left, right) = (RingOrder(SMALL_RING_ORDER), RingOrder(LARGE_RING_ORDER));
        } else if left_min <= LARGE && right_min <= SMALL {
            (left, right) = (RingOrder(LARGE_RING_ORDER), RingOrder(SMALL_RING_ORDER));
        } else if left_min <= LARGE {
            left = RingOrder(LARGE_RING_ORDER);
        } else if right_min <= LARGE {
            right = RingOrder(LARGE_RING_ORDER);
        }
        Orders::validate(left.get(), right.get())
    }

    /// Grant refs in `grants[]`: the left ring's pages then the right's.
    pub fn grant_count(self) -> usize {
        self.left.pages() + self.right.pages()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// Offsets printed by gcc's `offsetof` on Xen's libxenvchan.h (c447b73).
    #[test]
    fn layout_matches_the_c_header() {
        assert_eq!(offset_of!(VchanInterface, left), 0);
        assert_eq!(offset_of!(VchanInterface, right), 8);
        assert_eq!(offset_of!(RingShared, cons), 0);
        assert_eq!(offset_of!(RingShared, prod), 4);
        assert_eq!(offset_of!(VchanInterface, left_order), 16);
        assert_eq!(offset_of!(VchanInterface, right_order), 18);
        assert_eq!(offset_of!(VchanInterface, cli_live), 20);
        assert_eq!(offset_of!(VchanInterface, srv_live), 21);
        assert_eq!(offset_of!(VchanInterface, cli_notify), 22);
        assert_eq!(offset_of!(VchanInterface, srv_notify), 23);
        assert_eq!(offset_of!(VchanInterface, grants), 24);
        assert_eq!(size_of::<VchanInterface>(), 24);
        assert_eq!(align_of::<VchanInterface>(), 4);
    }

    #[test]
    fn offset_constants_agree_with_the_mirror_struct() {
        assert_eq!(offset::LEFT, offset_of!(VchanInterface, left));
        assert_eq!(offset::RIGHT, offset_of!(VchanInterface, right));
        assert_eq!(offset::CONS, offset_of!(RingShared, cons));
        assert_eq!(offset::PROD, offset_of!(RingShared, prod));
        assert_eq!(offset::LEFT_ORDER, offset_of!(VchanInterface, left_order));
        assert_eq!(offset::RIGHT_ORDER, offset_of!(VchanInterface, right_order));
        assert_eq!(offset::CLI_LIVE, offset_of!(VchanInterface, cli_live));
        assert_eq!(offset::SRV_LIVE, offset_of!(VchanInterface, srv_live));
        assert_eq!(offset::CLI_NOTIFY, offset_of!(VchanInterface, cli_notify));
        assert_eq!(offset::SRV_NOTIFY, offset_of!(VchanInterface, srv_notify));
        assert_eq!(offset::GRANTS, offset_of!(VchanInterface, grants));
    }

    fn orders(l: u16, r: u16) -> (u16, u16) {
        let o = Orders::for_server(1 << l, 1 << r).unwrap();
        (o.left.get(), o.right.get())
    }

    #[test]
    fn server_sizing_follows_libxenvchan() {
        // Both fit in the page: 1 KiB left + 2 KiB right, or the mirror.
        assert_eq!(Orders::for_server(0, 0).unwrap().left.get(), 10);
        assert_eq!(orders(10, 11), (10, 11));
        assert_eq!(orders(11, 10), (11, 10));
        // Only one fits in the page: it takes the 2 KiB slot.
        assert_eq!(orders(11, 11), (11, 12));
        assert_eq!(orders(11, 16), (11, 16));
        assert_eq!(orders(16, 9), (16, 11));
        // Qubes qrexec's 4096/4096.
        assert_eq!(orders(12, 12), (12, 12));
        assert_eq!(orders(20, 20), (20, 20));
        // Non-powers of two round up.
        let o = Orders::for_server(5000, 70_000).unwrap();
        assert_eq!((o.left.get(), o.right.get()), (13, 17));
        assert_eq!(o.grant_count(), 2 + 32);
    }

    #[test]
    fn oversized_request_is_refused() {
        assert!(matches!(
            Orders::for_server(MAX_RING_SIZE + 1, 0),
            Err(VchanError::RingTooLarge { .. })
        ));
    }

    #[test]
    fn placement_per_order() {
        let p = |o| RingOrder::new(RingName::Left, o).unwrap().placement();
        assert_eq!(p(10), Placement::InPage { offset: 1024 });
        assert_eq!(p(11), Placement::InPage { offset: 2048 });
        assert_eq!(p(12), Placement::Granted { pages: 1 });
        assert_eq!(p(16), Placement::Granted { pages: 16 });
        assert_eq!(p(20), Placement::Granted { pages: 256 });
    }

    #[test]
    fn hostile_orders_are_refused() {
        for (l, r) in [(9, 12), (12, 21), (0, 0), (u16::MAX, 12), (12, 4096)] {
            assert!(
                matches!(Orders::validate(l, r), Err(VchanError::BadOrder { .. })),
                "{l}/{r}"
            );
        }
        assert!(matches!(
            Orders::validate(10, 10),
            Err(VchanError::OverlappingRings(10))
        ));
        assert!(matches!(
            Orders::validate(11, 11),
            Err(VchanError::OverlappingRings(11))
        ));
        // 256 grants for the right ring run into the left ring at 1024.
        assert!(matches!(
            Orders::validate(10, 20),
            Err(VchanError::GrantsOverflow { limit: 1024, .. })
        ));
        // The same next to a 2 KiB in-page ring fits (24 + 1024 bytes).
        assert!(Orders::validate(11, 20).is_ok());
        // Both at the maximum: 512 grants end at byte 2072 < 4096.
        assert!(Orders::validate(20, 20).is_ok());
        assert!(Orders::validate(12, 12).is_ok());
    }
}
