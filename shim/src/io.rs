//! Copying between containerd's fifos and the agent's streams.
//!
//! Output fifos are opened read-write, so opening never blocks on a missing
//! reader. stdin is opened read-only, like runc's shim does: the open waits
//! for the client's writer, and when the client closes it (ctr at the end of
//! its stdin) the guest process gets EOF. CloseIO ends stdin too: what is
//! already in the fifo is forwarded first, then the agent gets EOF.

use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::unix::pipe;
use tokio::sync::Notify;
use vxn_runtime_core::stdio::{pump_input, pump_output, ProcessStdio, Relay};
use vxn_runtime_core::{HostStdio, StdioRequest};

use crate::error::{Error, Result};

/// The fifo paths containerd gave for one process ("" = not wanted).
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl ProcessStdio for StdioPaths {
    fn request(&self) -> StdioRequest {
        StdioRequest {
            stdin: !self.stdin.is_empty(),
            stdout: !self.stdout.is_empty(),
            stderr: !self.stderr.is_empty(),
            terminal: self.terminal,
        }
    }

    fn attach(&self, host: HostStdio) -> Result<Relay> {
        attach(self, host)
    }
}

fn open_err(path: &str, e: std::io::Error) -> Error {
    Error::InvalidArgument(format!("open fifo {path}: {e}"))
}

/// Open the fifos and start copying.
fn attach(paths: &StdioPaths, host: HostStdio) -> Result<Relay> {
    let mut outputs = Vec::new();
    for (path, stream) in [(&paths.stdout, host.stdout), (&paths.stderr, host.stderr)] {
        if let (false, Some(stream)) = (path.is_empty(), stream) {
            let fifo = pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(Path::new(path))
                .map_err(|e| open_err(path, e))?;
            outputs.push(tokio::spawn(pump_output(stream, fifo)));
        }
    }
    let close_stdin = Arc::new(Notify::new());
    if let (false, Some(stream)) = (paths.stdin.is_empty(), host.stdin) {
        let path = PathBuf::from(&paths.stdin);
        match std::fs::metadata(&path) {
            Ok(m) if m.file_type().is_fifo() => {}
            Ok(_) => {
                return Err(Error::InvalidArgument(format!(
                    "{} is not a fifo",
                    paths.stdin
                )))
            }
            Err(e) => return Err(open_err(&paths.stdin, e)),
        }
        let close = close_stdin.clone();
        tokio::spawn(async move {
            match open_stdin(&path, &close).await {
                Some(fifo) => pump_input(fifo, stream, close).await,
                None => stream.close(),
            }
        });
    }
    Ok(Relay::new(outputs, close_stdin))
}

/// Open stdin for reading once the client's writer is there; None if stdin
/// was closed first or the fifo cannot be opened.
async fn open_stdin(path: &Path, close: &Notify) -> Option<pipe::Receiver> {
    let p = path.to_path_buf();
    // A blocking open is the only way to wait for a fifo's writer.
    let mut opening = tokio::task::spawn_blocking(move || std::fs::File::open(p));
    tokio::select! {
        r = &mut opening => match r {
            Ok(Ok(file)) => pipe::Receiver::from_file(file)
                .map_err(|e| tracing::warn!(error = %e, "stdin fifo"))
                .ok(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "open stdin fifo");
                None
            }
            Err(_) => None,
        },
        _ = close.notified() => {
            // Become a writer for a moment so the pending open returns.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path);
            let _ = opening.await;
            None
        }
    }
}
