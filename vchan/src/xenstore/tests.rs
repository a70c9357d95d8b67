//! Client tests against the fake xenstored ([`super::fake`]) and against
//! scripted, hostile servers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

use super::fake::Fake;
use super::wire::{encode_message, Header, MsgType, HEADER_LEN, PAYLOAD_MAX};
use super::{Access, Client, Perm, WatchEvent, WatchEvents, XsErrno, XsError};

const T: Duration = Duration::from_secs(5);

async fn next_event(ev: &mut WatchEvents) -> WatchEvent {
    timeout(T, ev.next()).await.unwrap().unwrap()
}

#[tokio::test]
async fn read_write_rm_round_trip() {
    let fake = Fake::new();
    let (c, _ev) = fake.connect(0);
    c.write("/a/b", b"hello").await.unwrap();
    assert_eq!(c.read("/a/b").await.unwrap(), b"hello");
    c.write("/a/b", b"").await.unwrap();
    assert_eq!(c.read_string("/a/b").await.unwrap(), "");
    c.mkdir("/a/c").await.unwrap();
    c.mkdir("/a/c").await.unwrap();
    let mut dir = c.directory("/a").await.unwrap();
    dir.sort();
    assert_eq!(dir, ["b", "c"]);
    c.rm("/a").await.unwrap();
    assert!(c.read("/a/b").await.unwrap_err().is_enoent());
    assert_eq!(
        c.get_domain_path(7).await.unwrap(),
        "/local/domain/7".to_string()
    );
}

#[tokio::test]
async fn errors_are_typed() {
    let fake = Fake::new();
    let (c, _ev) = fake.connect(0);
    let e = c.read("/nope").await.unwrap_err();
    assert!(matches!(e, XsError::Server(XsErrno::Enoent)), "{e}");
    assert!(c.rm("/nope").await.unwrap_err().is_enoent());
    let e = c.unwatch("/x", "t").await.unwrap_err();
    assert!(e.is_enoent(), "{e}");
    let e = c.set_perms("/local", &[]).await.unwrap_err();
    assert!(matches!(e, XsError::Server(XsErrno::Einval)), "{e}");
    // A guest may not write outside its own tree.
    let (g, _gev) = fake.connect(5);
    let e = g.write("/local/domain/0/x", b"1").await.unwrap_err();
    assert!(matches!(e, XsError::Server(XsErrno::Eacces)), "{e}");
}

#[tokio::test]
async fn oversized_and_nul_refused_locally() {
    let fake = Fake::new();
    let (c, _ev) = fake.connect(0);
    let big = vec![b'x'; PAYLOAD_MAX];
    let e = c.write("/big", &big).await.unwrap_err();
    assert!(matches!(e, XsError::PayloadTooLarge { .. }), "{e}");
    let e = c.read("/a\0b").await.unwrap_err();
    assert!(matches!(e, XsError::Nul("path")), "{e}");
    // The connection is still fine, and the largest legal payload passes.
    let fits = vec![b'y'; PAYLOAD_MAX - "/big\0".len()];
    c.write("/big", &fits).await.unwrap();
    assert_eq!(c.read("/big").await.unwrap().len(), fits.len());
}

