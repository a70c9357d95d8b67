//! Setting up a vchan on Xen, libxenvchan's way: the server shares the pages
//! and an unbound event channel, and publishes `ring-ref` and
//! `event-channel` under `/local/domain/<srv>/data/vchan/<cli>/<port>`; the
//! client finds them there (waiting with a watch), maps the pages and binds
//! the event channel.

use super::evtchn::XenEvtchn;
use super::gntalloc::GntAlloc;
use super::gntdev::GntDev;
use super::xenbus::XenbusStream;
use crate::error::VchanError;
use crate::setup;
use crate::stream::VchanStream;
use crate::xenstore::{Access, Client, Perm, WatchEvents, XsError};

/// A vchan end over Xen's devices.
pub type XenVchan = VchanStream<XenEvtchn>;

/// xenstored's socket in dom0.
pub const XENSTORED_SOCKET: &str = "/run/xenstored/socket";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Xenstore(#[from] XsError),
    #[error(transparent)]
    Vchan(#[from] VchanError),
    #[error("{path}: {detail}")]
    BadEntry { path: String, detail: String },
    #[error("port name {0:?} is not a single xenstore path element")]
    BadPort(String),
    #[error("opening xenstore: {0}")]
    Open(std::io::Error),
}

/// Where a vchan's keys live.
pub fn vchan_path(server_domid: u32, client_domid: u32, port: &str) -> String {
    format!("/local/domain/{server_domid}/data/vchan/{client_domid}/{port}")
}

fn check_port(port: &str) -> Result<(), ConnectError> {
    let ok = !port.is_empty()
        && !port.starts_with('.')
        && port.len() <= 64
        && port
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConnectError::BadPort(port.into()))
    }
}

/// A xenstore connection: xenstored's socket if there is one (dom0), else
/// the xenbus device (a guest).
pub async fn open_xenstore() -> Result<(Client, WatchEvents), ConnectError> {
    if std::path::Path::new(XENSTORED_SOCKET).exists() {
        if let Ok(c) = Client::connect_unix(XENSTORED_SOCKET).await {
            return Ok(c);
        }
    }
    let s = XenbusStream::open().map_err(ConnectError::Open)?;
    Ok(Client::new(s))
}

/// This domain's id, as xenstore knows it (a relative read of `domid`).
pub async fn own_domid(xs: &Client) -> Result<u32, ConnectError> {
    let v = xs.read_string("domid").await?;
    v.trim().parse().map_err(|_| ConnectError::BadEntry {
        path: "domid".into(),
        detail: format!("{v:?} is not a domain id"),
    })
}

/// Server side (the guest): share rings of at least `left_min` bytes
/// (client→server) and `right_min` bytes (server→client) with
/// `client_domid`, and publish them. The stream is usable at once; the
/// client's side of the conversation starts when it connects.
pub async fn listen(
    xs: &Client,
    client_domid: u16,
    port: &str,
    left_min: usize,
    right_min: usize,
) -> Result<XenVchan, ConnectError> {
    check_port(port)?;
    let me = own_domid(xs).await?;
    let events = XenEvtchn::bind_unbound(client_domid)?;
    let event_port = events.port();
    let mut alloc = GntAlloc::open(client_domid, event_port)?;
    let (ep, ring_ref) = setup::server(&mut alloc, events, left_min, right_min)?;
    let path = vchan_path(me, client_domid.into(), port);
    // Readable by the client only; ring-ref first, as libxenvchan does.
    xs.write(&format!("{path}/ring-ref"), ring_ref.to_string().as_bytes())
        .await?;
    xs.write(
        &format!("{path}/event-channel"),
        event_port.to_string().as_bytes(),
    )
    .await?;
    let perms = [
        Perm::new(Access::None, me),
        Perm::new(Access::Read, client_domid.into()),
    ];
    for node in ["", "/ring-ref", "/event-channel"] {
        xs.set_perms(&format!("{path}{node}"), &perms).await?;
    }
    Ok(VchanStream::new(ep))
}

async fn read_u32(xs: &Client, path: &str) -> Result<Option<u32>, ConnectError> {
    match xs.read_string(path).await {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ConnectError::BadEntry {
                path: path.into(),
                detail: format!("{v:?} is not a number"),
            }),
        Err(e) if e.is_enoent() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Wait until the server has published the vchan (its ring and event
/// channel), without connecting: a warm pool's VM is ready when its agent
/// serves, and its first client is the container's shim, not the pool's.
pub async fn wait_published(
    xs: &Client,
    events: &mut WatchEvents,
    server_domid: u32,
    client_domid: u32,
    port: &str,
) -> Result<(), ConnectError> {
    published(xs, events, server_domid, client_domid, port)
        .await
        .map(drop)
}

/// The published vchan's (ring-ref, event channel), once there.
async fn published(
    xs: &Client,
    events: &mut WatchEvents,
    server_domid: u32,
    client_domid: u32,
    port: &str,
) -> Result<(u32, u32), ConnectError> {
    check_port(port)?;
    let path = vchan_path(server_domid, client_domid, port);
    let token = format!("vxn-vchan-{server_domid}-{port}");
    xs.watch(&path, &token).await?;
    let found = loop {
        let rr = read_u32(xs, &format!("{path}/ring-ref")).await?;
        let ev = read_u32(xs, &format!("{path}/event-channel")).await?;
        if let (Some(rr), Some(ev)) = (rr, ev) {
            break Ok((rr, ev));
        }
        // Any change under the path (or a spurious wake-up) re-reads.
        if events.next().await.is_none() {
            break Err(ConnectError::Xenstore(XsError::Closed(
                "xenstore connection closed while waiting for the vchan".into(),
            )));
        }
    };
    let _ = xs.unwatch(&path, &token).await;
    found
}

/// Client side (dom0): wait for `server_domid` to publish `port` for us
/// (`client_domid`), then map and bind. The caller bounds the wait.
pub async fn connect(
    xs: &Client,
    events: &mut WatchEvents,
    server_domid: u32,
    client_domid: u32,
    port: &str,
) -> Result<XenVchan, ConnectError> {
    let (ring_ref, remote_port) = published(xs, events, server_domid, client_domid, port).await?;
    let path = vchan_path(server_domid, client_domid, port);
    let server = u16::try_from(server_domid).map_err(|_| ConnectError::BadEntry {
        path: path.clone(),
        detail: format!("domain id {server_domid} is out of range"),
    })?;
    let events = XenEvtchn::bind_interdomain(server, remote_port)?;
    let mut mapper = GntDev::open(server, events.port())?;
    let ep = setup::client(&mut mapper, events, ring_ref)?;
    Ok(VchanStream::new(ep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_ports() {
        assert_eq!(
            vchan_path(7, 0, "vxn-agent"),
            "/local/domain/7/data/vchan/0/vxn-agent"
        );
        assert!(check_port("vxn-agent").is_ok());
        for bad in ["", "a/b", "..", ".x", "a b", &"x".repeat(65)] {
            assert!(check_port(bad).is_err(), "{bad:?}");
        }
    }
}
