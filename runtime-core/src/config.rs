//! `/etc/vxn/config.toml`: every key optional, defaults built in. See
//! `config/config.toml` for the documented file.

use std::path::{Path, PathBuf};

use crate::hypervisor::Backend;
use crate::network::NetworkConfig;
use crate::pool::{FillPlan, PoolStore, Shape};
use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/vxn/config.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Memory of a container without a memory limit, MiB.
    pub memory_mib: u64,
    /// Smallest memory a container VM gets, whatever its limit says, MiB
    /// (the smallest that runs vxn's kernel, agent and two disks: measured).
    pub min_memory_mib: u64,
    /// What the guest's kernel and agent take of a VM, MiB: a container VM
    /// is its memory limit plus this, so the limit is what the container has.
    pub guest_overhead_mib: u64,
    /// Headroom for Update: maxmem = memory * this factor (at least memory).
    pub max_memory_factor: u64,
    pub vcpus: u32,
    /// vcpus a container VM may be given later (Update), at most.
    pub max_vcpus: u32,
    /// A CRI pod's VM before its containers' limits are added, MiB.
    pub pod_memory_mib: u64,
    /// The most a pod's VM grows to with its containers' limits, MiB.
    pub pod_max_memory_mib: u64,
    /// Free space in the container's writable rootfs image, MiB.
    pub rootfs_extra_mib: u64,
    /// `[network]`: the containers' vif, addresses and DNS.
    pub network: NetworkConfig,
    pub kernel_cmdline_extra: String,
    /// Seconds to wait for the agent after unpausing a new domain.
    pub agent_timeout_secs: u64,
    pub log_level: String,
    pub agent_log_level: String,
    /// Shim state (sockets, configs, state.json); tmpfs is right.
    pub state_dir: PathBuf,
    /// Rootfs images; must hold large files, not tmpfs.
    pub image_dir: PathBuf,
    /// The shared read-only images of layered rootfses (one per layer
    /// chain); on `image_dir`'s filesystem (containers hard-link them).
    pub image_cache_dir: PathBuf,
    /// Unused cached images beyond this size are removed, least recently used first, MiB.
    pub image_cache_max_mib: u64,
    /// Where host directories are bound for a VM's 9p share (only mount points).
    pub share_dir: PathBuf,
    /// Stats format: "v1", "v2" or "auto" (that of the host's cgroup hierarchy, as runc).
    pub metrics: String,
    /// "xen", or "process" for tests only (the agent on the host: no isolation).
    pub hypervisor: String,
    /// How the shim reaches a DomU's agent: "vchan" (shared rings; no dom0
    /// process per domain) or "console" (a PV console channel, which libxl
    /// serves with a QEMU per domain; for guest kernels without gntalloc).
    pub agent_channel: String,
    /// The vxn-agent binary the "process" backend runs.
    pub process_agent: PathBuf,
    /// Seconds any agent call may take (Wait excepted: it lasts as long as the process).
    pub agent_call_timeout_secs: u64,
    /// Seconds a SIGKILLed init may take to be reported gone before the domain is destroyed.
    pub kill_grace_secs: u64,
    /// `[pool]`: booted VMs kept ready for containers (docs/warm-pool.md).
    pub pool: PoolConfig,
}

/// `[pool]`: the config's kernel in two shapes (a container's VM, a pod's VM
/// with its share), their sizes and what they may hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// VMs kept ready; 0: no pool.
    pub size: usize,
    /// What a pooled VM boots with, MiB; a claim grows it to the container's size.
    pub boot_memory_mib: u64,
    /// The most a pooled VM's container may have, MiB (its maxmem).
    pub max_memory_mib: u64,
    /// The most vcpus a pooled VM's container may have.
    pub max_vcpus: u32,
    /// The dom0 memory all pooled VMs may hold together, MiB.
    pub max_pool_mib: u64,
    /// A claim starts `vxnctl pool refill` in the background.
    pub refill: bool,
    /// Pod VMs kept ready (a share each; the pod's maxima:
    /// `pod_max_memory_mib`, `max_vcpus`); 0: pods boot theirs.
    pub pod_size: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            size: 0,
            // measured in the lab (docs/warm-pool.md): 64 MiB boots vxn's kernel
            // to its agent and runs a container with its disks
            boot_memory_mib: 64,
            max_memory_mib: 1024,
            max_vcpus: 2,
            max_pool_mib: 1024,
            refill: true,
            pod_size: 0,
        }
    }
}

