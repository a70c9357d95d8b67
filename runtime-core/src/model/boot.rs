//! The sequence every create shares (a container's own VM, a pod's VM, a
//! container joining a pod's VM): record each thing before making it, and on
//! any failure undo exactly what the record names, never anything this create
//! did not make. The record is the container's state, so a shim SIGKILLed at
//! any point leaves what its `delete` action tears down.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::sandbox::{AgentTimeouts, Booted, Sandbox};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hypervisor::{Hypervisor, Sizing, VmError, VmSpec};
use crate::names::ContainerName;
use crate::network::pod_netns::PodNetns;
use crate::persist::{self, Record, StateDir};
use crate::pool;
use crate::storage::rootfs::RootfsExport;

pub(crate) struct Boot {
    hv: Arc<dyn Hypervisor>,
    exporter: Arc<dyn RootfsExport>,
    pub state: StateDir,
    pub record: Record,
    /// A claim was tried: the pool is refilled once this create is done (a
    /// refill's boot competes for the CPU the create needs).
    refill_due: bool,
}

impl Boot {
    /// The container's state directory (a second task of the same name never
    /// takes over the first's) and its first, empty record (saved as the first
    /// step of the making); `pod`: the pod whose VM it joins.
    pub fn begin(
        cfg: &Config,
        name: &ContainerName,
        hv: Arc<dyn Hypervisor>,
        exporter: Arc<dyn RootfsExport>,
        pod: Option<&str>,
    ) -> Result<Self> {
        let state = StateDir::create(&cfg.state_dir, name)?;
        let record = Record {
            backend: hv.kind().into(),
            pod: pod.map(Into::into),
            ..Default::default()
        };
        Ok(Self {
            hv,
            exporter,
            state,
            record,
            refill_due: false,
        })
    }

    pub fn save(&self) -> Result<()> {
        self.state.save(&self.record)
    }

    /// A domain of that name that is there already is not ours: refused
    /// before anything of a VM is made.
    pub async fn domain_free(&self, domain: &str) -> Result<()> {
        match self.hv.exists(domain).await? {
            true => Err(VmError::Exists(domain.into()).into()),
            false => Ok(()),
        }
    }

    /// A VM of the config's kernel and this size, with no disk, vif or share yet.
    pub fn vm_spec(&self, domain: &str, cfg: &Config, sizing: Sizing) -> VmSpec {
        VmSpec {
            name: domain.into(),
            kernel: cfg.kernel.clone(),
            initramfs: cfg.initramfs.clone(),
            cmdline_extra: cfg.kernel_cmdline_extra.clone(),
            agent_log: cfg.agent_log_level.clone(),
            memory_mib: sizing.memory_mib,
            max_memory_mib: sizing.max_memory_mib,
            vcpus: sizing.vcpus,
            max_vcpus: sizing.max_vcpus,
            rootfs_disk: None,
            rootfs_writable: true,
            upper_disk: None,
            vif: None,
            shares: vec![],
            state_dir: self.state.path().to_path_buf(),
        }
    }

    /// Record the VM (its domain, and the network namespace it joins), then
    /// boot it until its agent answers. A domain of that name that appeared
    /// meanwhile is not ours: the record lets it go, so the undo spares it.
    pub async fn vm(
        &mut self,
        vm: &VmSpec,
        sizing: Sizing,
        netns: Option<PodNetns>,
        cfg: &Config,
    ) -> Result<Sandbox> {
        self.record.domain = Some(vm.name.clone());
        self.record.netns = netns;
        self.save()?;
        match Sandbox::boot(self.hv.clone(), vm, sizing, self.timeouts(cfg)).await {
            Err(e @ Error::AlreadyExists(_)) => {
                self.record.domain = None;
                Err(e)
            }
            r => r,
        }
    }

    /// A blank writable layer of `mib` MiB in `image_dir`: its disk.
    pub async fn blank_upper(&self, image_dir: &Path, mib: u64) -> Result<PathBuf> {
        match self.exporter.blank_upper(image_dir, mib).await {
            Some(made) => Ok(made?),
            None => Err(Error::Internal(
                "this backend makes no blank writable layer".into(),
            )),
        }
    }

