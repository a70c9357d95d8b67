//! A CRI pod's network. CRI runs CNI in the pod's network namespace before
//! it creates the sandbox, so the namespace already holds a veth (`eth0`)
//! with the pod's address and routes. The pod VM gets a vif with that veth's
//! MAC; its dom0 backend is moved into the namespace and joined to the veth
//! by two tc mirred redirects (kata's "tc filter" model). Frames pass
//! straight through: the VM's eth0 is the pod's interface, what CNI set up
//! on the host side (bridge, routes, NAT, port maps) holds unchanged.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vxn_wire::protocol::{Dns, DnsRelay, Interface, IpCidr, NetworkSetup, Route};

use super::guard::{self, Allowed};
use super::pod_localhost::VIF_IN_NETNS;
use crate::command;
use crate::error::{Error, Result};
use crate::hypervisor::{Hypervisor, Vif, VifGuard, VifLink};
use crate::AgentClient;

/// The interface CNI creates in the pod's namespace (containerd's CNI_IFNAME).
pub const CNI_INTERFACE: &str = "eth0";
/// Every backend of the VM's in the namespace is named so.
const VIF_PREFIX: &str = "vxn-";
const IP_TIMEOUT: Duration = Duration::from_secs(20);

/// The named network namespace CRI made for a pod (`/var/run/netns/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetns {
    pub name: String,
    pub path: PathBuf,
}

/// An interface of the namespace as CNI (or an engine) left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNic {
    /// Its name in the namespace (the guest's interface takes the same).
    pub name: String,
    pub ifindex: u32,
    pub mac: String,
    pub mtu: u32,
    pub addresses: Vec<IpCidr>,
    pub routes: Vec<Route>,
}

#[derive(Deserialize)]
struct IpLink {
    #[serde(default)]
    ifindex: u32,
    #[serde(default)]
    ifname: String,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    address: String,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

#[derive(Deserialize)]
struct IpAddrInfo {
    local: IpAddr,
    prefixlen: u8,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    protocol: Option<String>,
}

async fn ip(args: &[&str]) -> Result<String> {
    command::run("ip", args, IP_TIMEOUT)
        .await
        .map(|o| o.stdout)
        .map_err(|e| Error::Internal(e.to_string()))
}

async fn tc(args: &[&str]) -> Result<()> {
    command::run("tc", args, IP_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| Error::Internal(e.to_string()))
}

impl PodNetns {
    /// The namespace at `path`; only named namespaces (`ip netns`) can take a
    /// moved device by name, and CRI's are all named.
    pub fn at(path: &Path) -> Result<Self> {
        let name = path
            .parent()
            .filter(|d| *d == Path::new("/var/run/netns") || *d == Path::new("/run/netns"))
            .and(path.file_name())
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "network namespace {}: vxn pods need a named namespace under /var/run/netns",
                    path.display()
                ))
            })?;
        if !path.exists() {
            return Err(Error::InvalidArgument(format!(
                "network namespace {} does not exist",
                path.display()
            )));
        }
        Ok(Self {
            name: name.into(),
            path: path.into(),
        })
    }

    /// Read the CNI interface: MAC, MTU, global addresses, and the routes CNI
    /// added (the kernel's own subnet routes follow from the addresses).
    pub async fn inspect(&self) -> Result<PodNic> {
        let n = self.name.as_str();
        let links: Vec<IpLink> = parse(
            &ip(&["-n", n, "-j", "addr", "show", "dev", CNI_INTERFACE])
                .await
                .map_err(|e| {
                    Error::FailedPrecondition(format!(
                        "pod network namespace {n} has no {CNI_INTERFACE} (is CNI configured?): {e}"
                    ))
                })?,
        )?;
        let link = links
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal(format!("no {CNI_INTERFACE} in {n}")))?;
        // One VM per namespace: a second would take the same MAC and addresses.
        if ip(&["-n", n, "link", "show", "dev", VIF_IN_NETNS])
            .await
            .is_ok()
        {
            return Err(Error::FailedPrecondition(format!(
                "network namespace {n} is joined by a VM already: its {CNI_INTERFACE} can be \
                 one VM's only (containers sharing a namespace, such as a Podman pod's, would \
                 each be a VM of their own)"
            )));
        }
        self.nic(link).await
    }

    /// Every Ethernet interface of the namespace but `lo` and the VM's own
    /// backends (an engine adds one per network it connects the container to).
    pub async fn interfaces(&self) -> Result<Vec<PodNic>> {
        let links: Vec<IpLink> = parse(&ip(&["-n", &self.name, "-j", "addr", "show"]).await?)?;
        let mut nics = Vec::new();
        for link in links {
            if link.link_type == "ether" && !link.ifname.starts_with(VIF_PREFIX) {
                nics.push(self.nic(link).await?);
            }
        }
        Ok(nics)
    }

    async fn nic(&self, link: IpLink) -> Result<PodNic> {
        let n = self.name.as_str();
        let addresses = link
            .addr_info
            .iter()
            .filter(|a| a.scope != "link" && a.scope != "host")
            .map(|a| IpCidr::new(a.local, a.prefixlen).map_err(Error::Internal))
            .collect::<Result<Vec<_>>>()?;
        let name = if link.ifname.is_empty() {
            CNI_INTERFACE.to_string()
        } else {
            link.ifname
        };
        let mut routes = Vec::new();
        for family in ["-4", "-6"] {
            let text = ip(&["-n", n, family, "-j", "route", "show", "dev", &name]).await?;
            for r in parse::<Vec<IpRoute>>(&text)? {
                if r.protocol.as_deref() == Some("kernel") || r.dst.starts_with("fe80:") {
                    continue;
                }
                routes.push(Route {
                    destination: route_destination(&r.dst)?,
                    gateway: r.gateway,
                    interface: Some(name.clone()),
                });
            }
        }
        Ok(PodNic {
            name,
            ifindex: link.ifindex,
            mac: link.address,
            mtu: link.mtu,
            addresses,
            routes,
        })
    }

    /// Move the VM's backend device into the namespace and redirect frames
    /// between it and the veth: all of them towards the VM, what `guard`
    /// allows from it. The first interface also gets the VM's end of the
    /// namespace's localhost link.
    pub async fn join(&self, nic: &PodNic, vif: &str, guard: &VifGuard) -> Result<()> {
        self.join_link(nic, vif, guard).await?;
        super::pod_localhost::join(&self.name, &guard.mac).await
    }

    /// [`join`](Self::join) without the localhost link: one more network.
    pub async fn join_link(&self, nic: &PodNic, vif: &str, guard: &VifGuard) -> Result<()> {
        let n = self.name.as_str();
        let backend = nic.backend_name();
        ip(&["link", "set", "dev", vif, "netns", n]).await?;
        ip(&["-n", n, "link", "set", "dev", vif, "name", &backend]).await?;
        let mtu = nic.mtu.to_string();
        ip(&["-n", n, "link", "set", "dev", &backend, "mtu", &mtu, "up"]).await?;
        // The guest's frames first: nothing it sends passes before its guard.
        guard::apply(guard, &backend, Some(n), Allowed::RedirectTo(&nic.name)).await?;
        tc(&["-n", n, "qdisc", "replace", "dev", &nic.name, "ingress"]).await?;
        tc(&[
            "-n", n, "filter", "add", "dev", &nic.name, "parent", "ffff:", "protocol", "all",
            "u32", "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev",
            &backend,
        ])
        .await?;
        Ok(())
    }

    /// Undo [`join`](Self::join) on the veth side (the vif goes with its VM).
    /// A namespace CNI already removed leaves nothing to undo.
    pub async fn leave(&self) {
        if !self.path.exists() {
            return;
        }
        let _ = tc(&[
            "-n",
            &self.name,
            "qdisc",
            "del",
            "dev",
            CNI_INTERFACE,
            "ingress",
        ])
        .await;
    }
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::Internal(format!("parse `ip -j` output: {e}")))
}

