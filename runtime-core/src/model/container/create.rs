//! Create: check what can be checked, then record each thing before making
//! it (state dir, rootfs mount, image, domain), boot the sandbox, create the
//! container in the guest and freeze the VM until Start. A failure tears
//! down exactly what the record names: never anything this create did not make.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vxn_wire::protocol::CreateContainer;

use super::Container;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hypervisor::{Hypervisor, Vif, VifLink, VmSpec};
use crate::ids::ExecId;
use crate::model::boot::Boot;
use crate::model::events::{EventSink, GuestEvents, TaskEvent};
use crate::model::netns_follow;
use crate::model::process::Process;
use crate::model::sandbox::Sandbox;
use crate::names::ContainerName;
use crate::network::netns_dns;
use crate::network::pod_netns::PodNetns;
use crate::network::{self, lease, Attachment, Mode};
use crate::oci;
use crate::persist;
use crate::stdio::ProcessStdio;
use crate::storage::binds;
use crate::storage::layers::Layers;
use crate::storage::rootfs::{ExportedRootfs, RootfsExport};

/// What the guest makes of a container besides its spec's process.
pub(super) struct InGuest {
    pub hostname: Option<String>,
    /// Enforced in the guest (a pod's container); None: the VM's size is the limit.
    pub memory_limit_bytes: Option<u64>,
    pub mounts: Vec<vxn_wire::protocol::MountSpec>,
    pub rootfs: vxn_wire::protocol::RootfsSource,
    /// The VM holds other containers (a pod's).
    pub in_pod: bool,
    /// The pod's sysctls, set with the container's own (which win).
    pub pod_sysctls: std::collections::BTreeMap<String, String>,
}

/// Create the container in the guest (rootfs, mounts, its init prepared,
/// not started) and relay the init's stdio.
pub(super) async fn prepare_in_guest<S: ProcessStdio>(
    sandbox: &Sandbox,
    name: &ContainerName,
    spec: &oci::Spec,
    what: InGuest,
    stdio: &S,
) -> Result<crate::stdio::Relay> {
    let t = std::time::Instant::now();
    let agent = sandbox.agent();
    let (ids, host) = agent.open_stdio(stdio.request())?;
    let mut isolation = spec.isolation(what.in_pod);
    for (k, v) in what.pod_sysctls {
        isolation.sysctls.entry(k).or_insert(v);
    }
    agent
        .create_container(CreateContainer {
            container_id: name.id().to_string(),
            hostname: what.hostname,
            rootfs: what.rootfs,
            readonly_rootfs: spec.root.as_ref().map(|r| r.readonly).unwrap_or(false),
            mounts: what.mounts,
            process: spec.init_process()?.to_agent(),
            stdio: ids,
            memory_limit_bytes: what.memory_limit_bytes,
            isolation: Box::new(isolation),
        })
        .await
        .map_err(|e| Error::from(e).context("create container in the guest"))?;
    tracing::info!(
        took_ms = t.elapsed().as_millis() as u64,
        "timing: container prepared"
    );
    stdio.attach(host)
}

/// How an overlay snapshot's layers reach a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layering {
    /// As the exporter takes them: the image cache's read-only image and a
    /// writable layer, both made now.
    Disks,
    /// The same, but a blank writable layer is left to the VM's making (a
    /// pooled VM may have one attached already).
    DisksBlankUpperLater,
}

/// Export the container's rootfs for a VM: an overlay snapshot's layers as
/// they are when the exporter takes them (`layering`); otherwise the
/// snapshot (when the front-end gives one) mounted at `<bundle>/rootfs` and
/// exported as a directory. Each step recorded in `record` before it is made.
#[allow(clippy::too_many_arguments)]
pub(super) async fn export_rootfs(
    rootfs: RootfsSource,
    rootfs_dir: PathBuf,
    name: &ContainerName,
    cfg: &Config,
    exporter: &dyn RootfsExport,
    boot: &mut Boot,
    layering: Layering,
) -> Result<ExportedRootfs> {
    let image_dir = name.dir_under(&cfg.image_dir);
    boot.record.image_dir = Some(image_dir.clone());
    boot.save()?;
    // A leftover of this same (namespace, id) is ours to replace: no live
    // task of this name exists, it would own the state directory.
    exporter.cleanup(&image_dir).await;
    let _ = std::fs::remove_dir_all(&image_dir);
    let mount = match rootfs {
        RootfsSource::Bundle => None,
        RootfsSource::Mount(mount) => Some(mount),
        RootfsSource::Layers { layers, mount } => {
            let blank_later = layering == Layering::DisksBlankUpperLater;
            let exported = exporter
                .export_layers(&layers, &image_dir, boot.state.path(), blank_later)
                .await;
            if let Some(r) = exported {
                let exported = r?;
                tracing::info!(
                    size_mib = exported.size_bytes >> 20,
                    took_ms = exported.took.as_millis() as u64,
                    "rootfs layers exported"
                );
                return Ok(exported);
            }
            Some(mount)
        }
    };
    if let Some(mount) = mount {
        std::fs::create_dir_all(&rootfs_dir)
            .map_err(|e| Error::Internal(format!("mkdir {}: {e}", rootfs_dir.display())))?;
        boot.record.rootfs_mount = Some(rootfs_dir.clone());
        boot.save()?;
        mount(&rootfs_dir)?;
    }
    let exported = exporter.export(&rootfs_dir, &image_dir).await?;
    tracing::info!(
        size_mib = exported.size_bytes >> 20,
        took_ms = exported.took.as_millis() as u64,
        "rootfs image built"
    );
    Ok(exported)
}

