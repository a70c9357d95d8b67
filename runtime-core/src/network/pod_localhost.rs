//! The pod namespace's localhost reaches the pod's VM, for CRI's PortForward
//! (`kubectl port-forward`, critest's portforward specs): containerd serves it
//! by dialing `localhost:PORT` inside the pod's network namespace, where
//! under runc the pod's processes listen. Under vxn they listen in the VM,
//! and the namespace's stack never sees the VM's frames (they are redirected
//! between the vif and the veth), so a link of its own joins the two:
//!
//! - the vif, in the namespace, gets `NETNS_SIDE`; the VM's eth0 gets `VM_SIDE`;
//! - a tc pass on the vif lets frames between exactly those two addresses (and
//!   the ARP between them) up the namespace's stack instead of to the veth;
//! - nftables in the namespace sends TCP for 127.0.0.1 to `VM_SIDE`, from
//!   `NETNS_SIDE` (route_localnet lets a loopback source leave by the vif).
//!
//! All of it lives in the pod's namespace and on its vif: gone with them.
//! What the VM serves on its own loopback only is not reachable this way.

use std::net::Ipv4Addr;
use std::time::Duration;

use vxn_wire::protocol::{IpCidr, NetworkSetup, Route};

use crate::command;
use crate::error::{Error, Result};

/// What the VM's backend is called once in the namespace.
pub const VIF_IN_NETNS: &str = "vxn-vif0";

/// The namespace's and the VM's ends of the link (link-local, away from
/// Calico's 169.254.1.1 gateway and the 169.254.169.254 metadata address).
pub const NETNS_SIDE: Ipv4Addr = Ipv4Addr::new(169, 254, 99, 1);
pub const VM_SIDE: Ipv4Addr = Ipv4Addr::new(169, 254, 99, 2);
/// Before the guard's allowed filters (100+), after its forbidden ones.
const PREF: u32 = 90;
const TIMEOUT: Duration = Duration::from_secs(20);
const NFT_TABLE: &str = "vxn_localhost";

async fn run(program: &str, args: &[&str]) -> Result<()> {
    command::run(program, args, TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| Error::FailedPrecondition(format!("pod localhost link: {e}")))
}

