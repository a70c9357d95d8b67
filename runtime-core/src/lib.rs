//! vxn runtime core: the host side of vxn, shared by its front-ends (the
//! containerd shim, the runc-compatible CLI).
//!
//! * the model: a [`sandbox`] (one VM and its agent) holds a [`container`]
//!   (rootfs, mounts) that holds [`process`]es, each with its state machine;
//!   [`persist`] records what a container made so teardown can undo it; a
//!   front-end gives each container an [`events`] sink and each process its
//!   [`stdio`], and names processes by [`ids::ExecId`];
//! * a CRI [`pod`] is one sandbox shared by its containers; a front-end's
//!   [`task`] is a container or a pod's sandbox;
//! * [`config`]: `/etc/vxn/config.toml`; [`oci`]: the bundle's config.json;
//! * [`client`]: the typed client of the guest agent (over [`vxn_wire`]);
//! * [`vm`]: the `Hypervisor` seam and its backends (Xen through `xl`, and a
//!   host process for tests); [`xen`]: the `xl` mapping itself;
//! * [`rootfs`]: how a container's root filesystem reaches its VM; [`binds`]: host directories, over 9p;
//! * [`names`]: (namespace, id) to domain and directory names;
//! * [`network`]: a container's vif, address lease and guest network setup; dom0's bridge;
//! * [`command`]: external commands with timeouts; [`logfmt`]: the log line format.

pub mod binds;
pub mod client;
pub mod command;
pub mod config;
pub mod container;
pub mod disks;
pub mod error;
pub mod events;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
pub mod ids;
pub mod layers;
pub mod logfmt;
pub mod loopdev;
pub mod names;
pub mod network;
pub mod oci;
pub mod persist;
pub mod pod;
pub mod process;
pub mod rootfs;
pub mod sandbox;
pub mod stdio;
pub mod task;
pub mod vm;
pub mod xen;

pub use error::{Error, Result};

pub use client::{AgentClient, ClientError, HostStdio, StdioRequest};