/// Mounts the container's rootfs at the given directory (the shim: the
/// snapshot containerd sends). Recorded before it runs.
pub type MountRootfs = Box<dyn FnOnce(&Path) -> Result<()> + Send>;

/// Where the container's root filesystem comes from.
pub enum RootfsSource {
    /// The spec's `root.path` (relative to the bundle) is ready as it is (runc's contract).
    Bundle,
    /// Mount it at `<bundle>/rootfs` first; unmounted at teardown.
    Mount(MountRootfs),
    /// An overlay snapshot's layers, exported as they are where the exporter
    /// can ([`RootfsExport::export_layers`]); mounted with `mount` otherwise.
    Layers { layers: Layers, mount: MountRootfs },
}

impl RootfsSource {
    /// Where the container's root directory is (or is mounted).
    pub fn dir(&self, spec: &oci::Spec, bundle: &Path) -> PathBuf {
        match self {
            Self::Bundle => spec.rootfs_dir(bundle),
            Self::Mount(_) | Self::Layers { .. } => bundle.join("rootfs"),
        }
    }
}

pub struct CreateRequest<S> {
    pub name: ContainerName,
    pub bundle: PathBuf,
    pub rootfs: RootfsSource,
    /// The init's stdio.
    pub stdio: S,
    /// The front-end's network, over the config's and the annotations' (the
    /// runc CLI: the network an engine gave the container).
    pub network: Option<EngineNetwork>,
}

/// The network an engine (Docker, Podman) made for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineNetwork {
    /// None (`--network=none`): no vif.
    None,
    /// A named namespace (`/run/netns/NAME`) holding the container's `eth0`,
    /// set up by the engine: the VM takes that interface as a pod's VM
    /// takes CNI's (`network/pod_netns.rs`).
    Netns {
        path: PathBuf,
        /// A resolver on the namespace's loopback (Docker's 127.0.0.11:53):
        /// the guest's same address is relayed to it (`network/netns_dns.rs`).
        resolver: Option<std::net::SocketAddr>,
    },
}

