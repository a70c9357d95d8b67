//! vxn runtime core: the host side of vxn, shared by its front-ends (the
//! containerd shim, the runc-compatible CLI).
//!
//! * [`model`]: a sandbox (one VM and its agent) holds a container (rootfs,
//!   mounts, network) that holds processes, each with its state machine; a
//!   CRI pod is one sandbox shared by its containers; a front-end's task is a
//!   container or a pod's sandbox;
//! * [`hypervisor`]: the seam between the model and a VM technology, and the
//!   test-only host-process backend; [`xen`]: the Xen backend behind it;
//! * [`storage`]: how a container's root filesystem, image layers and volumes
//!   reach its VM;
//! * [`network`]: a container's vif, address lease and guest network setup;
//!   a pod's or an engine's network namespace; dom0's bridge;
//! * [`persist`]: what a container made, recorded so teardown can undo it;
//! * a front-end gives each process its [`stdio`] and names processes by
//!   [`ids::ExecId`];
//! * [`config`]: `/etc/vxn/config.toml`; [`platform`]: the backends it names; [`oci`]: the bundle's config.json;
//! * [`client`]: the typed client of the guest agent (over [`vxn_wire`]);
//! * [`names`]: (namespace, id) to domain and directory names;
//! * [`command`]: external commands with timeouts; [`logfmt`]: the log line format.

pub mod client;
pub mod command;
pub mod config;
pub mod error;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
pub mod hypervisor;
pub mod ids;
pub mod logfmt;
pub mod model;
pub mod names;
pub mod network;
pub mod oci;
pub mod persist;
pub mod platform;
pub mod pool;
pub mod stdio;
pub mod storage;
pub mod xen;

pub use error::{Error, Result};

pub use client::{AgentClient, ClientError, HostStdio, StdioRequest};
