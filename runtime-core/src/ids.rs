//! Which process of a container a request means. containerd says "" for the
//! init; that convention is translated here, once, at the front-end's edge,
//! and the wire says `None`.

use crate::error::Result;
use crate::names::validate_component;

/// A container's init, or a process added to it by Exec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExecId {
    Init,
    Exec(String),
}

impl ExecId {
    /// containerd's convention: the empty id is the init.
    pub fn from_api(id: &str) -> Self {
        if id.is_empty() {
            Self::Init
        } else {
            Self::Exec(id.to_string())
        }
    }

    /// The id of a new exec: the rules of containerd's identifiers.
    pub fn new_exec(id: &str) -> Result<Self> {
        validate_component("exec id", id)?;
        Ok(Self::Exec(id.to_string()))
    }

    /// As the agent protocol says it: `None` for the init.
    pub fn as_wire(&self) -> Option<&str> {
        match self {
            Self::Init => None,
            Self::Exec(id) => Some(id),
        }
    }

    pub fn is_init(&self) -> bool {
        matches!(self, Self::Init)
    }
}

impl std::fmt::Display for ExecId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Init => f.write_str("init"),
            Self::Exec(id) => write!(f, "exec {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_the_init_only_at_the_edge() {
        assert_eq!(ExecId::from_api(""), ExecId::Init);
        assert_eq!(ExecId::from_api("").as_wire(), None);
        assert_eq!(ExecId::from_api("e1").as_wire(), Some("e1"));
        assert!(ExecId::new_exec("").is_err());
        assert!(ExecId::new_exec("a\nb").is_err());
        assert!(ExecId::new_exec(&"x".repeat(129)).is_err());
        assert_eq!(ExecId::new_exec("e1").unwrap(), ExecId::from_api("e1"));
    }
}
