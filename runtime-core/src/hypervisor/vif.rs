//! A VM's network interfaces as the seam gives them to a backend: where the
//! vif's dom0 end goes, its MAC, and what the guest may send through it
//! (applied in dom0 by [`crate::network::guard`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use vxn_wire::protocol::IpCidr;

/// A VM's network interface: where its dom0 backend goes, and its MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vif {
    pub link: VifLink,
    pub mac: String,
    /// What the guest may send through it (checked in dom0, see
    /// [`crate::network::guard`]); a bridge vif gets it from the backend
    /// before the VM runs, a pod's when it joins the namespace.
    pub guard: VifGuard,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VifLink {
    /// Joined to this dom0 bridge by Xen's hotplug script.
    Bridge(String),
    /// Joined to nothing (the backend's hotplug only reports the device
    /// ready): the caller moves the backend into a network namespace.
    Unplugged,
}

/// What one vif may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifGuard {
    /// The vif's MAC: every frame's source and every ARP sender.
    pub mac: String,
    /// IPv4 sources (addresses, or prefixes).
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 sources besides link-local ones.
    pub ipv6: Vec<Ipv6Addr>,
    /// DHCP client traffic from 0.0.0.0 (the guest asks a DHCP server).
    pub dhcp_client: bool,
}

impl VifGuard {
    /// A guard for one static address.
    pub fn single(mac: &str, address: Ipv4Addr) -> Self {
        Self {
            mac: mac.into(),
            ipv4: vec![(address, 32)],
            ipv6: vec![],
            dhcp_client: false,
        }
    }

    /// A pod's interface: the addresses CNI gave it.
    pub fn for_addresses(mac: &str, addresses: &[IpCidr]) -> Self {
        let mut g = Self {
            mac: mac.into(),
            ipv4: vec![],
            ipv6: vec![],
            dhcp_client: false,
        };
        for a in addresses {
            match a.address {
                std::net::IpAddr::V4(v4) => g.ipv4.push((v4, 32)),
                std::net::IpAddr::V6(v6) => g.ipv6.push(v6),
            }
        }
        g
    }
}
