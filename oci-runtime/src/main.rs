//! `vxn-oci-runtime`: a runc-compatible OCI runtime whose containers are Xen
//! DomUs. A second thin front-end over runtime-core (the first is the
//! containerd shim): runc's verbs are translated onto the model, held for
//! each container by its keeper process.
//!
//! * `cli`: runc's command line; `commands`: the verbs; `exec`: exec;
//! * `keeper`: the process that stands for a container's init, and `serve`,
//!   its control socket; `control`: what commands and keepers say;
//! * `spawn`: starting a keeper; `stdio`, `tty`: the process's fds and terminal;
//! * `state`: the container's directory under --root; `network`: the engine's
//!   network as the spec tells it; `log`: runc's log file format.

#![deny(unsafe_op_in_unsafe_fn)]

mod cli;
mod commands;
mod control;
mod error;
mod exec;
mod holding;
mod hooks;
mod keeper;
mod log;
mod network;
mod serve;
mod spawn;
mod state;
mod stdio;
mod tty;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use cli::{Cli, Command};
use error::Result;

/// The global flags, as a keeper started by a command gets them too.
pub struct Globals {
    pub root: PathBuf,
    pub log: Option<PathBuf>,
    pub json: bool,
    pub debug: bool,
}

impl Globals {
    /// The flags that come before the verb when this binary runs itself.
    pub fn pass_down(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["--root".into(), self.root.clone().into()];
        if let Some(l) = &self.log {
            a.extend(["--log".into(), l.clone().into()]);
        }
        if self.json {
            a.extend(["--log-format".into(), "json".into()]);
        }
        if self.debug {
            a.push("--debug".into());
        }
        a
    }
}

fn version() {
    use std::io::Write;
    let _ = write!(
        std::io::stdout().lock(),
        "vxn-oci-runtime version {}\nspec: 1.0.2\nisolation: Xen DomU per container\n",
        env!("CARGO_PKG_VERSION")
    );
}

/// An error line to stderr (never a panic if stderr is gone).
fn say(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "vxn-oci-runtime: {msg}");
}

/// The process environment a caller may not give: Podman runs kill and
/// delete with XDG_RUNTIME_DIR alone, without PATH, and the teardown runs
/// `xl` (in /usr/sbin). Fds a caller leaks to us (conmon's sync pipes) must
/// not reach a keeper, nor through it the QEMU and `xl` it starts.
fn sane_process() {
    const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let path = std::env::var("PATH").unwrap_or_default();
    if !path.split(':').any(|d| d == "/usr/sbin" || d == "/sbin") {
        let joined = if path.is_empty() {
            SYSTEM_PATH.to_string()
        } else {
            format!("{path}:{SYSTEM_PATH}")
        };
        // Still single-threaded: nothing reads the environment concurrently.
        std::env::set_var("PATH", joined);
    }
    // SAFETY: close_range only flags fds close-on-exec; no memory is touched.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

fn main() {
    sane_process();
    let cli = Cli::parse();
    let g = Globals {
        root: std::path::absolute(&cli.root).unwrap_or_else(|_| cli.root.clone()),
        log: cli.log.clone(),
        json: cli.log_format == "json",
        debug: cli.debug,
    };
    if cli.version {
        version();
        return;
    }
    let Some(command) = cli.command else {
        say("no command (see --help)");
        std::process::exit(1);
    };
    let (who, is_keeper) = match &command {
        Command::Keep(k) => (format!("keeper {}", k.create.id), true),
        Command::KeepExec(k) => (format!("exec keeper {}", k.id), true),
        other => (
            format!("{other:?}")
                .split(['(', ' '])
                .next()
                .unwrap_or("")
                .to_lowercase(),
            false,
        ),
    };
    log::init(g.log.as_deref(), g.json, g.debug, who, !is_keeper);
    let code = match run(&g, command) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            say(&e.to_string());
            1
        }
    };
    std::process::exit(code);
}

fn run(g: &Globals, command: Command) -> Result<i32> {
    match command {
        Command::Create(c) => commands::create(g, &c).map(|_| 0),
        Command::Run(r) => commands::run(g, &r),
        Command::Start(c) => commands::start(g, &c.id).map(|_| 0),
        Command::State(c) => commands::state(g, &c.id).map(|_| 0),
        Command::Kill(k) => commands::kill(g, &k).map(|_| 0),
        Command::Delete(d) => commands::delete(g, &d).map(|_| 0),
        Command::Exec(e) => exec::command(g, e),
        Command::Pause(c) => commands::pause(g, &c.id, true).map(|_| 0),
        Command::Resume(c) => commands::pause(g, &c.id, false).map(|_| 0),
        Command::Ps(p) => commands::ps(g, &p).map(|_| 0),
        Command::Update(u) => commands::update(g, &u).map(|_| 0),
        Command::Features => {
            commands::features();
            Ok(0)
        }
        Command::List(l) => commands::list(g, &l).map(|_| 0),
        Command::Version => {
            version();
            Ok(0)
        }
        Command::Other(args) => Err(commands::refuse(&args)),
        Command::Keep(k) => Ok(keeper::main(g.root.clone(), k)),
        Command::KeepExec(k) => Ok(exec::keeper_main(g, k)),
    }
}
