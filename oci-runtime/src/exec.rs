//! `exec`: a further process in a running container. Its stdio (the fds
//! this command was given, a new pty whose master goes to --console-socket,
//! or with neither, the caller's own terminal) is handed to the container's
//! keeper, which runs it in the guest. With --detach, a keeper of its own
//! (the pid in --pid-file) waits for it and exits with its status, as
//! runc's exec'd process would; without, this command does.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vxn_runtime_core::Error as Core;

use crate::cli::{Exec, KeepExec};
use crate::control::{self, Client, Reply, Request, Streams};
use crate::error::{Error, Result};
use crate::keeper::{take_stdio, FORWARDED};
use crate::spawn::{self, ReadyPipe};
use crate::state::{write_pid_file, ContainerDir};
use crate::tty;
use crate::Globals;

/// How long the guest may take to start an exec (an emulated lab is slow).
const START_WAIT: Duration = Duration::from_secs(180);
/// What an exec reports when its container's keeper vanished under it.
const KEEPER_GONE_CODE: i32 = 137;
pub fn command(g: &Globals, e: Exec) -> Result<i32> {
    let dir = ContainerDir::new(&g.root, &e.id)?;
    let saved = dir.load()?;
    if e.preserve_fds > 0 {
        return Err(Error::Refused(
            "--preserve-fds: a VM cannot inherit host fds".into(),
        ));
    }
    let process = resolve_process(&e, &saved.bundle)?;
    let terminal = process["terminal"].as_bool().unwrap_or(false);
    if !e.detach {
        return run_blocking(dir, process, e.console_socket, None);
    }
    if terminal && e.console_socket.is_none() {
        return Err(Error::Refused(
            "exec --detach --tty needs --console-socket".into(),
        ));
    }
    // The process goes to the keeper in a file of its own (runc's shim
    // removes its --process file as soon as we return).
    let file = dir.dir.join(format!(
        ".exec-{}-{}.json",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let text = serde_json::to_vec(&process).map_err(|e| Error::Keeper(e.to_string()))?;
    std::fs::write(&file, text).map_err(Error::io(format!("write {}", file.display())))?;
    let mut args = g.pass_down();
    args.push("__keep-exec".into());
    args.push("--process".into());
    args.push(file.clone().into());
    if let Some(s) = &e.console_socket {
        args.push("--console-socket".into());
        args.push(s.clone().into());
    }
    args.push(e.id.clone().into());
    let started = spawn::keeper(args, terminal, START_WAIT + Duration::from_secs(30));
    let _ = std::fs::remove_file(&file);
    let started = started?;
    if let Some(p) = &e.pid_file {
        write_pid_file(p, started.pid)?;
    }
    Ok(0)
}

/// The exec's keeper (`__keep-exec`).
pub fn keeper_main(g: &Globals, k: KeepExec) -> i32 {
    let mut ready = ReadyPipe::from_arg(k.ready_fd);
    let _ = nix::unistd::setsid();
    let result = (|| {
        let dir = ContainerDir::new(&g.root, &k.id)?;
        let text = std::fs::read(&k.process).map_err(Error::io("exec process"))?;
        let _ = std::fs::remove_file(&k.process);
        let process: Value = serde_json::from_slice(&text)
            .map_err(|e| Error::Core(Core::InvalidArgument(format!("exec process: {e}"))))?;
        run_blocking(dir, process, k.console_socket, Some(&mut ready))
    })();
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "exec keeper");
            ready.report(&Reply::from_error(&e));
            1
        }
    }
}

fn run_blocking(
    dir: ContainerDir,
    process: Value,
    console_socket: Option<PathBuf>,
    ready: Option<&mut ReadyPipe>,
) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("tokio"))?;
    let code = rt.block_on(run(dir, process, console_socket, ready));
    // Blocking stdio reads may never end; the exec is over.
    rt.shutdown_background();
    code
}

/// The exec's stdio as fds to send, and the terminal whose size to follow.
struct ExecStdio {
    streams: Streams,
    fds: Vec<OwnedFd>,
    tty: Option<OwnedFd>,
    /// The caller's terminal settings, restored at the end.
    restore: Option<(OwnedFd, nix::sys::termios::Termios)>,
}

