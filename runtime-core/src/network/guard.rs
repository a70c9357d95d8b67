//! Anti-spoofing on a VM's vif: what a guest may send, checked in dom0 on
//! the vif backend's ingress (the frames the guest transmits), before the
//! bridge or the pod's veth sees them.
//!
//! An allow-list of tc flower filters: frames from the vif's own MAC with
//! its own addresses (ARP with its own sender, IPv4/IPv6 with its own
//! source, DHCP client traffic in DHCP mode) are let through, DHCP server
//! replies and IPv6 router advertisements and redirects are dropped first,
//! and everything else is dropped last. The filters live on the vif device,
//! so they are made with it and gone with it: no rule outlives its VM.
//! (Xen's vif-bridge antispoof and Qubes' per-vif firewall follow the same
//! idea with iptables; tc needs no global table a dying shim could leave.)

use std::time::Duration;

use crate::command;
use crate::error::{Error, Result};
use crate::hypervisor::VifGuard;

const TC_TIMEOUT: Duration = Duration::from_secs(20);
/// Filter priorities: the drops of forbidden kinds, then the allowed, then
/// the final drop of the rest.
const PREF_FORBIDDEN: u32 = 10;
const PREF_ALLOWED: u32 = 100;
const PREF_REST: u32 = 60000;

/// Where an allowed frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed<'a> {
    /// On to the bridge the vif is a port of.
    Pass,
    /// Redirected to this device (a pod's veth).
    RedirectTo(&'a str),
}

