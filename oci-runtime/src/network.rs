//! What network an engine gave a container, read from its spec. Docker and
//! Podman set networking up themselves, in a netns:
//! - Podman (netavark, CNI) names it in the spec (`/run/netns/NAME`) with
//!   the container's `eth0` in it;
//! - Docker asks for a new netns and fills it from a prestart hook
//!   (`libnetwork-setkey`): the runtime makes that namespace ([`OwnNetns`]).
//!
//! A namespace with an `eth0` is joined by the VM as a pod's is (its vif
//! takes the veth's MAC, frames redirected both ways); one with only lo
//! (`--network=none`) gives no vif. A spec without a network namespace
//! (host network) gets vxn's own network from /etc/vxn/config.toml, since a
//! VM cannot share dom0's stack.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use vxn_runtime_core::command;
use vxn_runtime_core::model::container::EngineNetwork;
use vxn_runtime_core::network::pod_netns::CNI_INTERFACE;
use vxn_runtime_core::oci::Spec;

use crate::error::{Error, Result};

const NETNS_DIR: &str = "/run/netns";
const IP_TIMEOUT: Duration = Duration::from_secs(20);

/// The network the engine's spec implies. A VM cannot share dom0's stack
/// (`--network=host`) or another container's namespace that is not a named
/// one holding an `eth0` (`--network=container:NAME`: that container is a
/// VM of its own): both are refused. `own` is the namespace the runtime
/// made for this container, if any.
pub fn engine_network(spec: &Spec, own: Option<&OwnNetns>) -> Result<EngineNetwork> {
    let ns = network_namespace(spec)?;
    let path = match (
        ns.path.as_deref().filter(|p| !p.as_os_str().is_empty()),
        own,
    ) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(own)) => own.path(),
        (None, None) => return Ok(EngineNetwork::None),
    };
    // Docker names the host's own namespace for --network=host.
    if same_namespace(&path, Path::new(HOST_NETNS)) {
        return Err(host_network());
    }
    let names = interfaces(&path).map_err(Error::io(format!(
        "inspect network namespace {}",
        path.display()
    )))?;
    if names.iter().all(|n| n == "lo") {
        return Ok(EngineNetwork::None);
    }
    if names.iter().any(|n| n == CNI_INTERFACE) && is_named(&path) {
        return Ok(EngineNetwork::Netns {
            path,
            resolver: loopback_resolver(spec),
        });
    }
    Err(Error::Refused(format!(
        "network namespace {} (interfaces {names:?}): vxn joins a namespace under /run/netns \
         that holds the container's {CNI_INTERFACE}, as Docker and Podman networks give; \
         another container's network (--network=container:NAME) cannot be shared, that \
         container is a VM of its own",
        path.display()
    )))
}

/// The spec's network namespace; refused when it has none (the host's).
pub fn network_namespace(spec: &Spec) -> Result<&vxn_runtime_core::oci::Namespace> {
    spec.linux
        .as_ref()
        .and_then(|l| l.namespaces.iter().find(|n| n.kind == "network"))
        .ok_or_else(host_network)
}

/// dom0's own network namespace (its init's).
const HOST_NETNS: &str = "/proc/1/ns/net";

fn host_network() -> Error {
    Error::Refused(
        "the host's network (--network=host): a vxn container is a VM, which cannot share \
         dom0's network stack; use the engine's bridge or a user network"
            .into(),
    )
}

/// Do two namespace files name the same namespace?
fn same_namespace(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The first nameserver on the loopback in the resolv.conf the engine binds
/// into the container: a resolver of the engine's in the container's netns
/// (Docker's embedded DNS at 127.0.0.11), which the VM reaches by relay.
fn loopback_resolver(spec: &Spec) -> Option<SocketAddr> {
    let m = spec
        .mounts
        .iter()
        .rev()
        .find(|m| m.destination == "/etc/resolv.conf")?;
    let file = std::fs::File::open(m.source.as_deref()?).ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, 64 * 1024), &mut text).ok()?;
    first_loopback_nameserver(&text)
}

fn first_loopback_nameserver(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .find(|a| a.is_loopback() && a.is_ipv4())
        .map(|a| SocketAddr::new(a, 53))
}

/// Does the spec ask for a new, empty network namespace?
pub fn wants_new_netns(spec: &Spec) -> bool {
    spec.linux.as_ref().is_some_and(|l| {
        l.namespaces.iter().any(|n| {
            n.kind == "network" && !n.path.as_deref().is_some_and(|p| !p.as_os_str().is_empty())
        })
    })
}

/// `ip netns` names: only those can take a moved device by name.
fn is_named(path: &Path) -> bool {
    path.parent()
        .is_some_and(|d| d == Path::new("/run/netns") || d == Path::new("/var/run/netns"))
}

