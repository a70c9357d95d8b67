//! vxn runtime core: what the shim and the guest agent share.
//!
//! * [`protocol`]: frames and messages on the shim<->agent channel;
//! * [`mux`]: the multiplexer both ends run over any ordered byte stream;
//! * [`client`]: the host-side typed client of the agent.

pub mod client;
pub mod command;
pub mod mux;
pub mod names;
pub mod protocol;
pub mod rootfs;
pub mod vm;
pub mod xen;

pub use client::{AgentClient, ClientError, HostStdio, StdioRequest};
