//! A DNS relay over UDP and TCP, run at both ends of an engine-networked
//! container's path to its engine's resolver. Docker's embedded DNS answers
//! at 127.0.0.11 inside the container's network namespace; the container's
//! processes run in a VM, whose 127.0.0.11 is its own loopback. The agent
//! relays the guest's 127.0.0.11:53 to the namespace's end of the VM's
//! link, where the runtime relays it on to 127.0.0.11:53 inside the
//! namespace (where Docker's own rules take it to its resolver).
//!
//! Bounded: at most [`MAX_UDP_INFLIGHT`] queries and [`MAX_TCP_CONNS`]
//! connections at once (more are dropped: the client retries), each waits
//! [`ANSWER_TIMEOUT`] for its answer, a TCP connection idles at most
//! [`TCP_IDLE`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

pub const MAX_UDP_INFLIGHT: usize = 64;
pub const MAX_TCP_CONNS: usize = 16;
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
pub const TCP_IDLE: Duration = Duration::from_secs(30);
/// The largest DNS message (TCP's 16-bit length; UDP with EDNS stays below).
const MAX_MESSAGE: usize = 65535;

/// A relay's listening sockets.
pub struct Relay {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
}

/// Bind `listen`, UDP and TCP, in the calling thread's network namespace.
pub async fn bind(listen: SocketAddr) -> std::io::Result<Relay> {
    Ok(Relay {
        udp: Arc::new(UdpSocket::bind(listen).await?),
        tcp: TcpListener::bind(listen).await?,
    })
}

impl Relay {
    /// Relay to `upstream`, from `source` when given (an address the path
    /// back only knows), until an error ends it. Its upstream sockets are
    /// made on the thread that runs it: keep it in the listener's namespace.
    pub async fn serve(self, upstream: SocketAddr, source: Option<IpAddr>) -> std::io::Result<()> {
        let to = Upstream {
            addr: upstream,
            source: source.unwrap_or(if upstream.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            }),
        };
        tokio::try_join!(serve_udp(self.udp, to), serve_tcp(self.tcp, to))?;
        Ok(())
    }
}

/// Where queries go, and from which local address.
#[derive(Clone, Copy)]
struct Upstream {
    addr: SocketAddr,
    source: IpAddr,
}

/// [`bind`] and [`Relay::serve`].
pub async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    bind(listen).await?.serve(upstream, None).await
}

async fn serve_udp(sock: Arc<UdpSocket>, upstream: Upstream) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_UDP_INFLIGHT));
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, client) = match sock.recv_from(&mut buf).await {
            Ok(v) => v,
            // An ICMP error of an earlier send surfaces here: not the socket's end.
            Err(_) => continue,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let sock = sock.clone();
        tokio::spawn(async move {
            if let Ok(Some(answer)) = ask_udp(&query, upstream).await {
                let _ = sock.send_to(&answer, client).await;
            }
            drop(slot);
        });
    }
}

/// One query on a socket of its own: the answer is the first datagram from
/// the upstream (a connected socket takes no other sender's).
async fn ask_udp(query: &[u8], upstream: Upstream) -> std::io::Result<Option<Vec<u8>>> {
    let s = UdpSocket::bind(SocketAddr::new(upstream.source, 0)).await?;
    s.connect(upstream.addr).await?;
    s.send(query).await?;
    let mut answer = vec![0u8; MAX_MESSAGE];
    match tokio::time::timeout(ANSWER_TIMEOUT, s.recv(&mut answer)).await {
        Ok(Ok(n)) => {
            answer.truncate(n);
            Ok(Some(answer))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

async fn serve_tcp(listener: TcpListener, upstream: Upstream) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNS));
    loop {
        let (client, _) = match listener.accept().await {
            Ok(v) => v,
            Err(_) => {
                // Out of fds and the like: let it pass.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let _ = relay_tcp(client, upstream).await;
            drop(slot);
        });
    }
}

async fn relay_tcp(client: TcpStream, upstream: Upstream) -> std::io::Result<()> {
    let sock = match upstream.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.bind(SocketAddr::new(upstream.source, 0))?;
    let server = tokio::time::timeout(ANSWER_TIMEOUT, sock.connect(upstream.addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Each direction ends at EOF, an error, or TCP_IDLE without a byte.
    let up = copy_idle(&mut cr, &mut sw);
    let down = copy_idle(&mut sr, &mut cw);
    let _ = tokio::join!(up, down);
    Ok(())
}

async fn copy_idle(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match tokio::time::timeout(TCP_IDLE, from.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => 0,
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers each UDP datagram and TCP message with
    /// "re:" and the query.
    async fn echo_upstream() -> SocketAddr {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let mut a = b"re:".to_vec();
                a.extend_from_slice(&buf[..n]);
                let _ = udp.send_to(&a, from).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut c, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    let n = c.read(&mut buf).await.unwrap();
                    c.write_all(b"re:").await.unwrap();
                    c.write_all(&buf[..n]).await.unwrap();
                });
            }
        });
        addr
    }

    async fn free_port() -> SocketAddr {
        // The same port free for UDP and TCP: what `serve` binds.
        loop {
            let t = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = t.local_addr().unwrap();
            if UdpSocket::bind(a).await.is_ok() {
                return a;
            }
        }
    }

    #[tokio::test]
    async fn queries_and_answers_pass_both_ways_over_udp_and_tcp() {
        let upstream = echo_upstream().await;
        let listen = free_port().await;
        tokio::spawn(serve(listen, upstream));
        tokio::time::sleep(Duration::from_millis(100)).await;

        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.connect(listen).await.unwrap();
        for q in [&b"q1"[..], b"q2"] {
            c.send(q).await.unwrap();
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), c.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], [&b"re:"[..], q].concat());
        }

        let mut t = TcpStream::connect(listen).await.unwrap();
        t.write_all(b"\x00\x02q3").await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), t.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"re:\x00\x02q3");
    }

    #[tokio::test]
    async fn queries_leave_from_the_source_asked_for() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let listen = free_port().await;
        let relay = bind(listen).await.unwrap();
        let to = upstream.local_addr().unwrap();
        tokio::spawn(relay.serve(to, Some("127.0.0.2".parse().unwrap())));
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"q", listen).await.unwrap();
        let mut buf = [0u8; 16];
        let (_, from) = tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from.ip().to_string(), "127.0.0.2");
    }

    #[tokio::test]
    async fn a_silent_upstream_frees_its_slots() {
        // Bound, never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream = silent.local_addr().unwrap();
        let listen = free_port().await;
        tokio::spawn(serve(listen, upstream));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // More queries than slots: the excess is dropped, nothing grows.
        for _ in 0..(MAX_UDP_INFLIGHT * 2) {
            c.send_to(b"q", listen).await.unwrap();
        }
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_millis(500), c.recv(&mut buf)).await;
        assert!(r.is_err(), "no answer expected");
    }
}
