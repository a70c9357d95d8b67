//! The shim<->agent protocol: frames on an ordered byte stream, JSON control
//! messages, raw stdio bytes with per-stream credit flow control.
//! See `docs/protocol.md` for the design and why it looks like this.

pub mod frame;
pub mod isolation;
pub mod messages;
pub mod network;
pub mod text;

pub use frame::{Decoded, Frame, FrameCodec, FrameError, FrameKind};
pub use isolation::{Isolation, PidNamespace, Seccomp, SeccompArg, SeccompRule};
pub use messages::*;
pub use network::*;
pub use text::guest_text;

/// Name in the hello; a peer with another name is not a vxn agent.
pub const PROTOCOL_NAME: &str = "vxn-agent";
/// Bumped on any incompatible change to frames or messages.
/// v2: OCI capabilities in `ProcessSpec` (an agent that ignored them would run
/// containers with every capability) and paged `ListPids`.
/// v3: numeric `uid`/`gid` in `UserSpec` (an agent that ignored them would
/// run the process as root).
/// v4: `SetupNetwork` (an agent without it would run containers unreachable).
/// v5: several containers per VM (a pod): `memory_limit_bytes` in
/// `CreateContainer`, `container_only` in `Stats`, a container's processes
/// told apart (an agent without them would let a pod's containers kill and
/// starve each other).
/// v6: `isolation` in `CreateContainer` (an agent that ignored it would let
/// a pod's containers see each other's processes and write /proc/sys).
/// v7: `AddInterfaces` (an agent without it would leave a network connected
/// later unseen by the container).
pub const PROTOCOL_VERSION: u32 = 7;
/// Precedes every Hello frame so a reader can find the start of the stream
/// after line noise (a console that echoed, a guest that was still booting).
pub const PREAMBLE: &[u8; 8] = b"\0VXN\xfa\xce\x01\n";
/// Bytes of credit each receiver grants per stream when it opens.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("malformed {what} message: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("channel i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected {0:?} frame")]
    Unexpected(FrameKind),
    #[error("peer sent {got} bytes on stream {stream} with only {window} bytes of window")]
    WindowExceeded {
        stream: u32,
        got: usize,
        window: usize,
    },
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> bytes::Bytes {
    // Our own types always serialize.
    bytes::Bytes::from(serde_json::to_vec(v).expect("protocol types serialize"))
}

pub(crate) fn from_json<'a, T: serde::Deserialize<'a>>(
    what: &'static str,
    b: &'a [u8],
) -> Result<T, ProtocolError> {
    serde_json::from_slice(b).map_err(|source| ProtocolError::Json { what, source })
}
