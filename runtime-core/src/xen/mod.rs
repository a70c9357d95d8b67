//! The Xen backend, everything that speaks `xl`, xenstore or hotplug behind
//! the [`crate::hypervisor::Hypervisor`] seam: a DomU per container
//! ([`domain`]), its xl config ([`config`]) and toolstack ([`xl`]), its disks
//! as dom0 loop devices ([`disks`], [`hotplug`]), and connecting to the agent
//! of a domain: through its vchan ([`vchan`]) or its console channel socket.

pub mod config;
pub mod disks;
pub mod domain;
pub mod hotplug;
pub mod qemu;
pub mod vchan;
pub mod xl;

use std::path::Path;
use std::time::Duration;

pub use config::{Disk, DomainConfig, GuestType};
pub use xl::{Xl, XlError};

/// Connect to the channel socket QEMU serves for a domain. It appears during
/// `xl create -p`; retry briefly in case we are early.
pub async fn connect_channel(
    path: &Path,
    timeout: Duration,
) -> std::io::Result<tokio::net::UnixStream> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::net::UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
