//! The `Shim` half of containerd-shim: the `start`, `delete` and serve actions.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::{api, Config as ShimConfig, Flags, StartOpts};
use containerd_shim_protos::protobuf::MessageField;
use vxn_runtime_core::rootfs::Ext4Image;
use vxn_runtime_core::vm::XenHypervisor;

use crate::config::Config;
use crate::events::Events;
use crate::instance::{timestamp, Teardown, VM_GONE_EXIT};
use crate::task::TaskService;
use crate::{logging, state};

pub struct Service {
    namespace: String,
    id: String,
    socket: String,
    bundle: String,
    cfg: Arc<Config>,
    exit: Arc<ExitSignal>,
}

fn exporter(cfg: &Config) -> Arc<Ext4Image> {
    Arc::new(Ext4Image {
        extra_mib: cfg.rootfs_extra_mib,
    })
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
        // One shim (and one VM) per container.
        let grouping = opts.id.clone();
        let address = spawn(opts, &grouping, Vec::new()).await?;
        // The serve path reads this to remove the socket when it exits.
        containerd_shim::asynchronous::util::write_str_to_file("address", &address).await?;
        Ok(address)
    }

    /// Run by containerd after a shim was lost: destroy the domain and
    /// remove everything the lost shim persisted.
    async fn delete_shim(&mut self) -> containerd_shim::Result<api::DeleteResponse> {
        let dir = state::dir(&self.cfg.state_dir, &self.namespace, &self.id);
        match state::load(&dir) {
            Some(p) => {
                let t = Teardown {
                    domain: p.domain,
                    bundle: p.bundle,
                    rootfs_mounted: p.rootfs_mounted,
                    image_dir: p.image_dir,
                    state_dir: dir,
                };
                t.run(&XenHypervisor::default(), exporter(&self.cfg).as_ref())
                    .await;
            }
            None => {
                // Nothing persisted: still make sure no domain of that name lives on.
                let domain = vxn_runtime_core::xen::domain_name(&self.namespace, &self.id);
                let _ = vxn_runtime_core::xen::Xl::default().destroy(&domain).await;
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        // A killed shim left its ttrpc socket; start_shim wrote its address into the bundle.
        let bundle = if self.bundle.is_empty() {
            "."
        } else {
            &self.bundle
        };
        if let Ok(address) = std::fs::read_to_string(PathBuf::from(bundle).join("address")) {
            remove_socket(address.trim());
        }
        Ok(api::DeleteResponse {
            exit_status: VM_GONE_EXIT,
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
        TaskService::new(
            self.namespace.clone(),
            self.cfg.clone(),
            Arc::new(XenHypervisor::default()),
            exporter(&self.cfg),
            Events::start(publisher, self.namespace.clone()),
            self.exit.clone(),
        )
    }
}

/// Remove a shim socket file given its `unix://` address (abstract sockets have no file).
fn remove_socket(address: &str) {
    if let Some(path) = address.strip_prefix("unix://") {
        if path.starts_with('/') {
            let _ = std::fs::remove_file(path);
        }
    }
}