    /// A pooled VM for this container (docs/warm-pool.md) instead of a boot,
    /// when the config keeps a pool of the VM's shape: the kernel, the
    /// maxima, and a share or none. A pooled VM's share is empty until the
    /// claim renames it into the VM's, so only a share still empty (a pod's,
    /// its volumes bound later) is served by one. A pooled VM's blank
    /// writable layer (attached already) becomes the container's, whose own
    /// would be blank and of its size (`blank_upper`: not made yet); a
    /// container with no writable layer leaves it unused, one with a layer
    /// of its own boots. `None`: boot one. The claim is in the state directory the
    /// moment it is made, the container's domain in the record before the
    /// pooled VM takes that name: a SIGKILL at any point leaves both named.
    pub async fn claim(
        &mut self,
        vm: &VmSpec,
        sizing: Sizing,
        netns: Option<PodNetns>,
        cfg: &Config,
        blank_upper: Option<u64>,
        image_dir: &Path,
    ) -> Result<Option<Sandbox>> {
        let share = match vm.shares.as_slice() {
            [] => None,
            [(_, dir)] if dir_is_empty(dir) => Some(dir.clone()),
            _ => return Ok(None),
        };
        let plan = match share {
            None => cfg.pool_plan(),
            Some(_) => cfg.pod_pool_plan(),
        };
        let shape = &plan.shape;
        let upper_fits = match (shape.upper_mib, blank_upper) {
            (Some(mib), Some(blank)) => mib == blank,
            // xvdc is the pooled VM's: free for a container without a layer only
            (Some(_), None) => vm.upper_disk.is_none(),
            // a blank layer comes with a VM or is made for a boot
            (None, Some(_)) => false,
            (None, None) => true,
        };
        let fits = vm.kernel == shape.kernel
            && vm.initramfs == shape.initramfs
            && vm.cmdline_extra == shape.cmdline_extra
            && shape.fits(sizing.max_memory_mib, sizing.max_vcpus)
            && upper_fits;
        if plan.target() == 0 || !fits {
            return Ok(None);
        }
        let store = cfg.pool_store();
        let claimed = store.claim(shape, self.state.path());
        self.refill_due = cfg.pool.refill && !pool::drained(&store);
        let Some(pooled) = claimed.map_err(|e| Error::Internal(e.to_string()))? else {
            tracing::info!("the pool has no VM ready: booting one");
            return Ok(None);
        };
        tracing::info!(pooled = %pooled.domain, "claimed a pooled VM");
        self.record.domain = Some(vm.name.clone());
        self.record.netns = netns;
        self.save()?;
        let _ = std::fs::remove_dir_all(store.shape_dir(shape).join("vm").join(&pooled.domain));
        // The VM's share becomes the container's (its QEMU holds the
        // directory, not its path), before the VM takes the container's name:
        // until then the pool's sweep spares it (its VM has the pool's name).
        if let (Some(to), Some(from)) = (&share, store.share_of(&pooled)) {
            if let Err(e) = std::fs::rename(&from, to) {
                tracing::warn!(pooled = %pooled.domain, error = %e, "the pooled VM's share cannot become the container's: destroying it and booting one");
                return self.unclaim(&store, &pooled, vm).await;
            }
        }
        // So its writable layer (the container's teardown finds it there).
        if let Err(e) = pool::uppers::take(&store, &pooled, image_dir) {
            tracing::warn!(pooled = %pooled.domain, error = %e, "the pooled VM's writable layer cannot become the container's: destroying it and booting one");
            return self.unclaim(&store, &pooled, vm).await;
        }
        match self.hv.rename(&pooled.domain, &vm.name).await {
            // The record names the VM now: a teardown need not look for
            // the pool's name (a destroy of a missing name costs xl calls).
            Ok(()) => {
                let _ = std::fs::remove_file(self.state.path().join(pool::CLAIM_FILE));
            }
            // a domain of the container's name that appeared meanwhile is not ours
            Err(e @ VmError::Exists(_)) => {
                self.record.domain = None;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        }
        // The VM's maxima are its shape's (a later Update may grow it to them).
        let sizing = Sizing {
            max_memory_mib: shape.max_memory_mib,
            max_vcpus: shape.max_vcpus,
            ..sizing
        };
        let adopted = Sandbox::adopt(
            self.hv.clone(),
            vm,
            sizing,
            self.timeouts(cfg),
            Booted {
                running: pooled.running,
                memory_mib: shape.boot_memory_mib,
                vcpus: pool::BOOT_VCPUS,
            },
        );
        match adopted.await {
            Ok(sandbox) => Ok(Some(sandbox)),
            // A pooled VM that does not come up (its agent gone meanwhile) is
            // no reason to fail the create: it goes, and a VM is booted.
            Err(e) => {
                tracing::warn!(pooled = %pooled.domain, error = %e, "the pooled VM did not come up: destroying it and booting one");
                self.unclaim(&store, &pooled, vm).await
            }
        }
    }

    /// A claimed VM that will not serve: destroyed under either name (a
    /// writable layer it brought and still holds in the pool's directory
    /// goes too), the claim forgotten, and `None` (boot one). One that
    /// cannot be destroyed fails the create, its claim kept for the teardown.
    async fn unclaim(
        &mut self,
        store: &pool::PoolStore,
        pooled: &pool::Pooled,
        vm: &VmSpec,
    ) -> Result<Option<Sandbox>> {
        self.hv.destroy(&vm.name).await?;
        self.hv.destroy(&pooled.domain).await?;
        pool::uppers::remove(store, self.exporter.as_ref(), pooled).await;
        let _ = std::fs::remove_file(self.state.path().join(pool::CLAIM_FILE));
        Ok(None)
    }

    fn timeouts(&self, cfg: &Config) -> AgentTimeouts {
        AgentTimeouts {
            hello: Duration::from_secs(cfg.agent_timeout_secs),
            call: Duration::from_secs(cfg.agent_call_timeout_secs.max(1)),
        }
    }

    /// What was made, with the state that records it; or, when making it
    /// failed, everything the record names undone and the error. Either way
    /// the pool a claim tried is refilled now (docs/warm-pool.md).
    pub async fn finish<T>(self, made: Result<T>) -> Result<(T, StateDir, Record)> {
        if self.refill_due {
            pool::refill::spawn();
        }
        match made {
            Ok(v) => Ok((v, self.state, self.record)),
            Err(e) => {
                persist::undo(
                    &self.record,
                    &self.state,
                    self.hv.as_ref(),
                    self.exporter.as_ref(),
                )
                .await;
                Err(e)
            }
        }
    }
}

/// A directory with nothing in it (a share no volume is bound into yet).
fn dir_is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}
