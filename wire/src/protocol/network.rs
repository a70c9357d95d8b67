//! The guest's network, as the host asks the agent to set it up: once per
//! VM, before any container in it runs (a pod's containers share it).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An address with its prefix length, `10.0.100.201/24` or `fd00::5/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IpCidr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl IpCidr {
    pub fn new(address: IpAddr, prefix_len: u8) -> Result<Self, String> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!(
                "prefix length {prefix_len} of {address} is above {max}"
            ));
        }
        Ok(Self {
            address,
            prefix_len,
        })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl FromStr for IpCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
        let address: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let prefix_len: u8 = p
            .parse()
            .map_err(|_| format!("{p:?} is not a prefix length"))?;
        Self::new(address, prefix_len)
    }
}

/// One network interface of the guest, found by its MAC address (the host
/// chose it; the guest's kernel names devices as it likes) and renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// `00:16:3e:12:34:56`, lower case.
    pub mac: String,
    /// The name it gets in the guest, e.g. `eth0`.
    pub name: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Static addresses. Empty with `dhcp` set: the agent asks a DHCP server.
    #[serde(default)]
    pub addresses: Vec<IpCidr>,
    #[serde(default)]
    pub dhcp: bool,
}

/// A route; no destination is the default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    #[serde(default)]
    pub destination: Option<IpCidr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// The interface's `name`; needed when there is no gateway.
    #[serde(default)]
    pub interface: Option<String>,
}

/// What goes in a container's /etc/resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default)]
    pub servers: Vec<IpAddr>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// `SetupNetwork`: lo is always brought up; then each interface, then the routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSetup {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
    /// A DNS relay the agent runs in the guest (`crate::dns_relay`).
    #[serde(default)]
    pub dns_relay: Option<DnsRelay>,
}

/// DNS sent to `listen`, a loopback address of the guest (Docker's
/// 127.0.0.11), goes on to `upstream`, the host's end of the VM's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRelay {
    pub listen: std::net::SocketAddr,
    pub upstream: std::net::SocketAddr,
    /// The guest's address the queries leave from (its end of the link:
    /// the only one the namespace takes up its stack).
    #[serde(default)]
    pub source: Option<IpAddr>,
}

/// The answer to `SetupNetwork`: what the guest ended up with (a DHCP lease
/// included), for the host's logs and its view of the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkState {
    #[serde(default)]
    pub addresses: Vec<IpCidr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub dns: Dns,
}

/// Limits both sides enforce: the agent on what it is asked to do, the host
/// on what a guest reports.
pub const MAX_INTERFACES: usize = 8;
pub const MAX_ROUTES: usize = 64;
pub const MAX_ADDRESSES: usize = 16;
pub const MAX_DNS_ENTRIES: usize = 8;
const MAX_NAME: usize = 15; // IFNAMSIZ - 1

impl NetworkSetup {
    /// What every setup must be; checked by the host before it sends and by
    /// the agent before it touches a device.
    pub fn validate(&self) -> Result<(), String> {
        if self.interfaces.len() > MAX_INTERFACES || self.routes.len() > MAX_ROUTES {
            return Err("too many interfaces or routes".into());
        }
        for i in &self.interfaces {
            parse_mac(&i.mac)?;
            let name_ok = !i.name.is_empty()
                && i.name.len() <= MAX_NAME
                && i.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && i.name != "lo";
            if !name_ok {
                return Err(format!("bad interface name {:?}", i.name));
            }
            if i.addresses.len() > MAX_ADDRESSES {
                return Err(format!("too many addresses for {}", i.name));
            }
            if let Some(m) = i.mtu.filter(|m| !(68..=65535).contains(m)) {
                return Err(format!("MTU {m} of {} is out of range (68-65535)", i.name));
            }
        }
        for r in &self.routes {
            if r.gateway.is_none() && r.interface.is_none() {
                return Err("a route needs a gateway or an interface".into());
            }
            if let Some(dev) = &r.interface {
                if !self.interfaces.iter().any(|i| &i.name == dev) {
                    return Err(format!("route via unknown interface {dev:?}"));
                }
            }
        }
        if self.dns.servers.len() > MAX_DNS_ENTRIES
            || self.dns.search.len() > MAX_DNS_ENTRIES
            || self.dns.options.len() > MAX_DNS_ENTRIES
        {
            return Err("too many DNS entries".into());
        }
        let word_ok = |w: &String| {
            !w.is_empty()
                && w.len() <= 253
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
        };
        if !self.dns.search.iter().all(word_ok) || !self.dns.options.iter().all(word_ok) {
            return Err("bad DNS search domain or option".into());
        }
        if let Some(r) = &self.dns_relay {
            // Only the guest's own loopback is taken over, nothing a network sees.
            if !r.listen.ip().is_loopback() || r.upstream.ip().is_unspecified() {
                return Err(format!(
                    "DNS relay {} -> {}: it listens on a loopback address",
                    r.listen, r.upstream
                ));
            }
        }
        Ok(())
    }
}

/// `00:16:3e:12:34:56` -> bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next().filter(|p| p.len() == 2);
        *b = p
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| format!("bad MAC address {s:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("bad MAC address {s:?}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> NetworkSetup {
        NetworkSetup {
            interfaces: vec![Interface {
                mac: "00:16:3e:01:02:03".into(),
                name: "eth0".into(),
                mtu: Some(1500),
                addresses: vec!["10.0.100.201/24".parse().unwrap()],
                dhcp: false,
            }],
            routes: vec![Route {
                destination: None,
                gateway: Some("10.0.100.1".parse().unwrap()),
                interface: Some("eth0".into()),
            }],
            dns: Dns {
                servers: vec!["10.0.100.1".parse().unwrap()],
                ..Dns::default()
            },
            dns_relay: None,
        }
    }

    #[test]
    fn cidr_parses_and_prints() {
        let c: IpCidr = "fd00::5/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00::5/64");
        assert!("10.0.0.1/33".parse::<IpCidr>().is_err());
        assert!("10.0.0.1".parse::<IpCidr>().is_err());
    }

    #[test]
    fn validate_refuses_what_the_agent_must_not_do() {
        setup().validate().unwrap();
        let mut s = setup();
        s.interfaces[0].name = "lo".into();
        assert!(s.validate().is_err());
        let mut s = setup();
        s.interfaces[0].name = "../x".into();
        assert!(s.validate().is_err());
        let mut s = setup();
        s.interfaces[0].mac = "00:16:3e:01:02".into();
        assert!(s.validate().is_err());
        let mut s = setup();
        s.routes[0].interface = Some("eth1".into());
        assert!(s.validate().is_err());
        let mut s = setup();
        s.dns.search = vec!["a\nnameserver 1.2.3.4".into()];
        assert!(s.validate().is_err());
        let mut s = setup();
        let relay = |listen: &str| DnsRelay {
            listen: listen.parse().unwrap(),
            upstream: "169.254.99.1:53".parse().unwrap(),
            source: None,
        };
        s.dns_relay = Some(relay("127.0.0.11:53"));
        s.validate().unwrap();
        s.dns_relay = Some(relay("10.0.0.5:53"));
        assert!(s.validate().is_err());
        assert_eq!(parse_mac("00:16:3E:ff:00:01").unwrap()[3], 0xff);
    }
}
