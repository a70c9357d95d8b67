//! An in-memory fake xenstored for tests: a tree of nodes with permission
//! lists, shared by any number of connections (each with its own domid)
//! over `tokio::io::duplex`, and watches that fire across connections.
//! It follows xenstored's rules loosely: dom0 may do anything, the first
//! permission entry is the owner and the default, and new nodes inherit
//! their parent's permissions with the creator as owner.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::fake_tree::{allowed, parent, under, Node, Res, Store, Watch};
use super::perm::{Access, Perm};
use super::wire::{encode_message, split_strings, Header, MsgType, HEADER_LEN};
use super::{Client, WatchEvents};

#[derive(Clone, Default)]
pub struct Fake {
    store: Arc<Mutex<Store>>,
    conns: Arc<Mutex<usize>>,
}

impl Fake {
    /// A store holding `/` and `/local/domain`, owned by dom0 and closed to others.
    pub fn new() -> Fake {
        let fake = Fake::default();
        let mut s = fake.lock();
        for p in ["/", "/local", "/local/domain"] {
            let perms = vec![Perm::new(Access::None, 0)];
            s.nodes.insert(
                p.into(),
                Node {
                    value: vec![],
                    perms,
                },
            );
        }
        drop(s);
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates `/local/domain/<domid>` owned by that domain, as the toolstack does.
    pub fn add_domain(&self, domid: u32) {
        let perms = vec![Perm::new(Access::None, domid)];
        let path = format!("/local/domain/{domid}");
        self.lock().nodes.insert(
            path,
            Node {
                value: vec![],
                perms,
            },
        );
    }

    /// A client connected as `domid`.
    pub fn connect(&self, domid: u32) -> (Client, WatchEvents) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let conn = {
            let mut c = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
            *c += 1;
            *c
        };
        tokio::spawn(self.clone().serve(theirs, domid, conn));
        Client::new(ours)
    }

    async fn serve(self, stream: tokio::io::DuplexStream, domid: u32, conn: usize) {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if wr.write_all(&m).await.is_err() {
                    return;
                }
            }
        });
        loop {
            let mut hb = [0u8; HEADER_LEN];
            if rd.read_exact(&mut hb).await.is_err() {
                break;
            }
            let Ok(h) = Header::decode(&hb) else { break };
            let mut payload = vec![0u8; h.len as usize];
            if rd.read_exact(&mut payload).await.is_err() {
                break;
            }
            let t = MsgType::from_u32(h.msg_type);
            let (ty, body) = match self.handle(t, &payload, domid, conn, &out) {
                Ok(b) => (h.msg_type, b),
                Err(e) => (MsgType::Error as u32, format!("{e}\0").into_bytes()),
            };
            let Ok(m) = encode_message(ty, h.req_id, h.tx_id, &body) else {
                break;
            };
            if out.send(m).is_err() {
                break;
            }
            // xenstored fires a new watch once, after its reply.
            if t == Some(MsgType::Watch) && ty != MsgType::Error as u32 {
                if let Ok(ev) = encode_message(MsgType::WatchEvent as u32, 0, 0, &payload) {
                    let _ = out.send(ev);
                }
            }
        }
        self.lock().watches.retain(|w| w.conn != conn);
    }

    fn handle(
        &self,
        t: Option<MsgType>,
        payload: &[u8],
        domid: u32,
        conn: usize,
        out: &mpsc::UnboundedSender<Vec<u8>>,
    ) -> Res {
        let ok = || Ok(b"OK\0".to_vec());
        let mut s = self.lock();
        if t == Some(MsgType::Write) {
            let nul = payload.iter().position(|&b| b == 0).ok_or("EINVAL")?;
            let path = std::str::from_utf8(&payload[..nul]).map_err(|_| "EINVAL")?;
            s.create(path, domid, Some(payload[nul + 1..].to_vec()))?;
            return ok();
        }
        let args = split_strings(payload).map_err(|_| "EINVAL")?;
        let arg = |i: usize| args.get(i).map(String::as_str).ok_or("EINVAL");
        match t.ok_or("EINVAL")? {
            MsgType::Read => {
                let n = s.nodes.get(arg(0)?).ok_or("ENOENT")?;
                if !allowed(&n.perms, domid, Access::Read) {
                    return Err("EACCES");
                }
                Ok(n.value.clone())
            }
            MsgType::Mkdir => s.create(arg(0)?, domid, None).and_then(|_| ok()),
            MsgType::Rm => {
                let path = arg(0)?;
                let n = s.nodes.get(path).ok_or("ENOENT")?;
                if !allowed(&n.perms, domid, Access::Write) || path == "/" {
                    return Err("EACCES");
                }
                s.nodes.retain(|p, _| !under(p, path));
                s.fire(path);
                ok()
            }
            MsgType::Directory => {
                let path = arg(0)?;
                s.nodes.get(path).ok_or("ENOENT")?;
                let mut list = Vec::new();
                for p in s.nodes.keys().filter(|p| parent(p) == Some(path)) {
                    list.extend_from_slice(p.rsplit('/').next().unwrap_or("").as_bytes());
                    list.push(0);
                }
                Ok(list)
            }
            MsgType::SetPerms => {
                let perms = args[1..]
                    .iter()
                    .map(|p| Perm::parse(p).map_err(|_| "EINVAL"))
                    .collect::<Result<Vec<_>, _>>()?;
                let n = s.nodes.get_mut(arg(0)?).ok_or("ENOENT")?;
                if perms.is_empty() {
                    return Err("EINVAL");
                }
                if domid != 0 && n.perms.first().map(|p| p.domid) != Some(domid) {
                    return Err("EACCES");
                }
                n.perms = perms;
                let path = arg(0)?.to_string();
                s.fire(&path);
                ok()
            }
            MsgType::GetDomainPath => Ok(format!("/local/domain/{}\0", arg(0)?).into_bytes()),
            MsgType::Watch => {
                let (path, token) = (arg(0)?.to_string(), arg(1)?.to_string());
                let out = out.clone();
                s.watches.push(Watch {
                    conn,
                    path,
                    token,
                    out,
                });
                ok()
            }
            MsgType::Unwatch => {
                let (path, token) = (arg(0)?, arg(1)?);
                let before = s.watches.len();
                s.watches
                    .retain(|w| !(w.conn == conn && w.path == path && w.token == token));
                if s.watches.len() == before {
                    return Err("ENOENT");
                }
                ok()
            }
            _ => Err("EINVAL"),
        }
    }
}
