//! What containerd hands a shim's `start` action on stdin, and what the
//! action answers on stdout, for every containerd vxn supports:
//!
//! - containerd 2.3+ writes `containerd.runtime.bootstrap.v1.BootstrapParams`
//!   (protobuf) and reads a `BootstrapResult` back;
//! - containerd 1.6 to 2.2 write the runtime options (a protobuf `Any`, maybe
//!   nothing) and read a plain socket address (task API v2).
//!
//! A legacy `Any` also decodes as a `BootstrapParams` (its type URL lands in
//! field 1, its value in field 2), so stdin is taken as the new protocol
//! only when the decoded instance id and namespace are the `-id` and
//! `-namespace` containerd passed on the command line too.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

/// The most stdin `start` reads: params are a few hundred bytes; CRI's
/// runtime options a few KiB.
pub const MAX_INPUT: u64 = 1 << 20;
/// `BootstrapParams.log_level` at or below this is debug (INFO = 0, DEBUG = -4).
const LOG_LEVEL_DEBUG: i32 = -4;
/// The runc shim's options message (its protobuf name is its type URL), the
/// one CRI and ctr send for a runc-like runtime.
const RUNC_OPTIONS_TYPES: &[&str] = &["containerd.runc.v1.Options"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootstrapError {
    #[error("start: stdin is neither BootstrapParams nor runtime options: {0}")]
    Undecodable(String),
    #[error("start: BootstrapParams names no containerd ttrpc address")]
    NoTtrpcAddress,
}

/// `containerd.runtime.bootstrap.v1.BootstrapParams`, the fields vxn reads.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BootstrapParams {
    pub instance_id: String,
    pub namespace: String,
    pub log_level: i32,
    pub containerd_version: String,
    pub containerd_ttrpc_address: String,
    pub containerd_grpc_address: String,
    pub containerd_binary: String,
    /// `extensions[].value`: typed configuration, the runtime options among them.
    pub extensions: Vec<Any>,
    pub socket_dir: Option<String>,
}

/// How containerd started this `start` action, and so how to answer it.
#[derive(Debug, Clone, PartialEq)]
pub enum StartInput {
    /// containerd 2.3+: answer a protobuf `BootstrapResult`.
    Bootstrap(BootstrapParams),
    /// containerd 1.6-2.2: answer the plain address.
    Legacy { options: Option<Any> },
}

impl StartInput {
    /// Tell the two protocols apart (see the module docs).
    pub fn decode(input: &[u8], id: &str, namespace: &str) -> Result<Self, BootstrapError> {
        if input.is_empty() {
            return Ok(Self::Legacy { options: None });
        }
        if let Ok(p) = BootstrapParams::decode(input) {
            if p.instance_id == id && p.namespace == namespace {
                if p.containerd_ttrpc_address.is_empty() {
                    return Err(BootstrapError::NoTtrpcAddress);
                }
                return Ok(Self::Bootstrap(p));
            }
        }
        Any::parse_from_bytes(input)
            .map(|any| Self::Legacy { options: Some(any) })
            .map_err(|e| BootstrapError::Undecodable(e.to_string()))
    }

    /// The runtime options containerd passed, in either protocol.
    pub fn runtime_options(&self) -> Option<&Any> {
        match self {
            Self::Legacy { options } => options.as_ref(),
            Self::Bootstrap(p) => p
                .extensions
                .iter()
                .find(|a| RUNC_OPTIONS_TYPES.contains(&a.type_url.as_str())),
        }
    }

    /// The cgroup containerd wants the shim in (runc's `shim_cgroup` option).
    pub fn shim_cgroup(&self) -> Option<String> {
        let any = self.runtime_options()?;
        if !RUNC_OPTIONS_TYPES.contains(&any.type_url.as_str()) {
            return None;
        }
        let opts = containerd_shim_protos::shim::oci::Options::parse_from_bytes(&any.value).ok()?;
        (!opts.shim_cgroup.is_empty()).then_some(opts.shim_cgroup)
    }

    pub fn debug(&self) -> bool {
        matches!(self, Self::Bootstrap(p) if p.log_level <= LOG_LEVEL_DEBUG)
    }

    /// What `start` writes on stdout for a shim serving `address` over ttrpc.
    /// The new protocol gets shim version 3: task API v3, and containerd
    /// connects a pod's containers to the pod's shim without `start`/`delete`
    /// actions of their own (so Task.Delete cleans up everything).
    pub fn answer(&self, address: &str) -> Vec<u8> {
        match self {
            Self::Legacy { .. } => address.as_bytes().to_vec(),
            Self::Bootstrap(_) => encode_result(SHIM_VERSION_BOOTSTRAP, address, "ttrpc"),
        }
    }
}

