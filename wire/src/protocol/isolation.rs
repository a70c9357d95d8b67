//! What keeps a container apart from the others of its VM (a pod's), as the
//! OCI spec asks: its own PID namespace, masked and read-only paths, and
//! sysctls. The agent validates every entry: these come from the host, but
//! a wrong one must be a clear error, never a mount in the wrong place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Entries in each list (runc's default spec has 10 masked, 5 read-only).
pub const MAX_PATHS: usize = 64;
pub const MAX_SYSCTLS: usize = 64;
/// Rules and names in a seccomp profile (Docker's default: ~60 rules, ~370 names).
pub const MAX_SECCOMP_RULES: usize = 1024;
pub const MAX_SECCOMP_NAMES: usize = 4096;
const MAX_PATH_LEN: usize = 1024;
const MAX_SYSCTL_VALUE: usize = 1024;

/// Whose PID namespace a container's processes live in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PidNamespace {
    /// The VM's own: the agent's and, in a pod sharing its namespace, the
    /// other containers' processes are visible (one container per VM, or
    /// CRI's NamespaceMode POD/NODE).
    #[default]
    Vm,
    /// A new one: the container's init is its PID 1 and sees only its own.
    Own,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    #[serde(default)]
    pub pid_namespace: PidNamespace,
    /// Made unreadable: a file gets /dev/null bound over it, a directory an
    /// empty read-only tmpfs (OCI `linux.maskedPaths`).
    #[serde(default)]
    pub masked_paths: Vec<String>,
    /// Bound read-only over themselves, submounts included (`linux.readonlyPaths`).
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// Written under /proc/sys before the container starts (`linux.sysctl`):
    /// the VM's kernel is the pod's, so they hold for the whole pod.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// The spec's seccomp profile (`linux.seccomp`), loaded by each process
    /// of the container before it execs.
    #[serde(default)]
    pub seccomp: Option<Seccomp>,
}

/// An OCI seccomp profile, as the runtime spec writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seccomp {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub syscalls: Vec<SeccompRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompRule {
    pub names: Vec<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<SeccompArg>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

impl Isolation {
    pub fn validate(&self) -> Result<(), String> {
        for (what, list) in [
            ("masked path", &self.masked_paths),
            ("read-only path", &self.readonly_paths),
        ] {
            if list.len() > MAX_PATHS {
                return Err(format!("more than {MAX_PATHS} {what}s"));
            }
            for p in list {
                let ok = p.starts_with('/')
                    && p.len() <= MAX_PATH_LEN
                    && !p.contains('\0')
                    && !p.split('/').any(|c| c == "..");
                if !ok {
                    return Err(format!("{what} {p:?}: must be absolute, without '..'"));
                }
            }
        }
        if let Some(sc) = &self.seccomp {
            let names: usize = sc.syscalls.iter().map(|r| r.names.len()).sum();
            if sc.syscalls.len() > MAX_SECCOMP_RULES || names > MAX_SECCOMP_NAMES {
                return Err(format!(
                    "seccomp profile: more than {MAX_SECCOMP_RULES} rules or {MAX_SECCOMP_NAMES} names"
                ));
            }
            if sc.syscalls.iter().any(|r| r.args.len() > 6) {
                return Err("seccomp profile: a rule with more than 6 arguments".into());
            }
        }
        if self.sysctls.len() > MAX_SYSCTLS {
            return Err(format!("more than {MAX_SYSCTLS} sysctls"));
        }
        for (k, v) in &self.sysctls {
            sysctl_path(k)?;
            if v.len() > MAX_SYSCTL_VALUE || v.contains('\0') {
                return Err(format!("sysctl {k}: value too long or with NUL"));
            }
        }
        Ok(())
    }
}

/// `net.ipv4.ip_forward` (or `net/ipv4/ip_forward`) -> `net/ipv4/ip_forward`,
/// under /proc/sys; anything that could leave it is refused.
pub fn sysctl_path(name: &str) -> Result<String, String> {
    let parts: Vec<&str> = name.split(['.', '/']).collect();
    let ok = name.len() <= 256
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !ok {
        return Err(format!("sysctl name {name:?} is not a sysctl"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_and_names_pass() {
        let mut i = Isolation {
            masked_paths: vec!["/proc/kcore".into(), "/sys/firmware".into()],
            readonly_paths: vec!["/proc/sys".into()],
            ..Default::default()
        };
        i.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
        i.validate().unwrap();
        assert_eq!(
            sysctl_path("kernel.shm_rmid_forced").unwrap(),
            "kernel/shm_rmid_forced"
        );
        for bad in ["../x", "a..b", "", "net.ipv4.", "a b", "net/../../etc"] {
            assert!(sysctl_path(bad).is_err(), "{bad}");
        }
        for bad in ["proc/kcore", "/proc/../etc/shadow", "/a\0b"] {
            let j = Isolation {
                masked_paths: vec![bad.into()],
                ..Default::default()
            };
            assert!(j.validate().is_err(), "{bad:?}");
        }
        let many = Isolation {
            readonly_paths: vec!["/x".into(); MAX_PATHS + 1],
            ..Default::default()
        };
        assert!(many.validate().is_err());
    }

    #[test]
    fn an_old_peers_message_means_the_vms_namespace() {
        let i: Isolation = serde_json::from_str("{}").unwrap();
        assert_eq!(i.pid_namespace, PidNamespace::Vm);
        let i: Isolation = serde_json::from_str(r#"{"pid_namespace":"own"}"#).unwrap();
        assert_eq!(i.pid_namespace, PidNamespace::Own);
    }
}
