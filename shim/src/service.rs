//! The `Shim` half of containerd-shim: the `start`, `delete` and serve actions.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::{api, Config as ShimConfig, Flags, StartOpts};
use containerd_shim_protos::protobuf::MessageField;
use vxn_runtime_core::config::Config;
use vxn_runtime_core::names::ContainerName;
use vxn_runtime_core::oci;
use vxn_runtime_core::pod::Role;
use vxn_runtime_core::process::VM_GONE_CODE;

use crate::events::{timestamp, Events};
use crate::logging;
use crate::task::TaskService;

pub struct Service {
    namespace: String,
    id: String,
    socket: String,
    bundle: String,
    cfg: Arc<Config>,
    exit: Arc<ExitSignal>,
}

pub use vxn_runtime_core::config::Platform;

fn other(e: impl std::fmt::Display) -> containerd_shim::Error {
    containerd_shim::Error::Other(e.to_string())
}

#[async_trait]
impl Shim for Service {
    type T = TaskService;

    async fn new(_runtime_id: &str, flags: &Flags, _config: &mut ShimConfig) -> Self {
        let cfg = Config::load().unwrap_or_else(|e| {
            eprintln!("containerd-shim-vxn-v2: {e}; using defaults");
            Config::default()
        });
        if flags.action.is_empty() {
            logging::init(&flags.namespace, &flags.id, &cfg.log_level, flags.debug);
        }
        Self {
            namespace: flags.namespace.clone(),
            id: flags.id.clone(),
            socket: flags.socket.clone(),
            bundle: flags.bundle.clone(),
            cfg: Arc::new(cfg),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // One shim per VM: a container of its own, or a CRI pod's sandbox and
        // its containers (as runc's shim groups by sandbox id). For a pod's
        // container, spawn finds the sandbox's shim listening and returns its address.
        let grouping = shim_group(&opts.id);
        let address = spawn(opts, &grouping, Vec::new()).await?;
        // The serve path reads this to remove the socket when it exits.
        containerd_shim::asynchronous::util::write_str_to_file("address", &address).await?;
        Ok(address)
    }

    /// Run by containerd after a shim was lost (and after every Delete):
    /// destroy the domain and remove everything the lost shim made, from its
    /// record and, where that is gone, by name. Errs while anything is left.
    async fn delete_shim(&mut self) -> containerd_shim::Result<api::DeleteResponse> {
        // An invalid name never had anything made for it.
        let name = ContainerName::new(&self.namespace, &self.id).map_err(other)?;
        let bundle = if self.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&self.bundle)
        };
        // A killed shim left its ttrpc socket; start_shim wrote its address into the
        // bundle. Removed first: containerd may kill this action before the teardown ends.
        if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
            remove_stale_socket(address.trim());
        }
        // In a process of its own: containerd kills this action after ~5 s.
        crate::reap::teardown_detached(&name, &bundle)
            .await
            .map_err(other)?;
        Ok(api::DeleteResponse {
            exit_status: VM_GONE_CODE,
            exited_at: MessageField::some(timestamp(std::time::SystemTime::now())),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
        // containerd-shim 0.11 can leave the socket behind; never leak it.
        remove_socket(&self.socket);
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let platform = self.cfg.platform();
        if let Err(e) = &platform {
            tracing::error!(error = %e, "no VM backend: every Create will fail");
        }
        TaskService::new(
            self.namespace.clone(),
            self.cfg.clone(),
            platform,
            Events::start(publisher, self.namespace.clone()),
            self.exit.clone(),
        )
    }
}

/// Which shim serves the container whose bundle is the current directory.
fn shim_group(id: &str) -> String {
    let bundle = std::env::current_dir().unwrap_or_default();
    match oci::load(&bundle).and_then(|spec| Role::of(&spec.annotations)) {
        Ok(Role::PodMember { sandbox_id }) => sandbox_id,
        _ => id.to_string(),
    }
}

/// The socket file of a `unix://` address (abstract sockets have none).
fn socket_file(address: &str) -> Option<&str> {
    address
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
}

/// Remove a shim socket file given its address.
fn remove_socket(address: &str) {
    if let Some(path) = socket_file(address) {
        let _ = std::fs::remove_file(path);
    }
}

/// Remove a lost shim's socket file, unless a shim still listens there: a
/// pod's container names its pod's shim, which outlives it.
fn remove_stale_socket(address: &str) {
    if let Some(path) = socket_file(address) {
        if std::os::unix::net::UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
    }
}
