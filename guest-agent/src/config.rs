//! Agent settings: from the kernel command line when PID 1 (`vxn.channel=`,
//! `vxn.log=`, `vxn.modules=`), from flags otherwise.

use std::path::PathBuf;

use vxn_wire::boot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// A tty device such as `/dev/hvc1`, put in raw mode.
    Device(PathBuf),
    /// Connect to a UNIX socket (tests, or a vsock-like bridge).
    Unix(PathBuf),
    /// An inherited fd (tests: one end of a socketpair).
    Fd(i32),
    /// A vchan served to dom0 under this port name.
    Vchan(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub channel: Channel,
    pub log: String,
    pub state_dir: PathBuf,
    /// File listing kernel modules to load, relative to /lib/modules/<release>.
    pub modules: PathBuf,
    pub pid1: bool,
    /// Test mode: die when the parent dies (test harnesses). Without it the
    /// agent outlives its starter, as a domain outlives a SIGKILLed shim.
    pub die_with_parent: bool,
}

pub const USAGE: &str =
    "usage: vxn-agent [--channel vchan:PORT|/dev/hvcN|unix:PATH|fd:N] [--log LEVEL] [--state-dir DIR] [--die-with-parent]
As PID 1 the agent reads vxn.channel=, vxn.log= and vxn.modules= from the kernel command line.";

fn parse_channel(s: &str) -> Result<Channel, String> {
    if let Some(port) = s.strip_prefix(boot::VCHAN_PREFIX) {
        if port.is_empty() || port.contains('/') {
            return Err(format!("bad vchan port in channel {s:?}"));
        }
        Ok(Channel::Vchan(port.into()))
    } else if let Some(p) = s.strip_prefix("unix:") {
        Ok(Channel::Unix(p.into()))
    } else if let Some(n) = s.strip_prefix("fd:") {
        n.parse()
            .map(Channel::Fd)
            .map_err(|_| format!("bad fd in channel {s:?}"))
    } else if s.starts_with('/') {
        Ok(Channel::Device(s.into()))
    } else {
        Err(format!("bad channel {s:?}"))
    }
}

impl Config {
    fn defaults(pid1: bool) -> Self {
        Self {
            channel: Channel::Device(boot::AGENT_CHANNEL_DEVICE.into()),
            log: "info".into(),
            state_dir: "/run/vxn".into(),
            modules: "/etc/vxn/modules.list".into(),
            pid1,
            die_with_parent: false,
        }
    }

    /// From the kernel command line (`key=value` words; unknown ones ignored).
    pub fn from_cmdline(cmdline: &str) -> Result<Self, String> {
        let mut c = Self::defaults(true);
        for word in cmdline.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            match k {
                boot::CMDLINE_CHANNEL => c.channel = parse_channel(v)?,
                boot::CMDLINE_LOG => c.log = v.into(),
                boot::CMDLINE_MODULES => c.modules = v.into(),
                _ => {}
            }
        }
        Ok(c)
    }

    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut c = Self::defaults(false);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                "--channel" => c.channel = parse_channel(&val()?)?,
                "--log" => c.log = val()?,
                "--state-dir" => c.state_dir = val()?.into(),
                "--die-with-parent" => c.die_with_parent = true,
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_cmdline_is_understood() {
        let line = boot::kernel_cmdline(boot::AgentChannel::Console, "warn", "");
        let c = Config::from_cmdline(&line).unwrap();
        assert_eq!(
            c.channel,
            Channel::Device(boot::AGENT_CHANNEL_DEVICE.into())
        );
        assert_eq!(c.log, "warn");
        let line = boot::kernel_cmdline(boot::AgentChannel::Vchan, "info", "");
        let c = Config::from_cmdline(&line).unwrap();
        assert_eq!(c.channel, Channel::Vchan(boot::AGENT_VCHAN_PORT.into()));
        assert!(Config::from_cmdline("vxn.channel=vchan:").is_err());
        assert!(Config::from_cmdline("vxn.channel=vchan:a/b").is_err());
    }

    #[test]
    fn cmdline_settings() {
        let c = Config::from_cmdline(
            "console=hvc0 quiet vxn.channel=/dev/hvc2 vxn.log=debug init=/init",
        )
        .unwrap();
        assert_eq!(c.channel, Channel::Device("/dev/hvc2".into()));
        assert_eq!(c.log, "debug");
        assert!(c.pid1);
        assert!(Config::from_cmdline("vxn.channel=hvc1").is_err());
    }

    #[test]
    fn flags() {
        let args: Vec<String> = ["--channel", "fd:3", "--state-dir", "/tmp/x"]
            .map(String::from)
            .into();
        let c = Config::from_args(&args).unwrap();
        assert_eq!(c.channel, Channel::Fd(3));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert!(!c.die_with_parent);
        let c = Config::from_args(&["--die-with-parent".to_string()]).unwrap();
        assert!(c.die_with_parent);
        assert!(Config::from_args(&["--bogus".into()]).is_err());
    }
}
