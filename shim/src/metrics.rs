//! Guest figures in the shapes containerd's clients decode.

use std::time::Duration;

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::types::task::ProcessInfo as ApiProcessInfo;
use vxn_runtime_core::protocol::{ProcessInfo, Stats};

use crate::error::{Result, ShimError};

/// What containerd 1.6's `ctr task metrics` and CRI decode.
pub const METRICS_V1_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

/// cgroups v1 Metrics. CPU time prefers the hypervisor's count for the
/// domain (it includes time the guest kernel spends for the container).
pub fn v1(stats: &Stats, domain_cpu: Option<Duration>) -> Metrics {
    let total = domain_cpu
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(stats.cpu_usage_ns);
    let usage = MemoryEntry {
        usage: stats.memory_usage_bytes,
        limit: stats.memory_limit_bytes,
        ..Default::default()
    };
    Metrics {
        cpu: MessageField::some(CPUStat {
            usage: MessageField::some(CPUUsage {
                total,
                user: stats.cpu_user_ns,
                kernel: stats.cpu_system_ns,
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(MemoryStat {
            cache: stats.memory_cache_bytes,
            rss: stats
                .memory_usage_bytes
                .saturating_sub(stats.memory_cache_bytes),
            hierarchical_memory_limit: stats.memory_limit_bytes,
            usage: MessageField::some(usage),
            ..Default::default()
        }),
        pids: MessageField::some(PidsStat {
            current: stats.pids,
            ..Default::default()
        }),
        memory_oom_control: MessageField::some(MemoryOomControl {
            oom_kill: stats.oom_kills,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn to_any(stats: &Stats, domain_cpu: Option<Duration>) -> Result<Any> {
    let value = v1(stats, domain_cpu)
        .write_to_bytes()
        .map_err(|e| ShimError::Internal(format!("encode metrics: {e}")))?;
    Ok(Any {
        type_url: METRICS_V1_TYPE.into(),
        value,
        ..Default::default()
    })
}

pub fn process_list(procs: &[ProcessInfo]) -> Vec<ApiProcessInfo> {
    procs
        .iter()
        .map(|p| ApiProcessInfo {
            pid: p.pid,
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_guest_figures() {
        let s = Stats {
            cpu_usage_ns: 5,
            memory_usage_bytes: 100 << 20,
            memory_limit_bytes: 256 << 20,
            pids: 3,
            ..Default::default()
        };
        let any = to_any(&s, Some(Duration::from_millis(1500))).unwrap();
        assert_eq!(any.type_url, METRICS_V1_TYPE);
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.cpu.usage.total, 1_500_000_000);
        assert_eq!(m.memory.usage.usage, 100 << 20);
        assert_eq!(m.pids.current, 3);
    }
}
