//! The async adapter over two in-memory vchan ends: blocking and draining,
//! wraparound at volume, hostile peers, and close detection.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vxn_vchan::layout::offset;
use vxn_vchan::memory::{pair, InMemoryPair};
use vxn_vchan::{EventChannel, PeerState, VchanStream};

const PATTERN_LEN: usize = 65_521; // prime: chunk boundaries never line up with it

fn pattern() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Write `total` bytes of the pattern, in chunks of varying size.
async fn send_pattern<W: AsyncWriteExt + Unpin>(mut w: W, total: usize) -> W {
    let pat = pattern();
    let mut pos = 0usize;
    let mut chunk = 1usize;
    while pos < total {
        let start = pos % PATTERN_LEN;
        let n = chunk.min(PATTERN_LEN - start).min(total - pos);
        w.write_all(&pat[start..start + n]).await.unwrap();
        pos += n;
        chunk = chunk * 7 % 100_003 + 1;
    }
    w.flush().await.unwrap();
    w
}

/// Read until EOF or `limit` bytes, checking every byte against the
/// pattern; returns the count.
async fn check_pattern<R: AsyncReadExt + Unpin>(mut r: R, limit: usize) -> usize {
    let pat = pattern();
    let mut buf = vec![0u8; 50_000];
    let mut pos = 0usize;
    let mut next = 1usize;
    loop {
        let want = next;
        let want = want.min(limit - pos);
        if want == 0 {
            return pos;
        }
        let n = r.read(&mut buf[..want]).await.unwrap();
        if n == 0 {
            return pos;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pat[(pos + i) % PATTERN_LEN], "byte {}", pos + i);
        }
        pos += n;
        next = next * 13 % 49_999 + 1;
    }
}

