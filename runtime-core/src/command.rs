//! Running the external commands vxn drives (`xl`, `mkfs.ext4`): every call
//! has a timeout, is killed when its caller stops waiting (a cancelled ttrpc
//! request drops the future), and dies with the shim (PR_SET_PDEATHSIG), so a
//! SIGKILLed shim never leaves an `xl create` finishing behind its back.
//! Output is captured up to a bound.

use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Bytes of stdout and of stderr kept per call; the rest is read and dropped.
const MAX_OUTPUT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} did not finish within {timeout:?} and was killed")]
    Timeout { command: String, timeout: Duration },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        /// The last non-empty lines of stderr, joined with " | ".
        stderr: String,
    },
}

#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `program args` with stdin from /dev/null; Err unless it exits 0.
pub async fn run<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
) -> Result<Output, CommandError> {
    succeeded(program, args, run_status(program, args, timeout).await?)
}

/// Like [`run`], with `input` on stdin (a batch of commands for one process:
/// each process costs, most of all in an emulated dom0).
pub async fn run_with_input<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    input: &[u8],
    timeout: Duration,
) -> Result<Output, CommandError> {
    let out = spawn_and_wait(program, args, Some(input), timeout).await?;
    succeeded(program, args, out)
}

/// `out`, or the failure it reports (its status and the end of its stderr).
fn succeeded<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    out: Output,
) -> Result<Output, CommandError> {
    if !out.status.success() {
        return Err(CommandError::Failed {
            command: describe(program, args),
            status: out.status.to_string(),
            stderr: tail(&out.stderr, 4),
        });
    }
    Ok(out)
}

/// Like [`run`], but a non-zero exit is returned, not an error.
pub async fn run_status<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
) -> Result<Output, CommandError> {
    spawn_and_wait(program, args, None, timeout).await
}

async fn spawn_and_wait<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, CommandError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn {
        program: program.into(),
        source,
    })?;
    let (stdout, stderr, stdin) = (child.stdout.take(), child.stderr.take(), child.stdin.take());
    let feed = async move {
        if let (Some(mut w), Some(input)) = (stdin, input) {
            // A child that stops reading early fails on its own account.
            let _ = tokio::io::AsyncWriteExt::write_all(&mut w, input).await;
        }
    };
    let work = async {
        let (_, out, err, status) =
            tokio::join!(feed, capped(stdout), capped(stderr), child.wait());
        (out, err, status)
    };
    let t = std::time::Instant::now();
    let done = tokio::time::timeout(timeout, work).await;
    // where a create's or delete's time goes, command by command (log_level = "debug")
    tracing::debug!(command = %describe(program, args), took_ms = t.elapsed().as_millis() as u64, "timing: command");
    match done {
        Ok((stdout, stderr, status)) => {
            let status = status.map_err(|source| CommandError::Spawn {
                program: program.into(),
                source,
            })?;
            Ok(Output {
                status,
                stdout,
                stderr,
            })
        }
        // Dropping `child` (kill_on_drop) kills it; tokio reaps it.
        Err(_) => Err(CommandError::Timeout {
            command: describe(program, args),
            timeout,
        }),
    }
}

async fn capped(r: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut r) = r else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn describe<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// The last `n` non-empty lines of `text`: tools print progress first, the reason last.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn input_reaches_stdin_and_a_child_that_ignores_it_does_not_hang() {
        let big = vec![b'x'; 1 << 20];
        let out = run_with_input("wc", &["-c"], &big, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(out.stdout.trim(), (1 << 20).to_string());
        let out = run_with_input("true", &[] as &[&str], &big, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(out.status.success());
    }

    #[tokio::test]
    async fn output_status_and_failure() {
        let out = run("sh", &["-c", "echo hi"], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out.stdout, "hi\n");
        let e = run(
            "sh",
            &["-c", "echo noise >&2; echo reason >&2; exit 3"],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("exit status: 3") && msg.contains("noise | reason"),
            "{msg}"
        );
        assert!(matches!(
            run("/no/such/program", &["x"], Duration::from_secs(5)).await,
            Err(CommandError::Spawn { .. })
        ));
    }

    #[tokio::test]
    async fn a_hung_command_is_killed_at_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 100", pidfile.display());
        let t = std::time::Instant::now();
        let e = run("sh", &["-c", &script], Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed, not left running: gone (or a zombie about to be reaped).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = state
                .rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
                && !state.is_empty();
            if !alive {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} still running"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn output_is_capped() {
        let out = run(
            "sh",
            &["-c", "head -c 3000000 /dev/zero | tr '\\0' x"],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(out.stdout.len(), MAX_OUTPUT);
    }
}
