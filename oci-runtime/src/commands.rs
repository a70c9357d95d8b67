//! runc's verbs other than exec: each a translation onto a keeper request,
//! or, for a container whose keeper has exited, onto its saved state and the
//! model's record (delete).

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;
use vxn_runtime_core::config::Config;
use vxn_runtime_core::{oci, persist, Error as Core};

use crate::cli::{Create, Delete, Kill, List, Ps, Run, Update};
use crate::control::{Client, Reply, Request};
use crate::error::{Error, Result};
use crate::hooks::HookState;
use crate::network::OwnNetns;
use crate::spawn;
use crate::state::{write_pid_file, ContainerDir, Saved};
use crate::Globals;

/// Create can take long: a big rootfs image, a slow (emulated) host.
const CREATE_WAIT: Duration = Duration::from_secs(900);
/// Most requests: an agent call or two.
const CALL_WAIT: Duration = Duration::from_secs(120);
/// Delete destroys a VM (retried by the model).
const DELETE_WAIT: Duration = Duration::from_secs(600);

/// A line to stdout; a reader that went away (`| grep -q`) is not an error.
fn out(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn config() -> Result<Config> {
    Config::load().map_err(|e| Error::Core(Core::InvalidArgument(format!("vxn config: {e}"))))
}

/// The keeper of a container that exists; None once it has exited.
fn keeper_of(g: &Globals, id: &str) -> Result<(ContainerDir, Saved, Option<Client>)> {
    let dir = ContainerDir::new(&g.root, id)?;
    let saved = dir.load()?;
    let client = Client::connect(&dir)?;
    Ok((dir, saved, client))
}

fn running_keeper(g: &Globals, id: &str) -> Result<Client> {
    keeper_of(g, id)?
        .2
        .ok_or_else(|| Error::NotRunning(id.into()))
}

pub fn create(g: &Globals, args: &Create) -> Result<u32> {
    if args.preserve_fds > 0 {
        return Err(Error::Refused(
            "--preserve-fds: a VM cannot inherit host fds".into(),
        ));
    }
    let dir = ContainerDir::new(&g.root, &args.id)?;
    let bundle = std::path::absolute(&args.bundle).map_err(Error::io("bundle"))?;
    let spec = oci::load(&bundle)?;
    spec.init_process()?;
    let terminal = spec.process.as_ref().is_some_and(|p| p.terminal);
    dir.claim()?;
    let mut keep = g.pass_down();
    keep.extend(["__keep".into(), "--bundle".into(), bundle.into_os_string()]);
    if let Some(s) = &args.console_socket {
        keep.extend(["--console-socket".into(), s.clone().into_os_string()]);
    }
    keep.push(args.id.clone().into());
    // A terminal's keeper must not hold our stdout: the caller reads it to EOF.
    match spawn::keeper(keep, terminal, CREATE_WAIT) {
        Ok(started) => {
            if let Some(p) = &args.pid_file {
                write_pid_file(p, started.pid)?;
            }
            Ok(started.pid)
        }
        Err(e) => {
            // The keeper undid its create, unless it died: then by name.
            let cfg = config()?;
            let rt = current_thread()?;
            if let Err(left) = rt.block_on(persist::teardown_by_name(&cfg, &dir.name, None)) {
                tracing::error!(error = %left, "cleaning up after a failed create");
            }
            let _ = dir.remove();
            Err(e)
        }
    }
}

/// `run`: create and start; without --detach, wait and exit with the status.
pub fn run(g: &Globals, args: &Run) -> Result<i32> {
    let pid = create(g, &args.create)?;
    if let Err(e) = start(g, &args.create.id) {
        let _ = delete(
            g,
            &Delete {
                force: true,
                id: args.create.id.clone(),
            },
        );
        return Err(e);
    }
    if args.detach {
        return Ok(0);
    }
    // The keeper is our child: its status is the container's.
    use nix::sys::wait::{waitpid, WaitStatus};
    let code = loop {
        match waitpid(nix::unistd::Pid::from_raw(pid as i32), None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("wait for the container")(e.into())),
        }
    };
    delete(
        g,
        &Delete {
            force: true,
            id: args.create.id.clone(),
        },
    )?;
    Ok(code)
}

fn current_thread() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("tokio"))
}

pub fn start(g: &Globals, id: &str) -> Result<()> {
    running_keeper(g, id)?.call(&Request::Start, Some(CALL_WAIT))?;
    // runc's poststart: after the process started; a failure is start's.
    let dir = ContainerDir::new(&g.root, id)?;
    let saved = dir.load()?;
    let hooks = crate::hooks::of_saved(&saved);
    if !hooks.poststart.is_empty() {
        let state = hook_state(&saved, "running", saved.pid);
        current_thread()?.block_on(crate::hooks::run_all("poststart", &hooks.poststart, &state))?;
    }
    Ok(())
}

