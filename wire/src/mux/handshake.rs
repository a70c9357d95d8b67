//! The versioned hello exchange that precedes multiplexed traffic.
//!
//! ```text
//! agent: PREAMBLE Hello{ack:false}   (repeated every second until answered)
//! host:  PREAMBLE Hello               (after it saw a compatible agent hello)
//! agent: PREAMBLE Hello{ack:true, error?}
//! ```
//! Repeating lets a host that connected late (a PV channel drops output while
//! nobody listens) still catch a hello; the final ack tells the host where
//! repeated hellos end and frames begin.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{
    frame::{decode_frame, encode_frame},
    from_json, guest_text, to_json, Frame, FrameKind, Hello, ProtocolError, PREAMBLE,
    PROTOCOL_NAME, PROTOCOL_VERSION,
};

/// Bytes of noise tolerated before a preamble before we give up.
const MAX_NOISE: usize = 1 << 20;
const AGENT_HELLO_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no vxn agent answered within {0:?}")]
    Timeout(Duration),
    #[error("channel closed during the handshake")]
    Closed,
    #[error("{0} bytes arrived without a vxn hello: not a vxn agent channel")]
    Noise(usize),
    #[error("incompatible peer: it speaks {protocol} v{version} ({software}), we speak {PROTOCOL_NAME} v{PROTOCOL_VERSION}")]
    Incompatible {
        protocol: String,
        version: u32,
        software: String,
    },
    #[error("agent refused the handshake: {0}")]
    Refused(String),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

fn our_hello(software: &str, ack: bool, error: Option<String>) -> Hello {
    Hello {
        protocol: PROTOCOL_NAME.into(),
        version: PROTOCOL_VERSION,
        software: software.into(),
        ack,
        error,
    }
}

fn check_compatible(h: &Hello) -> Result<(), HandshakeError> {
    if h.protocol != PROTOCOL_NAME || h.version != PROTOCOL_VERSION {
        return Err(HandshakeError::Incompatible {
            protocol: h.protocol.clone(),
            version: h.version,
            software: h.software.clone(),
        });
    }
    Ok(())
}

async fn write_hello<W: AsyncWrite + Unpin>(w: &mut W, h: &Hello) -> Result<(), HandshakeError> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(PREAMBLE);
    encode_frame(&Frame::new(FrameKind::Hello, 0, to_json(h)), &mut buf)
        .map_err(ProtocolError::from)?;
    w.write_all(&buf).await.map_err(ProtocolError::from)?;
    w.flush().await.map_err(ProtocolError::from)?;
    Ok(())
}

/// Reads hellos out of a noisy byte stream.
struct HelloReader {
    buf: BytesMut,
    noise: usize,
}

impl HelloReader {
    fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(4096),
            noise: 0,
        }
    }

    /// A hello already in the buffer, if a whole one is there.
    fn parse(&mut self) -> Result<Option<Hello>, HandshakeError> {
        loop {
            let Some(pos) = find(&self.buf, PREAMBLE) else {
                // Keep a tail that may be the start of a preamble.
                let keep = (PREAMBLE.len() - 1).min(self.buf.len());
                let drop = self.buf.len() - keep;
                self.noise += drop;
                self.buf.advance(drop);
                if self.noise > MAX_NOISE {
                    return Err(HandshakeError::Noise(self.noise));
                }
                return Ok(None);
            };
            self.noise += pos;
            if self.noise > MAX_NOISE {
                return Err(HandshakeError::Noise(self.noise));
            }
            let mut rest = BytesMut::from(&self.buf[pos + PREAMBLE.len()..]);
            match decode_frame(&mut rest) {
                Ok(None) => {
                    self.buf.advance(pos);
                    return Ok(None);
                }
                Ok(Some(f)) if f.kind == FrameKind::Hello => {
                    self.buf = rest;
                    return Ok(Some(from_json::<Hello>("hello", &f.payload)?));
                }
                // A preamble followed by garbage: skip it and keep scanning.
                _ => {
                    self.noise += PREAMBLE.len();
                    self.buf.advance(pos + PREAMBLE.len());
                }
            }
        }
    }

    async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Hello, HandshakeError> {
        loop {
            if let Some(h) = self.parse()? {
                return Ok(h);
            }
            let n = r
                .read_buf(&mut self.buf)
                .await
                .map_err(ProtocolError::from)?;
            if n == 0 {
                return Err(HandshakeError::Closed);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The guest's words in a hello, made safe to log and show.
fn from_guest(h: Hello) -> Hello {
    Hello {
        protocol: guest_text(&h.protocol),
        software: guest_text(&h.software),
        error: h.error.as_deref().map(guest_text),
        ..h
    }
}

/// Host side. Returns the agent's hello and bytes read past it.
pub async fn handshake_host<S>(
    io: &mut S,
    software: &str,
    timeout: Duration,
) -> Result<(Hello, BytesMut), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let run = async {
        let mut reader = HelloReader::new();
        let agent = from_guest(reader.next(io).await?);
        check_compatible(&agent)?;
        write_hello(io, &our_hello(software, false, None)).await?;
        loop {
            let h = from_guest(reader.next(io).await?);
            if !h.ack {
                continue; // a repeat sent before the agent read ours
            }
            if let Some(err) = h.error {
                return Err(HandshakeError::Refused(err));
            }
            return Ok((h, reader.buf));
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
}

/// Agent side. Returns the host's hello and bytes read past it.
pub async fn handshake_agent<S>(
    io: &mut S,
    software: &str,
) -> Result<(Hello, BytesMut), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reader = HelloReader::new();
    let hello = our_hello(software, false, None);
    let host = loop {
        write_hello(io, &hello).await?;
        match tokio::time::timeout(AGENT_HELLO_INTERVAL, reader.next(io)).await {
            Ok(h) => break h?,
            Err(_) => continue,
        }
    };
    if let Err(e) = check_compatible(&host) {
        write_hello(io, &our_hello(software, true, Some(e.to_string()))).await?;
        return Err(e);
    }
    write_hello(io, &our_hello(software, true, None)).await?;
    Ok((host, reader.buf))
}
