//! The dispatch of the subcommands, and those that change state or run something.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_cri::v1 as cri;
use serde_json::Value;

use crate::client::{call, connect, request, Cri};
use crate::logs::{self, Stream};
use crate::show::{self, container_status};
use crate::{config, Cmd, Global};

pub async fn run(g: &Global, cmd: Cmd) -> Result<ExitCode> {
    let t = g.timeout;
    // The JSON files are read before connecting: a typo fails fast, even offline.
    let mut c: Cri = match &cmd {
        Cmd::Runp { pod, .. } | Cmd::Create { pod, .. } => {
            read_json(pod, config::pod_config)?;
            connect(&g.endpoint, t).await?
        }
        _ => connect(&g.endpoint, t).await?,
    };
    match cmd {
        Cmd::Runp { runtime, pod } => {
            let config = Some(read_json(&pod, config::pod_config)?);
            let req = cri::RunPodSandboxRequest {
                config,
                runtime_handler: runtime,
            };
            let r = call(
                "RunPodSandbox",
                t,
                c.runtime.run_pod_sandbox(request(req, t)),
            )
            .await?;
            println!("{}", r.pod_sandbox_id);
        }
        Cmd::Create {
            pod_id,
            container,
            pod,
        } => {
            let req = cri::CreateContainerRequest {
                pod_sandbox_id: pod_id,
                config: Some(read_json(&container, config::container_config)?),
                // containerd needs the pod's config again (log directory, namespaces...).
                sandbox_config: Some(read_json(&pod, config::pod_config)?),
            };
            let r = call(
                "CreateContainer",
                t,
                c.runtime.create_container(request(req, t)),
            )
            .await?;
            println!("{}", r.container_id);
        }
        Cmd::Start(ids) => {
            for id in ids {
                let req = cri::StartContainerRequest {
                    container_id: id.clone(),
                };
                call(
                    "StartContainer",
                    t,
                    c.runtime.start_container(request(req, t)),
                )
                .await?;
                println!("{id}");
            }
        }
        Cmd::Stop { timeout, ids } => {
            let limit = with_grace(t, timeout);
            for id in ids {
                let req = cri::StopContainerRequest {
                    container_id: id.clone(),
                    timeout,
                };
                call(
                    "StopContainer",
                    limit,
                    c.runtime.stop_container(request(req, limit)),
                )
                .await?;
                println!("{id}");
            }
        }
        Cmd::Rm(ids) => {
            for id in ids {
                let req = cri::RemoveContainerRequest {
                    container_id: id.clone(),
                };
                call(
                    "RemoveContainer",
                    t,
                    c.runtime.remove_container(request(req, t)),
                )
                .await?;
                println!("{id}");
            }
        }
        Cmd::Stopp(ids) => {
            for id in ids {
                let req = cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                };
                call(
                    "StopPodSandbox",
                    t,
                    c.runtime.stop_pod_sandbox(request(req, t)),
                )
                .await?;
                println!("{id}");
            }
        }
        Cmd::Rmp(ids) => {
            for id in ids {
                let req = cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                };
                call(
                    "RemovePodSandbox",
                    t,
                    c.runtime.remove_pod_sandbox(request(req, t)),
                )
                .await?;
                println!("{id}");
            }
        }
        Cmd::Pods { quiet } => show::pods(&mut c, quiet).await?,
        Cmd::Ps { all, quiet, pod } => show::ps(&mut c, all, quiet, pod).await?,
        Cmd::Inspect(id) => show::inspect(&mut c, id).await?,
        Cmd::Inspectp(id) => show::inspectp(&mut c, id).await?,
        Cmd::ExecSync { timeout, id, cmd } => return exec_sync(&mut c, timeout, id, cmd).await,
        Cmd::Logs { stream, id } => show_logs(&mut c, stream, id).await?,
        Cmd::Stats(id) => show::stats(&mut c, id).await?,
        Cmd::Statsp(id) => show::statsp(&mut c, id).await?,
        Cmd::Version => {
            let req = cri::VersionRequest {
                version: "v1".into(),
            };
            let v = call("Version", t, c.runtime.version(request(req, t))).await?;
            // crictl's layout, so scripts written for crictl keep working.
            println!("Version:  {}", v.version);
            println!("RuntimeName:  {}", v.runtime_name);
            println!("RuntimeVersion:  {}", v.runtime_version);
            println!("RuntimeApiVersion:  {}", v.runtime_api_version);
        }
        Cmd::Images { quiet } => show::images(&mut c, quiet).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The deadline of a call that itself waits `n` seconds (a stop's grace
/// period, an exec's timeout): room for that wait plus 10 s, at least `global`.
fn with_grace(global: Duration, n: i64) -> Duration {
    if n <= 0 {
        return global;
    }
    global.max(Duration::from_secs(n as u64 + 10))
}

fn read_json<T>(path: &str, parse: fn(&Value) -> Result<T>) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{path}: invalid JSON"))?;
    parse(&value).with_context(|| path.to_string())
}

async fn exec_sync(c: &mut Cri, timeout: i64, id: String, cmd: Vec<String>) -> Result<ExitCode> {
    let limit = with_grace(c.timeout, timeout);
    let req = request(
        cri::ExecSyncRequest {
            container_id: id,
            cmd,
            timeout,
        },
        limit,
    );
    let r = call("ExecSync", limit, c.runtime.exec_sync(req)).await?;
    std::io::stdout().write_all(&r.stdout)?;
    std::io::stderr().write_all(&r.stderr)?;
    std::io::stdout().flush()?;
    // Exit codes beyond a byte (or negative) cannot pass through: say failure.
    Ok(ExitCode::from(u8::try_from(r.exit_code).unwrap_or(255)))
}

async fn show_logs(c: &mut Cri, only: Option<Stream>, id: String) -> Result<()> {
    let s = container_status(c, id.clone(), false)
        .await?
        .status
        .unwrap_or_default();
    if s.log_path.is_empty() {
        anyhow::bail!("container {id} has no log_path (its pod has no log_directory?)");
    }
    let data = std::fs::read(&s.log_path).with_context(|| format!("read {}", s.log_path))?;
    let (lines, bad) = logs::decode(&data, only);
    for e in bad {
        eprintln!("vxn-crictl: warning: {}: {e}", s.log_path);
    }
    // Each stream to its own descriptor, as crictl logs does.
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for line in lines {
        let w: &mut dyn Write = if line.stream == Stream::Stdout {
            &mut out
        } else {
            &mut err
        };
        w.write_all(&line.text)?;
        if line.newline {
            w.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_extends_the_deadline_only_when_set() {
        let g = Duration::from_secs(120);
        assert_eq!(with_grace(g, 0), g);
        assert_eq!(with_grace(g, 30), g);
        assert_eq!(with_grace(g, 300), Duration::from_secs(310));
        assert_eq!(
            with_grace(Duration::from_secs(2), 0),
            Duration::from_secs(2)
        );
    }
}
