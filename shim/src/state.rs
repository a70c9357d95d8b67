//! What the shim persists under `<state_dir>/<namespace>/<id>/state.json` so
//! that `containerd-shim-vxn-v2 delete` can clean up after a lost shim.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Persisted {
    pub domain: String,
    pub bundle: PathBuf,
    /// Set when the shim mounted the snapshot at `bundle/rootfs`.
    pub rootfs_mounted: bool,
    pub image_dir: PathBuf,
}

pub fn dir(state_root: &Path, namespace: &str, id: &str) -> PathBuf {
    state_root.join(namespace).join(id)
}

pub fn save(dir: &Path, p: &Persisted) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("state.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(p).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, dir.join("state.json"))
}

pub fn load(dir: &Path) -> Option<Persisted> {
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()
}
