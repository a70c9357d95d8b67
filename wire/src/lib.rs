//! vxn's wire: everything the shim and the guest agent must agree on, and
//! nothing else (no Xen, no rootfs, no logging setup), so the agent that runs
//! in every DomU links only this.
//!
//! * [`protocol`]: frames and messages on the shim<->agent channel;
//! * [`mux`]: the multiplexer both ends run over any ordered byte stream,
//!   with the handshake that starts it;
//! * [`boot`]: the kernel command-line keys and device names the host sets
//!   when it builds a VM and the agent reads when it boots;
//! * [`dhcp`]: the DHCPv4 client message (the agent asks for its lease, the
//!   host releases one it bound);
//! * [`dns_relay`]: the DNS relay both ends run between a guest's 127.0.0.11
//!   and an engine's resolver in the container's network namespace.
#![forbid(unsafe_code)]

pub mod boot;
pub mod dhcp;
pub mod dns_relay;
pub mod mux;
pub mod protocol;
