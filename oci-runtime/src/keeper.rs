//! The keeper: the dom0 process that stands for a container's init. `create`
//! starts it and writes its pid to `--pid-file`; it creates the container
//! through runtime-core (VM booted, paused), relays the init's stdio (the fds
//! create was given, or a terminal), serves the other commands on its
//! control socket, and exits with the init's exit status, so the caller's
//! reaper (containerd's runc shim, conmon) sees the real code. The VM stays
//! until `delete`, as a runc container's resources do.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vxn_runtime_core::config::Config;
use vxn_runtime_core::ids::ExecId;
use vxn_runtime_core::model::container::{Container, CreateRequest, RootfsSource};
use vxn_runtime_core::model::events::{EventSink, TaskEvent};
use vxn_runtime_core::oci;
use vxn_runtime_core::Error as Core;

use crate::cli::Keep;
use crate::control::Reply;
use crate::error::{Error, Result};
use crate::holding::Keeper;
use crate::hooks::{self, HookState, Hooks, OCI_VERSION};
use crate::network::{NetnsHolder, OwnNetns};
use crate::serve;
use crate::spawn::ReadyPipe;
use crate::state::{rfc3339, ContainerDir, Saved};
use crate::stdio::FdStdio;
use crate::tty;

/// Signals a stand-in passes on to its process (runc's init and exec'd
/// processes would get them directly).
pub const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];
/// After the init exits, how long its execs get to report their own exits.
const EXEC_DRAIN: Duration = Duration::from_secs(3);

/// Logs what happens to the container (runc has no event stream to feed).
pub(crate) struct LogEvents(pub String);

impl EventSink for LogEvents {
    fn publish(&self, ev: TaskEvent) {
        tracing::info!(id = %self.0, event = ?ev, "container event");
    }
}

/// Move the caller's stdio off 0-2 (close-on-exec, so no child of ours, such
/// as a daemonizing `xl`, holds the container's pipes open) and point 0-2 at
/// /dev/null. Returns the original three.
pub fn take_stdio() -> Result<[OwnedFd; 3]> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(Error::io("/dev/null"))?;
    let mut out = Vec::with_capacity(3);
    for fd in 0..3 {
        let moved = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
            .map_err(|e| Error::io("dup stdio")(e.into()))?;
        // SAFETY: F_DUPFD_CLOEXEC just returned this new fd; we own it.
        out.push(unsafe { OwnedFd::from_raw_fd(moved) });
        nix::unistd::dup2(null.as_raw_fd(), fd).map_err(|e| Error::io("dup2")(e.into()))?;
    }
    let [a, b, c]: [OwnedFd; 3] = out.try_into().map_err(|_| Error::Keeper("stdio".into()))?;
    Ok([a, b, c])
}

/// The keeper's whole life; returns its exit status.
pub fn main(root: PathBuf, keep: Keep) -> i32 {
    let mut ready = ReadyPipe::from_arg(keep.ready_fd);
    // A session of its own: the caller's signals to its group are not the
    // container's, and a terminal can become ours.
    let _ = nix::unistd::setsid();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ready.report(&Reply::from_error(&Error::io("tokio")(e)));
            return 1;
        }
    };
    let code = rt.block_on(async move {
        match run(root, keep, &mut ready).await {
            Ok(code) => code,
            Err(e) => {
                tracing::error!(error = %e, "keeper");
                ready.report(&Reply::from_error(&e));
                1
            }
        }
    });
    // A stdin relay may sit in a blocking read no one will satisfy: do not
    // wait for it, the process is done.
    rt.shutdown_background();
    code
}

