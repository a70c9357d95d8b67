//! Shim errors and the ttrpc status code each one maps to. containerd turns
//! these codes into errdefs (NotFound, AlreadyExists, ...), which CRI and ctr
//! act on; `Unknown` would hide that.

use containerd_shim_protos::ttrpc::{self, Code};
use vxn_runtime_core::protocol::ErrorKind;
use vxn_runtime_core::ClientError;

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
        let msg = e.to_string();
        match e.agent_kind() {
            Some(ErrorKind::NotFound) => Self::NotFound(msg),
            Some(ErrorKind::AlreadyExists) => Self::AlreadyExists(msg),
            Some(ErrorKind::InvalidArgument) => Self::InvalidArgument(msg),
            Some(ErrorKind::FailedPrecondition) => Self::FailedPrecondition(msg),
            Some(ErrorKind::Unsupported) => Self::Unimplemented(msg),
            Some(ErrorKind::Internal) => Self::Internal(msg),
            None => Self::Unavailable(format!("guest agent unreachable: {msg}")),
        }
    }
}

impl From<vxn_runtime_core::vm::VmError> for ShimError {
    fn from(e: vxn_runtime_core::vm::VmError) -> Self {
        use vxn_runtime_core::vm::VmError;
        let msg = e.to_string();
        match e {
            VmError::Config(_) | VmError::Missing(_) | VmError::NoMemory { .. } => {
                Self::InvalidArgument(msg)
            }
            _ => Self::Internal(msg),
        }
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
