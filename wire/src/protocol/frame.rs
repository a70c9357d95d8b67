//! Wire frames: the only bytes that cross the shim<->agent channel.
//!
//! ```text
//! +----------------+--------+----------------+------------------+
//! | length: u32 BE | kind u8| id: u32 BE     | payload (length) |
//! +----------------+--------+----------------+------------------+
//! ```
//! `id` is a request id for control frames and a stream id for data frames.
//! The decoder is a pure function over a buffer so it can be fuzzed; it never
//! allocates more than the declared (bounded) payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes before the payload.
pub const HEADER_LEN: usize = 9;
/// Largest control payload (JSON). Container specs with large env fit easily.
pub const MAX_CONTROL_PAYLOAD: usize = 1 << 20;
/// Largest data payload; writers chunk to this size.
pub const MAX_DATA_PAYLOAD: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Handshake, first frame in each direction.
    Hello = 0x01,
    /// A request; `id` is the request id chosen by the sender.
    Request = 0x02,
    /// The response to request `id`.
    Response = 0x03,
    /// An unsolicited notification (e.g. an OOM kill).
    Event = 0x04,
    /// Stream bytes for stream `id`.
    Data = 0x10,
    /// The sender will send no more data on stream `id`.
    Eof = 0x11,
    /// The receiver grants more bytes of window for stream `id` (payload: u32 BE).
    Credit = 0x12,
    /// The receiver has gone away: stop sending on stream `id`.
    Reset = 0x13,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Hello,
            0x02 => Self::Request,
            0x03 => Self::Response,
            0x04 => Self::Event,
            0x10 => Self::Data,
            0x11 => Self::Eof,
            0x12 => Self::Credit,
            0x13 => Self::Reset,
            _ => return None,
        })
    }

    /// The largest payload this kind may carry.
    pub fn max_payload(self) -> usize {
        match self {
            Self::Hello | Self::Request | Self::Response | Self::Event => MAX_CONTROL_PAYLOAD,
            Self::Data => MAX_DATA_PAYLOAD,
            Self::Credit => 4,
            Self::Eof | Self::Reset => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub id: u32,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(kind: FrameKind, id: u32, payload: impl Into<Bytes>) -> Self {
        Self {
            kind,
            id,
            payload: payload.into(),
        }
    }

    pub fn credit(stream: u32, amount: u32) -> Self {
        Self::new(
            FrameKind::Credit,
            stream,
            Bytes::copy_from_slice(&amount.to_be_bytes()),
        )
    }

    /// The amount carried by a Credit frame (validated by the decoder).
    pub fn credit_amount(&self) -> u32 {
        let mut p = &self.payload[..];
        if p.len() == 4 {
            p.get_u32()
        } else {
            0
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("{kind:?} frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        kind: FrameKind,
        len: usize,
        max: usize,
    },
    #[error("credit frame must carry exactly 4 bytes, got {0}")]
    BadCredit(usize),
}

/// What the stream decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Frame(Frame),
    /// A control frame over its limit. Its payload is skipped without being
    /// buffered, so only the request it belongs to fails, not the connection.
    Oversized {
        kind: FrameKind,
        id: u32,
        len: usize,
    },
}

impl FrameKind {
    /// Request, Response, Event: frames whose loss fails one exchange.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Request | Self::Response | Self::Event)
    }
}

/// Stream decoder (and encoder) of [`Frame`]s over a connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec {
    /// Payload bytes of an oversized frame still to be discarded.
    skipping: usize,
}

/// Decode one frame from the front of `buf`, if a whole one is there.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let kind = FrameKind::from_u8(buf[4]).ok_or(FrameError::UnknownKind(buf[4]))?;
    let max = kind.max_payload();
    if len > max {
        return Err(FrameError::TooLarge { kind, len, max });
    }
    if kind == FrameKind::Credit && len != 4 {
        return Err(FrameError::BadCredit(len));
    }
    if buf.len() < HEADER_LEN + len {
        // Reserve only what this bounded frame needs.
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    Ok(Some(Frame { kind, id, payload }))
}

/// Append the encoding of `frame` to `dst`.
pub fn encode_frame(frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    let len = frame.payload.len();
    let max = frame.kind.max_payload();
    if len > max {
        return Err(FrameError::TooLarge {
            kind: frame.kind,
            len,
            max,
        });
    }
    dst.reserve(HEADER_LEN + len);
    dst.put_u32(len as u32);
    dst.put_u8(frame.kind as u8);
    dst.put_u32(frame.id);
    dst.put_slice(&frame.payload);
    Ok(())
}

