//! A container inside the guest: its filesystem and its processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vxn_runtime_core::protocol::{
    AgentError, CreateContainer, ErrorKind, ProcessInfo, RootfsSource,
};

use crate::mounts::{self, MountTable};
use crate::process::Process;
use crate::procfs;

/// How long Delete waits for a SIGKILLed init to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

pub struct Container {
    pub id: String,
    pub rootfs: PathBuf,
    state_dir: PathBuf,
    mounts: Mutex<MountTable>,
    init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
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

impl Container {
    /// Mount the filesystem and prepare the init process. On error nothing
    /// stays mounted.
    pub async fn create(
        req: CreateContainer,
        state_root: &Path,
        init_stdio: crate::process::AgentStdio,
    ) -> Result<Arc<Self>, AgentError> {
        validate_id(&req.container_id)?;
        let state_dir = state_root.join(&req.container_id);
        let mut table = MountTable::default();
        let result = async {
            let init = Process::new(None, req.process, init_stdio)?;
            let rootfs =
                mounts::mount_rootfs(&req.rootfs, &state_dir.join("rootfs"), &mut table).await?;
            let readonly_dir =
                req.readonly_rootfs && matches!(req.rootfs, RootfsSource::Directory { .. });
            if readonly_dir {
                mounts::bind_self(&rootfs, &mut table)?;
            }
            mounts::apply_mounts(&rootfs, &req.mounts, &state_dir.join("files"), &mut table)?;
            if !req.mounts.iter().any(|m| m.destination == "/dev") {
                // Every container gets the basic device nodes.
                let dev = rootfs.join("dev");
                std::fs::create_dir_all(&dev).ok();
                mounts::apply_mounts(
                    &rootfs,
                    &[vxn_runtime_core::protocol::MountSpec {
                        destination: "/dev".into(),
                        kind: vxn_runtime_core::protocol::MountKind::Kernel {
                            fstype: "tmpfs".into(),
                        },
                        options: vec!["nosuid".into(), "mode=755".into()],
                    }],
                    &state_dir.join("files"),
                    &mut table,
                )?;
            }
            if req.readonly_rootfs {
                mounts::remount_readonly(&rootfs)?;
            }
            if let Some(h) = &req.hostname {
                nix::unistd::sethostname(h).map_err(|e| {
                    err(
                        ErrorKind::InvalidArgument,
                        format!("sethostname {h:?}: {e}"),
                    )
                })?;
            }
            Ok((rootfs, init))
        }
        .await;
        match result {
            Ok((rootfs, init)) => Ok(Arc::new(Self {
                id: req.container_id,
                rootfs,
                state_dir,
                mounts: Mutex::new(table),
                init,
                execs: Mutex::default(),
            })),
            Err(e) => {
                table.unmount_all();
                let _ = std::fs::remove_dir_all(&state_dir);
                Err(e)
            }
        }
    }

    pub fn init(&self) -> &Arc<Process> {
        &self.init
    }

    fn execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The process with `exec_id`, or init for `None`.
    pub fn process(&self, exec_id: Option<&str>) -> Result<Arc<Process>, AgentError> {
        match exec_id {
            None | Some("") => Ok(self.init.clone()),
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

    /// Every process of the container, as the guest sees them.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let known: Vec<(i32, Option<String>)> = std::iter::once(&self.init)
            .chain(self.execs().values())
            .filter_map(|p| p.pid().map(|pid| (pid, p.exec_id.clone())))
            .collect();
        let mut pids = procfs::container_pids();
        pids.sort_unstable();
        pids.into_iter()
            .map(|pid| ProcessInfo {
                pid: pid as u32,
                exec_id: known
                    .iter()
                    .find(|(k, _)| *k == pid)
                    .and_then(|(_, e)| e.clone()),
                command: procfs::command(pid),
            })
            .collect()
    }

    /// Kill everything, wait for init, unmount, forget the state.
    pub async fn destroy(&self) {
        procfs::signal_all(libc::SIGKILL, &[]);
        if self.init.pid().is_some() {
            let _ = tokio::time::timeout(KILL_WAIT, self.init.wait()).await;
        }
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unmount_all();
        let _ = std::fs::remove_dir_all(&self.state_dir);
        tracing::info!(container = %self.id, "container deleted");
    }
}
