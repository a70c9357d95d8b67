//! Building a connected [`Endpoint`]: the server lays out and shares the
//! pages (libxenvchan's `init_gnt_srv`), the client maps and validates them
//! (`init_gnt_cli`). Publishing `ring-ref` / `event-channel` in xenstore and
//! binding the event channel are the backend's job, around these calls.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use crate::control::{ControlPage, Role};
use crate::endpoint::Endpoint;
use crate::error::{Result, RingName, VchanError};
use crate::event::EventChannel;
use crate::layout::{
    Orders, Placement, RingOrder, LIVE_CONNECTED, LIVE_NOT_YET, NOTIFY_WRITE, PAGE_SIZE,
};
use crate::ring::{ReadRing, WriteRing};
use crate::shm::{Access, GrantMap, GrantShare, Purpose, SharedMemory};

fn check_region(mem: &dyn SharedMemory, need: usize, what: &str) -> Result<NonNull<u8>> {
    let ptr = mem.as_ptr();
    if mem.len() < need {
        return Err(VchanError::Memory(format!(
            "{what}: the backend mapped {} bytes, {need} are needed",
            mem.len()
        )));
    }
    if ptr.as_ptr() as usize % PAGE_SIZE != 0 {
        return Err(VchanError::Memory(format!(
            "{what}: mapping is not page aligned"
        )));
    }
    Ok(ptr)
}

/// Where one ring's bytes are: inside the control page, or in pages just
/// shared / mapped (which are then kept in `memory`).
fn ring_buffer(
    ctrl: &ControlPage,
    order: RingOrder,
    extra: Option<Box<dyn SharedMemory>>,
    memory: &mut Vec<Box<dyn SharedMemory>>,
    what: &str,
) -> Result<NonNull<u8>> {
    match (order.placement(), extra) {
        // SAFETY: offset 1024 or 2048, and the ring (1 or 2 KiB) ends at or
        // before the end of the page.
        (Placement::InPage { offset }, None) => Ok(unsafe { ctrl.base().add(offset) }),
        (Placement::Granted { .. }, Some(mem)) => {
            let ptr = check_region(mem.as_ref(), order.size(), what)?;
            memory.push(mem);
            Ok(ptr)
        }
        _ => Err(VchanError::Memory(format!(
            "{what}: ring placement mismatch"
        ))),
    }
}

/// Set up the server end: rings of at least `left_min` bytes client→server
/// and `right_min` server→client (sized as libxenvchan does). Returns the
/// endpoint and the control page's grant ref, to publish as `ring-ref`.
///
/// `events` must already be bound to the client's domain (an unbound port
/// on Xen, published as `event-channel`).
pub fn server<A, E>(
    alloc: &mut A,
    events: E,
    left_min: usize,
    right_min: usize,
) -> Result<(Endpoint<E>, u32)>
where
    A: GrantShare,
    E: EventChannel,
{
    let orders = Orders::for_server(left_min, right_min)?;
    let (ctrl_mem, ctrl_refs) = alloc.share(1, Purpose::Control)?;
    let ring_ref = match ctrl_refs.as_slice() {
        [r] => *r,
        other => {
            return Err(VchanError::Grant(format!(
                "sharing the control page gave {} grant refs",
                other.len()
            )))
        }
    };
    let ctrl_ptr = check_region(&ctrl_mem, PAGE_SIZE, "control page")?;
    let mut memory: Vec<Box<dyn SharedMemory>> = vec![Box::new(ctrl_mem)];
    // SAFETY: a whole writable page, aligned, kept alive in `memory`.
    let ctrl = unsafe { ControlPage::new(ctrl_ptr) };
    ctrl.zero();
    ctrl.set_orders(orders.left.get(), orders.right.get());

    let mut grant_idx = 0usize;
    let mut share_ring = |order: RingOrder, what: &str| -> Result<Option<Box<dyn SharedMemory>>> {
        let pages = order.pages();
        if pages == 0 {
            return Ok(None);
        }
        let (mem, refs) = alloc.share(pages, Purpose::Ring)?;
        if refs.len() != pages {
            return Err(VchanError::Grant(format!(
                "{what}: sharing {pages} pages gave {} grant refs",
                refs.len()
            )));
        }
        for r in refs {
            if !ctrl.set_grant(grant_idx, r) {
                return Err(VchanError::Grant(format!(
                    "{what}: grant list overflows the page"
                )));
            }
            grant_idx += 1;
        }
        Ok(Some(Box::new(mem)))
    };
    let left_mem = share_ring(orders.left, "left ring")?;
    let right_mem = share_ring(orders.right, "right ring")?;
    let left = ring_buffer(&ctrl, orders.left, left_mem, &mut memory, "left ring")?;
    let right = ring_buffer(&ctrl, orders.right, right_mem, &mut memory, "right ring")?;

    // SAFETY: the index structs are in the control page and the buffers in
    // `memory` (or the control page), all kept by the endpoint; sizes are
    // powers of two (validated orders).
    let (rx, tx) = unsafe {
        (
            ReadRing::new(
                ctrl.ring_shared(true),
                left,
                orders.left.size() as u32,
                RingName::Left,
            ),
            WriteRing::new(
                ctrl.ring_shared(false),
                right,
                orders.right.size() as u32,
                RingName::Right,
            ),
        )
    };
    // Liveness last: the page is complete before anyone is told about it.
    ctrl.notify(Role::Client)
        .store(NOTIFY_WRITE, Ordering::Relaxed);
    ctrl.live(Role::Client)
        .store(LIVE_NOT_YET, Ordering::Relaxed);
    ctrl.live(Role::Server)
        .store(LIVE_CONNECTED, Ordering::Release);
    // SAFETY: every pointer above points into `memory`.
    let ep = unsafe { Endpoint::from_parts(Role::Server, ctrl, rx, tx, orders, events, memory) };
    Ok((ep, ring_ref))
}

