//! Copying between containerd's fifos and the agent's streams.
//!
//! Fifos are opened read-write: opening never blocks on a missing peer, and
//! a reader of stdin never sees a spurious EOF before the client wrote.
//! stdin ends when containerd calls CloseIO: what is already in the fifo is
//! forwarded first, then the agent gets EOF.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use vxn_runtime_core::mux::{StreamReader, StreamWriter};
use vxn_runtime_core::{HostStdio, StdioRequest};

use crate::error::{Result, ShimError};

/// The fifo paths containerd gave for one process ("" = not wanted).
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl StdioPaths {
    pub fn request(&self) -> StdioRequest {
        StdioRequest {
            stdin: !self.stdin.is_empty(),
            stdout: !self.stdout.is_empty(),
            stderr: !self.stderr.is_empty(),
            terminal: self.terminal,
        }
    }
}

/// Copy tasks of one process.
pub struct ProcessIo {
    outputs: Vec<JoinHandle<()>>,
    pub close_stdin: Arc<Notify>,
}

fn open_err(path: &str, e: std::io::Error) -> ShimError {
    ShimError::InvalidArgument(format!("open fifo {path}: {e}"))
}

/// Open the fifos and start copying. Call once the agent accepted the
/// process (it must have its stdin stream open before we send on it).
pub fn attach(paths: &StdioPaths, host: HostStdio) -> Result<ProcessIo> {
    let mut outputs = Vec::new();
    for (path, stream) in [(&paths.stdout, host.stdout), (&paths.stderr, host.stderr)] {
        if let (false, Some(stream)) = (path.is_empty(), stream) {
            let fifo = pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(Path::new(path))
                .map_err(|e| open_err(path, e))?;
            outputs.push(tokio::spawn(copy_out(stream, fifo)));
        }
    }
    let close_stdin = Arc::new(Notify::new());
    if let (false, Some(stream)) = (paths.stdin.is_empty(), host.stdin) {
        let fifo = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(Path::new(&paths.stdin))
            .map_err(|e| open_err(&paths.stdin, e))?;
        tokio::spawn(copy_in(fifo, stream, close_stdin.clone()));
    }
    Ok(ProcessIo {
        outputs,
        close_stdin,
    })
}

impl ProcessIo {
    /// Wait until the output streams ended (the agent sends EOF before it
    /// reports an exit), bounded so a stuck client cannot hold an exit back.
    pub async fn wait_output(&mut self, limit: Duration) {
        let all = futures_all(std::mem::take(&mut self.outputs));
        let _ = tokio::time::timeout(limit, all).await;
    }
}

async fn futures_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

async fn copy_out(mut from: StreamReader, mut to: pipe::Sender) {
    let mut client_gone = false;
    while let Ok(Some(chunk)) = from.recv().await {
        // If the client went away keep draining, so the guest never blocks.
        if !client_gone && to.write_all(&chunk).await.is_err() {
            client_gone = true;
        }
    }
}

async fn copy_in(mut from: pipe::Receiver, to: StreamWriter, close: Arc<Notify>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.send(bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            },
            _ = close.notified() => {
                // Drain what the client wrote before it asked us to close.
                while let Ok(n) = from.try_read(&mut buf) {
                    if n == 0 || to.send(bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        break;
                    }
                }
                break;
            }
        }
    }
    to.close();
}
