//! A xenstore client, for publishing and finding a vchan's `ring-ref` and
//! `event-channel` under `/local/domain/<srv>/data/vchan/<cli>/<port>`.
//!
//! * [`wire`]: the `xs_wire.h` message format (header, types, payloads,
//!   error names, permissions), with the payload limit enforced both ways;
//! * [`client`]: an async client over any byte stream, with request ids and
//!   watch events delivered apart from replies;
//! * [`error`]: [`XsError`] and the server's errno names.

pub mod client;
pub mod error;
pub mod wire;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use client::{Client, WatchEvents};
pub use error::{XsErrno, XsError};
pub use wire::{Access, Perm, WatchEvent, PAYLOAD_MAX};
