//! The container image is hostile: its symlinks, special files and device
//! nodes must never reach outside the container, and a container without
//! CAP_SYS_ADMIN cannot mount or reach the agent. Needs root (common/mod.rs).

mod common;

use std::path::Path;

use common::*;
use vxn_wire::protocol::{Capabilities, MountKind, MountSpec, ProcessSpec};

/// containerd's default set (ctr, CRI): no CAP_SYS_ADMIN, CAP_SYS_PTRACE.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn default_caps() -> Capabilities {
    Capabilities {
        bounding: names(DEFAULT_CAPS),
        effective: names(DEFAULT_CAPS),
        permitted: names(DEFAULT_CAPS),
        ..Default::default()
    }
}

fn sh(script: &str) -> ProcessSpec {
    spec(&["sh", "-c", script])
}

fn with_caps(mut p: ProcessSpec, c: Capabilities) -> ProcessSpec {
    p.capabilities = Some(c);
    p
}

#[tokio::test]
async fn mount_targets_that_are_symlinks_stay_inside_the_container() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let outside = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let r = a.rootfs.path();
    // /etc/hosts and /data point outside the image (absolute, `..`, dangling).
    std::os::unix::fs::symlink(
        format!("/../../../../..{}/hosts", outside.path().display()),
        r.join("etc/hosts"),
    )
    .unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), r.join("data")).unwrap();
    let mut mounts = MountSpec::defaults();
    mounts.push(MountSpec {
        destination: "/etc/hosts".into(),
        kind: MountKind::File {
            contents: "10.0.0.1 inside\n".into(),
            mode: 0o644,
        },
        options: vec!["ro".into()],
    });
    mounts.push(MountSpec {
        destination: "/data".into(),
        kind: MountKind::Kernel {
            fstype: "tmpfs".into(),
        },
        options: vec![],
    });
    let o = a
        .run_with(
            "links",
            sh("cat /etc/hosts; touch /data/made && echo made"),
            None,
            mounts,
        )
        .await;
    assert_eq!(o.out(), "10.0.0.1 inside\nmade\n", "stderr: {}", o.err());
    // Nothing was created, mounted or written where the links pointed.
    assert!(!outside.path().join("hosts").exists());
    assert!(!elsewhere.path().join("made").exists());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&outside.path().display().to_string()));
    assert!(!mounts.contains(&elsewhere.path().display().to_string()));
}

#[tokio::test]
async fn a_cwd_through_a_symlink_or_magic_link_stays_inside() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let outside = tempfile::tempdir().unwrap();
    let r = a.rootfs.path();
    std::os::unix::fs::symlink(outside.path(), r.join("work")).unwrap();
    // The agent resolves paths while the container's /proc is mounted: /proc/1/root
    // would be the agent's root if it were followed.
    std::os::unix::fs::symlink("/proc/1/root/tmp/vxn-magic-escape", r.join("magic")).unwrap();
    let mut p = spec(&["pwd"]);
    p.cwd = "/work/sub".into();
    let o = a.run("cwd-link", p, None).await;
    assert_eq!(o.status.code, 0, "stderr: {}", o.err());
    assert!(
        !outside.path().join("sub").exists(),
        "cwd created outside the image"
    );
    let mut p = spec(&["pwd"]);
    p.cwd = "/magic/x".into();
    // Either it runs inside the container or it fails cleanly; it never creates in the agent's root.
    let _io = a.create("cwd-magic", p, false).await;
    if a.client.start("cwd-magic", None).await.is_ok() {
        a.client.wait("cwd-magic", None).await.unwrap();
    }
    assert!(
        !Path::new("/tmp/vxn-magic-escape").exists(),
        "cwd created in the agent's root"
    );
}

#[tokio::test]
async fn a_fifo_for_etc_passwd_is_an_error_not_a_hang() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let passwd = a.rootfs.path().join("etc/passwd");
    std::fs::remove_file(&passwd).unwrap();
    nix::unistd::mkfifo(&passwd, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let _io = a.create("fifo", spec(&["true"]), false).await;
    let t = std::time::Instant::now();
    let e = a.client.start("fifo", None).await.unwrap_err();
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        e.to_string()
            .contains("/etc/passwd in the image is not a regular file"),
        "{e}"
    );
}