/// The vchan flow: the guest publishes with permissions, dom0 watches until
/// the nodes appear, then the guest removes them.
#[tokio::test]
async fn vchan_publish_watch_and_permissions() {
    let fake = Fake::new();
    fake.add_domain(5);
    fake.add_domain(6);
    let (dom0, mut ev0) = fake.connect(0);
    let (guest, _gev) = fake.connect(5);
    let (other, _oev) = fake.connect(6);
    let base = format!("{}/data/vchan/0/1", guest.get_domain_path(5).await.unwrap());

    dom0.watch(&base, "vchan").await.unwrap();
    let first = next_event(&mut ev0).await;
    assert_eq!(
        (first.path.as_str(), first.token.as_str()),
        (base.as_str(), "vchan")
    );
    assert!(dom0
        .read(&format!("{base}/ring-ref"))
        .await
        .unwrap_err()
        .is_enoent());

    guest
        .write(&format!("{base}/ring-ref"), b"8")
        .await
        .unwrap();
    guest
        .write(&format!("{base}/event-channel"), b"17")
        .await
        .unwrap();
    let perms = [Perm::new(Access::None, 5), Perm::new(Access::Read, 0)];
    for leaf in ["", "/ring-ref", "/event-channel"] {
        guest
            .set_perms(&format!("{base}{leaf}"), &perms)
            .await
            .unwrap();
    }
    let ev = next_event(&mut ev0).await;
    assert_eq!(ev.path, format!("{base}/ring-ref"));
    assert_eq!(
        dom0.read_string(&format!("{base}/ring-ref")).await.unwrap(),
        "8"
    );
    assert_eq!(
        dom0.read_string(&format!("{base}/event-channel"))
            .await
            .unwrap(),
        "17"
    );
    // Domain 6 is neither owner nor listed: no access.
    let e = other.read(&format!("{base}/ring-ref")).await.unwrap_err();
    assert!(matches!(e, XsError::Server(XsErrno::Eacces)), "{e}");

    guest.rm(&base).await.unwrap();
    loop {
        if next_event(&mut ev0).await.path == base {
            break;
        }
    }
    assert!(dom0.read(&base).await.unwrap_err().is_enoent());
    dom0.unwatch(&base, "vchan").await.unwrap();
}

/// A scripted server: `script` gets the server side of the connection.
fn scripted<F, Fut>(script: F) -> (Client, WatchEvents)
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(script(theirs));
    Client::new(ours)
}

async fn read_request(s: &mut DuplexStream) -> (Header, Vec<u8>) {
    let mut hb = [0u8; HEADER_LEN];
    s.read_exact(&mut hb).await.unwrap();
    let h = Header::decode(&hb).unwrap();
    let mut p = vec![0u8; h.len as usize];
    s.read_exact(&mut p).await.unwrap();
    (h, p)
}

async fn send(s: &mut DuplexStream, t: u32, req_id: u32, payload: &[u8]) {
    let m = encode_message(t, req_id, 0, payload).unwrap();
    s.write_all(&m).await.unwrap();
}

#[tokio::test]
async fn watch_event_interleaved_with_pending_reply() {
    let (c, mut ev) = scripted(|mut s| async move {
        let (h, p) = read_request(&mut s).await;
        assert_eq!(h.msg_type, MsgType::Read as u32);
        assert_eq!(p, b"/k\0");
        send(&mut s, MsgType::WatchEvent as u32, 0, b"/w\0tok\0").await;
        send(&mut s, MsgType::WatchEvent as u32, 0, b"/w/x\0tok\0").await;
        send(&mut s, MsgType::Read as u32, h.req_id, b"v").await;
        let (h, _) = read_request(&mut s).await;
        send(&mut s, MsgType::Write as u32, h.req_id, b"OK\0").await;
        std::future::pending::<()>().await;
    });
    assert_eq!(c.read("/k").await.unwrap(), b"v");
    assert_eq!(next_event(&mut ev).await.path, "/w");
    assert_eq!(next_event(&mut ev).await.path, "/w/x");
    c.write("/k", b"w").await.unwrap();
}

/// A guest rewriting a watched path in a loop: the reader keeps serving
/// replies and keeps at most WATCH_QUEUE unread events, the rest dropped.
#[tokio::test]
async fn a_flood_of_watch_events_is_bounded() {
    let flood = 10 * super::WATCH_QUEUE;
    let (c, mut ev) = scripted(move |mut s| async move {
        let (h, _) = read_request(&mut s).await;
        for i in 0..flood {
            let p = format!("/w/{i}\0tok\0");
            send(&mut s, MsgType::WatchEvent as u32, 0, p.as_bytes()).await;
        }
        send(&mut s, MsgType::Read as u32, h.req_id, b"v").await;
        std::future::pending::<()>().await;
    });
    assert_eq!(c.read("/k").await.unwrap(), b"v");
    let mut got = 0;
    while timeout(Duration::from_millis(50), ev.next())
        .await
        .is_ok_and(|e| e.is_some())
    {
        got += 1;
    }
    assert_eq!(got, super::WATCH_QUEUE, "unread events kept");
}

