//! One container process: Created -> Running -> Exited, its stdio pumps and
//! its exit status. Illegal transitions are `FailedPrecondition` errors.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use vxn_wire::protocol::{AgentError, ErrorKind, ExitStatus, ProcessSpec, WindowSize};

use crate::caps::{self, CapPlan};
pub use crate::process_io::AgentStdio;
use crate::process_io::{drain, ChildIo};
use crate::reaper::Reaper;
use crate::rootfs_ns::ContainerNs;
use crate::spawn::{self, InitSetup, SpawnError, SpawnPlan, Stage};
use crate::user::Credentials;
use crate::{pty, safe_path, user};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

enum State {
    Created(Box<(ProcessSpec, AgentStdio)>),
    Starting,
    Running {
        pid: i32,
        stdin: Option<AbortHandle>,
        pty: Option<OwnedFd>,
    },
    Exited,
}

/// What a new process of a container joins besides its mount namespace.
#[derive(Default)]
pub struct Joins {
    /// Its cgroup's open `cgroup.procs`.
    pub cgroup_procs: Option<RawFd>,
    /// Its own PID namespace (held open for the spawn).
    pub pid_ns: Option<Arc<OwnedFd>>,
    /// The init's setup of the namespaces (the init only).
    pub init: Option<InitSetup>,
    /// The container's seccomp filter.
    pub seccomp: Option<Arc<Vec<libc::sock_filter>>>,
}

