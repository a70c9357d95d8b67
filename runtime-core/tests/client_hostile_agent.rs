//! A hostile or stuck peer against the host side: bounded memory, one bad
//! message fails one request, escaped text, timeouts, paging.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use vxn_runtime_core::client::{AgentClient, ClientError, Timeouts};
use vxn_wire::mux::*;
use vxn_wire::protocol::frame::{encode_frame, MAX_CONTROL_PAYLOAD};
use vxn_wire::protocol::*;

/// Host client over a socketpair whose other end is returned after the
/// handshake, for the test to play a (mis)behaving agent.
async fn client_and_raw_agent() -> (AgentClient, UnixStream) {
    let (host, mut agent) = UnixStream::pair().unwrap();
    let agent_side = tokio::spawn(async move {
        handshake_agent(&mut agent, "test-agent").await.unwrap();
        agent
    });
    let client = AgentClient::connect(host, Duration::from_secs(5))
        .await
        .unwrap();
    (client, agent_side.await.unwrap())
}

/// The same, with a real agent-side Mux serving requests with `answer`.
async fn client_and_agent(
    answer: impl Fn(Request) -> ResponseBody + Send + Sync + 'static,
) -> AgentClient {
    let (client, agent) = client_and_raw_agent().await;
    let (mux, mut incoming) = Mux::start(agent, BytesMut::new(), Role::Agent);
    tokio::spawn(async move {
        while let Some(req) = incoming.requests.recv().await {
            let body = match req.request {
                Ok(r) => answer(r),
                Err(e) => Err(AgentError::new(ErrorKind::InvalidArgument, e.to_string())),
            };
            mux.respond(req.id, &body);
        }
    });
    client
}

async fn write_frame(s: &mut UnixStream, f: Frame) {
    let mut b = BytesMut::new();
    encode_frame(&f, &mut b).unwrap();
    s.write_all(&b).await.unwrap();
}

#[tokio::test]
async fn credit_a_stuck_guest_grants_is_capped_at_one_window() {
    let (client, mut agent) = client_and_raw_agent().await;
    let writer = client.mux().open_writer(1).unwrap();
    // The guest grants 4 GiB of credit and never reads a byte.
    write_frame(&mut agent, Frame::credit(1, u32::MAX)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let flood = async {
        loop {
            if writer.send(Bytes::from(vec![0u8; 1 << 20])).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), flood).await;
    let queued = client.mux().queued_bytes();
    assert!(
        queued <= 2 * INITIAL_WINDOW as usize,
        "{queued} bytes queued for a guest that reads nothing"
    );
    drop(agent);
}

#[tokio::test]
async fn a_guest_that_stops_reading_is_disconnected_not_buffered_for() {
    let (client, agent) = client_and_raw_agent().await;
    // Requests of ~900 KiB each: 40 of them are past MAX_QUEUED_BYTES.
    let big = Request::Exec {
        container_id: "c".into(),
        exec_id: "e".into(),
        process: ProcessSpec {
            args: vec!["x".repeat(900 << 10)],
            ..Default::default()
        },
        stdio: Default::default(),
    };
    let mux = client.mux().clone();
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let (mux, big) = (mux.clone(), big.clone());
            tokio::spawn(async move { mux.request(&big).await })
        })
        .collect();
    let reason = tokio::time::timeout(Duration::from_secs(10), client.closed())
        .await
        .expect("the connection to a guest that reads nothing must be closed");
    assert!(reason.contains("stopped reading"), "{reason}");
    assert!(mux.queued_bytes() <= MAX_QUEUED_BYTES);
    for c in calls {
        assert!(c.await.unwrap().is_err());
    }
    drop(agent);
}

