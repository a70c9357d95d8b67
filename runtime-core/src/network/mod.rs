//! A container's network on the host side: which mode it gets (config and
//! annotations), its vif (bridge, a MAC stable per (namespace, id)), its
//! address from the [`lease`] pool, and the setup the guest agent is asked
//! to apply. The dom0 side (bridge, NAT, DHCP server) is [`host`].

pub mod dhcp_binding;
pub mod docker_user;
pub mod guard;
pub mod host;
pub mod lease;
pub mod netns_dns;
pub mod pod_localhost;
pub mod pod_netns;
#[cfg(test)]
pub(crate) mod test_netns;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use vxn_wire::protocol::{Dns, Interface, IpCidr, NetworkSetup, Route};

use crate::error::{Error, Result};
use crate::hypervisor::VifGuard;
use crate::names::ContainerName;

/// Per-container mode: `none`, `static` or `dhcp` (overrides `[network] mode`).
pub const ANNOTATION_MODE: &str = "vxn.network";
/// Per-container address, e.g. `10.0.100.210`: honoured when free, refused when taken.
pub const ANNOTATION_IP: &str = "vxn.network.ip";
/// The name the vif gets in the guest.
pub const GUEST_INTERFACE: &str = "eth0";
/// Xen's OUI: what `xl` itself uses for generated MACs.
const XEN_OUI: [u8; 3] = [0x00, 0x16, 0x3e];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No vif: the container has only lo.
    None,
    /// An address from the pool, set by the agent.
    Static,
    /// The agent asks a DHCP server on the bridge.
    Dhcp,
}

impl Mode {
    fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "static" => Ok(Self::Static),
            "dhcp" => Ok(Self::Dhcp),
            other => Err(Error::InvalidArgument(format!(
                "annotation {ANNOTATION_MODE}={other:?}: use none, static or dhcp"
            ))),
        }
    }
}

/// `[network]` in /etc/vxn/config.toml (documented in config/config.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub mode: Mode,
    pub bridge: String,
    /// The bridge's subnet, e.g. `10.0.100.0/24`.
    pub subnet: String,
    pub gateway: Ipv4Addr,
    pub dns: Vec<IpAddr>,
    pub dns_search: Vec<String>,
    /// First and last address the static pool hands out.
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    /// The range `vxnctl network up --dhcp` serves (outside the static range):
    /// vxn leases its addresses too, and dnsmasq gives each MAC only its own.
    pub dhcp_start: Ipv4Addr,
    pub dhcp_end: Ipv4Addr,
    /// dnsmasq's `dhcp-hostsdir`: one `MAC,ADDRESS` file per DHCP lease.
    pub dhcp_hosts_dir: PathBuf,
    pub mtu: u32,
    /// Where leases live: one file per address.
    pub lease_dir: PathBuf,
    /// With the static pool exhausted, lease from the DHCP range instead of an error.
    pub dhcp_when_exhausted: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Static,
            bridge: "xenbr0".into(),
            subnet: "10.0.100.0/24".into(),
            gateway: Ipv4Addr::new(10, 0, 100, 1),
            dns: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 100, 1))],
            dns_search: vec![],
            range_start: Ipv4Addr::new(10, 0, 100, 201),
            range_end: Ipv4Addr::new(10, 0, 100, 254),
            dhcp_start: Ipv4Addr::new(10, 0, 100, 50),
            dhcp_end: Ipv4Addr::new(10, 0, 100, 200),
            dhcp_hosts_dir: "/run/vxn-network/dhcp-hosts".into(),
            mtu: 1500,
            lease_dir: "/var/lib/vxn-network/leases".into(),
            dhcp_when_exhausted: false,
        }
    }
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix_len: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let c: IpCidr = s.parse()?;
        let IpAddr::V4(a) = c.address else {
            return Err(format!("subnet {s}: only IPv4 pools for now"));
        };
        let mask = Self::mask(c.prefix_len);
        Ok(Self {
            base: Ipv4Addr::from(u32::from(a) & mask),
            prefix_len: c.prefix_len,
        })
    }

    fn mask(prefix_len: u8) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0)
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & Self::mask(self.prefix_len) == u32::from(self.base)
    }

    /// An address a host may have: inside, not the network or broadcast address.
    pub fn is_host(&self, a: Ipv4Addr) -> bool {
        let broadcast = u32::from(self.base) | !Self::mask(self.prefix_len);
        self.contains(a) && a != self.base && u32::from(a) != broadcast
    }
}

