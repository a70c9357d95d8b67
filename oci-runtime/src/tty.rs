//! Terminals the runc way, without a helper: a dom0 pty pair whose master
//! goes to the caller's `--console-socket` (one fd, SCM_RIGHTS, as runc
//! sends it), and whose slave the keeper relays to the guest's pty. The
//! slave is the keeper's controlling terminal, so a resize of the master
//! (Docker's and conmon's ResizePty) arrives as SIGWINCH and is passed on.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

use crate::error::{Error, Result};

/// A window size, rows by columns: the wire's, as the guest's pty takes it.
pub use vxn_wire::protocol::WindowSize as Size;

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// A new pty pair; the slave raw (the guest's pty does the line discipline),
/// sized as asked.
pub fn open(size: Option<Size>) -> Result<Pty> {
    let p = nix::pty::openpty(None, None).map_err(|e| Error::io("openpty")(e.into()))?;
    make_raw(&p.slave)?;
    if let Some(s) = size {
        set_size(&p.slave, s)?;
    }
    Ok(Pty {
        master: p.master,
        slave: p.slave,
    })
}

/// Raw mode; returns the settings it replaced.
pub fn make_raw(fd: &impl AsFd) -> Result<Termios> {
    let before = tcgetattr(fd).map_err(|e| Error::io("tcgetattr")(e.into()))?;
    let mut raw = before.clone();
    cfmakeraw(&mut raw);
    tcsetattr(fd, SetArg::TCSANOW, &raw).map_err(|e| Error::io("tcsetattr")(e.into()))?;
    Ok(before)
}

pub fn restore(fd: &impl AsFd, t: &Termios) {
    let _ = tcsetattr(fd, SetArg::TCSANOW, t);
}

/// Send the master to the console socket: runc's message (the file's name,
/// and the fd as SCM_RIGHTS), which go-runc and conmon both read.
pub fn send_master(socket: &Path, master: &OwnedFd) -> Result<()> {
    let what = || format!("console socket {}", socket.display());
    let stream = UnixStream::connect(socket).map_err(Error::io(what()))?;
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(b"/dev/ptmx")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::io(what())(e.into()))?;
    Ok(())
}

pub fn size(fd: &impl AsRawFd) -> Option<Size> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some(Size {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

pub fn set_size(fd: &impl AsRawFd, s: Size) -> Result<()> {
    let ws = libc::winsize {
        ws_row: s.rows,
        ws_col: s.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the struct we own.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r != 0 {
        return Err(Error::io("TIOCSWINSZ")(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Make `fd` the controlling terminal of this process (a session leader
/// without one), so its size changes reach us as SIGWINCH.
pub fn take_as_controlling(fd: &impl AsRawFd) -> Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument and touches no memory of ours.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if r != 0 {
        return Err(Error::io("TIOCSCTTY")(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_master_reaches_the_console_socket_and_sizes_carry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let pty = open(Some(Size {
            rows: 33,
            cols: 101,
        }))
        .unwrap();
        send_master(&path, &pty.master).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let (n, fds) = crate::control::recv_with_fds(conn.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"/dev/ptmx");
        assert_eq!(fds.len(), 1);
        // The received master is the same terminal: its size is the slave's.
        assert_eq!(
            size(&fds[0]),
            Some(Size {
                rows: 33,
                cols: 101
            })
        );
        set_size(&fds[0], Size { rows: 10, cols: 20 }).unwrap();
        assert_eq!(size(&pty.slave), Some(Size { rows: 10, cols: 20 }));
    }
}
