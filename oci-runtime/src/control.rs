//! How a command talks to a container's keeper: one request per connection
//! on the keeper's socket, frames of a 4-byte big-endian length and JSON,
//! bounded; the first frame may carry fds (SCM_RIGHTS: an exec's stdio).
//! Errors keep the model's kind across the socket.

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use vxn_runtime_core::Error as Core;
use vxn_wire::protocol::ProcessInfo;

use crate::error::{Error, Result};
use crate::state::ContainerDir;

/// Largest frame either side accepts (an exec's process spec is the big one).
const MAX_FRAME: usize = 1 << 20;
/// Most fds one request may carry: stdin, stdout, stderr.
const MAX_FDS: usize = 3;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    State,
    Start,
    Kill {
        signal: u32,
        all: bool,
    },
    Pause,
    Resume,
    Ps,
    /// New limits: the memory limit (MiB; the keeper sizes the VM from it)
    /// and vcpus.
    Update {
        memory_limit_mib: Option<u64>,
        vcpus: Option<u32>,
    },
    /// Tear the container down (killing it first if `force`); the keeper exits.
    Delete {
        force: bool,
    },
    /// A new process; its stdio comes as fds with this frame, in the order
    /// stdin, stdout, stderr of those `streams` names (one fd: a terminal).
    Exec {
        process: serde_json::Value,
        streams: Streams,
    },
    /// On an exec's connection, after Started: its terminal's new size.
    Resize {
        rows: u32,
        cols: u32,
    },
}

/// Which stdio fds an Exec carries.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// One fd, the terminal's slave, is both stdin and stdout.
    pub terminal: bool,
}

impl Streams {
    pub fn fd_count(&self) -> usize {
        if self.terminal {
            1
        } else {
            usize::from(self.stdin) + usize::from(self.stdout) + usize::from(self.stderr)
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Ok,
    State {
        status: String,
        pid: u32,
    },
    /// The guest's processes, and the host pids that stand for them.
    Pids {
        processes: Vec<ProcessInfo>,
        host_pids: Vec<u32>,
    },
    /// An exec is running; `Exited` follows on the same connection.
    Started,
    Exited {
        code: u32,
    },
    Error {
        kind: String,
        message: String,
    },
}

impl Reply {
    pub fn from_error(e: &Error) -> Self {
        let (kind, message) = match e {
            Error::Core(c) => (kind_of(c), c.to_string()),
            other => ("internal", other.to_string()),
        };
        Self::Error {
            kind: kind.into(),
            message,
        }
    }

    /// The answer, or the error it carries, with its kind.
    pub fn into_result(self) -> Result<Self> {
        match self {
            Self::Error { kind, message } => Err(Error::Core(core_error(&kind, message))),
            r => Ok(r),
        }
    }
}

fn kind_of(e: &Core) -> &'static str {
    match e {
        Core::NotFound(_) => "not_found",
        Core::AlreadyExists(_) => "already_exists",
        Core::InvalidArgument(_) => "invalid_argument",
        Core::FailedPrecondition(_) => "failed_precondition",
        Core::Unimplemented(_) => "unimplemented",
        Core::Unavailable(_) => "unavailable",
        Core::DeadlineExceeded(_) => "deadline_exceeded",
        Core::ResourceExhausted(_) => "resource_exhausted",
        Core::Internal(_) => "internal",
    }
}

fn core_error(kind: &str, m: String) -> Core {
    match kind {
        "not_found" => Core::NotFound(m),
        "already_exists" => Core::AlreadyExists(m),
        "invalid_argument" => Core::InvalidArgument(m),
        "failed_precondition" => Core::FailedPrecondition(m),
        "unimplemented" => Core::Unimplemented(m),
        "unavailable" => Core::Unavailable(m),
        "deadline_exceeded" => Core::DeadlineExceeded(m),
        "resource_exhausted" => Core::ResourceExhausted(m),
        _ => Core::Internal(m),
    }
}

/// A frame's bytes: length prefix and JSON.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(msg).map_err(|e| Error::Keeper(format!("encode: {e}")))?;
    if body.len() > MAX_FRAME {
        return Err(Error::Keeper(format!(
            "message of {} bytes is over the {MAX_FRAME} limit",
            body.len()
        )));
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// The body length a frame header announces, refused when too large.
pub fn frame_len(header: [u8; 4]) -> Result<usize> {
    let n = u32::from_be_bytes(header) as usize;
    if n > MAX_FRAME {
        return Err(Error::Keeper(format!(
            "frame of {n} bytes is over the {MAX_FRAME} limit"
        )));
    }
    Ok(n)
}

pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Keeper(format!("bad message: {e}")))
}

/// One recvmsg on a socket: bytes into `buf`, and any fds that came with
/// them (owned at once, so none leaks whatever happens next).
pub fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: the kernel just installed these fds in this process for us.
            fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(std::io::Error::other("too many fds sent"));
    }
    Ok((msg.bytes, fds))
}

