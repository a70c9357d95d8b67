//! The few rtnetlink requests the agent needs (link up/rename/MTU, address,
//! route), built by hand: the initramfs has no `ip`, and a full netlink
//! library would be most of the agent's size for five message types.
//! Every request asks for an ACK and waits for it with a timeout.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use vxn_wire::protocol::IpCidr;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const IFF_UP: u32 = 0x1;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(nix::Error),
    #[error("{what}: {source}")]
    Refused {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}: no answer from the kernel")]
    NoAnswer(String),
}

/// A route socket; requests are answered in order, one at a time.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// A message being built: header, fixed part, then attributes.
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, fixed: &[u8]) -> Self {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish()
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        b.extend_from_slice(fixed);
        pad(&mut b);
        Self(b)
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        pad(&mut self.0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn pad(b: &mut Vec<u8>) {
    while b.len() % 4 != 0 {
        b.push(0);
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn family(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

/// struct ifinfomsg: family, pad, type, index, flags, change.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut f = vec![0u8, 0];
    f.extend_from_slice(&0u16.to_ne_bytes());
    f.extend_from_slice(&(index as i32).to_ne_bytes());
    f.extend_from_slice(&flags.to_ne_bytes());
    f.extend_from_slice(&change.to_ne_bytes());
    f
}

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(NetlinkError::Socket)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(NetlinkError::Socket)?;
        let tv = TimeVal::new(TIMEOUT.as_secs() as i64, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(NetlinkError::Socket)?;
        Ok(Self { fd, seq: 0 })
    }

    /// Send one request and wait for its ACK (or the kernel's error).
    fn call(
        &mut self,
        what: String,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = build(seq);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty()).map_err(|e| NetlinkError::Refused {
            what: what.clone(),
            source: e.into(),
        })?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::Error::EAGAIN) => return Err(NetlinkError::NoAnswer(what)),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(NetlinkError::Socket(e)),
            };
            let mut off = 0;
            while off + 16 <= n {
                let len =
                    u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let mseq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap_or([0; 4]));
                if len < 16 || off + len > n {
                    break;
                }
                if kind == NLMSG_ERROR && mseq == seq && len >= 20 {
                    let code =
                        i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap_or([0; 4]));
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(NetlinkError::Refused {
                            what,
                            source: std::io::Error::from_raw_os_error(-code),
                        })
                    };
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Rename a link (it must be down).
    pub fn rename(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        self.call(format!("rename link {index} to {name}"), |seq| {
            let mut m = Msg::new(RTM_NEWLINK, 0, seq, &ifinfomsg(index, 0, 0));
            m.attr(IFLA_IFNAME, &cname);
            m.finish()
        })
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.call(format!("set MTU {mtu} on link {index}"), |seq| {
            let mut m = Msg::new(RTM_NEWLINK, 0, seq, &ifinfomsg(index, 0, 0));
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
            m.finish()
        })
    }

    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.call(format!("bring link {index} up"), |seq| {
            Msg::new(RTM_NEWLINK, 0, seq, &ifinfomsg(index, IFF_UP, IFF_UP)).finish()
        })
    }

    /// Add (or refresh) an address; IPv6 ones skip duplicate detection, the
    /// host handed the address out.
    pub fn add_address(&mut self, index: u32, cidr: &IpCidr) -> Result<(), NetlinkError> {
        self.call(format!("add address {cidr} to link {index}"), |seq| {
            let mut fixed = vec![family(&cidr.address), cidr.prefix_len, 0, RT_SCOPE_UNIVERSE];
            fixed.extend_from_slice(&index.to_ne_bytes());
            let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq, &fixed);
            let ip = ip_bytes(&cidr.address);
            m.attr(IFA_LOCAL, &ip).attr(IFA_ADDRESS, &ip);
            if cidr.address.is_ipv6() {
                m.attr(IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
            }
            m.finish()
        })
    }

    /// Add (or replace) a route in the main table: a default route when
    /// `destination` is None, via `gateway` or directly on the link.
    pub fn add_route(
        &mut self,
        destination: Option<&IpCidr>,
        gateway: Option<&IpAddr>,
        oif: Option<u32>,
    ) -> Result<(), NetlinkError> {
        let fam = destination
            .map(|d| family(&d.address))
            .or(gateway.map(family))
            .unwrap_or(AF_INET);
        let what = format!(
            "add route to {} via {}",
            destination.map_or("default".to_string(), |d| d.to_string()),
            gateway.map_or("the link".to_string(), |g| g.to_string())
        );
        self.call(what, |seq| {
            let scope = if gateway.is_some() {
                RT_SCOPE_UNIVERSE
            } else {
                RT_SCOPE_LINK
            };
            let dst_len = destination.map_or(0, |d| d.prefix_len);
            let mut fixed = vec![
                fam,
                dst_len,
                0,
                0,
                RT_TABLE_MAIN,
                RTPROT_STATIC,
                scope,
                RTN_UNICAST,
            ];
            fixed.extend_from_slice(&0u32.to_ne_bytes());
            let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, &fixed);
            if let Some(d) = destination {
                m.attr(RTA_DST, &ip_bytes(&d.address));
            }
            if let Some(g) = gateway {
                m.attr(RTA_GATEWAY, &ip_bytes(g));
            }
            if let Some(i) = oif {
                m.attr(RTA_OIF, &i.to_ne_bytes());
            }
            m.finish()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_aligned_and_sized() {
        let mut m = Msg::new(RTM_NEWLINK, 0, 7, &ifinfomsg(2, IFF_UP, IFF_UP));
        m.attr(IFLA_IFNAME, b"eth0\0");
        let b = m.finish();
        assert_eq!(b.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(b[..4].try_into().unwrap()) as usize,
            b.len()
        );
        // header 16 + ifinfomsg 16 + attr 4+5 padded to 12
        assert_eq!(b.len(), 44);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
    }
}
