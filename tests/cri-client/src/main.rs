//! vxn-crictl: the subset of crictl the end-to-end tests use (crictl is not
//! packaged for Debian and cannot be downloaded here). Global options come
//! before the subcommand, as with crictl; output is plain and script-friendly:
//! full IDs, tab-separated columns, no headers.

mod client;
mod commands;
mod config;
mod logs;
mod show;

use std::process::ExitCode;
use std::time::Duration;

use logs::Stream;

const USAGE: &str = "\
usage: vxn-crictl [--endpoint unix:///PATH] [--timeout SECS] COMMAND [ARGS]
  (also -r/--runtime-endpoint, -t, and $CONTAINER_RUNTIME_ENDPOINT, as crictl)
commands:
  runp [--runtime HANDLER] POD.json           run a pod sandbox, print its id
  create POD_ID CONTAINER.json POD.json       create a container, print its id
  start ID...  |  stop [--timeout N] ID...  |  rm ID...
  stopp POD_ID...  |  rmp POD_ID...
  pods [-q]                                   ID STATE NAME NAMESPACE ATTEMPT HANDLER
  ps [-a] [-q] [--pod ID]                     ID STATE NAME ATTEMPT POD_ID IMAGE
  inspect ID  |  inspectp POD_ID              status as JSON
  exec-sync [--timeout N] ID CMD [ARG...]     run CMD, exit with its exit code
  logs [--stream stdout|stderr] ID            the container's log (from its log_path)
  stats [ID]                                  ID CPU_NS MEM_BYTES DISK_BYTES
  statsp [POD_ID]                             POD_ID CPU_NS MEM_BYTES
  version  |  images [-q]";

#[derive(Debug, PartialEq)]
pub struct Global {
    pub endpoint: String,
    pub timeout: Duration,
}

#[derive(Debug, PartialEq)]
pub enum Cmd {
    Runp {
        runtime: String,
        pod: String,
    },
    Create {
        pod_id: String,
        container: String,
        pod: String,
    },
    Start(Vec<String>),
    Stop {
        timeout: i64,
        ids: Vec<String>,
    },
    Rm(Vec<String>),
    Stopp(Vec<String>),
    Rmp(Vec<String>),
    Pods {
        quiet: bool,
    },
    Ps {
        all: bool,
        quiet: bool,
        pod: Option<String>,
    },
    Inspect(String),
    Inspectp(String),
    ExecSync {
        timeout: i64,
        id: String,
        cmd: Vec<String>,
    },
    Logs {
        stream: Option<Stream>,
        id: String,
    },
    Stats(Option<String>),
    Statsp(Option<String>),
    Version,
    Images {
        quiet: bool,
    },
}

/// Walks the arguments: options (`--x V`, `--x=V`, flags) until the first
/// positional, so that `exec-sync ID sh -c ...` keeps `-c` for the command.
struct Args {
    args: std::vec::IntoIter<String>,
    pending: Option<String>,
}

impl Args {
    /// The next option name (with an `=value` kept aside), or None at the first positional.
    fn option(&mut self) -> Option<String> {
        let next = self.args.as_slice().first()?;
        if next == "--" {
            self.args.next();
            return None;
        }
        if !next.starts_with('-') || next == "-" {
            return None;
        }
        let arg = self.args.next()?;
        match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                self.pending = Some(value.to_string());
                Some(name.to_string())
            }
            _ => Some(arg),
        }
    }

    fn value(&mut self, name: &str) -> Result<String, String> {
        self.pending
            .take()
            .or_else(|| self.args.next())
            .ok_or(format!("{name} needs a value"))
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str) -> Result<T, String> {
        let v = self.value(name)?;
        v.parse()
            .map_err(|_| format!("{name}: {v:?} is not a valid number"))
    }

    fn flag(&mut self, name: &str) -> Result<(), String> {
        match self.pending.take() {
            Some(_) => Err(format!("{name} takes no value")),
            None => Ok(()),
        }
    }

    fn rest(&mut self) -> Vec<String> {
        self.args.by_ref().collect()
    }

    /// Exactly `n` positionals, or an error naming the command.
    fn exactly(&mut self, cmd: &str, n: usize) -> Result<Vec<String>, String> {
        let rest = self.rest();
        if rest.len() != n {
            return Err(format!(
                "{cmd}: expected {n} argument(s), got {}",
                rest.len()
            ));
        }
        Ok(rest)
    }

    fn at_most_one(&mut self, cmd: &str) -> Result<Option<String>, String> {
        let mut rest = self.rest();
        if rest.len() > 1 {
            return Err(format!("{cmd}: expected at most one argument"));
        }
        Ok(rest.pop())
    }

    fn some(&mut self, cmd: &str) -> Result<Vec<String>, String> {
        let rest = self.rest();
        if rest.is_empty() {
            return Err(format!("{cmd}: expected at least one ID"));
        }
        Ok(rest)
    }
}

