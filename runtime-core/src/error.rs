//! The errors of the model, by kind. Each front-end maps a kind to its own
//! wire (the shim: a ttrpc code, which containerd turns into errdefs that
//! CRI and ctr act on; the runc CLI: a message and exit status). The kind
//! is decided where the error is made, never by reading its message.

use vxn_wire::mux::MuxError;
use vxn_wire::protocol::ErrorKind;

use crate::hypervisor::VmError;
use crate::names::NameError;
use crate::ClientError;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A pool (addresses, memory) has nothing left to give.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Prefix the message with what we were doing, keeping the kind.
    pub fn context(self, what: &str) -> Self {
        let wrap = |m: String| format!("{what}: {m}");
        match self {
            Self::NotFound(m) => Self::NotFound(wrap(m)),
            Self::AlreadyExists(m) => Self::AlreadyExists(wrap(m)),
            Self::InvalidArgument(m) => Self::InvalidArgument(wrap(m)),
            Self::FailedPrecondition(m) => Self::FailedPrecondition(wrap(m)),
            Self::Unimplemented(m) => Self::Unimplemented(wrap(m)),
            Self::Unavailable(m) => Self::Unavailable(wrap(m)),
            Self::DeadlineExceeded(m) => Self::DeadlineExceeded(wrap(m)),
            Self::ResourceExhausted(m) => Self::ResourceExhausted(wrap(m)),
            Self::Internal(m) => Self::Internal(wrap(m)),
        }
    }
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        // The agent's words were escaped and capped by the client.
        let msg = e.to_string();
        match (&e, e.agent_kind()) {
            (_, Some(ErrorKind::NotFound)) => Self::NotFound(msg),
            (_, Some(ErrorKind::AlreadyExists)) => Self::AlreadyExists(msg),
            (_, Some(ErrorKind::InvalidArgument)) => Self::InvalidArgument(msg),
            (_, Some(ErrorKind::FailedPrecondition)) => Self::FailedPrecondition(msg),
            (_, Some(ErrorKind::Unsupported)) => Self::Unimplemented(msg),
            (_, Some(ErrorKind::Unavailable)) => Self::Unavailable(msg),
            (_, Some(ErrorKind::Internal)) => Self::Internal(msg),
            (ClientError::Timeout { .. }, None) => Self::DeadlineExceeded(msg),
            (ClientError::Connection(MuxError::TooLarge { .. }), None) => Self::Internal(msg),
            // The guest answered, with more than the host keeps.
            (ClientError::TooMany { .. }, None) => Self::ResourceExhausted(msg),
            (_, None) => Self::Unavailable(format!("guest agent unreachable: {msg}")),
        }
    }
}

impl From<VmError> for Error {
    fn from(e: VmError) -> Self {
        let msg = e.to_string();
        match e {
            // The request asks for something this host cannot give.
            VmError::Config(_) | VmError::Missing(_) | VmError::NoMemory { .. } => {
                Self::InvalidArgument(msg)
            }
            VmError::Exists(_) => Self::AlreadyExists(msg),
            VmError::Unsupported(..) => Self::Unimplemented(msg),
            VmError::HostNotReady(_) => Self::FailedPrecondition(msg),
            VmError::Xl(_) | VmError::Io { .. } | VmError::Survived { .. } => Self::Internal(msg),
        }
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

impl From<crate::storage::rootfs::ExportError> for Error {
    fn from(e: crate::storage::rootfs::ExportError) -> Self {
        let msg = format!("rootfs: {e}");
        match e {
            // The bundle gave no usable rootfs: the request is at fault.
            crate::storage::rootfs::ExportError::Empty(_) => Self::InvalidArgument(msg),
            // Building the image failed on this host (mkfs, disk space, timeout).
            crate::storage::rootfs::ExportError::Failed { .. } => Self::Internal(msg),
        }
    }
}
