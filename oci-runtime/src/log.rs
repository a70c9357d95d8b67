//! Logging as runc does it: lines appended to `--log`, as JSON objects
//! (`level`, `msg`, `time`) with `--log-format json`. containerd's runc shim
//! and conmon read the last `error` line of that file to explain a failure,
//! so every error this runtime returns is logged there too.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use vxn_runtime_core::logfmt::LineFormat;

/// Log to `file` when given; else to stderr when `to_stderr` (a command a
/// person runs), or nowhere (a keeper: its stderr is the container's).
pub fn init(file: Option<&Path>, json: bool, debug: bool, who: String, to_stderr: bool) {
    let level = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VXN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .event_format(LineFormat {
            json,
            tag: format!("{who}:"),
        });
    let file = file.and_then(|p| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| {
                let _ = writeln!(
                    std::io::stderr(),
                    "vxn-oci-runtime: log {}: {e}",
                    p.display()
                );
            })
            .ok()
    });
    let _ = match (file, to_stderr) {
        (Some(f), _) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        (None, true) => builder
            .with_max_level(tracing::Level::WARN)
            .with_writer(std::io::stderr)
            .try_init(),
        (None, false) => builder.with_writer(std::io::sink).try_init(),
    };
}
