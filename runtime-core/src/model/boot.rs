//! The sequence every create shares (a container's own VM, a pod's VM, a
//! container joining a pod's VM): record each thing before making it, and on
//! any failure undo exactly what the record names, never anything this create
//! did not make. The record is the container's state, so a shim SIGKILLed at
//! any point leaves what its `delete` action tears down.

use std::sync::Arc;
use std::time::Duration;

use super::sandbox::{AgentTimeouts, Sandbox};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hypervisor::{Hypervisor, Sizing, VmError, VmSpec};
use crate::names::ContainerName;
use crate::network::pod_netns::PodNetns;
use crate::persist::{self, Record, StateDir};
use crate::storage::rootfs::RootfsExport;

pub(crate) struct Boot {
    hv: Arc<dyn Hypervisor>,
    exporter: Arc<dyn RootfsExport>,
    pub state: StateDir,
    pub record: Record,
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
        let timeouts = AgentTimeouts {
            hello: Duration::from_secs(cfg.agent_timeout_secs),
            call: Duration::from_secs(cfg.agent_call_timeout_secs.max(1)),
        };
        match Sandbox::boot(self.hv.clone(), vm, sizing, timeouts).await {
            Err(e @ Error::AlreadyExists(_)) => {
                self.record.domain = None;
                Err(e)
            }
            r => r,
        }
    }

    /// What was made, with the state that records it; or, when making it
    /// failed, everything the record names undone and the error.
    pub async fn finish<T>(self, made: Result<T>) -> Result<(T, StateDir, Record)> {
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
