//! Pseudo-terminals for processes with `terminal: true`. The pty lives in
//! the guest; the host only relays bytes and forwards window sizes.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use vxn_runtime_core::protocol::WindowSize;

/// Open a pty pair. Prefer the container's own devpts instance (so the
/// process sees `/dev/pts/N` in its root); fall back to the agent's.
pub fn open(rootfs: &Path) -> Result<(OwnedFd, OwnedFd), Errno> {
    let container_ptmx = rootfs.join("dev/pts/ptmx");
    let ptmx = if container_ptmx.exists() {
        container_ptmx
    } else {
        "/dev/ptmx".into()
    };
    let path =
        std::ffi::CString::new(ptmx.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open/ioctl with valid arguments; we take ownership of new fds.
    unsafe {
        let m = libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if m < 0 {
            return Err(Errno::last());
        }
        let master = OwnedFd::from_raw_fd(m);
        let unlock: libc::c_int = 0;
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(Errno::last());
        }
        // TIOCGPTPEER opens the slave through the master, with no path lookup.
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
