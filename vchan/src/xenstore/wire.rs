//! The xenstore wire protocol, after Xen's public `io/xs_wire.h` (MIT):
//! a 16-byte header `{type, req_id, tx_id, len}` of native-endian (in
//! practice little-endian) `u32`s, then `len` bytes of payload holding
//! NUL-separated strings. Payloads are capped at [`PAYLOAD_MAX`] both ways.

use super::error::{XsErrno, XsError};

/// `XENSTORE_PAYLOAD_MAX`: the largest payload either side may send.
pub const PAYLOAD_MAX: usize = 4096;
/// `sizeof(struct xsd_sockmsg)`.
pub const HEADER_LEN: usize = 16;

/// The message types this client uses (`enum xsd_sockmsg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MsgType {
    Directory = 1,
    Read = 2,
    Watch = 4,
    Unwatch = 5,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
}

impl MsgType {
    /// The type for a raw value, or `None` for types this client never uses.
    pub fn from_u32(v: u32) -> Option<MsgType> {
        Some(match v {
            1 => MsgType::Directory,
            2 => MsgType::Read,
            4 => MsgType::Watch,
            5 => MsgType::Unwatch,
            10 => MsgType::GetDomainPath,
            11 => MsgType::Write,
            12 => MsgType::Mkdir,
            13 => MsgType::Rm,
            14 => MsgType::SetPerms,
            15 => MsgType::WatchEvent,
            16 => MsgType::Error,
            _ => return None,
        })
    }
}

/// `struct xsd_sockmsg`, with the type kept raw so unknown types can be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_type: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.msg_type.to_ne_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        b[12..16].copy_from_slice(&self.len.to_ne_bytes());
        b
    }

    /// Decodes a header, refusing a payload length above [`PAYLOAD_MAX`].
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, XsError> {
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let h = Header {
            msg_type: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        };
        if h.len as usize > PAYLOAD_MAX {
            return Err(XsError::PayloadTooLarge {
                len: h.len as usize,
                max: PAYLOAD_MAX,
            });
        }
        Ok(h)
    }
}

/// A payload under construction: NUL-terminated strings and a trailing raw value.
#[derive(Debug, Default)]
pub struct Payload(Vec<u8>);

impl Payload {
    pub fn new() -> Payload {
        Payload(Vec::new())
    }

    /// Appends `s` and a NUL. `what` names the field in the error if `s` holds a NUL.
    pub fn string(mut self, what: &'static str, s: &str) -> Result<Payload, XsError> {
        if s.as_bytes().contains(&0) {
            return Err(XsError::Nul(what));
        }
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        Ok(self)
    }

    /// Appends raw bytes with no terminator (the value of a WRITE).
    pub fn raw(mut self, b: &[u8]) -> Payload {
        self.0.extend_from_slice(b);
        self
    }

    /// The complete message, or an error if the payload is over [`PAYLOAD_MAX`].
    pub fn into_message(self, t: MsgType, req_id: u32, tx_id: u32) -> Result<Vec<u8>, XsError> {
        encode_message(t as u32, req_id, tx_id, &self.0)
    }
}

/// Header plus payload, refusing a payload over [`PAYLOAD_MAX`].
pub fn encode_message(
    msg_type: u32,
    req_id: u32,
    tx_id: u32,
    payload: &[u8],
) -> Result<Vec<u8>, XsError> {
    if payload.len() > PAYLOAD_MAX {
        return Err(XsError::PayloadTooLarge {
            len: payload.len(),
            max: PAYLOAD_MAX,
        });
    }
    let h = Header {
        msg_type,
        req_id,
        tx_id,
        // Cannot truncate: checked against PAYLOAD_MAX above.
        len: payload.len() as u32,
    };
    let mut m = Vec::with_capacity(HEADER_LEN + payload.len());
    m.extend_from_slice(&h.encode());
    m.extend_from_slice(payload);
    Ok(m)
}

/// Splits a payload of NUL-terminated strings. A trailing NUL is optional
/// (some replies omit it); empty trailing parts are dropped.
pub fn split_strings(payload: &[u8]) -> Result<Vec<String>, XsError> {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    body.split(|&b| b == 0)
        .map(|part| {
            String::from_utf8(part.to_vec())
                .map_err(|_| XsError::Protocol("a payload string is not UTF-8".into()))
        })
        .collect()
}

/// The errno name carried by an ERROR reply (`"ENOENT\0"`).
pub fn parse_error(payload: &[u8]) -> XsErrno {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    XsErrno::from_name(&String::from_utf8_lossy(body))
}

/// A watch event: the path that changed and the caller's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

impl WatchEvent {
    /// Parses an `XS_WATCH_EVENT` payload: `path\0token\0`.
    pub fn decode(payload: &[u8]) -> Result<WatchEvent, XsError> {
        let mut parts = split_strings(payload)?.into_iter();
        match (parts.next(), parts.next()) {
            (Some(path), Some(token)) => Ok(WatchEvent { path, token }),
            _ => Err(XsError::Protocol(
                "a watch event lacks its path or token".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_layout() {
        let h = Header {
            msg_type: MsgType::Write as u32,
            req_id: 7,
            tx_id: 0,
            len: 12,
        };
        let b = h.encode();
        assert_eq!(&b[0..4], &11u32.to_ne_bytes());
        assert_eq!(&b[4..8], &7u32.to_ne_bytes());
        assert_eq!(&b[12..16], &12u32.to_ne_bytes());
        assert_eq!(Header::decode(&b).unwrap(), h);
    }

    #[test]
    fn decode_refuses_oversized_len() {
        let mut b = [0u8; HEADER_LEN];
        b[12..16].copy_from_slice(&4097u32.to_ne_bytes());
        assert!(matches!(
            Header::decode(&b),
            Err(XsError::PayloadTooLarge { len: 4097, .. })
        ));
        b[12..16].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(Header::decode(&b).is_ok());
    }

    #[test]
    fn encode_refuses_oversized_payload_and_nul() {
        let big = vec![b'x'; PAYLOAD_MAX];
        let p = Payload::new().string("path", "/a").unwrap().raw(&big);
        assert!(matches!(
            p.into_message(MsgType::Write, 1, 0),
            Err(XsError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            Payload::new().string("path", "/a\0b"),
            Err(XsError::Nul("path"))
        ));
    }

    #[test]
    fn strings_errors_events_perms() {
        assert_eq!(split_strings(b"a\0bc\0").unwrap(), ["a", "bc"]);
        assert_eq!(split_strings(b"a\0bc").unwrap(), ["a", "bc"]);
        assert!(split_strings(b"").unwrap().is_empty());
        assert!(split_strings(b"\xff\0").is_err());
        assert_eq!(parse_error(b"ENOENT\0"), XsErrno::Enoent);
        assert_eq!(parse_error(b"EWHAT\0"), XsErrno::Other("EWHAT".into()));
        let ev = WatchEvent::decode(b"/local/domain/5\0tok\0").unwrap();
        assert_eq!(
            (ev.path.as_str(), ev.token.as_str()),
            ("/local/domain/5", "tok")
        );
        assert!(WatchEvent::decode(b"/only-path\0").is_err());
    }
}
