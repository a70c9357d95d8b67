//! The connection multiplexer shared by shim and agent.
//!
//! One reader task decodes frames and routes them; one writer task encodes
//! and writes. Control traffic (requests, responses, events, credits) never
//! waits on stdio: a stalled stdout consumer only stops *its* stream, because
//! a sender may only send what the receiver granted (credit flow control).
//!
//! Memory bounds, so a hostile peer cannot grow ours:
//! * a frame is at most [`MAX_CONTROL_PAYLOAD`](crate::protocol::frame::MAX_CONTROL_PAYLOAD);
//!   a bigger control frame is skipped unbuffered and fails only its request;
//! * each receive stream buffers at most [`INITIAL_WINDOW`] bytes (more is a
//!   protocol error that closes the connection);
//! * data for streams we did not open is dropped;
//! * events are queued up to [`EVENT_QUEUE`] and dropped (counted) past that;
//! * credit a peer grants is capped at one window per stream, and the
//!   outgoing queue at [`MAX_QUEUED_BYTES`]: a peer that stops reading its
//!   channel is disconnected, never buffered for.

mod handshake;
mod stream;

pub use handshake::{handshake_agent, handshake_host, HandshakeError};
pub use stream::{StreamReader, StreamWriter};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::AbortHandle;
use tokio_util::codec::FramedRead;

use crate::protocol::{
    frame::{encode_frame, HEADER_LEN, MAX_CONTROL_PAYLOAD},
    from_json, guest_text, to_json, AgentError, Decoded, ErrorKind, Event, Frame, FrameCodec,
    FrameKind, ProtocolError, Request, ResponseBody, StreamId, INITIAL_WINDOW,
};

/// Events buffered for a slow consumer before new ones are dropped.
pub const EVENT_QUEUE: usize = 256;
/// Requests buffered for the server loop (agent side).
const REQUEST_QUEUE: usize = 64;
/// Bytes waiting to be written before the peer counts as not reading. Data
/// waits for credit (one window per stream at most), so a reading peer never
/// gets near this.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MuxError {
    #[error("agent connection closed: {0}")]
    Closed(Arc<str>),
    #[error("stream {0} was reset by the peer")]
    Reset(StreamId),
    #[error("stream {0} is already open")]
    StreamInUse(StreamId),
    #[error("malformed response: {0}")]
    BadResponse(Arc<str>),
    #[error("{what} of {len} bytes is over the {max}-byte message limit")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

/// A request received by the serving side; answer with [`Mux::respond`].
#[derive(Debug)]
pub struct IncomingRequest {
    pub id: u32,
    pub request: Result<Request, Arc<str>>,
}

/// Which side of the connection this is: it decides which frames are legal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The shim: sends requests, receives events.
    Host,
    /// The guest agent: serves requests, sends events.
    Agent,
}

/// What the reader task hands to the owner of the connection.
pub struct Incoming {
    pub requests: mpsc::Receiver<IncomingRequest>,
    pub events: mpsc::Receiver<Event>,
}

#[derive(Clone)]
pub struct Mux {
    shared: Arc<Shared>,
}

struct Shared {
    out: mpsc::UnboundedSender<Frame>,
    /// Bytes in `out` not yet written (bounded by [`MAX_QUEUED_BYTES`]).
    queued: AtomicUsize,
    /// Events dropped because nobody took them fast enough.
    dropped_events: AtomicU64,
    state: Mutex<State>,
    closed: watch::Sender<Option<Arc<str>>>,
}

type Pending = oneshot::Sender<Result<Bytes, MuxError>>;

#[derive(Default)]
struct State {
    next_request: u32,
    pending: HashMap<u32, Pending>,
    rx: HashMap<StreamId, RxState>,
    tx: HashMap<StreamId, TxState>,
    closed: Option<Arc<str>>,
    tasks: Vec<AbortHandle>,
}

struct RxState {
    queue: std::collections::VecDeque<Bytes>,
    queued: usize,
    /// Bytes handed to the consumer but not yet returned as credit.
    unacked: usize,
    eof: bool,
    notify: Arc<Notify>,
}