fn unknown(cmd: &str, opt: &str) -> String {
    format!("{cmd}: unknown option {opt}")
}

pub fn parse(argv: Vec<String>, env_endpoint: Option<String>) -> Result<(Global, Cmd), String> {
    let mut a = Args {
        args: argv.into_iter(),
        pending: None,
    };
    let mut global = Global {
        endpoint: env_endpoint.unwrap_or_else(|| client::DEFAULT_ENDPOINT.to_string()),
        timeout: Duration::from_secs(120),
    };
    while let Some(opt) = a.option() {
        match opt.as_str() {
            "--endpoint" | "--runtime-endpoint" | "-r" => global.endpoint = a.value(&opt)?,
            "--timeout" | "-t" => global.timeout = Duration::from_secs(a.number(&opt)?),
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(unknown("vxn-crictl", &opt)),
        }
    }
    let name = a.args.next().ok_or("no command given")?;
    let n = name.as_str();
    let cmd = match n {
        "runp" => {
            let mut runtime = String::new();
            while let Some(opt) = a.option() {
                match opt.as_str() {
                    "--runtime" | "-r" => runtime = a.value(&opt)?,
                    _ => return Err(unknown(n, &opt)),
                }
            }
            let [pod] = <[String; 1]>::try_from(a.exactly(n, 1)?).unwrap();
            Cmd::Runp { runtime, pod }
        }
        "create" => {
            let [pod_id, container, pod] = <[String; 3]>::try_from(a.exactly(n, 3)?).unwrap();
            Cmd::Create {
                pod_id,
                container,
                pod,
            }
        }
        "stop" | "exec-sync" => {
            let mut timeout = 0;
            while let Some(opt) = a.option() {
                match opt.as_str() {
                    "--timeout" | "-t" => timeout = a.number(&opt)?,
                    _ => return Err(unknown(n, &opt)),
                }
            }
            if n == "stop" {
                Cmd::Stop {
                    timeout,
                    ids: a.some(n)?,
                }
            } else {
                let id = a.args.next().ok_or("exec-sync: expected ID CMD [ARG...]")?;
                let cmd = a.rest();
                if cmd.is_empty() {
                    return Err("exec-sync: expected a command after the ID".into());
                }
                Cmd::ExecSync { timeout, id, cmd }
            }
        }
        "pods" | "ps" | "images" => {
            let (mut all, mut quiet, mut pod) = (false, false, None);
            while let Some(opt) = a.option() {
                match (n, opt.as_str()) {
                    (_, "-q" | "--quiet") => quiet = true,
                    ("ps", "-a" | "--all") => all = true,
                    ("ps", "--pod" | "-p") => pod = Some(a.value(&opt)?),
                    _ => return Err(unknown(n, &opt)),
                }
                a.flag(&opt)?;
            }
            a.exactly(n, 0)?;
            match n {
                "pods" => Cmd::Pods { quiet },
                "ps" => Cmd::Ps { all, quiet, pod },
                _ => Cmd::Images { quiet },
            }
        }
        "logs" => {
            let mut stream = None;
            while let Some(opt) = a.option() {
                match opt.as_str() {
                    "--stream" => {
                        let v = a.value(&opt)?;
                        stream = Some(
                            Stream::parse(&v)
                                .ok_or(format!("--stream: {v:?} is not stdout or stderr"))?,
                        );
                    }
                    _ => return Err(unknown(n, &opt)),
                }
            }
            let [id] = <[String; 1]>::try_from(a.exactly(n, 1)?).unwrap();
            Cmd::Logs { stream, id }
        }
        _ => {
            if let Some(opt) = a.option() {
                return Err(unknown(n, &opt));
            }
            match n {
                "start" => Cmd::Start(a.some(n)?),
                "rm" => Cmd::Rm(a.some(n)?),
                "stopp" => Cmd::Stopp(a.some(n)?),
                "rmp" => Cmd::Rmp(a.some(n)?),
                "inspect" => Cmd::Inspect(a.exactly(n, 1)?.remove(0)),
                "inspectp" => Cmd::Inspectp(a.exactly(n, 1)?.remove(0)),
                "stats" => Cmd::Stats(a.at_most_one(n)?),
                "statsp" => Cmd::Statsp(a.at_most_one(n)?),
                "version" => {
                    a.exactly(n, 0)?;
                    Cmd::Version
                }
                "help" => return Err(String::new()),
                _ => return Err(format!("unknown command {n:?}")),
            }
        }
    };
    Ok((global, cmd))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let env_endpoint = std::env::var("CONTAINER_RUNTIME_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let (global, cmd) = match parse(argv, env_endpoint) {
        Ok(parsed) => parsed,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vxn-crictl: {e} (vxn-crictl --help for usage)");
            return ExitCode::from(2);
        }
    };
    match commands::run(&global, cmd).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vxn-crictl: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, e.g. "connect ...: transport error: No such file";
/// a cause already quoted by the one above it (tonic's errors do) is skipped.
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg
}

#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;
