//! OCI capabilities of a container process: names turned into bit sets before
//! fork, applied in the child (raw syscalls only) in runc's order: bounding
//! set dropped while still privileged, ids changed keeping the permitted set,
//! then effective/permitted/inheritable set and the ambient set raised.

use vxn_wire::protocol::Capabilities;

/// Linux capability numbers, CAP_CHOWN (0) to CAP_CHECKPOINT_RESTORE (40).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Everything the child needs, as numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapPlan {
    /// Capabilities to drop from the bounding set (those the kernel knows).
    pub drop_bounding: Vec<u32>,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: Vec<u32>,
}

/// The highest capability the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn bits(names: &[String], last: u32) -> u64 {
    names
        .iter()
        .fold(0, |acc, n| match NAMES.iter().position(|k| k == n) {
            Some(i) if i as u32 <= last => acc | 1 << i,
            _ => {
                // runc skips capabilities it does not know, and so do we.
                tracing::warn!(capability = %n, "unknown to this kernel, skipped");
                acc
            }
        })
}

fn list(mask: u64) -> Vec<u32> {
    (0..64).filter(|i| mask & (1 << i) != 0).collect()
}

impl CapPlan {
    pub fn new(c: &Capabilities, last: u32) -> Self {
        let bounding = bits(&c.bounding, last);
        Self {
            drop_bounding: (0..=last).filter(|i| bounding & (1 << i) == 0).collect(),
            effective: bits(&c.effective, last),
            permitted: bits(&c.permitted, last),
            inheritable: bits(&c.inheritable, last),
            ambient: list(bits(&c.ambient, last)),
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// In the child, before the ids change. Returns -1 with errno set on failure.
///
/// # Safety
/// Async-signal-safe: only prctl.
pub unsafe fn drop_bounding(plan: &CapPlan) -> i32 {
    for &c in &plan.drop_bounding {
        if libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) < 0 {
            return -1;
        }
    }
    0
}

/// In the child, after setuid (with PR_SET_KEEPCAPS on): the three sets, then ambient.
///
/// # Safety
/// Async-signal-safe: only syscalls on data prepared before fork.
pub unsafe fn apply_sets(plan: &CapPlan) -> i32 {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
    let data = [false, true].map(|hi| CapData {
        effective: word(plan.effective, hi),
        permitted: word(plan.permitted, hi),
        inheritable: word(plan.inheritable, hi),
    });
    if libc::syscall(
        libc::SYS_capset,
        &mut header as *mut CapHeader,
        data.as_ptr(),
    ) < 0
    {
        return -1;
    }
    if libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL,
        0,
        0,
        0,
    ) < 0
    {
        return -1;
    }
    for &c in &plan.ambient {
        let raise = libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong;
        if libc::prctl(libc::PR_CAP_AMBIENT, raise, c as libc::c_ulong, 0, 0) < 0 {
            return -1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn containerds_default_set_is_the_mask_runc_gives() {
        let default = caps(&[
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ]);
        let c = Capabilities {
            bounding: default.clone(),
            effective: default.clone(),
            permitted: default,
            ..Default::default()
        };
        let p = CapPlan::new(&c, 40);
        assert_eq!(p.effective, 0xa80425fb);
        assert_eq!(p.permitted, 0xa80425fb);
        assert!(p.drop_bounding.contains(&21) && !p.drop_bounding.contains(&0));
        assert_eq!(p.drop_bounding.len(), 41 - 14);
    }

    #[test]
    fn unknown_and_too_new_names_are_skipped() {
        let c = Capabilities {
            effective: caps(&["CAP_BOGUS", "CAP_BPF", "CAP_KILL"]),
            ambient: caps(&["CAP_NET_BIND_SERVICE"]),
            ..Default::default()
        };
        // A kernel whose last capability is CAP_AUDIT_READ (37) knows no CAP_BPF.
        let p = CapPlan::new(&c, 37);
        assert_eq!(p.effective, 1 << 5);
        assert_eq!(p.ambient, vec![10]);
        assert_eq!(p.drop_bounding.len(), 38);
    }
}
