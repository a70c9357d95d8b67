//! The agent's vchan, dom0 side: wait for the guest to publish it, map it,
//! and end it when the domain dies.
//!
//! A vchan has no dom0 process behind it, so nothing closes it when the
//! guest dies: a crashed or destroyed guest never clears its `srv_live` byte.
//! xenstored fires `@releaseDomain` when any domain shuts down or dies; on
//! each one we ask `xl` whether ours still runs. When it does not, the stream
//! reads EOF and fails writes, and the rings are unmapped at once (a dying
//! domain cannot finish dying while dom0 still maps its pages).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};
use vxn_vchan::xen::connect::{self, XenVchan};
use vxn_vchan::xenstore::{Client, WatchEvents};
use vxn_wire::boot::AGENT_VCHAN_PORT;

use super::Xl;
use crate::hypervisor::AgentStream;

const RELEASE_TOKEN: &str = "vxn-release";

/// Wait for domain `domid`'s agent to publish its vchan, then connect. The
/// caller bounds the wait (the agent's hello timeout).
pub async fn connect_agent(xl: Xl, domid: u32) -> io::Result<AgentStream> {
    let (xs, mut events) = connect::open_xenstore().await.map_err(io::Error::other)?;
    let stream = connect::connect(&xs, &mut events, domid, 0, AGENT_VCHAN_PORT)
        .await
        .map_err(io::Error::other)?;
    let dead = CancellationToken::new();
    let stopped = CancellationToken::new();
    xs.watch("@releaseDomain", RELEASE_TOKEN)
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(watch_death(
        xs,
        events,
        xl,
        domid,
        dead.clone(),
        stopped.clone(),
    ));
    Ok(Box::new(DeathAware::new(stream, dead, stopped)))
}

/// Wait until domain `domid`'s agent has published its vchan (it serves),
/// without connecting. The caller bounds the wait.
pub async fn agent_published(domid: u32) -> io::Result<()> {
    let (xs, mut events) = connect::open_xenstore().await.map_err(io::Error::other)?;
    connect::wait_published(&xs, &mut events, domid, 0, AGENT_VCHAN_PORT)
        .await
        .map_err(io::Error::other)
}

/// Cancels `dead` once the domain no longer runs; ends when the stream is
/// dropped (`stopped`).
async fn watch_death(
    // Kept for the watch's lifetime: dropping it would end the watch.
    _xs: Client,
    mut events: WatchEvents,
    xl: Xl,
    domid: u32,
    dead: CancellationToken,
    stopped: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = stopped.cancelled() => return,
            e = events.next() => e,
        };
        let Some(event) = event else {
            tracing::warn!(domid, "xenstore closed: no longer watching the domain");
            return;
        };
        if event.token != RELEASE_TOKEN {
            continue;
        }
        match xl.is_running(domid).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(domid, "domain has stopped: closing its vchan");
                dead.cancel();
                return;
            }
            Err(e) => tracing::warn!(domid, error = %e, "cannot tell whether the domain runs"),
        }
    }
}

/// The vchan stream, ended when the domain dies.
struct DeathAware {
    inner: Option<XenVchan>,
    // One future per direction: read and write may be polled by different
    // tasks, and a future keeps only its latest waker.
    dead_r: Pin<Box<WaitForCancellationFutureOwned>>,
    dead_w: Pin<Box<WaitForCancellationFutureOwned>>,
    _stop_watch: DropGuard,
}

impl DeathAware {
    fn new(inner: XenVchan, dead: CancellationToken, stopped: CancellationToken) -> Self {
        Self {
            inner: Some(inner),
            dead_r: Box::pin(dead.clone().cancelled_owned()),
            dead_w: Box::pin(dead.cancelled_owned()),
            _stop_watch: stopped.drop_guard(),
        }
    }

    /// Whether the domain is dead; unmaps the rings the first time.
    fn dead(&mut self, cx: &mut Context<'_>, read: bool) -> bool {
        let fut = if read {
            self.dead_r.as_mut()
        } else {
            self.dead_w.as_mut()
        };
        if fut.poll(cx).is_ready() {
            self.inner = None;
            return true;
        }
        self.inner.is_none()
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the domain has stopped")
}

impl AsyncRead for DeathAware {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.dead(cx, true) {
            return Poll::Ready(Ok(())); // EOF
        }
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for DeathAware {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.dead(cx, false) {
            return Poll::Ready(Err(gone()));
        }
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, data),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
