//! A process's stdio in the guest: the fds the child gets (pipes, /dev/null
//! or its pty) and the pumps between the parent's ends and the mux streams.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::{AbortHandle, JoinHandle};
use vxn_wire::mux::{StreamReader, StreamWriter};
use vxn_wire::protocol::{AgentError, ErrorKind, ProcessSpec, WindowSize};

use crate::fdstream::FdStream;
use crate::pty;

/// How long output may keep flowing after the process exited (a background
/// child can hold the pipe open forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 32 * 1024;
/// A terminal's size before the client sets one: the classic 80x24.
const DEFAULT_TTY_SIZE: WindowSize = WindowSize { rows: 24, cols: 80 };

/// The agent's ends of a process's streams.
#[derive(Default)]
pub struct AgentStdio {
    pub stdin: Option<StreamReader>,
    pub stdout: Option<StreamWriter>,
    pub stderr: Option<StreamWriter>,
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> AgentError {
    AgentError::new(kind, msg)
}

/// The fds a child gets and the parent's ends of them.
pub(crate) struct ChildIo {
    child: [Option<OwnedFd>; 3],
    parent_in: Option<OwnedFd>,
    parent_out: Option<OwnedFd>,
    parent_err: Option<OwnedFd>,
    pty_master: Option<OwnedFd>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), AgentError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| err(ErrorKind::Internal, format!("pipe: {e}")))
}

fn dev_null() -> Result<OwnedFd, AgentError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(Into::into)
        .map_err(|e| err(ErrorKind::Internal, format!("/dev/null: {e}")))
}

impl ChildIo {
    pub(crate) fn new(
        spec: &ProcessSpec,
        stdio: &AgentStdio,
        pty: Option<(OwnedFd, OwnedFd)>,
    ) -> Result<Self, AgentError> {
        let mut io = ChildIo {
            child: [None, None, None],
            parent_in: None,
            parent_out: None,
            parent_err: None,
            pty_master: None,
        };
        if let Some((master, slave)) = pty {
            // Until the client's first ResizePty (ctr sends it after Start), a
            // 0x0 terminal breaks programs that ask for their size.
            let size = spec.console_size.unwrap_or(DEFAULT_TTY_SIZE);
            let _ = pty::set_size(master.as_raw_fd(), size);
            let dup = |fd: &OwnedFd| {
                pty::dup(fd).map_err(|e| err(ErrorKind::Internal, format!("dup: {e}")))
            };
            io.child = [Some(dup(&slave)?), Some(dup(&slave)?), Some(slave)];
            io.pty_master = Some(master);
            return Ok(io);
        }
        if stdio.stdin.is_some() {
            let (r, w) = pipe()?;
            io.child[0] = Some(r);
            io.parent_in = Some(w);
        } else {
            io.child[0] = Some(dev_null()?);
        }
        if stdio.stdout.is_some() {
            let (r, w) = pipe()?;
            io.child[1] = Some(w);
            io.parent_out = Some(r);
        } else {
            io.child[1] = Some(dev_null()?);
        }
        if stdio.stderr.is_some() {
            let (r, w) = pipe()?;
            io.child[2] = Some(w);
            io.parent_err = Some(r);
        } else {
            io.child[2] = Some(dev_null()?);
        }
        Ok(io)
    }

    pub(crate) fn child_fds(&self) -> [i32; 3] {
        [0, 1, 2].map(|i| self.child[i].as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1))
    }

    /// Close the child's ends (the child has them now) and keep ours.
    pub(crate) fn into_parent(mut self) -> Result<(ParentIo, Option<OwnedFd>), AgentError> {
        self.child = [None, None, None];
        let resize = self
            .pty_master
            .as_ref()
            .map(pty::dup)
            .transpose()
            .map_err(|e| err(ErrorKind::Internal, format!("dup: {e}")))?;
        Ok((
            ParentIo {
                stdin: self.parent_in,
                stdout: self.parent_out,
                stderr: self.parent_err,
                pty: self.pty_master,
            },
            resize,
        ))
    }
}

pub(crate) struct ParentIo {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    pty: Option<OwnedFd>,
}

impl ParentIo {
    /// Spawn the copy tasks; returns the output pumps and the stdin pump.
    pub(crate) fn start_pumps(
        self,
        stdio: AgentStdio,
    ) -> (Vec<JoinHandle<()>>, Option<AbortHandle>) {
        let mut outputs = Vec::new();
        let mut stdin_task = None;
        if let Some(master) = self.pty {
            match FdStream::new(master, true) {
                Ok(stream) => {
                    let (rd, wr) = tokio::io::split(stream);
                    if let Some(out) = stdio.stdout {
                        outputs.push(tokio::spawn(pump_out(rd, out)));
                    }
                    if let Some(inp) = stdio.stdin {
                        stdin_task = Some(tokio::spawn(pump_in(inp, wr)).abort_handle());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "pty master not pollable"),
            }
            return (outputs, stdin_task);
        }
        for (fd, stream) in [(self.stdout, stdio.stdout), (self.stderr, stdio.stderr)] {
            if let (Some(fd), Some(stream)) = (fd, stream) {
                match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                    Ok(rx) => outputs.push(tokio::spawn(pump_out(rx, stream))),
                    Err(e) => tracing::warn!(error = %e, "output pipe not pollable"),
                }
            }
        }
        if let (Some(fd), Some(stream)) = (self.stdin, stdio.stdin) {
            match tokio::net::unix::pipe::Sender::from_owned_fd(fd) {
                Ok(tx) => stdin_task = Some(tokio::spawn(pump_in(stream, tx)).abort_handle()),
                Err(e) => tracing::warn!(error = %e, "stdin pipe not pollable"),
            }
        }
        (outputs, stdin_task)
    }
}

/// Process output -> host. Ends at EOF; dropping the writer sends EOF on.
async fn pump_out(mut src: impl AsyncRead + Unpin, dst: StreamWriter) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        match src.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if dst.send(buf.split().freeze()).await.is_err() {
                    // The host stopped reading: close our end like a broken pipe.
                    break;
                }
            }
        }
    }
}

/// Host -> process stdin. Dropping `dst` at EOF closes the process's stdin.
async fn pump_in(mut src: StreamReader, mut dst: impl AsyncWrite + Unpin) {
    while let Ok(Some(chunk)) = src.recv().await {
        if dst.write_all(&chunk).await.is_err() {
            break; // the process closed stdin; dropping `src` resets the stream
        }
    }
    let _ = dst.shutdown().await;
}

/// Let output pumps finish, but not forever.
pub(crate) async fn drain(pumps: Vec<JoinHandle<()>>) {
    let aborts: Vec<AbortHandle> = pumps.iter().map(|p| p.abort_handle()).collect();
    if tokio::time::timeout(OUTPUT_GRACE, futures_join(pumps))
        .await
        .is_err()
    {
        tracing::debug!("output still open after exit; closing it");
        for a in aborts {
            a.abort();
        }
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