struct TxState {
    credit: u64,
    reset: bool,
    notify: Arc<Notify>,
}

impl Mux {
    /// Start the reader and writer tasks on an already handshaken stream.
    /// `leftover` holds bytes the handshake read past the hello.
    pub fn start<S>(io: S, leftover: BytesMut, role: Role) -> (Mux, Incoming)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (closed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            out: out_tx,
            queued: AtomicUsize::new(0),
            dropped_events: AtomicU64::new(0),
            state: Mutex::default(),
            closed,
        });
        let (req_tx, req_rx) = mpsc::channel(REQUEST_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);

        let mut framed = FramedRead::new(rd, FrameCodec::default());
        framed.read_buffer_mut().extend_from_slice(&leftover);
        let reader = tokio::spawn(read_loop(shared.clone(), framed, role, req_tx, ev_tx));
        let writer = tokio::spawn(write_loop(shared.clone(), out_rx, wr));
        shared.lock().tasks = vec![reader.abort_handle(), writer.abort_handle()];
        (
            Mux { shared },
            Incoming {
                requests: req_rx,
                events: ev_rx,
            },
        )
    }

    /// Send a request and wait for its response. A request or a response over
    /// the message limit fails this call only.
    pub async fn request(&self, req: &Request) -> Result<ResponseBody, MuxError> {
        let body = to_json(req);
        if body.len() > MAX_CONTROL_PAYLOAD {
            return Err(MuxError::TooLarge {
                what: "request",
                len: body.len(),
                max: MAX_CONTROL_PAYLOAD,
            });
        }
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.shared.lock();
            if let Some(reason) = &st.closed {
                return Err(MuxError::Closed(reason.clone()));
            }
            st.next_request = st.next_request.wrapping_add(1);
            let id = st.next_request;
            st.pending.insert(id, tx);
            id
        };
        let _guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        self.shared.send(Frame::new(FrameKind::Request, id, body));
        match rx.await {
            Ok(Ok(body)) => from_json::<ResponseBody>("response", &body)
                .map_err(|e| MuxError::BadResponse(guest_text(&e.to_string()).into())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Answer request `id` (serving side). An answer over the message limit
    /// becomes an error answer, so the requester is not left waiting.
    pub fn respond(&self, id: u32, body: &ResponseBody) {
        let mut payload = to_json(body);
        if payload.len() > MAX_CONTROL_PAYLOAD {
            let err: ResponseBody = Err(AgentError::new(
                ErrorKind::Internal,
                format!(
                    "the answer of {} bytes is over the {MAX_CONTROL_PAYLOAD}-byte message limit",
                    payload.len()
                ),
            ));
            payload = to_json(&err);
        }
        self.shared
            .send(Frame::new(FrameKind::Response, id, payload));
    }

    /// Bytes queued for the peer and not yet written (bounded by [`MAX_QUEUED_BYTES`]).
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// Requests sent and not yet answered.
    pub fn pending_requests(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Send an unsolicited event (agent side).
    pub fn send_event(&self, ev: &Event) {
        let payload = to_json(ev);
        if payload.len() <= MAX_CONTROL_PAYLOAD {
            self.shared.send(Frame::new(FrameKind::Event, 0, payload));
        }
    }

    /// Register a stream we will receive on; the peer may send at once.
    pub fn open_reader(&self, id: StreamId) -> Result<StreamReader, MuxError> {
        let mut st = self.shared.lock();
        if st.rx.contains_key(&id) {
            return Err(MuxError::StreamInUse(id));
        }
        st.rx.insert(
            id,
            RxState {
                queue: Default::default(),
                queued: 0,
                unacked: 0,
                eof: false,
                notify: Arc::new(Notify::new()),
            },
        );
        Ok(StreamReader::new(self.shared.clone(), id))
    }

    /// Register a stream we will send on, with the initial window of credit.
    pub fn open_writer(&self, id: StreamId) -> Result<StreamWriter, MuxError> {
        let mut st = self.shared.lock();
        if st.tx.contains_key(&id) {
            return Err(MuxError::StreamInUse(id));
        }
        st.tx.insert(
            id,
            TxState {
                credit: INITIAL_WINDOW as u64,
                reset: false,
                notify: Arc::new(Notify::new()),
            },
        );
        Ok(StreamWriter::new(self.shared.clone(), id))
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Resolves with the reason once the connection is closed.
    pub async fn closed(&self) -> Arc<str> {
        let mut rx = self.shared.closed.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return "connection dropped".into();
            }
        }
    }

    /// Close the connection: fail pending requests, wake every stream and
    /// stop the tasks (which drops the underlying channel).
    pub fn close(&self, reason: &str) {
        self.shared.close(reason.into());
    }

    fn closed_error(&self) -> MuxError {
        let st = self.shared.lock();
        MuxError::Closed(
            st.closed
                .clone()
                .unwrap_or_else(|| "connection dropped".into()),
        )
    }
}

/// Removes a pending request if the caller stops waiting (timeout, cancel).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().pending.remove(&self.id);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug; keep serving regardless.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self, reason: Arc<str>) {
        let reason: Arc<str> = guest_text(&reason).into();
        let tasks = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            tracing::debug!(%reason, "agent connection closed");
            st.closed = Some(reason.clone());
            st.pending.clear();
            for rx in st.rx.values() {
                rx.notify.notify_one();
            }
            for tx in st.tx.values() {
                tx.notify.notify_one();
            }
            std::mem::take(&mut st.tasks)
        };
        self.closed.send_replace(Some(reason));
        for t in tasks {
            t.abort();
        }
    }

    /// Queue a frame for the writer. Past [`MAX_QUEUED_BYTES`] the peer is not
    /// reading its channel: the connection is closed rather than buffered for.
    fn send(&self, frame: Frame) {
        let size = HEADER_LEN + frame.payload.len();
        let queued = self.queued.fetch_add(size, Ordering::SeqCst) + size;
        if queued > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            self.close(
                format!("the peer stopped reading its channel ({queued} bytes waiting to be sent)")
                    .into(),
            );
            return;
        }
        if self.out.send(frame).is_err() {
            self.queued.fetch_sub(size, Ordering::SeqCst);
        }
    }

    /// Count an event nobody took; log the first and then every 1000th.
    fn drop_event(&self) {
        let n = self.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n % 1000 == 0 {
            tracing::warn!(
                dropped = n,
                "event queue full or unread, dropping agent events"
            );
        }
    }
}

