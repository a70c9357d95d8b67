//! The `delete` action: containerd runs it after a shim was lost, and (for
//! shims that answered a plain address) after every Delete.

use std::path::PathBuf;

use containerd_shim::{api, Flags};
use containerd_shim_protos::protobuf::{Message, MessageField};
use vxn_runtime_core::model::process::VM_GONE_CODE;
use vxn_runtime_core::names::ContainerName;

use crate::events::timestamp;
use crate::start::{serving, socket_file};

/// Destroy the domain and remove everything the lost shim made, from its
/// record and, where that is gone, by name. Errs while anything is left.
/// The answer (a DeleteResponse) is written on stdout.
pub async fn run(flags: &Flags) -> Result<(), String> {
    // An invalid name never had anything made for it.
    let name = ContainerName::new(&flags.namespace, &flags.id).map_err(|e| e.to_string())?;
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().unwrap_or_default()
    } else {
        PathBuf::from(&flags.bundle)
    };
    // A killed shim left its ttrpc socket; start wrote its address into the
    // bundle. Removed first: containerd may kill this action before the teardown ends.
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        remove_stale_socket(address.trim());
    }
    // In a process of its own: containerd kills this action after ~5 s.
    crate::reap::teardown_detached(&name, &bundle).await?;
    let response = api::DeleteResponse {
        exit_status: VM_GONE_CODE,
        exited_at: MessageField::some(timestamp(std::time::SystemTime::now())),
        ..Default::default()
    };
    let bytes = response.write_to_bytes().map_err(|e| e.to_string())?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| format!("write stdout: {e}"))
}

/// Remove a lost shim's socket file, unless a shim still listens there: a
/// pod's container names its pod's shim, which outlives it.
fn remove_stale_socket(address: &str) {
    if let Some(path) = socket_file(address) {
        if !serving(address) {
            let _ = std::fs::remove_file(path);
        }
    }
}
