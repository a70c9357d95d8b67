//! A container's rootfs as containerd's overlay snapshotter gives it: the
//! image's committed layers (`lowerdir=A:B:C`, immutable) and the container's
//! own active snapshot (`upperdir`, `workdir`). The layers become one
//! read-only image, built once per layer chain and shared ([`cache`]); the
//! container's writes go to a small filesystem of its own ([`upper`]).

pub mod cache;
pub mod gc;
pub mod upper;

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bumped whenever the image a key names would be built differently.
/// 2: keys name each layer directory's identity, not only its path.
pub const FORMAT_VERSION: u32 = 2;

/// The most layers a chain may have (overlayfs allows 500).
pub const MAX_LAYERS: usize = 500;

/// mount(2) takes one page of options.
pub const MAX_MOUNT_DATA: usize = 4000;

/// An overlay rootfs: its read-only layers, topmost first (overlayfs order),
/// and the container's writable directory, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    pub lower: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("an overlay rootfs without lowerdir")]
    NoLower,
    #[error("overlay option {0:?} is given twice")]
    Twice(String),
    #[error("overlay path {0:?} is not absolute and plain (no '..', '.', empty part or escape)")]
    BadPath(String),
    #[error("more than {MAX_LAYERS} layers")]
    TooMany,
}

/// A path vxn accepts from a mount option: absolute, normal components only,
/// none of the characters overlayfs or a mount's data split on or escape.
fn plain_path(s: &str) -> Result<PathBuf, ParseError> {
    let bad = || ParseError::BadPath(s.to_string());
    if s.is_empty() || s.contains([',', ':', '\\', '\n', '\0']) {
        return Err(bad());
    }
    let p = Path::new(s);
    if !p.is_absolute() || s.contains("//") || (s.len() > 1 && s.ends_with('/')) {
        return Err(bad());
    }
    if p.components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
        || s.split('/').skip(1).any(|c| c == "." || c == "..")
    {
        return Err(bad());
    }
    Ok(p.to_path_buf())
}

impl Layers {
    /// From an overlay mount's options (`lowerdir=`, `upperdir=`, `workdir=`,
    /// others ignored). None when the options are not an overlay with layers.
    pub fn from_overlay_options(options: &[String]) -> Result<Self, ParseError> {
        let (mut lower, mut upper) = (None, None);
        for o in options {
            let (slot, value) = match o.split_once('=') {
                Some(("lowerdir", v)) => (&mut lower, v),
                Some(("upperdir", v)) => (&mut upper, v),
                _ => continue,
            };
            if slot.is_some() {
                return Err(ParseError::Twice(o.clone()));
            }
            *slot = Some(value.to_string());
        }
        let lower = lower.ok_or(ParseError::NoLower)?;
        let mut dirs = Vec::new();
        for part in lower.split(':') {
            if dirs.len() == MAX_LAYERS {
                return Err(ParseError::TooMany);
            }
            dirs.push(plain_path(part)?);
        }
        Ok(Self {
            lower: dirs,
            upper: upper.as_deref().map(plain_path).transpose()?,
        })
    }

    /// Whether one overlay mount can name all the layers (mount(2) takes a
    /// page of options); a longer chain is left to the front-end's own mount.
    pub fn fit_one_mount(&self) -> bool {
        let len: usize = self.lower.iter().map(|p| p.as_os_str().len() + 1).sum();
        len + "lowerdir=".len() <= MAX_MOUNT_DATA
    }

    /// What the layers are now: each directory's identity, in chain order.
    pub fn identities(&self) -> std::io::Result<Vec<LayerId>> {
        self.lower.iter().map(|p| LayerId::of(p)).collect()
    }

    /// The image's cache key: the format and the layer chain, each layer by
    /// its path and its directory's identity (device, inode, birth). A
    /// committed snapshot never changes, and a snapshot made anew under a
    /// reused path (containerd's state reset, numbers counted again) is a new
    /// directory: it never gets the tree cached for the old one.
    pub fn key(&self) -> std::io::Result<String> {
        Ok(Self::key_of(&self.identities()?))
    }

    /// The key of a chain of identities (each field length-prefixed or fixed:
    /// no two chains encode alike).
    pub fn key_of(ids: &[LayerId]) -> String {
        let mut h = Sha256::new();
        h.update(b"vxn-layers\0");
        h.update(FORMAT_VERSION.to_be_bytes());
        h.update((ids.len() as u64).to_be_bytes());
        for id in ids {
            let b = id.path.as_bytes();
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
            h.update(id.dev.to_be_bytes());
            h.update(id.ino.to_be_bytes());
            h.update(id.born_ns.to_be_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One layer directory as it is: recorded with a cached image, compared
/// again before the image is given out and at each collection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerId {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// Birth time in ns (statx), or the change time where the filesystem
    /// keeps no birth time.
    pub born_ns: u128,
}

impl LayerId {
    pub fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path)?;
        if !m.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("layer {} is not a directory", path.display()),
            ));
        }
        let born_ns = match m.created() {
            Ok(t) => t
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            Err(_) => (m.ctime() as u128) * 1_000_000_000 + m.ctime_nsec() as u128,
        };
        Ok(Self {
            path: path.to_string_lossy().into_owned(),
            dev: m.dev(),
            ino: m.ino(),
            born_ns,
        })
    }

    /// Whether the directory at its path is still this one.
    pub fn holds(&self) -> bool {
        Self::of(Path::new(&self.path)).is_ok_and(|now| now == *self)
    }
}

