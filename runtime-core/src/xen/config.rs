//! Generating xl domain configs. Values are validated, not escaped: xl's
//! parser has no escape for `"`, and disk/channel specs split on `,`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::names::MAX_DOMAIN_NAME;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{what} {value:?} contains a character xl configs cannot carry ({bad:?})")]
    BadChar {
        what: &'static str,
        value: String,
        bad: char,
    },
    #[error("domain name {0:?} is empty or longer than {MAX_DOMAIN_NAME} characters")]
    BadName(String),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestType {
    Pv,
    Pvh,
}

impl GuestType {
    /// PV on x86_64 (works nested under TCG and on any dom0), PVH on aarch64.
    pub fn for_host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Self::Pvh
        } else {
            Self::Pv
        }
    }
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub vdev: String,
    pub target: PathBuf,
    pub writable: bool,
    /// The hotplug script for a block device target; `None`: Xen's `block`.
    pub script: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct DomainConfig {
    pub name: String,
    pub guest_type: GuestType,
    pub kernel: PathBuf,
    pub ramdisk: PathBuf,
    pub cmdline: String,
    pub memory_mib: u64,
    /// Headroom for `xl mem-set`; never below `memory_mib`.
    pub maxmem_mib: u64,
    pub vcpus: u32,
    pub max_vcpus: u32,
    /// The dom0 UNIX socket of a console agent channel (QEMU listens on
    /// it); `None` when the agent talks over a vchan, which needs no device.
    pub agent_socket: Option<PathBuf>,
    pub disks: Vec<Disk>,
    /// 9p shares: (tag, dom0 path).
    pub shares: Vec<(String, PathBuf)>,
    /// A vif, if networking is wanted.
    pub vif: Option<Vif>,
    /// The device model takes `-sandbox` (see [`super::qemu`]).
    pub qemu_sandbox: bool,
}

/// Name of the agent's channel; the guest finds it as the second console.
pub const AGENT_CHANNEL_NAME: &str = "org.vxn.agent.0";

fn check(what: &'static str, value: &str) -> Result<(), ConfigError> {
    if let Some(bad) = value
        .chars()
        .find(|c| matches!(c, '"' | '\'' | ',' | '\n' | '\r' | '\\' | '=') || c.is_control())
    {
        return Err(ConfigError::BadChar {
            what,
            value: value.into(),
            bad,
        });
    }
    Ok(())
}

fn check_path(what: &'static str, p: &Path) -> Result<String, ConfigError> {
    let s = p.to_string_lossy().into_owned();
    check(what, &s)?;
    Ok(s)
}

/// A vif as xl takes it: its MAC, and where its dom0 end goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vif {
    pub mac: String,
    pub backend: VifBackend,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VifBackend {
    /// A port of this bridge (Xen's vif-bridge script).
    Bridge(String),
    /// Handed to this hotplug script (vxn's, which only reports it ready).
    Script(PathBuf),
}

/// The xl vif spec (without quotes), as the domain config and
/// `xl network-attach` take it.
pub fn vif_spec(v: &Vif) -> Result<String, ConfigError> {
    check("MAC address", &v.mac)?;
    let link = match &v.backend {
        VifBackend::Bridge(bridge) => {
            check("bridge", bridge)?;
            format!("bridge={bridge}")
        }
        VifBackend::Script(script) => {
            format!("script={}", check_path("vif script", script)?)
        }
    };
    Ok(format!("{link},mac={}", v.mac))
}

impl Disk {
    /// The xl disk spec (without quotes). A dom0 block device (a loop device
    /// over the image) is served by the kernel's blkback, said explicitly so
    /// libxl never starts a QEMU for it; a file is left to libxl (a qdisk: QEMU).
    pub fn spec(&self) -> Result<String, ConfigError> {
        check("disk vdev", &self.vdev)?;
        let access = if self.writable { "rw" } else { "ro" };
        let mut s = format!("format=raw,vdev={},access={access},", self.vdev);
        if self.target.starts_with("/dev") {
            s.push_str("backendtype=phy,");
            if let Some(script) = &self.script {
                let _ = write!(s, "script={},", check_path("disk hotplug script", script)?);
            }
        }
        let _ = write!(s, "target={}", check_path("disk image path", &self.target)?);
        Ok(s)
    }
}