/// The shim version reported under the bootstrap protocol.
pub const SHIM_VERSION_BOOTSTRAP: i32 = 3;

/// `BootstrapResult { version = 1; address = 2; protocol = 3 }`.
pub fn encode_result(version: i32, address: &str, protocol: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(address.len() + protocol.len() + 16);
    put_tag(&mut out, 1, WIRE_VARINT);
    // int32 is sign-extended to 64 bits on the wire.
    put_varint(&mut out, version as i64 as u64);
    put_bytes(&mut out, 2, address.as_bytes());
    put_bytes(&mut out, 3, protocol.as_bytes());
    out
}

impl BootstrapParams {
    /// Strict: every field well formed, strings UTF-8, nothing truncated.
    /// Unknown fields are skipped (newer containerd may add some).
    pub fn decode(mut buf: &[u8]) -> Result<Self, String> {
        let mut p = Self::default();
        while !buf.is_empty() {
            let key = take_varint(&mut buf)?;
            let (field, wire) = (key >> 3, (key & 7) as u8);
            match (field, wire) {
                (1, WIRE_LEN) => p.instance_id = take_string(&mut buf)?,
                (2, WIRE_LEN) => p.namespace = take_string(&mut buf)?,
                (3, WIRE_VARINT) => p.log_level = take_varint(&mut buf)? as i64 as i32,
                (4, WIRE_LEN) => p.containerd_version = take_string(&mut buf)?,
                (5, WIRE_LEN) => p.containerd_ttrpc_address = take_string(&mut buf)?,
                (6, WIRE_LEN) => p.containerd_grpc_address = take_string(&mut buf)?,
                (7, WIRE_LEN) => p.containerd_binary = take_string(&mut buf)?,
                (8, WIRE_LEN) => {
                    if let Some(any) = extension_value(take_len(&mut buf)?)? {
                        p.extensions.push(any);
                    }
                }
                (9, WIRE_LEN) => p.socket_dir = Some(take_string(&mut buf)?),
                (0, _) => return Err("field number 0".into()),
                (_, w) => skip(&mut buf, w)?,
            }
        }
        Ok(p)
    }
}

/// `Extension { google.protobuf.Any value = 1; }`
fn extension_value(mut buf: &[u8]) -> Result<Option<Any>, String> {
    let mut value = None;
    while !buf.is_empty() {
        let key = take_varint(&mut buf)?;
        match (key >> 3, (key & 7) as u8) {
            (1, WIRE_LEN) => {
                let any = Any::parse_from_bytes(take_len(&mut buf)?).map_err(|e| e.to_string())?;
                value = Some(any);
            }
            (0, _) => return Err("field number 0".into()),
            (_, w) => skip(&mut buf, w)?,
        }
    }
    Ok(value)
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

fn take_varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn take_len<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let n = usize::try_from(take_varint(buf)?).map_err(|_| "length overflows")?;
    if n > buf.len() {
        return Err(format!("field of {n} bytes, {} left", buf.len()));
    }
    let (field, rest) = buf.split_at(n);
    *buf = rest;
    Ok(field)
}

fn take_string(buf: &mut &[u8]) -> Result<String, String> {
    let bytes = take_len(buf)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string field is not UTF-8".into())
}