/// The `tc filter add` argument lists for `dev`'s ingress, in order.
pub fn filters(g: &VifGuard, dev: &str, allowed: Allowed<'_>) -> Vec<Vec<String>> {
    let mac = g.mac.as_str();
    let allow: Vec<&str> = match allowed {
        Allowed::Pass => vec!["action", "pass"],
        Allowed::RedirectTo(to) => vec!["action", "mirred", "egress", "redirect", "dev", to],
    };
    let drop = vec!["action", "drop"];
    let mut rules: Vec<(&str, Vec<String>, &Vec<&str>)> = Vec::new();
    let own = |more: &[String]| {
        let mut m = vec!["src_mac".to_string(), mac.to_string()];
        m.extend_from_slice(more);
        m
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Forbidden whatever the source: a DHCP server's replies, IPv6 router
    // advertisements and redirects, a DHCPv6 server's replies.
    rules.push(("ip", s(&["ip_proto", "udp", "src_port", "67"]), &drop));
    for icmp_type in ["134", "137"] {
        rules.push(("ipv6", s(&["ip_proto", "icmpv6", "type", icmp_type]), &drop));
    }
    rules.push(("ipv6", s(&["ip_proto", "udp", "src_port", "547"]), &drop));
    let forbidden = rules.len();
    // ARP only with its own sender MAC and address (0.0.0.0: a probe).
    let mut arp_senders: Vec<String> = g.ipv4.iter().map(|(a, len)| format!("{a}/{len}")).collect();
    arp_senders.push("0.0.0.0/32".into());
    for sip in &arp_senders {
        rules.push(("arp", own(&s(&["arp_sha", mac, "arp_sip", sip])), &allow));
    }
    for (a, len) in &g.ipv4 {
        rules.push(("ip", own(&["src_ip".into(), format!("{a}/{len}")]), &allow));
    }
    if g.dhcp_client {
        rules.push((
            "ip",
            own(&s(&[
                "src_ip",
                "0.0.0.0/32",
                "ip_proto",
                "udp",
                "src_port",
                "68",
                "dst_port",
                "67",
            ])),
            &allow,
        ));
    }
    // IPv6 needs link-local (neighbour discovery) and :: (duplicate address
    // detection) besides its own addresses.
    let mut v6: Vec<String> = vec!["fe80::/10".into(), "::/128".into()];
    v6.extend(g.ipv6.iter().map(|a| format!("{a}/128")));
    for src in v6 {
        rules.push(("ipv6", own(&["src_ip".into(), src]), &allow));
    }
    let mut out: Vec<Vec<String>> = rules
        .into_iter()
        .enumerate()
        .map(|(i, (proto, keys, action))| {
            let pref = if i < forbidden {
                PREF_FORBIDDEN + i as u32
            } else {
                PREF_ALLOWED + (i - forbidden) as u32
            };
            let mut a = s(&["filter", "add", "dev", dev, "parent", "ffff:", "pref"]);
            a.push(pref.to_string());
            a.extend(s(&["protocol", proto, "flower"]));
            a.extend(keys);
            a.extend(action.iter().map(|x| x.to_string()));
            a
        })
        .collect();
    let mut rest = s(&["filter", "add", "dev", dev, "parent", "ffff:", "pref"]);
    rest.push(PREF_REST.to_string());
    rest.extend(s(&["protocol", "all", "matchall", "action", "drop"]));
    out.push(rest);
    out
}

/// Put the filters on `dev`'s ingress (in network namespace `netns`, if
/// given), replacing whatever ingress filters it had.
pub async fn apply(
    g: &VifGuard,
    dev: &str,
    netns: Option<&str>,
    allowed: Allowed<'_>,
) -> Result<()> {
    let ns: Vec<&str> = netns.map_or_else(Vec::new, |n| vec!["-n", n]);
    let _ = command::run(
        "tc",
        &[&ns[..], &["qdisc", "del", "dev", dev, "ingress"]].concat(),
        TC_TIMEOUT,
    )
    .await;
    // One tc for the qdisc and every filter: a batch stops at its first
    // error, and the filters' order is their priority anyway.
    let batch = batch(g, dev, allowed);
    let argv = [&ns[..], &["-batch", "-"]].concat();
    command::run_with_input("tc", &argv, batch.as_bytes(), TC_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| {
            Error::FailedPrecondition(format!(
                "anti-spoofing filters on {dev}: {e} (dom0 needs tc with the flower and matchall classifiers)"
            ))
        })
}

/// [`filters`] after the ingress qdisc, one tc command a line.
fn batch(g: &VifGuard, dev: &str, allowed: Allowed<'_>) -> String {
    let mut s = format!("qdisc add dev {dev} ingress\n");
    for args in filters(g, dev, allowed) {
        s.push_str(&args.join(" "));
        s.push('\n');
    }
    s
}
#[cfg(test)]
mod tests {
    use super::*;

    fn lines(g: &VifGuard, allowed: Allowed<'_>) -> Vec<String> {
        filters(g, "vif7.0", allowed)
            .into_iter()
            .map(|a| a.join(" "))
            .collect()
    }

    #[test]
    fn one_batch_adds_the_qdisc_then_every_filter_in_order() {
        let g = VifGuard::single("00:16:3e:aa:bb:cc", "10.0.100.201".parse().unwrap());
        let batch = batch(&g, "vif7.0", Allowed::Pass);
        let mut want = vec!["qdisc add dev vif7.0 ingress".to_string()];
        want.extend(lines(&g, Allowed::Pass));
        assert_eq!(batch.lines().collect::<Vec<_>>(), want);
        assert!(batch.ends_with('\n'));
    }

    #[test]
    fn a_static_vif_sends_only_its_own_mac_and_address() {
        let g = VifGuard::single("00:16:3e:aa:bb:cc", "10.0.100.201".parse().unwrap());
        let l = lines(&g, Allowed::Pass);
        let m = "src_mac 00:16:3e:aa:bb:cc";
        assert_eq!(
            l[0],
            "filter add dev vif7.0 parent ffff: pref 10 protocol ip flower ip_proto udp src_port 67 action drop"
        );
        assert!(l
            .iter()
            .any(|x| x.ends_with("ip_proto icmpv6 type 134 action drop")));
        assert!(l.contains(&format!(
            "filter add dev vif7.0 parent ffff: pref 100 protocol arp flower {m} arp_sha 00:16:3e:aa:bb:cc arp_sip 10.0.100.201/32 action pass"
        )));
        assert!(l.contains(&format!(
            "filter add dev vif7.0 parent ffff: pref 102 protocol ip flower {m} src_ip 10.0.100.201/32 action pass"
        )));
        // No DHCP client traffic and no other source.
        assert!(!l.iter().any(|x| x.contains("src_ip 0.0.0.0")));
        assert_eq!(
            l.last().unwrap(),
            "filter add dev vif7.0 parent ffff: pref 60000 protocol all matchall action drop"
        );
        // Every allow names the MAC; every drop comes before every allow.
        let first_allow = l.iter().position(|x| x.ends_with("pass")).unwrap();
        assert!(l[first_allow..l.len() - 1].iter().all(|x| x.contains(m)));
        assert!(l[..first_allow].iter().all(|x| x.ends_with("drop")));
    }

    #[test]
    fn a_dhcp_client_may_ask_and_use_its_one_address_only() {
        let mut g = VifGuard::single("00:16:3e:00:00:01", "10.0.100.60".parse().unwrap());
        g.dhcp_client = true;
        let l = lines(&g, Allowed::Pass).join("\n");
        assert!(l.contains("src_ip 0.0.0.0/32 ip_proto udp src_port 68 dst_port 67 action pass"));
        assert!(l.contains("src_ip 10.0.100.60/32 action pass"));
        assert_eq!(l.matches("src_ip 10.0.100.").count(), 1, "{l}");
    }

    #[test]
    fn a_pods_vif_redirects_what_it_allows_to_the_veth() {
        let g = VifGuard::for_addresses(
            "0a:58:0a:58:00:05",
            &[
                "10.88.0.5/16".parse().unwrap(),
                "fd00::5/64".parse().unwrap(),
            ],
        );
        let l = lines(&g, Allowed::RedirectTo("eth0"));
        assert!(l.contains(&"filter add dev vif7.0 parent ffff: pref 102 protocol ip flower src_mac 0a:58:0a:58:00:05 src_ip 10.88.0.5/32 action mirred egress redirect dev eth0".to_string()));
        assert!(l
            .iter()
            .any(|x| x.contains("src_ip fd00::5/128 action mirred")));
        assert!(l
            .iter()
            .any(|x| x.contains("src_ip fe80::/10 action mirred")));
        assert!(!l.iter().any(|x| x.ends_with("pass")));
    }
}
