//! The keeper's side of the control socket: one request per connection,
//! from this user only, translated onto the model. An exec's connection stays
//! open: its resizes and signals come in on it, its exit goes out.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use vxn_runtime_core::ids::ExecId;
use vxn_runtime_core::model::process::Status;
use vxn_runtime_core::oci;
use vxn_runtime_core::Error as Core;

use crate::control::{self, Reply, Request};
use crate::error::{Error, Result};
use crate::holding::Keeper;
use crate::state::ContainerDir;
use crate::stdio::FdStdio;

/// How long a client may take to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(10);

pub fn bind(dir: &ContainerDir) -> Result<UnixListener> {
    let std = std::os::unix::net::UnixListener::bind_addr(&dir.socket()?).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            Error::Core(Core::AlreadyExists(format!(
                "container {} already has a keeper",
                dir.id()
            )))
        } else {
            Error::io("bind the control socket")(e)
        }
    })?;
    std.set_nonblocking(true)
        .map_err(Error::io("control socket"))?;
    UnixListener::from_std(std).map_err(Error::io("control socket"))
}

pub async fn accept_loop(listener: UnixListener, keeper: Arc<Keeper>) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        // Abstract sockets have no file permissions: check who is calling.
        match conn.peer_cred() {
            Ok(c) if c.uid() == me || c.uid() == 0 => {}
            _ => continue,
        }
        let k = keeper.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(conn, k).await {
                tracing::debug!(error = %e, "control connection");
            }
        });
    }
}

/// The first frame of a connection and the fds that came with it.
async fn first_frame(conn: &UnixStream) -> Result<(Request, Vec<OwnedFd>)> {
    let mut got = Vec::new();
    let mut fds = Vec::new();
    let read = async {
        loop {
            conn.readable().await.map_err(Error::io("control socket"))?;
            let mut buf = vec![0u8; 64 * 1024];
            let r = conn.try_io(tokio::io::Interest::READABLE, || {
                control::recv_with_fds(conn.as_raw_fd(), &mut buf)
            });
            match r {
                Ok((0, _)) => return Err(Error::Keeper("client hung up".into())),
                Ok((n, more)) => {
                    got.extend_from_slice(&buf[..n]);
                    fds.extend(more);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Error::io("control socket")(e)),
            }
            if got.len() >= 4 {
                let n = control::frame_len(got[..4].try_into().unwrap_or_default())?;
                if got.len() >= 4 + n {
                    if got.len() > 4 + n {
                        return Err(Error::Keeper("data after the request".into()));
                    }
                    return control::decode(&got[4..]);
                }
            }
        }
    };
    let req = tokio::time::timeout(REQUEST_WAIT, read)
        .await
        .map_err(|_| Error::Keeper("no request in time".into()))??;
    Ok((req, fds))
}

async fn send(w: &mut OwnedWriteHalf, r: &Reply) -> Result<()> {
    let frame = control::encode(r)?;
    w.write_all(&frame).await.map_err(Error::io("reply"))
}

async fn next_frame(r: &mut OwnedReadHalf) -> Option<Request> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await.ok()?;
    let mut body = vec![0u8; control::frame_len(header).ok()?];
    r.read_exact(&mut body).await.ok()?;
    control::decode(&body).ok()
}

async fn connection(conn: UnixStream, keeper: Arc<Keeper>) -> Result<()> {
    let (req, fds) = first_frame(&conn).await?;
    if let Request::Exec { process, streams } = req {
        let pid = keeper.track_exec(&conn);
        let r = exec(conn, &keeper, process, FdStdio::received(streams, fds)).await;
        keeper.untrack_exec(pid);
        return r;
    }
    drop(fds);
    let deleting = matches!(req, Request::Delete { .. });
    let reply = match handle(&keeper, req).await {
        Ok(r) => r,
        Err(e) => Reply::from_error(&e),
    };
    let ok = matches!(reply, Reply::Ok);
    let (_r, mut w) = conn.into_split();
    let sent = send(&mut w, &reply).await;
    if deleting && ok {
        let _ = w.shutdown().await;
        keeper.deleted.notify_one();
    }
    sent
}

