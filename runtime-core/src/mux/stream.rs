//! Stdio streams on top of the multiplexer, with credit flow control.

use std::sync::Arc;

use bytes::Bytes;

use super::{MuxError, Shared};
use crate::protocol::{frame::MAX_DATA_PAYLOAD, Frame, FrameKind, StreamId, INITIAL_WINDOW};

/// Credit is returned in batches of a quarter window: fewer frames, and the
/// sender never runs dry while the consumer keeps up.
const CREDIT_BATCH: usize = INITIAL_WINDOW as usize / 4;

/// Receives one stream. Dropping it before EOF resets the stream, so the
/// peer's writer fails like a write to a pipe with no reader.
pub struct StreamReader {
    shared: Arc<Shared>,
    id: StreamId,
    done: bool,
}

impl StreamReader {
    pub(super) fn new(shared: Arc<Shared>, id: StreamId) -> Self {
        Self {
            shared,
            id,
            done: false,
        }
    }

    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The next chunk, or `None` at end of stream.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, MuxError> {
        loop {
            let notify = {
                let mut st = self.shared.lock();
                let closed = st.closed.clone();
                let Some(rx) = st.rx.get_mut(&self.id) else {
                    return Ok(None);
                };
                if let Some(chunk) = rx.queue.pop_front() {
                    rx.queued -= chunk.len();
                    rx.unacked += chunk.len();
                    if rx.unacked >= CREDIT_BATCH {
                        let grant = std::mem::take(&mut rx.unacked);
                        self.shared.send(Frame::credit(self.id, grant as u32));
                    }
                    return Ok(Some(chunk));
                }
                if rx.eof {
                    self.done = true;
                    st.rx.remove(&self.id);
                    return Ok(None);
                }
                if let Some(reason) = closed {
                    return Err(MuxError::Closed(reason));
                }
                rx.notify.clone()
            };
            notify.notified().await;
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(rx) = st.rx.remove(&self.id) {
            if !rx.eof && !self.done {
                self.shared
                    .send(Frame::new(FrameKind::Reset, self.id, Bytes::new()));
            }
        }
    }
}

/// Sends one stream. Dropping it (or [`close`](Self::close)) sends EOF.
pub struct StreamWriter {
    shared: Arc<Shared>,
    id: StreamId,
}

impl StreamWriter {
    pub(super) fn new(shared: Arc<Shared>, id: StreamId) -> Self {
        Self { shared, id }
    }

    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Send all of `data`, waiting for credit as needed.
    pub async fn send(&self, mut data: Bytes) -> Result<(), MuxError> {
        while !data.is_empty() {
            let notify = {
                let mut st = self.shared.lock();
                if let Some(reason) = &st.closed {
                    return Err(MuxError::Closed(reason.clone()));
                }
                let Some(tx) = st.tx.get_mut(&self.id) else {
                    return Err(MuxError::Reset(self.id));
                };
                if tx.reset {
                    return Err(MuxError::Reset(self.id));
                }
                if tx.credit > 0 {
                    let n = data.len().min(MAX_DATA_PAYLOAD).min(tx.credit as usize);
                    tx.credit -= n as u64;
                    self.shared
                        .send(Frame::new(FrameKind::Data, self.id, data.split_to(n)));
                    continue;
                }
                tx.notify.clone()
            };
            notify.notified().await;
        }
        Ok(())
    }

    /// Send EOF: the reader sees the end of the stream after the data sent.
    pub fn close(self) {}
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(tx) = st.tx.remove(&self.id) {
            if !tx.reset && st.closed.is_none() {
                self.shared
                    .send(Frame::new(FrameKind::Eof, self.id, Bytes::new()));
            }
        }
    }
}
