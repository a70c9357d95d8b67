//! A small DHCPv4 client (RFC 2131) for the host's `dhcp` network mode: the
//! initramfs holds no udhcpc. DISCOVER/OFFER/REQUEST/ACK over a UDP socket
//! bound to the interface with the broadcast flag set (the server answers by
//! broadcast, which reaches an interface that has no address yet), then a
//! renewal task that keeps the lease for as long as the VM lives.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use tokio::net::UdpSocket;

use vxn_wire::protocol::{parse_mac, IpCidr};

use vxn_wire::dhcp::*;

/// Tries per step and how long each waits for an answer.
const TRIES: u32 = 5;
const ANSWER_WAIT: Duration = Duration::from_secs(2);
const MAX_DNS: usize = 8;

#[derive(Debug, Clone)]
pub struct Lease {
    pub address: IpCidr,
    pub router: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    server: Ipv4Addr,
    lease_secs: u32,
    renew_secs: u32,
}

#[derive(Debug, Clone, Default)]
struct Reply {
    kind: u8,
    yiaddr: Option<Ipv4Addr>,
    subnet: Option<Ipv4Addr>,
    router: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    server: Option<Ipv4Addr>,
    lease_secs: Option<u32>,
    renew_secs: Option<u32>,
}

fn client_socket(ifname: &str) -> std::io::Result<UdpSocket> {
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::Broadcast, &true)?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )?;
    let any = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT));
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &any)?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

/// A client message asking for the options the lease needs.
fn message(kind: u8, xid: u32, mac: &[u8; 6], ciaddr: Ipv4Addr, opts: &[(u8, &[u8])]) -> Vec<u8> {
    let params = [OPT_SUBNET, OPT_ROUTER, OPT_DNS, OPT_LEASE_TIME, OPT_RENEWAL];
    let mut all: Vec<(u8, &[u8])> = vec![(OPT_PARAMS, &params)];
    all.extend_from_slice(opts);
    client_message(kind, xid, mac, ciaddr, true, &all)
}

