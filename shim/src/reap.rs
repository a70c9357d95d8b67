//! The `delete` action's teardown, in a process of its own. containerd gives
//! the action about 5 s and then SIGKILLs it; destroying a domain whose
//! create was cut short can take longer (far longer on an emulated host),
//! and a teardown killed halfway leaves a domain nobody will remove. So the
//! action starts a detached reaper (its own process group, no parent-death
//! signal) that finishes whatever happens to the action, and waits for it as
//! long as containerd lets it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use vxn_runtime_core::config::Config;
use vxn_runtime_core::names::ContainerName;
use vxn_runtime_core::persist::{self, StateDir};

/// argv[1] of the reaper: `containerd-shim-vxn-v2 --vxn-reap NS ID BUNDLE`.
pub const REAP_ARG: &str = "--vxn-reap";
/// How long the action waits for its reaper: under containerd's 5 s.
const ACTION_WAIT: Duration = Duration::from_millis(4500);
/// Left in the state directory when the reaper could not remove everything.
const FAILURE_NOTE: &str = "teardown-error";

/// In the `delete` action: tear down (namespace, id) through a reaper. Ok
/// once everything is gone; an error when something is left or the reaper
/// is still at it (it carries on, and leaves a note if it fails).
pub async fn teardown_detached(name: &ContainerName, bundle: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let mut child = tokio::process::Command::new(exe)
        .arg(REAP_ARG)
        .args([name.namespace(), name.id()])
        .arg(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("start the teardown: {e}"))?;
    let pid = child.id().unwrap_or_default();
    match tokio::time::timeout(ACTION_WAIT, child.wait()).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(format!(
            "teardown incomplete ({st}); see {FAILURE_NOTE} in the container's state directory"
        )),
        Ok(Err(e)) => Err(format!("waiting for the teardown: {e}")),
        Err(_) => Err(format!(
            "the teardown is still running (pid {pid}); it finishes on its own"
        )),
    }
}

/// The reaper itself: `args` are NS, ID, BUNDLE. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let [ns, id, bundle] = args else {
        eprintln!("usage: {REAP_ARG} NAMESPACE ID BUNDLE");
        return 2;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return 1,
    };
    match rt.block_on(reap(ns, id, Path::new(bundle))) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

async fn reap(ns: &str, id: &str, bundle: &Path) -> Result<(), ()> {
    let cfg = Config::load().unwrap_or_default();
    let name = ContainerName::new(ns, id).map_err(|_| ())?;
    let dir = StateDir::of(&cfg.state_dir, &name);
    persist::teardown_by_name(&cfg, &name, Some(bundle))
        .await
        .map_err(|e| {
            // Nobody waits for us any more: say it where the next delete looks.
            let note: PathBuf = dir.path().join(FAILURE_NOTE);
            let _ = std::fs::write(note, format!("{e}\n"));
        })
}
