//! A process's stdio, as each front-end has it (the shim: containerd's fifos;
//! the runc CLI: the fds it was given), relayed to and from the agent's streams.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use vxn_wire::mux::{StreamReader, StreamWriter};

use crate::error::Result;
use crate::{HostStdio, StdioRequest};

/// The most one read of a process's input takes before it is sent on.
const INPUT_CHUNK: usize = 32 * 1024;

/// What a front-end gives the model for one process's stdio.
pub trait ProcessStdio: Send + Sync + 'static {
    /// Which streams the process gets.
    fn request(&self) -> StdioRequest;
    /// Start relaying. Called once the agent accepted the process (it must
    /// have its stdin stream open before anything is sent on it).
    fn attach(&self, host: HostStdio) -> Result<Relay>;
}

/// The running relay of one process: output copies and a way to end stdin.
#[derive(Debug)]
pub struct Relay {
    outputs: Vec<JoinHandle<()>>,
    close_stdin: Arc<Notify>,
}

impl Relay {
    /// `outputs` end when their stream does; `close_stdin` ends the stdin copy.
    pub fn new(outputs: Vec<JoinHandle<()>>, close_stdin: Arc<Notify>) -> Self {
        Self {
            outputs,
            close_stdin,
        }
    }

    pub fn stdin_closer(&self) -> Arc<Notify> {
        self.close_stdin.clone()
    }

    /// Wait until the output streams ended (the agent sends EOF before it
    /// reports an exit), bounded so a stuck client cannot hold an exit back.
    pub async fn wait_output(&mut self, limit: Duration) {
        let outputs = std::mem::take(&mut self.outputs);
        let _ = tokio::time::timeout(limit, async {
            for h in outputs {
                let _ = h.await;
            }
        })
        .await;
    }
}

impl Drop for Relay {
    /// A process that never ran (a failed Start, a task deleted while
    /// created) may still have a stdin relay waiting for a writer that never
    /// comes: release it, or it outlives the front-end.
    fn drop(&mut self) {
        self.close_stdin.notify_one();
    }
}

/// Where a process's input comes from (a fifo, a caller's fd, a terminal).
pub trait InputSource: AsyncRead + Unpin + Send + 'static {
    /// Reads what is there already, without waiting: the bytes a client wrote
    /// before it asked for stdin to be closed. `None`: nothing can be taken so.
    fn read_ready(&mut self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
}

/// A fifo: a non-blocking read takes what is in it.
impl InputSource for tokio::net::unix::pipe::Receiver {
    fn read_ready(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.try_read(buf).ok()
    }
}

/// A caller's fd (a file, a terminal): read on a blocking thread, so only what
/// an earlier read returned is ever "there already".
impl InputSource for tokio::fs::File {}

/// The guest's output to the front-end's writer, in order, each chunk written
/// (and flushed) before the next is taken. A reader that went away is not
/// waited for: the rest is drained so the guest never blocks on it.
pub async fn pump_output<W: AsyncWrite + Unpin>(mut from: StreamReader, to: W) {
    let mut sink = Some(to);
    while let Ok(Some(chunk)) = from.recv().await {
        let Some(w) = sink.as_mut() else { continue };
        let wrote = async {
            w.write_all(&chunk).await?;
            w.flush().await
        };
        if wrote.await.is_err() {
            sink = None;
        }
    }
}

/// The front-end's input to the guest until it ends (EOF, or a terminal hung
/// up: EIO) or `close` is notified (CloseIO, the process gone); what was
/// already written is forwarded first. Then the guest's stdin is closed.
pub async fn pump_input<R: InputSource>(mut from: R, to: StreamWriter, close: Arc<Notify>) {
    let mut buf = vec![0u8; INPUT_CHUNK];
    let send = |n: usize, buf: &[u8]| to.send(bytes::Bytes::copy_from_slice(&buf[..n]));
    loop {
        tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if send(n, &buf).await.is_err() {
                        return;
                    }
                }
            },
            _ = close.notified() => {
                while let Some(n) = from.read_ready(&mut buf) {
                    if n == 0 || send(n, &buf).await.is_err() {
                        break;
                    }
                }
                break;
            }
        }
    }
    to.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use tokio::net::unix::pipe;
    use vxn_wire::mux::{Incoming, Mux, Role};

    /// The host's and the agent's muxes over an in-memory link (their
    /// `Incoming`s kept: dropping one closes its side).
    fn muxes() -> ((Mux, Incoming), (Mux, Incoming)) {
        let (a, b) = tokio::io::duplex(1 << 16);
        (
            Mux::start(a, Default::default(), Role::Host),
            Mux::start(b, Default::default(), Role::Agent),
        )
    }

    fn pipe_pair() -> (pipe::Sender, pipe::Receiver) {
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        (
            pipe::Sender::from_owned_fd(w).unwrap(),
            pipe::Receiver::from_owned_fd(r).unwrap(),
        )
    }

    #[tokio::test]
    async fn input_written_before_close_is_forwarded_then_the_stream_ends() {
        let ((host, _hi), (agent, _ai)) = muxes();
        let mut guest_stdin = agent.open_reader(2).unwrap();
        let (mut w, r) = pipe_pair();
        w.write_all(b"already here").await.unwrap();
        r.readable().await.unwrap();
        let close = Arc::new(Notify::new());
        // CloseIO before the pump took anything: what was written still goes
        close.notify_one();
        pump_input(r, host.open_writer(2).unwrap(), close).await;
        let got = guest_stdin.recv().await.unwrap().unwrap();
        assert_eq!(&got[..], b"already here");
        assert_eq!(guest_stdin.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn output_reaches_the_writer_and_is_drained_once_its_reader_went_away() {
        let ((host, _hi), (agent, _ai)) = muxes();
        let guest_stdout = agent.open_writer(1).unwrap();
        let (w, mut r) = pipe_pair();
        let pump = tokio::spawn(pump_output(host.open_reader(1).unwrap(), w));
        guest_stdout
            .send(bytes::Bytes::from_static(b"hi"))
            .await
            .unwrap();
        let mut got = [0u8; 2];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        drop(r);
        // more than a pipe holds: the guest is never blocked on a gone reader
        for _ in 0..32 {
            let chunk = bytes::Bytes::from(vec![b'x'; 16 << 10]);
            guest_stdout.send(chunk).await.unwrap();
        }
        guest_stdout.close();
        tokio::time::timeout(Duration::from_secs(10), pump)
            .await
            .unwrap()
            .unwrap();
    }
}
