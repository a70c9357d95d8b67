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
pub const FORMAT_VERSION: u32 = 1;

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

    /// The image's cache key: the format and the layer chain, each path
    /// length-prefixed (no two chains encode alike).
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"vxn-layers\0");
        h.update(FORMAT_VERSION.to_be_bytes());
        h.update((self.lower.len() as u64).to_be_bytes());
        for p in &self.lower {
            let b = p.as_os_str().as_encoded_bytes();
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
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
        let a = Layers::from_overlay_options(&opts(&["lowerdir=/a:/b", "upperdir=/u1"])).unwrap();
        let b = Layers::from_overlay_options(&opts(&["lowerdir=/a:/b", "upperdir=/u2"])).unwrap();
        let c = Layers::from_overlay_options(&opts(&["lowerdir=/b:/a"])).unwrap();
        let d = Layers::from_overlay_options(&opts(&["lowerdir=/a"])).unwrap();
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        assert_ne!(a.key(), d.key());
        assert!(is_key(&a.key()));
        assert!(!is_key("../x") && !is_key(&a.key().to_uppercase()));
    }
}
