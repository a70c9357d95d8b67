//! Networks an engine connects a running container to (`docker network
//! connect`, `podman network connect`). The engine adds a veth to the
//! container's namespace and tells no runtime: a runc container sees it at
//! once. A VM sees it only through a vif of its own, so this follows the
//! namespace for the container's life: an Ethernet interface that appears
//! with an address becomes one more vif of the VM, joined to its veth as
//! the first one is (guard, tc redirects both ways) and configured in the
//! guest under the same name; one that goes (`network disconnect`) takes its
//! vif with it. Kata's netmon watched its VMs' namespaces the same way.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::model::sandbox::Sandbox;
use crate::network::pod_netns::{PodNetns, PodNic, CNI_INTERFACE};

/// How long the namespace must stay quiet before it is read: an engine
/// moves, renames, addresses and raises a veth in several steps.
const SETTLE: Duration = Duration::from_millis(300);
/// A namespace that never goes quiet is read after this anyway.
const SETTLE_MAX: Duration = Duration::from_secs(3);
/// Interfaces beyond the first a VM takes (the agent's own bound is 8).
const MAX_ADDED: usize = vxn_wire::protocol::MAX_INTERFACES - 1;
/// Link and address changes, IPv4 and IPv6.
const GROUPS: u32 =
    (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;

/// The follower of one container's namespace; it stops when dropped.
pub struct NetnsFollower {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NetnsFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follow `ns`, whose first interface (`eth0`) the VM of `sandbox` has
/// joined already.
/// Interfaces the namespace holds now besides the first (an engine that
/// connected the container to several networks before it started) are
/// taken at once.
pub fn start(ns: PodNetns, sandbox: Arc<Sandbox>) -> Result<NetnsFollower> {
    let events = subscribe(&ns.path)
        .map_err(|e| Error::Internal(format!("watch {}: {e}", ns.path.display())))?;
    let mut follower = Follower {
        ns,
        sandbox,
        joined: HashMap::new(),
        failed: HashSet::new(),
    };
    let task = tokio::spawn(async move {
        follower.reconcile().await;
        loop {
            if let Err(e) = settled(&events).await {
                tracing::warn!(netns = %follower.ns.name, error = %e, "netns: no more events");
                return;
            }
            follower.reconcile().await;
        }
    });
    Ok(NetnsFollower { task })
}

struct Follower {
    ns: PodNetns,
    sandbox: Arc<Sandbox>,
    /// Interfaces added to the VM: name -> MAC.
    joined: HashMap<String, String>,
    /// (name, MAC) that could not be added: not tried again as they are.
    failed: HashSet<(String, String)>,
}

impl Follower {
    /// Make the VM's interfaces the namespace's: add what is new, remove
    /// what is gone. Errors are logged: the container runs on.
    async fn reconcile(&mut self) {
        let nics = match self.ns.interfaces().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(netns = %self.ns.name, error = %e, "netns: cannot list interfaces");
                return;
            }
        };
        let plan = plan(&nics, &self.joined, &self.failed);
        for (name, mac) in plan.remove {
            self.joined.remove(&name);
            let hv = self.sandbox.hypervisor();
            match hv.detach_vif(self.sandbox.domain(), &mac).await {
                Ok(()) => tracing::info!(netns = %self.ns.name, %name, %mac, "network left"),
                Err(e) => tracing::warn!(%name, %mac, error = %e, "netns: detach the vif"),
            }
        }
        for nic in plan.add {
            let key = (nic.name.clone(), nic.mac.clone());
            if self.joined.len() >= MAX_ADDED {
                tracing::warn!(name = %nic.name, "netns: the VM has its {MAX_ADDED} added interfaces");
                self.failed.insert(key);
                continue;
            }
            match self.add(nic).await {
                Ok(()) => {
                    tracing::info!(netns = %self.ns.name, name = %nic.name, mac = %nic.mac,
                        addresses = ?nic.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        "network joined");
                    self.joined.insert(key.0, key.1);
                }
                Err(e) => {
                    tracing::warn!(netns = %self.ns.name, name = %nic.name, error = %e,
                        "netns: the VM cannot join this network");
                    let _ = self
                        .sandbox
                        .hypervisor()
                        .detach_vif(self.sandbox.domain(), &nic.mac)
                        .await;
                    self.failed.insert(key);
                }
            }
        }
    }

    async fn add(&self, nic: &PodNic) -> Result<()> {
        let vif = nic.vif();
        let dev = self
            .sandbox
            .hypervisor()
            .attach_vif(self.sandbox.domain(), &vif)
            .await?;
        self.ns.join_link(nic, &dev, &vif.guard).await?;
        self.sandbox
            .agent()
            .add_interfaces(nic.added_setup())
            .await
            .map_err(|e| Error::from(e).context("add the interface in the guest"))?;
        Ok(())
    }
}

/// What a reconcile does.
#[derive(Debug, Default, PartialEq)]
struct Plan<'a> {
    /// (name, MAC) of joined interfaces that are gone or changed.
    remove: Vec<(String, String)>,
    add: Vec<&'a PodNic>,
}

/// New interfaces are taken once they have an address (an engine adds it
/// after the move); the first is the VM's from its boot; one that changed
/// MAC under the same name is removed, then taken again.
fn plan<'a>(
    nics: &'a [PodNic],
    joined: &HashMap<String, String>,
    failed: &HashSet<(String, String)>,
) -> Plan<'a> {
    let mut p = Plan::default();
    for (name, mac) in joined {
        if !nics.iter().any(|n| n.name == *name && n.mac == *mac) {
            p.remove.push((name.clone(), mac.clone()));
        }
    }
    p.remove.sort();
    for nic in nics {
        let known = joined.get(&nic.name) == Some(&nic.mac);
        let tried = failed.contains(&(nic.name.clone(), nic.mac.clone()));
        if nic.name != CNI_INTERFACE && !known && !tried && !nic.addresses.is_empty() {
            p.add.push(nic);
        }
    }
    p
}

