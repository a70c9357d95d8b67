//! What pooled VMs leave in a directory of their own per VM (a share, a
//! writable layer) once nothing holds it: a claimant SIGKILLed before it
//! moved the thing into its container, an unmaking cut short.

use std::fs;
use std::path::{Path, PathBuf};

use super::store::{check_domain, PoolStore};
use crate::hypervisor::Hypervisor;

/// The entries of `root` named as pool VMs that no pool entry records (a
/// filler records its VM before it makes them) and whose VM is gone (a
/// claimant's, renamed, holds its own). At most 1024 looked at.
pub(super) async fn unheld(store: &PoolStore, hv: &dyn Hypervisor, root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(root) else {
        return vec![];
    };
    let recorded = store.recorded_domains();
    let mut found = vec![];
    for e in rd.take(1024).flatten() {
        let Some(name) = e.file_name().to_str().map(String::from) else {
            continue;
        };
        if check_domain(&name).is_err()
            || recorded.contains(&name)
            || hv.exists(&name).await.unwrap_or(true)
        {
            continue;
        }
        found.push(e.path());
    }
    found
}
