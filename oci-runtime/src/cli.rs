//! runc's command line, as Docker (through containerd's runc shim), Podman
//! (through conmon) and people call it. Flags vxn cannot honour are accepted
//! where runc's callers pass them routinely and change nothing for a VM
//! (`--no-pivot`, `--systemd-cgroup`); the others are refused in `main`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_ROOT: &str = "/run/vxn-oci-runtime";

#[derive(Debug, Parser)]
#[command(
    name = "vxn-oci-runtime",
    about = "runc-compatible OCI runtime: every container is its own Xen DomU",
    disable_version_flag = true,
    subcommand_required = false
)]
pub struct Cli {
    /// Where container state lives (one directory per container).
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Append log lines to this file (the callers read errors from it).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// "text" or "json" (runc's: level, msg, time).
    #[arg(long = "log-format", global = true, default_value = "text")]
    pub log_format: String,
    /// Accepted: a VM has no host cgroup to manage.
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Log at debug level.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted and ignored (checkpointing is refused).
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// "false" or "auto" accepted; vxn always runs as root.
    #[arg(long, global = true, hide = true)]
    pub rootless: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container (its VM booted, paused until start).
    Create(Create),
    /// Create and start a container; without --detach, wait for it and exit with its status.
    Run(Run),
    /// Start the container's process.
    Start(Id),
    /// The container's state as runc's JSON.
    State(Id),
    /// Send a signal to the container's init (or with --all, to all its processes).
    Kill(Kill),
    /// Remove a stopped container (--force: any), its VM and everything it made.
    Delete(Delete),
    /// Run a further process in the container.
    Exec(Exec),
    /// Freeze the container's VM.
    Pause(Id),
    /// Thaw the container's VM.
    Resume(Id),
    /// The container's processes.
    Ps(Ps),
    /// Change the container's resources (memory, CPUs) within what its VM allows.
    Update(Update),
    /// What this runtime supports, as runc's JSON.
    Features,
    /// List containers.
    List(List),
    /// Print the version.
    Version,
    /// Commands runc has and vxn refuses (checkpoint, restore, events, spec…).
    #[command(external_subcommand)]
    Other(Vec<String>),
    /// The process that keeps a container (internal: started by create).
    #[command(name = "__keep", hide = true)]
    Keep(Keep),
    /// The process that keeps an exec (internal: started by exec --detach).
    #[command(name = "__keep-exec", hide = true)]
    KeepExec(KeepExec),
}

#[derive(Debug, Args)]
pub struct Id {
    pub id: String,
}

#[derive(Debug, Args, Clone)]
pub struct Create {
    /// The bundle: config.json and the rootfs it names.
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// A unix socket to send the terminal's master to (process.terminal).
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Write the pid of the process that stands for the container here.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Accepted: there is no pivot_root on the host.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted: the guest has its own keyrings.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Extra fds for the container: refused unless 0 (a VM cannot inherit host fds).
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct Run {
    #[command(flatten)]
    pub create: Create,
    /// Return once started; the container's stand-in process keeps running.
    #[arg(long, short = 'd')]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct Kill {
    /// Every process of the container, not only its init.
    #[arg(long, short = 'a')]
    pub all: bool,
    pub id: String,
    /// A name (TERM, SIGTERM) or number; default TERM.
    pub signal: Option<String>,
}

#[derive(Debug, Args)]
pub struct Delete {
    /// Kill the container first if it still runs.
    #[arg(long, short = 'f')]
    pub force: bool,
    pub id: String,
}

#[derive(Debug, Args, Clone)]
pub struct Exec {
    /// The process as OCI JSON (process of config.json); else ARGS and the flags below.
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Return once started; the exec's stand-in process exits with its status.
    #[arg(long, short = 'd')]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Give the process a terminal.
    #[arg(long, short = 't')]
    pub tty: bool,
    #[arg(long)]
    pub cwd: Option<String>,
    /// KEY=VALUE, repeatable.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// UID[:GID].
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Additional gids, repeatable.
    #[arg(long = "additional-gids", short = 'g')]
    pub additional_gids: Vec<u32>,
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Refused unless 0.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted and ignored (no host LSM applies inside a VM).
    #[arg(long = "apparmor", hide = true)]
    pub apparmor: Option<String>,
    #[arg(long = "process-label", hide = true)]
    pub process_label: Option<String>,
    /// Capabilities to add, repeatable.
    #[arg(long = "cap", short = 'c')]
    pub caps: Vec<String>,
    pub id: String,
    /// The command and its arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Ps {
    /// "table" (the guest's processes) or "json" (the host pids that stand for them).
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    pub id: String,
    /// ps(1) options: refused (the processes are in the guest).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Update {
    /// LinuxResources as JSON, from a file or "-" for stdin.
    #[arg(long, short = 'r')]
    pub resources: Option<PathBuf>,
    /// Memory limit (bytes, or with k/m/g).
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// Other runc update flags: refused (a VM has no such host cgroup knob).
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct List {
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Internal: the container keeper, as `create` starts it.
#[derive(Debug, Args)]
pub struct Keep {
    #[command(flatten)]
    pub create: Create,
    /// The write end of create's readiness pipe.
    #[arg(long = "ready-fd")]
    pub ready_fd: i32,
}

/// Internal: an exec's keeper, as `exec --detach` starts it.
#[derive(Debug, Args)]
pub struct KeepExec {
    /// The process, resolved by `exec` into a file of its own (removed once read).
    #[arg(long)]
    pub process: PathBuf,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long = "ready-fd")]
    pub ready_fd: i32,
    pub id: String,
}