impl DomainConfig {
    /// Render the xl config text.
    pub fn render(&self) -> Result<String, ConfigError> {
        if self.name.is_empty() || self.name.len() > MAX_DOMAIN_NAME {
            return Err(ConfigError::BadName(self.name.clone()));
        }
        check("domain name", &self.name)?;
        if self.memory_mib == 0 {
            return Err(ConfigError::Zero("memory"));
        }
        if self.vcpus == 0 {
            return Err(ConfigError::Zero("vcpus"));
        }
        if self.cmdline.contains('"') {
            return Err(ConfigError::BadChar {
                what: "kernel command line",
                value: self.cmdline.clone(),
                bad: '"',
            });
        }
        let mut s = String::new();
        let ty = match self.guest_type {
            GuestType::Pv => "pv",
            GuestType::Pvh => "pvh",
        };
        let _ = writeln!(s, "name = \"{}\"", self.name);
        let _ = writeln!(s, "uuid = \"{}\"", uuid_for(&self.name));
        let _ = writeln!(s, "type = \"{ty}\"");
        let _ = writeln!(
            s,
            "kernel = \"{}\"",
            check_path("kernel path", &self.kernel)?
        );
        let _ = writeln!(
            s,
            "ramdisk = \"{}\"",
            check_path("initramfs path", &self.ramdisk)?
        );
        let _ = writeln!(s, "extra = \"{}\"", self.cmdline);
        let _ = writeln!(s, "memory = {}", self.memory_mib);
        // Xen on Arm has no populate-on-demand: it cannot build a domain whose
        // maxmem is above its memory, so an Arm VM keeps the memory it boots with.
        let maxmem = match self.guest_type {
            GuestType::Pv => self.maxmem_mib.max(self.memory_mib),
            GuestType::Pvh => self.memory_mib,
        };
        let _ = writeln!(s, "maxmem = {maxmem}");
        let _ = writeln!(s, "vcpus = {}", self.vcpus);
        let _ = writeln!(s, "maxvcpus = {}", self.max_vcpus.max(self.vcpus));
        // The DomU is the container: when it stops, it is gone.
        s.push_str("on_poweroff = \"destroy\"\non_reboot = \"destroy\"\non_crash = \"destroy\"\n");
        // Debian's libxl 4.17 drops the first channel ("Primary console has
        // invalid configuration"): a dummy first one makes ours /dev/hvc1.
        if let Some(socket) = &self.agent_socket {
            let _ = writeln!(
                s,
                "channel = [ \"connection=pty,name=vxn.dummy.0\", \"connection=socket,name={AGENT_CHANNEL_NAME},path={}\" ]",
                check_path("agent socket path", socket)?
            );
        }
        let disks: Vec<String> = self
            .disks
            .iter()
            .map(|d| Ok(format!("\"{}\"", d.spec()?)))
            .collect::<Result<_, ConfigError>>()?;
        if !disks.is_empty() {
            let _ = writeln!(s, "disk = [ {} ]", disks.join(", "));
        }
        let shares: Vec<String> = self
            .shares
            .iter()
            .map(|(tag, path)| {
                check("share tag", tag)?;
                // The guest's owners, modes, setuid bits and device nodes live
                // in xattrs on the host, never as such on the host's files.
                Ok(format!(
                    "\"tag={tag},security_model=mapped-xattr,path={}\"",
                    check_path("share path", path)?
                ))
            })
            .collect::<Result<_, ConfigError>>()?;
        if !shares.is_empty() {
            let _ = writeln!(s, "p9 = [ {} ]", shares.join(", "));
            // The QEMU that serves them (as root: Xen's dm_restrict chroots it
            // away from the shares) runs under its seccomp sandbox where it
            // has one: no new privileges, no processes, no resource control.
            if self.qemu_sandbox {
                let _ = writeln!(
                    s,
                    "device_model_args = [ \"-sandbox\", \"{QEMU_SANDBOX}\" ]"
                );
            }
        }
        match &self.vif {
            Some(v) => {
                let _ = writeln!(s, "vif = [ \"{}\" ]", vif_spec(v)?);
            }
            None => s.push_str("vif = [ ]\n"),
        }
        Ok(s)
    }
}

