//! What a container user sees from the agent: exit codes, signals, stdio,
//! argv/env/cwd/user fidelity, ttys, exec. Needs root (see common/mod.rs).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use vxn_runtime_core::StdioRequest;
use vxn_wire::protocol::{ErrorKind, UserSpec, WindowSize};

#[tokio::test]
async fn echo_prints_and_exits_zero() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let o = a.run("echo", spec(&["/bin/echo", "hello"]), None).await;
    assert_eq!(o.out(), "hello\n");
    assert_eq!(o.status.code, 0);
    assert_eq!(o.status.signal, None);
}

#[tokio::test]
async fn exit_code_is_reported() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let o = a.run("exit3", spec(&["sh", "-c", "exit 3"]), None).await;
    assert_eq!(o.status.code, 3);
}

#[tokio::test]
async fn sigterm_gives_143() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let mut io = a.create("term", spec(&["sleep", "100"]), false).await;
    a.client.start("term", None).await.unwrap();
    a.client
        .signal("term", None, libc::SIGTERM, false)
        .await
        .unwrap();
    let status = a.client.wait("term", None).await.unwrap();
    assert_eq!((status.code, status.signal), (143, Some(libc::SIGTERM)));
    assert!(collect(io.stdout.take()).await.is_empty());
    // A finished process can no longer be signalled: NotFound, as containerd expects.
    let e = a
        .client
        .signal("term", None, libc::SIGKILL, false)
        .await
        .unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::NotFound));
}

#[tokio::test]
async fn trapped_sigterm_exits_with_its_own_code() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let mut io = a
        .create(
            "trap",
            spec(&[
                "sh",
                "-c",
                "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done",
            ]),
            false,
        )
        .await;
    a.client.start("trap", None).await.unwrap();
    let mut out = Vec::new();
    let stdout = io.stdout.as_mut().unwrap();
    read_until(stdout, &mut out, "ready").await;
    a.client
        .signal("trap", None, libc::SIGTERM, false)
        .await
        .unwrap();
    read_until(stdout, &mut out, "got-term").await;
    assert_eq!(a.client.wait("trap", None).await.unwrap().code, 42);
}

#[tokio::test]
async fn stdout_and_stderr_arrive_separately() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let o = a
        .run("split", spec(&["sh", "-c", "echo out; echo err >&2"]), None)
        .await;
    assert_eq!(o.out(), "out\n");
    assert_eq!(o.err(), "err\n");
}

#[tokio::test]
async fn stdin_is_piped_then_closed() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let o = a.run("cat", spec(&["cat"]), Some(b"abc")).await;
    assert_eq!(o.out(), "abc");
    assert_eq!(o.status.code, 0);
}

#[tokio::test]
async fn argv_arrives_unchanged() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let args = [
        "printf",
        "[%s]\n",
        "two words",
        "\"quoted\" 'single'",
        "$HOME",
        "*",
        "",
        "a;b|c",
    ];
    let o = a.run("argv", spec(&args), None).await;
    assert_eq!(
        o.out(),
        "[two words]\n[\"quoted\" 'single']\n[$HOME]\n[*]\n[]\n[a;b|c]\n"
    );
}

#[tokio::test]
async fn env_cwd_and_numeric_user_apply() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let mut s = spec(&[
        "sh",
        "-c",
        "echo $FOO; pwd; id -u; id -g; echo $HOME; hostname",
    ]);
    s.env.push("FOO=bar baz".into());
    s.cwd = "/tmp".into();
    s.user = UserSpec {
        user: Some("1000".into()),
        group: Some("1000".into()),
        ..Default::default()
    };
    let o = a.run("env", s, None).await;
    assert_eq!(
        o.out(),
        "bar baz\n/tmp\n1000\n1000\n/home/user\nenv-host\n",
        "stderr: {}",
        o.err()
    );
}

#[tokio::test]
async fn named_user_gets_groups_from_the_image() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let mut s = spec(&["id"]);
    s.user = UserSpec {
        user: Some("user".into()),
        ..Default::default()
    };
    let o = a.run("named", s, None).await;
    assert_eq!(
        o.out(),
        "uid=1000(user) gid=1000(user) groups=1000(user),2000(extra)\n"
    );
}

#[tokio::test]
async fn missing_cwd_is_created_and_missing_executable_is_a_clear_error() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let mut s = spec(&["pwd"]);
    s.cwd = "/work/dir".into();
    assert_eq!(a.run("cwd", s, None).await.out(), "/work/dir\n");

    let _io = a.create("nope", spec(&["/no/such/binary"]), false).await;
    let e = a.client.start("nope", None).await.unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::InvalidArgument));
    assert!(e.to_string().contains("executable file not found"), "{e}");
    assert_eq!(a.client.wait("nope", None).await.unwrap().code, 127);
    a.client.delete("nope", None).await.unwrap();
}

