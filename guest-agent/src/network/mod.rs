//! The guest's network: lo and the host's interfaces set up as the host
//! asks (`SetupNetwork`), and the files a container needs to use it
//! (/etc/hosts, /etc/resolv.conf, /etc/hostname) unless its spec brings its own.

mod dhcp;
mod netlink;

use std::time::{Duration, Instant};

use vxn_wire::protocol::{
    parse_mac, AgentError, Dns, ErrorKind, Interface, IpCidr, MountKind, MountSpec, NetworkSetup,
    NetworkState,
};

use netlink::Netlink;

/// How long a device the host attached may take to appear in the guest
/// (netfront probes after the agent starts).
const DEVICE_WAIT: Duration = Duration::from_secs(20);

fn err(kind: ErrorKind, msg: impl Into<String>) -> AgentError {
    AgentError::new(kind, msg)
}

fn internal(e: impl std::fmt::Display) -> AgentError {
    err(ErrorKind::Internal, e.to_string())
}

/// The interface with this MAC: (name, index), once it exists.
fn find_by_mac(mac: &[u8; 6]) -> Option<(String, u32)> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        let Some(link) = a.address.as_ref().and_then(|s| s.as_link_addr()) else {
            continue;
        };
        if link.addr() == Some(*mac) {
            let index = nix::net::if_::if_nametoindex(a.interface_name.as_str()).ok()?;
            return Some((a.interface_name, index));
        }
    }
    None
}