fn skip(buf: &mut &[u8], wire: u8) -> Result<(), String> {
    let n = match wire {
        WIRE_VARINT => return take_varint(buf).map(drop),
        WIRE_LEN => return take_len(buf).map(drop),
        WIRE_I64 => 8,
        WIRE_I32 => 4,
        w => return Err(format!("wire type {w}")),
    };
    if n > buf.len() {
        return Err("truncated fixed-size field".into());
    }
    *buf = &buf[n..];
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, u64::from(field) << 3 | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BootstrapParams as containerd 2.3.4 marshals them (field order and
    /// types of api/runtime/bootstrap/v1/bootstrap.proto).
    fn params_bytes(id: &str, ns: &str, log_level: i64, options: Option<&Any>) -> Vec<u8> {
        let mut b = Vec::new();
        put_bytes(&mut b, 1, id.as_bytes());
        put_bytes(&mut b, 2, ns.as_bytes());
        if log_level != 0 {
            put_tag(&mut b, 3, WIRE_VARINT);
            put_varint(&mut b, log_level as u64);
        }
        put_bytes(&mut b, 4, b"v2.3.4");
        put_bytes(&mut b, 5, b"/run/containerd/containerd.sock.ttrpc");
        put_bytes(&mut b, 6, b"/run/containerd/containerd.sock");
        put_bytes(&mut b, 7, b"/usr/local/bin/containerd");
        if let Some(any) = options {
            let mut ext = Vec::new();
            put_bytes(&mut ext, 1, &any.write_to_bytes().unwrap());
            put_bytes(&mut b, 8, &ext);
        }
        // A field a later containerd may add: skipped.
        put_tag(&mut b, 42, WIRE_I32);
        b.extend_from_slice(&[1, 2, 3, 4]);
        put_bytes(&mut b, 9, b"/run/containerd/s");
        b
    }

    fn runc_options(cgroup: &str) -> Any {
        let opts = containerd_shim_protos::shim::oci::Options {
            shim_cgroup: cgroup.into(),
            ..Default::default()
        };
        Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn containerd_2_3_params_are_the_bootstrap_protocol() {
        let opts = runc_options("/vxn.slice");
        let input = params_bytes("c1", "default", -4, Some(&opts));
        let got = StartInput::decode(&input, "c1", "default").unwrap();
        let StartInput::Bootstrap(p) = &got else {
            panic!("{got:?}")
        };
        assert_eq!(
            p.containerd_ttrpc_address,
            "/run/containerd/containerd.sock.ttrpc"
        );
        assert_eq!(p.containerd_version, "v2.3.4");
        assert_eq!(p.socket_dir.as_deref(), Some("/run/containerd/s"));
        assert!(got.debug());
        assert_eq!(got.shim_cgroup().as_deref(), Some("/vxn.slice"));
        // Info (0) is not debug.
        let input = params_bytes("c1", "default", 0, None);
        assert!(!StartInput::decode(&input, "c1", "default").unwrap().debug());
    }

    #[test]
    fn a_legacy_options_any_is_not_mistaken_for_params() {
        // containerd 1.6/1.7: the runtime options Any. It decodes as
        // BootstrapParams too (type URL as instance id), but names another id.
        let any = runc_options("/shim");
        let input = any.write_to_bytes().unwrap();
        let got = StartInput::decode(&input, "c1", "default").unwrap();
        assert_eq!(
            got,
            StartInput::Legacy {
                options: Some(any.clone())
            }
        );
        assert_eq!(got.shim_cgroup().as_deref(), Some("/shim"));
        assert_eq!(
            got.answer("unix:///run/containerd/s/ab"),
            b"unix:///run/containerd/s/ab"
        );
        // ctr without options: nothing on stdin.
        assert_eq!(
            StartInput::decode(b"", "c1", "default").unwrap(),
            StartInput::Legacy { options: None }
        );
        // Params for another task are not ours to take as such.
        let other = params_bytes("c2", "default", 0, None);
        assert!(matches!(
            StartInput::decode(&other, "c1", "default"),
            Ok(StartInput::Legacy { .. }) | Err(_)
        ));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = StartInput::decode(&[0xff; 12], "c1", "default").unwrap_err();
        assert!(matches!(e, BootstrapError::Undecodable(_)), "{e}");
        // Truncated params: not taken as params.
        let input = params_bytes("c1", "default", 0, None);
        assert!(BootstrapParams::decode(&input[..input.len() - 3]).is_err());
        // Params without a ttrpc address cannot be served.
        let mut b = Vec::new();
        put_bytes(&mut b, 1, b"c1");
        put_bytes(&mut b, 2, b"default");
        assert_eq!(
            StartInput::decode(&b, "c1", "default").unwrap_err(),
            BootstrapError::NoTtrpcAddress
        );
    }

    #[test]
    fn only_runc_options_name_a_shim_cgroup() {
        let mut any = runc_options("/x");
        any.type_url = "runtimeoptions.v1.Options".into();
        let got = StartInput::Legacy { options: Some(any) };
        assert_eq!(got.shim_cgroup(), None);
    }

    #[test]
    fn the_result_is_what_containerd_parses() {
        let b = encode_result(3, "unix:///run/containerd/s/abc", "ttrpc");
        // Decoded field by field as protobuf does.
        let mut buf = b.as_slice();
        assert_eq!(take_varint(&mut buf).unwrap(), 1 << 3);
        assert_eq!(take_varint(&mut buf).unwrap(), 3);
        assert_eq!(take_varint(&mut buf).unwrap(), 2 << 3 | 2);
        assert_eq!(take_len(&mut buf).unwrap(), b"unix:///run/containerd/s/abc");
        assert_eq!(take_varint(&mut buf).unwrap(), 3 << 3 | 2);
        assert_eq!(take_len(&mut buf).unwrap(), b"ttrpc");
        assert!(buf.is_empty());
        let input = params_bytes("c1", "k8s.io", 0, None);
        let got = StartInput::decode(&input, "c1", "k8s.io").unwrap();
        assert_eq!(got.answer("unix:///run/containerd/s/abc"), b);
    }
}