fn route_destination(dst: &str) -> Result<Option<IpCidr>> {
    if dst == "default" {
        return Ok(None);
    }
    let (a, len) = match dst.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()),
        None => (dst, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| Error::Internal(format!("route destination {dst:?}")))?;
    let len = len.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
    IpCidr::new(addr, len).map(Some).map_err(Error::Internal)
}

impl PodNetns {
    /// The VM's vif for this namespace: the veth's MAC (what CNI, its ARP
    /// and its anti-spoofing know holds), on no bridge: [`attach`](Self::attach)
    /// moves it into the namespace once the VM exists.
    pub fn vif(nic: &PodNic) -> Vif {
        nic.vif()
    }

    /// The booted VM (made with [`vif`](Self::vif)) takes the namespace's
    /// interface: its backend joins the veth, the guest gets its addresses,
    /// and with `dns_relay` the guest's DNS relay (`netns_dns`).
    pub async fn attach(
        &self,
        nic: &PodNic,
        hv: &dyn Hypervisor,
        domain: &str,
        agent: &AgentClient,
        dns_relay: Option<DnsRelay>,
    ) -> Result<()> {
        let t = std::time::Instant::now();
        let vif = hv.vif_device(domain).await?;
        self.join(nic, &vif, &nic.guard()).await?;
        let setup = NetworkSetup {
            dns_relay,
            ..nic.guest_setup()?
        };
        let got = agent
            .setup_network(setup)
            .await
            .map_err(|e| Error::from(e).context("set up the namespace's network in the guest"))?;
        tracing::info!(
            took_ms = t.elapsed().as_millis() as u64,
            netns = %self.name,
            address = ?got.addresses.first().map(|a| a.to_string()),
            "timing: netns network ready"
        );
        Ok(())
    }
}

impl PodNic {
    /// What the VM may send: the veth's MAC with CNI's addresses.
    pub fn guard(&self) -> VifGuard {
        VifGuard::for_addresses(&self.mac, &self.addresses)
    }

