//! Names of a container's host resources, derived from (namespace, id).
//!
//! containerd namespaces are tenants: every distinct (namespace, id) pair must
//! map to distinct domain names and directories, or one tenant's failed create
//! could tear down another's VM. Both parts are validated as single, boring
//! path components before any path or name is built from them.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Xen's limit on domain names.
pub const MAX_DOMAIN_NAME: usize = 64;
/// containerd allows 76; leave room without allowing absurd paths.
pub const MAX_COMPONENT: usize = 128;
/// Every vxn domain name starts with this.
pub const DOMAIN_PREFIX: &str = "vxn-";
/// Hex digits of the (namespace, id) digest at the end of a domain name.
const DIGEST_HEX: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: use 1 to {MAX_COMPONENT} of A-Z a-z 0-9 . _ -, starting with a letter or digit")]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
}

/// A validated (namespace, id) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerName {
    namespace: String,
    id: String,
}

/// A single path component: never empty, `.`, `..`, or containing `/`.
pub fn validate_component(what: &'static str, value: &str) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_COMPONENT
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            value: value.chars().take(MAX_COMPONENT + 8).collect(),
        })
    }
}

impl ContainerName {
    pub fn new(namespace: &str, id: &str) -> Result<Self, NameError> {
        validate_component("namespace", namespace)?;
        validate_component("container id", id)?;
        Ok(Self {
            namespace: namespace.into(),
            id: id.into(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `root/<namespace>/<id>`: distinct pairs get distinct directories.
    pub fn dir_under(&self, root: &Path) -> PathBuf {
        root.join(&self.namespace).join(&self.id)
    }

    /// The domain name: `vxn-<namespace>-<id>` cut to fit, then a digest of
    /// the exact pair. `-` may appear in both parts, so the readable part alone
    /// is ambiguous (`a-b`+`c` vs `a`+`b-c`); the digest is what keeps names of
    /// different pairs apart, always present so no readable name can imitate it.
    pub fn domain(&self) -> String {
        let mut h = Sha256::new();
        // Length-prefixed: the encoding of the pair is unambiguous.
        h.update((self.namespace.len() as u64).to_be_bytes());
        h.update(self.namespace.as_bytes());
        h.update(self.id.as_bytes());
        let digest = h.finalize();
        let hex: String = digest
            .iter()
            .take(DIGEST_HEX / 2)
            .map(|b| format!("{b:02x}"))
            .collect();
        let room = MAX_DOMAIN_NAME - DOMAIN_PREFIX.len() - 1 - DIGEST_HEX;
        let readable = format!("{}-{}", self.namespace, self.id);
        // ASCII only (validated), so byte truncation is a char boundary.
        let readable = &readable[..readable.len().min(room)];
        format!("{DOMAIN_PREFIX}{readable}-{hex}")
    }
}

impl From<NameError> for crate::Error {
    fn from(e: NameError) -> Self {
        crate::Error::InvalidArgument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(ns: &str, id: &str) -> String {
        ContainerName::new(ns, id).unwrap().domain()
    }

    #[test]
    fn tenants_with_dashes_never_share_a_domain() {
        // The collision found in the lab: namespace a-b + id c vs namespace a + id b-c.
        assert_ne!(name("a-b", "c"), name("a", "b-c"));
        assert_ne!(name("default", "x"), name("default", "x-"));
        let n = name("default", "t1");
        assert!(n.starts_with("vxn-default-t1-") && n.len() == "vxn-default-t1-".len() + 16);
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let long = "a".repeat(MAX_COMPONENT);
        let n1 = name("k8s.io", &long);
        let n2 = name("k8s.io", &format!("{}b", &long[1..]));
        assert!(n1.len() <= MAX_DOMAIN_NAME && n2.len() <= MAX_DOMAIN_NAME);
        assert_ne!(n1, n2);
        // Same readable prefix after truncation, different pairs.
        assert_ne!(name(&long, "x"), name(&long, "y"));
    }

    #[test]
    fn components_are_single_path_components() {
        for bad in [
            "", ".", "..", "a/b", "../x", "-x", ".hidden", "a b", "a\nb", "é",
        ] {
            assert!(ContainerName::new("default", bad).is_err(), "{bad:?}");
            assert!(ContainerName::new(bad, "id").is_err(), "{bad:?}");
        }
        assert!(ContainerName::new("k8s.io", &"f".repeat(64)).is_ok());
        assert!(ContainerName::new("default", &"f".repeat(MAX_COMPONENT + 1)).is_err());
        let c = ContainerName::new("ns", "id").unwrap();
        assert_eq!(
            c.dir_under(Path::new("/run/vxn")),
            Path::new("/run/vxn/ns/id")
        );
    }
}
