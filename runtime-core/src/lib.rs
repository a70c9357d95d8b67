//! vxn runtime core: the host side of vxn, shared by its front-ends (the
//! containerd shim, the runc-compatible CLI).
//!
//! * [`client`]: the typed client of the guest agent (over [`vxn_wire`]);
//! * [`vm`]: the `Hypervisor` seam and its backends (Xen through `xl`, and a
//!   host process for tests); [`xen`]: the `xl` mapping itself;
//! * [`rootfs`]: how a container's root filesystem reaches its VM;
//! * [`names`]: (namespace, id) to domain and directory names;
//! * [`command`]: external commands with timeouts.

pub mod client;
pub mod command;
pub mod names;
pub mod rootfs;
pub mod vm;
pub mod xen;

pub use client::{AgentClient, ClientError, HostStdio, StdioRequest};
