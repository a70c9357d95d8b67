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
        // Fields may carry what a guest or an image said: one line, bounded.
        let fields = one_bounded_line(&fields);
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

/// The most of one event's fields a log line keeps.
const MAX_FIELDS_BYTES: usize = 8 * 1024;

/// Control characters escaped (no forged lines, no terminal escapes) and
/// the text cut after [`MAX_FIELDS_BYTES`] characters, saying how much was cut.
fn one_bounded_line(s: &str) -> String {
    vxn_wire::protocol::text::escape_controls(s, MAX_FIELDS_BYTES, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_stays_one_bounded_line() {
        assert_eq!(
            one_bounded_line("agent=\"x\ntime=forged\x1b[2J\""),
            "agent=\"x\\ntime=forged\\u{1b}[2J\""
        );
        let long = "é".repeat(10_000);
        let cut = one_bounded_line(&long);
        assert!(cut.chars().count() < MAX_FIELDS_BYTES + 40, "{}", cut.len());
        assert!(cut.ends_with("bytes)"));
        assert_eq!(one_bounded_line("plain text"), "plain text");
    }
}
