//! The boot contract: what the host puts on a guest's kernel command line and
//! which devices it gives the guest, as the agent (PID 1) expects to find them.

/// `vxn.channel=DEV`: the tty (or `unix:PATH`, `fd:N`) the agent talks on.
pub const CMDLINE_CHANNEL: &str = "vxn.channel";
/// `vxn.log=LEVEL`: the agent's log filter.
pub const CMDLINE_LOG: &str = "vxn.log";
/// `vxn.modules=FILE`: kernel modules the agent loads at boot.
pub const CMDLINE_MODULES: &str = "vxn.modules";

/// The guest console: kernel messages and the agent's log.
pub const CONSOLE_DEVICE: &str = "hvc0";
/// The agent's channel: the second PV console. libxl numbers consoles from
/// the first `channel` entry, so the host declares a dummy first one.
pub const AGENT_CHANNEL_DEVICE: &str = "/dev/hvc1";
/// The container's rootfs disk, as the host attaches it (`vdev`) ...
pub const ROOTFS_VDEV: &str = "xvdb";
/// ... and as the guest sees it.
pub const ROOTFS_DEVICE: &str = "/dev/xvdb";
/// A layered rootfs's writable layer (the read-only image is the rootfs disk).
/// A standalone container's VM never hot-plugs disks, so this slot is free.
pub const UPPER_VDEV: &str = "xvdc";
pub const UPPER_DEVICE: &str = "/dev/xvdc";

/// The command line for a vxn guest: console, the agent's channel and log level.
pub fn kernel_cmdline(agent_log: &str, extra: &str) -> String {
    let mut s = format!(
        "console={CONSOLE_DEVICE} quiet {CMDLINE_CHANNEL}={AGENT_CHANNEL_DEVICE} {CMDLINE_LOG}={agent_log}"
    );
    if !extra.trim().is_empty() {
        s.push(' ');
        s.push_str(extra.trim());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_names_the_channel_and_log_level() {
        assert_eq!(
            kernel_cmdline("debug", ""),
            "console=hvc0 quiet vxn.channel=/dev/hvc1 vxn.log=debug"
        );
        assert!(kernel_cmdline("info", " init=/x ").ends_with("vxn.log=info init=/x"));
    }
}
