//! The OCI runtime spec (bundle/config.json), read for what a vxn guest can
//! honour, and turned into agent requests and VM sizes.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use vxn_wire::protocol::{self, MountKind, MountSpec, ProcessSpec, Rlimit, UserSpec, WindowSize};

use crate::config::Config;
use crate::error::{Error, Result};
pub use crate::hypervisor::Sizing;
use crate::storage::binds::{HostBind, Planned, ReadOnly};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Spec {
    pub process: Option<Process>,
    pub hostname: Option<String>,
    pub mounts: Vec<Mount>,
    pub annotations: std::collections::HashMap<String, String>,
    pub root: Option<Root>,
    pub linux: Option<Linux>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Process {
    pub terminal: bool,
    pub console_size: Option<ConsoleSize>,
    pub user: User,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub rlimits: Vec<OciRlimit>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    pub capabilities: Option<Capabilities>,
}

/// process.capabilities: the five sets by name.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub ambient: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConsoleSize {
    pub height: u32,
    pub width: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub umask: Option<u32>,
    pub additional_gids: Vec<u32>,
    pub username: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OciRlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Mount {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Root {
    pub path: String,
    pub readonly: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Linux {
    pub resources: Option<Resources>,
    pub namespaces: Vec<Namespace>,
    #[serde(rename = "maskedPaths")]
    pub masked_paths: Vec<String>,
    #[serde(rename = "readonlyPaths")]
    pub readonly_paths: Vec<String>,
    pub sysctl: std::collections::BTreeMap<String, String>,
    pub seccomp: Option<vxn_wire::protocol::Seccomp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub memory: Option<Memory>,
    pub cpu: Option<Cpu>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Memory {
    pub limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Cpu {
    pub quota: Option<i64>,
    pub period: Option<u64>,
}

impl Spec {
    /// The existing network namespace the spec joins (a CRI pod's), if any.
    pub fn network_namespace(&self) -> Option<&Path> {
        self.linux
            .as_ref()?
            .namespaces
            .iter()
            .find(|n| n.kind == "network")?
            .path
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
    }

    /// The host namespaces a pod sandbox's spec would share: CRI leaves the
    /// `pid` or `ipc` entry out for NamespaceMode NODE (hostPID, hostIPC).
    /// A pod is a VM, so dom0's processes and IPC objects cannot be in it.
    pub fn host_namespaces(&self) -> Vec<&'static str> {
        let Some(linux) = self.linux.as_ref() else {
            return Vec::new();
        };
        ["pid", "ipc"]
            .into_iter()
            .filter(|kind| !linux.namespaces.iter().any(|n| n.kind == *kind))
            .collect()
    }

    /// What keeps the container apart inside its VM. `in_pod`: the VM holds
    /// other containers, so a PID namespace of its own is made where the
    /// spec asks for a new one (a `pid` entry without a path; CRI's
    /// NamespaceMode CONTAINER); a path (POD) or no entry (NODE) shares the
    /// VM's. A standalone container's VM is its own: it shares the VM's.
    pub fn isolation(&self, in_pod: bool) -> vxn_wire::protocol::Isolation {
        use vxn_wire::protocol::{Isolation, PidNamespace};
        let linux = self.linux.as_ref();
        let own_pid = in_pod
            && linux.is_some_and(|l| {
                l.namespaces
                    .iter()
                    .any(|n| n.kind == "pid" && n.path.is_none())
            });
        Isolation {
            pid_namespace: if own_pid {
                PidNamespace::Own
            } else {
                PidNamespace::Vm
            },
            masked_paths: linux.map(|l| l.masked_paths.clone()).unwrap_or_default(),
            readonly_paths: linux.map(|l| l.readonly_paths.clone()).unwrap_or_default(),
            sysctls: linux.map(|l| l.sysctl.clone()).unwrap_or_default(),
            seccomp: linux.and_then(|l| l.seccomp.clone()),
        }
    }

    /// The container's root directory: `root.path`, relative to the bundle
    /// unless absolute (runc's rule), `rootfs` when the spec names none.
    pub fn rootfs_dir(&self, bundle: &Path) -> PathBuf {
        match self.root.as_ref().map(|r| r.path.as_str()) {
            None | Some("") => bundle.join("rootfs"),
            Some(p) => bundle.join(p),
        }
    }

    /// The init's process, valid enough to be worth a VM.
    pub fn init_process(&self) -> Result<&Process> {
        let p = self
            .process
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("config.json has no process".into()))?;
        p.to_agent().validate().map_err(Error::InvalidArgument)?;
        Ok(p)
    }
}

pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path)
        .map_err(|e| Error::InvalidArgument(format!("read {}: {e}", path.display())))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::InvalidArgument(format!("parse {}: {e}", path.display())))
}

