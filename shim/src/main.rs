//! containerd-shim-vxn-v2: containerd runs each container as its own Xen
//! DomU, whose PID 1 is vxn-agent. Runtime type `io.containerd.vxn.v2`.
//!
//! One binary for containerd 1.6, 1.7 and 2.x: the `start` action speaks
//! both bootstrap protocols (`bootstrap.rs`), the server both task APIs.
#![forbid(unsafe_code)]

mod bootstrap;
mod delete;
mod error;
mod events;
mod info;
mod io;
mod logging;
mod metrics;
mod reap;
mod serve;

mod start;
mod task;

pub const RUNTIME_ID: &str = "io.containerd.vxn.v2";

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).and_then(|a| a.to_str()) == Some(reap::REAP_ARG) {
        let args: Vec<String> = std::env::args().skip(2).collect();
        std::process::exit(reap::main(&args));
    }
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => fail(e),
    };
    if flags.version {
        println!(
            "containerd-shim-vxn-v2 {} (task API v2 and v3, agent protocol v{})",
            env!("CARGO_PKG_VERSION"),
            vxn_wire::protocol::PROTOCOL_VERSION
        );
        return;
    }
    if flags.info {
        if let Err(e) = info::run() {
            fail(e);
        }
        return;
    }
    // Two workers: a shim is mostly idle; keep its footprint small.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(e),
    };
    let result = rt.block_on(async {
        match flags.action.as_str() {
            "start" => start::run(&flags).await.map_err(|e| e.to_string()),
            "delete" => delete::run(&flags).await,
            "" => serve::run(&flags).await.map_err(|e| {
                tracing::error!(error = %e, "the shim stops");
                e.to_string()
            }),
            other => Err(format!("unknown action {other:?} (start, delete)")),
        }
    });
    // A thread still blocked (a fifo open with no writer) must not keep a
    // finished shim alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Err(e) = result {
        fail(e);
    }
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("{RUNTIME_ID}: {e}");
    std::process::exit(1);
}