fn stdio(process: &Value, console_socket: Option<PathBuf>, detached: bool) -> Result<ExecStdio> {
    let terminal = process["terminal"].as_bool().unwrap_or(false);
    let size = process["consoleSize"]["height"]
        .as_u64()
        .zip(process["consoleSize"]["width"].as_u64())
        .and_then(|(h, w)| tty::Size::given(h, w));
    let all = Streams {
        stdin: true,
        stdout: true,
        stderr: true,
        terminal: false,
    };
    let one = Streams {
        terminal: true,
        ..Streams::default()
    };
    match (terminal, console_socket) {
        (false, Some(_)) => Err(Error::Refused(
            "--console-socket is for a process with a terminal only".into(),
        )),
        (false, None) => {
            let fds = if detached {
                take_stdio()?.into()
            } else {
                // Copies (close-on-exec) of our own stdio, which the keeper relays.
                let dup = |fd: std::os::fd::BorrowedFd<'_>| {
                    fd.try_clone_to_owned().map_err(Error::io("dup stdio"))
                };
                vec![
                    dup(std::io::stdin().as_fd())?,
                    dup(std::io::stdout().as_fd())?,
                    dup(std::io::stderr().as_fd())?,
                ]
            };
            Ok(ExecStdio {
                streams: all,
                fds,
                tty: None,
                restore: None,
            })
        }
        (true, Some(socket)) => {
            let pty = tty::open(size)?;
            tty::send_master(&socket, &pty.master)?;
            if let Err(e) = tty::take_as_controlling(&pty.slave) {
                tracing::warn!(error = %e, "terminal resizes will not be followed");
            }
            let fd = pty.slave.try_clone().map_err(Error::io("dup tty"))?;
            Ok(ExecStdio {
                streams: one,
                fds: vec![fd],
                tty: Some(pty.slave),
                restore: None,
            })
        }
        (true, None) => {
            // The caller's own terminal, as `runc exec -t` in a shell uses it.
            let stdin = std::io::stdin();
            if !nix::unistd::isatty(stdin.as_raw_fd()).unwrap_or(false) {
                return Err(Error::Refused(
                    "exec --tty needs a terminal on stdin or --console-socket".into(),
                ));
            }
            let fd = stdin
                .as_fd()
                .try_clone_to_owned()
                .map_err(Error::io("dup tty"))?;
            let before = tty::make_raw(&fd)?;
            let tty = fd.try_clone().map_err(Error::io("dup tty"))?;
            let restore = fd.try_clone().map_err(Error::io("dup tty"))?;
            Ok(ExecStdio {
                streams: one,
                fds: vec![fd],
                tty: Some(tty),
                restore: Some((restore, before)),
            })
        }
    }
}

async fn run(
    dir: ContainerDir,
    process: Value,
    console_socket: Option<PathBuf>,
    mut ready: Option<&mut ReadyPipe>,
) -> Result<i32> {
    let io = stdio(&process, console_socket, ready.is_some())?;
    let result = relay(&dir, process, &io, &mut ready).await;
    if let Some((fd, t)) = &io.restore {
        tty::restore(fd, t);
    }
    result
}

async fn relay(
    dir: &ContainerDir,
    process: Value,
    io: &ExecStdio,
    ready: &mut Option<&mut ReadyPipe>,
) -> Result<i32> {
    let mut client = Client::connect(dir)?.ok_or_else(|| Error::NotRunning(dir.id().into()))?;
    let raw: Vec<_> = io.fds.iter().map(|f| f.as_raw_fd()).collect();
    client.send(
        &Request::Exec {
            process,
            streams: io.streams,
        },
        &raw,
    )?;
    // Nothing else runs on this runtime yet: waiting in place is fine.
    client.recv(Some(START_WAIT))?.into_result()?;
    if let Some(r) = ready.as_mut() {
        r.report(&Reply::Ok);
    }
    let std = client.into_stream();
    std.set_nonblocking(true)
        .map_err(Error::io("keeper socket"))?;
    let conn = tokio::net::UnixStream::from_std(std).map_err(Error::io("keeper socket"))?;
    let (mut rd, mut wr) = conn.into_split();
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch = signal(SignalKind::window_change()).map_err(Error::io("signals"))?;
    let (sig_tx, mut sig_rx) = tokio::sync::mpsc::channel::<i32>(16);
    for sig in FORWARDED {
        if let Ok(mut s) = signal(SignalKind::from_raw(sig)) {
            let tx = sig_tx.clone();
            tokio::spawn(
                async move { while s.recv().await.is_some() && tx.send(sig).await.is_ok() {} },
            );
        }
    }
    if let Some(t) = &io.tty {
        send_resize(&mut wr, t).await;
    }
    let read_exit = async {
        let mut header = [0u8; 4];
        rd.read_exact(&mut header).await.ok()?;
        let mut body = vec![0u8; control::frame_len(header).ok()?];
        rd.read_exact(&mut body).await.ok()?;
        control::decode::<Reply>(&body).ok()
    };
    tokio::pin!(read_exit);
    loop {
        tokio::select! {
            reply = &mut read_exit => return Ok(match reply {
                Some(Reply::Exited { code }) => (code & 0xff) as i32,
                _ => {
                    tracing::warn!("the container's keeper went away before the exec exited");
                    KEEPER_GONE_CODE
                }
            }),
            _ = winch.recv() => {
                if let Some(t) = &io.tty {
                    send_resize(&mut wr, t).await;
                }
            }
            Some(sig) = sig_rx.recv() => {
                let frame = control::encode(&Request::Kill { signal: sig as u32, all: false })?;
                let _ = wr.write_all(&frame).await;
            }
        }
    }
}

