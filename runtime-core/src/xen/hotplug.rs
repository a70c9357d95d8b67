//! libxl's hotplug scripts that vxn writes itself, so nothing needs installing
//! in /etc/xen/scripts and no device waits on Xen's general-purpose ones.
//!
//! libxl runs a device's script (with `XENBUS_PATH` set to the backend's
//! xenstore directory) and waits, 40 s at most, for it to write
//! `hotplug-status`. Xen's own `block` script takes a global lock and walks
//! every other domain's disks before it says which device blkback opens: seconds
//! per disk on a loaded dom0, past the 40 s when many containers start at once.
//! vxn's disks are loop devices it made for one domain, so its script only
//! reports them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// A disk whose target is a block device vxn made for this domain alone.
    Block,
    /// A pod VM's vif: reported ready and joined to no bridge; the shim moves
    /// it into the pod's network namespace.
    VifUnplugged,
}

/// blkback opens the device named by `physical-device` (hex major:minor);
/// libxl waits for `hotplug-status`. One xenstore transaction writes both.
const BLOCK: &str = "#!/bin/sh\n\
# vxn: a loop device made for this domain alone. Tell blkback which device it is.\n\
case \"$1\" in\n\
add)\n\
  dev=$(xenstore-read \"$XENBUS_PATH/params\") || exit 1\n\
  if [ ! -b \"$dev\" ]; then\n\
    xenstore-write \"$XENBUS_PATH/hotplug-error\" \"$dev is not a block device\" \\\n\
      \"$XENBUS_PATH/hotplug-status\" error\n\
    exit 1\n\
  fi\n\
  mm=$(stat -L -c %t:%T \"$dev\") || exit 1\n\
  exec xenstore-write \"$XENBUS_PATH/physical-device\" \"$mm\" \\\n\
    \"$XENBUS_PATH/physical-device-path\" \"$dev\" \"$XENBUS_PATH/hotplug-status\" connected\n\
  ;;\n\
esac\n\
exit 0\n";

const VIF_UNPLUGGED: &str = "#!/bin/sh\n\
# vxn: a pod VM's vif. Report it ready; the vxn shim moves it into the pod's netns.\n\
case \"$1\" in\n\
online|add) exec xenstore-write \"$XENBUS_PATH/hotplug-status\" connected ;;\n\
esac\n\
exit 0\n";

impl Script {
    fn file_name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::VifUnplugged => "vif-unplugged",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Block => BLOCK,
            Self::VifUnplugged => VIF_UNPLUGGED,
        }
    }

    /// The script under `dir` (on a filesystem that allows exec: /run is
    /// noexec on most hosts), (re)written atomically if it is not as expected.
    pub fn install(self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join(self.file_name());
        self.remove_dead_writers_files(dir);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(self.text()) {
            return Ok(path);
        }
        let with_path = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("write {}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(with_path)?;
        let tmp = dir.join(format!(".{}.{}", self.file_name(), std::process::id()));
        let written = std::fs::write(&tmp, self.text())
            .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(with_path(e));
        }
        Ok(path)
    }

    /// The temporary files of writers SIGKILLed before their rename
    /// (`.<name>.<pid>` whose process is gone).
    fn remove_dead_writers_files(self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let prefix = format!(".{}.", self.file_name());
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(&prefix));
            if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
                if !Path::new("/proc").join(pid.to_string()).exists() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_written_once_executable_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let hotplug = dir.path().join(".hotplug");
        let block = Script::Block.install(&hotplug).unwrap();
        assert_eq!(block, hotplug.join("block"));
        let mode = std::fs::metadata(&block).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(std::fs::read_to_string(&block)
            .unwrap()
            .contains("physical-device"));
        std::fs::write(&block, "#!/bin/sh\nexit 1\n").unwrap();
        Script::Block.install(&hotplug).unwrap();
        assert_eq!(std::fs::read_to_string(&block).unwrap(), BLOCK);
        let vif = Script::VifUnplugged.install(&hotplug).unwrap();
        assert_ne!(vif, block);
        assert_eq!(std::fs::read_dir(&hotplug).unwrap().count(), 2);
        // A writer SIGKILLed before its rename leaves its file to the next one.
        let dead = hotplug.join(".block.4294967295");
        std::fs::write(&dead, "#!/bin/sh\n").unwrap();
        Script::Block.install(&hotplug).unwrap();
        assert!(!dead.exists());
        assert_eq!(std::fs::read_dir(&hotplug).unwrap().count(), 2);
    }

    /// The block script against a fake xenstore: what blkback and libxl read.
    #[test]
    fn the_block_script_names_the_device_and_reports_it_connected() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let store = dir.path().join("store");
        // xenstore-read prints `params`; xenstore-write appends its pairs.
        let fake = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        fake("xenstore-read", "cat \"$STORE.params\"");
        fake("xenstore-write", "echo \"$@\" >> \"$STORE\"");
        let script = Script::Block.install(&dir.path().join("h")).unwrap();
        let run = |params: &str, verb: &str| {
            std::fs::write(store.with_extension("params"), params).unwrap();
            let _ = std::fs::remove_file(&store);
            let status = std::process::Command::new(&script)
                .arg(verb)
                .env("XENBUS_PATH", "/be/vbd/5/51728")
                .env("STORE", &store)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .status()
                .unwrap();
            (
                status.success(),
                std::fs::read_to_string(&store).unwrap_or_default(),
            )
        };
        // Any block device of this machine stands in for the loop device.
        let Some((dev, rdev)) = some_block_device() else {
            eprintln!("no block device in /dev: the add case is not checked");
            return;
        };
        let (ok, wrote) = run(&dev, "add");
        assert!(ok);
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        assert_eq!(
            wrote.trim(),
            format!("/be/vbd/5/51728/physical-device {major:x}:{minor:x} /be/vbd/5/51728/physical-device-path {dev} /be/vbd/5/51728/hotplug-status connected")
        );
        let (ok, wrote) = run(dir.path().to_str().unwrap(), "add");
        assert!(!ok);
        assert!(wrote.contains("hotplug-error") && wrote.contains("hotplug-status error"));
        let (ok, wrote) = run(&dev, "remove");
        assert!(ok && wrote.is_empty());
    }

    fn some_block_device() -> Option<(String, libc::dev_t)> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        std::fs::read_dir("/dev").ok()?.flatten().find_map(|e| {
            let m = e.metadata().ok()?;
            m.file_type()
                .is_block_device()
                .then(|| (e.path().to_string_lossy().into_owned(), m.rdev()))
        })
    }
}
