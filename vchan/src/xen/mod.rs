//! Xen backends for the protocol core: the NEXT step, only sketched.
//!
//! * [`ioctl`]: the Linux device ioctl numbers and request layouts, pinned
//!   by tests to the 6.1 uapi headers. Host-tested.
//! * `evtchn`, `gntalloc`, `gntdev` (cargo feature `xen-devices`):
//!   [`EventChannel`](crate::EventChannel) over `/dev/xen/evtchn`,
//!   [`GrantShare`](crate::GrantShare) over `/dev/xen/gntalloc` and
//!   [`GrantMap`](crate::GrantMap) over `/dev/xen/gntdev`.
//!   **UNTESTED: this code has never run against a Xen domain.** It compiles
//!   and follows the uapi headers and libxenvchan's sequence; expect fixes on
//!   first contact with the lab.
//! * The xenstore client is [`crate::xenstore`] (host-tested). Missing: its
//!   `/dev/xen/xenbus` transport and the vchan glue that publishes / reads
//!   `ring-ref` and `event-channel` under `/local/domain/<srv>/data/vchan/<cli>/<port>`.

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