    /// A vif for this interface, left out of any bridge by the backend: the
    /// caller joins it to the veth.
    pub fn vif(&self) -> Vif {
        Vif {
            link: VifLink::Unplugged,
            mac: self.mac.clone(),
            guard: self.guard(),
        }
    }

    /// The name of the VM's backend for this interface in the namespace:
    /// `vxn-vif0` for the first (what tells a joined namespace), `vxn-ifN`
    /// (N: the veth's index, unique in the namespace) for those added later.
    pub fn backend_name(&self) -> String {
        if self.name == CNI_INTERFACE {
            VIF_IN_NETNS.into()
        } else {
            format!("{VIF_PREFIX}if{}", self.ifindex)
        }
    }

    /// The guest's setup of an interface added later: itself and its routes.
    pub fn added_setup(&self) -> NetworkSetup {
        NetworkSetup {
            interfaces: vec![self.interface()],
            routes: self.routes.clone(),
            dns: Dns::default(),
            dns_relay: None,
        }
    }

    fn interface(&self) -> Interface {
        Interface {
            mac: self.mac.clone(),
            name: self.name.clone(),
            mtu: Some(self.mtu).filter(|m| *m > 0),
            addresses: self.addresses.clone(),
            dhcp: false,
        }
    }

    /// What the agent is asked to set up: the veth's MAC, MTU, addresses
    /// and routes on the VM's interface, and its end of the namespace's
    /// localhost link. DNS and /etc files come with the containers' mounts
    /// (CRI binds hosts, hostname and resolv.conf).
    pub fn guest_setup(&self) -> Result<NetworkSetup> {
        let mut setup = self.added_setup();
        super::pod_localhost::guest_setup(&mut setup, &self.name)?;
        Ok(setup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_namespaces_are_taken() {
        assert!(PodNetns::at(Path::new("/proc/1/ns/net")).is_err());
        assert!(PodNetns::at(Path::new("/var/run/netns/../x")).is_err());
        let e = PodNetns::at(Path::new("/var/run/netns/cni-does-not-exist")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    /// A real namespace (root and iproute2): its eth0 is read with MAC,
    /// address and routes; once a VM's backend is in it, a second VM is
    /// refused (it would take the same MAC and addresses).
    #[tokio::test]
    async fn a_namespace_a_vm_has_joined_is_refused() {
        let Some(t) = crate::network::test_netns::TestNetns::new("joined") else {
            return;
        };
        let ns = PodNetns::at(&t.path()).unwrap();
        t.ip(&[
            "link",
            "add",
            "eth0",
            "address",
            "0a:58:0a:58:00:05",
            "type",
            "veth",
            "peer",
            "name",
            "peer0",
        ]);
        t.ip(&["addr", "add", "10.88.0.5/16", "dev", "eth0"]);
        t.ip(&["link", "set", "eth0", "up"]);
        t.ip(&["link", "set", "peer0", "up"]);
        t.ip(&["route", "add", "default", "via", "10.88.0.1", "dev", "eth0"]);
        let nic = ns.inspect().await.unwrap();
        assert_eq!(
            (nic.name.as_str(), nic.mac.as_str()),
            ("eth0", "0a:58:0a:58:00:05")
        );
        assert_eq!(nic.addresses[0].to_string(), "10.88.0.5/16");
        assert_eq!(nic.routes.len(), 1, "{:?}", nic.routes);
        assert_eq!(nic.routes[0].gateway, Some("10.88.0.1".parse().unwrap()));
        t.ip(&["link", "set", "peer0", "name", VIF_IN_NETNS]);
        let e = ns.inspect().await.unwrap_err().to_string();
        assert!(e.contains("joined by a VM already"), "{e}");
    }

    #[test]
    fn reads_ip_json() {
        let links: Vec<IpLink> = parse(
            r#"[{"ifindex":3,"ifname":"eth0","mtu":1450,"address":"0a:58:0a:58:00:05",
            "addr_info":[{"family":"inet","local":"10.88.0.5","prefixlen":16,"scope":"global"},
            {"family":"inet6","local":"fe80::858:aff:fe58:5","prefixlen":64,"scope":"link"}]}]"#,
        )
        .unwrap();
        assert_eq!(links[0].mtu, 1450);
        let routes: Vec<IpRoute> = parse(
            r#"[{"dst":"default","gateway":"10.88.0.1","flags":[]},
            {"dst":"10.88.0.0/16","protocol":"kernel","scope":"link","prefsrc":"10.88.0.5","flags":[]}]"#,
        )
        .unwrap();
        assert_eq!(routes[0].gateway, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(route_destination("default").unwrap(), None);
        assert_eq!(
            route_destination("10.1.0.0/16")
                .unwrap()
                .unwrap()
                .to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(
            route_destination("10.1.2.3").unwrap().unwrap().to_string(),
            "10.1.2.3/32"
        );
    }
}
