//! The host's half of the DNS path of a container whose engine runs a
//! resolver on its network namespace's loopback (Docker's embedded DNS at
//! 127.0.0.11): the agent relays the guest's same address to the
//! namespace's end of the VM's link (`pod_localhost::NETNS_SIDE`), and this
//! relays that on to the resolver, from inside the namespace, where the
//! engine's own rules find it. A thread of the container's process, in the
//! namespace for its whole life; stopped when the handle is dropped.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;

use vxn_wire::protocol::DnsRelay;

use super::pod_localhost::{NETNS_SIDE, VM_SIDE};
use crate::error::{Error, Result};

/// Where the guest's relay sends: the namespace's end of the link.
pub const NETNS_DNS: SocketAddr = SocketAddr::V4(SocketAddrV4::new(NETNS_SIDE, 53));

/// The agent's half for a resolver at `resolver` in the namespace: the
/// guest's same address goes to [`NETNS_DNS`].
pub fn guest_relay(resolver: SocketAddr) -> DnsRelay {
    DnsRelay {
        listen: resolver,
        upstream: NETNS_DNS,
        source: Some(VM_SIDE.into()),
    }
}

/// The running relay; it stops when dropped.
pub struct NetnsDns {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for NetnsDns {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Relay [`NETNS_DNS`] to `resolver` inside the namespace at `netns` (whose
/// vif already has `NETNS_SIDE`: after the VM joined it). Errs when the
/// thread cannot enter the namespace or bind there.
pub fn start(netns: &Path, resolver: SocketAddr) -> Result<NetnsDns> {
    let file = std::fs::File::open(netns)
        .map_err(|e| Error::Internal(format!("open {}: {e}", netns.display())))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::result::Result<(), String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let name = netns.display().to_string();
    std::thread::Builder::new()
        .name("netns-dns".into())
        .spawn(move || {
            // setns changes this thread only: every socket it makes is the namespace's.
            if let Err(e) = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
                let _ = ready_tx.send(Err(format!("setns: {e}")));
                return;
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let relay = vxn_wire::dns_relay::bind(NETNS_DNS).await;
                let relay = match relay {
                    Ok(r) => {
                        let _ = ready_tx.send(Ok(()));
                        r
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("bind {NETNS_DNS}: {e}")));
                        return;
                    }
                };
                tokio::select! {
                    r = relay.serve(resolver, None) => {
                        tracing::warn!(netns = %name, error = ?r.err(), "the DNS relay ended");
                    }
                    _ = stop_rx => {}
                }
            });
        })
        .map_err(|e| Error::Internal(format!("DNS relay thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| Error::Internal("the DNS relay thread died".into()))?
        .map_err(|e| Error::FailedPrecondition(format!("DNS relay in {}: {e}", netns.display())))?;
    Ok(NetnsDns {
        stop: Some(stop_tx),
    })
}