/// Whether the peer of `stream` may be the keeper of container `id`: root
/// or our own user, and the recorded keeper when there is a record.
pub fn check_keeper(stream: &UnixStream, keeper_pid: Option<u32>, id: &str) -> Result<()> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| Error::io(format!("the keeper of {id}: peer credentials"))(e.into()))?;
    let me = nix::unistd::geteuid().as_raw();
    let uid_ok = cred.uid() == 0 || cred.uid() == me;
    let pid_ok = keeper_pid.map_or(true, |p| cred.pid() == p as i32);
    if uid_ok && pid_ok {
        return Ok(());
    }
    Err(Error::Keeper(format!(
        "the control socket of {id} is held by pid {} (uid {}), not its keeper{}: refusing to talk to it",
        cred.pid(),
        cred.uid(),
        keeper_pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )))
}

/// A connection to a container's keeper.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connect, or None when no keeper serves this container (it exited).
    /// The name is abstract: anyone may bind it once the keeper is gone, so
    /// the peer must be root or this user, and once the container is saved,
    /// the keeper whose pid state.json records.
    pub fn connect(c: &ContainerDir) -> Result<Option<Self>> {
        match UnixStream::connect_addr(&c.socket()?) {
            Ok(stream) => {
                let saved = c.load().ok().map(|s| s.pid);
                check_keeper(&stream, saved, c.id())?;
                Ok(Some(Self { stream }))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::io(format!("connect to the keeper of {}", c.id()))(e)),
        }
    }

    /// Send a request, with fds if any, in one message.
    pub fn send(&mut self, req: &Request, fds: &[RawFd]) -> Result<()> {
        let frame = encode(req)?;
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        let sent = sendmsg::<()>(
            self.stream.as_raw_fd(),
            &[IoSlice::new(&frame)],
            cmsgs,
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| Error::io("send to the keeper")(e.into()))?;
        self.stream
            .write_all(&frame[sent..])
            .map_err(Error::io("send to the keeper"))
    }

    /// The next reply, within `limit` (None: as long as it takes).
    pub fn recv(&mut self, limit: Option<Duration>) -> Result<Reply> {
        self.stream
            .set_read_timeout(limit)
            .map_err(Error::io("keeper socket"))?;
        let mut header = [0u8; 4];
        let gone = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                Error::Keeper("the container's keeper exited before it answered".into())
            }
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Core(
                Core::DeadlineExceeded("the container's keeper did not answer in time".into()),
            ),
            _ => Error::io("read from the keeper")(e),
        };
        self.stream.read_exact(&mut header).map_err(gone)?;
        let mut body = vec![0u8; frame_len(header)?];
        self.stream.read_exact(&mut body).map_err(gone)?;
        decode(&body)
    }

    /// One request and its answer (errors as errors).
    pub fn call(&mut self, req: &Request, limit: Option<Duration>) -> Result<Reply> {
        self.send(req, &[])?;
        self.recv(limit)?.into_result()
    }

    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recorded_keeper_is_trusted() {
        // The peer of a pair is this process: our uid and pid.
        let (a, _b) = UnixStream::pair().unwrap();
        let me = std::process::id();
        check_keeper(&a, None, "c").unwrap();
        check_keeper(&a, Some(me), "c").unwrap();
        let e = check_keeper(&a, Some(me + 1), "c").unwrap_err();
        assert!(e.to_string().contains("not its keeper"), "{e}");
    }

    #[test]
    fn errors_keep_their_kind_across_the_socket() {
        let e = Error::Core(Core::FailedPrecondition("paused".into()));
        let back = Reply::from_error(&e).into_result().unwrap_err();
        assert!(matches!(back, Error::Core(Core::FailedPrecondition(m)) if m == "paused"));
        let frame = encode(&Request::Kill {
            signal: 9,
            all: true,
        })
        .unwrap();
        let n = frame_len(frame[..4].try_into().unwrap()).unwrap();
        let r: Request = decode(&frame[4..4 + n]).unwrap();
        assert!(matches!(
            r,
            Request::Kill {
                signal: 9,
                all: true
            }
        ));
        assert!(frame_len((MAX_FRAME as u32 + 1).to_be_bytes()).is_err());
        assert!(decode::<Request>(br#"{"op":"format_disk"}"#).is_err());
    }

    #[test]
    fn fds_travel_with_the_first_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Client { stream: a };
        let (r, _w) = nix::unistd::pipe().unwrap();
        let req = Request::Exec {
            process: serde_json::json!({"args": ["true"]}),
            streams: Streams {
                stdin: true,
                ..Default::default()
            },
        };
        client.send(&req, &[r.as_raw_fd()]).unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, fds) = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(fds.len(), 1);
        let len = frame_len(buf[..4].try_into().unwrap()).unwrap();
        assert_eq!(n, 4 + len);
        assert!(matches!(
            decode::<Request>(&buf[4..n]).unwrap(),
            Request::Exec { .. }
        ));
    }
}
