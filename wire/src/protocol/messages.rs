//! Control messages (JSON in Request/Response/Event/Hello frames).
//!
//! These types are the contract between shim and agent: add fields with
//! `#[serde(default)]` so an older peer still parses them; anything else
//! needs a new [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).

use serde::{Deserialize, Serialize};

use super::network::{NetworkSetup, NetworkState};

/// Identifies a stream in Data/Eof/Credit/Reset frames. Allocated by the host.
pub type StreamId = u32;

/// First frame each side sends. The agent repeats its hello until the host
/// answers, then sends one with `ack: true`; after that frames are in sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: String,
    pub version: u32,
    /// Free text: program name and version, for logs and error messages.
    pub software: String,
    #[serde(default)]
    pub ack: bool,
    /// Set in an ack when the agent refuses the host's hello.
    #[serde(default)]
    pub error: Option<String>,
}

/// The streams of one process. In terminal mode `stdout` carries the tty's
/// output, `stdin` its input and `stderr` is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioStreams {
    pub stdin: Option<StreamId>,
    pub stdout: Option<StreamId>,
    pub stderr: Option<StreamId>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

impl WindowSize {
    /// A console size as OCI and the Task API give it (u32 or wider): each side
    /// saturates at what a tty holds rather than wrapping.
    pub fn clamped(rows: u64, cols: u64) -> Self {
        Self {
            rows: rows.min(u16::MAX.into()) as u16,
            cols: cols.min(u16::MAX.into()) as u16,
        }
    }

    /// The same, or `None` for a size with a zero side (OCI's "not given").
    pub fn given(rows: u64, cols: u64) -> Option<Self> {
        (rows > 0 && cols > 0).then(|| Self::clamped(rows, cols))
    }
}

/// Who the process runs as: ids as the OCI spec gives them (`uid`, `gid`),
/// or, for tools, `user`/`group` as names (or numbers in text) looked up in
/// the container's own /etc/passwd and /etc/group. An id wins over a name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    #[serde(default)]
    pub umask: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// OCI name, e.g. `RLIMIT_NOFILE`.
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// One process to run in a container. `args` is executed exactly as given:
/// never joined or re-parsed by a shell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub user: UserSpec,
    #[serde(default)]
    pub terminal: bool,
    #[serde(default)]
    pub console_size: Option<WindowSize>,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    #[serde(default)]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// The OCI capability sets. `None` leaves the agent's own (full) set, which
    /// only tests want; the shim always sends the spec's (absent = no capabilities).
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
}

impl ProcessSpec {
    /// What every process must have, checked by both ends: the host before
    /// it builds anything, the agent because it trusts no one.
    pub fn validate(&self) -> Result<(), String> {
        match self.args.first() {
            Some(a) if !a.is_empty() => Ok(()),
            _ => Err("process args must not be empty".into()),
        }
    }
}

/// OCI capability sets, by name (`CAP_NET_BIND_SERVICE`, ...). Names the guest
/// kernel does not know are skipped with a warning, as runc does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub bounding: Vec<String>,
    #[serde(default)]
    pub effective: Vec<String>,
    #[serde(default)]
    pub permitted: Vec<String>,
    #[serde(default)]
    pub inheritable: Vec<String>,
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// Where the container's root filesystem comes from, as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RootfsSource {
    /// A block device in the guest (e.g. `/dev/xvdb`), mounted read-write.
    Block {
        device: String,
        fstype: String,
        #[serde(default)]
        options: Vec<String>,
    },
    /// A directory already visible to the agent (tests, or a prepared path).
    Directory { path: String },
    /// A 9p share exported to the domain (`p9=` in the xl config).
    Share { tag: String },
    /// An overlay of a read-only image (`lower`, mounted read-only) and a
    /// writable filesystem (`upper`) holding `upper/` and `work/`.
    Overlay { lower: BlockFs, upper: BlockFs },
}

