//! [`VchanStream`]: an [`Endpoint`] as a tokio `AsyncRead + AsyncWrite`,
//! driven by the event channel, so byte-stream protocols (vxn-wire's framed
//! multiplexer) run over a vchan unchanged.
//!
//! Reading and writing may be polled by different tasks (for example after
//! `tokio::io::split`), but there is one event channel and it keeps only one
//! waker. So the stream polls the channel with its own waker, which wakes
//! both the last reader and the last writer; each retries its operation, and
//! spurious wake-ups are harmless. A waiter registers *before* checking the
//! ring, and whoever consumes an event wakes the other side, so no event is
//! lost between the two.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::endpoint::{Endpoint, PeerState};
use crate::error::VchanError;
use crate::event::EventChannel;

/// Events handled in one poll before yielding to the executor, so a peer
/// that kicks the channel in a loop cannot monopolise the task.
const MAX_SPINS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

/// The last waker of each direction.
#[derive(Debug, Default)]
struct Waiters {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl Waiters {
    fn slot(&self, dir: Dir) -> &Mutex<Option<Waker>> {
        match dir {
            Dir::Read => &self.read,
            Dir::Write => &self.write,
        }
    }

    fn register(&self, dir: Dir, waker: &Waker) {
        let mut slot = self
            .slot(dir)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn wake_dir(&self, dir: Dir) {
        let w = self
            .slot(dir)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_dir(Dir::Read);
        self.wake_dir(Dir::Write);
    }
}

/// A vchan end as an async byte stream.
///
/// * Reads return what is in the ring (short reads), and `Ok(0)` (EOF) once
///   the peer has closed and the ring is drained.
/// * Writes copy what fits (short writes) and fail with `BrokenPipe` once
///   the peer (or this end) has closed.
/// * `flush` is a no-op: written bytes are already in the peer's ring.
/// * `shutdown` closes the whole vchan end (libxenvchan has no half-close):
///   the peer reads what was written, then EOF.
/// * A peer that breaks the ring indices fails reads/writes with
///   `InvalidData`.
pub struct VchanStream<E: EventChannel> {
    ep: Endpoint<E>,
    waiters: Arc<Waiters>,
    event_waker: Waker,
}

impl<E: EventChannel> std::fmt::Debug for VchanStream<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VchanStream").field("ep", &self.ep).finish()
    }
}

impl<E: EventChannel> VchanStream<E> {
    pub fn new(ep: Endpoint<E>) -> Self {
        let waiters = Arc::new(Waiters::default());
        let event_waker = Waker::from(waiters.clone());
        VchanStream {
            ep,
            waiters,
            event_waker,
        }
    }

    pub fn endpoint(&self) -> &Endpoint<E> {
        &self.ep
    }

    pub fn endpoint_mut(&mut self) -> &mut Endpoint<E> {
        &mut self.ep
    }

    pub fn into_endpoint(self) -> Endpoint<E> {
        self.ep
    }

    /// Run `op` until it returns `Some`, waiting for events in between.
    fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        dir: Dir,
        mut op: impl FnMut(&mut Endpoint<E>) -> Result<Option<T>, VchanError>,
    ) -> Poll<io::Result<T>> {
        for _ in 0..MAX_SPINS {
            // Register first: an event consumed by the other direction after
            // our check below will then still wake us.
            self.waiters.register(dir, cx.waker());
            if let Some(v) = op(&mut self.ep)? {
                return Poll::Ready(Ok(v));
            }
            let mut ecx = Context::from_waker(&self.event_waker);
            match self.ep.events().poll_event(&mut ecx) {
                Poll::Ready(Ok(())) => {
                    // This event may have been meant for the other direction.
                    let other = match dir {
                        Dir::Read => Dir::Write,
                        Dir::Write => Dir::Read,
                    };
                    self.waiters.wake_dir(other);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
        // A peer kicking without ever giving us progress: let others run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<E: EventChannel> AsyncRead for VchanStream<E> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let n = std::task::ready!(this.poll_op(cx, Dir::Read, |ep| {
            // Liveness before data: if the peer wrote and then closed, seeing
            // the close guarantees we also see the data.
            let open = ep.peer_state().is_open();
            // SAFETY: `try_read_uninit` only writes initialised bytes, and we
            // only mark as filled the `n` bytes it reports.
            let unfilled: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
            let n = ep.try_read_uninit(unfilled)?;
            Ok((n > 0 || !open).then_some(n))
        }))?;
        // SAFETY: the first `n` unfilled bytes were initialised by the read.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<E: EventChannel> AsyncWrite for VchanStream<E> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.poll_op(cx, Dir::Write, |ep| {
            let n = ep.try_write(data)?;
            Ok((n > 0).then_some(n))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().ep.close().map_err(io::Error::from))
    }
}

/// The peer's state, for callers holding only the stream.
impl<E: EventChannel> VchanStream<E> {
    pub fn peer_state(&self) -> PeerState {
        self.ep.peer_state()
    }
}
