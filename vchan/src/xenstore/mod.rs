//! A xenstore client, for publishing and finding a vchan's `ring-ref` and
//! `event-channel` under `/local/domain/<srv>/data/vchan/<cli>/<port>`.
//!
//! * [`wire`]: the `xs_wire.h` message format (header, types, payloads,
//!   error names), with the payload limit enforced both ways;
//! * [`perm`]: node permissions (`b0`, `r5`);
//! * [`client`]: an async client over any byte stream, with request ids and
//!   watch events delivered apart from replies;
//! * [`error`]: [`XsError`] and the server's errno names.

pub mod client;
mod demux;
pub mod error;
pub mod perm;
pub mod wire;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod fake_tree;
#[cfg(test)]
mod tests;

pub use client::{Client, WatchEvents, WATCH_QUEUE};
pub use error::{XsErrno, XsError};
pub use perm::{Access, Perm};
pub use wire::{WatchEvent, PAYLOAD_MAX};