impl Process {
    /// The agent's view of this process. Ids are numeric here: containerd
    /// resolved names against the image when it built the spec.
    pub fn to_agent(&self) -> ProcessSpec {
        ProcessSpec {
            args: self.args.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            user: UserSpec {
                uid: Some(self.user.uid),
                gid: Some(self.user.gid),
                user: None,
                group: None,
                additional_gids: self.user.additional_gids.clone(),
                umask: self.user.umask,
            },
            terminal: self.terminal,
            console_size: self
                .console_size
                .as_ref()
                .map(|c| WindowSize::clamped(c.height.into(), c.width.into())),
            rlimits: self
                .rlimits
                .iter()
                .map(|r| Rlimit {
                    kind: r.kind.clone(),
                    soft: r.soft,
                    hard: r.hard,
                })
                .collect(),
            no_new_privileges: self.no_new_privileges,
            oom_score_adj: self.oom_score_adj,
            // Like runc: a spec without capabilities gets none, never the agent's.
            capabilities: Some(
                self.capabilities
                    .clone()
                    .map(|c| protocol::Capabilities {
                        bounding: c.bounding,
                        effective: c.effective,
                        permitted: c.permitted,
                        inheritable: c.inheritable,
                        ambient: c.ambient,
                    })
                    .unwrap_or_default(),
            ),
        }
    }
}

/// Files a bind mount may carry into the guest by value (hosts, resolv.conf).
const MAX_FILE_MOUNT: u64 = 64 * 1024;
const KERNEL_FS: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

/// Map OCI mounts onto what the guest can do, in the spec's order: kernel
/// filesystems, small files by value, host directories through the VM's
/// share ([`crate::storage::binds`]). What cannot be done is refused with a clear
/// error, never silently dropped.
pub fn mounts(spec: &Spec) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for m in &spec.mounts {
        let kind = m.kind.as_deref().unwrap_or("");
        let is_bind = kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind {
            if !KERNEL_FS.contains(&kind) {
                return Err(Error::InvalidArgument(format!(
                    "mount type {kind:?} at {} is not supported by vxn",
                    m.destination
                )));
            }
            out.push(Planned::Guest(MountSpec {
                destination: m.destination.clone(),
                kind: MountKind::Kernel {
                    fstype: kind.into(),
                },
                options: m.options.clone(),
            }));
            continue;
        }
        let source = m.source.as_deref().unwrap_or("");
        let meta = std::fs::metadata(source)
            .map_err(|e| Error::InvalidArgument(format!("bind mount source {source}: {e}")))?;
        if meta.is_file() && meta.len() <= MAX_FILE_MOUNT {
            let contents = std::fs::read_to_string(source).map_err(|e| {
                Error::InvalidArgument(format!(
                    "bind mount source {source} is not a small text file: {e}"
                ))
            })?;
            use std::os::unix::fs::PermissionsExt;
            out.push(Planned::Guest(MountSpec {
                destination: m.destination.clone(),
                kind: MountKind::File {
                    contents,
                    mode: meta.permissions().mode() & 0o7777,
                },
                options: m.options.clone(),
            }));
        } else if m.destination == "/dev/shm" {
            // CRI binds the sandbox's shm: a private tmpfs is the VM equivalent.
            out.push(Planned::Guest(MountSpec {
                destination: m.destination.clone(),
                kind: MountKind::Kernel {
                    fstype: "tmpfs".into(),
                },
                options: vec![
                    "nosuid".into(),
                    "nodev".into(),
                    "noexec".into(),
                    "mode=1777".into(),
                ],
            }));
        } else {
            // Bidirectional propagation (Kubernetes' for CSI plugins and the
            // like) exists so the container's mounts reach the host; one made
            // in the VM never can.
            if m.options.iter().any(|o| o == "rshared" || o == "shared") {
                return Err(Error::Unimplemented(format!(
                    "bind mount of {source} at {}: shared (bidirectional) propagation is not \
                     supported by vxn: a mount made in the VM cannot appear on the host \
                     (rslave, host to container, is)",
                    m.destination
                )));
            }
            out.push(Planned::HostDir(HostBind {
                source: source.into(),
                destination: m.destination.clone(),
                readonly: ReadOnly::of(&m.options),
                options: m.options.clone(),
            }));
        }
    }
    Ok(out)
}

