//! After a claim: `vxnctl pool refill` started in the background, in a
//! session of its own, so the claimant (a shim that may exit with its short
//! container) neither waits for it nor takes it down. The refill takes the
//! shape's lock or leaves it to the filler at work.

use std::path::PathBuf;
use std::process::Stdio;

/// vxnctl beside this executable (they are installed together), else on PATH.
fn vxnctl() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("vxnctl"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "vxnctl".into())
}

/// Start a refill; a failure to start one is logged, never the claim's.
pub fn spawn() {
    let mut cmd = tokio::process::Command::new(vxnctl());
    cmd.args(["pool", "refill"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    match cmd.spawn() {
        // reaped when it ends (the claimant may outlive it)
        Ok(mut child) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot start the pool's refill"),
    }
}
