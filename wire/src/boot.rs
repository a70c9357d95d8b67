//! The boot contract: what the host puts on a guest's kernel command line and
//! which devices it gives the guest, as the agent (PID 1) expects to find them.

/// `vxn.channel=`: what the agent talks on: `vchan:PORT` (a vchan it serves
/// to dom0), or a tty such as `/dev/hvc1` (or `unix:PATH`, `fd:N` in tests).
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
/// The agent's vchan: the port name under `/local/domain/<guest>/data/vchan/0/`.
pub const AGENT_VCHAN_PORT: &str = "vxn-agent";
/// Prefix of a vchan channel on the command line (`vxn.channel=vchan:PORT`).
pub const VCHAN_PREFIX: &str = "vchan:";
/// Ring sizes the agent asks for: host→guest (stdin, requests) and
/// guest→host (stdout/stderr, replies), the direction that carries the bulk.
pub const VCHAN_RING_TO_GUEST: usize = 64 << 10;
pub const VCHAN_RING_TO_HOST: usize = 256 << 10;

/// How the shim and the agent talk: chosen once, on the host, and told to
/// the guest on its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentChannel {
    /// A vchan (shared rings + an event channel); no dom0 process needed.
    Vchan,
    /// The second PV console, which libxl serves through a QEMU per domain.
    Console,
}

impl AgentChannel {
    /// The value of `vxn.channel=` for this kind.
    pub fn cmdline_value(self) -> String {
        match self {
            Self::Vchan => format!("{VCHAN_PREFIX}{AGENT_VCHAN_PORT}"),
            Self::Console => AGENT_CHANNEL_DEVICE.into(),
        }
    }
}

/// The container's rootfs disk, as the host attaches it (`vdev`) ...
pub const ROOTFS_VDEV: &str = "xvdb";
/// ... and as the guest sees it.
pub const ROOTFS_DEVICE: &str = "/dev/xvdb";
/// A layered rootfs's writable layer (the read-only image is the rootfs disk).
/// A standalone container's VM never hot-plugs disks, so this slot is free.
pub const UPPER_VDEV: &str = "xvdc";
pub const UPPER_DEVICE: &str = "/dev/xvdc";

/// The command line for a vxn guest: console, the agent's channel and log level.
pub fn kernel_cmdline(channel: AgentChannel, agent_log: &str, extra: &str) -> String {
    let mut s = format!(
        "console={CONSOLE_DEVICE} quiet {CMDLINE_CHANNEL}={} {CMDLINE_LOG}={agent_log}",
        channel.cmdline_value()
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
            kernel_cmdline(AgentChannel::Console, "debug", ""),
            "console=hvc0 quiet vxn.channel=/dev/hvc1 vxn.log=debug"
        );
        assert_eq!(
            kernel_cmdline(AgentChannel::Vchan, "info", ""),
            "console=hvc0 quiet vxn.channel=vchan:vxn-agent vxn.log=info"
        );
        assert!(kernel_cmdline(AgentChannel::Vchan, "info", " init=/x ")
            .ends_with("vxn.log=info init=/x"));
    }
}
