//! One log line per event, for every vxn process: logfmt-style text
//! (`time="…" level=… <tag> <fields>`, what containerd's log shows) or
//! runc's JSON (`level`, `msg`, `time`, what runc's callers parse).

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub struct LineFormat {
    pub json: bool,
    /// Who wrote it, in front of the fields (e.g. `namespace=ns id=c1`).
    pub tag: String,
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
        let mut fields = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut fields), event)?;
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let level = event.metadata().level().as_str().to_lowercase();
        if self.json {
            let line = serde_json::json!({
                "level": level,
                "msg": format!("{} {fields}", self.tag),
                "time": time,
            });
            writeln!(w, "{line}")
        } else {
            writeln!(w, "time=\"{time}\" level={level} {} {fields}", self.tag)
        }
    }
}
