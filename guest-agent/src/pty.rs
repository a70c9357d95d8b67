//! Pseudo-terminals for processes with `terminal: true`. The pty lives in
//! the guest; the host only relays bytes and forwards window sizes.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;
use vxn_wire::protocol::WindowSize;

/// The pty pair of an opened `ptmx` master: unlocked, the slave opened
/// through the master (TIOCGPTPEER: no path lookup, so no image can redirect it).
pub fn pair(master: OwnedFd) -> Result<(OwnedFd, OwnedFd), Errno> {
    let m = master.as_raw_fd();
    // SAFETY: ioctls on a valid fd; we take ownership of the new fd.
    unsafe {
        let unlock: libc::c_int = 0;
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(Errno::last());
        }
        let s = libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if s < 0 {
            return Err(Errno::last());
        }
        Ok((master, OwnedFd::from_raw_fd(s)))
    }
}

/// A pty of the agent's own devpts, for a container that has none.
pub fn open_agent() -> Result<(OwnedFd, OwnedFd), Errno> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    pair(f.into())
}

pub fn set_size(fd: RawFd, size: WindowSize) -> Result<(), Errno> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

pub fn dup(fd: &OwnedFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `n` is the new fd fcntl just returned; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Put a tty (the agent's channel device) in raw mode: no echo, no line
/// editing, no `\n` -> `\r\n`: the channel carries binary frames.
pub fn make_raw(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: termios calls on a valid fd with a zeroed struct filled by tcgetattr.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) < 0 {
            return Err(Errno::last());
        }
        libc::cfmakeraw(&mut t);
        if libc::tcsetattr(fd, libc::TCSANOW, &t) < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}
