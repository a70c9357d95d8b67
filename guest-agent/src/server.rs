//! Serves the host's requests on the multiplexed channel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use vxn_wire::mux::{Incoming, Mux};
use vxn_wire::protocol::{
    AgentError, AgentInfo, ErrorKind, Event, NetworkState, Request, Response, ResponseBody,
    StdioStreams,
};

use crate::container::Container;
use crate::network;
use crate::process::{AgentStdio, Process};
use crate::reaper::Reaper;
use crate::{procfs, SOFTWARE};

pub struct Agent {
    mux: Mux,
    reaper: Arc<Reaper>,
    state_root: PathBuf,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Serializes container creation so ids are checked and claimed atomically.
    create_lock: tokio::sync::Mutex<()>,
    /// Set once by SetupNetwork; containers created after it get its /etc files.
    network: tokio::sync::Mutex<Option<NetworkState>>,
    pub shutdown: Notify,
    /// The guest kernel's OOM-kill count already reported; u64::MAX: OOM events off
    /// (test mode: the count would be the host's).
    oom_seen: AtomicU64,
}

/// Why the serve loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    ShutdownRequested,
    ChannelClosed(String),
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> AgentError {
    AgentError::new(kind, msg)
}

impl Agent {
    pub fn new(mux: Mux, reaper: Arc<Reaper>, state_root: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            mux,
            reaper,
            state_root,
            containers: Mutex::default(),
            create_lock: Default::default(),
            network: Default::default(),
            shutdown: Notify::new(),
            oom_seen: AtomicU64::new(u64::MAX),
        })
    }

    /// Report OOM kills of the guest kernel as events (PID 1 mode: in a vxn DomU
    /// every process but the agent belongs to the container).
    pub fn enable_oom_events(&self) {
        self.oom_seen.store(procfs::oom_kills(), Ordering::SeqCst);
    }

    /// Send `Event::Oom` if the guest's OOM-kill count grew since the last check.
    pub fn check_oom(&self) {
        let seen = self.oom_seen.load(Ordering::SeqCst);
        if seen == u64::MAX {
            return;
        }
        let now = procfs::oom_kills();
        if now > seen
            && self
                .oom_seen
                .compare_exchange(seen, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            tracing::warn!(kills = now - seen, "guest kernel OOM-killed a process");
            // Whose process it was, where cgroups tell; the VM's otherwise.
            let victims: Vec<String> = self
                .containers()
                .values()
                .filter(|c| c.take_oom())
                .map(|c| c.id.clone())
                .collect();
            if victims.is_empty() {
                self.send_event(&Event::Oom {
                    container_id: String::new(),
                });
            }
            for container_id in victims {
                self.send_event(&Event::Oom { container_id });
            }
        }
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn container(&self, id: &str) -> Result<Arc<Container>, AgentError> {
        self.containers()
            .get(id)
            .cloned()
            .ok_or_else(|| err(ErrorKind::NotFound, format!("container {id} not found")))
    }

    pub fn send_event(&self, ev: &Event) {
        self.mux.send_event(ev);
    }

    /// Serve until the channel closes or the host asks for a shutdown.
    pub async fn serve(self: Arc<Self>, mut incoming: Incoming) -> Ended {
        loop {
            tokio::select! {
                req = incoming.requests.recv() => {
                    let Some(req) = req else {
                        return Ended::ChannelClosed(self.mux.closed().await.to_string());
                    };
                    let agent = self.clone();
                    tokio::spawn(async move {
                        let body = match req.request {
                            Ok(r) => agent.handle(r).await,
                            Err(e) => Err(err(ErrorKind::InvalidArgument, format!("malformed request: {e}"))),
                        };
                        agent.mux.respond(req.id, &body);
                    });
                }
                _ = self.shutdown.notified() => return Ended::ShutdownRequested,
            }
        }
    }

    fn open_stdio(&self, ids: &StdioStreams) -> Result<AgentStdio, AgentError> {
        let open_err = |e: vxn_wire::mux::MuxError| err(ErrorKind::InvalidArgument, e.to_string());
        Ok(AgentStdio {
            stdin: ids
                .stdin
                .map(|id| self.mux.open_reader(id))
                .transpose()
                .map_err(open_err)?,
            stdout: ids
                .stdout
                .map(|id| self.mux.open_writer(id))
                .transpose()
                .map_err(open_err)?,
            stderr: ids
                .stderr
                .map(|id| self.mux.open_writer(id))
                .transpose()
                .map_err(open_err)?,
        })
    }

    async fn handle(self: &Arc<Self>, req: Request) -> ResponseBody {
        match req {
            Request::Ping => Ok(Response::Pong(AgentInfo {
                software: SOFTWARE.into(),
                kernel: kernel_release(),
            })),
            Request::SetupNetwork(setup) => {
                let mut network = self.network.lock().await;
                if network.is_some() {
                    return Err(err(
                        ErrorKind::AlreadyExists,
                        "the network of this VM is already set up",
                    ));
                }
                let state = network::setup(setup).await?;
                *network = Some(state.clone());
                Ok(Response::Network(state))
            }
            Request::AddInterfaces(setup) => {
                let mut network = self.network.lock().await;
                let mut unset = vxn_wire::protocol::NetworkState::default();
                let state = network.as_mut().unwrap_or(&mut unset);
                let added = network::add_interfaces(setup, state).await?;
                Ok(Response::Network(added))
            }
            Request::CreateContainer(mut c) => {
                let _guard = self.create_lock.lock().await;
                let hostname = network::hostname_for(c.hostname.as_deref(), &c.container_id);
                if let Some(state) = self.network.lock().await.as_ref() {
                    let files = network::container_files(state, &hostname, &c.mounts);
                    c.mounts.extend(files);
                }
                c.hostname = Some(hostname);
                if self.containers().contains_key(&c.container_id) {
                    return Err(err(
                        ErrorKind::AlreadyExists,
                        format!("container {} already exists", c.container_id),
                    ));
                }
                let stdio = self.open_stdio(&c.stdio)?;
                let container = Container::create(c, &self.state_root, stdio).await?;
                tracing::info!(container = %container.id, "container created");
                self.containers().insert(container.id.clone(), container);
                Ok(Response::Ok)
            }
            Request::Start {
                container_id,
                exec_id,
            } => {
                let c = self.container(&container_id)?;
                let p = c.process(exec_id.as_deref())?;
                let is_init = exec_id.as_deref().unwrap_or("").is_empty();
                if !is_init && c.init().is_exited() {
                    return Err(err(
                        ErrorKind::FailedPrecondition,
                        format!("container {container_id} is not running"),
                    ));
                }
                let ns = c.ns()?;
                let container = c.clone();
                let joins = c.joins(&ns, is_init)?;
                let pid = p
                    .start(&ns, joins, &self.reaper, move |pid| {
                        // As in a PID namespace of its own: when init dies,
                        // the rest of the container dies with it.
                        if is_init {
                            container.signal_all(libc::SIGKILL, &[pid]);
                        }
                    })
                    .await?;
                if is_init {
                    c.init_started(pid);
                }
                Ok(Response::Started { pid })
            }
            Request::Exec {
                container_id,
                exec_id,
                process,
                stdio,
            } => {
                let c = self.container(&container_id)?;
                if exec_id.is_empty() {
                    return Err(err(ErrorKind::InvalidArgument, "exec id must not be empty"));
                }
                let p = Process::new(Some(exec_id), process, self.open_stdio(&stdio)?)?;
                c.add_exec(p)?;
                Ok(Response::Ok)
            }
            Request::Signal {
                container_id,
                exec_id,
                signal,
                all,
            } => {
                let c = self.container(&container_id)?;
                if !(1..=64).contains(&signal) {
                    return Err(err(
                        ErrorKind::InvalidArgument,
                        format!("invalid signal {signal}"),
                    ));
                }
                let p = c.process(exec_id.as_deref())?;
                if all {
                    c.signal_all(signal, &[]);
                    return Ok(Response::Ok);
                }
                p.signal(signal)?;
                Ok(Response::Ok)
            }
            Request::Wait {
                container_id,
                exec_id,
            } => {
                let p = self.container(&container_id)?.process(exec_id.as_deref())?;
                let status = p.wait().await;
                if status.signal == Some(libc::SIGKILL) {
                    // Killed: if by the OOM killer, the event must precede the exit.
                    self.check_oom();
                }
                Ok(Response::Exited(status))
            }
            Request::ResizeTty {
                container_id,
                exec_id,
                size,
            } => {
                self.container(&container_id)?
                    .process(exec_id.as_deref())?
                    .resize(size)?;
                Ok(Response::Ok)
            }
            Request::CloseStdin {
                container_id,
                exec_id,
            } => {
                self.container(&container_id)?
                    .process(exec_id.as_deref())?
                    .close_stdin();
                Ok(Response::Ok)
            }
            Request::Delete {
                container_id,
                exec_id: Some(e),
            } if !e.is_empty() => {
                self.container(&container_id)?.remove_exec(&e)?;
                Ok(Response::Ok)
            }
            Request::Delete { container_id, .. } => {
                let c = self.container(&container_id)?;
                c.destroy().await;
                self.containers().remove(&container_id);
                Ok(Response::Ok)
            }
            Request::Stats {
                container_id,
                container_only,
            } => {
                if container_id.is_empty() {
                    return Ok(Response::Stats(procfs::stats()));
                }
                let c = self.container(&container_id)?;
                Ok(Response::Stats(match container_only {
                    false => procfs::stats(),
                    true => c.stats(),
                }))
            }
            Request::ListPids {
                container_id,
                after,
            } => {
                let (processes, more) = self.container(&container_id)?.processes(after);
                Ok(Response::Pids { processes, more })
            }
            Request::Shutdown => {
                self.shutdown.notify_one();
                Ok(Response::Ok)
            }
        }
    }

    /// Tear down every container (before power-off or exit).
    pub async fn destroy_all(&self) {
        let all: Vec<Arc<Container>> = self.containers().drain().map(|(_, c)| c).collect();
        for c in all {
            c.destroy().await;
        }
    }

    pub fn mux(&self) -> &Mux {
        &self.mux
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}
