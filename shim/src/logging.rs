//! Shim logs go to the `log` fifo containerd opens in the bundle, so they
//! show up in containerd's own log; every line names the namespace and task.

use vxn_runtime_core::logfmt::LineFormat;

/// Log to `./log` (the fifo containerd reads) if it exists, else stderr.
pub fn init(namespace: &str, id: &str, level: &str, debug: bool) {
    let level = if debug { "debug" } else { level };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VXN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = LineFormat {
        json: false,
        tag: format!("runtime=io.containerd.vxn.v2 namespace={namespace} id={id}"),
    };
    let fifo = std::fs::OpenOptions::new().write(true).open("log");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .event_format(fmt);
    let _ = match fifo {
        Ok(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
}
