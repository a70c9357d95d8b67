//! The in-memory backend: both ends of a vchan in one process, over heap
//! pages and an in-process event pair. Used by the tests, and usable as a
//! test double by the code that will run over real vchans.
//!
//! [`InMemoryGrants`] is a toy grant table: the server "grants" heap pages
//! (getting refs), the client "maps" refs back to the same pages. A
//! multi-page mapping must name the pages of one share, in order (a real
//! gntdev can map any refs contiguously; this double only supports what a
//! vchan server produces). [`InMemoryGrants::peek`] lets a test act as a
//! hostile peer on the raw bytes.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::control::Role;
use crate::endpoint::Endpoint;
use crate::error::{Result, VchanError};
use crate::event::EventChannel;
use crate::layout::PAGE_SIZE;
use crate::setup::{client, server};
use crate::shm::{Access, GrantMap, GrantShare, Purpose, SharedMemory};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Zeroed, page-aligned heap pages.
#[derive(Debug)]
pub struct PageBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the pages are plain memory accessed through raw pointers/atomics.
unsafe impl Send for PageBuf {}
unsafe impl Sync for PageBuf {}

impl PageBuf {
    pub fn new(pages: usize) -> Result<PageBuf> {
        let len = pages
            .checked_mul(PAGE_SIZE)
            .filter(|&l| l > 0)
            .ok_or_else(|| VchanError::Memory(format!("cannot allocate {pages} pages")))?;
        let layout = Layout::from_size_align(len, PAGE_SIZE)
            .map_err(|e| VchanError::Memory(e.to_string()))?;
        // SAFETY: `layout` has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })
            .ok_or_else(|| VchanError::Memory(format!("out of memory for {len} bytes")))?;
        Ok(PageBuf { ptr, layout })
    }

    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A shared (or mapped) in-memory region: some pages of a [`PageBuf`].
#[derive(Debug, Clone)]
pub struct MemRegion {
    buf: Arc<PageBuf>,
    offset: usize,
    len: usize,
}

// SAFETY: `offset + len` lies inside `buf` (checked where built), `buf` is
// page aligned and `offset` a multiple of the page size; the Arc keeps it.
unsafe impl SharedMemory for MemRegion {
    fn as_ptr(&self) -> NonNull<u8> {
        // SAFETY: in bounds, see above.
        unsafe { self.buf.ptr().add(self.offset) }
    }
    fn len(&self) -> usize {
        self.len
    }
}

#[derive(Debug, Default)]
struct GrantTable {
    next: u32,
    /// gref -> (the share's pages, page index in it).
    entries: HashMap<u32, (Arc<PageBuf>, usize)>,
}

/// A toy grant table shared by the server ([`GrantShare`]) and the client
/// ([`GrantMap`]) of in-memory vchans. Cheap to clone (one table).
#[derive(Debug, Clone, Default)]
pub struct InMemoryGrants {
    table: Arc<Mutex<GrantTable>>,
}

impl InMemoryGrants {
    pub fn new() -> Self {
        Self::default()
    }

    /// The raw page behind `gref`, for tests that play a hostile peer.
    /// Access it only with raw pointers or atomics.
    pub fn peek(&self, gref: u32) -> Option<NonNull<u8>> {
        let t = lock(&self.table);
        let (buf, page) = t.entries.get(&gref)?;
        // SAFETY: `page` is inside `buf` (recorded in `share`).
        Some(unsafe { buf.ptr().add(page * PAGE_SIZE) })
    }
}

impl GrantShare for InMemoryGrants {
    type Memory = MemRegion;

    fn share(&mut self, pages: usize, _purpose: Purpose) -> Result<(MemRegion, Vec<u32>)> {
        let buf = Arc::new(PageBuf::new(pages)?);
        let mut t = lock(&self.table);
        let mut grefs = Vec::with_capacity(pages);
        for page in 0..pages {
            // Real tables keep the first few refs for the toolstack; so do we.
            t.next = t.next.max(8).wrapping_add(1);
            let gref = t.next;
            t.entries.insert(gref, (buf.clone(), page));
            grefs.push(gref);
        }
        let len = buf.len();
        Ok((
            MemRegion {
                buf,
                offset: 0,
                len,
            },
            grefs,
        ))
    }
}

impl GrantMap for InMemoryGrants {
    type Memory = MemRegion;

    fn map(&mut self, grants: &[u32], _access: Access, _purpose: Purpose) -> Result<MemRegion> {
        let t = lock(&self.table);
        let lookup = |g: &u32| {
            t.entries
                .get(g)
                .ok_or_else(|| VchanError::Grant(format!("no such grant ref {g}")))
        };
        let (first_g, rest) = grants
            .split_first()
            .ok_or_else(|| VchanError::Grant("mapping zero grants".into()))?;
        let (buf, first) = lookup(first_g)?;
        for (i, g) in rest.iter().enumerate() {
            let (b, page) = lookup(g)?;
            if !Arc::ptr_eq(b, buf) || *page != first + i + 1 {
                return Err(VchanError::Grant(format!(
                    "grant ref {g} does not follow the previous page (in-memory backend limit)"
                )));
            }
        }
        Ok(MemRegion {
            buf: buf.clone(),
            offset: first * PAGE_SIZE,
            len: grants.len() * PAGE_SIZE,
        })
    }
}

/// One direction's state: a pending flag and the waiter's waker.
#[derive(Debug, Default)]
struct Signal {
    pending: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    fn raise(&self) {
        self.pending.store(true, Ordering::SeqCst);
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }
}

/// One end of an in-process event channel, made by [`MemEvent::pair`].
#[derive(Debug)]
pub struct MemEvent {
    inbox: Arc<Signal>,
    peer: Arc<Signal>,
    sent: AtomicU64,
}

impl MemEvent {
    pub fn pair() -> (MemEvent, MemEvent) {
        let a = Arc::new(Signal::default());
        let b = Arc::new(Signal::default());
        (
            MemEvent {
                inbox: a.clone(),
                peer: b.clone(),
                sent: AtomicU64::new(0),
            },
            MemEvent {
                inbox: b,
                peer: a,
                sent: AtomicU64::new(0),
            },
        )
    }

    /// Kicks sent so far (tests check that notifications are suppressed
    /// when the peer did not ask for them).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl EventChannel for MemEvent {
    fn notify(&self) -> Result<()> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.peer.raise();
        Ok(())
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.inbox.pending.swap(false, Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        {
            let mut slot = lock(&self.inbox.waker);
            match slot.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        // An event raised between the first check and the registration.
        if self.inbox.pending.swap(false, Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

/// A connected in-memory vchan: the server (guest side in vxn) with rings of
/// at least `left_min` bytes client→server and `right_min` server→client,
/// and a client mapped onto it. Also returns the grant table, for tests that
/// want to poke the shared page ([`InMemoryGrants::peek`] with `ring_ref`).
pub fn pair(left_min: usize, right_min: usize) -> Result<InMemoryPair> {
    let grants = InMemoryGrants::new();
    let (srv_ev, cli_ev) = MemEvent::pair();
    let (server, ring_ref) = server(&mut grants.clone(), srv_ev, left_min, right_min)?;
    let client = client(&mut grants.clone(), cli_ev, ring_ref)?;
    debug_assert_eq!(server.role(), Role::Server);
    Ok(InMemoryPair {
        server,
        client,
        grants,
        ring_ref,
    })
}

/// What [`pair`] returns.
pub struct InMemoryPair {
    pub server: Endpoint<MemEvent>,
    pub client: Endpoint<MemEvent>,
    pub grants: InMemoryGrants,
    pub ring_ref: u32,
}
