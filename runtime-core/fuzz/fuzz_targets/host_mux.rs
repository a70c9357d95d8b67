//! Arbitrary bytes as a guest's frames after a good handshake, into the host
//! side of the connection while the host has requests, a Wait and stdio streams
//! in flight: the host must never panic, never hang (every call ends: answered,
//! failed, or timed out), and keep its memory bounded.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;
use vxn_runtime_core::client::Timeouts;
use vxn_wire::mux::handshake_agent;
use vxn_runtime_core::{AgentClient, StdioRequest};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let (host, mut guest) = tokio::io::duplex(1 << 16);
        let data = data.to_vec();
        let feeder = tokio::spawn(async move {
            if handshake_agent(&mut guest, "fuzz-guest").await.is_err() {
                return;
            }
            // Split the input at its first byte so frames straddle writes.
            let split = data.first().copied().unwrap_or(1).max(1) as usize;
            for chunk in data.chunks(split) {
                if guest.write_all(chunk).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            // Keep the channel open a while: the host must time out, not hang.
            tokio::time::sleep(Duration::from_secs(120)).await;
        });
        let Ok(mut client) = AgentClient::connect(host, Duration::from_secs(5)).await else {
            return;
        };
        client.set_timeouts(Timeouts {
            create: Duration::from_secs(2),
            call: Duration::from_secs(2),
        });
        let (_ids, mut io) = client
            .open_stdio(StdioRequest {
                stdin: true,
                stdout: true,
                stderr: true,
                terminal: false,
            })
            .unwrap();
        let stdin = io.stdin.take().unwrap();
        let mut stdout = io.stdout.take().unwrap();
        let work = async {
            let _ = tokio::join!(
                client.ping(),
                client.list_pids("c"),
                client.stats("c", false),
                client.signal("c", None, 9, false),
                tokio::time::timeout(Duration::from_secs(5), client.wait("c", None)),
                stdin.send(Bytes::from_static(&[0u8; 70_000])),
                // A guest may hold stdout open for good, as a running process does;
                // the shim bounds that by the exit's drain and by Delete.
                tokio::time::timeout(Duration::from_secs(5), async {
                    while let Ok(Some(_)) = stdout.recv().await {}
                }),
            );
        };
        // Virtual time: the timeouts above end every call.
        tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .expect("the host hung on a guest's bytes");
        client.close();
        feeder.abort();
    });
});
