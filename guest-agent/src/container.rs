//! A container inside the guest: its own mount namespace (rootfs and mounts,
//! see [`crate::rootfs_ns`]) and its processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::os::fd::OwnedFd;

use vxn_wire::protocol::{
    AgentError, CreateContainer, ErrorKind, Isolation, MountKind, PidNamespace, ProcessInfo,
};

use crate::cgroup::{self, Cgroup};
use crate::mounts;
use crate::mounts::Setup;
use crate::process::{Joins, Process};
use crate::procfs;
use crate::rootfs_ns::ContainerNs;
use crate::spawn::InitSetup;

/// How long Delete waits for a SIGKILLed init to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Processes in one ListPids answer: a page stays far below the message limit.
pub const PIDS_PAGE: usize = 1024;
/// Bytes of a process's command line in a ListPids answer.
const COMMAND_MAX: usize = 256;

pub struct Container {
    pub id: String,
    state_dir: PathBuf,
    /// Dropped at destroy: the namespace and its mounts go with their last process.
    ns: Mutex<Option<Arc<ContainerNs>>>,
    /// Its mount namespace's inode: which of the VM's processes are its own.
    ns_inode: u64,
    /// Its cgroup in the guest (PID 1 mode): its limit, OOM kills and figures.
    cgroup: Option<Cgroup>,
    init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Its PID namespace, masks and read-only paths (applied by its init).
    isolation: Isolation,
    /// Its own PID namespace once its init runs, for its later processes.
    pid_ns: Mutex<Option<Arc<OwnedFd>>>,
    /// Its seccomp profile, compiled once for all its processes.
    seccomp: Option<Arc<Vec<libc::sock_filter>>>,
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> AgentError {
    AgentError::new(kind, msg)
}

/// Container ids become paths: keep them boring.
pub fn validate_id(id: &str) -> Result<(), AgentError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(err(
            ErrorKind::InvalidArgument,
            format!("invalid container id {id:?}"),
        ))
    }
}

/// Write the contents of file mounts where the namespace builder binds them from.
fn stage_files(req: &CreateContainer, files: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    for (i, m) in req.mounts.iter().enumerate() {
        if let MountKind::File { contents, mode } = &m.kind {
            std::fs::create_dir_all(files).map_err(|e| {
                err(
                    ErrorKind::Internal,
                    format!("mkdir {}: {e}", files.display()),
                )
            })?;
            let src = files.join(format!("file-{i}"));
            std::fs::write(&src, contents)
                .and_then(|()| {
                    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(mode & 0o7777))
                })
                .map_err(|e| err(ErrorKind::Internal, format!("write {}: {e}", src.display())))?;
        }
    }
    Ok(())
}

