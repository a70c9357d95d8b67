//! What the agent reads from /proc: the processes it is responsible for and
//! the guest's cpu and memory figures.

use std::collections::HashMap;

use vxn_wire::protocol::Stats;

/// (pid, ppid) of every process, from /proc/<pid>/stat.
fn process_table() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // comm may contain spaces and parens: fields resume after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let ppid = rest.split(' ').nth(1)?.parse().ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// Every live descendant of `root` (not `root` itself).
pub fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, ppid) in process_table() {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if let Some(kids) = children.get(&p) {
            for &k in kids {
                out.push(k);
                stack.push(k);
            }
        }
    }
    out
}

/// The processes the agent runs on behalf of containers.
pub fn container_pids() -> Vec<i32> {
    descendants(std::process::id() as i32)
}

/// The inode of the mount namespace `pid` is in.
pub fn mount_ns(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// The container processes in the mount namespace `ns` (one container's).
pub fn pids_in(ns: u64) -> Vec<i32> {
    container_pids()
        .into_iter()
        .filter(|p| mount_ns(*p) == Some(ns))
        .collect()
}

/// Send `signal` to each of `pids` except those in `spare`.
pub fn signal_each(pids: &[i32], signal: i32, spare: &[i32]) {
    for &pid in pids {
        if !spare.contains(&pid) {
            // SAFETY: kill(2) on a pid; ESRCH for a racing exit is fine.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

/// The command line of `pid`, space-joined, or its comm for kernel-ish cases.
pub fn command(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    if parts.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string()
    } else {
        parts.join(" ")
    }
}

fn meminfo_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The guest kernel's count of OOM kills (Linux >= 4.13).
pub fn oom_kills() -> u64 {
    let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Online every cpu that is present but offline: Xen hot-plugs vcpus (`xl vcpu-set`)
/// as present-offline and leaves onlining to user space (udev elsewhere).
pub fn online_new_cpus() {
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/cpu") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_cpu = name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let online = entry.path().join("online");
        if is_cpu && std::fs::read_to_string(&online).is_ok_and(|v| v.trim() == "0") {
            match std::fs::write(&online, "1") {
                Ok(()) => tracing::info!(cpu = %name, "vcpu online"),
                Err(e) => tracing::warn!(cpu = %name, error = %e, "cannot online vcpu"),
            }
        }
    }
}

/// Guest-wide figures: in a vxn DomU the guest *is* the container.
/// The counters of some processes alone (a container in a shared VM): their
/// CPU time with that of children they reaped, their resident memory; the
/// limit is the VM's memory.
pub fn stats_of(pids: &[i32]) -> Stats {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let page = 4096u64;
    let (mut user, mut system, mut rss) = (0u64, 0u64, 0u64);
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(end) = stat.rfind(')') else { continue };
        // Fields after comm, from field 3 (state): utime is 14, rss 24.
        let f: Vec<u64> = stat[end + 2..]
            .split(' ')
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let at = |n: usize| f.get(n - 3).copied().unwrap_or(0);
        user += at(14) + at(16);
        system += at(15) + at(17);
        rss += at(24) * page;
    }
    let to_ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / hz);
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Stats {
        cpu_usage_ns: to_ns(user + system),
        cpu_user_ns: to_ns(user),
        cpu_system_ns: to_ns(system),
        memory_usage_bytes: rss,
        memory_limit_bytes: meminfo_kib(&mem, "MemTotal") * 1024,
        memory_cache_bytes: 0,
        pids: pids.len() as u64,
        oom_kills: oom_kills(),
    }
}

pub fn stats() -> Stats {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let to_ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / hz);
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let user = field(0) + field(1);
    let system = field(2) + field(5) + field(6);
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo_kib(&mem, "MemTotal") * 1024;
    let available = meminfo_kib(&mem, "MemAvailable") * 1024;
    let cache = meminfo_kib(&mem, "Cached") * 1024;
    Stats {
        cpu_usage_ns: to_ns(user + system),
        cpu_user_ns: to_ns(user),
        cpu_system_ns: to_ns(system),
        memory_usage_bytes: total.saturating_sub(available),
        memory_limit_bytes: total,
        memory_cache_bytes: cache,
        pids: container_pids().len() as u64,
        oom_kills: oom_kills(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(descendants(std::process::id() as i32).contains(&(child.id() as i32)));
        // The cmdline is the new program's only once exec has completed.
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while command(pid) != "sleep 5" && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(command(pid), "sleep 5");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn stats_of_own_process() {
        let s = stats_of(&[std::process::id() as i32]);
        assert!(s.memory_usage_bytes > 0 && s.pids == 1, "{s:?}");
    }

    #[test]
    fn stats_are_populated() {
        let s = stats();
        assert!(s.memory_limit_bytes > 0 && s.memory_usage_bytes > 0 && s.cpu_usage_ns > 0);
    }
}