fn arch_dir() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "x86_64"
    }
}

impl Default for Config {
    fn default() -> Self {
        let base = Path::new("/usr/share/vxn").join(arch_dir());
        Self {
            kernel: base.join("vmlinuz"),
            initramfs: base.join("initramfs.cpio.gz"),
            memory_mib: 256,
            // lab (docs/warm-pool.md): 64 MiB runs, 56 barely, 40 deadlocks
            // in blkfront; a 64 MiB guest sees 46 MiB of which its kernel and
            // agent use ~25
            min_memory_mib: 64,
            guest_overhead_mib: 48,
            // Xen on Arm builds no domain whose maxmem is above its memory
            // (no populate-on-demand): there a VM keeps its size, and an
            // Update above it is refused as above its maximum.
            max_memory_factor: if cfg!(target_arch = "aarch64") { 1 } else { 2 },
            vcpus: 1,
            max_vcpus: 2,
            pod_memory_mib: 256,
            pod_max_memory_mib: 2048,
            rootfs_extra_mib: 256,
            network: NetworkConfig::default(),
            kernel_cmdline_extra: String::new(),
            agent_timeout_secs: 60,
            log_level: "info".into(),
            agent_log_level: "info".into(),
            state_dir: "/run/vxn".into(),
            image_dir: "/var/lib/vxn".into(),
            // A name no containerd namespace can have (they start alphanumeric).
            image_cache_dir: "/var/lib/vxn/.image-cache".into(),
            image_cache_max_mib: 10240,
            // Off /run's tmpfs (a guest filling a share fills the host's disk
            // quota, not the tmpfs containerd and xenstored write to), and on a
            // filesystem with user xattrs (QEMU's mapped-xattr needs them).
            share_dir: "/var/lib/vxn/.shares".into(),
            metrics: "auto".into(),
            hypervisor: "xen".into(),
            agent_channel: "vchan".into(),
            process_agent: "/usr/local/lib/vxn/vxn-agent".into(),
            agent_call_timeout_secs: 30,
            kill_grace_secs: 10,
            pool: PoolConfig::default(),
        }
    }
}

