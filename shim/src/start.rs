//! The `start` action: containerd runs it once per shim it needs (once per
//! container, or once per CRI pod: a pod's containers share its shim). It
//! starts the serving shim as a child of its own, waits until that child
//! listens, and tells containerd where (plain address for containerd
//! 1.6-2.2, a `BootstrapResult` for 2.3+: `bootstrap.rs`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use containerd_shim::Flags;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use vxn_runtime_core::model::pod::Role;
use vxn_runtime_core::oci;

use crate::bootstrap::{StartInput, MAX_INPUT};

/// Where containerd keeps shim sockets unless it names a directory.
pub const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";
/// How long the serving shim may take to listen (an emulated host is slow).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);
/// The legacy environment containerd sets (and the serving shim reads).
pub const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("start: read stdin: {0}")]
    Stdin(std::io::Error),
    #[error("start: more than {MAX_INPUT} bytes on stdin")]
    InputTooLarge,
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    #[error(
        "start: no containerd ttrpc address (neither BootstrapParams nor ${TTRPC_ADDRESS_ENV})"
    )]
    NoTtrpcAddress,
    #[error("start: -namespace and -id are required")]
    NoName,
    #[error("start: {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("start: the shim did not listen within {0:?}")]
    ListenTimeout(Duration),
    #[error("start: the shim exited before it listened (its error is in containerd's log)")]
    NotServing,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> StartError {
    move |source| StartError::Io { what, source }
}

/// Everything `start` needs, from either protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub namespace: String,
    pub id: String,
    pub grpc_address: String,
    pub ttrpc_address: String,
    pub socket_dir: PathBuf,
    pub debug: bool,
}

impl Launch {
    pub fn new(
        flags: &Flags,
        input: &StartInput,
        env_ttrpc: Option<String>,
    ) -> Result<Self, StartError> {
        if flags.namespace.is_empty() || flags.id.is_empty() {
            return Err(StartError::NoName);
        }
        let (grpc, ttrpc, dir) = match input {
            StartInput::Bootstrap(p) => (
                p.containerd_grpc_address.clone(),
                Some(p.containerd_ttrpc_address.clone()),
                p.socket_dir.clone().filter(|d| !d.is_empty()),
            ),
            StartInput::Legacy { .. } => (flags.address.clone(), env_ttrpc, None),
        };
        let grpc = if grpc.is_empty() {
            flags.address.clone()
        } else {
            grpc
        };
        Ok(Self {
            namespace: flags.namespace.clone(),
            id: flags.id.clone(),
            grpc_address: grpc,
            ttrpc_address: ttrpc
                .filter(|a| !a.is_empty())
                .ok_or(StartError::NoTtrpcAddress)?,
            socket_dir: PathBuf::from(dir.as_deref().unwrap_or(DEFAULT_SOCKET_DIR)),
            debug: flags.debug || input.debug(),
        })
    }

    /// The shim socket of a group, as containerd's own shims name it:
    /// `unix://<dir>/<sha256(<grpc address>/<namespace>/<group>)>`.
    pub fn socket_address(&self, group: &str) -> String {
        let path = Path::new(&self.grpc_address)
            .join(&self.namespace)
            .join(group);
        let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("unix://{}/{hex}", self.socket_dir.display())
    }
}

/// Read stdin, bounded.
fn read_input(mut stdin: impl Read) -> Result<Vec<u8>, StartError> {
    let mut input = Vec::new();
    (&mut stdin)
        .take(MAX_INPUT + 1)
        .read_to_end(&mut input)
        .map_err(StartError::Stdin)?;
    if input.len() as u64 > MAX_INPUT {
        return Err(StartError::InputTooLarge);
    }
    Ok(input)
}