/// A filesystem on a block device of the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockFs {
    pub device: String,
    pub fstype: String,
}

/// A mount inside the container. Host bind mounts never reach the agent:
/// the shim maps them to a `Share` or a `File`, or refuses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub destination: String,
    #[serde(flatten)]
    pub kind: MountKind,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountKind {
    /// A kernel filesystem: proc, sysfs, tmpfs, devpts, mqueue, cgroup, cgroup2.
    Kernel { fstype: String },
    /// A 9p share exported to the domain, optionally a subdirectory of it.
    Share {
        tag: String,
        #[serde(default)]
        subpath: Option<String>,
    },
    /// A small file whose contents the shim sends (hosts, resolv.conf, ...).
    File { contents: String, mode: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateContainer {
    pub container_id: String,
    #[serde(default)]
    pub hostname: Option<String>,
    pub rootfs: RootfsSource,
    #[serde(default)]
    pub readonly_rootfs: bool,
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    pub process: ProcessSpec,
    pub stdio: StdioStreams,
    /// The container's own memory limit, enforced in the guest (a pod's
    /// container: the VM is shared). None: the VM's memory is the limit.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// Its PID namespace, masked and read-only paths, sysctls.
    #[serde(default)]
    pub isolation: Box<super::Isolation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// Mount the rootfs and prepare (not start) the init process.
    CreateContainer(CreateContainer),
    /// Start the init process (`exec_id: None`) or a prepared exec.
    Start {
        container_id: String,
        #[serde(default)]
        exec_id: Option<String>,
    },
    /// Prepare another process in a running container.
    Exec {
        container_id: String,
        exec_id: String,
        process: ProcessSpec,
        stdio: StdioStreams,
    },
    /// Send `signal` to the process, or with `all` to every process of the container.
    Signal {
        container_id: String,
        #[serde(default)]
        exec_id: Option<String>,
        signal: i32,
        #[serde(default)]
        all: bool,
    },
    /// Answered once the process has exited and its output is flushed.
    Wait {
        container_id: String,
        #[serde(default)]
        exec_id: Option<String>,
    },
    ResizeTty {
        container_id: String,
        #[serde(default)]
        exec_id: Option<String>,
        size: WindowSize,
    },
    CloseStdin {
        container_id: String,
        #[serde(default)]
        exec_id: Option<String>,
    },
    /// Forget an exited exec, or (no exec_id) tear the container down.
    Delete {
        container_id: String,
        #[serde(default)]
        exec_id: Option<String>,
    },
    /// The VM's counters (`container_id` empty, or `container_only` false),
    /// or those of the container's processes alone (a pod's VM is shared).
    Stats {
        container_id: String,
        #[serde(default)]
        container_only: bool,
    },
    /// One page of the container's processes, in pid order, those with a pid
    /// above `after` (a cursor: the last pid of the previous page).
    ListPids {
        container_id: String,
        #[serde(default)]
        after: Option<u32>,
    },
    /// Bring up lo and the given interfaces, addresses and routes; remember
    /// the DNS settings for the containers' /etc/resolv.conf. Once per VM,
    /// before its first container.
    SetupNetwork(NetworkSetup),
    /// Bring up more interfaces, with their addresses and routes, on a VM
    /// that runs: a network the engine connected the container to later
    /// (`docker network connect`). Neither DNS nor a relay: those are the
    /// first setup's.
    AddInterfaces(NetworkSetup),
    /// Sync filesystems, then power the domain off.
    Shutdown,
}

/// The signals that end a process created and never started (`Signal`
/// before `Start`: it is over, with 128 + the signal), in Linux's numbers:
/// HUP, INT, QUIT, KILL, TERM. Any other is refused until `Start`.
pub const ENDS_UNSTARTED: [i32; 5] = [1, 2, 3, 9, 15];

impl Request {
    /// The operation's name, for errors and logs.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::CreateContainer(_) => "create",
            Self::Start { .. } => "start",
            Self::Exec { .. } => "exec",
            Self::Signal { .. } => "signal",
            Self::Wait { .. } => "wait",
            Self::ResizeTty { .. } => "resize",
            Self::CloseStdin { .. } => "close-stdin",
            Self::Delete { .. } => "delete",
            Self::Stats { .. } => "stats",
            Self::ListPids { .. } => "pids",
            Self::SetupNetwork(_) => "network",
            Self::AddInterfaces(_) => "add-interfaces",
            Self::Shutdown => "shutdown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The shell convention: the exit code, or 128 + signal number.
    pub code: i32,
    /// The signal that killed the process, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Unix time of the exit in nanoseconds (guest clock).
    pub exited_at_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    /// Memory in use as the guest sees it (total - available).
    pub memory_usage_bytes: u64,
    pub memory_limit_bytes: u64,
    pub memory_cache_bytes: u64,
    pub pids: u64,
    pub oom_kills: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    #[serde(default)]
    pub exec_id: Option<String>,
    pub command: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub software: String,
    pub kernel: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Pong(AgentInfo),
    Started {
        pid: u32,
    },
    Exited(ExitStatus),
    Stats(Stats),
    /// A page of processes; `more`: ask again with `after` = the last pid.
    Pids {
        processes: Vec<ProcessInfo>,
        #[serde(default)]
        more: bool,
    },
    Network(NetworkState),
}

impl Response {
    /// The variant's name: what an unexpected answer is reported as (never its
    /// guest-supplied contents).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Pong(_) => "pong",
            Self::Started { .. } => "started",
            Self::Exited(_) => "exited",
            Self::Stats(_) => "stats",
            Self::Pids { .. } => "pids",
            Self::Network(_) => "network",
        }
    }
}

