//! A process's stdio as a runc caller gives it: open fds (pipes, files,
//! /dev/null, a terminal), relayed to and from the agent's streams. The fds
//! move into the relay, so when the process's output ends they are closed
//! and the caller's reader sees EOF: a keeper holds nothing back.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use vxn_runtime_core::stdio::{pump_input, pump_output, ProcessStdio, Relay};
use vxn_runtime_core::{HostStdio, StdioRequest};

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
                let to = tokio::fs::File::from_std(File::from(fd));
                outputs.push(tokio::spawn(pump_output(stream, to)));
            }
        }
        let close_stdin = Arc::new(Notify::new());
        match (fds.stdin.take(), host.stdin) {
            (Some(fd), Some(stream)) => {
                let from = tokio::fs::File::from_std(File::from(fd));
                tokio::spawn(pump_input(from, stream, close_stdin.clone()));
            }
            (_, Some(stream)) => stream.close(),
            _ => {}
        }
        Ok(Relay::new(outputs, close_stdin))
    }
}