/// A key as the cache names files: 64 lowercase hex digits, nothing else.
pub fn is_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_containerds_overlay_options() {
        let l = Layers::from_overlay_options(&opts(&[
            "index=off",
            "workdir=/s/3/work",
            "upperdir=/s/3/fs",
            "lowerdir=/s/2/fs:/s/1/fs",
        ]))
        .unwrap();
        assert_eq!(l.lower, vec![PathBuf::from("/s/2/fs"), "/s/1/fs".into()]);
        assert_eq!(l.upper, Some("/s/3/fs".into()));
        // A read-only view: layers, no upper.
        let l = Layers::from_overlay_options(&opts(&["lowerdir=/a:/b"])).unwrap();
        assert_eq!(l.upper, None);
    }

    #[test]
    fn refuses_hostile_options() {
        let bad = |v: &[&str]| Layers::from_overlay_options(&opts(v)).unwrap_err();
        assert_eq!(bad(&["upperdir=/u"]), ParseError::NoLower);
        assert!(matches!(
            bad(&["lowerdir=/a", "lowerdir=/b"]),
            ParseError::Twice(_)
        ));
        for lower in [
            "lowerdir=relative/fs",
            "lowerdir=/a/../etc",
            "lowerdir=/a/./b",
            "lowerdir=/a::/b",
            "lowerdir=",
            "lowerdir=/a\\:b",
            "lowerdir=/a,upperdir=/x",
            "lowerdir=/a//b",
            "lowerdir=/a/",
            "lowerdir=/a\nb",
        ] {
            assert!(matches!(bad(&[lower]), ParseError::BadPath(_)), "{lower}");
        }
        assert!(matches!(
            bad(&["lowerdir=/a", "upperdir=../u"]),
            ParseError::BadPath(_)
        ));
        let long = format!(
            "lowerdir={}",
            vec!["/a/long/snapshot/path/fs"; 200].join(":")
        );
        assert!(!Layers::from_overlay_options(&[long])
            .unwrap()
            .fit_one_mount());
        let many = format!("lowerdir={}", vec!["/l"; MAX_LAYERS + 1].join(":"));
        assert_eq!(
            Layers::from_overlay_options(&[many]).unwrap_err(),
            ParseError::TooMany
        );
    }

    #[test]
    fn the_key_names_the_chain_in_order_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let (pa, pb) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&pa).unwrap();
        std::fs::create_dir(&pb).unwrap();
        let layers = |lower: &str, upper: Option<&str>| {
            let mut o = vec![format!("lowerdir={lower}")];
            o.extend(upper.map(|u| format!("upperdir={u}")));
            Layers::from_overlay_options(&o).unwrap().key().unwrap()
        };
        let (a, b) = (pa.display().to_string(), pb.display().to_string());
        let ab = layers(&format!("{a}:{b}"), Some("/u1"));
        assert_eq!(ab, layers(&format!("{a}:{b}"), Some("/u2")));
        assert_ne!(ab, layers(&format!("{b}:{a}"), None));
        assert_ne!(ab, layers(&a, None));
        assert!(is_key(&ab));
        assert!(!is_key("../x") && !is_key(&ab.to_uppercase()));
        // A layer gone: no key. A layer made anew at the same path (containerd
        // reset, snapshot numbers reused): another key.
        std::fs::remove_dir(&pb).unwrap();
        let gone = Layers::from_overlay_options(&[format!("lowerdir={a}:{b}")]).unwrap();
        assert!(gone.key().is_err());
        // (another inode: a placeholder holds the old one's number)
        let _keep = tempfile::tempfile_in(t.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir(&pb).unwrap();
        assert_ne!(ab, layers(&format!("{a}:{b}"), None));
    }

    #[test]
    fn an_identity_holds_only_for_the_same_directory() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("l");
        std::fs::create_dir(&p).unwrap();
        let id = LayerId::of(&p).unwrap();
        assert!(id.holds());
        std::fs::remove_dir(&p).unwrap();
        assert!(!id.holds());
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir(&p).unwrap();
        assert!(!id.holds());
        std::fs::write(t.path().join("f"), "").unwrap();
        assert!(LayerId::of(&t.path().join("f")).is_err());
    }
}