fn ipv4(v: &[u8]) -> Option<Ipv4Addr> {
    let o: [u8; 4] = v.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

fn secs(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// Parse a server's answer to us (`xid`, `mac`); None for anything else.
fn parse(b: &[u8], xid: u32, mac: &[u8; 6]) -> Option<Reply> {
    if b.len() < 240 || b[0] != 2 || b[4..8] != xid.to_be_bytes() || &b[28..34] != mac {
        return None;
    }
    if b[236..240] != MAGIC {
        return None;
    }
    let mut r = Reply {
        yiaddr: ipv4(&b[16..20]).filter(|a| !a.is_unspecified()),
        ..Reply::default()
    };
    let mut i = 240;
    while i < b.len() {
        let code = b[i];
        if code == OPT_END {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let len = *b.get(i + 1)? as usize;
        let v = b.get(i + 2..i + 2 + len)?;
        match code {
            OPT_MSG_TYPE => r.kind = *v.first()?,
            OPT_SUBNET => r.subnet = ipv4(v),
            OPT_ROUTER => r.router = ipv4(v),
            OPT_DNS => r.dns = v.chunks_exact(4).filter_map(ipv4).take(MAX_DNS).collect(),
            OPT_SERVER_ID => r.server = ipv4(v),
            OPT_LEASE_TIME => r.lease_secs = secs(v),
            OPT_RENEWAL => r.renew_secs = secs(v),
            _ => {}
        }
        i += 2 + len;
    }
    Some(r)
}

/// Send `msg` to the servers and wait for an answer of one of `kinds`, retrying.
async fn exchange(
    sock: &UdpSocket,
    msg: &[u8],
    to: Ipv4Addr,
    xid: u32,
    mac: &[u8; 6],
    kinds: &[u8],
) -> Result<Reply, String> {
    let dest = SocketAddr::V4(SocketAddrV4::new(to, SERVER_PORT));
    let mut buf = vec![0u8; 1500];
    for _ in 0..TRIES {
        sock.send_to(msg, dest)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let until = tokio::time::Instant::now() + ANSWER_WAIT;
        while let Ok(got) = tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
            let (n, _) = got.map_err(|e| format!("receive: {e}"))?;
            if let Some(r) = parse(&buf[..n], xid, mac).filter(|r| kinds.contains(&r.kind)) {
                return Ok(r);
            }
        }
    }
    Err(format!("no DHCP server answered {TRIES} tries"))
}

fn xid_for(mac: &[u8; 6]) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ t
}

/// Get a lease for the interface (up, no address yet).
pub async fn obtain(ifname: &str, mac: &str) -> Result<Lease, String> {
    let mac = parse_mac(mac)?;
    let sock = client_socket(ifname).map_err(|e| format!("socket: {e}"))?;
    let xid = xid_for(&mac);
    let discover = message(DISCOVER, xid, &mac, Ipv4Addr::UNSPECIFIED, &[]);
    let offer = exchange(&sock, &discover, Ipv4Addr::BROADCAST, xid, &mac, &[OFFER]).await?;
    let (Some(addr), Some(server)) = (offer.yiaddr, offer.server) else {
        return Err("the offer names no address or server".into());
    };
    let request = message(
        REQUEST,
        xid,
        &mac,
        Ipv4Addr::UNSPECIFIED,
        &[
            (OPT_REQUESTED_IP, &addr.octets()),
            (OPT_SERVER_ID, &server.octets()),
        ],
    );
    let ack = exchange(&sock, &request, Ipv4Addr::BROADCAST, xid, &mac, &[ACK, NAK]).await?;
    if ack.kind == NAK {
        return Err(format!("server {server} refused {addr}"));
    }
    lease_from(&ack, addr, server)
}

fn lease_from(ack: &Reply, offered: Ipv4Addr, server: Ipv4Addr) -> Result<Lease, String> {
    let address = ack.yiaddr.unwrap_or(offered);
    let prefix = ack
        .subnet
        .map(|m| u32::from(m).leading_ones() as u8)
        .unwrap_or(24);
    let lease_secs = ack.lease_secs.unwrap_or(3600).max(60);
    Ok(Lease {
        address: IpCidr::new(IpAddr::V4(address), prefix)?,
        router: ack.router.map(IpAddr::V4),
        dns: ack.dns.iter().copied().map(IpAddr::V4).collect(),
        server: ack.server.unwrap_or(server),
        lease_secs,
        renew_secs: ack
            .renew_secs
            .unwrap_or(lease_secs / 2)
            .clamp(30, lease_secs),
    })
}

/// Renew the lease at T1, and again after each ACK, as long as the VM lives;
/// a missed renewal is retried every 30 s (the address stays configured).
pub fn keep_renewing(ifname: String, mac: String, mut lease: Lease) {
    tokio::spawn(async move {
        let Ok(mac) = parse_mac(&mac) else { return };
        let mut wait = Duration::from_secs(lease.renew_secs.into());
        loop {
            tokio::time::sleep(wait).await;
            let IpAddr::V4(ours) = lease.address.address else {
                return;
            };
            let renewed = async {
                let sock = client_socket(&ifname).map_err(|e| format!("socket: {e}"))?;
                let xid = xid_for(&mac);
                let req = message(REQUEST, xid, &mac, ours, &[]);
                let ack =
                    exchange(&sock, &req, Ipv4Addr::BROADCAST, xid, &mac, &[ACK, NAK]).await?;
                if ack.kind == NAK {
                    return Err("the server refused the renewal".to_string());
                }
                lease_from(&ack, ours, lease.server)
            }
            .await;
            match renewed {
                Ok(l) => {
                    tracing::info!(address = %l.address, lease_secs = l.lease_secs, "DHCP lease renewed");
                    wait = Duration::from_secs(l.renew_secs.into());
                    lease = l;
                }
                Err(e) => {
                    tracing::warn!(interface = %ifname, error = %e, "DHCP renewal failed; retrying");
                    wait = Duration::from_secs(30);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_ack_and_ignores_others() {
        let mac = [0, 0x16, 0x3e, 1, 2, 3];
        let mut b = message(ACK, 42, &mac, Ipv4Addr::UNSPECIFIED, &[]);
        b[0] = 2;
        b[16..20].copy_from_slice(&[10, 0, 100, 60]);
        b.truncate(240);
        b.extend_from_slice(&[OPT_MSG_TYPE, 1, ACK, OPT_SUBNET, 4, 255, 255, 255, 0]);
        b.extend_from_slice(&[
            OPT_ROUTER, 4, 10, 0, 100, 1, OPT_DNS, 8, 10, 0, 100, 1, 1, 1, 1, 1,
        ]);
        b.extend_from_slice(&[
            OPT_SERVER_ID,
            4,
            10,
            0,
            100,
            1,
            OPT_LEASE_TIME,
            4,
            0,
            0,
            14,
            16,
            OPT_END,
        ]);
        let r = parse(&b, 42, &mac).unwrap();
        let l = lease_from(&r, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED).unwrap();
        assert_eq!(l.address.to_string(), "10.0.100.60/24");
        assert_eq!(l.router, Some("10.0.100.1".parse().unwrap()));
        assert_eq!(l.dns.len(), 2);
        assert_eq!((l.lease_secs, l.renew_secs), (3600, 1800));
        assert!(parse(&b, 43, &mac).is_none());
        // truncated option: no panic, no answer
        let mut t = b.clone();
        t.truncate(t.len() - 8);
        t.push(OPT_DNS);
        t.push(200);
        assert!(parse(&t, 42, &mac).is_none());
    }
}