fn streams(left_min: usize, right_min: usize) -> (InMemoryPair, u32) {
    let p = pair(left_min, right_min).unwrap();
    let r = p.ring_ref;
    (p, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_through_multi_page_rings() {
    const TOTAL: usize = 64 << 20;
    // Left (client->server) order 14 (4 pages), right order 12 (1 page).
    let p = pair(16 << 10, 4 << 10).unwrap();
    assert_eq!(p.server.orders().left.get(), 14);
    assert_eq!(p.server.orders().right.get(), 12);
    let (srv_r, srv_w) = tokio::io::split(VchanStream::new(p.server));
    let (cli_r, cli_w) = tokio::io::split(VchanStream::new(p.client));
    // Both directions at once, each half in its own task: the reader and the
    // writer of one end share one event channel. (No shutdown until both
    // directions are done: a vchan has no half-close.)
    let up = tokio::spawn(send_pattern(cli_w, TOTAL));
    let down = tokio::spawn(send_pattern(srv_w, TOTAL));
    let got_up = tokio::spawn(check_pattern(srv_r, TOTAL));
    let got_down = tokio::spawn(check_pattern(cli_r, TOTAL));
    let t = Duration::from_secs(300);
    assert_eq!(
        tokio::time::timeout(t, got_up).await.unwrap().unwrap(),
        TOTAL
    );
    assert_eq!(
        tokio::time::timeout(t, got_down).await.unwrap().unwrap(),
        TOTAL
    );
    up.await.unwrap();
    down.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_page_rings_wrap_many_times() {
    // The smallest layout: 1 KiB + 2 KiB inside the control page.
    let p = pair(0, 0).unwrap();
    assert_eq!(p.client.orders().left.get(), 10);
    let reader = tokio::spawn(check_pattern(VchanStream::new(p.server), usize::MAX));
    let mut w = send_pattern(VchanStream::new(p.client), 3 << 20).await;
    w.shutdown().await.unwrap();
    assert_eq!(reader.await.unwrap(), 3 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ring_blocks_the_writer_until_the_reader_drains_it() {
    let (p, _) = streams(4096, 4096);
    let mut server = VchanStream::new(p.server);
    let mut client = VchanStream::new(p.client);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let writer = tokio::spawn(async move {
        client.write_all(&data).await.unwrap();
        client
    });
    // The ring holds 4096 bytes: the writer cannot finish on its own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !writer.is_finished(),
        "10000 bytes went into a 4096-byte ring"
    );
    let mut got = vec![0u8; 10_000];
    server.read_exact(&mut got).await.unwrap();
    let _client = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("writer still blocked after the ring drained")
        .unwrap();
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_is_woken_by_a_write() {
    let (p, _) = streams(4096, 4096);
    let mut server = VchanStream::new(p.server);
    let mut client = VchanStream::new(p.client);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await.unwrap();
        buf
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.write_all(b"hello").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_producer_index_fails_the_read() {
    let (p, rref) = streams(4096, 4096);
    let page = p.grants.peek(rref).unwrap();
    let mut client = VchanStream::new(p.client);
    let server = p.server;
    // The "server" publishes a producer index two rings ahead of the consumer.
    // SAFETY: an aligned u32 inside the control page, which `p.grants` keeps.
    let right_prod = unsafe {
        page.add(offset::RIGHT + offset::PROD)
            .cast::<AtomicU32>()
            .as_ref()
    };
    right_prod.store(8192 + 1, Ordering::SeqCst);
    server.events().notify().unwrap();
    let mut buf = [0u8; 16];
    let err = client.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_consumer_index_fails_the_write() {
    let (p, rref) = streams(4096, 4096);
    let page = p.grants.peek(rref).unwrap();
    let mut server = VchanStream::new(p.server);
    // The client claims to have consumed bytes never produced.
    // SAFETY: as above.
    let right_cons = unsafe {
        page.add(offset::RIGHT + offset::CONS)
            .cast::<AtomicU32>()
            .as_ref()
    };
    right_cons.store(100, Ordering::SeqCst);
    let err = server.write(b"x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    drop(p.client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_close_gives_eof_after_the_data_and_broken_pipe_on_write() {
    let (p, _) = streams(4096, 4096);
    let mut server = VchanStream::new(p.server);
    let mut client = VchanStream::new(p.client);
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        server.read_to_end(&mut all).await.unwrap();
        (server, all)
    });
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let (mut server, all) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("reader not woken by the close")
        .unwrap();
    assert_eq!(all, b"last words");
    assert_eq!(server.peer_state(), PeerState::Closed);
    let err = server.write(b"anyone?").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_crash_cleared_live_byte_is_detected() {
    // What the kernel does when the client process dies: its unmap notify
    // clears `cli_live` and kicks the event channel. No close() runs.
    let (p, rref) = streams(4096, 4096);
    let page = p.grants.peek(rref).unwrap();
    let mut server = VchanStream::new(p.server);
    let client = p.client;
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 8];
        server.read(&mut buf).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // SAFETY: a byte inside the control page, which `p.grants` keeps.
    let cli_live = unsafe { page.add(offset::CLI_LIVE).cast::<AtomicU8>().as_ref() };
    cli_live.store(0, Ordering::SeqCst);
    client.events().notify().unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("reader not woken by the crash")
        .unwrap();
    assert_eq!(n, 0, "EOF");
    std::mem::forget(client); // a crashed process runs no destructor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_waits_for_a_client_that_has_not_connected() {
    use vxn_vchan::memory::{InMemoryGrants, MemEvent};
    let grants = InMemoryGrants::new();
    let (sev, cev) = MemEvent::pair();
    let (server, rref) = vxn_vchan::server(&mut grants.clone(), sev, 4096, 4096).unwrap();
    assert_eq!(server.peer_state(), PeerState::NotYetConnected);
    let mut server = VchanStream::new(server);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).await.unwrap();
        buf
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!reader.is_finished(), "no client yet is not EOF");
    let mut client = VchanStream::new(vxn_vchan::client(&mut grants.clone(), cev, rref).unwrap());
    client.write_all(b"hi").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"hi");
}

/// An event channel that always has an event pending: what a peer kicking
/// in a tight loop looks like to the reader.
struct AlwaysPending(vxn_vchan::memory::MemEvent);

impl EventChannel for AlwaysPending {
    fn notify(&self) -> vxn_vchan::error::Result<()> {
        self.0.notify()
    }
    fn poll_event(
        &self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<vxn_vchan::error::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_spamming_events_does_not_starve_the_runtime() {
    use vxn_vchan::memory::{InMemoryGrants, MemEvent};
    let grants = InMemoryGrants::new();
    let (sev, cev) = MemEvent::pair();
    let (server, rref) =
        vxn_vchan::server(&mut grants.clone(), AlwaysPending(sev), 4096, 4096).unwrap();
    let client = vxn_vchan::client(&mut grants.clone(), cev, rref).unwrap();
    let mut server = VchanStream::new(server);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 4];
        server.read(&mut buf).await
    });
    // On a single-threaded runtime this only runs if the reader yields.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!reader.is_finished());
    let mut client = VchanStream::new(client);
    client.write_all(b"done").await.unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), 4);
}
