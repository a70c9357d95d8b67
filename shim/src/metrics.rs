//! Guest figures in the shapes containerd's clients decode.

use std::time::Duration;

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat,
};
use containerd_shim_protos::cgroups_v2::metrics as v2m;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::types::task::ProcessInfo as ApiProcessInfo;
use vxn_wire::protocol::{ProcessInfo, Stats};

use crate::error::{Error, Result};

/// What containerd 1.6's `ctr task metrics` and CRI decode.
pub const METRICS_V1_TYPE: &str = "io.containerd.cgroups.v1.Metrics";
pub const METRICS_V2_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    V1,
    V2,
}

impl Format {
    /// From the `metrics` config key; "auto" follows the host's cgroup hierarchy.
    pub fn from_config(value: &str) -> Result<Self> {
        match value {
            "v1" => Ok(Self::V1),
            "v2" => Ok(Self::V2),
            "auto" if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() => {
                Ok(Self::V2)
            }
            "auto" => Ok(Self::V1),
            other => Err(Error::InvalidArgument(format!(
                "metrics = {other:?} in the vxn config: use \"v1\", \"v2\" or \"auto\""
            ))),
        }
    }
}

fn cpu_total_ns(stats: &Stats, domain_cpu: Option<Duration>) -> u64 {
    domain_cpu
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(stats.cpu_usage_ns)
}

/// cgroups v1 Metrics. CPU time prefers the hypervisor's count for the
/// domain (it includes time the guest kernel spends for the container).
pub fn v1(stats: &Stats, domain_cpu: Option<Duration>) -> Metrics {
    let total = cpu_total_ns(stats, domain_cpu);
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

/// cgroups v2 Metrics, from the same figures as [`v1`].
pub fn v2(stats: &Stats, domain_cpu: Option<Duration>) -> v2m::Metrics {
    v2m::Metrics {
        cpu: MessageField::some(v2m::CPUStat {
            usage_usec: cpu_total_ns(stats, domain_cpu) / 1000,
            user_usec: stats.cpu_user_ns / 1000,
            system_usec: stats.cpu_system_ns / 1000,
            ..Default::default()
        }),
        memory: MessageField::some(v2m::MemoryStat {
            usage: stats.memory_usage_bytes,
            usage_limit: stats.memory_limit_bytes,
            file: stats.memory_cache_bytes,
            anon: stats
                .memory_usage_bytes
                .saturating_sub(stats.memory_cache_bytes),
            ..Default::default()
        }),
        pids: MessageField::some(v2m::PidsStat {
            current: stats.pids,
            ..Default::default()
        }),
        memory_events: MessageField::some(v2m::MemoryEvents {
            oom_kill: stats.oom_kills,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn to_any(stats: &Stats, domain_cpu: Option<Duration>, format: Format) -> Result<Any> {
    let (type_url, value) = match format {
        Format::V1 => (METRICS_V1_TYPE, v1(stats, domain_cpu).write_to_bytes()),
        Format::V2 => (METRICS_V2_TYPE, v2(stats, domain_cpu).write_to_bytes()),
    };
    let value = value.map_err(|e| Error::Internal(format!("encode metrics: {e}")))?;
    Ok(Any {
        type_url: type_url.into(),
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
        let any = to_any(&s, Some(Duration::from_millis(1500)), Format::V1).unwrap();
        assert_eq!(any.type_url, METRICS_V1_TYPE);
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.cpu.usage.total, 1_500_000_000);
        assert_eq!(m.memory.usage.usage, 100 << 20);
        assert_eq!(m.pids.current, 3);

        let any = to_any(&s, Some(Duration::from_millis(1500)), Format::V2).unwrap();
        assert_eq!(any.type_url, METRICS_V2_TYPE);
        let m = v2m::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.cpu.usage_usec, 1_500_000);
        assert_eq!(
            (m.memory.usage, m.memory.usage_limit),
            (100 << 20, 256 << 20)
        );
        assert_eq!(m.pids.current, 3);
    }

    #[test]
    fn metrics_format_from_config() {
        assert_eq!(Format::from_config("v1").unwrap(), Format::V1);
        assert_eq!(Format::from_config("v2").unwrap(), Format::V2);
        Format::from_config("auto").unwrap();
        assert!(Format::from_config("v3").is_err());
    }
}