fn hook_state<'a>(saved: &'a Saved, status: &'static str, pid: u32) -> HookState<'a> {
    HookState {
        oci_version: crate::hooks::OCI_VERSION,
        id: &saved.id,
        status,
        pid,
        bundle: &saved.bundle,
        annotations: &saved.annotations,
    }
}

fn status_of(client: Option<Client>) -> Result<(String, u32)> {
    let Some(mut c) = client else {
        return Ok(("stopped".into(), 0));
    };
    match c.call(&Request::State, Some(CALL_WAIT))? {
        Reply::State { status, pid } => Ok((status, pid)),
        _ => Err(Error::Keeper("unexpected answer to state".into())),
    }
}

fn state_json(saved: &Saved, status: &str, pid: u32) -> serde_json::Value {
    json!({
        "ociVersion": crate::hooks::OCI_VERSION,
        "id": saved.id,
        "pid": if status == "stopped" { 0 } else { pid },
        "status": status,
        "bundle": saved.bundle,
        "rootfs": saved.rootfs,
        "created": saved.created,
        "owner": "",
        "annotations": saved.annotations,
    })
}

pub fn state(g: &Globals, id: &str) -> Result<()> {
    let (_, saved, client) = keeper_of(g, id)?;
    let (status, pid) = status_of(client)?;
    let text = serde_json::to_string_pretty(&state_json(&saved, &status, pid))
        .map_err(|e| Error::Keeper(e.to_string()))?;
    out(text);
    Ok(())
}

/// A signal as runc takes it: a number, or a name with or without SIG.
pub fn parse_signal(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return match n {
            0..=64 => Ok(n),
            _ => Err(Error::Refused(format!("invalid signal {s}"))),
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as u32)
        .map_err(|_| Error::Refused(format!("unknown signal {s:?}")))
}

pub fn kill(g: &Globals, k: &Kill) -> Result<()> {
    let signal = parse_signal(k.signal.as_deref().unwrap_or("TERM"))?;
    running_keeper(g, &k.id)?.call(&Request::Kill { signal, all: k.all }, Some(CALL_WAIT))?;
    Ok(())
}

pub fn delete(g: &Globals, d: &Delete) -> Result<()> {
    let dir = ContainerDir::new(&g.root, &d.id)?;
    // A directory without state.json is a create cut short: clean it up too.
    match (dir.dir.exists(), dir.exists(), d.force) {
        (false, _, true) => return Ok(()),
        (_, false, false) => return Err(Error::NoSuchContainer(d.id.clone())),
        _ => {}
    }
    let saved = dir.load().ok();
    if let Some(mut c) = Client::connect(&dir)? {
        c.call(&Request::Delete { force: d.force }, Some(DELETE_WAIT))?;
    } else {
        // The keeper has exited (or was killed): what its record names goes.
        let cfg = config()?;
        current_thread()?.block_on(persist::teardown_by_name(&cfg, &dir.name, None))?;
    }
    let rt = current_thread()?;
    rt.block_on(OwnNetns::remove(&dir.netns_name()))?;
    // runc's poststop: after the container is gone; failures are logged only.
    if let Some(saved) = &saved {
        let hooks = crate::hooks::of_saved(saved);
        let state = hook_state(saved, "stopped", 0);
        if let Err(e) = rt.block_on(crate::hooks::run_all("poststop", &hooks.poststop, &state)) {
            tracing::warn!(id = %saved.id, error = %e, "poststop");
        }
    }
    dir.remove()
}

pub fn pause(g: &Globals, id: &str, pause: bool) -> Result<()> {
    let req = if pause {
        Request::Pause
    } else {
        Request::Resume
    };
    running_keeper(g, id)?.call(&req, Some(CALL_WAIT))?;
    Ok(())
}

pub fn ps(g: &Globals, p: &Ps) -> Result<()> {
    if !p.ps_args.is_empty() {
        return Err(Error::Refused(
            "ps options: the processes are in the container's VM, not on this host".into(),
        ));
    }
    let mut c = running_keeper(g, &p.id)?;
    let Reply::Pids {
        processes,
        host_pids,
    } = c.call(&Request::Ps, Some(CALL_WAIT))?
    else {
        return Err(Error::Keeper("unexpected answer to ps".into()));
    };
    match p.format.as_str() {
        // The host pids that stand for the container (its keeper, its execs'):
        // what callers match against the host's process table.
        "json" => out(json!(host_pids)),
        "table" => {
            out(format_args!("{:>8}  {:<10}  CMD", "PID", "EXEC"));
            for pr in processes {
                let exec = pr.exec_id.as_deref().unwrap_or("-");
                out(format_args!("{:>8}  {:<10}  {}", pr.pid, exec, pr.command));
            }
        }
        other => {
            return Err(Error::Refused(format!(
                "ps --format {other}: use table or json"
            )))
        }
    }
    Ok(())
}

/// "512m", "1g", "1048576": bytes.
fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t.as_str(), ""),
    };
    let mult: i64 = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(Error::Refused(format!("invalid size {s:?}"))),
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| Error::Refused(format!("invalid size {s:?}")))
}