/// The network namespace the runtime makes for a container whose spec asks
/// for a new one and whose hooks fill it (runc makes it as the container's
/// own). Named after the container's domain; removed by `delete`, also
/// after a keeper that was killed.
pub struct OwnNetns {
    name: String,
}

async fn ip(args: &[&str]) -> Result<()> {
    command::run("ip", args, IP_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| Error::Refused(format!("network namespace: {e}")))
}

impl OwnNetns {
    pub fn path_of(name: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(name)
    }

    pub fn path(&self) -> PathBuf {
        Self::path_of(&self.name)
    }

    /// A fresh namespace `name` (one a crashed create left goes first).
    pub async fn create(name: &str) -> Result<Self> {
        Self::remove(name).await?;
        ip(&["netns", "add", name]).await?;
        Ok(Self { name: name.into() })
    }

    /// Remove namespace `name` if it exists (the engine's own bind of it,
    /// such as Docker's sandbox key, keeps it alive until the engine drops it).
    pub async fn remove(name: &str) -> Result<()> {
        if Self::path_of(name).exists() {
            ip(&["netns", "delete", name]).await?;
        }
        Ok(())
    }
}

impl NetnsHolder {
    /// A thread of this process inside the namespace at `path`, for as long
    /// as the returned holder lives: hooks find the namespace as
    /// `/proc/TID/ns/net` (the keeper itself stays in dom0's namespace,
    /// where `xl`, `ip` and `tc` must run).
    pub fn hold(path: &Path) -> Result<NetnsHolder> {
        let file =
            std::fs::File::open(path).map_err(Error::io(format!("open {}", path.display())))?;
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let r = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map(|()| nix::unistd::gettid().as_raw() as u32);
            let ok = r.is_ok();
            let _ = tid_tx.send(r);
            if ok {
                // Until the holder is dropped (its sender with it).
                let _ = done_rx.recv();
            }
        });
        let tid = tid_rx
            .recv()
            .map_err(|_| Error::Keeper("netns holder thread died".into()))?
            .map_err(|e| Error::io("setns into the container's netns")(e.into()))?;
        Ok(NetnsHolder {
            tid,
            done: Some(done_tx),
            thread: Some(thread),
        })
    }
}

pub struct NetnsHolder {
    pub tid: u32,
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The interface names in a network namespace, listed from a thread that
/// joins it (setns changes only the calling thread).
fn interfaces(netns: &Path) -> std::io::Result<Vec<String>> {
    let file = std::fs::File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let names = nix::net::if_::if_nameindex()?
                .iter()
                .map(|i| i.name().to_string_lossy().into_owned())
                .collect();
            Ok(names)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns inspection failed")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_new_netns_is_no_network_and_host_network_is_refused() {
        let none = spec(r#"{"linux":{"namespaces":[{"type":"pid"},{"type":"network"}]}}"#);
        assert_eq!(engine_network(&none, None).unwrap(), EngineNetwork::None);
        assert!(wants_new_netns(&none));
        let host = spec(r#"{"linux":{"namespaces":[{"type":"pid"}]}}"#);
        let e = engine_network(&host, None).unwrap_err().to_string();
        assert!(e.contains("--network=host"), "{e}");
        assert!(!wants_new_netns(&host));
        let gone =
            spec(r#"{"linux":{"namespaces":[{"type":"network","path":"/nonexistent/ns"}]}}"#);
        assert!(engine_network(&gone, None).is_err());
        assert!(!wants_new_netns(&gone));
    }

    #[test]
    fn the_hosts_namespace_by_path_is_the_host_network() {
        let host =
            spec(r#"{"linux":{"namespaces":[{"type":"network","path":"/proc/self/ns/net"}]}}"#);
        if same_namespace(Path::new("/proc/self/ns/net"), Path::new(HOST_NETNS)) {
            let e = engine_network(&host, None).unwrap_err().to_string();
            assert!(e.contains("--network=host"), "{e}");
        }
        assert!(!same_namespace(
            Path::new("/proc/self/ns/net"),
            Path::new("/proc/self/ns/mnt")
        ));
    }

    #[test]
    fn dockers_embedded_dns_is_found_in_its_resolv_conf() {
        let docker = "search lab\nnameserver 127.0.0.11\noptions ndots:0\n";
        assert_eq!(
            first_loopback_nameserver(docker),
            Some("127.0.0.11:53".parse().unwrap())
        );
        let podman = "nameserver 10.89.0.1\n";
        assert_eq!(first_loopback_nameserver(podman), None);
        assert_eq!(first_loopback_nameserver("nameserver ::1\n"), None);
    }

    #[test]
    fn only_named_namespaces_can_be_joined() {
        assert!(is_named(Path::new("/run/netns/netns-1234")));
        assert!(is_named(Path::new("/var/run/netns/cni-1")));
        assert!(!is_named(Path::new("/proc/42/ns/net")));
        assert!(!is_named(Path::new("/var/run/docker/netns/abc")));
    }
}