/// The tc filters on the vif (in the namespace): what passes up its stack.
fn filters(mac: &str) -> Vec<Vec<String>> {
    let (ns, vm) = (format!("{NETNS_SIDE}/32"), format!("{VM_SIDE}/32"));
    let rule = |pref: u32, proto: &str, m: &[&str]| {
        let mut a: Vec<String> = [
            "filter",
            "add",
            "dev",
            VIF_IN_NETNS,
            "parent",
            "ffff:",
            "pref",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend([
            pref.to_string(),
            "protocol".into(),
            proto.into(),
            "flower".into(),
        ]);
        a.extend(["src_mac".into(), mac.into()]);
        a.extend(m.iter().map(|s| s.to_string()));
        a.extend(["action".into(), "pass".into()]);
        a
    };
    vec![
        rule(PREF, "ip", &["src_ip", &vm, "dst_ip", &ns]),
        rule(PREF + 1, "arp", &["arp_sip", &vm, "arp_tip", &ns]),
    ]
}

/// The namespace's NAT: TCP to its 127.0.0.1 goes to the VM's end.
fn nft_script() -> String {
    format!(
        "add table ip {NFT_TABLE}; delete table ip {NFT_TABLE}; table ip {NFT_TABLE} {{ \
         chain output {{ type nat hook output priority -100; policy accept; \
         ip daddr 127.0.0.1 meta l4proto tcp dnat to {VM_SIDE}; }}; \
         chain postrouting {{ type nat hook postrouting priority 100; policy accept; \
         oifname \"{VIF_IN_NETNS}\" ip saddr 127.0.0.0/8 snat to {NETNS_SIDE}; }}; }}"
    )
}

/// Make the link in namespace `netns` for the VM whose frames come from `mac`
/// (after the vif's guard is on it).
pub async fn join(netns: &str, mac: &str) -> Result<()> {
    let (ns, vm) = (format!("{NETNS_SIDE}/32"), format!("{VM_SIDE}/32"));
    run(
        "ip",
        &["-n", netns, "addr", "replace", &ns, "dev", VIF_IN_NETNS],
    )
    .await?;
    run(
        "ip",
        &[
            "-n",
            netns,
            "route",
            "replace",
            &vm,
            "dev",
            VIF_IN_NETNS,
            "scope",
            "link",
        ],
    )
    .await?;
    let sysctl = format!("net.ipv4.conf.{VIF_IN_NETNS}.route_localnet=1");
    run(
        "ip",
        &["netns", "exec", netns, "sysctl", "-q", "-w", &sysctl],
    )
    .await?;
    for args in filters(mac) {
        let mut argv = vec!["-n", netns];
        argv.extend(args.iter().map(String::as_str));
        run("tc", &argv).await?;
    }
    run("ip", &["netns", "exec", netns, "nft", &nft_script()])
        .await
        .map_err(|e| Error::FailedPrecondition(format!("{e} (dom0 needs nft with NAT)")))
}

/// The VM's end: its address on eth0 and the route to the namespace's end.
pub fn guest_setup(setup: &mut NetworkSetup, interface: &str) -> Result<()> {
    let nic = setup
        .interfaces
        .iter_mut()
        .find(|i| i.name == interface)
        .ok_or_else(|| Error::Internal(format!("no {interface} in the pod's network setup")))?;
    nic.addresses
        .push(IpCidr::new(VM_SIDE.into(), 32).map_err(Error::Internal)?);
    setup.routes.push(Route {
        destination: Some(IpCidr::new(NETNS_SIDE.into(), 32).map_err(Error::Internal)?),
        gateway: None,
        interface: Some(interface.into()),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_ends_pass_up_the_namespace_stack() {
        let f: Vec<String> = filters("0a:58:0a:58:00:05")
            .into_iter()
            .map(|a| a.join(" "))
            .collect();
        assert_eq!(
            f,
            [
                "filter add dev vxn-vif0 parent ffff: pref 90 protocol ip flower src_mac 0a:58:0a:58:00:05 src_ip 169.254.99.2/32 dst_ip 169.254.99.1/32 action pass",
                "filter add dev vxn-vif0 parent ffff: pref 91 protocol arp flower src_mac 0a:58:0a:58:00:05 arp_sip 169.254.99.2/32 arp_tip 169.254.99.1/32 action pass",
            ]
        );
    }

    #[test]
    fn localhost_tcp_goes_to_the_vm_and_the_table_is_replaced_whole() {
        let s = nft_script();
        assert!(s.starts_with("add table ip vxn_localhost; delete table ip vxn_localhost;"));
        assert!(s.contains("ip daddr 127.0.0.1 meta l4proto tcp dnat to 169.254.99.2;"));
        assert!(s.contains("oifname \"vxn-vif0\" ip saddr 127.0.0.0/8 snat to 169.254.99.1;"));
    }

    #[test]
    fn the_vm_gets_its_end_and_a_route_to_the_other() {
        let mut s = NetworkSetup {
            interfaces: vec![vxn_wire::protocol::Interface {
                mac: "0a:58:0a:58:00:05".into(),
                name: "eth0".into(),
                mtu: None,
                addresses: vec!["10.88.0.5/16".parse().unwrap()],
                dhcp: false,
            }],
            routes: vec![],
            dns: Default::default(),
            dns_relay: None,
        };
        guest_setup(&mut s, "eth0").unwrap();
        assert_eq!(s.interfaces[0].addresses[1].to_string(), "169.254.99.2/32");
        assert_eq!(
            s.routes[0].destination.unwrap().to_string(),
            "169.254.99.1/32"
        );
        s.validate().unwrap();
        assert!(guest_setup(&mut s, "eth1").is_err());
    }
}