pub fn update(g: &Globals, u: &Update) -> Result<()> {
    let refused: Vec<&str> = [
        (u.pids_limit.is_some(), "--pids-limit"),
        (u.cpu_share.is_some(), "--cpu-share"),
        (u.cpuset_cpus.is_some(), "--cpuset-cpus"),
        (u.memory_swap.is_some(), "--memory-swap"),
        (u.memory_reservation.is_some(), "--memory-reservation"),
        (u.blkio_weight.is_some(), "--blkio-weight"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    if !refused.is_empty() {
        return Err(Error::Refused(format!(
            "{}: not supported by vxn (a VM has memory and vcpus: --memory, --cpu-quota/--cpu-period)",
            refused.join(", ")
        )));
    }
    let mut res = match &u.resources {
        None => oci::Resources::default(),
        Some(path) => {
            let mut text = Vec::new();
            if path.as_os_str() == "-" {
                std::io::stdin()
                    .take(1 << 20)
                    .read_to_end(&mut text)
                    .map_err(Error::io("read resources"))?;
            } else {
                text =
                    std::fs::read(path).map_err(Error::io(format!("read {}", path.display())))?;
            }
            oci::parse_resources(&text)?
        }
    };
    if let Some(m) = &u.memory {
        res.memory.get_or_insert_with(Default::default).limit = Some(parse_bytes(m)?);
    }
    if u.cpu_quota.is_some() || u.cpu_period.is_some() {
        let cpu = res.cpu.get_or_insert_with(Default::default);
        cpu.quota = u.cpu_quota.or(cpu.quota);
        cpu.period = u.cpu_period.or(cpu.period).or(Some(100_000));
    }
    let req = Request::Update {
        memory_limit_mib: oci::limit_mib(&res),
        vcpus: oci::vcpus(&res),
    };
    running_keeper(g, &u.id)?.call(&req, Some(CALL_WAIT))?;
    Ok(())
}

pub fn features() {
    let f = json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.0.2",
        // run in dom0 (hooks.rs); createContainer/startContainer would run in the VM
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "nosuid", "nodev", "noexec", "bind", "rbind"],
        "linux": {
            "namespaces": ["mount", "pid", "uts", "ipc", "network"],
            "capabilities": [],
            "cgroup": {"v1": false, "v2": false, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            "io.github.vxn.isolation": "xen-domu",
            "io.containerd.runc.v2.runtime_type": "vm"
        }
    });
    out(serde_json::to_string_pretty(&f).unwrap_or_default());
}

pub fn list(g: &Globals, l: &List) -> Result<()> {
    let mut rows = Vec::new();
    let entries = match std::fs::read_dir(&g.root) {
        Ok(e) => e.flatten().collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(Error::io(format!("read {}", g.root.display()))(e)),
    };
    for entry in entries {
        let id = entry.file_name().to_string_lossy().into_owned();
        let Ok((_, saved, client)) = keeper_of(g, &id) else {
            continue;
        };
        let (status, pid) = status_of(client).unwrap_or(("unknown".into(), 0));
        rows.push(state_json(&saved, &status, pid));
    }
    if l.quiet {
        rows.iter()
            .for_each(|r| out(r["id"].as_str().unwrap_or_default()));
    } else if l.format == "json" {
        out(serde_json::Value::Array(rows));
    } else {
        out(format_args!(
            "{:<24} {:>8} {:<10} {:<40} CREATED",
            "ID", "PID", "STATUS", "BUNDLE"
        ));
        for r in rows {
            out(format_args!(
                "{:<24} {:>8} {:<10} {:<40} {}",
                r["id"].as_str().unwrap_or_default(),
                r["pid"],
                r["status"].as_str().unwrap_or_default(),
                r["bundle"].as_str().unwrap_or_default(),
                r["created"].as_str().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// runc verbs vxn does not have, each with why.
pub fn refuse(args: &[String]) -> Error {
    let verb = args.first().map(String::as_str).unwrap_or_default();
    let why = match verb {
        "checkpoint" | "restore" => "checkpoint/restore of a container's VM is not supported",
        "events" => "no event stream: use containerd's task events (containerd-shim-vxn-v2)",
        "spec" => "write config.json with your engine (or runc spec)",
        "init" => "runc's internal init has no equivalent: the guest agent is the init",
        _ => "not a command of this runtime (see --help)",
    };
    Error::Refused(format!("{verb}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_sizes_parse_as_runc_takes_them() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("SIGWINCH").unwrap(), 28);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("12x").is_err());
    }

    #[test]
    fn a_stopped_container_reports_pid_zero() {
        let s = Saved {
            id: "c".into(),
            pid: 42,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "x".into(),
            annotations: Default::default(),
        };
        assert_eq!(state_json(&s, "stopped", 42)["pid"], 0);
        assert_eq!(state_json(&s, "running", 42)["pid"], 42);
        assert_eq!(state_json(&s, "paused", 42)["status"], "paused");
    }
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod on_fakes;
