//! The host-side client of the guest agent.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use vxn_wire::mux::{
    handshake_host, HandshakeError, Mux, MuxError, Role, StreamReader, StreamWriter,
};
use vxn_wire::protocol::{
    guest_text, AgentError, AgentInfo, CreateContainer, ErrorKind, Event, ExitStatus, Hello,
    NetworkSetup, NetworkState, ProcessInfo, ProcessSpec, Request, Response, Stats, StdioStreams,
    WindowSize, MAX_ADDRESSES, MAX_DNS_ENTRIES,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent answered with an error.
    #[error("{0}")]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Connection(#[from] MuxError),
    #[error("agent handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("guest answered with more than {max} {what}")]
    TooMany { what: &'static str, max: usize },
    #[error("agent answered {op} with an unexpected {got} answer")]
    Unexpected { op: &'static str, got: &'static str },
    #[error("the guest agent did not answer {op} within {after:?}")]
    Timeout { op: &'static str, after: Duration },
}

impl ClientError {
    /// The agent's error category, or `None` for connection-level failures.
    pub fn agent_kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Agent(e) => Some(e.kind),
            _ => None,
        }
    }
}

/// The host ends of one process's stdio streams.
#[derive(Default)]
pub struct HostStdio {
    pub stdin: Option<StreamWriter>,
    pub stdout: Option<StreamReader>,
    pub stderr: Option<StreamReader>,
}

/// Which streams a process should get.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdioRequest {
    pub stdin: bool,
    pub stdout: bool,
    /// Ignored in terminal mode: a tty has one output stream.
    pub stderr: bool,
    pub terminal: bool,
}

pub struct AgentClient {
    mux: Mux,
    agent: Hello,
    events: Mutex<Option<mpsc::Receiver<Event>>>,
    next_stream: AtomicU32,
    timeouts: Timeouts,
}

/// How long each kind of call may take. `Wait` has none: it is answered when
/// the process exits, and fails when the connection does.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// CreateContainer: waits for the rootfs device and mounts it.
    pub create: Duration,
    /// Every other call.
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            create: Duration::from_secs(120),
            call: Duration::from_secs(30),
        }
    }
}