/// A netlink socket in the namespace at `netns`, subscribed to its link
/// and address changes (a socket stays its namespace's whoever reads it).
fn subscribe(netns: &Path) -> std::io::Result<AsyncFd<OwnedFd>> {
    let file = std::fs::File::open(netns)?;
    let fd = std::thread::scope(|s| {
        s.spawn(|| -> nix::Result<OwnedFd> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let fd = socket(
                AddressFamily::Netlink,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                SockProtocol::NetlinkRoute,
            )?;
            bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUPS))?;
            Ok(fd)
        })
        .join()
        .unwrap_or(Err(nix::Error::EIO))
    })?;
    // SAFETY: the fd is ours alone (just made, owned by the AsyncFd from here
    // on) and non-blocking, as the reactor needs.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Wait for a change, then until the namespace has been quiet for
/// [`SETTLE`] (at most [`SETTLE_MAX`]).
async fn settled(events: &AsyncFd<OwnedFd>) -> std::io::Result<()> {
    changed(events).await?;
    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(SETTLE, changed(events)).await {
            Ok(r) => r?,
            Err(_) => break,
        }
    }
    Ok(())
}

/// One batch of netlink messages read and dropped (what changed is read
/// from the namespace afterwards). An overrun is a change too.
async fn changed(events: &AsyncFd<OwnedFd>) -> std::io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let mut ready = events.readable().await?;
        match ready.try_io(|fd| {
            recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(std::io::Error::from)
        }) {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, mac: &str, address: Option<&str>) -> PodNic {
        PodNic {
            name: name.into(),
            ifindex: 7,
            mac: mac.into(),
            mtu: 1500,
            addresses: address.iter().map(|a| a.parse().unwrap()).collect(),
            routes: vec![],
        }
    }

    #[test]
    fn a_new_interface_is_taken_once_it_has_an_address() {
        let eth0 = nic("eth0", "02:42:ac:11:00:02", Some("172.17.0.2/16"));
        let bare = nic("eth1", "02:42:ac:12:00:02", None);
        let (joined, failed) = (HashMap::new(), HashSet::new());
        let nics = [eth0.clone(), bare];
        assert_eq!(plan(&nics, &joined, &failed), Plan::default());
        let eth1 = nic("eth1", "02:42:ac:12:00:02", Some("172.18.0.2/16"));
        let nics = [eth0, eth1.clone()];
        let p = plan(&nics, &joined, &failed);
        assert_eq!(p.add, vec![&eth1]);
        assert!(p.remove.is_empty());
    }

    #[test]
    fn a_joined_interface_that_goes_or_changes_is_removed() {
        let eth1 = nic("eth1", "02:42:ac:12:00:02", Some("172.18.0.2/16"));
        let joined = HashMap::from([("eth1".to_string(), eth1.mac.clone())]);
        let failed = HashSet::new();
        assert_eq!(
            plan(std::slice::from_ref(&eth1), &joined, &failed),
            Plan::default()
        );
        let p = plan(&[], &joined, &failed);
        assert_eq!(p.remove, vec![("eth1".into(), eth1.mac.clone())]);
        // the same name on another network: the old vif goes, the new one comes
        let other = nic("eth1", "02:42:ac:13:00:02", Some("172.19.0.2/16"));
        let p = plan(std::slice::from_ref(&other), &joined, &failed);
        assert_eq!(p.remove, vec![("eth1".into(), eth1.mac.clone())]);
        assert_eq!(p.add, vec![&other]);
    }

    /// A real namespace (root and iproute2): a link an engine adds is an
    /// event, and it is listed with its address; the VM's backends are not.
    #[tokio::test]
    async fn a_link_added_to_the_namespace_is_seen() {
        let Some(t) = crate::network::test_netns::TestNetns::new("follow") else {
            return;
        };
        let ns = PodNetns::at(&t.path()).unwrap();
        let events = subscribe(&ns.path).unwrap();
        // a veth as an engine adds it; its peer stands for a backend of the VM's
        t.ip(&[
            "link",
            "add",
            "eth1",
            "address",
            "02:42:ac:12:00:02",
            "type",
            "veth",
            "peer",
            "name",
            "vxn-if9",
        ]);
        t.ip(&["addr", "add", "172.18.0.2/16", "dev", "eth1"]);
        let seen = tokio::time::timeout(Duration::from_secs(5), settled(&events)).await;
        seen.expect("an event within 5 s").unwrap();
        let nics = ns.interfaces().await.unwrap();
        assert_eq!(nics.len(), 1, "{nics:?}");
        assert_eq!(nics[0].name, "eth1");
        assert_eq!(nics[0].mac, "02:42:ac:12:00:02");
        assert_eq!(nics[0].addresses[0].to_string(), "172.18.0.2/16");
        assert_eq!(nics[0].backend_name(), format!("vxn-if{}", nics[0].ifindex));
    }

    #[test]
    fn an_interface_that_failed_is_not_tried_again_as_it_is() {
        let eth1 = nic("eth1", "02:42:ac:12:00:02", Some("172.18.0.2/16"));
        let failed = HashSet::from([(eth1.name.clone(), eth1.mac.clone())]);
        let nics = [eth1];
        assert_eq!(plan(&nics, &HashMap::new(), &failed), Plan::default());
    }
}