async fn read_loop<R>(
    shared: Arc<Shared>,
    mut framed: FramedRead<R, FrameCodec>,
    role: Role,
    requests: mpsc::Sender<IncomingRequest>,
    events: mpsc::Sender<Event>,
) where
    R: AsyncRead + Unpin,
{
    let reason: Arc<str> = loop {
        let frame = match framed.next().await {
            None => break "peer closed the channel".into(),
            Some(Err(e)) => break e.to_string().into(),
            Some(Ok(Decoded::Frame(f))) => f,
            Some(Ok(Decoded::Oversized { kind, id, len })) => {
                oversized(&shared, kind, id, len, role);
                continue;
            }
        };
        if let Err(e) = route(&shared, frame, role, &requests, &events).await {
            tracing::warn!(error = %e, "protocol violation from peer, closing");
            break e.to_string().into();
        }
    };
    shared.close(reason);
}

/// A control frame over the limit was skipped: fail just the exchange it belongs to.
fn oversized(shared: &Shared, kind: FrameKind, id: u32, len: usize, role: Role) {
    let too_large = |what| MuxError::TooLarge {
        what,
        len,
        max: MAX_CONTROL_PAYLOAD,
    };
    match (kind, role) {
        (FrameKind::Response, Role::Host) => {
            tracing::warn!(
                id,
                len,
                "the agent sent an oversized response; failing that request"
            );
            if let Some(tx) = shared.lock().pending.remove(&id) {
                let _ = tx.send(Err(too_large("response")));
            }
        }
        (FrameKind::Request, Role::Agent) => {
            let err: ResponseBody = Err(AgentError::new(
                ErrorKind::InvalidArgument,
                too_large("request").to_string(),
            ));
            shared.send(Frame::new(FrameKind::Response, id, to_json(&err)));
        }
        _ => shared.drop_event(),
    }
}

