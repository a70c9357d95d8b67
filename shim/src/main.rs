//! containerd-shim-vxn-v2: containerd runs each container as its own Xen
//! DomU, whose PID 1 is vxn-agent. Runtime type `io.containerd.vxn.v2`.
#![forbid(unsafe_code)]

mod error;
mod events;
mod io;
mod logging;
mod metrics;
mod reap;
mod service;
mod task;

pub const RUNTIME_ID: &str = "io.containerd.vxn.v2";

fn main() {
    let arg1 = std::env::args().nth(1);
    if matches!(arg1.as_deref(), Some("-v" | "--version" | "-version")) {
        println!(
            "containerd-shim-vxn-v2 {} (task API v2, agent protocol v{})",
            env!("CARGO_PKG_VERSION"),
            vxn_wire::protocol::PROTOCOL_VERSION
        );
        return;
    }
    if arg1.as_deref() == Some(reap::REAP_ARG) {
        let args: Vec<String> = std::env::args().skip(2).collect();
        std::process::exit(reap::main(&args));
    }
    // Two workers: a shim is mostly idle; keep its footprint small.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("containerd-shim-vxn-v2: {e}");
            std::process::exit(1);
        }
    };
    let cfg = containerd_shim::Config {
        // Every `xl` call is our own tokio child: a global waitpid(-1) reaper
        // would steal their exit statuses.
        no_reaper: true,
        // Orphans (xl's domain watcher) go to init, not to us.
        no_sub_reaper: true,
        // We log with tracing, namespace and id on every line.
        no_setup_logger: true,
        ..Default::default()
    };
    rt.block_on(containerd_shim::asynchronous::run::<service::Service>(
        RUNTIME_ID,
        Some(cfg),
    ));
    // A thread still blocked (a fifo open with no writer) must not keep a
    // finished shim alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
}