pub struct Process {
    pub exec_id: Option<String>,
    state: Mutex<State>,
    exit: watch::Sender<Option<ExitStatus>>,
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> AgentError {
    AgentError::new(kind, msg)
}

impl Process {
    pub fn new(
        exec_id: Option<String>,
        spec: ProcessSpec,
        stdio: AgentStdio,
    ) -> Result<Arc<Self>, AgentError> {
        spec.validate()
            .map_err(|m| err(ErrorKind::InvalidArgument, m))?;
        Ok(Arc::new(Self {
            exec_id,
            state: Mutex::new(State::Created(Box::new((spec, stdio)))),
            exit: watch::channel(None).0,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name(&self) -> &str {
        self.exec_id.as_deref().unwrap_or("init")
    }

    pub fn pid(&self) -> Option<i32> {
        match &*self.lock() {
            State::Running { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// Start the process in the container's mount namespace and what else
    /// it `joins`. `on_exit` runs after the exit, before output is drained
    /// (the init process uses it to kill the rest of the container).
    pub async fn start(
        self: &Arc<Self>,
        ns: &ContainerNs,
        joins: Joins,
        reaper: &Reaper,
        on_exit: impl FnOnce(i32) + Send + 'static,
    ) -> Result<u32, AgentError> {
        let previous = std::mem::replace(&mut *self.lock(), State::Starting);
        let (spec, stdio) = match previous {
            State::Created(b) => *b,
            other => {
                let msg = match &other {
                    State::Exited => "has already exited",
                    _ => "is already started",
                };
                *self.lock() = other;
                return Err(err(
                    ErrorKind::FailedPrecondition,
                    format!("process {} {msg}", self.name()),
                ));
            }
        };
        match self.spawn(ns, joins, reaper, spec, stdio, on_exit).await {
            Ok(pid) => Ok(pid as u32),
            Err(e) => {
                // It never ran: report it exited like a shell would (127).
                self.finish(ExitStatus {
                    code: 127,
                    signal: None,
                    exited_at_ns: now_ns(),
                });
                Err(e)
            }
        }
    }

    async fn spawn(
        self: &Arc<Self>,
        ns: &ContainerNs,
        joins: Joins,
        reaper: &Reaper,
        spec: ProcessSpec,
        stdio: AgentStdio,
        on_exit: impl FnOnce(i32) + Send + 'static,
    ) -> Result<i32, AgentError> {
        let prepared = prepare(ns, &spec).await?;
        let mut plan = build_plan(ns, &spec, &prepared.creds)?;
        let io = ChildIo::new(&spec, &stdio, prepared.pty)?;
        plan.stdio = io.child_fds();
        plan.tty = spec.terminal;
        plan.cgroup_procs = joins.cgroup_procs;
        plan.pid_ns = joins.pid_ns.as_ref().map(|f| f.as_raw_fd());
        plan.init = joins.init;
        plan.seccomp = joins.seccomp;
        let (pid, status_pipe, exit_rx) = reaper
            .spawn_registered(|| spawn::fork_exec(&plan))
            .map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
        let (parent, master_for_resize) = io.into_parent()?;
        read_spawn_status(status_pipe, &spec.args[0]).await?;

        let (pumps, stdin_task) = parent.start_pumps(stdio);
        *self.lock() = State::Running {
            pid,
            stdin: stdin_task,
            pty: master_for_resize,
        };
        tracing::info!(process = self.name(), pid, args = ?spec.args, "started");

        let this = self.clone();
        tokio::spawn(async move {
            let status = exit_rx.await.unwrap_or(ExitStatus {
                code: 255,
                signal: None,
                exited_at_ns: now_ns(),
            });
            on_exit(pid);
            drain(pumps).await;
            tracing::info!(process = this.name(), pid, code = status.code, "exited");
            this.finish(status);
        });
        Ok(pid)
    }

    fn finish(&self, status: ExitStatus) {
        *self.lock() = State::Exited;
        self.exit.send_replace(Some(status));
    }

    /// Resolves when the process has exited and its output is flushed.
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.exit.subscribe();
        let r = rx.wait_for(|s| s.is_some()).await;
        r.ok().and_then(|s| *s).unwrap_or(ExitStatus {
            code: 255,
            signal: None,
            exited_at_ns: now_ns(),
        })
    }

    pub fn signal(&self, signal: i32) -> Result<(), AgentError> {
        let mut st = self.lock();
        match &*st {
            State::Running { pid, .. } => {
                // SAFETY: kill(2); the pid is ours and not yet reaped.
                if unsafe { libc::kill(*pid, signal) } < 0 {
                    let e = nix::errno::Errno::last();
                    return Err(err(
                        ErrorKind::InvalidArgument,
                        format!("signal {signal}: {e}"),
                    ));
                }
                Ok(())
            }
            State::Exited => Err(err(
                ErrorKind::NotFound,
                format!("process {} already finished", self.name()),
            )),
            State::Starting => Err(err(ErrorKind::FailedPrecondition, "process is starting")),
            State::Created(_) if is_fatal(signal) => {
                // Killing a process that never started: it is simply over.
                let status = ExitStatus {
                    code: 128 + signal,
                    signal: Some(signal),
                    exited_at_ns: now_ns(),
                };
                *st = State::Exited;
                drop(st);
                self.exit.send_replace(Some(status));
                Ok(())
            }
            State::Created(_) => Err(err(ErrorKind::FailedPrecondition, "process is not started")),
        }
    }

    pub fn resize(&self, size: WindowSize) -> Result<(), AgentError> {
        match &*self.lock() {
            State::Running { pty: Some(m), .. } => pty::set_size(m.as_raw_fd(), size)
                .map_err(|e| err(ErrorKind::Internal, format!("resize: {e}"))),
            State::Running { .. } => Err(err(
                ErrorKind::FailedPrecondition,
                "process has no terminal",
            )),
            State::Exited => Err(err(ErrorKind::NotFound, "process already finished")),
            _ => Err(err(ErrorKind::FailedPrecondition, "process is not started")),
        }
    }

    /// Stop feeding stdin and close it: the process reads EOF.
    pub fn close_stdin(&self) {
        match &mut *self.lock() {
            State::Running { stdin, .. } => {
                if let Some(t) = stdin.take() {
                    t.abort();
                }
            }
            State::Created(b) => b.1.stdin = None,
            _ => {}
        }
    }

    pub fn is_exited(&self) -> bool {
        matches!(&*self.lock(), State::Exited)
    }
}

fn is_fatal(sig: i32) -> bool {
    vxn_wire::protocol::ENDS_UNSTARTED.contains(&sig)
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn cstr(s: &str, what: &str) -> Result<CString, AgentError> {
    CString::new(s).map_err(|_| {
        err(
            ErrorKind::InvalidArgument,
            format!("{what} contains a NUL byte"),
        )
    })
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// What a start needs from the container's files, looked up in its view.
struct Prepared {
    creds: Credentials,
    pty: Option<(OwnedFd, OwnedFd)>,
}

fn cwd_of(spec: &ProcessSpec) -> Result<String, AgentError> {
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    if !cwd.starts_with('/') {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!("cwd {cwd:?} must be an absolute path"),
        ));
    }
    Ok(cwd.to_string())
}

/// The user (from the image's passwd and group), a missing cwd created (as
/// runc does), and a tty from the container's devpts: all inside the
/// container root, whatever its symlinks say.
async fn prepare(ns: &ContainerNs, spec: &ProcessSpec) -> Result<Prepared, AgentError> {
    let (who, cwd, terminal) = (spec.user.clone(), cwd_of(spec)?, spec.terminal);
    let (creds, pty) = ns
        .run_in(move |root| {
            let creds = user::resolve(root, &who)?;
            safe_path::mkdir_all(root, Path::new(&cwd), 0o755)
                .map_err(|e| err(ErrorKind::InvalidArgument, format!("cwd {cwd}: {e}")))?;
            let flags = libc::O_RDWR | libc::O_NOCTTY;
            let pty = terminal
                .then(|| safe_path::open_in(root, Path::new("/dev/pts/ptmx"), flags, 0))
                .and_then(Result::ok)
                .map(pty::pair)
                .transpose()
                .map_err(|e| err(ErrorKind::Internal, format!("open pty: {e}")))?;
            Ok((creds, pty))
        })
        .await?;
    let pty = match (terminal, pty) {
        (true, None) => Some(
            pty::open_agent().map_err(|e| err(ErrorKind::Internal, format!("open pty: {e}")))?,
        ),
        (_, pty) => pty,
    };
    Ok(Prepared { creds, pty })
}

/// Everything the child needs, prepared before fork.
fn build_plan(
    ns: &ContainerNs,
    spec: &ProcessSpec,
    creds: &Credentials,
) -> Result<SpawnPlan, AgentError> {
    let mut env: Vec<String> = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", creds.home));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let arg0 = &spec.args[0];
    let candidates: Vec<CString> = if arg0.contains('/') {
        vec![cstr(arg0, "argv[0]")?]
    } else {
        path.split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| cstr(&format!("{d}/{arg0}"), "PATH entry"))
            .collect::<Result<_, _>>()?
    };
    let cwd = cwd_of(spec)?;
    let rlimits = spec
        .rlimits
        .iter()
        .map(|r| {
            let res = rlimit_resource(&r.kind).ok_or_else(|| {
                err(
                    ErrorKind::InvalidArgument,
                    format!("unknown rlimit {}", r.kind),
                )
            })?;
            Ok((
                res,
                libc::rlimit {
                    rlim_cur: r.soft,
                    rlim_max: r.hard,
                },
            ))
        })
        .collect::<Result<_, AgentError>>()?;
    let caps = spec
        .capabilities
        .as_ref()
        .map(|c| CapPlan::new(c, caps::last_cap()));
    Ok(SpawnPlan {
        argv: spec
            .args
            .iter()
            .map(|a| cstr(a, "an argument"))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|e| cstr(e, "an environment entry"))
            .collect::<Result<_, _>>()?,
        candidates,
        mount_ns: Some(ns.raw_fd()),
        cwd: cstr(&cwd, "cwd")?,
        uid: creds.uid,
        gid: creds.gid,
        groups: creds.groups.clone(),
        umask: spec.user.umask,
        rlimits,
        no_new_privs: spec.no_new_privileges,
        oom_score_adj: spec
            .oom_score_adj
            .map(|v| cstr(&v.to_string(), "oom score"))
            .transpose()?,
        caps,
        stdio: [0, 1, 2],
        tty: false,
        cgroup_procs: None,
        pid_ns: None,
        init: None,
        seccomp: None,
    })
}

/// Turn the child's status pipe into a user-facing error.
async fn read_spawn_status(pipe: OwnedFd, arg0: &str) -> Result<(), AgentError> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe)
        .map_err(|e| err(ErrorKind::Internal, format!("status pipe: {e}")))?;
    let mut buf = Vec::with_capacity(8);
    // The child writes 8 bytes or nothing; cap the read regardless.
    (&mut rx)
        .take(64)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| err(ErrorKind::Internal, e.to_string()))?;
    match spawn::decode_status(&buf) {
        Ok(()) => Ok(()),
        Err(SpawnError::Child {
            stage: Stage::Exec,
            errno,
        }) => Err(match errno {
            nix::errno::Errno::ENOENT => err(
                ErrorKind::InvalidArgument,
                format!("exec: \"{arg0}\": executable file not found in $PATH"),
            ),
            nix::errno::Errno::EACCES => err(
                ErrorKind::InvalidArgument,
                format!("exec: \"{arg0}\": permission denied"),
            ),
            e => err(ErrorKind::InvalidArgument, format!("exec: \"{arg0}\": {e}")),
        }),
        Err(SpawnError::Child {
            stage: Stage::Cwd,
            errno,
        }) => Err(err(
            ErrorKind::InvalidArgument,
            format!("chdir to cwd: {errno}"),
        )),
        Err(SpawnError::Child {
            stage: Stage::Caps,
            errno,
        }) => Err(err(
            ErrorKind::InvalidArgument,
            format!("apply capabilities: {errno}"),
        )),
        Err(SpawnError::Child {
            stage: Stage::Seccomp,
            errno,
        }) => Err(err(
            ErrorKind::InvalidArgument,
            format!("load the seccomp profile: {errno}"),
        )),
        Err(e) => Err(err(
            ErrorKind::Internal,
            format!("starting the process: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_protocols_unstarted_signals_are_linuxs() {
        let want = [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGKILL,
            libc::SIGTERM,
        ];
        assert_eq!(vxn_wire::protocol::ENDS_UNSTARTED, want);
        assert!(super::is_fatal(libc::SIGHUP) && !super::is_fatal(libc::SIGUSR1));
    }
}
