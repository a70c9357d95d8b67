//! The serving shim (no action on the command line): the ttrpc Task service
//! on the socket `start` chose, under both names containerd uses for it:
//! `containerd.task.v2.Task` (containerd 1.6/1.7, and 2.x for shims that
//! answer a plain address) and `containerd.task.v3.Task` (2.x, shim version
//! 3). The two protos differ only in their package name.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::Flags;
use containerd_shim_protos::shim_async::{create_task, Task};
use containerd_shim_protos::ttrpc::r#async::transport::Listener;
use containerd_shim_protos::ttrpc::r#async::{Server, Service};
use vxn_runtime_core::config::Config;

use crate::events::Events;
use crate::logging;
use crate::start::{serving, socket_file, TTRPC_ADDRESS_ENV};
use crate::task::TaskService;

pub const TASK_V2: &str = "containerd.task.v2.Task";
pub const TASK_V3: &str = "containerd.task.v3.Task";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serve: -socket is required")]
    NoSocket,
    #[error("serve: ${TTRPC_ADDRESS_ENV} is not set")]
    NoTtrpcAddress,
    #[error("serve: {what}: {detail}")]
    Failed { what: &'static str, detail: String },
}

fn failed(what: &'static str) -> impl FnOnce(String) -> ServeError {
    move |detail| ServeError::Failed { what, detail }
}

/// Both names of the Task service, one implementation behind them.
pub fn task_services(task: Arc<dyn Task + Send + Sync>) -> HashMap<String, Service> {
    let mut services = create_task(task.clone());
    if let Some(v2) = create_task(task).remove(TASK_V2) {
        services.insert(TASK_V3.to_string(), v2);
    }
    services
}

pub async fn run(flags: &Flags) -> Result<(), ServeError> {
    // A config that cannot be read fails every Create with its error: never
    // containers run on defaults the administrator did not choose.
    let (cfg, bad_config) = match Config::load() {
        Ok(cfg) => (cfg, None),
        Err(e) => (Config::default(), Some(e)),
    };
    logging::init(&flags.namespace, &flags.id, &cfg.log_level, flags.debug);
    if flags.socket.is_empty() {
        return Err(ServeError::NoSocket);
    }
    let ttrpc_address = std::env::var(TTRPC_ADDRESS_ENV).map_err(|_| ServeError::NoTtrpcAddress)?;
    ignore_termination_signals();
    let Some(listener) = listen(&flags.socket)? else {
        // Another shim of this group listens already (a race of two starts).
        close_stdout();
        return Ok(());
    };
    let cfg = Arc::new(cfg);
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .map_err(|e| failed("connect to containerd's events")(e.to_string()))?;
    let exit = Arc::new(ExitSignal::default());
    let platform = match bad_config {
        Some(e) => Err(e),
        None => vxn_runtime_core::platform::build(&cfg)
            .map_err(|e| format!("{}: {e}", Config::path().display())),
    };
    if let Err(e) = &platform {
        tracing::error!(error = %e, "no VM backend: every Create will fail");
    }
    let task = TaskService::new(
        flags.namespace.clone(),
        cfg.clone(),
        platform,
        Events::start(publisher, flags.namespace.clone()),
        exit.clone(),
    );
    let listener =
        Listener::try_from(listener).map_err(|e| failed("ttrpc listener")(e.to_string()))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(task_services(Arc::new(task)));
    server
        .start()
        .await
        .map_err(|e| failed("start the ttrpc server")(e.to_string()))?;
    // `start` waits for this: containerd may connect now.
    close_stdout();
    tracing::info!("serving task API v2 and v3");
    exit.wait().await;
    tracing::info!("shutting down");
    let _ = server.shutdown().await;
    if let Some(path) = socket_file(&flags.socket) {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Bind the shim socket; None when a live shim holds it already. A socket
/// file nobody answers on is a dead shim's: removed and bound again.
fn listen(address: &str) -> Result<Option<std::os::unix::net::UnixListener>, ServeError> {
    let path = socket_file(address)
        .ok_or_else(|| failed("socket")(format!("{address:?} is not a unix:// path")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed("socket directory")(e.to_string()))?;
    }
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if serving(address) {
                return Ok(None);
            }
            let _ = std::fs::remove_file(path);
            std::os::unix::net::UnixListener::bind(path)
                .map(Some)
                .map_err(|e| failed("bind the socket")(e.to_string()))
        }
        Err(e) => Err(failed("bind the socket")(e.to_string())),
    }
}

/// Tell `start` we listen: our stdout is its pipe; point it at stderr
/// (containerd's log) so the pipe closes.
fn close_stdout() {
    use std::os::fd::AsRawFd;
    let _ = nix::unistd::dup2(std::io::stderr().as_raw_fd(), std::io::stdout().as_raw_fd());
}

/// containerd ends a shim with Shutdown (or SIGKILL); SIGTERM and SIGINT
/// from a terminal or a session's end must not take running VMs' shim down,
/// and SIGPIPE (a reader gone from a fifo) must not kill it.
fn ignore_termination_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::pipe(),
    ] {
        if let Ok(mut s) = signal(kind) {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    tracing::debug!(signal = kind.as_raw_value(), "signal ignored");
                }
            });
        }
    }
}
