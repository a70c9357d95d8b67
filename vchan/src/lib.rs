//! A pure-Rust implementation of Xen's libxenvchan wire protocol: two byte
//! rings in pages one domain grants to another, plus an event channel.
//! Wire-compatible with libxenvchan's layout (`struct vchan_interface`,
//! ring orders 10..=20, the notify bits and liveness bytes), so either end
//! can talk to a C libxenvchan peer.
//!
//! The protocol core is independent of Xen: it runs over a
//! [`SharedMemory`] / [`GrantShare`] / [`GrantMap`] backend and an
//! [`EventChannel`]. [`memory`] is an in-process backend for tests. The Xen
//! backends (gntalloc, gntdev, evtchn, xenbus; feature `xen-devices`) carry
//! vxn's agent channel; see `README.md`.
//!
//! Modules, one job each:
//! * [`layout`]: the control page and ring geometry;
//! * [`ring`]: one byte ring over shared memory, hostile-index safe;
//! * [`shm`], [`event`]: the backend traits;
//! * [`endpoint`]: a connected end (data path, notifications, liveness);
//! * [`setup`]: server and client construction;
//! * [`stream`]: the tokio `AsyncRead + AsyncWrite` adapter;
//! * [`memory`]: the in-memory backend;
//! * [`xen`]: the Xen device backends (ioctl layouts tested; devices
//!   behind the `xen-devices` feature, used by vxn's agent channel);
//! * [`xenstore`]: an async xenstore client (wire format and client tested
//!   against an in-memory fake xenstored).

mod control;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod layout;
pub mod memory;
pub mod ring;
pub mod setup;
pub mod shm;
pub mod stream;
pub mod xen;
pub mod xenstore;

pub use control::Role;
pub use endpoint::{Endpoint, PeerState};
pub use error::{RingName, VchanError};
pub use event::EventChannel;
pub use setup::{client, server};
pub use shm::{Access, GrantMap, GrantShare, Purpose, SharedMemory};
pub use stream::VchanStream;
