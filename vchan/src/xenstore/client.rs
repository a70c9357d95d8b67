//! An async xenstore client over any byte stream: the unix socket
//! `/run/xenstored/socket` in dom0, or `/dev/xen/xenbus` (in a guest, or dom0
//! without xenstored's socket).
//!
//! Two tasks own the stream. A writer task sends whole messages queued by
//! callers, and a reader task matches replies to requests by `req_id` and
//! passes watch events, which may arrive between any two replies, to the
//! [`WatchEvents`] receiver.
//!
//! **Cancellation.** Every call is cancel-safe as far as the connection is
//! concerned: a message is queued whole or not at all, and the reply to a
//! dropped call is read and discarded. The request itself may still take
//! effect on the server (a dropped `write` may still write). Timeouts are the
//! caller's: wrap calls in `tokio::time::timeout`.
//!
//! **Failure.** A server that breaks the protocol (a bad header, a payload
//! over the maximum, a reply to an unknown `req_id` or of the wrong type)
//! breaks the connection: every pending and later call fails with
//! [`XsError::Closed`] giving the reason, and [`WatchEvents::next`] returns `None`.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::demux::{lock, read_loop, write_loop, Reply, Shared, Slot};
use super::error::XsError;
use super::perm::Perm;
use super::wire::{split_strings, MsgType, Payload, WatchEvent};

/// How many watch events wait for the reader at most (each at most
/// xenstore's 4 KiB payload): more are dropped, never queued without bound.
pub const WATCH_QUEUE: usize = 64;

/// Watch events, in the order the server sent them: hints that something
/// changed, to be answered by reading it. Events past [`WATCH_QUEUE`]
/// unread ones are dropped (the reader is never blocked, so a caller
/// awaiting a reply cannot deadlock it, and a guest that rewrites a watched
/// path in a loop cannot grow dom0's memory).
pub struct WatchEvents(mpsc::Receiver<WatchEvent>);

impl WatchEvents {
    /// The next event, or `None` once the connection is closed or broken.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.0.recv().await
    }
}

struct Inner {
    queue: mpsc::UnboundedSender<Vec<u8>>,
    pending: Shared,
    next_id: AtomicU32,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer task stops when `queue` is dropped.
        self.reader.abort();
    }
}

/// A xenstore connection. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Removes or cancels a pending slot if the call is dropped before its reply.
struct SlotGuard<'a> {
    pending: &'a Shared,
    id: u32,
    armed: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(slot) = lock(self.pending).slots.get_mut(&self.id) {
                *slot = Slot::Cancelled;
            }
        }
    }
}

impl Client {
    /// Starts a client over `stream`. Must be called inside a tokio runtime.
    pub fn new<S>(stream: S) -> (Client, WatchEvents)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(stream);
        let pending: Shared = Arc::default();
        let (queue, queue_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::channel(WATCH_QUEUE);
        tokio::spawn(write_loop(wr, queue_rx, pending.clone()));
        let reader = tokio::spawn(read_loop(rd, events_tx, pending.clone()));
        let inner = Inner {
            queue,
            pending,
            next_id: AtomicU32::new(1),
            reader,
        };
        (
            Client {
                inner: Arc::new(inner),
            },
            WatchEvents(events_rx),
        )
    }

    /// Connects to xenstored's unix socket (dom0), e.g. `/run/xenstored/socket`.
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<(Client, WatchEvents), XsError> {
        let s = tokio::net::UnixStream::connect(path).await?;
        Ok(Client::new(s))
    }

    async fn request(&self, t: MsgType, payload: Payload) -> Reply {
        let inner = &*self.inner;
        let (tx, rx) = oneshot::channel();
        let (id, msg) = {
            let mut g = lock(&inner.pending);
            if let Some(reason) = &g.broken {
                return Err(XsError::Closed(reason.clone()));
            }
            // 0 is what watch events carry; skip it and any id still in use.
            let mut id = inner.next_id.fetch_add(1, Ordering::Relaxed);
            while id == 0 || g.slots.contains_key(&id) {
                id = inner.next_id.fetch_add(1, Ordering::Relaxed);
            }
            let msg = payload.into_message(t, id, 0)?;
            g.slots.insert(id, Slot::Waiting { expect: t, tx });
            (id, msg)
        };
        let mut guard = SlotGuard {
            pending: &inner.pending,
            id,
            armed: true,
        };
        if inner.queue.send(msg).is_err() {
            lock(&inner.pending).slots.remove(&id);
            guard.armed = false;
            return Err(XsError::Closed("the writer task has stopped".into()));
        }
        let reply = rx.await;
        guard.armed = false;
        match reply {
            Ok(r) => r,
            Err(_) => Err(XsError::Closed("the reader task has stopped".into())),
        }
    }

    fn path(p: &str) -> Result<Payload, XsError> {
        Payload::new().string("path", p)
    }

    /// `XS_READ`: the node's value.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.request(MsgType::Read, Self::path(path)?).await
    }

    /// [`read`](Self::read) as UTF-8.
    pub async fn read_string(&self, path: &str) -> Result<String, XsError> {
        String::from_utf8(self.read(path).await?)
            .map_err(|_| XsError::Protocol(format!("the value of {path} is not UTF-8")))
    }

    /// `XS_WRITE`: creates the node (and missing parents) or replaces its value.
    pub async fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        let p = Self::path(path)?.raw(value);
        self.request(MsgType::Write, p).await.map(drop)
    }

    /// `XS_MKDIR`: creates an empty node; succeeds if it exists.
    pub async fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.request(MsgType::Mkdir, Self::path(path)?)
            .await
            .map(drop)
    }

    /// `XS_RM`: removes the node and everything under it.
    pub async fn rm(&self, path: &str) -> Result<(), XsError> {
        self.request(MsgType::Rm, Self::path(path)?).await.map(drop)
    }

    /// `XS_DIRECTORY`: the names of the node's children.
    pub async fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        split_strings(&self.request(MsgType::Directory, Self::path(path)?).await?)
    }

    /// `XS_SET_PERMS`: the first entry is the owner and the default for
    /// unlisted domains (e.g. `b5`, then `r0`).
    pub async fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        let mut p = Self::path(path)?;
        for perm in perms {
            p = p.string("permission", &perm.to_string())?;
        }
        self.request(MsgType::SetPerms, p).await.map(drop)
    }

    /// `XS_GET_DOMAIN_PATH`: `/local/domain/<domid>`.
    pub async fn get_domain_path(&self, domid: u32) -> Result<String, XsError> {
        let p = Payload::new().string("domid", &domid.to_string())?;
        let reply = self.request(MsgType::GetDomainPath, p).await?;
        split_strings(&reply)?
            .into_iter()
            .next()
            .ok_or_else(|| XsError::Protocol("empty GET_DOMAIN_PATH reply".into()))
    }

    /// `XS_WATCH`: events for `path` and its descendants arrive on
    /// [`WatchEvents`] tagged with `token`. xenstored also fires one event
    /// right away. `@releaseDomain` fires when any domain dies.
    pub async fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        let p = Self::path(path)?.string("token", token)?;
        self.request(MsgType::Watch, p).await.map(drop)
    }

    /// `XS_UNWATCH`: removes a watch set with the same path and token.
    pub async fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        let p = Self::path(path)?.string("token", token)?;
        self.request(MsgType::Unwatch, p).await.map(drop)
    }
}
