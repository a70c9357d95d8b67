//! Test harness: a real vxn-agent child in test mode (private namespaces),
//! connected over a socketpair, with a busybox rootfs built per test.
//! These tests need root (mount and UTS namespaces, chroot, mknod).
#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use vxn_runtime_core::{AgentClient, HostStdio, StdioRequest};
use vxn_wire::protocol::{
    CreateContainer, ExitStatus, MountSpec, ProcessSpec, RootfsSource, UserSpec,
};

pub const BUSYBOX: &str = "/bin/busybox";

pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: this test needs root (namespaces, chroot, mounts)");
    false
}

/// A minimal image: busybox with its applets, passwd/group with a user.
pub fn busybox_rootfs(dir: &Path) {
    for d in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "home/user",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox"))
        .expect("busybox-static is installed (apt-get install busybox-static)");
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nextra:x:2000:user\n",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
}

pub struct TestAgent {
    pub client: AgentClient,
    pub child: Child,
    pub rootfs: tempfile::TempDir,
    pub state: tempfile::TempDir,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn agent_command(state: &Path, channel: OwnedFd) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vxn-agent"));
    cmd.args([
        "--channel",
        "fd:0",
        "--log",
        "warn",
        "--die-with-parent",
        "--state-dir",
    ])
    .arg(state)
    .stdin(Stdio::from(channel))
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    cmd
}

pub async fn start_agent() -> TestAgent {
    let rootfs = tempfile::tempdir().unwrap();
    busybox_rootfs(rootfs.path());
    let state = tempfile::tempdir().unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let child = agent_command(state.path(), theirs.into()).spawn().unwrap();
    ours.set_nonblocking(true).unwrap();
    let stream = tokio::net::UnixStream::from_std(ours).unwrap();
    let client = AgentClient::connect(stream, Duration::from_secs(10))
        .await
        .expect("handshake");
    TestAgent {
        client,
        child,
        rootfs,
        state,
    }
}

pub fn spec(args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: UserSpec::default(),
        ..Default::default()
    }
}

impl TestAgent {
    /// Create container `id` with `process`; returns the host stdio ends.
    pub async fn create(&self, id: &str, process: ProcessSpec, stdin: bool) -> HostStdio {
        self.create_with(id, process, stdin, MountSpec::defaults())
            .await
            .expect("create")
    }

    /// Create container `id` with these mounts; the agent's error if it refuses.
    pub async fn create_with(
        &self,
        id: &str,
        process: ProcessSpec,
        stdin: bool,
        mounts: Vec<MountSpec>,
    ) -> Result<HostStdio, vxn_runtime_core::ClientError> {
        let want = StdioRequest {
            stdin,
            stdout: true,
            stderr: true,
            terminal: process.terminal,
        };
        let (ids, io) = self.client.open_stdio(want).unwrap();
        self.client
            .create_container(CreateContainer {
                container_id: id.into(),
                hostname: Some(format!("{id}-host")),
                rootfs: RootfsSource::Directory {
                    path: self.rootfs.path().to_string_lossy().into(),
                },
                readonly_rootfs: false,
                mounts,
                process,
                stdio: ids,
                memory_limit_bytes: None,
                isolation: Default::default(),
            })
            .await?;
        Ok(io)
    }

    /// Run `process` as the init of a new container to completion.
    pub async fn run(&self, id: &str, process: ProcessSpec, input: Option<&[u8]>) -> Output {
        self.run_with(id, process, input, MountSpec::defaults())
            .await
    }

    /// Run `process` to completion in a container with these mounts.
    pub async fn run_with(
        &self,
        id: &str,
        process: ProcessSpec,
        input: Option<&[u8]>,
        mounts: Vec<MountSpec>,
    ) -> Output {
        let mut io = self
            .create_with(id, process, input.is_some(), mounts)
            .await
            .expect("create");
        self.client.start(id, None).await.expect("start");
        if let (Some(w), Some(data)) = (io.stdin.take(), input) {
            w.send(Bytes::copy_from_slice(data)).await.unwrap();
            w.close();
        }
        let (out, err) = tokio::join!(collect(io.stdout.take()), collect(io.stderr.take()));
        let status = self.client.wait(id, None).await.expect("wait");
        self.client.delete(id, None).await.expect("delete");
        Output {
            status,
            stdout: out,
            stderr: err,
        }
    }
}

pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

pub async fn collect(r: Option<vxn_wire::mux::StreamReader>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(mut r) = r {
        while let Some(chunk) = r.recv().await.unwrap() {
            out.extend_from_slice(&chunk);
        }
    }
    out
}

/// Read until `needle` shows up in the accumulated output.
pub async fn read_until(r: &mut vxn_wire::mux::StreamReader, acc: &mut Vec<u8>, needle: &str) {
    let fut = async {
        while !String::from_utf8_lossy(acc).contains(needle) {
            match r.recv().await.unwrap() {
                Some(c) => acc.extend_from_slice(&c),
                None => panic!(
                    "EOF before {needle:?}; got {:?}",
                    String::from_utf8_lossy(acc)
                ),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out waiting for {needle:?}; got {:?}",
                String::from_utf8_lossy(acc)
            )
        });
}

pub fn vm_hwm_kib(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

pub fn path(p: &Path) -> PathBuf {
    p.to_path_buf()
}
