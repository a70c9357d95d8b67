//! A process's stdio as a runc caller gives it: open fds (pipes, files,
//! /dev/null, a terminal), relayed to and from the agent's streams. The fds
//! move into the relay, so when the process's output ends they are closed
//! and the caller's reader sees EOF: a keeper holds nothing back.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use vxn_runtime_core::stdio::{ProcessStdio, Relay};
use vxn_runtime_core::{HostStdio, StdioRequest};
use vxn_wire::mux::{StreamReader, StreamWriter};

use crate::control::Streams;

pub struct FdStdio {
    streams: Streams,
    fds: Mutex<Fds>,
}

#[derive(Default)]
struct Fds {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

impl FdStdio {
    /// Plain stdio: each stream the caller gave.
    pub fn plain(stdin: Option<OwnedFd>, stdout: Option<OwnedFd>, stderr: Option<OwnedFd>) -> Self {
        Self {
            streams: Streams {
                stdin: stdin.is_some(),
                stdout: stdout.is_some(),
                stderr: stderr.is_some(),
                terminal: false,
            },
            fds: Mutex::new(Fds {
                stdin,
                stdout,
                stderr,
            }),
        }
    }

    /// A terminal: the slave side of a pty (or the caller's own tty), read
    /// for the process's input and written with its output.
    pub fn terminal(tty: OwnedFd) -> std::io::Result<Self> {
        let input = tty.try_clone()?;
        Ok(Self {
            streams: Streams {
                stdin: true,
                stdout: true,
                stderr: false,
                terminal: true,
            },
            fds: Mutex::new(Fds {
                stdin: Some(input),
                stdout: Some(tty),
                stderr: None,
            }),
        })
    }

    /// What an Exec request carried: its fds in the order `streams` names.
    pub fn received(streams: Streams, fds: Vec<OwnedFd>) -> Result<Self, String> {
        if fds.len() != streams.fd_count() {
            return Err(format!(
                "exec: {} stdio fds received, {} announced",
                fds.len(),
                streams.fd_count()
            ));
        }
        let mut fds = fds.into_iter();
        if streams.terminal {
            let tty = fds.next().ok_or("exec: no terminal fd")?;
            return Self::terminal(tty).map_err(|e| format!("exec terminal: {e}"));
        }
        let mut next = |wanted: bool| if wanted { fds.next() } else { None };
        let (stdin, stdout, stderr) = (
            next(streams.stdin),
            next(streams.stdout),
            next(streams.stderr),
        );
        Ok(Self::plain(stdin, stdout, stderr))
    }
}

impl ProcessStdio for FdStdio {
    fn request(&self) -> StdioRequest {
        StdioRequest {
            stdin: self.streams.stdin,
            stdout: self.streams.stdout,
            stderr: self.streams.stderr,
            terminal: self.streams.terminal,
        }
    }

    fn attach(&self, host: HostStdio) -> vxn_runtime_core::Result<Relay> {
        let mut fds = self.fds.lock().unwrap_or_else(|p| p.into_inner());
        let mut outputs = Vec::new();
        for (fd, stream) in [
            (fds.stdout.take(), host.stdout),
            (fds.stderr.take(), host.stderr),
        ] {
            if let (Some(fd), Some(stream)) = (fd, stream) {
                outputs.push(tokio::spawn(relay_output(stream, File::from(fd))));
            }
        }
        let close_stdin = Arc::new(Notify::new());
        match (fds.stdin.take(), host.stdin) {
            (Some(fd), Some(stream)) => {
                tokio::spawn(relay_input(File::from(fd), stream, close_stdin.clone()));
            }
            (_, Some(stream)) => stream.close(),
            _ => {}
        }
        Ok(Relay::new(outputs, close_stdin))
    }
}

/// Guest output to the caller's fd, in order, each chunk written before the
/// next is taken. A caller that stopped reading is not waited for: the rest
/// is drained so the guest never blocks on it.
async fn relay_output(mut from: StreamReader, to: File) {
    let mut sink = Some(tokio::fs::File::from_std(to));
    while let Ok(Some(chunk)) = from.recv().await {
        let Some(f) = sink.as_mut() else { continue };
        let wrote = async {
            f.write_all(&chunk).await?;
            f.flush().await
        };
        if wrote.await.is_err() {
            sink = None;
        }
    }
}

/// The caller's input to the guest until it ends (EOF, or a terminal hung
/// up: EIO) or the process goes; then the guest's stdin is closed.
async fn relay_input(from: File, to: StreamWriter, close: Arc<Notify>) {
    let mut from = tokio::fs::File::from_std(from);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = close.notified() => break,
        };
        if to
            .send(bytes::Bytes::copy_from_slice(&buf[..n]))
            .await
            .is_err()
        {
            return;
        }
    }
    to.close();
}
