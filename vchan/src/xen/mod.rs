//! Xen backends for the protocol core (cargo feature `xen-devices`).
//!
//! * [`ioctl`]: the Linux device ioctl numbers and request layouts, pinned
//!   by tests to the 6.1 uapi headers.
//! * `evtchn`, `gntalloc`, `gntdev`: [`EventChannel`](crate::EventChannel)
//!   over `/dev/xen/evtchn`, [`GrantShare`](crate::GrantShare) over
//!   `/dev/xen/gntalloc` and [`GrantMap`](crate::GrantMap) over
//!   `/dev/xen/gntdev`.
//! * `xenbus`: `/dev/xen/xenbus` as a stream for the [`crate::xenstore`]
//!   client (a guest has no xenstored socket).
//! * `connect`: publishing (server) and finding (client) a vchan's
//!   `ring-ref` and `event-channel` under
//!   `/local/domain/<srv>/data/vchan/<cli>/<port>`.

pub mod ioctl;

#[cfg(all(feature = "xen-devices", target_os = "linux"))]
pub mod connect;
#[cfg(all(feature = "xen-devices", target_os = "linux"))]
pub mod evtchn;
#[cfg(all(feature = "xen-devices", target_os = "linux"))]
pub mod gntalloc;
#[cfg(all(feature = "xen-devices", target_os = "linux"))]
pub mod gntdev;
#[cfg(all(feature = "xen-devices", target_os = "linux"))]
mod sys;
#[cfg(all(feature = "xen-devices", target_os = "linux"))]
pub mod xenbus;