async fn route(
    shared: &Shared,
    frame: Frame,
    role: Role,
    requests: &mpsc::Sender<IncomingRequest>,
    events: &mpsc::Sender<Event>,
) -> Result<(), ProtocolError> {
    match (frame.kind, role) {
        (FrameKind::Request, Role::Agent) => {
            let request =
                from_json::<Request>("request", &frame.payload).map_err(|e| e.to_string().into());
            // Waits only if the server loop is REQUEST_QUEUE requests behind.
            let _ = requests
                .send(IncomingRequest {
                    id: frame.id,
                    request,
                })
                .await;
        }
        (FrameKind::Response, Role::Host) => {
            let waiter = shared.lock().pending.remove(&frame.id);
            match waiter {
                Some(tx) => {
                    let _ = tx.send(Ok(frame.payload));
                }
                None => tracing::debug!(id = frame.id, "response to no pending request"),
            }
        }
        (FrameKind::Event, Role::Host) => {
            let ev = from_json::<Event>("event", &frame.payload)?;
            if events.try_send(ev).is_err() {
                shared.drop_event();
            }
        }
        (FrameKind::Data, _) => {
            let mut st = shared.lock();
            if let Some(rx) = st.rx.get_mut(&frame.id) {
                let len = frame.payload.len();
                let window = INITIAL_WINDOW as usize;
                if rx.eof || rx.queued + rx.unacked + len > window {
                    return Err(ProtocolError::WindowExceeded {
                        stream: frame.id,
                        got: rx.queued + rx.unacked + len,
                        window,
                    });
                }
                if len > 0 {
                    rx.queued += len;
                    rx.queue.push_back(frame.payload);
                    rx.notify.notify_one();
                }
            }
        }
        (FrameKind::Eof, _) => {
            if let Some(rx) = shared.lock().rx.get_mut(&frame.id) {
                rx.eof = true;
                rx.notify.notify_one();
            }
        }
        (FrameKind::Credit, _) => {
            if let Some(tx) = shared.lock().tx.get_mut(&frame.id) {
                // A reading peer never has more than a window outstanding; more
                // would let a peer that stops reading make us queue without end.
                tx.credit = tx
                    .credit
                    .saturating_add(frame.credit_amount() as u64)
                    .min(INITIAL_WINDOW as u64);
                tx.notify.notify_one();
            }
        }
        (FrameKind::Reset, _) => {
            if let Some(tx) = shared.lock().tx.get_mut(&frame.id) {
                tx.reset = true;
                tx.notify.notify_one();
            }
        }
        (kind, _) => return Err(ProtocolError::Unexpected(kind)),
    }
    Ok(())
}

async fn write_loop<W>(shared: Arc<Shared>, mut out: mpsc::UnboundedReceiver<Frame>, mut wr: W)
where
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let result: Result<(), ProtocolError> = async {
        while let Some(frame) = out.recv().await {
            let mut taken = HEADER_LEN + frame.payload.len();
            encode_frame(&frame, &mut buf)?;
            // Coalesce whatever is already queued into one write.
            while buf.len() < 256 * 1024 {
                match out.try_recv() {
                    Ok(f) => {
                        taken += HEADER_LEN + f.payload.len();
                        encode_frame(&f, &mut buf)?;
                    }
                    Err(_) => break,
                }
            }
            wr.write_all(&buf).await?;
            wr.flush().await?;
            shared.queued.fetch_sub(taken, Ordering::SeqCst);
            buf.clear();
        }
        Ok(())
    }
    .await;
    let reason: Arc<str> = match result {
        Ok(()) => "connection shut down".into(),
        Err(e) => e.to_string().into(),
    };
    shared.close(reason);
}
