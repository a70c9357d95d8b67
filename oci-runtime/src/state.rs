//! Where a container lives under `--root`: `<root>/<id>/state.json` (what
//! `state` reports once the keeper is gone), and the name of its keeper's
//! control socket. The model's own record (VM, image, lease) is runtime-core's,
//! under (namespace, id): the namespace is this root's, so two roots (Docker's
//! and Podman's) never share a domain name or a state directory.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vxn_runtime_core::names::ContainerName;

use crate::error::{Error, Result};

const STATE_FILE: &str = "state.json";

/// One container's place under the root.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub name: ContainerName,
    pub dir: PathBuf,
}

/// What `state` says of a container without asking its keeper.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    /// The keeper's pid: the process that stands for the container's init.
    pub pid: u32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339, as runc reports it.
    pub created: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The model namespace of a root: `oci-` and a digest of its path.
pub fn namespace_of(root: &Path) -> String {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
    format!("oci-{}", &hex(&digest)[..8])
}

impl ContainerDir {
    pub fn new(root: &Path, id: &str) -> Result<Self> {
        let name = ContainerName::new(&namespace_of(root), id)?;
        Ok(Self {
            dir: root.join(id),
            name,
        })
    }

    pub fn id(&self) -> &str {
        self.name.id()
    }

    /// The keeper's control socket: abstract, so a SIGKILLed keeper leaves no
    /// file behind, and its name has a fixed length whatever the root's is.
    /// The keeper checks each peer's uid.
    pub fn socket(&self) -> Result<SocketAddr> {
        use std::os::linux::net::SocketAddrExt;
        let digest = Sha256::digest(self.dir.as_os_str().as_encoded_bytes());
        let name = format!("vxn-oci-runtime/{}", &hex(&digest)[..32]);
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(Error::io("control socket name"))
    }

    pub fn exists(&self) -> bool {
        self.dir.join(STATE_FILE).exists()
    }

    pub fn load(&self) -> Result<Saved> {
        let path = self.dir.join(STATE_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchContainer(self.id().into()))
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()))(e)),
        };
        serde_json::from_slice(&text).map_err(|e| Error::Keeper(format!("{}: {e}", path.display())))
    }

    /// Write state.json whole (aside, then renamed over).
    pub fn save(&self, s: &Saved) -> Result<()> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(".state.json.tmp");
        let text = serde_json::to_vec(s).map_err(|e| Error::Keeper(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(Error::io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(Error::io(format!("write {}", path.display())))
    }

    /// Claim the directory for a new container: fails if the id is taken.
    pub fn claim(&self) -> Result<()> {
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("mkdir {}", parent.display())))?;
        }
        match std::fs::create_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Core(vxn_runtime_core::Error::AlreadyExists(
                    format!("container {} already exists", self.id()),
                )))
            }
            Err(e) => Err(Error::io(format!("mkdir {}", self.dir.display()))(e)),
        }
    }

    /// The name of the network namespace the runtime makes for this
    /// container (`network::OwnNetns`): its domain's, so `delete` finds it
    /// without any record.
    pub fn netns_name(&self) -> String {
        self.name.domain()
    }

    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", self.dir.display()))(e)),
        }
    }
}

/// Write a pid file as runc does: no newline, renamed into place whole.
/// Never through a symlink: the aside file is made anew (O_EXCL, O_NOFOLLOW)
/// and renamed over the path (rename replaces a link, never follows it).
pub fn write_pid_file(path: &Path, pid: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("vxn-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(Error::io(format!("pid file {}", tmp.display())))?;
    write!(f, "{pid}").map_err(Error::io(format!("pid file {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!("pid file {}", path.display())))
}

/// RFC 3339 in UTC with nanoseconds, as Go's time.RFC3339Nano prints it.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pid_file_never_writes_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let path = d.path().join("pid");
        // Planted at the aside name and at the pid file itself.
        std::os::unix::fs::symlink(&victim, path.with_extension("vxn-tmp")).unwrap();
        super::write_pid_file(&path, 42).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "42");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        super::write_pid_file(&path, 43).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 5);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.000000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn roots_are_namespaces_and_ids_are_checked() {
        let a = ContainerDir::new(Path::new("/run/a"), "c1").unwrap();
        let b = ContainerDir::new(Path::new("/run/b"), "c1").unwrap();
        assert_ne!(a.name.domain(), b.name.domain());
        use std::os::linux::net::SocketAddrExt;
        let (sa, sb) = (a.socket().unwrap(), b.socket().unwrap());
        assert_ne!(sa.as_abstract_name(), sb.as_abstract_name());
        assert!(ContainerDir::new(Path::new("/run/a"), "../x").is_err());
        assert!(ContainerDir::new(Path::new("/run/a"), "").is_err());
    }

    #[test]
    fn a_taken_id_cannot_be_claimed_twice() {
        let root = tempfile::tempdir().unwrap();
        let c = ContainerDir::new(root.path(), "x").unwrap();
        c.claim().unwrap();
        assert!(c.claim().is_err());
        c.remove().unwrap();
        c.claim().unwrap();
    }
}
