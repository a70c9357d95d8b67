//! The spec's OCI hooks, run in dom0 where runc runs them: `prestart` and
//! `createRuntime` while the container is created (Docker's
//! `libnetwork-setkey` configures the container's network namespace from
//! one), `poststart` after start, `poststop` after delete. runc runs
//! `createContainer` and `startContainer` inside the container's namespaces,
//! which are the VM's and not dom0's: a spec with them is refused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// The runtime spec version vxn reports in states.
pub const OCI_VERSION: &str = "1.0.2";
/// A hook without a timeout of its own gets this long (runc waits forever;
/// a create that never ends holds the engine's lock).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// What of a failed hook's output the error keeps.
const OUTPUT_LIMIT: u64 = 8 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Hooks {
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub create_container: Vec<Hook>,
    pub start_container: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hook {
    pub path: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    /// Seconds.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// The container's state as a hook reads it on stdin (the OCI state).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState<'a> {
    pub oci_version: &'static str,
    pub id: &'a str,
    pub status: &'static str,
    /// A process of dom0 in the container's network namespace (the keeper,
    /// or while the runtime's own namespace is set up, a thread in it):
    /// hooks find the namespace as `/proc/PID/ns/net`.
    pub pid: u32,
    pub bundle: &'a Path,
    pub annotations: &'a HashMap<String, String>,
}

#[derive(Deserialize)]
struct SpecHooks {
    #[serde(default)]
    hooks: Option<Hooks>,
}

impl Hooks {
    /// The hooks of `bundle/config.json`, refused where a VM cannot run them.
    pub fn load(bundle: &Path) -> Result<Self> {
        let path = bundle.join("config.json");
        let text = std::fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
        let spec: SpecHooks = serde_json::from_slice(&text)
            .map_err(|e| Error::Refused(format!("{}: hooks: {e}", path.display())))?;
        let hooks = spec.hooks.unwrap_or_default();
        hooks.check()?;
        Ok(hooks)
    }

    fn check(&self) -> Result<()> {
        for (what, list) in [
            ("createContainer", &self.create_container),
            ("startContainer", &self.start_container),
        ] {
            if let Some(h) = list.first() {
                return Err(Error::Refused(format!(
                    "{what} hook {}: such hooks run inside the container's namespaces, which \
                     are its VM's, not dom0's; vxn cannot run them",
                    h.path.display()
                )));
            }
        }
        Ok(())
    }

    /// The hooks run while the container is created, in runc's order.
    pub fn at_create(&self) -> impl Iterator<Item = &Hook> {
        self.prestart.iter().chain(&self.create_runtime)
    }
}

/// The hooks of a container whose keeper is gone or running (start,
/// delete): its saved bundle's, none when that is gone.
pub fn of_saved(saved: &crate::state::Saved) -> Hooks {
    Hooks::load(&saved.bundle).unwrap_or_default()
}

/// Run `hooks` in order, each with `state` on stdin; the first failure ends it.
pub async fn run_all<'a>(
    what: &str,
    hooks: impl IntoIterator<Item = &'a Hook>,
    state: &HookState<'_>,
) -> Result<()> {
    let json = serde_json::to_vec(state).map_err(|e| Error::Keeper(e.to_string()))?;
    for h in hooks {
        run_one(h, &json)
            .await
            .map_err(|e| Error::Refused(format!("{what} hook {}: {e}", h.path.display())))?;
    }
    Ok(())
}

async fn run_one(h: &Hook, state: &[u8]) -> std::result::Result<(), String> {
    let timeout = h
        .timeout
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let mut cmd = tokio::process::Command::new(&h.path);
    // args[0] is the program's argv[0], as execve takes it.
    if let Some((arg0, rest)) = h.args.split_first() {
        std::os::unix::process::CommandExt::arg0(cmd.as_std_mut(), arg0);
        cmd.args(rest);
    }
    cmd.env_clear()
        .envs(h.env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("start: {e}"))?;
    let stdin = child.stdin.take();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("no pipes".into());
    };
    let work = async {
        // A hook that never reads its state must not block us: written
        // while its output is read, and closed.
        let feed = async {
            if let Some(mut i) = stdin {
                let _ = i.write_all(state).await;
            }
        };
        let (_, out, err) = tokio::join!(feed, bounded(stdout), bounded(stderr));
        let status = child.wait().await.map_err(|e| format!("wait: {e}"))?;
        Ok::<_, String>((status, out, err))
    };
    let (status, out, err) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("did not finish within {}s", timeout.as_secs()))??;
    if status.success() {
        return Ok(());
    }
    let said = if err.trim().is_empty() { out } else { err };
    Err(format!("{status}: {}", said.trim()))
}

/// Everything the stream gives, the first OUTPUT_LIMIT bytes kept.
async fn bounded(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let _ = (&mut r).take(OUTPUT_LIMIT).read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_of<'a>(bundle: &'a Path, ann: &'a HashMap<String, String>) -> HookState<'a> {
        HookState {
            oci_version: OCI_VERSION,
            id: "c1",
            status: "creating",
            pid: 4242,
            bundle,
            annotations: ann,
        }
    }

    fn sh(script: &str, timeout: Option<u64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["HOOKVAR=set".into()],
            timeout,
        }
    }

    #[tokio::test]
    async fn a_hook_reads_the_state_and_its_own_env_only() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let script = format!(
            "cat > {o}; printf '\\n%s %s\\n' \"$HOOKVAR\" \"${{HOME:-nohome}}\" >> {o}",
            o = out.display()
        );
        let ann = HashMap::from([("a".to_string(), "b".to_string())]);
        run_all(
            "prestart",
            [&sh(&script, None)],
            &state_of(dir.path(), &ann),
        )
        .await
        .unwrap();
        let seen = std::fs::read_to_string(&out).unwrap();
        let (json, env) = seen.split_once('\n').unwrap_or((&seen, ""));
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["status"], "creating");
        assert_eq!(v["annotations"]["a"], "b");
        assert_eq!(env.trim(), "set nohome");
    }

    #[tokio::test]
    async fn a_failing_or_hanging_hook_is_an_error_that_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let ann = HashMap::new();
        let st = state_of(dir.path(), &ann);
        let e = run_all("prestart", [&sh("echo no network >&2; exit 3", None)], &st)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("prestart hook /bin/sh") && e.contains("no network"),
            "{e}"
        );
        let t = std::time::Instant::now();
        let e = run_all("prestart", [&sh("sleep 30", Some(1))], &st)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("within 1s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        // A flood of output is drained, not kept.
        let flood = sh("head -c 10000000 /dev/zero; exit 1", None);
        let e = run_all("poststop", [&flood], &st)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.len() < 2 * OUTPUT_LIMIT as usize, "{}", e.len());
    }

    #[test]
    fn hooks_inside_the_container_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |hooks: &str| {
            std::fs::write(
                dir.path().join("config.json"),
                format!(r#"{{"ociVersion":"1.0.2","hooks":{hooks}}}"#),
            )
            .unwrap()
        };
        write(r#"{"prestart":[{"path":"/usr/bin/docker-proxy","args":["x","y"]}]}"#);
        let h = Hooks::load(dir.path()).unwrap();
        assert_eq!(h.at_create().count(), 1);
        write(r#"{"createContainer":[{"path":"/usr/bin/nvidia-ctk"}]}"#);
        let e = Hooks::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("createContainer hook /usr/bin/nvidia-ctk"),
            "{e}"
        );
        std::fs::write(dir.path().join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert_eq!(Hooks::load(dir.path()).unwrap().at_create().count(), 0);
    }
}
