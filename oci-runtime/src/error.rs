//! The runtime's errors. A CLI has one wire for them: a message (stderr and
//! the `--log` file) and exit status 1, as runc. The model's kinds travel
//! between a command and its keeper unchanged (`control`).

use vxn_runtime_core::Error as Core;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] Core),
    /// The command line asks for something runc has and vxn does not do.
    #[error("{0}")]
    Refused(String),
    #[error("container {0} does not exist")]
    NoSuchContainer(String),
    /// runc's words first: containerd's runc shim reads "container not running"
    /// after a kill as "the process already finished" (NotFound).
    #[error("container not running: {0}")]
    NotRunning(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A keeper broke its protocol or vanished mid-call.
    #[error("{0}")]
    Keeper(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

impl From<vxn_runtime_core::names::NameError> for Error {
    fn from(e: vxn_runtime_core::names::NameError) -> Self {
        Self::Core(e.into())
    }
}
