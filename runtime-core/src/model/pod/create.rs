//! Creating a pod: boot its VM, sized for the pod, and give it the pod's
//! network from the namespace CNI prepared. Recorded before it is made, as
//! a container's create is; a failure tears down exactly what the record names.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Membership, Phase, Pod};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hypervisor::Sizing;
use crate::hypervisor::{Hypervisor, VmSpec};
use crate::model::boot::Boot;
use crate::model::events::{EventSink, GuestEvents, TaskEvent};
use crate::names::ContainerName;
use crate::network::pod_netns::PodNetns;
use crate::network::Mode;
use crate::oci;
use crate::storage::binds;
use crate::storage::rootfs::RootfsExport;

pub struct PodRequest {
    pub name: ContainerName,
    pub bundle: PathBuf,
}

/// The pod VM before any container joins: its base, and room to grow.
fn base_sizing(cfg: &Config) -> Sizing {
    let memory_mib = cfg.pod_memory_mib.max(cfg.min_memory_mib);
    Sizing {
        memory_mib,
        max_memory_mib: cfg.pod_max_memory_mib.max(memory_mib),
        vcpus: cfg.vcpus.max(1),
        max_vcpus: cfg.max_vcpus.max(cfg.vcpus).max(1),
    }
}

impl Pod {
    pub async fn create(
        req: PodRequest,
        cfg: &Config,
        hv: Arc<dyn Hypervisor>,
        exporter: Arc<dyn RootfsExport>,
        events: Arc<dyn EventSink>,
    ) -> Result<Arc<Self>> {
        let spec = oci::load(&req.bundle)?;
        let sysctls = spec
            .linux
            .as_ref()
            .map(|l| l.sysctl.clone())
            .unwrap_or_default();
        vxn_wire::protocol::Isolation {
            sysctls: sysctls.clone(),
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::InvalidArgument(format!("the pod's sysctls: {e}")))?;
        let shared = spec.host_namespaces();
        if !shared.is_empty() {
            return Err(Error::Unimplemented(format!(
                "pods in the host's {} namespace (hostPID/hostIPC) are not supported by vxn: \
                 a pod is a VM, and dom0's processes and IPC objects are not in it",
                shared.join(" and ")
            )));
        }
        // CRI made the namespace and ran CNI in it; without one (a host-network
        // pod) the VM could only have lo, which is right only where vxn's
        // network is off.
        let netns = match spec.network_namespace() {
            Some(p) => Some(PodNetns::at(p)?),
            None if cfg.network.mode == Mode::None => None,
            None => {
                return Err(Error::Unimplemented(
                    "host-network pods are not supported by vxn: a pod's VM cannot share dom0's network namespace".into(),
                ))
            }
        };
        let nic = match &netns {
            Some(ns) => Some(ns.inspect().await?),
            None => None,
        };
        let sizing = base_sizing(cfg);
        let domain = req.name.domain();
        let share = req.name.dir_under(&cfg.share_dir);
        let mut boot = Boot::begin(cfg, &req.name, hv.clone(), exporter.clone(), None)?;
        let made = async {
            boot.save()?;
            boot.domain_free(&domain).await?;
            // Every pod VM gets a share: its containers' volumes come later.
            boot.record.share_dir = Some(share.clone());
            boot.save()?;
            binds::make_share_dir(&cfg.share_dir, &share)?;
            let vm = VmSpec {
                vif: nic.as_ref().map(PodNetns::vif),
                shares: vec![(binds::SHARE_TAG.into(), share.clone())],
                ..boot.vm_spec(&domain, cfg, sizing)
            };
            // a pooled pod VM when there is one (docs/warm-pool.md), else a boot
            // (no rootfs of its own: its containers' disks are plugged in later)
            let image_dir = req.name.dir_under(&cfg.image_dir);
            let claimed = boot
                .claim(&vm, sizing, netns.clone(), cfg, None, &image_dir)
                .await?;
            let sandbox = match claimed {
                Some(sandbox) => sandbox,
                None => boot.vm(&vm, sizing, netns.clone(), cfg).await?,
            };
            let (Some(netns), Some(nic)) = (&netns, &nic) else {
                return Ok(sandbox);
            };
            netns
                .attach(nic, hv.as_ref(), &domain, sandbox.agent(), None)
                .await?;
            Ok(sandbox)
        }
        .await;
        let (sandbox, state, record) = boot.finish(made).await?;
        let guest_events = GuestEvents::start(events.clone(), sandbox.agent().take_events());
        let pod = Arc::new(Self {
            name: req.name,
            bundle: req.bundle,
            hostname: spec.hostname.clone(),
            sysctls,
            share,
            sandbox: Arc::new(sandbox),
            exporter,
            state,
            record,
            events,
            guest_events,
            phase: watch::channel(Phase::Created).0,
            members: Mutex::new(Membership::new(sizing)),
        });
        pod.events.publish(TaskEvent::Created);
        pod.watch_vm();
        Ok(pod)
    }

    /// Resize the VM to what its members now ask for (best effort: a
    /// container runs with less rather than not at all; logged).
    pub(crate) async fn fit_members(&self) {
        let (memory, vcpus) = self.members().wanted();
        if let Err(e) = self.sandbox.resize(Some(memory), Some(vcpus)).await {
            tracing::warn!(memory_mib = memory, vcpus, error = %e, "could not resize the pod's VM");
        }
    }
}
