//! The Xen backend: one DomU per container, driven with `xl`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use vxn_wire::boot::{self, AgentChannel};

use crate::hypervisor::{
    connected, AgentConnect, HotDisk, Hypervisor, Resize, Vif, VifLink, VmError, VmSpec,
};
use crate::network::guard::{self, Allowed};
use crate::xen::config::VifBackend;
use crate::xen::{self, Disk, DomainConfig, GuestType, Xl, XlError};

#[derive(Debug, Clone)]
pub struct XenHypervisor {
    xl: Xl,
    channel: AgentChannel,
    /// Where vxn's own hotplug scripts go (an exec-able filesystem); `None`
    /// leaves block devices to Xen's `block` script.
    hotplug_dir: Option<PathBuf>,
}

impl XenHypervisor {
    pub fn new(xl: Xl, channel: AgentChannel, hotplug_dir: Option<PathBuf>) -> Self {
        Self {
            xl,
            channel,
            hotplug_dir,
        }
    }

    /// A disk for this target: a block device (a loop device vxn made for
    /// this domain) gets vxn's block script, which only reports it.
    fn disk(&self, vdev: &str, target: &Path, writable: bool) -> Result<Disk, VmError> {
        let script = match &self.hotplug_dir {
            Some(dir) if target.starts_with("/dev") => Some(
                xen::hotplug::Script::Block
                    .install(dir)
                    .map_err(io("the block hotplug script"))?,
            ),
            _ => None,
        };
        Ok(Disk {
            vdev: vdev.into(),
            target: target.into(),
            writable,
            script,
        })
    }

    /// The seam's vif as xl takes it: an unplugged one is handed to vxn's
    /// own vif script (it only reports the device ready), written on first use.
    fn xl_vif(&self, vif: &Vif) -> Result<xen::config::Vif, VmError> {
        let backend = match &vif.link {
            VifLink::Bridge(b) => VifBackend::Bridge(b.clone()),
            VifLink::Unplugged => {
                let dir = self.hotplug_dir.as_ref().ok_or(VmError::Unsupported(
                    "a vif joined to a network namespace without a hotplug directory",
                    "xen",
                ))?;
                let script = xen::hotplug::Script::VifUnplugged
                    .install(dir)
                    .map_err(io("the vif hotplug script"))?;
                VifBackend::Script(script)
            }
        };
        Ok(xen::config::Vif {
            mac: vif.mac.clone(),
            backend,
        })
    }

    /// A bridge vif's anti-spoofing filters (a pod's vif gets them when it
    /// joins the pod's namespace).
    async fn guard_bridge_vif(&self, spec: &VmSpec) -> Result<(), VmError> {
        let Some(vif) = spec
            .vif
            .as_ref()
            .filter(|v| matches!(v.link, VifLink::Bridge(_)))
        else {
            return Ok(());
        };
        let dev = self.vif_device(&spec.name).await?;
        guard::apply(&vif.guard, &dev, None, Allowed::Pass)
            .await
            .map_err(|e| VmError::HostNotReady(e.to_string()))
    }

    pub fn xl(&self) -> &Xl {
        &self.xl
    }

    /// The id of a VM made earlier; only a vchan reaches an agent without the
    /// process that made the VM.
    async fn running_domid(&self, name: &str) -> Result<u32, VmError> {
        if self.channel != AgentChannel::Vchan {
            return Err(VmError::Unsupported(
                "a warm pool with the console agent channel",
                "xen",
            ));
        }
        self.xl
            .domid(name)
            .await?
            .ok_or_else(|| VmError::Missing(format!("no domain {name}")))
    }