/// VM sizes from linux.resources, within the configured bounds.
pub fn sizing(spec: &Spec, cfg: &Config) -> Sizing {
    let res = spec.linux.as_ref().and_then(|l| l.resources.as_ref());
    let memory_mib = res
        .and_then(|r| memory_mib(r, cfg))
        .unwrap_or(cfg.memory_mib);
    let vcpus = res.and_then(vcpus).unwrap_or(cfg.vcpus).max(1);
    Sizing {
        memory_mib,
        max_memory_mib: memory_mib.saturating_mul(cfg.max_memory_factor.max(1)),
        vcpus,
        max_vcpus: cfg.max_vcpus.max(vcpus),
    }
}

/// The VM memory a memory limit asks for, MiB: the limit and what the guest
/// itself takes (`guest_overhead_mib`), at least `min_memory_mib`.
pub fn memory_mib(res: &Resources, cfg: &Config) -> Option<u64> {
    limit_mib(res).map(|l| VmMemory::of(cfg).for_limit(l))
}

/// A memory limit, MiB (rounded up); none for no limit or a non-positive one.
pub fn limit_mib(res: &Resources) -> Option<u64> {
    res.memory
        .as_ref()?
        .limit
        .filter(|l| *l > 0)
        .map(|l| (l as u64).div_ceil(1 << 20))
}

/// How a container's memory limit sizes a VM of its own (kept by the
/// container for its Updates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmMemory {
    pub guest_overhead_mib: u64,
    pub min_mib: u64,
}

impl VmMemory {
    pub fn of(cfg: &Config) -> Self {
        Self {
            guest_overhead_mib: cfg.guest_overhead_mib,
            min_mib: cfg.min_memory_mib,
        }
    }

    /// The memory of a VM of its own for a container limited to `limit_mib`.
    pub fn for_limit(&self, limit_mib: u64) -> u64 {
        limit_mib
            .saturating_add(self.guest_overhead_mib)
            .max(self.min_mib)
    }
}

/// The vcpus a CPU quota asks for: quota / period, rounded up.
pub fn vcpus(res: &Resources) -> Option<u32> {
    let c = res.cpu.as_ref()?;
    let (q, p) = (c.quota?, c.period?);
    (q > 0 && p > 0).then(|| (q as u64).div_ceil(p).min(u32::MAX as u64) as u32)
}

