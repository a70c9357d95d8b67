//! A container in a pod's VM: its rootfs is exported as for a VM of its
//! own (a layered image: the image cache's read-only image and a writable
//! layer), then hot-plugged into the running pod VM as the next free disks
//! (`xl block-attach`), and the agent mounts it in the container's own mount
//! namespace. Recorded before each step, so its Delete (or the `delete`
//! action of a lost shim) detaches and removes exactly what it made.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vxn_wire::protocol::RootfsSource as GuestRootfs;

use super::create::{export_rootfs, prepare_in_guest, CreateRequest, InGuest, Layering};
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
                // The image cache's read-only image and a writable layer, as
                // for a VM of its own: two hot-plugged disks.
                Layering::Disks,
            )
            .await?;
            let disks: Vec<(PathBuf, bool)> = [
                exported.disk.clone().map(|d| (d, exported.disk_writable)),
                exported.upper_disk.clone().map(|d| (d, true)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let vdevs = pod
                .members()
                .join(req.name.id(), disks.len(), memory, vcpus)?;
            joined = true;
            let on_vm = |vdev: &String| PodDisk {
                domain: sandbox.domain().into(),
                vdev: vdev.clone(),
            };
            boot.record.disk = vdevs.first().map(on_vm);
            boot.record.upper_disk = vdevs.get(1).map(on_vm);
            boot.save()?;
            let t = std::time::Instant::now();
            // At once: each attach waits for the running guest's frontend.
            let domain = sandbox.domain();
            let attach = disks.iter().zip(&vdevs).map(|((target, writable), vdev)| {
                let disk = HotDisk {
                    vdev: vdev.clone(),
                    target: target.clone(),
                    writable: *writable,
                };
                async move { hv.attach_disk(domain, &disk).await }
            });
            futures::future::try_join_all(attach).await?;
            if !vdevs.is_empty() {
                tracing::info!(vdevs = ?vdevs, took_ms = t.elapsed().as_millis() as u64, "timing: rootfs disks attached");
            }
            let dev = |i: usize| vdevs.get(i).map(|v| format!("/dev/{v}"));
            let guest = match (exported.guest.clone(), dev(0), dev(1)) {
                (GuestRootfs::Block { fstype, options, .. }, Some(device), _) => GuestRootfs::Block {
                    device,
                    fstype,
                    options,
                },
                (GuestRootfs::Overlay { mut lower, mut upper }, Some(l), Some(u)) => {
                    (lower.device, upper.device) = (l, u);
                    GuestRootfs::Overlay { lower, upper }
                }
                (other, _, _) => other,
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
            vm_memory: crate::oci::VmMemory::of(cfg),
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
