//! A layered rootfs as a Xen guest gets it: the image's EROFS read-only and
//! the container's ext4 writable layer, here on dom0-style loop devices.
//! Needs root (see common/mod.rs), mkfs.erofs and losetup; skipped without.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use vxn_runtime_core::StdioRequest;
use vxn_wire::protocol::{BlockFs, CreateContainer, MountSpec, RootfsSource};

/// A loop device, detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn attach(file: &Path, ro: bool) -> Loop {
    let mut cmd = Command::new("losetup");
    cmd.args(["--find", "--show"]);
    if ro {
        cmd.arg("--read-only");
    }
    let out = cmd.arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Loop(String::from_utf8(out.stdout).unwrap().trim().to_string())
}

fn tools() -> bool {
    for t in ["mkfs.erofs", "losetup", "debugfs"] {
        if Command::new(t).arg("--help").output().is_err() {
            eprintln!("skipping: {t} is not installed");
            return false;
        }
    }
    true
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (erofs image of busybox, ext4 writable layer with upper/ and work/).
fn images(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("image");
    busybox_rootfs(&root);
    let lower = dir.join("lower.erofs");
    run(Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&lower)
        .arg(&root));
    let staging = dir.join("upper-src");
    std::fs::create_dir_all(staging.join("upper")).unwrap();
    std::fs::create_dir_all(staging.join("work")).unwrap();
    let upper = dir.join("upper.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
        .arg(&staging)
        .arg(&upper)
        .arg("32M"));
    (lower, upper)
}

async fn run_in(
    a: &TestAgent,
    id: &str,
    rootfs: RootfsSource,
    readonly: bool,
    script: &str,
) -> (i32, String) {
    let (ids, mut io) = a
        .client
        .open_stdio(StdioRequest {
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .unwrap();
    a.client
        .create_container(CreateContainer {
            container_id: id.into(),
            hostname: None,
            rootfs,
            readonly_rootfs: readonly,
            mounts: MountSpec::defaults(),
            process: spec(&["/bin/sh", "-c", script]),
            stdio: ids,
            memory_limit_bytes: None,
            isolation: Default::default(),
        })
        .await
        .expect("create");
    a.client.start(id, None).await.expect("start");
    let (out, _err) = tokio::join!(collect(io.stdout.take()), collect(io.stderr.take()));
    let status = a.client.wait(id, None).await.expect("wait");
    a.client.delete(id, None).await.expect("delete");
    (status.code, String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn the_container_runs_on_the_image_and_writes_to_its_own_layer() {
    if !require_root() || !tools() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (lower, upper) = images(t.path());
    let (lo, up) = (attach(&lower, true), attach(&upper, false));
    let rootfs = RootfsSource::Overlay {
        lower: BlockFs {
            device: lo.0.clone(),
            fstype: "erofs".into(),
        },
        upper: BlockFs {
            device: up.0.clone(),
            fstype: "ext4".into(),
        },
    };
    let a = start_agent().await;
    let (code, out) = run_in(
        &a,
        "layered",
        rootfs.clone(),
        false,
        "echo written > /etc/new && rm /bin/true && cat /etc/new && ls /bin/true 2>&1; \
         grep ' / ' /proc/mounts | cut -d' ' -f3",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("written\n"), "{out}");
    assert!(
        out.contains("No such file"),
        "the removal did not show: {out}"
    );
    assert!(out.trim_end().ends_with("overlay"), "{out}");
    // A read-only rootfs stays read-only.
    let (code, _) = run_in(&a, "ro", rootfs, true, "touch /x").await;
    assert_ne!(code, 0);
    drop(a);
    drop(up);
    // The write went to the writable layer, the removal is a whiteout there.
    let o = Command::new("debugfs")
        .args(["-R", "ls -l /upper/etc"])
        .arg(&upper)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("new"));
}

#[tokio::test]
async fn a_layer_device_that_is_not_a_plain_dev_path_is_refused() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let (ids, _io) = a.client.open_stdio(StdioRequest::default()).unwrap();
    let fs = |d: &str| BlockFs {
        device: d.into(),
        fstype: "ext4".into(),
    };
    let e = a
        .client
        .create_container(CreateContainer {
            container_id: "bad".into(),
            hostname: None,
            rootfs: RootfsSource::Overlay {
                lower: fs("/dev/../etc/passwd"),
                upper: fs("/dev/xvdc"),
            },
            readonly_rootfs: false,
            mounts: vec![],
            process: spec(&["true"]),
            stdio: ids,
            memory_limit_bytes: None,
            isolation: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a device"), "{e}");
}
