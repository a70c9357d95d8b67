//! The seam between a container and the VM technology that runs it.
//!
//! Two backends, chosen in one place ([`crate::platform`]):
//! * [`crate::xen::domain::XenHypervisor`]: a Xen DomU per container, through `xl`;
//! * [`ProcessHypervisor`]: for tests only, the agent as a host process in a
//!   cgroup. It gives NO isolation; it exists so the shim's whole lifecycle
//!   can be tested through containerd without a hypervisor.

mod process;
mod vif;

pub use process::ProcessHypervisor;
pub use vif::{Vif, VifGuard, VifLink};

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use vxn_wire::boot::AgentChannel;

/// `agent_channel` in the config: the one place the channel is chosen.
pub fn parse_agent_channel(s: &str) -> Result<AgentChannel, String> {
    match s {
        "vchan" => Ok(AgentChannel::Vchan),
        "console" => Ok(AgentChannel::Console),
        other => Err(format!(
            "agent_channel = {other:?}: use \"vchan\" (shared rings, no dom0 process) or \"console\" (a PV console served by a QEMU per domain)"
        )),
    }
}

/// Everything needed to create one container VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Appended to the kernel command line the backend builds.
    pub cmdline_extra: String,
    pub agent_log: String,
    pub memory_mib: u64,
    pub max_memory_mib: u64,
    pub vcpus: u32,
    pub max_vcpus: u32,
    /// The container's rootfs disk, seen as `/dev/xvdb` in the guest.
    pub rootfs_disk: Option<PathBuf>,
    /// Whether the guest may write to the rootfs disk.
    pub rootfs_writable: bool,
    /// A layered rootfs's writable layer, seen as `/dev/xvdc`.
    pub upper_disk: Option<PathBuf>,
    /// A network interface on a dom0 bridge, or for a pod's netns.
    pub vif: Option<Vif>,
    /// 9p shares: (tag, dom0 directory).
    pub shares: Vec<(String, PathBuf)>,
    /// Where the backend keeps the VM's config and channel socket.
    pub state_dir: PathBuf,
}

/// A disk given to a running VM; the guest sees it as `/dev/<vdev>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotDisk {
    pub vdev: String,
    pub target: PathBuf,
    pub writable: bool,
}