impl AgentClient {
    /// Handshake with the agent on `io` and start the multiplexer.
    pub async fn connect<S>(mut io: S, timeout: Duration) -> Result<Self, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let software = concat!("vxn-host ", env!("CARGO_PKG_VERSION"));
        let (agent, leftover) = handshake_host(&mut io, software, timeout).await?;
        let (mux, incoming) = Mux::start(io, leftover, Role::Host);
        Ok(Self {
            mux,
            agent,
            events: Mutex::new(Some(incoming.events)),
            next_stream: AtomicU32::new(1),
            timeouts: Timeouts::default(),
        })
    }

    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
    }

    /// The agent's self-description from its hello.
    pub fn agent_software(&self) -> &str {
        &self.agent.software
    }

    /// Agent events (OOM kills); can be taken once.
    pub fn take_events(&self) -> Option<mpsc::Receiver<Event>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub fn mux(&self) -> &Mux {
        &self.mux
    }

    /// Allocate and open the host ends of a process's streams. Readers are
    /// live at once; don't send on stdin before the agent accepted the process.
    pub fn open_stdio(&self, want: StdioRequest) -> Result<(StdioStreams, HostStdio), ClientError> {
        let mut ids = StdioStreams::default();
        let mut io = HostStdio::default();
        if want.stdin {
            let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
            io.stdin = Some(self.mux.open_writer(id)?);
            ids.stdin = Some(id);
        }
        if want.stdout {
            let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
            io.stdout = Some(self.mux.open_reader(id)?);
            ids.stdout = Some(id);
        }
        if want.stderr && !want.terminal {
            let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
            io.stderr = Some(self.mux.open_reader(id)?);
            ids.stderr = Some(id);
        }
        Ok((ids, io))
    }

    /// One request, bounded in time; the guest's error text is escaped and
    /// capped before anyone logs or shows it.
    async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        let limit = match req {
            Request::Wait { .. } => None,
            Request::CreateContainer(_) => Some(self.timeouts.create),
            _ => Some(self.timeouts.call),
        };
        let answer = match limit {
            None => self.mux.request(req).await?,
            Some(after) => tokio::time::timeout(after, self.mux.request(req))
                .await
                .map_err(|_| ClientError::Timeout {
                    op: req.op(),
                    after,
                })??,
        };
        answer.map_err(|e| {
            ClientError::Agent(AgentError {
                kind: e.kind,
                message: guest_text(&e.message),
            })
        })
    }

    async fn call_ok(&self, op: &'static str, req: &Request) -> Result<(), ClientError> {
        match self.call(req).await? {
            Response::Ok => Ok(()),
            got => Err(ClientError::Unexpected {
                op,
                got: got.kind(),
            }),
        }
    }

    pub async fn ping(&self) -> Result<AgentInfo, ClientError> {
        match self.call(&Request::Ping).await? {
            Response::Pong(info) => Ok(info),
            got => Err(ClientError::Unexpected {
                op: "ping",
                got: got.kind(),
            }),
        }
    }

    pub async fn create_container(&self, req: CreateContainer) -> Result<(), ClientError> {
        self.call_ok("create", &Request::CreateContainer(req)).await
    }

    /// Start the init process (`exec_id: None`) or a prepared exec; returns the guest pid.
    pub async fn start(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
    ) -> Result<u32, ClientError> {
        let req = Request::Start {
            container_id: container_id.into(),
            exec_id: exec_id.map(Into::into),
        };
        match self.call(&req).await? {
            Response::Started { pid } => Ok(pid),
            got => Err(ClientError::Unexpected {
                op: "start",
                got: got.kind(),
            }),
        }
    }

    pub async fn exec(
        &self,
        container_id: &str,
        exec_id: &str,
        process: ProcessSpec,
        stdio: StdioStreams,
    ) -> Result<(), ClientError> {
        let req = Request::Exec {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            process,
            stdio,
        };
        self.call_ok("exec", &req).await
    }

    pub async fn signal(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
        signal: i32,
        all: bool,
    ) -> Result<(), ClientError> {
        let req = Request::Signal {
            container_id: container_id.into(),
            exec_id: exec_id.map(Into::into),
            signal,
            all,
        };
        self.call_ok("signal", &req).await
    }

    /// Waits until the process exited and its output was sent.
    pub async fn wait(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
    ) -> Result<ExitStatus, ClientError> {
        let req = Request::Wait {
            container_id: container_id.into(),
            exec_id: exec_id.map(Into::into),
        };
        match self.call(&req).await? {
            Response::Exited(st) => Ok(st),
            got => Err(ClientError::Unexpected {
                op: "wait",
                got: got.kind(),
            }),
        }
    }

    pub async fn resize_tty(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
        size: WindowSize,
    ) -> Result<(), ClientError> {
        let req = Request::ResizeTty {
            container_id: container_id.into(),
            exec_id: exec_id.map(Into::into),
            size,
        };
        self.call_ok("resize", &req).await
    }

    pub async fn close_stdin(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let req = Request::CloseStdin {
            container_id: container_id.into(),
            exec_id: exec_id.map(Into::into),
        };
        self.call_ok("close-stdin", &req).await
    }

    pub async fn delete(
        &self,
        container_id: &str,
        exec_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let req = Request::Delete {
            container_id: container_id.into(),
            exec_id: exec_id.map(Into::into),
        };
        self.call_ok("delete", &req).await
    }

    /// Set the VM's network up; the answer is the guest's account of it,
    /// capped (it is only logged and shown, never acted on).
    pub async fn setup_network(&self, setup: NetworkSetup) -> Result<NetworkState, ClientError> {
        self.network_call(Request::SetupNetwork(setup)).await
    }

    /// More interfaces on the running VM (a network connected later).
    pub async fn add_interfaces(&self, setup: NetworkSetup) -> Result<NetworkState, ClientError> {
        self.network_call(Request::AddInterfaces(setup)).await
    }

    async fn network_call(&self, req: Request) -> Result<NetworkState, ClientError> {
        match self.call(&req).await? {
            Response::Network(mut s) => {
                s.addresses.truncate(MAX_ADDRESSES);
                s.dns.servers.truncate(MAX_DNS_ENTRIES);
                s.dns.search.clear();
                s.dns.options.clear();
                Ok(s)
            }
            got => Err(ClientError::Unexpected {
                op: "network",
                got: got.kind(),
            }),
        }
    }

    /// The VM's counters, or (`container_only`) the container's processes' alone.
    pub async fn stats(
        &self,
        container_id: &str,
        container_only: bool,
    ) -> Result<Stats, ClientError> {
        match self
            .call(&Request::Stats {
                container_id: container_id.into(),
                container_only,
            })
            .await?
        {
            Response::Stats(s) => Ok(s),
            got => Err(ClientError::Unexpected {
                op: "stats",
                got: got.kind(),
            }),
        }
    }

    /// Every process of the container, page by page: a guest with any number
    /// of processes answers in bounded frames. What is kept is bounded in
    /// bytes, not only in entries: each command and exec id is cut to what an
    /// honest agent sends, and a guest that keeps saying "more" is stopped at
    /// [`MAX_PIDS`] entries or [`MAX_PIDS_BYTES`], whichever comes first.
    pub async fn list_pids(&self, container_id: &str) -> Result<Vec<ProcessInfo>, ClientError> {
        let mut all: Vec<ProcessInfo> = Vec::new();
        let mut bytes = 0usize;
        let mut after = None;
        loop {
            let req = Request::ListPids {
                container_id: container_id.into(),
                after,
            };
            let (page, more) = match self.call(&req).await? {
                Response::Pids { processes, more } => (processes, more),
                got => {
                    return Err(ClientError::Unexpected {
                        op: "pids",
                        got: got.kind(),
                    })
                }
            };
            // The cursor must move forward, or a lying guest could loop us forever.
            let last = page.last().map(|p| p.pid);
            let progressed = matches!((last, after), (Some(l), Some(a)) if l > a)
                || (last.is_some() && after.is_none());
            for mut p in page {
                cut(&mut p.command, MAX_COMMAND);
                if let Some(e) = &mut p.exec_id {
                    cut(e, MAX_EXEC_ID);
                }
                bytes += std::mem::size_of::<ProcessInfo>()
                    + p.command.len()
                    + p.exec_id.as_ref().map_or(0, String::len);
                all.push(p);
            }
            if all.len() > MAX_PIDS {
                return Err(ClientError::TooMany {
                    what: "processes",
                    max: MAX_PIDS,
                });
            }
            if bytes > MAX_PIDS_BYTES {
                return Err(ClientError::TooMany {
                    what: "bytes of process list",
                    max: MAX_PIDS_BYTES,
                });
            }
            if !more || !progressed {
                return Ok(all);
            }
            after = last;
        }
    }

    /// Ask the agent to sync and power the domain off. The connection drops.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.call_ok("shutdown", &Request::Shutdown).await
    }

    /// Wait for the connection to close; returns why.
    pub async fn closed(&self) -> std::sync::Arc<str> {
        self.mux.closed().await
    }

    pub fn close(&self) {
        self.mux.close("closed by host");
    }
}