#[tokio::test]
async fn cancelled_call_does_not_break_the_connection() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (c, _ev) = scripted(|mut s| async move {
        let (first, _) = read_request(&mut s).await;
        rx.await.unwrap();
        send(&mut s, MsgType::Read as u32, first.req_id, b"late").await;
        let (h, _) = read_request(&mut s).await;
        send(&mut s, MsgType::Read as u32, h.req_id, b"fresh").await;
        std::future::pending::<()>().await;
    });
    let r = timeout(Duration::from_millis(50), c.read("/slow")).await;
    assert!(r.is_err(), "the first call should time out");
    tx.send(()).unwrap();
    assert_eq!(c.read("/again").await.unwrap(), b"fresh");
}

/// Runs one read against a server that answers with `reply`, and checks
/// the call and every later one fail, and the events stream ends.
async fn hostile(reply: fn(u32) -> Vec<u8>) -> String {
    let (c, mut ev) = scripted(move |mut s| async move {
        let (h, _) = read_request(&mut s).await;
        let _ = s.write_all(&reply(h.req_id)).await;
        // Hang up too: the client must report the first problem, not EOF.
    });
    let e = timeout(T, c.read("/k")).await.unwrap().unwrap_err();
    let again = timeout(T, c.read("/k")).await.unwrap().unwrap_err();
    assert!(matches!(again, XsError::Closed(_)), "{again}");
    assert!(timeout(T, ev.next()).await.unwrap().is_none());
    e.to_string()
}

fn header(t: u32, req_id: u32, len: u32) -> Vec<u8> {
    Header {
        msg_type: t,
        req_id,
        tx_id: 0,
        len,
    }
    .encode()
    .to_vec()
}

#[tokio::test]
async fn hostile_servers_give_errors() {
    let e = hostile(|_| vec![0xff; HEADER_LEN]).await;
    assert!(e.contains("over the 4096-byte maximum"), "{e}");
    let e = hostile(|id| header(2, id, PAYLOAD_MAX as u32 + 1)).await;
    assert!(e.contains("4097"), "{e}");
    let e = hostile(|id| encode_message(2, id.wrapping_add(1), 0, b"v").unwrap()).await;
    assert!(e.contains("unknown req_id"), "{e}");
    let e = hostile(|id| encode_message(11, id, 0, b"OK\0").unwrap()).await;
    assert!(e.contains("reply of type 11"), "{e}");
    let e = hostile(|id| header(2, id, 10)).await; // and no payload
    assert!(e.contains("10-byte payload"), "{e}");
    let e = hostile(|_| encode_message(15, 0, 0, b"no-token").unwrap()).await;
    assert!(e.contains("watch event"), "{e}");
}

#[tokio::test]
async fn error_replies_map_to_errno() {
    let (c, _ev) = scripted(|mut s| async move {
        for name in ["EAGAIN", "EINVAL", "EWEIRD"] {
            let (h, _) = read_request(&mut s).await;
            send(
                &mut s,
                MsgType::Error as u32,
                h.req_id,
                format!("{name}\0").as_bytes(),
            )
            .await;
        }
        std::future::pending::<()>().await;
    });
    let e = c.read("/k").await.unwrap_err();
    assert!(matches!(e, XsError::Server(XsErrno::Eagain)), "{e}");
    let e = c.mkdir("/k").await.unwrap_err();
    assert!(matches!(e, XsError::Server(XsErrno::Einval)), "{e}");
    let e = c.rm("/k").await.unwrap_err();
    assert!(
        matches!(&e, XsError::Server(XsErrno::Other(n)) if n == "EWEIRD"),
        "{e}"
    );
}

#[tokio::test]
async fn server_hang_up_fails_pending_calls() {
    let (c, mut ev) = scripted(|mut s| async move {
        let _ = read_request(&mut s).await;
        drop(s);
    });
    let e = timeout(T, c.read("/k")).await.unwrap().unwrap_err();
    assert!(matches!(e, XsError::Closed(_)), "{e}");
    assert!(timeout(T, ev.next()).await.unwrap().is_none());
}