    async fn domain_config(&self, spec: &VmSpec) -> Result<DomainConfig, VmError> {
        let cmdline = boot::kernel_cmdline(self.channel, &spec.agent_log, &spec.cmdline_extra);
        let rootfs = spec
            .rootfs_disk
            .iter()
            .map(|d| (boot::ROOTFS_VDEV, d, spec.rootfs_writable));
        let upper = spec.upper_disk.iter().map(|d| (boot::UPPER_VDEV, d, true));
        let disks = rootfs
            .chain(upper)
            .map(|(vdev, target, writable)| self.disk(vdev, target, writable))
            .collect::<Result<_, _>>()?;
        Ok(DomainConfig {
            name: spec.name.clone(),
            guest_type: GuestType::for_host(),
            kernel: spec.kernel.clone(),
            ramdisk: spec.initramfs.clone(),
            cmdline,
            memory_mib: spec.memory_mib,
            maxmem_mib: spec.max_memory_mib,
            vcpus: spec.vcpus,
            max_vcpus: spec.max_vcpus,
            agent_socket: match self.channel {
                AgentChannel::Console => Some(socket_path(&spec.state_dir)),
                AgentChannel::Vchan => None,
            },
            disks,
            shares: spec.shares.clone(),
            vif: spec.vif.as_ref().map(|v| self.xl_vif(v)).transpose()?,
            qemu_sandbox: !spec.shares.is_empty() && xen::qemu::sandbox_supported().await,
        })
    }
}