/// Linux's PID_MAX_LIMIT: no guest has more processes than this.
pub const MAX_PIDS: usize = 1 << 22;
/// What one process list may take in the host's memory (entries, commands
/// and exec ids): ~60000 processes with full command lines.
pub const MAX_PIDS_BYTES: usize = 32 << 20;
/// A command line as the agent reports it (it cuts at 256 bytes).
pub const MAX_COMMAND: usize = 256;
/// An exec id: ids are checked on the host at Exec, at most this long.
pub const MAX_EXEC_ID: usize = 256;

/// At most `max` bytes of `s`, cut on a char boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.shrink_to_fit();
    }
}

/// Default time to wait for an agent hello once its domain runs.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(60);

impl From<ClientError> for crate::Error {
    fn from(e: ClientError) -> Self {
        // The agent's words were escaped and capped by the client.
        let msg = e.to_string();
        match (&e, e.agent_kind()) {
            (_, Some(ErrorKind::NotFound)) => crate::Error::NotFound(msg),
            (_, Some(ErrorKind::AlreadyExists)) => crate::Error::AlreadyExists(msg),
            (_, Some(ErrorKind::InvalidArgument)) => crate::Error::InvalidArgument(msg),
            (_, Some(ErrorKind::FailedPrecondition)) => crate::Error::FailedPrecondition(msg),
            (_, Some(ErrorKind::Unsupported)) => crate::Error::Unimplemented(msg),
            (_, Some(ErrorKind::Unavailable)) => crate::Error::Unavailable(msg),
            (_, Some(ErrorKind::Internal)) => crate::Error::Internal(msg),
            (ClientError::Timeout { .. }, None) => crate::Error::DeadlineExceeded(msg),
            (ClientError::Connection(MuxError::TooLarge { .. }), None) => {
                crate::Error::Internal(msg)
            }
            // The guest answered, with more than the host keeps.
            (ClientError::TooMany { .. }, None) => crate::Error::ResourceExhausted(msg),
            (_, None) => crate::Error::Unavailable(format!("guest agent unreachable: {msg}")),
        }
    }
}