async fn send_resize(w: &mut tokio::net::unix::OwnedWriteHalf, t: &OwnedFd) {
    if let Some(s) = tty::size(t) {
        let req = Request::Resize {
            rows: s.rows.into(),
            cols: s.cols.into(),
        };
        if let Ok(frame) = control::encode(&req) {
            let _ = w.write_all(&frame).await;
        }
    }
}

/// The process to run: --process as given, or the container's own process
/// with runc exec's flags applied (args, env, cwd, user, tty).
fn resolve_process(e: &Exec, bundle: &Path) -> Result<Value> {
    if let Some(path) = &e.process {
        let text = std::fs::read(path).map_err(Error::io(format!("read {}", path.display())))?;
        return serde_json::from_slice(&text).map_err(|err| {
            Error::Core(Core::InvalidArgument(format!("{}: {err}", path.display())))
        });
    }
    if e.args.is_empty() {
        return Err(Error::Refused(
            "exec: give the command as arguments or --process".into(),
        ));
    }
    let config = bundle.join("config.json");
    let text = std::fs::read(&config).map_err(Error::io(format!("read {}", config.display())))?;
    let spec: Value = serde_json::from_slice(&text).map_err(|err| {
        Error::Core(Core::InvalidArgument(format!(
            "{}: {err}",
            config.display()
        )))
    })?;
    let mut p = spec.get("process").cloned().unwrap_or_else(|| json!({}));
    p["args"] = json!(e.args);
    p["terminal"] = json!(e.tty);
    p.as_object_mut().map(|o| o.remove("consoleSize"));
    if let Some(cwd) = &e.cwd {
        p["cwd"] = json!(cwd);
    }
    let mut env: Vec<String> = p["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for kv in &e.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|old| old.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p["env"] = json!(env);
    if let Some(user) = &e.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let parse = |s: &str| {
            s.parse::<u32>().map_err(|_| {
                Error::Refused(format!(
                    "--user {user}: numeric UID[:GID] only (names are the guest's)"
                ))
            })
        };
        p["user"]["uid"] = json!(parse(uid)?);
        p["user"]["gid"] = json!(parse(gid)?);
    }
    if !e.additional_gids.is_empty() {
        p["user"]["additionalGids"] = json!(e.additional_gids);
    }
    if e.no_new_privs {
        p["noNewPrivileges"] = json!(true);
    }
    for cap in &e.caps {
        for set in ["bounding", "effective", "permitted"] {
            if let Some(list) = p["capabilities"][set].as_array_mut() {
                list.push(json!(cap));
            } else {
                p["capabilities"][set] = json!([cap]);
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn exec(args: &[&str]) -> Exec {
        let mut argv = vec!["vxn-oci-runtime", "exec"];
        argv.extend(args);
        match crate::cli::Cli::parse_from(argv).command {
            Some(crate::cli::Command::Exec(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_apply_over_the_containers_process() {
        let b = tempfile::tempdir().unwrap();
        std::fs::write(
            b.path().join("config.json"),
            r#"{"process":{"args":["sleep","9"],"env":["PATH=/bin","A=1"],"cwd":"/","user":{"uid":0,"gid":0},"consoleSize":{"height":1,"width":1}}}"#,
        )
        .unwrap();
        let e = exec(&[
            "-e", "A=2", "--cwd", "/tmp", "-u", "5:6", "-t", "c1", "sh", "-c", "echo hi",
        ]);
        let p = resolve_process(&e, b.path()).unwrap();
        assert_eq!(p["args"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(p["cwd"], "/tmp");
        assert_eq!(p["user"]["uid"], 5);
        assert_eq!(p["user"]["gid"], 6);
        assert_eq!(p["terminal"], true);
        assert!(p.get("consoleSize").is_none());
        assert!(resolve_process(&exec(&["c1"]), b.path()).is_err());
        assert!(resolve_process(&exec(&["-u", "bob", "c1", "true"]), b.path()).is_err());
    }
}
