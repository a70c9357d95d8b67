//! What network an engine gave a container, read from its spec. Docker and
//! Podman set networking up themselves, in a netns: with `--network=none`
//! that netns has only lo, or the spec asks for a new (empty) one; the VM
//! then gets no vif either. Any other case (host network, an engine's
//! bridge) gets vxn's own network from /etc/vxn/config.toml, since a VM
//! cannot join a host netns.

use std::path::Path;

use vxn_runtime_core::network::Mode;
use vxn_runtime_core::oci::Spec;

/// The network mode the engine's spec implies; None: the config's.
pub fn engine_mode(spec: &Spec) -> Option<Mode> {
    let ns = spec
        .linux
        .as_ref()?
        .namespaces
        .iter()
        .find(|n| n.kind == "network")?;
    match ns.path.as_deref().filter(|p| !p.as_os_str().is_empty()) {
        None => Some(Mode::None),
        Some(path) => match interfaces(path) {
            Ok(names) if names.iter().all(|n| n == "lo") => Some(Mode::None),
            Ok(names) => {
                tracing::warn!(
                    netns = %path.display(),
                    interfaces = ?names,
                    "the engine's network interfaces are not carried into the VM; it gets vxn's network"
                );
                None
            }
            Err(e) => {
                tracing::warn!(netns = %path.display(), error = %e, "cannot inspect the engine's netns");
                None
            }
        },
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
    fn a_new_netns_is_no_network_and_host_network_is_vxns() {
        let none = spec(r#"{"linux":{"namespaces":[{"type":"pid"},{"type":"network"}]}}"#);
        assert_eq!(engine_mode(&none), Some(Mode::None));
        let host = spec(r#"{"linux":{"namespaces":[{"type":"pid"}]}}"#);
        assert_eq!(engine_mode(&host), None);
        let gone =
            spec(r#"{"linux":{"namespaces":[{"type":"network","path":"/nonexistent/ns"}]}}"#);
        assert_eq!(engine_mode(&gone), None);
    }
}
