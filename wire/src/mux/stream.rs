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
            // Frames are queued only after the lock is released: queueing may
            // close the connection, which takes the lock.
            let (chunk, grant, notify) = {
                let mut st = self.shared.lock();
                let closed = st.closed.clone();
                let Some(rx) = st.rx.get_mut(&self.id) else {
                    return Ok(None);
                };
                if let Some(chunk) = rx.queue.pop_front() {
                    rx.queued -= chunk.len();
                    rx.unacked += chunk.len();
                    let grant =
                        (rx.unacked >= CREDIT_BATCH).then(|| std::mem::take(&mut rx.unacked));
                    (Some(chunk), grant, None)
                } else if rx.eof {
                    self.done = true;
                    st.rx.remove(&self.id);
                    return Ok(None);
                } else if let Some(reason) = closed {
                    return Err(MuxError::Closed(reason));
                } else {
                    (None, None, Some(rx.notify.clone()))
                }
            };
            if let Some(grant) = grant {
                self.shared.send(Frame::credit(self.id, grant as u32));
            }
            if let Some(chunk) = chunk {
                return Ok(Some(chunk));
            }
            if let Some(notify) = notify {
                notify.notified().await;
            }
        }
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        let reset = {
            let mut st = self.shared.lock();
            st.rx
                .remove(&self.id)
                .is_some_and(|rx| !rx.eof && !self.done)
        };
        if reset {
            self.shared
                .send(Frame::new(FrameKind::Reset, self.id, Bytes::new()));
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
            let (chunk, notify) = {
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
                    (Some(data.split_to(n)), None)
                } else {
                    (None, Some(tx.notify.clone()))
                }
            };
            if let Some(chunk) = chunk {
                self.shared
                    .send(Frame::new(FrameKind::Data, self.id, chunk));
            }
            if let Some(notify) = notify {
                notify.notified().await;
            }
        }
        Ok(())
    }

    /// Send EOF: the reader sees the end of the stream after the data sent.
    pub fn close(self) {}
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let eof = {
            let mut st = self.shared.lock();
            let closed = st.closed.is_some();
            st.tx
                .remove(&self.id)
                .is_some_and(|tx| !tx.reset && !closed)
        };
        if eof {
            self.shared
                .send(Frame::new(FrameKind::Eof, self.id, Bytes::new()));
        }
    }
}
