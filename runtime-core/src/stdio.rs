//! A process's stdio, as each front-end has it (the shim: containerd's fifos;
//! the runc CLI: the fds it was given), relayed to and from the agent's streams.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::{HostStdio, StdioRequest};

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
