//! Logging as runc does it: lines appended to `--log`, as JSON objects
//! (`level`, `msg`, `time`) with `--log-format json`. containerd's runc shim
//! and conmon read the last `error` line of that file to explain a failure,
//! so every error this runtime returns is logged there too.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// One log line per event, in the format the caller asked for.
struct LineFormat {
    json: bool,
    /// Which invocation wrote it (the file is shared by all of them).
    who: String,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut msg = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut msg), event)?;
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let level = event.metadata().level().as_str().to_lowercase();
        if self.json {
            let line = serde_json::json!({
                "level": level,
                "msg": format!("{}: {msg}", self.who),
                "time": time,
            });
            writeln!(w, "{line}")
        } else {
            writeln!(w, "time=\"{time}\" level={level} {}: {msg}", self.who)
        }
    }
}

/// Log to `file` when given; else to stderr when `to_stderr` (a command a
/// person runs), or nowhere (a keeper: its stderr is the container's).
pub fn init(file: Option<&Path>, json: bool, debug: bool, who: String, to_stderr: bool) {
    let level = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VXN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .event_format(LineFormat { json, who });
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