/// The action: the answer is written on stdout.
pub async fn run(flags: &Flags) -> Result<(), StartError> {
    let input = read_input(std::io::stdin().lock())?;
    let input = StartInput::decode(&input, &flags.id, &flags.namespace)?;
    let launch = Launch::new(flags, &input, std::env::var(TTRPC_ADDRESS_ENV).ok())?;
    let bundle = std::env::current_dir().map_err(io("current directory"))?;
    let group = shim_group(&bundle, &launch.id);
    let address = launch.socket_address(&group);
    if !serving(&address) {
        spawn_server(&launch, &address, &bundle, &input).await?;
    }
    // The delete action and vxn-shim-client find the shim by this file.
    std::fs::write(bundle.join("address"), &address).map_err(io("write the address file"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&input.answer(&address))
        .and_then(|()| out.flush())
        .map_err(io("write stdout"))
}

/// Which shim serves the container whose bundle this is: one per VM, so a
/// CRI pod's containers go to their sandbox's shim.
pub fn shim_group(bundle: &Path, id: &str) -> String {
    match oci::load(bundle).and_then(|spec| Role::of(&spec.annotations)) {
        Ok(Role::PodMember { sandbox_id }) => sandbox_id,
        _ => id.to_string(),
    }
}

/// The socket file of a `unix://` address (abstract sockets have none).
pub fn socket_file(address: &str) -> Option<&Path> {
    address
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .map(Path::new)
}

/// Whether a shim answers at this address.
pub fn serving(address: &str) -> bool {
    socket_file(address).is_some_and(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
}

/// Start the serving shim and wait until it listens: it closes its stdout then.
async fn spawn_server(
    launch: &Launch,
    address: &str,
    bundle: &Path,
    input: &StartInput,
) -> Result<(), StartError> {
    let exe = std::env::current_exe().map_err(io("own executable"))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.current_dir(bundle)
        .env(TTRPC_ADDRESS_ENV, &launch.ttrpc_address)
        .args(["-namespace", &launch.namespace, "-id", &launch.id])
        .args(["-address", &launch.grpc_address, "-socket", address])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // It outlives this action: containerd waits for us, not for it.
        .kill_on_drop(false);
    if launch.debug {
        cmd.arg("-debug");
    }
    let mut child = cmd.spawn().map_err(io("spawn the shim"))?;
    if let Some(pid) = child.id() {
        place(pid, input);
    }
    let mut stdout = child.stdout.take().ok_or(StartError::Io {
        what: "the shim's stdout",
        source: std::io::ErrorKind::BrokenPipe.into(),
    })?;
    let mut sink = Vec::new();
    tokio::time::timeout(LISTEN_TIMEOUT, async {
        // Bounded: the child writes nothing but closes the pipe.
        (&mut stdout).take(64 << 10).read_to_end(&mut sink).await
    })
    .await
    .map_err(|_| StartError::ListenTimeout(LISTEN_TIMEOUT))?
    .map_err(io("wait for the shim to listen"))?;
    // The pipe also closes when the shim exits early (its error is in
    // containerd's log): never hand containerd an address nobody serves.
    if !serving(address) {
        return Err(StartError::NotServing);
    }
    Ok(())
}

/// The shim's cgroup (when the runtime options name one) and OOM score (just
/// above containerd's, so the kernel takes the shim before containerd).
fn place(pid: u32, input: &StartInput) {
    if let Some(cg) = input.shim_cgroup() {
        if let Err(e) = containerd_shim::cgroup::add_task_to_cgroup(&cg, pid) {
            eprintln!("containerd-shim-vxn-v2: shim cgroup {cg}: {e}");
        }
    }
    if let Err(e) = containerd_shim::cgroup::adjust_oom_score(pid) {
        eprintln!("containerd-shim-vxn-v2: oom score: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::BootstrapParams;

    fn flags() -> Flags {
        Flags {
            namespace: "default".into(),
            id: "c1".into(),
            address: "/run/containerd/containerd.sock".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_socket_is_where_containerds_own_shims_put_it() {
        let legacy = StartInput::Legacy { options: None };
        let l = Launch::new(&flags(), &legacy, Some("/x.ttrpc".into())).unwrap();
        // containerd-shim 0.11 (and Go's pkg/shim) name it so.
        assert_eq!(
            l.socket_address("c1"),
            containerd_shim::socket_address("/run/containerd/containerd.sock", "default", "c1")
        );
        assert_eq!(l.ttrpc_address, "/x.ttrpc");
        // 2.3+: the socket directory containerd asks for.
        let p = StartInput::Bootstrap(BootstrapParams {
            instance_id: "c1".into(),
            namespace: "default".into(),
            containerd_ttrpc_address: "/y.ttrpc".into(),
            containerd_grpc_address: "/run/containerd/containerd.sock".into(),
            socket_dir: Some("/run/c2/s".into()),
            ..Default::default()
        });
        let l = Launch::new(&flags(), &p, None).unwrap();
        assert_eq!(l.ttrpc_address, "/y.ttrpc");
        let a = l.socket_address("c1");
        assert!(a.starts_with("unix:///run/c2/s/"), "{a}");
        assert_eq!(a.len(), "unix:///run/c2/s/".len() + 64);
    }

    #[test]
    fn a_legacy_start_needs_the_ttrpc_address() {
        let legacy = StartInput::Legacy { options: None };
        assert!(matches!(
            Launch::new(&flags(), &legacy, None),
            Err(StartError::NoTtrpcAddress)
        ));
        let unnamed = Flags::default();
        assert!(matches!(
            Launch::new(&unnamed, &legacy, Some("/x".into())),
            Err(StartError::NoName)
        ));
    }

    #[test]
    fn stdin_is_bounded() {
        let big = vec![0u8; MAX_INPUT as usize + 1];
        assert!(matches!(
            read_input(big.as_slice()),
            Err(StartError::InputTooLarge)
        ));
        assert_eq!(read_input(&b"ab"[..]).unwrap(), b"ab");
    }

    #[test]
    fn a_pods_container_goes_to_its_sandboxs_shim() {
        let dir = tempfile::tempdir().unwrap();
        let spec = r#"{"annotations":{"io.kubernetes.cri.container-type":"container",
            "io.kubernetes.cri.sandbox-id":"pod1"}}"#;
        std::fs::write(dir.path().join("config.json"), spec).unwrap();
        assert_eq!(shim_group(dir.path(), "c1"), "pod1");
        let alone = tempfile::tempdir().unwrap();
        assert_eq!(shim_group(alone.path(), "c1"), "c1");
    }
}
