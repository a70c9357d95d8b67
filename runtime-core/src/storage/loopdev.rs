//! dom0 loop devices over a container's disk files, so xl gives the VM a
//! `phy` disk (the kernel's blkback) instead of a QEMU qdisk. No state is
//! kept: a file's loop devices are found by their backing file in sysfs, so
//! a lost shim's are found the same way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::command::{self, CommandError};

const LOSETUP_TIMEOUT: Duration = Duration::from_secs(30);
const SYS_BLOCK: &str = "/sys/block";

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("attach {file} to a loop device: {source}")]
    Attach {
        file: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("losetup printed {0:?}, not a loop device")]
    Odd(String),
    #[error("detach {device}: {source}")]
    Detach {
        device: String,
        #[source]
        source: CommandError,
    },
}

/// Attach `file` to a free loop device; its path (`/dev/loopN`).
pub async fn attach(file: &Path, read_only: bool) -> Result<PathBuf, LoopError> {
    let mut args: Vec<std::ffi::OsString> = vec!["--find".into(), "--show".into()];
    if read_only {
        args.push("--read-only".into());
    }
    args.push(file.into());
    let out = command::run("losetup", &args, LOSETUP_TIMEOUT)
        .await
        .map_err(|source| LoopError::Attach {
            file: file.to_path_buf(),
            source,
        })?;
    let dev = out.stdout.trim();
    match dev.strip_prefix("/dev/loop") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => Ok(dev.into()),
        _ => Err(LoopError::Odd(dev.into())),
    }
}

/// The loop devices (`loopN`) whose backing file is `file` or lies under
/// `file` (a directory), from sysfs. A deleted backing file still counts.
pub fn backed_by(file: &Path) -> Vec<String> {
    // The kernel names the file by its real path.
    let real = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    backed_by_in(Path::new(SYS_BLOCK), &real)
}

fn backed_by_in(sys_block: &Path, file: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(sys_block) else {
        return vec![];
    };
    let mut found = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(back) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let back = back.trim_end_matches('\n');
        let back = Path::new(back.strip_suffix(" (deleted)").unwrap_or(back));
        if back.starts_with(file) {
            found.push(name);
        }
    }
    found.sort();
    found
}

/// Detach every loop device backed by `file` or by a file under it.
pub async fn detach_all(file: &Path) -> Result<(), LoopError> {
    let mut first_error = None;
    for name in backed_by(file) {
        let device = format!("/dev/{name}");
        match command::run("losetup", &["-d", &device], LOSETUP_TIMEOUT).await {
            Ok(_) => {
                tracing::debug!(device = %device, file = %file.display(), "loop device detached")
            }
            // Detached meanwhile (another teardown): done.
            Err(_) if !Path::new(SYS_BLOCK).join(&name).join("loop").exists() => {}
            Err(source) => {
                tracing::error!(device = %device, error = %source, "loop device not detached");
                first_error.get_or_insert(LoopError::Detach { device, source });
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_loop_devices_by_backing_file() {
        let sys = tempfile::tempdir().unwrap();
        for (dev, back) in [
            ("loop0", "/var/lib/vxn/ns/a/upper.ext4\n"),
            ("loop1", "/var/lib/vxn/ns/a/lower.erofs (deleted)\n"),
            ("loop2", "/var/lib/vxn/ns/ab/upper.ext4\n"),
            ("sda", "/var/lib/vxn/ns/a/x\n"),
        ] {
            let d = sys.path().join(dev).join("loop");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("backing_file"), back).unwrap();
        }
        std::fs::create_dir_all(sys.path().join("loop3")).unwrap(); // unbound
        let dir = Path::new("/var/lib/vxn/ns/a");
        assert_eq!(backed_by_in(sys.path(), dir), vec!["loop0", "loop1"]);
        assert_eq!(
            backed_by_in(sys.path(), &dir.join("upper.ext4")),
            vec!["loop0"]
        );
        assert!(backed_by_in(Path::new("/nonexistent"), dir).is_empty());
    }
}