#[tokio::test]
async fn default_capabilities_cannot_mount_privileged_can() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let script = "grep CapEff /proc/self/status; mount -t tmpfs x /tmp && echo MOUNTED; \
                  mount -o remount,rw / && echo REMOUNTED; true";
    let o = a
        .run("caps", with_caps(sh(script), default_caps()), None)
        .await;
    assert!(o.out().contains("CapEff:\t00000000a80425fb"), "{}", o.out());
    assert!(!o.out().contains("MOUNTED"), "{} {}", o.out(), o.err());
    // No capabilities in the spec: none at all.
    let o = a
        .run(
            "nocaps",
            with_caps(sh("grep CapEff /proc/self/status"), Capabilities::default()),
            None,
        )
        .await;
    assert!(o.out().contains("CapEff:\t0000000000000000"), "{}", o.out());
    let all: Vec<&str> = vec![
        "CAP_SYS_ADMIN",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_SETUID",
        "CAP_SETGID",
    ];
    let privileged = Capabilities {
        bounding: names(&all),
        effective: names(&all),
        permitted: names(&all),
        ..Default::default()
    };
    let o = a
        .run(
            "priv",
            with_caps(sh("mount -t tmpfs x /tmp && echo MOUNTED"), privileged),
            None,
        )
        .await;
    assert_eq!(o.out(), "MOUNTED\n", "{}", o.err());
}

#[tokio::test]
async fn ambient_capabilities_reach_a_non_root_user() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let c = Capabilities {
        bounding: names(&["CAP_NET_BIND_SERVICE"]),
        effective: names(&["CAP_NET_BIND_SERVICE"]),
        permitted: names(&["CAP_NET_BIND_SERVICE"]),
        inheritable: names(&["CAP_NET_BIND_SERVICE"]),
        ambient: names(&["CAP_NET_BIND_SERVICE"]),
    };
    let mut p = with_caps(sh("id -u; grep -E 'CapEff|CapAmb' /proc/self/status"), c);
    p.user.user = Some("1000".into());
    p.no_new_privileges = true;
    let o = a.run("ambient", p, None).await;
    assert_eq!(
        o.out(),
        "1000\nCapEff:\t0000000000000400\nCapAmb:\t0000000000000400\n",
        "{}",
        o.err()
    );
}

#[tokio::test]
async fn device_nodes_made_in_the_container_open_nothing_and_the_agent_is_out_of_reach() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let agent = a.child.id();
    let script = format!(
        "mknod /tmp/null c 1 3 && (cat /tmp/null && echo TMP-NODE-OPENED); \
         mknod /dev/zero2 c 1 5 && (head -c1 /dev/zero2 >/dev/null && echo DEV-NODE-OPENED); \
         echo ok > /dev/null && echo DEVNULL-OK; \
         cat /proc/{agent}/fd/0 >/dev/null 2>&1 && echo AGENT-CHANNEL-OPENED; \
         readlink /proc/{agent}/fd/0 >/dev/null 2>&1 && echo AGENT-CHANNEL-VISIBLE; \
         ls /proc/{agent}/root/ >/dev/null 2>&1 && echo AGENT-ROOT-VISIBLE; true"
    );
    let o = a
        .run("nodes", with_caps(sh(&script), default_caps()), None)
        .await;
    let out = o.out();
    assert!(out.contains("DEVNULL-OK"), "{out} {}", o.err());
    for bad in [
        "TMP-NODE-OPENED",
        "DEV-NODE-OPENED",
        "AGENT-CHANNEL-OPENED",
        "AGENT-CHANNEL-VISIBLE",
        "AGENT-ROOT-VISIBLE",
    ] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
}

#[tokio::test]
async fn thousands_of_processes_come_back_in_pages() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let _io = a
        .create(
            "many",
            sh("i=0; while [ $i -lt 1500 ]; do sleep 1000 & i=$((i+1)); done; echo started; wait"),
            false,
        )
        .await;
    a.client.start("many", None).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let got = loop {
        let got = a.client.list_pids("many").await.unwrap();
        if got.len() > 1500 || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(got.len(), 1501, "init and its 1500 sleeps");
    assert!(got.windows(2).all(|w| w[0].pid < w[1].pid));
    a.client.delete("many", None).await.unwrap();
}
