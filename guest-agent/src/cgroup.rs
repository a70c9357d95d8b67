//! A container's cgroup in the guest (cgroup v2; PID 1 mode only, never on a
//! test host): its memory limit enforced, its OOM kills counted
//! (`memory.events` counts kills by any OOM killer, the VM-wide one too), its
//! own CPU and memory figures. A pod's VM holds several containers; a
//! standalone container's VM holds one, whose limit is the VM's size.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use vxn_wire::protocol::{AgentError, ErrorKind, Stats};

const ROOT: &str = "/sys/fs/cgroup";

fn err(msg: String) -> AgentError {
    AgentError::new(ErrorKind::Internal, msg)
}

static ON: OnceLock<bool> = OnceLock::new();

/// Whether containers get cgroups: only after [`init`] found cgroup v2 with
/// the memory controller (never in test mode: those are the host's).
pub fn available() -> bool {
    ON.get().copied().unwrap_or(false)
}

/// PID 1 mode: enable the controllers for the root's children.
pub fn init() -> bool {
    *ON.get_or_init(|| {
        let root = Path::new(ROOT);
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if !controllers.split_whitespace().any(|c| c == "memory") {
            return false;
        }
        // Each on its own: a kernel without one keeps the others.
        for c in ["memory", "pids", "cpu"] {
            if controllers.split_whitespace().any(|x| x == c) {
                if let Err(e) = std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}"))
                {
                    tracing::warn!(controller = c, error = %e, "cannot enable a cgroup controller");
                }
            }
        }
        true
    })
}

pub struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for the forked child to join before it execs.
    procs: OwnedFd,
    /// OOM kills already reported.
    oom_seen: AtomicU64,
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// `key value` lines (memory.events, memory.stat, cpu.stat).
fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

impl Cgroup {
    /// The container's cgroup, with `memory_max` bytes if given.
    pub fn create(id: &str, memory_max: Option<u64>) -> Result<Self, AgentError> {
        let dir = Path::new(ROOT).join(format!("vxn-{id}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(format!("mkdir {}: {e}", dir.display()))),
        }
        let made = (|| {
            if let Some(max) = memory_max {
                std::fs::write(dir.join("memory.max"), max.to_string())
                    .map_err(|e| err(format!("memory.max of {id}: {e}")))?;
            }
            let procs: OwnedFd = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map_err(|e| err(format!("open cgroup.procs of {id}: {e}")))?
                .into();
            Ok(procs)
        })();
        match made {
            Ok(procs) => Ok(Self {
                oom_seen: AtomicU64::new(field(&read(&dir, "memory.events"), "oom_kill")),
                dir,
                procs,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// Every process in it, whatever namespaces it made for itself.
    pub fn pids(&self) -> Vec<i32> {
        read(&self.dir, "cgroup.procs")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILL to every process in it at once (`cgroup.kill`, Linux 5.14):
    /// none can fork away meanwhile. False where the kernel lacks it.
    pub fn kill(&self) -> bool {
        std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok()
    }

    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// True once per new OOM kill in this cgroup since the last call.
    pub fn take_oom(&self) -> bool {
        let now = field(&read(&self.dir, "memory.events"), "oom_kill");
        let seen = self.oom_seen.load(Ordering::SeqCst);
        now > seen
            && self
                .oom_seen
                .compare_exchange(seen, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// The container's own counters; the limit is its memory.max, or the VM's memory.
    pub fn stats(&self, vm_memory_bytes: u64) -> Stats {
        let cpu = read(&self.dir, "cpu.stat");
        let mem = read(&self.dir, "memory.stat");
        let limit = read(&self.dir, "memory.max")
            .trim()
            .parse()
            .unwrap_or(vm_memory_bytes);
        Stats {
            cpu_usage_ns: field(&cpu, "usage_usec") * 1000,
            cpu_user_ns: field(&cpu, "user_usec") * 1000,
            cpu_system_ns: field(&cpu, "system_usec") * 1000,
            memory_usage_bytes: read(&self.dir, "memory.current")
                .trim()
                .parse()
                .unwrap_or(0),
            memory_limit_bytes: limit,
            memory_cache_bytes: field(&mem, "file"),
            pids: read(&self.dir, "pids.current").trim().parse().unwrap_or(0),
            oom_kills: field(&read(&self.dir, "memory.events"), "oom_kill"),
        }
    }
}

impl Drop for Cgroup {
    /// Its processes are gone (the container was destroyed); an empty cgroup goes.
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot remove the container's cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_key_value_files() {
        let events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(super::field(events, "oom_kill"), 2);
        assert_eq!(super::field(events, "oom"), 1);
        assert_eq!(super::field("usage_usec 1500\n", "usage_usec"), 1500);
        assert_eq!(super::field("", "x"), 0);
    }
}