/// Xen's number for a `xvdX` vdev (xenstore's device id), as `xl block-list` prints it.
fn vdev_number(vdev: &str) -> Option<u32> {
    let letter = vdev.strip_prefix("xvd")?;
    let [c] = letter.as_bytes() else { return None };
    let idx = u32::from(c.checked_sub(b'a')?);
    match idx {
        0..=15 => Some((202 << 8) | (idx << 4)),
        16..=25 => Some((1 << 28) | (idx << 8)),
        _ => None,
    }
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("agent.sock")
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

#[async_trait]
impl Hypervisor for XenHypervisor {
    fn kind(&self) -> &'static str {
        "xen"
    }

    async fn create_paused(&self, spec: &VmSpec) -> Result<AgentConnect, VmError> {
        for (what, p) in [("kernel", &spec.kernel), ("initramfs", &spec.initramfs)] {
            if !p.is_file() {
                return Err(VmError::Missing(format!(
                    "{what} {} does not exist (see /etc/vxn/config.toml)",
                    p.display()
                )));
            }
        }
        let text = self.domain_config(spec).await?.render()?;
        std::fs::create_dir_all(&spec.state_dir)
            .map_err(io(format!("mkdir {}", spec.state_dir.display())))?;
        let cfg = spec.state_dir.join("domain.cfg");
        std::fs::write(&cfg, text).map_err(io(format!("write {}", cfg.display())))?;
        let socket = socket_path(&spec.state_dir);
        let _ = std::fs::remove_file(&socket);
        // Never touch a domain this call did not make: `xl create` would fail on
        // the name, and the cleanup below would destroy someone else's VM.
        if self.xl.exists(&spec.name).await? {
            return Err(VmError::Exists(spec.name.clone()));
        }
        // A vchan needs no xl process per domain: the shim watches for the
        // domain's death itself (xen::vchan). A console channel's QEMU only
        // closes its socket when xl's monitor destroys the domain.
        let unmonitored = self.channel == AgentChannel::Vchan;
        if let Err(e) = self.xl.create_paused(&cfg, unmonitored).await {
            // xl may leave a half-built domain behind on failure.
            let _ = self.xl.destroy(&spec.name).await;
            // libxl only says "cannot (re-)build domain: -3"; name the usual cause.
            if let Some(free_mib) = self.xl.free_memory_mib().await {
                if spec.memory_mib > free_mib {
                    return Err(VmError::NoMemory {
                        need_mib: spec.memory_mib,
                        free_mib,
                    });
                }
            }
            return Err(e.into());
        }
        // The guest runs only after unpause: its vif is guarded before it can send.
        if let Err(e) = self.guard_bridge_vif(spec).await {
            let _ = self.xl.destroy(&spec.name).await;
            return Err(e);
        }
        let connecting = match self.channel {
            AgentChannel::Vchan => match self.xl.domid(&spec.name).await {
                Ok(Some(domid)) => {
                    return Ok(Box::pin(xen::vchan::connect_agent(self.xl.clone(), domid)))
                }
                Ok(None) => Err(std::io::Error::other("the new domain has no domid")),
                Err(e) => Err(std::io::Error::other(e)),
            },
            AgentChannel::Console => xen::connect_channel(&socket, Duration::from_secs(10)).await,
        };
        match connecting {
            Ok(s) => Ok(connected(s)),
            Err(e) => {
                let _ = self.xl.destroy(&spec.name).await;
                Err(VmError::Io {
                    what: format!("connect to the agent channel {}", socket.display()),
                    source: e,
                })
            }
        }
    }

    async fn unpause(&self, name: &str) -> Result<(), VmError> {
        Ok(self.xl.unpause(name).await?)
    }

    async fn agent_published(&self, name: &str) -> Result<(), VmError> {
        let domid = self.running_domid(name).await?;
        xen::vchan::agent_published(domid)
            .await
            .map_err(io(format!("wait for {name}'s agent to serve")))
    }

    async fn connect_agent(&self, name: &str) -> Result<AgentConnect, VmError> {
        let domid = self.running_domid(name).await?;
        Ok(Box::pin(xen::vchan::connect_agent(self.xl.clone(), domid)))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), VmError> {
        // a name another domain has is VmError::Exists
        Ok(self.xl.rename(from, to).await?)
    }

    async fn pause(&self, name: &str) -> Result<(), VmError> {
        Ok(self.xl.pause(name).await?)
    }

    async fn destroy(&self, name: &str) -> Result<(), VmError> {
        match self.xl.destroy(name).await {
            Ok(()) => Ok(()),
            Err(XlError::Survived { name, last, .. }) => {
                Err(VmError::Survived { name, detail: last })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn check_vif(&self, bridge: &str) -> Result<(), VmError> {
        crate::network::check_bridge(bridge).map_err(VmError::HostNotReady)
    }

    async fn exists(&self, name: &str) -> Result<bool, VmError> {
        Ok(self.xl.exists(name).await?)
    }

    async fn resize(&self, name: &str, resize: Resize) -> Result<(), VmError> {
        if let Some(mib) = resize.memory_mib {
            self.xl.mem_set(name, mib).await?;
        }
        if let Some(n) = resize.vcpus {
            self.xl.vcpu_set(name, n).await?;
        }
        Ok(())
    }

    async fn attach_disk(&self, name: &str, disk: &HotDisk) -> Result<(), VmError> {
        if vdev_number(&disk.vdev).is_none() {
            return Err(VmError::Missing(format!(
                "cannot attach {} as {}",
                disk.target.display(),
                disk.vdev
            )));
        }
        let spec = self.disk(&disk.vdev, &disk.target, disk.writable)?.spec()?;
        Ok(self.xl.block_attach(name, &spec).await?)
    }

    async fn detach_disk(&self, name: &str, vdev: &str) -> Result<(), VmError> {
        let Some(number) = vdev_number(vdev) else {
            return Ok(()); // never attached: not a vdev we make
        };
        if !self.xl.exists(name).await? || !self.xl.block_list(name).await?.contains(&number) {
            return Ok(());
        }
        match self.xl.block_detach(name, vdev).await {
            Ok(()) => Ok(()),
            // Gone meanwhile (the pod's VM destroyed, or a detach that raced).
            Err(_) if !self.xl.exists(name).await? => Ok(()),
            Err(_) if !self.xl.block_list(name).await?.contains(&number) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn vif_device(&self, name: &str) -> Result<String, VmError> {
        let domid = self
            .xl
            .domid(name)
            .await?
            .ok_or_else(|| VmError::Missing(format!("domain {name} does not exist")))?;
        Ok(format!("vif{domid}.0"))
    }

    async fn attach_vif(&self, name: &str, vif: &Vif) -> Result<String, VmError> {
        let spec = xen::config::vif_spec(&self.xl_vif(vif)?)?;
        let domid = self
            .xl
            .domid(name)
            .await?
            .ok_or_else(|| VmError::Missing(format!("domain {name} does not exist")))?;
        let before = self.xl.network_list(name).await?;
        let mac = vif.mac.to_ascii_lowercase();
        let attached = async {
            self.xl.network_attach(name, &spec).await?;
            self.xl
                .network_list(name)
                .await?
                .into_iter()
                .find(|(_, m)| *m == mac)
                .map(|(id, _)| id)
                .ok_or_else(|| VmError::Missing(format!("{name}: no vif {mac} after attaching it")))
        }
        .await;
        // A bridge port is guarded before any tenant code can send on it: a
        // claim plugs it into a pooled VM no tenant ran in, whose agent
        // leaves the link down until the container's network is set up. An
        // unplugged vif's guard is its caller's, applied where it is moved.
        let attached = match (attached, &vif.link) {
            (Ok(devid), VifLink::Bridge(_)) => {
                let dev = format!("vif{domid}.{devid}");
                guard::apply(&vif.guard, &dev, None, Allowed::Pass)
                    .await
                    .map(|()| devid)
                    .map_err(|e| VmError::HostNotReady(e.to_string()))
            }
            (other, _) => other,
        };
        match attached {
            Ok(devid) => Ok(format!("vif{domid}.{devid}")),
            Err(e) => {
                // libxl can leave a failed vif listed: whatever is new goes.
                for (devid, _) in self.xl.network_list(name).await.unwrap_or_default() {
                    if !before.iter().any(|(id, _)| *id == devid) {
                        let _ = self.xl.network_detach(name, &devid.to_string()).await;
                    }
                }
                Err(e)
            }
        }
    }

    async fn detach_vif(&self, name: &str, mac: &str) -> Result<(), VmError> {
        let mac = mac.to_ascii_lowercase();
        let attached = |list: Vec<(u32, String)>| list.iter().any(|(_, m)| *m == mac);
        if !self.xl.exists(name).await? || !attached(self.xl.network_list(name).await?) {
            return Ok(());
        }
        match self.xl.network_detach(name, &mac).await {
            Ok(()) => Ok(()),
            Err(_) if !self.xl.exists(name).await? => Ok(()),
            Err(_) if !attached(self.xl.network_list(name).await?) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn cpu_time(&self, name: &str) -> Option<Duration> {
        // `xl list NAME`: Name ID Mem VCPUs State Time(s)
        let out = self.xl.run(&["list", name]).await.ok()?;
        let line = out.stdout.lines().nth(1)?;
        let secs: f64 = line.split_whitespace().nth(5)?.parse().ok()?;
        Some(Duration::from_secs_f64(secs))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_layered_rootfs_is_a_read_only_xvdb_and_a_writable_xvdc() {
        let spec = super::VmSpec {
            name: "vxn-t".into(),
            kernel: "/k".into(),
            initramfs: "/i".into(),
            cmdline_extra: String::new(),
            agent_log: "info".into(),
            memory_mib: 128,
            max_memory_mib: 256,
            vcpus: 1,
            max_vcpus: 1,
            rootfs_disk: Some("/dev/loop1".into()),
            rootfs_writable: false,
            upper_disk: Some("/dev/loop2".into()),
            vif: None,
            shares: vec![],
            state_dir: "/run/vxn/t".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let hotplug = dir.path().join(".hotplug");
        let hv = super::XenHypervisor::new(
            super::Xl::default(),
            super::AgentChannel::Vchan,
            Some(hotplug.clone()),
        );
        let disks = hv.domain_config(&spec).await.unwrap().disks;
        let got: Vec<_> = disks
            .iter()
            .map(|d| (d.vdev.as_str(), d.target.to_str().unwrap(), d.writable))
            .collect();
        assert_eq!(
            got,
            vec![("xvdb", "/dev/loop1", false), ("xvdc", "/dev/loop2", true)]
        );
        // Both loop devices are reported by vxn's own block script, written on first use.
        let block = hotplug.join("block");
        assert!(disks.iter().all(|d| d.script.as_ref() == Some(&block)));
        assert!(block.is_file());
    }

    #[test]
    fn vdev_numbers_are_xens() {
        assert_eq!(super::vdev_number("xvdb"), Some(51728));
        assert_eq!(super::vdev_number("xvdc"), Some(51744));
        assert_eq!(super::vdev_number("xvdq"), Some((1 << 28) | (16 << 8)));
        assert_eq!(super::vdev_number("xvd"), None);
        assert_eq!(super::vdev_number("sda"), None);
    }
}