async fn handle(keeper: &Keeper, req: Request) -> Result<Reply> {
    if let Request::State = req {
        return Ok(Reply::State {
            status: keeper.status().into(),
            pid: std::process::id(),
        });
    }
    let c = keeper.container()?;
    match req {
        Request::Start => {
            c.start(&ExecId::Init).await?;
            keeper.sync_size().await;
        }
        Request::Kill { signal: 0, .. } => {
            if c.init().status() == Status::Stopped {
                return Err(Error::NotRunning(keeper.dir.id().into()));
            }
        }
        Request::Kill { signal, all } => {
            if c.init().status() == Status::Stopped {
                return Err(Error::NotRunning(keeper.dir.id().into()));
            }
            c.kill(&ExecId::Init, signal, all).await?;
        }
        Request::Pause => c.pause().await?,
        Request::Resume => c.resume().await?,
        Request::Ps => {
            let mut host_pids = vec![std::process::id()];
            host_pids.extend(
                keeper
                    .exec_pids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter(),
            );
            return Ok(Reply::Pids {
                processes: c.pids().await?,
                host_pids,
            });
        }
        Request::Update {
            memory_limit_mib,
            vcpus,
        } => c.update(memory_limit_mib, vcpus).await?,
        Request::Delete { force } => {
            if c.init().status() == Status::Running {
                if !force {
                    return Err(Error::Core(Core::FailedPrecondition(format!(
                        "cannot delete container {} that is not stopped: {}",
                        keeper.dir.id(),
                        keeper.status()
                    ))));
                }
                // Paused too: SIGKILL of a paused VM destroys it.
                c.kill(&ExecId::Init, libc::SIGKILL as u32, true).await?;
                let grace = Duration::from_secs(keeper.cfg.kill_grace_secs.max(1) + 30);
                let _ = tokio::time::timeout(grace, c.init().wait()).await;
            }
            c.delete().await?;
        }
        Request::State | Request::Exec { .. } => {
            return Err(Error::Keeper("request handled elsewhere".into()))
        }
        Request::Resize { .. } => {
            return Err(Error::Core(Core::InvalidArgument(
                "resize comes on an exec's connection".into(),
            )))
        }
    }
    Ok(Reply::Ok)
}

/// An exec, for as long as it runs: start it, relay its connection's
/// resizes, report its exit. If the exec's keeper goes away first (it was
/// SIGKILLed: runc's shim signals an exec's pid directly), the exec is killed.
async fn exec(
    conn: UnixStream,
    keeper: &Keeper,
    process: serde_json::Value,
    stdio: std::result::Result<FdStdio, String>,
) -> Result<()> {
    let (mut r, mut w) = conn.into_split();
    let started = async {
        let c = keeper.container()?.clone();
        let stdio = stdio.map_err(|m| Error::Core(Core::InvalidArgument(m)))?;
        let process: oci::Process = serde_json::from_value(process)
            .map_err(|e| Error::Core(Core::InvalidArgument(format!("exec process: {e}"))))?;
        let spec = process.to_agent();
        spec.validate()
            .map_err(|m| Error::Core(Core::InvalidArgument(m)))?;
        let id = keeper.new_exec_id()?;
        c.exec(&id, spec, stdio).await?;
        if let Err(e) = c.start(&id).await {
            let _ = c.delete_exec(&id).await;
            return Err(e.into());
        }
        Ok((c, id))
    };
    let (c, id) = match started.await {
        Ok(v) => v,
        Err(e) => return send(&mut w, &Reply::from_error(&e)).await,
    };
    send(&mut w, &Reply::Started).await?;
    let p = c.process(&id)?;
    let exit = loop {
        tokio::select! {
            e = p.wait() => break e,
            frame = next_frame(&mut r) => match frame {
                Some(Request::Resize { rows, cols }) => {
                    let _ = c.resize_pty(&id, rows, cols).await;
                }
                Some(Request::Kill { signal, all }) => {
                    if let Err(e) = c.kill(&id, signal, all).await {
                        tracing::debug!(error = %e, "exec signal");
                    }
                }
                Some(_) => {}
                None => {
                    // Its keeper is gone: so is the exec, as runc's would be.
                    let _ = c.kill(&id, libc::SIGKILL as u32, false).await;
                    let grace = Duration::from_secs(keeper.cfg.kill_grace_secs.max(1) + 30);
                    match tokio::time::timeout(grace, p.wait()).await {
                        Ok(e) => break e,
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
    };
    let _ = c.delete_exec(&id).await;
    send(&mut w, &Reply::Exited { code: exit.code }).await
}