impl NetworkConfig {
    pub fn subnet(&self) -> std::result::Result<Subnet, String> {
        Subnet::parse(&self.subnet)
    }

    /// Checked when the config is loaded: a pool that makes no sense is an
    /// error there, not at the first create.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.mode == Mode::None {
            return Ok(());
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 {
            return Err(format!(
                "[network] bridge {:?}: 1 to 15 characters",
                self.bridge
            ));
        }
        let net = self.subnet()?;
        for (what, a) in [
            ("gateway", self.gateway),
            ("range_start", self.range_start),
            ("range_end", self.range_end),
            ("dhcp_start", self.dhcp_start),
            ("dhcp_end", self.dhcp_end),
        ] {
            if !net.is_host(a) {
                return Err(format!(
                    "[network] {what} {a} is not a host address of {}",
                    self.subnet
                ));
            }
        }
        if u32::from(self.range_start) > u32::from(self.range_end) {
            return Err("[network] range_start is after range_end".into());
        }
        if u32::from(self.dhcp_start) > u32::from(self.dhcp_end) {
            return Err("[network] dhcp_start is after dhcp_end".into());
        }
        if !(68..=65535).contains(&self.mtu) {
            return Err(format!("[network] mtu {} is out of range", self.mtu));
        }
        Ok(())
    }
}

/// What a container asked for, from the config and its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub mode: Mode,
    pub address: Option<Ipv4Addr>,
}

impl Request {
    pub fn from_annotations(
        cfg: &NetworkConfig,
        annotations: &HashMap<String, String>,
    ) -> Result<Self> {
        let mode = match annotations.get(ANNOTATION_MODE) {
            Some(m) => Mode::parse(m)?,
            None => cfg.mode,
        };
        let address = match annotations.get(ANNOTATION_IP) {
            None => None,
            Some(_) if mode != Mode::Static => {
                return Err(Error::InvalidArgument(format!(
                    "annotation {ANNOTATION_IP} needs the static network mode"
                )))
            }
            Some(a) => {
                let ip: Ipv4Addr = a.parse().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "annotation {ANNOTATION_IP}={a:?} is not an IPv4 address"
                    ))
                })?;
                let net = cfg.subnet().map_err(Error::Internal)?;
                // Only the static pool's own addresses: never the gateway,
                // the DHCP range or another host's address on the bridge.
                let in_pool = (u32::from(cfg.range_start)..=u32::from(cfg.range_end))
                    .contains(&u32::from(ip));
                if !net.is_host(ip) || ip == cfg.gateway || !in_pool {
                    return Err(Error::InvalidArgument(format!(
                        "annotation {ANNOTATION_IP}={ip}: not an address of the static pool {}-{} of {}",
                        cfg.range_start, cfg.range_end, cfg.subnet
                    )));
                }
                Some(ip)
            }
        };
        Ok(Self { mode, address })
    }
}

/// The MAC of a container's vif: Xen's OUI and 24 bits of a digest of
/// (namespace, id), so it is the same every time the container runs.
/// `salt` > 0 picks another when two containers' digests collide.
pub fn mac_for(name: &ContainerName, salt: u32) -> String {
    let mut h = Sha256::new();
    h.update(b"vxn-mac\0");
    h.update(name.namespace().as_bytes());
    h.update([0]);
    h.update(name.id().as_bytes());
    h.update(salt.to_be_bytes());
    let d = h.finalize();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        XEN_OUI[0], XEN_OUI[1], XEN_OUI[2], d[0], d[1], d[2]
    )
}

/// A container's attachment to the bridge: what the VM gets and what the
/// agent is asked to set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub bridge: String,
    pub mac: String,
    /// The address leased to it.
    pub address: Ipv4Addr,
    /// The guest asks for it by DHCP (dnsmasq is bound to give this one).
    pub dhcp: bool,
}

impl Attachment {
    /// What the vif may send: its MAC with its address, and (DHCP) its
    /// requests before it has the address.
    pub fn guard(&self) -> VifGuard {
        let mut g = VifGuard::single(&self.mac, self.address);
        g.dhcp_client = self.dhcp;
        g
    }