async fn run(root: PathBuf, keep: Keep, ready: &mut ReadyPipe) -> Result<i32> {
    let args = keep.create;
    let dir = ContainerDir::new(&root, &args.id)?;
    let cfg = Config::load().map_err(|e| Core::InvalidArgument(format!("vxn config: {e}")))?;
    let (hv, exporter) = vxn_runtime_core::platform::build(&cfg).map_err(Core::InvalidArgument)?;
    let bundle = std::path::absolute(&args.bundle).map_err(Error::io("bundle"))?;
    let spec = oci::load(&bundle)?;
    let terminal = spec.process.as_ref().is_some_and(|p| p.terminal);
    let [stdin, stdout, stderr] = take_stdio()?;
    let (stdio, tty) = match (terminal, &args.console_socket) {
        (true, None) => {
            return Err(Error::Refused(
                "process.terminal needs --console-socket".into(),
            ))
        }
        (false, Some(_)) => {
            return Err(Error::Refused(
                "--console-socket is for process.terminal only".into(),
            ))
        }
        (true, Some(socket)) => {
            let size = spec
                .process
                .as_ref()
                .and_then(|p| p.console_size.as_ref())
                .and_then(|c| tty::Size::given(c.height.into(), c.width.into()));
            let pty = tty::open(size)?;
            tty::send_master(socket, &pty.master)?;
            drop(pty.master);
            tty::take_as_controlling(&pty.slave)?;
            let relay = pty.slave.try_clone().map_err(Error::io("dup tty"))?;
            (
                FdStdio::terminal(relay).map_err(Error::io("tty"))?,
                Some(pty.slave),
            )
        }
        (false, None) => (
            FdStdio::plain(Some(stdin), Some(stdout), Some(stderr)),
            None,
        ),
    };
    let keeper = Arc::new(Keeper::new(dir.clone(), cfg, tty));
    // Serving starts now: `state` during create says "creating".
    let listener = serve::bind(&dir)?;
    tokio::spawn(serve::accept_loop(listener, keeper.clone()));

    // Refused before any hook runs.
    crate::network::network_namespace(&spec)?;
    let hooks = Hooks::load(&bundle)?;
    let own_netns = create_hooks(&dir, &spec, &bundle, &hooks).await?;
    let events = Arc::new(LogEvents(args.id.clone()));
    let created = async {
        let request = CreateRequest {
            name: dir.name.clone(),
            bundle: bundle.clone(),
            rootfs: RootfsSource::Bundle,
            stdio,
            network: Some(crate::network::engine_network(&spec, own_netns.as_ref())?),
        };
        Ok::<_, Error>(Container::create(request, &keeper.cfg, hv, exporter, events).await?)
    }
    .await;
    let c = match created {
        Ok(c) => c,
        Err(e) => {
            // `delete` would remove it too; a refused create leaves nothing to delete.
            if own_netns.is_some() {
                let _ = OwnNetns::remove(&dir.netns_name()).await;
            }
            return Err(e);
        }
    };
    keeper.created(c.clone());
    let saved = Saved {
        id: args.id.clone(),
        pid: std::process::id(),
        bundle: bundle.clone(),
        rootfs: spec.rootfs_dir(&bundle),
        created: rfc3339(SystemTime::now()),
        annotations: spec.annotations.clone(),
    };
    if let Err(e) = dir.save(&saved) {
        let _ = c.delete().await;
        return Err(e);
    }
    ready.report(&Reply::Ok);
    tracing::info!(id = %args.id, domain = %c.domain(), "created");

    forward_signals(&keeper);
    if keeper.has_tty() {
        follow_resizes(&keeper);
    }
    let exit = tokio::select! {
        e = c.init().wait() => e,
        _ = keeper.deleted.notified() => c.init().exit().unwrap_or_else(vxn_runtime_core::model::process::Exit::never_ran),
    };
    // Execs still running die with the init; let them report it.
    let _ = tokio::time::timeout(EXEC_DRAIN, async {
        while !keeper
            .exec_pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tracing::info!(id = %args.id, code = exit.code, "init exited");
    Ok((exit.code & 0xff) as i32)
}

/// Run the hooks of create (prestart, createRuntime) as runc does, before
/// the VM exists: a spec asking for a new network namespace gets one of the
/// runtime's making for them to fill (Docker's `libnetwork-setkey` moves the
/// container's veth into it). Without such hooks the namespace would stay
/// empty, so none is made.
async fn create_hooks(
    dir: &ContainerDir,
    spec: &oci::Spec,
    bundle: &std::path::Path,
    hooks: &Hooks,
) -> Result<Option<OwnNetns>> {
    if hooks.at_create().next().is_none() {
        return Ok(None);
    }
    let own = match crate::network::wants_new_netns(spec) {
        true => Some(OwnNetns::create(&dir.netns_name()).await?),
        false => None,
    };
    let ran = async {
        // The container's netns: ours, or the one the spec names (Podman's).
        let netns = own.as_ref().map(OwnNetns::path).or_else(|| {
            crate::network::network_namespace(spec)
                .ok()
                .and_then(|n| n.path.clone())
                .filter(|p| !p.as_os_str().is_empty())
        });
        let holder = netns.as_deref().map(NetnsHolder::hold).transpose()?;
        let state = HookState {
            oci_version: OCI_VERSION,
            id: dir.id(),
            status: "creating",
            pid: holder.as_ref().map_or(std::process::id(), |h| h.tid),
            bundle,
            annotations: &spec.annotations,
        };
        hooks::run_all("create", hooks.at_create(), &state).await
    }
    .await;
    if let Err(e) = ran {
        if own.is_some() {
            let _ = OwnNetns::remove(&dir.netns_name()).await;
        }
        return Err(e);
    }
    Ok(own)
}

/// Signals sent to the keeper go to the container's init, as they would
/// reach runc's init process.
fn forward_signals(keeper: &Arc<Keeper>) {
    use tokio::signal::unix::{signal, SignalKind};
    for sig in FORWARDED {
        let Ok(mut stream) = signal(SignalKind::from_raw(sig)) else {
            continue;
        };
        let k = keeper.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if let Ok(c) = k.container() {
                    if let Err(e) = c.kill(&ExecId::Init, sig as u32, false).await {
                        tracing::warn!(signal = sig, error = %e, "forwarding a signal");
                    }
                }
            }
        });
    }
}

fn follow_resizes(keeper: &Arc<Keeper>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    let k = keeper.clone();
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            k.sync_size().await;
        }
    });
}
