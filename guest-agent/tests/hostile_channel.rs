//! The agent and the host client face bytes they cannot trust: malformed
//! frames close the connection cleanly, never panic, never allocate the
//! declared size.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use vxn_wire::protocol::frame::encode_frame;
use vxn_wire::protocol::{Frame, FrameKind, Hello, PREAMBLE, PROTOCOL_NAME, PROTOCOL_VERSION};

/// Start an agent and do the handshake by hand; returns the raw socket.
fn raw_agent() -> (
    std::process::Child,
    std::os::unix::net::UnixStream,
    tempfile::TempDir,
) {
    let state = tempfile::tempdir().unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let child = agent_command(state.path(), theirs.into()).spawn().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut s = ours;
    read_hello(&mut s);
    let hello = Hello {
        protocol: PROTOCOL_NAME.into(),
        version: PROTOCOL_VERSION,
        software: "hostile-test".into(),
        ack: false,
        error: None,
    };
    s.write_all(&hello_bytes(&hello)).unwrap();
    // Skip repeated hellos until the ack.
    while !read_hello(&mut s).ack {}
    (child, s, state)
}

fn hello_bytes(h: &Hello) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.extend_from_slice(PREAMBLE);
    encode_frame(
        &Frame::new(FrameKind::Hello, 0, serde_json::to_vec(h).unwrap()),
        &mut b,
    )
    .unwrap();
    b.to_vec()
}

fn read_hello(s: &mut std::os::unix::net::UnixStream) -> Hello {
    let mut pre = [0u8; 8];
    s.read_exact(&mut pre).unwrap();
    assert_eq!(&pre, PREAMBLE);
    let mut hdr = [0u8; 9];
    s.read_exact(&mut hdr).unwrap();
    let len = u32::from_be_bytes(hdr[..4].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// The agent must drop the connection and exit on its own, cleanly.
fn expect_clean_close(mut child: std::process::Child, mut s: std::os::unix::net::UnixStream) {
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest); // EOF once the agent drops the channel
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "agent exited with {status:?} (a panic aborts)"
    );
}

/// Read one frame header and body: (kind, id, payload).
fn read_frame(s: &mut std::os::unix::net::UnixStream) -> (u8, u32, String) {
    let mut hdr = [0u8; 9];
    s.read_exact(&mut hdr).unwrap();
    let len = u32::from_be_bytes(hdr[..4].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (
        hdr[4],
        u32::from_be_bytes(hdr[5..9].try_into().unwrap()),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[test]
fn an_oversized_request_fails_alone_and_is_never_buffered() {
    if !require_root() {
        return;
    }
    let (child, mut s, _state) = raw_agent();
    // 2 MiB of request: refused from its header, skipped unbuffered, answered
    // with an error; the connection lives on.
    let big = 2 << 20;
    let mut b = Vec::new();
    b.extend_from_slice(&(big as u32).to_be_bytes());
    b.extend_from_slice(&[FrameKind::Request as u8, 0, 0, 0, 5]);
    b.extend_from_slice(&vec![b' '; big]);
    let mut ping = BytesMut::new();
    encode_frame(
        &Frame::new(FrameKind::Request, 6, &br#"{"op":"ping"}"#[..]),
        &mut ping,
    )
    .unwrap();
    b.extend_from_slice(&ping);
    s.write_all(&b).unwrap();
    let (kind, id, body) = read_frame(&mut s);
    assert_eq!((kind, id), (FrameKind::Response as u8, 5));
    assert!(body.contains("message limit"), "{body}");
    let (_, id, body) = read_frame(&mut s);
    assert_eq!(id, 6);
    assert!(body.contains("pong"), "{body}");
    // Declaring 4 GiB allocates nothing: the error comes from the header alone.
    s.write_all(&[0xff, 0xff, 0xff, 0xff, FrameKind::Request as u8, 0, 0, 0, 7])
        .unwrap();
    let (_, id, body) = read_frame(&mut s);
    assert_eq!(id, 7);
    assert!(body.contains("message limit"), "{body}");
    drop(s);
    let mut child = child;
    assert!(child.wait().unwrap().success());
}

#[test]
fn unknown_frame_kind_closes_the_connection() {
    if !require_root() {
        return;
    }
    let (child, mut s, _state) = raw_agent();
    s.write_all(&[0, 0, 0, 3, 0x99, 0, 0, 0, 1, 1, 2, 3])
        .unwrap();
    expect_clean_close(child, s);
}

#[test]
fn malformed_request_gets_an_error_and_the_connection_survives() {
    if !require_root() {
        return;
    }
    let (child, mut s, _state) = raw_agent();
    let mut b = BytesMut::new();
    encode_frame(
        &Frame::new(FrameKind::Request, 7, &b"{not json"[..]),
        &mut b,
    )
    .unwrap();
    encode_frame(
        &Frame::new(FrameKind::Request, 8, &br#"{"op":"ping"}"#[..]),
        &mut b,
    )
    .unwrap();
    s.write_all(&b).unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut hdr = [0u8; 9];
        s.read_exact(&mut hdr).unwrap();
        let len = u32::from_be_bytes(hdr[..4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        answers.push((
            u32::from_be_bytes(hdr[5..9].try_into().unwrap()),
            String::from_utf8(body).unwrap(),
        ));
    }
    answers.sort();
    assert_eq!(answers[0].0, 7);
    assert!(
        answers[0].1.contains("malformed request"),
        "{}",
        answers[0].1
    );
    assert!(answers[1].1.contains("pong"), "{}", answers[1].1);
    // Data beyond the window the agent granted is a protocol violation.
    drop(s);
    let mut child = child;
    assert!(child.wait().unwrap().success());
}

#[test]
fn random_garbage_never_panics_the_agent() {
    if !require_root() {
        return;
    }
    // A deterministic xorshift stream of bytes, in a few shapes.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for round in 0..8 {
        let (child, mut s, _state) = raw_agent();
        let mut junk = vec![0u8; 4096];
        for b in junk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        if round % 2 == 0 {
            // Plausible header with a small length, then garbage.
            junk[..4].copy_from_slice(&16u32.to_be_bytes());
            junk[4] = [0x02, 0x10, 0x12, 0x13][round / 2 % 4];
        }
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        expect_clean_close(child, s);
    }
}

#[tokio::test]
async fn incompatible_agent_version_is_a_clear_error() {
    // A fake agent speaking protocol v99: the host must refuse it by name.
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let fake = Hello {
        protocol: PROTOCOL_NAME.into(),
        version: 99,
        software: "vxn-agent 9.9".into(),
        ack: false,
        error: None,
    };
    let bytes = hello_bytes(&fake);
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut t = theirs;
        t.write_all(b"boot noise\r\n").await.unwrap();
        t.write_all(&bytes).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let e = vxn_runtime_core::AgentClient::connect(ours, Duration::from_secs(5))
        .await
        .err()
        .expect("must fail");
    let msg = e.to_string();
    assert!(
        msg.contains("v99") && msg.contains("vxn-agent 9.9"),
        "{msg}"
    );
    writer.abort();
}
