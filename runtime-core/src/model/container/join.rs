//! A container in a pod's VM: its rootfs is exported as for a VM of its
//! own, then hot-plugged into the running pod VM as the next free disk
//! (`xl block-attach`), and the agent mounts it in the container's own mount
//! namespace. Recorded before each step, so its Delete (or the `delete`
//! action of a lost shim) detaches and removes exactly what it made.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vxn_wire::protocol::RootfsSource as GuestRootfs;

use super::create::{export_rootfs, prepare_in_guest, CreateRequest, InGuest};
use super::Container;
use crate::config::Config;
use crate::error::Result;
use crate::hypervisor::HotDisk;
use crate::ids::ExecId;
use crate::model::boot::Boot;
use crate::model::events::{EventSink, TaskEvent};
use crate::model::pod::Pod;
use crate::model::process::Process;
use crate::oci;
use crate::persist::PodDisk;
use crate::stdio::ProcessStdio;
use crate::storage::binds;
use crate::storage::rootfs::RootfsExport;

impl<S: ProcessStdio> Container<S> {
    pub async fn create_in_pod(
        pod: Arc<Pod>,
        req: CreateRequest<S>,
        cfg: &Config,
        exporter: Arc<dyn RootfsExport>,
        events: Arc<dyn EventSink>,
    ) -> Result<Arc<Self>> {
        let spec = oci::load(&req.bundle)?;
        spec.init_process()?;
        let plan = oci::mounts(&spec)?;
        pod.require_alive()?;
        let res = spec.linux.as_ref().and_then(|l| l.resources.as_ref());
        // What the container adds to the pod's VM: its limit as it is (no
        // per-VM minimum: the pod's base memory is there already).
        let memory = res
            .and_then(|r| r.memory.as_ref()?.limit)
            .filter(|l| *l > 0)
            .map(|l| (l as u64).div_ceil(1 << 20));
        let vcpus = res.and_then(oci::vcpus);
        let sandbox = pod.sandbox().clone();
        let hv = sandbox.hypervisor();
        let mut boot = Boot::begin(
            cfg,
            &req.name,
            sandbox.shared_hypervisor(),
            exporter.clone(),
            Some(pod.id()),
        )?;
        let mut joined = false;
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
                // A pod's VM hot-plugs one disk per container.
                false,
            )
            .await?;
            let vdev = pod
                .members()
                .join(req.name.id(), exported.disk.is_some(), memory, vcpus)?;
            joined = true;
            let guest = match (&exported.disk, vdev) {
                (Some(target), Some(vdev)) => {
                    boot.record.disk = Some(PodDisk {
                        domain: sandbox.domain().into(),
                        vdev: vdev.clone(),
                    });
                    boot.save()?;
                    let t = std::time::Instant::now();
                    hv.attach_disk(
                        sandbox.domain(),
                        &HotDisk {
                            vdev: vdev.clone(),
                            target: target.clone(),
                            writable: true,
                        },
                    )
                    .await?;
                    tracing::info!(vdev = %vdev, took_ms = t.elapsed().as_millis() as u64, "timing: rootfs disk attached");
                    match exported.guest.clone() {
                        GuestRootfs::Block {
                            fstype, options, ..
                        } => GuestRootfs::Block {
                            device: format!("/dev/{vdev}"),
                            fstype,
                            options,
                        },
                        other => other,
                    }
                }
                _ => exported.guest.clone(),
            };
            pod.fit_members().await;
            let mounts = binds::expose(Some(pod.share()), req.name.id(), plan, |dir| {
                boot.record.share_dir = Some(dir.to_path_buf());
                boot.save()
            })?;
            // CRI sets the pod's hostname on the sandbox; its containers share it.
            let what = InGuest {
                hostname: spec.hostname.clone().or_else(|| pod.hostname.clone()),
                // Its limit holds in the guest too: the VM is shared.
                memory_limit_bytes: memory.map(|m| m << 20),
                mounts,
                rootfs: guest,
                in_pod: true,
                pod_sysctls: pod.sysctls.clone(),
            };
            prepare_in_guest(&sandbox, &req.name, &spec, what, &req.stdio).await
        }
        .await;
        if made.is_err() {
            // The guest may hold a half-made container on the disk.
            let _ = sandbox.agent().delete(req.name.id(), None).await;
        }
        let made = boot.finish(made).await;
        if made.is_err() && joined {
            pod.members().leave(req.name.id());
            pod.fit_members().await;
        }
        let (relay, state, record) = made?;
        pod.guest_events().route(req.name.id(), events.clone());
        let c = Arc::new(Self {
            name: req.name,
            bundle: req.bundle,
            sandbox,
            pod: Some(pod.clone()),
            exporter,
            state,
            record,
            // The pod's: an OOM the agent reports for this container is flushed
            // to it before its exit, as for a container of its own.
            guest_events: pod.guest_events().clone(),
            events,
            kill_grace: Duration::from_secs(cfg.kill_grace_secs.max(1)),
            init: Process::created(ExecId::Init, req.stdio, relay),
            _lease: None,
            _dns: None,
            follower: Mutex::default(),
            execs: Mutex::default(),
            paused: Mutex::new(false),
        });
        c.events.publish(TaskEvent::Created);
        Ok(c)
    }
}
