//! The read-only image cache: one EROFS image per layer chain,
//! `<dir>/<key>.erofs`, built once (`mkfs.erofs` of the layers merged by a
//! read-only overlay mount) and hard-linked into each container's image
//! directory that uses it. Everything about a key happens under its lock
//! (`<key>.lock`, flock), so concurrent creates of one image build it once
//! and the collector ([`super::gc`]) never removes an entry being taken.
//!
//! A container's use is recorded in `<key>.refs/<digest>` (its state
//! directory and its link): a reference counts only while both exist and
//! the link is still this entry, so a SIGKILLed shim's never pins an entry.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::{LayerId, Layers, MAX_MOUNT_DATA};
use crate::command::{self, CommandError};
use crate::storage::mounts::unmount_all;

/// mkfs.erofs reads every byte of the image: allow a slow disk, not forever.
const MKFS_TIMEOUT: Duration = Duration::from_secs(600);
/// A create waits this long for another one building the same image.
const LOCK_WAIT: Duration = Duration::from_secs(660);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("mkfs.erofs is not installed (apt-get install erofs-utils): it builds the read-only image of a layered rootfs")]
    NoMkfs,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {0} does not exist (or was made anew since it was read)")]
    MissingLayer(PathBuf),
    #[error("the layers' paths are too long for one overlay mount ({0} bytes)")]
    TooLong(usize),
    #[error("mkfs.erofs: {0}")]
    Mkfs(CommandError),
    #[error("timed out waiting for the lock of image {0}")]
    LockTimeout(String),
}

fn io(what: impl std::fmt::Display, p: &Path) -> impl FnOnce(std::io::Error) -> CacheError {
    let what = format!("{what} {}", p.display());
    move |source| CacheError::Io { what, source }
}

