//! vxn-agent: PID 1 of a vxn DomU. It mounts the container, runs its
//! processes and talks to the shim over one channel (a Xen PV console).
//! Not PID 1 (tests), it isolates itself in private namespaces instead.

mod caps;
mod cgroup;
mod channel;
mod config;
mod container;
mod fdstream;
mod layered;
mod mounts;
mod network;
mod pid1;
mod process;
mod process_io;
mod procfs;
mod pty;
mod reaper;
mod rootfs_ns;
mod safe_path;
mod seccomp;
mod server;
mod spawn;
mod sys_mount;
mod user;

use std::sync::Arc;
use std::time::Duration;

use vxn_wire::mux::{handshake_agent, Mux, Role};

use config::Config;
use server::{Agent, Ended};

pub const SOFTWARE: &str = concat!("vxn-agent ", env!("CARGO_PKG_VERSION"));
/// Lets the last response reach the host before the domain goes away.
const FLUSH_GRACE: Duration = Duration::from_millis(200);
const GUEST_POLL: Duration = Duration::from_secs(1);

fn main() {
    pid1::ensure_std_fds();
    let pid1 = std::process::id() == 1;
    let cfg = if pid1 {
        pid1::early_setup();
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        Config::from_cmdline(&cmdline).unwrap_or_else(|e| {
            eprintln!("vxn-agent: {e}; using defaults");
            Config::from_cmdline("").expect("defaults parse")
        })
    } else {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let cfg = Config::from_args(&args).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });
        if let Err(e) = pid1::isolate_for_tests(cfg.die_with_parent) {
            eprintln!("vxn-agent: {e}");
            std::process::exit(1)
        }
        cfg
    };
    init_logging(&cfg.log);
    if pid1 {
        pid1::load_modules(&cfg.modules);
        match pid1::switch_root() {
            Ok(()) => tracing::info!("left the initramfs for the agent's own root"),
            // Containers will fail to start (pivot_root); the agent still answers.
            Err(e) => tracing::error!(error = %e, "cannot leave the initramfs"),
        }
        if !cgroup::init() {
            tracing::warn!("no cgroup v2 memory controller: containers share the VM's limits");
        }
    }
    // A VM (or pod) without a network still has localhost, as `--network none` has.
    if let Err(e) = network::loopback_up() {
        tracing::warn!(error = %e, "cannot bring lo up");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let code = match rt {
        Ok(rt) => rt.block_on(run(cfg.clone())),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            1
        }
    };
    if pid1 {
        tracing::info!("powering off");
        pid1::power_off();
    }
    std::process::exit(code);
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

async fn run(cfg: Config) -> i32 {
    let reaper = match reaper::Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGCHLD");
            return 1;
        }
    };
    let mut io = match channel::open(&cfg.channel).await {
        Ok(io) => io,
        Err(e) => {
            tracing::error!(error = %e, "no channel to the shim");
            return 1;
        }
    };
    tracing::info!(software = SOFTWARE, channel = ?cfg.channel, "waiting for the shim");
    let (host, leftover) = match handshake_agent(&mut io, SOFTWARE).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "handshake failed");
            return 1;
        }
    };
    tracing::info!(host = %host.software, "connected");
    let (mux, incoming) = Mux::start(io, leftover, Role::Agent);
    let agent = Agent::new(mux, reaper, cfg.state_dir.clone());
    if cfg.pid1 {
        tokio::spawn(watch_guest(agent.clone()));
    }
    let ended = agent.clone().serve(incoming).await;
    tracing::info!(?ended, "stopping");
    agent.destroy_all().await;
    tokio::time::sleep(FLUSH_GRACE).await;
    match ended {
        Ended::ShutdownRequested => 0,
        Ended::ChannelClosed(_) => 0,
    }
}

/// Publish an OOM event whenever the guest kernel's OOM-kill count grows, and
/// bring vcpus online that Xen hot-plugged (`xl vcpu-set`): there is no udev.
async fn watch_guest(agent: Arc<Agent>) {
    agent.enable_oom_events();
    loop {
        tokio::time::sleep(GUEST_POLL).await;
        agent.check_oom();
        procfs::online_new_cpus();
        if agent.mux().is_closed() {
            return;
        }
    }
}
