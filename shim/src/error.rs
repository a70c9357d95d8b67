//! The model's errors on the ttrpc wire: each kind is a ttrpc code, which
//! containerd turns into errdefs (NotFound, AlreadyExists, ...) that CRI and
//! ctr act on; `Unknown` would hide that.

use containerd_shim_protos::ttrpc::{self, Code};
pub use vxn_runtime_core::error::{Error, Result};

pub fn code(e: &Error) -> Code {
    match e {
        Error::NotFound(_) => Code::NOT_FOUND,
        Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
        Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        Error::Unimplemented(_) => Code::UNIMPLEMENTED,
        Error::Unavailable(_) => Code::UNAVAILABLE,
        Error::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
        Error::ResourceExhausted(_) => Code::RESOURCE_EXHAUSTED,
        Error::Internal(_) => Code::INTERNAL,
    }
}

pub fn to_ttrpc(e: Error) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code(&e), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reach_ttrpc() {
        match to_ttrpc(Error::NotFound("no such task".into()).context("kill")) {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::NOT_FOUND);
                assert_eq!(s.message(), "kill: no such task");
            }
            other => panic!("{other:?}"),
        }
    }
}
