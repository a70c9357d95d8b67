//! mount(2) as the agent calls it: the error says what was mounted where,
//! as the host will read it.

use std::path::Path;

use nix::mount::{mount, MsFlags};
use vxn_wire::protocol::{AgentError, ErrorKind};

pub(crate) fn do_mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: &str,
) -> Result<(), AgentError> {
    mount(source, target, fstype, flags, data).map_err(|e| {
        AgentError::new(
            ErrorKind::Internal,
            format!(
                "mount {} on {what} ({}): {e}",
                source.unwrap_or("none"),
                fstype.unwrap_or("bind")
            ),
        )
    })
}
