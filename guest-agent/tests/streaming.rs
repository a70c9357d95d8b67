//! Flow control under load: a flood of stdout keeps memory bounded on both
//! sides, and a stalled reader does not hold up anyone's control traffic.
//! Run alone in its own test binary so VmHWM reflects this test only.

mod common;

use std::time::{Duration, Instant};

use common::*;

const MB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_stream_with_bounded_memory() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let total = 100 * MB;
    let mut io = a
        .create(
            "flood",
            spec(&["head", "-c", &total.to_string(), "/dev/zero"]),
            false,
        )
        .await;
    let hwm_before = vm_hwm_kib("self");
    let t0 = Instant::now();
    a.client.start("flood", None).await.unwrap();
    let mut stdout = io.stdout.take().unwrap();
    let mut got = 0u64;
    while let Some(chunk) = stdout.recv().await.unwrap() {
        got += chunk.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(got, total);
    assert_eq!(a.client.wait("flood", None).await.unwrap().code, 0);
    let host_growth = vm_hwm_kib("self").saturating_sub(hwm_before);
    let agent_hwm = vm_hwm_kib(&a.child.id().to_string());
    println!(
        "BENCH stdout-throughput: {:.0} MB/s over a UNIX socket ({} MB in {:.2}s); host peak growth {} KiB, agent VmHWM {} KiB",
        total as f64 / MB as f64 / secs,
        total / MB,
        secs,
        host_growth,
        agent_hwm
    );
    // Windows are 256 KiB per stream: neither side may buffer the flood.
    assert!(host_growth < 32 * 1024, "host grew by {host_growth} KiB");
    assert!(agent_hwm < 32 * 1024, "agent peak {agent_hwm} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_does_not_block_control_or_other_streams() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    // The init floods stdout and nobody reads it.
    let _flood = a
        .create(
            "stall",
            spec(&["sh", "-c", "while :; do head -c 1048576 /dev/zero; done"]),
            false,
        )
        .await;
    a.client.start("stall", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agent = a.child.id().to_string();
    let hwm = vm_hwm_kib(&agent);

    // Control traffic and another process's output still flow promptly.
    let t0 = Instant::now();
    a.client.ping().await.unwrap();
    let (ids, mut eio) = a
        .client
        .open_stdio(vxn_runtime_core::StdioRequest {
            stdin: false,
            stdout: true,
            stderr: false,
            terminal: false,
        })
        .unwrap();
    a.client
        .exec("stall", "side", spec(&["echo", "side-channel"]), ids)
        .await
        .unwrap();
    a.client.start("stall", Some("side")).await.unwrap();
    assert_eq!(collect(eio.stdout.take()).await, b"side-channel\n");
    assert_eq!(a.client.wait("stall", Some("side")).await.unwrap().code, 0);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "control traffic took {:?}",
        t0.elapsed()
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let hwm_after = vm_hwm_kib(&agent);
    assert!(
        hwm_after < 32 * 1024 && hwm_after <= hwm + 1024,
        "agent memory grew: {hwm} -> {hwm_after} KiB"
    );
    a.client
        .signal("stall", None, libc::SIGKILL, true)
        .await
        .unwrap();
}
