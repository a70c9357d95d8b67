//! A connected vchan end: the data path (non-blocking read/write with
//! libxenvchan's notification protocol), liveness and close.
//!
//! Notification protocol (as libxenvchan's `io.c`): each side has a request
//! byte in the control page, `cli_notify` / `srv_notify`, holding the events
//! the *other* side wants to hear about. Before waiting for data, a reader
//! sets `NOTIFY_WRITE` in the peer's byte and re-checks the ring; a writer
//! that finds the ring full sets `NOTIFY_READ`. After moving an index, a side
//! clears the matching bit in its *own* byte and kicks the event channel only
//! if the bit was set. A full fence on both sides closes the race between
//! "publish index, then look at the request" and "request, then look at the
//! index" (at least one side sees the other's store).

use std::mem::MaybeUninit;
use std::sync::atomic::{fence, Ordering};

use crate::control::{ControlPage, Role};
use crate::error::{Result, VchanError};
use crate::event::EventChannel;
use crate::layout::{Orders, LIVE_CLOSED, LIVE_CONNECTED, LIVE_NOT_YET, NOTIFY_READ, NOTIFY_WRITE};
use crate::ring::{ReadRing, WriteRing};
use crate::shm::SharedMemory;

/// What the peer's `*_live` byte says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Server only: the client has not connected yet (`cli_live == 2`).
    NotYetConnected,
    Connected,
    /// The peer closed, or its process died and the kernel cleared the byte
    /// (unmap notify). A destroyed *domain* does not clear it: watch the
    /// domain separately.
    Closed,
}

impl PeerState {
    pub fn is_open(self) -> bool {
        self != PeerState::Closed
    }
}

/// One end of a vchan over some shared memory and an event channel.
pub struct Endpoint<E: EventChannel> {
    role: Role,
    ctrl: ControlPage,
    rx: ReadRing,
    tx: WriteRing,
    orders: Orders,
    events: E,
    closed: bool,
    /// Keeps the control page and ring mappings alive; never read. Declared
    /// last so it is dropped after everything that points into it.
    _memory: Vec<Box<dyn SharedMemory>>,
}

