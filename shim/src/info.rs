//! `containerd-shim-vxn-v2 -info`: containerd 2.x asks every non-runc shim
//! what it is (on each start, and before a task with idmapped mounts):
//! the runtime options `Any` on stdin (maybe nothing), a protobuf
//! `containerd.types.RuntimeInfo` on stdout.

use std::io::{Read, Write};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::bootstrap::MAX_INPUT;

/// The type containerd unmarshals `RuntimeInfo.features` as.
pub const FEATURES_TYPE: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("-info: read stdin: {0}")]
    Stdin(#[from] std::io::Error),
    #[error("-info: more than {MAX_INPUT} bytes on stdin")]
    TooLarge,
    #[error("-info: stdin is not a protobuf Any: {0}")]
    Options(String),
    #[error("-info: encode: {0}")]
    Encode(String),
}

/// The guest runs the host's architecture.
#[cfg(target_arch = "x86_64")]
const GUEST_SECCOMP_ARCH: &str = "SCMP_ARCH_X86_64";
#[cfg(target_arch = "aarch64")]
const GUEST_SECCOMP_ARCH: &str = "SCMP_ARCH_AARCH64";

/// What this runtime implements of the OCI runtime spec, in the spec's
/// features.md format. What a VM cannot give (idmapped mounts, hooks run in
/// the host, AppArmor/SELinux labels) is said to be absent, so containerd
/// refuses such a container clearly instead of vxn ignoring a request.
pub fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [],
        // The agent's mount flags (guest-agent/src/mounts.rs parse_options),
        // and what runtime-core reads of a bind: `rro` (every submount
        // read-only, runtime-core/src/storage/binds.rs ReadOnly), host-to-container
        // propagation. containerd's CRI offers Kubernetes' recursive read-only
        // volumes only to a runtime that names `rro` here.
        "mountOptions": [
            "ro", "rro", "rw", "defaults", "bind", "rbind", "private", "rprivate",
            "slave", "rslave", "relatime", "nosuid", "nodev", "noexec", "noatime",
            "strictatime", "sync"
        ],
        "linux": {
            "namespaces": ["mount", "pid", "network", "ipc", "uts", "cgroup"],
            "cgroup": { "v1": false, "v2": false, "systemd": false, "systemdUser": false },
            // The agent compiles the profile itself (guest-agent/src/seccomp.rs):
            // no user notification, no filter flags, the guest's own ABI only.
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_LOG",
                    "SCMP_ACT_ALLOW"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_GT",
                    "SCMP_CMP_GE", "SCMP_CMP_LT", "SCMP_CMP_LE"
                ],
                "archs": [GUEST_SECCOMP_ARCH],
                "knownFlags": [],
                "supportedFlags": []
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } }
        },
        "annotations": {
            "io.containerd.vxn.runtime": "every container is a Xen DomU"
        }
    })
}

pub fn info(options: &[u8]) -> Result<RuntimeInfo, InfoError> {
    let options = if options.is_empty() {
        MessageField::none()
    } else {
        MessageField::some(
            Any::parse_from_bytes(options).map_err(|e| InfoError::Options(e.to_string()))?,
        )
    };
    let features = serde_json::to_vec(&features()).map_err(|e| InfoError::Encode(e.to_string()))?;
    Ok(RuntimeInfo {
        name: crate::RUNTIME_ID.into(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: option_env!("VXN_REVISION").unwrap_or_default().into(),
            ..Default::default()
        }),
        options,
        features: MessageField::some(Any {
            type_url: FEATURES_TYPE.into(),
            value: features,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The action: stdin in, stdout out.
pub fn run() -> Result<(), InfoError> {
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut input)?;
    if input.len() as u64 > MAX_INPUT {
        return Err(InfoError::TooLarge);
    }
    let bytes = info(&input)?
        .write_to_bytes()
        .map_err(|e| InfoError::Encode(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_echoes_the_options_and_says_what_vxn_is() {
        let opts = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![1, 2, 3],
            ..Default::default()
        };
        let got = info(&opts.write_to_bytes().unwrap()).unwrap();
        let got = RuntimeInfo::parse_from_bytes(&got.write_to_bytes().unwrap()).unwrap();
        assert_eq!(got.name, "io.containerd.vxn.v2");
        assert_eq!(got.options.as_ref(), Some(&opts));
        assert_eq!(got.version.version, env!("CARGO_PKG_VERSION"));
        let f: serde_json::Value = serde_json::from_slice(&got.features.value).unwrap();
        assert_eq!(got.features.type_url, FEATURES_TYPE);
        // containerd refuses idmapped mounts for a runtime without them.
        assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], false);
        // ... and offers recursive read-only volumes to one that names `rro`.
        let options = f["mountOptions"].as_array().unwrap();
        assert!(options.iter().any(|o| o == "rro"), "{options:?}");
        assert!(
            !options.iter().any(|o| o == "rshared"),
            "refused: {options:?}"
        );
        assert_eq!(f["linux"]["seccomp"]["enabled"], true);
        assert!(!f["linux"]["seccomp"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "SCMP_ACT_NOTIFY"));
        // No options (containerd's own probe at start): none echoed.
        assert!(info(&[]).unwrap().options.is_none());
        assert!(matches!(info(&[0xff, 0xff]), Err(InfoError::Options(_))));
    }
}
