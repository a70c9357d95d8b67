//! Shim errors and the ttrpc status code each one maps to. containerd turns
//! these codes into errdefs (NotFound, AlreadyExists, ...), which CRI and ctr
//! act on; `Unknown` would hide that.

use containerd_shim_protos::ttrpc::{self, Code};
use vxn_runtime_core::names::NameError;
use vxn_runtime_core::vm::VmError;
use vxn_runtime_core::ClientError;
use vxn_wire::mux::MuxError;
use vxn_wire::protocol::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
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
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, ShimError>;

impl ShimError {
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound(_) => Code::NOT_FOUND,
            Self::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Self::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Self::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Self::Unimplemented(_) => Code::UNIMPLEMENTED,
            Self::Unavailable(_) => Code::UNAVAILABLE,
            Self::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
            Self::Internal(_) => Code::INTERNAL,
        }
    }

    /// Prefix the message with what we were doing, keeping the code.
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
            Self::Internal(m) => Self::Internal(wrap(m)),
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

impl From<ClientError> for ShimError {
    fn from(e: ClientError) -> Self {
        // The agent's words were escaped and capped by the client.
        let msg = e.to_string();
        match (&e, e.agent_kind()) {
            (_, Some(ErrorKind::NotFound)) => Self::NotFound(msg),
            (_, Some(ErrorKind::AlreadyExists)) => Self::AlreadyExists(msg),
            (_, Some(ErrorKind::InvalidArgument)) => Self::InvalidArgument(msg),
            (_, Some(ErrorKind::FailedPrecondition)) => Self::FailedPrecondition(msg),
            (_, Some(ErrorKind::Unsupported)) => Self::Unimplemented(msg),
            (_, Some(ErrorKind::Internal)) => Self::Internal(msg),
            (ClientError::Timeout { .. }, None) => Self::DeadlineExceeded(msg),
            (ClientError::Connection(MuxError::TooLarge { .. }), None) => Self::Internal(msg),
            (_, None) => Self::Unavailable(format!("guest agent unreachable: {msg}")),
        }
    }
}

impl From<VmError> for ShimError {
    fn from(e: VmError) -> Self {
        let msg = e.to_string();
        match e {
            // The request asks for something this host cannot give.
            VmError::Config(_) | VmError::Missing(_) | VmError::NoMemory { .. } => {
                Self::InvalidArgument(msg)
            }
            VmError::Exists(_) => Self::AlreadyExists(msg),
            VmError::Unsupported(..) => Self::Unimplemented(msg),
            VmError::Xl(_) | VmError::Io { .. } | VmError::Survived { .. } => Self::Internal(msg),
        }
    }
}

impl From<NameError> for ShimError {
    fn from(e: NameError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reach_ttrpc() {
        let e: ttrpc::Error = ShimError::NotFound("no such task".into())
            .context("kill")
            .into();
        match e {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::NOT_FOUND);
                assert_eq!(s.message(), "kill: no such task");
            }
            other => panic!("{other:?}"),
        }
    }
}