/// The resources of an Update request: containerd sends the OCI LinuxResources as JSON.
pub fn parse_resources(json: &[u8]) -> Result<Resources> {
    serde_json::from_slice(json)
        .map_err(|e| Error::InvalidArgument(format!("update: bad LinuxResources: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn process_fields_carry_over() {
        let s = spec(
            r#"{"process":{"terminal":true,"consoleSize":{"height":30,"width":100},
            "user":{"uid":1000,"gid":1000,"additionalGids":[5]},"args":["sh","-c","echo $HOME"],
            "env":["A=b"],"cwd":"/tmp","rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":512}],
            "noNewPrivileges":true},"unknownField":1}"#,
        );
        let p = s.process.unwrap().to_agent();
        assert_eq!(p.args, ["sh", "-c", "echo $HOME"]);
        assert_eq!(
            (p.user.uid, p.user.gid, p.user.user.as_deref()),
            (Some(1000), Some(1000), None)
        );
        assert_eq!(
            p.console_size,
            Some(WindowSize {
                rows: 30,
                cols: 100
            })
        );
        assert_eq!(p.rlimits[0].soft, 512);
        assert!(p.no_new_privileges && p.terminal);
        // No capabilities in the spec: none in the container, never the agent's full set.
        assert_eq!(p.capabilities, Some(Default::default()));
        let s = spec(
            r#"{"process":{"args":["sh"],"capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"]}}}"#,
        );
        let caps = s.process.unwrap().to_agent().capabilities.unwrap();
        assert_eq!(
            (caps.bounding, caps.effective),
            (vec!["CAP_KILL".to_string()], vec!["CAP_KILL".to_string()])
        );
        assert!(caps.permitted.is_empty());
    }

    #[test]
    fn resources_size_the_vm() {
        let cfg = Config::default();
        let s = spec(
            r#"{"linux":{"resources":{"memory":{"limit":134217728},"cpu":{"quota":150000,"period":100000}}}}"#,
        );
        // the limit is the container's: the guest's own memory comes on top
        assert_eq!(
            sizing(&s, &cfg),
            Sizing {
                memory_mib: 128 + cfg.guest_overhead_mib,
                max_memory_mib: 2 * (128 + cfg.guest_overhead_mib),
                vcpus: 2,
                max_vcpus: 2
            }
        );
        assert_eq!(sizing(&Spec::default(), &cfg).memory_mib, cfg.memory_mib);
        // a tiny limit gets the smallest VM that runs
        let tiny = spec(r#"{"linux":{"resources":{"memory":{"limit":1048576}}}}"#);
        assert_eq!(sizing(&tiny, &cfg).memory_mib, cfg.min_memory_mib);
        assert_eq!(cfg.min_memory_mib, 64);
        let none = spec(r#"{"linux":{"resources":{"memory":{"limit":0}}}}"#);
        assert_eq!(sizing(&none, &cfg).memory_mib, cfg.memory_mib);
    }

    #[test]
    fn mounts_map_or_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        let s = spec(&format!(
            r#"{{"mounts":[{{"destination":"/proc","type":"proc","source":"proc"}},
                {{"destination":"/etc/hosts","type":"bind","source":"{}","options":["rbind","ro"]}}]}}"#,
            hosts.display()
        ));
        let m = mounts(&s).unwrap();
        assert!(
            matches!(&m[1], Planned::Guest(MountSpec { kind: MountKind::File { contents, .. }, .. }) if contents.contains("localhost"))
        );
        let s = spec(&format!(
            r#"{{"mounts":[{{"destination":"/data","type":"bind","source":"{}","options":["rbind"]}}]}}"#,
            dir.path().display()
        ));
        let m = mounts(&s).unwrap();
        assert!(
            matches!(&m[0], Planned::HostDir(HostBind { destination, readonly: ReadOnly::No, .. }) if destination == "/data")
        );
        // runc's ro is the top mount's; rro (containerd 2.x) every one's.
        let bind = |opts: &str| {
            spec(&format!(
                r#"{{"mounts":[{{"destination":"/data","type":"bind","source":"{}","options":[{opts}]}}]}}"#,
                dir.path().display()
            ))
        };
        let read_only = |opts| match mounts(&bind(opts)).unwrap().remove(0) {
            Planned::HostDir(b) => b.readonly,
            other => panic!("{other:?}"),
        };
        assert_eq!(read_only(r#""rbind","rprivate","ro""#), ReadOnly::Top);
        assert_eq!(read_only(r#""rbind","ro","rro""#), ReadOnly::Recursive);
        assert_eq!(read_only(r#""rbind","rslave""#), ReadOnly::No);
        // Bidirectional propagation cannot leave the VM: refused, not pretended.
        for p in ["rshared", "shared"] {
            let e = mounts(&bind(&format!(r#""rbind","{p}""#))).unwrap_err();
            assert!(matches!(e, Error::Unimplemented(_)), "{e}");
            assert!(e.to_string().contains("cannot appear on the host"), "{e}");
        }
        let s = spec(r#"{"mounts":[{"destination":"/x","type":"nfs","source":"h:/x"}]}"#);
        let e = mounts(&s).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("nfs"));
    }
}