impl<S: ProcessStdio> Container<S> {
    pub async fn create(
        req: CreateRequest<S>,
        cfg: &Config,
        hv: Arc<dyn Hypervisor>,
        exporter: Arc<dyn RootfsExport>,
        events: Arc<dyn EventSink>,
    ) -> Result<Arc<Self>> {
        // Everything that can be checked without touching the host is checked first.
        let spec = oci::load(&req.bundle)?;
        spec.init_process()?;
        let plan = oci::mounts(&spec)?;
        let sizing = oci::sizing(&spec, cfg);
        let domain = req.name.domain();
        let mut net = network::Request::from_annotations(&cfg.network, &spec.annotations)?;
        // An engine's network replaces vxn's own.
        if req.network.is_some() {
            net = network::Request {
                mode: Mode::None,
                address: None,
            };
        }
        let engine_netns = match &req.network {
            Some(EngineNetwork::Netns { path, resolver }) => {
                let ns = PodNetns::at(path)?;
                let nic = ns.inspect().await?;
                Some((ns, nic, *resolver))
            }
            Some(EngineNetwork::None) | None => None,
        };
        if net.mode != Mode::None {
            hv.check_vif(&cfg.network.bridge).await?;
        }
        let mut lease = None;

        let mut boot = Boot::begin(cfg, &req.name, hv.clone(), exporter.clone(), None)?;
        let made = async {
            boot.save()?;
            let dir = req.rootfs.dir(&spec, &req.bundle);
            let exported = export_rootfs(
                req.rootfs,
                dir,
                &req.name,
                cfg,
                exporter.as_ref(),
                &mut boot,
                Layering::DisksBlankUpperLater,
            )
            .await?;
            let image_dir = req.name.dir_under(&cfg.image_dir);
            boot.domain_free(&domain).await?;
            // Host directories reach the VM through a share of its own.
            let share = match binds::needs_share(&plan) {
                false => None,
                true => {
                    let dir = req.name.dir_under(&cfg.share_dir);
                    boot.record.share_dir = Some(dir.clone());
                    boot.save()?;
                    binds::make_share_dir(&cfg.share_dir, &dir)?;
                    Some(dir)
                }
            };
            let mounts = binds::expose(share.as_deref(), "c", plan, |_| Ok(()))?;
            let attachment = match net.mode {
                Mode::None => None,
                mode => {
                    let want = lease::Want {
                        name: &req.name,
                        domain: &domain,
                        state: boot.state.path(),
                        owner_lease: persist::recorded_lease,
                        address: net.address,
                        dhcp: mode == Mode::Dhcp,
                    };
                    let state = boot.state.clone();
                    let record = &mut boot.record;
                    let held = lease::acquire(&cfg.network, want, hv.as_ref(), |l| {
                        record.lease = Some(l.clone());
                        state.save(record)
                    })
                    .await?;
                    let a = Attachment {
                        bridge: cfg.network.bridge.clone(),
                        mac: held.record.mac.clone(),
                        address: held.record.address,
                        dhcp: held.record.dhcp,
                    };
                    lease = Some(held);
                    Some(a)
                }
            };
            let mut vm = VmSpec {
                rootfs_disk: exported.disk.clone(),
                rootfs_writable: exported.disk_writable,
                upper_disk: exported.upper_disk.clone(),
                vif: match (&attachment, &engine_netns) {
                    (Some(a), _) => Some(Vif {
                        link: VifLink::Bridge(a.bridge.clone()),
                        mac: a.mac.clone(),
                        guard: a.guard(),
                    }),
                    (None, Some((_, nic, _))) => Some(PodNetns::vif(nic)),
                    (None, None) => None,
                },
                shares: share
                    .iter()
                    .map(|d| (binds::SHARE_TAG.to_string(), d.clone()))
                    .collect(),
                ..boot.vm_spec(&domain, cfg, sizing)
            };
            let netns = engine_netns.as_ref().map(|(ns, _, _)| ns.clone());
            // a pooled VM when there is one for it (docs/warm-pool.md), else a boot
            let blank = exported.blank_upper_mib;
            let claimed = boot
                .claim(&vm, sizing, netns.clone(), cfg, blank, &image_dir)
                .await?;
            let sandbox = match claimed {
                Some(sandbox) => sandbox,
                None => {
                    if let Some(mib) = blank {
                        vm.upper_disk = Some(boot.blank_upper(&image_dir, mib).await?);
                    }
                    boot.vm(&vm, sizing, netns, cfg).await?
                }
            };
            let mut dns = None;
            if let Some((ns, nic, resolver)) = &engine_netns {
                let relay = resolver.map(netns_dns::guest_relay);
                ns.attach(nic, hv.as_ref(), &domain, sandbox.agent(), relay)
                    .await?;
                dns = resolver
                    .map(|r| netns_dns::start(&ns.path, r))
                    .transpose()?;
            }
            if let Some(a) = &attachment {
                let t = std::time::Instant::now();
                let got = sandbox
                    .agent()
                    .setup_network(a.guest_setup(&cfg.network)?)
                    .await
                    .map_err(|e| Error::from(e).context("set up the guest's network"))?;
                tracing::info!(
                    took_ms = t.elapsed().as_millis() as u64,
                    address = ?got.addresses.first().map(|a| a.to_string()),
                    mac = %a.mac,
                    "timing: network ready"
                );
            }
            let what = InGuest {
                hostname: spec.hostname.clone(),
                memory_limit_bytes: None,
                mounts,
                rootfs: exported.guest.clone(),
                in_pod: false,
                pod_sysctls: Default::default(),
            };
            let relay = prepare_in_guest(&sandbox, &req.name, &spec, what, &req.stdio).await?;
            // Nothing of the container runs before Start.
            sandbox.freeze().await?;
            Ok((sandbox, relay, dns))
        }
        .await;

        let ((sandbox, relay, dns), state, record) = boot.finish(made).await?;
        let guest_events = GuestEvents::start(events.clone(), sandbox.agent().take_events());
        let sandbox = Arc::new(sandbox);
        // Networks the engine connects the container to later become vifs
        // too; without the follower the container still has its first.
        let follower = engine_netns.and_then(|(ns, _, _)| {
            netns_follow::start(ns, sandbox.clone())
                .inspect_err(|e| tracing::warn!(error = %e, "networks connected later stay unseen"))
                .ok()
        });
        let c = Arc::new(Self {
            name: req.name,
            bundle: req.bundle,
            sandbox,
            pod: None,
            exporter,
            state,
            record,
            events,
            guest_events,
            kill_grace: Duration::from_secs(cfg.kill_grace_secs.max(1)),
            vm_memory: crate::oci::VmMemory::of(cfg),
            init: Process::created(ExecId::Init, req.stdio, relay),
            _lease: lease,
            _dns: dns,
            follower: Mutex::new(follower),
            execs: Mutex::default(),
            paused: Mutex::new(false),
        });
        c.events.publish(TaskEvent::Created);
        Ok(c)
    }
}