impl<E: EventChannel> std::fmt::Debug for Endpoint<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("role", &self.role)
            .field("orders", &self.orders)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<E: EventChannel> Endpoint<E> {
    /// Assemble an endpoint from set-up parts (see [`crate::setup`]).
    ///
    /// # Safety
    ///
    /// `ctrl`, `rx` and `tx` must point into memory owned by `memory`.
    pub(crate) unsafe fn from_parts(
        role: Role,
        ctrl: ControlPage,
        rx: ReadRing,
        tx: WriteRing,
        orders: Orders,
        events: E,
        memory: Vec<Box<dyn SharedMemory>>,
    ) -> Self {
        Endpoint {
            role,
            ctrl,
            rx,
            tx,
            orders,
            events,
            closed: false,
            _memory: memory,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The ring orders, as validated at set-up (never re-read from the page).
    pub fn orders(&self) -> Orders {
        self.orders
    }

    pub fn events(&self) -> &E {
        &self.events
    }

    /// Has [`close`](Self::close) been called on this end?
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The peer's liveness byte. Any non-zero value other than 2 counts as
    /// connected, as in libxenvchan (`is_open` tests for non-zero).
    pub fn peer_state(&self) -> PeerState {
        match self.ctrl.live(self.role.peer()).load(Ordering::Acquire) {
            LIVE_CLOSED => PeerState::Closed,
            LIVE_NOT_YET if self.role == Role::Server => PeerState::NotYetConnected,
            _ => PeerState::Connected,
        }
    }

    /// Ask the peer to kick us on `bit`, then order that request before the
    /// caller's re-read of the indices.
    fn request_notify(&self, bit: u8) {
        self.ctrl
            .notify(self.role.peer())
            .fetch_or(bit, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// After publishing an index: kick the peer if it asked for `bit`.
    fn send_notify(&self, bit: u8) -> Result<()> {
        fence(Ordering::SeqCst);
        let prev = self
            .ctrl
            .notify(self.role)
            .fetch_and(!bit, Ordering::SeqCst);
        if prev & bit != 0 {
            self.events.notify()?;
        }
        Ok(())
    }

    /// Bytes ready to read now; asks to be notified when more are written.
    pub fn data_ready(&self) -> Result<usize> {
        self.request_notify(NOTIFY_WRITE);
        self.rx.available()
    }

    /// Space to write now; asks to be notified when the peer reads.
    pub fn buffer_space(&self) -> Result<usize> {
        self.request_notify(NOTIFY_READ);
        self.tx.space()
    }

    /// Read what is there, up to `buf.len()` bytes, without waiting.
    /// `Ok(0)` (for a non-empty `buf`) means nothing is ready; a
    /// notification has then been requested, so the event channel fires when
    /// the peer writes. Data the peer wrote before closing stays readable.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: same layout; only initialised bytes are written into it.
        let buf = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        self.try_read_uninit(buf)
    }

    /// As [`try_read`](Self::try_read) into uninitialised memory: on `Ok(n)`
    /// the first `n` bytes of `buf` are initialised.
    pub fn try_read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.rx.available()? == 0 {
            // We will consume everything: tell us when you write more. Then
            // look again, in case the write landed before the request.
            self.request_notify(NOTIFY_WRITE);
            if self.rx.available()? == 0 {
                return Ok(0);
            }
        }
        let n = self.rx.read_uninit(buf)?;
        self.send_notify(NOTIFY_READ)?;
        Ok(n)
    }

    /// Write as much of `data` as fits now, without waiting. `Ok(0)` (for a
    /// non-empty `data`) means the ring is full; a notification has then been
    /// requested for when the peer reads. Fails once either side closed.
    pub fn try_write(&mut self, data: &[u8]) -> Result<usize> {
        if self.closed {
            return Err(VchanError::Closed);
        }
        if self.peer_state() == PeerState::Closed {
            return Err(VchanError::PeerClosed);
        }
        if data.is_empty() {
            return Ok(0);
        }
        if self.tx.space()? == 0 {
            self.request_notify(NOTIFY_READ);
            if self.tx.space()? == 0 {
                return Ok(0);
            }
        }
        let n = self.tx.write(data)?;
        self.send_notify(NOTIFY_WRITE)?;
        Ok(n)
    }

    /// Close this end: clear our `*_live` byte and kick the peer (it sees
    /// EOF after the data already in the ring). Idempotent. The mappings
    /// stay until the endpoint is dropped, so pending reads still work.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.ctrl
            .live(self.role)
            .store(LIVE_CLOSED, Ordering::SeqCst);
        self.events.notify()
    }

    /// Client only, at connect: announce ourselves and wake the server.
    pub(crate) fn announce_client(&self) -> Result<()> {
        self.ctrl
            .live(Role::Client)
            .store(LIVE_CONNECTED, Ordering::SeqCst);
        self.ctrl
            .notify(Role::Server)
            .store(NOTIFY_WRITE, Ordering::SeqCst);
        self.events.notify()
    }
}

impl<E: EventChannel> Drop for Endpoint<E> {
    fn drop(&mut self) {
        // Nothing useful to do with an event error while dropping.
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use crate::memory::pair;
    use crate::{PeerState, VchanError};

    #[test]
    fn server_sees_client_connect_and_close() {
        let mut p = pair(4096, 4096).unwrap();
        assert_eq!(p.server.peer_state(), PeerState::Connected);
        assert_eq!(p.client.peer_state(), PeerState::Connected);
        p.client.try_write(b"bye").unwrap();
        drop(p.client);
        assert_eq!(p.server.peer_state(), PeerState::Closed);
        // Data written before the close is still delivered...
        let mut buf = [0u8; 8];
        assert_eq!(p.server.try_read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"bye");
        // ...but nothing can be written to a closed peer.
        assert!(matches!(
            p.server.try_write(b"x"),
            Err(VchanError::PeerClosed)
        ));
        assert!(matches!(p.server.try_read(&mut buf), Ok(0)));
    }

    #[test]
    fn writing_after_local_close_fails() {
        let mut p = pair(0, 0).unwrap();
        p.server.close().unwrap();
        assert!(matches!(p.server.try_write(b"x"), Err(VchanError::Closed)));
        assert_eq!(p.client.peer_state(), PeerState::Closed);
        assert!(matches!(
            p.client.try_write(b"x"),
            Err(VchanError::PeerClosed)
        ));
    }

    #[test]
    fn notifications_only_when_requested() {
        let mut p = pair(4096, 4096).unwrap();
        let (s0, c0) = (p.server.events().sent(), p.client.events().sent());
        // The server asked (at set-up) to hear about the client's first write.
        p.client.try_write(b"a").unwrap();
        assert_eq!(p.client.events().sent(), c0 + 1);
        // Nobody asked again: more writes are silent.
        p.client.try_write(b"b").unwrap();
        p.client.try_write(b"c").unwrap();
        assert_eq!(p.client.events().sent(), c0 + 1);
        // The server drains the ring and finds it empty: that requests a kick.
        let mut buf = [0u8; 16];
        assert_eq!(p.server.try_read(&mut buf).unwrap(), 3);
        assert_eq!(p.server.try_read(&mut buf).unwrap(), 0);
        p.client.try_write(b"d").unwrap();
        assert_eq!(p.client.events().sent(), c0 + 2);
        // The client never asked to hear about reads: reads are silent.
        assert_eq!(p.server.events().sent(), s0);
    }

    #[test]
    fn full_ring_requests_a_read_notification() {
        let mut p = pair(0, 0).unwrap(); // 1 KiB client->server
        let c0 = p.server.events().sent();
        let data = [5u8; 1500];
        assert_eq!(p.client.try_write(&data).unwrap(), 1024);
        assert_eq!(p.client.try_write(&data).unwrap(), 0, "full");
        let mut buf = [0u8; 100];
        assert_eq!(p.server.try_read(&mut buf).unwrap(), 100);
        assert_eq!(p.server.events().sent(), c0 + 1, "reader kicked the writer");
        assert_eq!(p.client.try_write(&data).unwrap(), 100);
    }
}
