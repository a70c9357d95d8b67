//! Starting a keeper: this same binary, run again, which outlives the
//! command that started it (its caller, containerd's runc shim or conmon, is
//! a subreaper and inherits it). The command waits on a pipe for the keeper
//! to say it is ready (or why it failed), bounded, then writes the pid file.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::control::{self, Reply};
use crate::error::{Error, Result};

/// The readiness pipe's write end, as the keeper holds it.
pub struct ReadyPipe(Option<File>);

impl ReadyPipe {
    /// The fd `--ready-fd` names: handed down by our own spawn.
    pub fn from_arg(fd: i32) -> Self {
        if fd < 3 || fcntl(fd, FcntlArg::F_GETFD).is_err() {
            return Self(None);
        }
        // Never leak it into the processes the keeper runs (xl, mkfs, agents).
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        // SAFETY: the fd is open (F_GETFD succeeded) and was passed to this
        // process for it alone; nothing else in the process owns it.
        Self(Some(unsafe { File::from_raw_fd(fd) }))
    }

    /// Tell the waiting command how it went; the pipe closes.
    pub fn report(&mut self, r: &Reply) {
        if let (Some(mut f), Ok(frame)) = (self.0.take(), control::encode(r)) {
            let _ = std::io::Write::write_all(&mut f, &frame);
        }
    }
}

/// A started keeper that said it is ready.
pub struct Started {
    pub pid: u32,
}

/// Spawn `args` (this binary's), stdio inherited unless `null_stdio`, and
/// wait up to `limit` for its report. On timeout the keeper is killed.
pub fn keeper(args: Vec<OsString>, null_stdio: bool, limit: Duration) -> Result<Started> {
    let exe = std::env::current_exe().map_err(Error::io("own executable"))?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe")(e.into()))?;
    // The write end is the keeper's to inherit, only for this spawn.
    fcntl(w.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))
        .map_err(|e| Error::io("pipe")(e.into()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .arg("--ready-fd")
        .arg(w.as_raw_fd().to_string());
    if null_stdio {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    let spawned = cmd.spawn();
    drop(w);
    let child = spawned.map_err(Error::io("start the keeper"))?;
    let pid = child.id();
    // Not waited for: the keeper outlives us; our caller reaps it.
    drop(child);
    match read_report(r, limit) {
        Ok(Reply::Ok) => Ok(Started { pid }),
        Ok(other) => {
            other.into_result()?;
            Err(Error::Keeper("the keeper's report made no sense".into()))
        }
        Err(e) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            Err(e)
        }
    }
}

/// The keeper's one frame, read until EOF, within `limit`.
fn read_report(r: OwnedFd, limit: Duration) -> Result<Reply> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut f = File::from(r);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Core(vxn_runtime_core::Error::DeadlineExceeded(
                format!("the keeper was not ready within {} s", limit.as_secs()),
            )));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(Error::io("wait for the keeper")(e.into())),
        }
        let mut buf = [0u8; 8192];
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if got.len() + n <= 4 + (1 << 20) => got.extend_from_slice(&buf[..n]),
            Ok(_) => return Err(Error::Keeper("the keeper's report is too long".into())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read the keeper's report")(e)),
        }
    }
    if got.len() < 4 {
        return Err(Error::Keeper(
            "the keeper exited before it was ready (see the log)".into(),
        ));
    }
    let n = control::frame_len(got[..4].try_into().unwrap_or_default())?;
    let body = got
        .get(4..4 + n)
        .ok_or_else(|| Error::Keeper("the keeper's report was cut short".into()))?;
    control::decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_read_and_silence_is_an_error() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut ready = ReadyPipe(Some(File::from(w)));
        ready.report(&Reply::Ok);
        assert!(matches!(
            read_report(r, Duration::from_secs(5)),
            Ok(Reply::Ok)
        ));

        let (r, w) = nix::unistd::pipe().unwrap();
        drop(w);
        assert!(read_report(r, Duration::from_secs(5)).is_err());

        let (r, _w) = nix::unistd::pipe().unwrap();
        let e = read_report(r, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("not ready"), "{e}");
    }
}