async fn wait_for_device(iface: &Interface) -> Result<(String, u32), AgentError> {
    let mac = parse_mac(&iface.mac).map_err(|e| err(ErrorKind::InvalidArgument, e))?;
    let deadline = Instant::now() + DEVICE_WAIT;
    loop {
        if let Some(found) = find_by_mac(&mac) {
            return Ok(found);
        }
        if Instant::now() > deadline {
            return Err(err(
                ErrorKind::NotFound,
                format!(
                    "no network device with MAC {} appeared in {} s",
                    iface.mac,
                    DEVICE_WAIT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bring the loopback interface up.
pub fn loopback_up() -> Result<(), AgentError> {
    let lo = nix::net::if_::if_nametoindex("lo").map_err(internal)?;
    Netlink::open()
        .map_err(internal)?
        .set_up(lo)
        .map_err(internal)
}

/// Set the network up as asked; returns what the guest ended up with.
pub async fn setup(req: NetworkSetup) -> Result<NetworkState, AgentError> {
    req.validate()
        .map_err(|e| err(ErrorKind::InvalidArgument, e))?;
    let mut state = NetworkState {
        dns: req.dns.clone(),
        ..NetworkState::default()
    };
    let lo = nix::net::if_::if_nametoindex("lo").map_err(internal)?;
    let mut nl = Netlink::open().map_err(internal)?;
    nl.set_up(lo).map_err(internal)?;
    configure(&mut nl, &req, &mut state).await?;
    if let Some(relay) = req.dns_relay {
        start_dns_relay(relay).await?;
    }
    tracing::info!(
        addresses = ?state.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        gateway = ?state.gateway,
        "network ready"
    );
    Ok(state)
}

/// More interfaces on a running VM (a network connected later): each with
/// its addresses and routes, added to `state`. DNS and relays stay the first
/// setup's; a name the guest already uses is refused.
pub async fn add_interfaces(
    req: NetworkSetup,
    state: &mut NetworkState,
) -> Result<NetworkState, AgentError> {
    req.validate()
        .map_err(|e| err(ErrorKind::InvalidArgument, e))?;
    if req.dns_relay.is_some() || req.interfaces.iter().any(|i| i.dhcp) {
        return Err(err(
            ErrorKind::InvalidArgument,
            "added interfaces take static addresses only, and no DNS relay",
        ));
    }
    for i in &req.interfaces {
        let mac = parse_mac(&i.mac).map_err(|e| err(ErrorKind::InvalidArgument, e))?;
        let taken = nix::net::if_::if_nametoindex(i.name.as_str()).is_ok();
        if taken && find_by_mac(&mac).map(|(name, _)| name) != Some(i.name.clone()) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!("the guest has an interface named {} already", i.name),
            ));
        }
    }
    let mut nl = Netlink::open().map_err(internal)?;
    let mut added = NetworkState::default();
    configure(&mut nl, &req, &mut added).await?;
    tracing::info!(
        interfaces = ?req.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        addresses = ?added.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "interfaces added"
    );
    state.addresses.extend(added.addresses.iter().copied());
    state.addresses.truncate(vxn_wire::protocol::MAX_ADDRESSES);
    Ok(added)
}

/// Each interface of `req` (found by MAC, renamed, MTU, up, addresses or a
/// DHCP lease), then its routes; what was set goes into `state`.
async fn configure(
    nl: &mut Netlink,
    req: &NetworkSetup,
    state: &mut NetworkState,
) -> Result<(), AgentError> {
    let mut indexes = Vec::new();
    for iface in &req.interfaces {
        let (current, index) = wait_for_device(iface).await?;
        if current != iface.name {
            nl.rename(index, &iface.name).map_err(internal)?;
        }
        if let Some(mtu) = iface.mtu {
            nl.set_mtu(index, mtu).map_err(internal)?;
        }
        nl.set_up(index).map_err(internal)?;
        for a in &iface.addresses {
            nl.add_address(index, a).map_err(internal)?;
            state.addresses.push(*a);
        }
        if iface.dhcp {
            let lease = dhcp::obtain(&iface.name, &iface.mac).await.map_err(|e| {
                err(
                    ErrorKind::Unavailable,
                    format!("DHCP on {}: {e}", iface.name),
                )
            })?;
            nl.add_address(index, &lease.address).map_err(internal)?;
            state.addresses.push(lease.address);
            if let Some(gw) = lease.router {
                nl.add_route(None, Some(&gw), Some(index))
                    .map_err(internal)?;
                state.gateway = Some(gw);
            }
            if state.dns.servers.is_empty() {
                state.dns.servers = lease.dns.clone();
            }
            dhcp::keep_renewing(iface.name.clone(), iface.mac.clone(), lease);
        }
        indexes.push((iface.name.clone(), index));
    }
    for r in &req.routes {
        let oif = r
            .interface
            .as_ref()
            .and_then(|n| indexes.iter().find(|(name, _)| name == n).map(|(_, i)| *i));
        nl.add_route(r.destination.as_ref(), r.gateway.as_ref(), oif)
            .map_err(internal)?;
        if r.destination.is_none() && state.gateway.is_none() {
            state.gateway = r.gateway;
        }
    }
    Ok(())
}

/// The guest's half of the relay to an engine's resolver (vxn_wire::dns_relay):
/// bound before the answer, so the container's first lookup finds it; one per
/// listening address for the VM's life.
async fn start_dns_relay(relay: vxn_wire::protocol::DnsRelay) -> Result<(), AgentError> {
    static RUNNING: std::sync::Mutex<Vec<std::net::SocketAddr>> = std::sync::Mutex::new(Vec::new());
    if RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&relay.listen)
    {
        return Ok(());
    }
    let bound = vxn_wire::dns_relay::bind(relay.listen)
        .await
        .map_err(|e| internal(format!("DNS relay on {}: {e}", relay.listen)))?;
    RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(relay.listen);
    tokio::spawn(async move {
        let r = bound.serve(relay.upstream, relay.source).await;
        tracing::warn!(listen = %relay.listen, error = ?r.err(), "the DNS relay ended");
    });
    tracing::info!(listen = %relay.listen, upstream = %relay.upstream, "DNS relay");
    Ok(())
}

/// The hostname a container gets: its spec's, or its id (as Docker does),
/// cut to what the kernel takes.
pub fn hostname_for(spec_hostname: Option<&str>, container_id: &str) -> String {
    let h = spec_hostname
        .filter(|h| !h.is_empty())
        .unwrap_or(container_id);
    h.chars().take(64).collect()
}

fn resolv_conf(dns: &Dns) -> String {
    let mut s = String::new();
    for server in &dns.servers {
        s.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.search.is_empty() {
        s.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    if !dns.options.is_empty() {
        s.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    s
}

fn hosts(hostname: &str, addresses: &[IpCidr]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match addresses.first() {
        Some(a) => s.push_str(&format!("{}\t{hostname}\n", a.address)),
        None => s.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    s
}

/// File mounts for the network's /etc files that the spec does not mount
/// itself: a container of a VM with a network sees its own address and DNS.
pub fn container_files(
    state: &NetworkState,
    hostname: &str,
    spec_mounts: &[MountSpec],
) -> Vec<MountSpec> {
    let wanted = [
        ("/etc/hosts", hosts(hostname, &state.addresses)),
        ("/etc/hostname", format!("{hostname}\n")),
        ("/etc/resolv.conf", resolv_conf(&state.dns)),
    ];
    wanted
        .into_iter()
        .filter(|(dest, _)| {
            !spec_mounts
                .iter()
                .any(|m| m.destination.trim_end_matches('/') == *dest)
        })
        .map(|(dest, contents)| MountSpec {
            destination: dest.into(),
            kind: MountKind::File {
                contents,
                mode: 0o644,
            },
            options: vec![],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_name_the_container_and_skip_what_the_spec_mounts() {
        let state = NetworkState {
            addresses: vec!["10.0.100.201/24".parse().unwrap()],
            gateway: None,
            dns: Dns {
                servers: vec!["10.0.100.1".parse().unwrap()],
                search: vec!["example.org".into()],
                options: vec![],
            },
        };
        let spec = vec![MountSpec {
            destination: "/etc/resolv.conf".into(),
            kind: MountKind::File {
                contents: "nameserver 9.9.9.9\n".into(),
                mode: 0o644,
            },
            options: vec![],
        }];
        let files = container_files(&state, "web1", &spec);
        assert_eq!(files.len(), 2);
        let MountKind::File { contents, .. } = &files[0].kind else {
            panic!()
        };
        assert!(contents.contains("10.0.100.201\tweb1\n"), "{contents}");
        assert_eq!(
            resolv_conf(&state.dns),
            "nameserver 10.0.100.1\nsearch example.org\n"
        );
        assert_eq!(hostname_for(None, "c1"), "c1");
        assert_eq!(hostname_for(Some(""), "c1"), "c1");
        assert_eq!(hostname_for(Some("h"), "c1"), "h");
    }
}