/// The UUID of the domain named `name`: derived from the name, so a domain
/// an interrupted `xl create` left without its name is still found.
pub fn uuid_for(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut d: [u8; 16] = Sha256::digest(format!("vxn-domain-uuid\0{name}").as_bytes())[..16]
        .try_into()
        .unwrap_or([0; 16]);
    d[6] = (d[6] & 0x0f) | 0x40; // version 4 layout
    d[8] = (d[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// QEMU's `-sandbox` for a VM with 9p shares.
const QEMU_SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

impl From<ConfigError> for crate::hypervisor::VmError {
    fn from(e: ConfigError) -> Self {
        Self::Config(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DomainConfig {
        DomainConfig {
            name: "vxn-default-t1".into(),
            guest_type: GuestType::Pv,
            kernel: "/usr/share/vxn/x86_64/vmlinuz".into(),
            ramdisk: "/usr/share/vxn/x86_64/initramfs.cpio.gz".into(),
            cmdline: "console=hvc0 quiet vxn.channel=/dev/hvc1".into(),
            memory_mib: 256,
            maxmem_mib: 512,
            vcpus: 1,
            max_vcpus: 2,
            agent_socket: Some("/run/vxn/t1/agent.sock".into()),
            disks: vec![Disk {
                vdev: "xvdb".into(),
                target: "/var/lib/vxn/t1/rootfs.img".into(),
                writable: true,
                script: Some("/var/lib/vxn/.hotplug/block".into()),
            }],
            shares: vec![],
            vif: None,
            qemu_sandbox: true,
        }
    }

    #[test]
    fn renders_a_complete_config() {
        let s = cfg().render().unwrap();
        assert!(s.contains("type = \"pv\""));
        assert!(s.contains("maxmem = 512"));
        // an Arm (PVH) domain cannot be built with maxmem above its memory
        let arm = DomainConfig {
            guest_type: GuestType::Pvh,
            ..cfg()
        };
        let a = arm.render().unwrap();
        assert!(
            a.contains("type = \"pvh\"") && a.contains(&format!("maxmem = {}\n", arm.memory_mib)),
            "{a}"
        );
        assert!(s.contains("\"connection=pty,name=vxn.dummy.0\", \"connection=socket,name=org.vxn.agent.0,path=/run/vxn/t1/agent.sock\""));
        assert!(s.contains(
            "disk = [ \"format=raw,vdev=xvdb,access=rw,target=/var/lib/vxn/t1/rootfs.img\" ]"
        ));
        assert!(s.contains("vif = [ ]"));
        // A vchan agent channel needs no device at all (and so no QEMU).
        let mut c = cfg();
        c.agent_socket = None;
        assert!(!c.render().unwrap().contains("channel = "));
        let mut c = cfg();
        c.vif = Some(Vif {
            backend: VifBackend::Bridge("xenbr0".into()),
            mac: "00:16:3e:01:02:03".into(),
        });
        assert!(c
            .render()
            .unwrap()
            .contains("vif = [ \"bridge=xenbr0,mac=00:16:3e:01:02:03\" ]"));
        c.vif = Some(Vif {
            backend: VifBackend::Script("/run/vxn/vif-unplugged".into()),
            mac: "0a:58:0a:58:00:05".into(),
        });
        c.shares = vec![("vxn-pod".into(), "/var/lib/vxn/pods/p/share".into())];
        let s = c.render().unwrap();
        assert!(
            s.contains("vif = [ \"script=/run/vxn/vif-unplugged,mac=0a:58:0a:58:00:05\" ]"),
            "{s}"
        );
        assert!(s.contains(
            "p9 = [ \"tag=vxn-pod,security_model=mapped-xattr,path=/var/lib/vxn/pods/p/share\" ]"
        ));
        assert!(s.contains("device_model_args = [ \"-sandbox\", \"on,obsolete=deny,"));
        // A UUID of the name's own, the same every time.
        let uuid = uuid_for(&c.name);
        assert!(s.contains(&format!("uuid = \"{uuid}\"")), "{s}");
        assert_eq!(uuid, uuid_for("vxn-default-t1"));
        assert_ne!(uuid, uuid_for("vxn-default-t2"));
        assert_eq!((uuid.len(), &uuid[14..15]), (36, "4"));
        // A QEMU without seccomp gets no -sandbox (it would not start).
        c.qemu_sandbox = false;
        assert!(!c.render().unwrap().contains("-sandbox"));
    }

    #[test]
    fn a_block_device_is_blkbacks_and_read_only_when_asked() {
        let mut c = cfg();
        c.disks = vec![
            Disk {
                vdev: "xvdb".into(),
                target: "/dev/loop3".into(),
                writable: false,
                script: None,
            },
            Disk {
                vdev: "xvdc".into(),
                target: "/dev/loop4".into(),
                writable: true,
                script: Some("/var/lib/vxn/.hotplug/block".into()),
            },
        ];
        let s = c.render().unwrap();
        assert!(
            s.contains(
                "disk = [ \"format=raw,vdev=xvdb,access=ro,backendtype=phy,target=/dev/loop3\", \
                 \"format=raw,vdev=xvdc,access=rw,backendtype=phy,script=/var/lib/vxn/.hotplug/block,target=/dev/loop4\" ]"
            ),
            "{s}"
        );
        // A file stays libxl's choice (qdisk), with no script of vxn's.
        assert!(cfg()
            .render()
            .unwrap()
            .contains("access=rw,target=/var/lib"));
        c.disks[1].target = "/dev/loop4,script=x".into();
        assert!(c.render().is_err());
        c.disks[1].target = "/dev/loop4".into();
        c.disks[1].script = Some("/tmp/a,b".into());
        assert!(c.render().is_err());
    }

    #[test]
    fn refuses_values_that_would_break_the_syntax() {
        let mut c = cfg();
        c.disks[0].target = "/tmp/a,b".into();
        assert!(matches!(
            c.render(),
            Err(ConfigError::BadChar { bad: ',', .. })
        ));
        let mut c = cfg();
        c.name = "x\"y".into();
        assert!(c.render().is_err());
        let mut c = cfg();
        c.memory_mib = 0;
        assert_eq!(c.render(), Err(ConfigError::Zero("memory")));
    }
}
