//! Feed arbitrary bytes to the frame decoder, in arbitrary splits, and check
//! that it never panics, never yields an over-limit frame, and that every
//! decoded frame re-encodes to the bytes it came from. The same bytes go
//! through the connection's stateful codec, which skips oversized control
//! frames: it must never buffer more than a frame's worth.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use vxn_wire::protocol::frame::{
    decode_frame, encode_frame, Decoded, FrameCodec, HEADER_LEN, MAX_CONTROL_PAYLOAD,
};
use vxn_wire::protocol::messages::{Event, Hello, Request, ResponseBody};

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    codec(data, split);
    let mut buf = BytesMut::new();
    let mut consumed = Vec::new();
    for chunk in data.chunks(split) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.clone();
            match decode_frame(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.payload.len() <= f.kind.max_payload());
                    let mut re = BytesMut::new();
                    encode_frame(&f, &mut re).unwrap();
                    assert_eq!(&re[..], &before[..HEADER_LEN + f.payload.len()]);
                    // Control payloads go to serde: must not panic either.
                    let _ = serde_json::from_slice::<Request>(&f.payload);
                    let _ = serde_json::from_slice::<ResponseBody>(&f.payload);
                    let _ = serde_json::from_slice::<Event>(&f.payload);
                    let _ = serde_json::from_slice::<Hello>(&f.payload);
                    consumed.push(f);
                }
                Ok(None) => break,
                Err(_) => return, // the connection would close here
            }
        }
    }
});

fn codec(data: &[u8], split: usize) {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    for chunk in data.chunks(split) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Decoded::Frame(f))) => assert!(f.payload.len() <= f.kind.max_payload()),
                Ok(Some(Decoded::Oversized { kind, len, .. })) => {
                    assert!(kind.is_control() && len > MAX_CONTROL_PAYLOAD)
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // Never more than one bounded frame plus what just arrived.
        assert!(buf.len() <= HEADER_LEN + MAX_CONTROL_PAYLOAD + split);
    }
}
