//! Shim logs go to the `log` fifo containerd opens in the bundle, so they
//! show up in containerd's own log; every line names the namespace and task.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct ShimFormat {
    namespace: String,
    id: String,
}

impl<S, N> FormatEvent<S, N> for ShimFormat
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
        w.write_str("time=\"")?;
        SystemTime.format_time(&mut w)?;
        write!(
            w,
            "\" level={} runtime=io.containerd.vxn.v2 namespace={} id={} ",
            event.metadata().level().as_str().to_lowercase(),
            self.namespace,
            self.id
        )?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Log to `./log` (the fifo containerd reads) if it exists, else stderr.
pub fn init(namespace: &str, id: &str, level: &str, debug: bool) {
    let level = if debug { "debug" } else { level };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VXN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = ShimFormat {
        namespace: namespace.into(),
        id: id.into(),
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