/// Set up the client end over the server's control page `ring_ref`. The
/// page is hostile input: the orders are read once, validated, and kept;
/// the grant list is read once.
///
/// `events` must already be bound to the server's port (interdomain bind).
pub fn client<M, E>(mapper: &mut M, events: E, ring_ref: u32) -> Result<Endpoint<E>>
where
    M: GrantMap,
    E: EventChannel,
{
    let ctrl_mem = mapper.map(&[ring_ref], Access::ReadWrite, Purpose::Control)?;
    let ctrl_ptr = check_region(&ctrl_mem, PAGE_SIZE, "control page")?;
    let mut memory: Vec<Box<dyn SharedMemory>> = vec![Box::new(ctrl_mem)];
    // SAFETY: a whole writable page, aligned, kept alive in `memory`.
    let ctrl = unsafe { ControlPage::new(ctrl_ptr) };
    let (left, right) = ctrl.orders();
    let orders = Orders::validate(left, right)?;

    let grants: Vec<u32> = (0..orders.grant_count())
        .map(|i| ctrl.grant(i))
        .collect::<Option<_>>()
        .ok_or_else(|| VchanError::Grant("grant list runs off the page".into()))?;
    let (left_refs, right_refs) = grants.split_at(orders.left.pages());
    let mut map_ring = |refs: &[u32], access| -> Result<Option<Box<dyn SharedMemory>>> {
        if refs.is_empty() {
            return Ok(None);
        }
        Ok(Some(Box::new(mapper.map(refs, access, Purpose::Ring)?)))
    };
    // We write the left ring and only read the right one.
    let left_mem = map_ring(left_refs, Access::ReadWrite)?;
    let right_mem = map_ring(right_refs, Access::ReadOnly)?;
    let left = ring_buffer(&ctrl, orders.left, left_mem, &mut memory, "left ring")?;
    let right = ring_buffer(&ctrl, orders.right, right_mem, &mut memory, "right ring")?;

    // SAFETY: as in `server`.
    let (tx, rx) = unsafe {
        (
            WriteRing::new(
                ctrl.ring_shared(true),
                left,
                orders.left.size() as u32,
                RingName::Left,
            ),
            ReadRing::new(
                ctrl.ring_shared(false),
                right,
                orders.right.size() as u32,
                RingName::Right,
            ),
        )
    };
    // A reconnecting client adopts the indices in the page; they must make sense.
    rx.available()?;
    tx.space()?;
    // SAFETY: every pointer above points into `memory`.
    let ep = unsafe { Endpoint::from_parts(Role::Client, ctrl, rx, tx, orders, events, memory) };
    ep.announce_client()?;
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::offset;
    use crate::memory::{InMemoryGrants, MemEvent};
    use std::sync::atomic::{AtomicU16, AtomicU32};

    fn serve(left: usize, right: usize) -> (InMemoryGrants, Endpoint<MemEvent>, u32, MemEvent) {
        let grants = InMemoryGrants::new();
        let (s, c) = MemEvent::pair();
        let (ep, r) = server(&mut grants.clone(), s, left, right).unwrap();
        (grants, ep, r, c)
    }

    fn page_u16(g: &InMemoryGrants, r: u32, off: usize) -> &'static AtomicU16 {
        // SAFETY: test only; the page outlives the test body via `g`.
        unsafe { g.peek(r).unwrap().add(off).cast::<AtomicU16>().as_ref() }
    }

    #[test]
    fn server_publishes_libxenvchan_initial_state() {
        let (g, _ep, r, _c) = serve(4096, 4096);
        let page = g.peek(r).unwrap();
        // SAFETY: test reads of the control page.
        let byte = |off: usize| unsafe { page.add(off).read_volatile() };
        assert_eq!(
            page_u16(&g, r, offset::LEFT_ORDER).load(Ordering::SeqCst),
            12
        );
        assert_eq!(
            page_u16(&g, r, offset::RIGHT_ORDER).load(Ordering::SeqCst),
            12
        );
        assert_eq!(byte(offset::CLI_LIVE), LIVE_NOT_YET);
        assert_eq!(byte(offset::SRV_LIVE), LIVE_CONNECTED);
        assert_eq!(byte(offset::CLI_NOTIFY), NOTIFY_WRITE);
        assert_eq!(byte(offset::SRV_NOTIFY), 0);
        // Two ring pages granted, refs in grants[0..2], mappable.
        let ctrl = unsafe { ControlPage::new(page) };
        let refs = [ctrl.grant(0).unwrap(), ctrl.grant(1).unwrap()];
        assert!(refs.iter().all(|r| g.peek(*r).is_some()));
    }

    #[test]
    fn client_refuses_hostile_orders() {
        for (l, r, ok) in [
            (10u16, 10u16, false),
            (9, 11, false),
            (21, 12, false),
            (10, 20, false),
            (11, 12, true),
        ] {
            let (g, _ep, rref, _c) = serve(2048, 8192);
            page_u16(&g, rref, offset::LEFT_ORDER).store(l, Ordering::SeqCst);
            page_u16(&g, rref, offset::RIGHT_ORDER).store(r, Ordering::SeqCst);
            let (_, cev) = MemEvent::pair();
            let res = client(&mut g.clone(), cev, rref);
            assert_eq!(res.is_ok(), ok, "orders {l}/{r}: {res:?}");
        }
    }

    #[test]
    fn client_refuses_bogus_grants_and_indices() {
        let (g, _ep, rref, _c) = serve(4096, 4096);
        // SAFETY: test pokes at the page as a hostile server.
        let grant0 = unsafe {
            g.peek(rref)
                .unwrap()
                .add(offset::GRANTS)
                .cast::<AtomicU32>()
                .as_ref()
        };
        let good = grant0.load(Ordering::SeqCst);
        grant0.store(good + 1000, Ordering::SeqCst);
        assert!(matches!(
            client(&mut g.clone(), MemEvent::pair().0, rref),
            Err(VchanError::Grant(_))
        ));
        grant0.store(good, Ordering::SeqCst);
        // SAFETY: as above.
        let right_prod = unsafe {
            g.peek(rref)
                .unwrap()
                .add(offset::RIGHT + offset::PROD)
                .cast::<AtomicU32>()
                .as_ref()
        };
        right_prod.store(99_999, Ordering::SeqCst);
        assert!(matches!(
            client(&mut g.clone(), MemEvent::pair().0, rref),
            Err(VchanError::BadIndices { .. })
        ));
        right_prod.store(0, Ordering::SeqCst);
        assert!(client(&mut g.clone(), MemEvent::pair().0, rref).is_ok());
    }

    #[test]
    fn unknown_ring_ref_is_an_error() {
        let g = InMemoryGrants::new();
        assert!(matches!(
            client(&mut g.clone(), MemEvent::pair().0, 42),
            Err(VchanError::Grant(_))
        ));
    }
}
