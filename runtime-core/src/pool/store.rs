//! The warm pool's records: which booted VMs of a shape are ready,
//! which are being made, and the claim of one by a container.
//!
//! `<state_dir>/pool/<shape>/ready/<domain>.json` is a VM that may be claimed;
//! `.../filling/<domain>.json` one being made (its filler holds the shape's
//! lock). A claim is one rename(2) of a ready entry into the claiming
//! container's state directory (same file system: both under `state_dir`):
//! atomic, so two shims never get the same VM, and recorded the instant it is
//! made, so a shim SIGKILLed right after still leaves the VM named in the
//! state its `delete` action tears down.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::names::{DOMAIN_PREFIX, MAX_DOMAIN_NAME};

/// A claim in a container's state directory.
pub const CLAIM_FILE: &str = "pooled.json";
/// Entries looked at per listing: a pool is small; a directory flooded by
/// anything else is not read to its end.
const MAX_ENTRIES: usize = 1024;
/// An entry is a few hundred bytes; anything larger is not ours.
const MAX_ENTRY_BYTES: u64 = 4096;
/// Pool VMs are named `vxn--pool-...`: a container's domain is
/// `vxn-<namespace>-...` and a namespace starts with a letter or digit, so no
/// container can be given a pool VM's name.
pub const POOL_DOMAIN_PREFIX: &str = "vxn--pool-";

/// What makes pooled VMs interchangeable: a VM of one shape serves any
/// container whose kernel is the shape's and whose size fits its maxima.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline_extra: String,
    /// What the VM boots with (the floor); a claim grows it within the maxima.
    pub boot_memory_mib: u64,
    pub max_memory_mib: u64,
    pub max_vcpus: u32,
    /// The VM has a 9p share, empty until a claim (a pod's VM: Xen's p9 needs
    /// its QEMU from the VM's start, so a share cannot be hot-plugged).
    #[serde(default)]
    pub share: bool,
    /// The VM has a blank writable layer of this many MiB attached (xvdc),
    /// which a claimant whose own would be blank takes over (one disk less
    /// to make and plug in at the claim). Absent from the key when None, as
    /// shapes recorded before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_mib: Option<u64>,
}

impl Shape {
    /// The shape's directory name: a digest of all of it.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(self).unwrap_or_default());
        h.finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether a container of this size runs in a VM of this shape.
    pub fn fits(&self, memory_mib: u64, vcpus: u32) -> bool {
        memory_mib <= self.max_memory_mib && vcpus >= 1 && vcpus <= self.max_vcpus
    }

    /// A new pool VM's name: the shape's key and `unique` (hex).
    pub fn domain_name(&self, unique: u64) -> String {
        let name = format!("{POOL_DOMAIN_PREFIX}{}-{unique:016x}", self.key());
        debug_assert!(name.len() <= MAX_DOMAIN_NAME && name.starts_with(DOMAIN_PREFIX));
        name
    }
}

/// One pooled VM, as its entry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pooled {
    pub domain: String,
    pub shape: Shape,
    /// The VM waits running, not paused: its claimant plugs the container's
    /// devices in while the guest connects them (an entry written before
    /// pooled VMs ran has none: paused).
    #[serde(default)]
    pub running: bool,
    /// The disk of its blank writable layer (its shape's `upper_mib`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_disk: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolStoreError {
    #[error("pool entry {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pool domain name {0:?} is not a pool VM's")]
    BadName(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PoolStoreError + '_ {
    move |source| PoolStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Only names this pool gives: the prefix, then `[0-9a-f-]`.
pub(crate) fn check_domain(domain: &str) -> Result<(), PoolStoreError> {
    let ok = domain.len() <= MAX_DOMAIN_NAME
        && domain.strip_prefix(POOL_DOMAIN_PREFIX).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(PoolStoreError::BadName(domain.into()))
    }
}

/// Read an entry, bounded; `None` for anything that is not one.
fn read_entry(path: &Path) -> Option<Pooled> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_ENTRY_BYTES {
        return None;
    }
    let p: Pooled = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    check_domain(&p.domain).ok()?;
    // the file's name is the domain's: an entry cannot name another VM
    (path.file_name()? == format!("{}.json", p.domain).as_str()).then_some(p)
}

