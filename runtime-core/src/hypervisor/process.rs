//! The process backend, for tests only: the "VM" is `vxn-agent` running as a
//! host process (its non-PID-1 test mode) in a cgroup v2 of its own, talking
//! over a socketpair. It gives NO isolation: container processes run on the
//! host with the agent's privileges, in a private mount namespace.
//!
//! The cgroup plays the domain: named like one and found by name after a shim
//! crash, `cgroup.freeze` pauses it, `cgroup.kill` destroys every process in it
//! at once, `cpu.stat` counts its CPU time. The agent outlives a SIGKILLed
//! shim, as a domain would, so cleanup by name is exercised for real.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::UnixStream;

use super::{Hypervisor, Resize, VmError, VmSpec};

/// Sub-directory of the cgroup2 mount that holds the process "domains".
const CGROUP_DIR: &str = "vxn-process";
/// How long destroy waits for the killed processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long pause and unpause wait for the cgroup to report the new state.
const FREEZE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ProcessHypervisor {
    agent: PathBuf,
    root: PathBuf,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

/// The cgroup2 mount point: `/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // ... mount-point ... - fstype source options
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

impl ProcessHypervisor {
    pub fn new(agent: PathBuf) -> Result<Self, VmError> {
        let mount = cgroup2_mount().ok_or_else(|| {
            VmError::Missing(
                "the process backend needs a cgroup2 mount (none in /proc/self/mountinfo)".into(),
            )
        })?;
        Ok(Self {
            agent,
            root: mount.join(CGROUP_DIR),
        })
    }

    /// The cgroup of domain `name`. Names are validated before they get here
    /// (no '/' or '..'); checked again since this builds a path.
    fn cgroup(&self, name: &str) -> Result<PathBuf, VmError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(VmError::Missing(format!("invalid domain name {name:?}")));
        }
        Ok(self.root.join(name))
    }

    /// Names of every process "domain" there is.
    pub fn list(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn set_frozen(&self, name: &str, frozen: bool) -> Result<(), VmError> {
        let cg = self.cgroup(name)?;
        if !cg.is_dir() {
            return Err(VmError::Missing(format!("domain {name} does not exist")));
        }
        let value = if frozen { "1" } else { "0" };
        std::fs::write(cg.join("cgroup.freeze"), value)
            .map_err(io(format!("write {}/cgroup.freeze", cg.display())))?;
        let want = format!("frozen {value}");
        let deadline = tokio::time::Instant::now() + FREEZE_WAIT;
        loop {
            let events = std::fs::read_to_string(cg.join("cgroup.events")).unwrap_or_default();
            if events.lines().any(|l| l == want) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(VmError::Missing(format!(
                    "domain {name} did not reach \"{want}\" within {FREEZE_WAIT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn populated(cg: &Path) -> bool {
    std::fs::read_to_string(cg.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
}

#[async_trait]
impl Hypervisor for ProcessHypervisor {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn check_vif(&self, _bridge: &str) -> Result<(), VmError> {
        Err(VmError::Unsupported(
            "networking ([network] mode = \"none\" or the annotation vxn.network=none)",
            "process",
        ))
    }

    async fn create_paused(&self, spec: &VmSpec) -> Result<super::AgentConnect, VmError> {
        if spec.vif.is_some() {
            return Err(VmError::Unsupported("networking", "process"));
        }
        if !self.agent.is_file() {
            return Err(VmError::Missing(format!(
                "agent {} does not exist (process_agent in /etc/vxn/config.toml)",
                self.agent.display()
            )));
        }
        let cg = self.cgroup(&spec.name)?;
        std::fs::create_dir_all(&self.root)
            .map_err(io(format!("mkdir {}", self.root.display())))?;
        match std::fs::create_dir(&cg) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(VmError::Exists(spec.name.clone()))
            }
            Err(e) => return Err(io(format!("mkdir {}", cg.display()))(e)),
        }
        // From here on, this call made the cgroup: undo it on any error.
        let result = self.spawn_agent(spec, &cg);
        if result.is_err() {
            let _ = self.destroy(&spec.name).await;
        }
        result.map(super::connected)
    }

    async fn unpause(&self, name: &str) -> Result<(), VmError> {
        self.set_frozen(name, false).await
    }

    async fn pause(&self, name: &str) -> Result<(), VmError> {
        self.set_frozen(name, true).await
    }

    async fn destroy(&self, name: &str) -> Result<(), VmError> {
        let cg = self.cgroup(name)?;
        if !cg.exists() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        loop {
            if populated(&cg) {
                // Every process in the cgroup, frozen or not, gets SIGKILL.
                let _ = std::fs::write(cg.join("cgroup.kill"), "1");
            } else {
                match std::fs::remove_dir(&cg) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(_) => {}
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(VmError::Survived {
                    name: name.into(),
                    detail: format!(
                        "cgroup {} still populated after {KILL_WAIT:?}",
                        cg.display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn exists(&self, name: &str) -> Result<bool, VmError> {
        Ok(self.cgroup(name)?.is_dir())
    }

    async fn cpu_time(&self, name: &str) -> Option<Duration> {
        let stat = std::fs::read_to_string(self.cgroup(name).ok()?.join("cpu.stat")).ok()?;
        let usec: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        Some(Duration::from_micros(usec))
    }

    async fn resize(&self, _name: &str, _resize: Resize) -> Result<(), VmError> {
        Err(VmError::Unsupported("resizing", "process"))
    }
}

impl ProcessHypervisor {
    /// Start the agent inside `cg`, its channel on fd 0, then freeze it
    /// (created paused, like a domain). Not frozen before: `spawn` waits for
    /// the child's exec, which a frozen child never reaches.
    fn spawn_agent(&self, spec: &VmSpec, cg: &Path) -> Result<UnixStream, VmError> {
        std::fs::create_dir_all(&spec.state_dir)
            .map_err(io(format!("mkdir {}", spec.state_dir.display())))?;
        let log_path = spec.state_dir.join("agent.log");
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("create {}", log_path.display())))?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(io("socketpair"))?;
        let procs = CString::new(cg.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| VmError::Missing(format!("cgroup path {} has a NUL", cg.display())))?;
        let mut cmd = std::process::Command::new(&self.agent);
        cmd.arg("--channel")
            .arg("fd:0")
            .arg("--log")
            .arg(&spec.agent_log)
            .arg("--state-dir")
            .arg(spec.state_dir.join("agent"))
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(log.try_clone().map_err(io("dup agent log"))?))
            .stderr(Stdio::from(log));
        // SAFETY: only async-signal-safe calls (setsid, open, write, close) on
        // data prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                // Its own session: signals to the shim's group never reach it.
                libc::setsid();
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                libc::close(fd);
                if n != 2 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(io(format!("start {}", self.agent.display())))?;
        let name = spec.name.clone();
        // Reap it when it ends (destroy, or on its own); the shim runs no global reaper.
        std::thread::spawn(move || {
            let status = child.wait();
            tracing::debug!(domain = %name, ?status, "process domain agent ended");
        });
        std::fs::write(cg.join("cgroup.freeze"), "1")
            .map_err(io(format!("freeze {}", cg.display())))?;
        ours.set_nonblocking(true).map_err(io("socketpair"))?;
        UnixStream::from_std(ours).map_err(io("socketpair"))
    }
}
