//! vxn-wire's real protocol (hello handshake, framed multiplexer with credit
//! flow control, requests, events and stdio streams) over two in-memory
//! vchan ends, unchanged: the guest agent is the vchan server, the host
//! (shim) the client, as planned for Xen.

use std::time::Duration;

use bytes::Bytes;
use vxn_vchan::memory::pair;
use vxn_vchan::VchanStream;
use vxn_wire::mux::{handshake_agent, handshake_host, Mux, Role};
use vxn_wire::protocol::{AgentInfo, Event, Request, Response};

const TOTAL: usize = 16 << 20;

fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// A tiny agent: answers Ping, and on Start echoes stream 2 into stream 1
/// (a `cat` container) and reports an event.
async fn agent(io: VchanStream<vxn_vchan::memory::MemEvent>) {
    let mut io = io;
    let (_, leftover) = handshake_agent(&mut io, "vchan-test-agent").await.unwrap();
    let (mux, mut incoming) = Mux::start(io, leftover, Role::Agent);
    while let Some(req) = incoming.requests.recv().await {
        match req.request.unwrap() {
            Request::Ping => mux.respond(
                req.id,
                &Ok(Response::Pong(AgentInfo {
                    software: "vchan-test-agent".into(),
                    kernel: "none".into(),
                })),
            ),
            Request::Start { container_id, .. } => {
                let mut stdin = mux.open_reader(2).unwrap();
                let stdout = mux.open_writer(1).unwrap();
                mux.respond(req.id, &Ok(Response::Ok));
                let mux2 = mux.clone();
                tokio::spawn(async move {
                    while let Some(chunk) = stdin.recv().await.unwrap() {
                        stdout.send(chunk).await.unwrap();
                    }
                    drop(stdout); // EOF
                    mux2.send_event(&Event::Oom { container_id });
                });
            }
            other => panic!("unexpected request {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxn_wire_runs_unchanged_over_vchan() {
    // 64 KiB each way: orders 16/16, 16 granted pages per ring.
    let p = pair(64 << 10, 64 << 10).unwrap();
    assert_eq!(p.server.orders().left.get(), 16);
    let agent_task = tokio::spawn(agent(VchanStream::new(p.server)));

    let mut io = VchanStream::new(p.client);
    let (hello, leftover) = handshake_host(&mut io, "vchan-test-host", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(hello.software, "vchan-test-agent");
    let (mux, mut incoming) = Mux::start(io, leftover, Role::Host);

    match mux.request(&Request::Ping).await.unwrap() {
        Ok(Response::Pong(info)) => assert_eq!(info.kernel, "none"),
        other => panic!("ping: {other:?}"),
    }

    let mut stdout = mux.open_reader(1).unwrap();
    let start = Request::Start {
        container_id: "c1".into(),
        exec_id: None,
    };
    assert_eq!(mux.request(&start).await.unwrap(), Ok(Response::Ok));

    // Host -> agent -> host: TOTAL bytes through the echo, in odd chunks.
    let stdin = mux.open_writer(2).unwrap();
    let writer = tokio::spawn(async move {
        let mut pos = 0;
        let mut chunk = 1;
        while pos < TOTAL {
            let n = chunk.min(TOTAL - pos);
            let data: Vec<u8> = (pos..pos + n).map(byte_at).collect();
            stdin.send(Bytes::from(data)).await.unwrap();
            pos += n;
            chunk = chunk * 5 % 200_003 + 1;
        }
    });
    let mut got = 0usize;
    let reading = async {
        while let Some(chunk) = stdout.recv().await.unwrap() {
            for (i, b) in chunk.iter().enumerate() {
                assert_eq!(*b, byte_at(got + i), "byte {}", got + i);
            }
            got += chunk.len();
        }
    };
    tokio::time::timeout(Duration::from_secs(300), reading)
        .await
        .expect("echo stalled");
    assert_eq!(got, TOTAL);
    writer.await.unwrap();

    let ev = tokio::time::timeout(Duration::from_secs(20), incoming.events.recv())
        .await
        .unwrap();
    assert_eq!(
        ev,
        Some(Event::Oom {
            container_id: "c1".into()
        })
    );
    // A second request on the same connection still works.
    assert!(matches!(
        mux.request(&Request::Ping).await.unwrap(),
        Ok(Response::Pong(_))
    ));

    // Closing the host side ends the agent's request loop (vchan close seen).
    mux.close("test done");
    drop(mux);
    drop(incoming);
    tokio::time::timeout(Duration::from_secs(20), agent_task)
        .await
        .expect("agent did not see the host go away")
        .unwrap();
}
