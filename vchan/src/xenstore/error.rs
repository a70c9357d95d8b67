//! Errors of the xenstore client.

use std::fmt;
use std::io;

/// The errno names xenstored sends in `XS_ERROR` replies (`xsd_errors` in `xs_wire.h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XsErrno {
    Einval,
    Eacces,
    Eexist,
    Eisdir,
    Enoent,
    Enomem,
    Enospc,
    Eio,
    Enotempty,
    Enosys,
    Erofs,
    Ebusy,
    Eagain,
    Eisconn,
    E2big,
    Eperm,
    /// A name not in the list above.
    Other(String),
}

const NAMES: &[(&str, XsErrno)] = &[
    ("EINVAL", XsErrno::Einval),
    ("EACCES", XsErrno::Eacces),
    ("EEXIST", XsErrno::Eexist),
    ("EISDIR", XsErrno::Eisdir),
    ("ENOENT", XsErrno::Enoent),
    ("ENOMEM", XsErrno::Enomem),
    ("ENOSPC", XsErrno::Enospc),
    ("EIO", XsErrno::Eio),
    ("ENOTEMPTY", XsErrno::Enotempty),
    ("ENOSYS", XsErrno::Enosys),
    ("EROFS", XsErrno::Erofs),
    ("EBUSY", XsErrno::Ebusy),
    ("EAGAIN", XsErrno::Eagain),
    ("EISCONN", XsErrno::Eisconn),
    ("E2BIG", XsErrno::E2big),
    ("EPERM", XsErrno::Eperm),
];

impl XsErrno {
    pub fn from_name(name: &str) -> XsErrno {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| XsErrno::Other(name.to_string()))
    }

    pub fn name(&self) -> &str {
        match self {
            XsErrno::Other(s) => s,
            known => NAMES
                .iter()
                .find(|(_, e)| e == known)
                .map_or("E?", |(n, _)| n),
        }
    }
}

impl fmt::Display for XsErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XsError {
    /// xenstored answered with `XS_ERROR`.
    #[error("xenstore error {0}")]
    Server(XsErrno),
    /// A payload over `XENSTORE_PAYLOAD_MAX`, ours or the server's.
    #[error("xenstore payload of {len} bytes is over the {max}-byte maximum")]
    PayloadTooLarge { len: usize, max: usize },
    /// A path, token or permission holds a NUL byte.
    #[error("xenstore {0} contains a NUL byte")]
    Nul(&'static str),
    /// The server broke the protocol; the connection is unusable.
    #[error("xenstore protocol violation: {0}")]
    Protocol(String),
    /// Reading or writing the connection failed.
    #[error("xenstore connection: {0}")]
    Io(#[from] io::Error),
    /// The connection is gone (closed, or broken earlier for the reason given).
    #[error("xenstore connection closed: {0}")]
    Closed(String),
}

impl XsError {
    /// True for `XS_ERROR` `ENOENT`, the answer for a missing node.
    pub fn is_enoent(&self) -> bool {
        matches!(self, XsError::Server(XsErrno::Enoent))
    }
}
