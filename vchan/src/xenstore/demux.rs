//! The connection's two tasks: the writer sends queued messages whole, the
//! reader matches replies to pending calls by `req_id` and forwards watch
//! events. Any protocol violation breaks the connection for every caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::error::XsError;
use super::wire::{parse_error, Header, MsgType, WatchEvent, HEADER_LEN};

pub(super) type Reply = Result<Vec<u8>, XsError>;

pub(super) enum Slot {
    Waiting {
        expect: MsgType,
        tx: oneshot::Sender<Reply>,
    },
    /// The caller went away; its reply is read and dropped.
    Cancelled,
}

#[derive(Default)]
pub(super) struct Pending {
    pub(super) slots: HashMap<u32, Slot>,
    /// Why the connection broke, once it has.
    pub(super) broken: Option<String>,
}

pub(super) type Shared = Arc<Mutex<Pending>>;

pub(super) fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Marks the connection broken and fails every pending call.
fn break_connection(p: &Shared, reason: String) {
    let mut g = lock(p);
    if g.broken.is_none() {
        g.broken = Some(reason.clone());
    }
    for (_, slot) in g.slots.drain() {
        if let Slot::Waiting { tx, .. } = slot {
            let _ = tx.send(Err(XsError::Closed(reason.clone())));
        }
    }
}

pub(super) async fn write_loop<W: AsyncWrite>(
    wr: W,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Shared,
) {
    tokio::pin!(wr);
    while let Some(msg) = queue.recv().await {
        let res = async {
            wr.write_all(&msg).await?;
            wr.flush().await
        }
        .await;
        if let Err(e) = res {
            break_connection(&pending, format!("write failed: {e}"));
            return;
        }
    }
}

pub(super) async fn read_loop<R: AsyncRead>(
    rd: R,
    events: mpsc::Sender<WatchEvent>,
    pending: Shared,
) {
    tokio::pin!(rd);
    let reason = loop {
        match read_one(&mut rd, &events, &pending).await {
            Ok(()) => {}
            Err(reason) => break reason,
        }
    };
    break_connection(&pending, reason);
}

/// Reads and dispatches one message; `Err` is why the connection is over.
async fn read_one<R: AsyncRead + Unpin>(
    rd: &mut R,
    events: &mpsc::Sender<WatchEvent>,
    pending: &Shared,
) -> Result<(), String> {
    let mut hb = [0u8; HEADER_LEN];
    if let Err(e) = rd.read_exact(&mut hb).await {
        return Err(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the server closed the connection".into(),
            _ => format!("read failed: {e}"),
        });
    }
    let h = Header::decode(&hb).map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; h.len as usize];
    rd.read_exact(&mut payload)
        .await
        .map_err(|e| format!("reading a {}-byte payload: {e}", h.len))?;
    let t = MsgType::from_u32(h.msg_type);
    if t == Some(MsgType::WatchEvent) {
        let ev = WatchEvent::decode(&payload).map_err(|e| e.to_string())?;
        // Nobody listening is fine: the caller did not want events. A full
        // queue drops the event: a guest that rewrites a watched path in a
        // loop must not grow dom0's memory, and a full queue already wakes
        // the reader, who re-reads what it watches (events are hints).
        let _ = events.try_send(ev);
        return Ok(());
    }
    let slot = lock(pending).slots.remove(&h.req_id);
    match slot {
        None => Err(format!(
            "reply of type {} to unknown req_id {}",
            h.msg_type, h.req_id
        )),
        Some(Slot::Cancelled) => Ok(()),
        Some(Slot::Waiting { expect, tx }) => {
            let reply = match t {
                Some(MsgType::Error) => Err(XsError::Server(parse_error(&payload))),
                Some(t) if t == expect => Ok(payload),
                _ => {
                    let why = format!(
                        "reply of type {} to a {:?} request (req_id {})",
                        h.msg_type, expect, h.req_id
                    );
                    let _ = tx.send(Err(XsError::Protocol(why.clone())));
                    return Err(why);
                }
            };
            let _ = tx.send(reply);
            Ok(())
        }
    }
}