/// Error categories; the shim maps them onto ttrpc status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    Unsupported,
    /// Something outside the guest did not answer (e.g. no DHCP server).
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub kind: ErrorKind,
    pub message: String,
}

impl AgentError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What a Response frame carries.
pub type ResponseBody = Result<Response, AgentError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The guest kernel OOM-killed a process of the container.
    Oom { container_id: String },
}

impl MountSpec {
    fn kernel(destination: &str, fstype: &str, options: &[&str]) -> Self {
        Self {
            destination: destination.into(),
            kind: MountKind::Kernel {
                fstype: fstype.into(),
            },
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The kernel filesystems every OCI runtime gives a container by default.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::kernel("/proc", "proc", &["nosuid", "noexec", "nodev"]),
            Self::kernel(
                "/dev",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            Self::kernel(
                "/dev/pts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                ],
            ),
            Self::kernel(
                "/dev/shm",
                "tmpfs",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ),
            Self::kernel("/sys", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_rootfs_names_both_layers_on_the_wire() {
        let fs = |device: &str, fstype: &str| BlockFs {
            device: device.into(),
            fstype: fstype.into(),
        };
        let r = RootfsSource::Overlay {
            lower: fs("/dev/xvdb", "erofs"),
            upper: fs("/dev/xvdc", "ext4"),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "overlay",
                "lower": {"device": "/dev/xvdb", "fstype": "erofs"},
                "upper": {"device": "/dev/xvdc", "fstype": "ext4"},
            })
        );
        assert_eq!(serde_json::from_value::<RootfsSource>(json).unwrap(), r);
    }

    #[test]
    fn a_console_size_saturates_and_a_zero_side_is_not_given() {
        let ws = |rows, cols| WindowSize { rows, cols };
        assert_eq!(WindowSize::clamped(24, 80), ws(24, 80));
        assert_eq!(
            WindowSize::clamped(70_000, u64::MAX),
            ws(u16::MAX, u16::MAX)
        );
        assert_eq!(WindowSize::given(24, 80), Some(ws(24, 80)));
        assert_eq!(WindowSize::given(0, 80), None);
        assert_eq!(WindowSize::given(24, 0), None);
    }
}
