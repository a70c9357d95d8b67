//! Opening the agent's end of the shim channel.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Channel;
use crate::fdstream::FdStream;
use crate::pty;

pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ByteStream for T {}

/// How long to wait for the channel device to appear at boot.
const DEVICE_WAIT: Duration = Duration::from_secs(30);

pub async fn open(ch: &Channel) -> Result<Box<dyn ByteStream>, String> {
    match ch {
        Channel::Device(path) => {
            let deadline = tokio::time::Instant::now() + DEVICE_WAIT;
            let file = loop {
                match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                {
                    Ok(f) => break f,
                    Err(e) if tokio::time::Instant::now() > deadline => {
                        return Err(format!("open {}: {e}", path.display()))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            let fd = OwnedFd::from(file);
            // One fd for the agent's lifetime: an hvc tty drops its termios
            // and unread input on last close.
            use std::os::fd::AsRawFd;
            pty::make_raw(fd.as_raw_fd())
                .map_err(|e| format!("raw mode on {}: {e}", path.display()))?;
            Ok(Box::new(
                FdStream::new(fd, false).map_err(|e| e.to_string())?,
            ))
        }
        Channel::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| format!("connect {}: {e}", path.display()))?;
            Ok(Box::new(s))
        }
        Channel::Vchan(port) => vchan(port).await,
        Channel::Fd(n) => {
            // SAFETY: the fd was handed to us by whoever started the agent.
            let fd = unsafe { OwnedFd::from_raw_fd(*n) };
            Ok(Box::new(
                FdStream::new(fd, false).map_err(|e| format!("fd {n}: {e}"))?,
            ))
        }
    }
}

/// Serve the agent's vchan to dom0: share the rings and publish them in
/// xenstore. xenbus may still be coming up this early in boot: retry.
#[cfg(target_os = "linux")]
async fn vchan(port: &str) -> Result<Box<dyn ByteStream>, String> {
    use vxn_vchan::xen::connect;
    let deadline = tokio::time::Instant::now() + DEVICE_WAIT;
    let (xs, _events) = loop {
        match connect::open_xenstore().await {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(format!("xenstore: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let stream = connect::listen(
        &xs,
        0,
        port,
        vxn_wire::boot::VCHAN_RING_TO_GUEST,
        vxn_wire::boot::VCHAN_RING_TO_HOST,
    )
    .await
    .map_err(|e| format!("vchan {port}: {e}"))?;
    Ok(Box::new(stream))
}

#[cfg(not(target_os = "linux"))]
async fn vchan(port: &str) -> Result<Box<dyn ByteStream>, String> {
    Err(format!("vchan {port}: only on Linux"))
}