impl Decoder for FrameCodec {
    type Item = Decoded;
    type Error = crate::protocol::ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, Self::Error> {
        if self.skipping > 0 {
            let n = self.skipping.min(src.len());
            src.advance(n);
            self.skipping -= n;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        match decode_frame(src) {
            Ok(f) => Ok(f.map(Decoded::Frame)),
            Err(FrameError::TooLarge { kind, len, .. }) if kind.is_control() => {
                let id = u32::from_be_bytes([src[5], src[6], src[7], src[8]]);
                src.advance(HEADER_LEN);
                let n = len.min(src.len());
                src.advance(n);
                self.skipping = len - n;
                Ok(Some(Decoded::Oversized { kind, id, len }))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = crate::protocol::ProtocolError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), Self::Error> {
        Ok(encode_frame(&item, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame) {
        let mut b = BytesMut::new();
        encode_frame(&f, &mut b).unwrap();
        assert_eq!(decode_frame(&mut b).unwrap(), Some(f));
        assert!(b.is_empty());
    }

    #[test]
    fn frames_roundtrip() {
        roundtrip(Frame::new(FrameKind::Request, 7, &b"{\"ping\":null}"[..]));
        roundtrip(Frame::new(
            FrameKind::Data,
            0xffff_fff1,
            vec![0u8; MAX_DATA_PAYLOAD],
        ));
        roundtrip(Frame::credit(3, 65536));
        roundtrip(Frame::new(FrameKind::Eof, 3, Bytes::new()));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut b = BytesMut::new();
        encode_frame(&Frame::new(FrameKind::Data, 1, &b"hello"[..]), &mut b).unwrap();
        let mut part = BytesMut::from(&b[..10]);
        assert_eq!(decode_frame(&mut part).unwrap(), None);
        part.extend_from_slice(&b[10..]);
        assert!(decode_frame(&mut part).unwrap().is_some());
    }

    #[test]
    fn oversized_and_unknown_frames_are_errors() {
        let mut b = BytesMut::new();
        b.put_u32(MAX_DATA_PAYLOAD as u32 + 1);
        b.put_u8(FrameKind::Data as u8);
        b.put_u32(1);
        assert!(matches!(
            decode_frame(&mut b),
            Err(FrameError::TooLarge { .. })
        ));

        let mut b = BytesMut::from(&[0u8, 0, 0, 0, 0x7f, 0, 0, 0, 0][..]);
        assert_eq!(decode_frame(&mut b), Err(FrameError::UnknownKind(0x7f)));

        let mut b = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0][..]);
        assert!(matches!(
            decode_frame(&mut b),
            Err(FrameError::TooLarge { .. })
        ));
        // A huge declared length must not make the decoder reserve it.
        assert!(b.capacity() < 1024);

        let mut b = BytesMut::from(&[0u8, 0, 0, 2, 0x12, 0, 0, 0, 1, 0, 0][..]);
        assert_eq!(decode_frame(&mut b), Err(FrameError::BadCredit(2)));
    }

    #[test]
    fn the_codec_skips_an_oversized_response_and_goes_on() {
        let mut codec = FrameCodec::default();
        let big = MAX_CONTROL_PAYLOAD + 10;
        let mut wire = BytesMut::new();
        wire.put_u32(big as u32);
        wire.put_u8(FrameKind::Response as u8);
        wire.put_u32(42);
        wire.extend_from_slice(&vec![b'x'; big]);
        encode_frame(&Frame::new(FrameKind::Response, 43, &b"{}"[..]), &mut wire).unwrap();
        // Fed in small pieces: the oversized payload is never buffered whole.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(4096) {
            buf.extend_from_slice(chunk);
            while let Some(d) = codec.decode(&mut buf).unwrap() {
                got.push(d);
            }
            assert!(buf.len() <= 4096 + HEADER_LEN);
        }
        assert_eq!(
            got,
            vec![
                Decoded::Oversized {
                    kind: FrameKind::Response,
                    id: 42,
                    len: big
                },
                Decoded::Frame(Frame::new(FrameKind::Response, 43, &b"{}"[..])),
            ]
        );
        // Oversized data is a protocol violation: data frames are chunked by the sender.
        let mut b = BytesMut::new();
        b.put_u32(MAX_DATA_PAYLOAD as u32 + 1);
        b.put_u8(FrameKind::Data as u8);
        b.put_u32(1);
        assert!(FrameCodec::default().decode(&mut b).is_err());
    }
}