/// Where the cache is and how large it may grow (unused entries beyond are collected).
#[derive(Debug, Clone)]
pub struct ImageCache {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

/// An image taken for a container.
#[derive(Debug, Clone)]
pub struct Taken {
    pub bytes: u64,
    /// Built by this call (not found in the cache).
    pub built: bool,
}

/// A key's exclusive lock, released on drop.
pub struct KeyLock {
    _fd: OwnedFd,
}

impl KeyLock {
    fn open(path: &Path) -> Result<OwnedFd, CacheError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io("open", path))?;
        Ok(f.into())
    }

    fn try_take(fd: &OwnedFd) -> bool {
        // SAFETY: flock on an fd we own.
        unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    }

    /// Whether `fd` is still the file at `path`: the collector removes the
    /// lock file of a key with no entry (under the lock), so a lock taken on
    /// a file that is gone meanwhile is no lock; the taker opens anew.
    fn current(fd: &OwnedFd, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(dup) = fd.try_clone() else {
            return false;
        };
        let held = std::fs::File::from(dup).metadata();
        matches!((held, std::fs::metadata(path)), (Ok(h), Ok(p)) if h.dev() == p.dev() && h.ino() == p.ino())
    }

    /// Take the lock now or not at all.
    pub fn try_lock(path: &Path) -> Result<Option<Self>, CacheError> {
        let fd = Self::open(path)?;
        Ok((Self::try_take(&fd) && Self::current(&fd, path)).then_some(Self { _fd: fd }))
    }

    /// Wait for the lock (polling: a cancelled create stops waiting).
    pub async fn lock(path: &Path, key: &str) -> Result<Self, CacheError> {
        let t0 = Instant::now();
        loop {
            let fd = Self::open(path)?;
            while !Self::try_take(&fd) {
                if t0.elapsed() > LOCK_WAIT {
                    return Err(CacheError::LockTimeout(key.into()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if Self::current(&fd, path) {
                return Ok(Self { _fd: fd });
            }
        }
    }

    /// Remove the lock file while holding it (the collector, for a key with
    /// no entry); whoever waits on the old file opens anew (`current`).
    pub fn remove(self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }
}

/// The first layer that is not (or no longer) the directory it was.
fn missing(layers: &Layers) -> CacheError {
    let gone = layers
        .lower
        .iter()
        .find(|p| LayerId::of(p).is_err())
        .or(layers.lower.first())
        .cloned()
        .unwrap_or_default();
    CacheError::MissingLayer(gone)
}

/// A reference's file name: a digest of the link it stands for.
pub fn ref_name(link: &Path) -> String {
    let d = Sha256::digest(link.as_os_str().as_encoded_bytes());
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A directory mounted for the build: unmounted and removed on every path.
struct Merged {
    dir: PathBuf,
    mounted: bool,
}

impl Drop for Merged {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = unmount_all(&self.dir) {
                tracing::error!(dir = %self.dir.display(), error = %e, "layers not unmounted");
                return; // never remove what may still show the layers
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl ImageCache {
    pub fn new(dir: PathBuf, max_mib: u64) -> Self {
        Self {
            dir,
            max_bytes: max_mib << 20,
        }
    }

    pub fn entry(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.erofs"))
    }
    pub fn lock_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.lock"))
    }
    pub fn lowers_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.lowers"))
    }
    pub fn refs_dir(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.refs"))
    }
    fn merge_dir(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.merge"))
    }

    /// The image of `layers` hard-linked at `link` (the container's image
    /// directory; same filesystem as the cache), built if the cache has none,
    /// and referenced by `owner` (the container's state directory).
    pub async fn take(
        &self,
        layers: &Layers,
        link: &Path,
        owner: &Path,
    ) -> Result<Taken, CacheError> {
        std::fs::create_dir_all(&self.dir).map_err(io("mkdir", &self.dir))?;
        let ids = layers.identities().map_err(|_| missing(layers))?;
        let key = Layers::key_of(&ids);
        let _lock = KeyLock::lock(&self.lock_path(&key), &key).await?;
        let entry = self.entry(&key);
        // Given out only while the layers it was built from are still there.
        let built = !(entry.is_file() && self.recorded(&key).is_some_and(|r| r == ids));
        if built {
            self.build(layers, &key, &ids).await?;
        } else if !ids.iter().all(LayerId::holds) {
            return Err(missing(layers));
        }
        let refs = self.refs_dir(&key);
        std::fs::create_dir_all(&refs).map_err(io("mkdir", &refs))?;
        let reference = refs.join(ref_name(link));
        let text = format!("{}\n{}\n", owner.display(), link.display());
        std::fs::write(&reference, text).map_err(io("write", &reference))?;
        let _ = std::fs::remove_file(link);
        if let Err(e) = std::fs::hard_link(&entry, link) {
            let _ = std::fs::remove_file(&reference);
            return Err(io(
                format!(
                    "link {} (image_cache_dir must be on image_dir's filesystem) at",
                    entry.display()
                ),
                link,
            )(e));
        }
        // Most recently used last in line for collection.
        if let Ok(f) = std::fs::File::open(&entry) {
            let _ = f.set_modified(SystemTime::now());
        }
        let bytes = std::fs::metadata(&entry).map(|m| m.len()).unwrap_or(0);
        Ok(Taken { bytes, built })
    }

    /// The layer identities an entry was built from (its `.lowers`).
    pub fn recorded(&self, key: &str) -> Option<Vec<LayerId>> {
        let text = std::fs::read(self.lowers_path(key)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Build `<key>.erofs` (under the key's lock).
    async fn build(&self, layers: &Layers, key: &str, ids: &[LayerId]) -> Result<(), CacheError> {
        let t0 = Instant::now();
        for l in &layers.lower {
            if !l.is_dir() {
                return Err(CacheError::MissingLayer(l.clone()));
            }
        }
        let tmp = self.dir.join(format!("{key}.erofs.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut merged = None;
        // One layer is its own view; overlayfs wants two without an upper.
        let source = match layers.lower.as_slice() {
            [only] => only.clone(),
            lower => {
                let m = self.mount_merged(key, lower)?;
                let dir = m.dir.clone();
                merged = Some(m);
                dir
            }
        };
        let args: Vec<std::ffi::OsString> = vec![
            "--quiet".into(),
            "--preserve-mtime".into(),
            tmp.clone().into(),
            source.into(),
        ];
        let made = command::run("mkfs.erofs", &args, MKFS_TIMEOUT).await;
        drop(merged);
        match made {
            Ok(_) => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(match e {
                    CommandError::Spawn { source, .. }
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        CacheError::NoMkfs
                    }
                    e => CacheError::Mkfs(e),
                });
            }
        }
        // The layers must not have changed under the build.
        if !ids.iter().all(LayerId::holds) {
            let _ = std::fs::remove_file(&tmp);
            return Err(missing(layers));
        }
        let lowers = self.lowers_path(key);
        let json = serde_json::to_vec(ids).unwrap_or_default();
        let written = std::fs::write(&lowers, json)
            .map_err(io("write", &lowers))
            .and_then(|()| std::fs::rename(&tmp, self.entry(key)).map_err(io("rename", &tmp)));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        tracing::info!(
            key = %key,
            layers = layers.lower.len(),
            took_ms = t0.elapsed().as_millis() as u64,
            "timing: image built"
        );
        Ok(())
    }

    /// A read-only overlay of `lower` (topmost first): whiteouts and opaque
    /// directories applied by the kernel.
    fn mount_merged(&self, key: &str, lower: &[PathBuf]) -> Result<Merged, CacheError> {
        let joined: Vec<String> = lower
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let data = format!("lowerdir={}", joined.join(":"));
        if data.len() > MAX_MOUNT_DATA {
            return Err(CacheError::TooLong(data.len()));
        }
        let dir = self.merge_dir(key);
        // A leftover of a build that died: never remove through a mount.
        unmount_all(&dir).map_err(io("unmount", &dir))?;
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).map_err(io("mkdir", &dir))?;
        let mut m = Merged {
            dir,
            mounted: false,
        };
        use nix::mount::{mount, MsFlags};
        mount(
            Some("overlay"),
            &m.dir,
            Some("overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            Some(data.as_str()),
        )
        .map_err(|e| CacheError::Io {
            what: format!("mount the layers' overlay on {}", m.dir.display()),
            source: e.into(),
        })?;
        m.mounted = true;
        Ok(m)
    }
}