#[tokio::test]
async fn an_oversized_answer_fails_its_request_only() {
    let (client, mut agent) = client_and_raw_agent().await;
    let mux = client.mux().clone();
    let first = tokio::spawn({
        let mux = mux.clone();
        async move { mux.request(&Request::Ping).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Answer request 1 with 2 MiB: refused from the header, skipped unbuffered.
    let huge = MAX_CONTROL_PAYLOAD * 2;
    let mut b = BytesMut::new();
    b.extend_from_slice(&(huge as u32).to_be_bytes());
    b.extend_from_slice(&[FrameKind::Response as u8, 0, 0, 0, 1]);
    agent.write_all(&b).await.unwrap();
    agent.write_all(&vec![b'x'; huge]).await.unwrap();
    let e = first.await.unwrap().unwrap_err();
    assert!(
        matches!(
            e,
            MuxError::TooLarge {
                what: "response",
                ..
            }
        ),
        "{e}"
    );
    // The connection lives on: the next request is answered.
    let second = tokio::spawn(async move { mux.request(&Request::Ping).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ok: ResponseBody = Ok(Response::Ok);
    write_frame(
        &mut agent,
        Frame::new(
            FrameKind::Response,
            2,
            bytes::Bytes::from(serde_json::to_vec(&ok).unwrap()),
        ),
    )
    .await;
    assert_eq!(second.await.unwrap().unwrap(), Ok(Response::Ok));
}

#[tokio::test]
async fn oversized_requests_and_answers_fail_one_call() {
    let client = client_and_agent(|r| match r {
        Request::Stats { .. } => Ok(Response::Pids {
            processes: (0..100_000)
                .map(|pid| ProcessInfo {
                    pid,
                    exec_id: None,
                    command: "x".repeat(40),
                })
                .collect(),
            more: false,
        }),
        _ => Ok(Response::Ok),
    })
    .await;
    // Too big to send: refused here, the agent never sees it.
    let e = client
        .mux()
        .request(&Request::Exec {
            container_id: "c".into(),
            exec_id: "e".into(),
            process: ProcessSpec {
                env: vec!["A=".to_string() + &"b".repeat(2 << 20)],
                ..Default::default()
            },
            stdio: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            MuxError::TooLarge {
                what: "request",
                ..
            }
        ),
        "{e}"
    );
    // Too big to answer: the agent side turns it into an error answer.
    let e = client.stats("c", false).await.unwrap_err();
    assert!(e.to_string().contains("message limit"), "{e}");
    client.ping().await.unwrap_err(); // Ok is not a Pong: still answered, connection alive
    assert!(!client.mux().is_closed());
}

#[tokio::test]
async fn guest_error_text_is_escaped_and_capped() {
    let forged = format!(
        "no\ntime=\"x\" level=error msg=\"FORGED\"{}",
        "z".repeat(100_000)
    );
    let client =
        client_and_agent(move |_| Err(AgentError::new(ErrorKind::InvalidArgument, forged.clone())))
            .await;
    let msg = client.start("c", None).await.unwrap_err().to_string();
    assert!(
        !msg.contains('\n') && msg.len() < 1024,
        "{} bytes: {:.200}",
        msg.len(),
        msg
    );
    assert!(msg.starts_with("no\\ntime="), "{msg:.100}");
}

#[tokio::test]
async fn an_unanswered_call_times_out() {
    let (mut client, agent) = client_and_raw_agent().await;
    client.set_timeouts(Timeouts {
        create: Duration::from_millis(300),
        call: Duration::from_millis(300),
    });
    let t = std::time::Instant::now();
    let e = client.signal("c", None, 15, false).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Timeout { op: "signal", .. }),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    // A timed-out request leaves nothing pending behind.
    assert!(client.mux().pending_requests() == 0);
    drop(agent);
}

#[tokio::test]
async fn pids_of_any_count_come_in_pages_and_a_stuck_cursor_ends() {
    let all: Vec<u32> = (1..=5000).collect();
    let client = client_and_agent(move |r| match r {
        Request::ListPids { after, .. } => {
            let page: Vec<ProcessInfo> = all
                .iter()
                .filter(|p| after.map_or(true, |a| **p > a))
                .take(1000)
                .map(|&pid| ProcessInfo {
                    pid,
                    exec_id: None,
                    command: String::new(),
                })
                .collect();
            let more = page.last().is_some_and(|l| l.pid < 5000);
            Ok(Response::Pids {
                processes: page,
                more,
            })
        }
        _ => Ok(Response::Ok),
    })
    .await;
    let got = client.list_pids("c").await.unwrap();
    assert_eq!(got.len(), 5000);
    assert!(got.windows(2).all(|w| w[0].pid < w[1].pid));

    // A guest that says "more" without moving its cursor does not loop us forever.
    let liar = client_and_agent(|_| {
        Ok(Response::Pids {
            processes: vec![ProcessInfo {
                pid: 7,
                exec_id: None,
                command: String::new(),
            }],
            more: true,
        })
    })
    .await;
    let got = tokio::time::timeout(Duration::from_secs(5), liar.list_pids("c"))
        .await
        .expect("a stuck cursor must end the paging")
        .unwrap();
    assert!(got.len() <= 2);
}