#[tokio::test]
async fn empty_argv_is_rejected() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let (ids, _io) = a.client.open_stdio(StdioRequest::default()).unwrap();
    let e = a
        .client
        .create_container(vxn_wire::protocol::CreateContainer {
            container_id: "empty".into(),
            hostname: None,
            rootfs: vxn_wire::protocol::RootfsSource::Directory {
                path: a.rootfs.path().to_string_lossy().into(),
            },
            readonly_rootfs: false,
            mounts: vec![],
            process: spec(&[]),
            stdio: ids,
            memory_limit_bytes: None,
            isolation: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::InvalidArgument));
    // Nothing is left behind: the id is free again.
    let o = a.run("empty", spec(&["true"]), None).await;
    assert_eq!(o.status.code, 0);
}

#[tokio::test]
async fn tty_reports_its_size_and_follows_resizes() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let mut s = spec(&["sh", "-c", "tty; stty size; read x; stty size"]);
    s.terminal = true;
    s.console_size = Some(WindowSize { rows: 24, cols: 80 });
    let io = a.create("tty", s, true).await;
    assert!(io.stderr.is_none(), "a tty has one output stream");
    a.client.start("tty", None).await.unwrap();
    let mut stdout = io.stdout.unwrap();
    let mut out = Vec::new();
    read_until(&mut stdout, &mut out, "24 80").await;
    assert!(
        String::from_utf8_lossy(&out).contains("/dev/pts/"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    a.client
        .resize_tty(
            "tty",
            None,
            WindowSize {
                rows: 40,
                cols: 100,
            },
        )
        .await
        .unwrap();
    io.stdin
        .as_ref()
        .unwrap()
        .send(Bytes::from_static(b"\n"))
        .await
        .unwrap();
    read_until(&mut stdout, &mut out, "40 100").await;
    assert_eq!(a.client.wait("tty", None).await.unwrap().code, 0);
}

/// `ctr run -t` without a size yet (no terminal on the client side) must not
/// leave the pty at 0x0: busybox `stty size` fails on that.
#[tokio::test]
async fn tty_without_a_size_is_80x24() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let mut s = spec(&["stty", "size"]);
    s.terminal = true;
    s.console_size = None;
    let io = a.create("tty0", s, true).await;
    a.client.start("tty0", None).await.unwrap();
    let mut stdout = io.stdout.unwrap();
    let mut out = Vec::new();
    read_until(&mut stdout, &mut out, "24 80").await;
    assert_eq!(a.client.wait("tty0", None).await.unwrap().code, 0);
}

#[tokio::test]
async fn exec_runs_beside_init_and_pids_list_both() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let _io = a.create("execc", spec(&["sleep", "100"]), false).await;
    let init_pid = a.client.start("execc", None).await.unwrap();

    let (ids, mut eio) = a
        .client
        .open_stdio(StdioRequest {
            stdin: false,
            stdout: true,
            stderr: true,
            terminal: false,
        })
        .unwrap();
    a.client
        .exec(
            "execc",
            "e1",
            spec(&["sh", "-c", "echo from-exec; exit 9"]),
            ids,
        )
        .await
        .unwrap();
    let e = a
        .client
        .exec("execc", "e1", spec(&["true"]), Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::AlreadyExists));
    a.client.start("execc", Some("e1")).await.unwrap();
    assert_eq!(collect(eio.stdout.take()).await, b"from-exec\n");
    assert_eq!(a.client.wait("execc", Some("e1")).await.unwrap().code, 9);
    a.client.delete("execc", Some("e1")).await.unwrap();

    let pids = a.client.list_pids("execc").await.unwrap();
    assert!(
        pids.iter()
            .any(|p| p.pid == init_pid && p.command == "sleep 100"),
        "{pids:?}"
    );

    a.client
        .signal("execc", None, libc::SIGKILL, false)
        .await
        .unwrap();
    assert_eq!(a.client.wait("execc", None).await.unwrap().code, 137);
    let e = a.client.start("execc", Some("e1")).await.unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::NotFound));
}

#[tokio::test]
async fn stats_and_unknown_ids() {
    if !require_root() {
        return;
    }
    let a = start_agent().await;
    let _io = a.create("st", spec(&["sleep", "100"]), false).await;
    a.client.start("st", None).await.unwrap();
    let s = a.client.stats("st", false).await.unwrap();
    assert!(s.memory_usage_bytes > 0 && s.memory_limit_bytes >= s.memory_usage_bytes);
    assert!(s.cpu_usage_ns > 0 && s.pids >= 1);
    let e = a.client.stats("nope", false).await.unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::NotFound));
    let e = a.client.start("st", None).await.unwrap_err();
    assert_eq!(e.agent_kind(), Some(ErrorKind::FailedPrecondition));
    a.client.delete("st", None).await.unwrap();
    assert_eq!(
        a.client.list_pids("st").await.unwrap_err().agent_kind(),
        Some(ErrorKind::NotFound)
    );
}

#[tokio::test]
async fn shutdown_ends_the_agent() {
    if !require_root() {
        return;
    }
    let mut a = start_agent().await;
    let _io = a.create("sd", spec(&["sleep", "100"]), false).await;
    a.client.start("sd", None).await.unwrap();
    a.client.shutdown().await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), a.client.closed())
        .await
        .unwrap();
    assert!(!reason.is_empty());
    let status = a.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