    pub fn guest_setup(&self, cfg: &NetworkConfig) -> Result<NetworkSetup> {
        let net = cfg.subnet().map_err(Error::Internal)?;
        let (addresses, routes, dns) = match (self.dhcp, self.address) {
            (false, a) => (
                vec![IpCidr::new(IpAddr::V4(a), net.prefix_len).map_err(Error::Internal)?],
                vec![Route {
                    destination: None,
                    gateway: Some(IpAddr::V4(cfg.gateway)),
                    interface: Some(GUEST_INTERFACE.into()),
                }],
                Dns {
                    servers: cfg.dns.clone(),
                    search: cfg.dns_search.clone(),
                    options: vec![],
                },
            ),
            // The server gives address, router and DNS.
            (true, _) => (vec![], vec![], Dns::default()),
        };
        let setup = NetworkSetup {
            interfaces: vec![Interface {
                mac: self.mac.clone(),
                name: GUEST_INTERFACE.into(),
                mtu: Some(cfg.mtu),
                addresses,
                dhcp: self.dhcp,
            }],
            routes,
            dns,
            dns_relay: None,
        };
        setup.validate().map_err(Error::InvalidArgument)?;
        Ok(setup)
    }
}

/// The bridge must exist in dom0 before a vif can join it; say how to make it.
pub fn check_bridge(bridge: &str) -> std::result::Result<(), String> {
    if Path::new("/sys/class/net")
        .join(bridge)
        .join("bridge")
        .is_dir()
    {
        return Ok(());
    }
    Err(format!(
        "network bridge {bridge} does not exist in dom0: create it with `vxnctl network up` \
         (see docs/networking.md), or run without a network ([network] mode = \"none\" in \
         /etc/vxn/config.toml, or the annotation {ANNOTATION_MODE}=none)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_seeds_pool() {
        let c = NetworkConfig::default();
        c.validate().unwrap();
        let net = c.subnet().unwrap();
        assert!(net.is_host(Ipv4Addr::new(10, 0, 100, 201)));
        assert!(!net.is_host(Ipv4Addr::new(10, 0, 100, 255)));
        assert!(!net.is_host(Ipv4Addr::new(10, 0, 101, 2)));
        let bad = NetworkConfig {
            range_end: Ipv4Addr::new(10, 0, 101, 3),
            ..NetworkConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn annotations_choose_mode_and_address() {
        let c = NetworkConfig::default();
        assert_eq!(
            Request::from_annotations(&c, &ann(&[])).unwrap().mode,
            Mode::Static
        );
        let r = Request::from_annotations(&c, &ann(&[(ANNOTATION_MODE, "none")])).unwrap();
        assert_eq!(r.mode, Mode::None);
        let r = Request::from_annotations(&c, &ann(&[(ANNOTATION_IP, "10.0.100.210")])).unwrap();
        assert_eq!(r.address, Some(Ipv4Addr::new(10, 0, 100, 210)));
        // The gateway, broadcast, another subnet, the DHCP range, below the pool.
        for bad in [
            "10.0.100.1",
            "10.0.100.255",
            "192.168.1.2",
            "x",
            "10.0.100.78",
            "10.0.100.2",
        ] {
            let e = Request::from_annotations(&c, &ann(&[(ANNOTATION_IP, bad)])).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
        }
        assert!(Request::from_annotations(&c, &ann(&[(ANNOTATION_MODE, "bridge")])).is_err());
    }

    #[test]
    fn mac_is_stable_per_name_and_xen_owned() {
        let a = ContainerName::new("default", "web").unwrap();
        let b = ContainerName::new("other", "web").unwrap();
        assert_eq!(mac_for(&a, 0), mac_for(&a, 0));
        assert_ne!(mac_for(&a, 0), mac_for(&b, 0));
        assert_ne!(mac_for(&a, 0), mac_for(&a, 1));
        assert!(mac_for(&a, 0).starts_with("00:16:3e:"));
    }

    #[test]
    fn static_setup_has_address_route_and_dns() {
        let c = NetworkConfig::default();
        let a = Attachment {
            bridge: "xenbr0".into(),
            mac: "00:16:3e:00:00:01".into(),
            address: Ipv4Addr::new(10, 0, 100, 201),
            dhcp: false,
        };
        let s = a.guest_setup(&c).unwrap();
        assert_eq!(s.interfaces[0].addresses[0].to_string(), "10.0.100.201/24");
        assert_eq!(s.routes[0].gateway, Some("10.0.100.1".parse().unwrap()));
        assert!(!s.interfaces[0].dhcp);
        let d = Attachment {
            dhcp: true,
            ..a.clone()
        };
        assert!(d.guard().dhcp_client && !a.guard().dhcp_client);
        assert_eq!(d.guard().ipv4, vec![(Ipv4Addr::new(10, 0, 100, 201), 32)]);
        let d = d.guest_setup(&c).unwrap();
        assert!(d.interfaces[0].dhcp && d.routes.is_empty());
    }
}
