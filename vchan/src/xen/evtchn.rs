//! [`EventChannel`] over `/dev/xen/evtchn`.
//!
//! One device handle per vchan, bound to one port, so every event read from
//! the fd is ours. Reading a pending port masks it; writing it back unmasks
//! (libxenvchan_wait's `xenevtchn_pending` + `xenevtchn_unmask`). The fd is
//! pollable, so it is driven by tokio's reactor.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;

use super::ioctl::{
    EvtchnBindInterdomain, EvtchnBindUnboundPort, EvtchnPort, IOCTL_EVTCHN_BIND_INTERDOMAIN,
    IOCTL_EVTCHN_BIND_UNBOUND_PORT, IOCTL_EVTCHN_NOTIFY, IOCTL_EVTCHN_UNBIND,
};
use super::sys::{ioctl, open_dev};
use crate::error::{Result, VchanError};
use crate::event::EventChannel;

pub struct XenEvtchn {
    fd: AsyncFd<OwnedFd>,
    /// Our local port.
    port: u32,
}

impl XenEvtchn {
    fn open() -> Result<OwnedFd> {
        open_dev(c"/dev/xen/evtchn").map_err(VchanError::Event)
    }

    fn wrap(fd: OwnedFd, port: u32) -> Result<Self> {
        // AsyncFd needs a runtime; say so instead of panicking.
        tokio::runtime::Handle::try_current()
            .map_err(|e| VchanError::Event(io::Error::other(e)))?;
        // SAFETY: `OwnedFd` owns a valid fd, which is neither replaced nor
        // closed while the AsyncFd holds it.
        let fd =
            unsafe { AsyncFd::register(fd) }.map_err(|e| VchanError::Event(e.into_parts().1))?;
        let ev = XenEvtchn { fd, port };
        ev.unmask()?;
        Ok(ev)
    }

    /// Server: a fresh port `remote_domid` may bind to (publish it as
    /// `event-channel`).
    pub fn bind_unbound(remote_domid: u16) -> Result<Self> {
        let fd = Self::open()?;
        let mut req = EvtchnBindUnboundPort {
            remote_domain: remote_domid.into(),
        };
        // SAFETY: the request matches IOCTL_EVTCHN_BIND_UNBOUND_PORT.
        let port = unsafe { ioctl(&fd, IOCTL_EVTCHN_BIND_UNBOUND_PORT, &mut req) }
            .map_err(VchanError::Event)?;
        Self::wrap(fd, port as u32)
    }

    /// Client: bind to the server's published port.
    pub fn bind_interdomain(remote_domid: u16, remote_port: u32) -> Result<Self> {
        let fd = Self::open()?;
        let mut req = EvtchnBindInterdomain {
            remote_domain: remote_domid.into(),
            remote_port,
        };
        // SAFETY: the request matches IOCTL_EVTCHN_BIND_INTERDOMAIN.
        let port = unsafe { ioctl(&fd, IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut req) }
            .map_err(VchanError::Event)?;
        Self::wrap(fd, port as u32)
    }

    pub fn port(&self) -> u32 {
        self.port
    }

    fn unmask(&self) -> Result<()> {
        let buf = self.port.to_ne_bytes();
        // SAFETY: writes 4 bytes from a live buffer.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n != buf.len() as isize {
            return Err(VchanError::Event(io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl EventChannel for XenEvtchn {
    fn notify(&self) -> Result<()> {
        let mut req = EvtchnPort { port: self.port };
        // SAFETY: the request matches IOCTL_EVTCHN_NOTIFY.
        unsafe { ioctl(self.fd.get_ref(), IOCTL_EVTCHN_NOTIFY, &mut req) }
            .map_err(VchanError::Event)?;
        Ok(())
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx)).map_err(VchanError::Event)?;
            let read = guard.try_io(|fd| {
                let mut ports = [0u32; 8];
                // SAFETY: reads into a live buffer of the given size.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        ports.as_mut_ptr().cast(),
                        std::mem::size_of_val(&ports),
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(n)
            });
            match read {
                Ok(Ok(n)) if n > 0 => {
                    self.unmask()?;
                    return Poll::Ready(Ok(()));
                }
                Ok(Ok(_)) => {
                    return Poll::Ready(Err(VchanError::Event(io::Error::from(
                        io::ErrorKind::UnexpectedEof,
                    ))))
                }
                Ok(Err(e)) => return Poll::Ready(Err(VchanError::Event(e))),
                Err(_would_block) => continue,
            }
        }
    }
}

impl Drop for XenEvtchn {
    fn drop(&mut self) {
        let mut req = EvtchnPort { port: self.port };
        // SAFETY: the request matches IOCTL_EVTCHN_UNBIND. Errors are moot here.
        let _ = unsafe { ioctl(self.fd.get_ref(), IOCTL_EVTCHN_UNBIND, &mut req) };
    }
}
