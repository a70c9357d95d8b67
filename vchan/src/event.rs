//! The event channel abstraction: how a vchan end kicks its peer and learns
//! that the peer kicked it. On Xen this is an interdomain event channel
//! (`/dev/xen/evtchn`); in tests, [`crate::memory::MemEvent`].

use std::task::{Context, Poll};

use crate::error::Result;

/// One end of an event channel bound to the peer.
///
/// Events carry no data and coalesce: several kicks before the receiver
/// looks may arrive as one. The protocol never relies on counting them, only
/// on "something may have changed, look at the shared page again".
pub trait EventChannel: Send + Sync + Unpin + 'static {
    /// Kick the peer (`IOCTL_EVTCHN_NOTIFY`).
    fn notify(&self) -> Result<()>;

    /// `Ready(Ok(()))` if at least one event arrived since the last time this
    /// returned ready (and re-arms the channel, as `libxenvchan_wait`
    /// unmasks the port); otherwise registers `cx`'s waker, to be woken when
    /// one arrives, and returns `Pending`. Only the most recent waker is kept.
    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Result<()>>;
}