/// Write `p` as `dir/<domain>.json` whole or not at all.
fn write_entry(dir: &Path, p: &Pooled) -> Result<PathBuf, PoolStoreError> {
    check_domain(&p.domain)?;
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let path = dir.join(format!("{}.json", p.domain));
    let tmp = dir.join(format!(".{}.tmp", p.domain));
    let body = serde_json::to_vec(p).unwrap_or_default();
    let mut f = fs::File::create(&tmp).map_err(io_at(&tmp))?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .map_err(io_at(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    Ok(path)
}

/// The entries of `dir`, sorted by name, at most [`MAX_ENTRIES`] looked at.
fn entries(dir: &Path) -> Vec<(PathBuf, Pooled)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return vec![];
    };
    let mut v: Vec<(PathBuf, Pooled)> = rd
        .take(MAX_ENTRIES)
        .filter_map(|e| {
            let path = e.ok()?.path();
            let p = read_entry(&path)?;
            Some((path, p))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The pool's directory under a state root, and where its VMs' shares are.
#[derive(Debug, Clone)]
pub struct PoolStore {
    root: PathBuf,
    share_root: PathBuf,
    upper_root: PathBuf,
}

impl PoolStore {
    /// Shares under the state root too (tests; `Config::pool_store` puts
    /// them where the containers' shares are, so a claim renames one).
    pub fn under(state_root: &Path) -> Self {
        Self {
            root: state_root.join("pool"),
            share_root: state_root.join("pool-shares"),
            upper_root: state_root.join("pool-uppers"),
        }
    }

    /// The pooled VMs' writable layers in `dir`, on the file system of the
    /// containers' image directories (a claim renames one into place).
    pub fn with_upper_root(self, dir: PathBuf) -> Self {
        Self {
            upper_root: dir,
            ..self
        }
    }

    pub fn upper_root(&self) -> &Path {
        &self.upper_root
    }

    /// The directory of a pooled VM's writable layer, when its shape has one
    /// (named by its domain: an entry names no path).
    pub fn upper_dir_of(&self, p: &Pooled) -> Option<PathBuf> {
        p.shape
            .upper_mib
            .is_some()
            .then(|| self.upper_root.join(&p.domain))
    }

    /// The pooled VMs' shares in `dir`, on the file system of the shares
    /// they become (a claim renames one into place).
    pub fn with_share_root(self, dir: PathBuf) -> Self {
        Self {
            share_root: dir,
            ..self
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn share_root(&self) -> &Path {
        &self.share_root
    }

    /// The share of a pooled VM whose shape has one (named by its domain: an
    /// entry names no path).
    pub fn share_of(&self, p: &Pooled) -> Option<PathBuf> {
        p.shape.share.then(|| self.share_root.join(&p.domain))
    }

    /// Every shape with a VM ready or being made (an entry whose shape is
    /// not its directory's is not one).
    pub fn shapes(&self) -> Vec<Shape> {
        let Ok(rd) = fs::read_dir(&self.root) else {
            return vec![];
        };
        let mut shapes: Vec<Shape> = rd
            .take(MAX_ENTRIES)
            .flatten()
            .filter_map(|d| {
                let key = d.file_name().into_string().ok()?;
                ["ready", "filling"].iter().find_map(|sub| {
                    entries(&d.path().join(sub))
                        .into_iter()
                        .map(|(_, p)| p.shape)
                        .find(|s| s.key() == key)
                })
            })
            .collect();
        shapes.sort_by_key(Shape::key);
        shapes
    }

    pub fn shape_dir(&self, shape: &Shape) -> PathBuf {
        self.root.join(shape.key())
    }

    fn ready_dir(&self, shape: &Shape) -> PathBuf {
        self.shape_dir(shape).join("ready")
    }

    fn filling_dir(&self, shape: &Shape) -> PathBuf {
        self.shape_dir(shape).join("filling")
    }

    /// Record a VM before it is made (its filler's undo, and a drain's, find it).
    pub fn begin_fill(&self, p: &Pooled) -> Result<(), PoolStoreError> {
        write_entry(&self.filling_dir(&p.shape), p).map(drop)
    }

    /// The VM is booted and idle: from now on it may be claimed.
    pub fn ready(&self, p: &Pooled) -> Result<(), PoolStoreError> {
        let from = self
            .filling_dir(&p.shape)
            .join(format!("{}.json", p.domain));
        let dir = self.ready_dir(&p.shape);
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let to = dir.join(format!("{}.json", p.domain));
        fs::rename(&from, &to).map_err(io_at(&from))
    }

    /// Forget a VM being made (after it was destroyed, or never made).
    pub fn forget_fill(&self, p: &Pooled) {
        let _ = fs::remove_file(
            self.filling_dir(&p.shape)
                .join(format!("{}.json", p.domain)),
        );
    }

    /// The VMs of this shape that may be claimed now.
    pub fn ready_list(&self, shape: &Shape) -> Vec<Pooled> {
        entries(&self.ready_dir(shape))
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// The VMs of this shape being made.
    pub fn filling_list(&self, shape: &Shape) -> Vec<Pooled> {
        entries(&self.filling_dir(shape))
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// Claim one ready VM of this shape into `state_dir` (a container's):
    /// `None` when there is none left. An entry another claimant took first is
    /// skipped; the claim is in `state_dir` the moment this returns it.
    /// A state directory holds one claim at most: a second is refused, and
    /// the VM stays in the pool.
    pub fn claim(&self, shape: &Shape, state_dir: &Path) -> Result<Option<Pooled>, PoolStoreError> {
        use nix::fcntl::{renameat2, RenameFlags};
        let to = state_dir.join(CLAIM_FILE);
        for (path, p) in entries(&self.ready_dir(shape)) {
            if p.shape != *shape {
                continue;
            }
            match renameat2(None, &path, None, &to, RenameFlags::RENAME_NOREPLACE) {
                Ok(()) => return Ok(Some(p)),
                // taken by another claimant between the listing and now
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(io_at(&to)(e.into())),
            }
        }
        Ok(None)
    }

    /// The domains of every ready or half-made VM of every shape.
    pub fn recorded_domains(&self) -> std::collections::HashSet<String> {
        let Ok(shapes) = fs::read_dir(&self.root) else {
            return Default::default();
        };
        shapes
            .take(MAX_ENTRIES)
            .flatten()
            .flat_map(|d| {
                ["ready", "filling"]
                    .into_iter()
                    .flat_map(move |sub| entries(&d.path().join(sub)))
            })
            .map(|(_, p)| p.domain)
            .collect()
    }

    /// Take every ready VM of every shape out of the pool, into `dir` (a
    /// drain's own), so no claimant gets one while they are destroyed.
    pub fn take_all(&self, dir: &Path) -> Result<Vec<Pooled>, PoolStoreError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let Ok(shapes) = fs::read_dir(&self.root) else {
            return Ok(vec![]);
        };
        let mut taken = vec![];
        for shape in shapes.take(MAX_ENTRIES).flatten() {
            for (path, p) in entries(&shape.path().join("ready")) {
                let to = dir.join(format!("{}.json", p.domain));
                match fs::rename(&path, &to) {
                    Ok(()) => taken.push(p),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_at(&path)(e)),
                }
            }
        }
        Ok(taken)
    }
}

/// The entries in `dir` (a drain's own), bounded and checked like the pool's.
pub fn entries_in(dir: &Path) -> Vec<Pooled> {
    entries(dir).into_iter().map(|(_, p)| p).collect()
}

/// The pooled VM a container claimed, from its state directory.
pub fn claimed(state_dir: &Path) -> Option<Pooled> {
    let path = state_dir.join(CLAIM_FILE);
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > MAX_ENTRY_BYTES {
        return None;
    }
    let p: Pooled = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
    check_domain(&p.domain).ok().map(|()| p)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