impl Config {
    /// Where the config is read from: `VXN_CONFIG`, or the default path.
    pub fn path() -> PathBuf {
        std::env::var_os("VXN_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_PATH.into())
    }

    /// Read `VXN_CONFIG` or the default path; a missing file means defaults.
    pub fn load() -> Result<Self, String> {
        let path = Self::path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        // toml's message quotes the line with a caret below it: one line
        // here, as it ends up in a gRPC status and a log line
        let c: Self = toml::from_str(text).map_err(|e| match e.span() {
            Some(at) => {
                let line = text.as_bytes()[..at.start.min(text.len())]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1;
                format!("line {line}: {}", e.message().trim())
            }
            None => e.message().trim().to_string(),
        })?;
        c.backend()?;
        c.network.validate()?;
        if c.pool.size > 0 && c.pool.boot_memory_mib == 0 {
            return Err("[pool] boot_memory_mib must be at least 1".into());
        }
        Ok(c)
    }

    /// The VM backend this config asks for.
    pub fn backend(&self) -> Result<Backend, String> {
        Backend::from_config(&self.hypervisor, &self.agent_channel, &self.process_agent)
    }

    /// The warm pool of containers' VMs this config asks for (its size may
    /// be 0: no pool).
    pub fn pool_plan(&self) -> FillPlan {
        FillPlan {
            shape: Shape {
                kernel: self.kernel.clone(),
                initramfs: self.initramfs.clone(),
                cmdline_extra: self.kernel_cmdline_extra.clone(),
                boot_memory_mib: self.pool.boot_memory_mib,
                max_memory_mib: self.pool.max_memory_mib.max(self.pool.boot_memory_mib),
                max_vcpus: self.pool.max_vcpus.max(1),
                share: false,
                // a container's blank writable layer, attached before the claim
                upper_mib: Some(crate::storage::layers::upper::blank_mib(
                    self.rootfs_extra_mib,
                )),
            },
            size: self.pool.size,
            max_pool_mib: self.pool.max_pool_mib,
            agent_log: self.agent_log_level.clone(),
            agent_timeout: std::time::Duration::from_secs(self.agent_timeout_secs),
        }
    }

    /// The pool of pods' VMs: a share each and a pod's maxima; what the
    /// containers' pool leaves of `max_pool_mib` bounds it.
    pub fn pod_pool_plan(&self) -> FillPlan {
        let containers = self.pool_plan();
        let held = containers.target() as u64 * containers.shape.boot_memory_mib;
        let boot = self.pool.boot_memory_mib;
        FillPlan {
            shape: Shape {
                max_memory_mib: self.pod_max_memory_mib.max(boot),
                max_vcpus: self.max_vcpus.max(self.vcpus).max(1),
                share: true,
                // a pod's containers plug their disks into the pod's VM
                upper_mib: None,
                ..containers.shape
            },
            size: self.pool.pod_size,
            max_pool_mib: self.pool.max_pool_mib.saturating_sub(held),
            ..containers
        }
    }

    /// Both pools (containers' first: they take `max_pool_mib` first).
    pub fn pool_plans(&self) -> [FillPlan; 2] {
        [self.pool_plan(), self.pod_pool_plan()]
    }

    /// The pool's records, its VMs' shares and writable layers where the
    /// containers' are.
    pub fn pool_store(&self) -> PoolStore {
        PoolStore::under(&self.state_dir)
            .with_share_root(self.share_dir.join(".pool"))
            .with_upper_root(self.image_dir.join(".pool"))
    }

    /// Where vxn's hotplug scripts for libxl live: /run is noexec on most
    /// hosts, the image directory is on a disk.
    pub fn hotplug_dir(&self) -> PathBuf {
        self.image_dir.join(".hotplug")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults_and_keys_override() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.memory_mib, 256);
        assert!(c.kernel.ends_with("vmlinuz"));
        let c = Config::parse("memory_mib = 512\n[network]\nmode = \"none\"").unwrap();
        assert_eq!(c.memory_mib, 512);
        assert_eq!(c.network.mode, crate::network::Mode::None);
        assert_eq!(c.network.bridge, "xenbr0");
        assert!(Config::parse("[network]\ngateway = \"10.0.101.1\"").is_err());
        assert!(Config::parse("memroy_mib = 1")
            .unwrap_err()
            .contains("unknown field"));
        assert_eq!(
            Config::default().backend().unwrap(),
            Backend::Xen {
                channel: vxn_wire::boot::AgentChannel::Vchan
            }
        );
        let c = Config::parse("agent_channel = \"console\"").unwrap();
        assert_eq!(
            c.backend().unwrap(),
            Backend::Xen {
                channel: vxn_wire::boot::AgentChannel::Console
            }
        );
        assert!(Config::parse("agent_channel = \"vsock\"")
            .unwrap_err()
            .contains("vsock"));
        let c = Config::parse("hypervisor = \"process\"\nprocess_agent = \"/a\"").unwrap();
        assert_eq!(
            c.backend().unwrap(),
            Backend::Process { agent: "/a".into() }
        );
        assert!(Config::parse("hypervisor = \"kvm\"")
            .unwrap_err()
            .contains("kvm"));
    }

    #[test]
    fn a_parse_error_is_one_line_naming_its_line() {
        let e = Config::parse("memory_mib = 256\nthis is not toml\n").unwrap_err();
        assert!(e.starts_with("line 2: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = Config::parse("memory_mib = 256\nmemory_mib = 512\n").unwrap_err();
        assert!(
            e.starts_with("line 2: ") && e.contains("duplicate key"),
            "{e}"
        );
    }

    #[test]
    fn the_pool_is_off_unless_asked_for() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.pool_plan().target(), 0);
        let c =
            Config::parse("[pool]\nsize = 4\nboot_memory_mib = 64\nmax_pool_mib = 192").unwrap();
        let plan = c.pool_plan();
        assert_eq!(plan.target(), 3, "bounded by what the pool may hold");
        assert_eq!(plan.shape.kernel, c.kernel);
        assert!(Config::parse("[pool]\nsize = 1\nboot_memory_mib = 0").is_err());
        assert!(Config::parse("[pool]\nsise = 1")
            .unwrap_err()
            .contains("unknown field"));
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../config/config.toml");
        Config::parse(text).unwrap();
    }
}