/// A backend's own error, typed where it is made (e.g. `xen::XlError`).
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The backend cannot express the request (its own error, kept as the source).
    #[error("invalid VM configuration: {0}")]
    Config(#[source] BackendError),
    /// The backend's toolstack failed (its own error, kept as the source).
    #[error(transparent)]
    Backend(BackendError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Missing(String),
    #[error("the domain needs {need_mib} MiB of memory but Xen has only {free_mib} MiB free")]
    NoMemory { need_mib: u64, free_mib: u64 },
    #[error("domain {0} already exists")]
    Exists(String),
    #[error("domain {name} is still there after destroying it: {detail}")]
    Survived { name: String, detail: String },
    #[error("{0} is not supported by the {1} backend")]
    Unsupported(&'static str, &'static str),
    /// The host is not set up for the request (e.g. the vif's bridge is missing).
    #[error("{0}")]
    HostNotReady(String),
}

/// The host end of an agent channel, whatever carries it.
pub trait AgentIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AgentIo for T {}
pub type AgentStream = Box<dyn AgentIo>;

/// Connecting to a new VM's agent channel. A console channel's socket exists
/// once the domain does; a vchan appears only when the guest has booted far
/// enough to publish it, so the caller awaits this after unpausing, within
/// its hello timeout.
pub type AgentConnect =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<AgentStream>> + Send>>;

/// Await the channel, then the agent's hello, all within `timeout`.
pub async fn connect_agent(
    channel: AgentConnect,
    timeout: Duration,
) -> Result<crate::AgentClient, String> {
    let connecting = async {
        let io = channel.await.map_err(|e| format!("agent channel: {e}"))?;
        crate::AgentClient::connect(io, timeout)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| format!("no agent channel within {timeout:?}"))?
}

/// An [`AgentConnect`] for a stream that is already there.
pub fn connected(io: impl AgentIo) -> AgentConnect {
    Box::pin(async move { Ok(Box::new(io) as AgentStream) })
}

#[async_trait]
pub trait Hypervisor: Send + Sync + 'static {
    /// "xen" or "process": recorded with a container's state.
    fn kind(&self) -> &'static str;
    /// Create the VM paused and return how to reach its agent channel.
    /// A domain of that name that already exists is an error and is left
    /// alone; on any other error nothing is left behind.
    async fn create_paused(&self, spec: &VmSpec) -> Result<AgentConnect, VmError>;
    async fn unpause(&self, name: &str) -> Result<(), VmError>;
    async fn pause(&self, name: &str) -> Result<(), VmError>;
    /// Destroy the VM and make sure it is gone (retrying); Ok means gone.
    /// One that is already gone is not an error.
    async fn destroy(&self, name: &str) -> Result<(), VmError>;
    /// Whether a VM of that name exists; an error when that cannot be told.
    async fn exists(&self, name: &str) -> Result<bool, VmError>;
    /// CPU time the VM has used, if the backend knows.
    async fn cpu_time(&self, name: &str) -> Option<Duration>;
    /// Whether a vif on this bridge can be given to a VM now (checked before
    /// anything of a container is made).
    async fn check_vif(&self, bridge: &str) -> Result<(), VmError>;
    /// Change the VM's memory and/or online vcpus, within the maximums of its `VmSpec`.
    async fn resize(&self, name: &str, resize: Resize) -> Result<(), VmError>;
    /// Attach a disk to the running VM (block hot-plug).
    async fn attach_disk(&self, _name: &str, _disk: &HotDisk) -> Result<(), VmError> {
        Err(VmError::Unsupported("disk hot-plug", self.kind()))
    }
    /// Detach a disk; one already gone, or a VM that is gone, is not an error.
    async fn detach_disk(&self, _name: &str, _vdev: &str) -> Result<(), VmError> {
        Err(VmError::Unsupported("disk hot-plug", self.kind()))
    }
    /// The dom0 network device of the VM's first vif's backend.
    async fn vif_device(&self, _name: &str) -> Result<String, VmError> {
        Err(VmError::Unsupported(
            "moving a vif into a network namespace",
            self.kind(),
        ))
    }
    /// Give the running VM one more vif (network hot-plug); returns its
    /// backend's dom0 device. A bridge vif is guarded as at boot; an
    /// `Unplugged` vif's guard is the caller's to apply, as at boot.
    async fn attach_vif(&self, _name: &str, _vif: &Vif) -> Result<String, VmError> {
        Err(VmError::Unsupported("network hot-plug", self.kind()))
    }
    /// Take the vif with this MAC away; one already gone, or a VM that is
    /// gone, is not an error.
    async fn detach_vif(&self, _name: &str, _mac: &str) -> Result<(), VmError> {
        Err(VmError::Unsupported("network hot-plug", self.kind()))
    }
    /// Wait until the running VM's agent serves its channel, without being
    /// its client (a warm pool's VM is ready then). The caller bounds it.
    async fn agent_published(&self, _name: &str) -> Result<(), VmError> {
        Err(VmError::Unsupported("a warm pool", self.kind()))
    }
    /// Reach the agent of a VM made earlier (by another process: a pooled VM).
    async fn connect_agent(&self, _name: &str) -> Result<AgentConnect, VmError> {
        Err(VmError::Unsupported("a warm pool", self.kind()))
    }
    /// Give the VM another name (a claimed pooled VM takes its container's).
    async fn rename(&self, _from: &str, _to: &str) -> Result<(), VmError> {
        Err(VmError::Unsupported("a warm pool", self.kind()))
    }
}

/// The VM's size now, and the maximums it was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub memory_mib: u64,
    pub max_memory_mib: u64,
    pub vcpus: u32,
    pub max_vcpus: u32,
}

/// A change of a running VM's size; `None` leaves that dimension alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resize {
    pub memory_mib: Option<u64>,
    pub vcpus: Option<u32>,
}

/// Which backend runs containers (`hypervisor` in /etc/vxn/config.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Xen {
        channel: AgentChannel,
    },
    /// Tests only: `agent` is the vxn-agent binary to run on the host.
    Process {
        agent: PathBuf,
    },
}

impl Backend {
    /// From the config: `hypervisor` ("xen" | "process") and, for "process", the agent binary.
    pub fn from_config(
        hypervisor: &str,
        agent_channel: &str,
        process_agent: &std::path::Path,
    ) -> Result<Self, String> {
        match hypervisor {
            "xen" => Ok(Self::Xen {
                channel: parse_agent_channel(agent_channel)?,
            }),
            "process" => Ok(Self::Process {
                agent: process_agent.to_path_buf(),
            }),
            other => Err(format!(
                "hypervisor = {other:?}: use \"xen\" (or \"process\", for tests only: no isolation)"
            )),
        }
    }
}

impl From<VmError> for crate::Error {
    fn from(e: VmError) -> Self {
        let msg = e.to_string();
        match e {
            // The request asks for something this host cannot give.
            VmError::Config(_) | VmError::Missing(_) | VmError::NoMemory { .. } => {
                crate::Error::InvalidArgument(msg)
            }
            VmError::Exists(_) => crate::Error::AlreadyExists(msg),
            VmError::Unsupported(..) => crate::Error::Unimplemented(msg),
            VmError::HostNotReady(_) => crate::Error::FailedPrecondition(msg),
            VmError::Backend(_) | VmError::Io { .. } | VmError::Survived { .. } => {
                crate::Error::Internal(msg)
            }
        }
    }
}