impl Container {
    /// Build the container's namespace and prepare the init process. On
    /// error nothing stays: the namespace was never kept, the state goes.
    pub async fn create(
        req: CreateContainer,
        state_root: &Path,
        init_stdio: crate::process::AgentStdio,
    ) -> Result<Arc<Self>, AgentError> {
        validate_id(&req.container_id)?;
        req.isolation
            .validate()
            .map_err(|e| err(ErrorKind::InvalidArgument, e))?;
        let seccomp = match &req.isolation.seccomp {
            Some(p) => Some(Arc::new(crate::seccomp::compile(p)?)),
            None => None,
        };
        let state_dir = state_root.join(&req.container_id);
        let result = async {
            let init = Process::new(None, req.process.clone(), init_stdio)?;
            let cgroup = match cgroup::available() {
                true => Some(Cgroup::create(&req.container_id, req.memory_limit_bytes)?),
                false => None,
            };
            apply_sysctls(&req.isolation)?;
            let files = state_dir.join("files");
            stage_files(&req, &files)?;
            mounts::wait_for_rootfs(&req.rootfs).await?;
            let shares = state_root.join(".shares");
            mounts::stage_shares(&req.mounts, &shares)?;
            let ns = ContainerNs::create(Setup {
                rootfs: req.rootfs.clone(),
                staging: state_dir.join("rootfs"),
                files,
                shares,
                mounts: req.mounts.clone(),
                readonly: req.readonly_rootfs,
                own_pid_ns: req.isolation.pid_namespace == PidNamespace::Own,
            })
            .await?;
            if let Some(h) = &req.hostname {
                nix::unistd::sethostname(h).map_err(|e| {
                    err(
                        ErrorKind::InvalidArgument,
                        format!("sethostname {h:?}: {e}"),
                    )
                })?;
            }
            Ok((ns, init, cgroup))
        }
        .await;
        match result {
            Ok((ns, init, cgroup)) => Ok(Arc::new(Self {
                id: req.container_id,
                state_dir,
                ns_inode: ns.inode(),
                cgroup,
                ns: Mutex::new(Some(Arc::new(ns))),
                init,
                execs: Mutex::default(),
                isolation: *req.isolation,
                pid_ns: Mutex::default(),
                seccomp,
            })),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&state_dir);
                Err(e)
            }
        }
    }

    pub fn init(&self) -> &Arc<Process> {
        &self.init
    }

    /// The container's namespace, while it has not been destroyed.
    pub fn ns(&self) -> Result<Arc<ContainerNs>, AgentError> {
        self.ns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                err(
                    ErrorKind::FailedPrecondition,
                    format!("container {} is being deleted", self.id),
                )
            })
    }

    fn execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The process with `exec_id`, or init for `None`.
    pub fn process(&self, exec_id: Option<&str>) -> Result<Arc<Process>, AgentError> {
        match exec_id {
            None => Ok(self.init.clone()),
            // One name for the init on the wire: no exec id.
            Some("") => Err(err(
                ErrorKind::InvalidArgument,
                "an exec id must not be empty (the init has none)",
            )),
            Some(id) => self.execs().get(id).cloned().ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("exec {id} not found in container {}", self.id),
                )
            }),
        }
    }

    pub fn add_exec(&self, p: Arc<Process>) -> Result<(), AgentError> {
        if self.init.is_exited() || self.init.pid().is_none() {
            return Err(err(
                ErrorKind::FailedPrecondition,
                format!("container {} is not running", self.id),
            ));
        }
        let id = p.exec_id.clone().unwrap_or_default();
        let mut execs = self.execs();
        if execs.contains_key(&id) {
            return Err(err(
                ErrorKind::AlreadyExists,
                format!("exec {id} already exists"),
            ));
        }
        execs.insert(id, p);
        Ok(())
    }

    pub fn remove_exec(&self, exec_id: &str) -> Result<(), AgentError> {
        let p = self.process(Some(exec_id))?;
        if !p.is_exited() && p.pid().is_some() {
            return Err(err(
                ErrorKind::FailedPrecondition,
                format!("exec {exec_id} is still running"),
            ));
        }
        self.execs().remove(exec_id);
        Ok(())
    }

    /// One page of the container's processes as the guest sees them: pids
    /// above `after`, in order; `true` when more follow.
    pub fn processes(&self, after: Option<u32>) -> (Vec<ProcessInfo>, bool) {
        let known: Vec<(i32, Option<String>)> = std::iter::once(&self.init)
            .chain(self.execs().values())
            .filter_map(|p| p.pid().map(|pid| (pid, p.exec_id.clone())))
            .collect();
        let mut pids: Vec<i32> = self
            .pids()
            .into_iter()
            .filter(|p| after.map_or(true, |a| *p as i64 > a as i64))
            .collect();
        pids.sort_unstable();
        let more = pids.len() > PIDS_PAGE;
        let page = pids
            .into_iter()
            .take(PIDS_PAGE)
            .map(|pid| ProcessInfo {
                pid: pid as u32,
                exec_id: known
                    .iter()
                    .find(|(k, _)| *k == pid)
                    .and_then(|(_, e)| e.clone()),
                command: truncate(procfs::command(pid), COMMAND_MAX),
            })
            .collect();
        (page, more)
    }

    /// What its next process joins: its cgroup, and its PID namespace (or,
    /// for the init, a new one and the setup of its paths).
    pub fn joins(&self, ns: &ContainerNs, is_init: bool) -> Result<Joins, AgentError> {
        let cstrings = |list: &[String]| {
            list.iter()
                .map(|p| {
                    std::ffi::CString::new(p.as_str())
                        .map_err(|_| err(ErrorKind::InvalidArgument, format!("path {p:?}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let init = match is_init {
            false => None,
            true => Some(InitSetup {
                new_pid_ns: self.isolation.pid_namespace == PidNamespace::Own,
                proc_mounts: cstrings(ns.proc_mounts())?,
                masked: cstrings(&self.isolation.masked_paths)?,
                readonly: cstrings(&self.isolation.readonly_paths)?,
            }),
        };
        Ok(Joins {
            cgroup_procs: self.cgroup.as_ref().map(Cgroup::procs_fd),
            pid_ns: if is_init {
                None
            } else {
                self.pid_ns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            },
            init,
            seccomp: self.seccomp.clone(),
        })
    }

    /// After its init started: hold its own PID namespace for later processes.
    pub fn init_started(&self, pid: u32) {
        if self.isolation.pid_namespace != PidNamespace::Own {
            return;
        }
        match std::fs::File::open(format!("/proc/{pid}/ns/pid")) {
            Ok(f) => {
                *self.pid_ns.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f.into()))
            }
            Err(e) => {
                tracing::warn!(container = %self.id, error = %e, "cannot hold the container's PID namespace")
            }
        }
    }

    /// True once per OOM kill among its processes (it has a cgroup).
    pub fn take_oom(&self) -> bool {
        self.cgroup.as_ref().is_some_and(Cgroup::take_oom)
    }

    /// Its own counters: its cgroup's, or its processes' from /proc.
    pub fn stats(&self) -> vxn_wire::protocol::Stats {
        match &self.cgroup {
            Some(cg) => cg.stats(procfs::stats().memory_limit_bytes),
            None => procfs::stats_of(&self.pids()),
        }
    }

    /// The container's live processes: its cgroup's (nothing it does with
    /// namespaces takes a process out of it), else those in its mount
    /// namespace (test mode: no cgroups).
    pub fn pids(&self) -> Vec<i32> {
        match &self.cgroup {
            Some(cg) => cg.pids(),
            None => procfs::pids_in(self.ns_inode),
        }
    }

    /// Signal every process of the container but those in `spare`.
    pub fn signal_all(&self, signal: i32, spare: &[i32]) {
        procfs::signal_each(&self.pids(), signal, spare);
    }

    /// Kill its processes, wait for init, release the namespace, forget the state.
    pub async fn destroy(&self) {
        if !self.cgroup.as_ref().is_some_and(Cgroup::kill) {
            self.signal_all(libc::SIGKILL, &[]);
        }
        if self.init.pid().is_some() {
            let _ = tokio::time::timeout(KILL_WAIT, self.init.wait()).await;
        }
        self.ns.lock().unwrap_or_else(|p| p.into_inner()).take();
        let _ = std::fs::remove_dir_all(&self.state_dir);
        tracing::info!(container = %self.id, "container deleted");
    }
}

/// The spec's sysctls, into the VM's kernel (the pod's): only where the
/// agent is the VM's init; in test mode they would be the host's.
fn apply_sysctls(i: &Isolation) -> Result<(), AgentError> {
    if i.sysctls.is_empty() {
        return Ok(());
    }
    if std::process::id() != 1 {
        return Err(err(
            ErrorKind::Unsupported,
            "sysctls need a VM (the agent in test mode would set the host's)",
        ));
    }
    for (name, value) in &i.sysctls {
        let rel = vxn_wire::protocol::isolation::sysctl_path(name)
            .map_err(|e| err(ErrorKind::InvalidArgument, e))?;
        let path = Path::new("/proc/sys").join(rel);
        std::fs::write(&path, value).map_err(|e| {
            err(
                ErrorKind::InvalidArgument,
                format!("sysctl {name}={value}: {e}"),
            )
        })?;
        tracing::info!(sysctl = %name, value = %value, "sysctl set");
    }
    Ok(())
}

/// At most `max` bytes of `s`, cut on a char boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
