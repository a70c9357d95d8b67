//! The errors of the model, by kind. Each front-end maps a kind to its own
//! wire (the shim: a ttrpc code, which containerd turns into errdefs that
//! CRI and ctr act on; the runc CLI: a message and exit status). The kind
//! is decided where the error is made, never by reading its message: each
//! module's own error type maps itself to a kind, next to its definition.

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
