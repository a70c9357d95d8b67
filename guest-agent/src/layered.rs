//! A layered rootfs ([`RootfsSource::Overlay`]): the image's read-only
//! filesystem (shared by every container of the image on the host) under the
//! container's own writable one, joined by overlayfs. Made inside the
//! container's mount namespace, so neither layer is visible to the agent.

use std::path::Path;

use nix::mount::MsFlags;
use vxn_wire::protocol::{AgentError, BlockFs, ErrorKind};

use crate::sys_mount::do_mount;

/// Where the layers are mounted, next to the staging directory.
const LOWER: &str = "layer-lower";
const UPPER: &str = "layer-upper";

fn invalid(msg: String) -> AgentError {
    AgentError::new(ErrorKind::InvalidArgument, msg)
}

/// A device the host named: a node under /dev, nothing to split an option on.
fn check_device(fs: &BlockFs) -> Result<(), AgentError> {
    let ok = fs.device.starts_with("/dev/")
        && !fs.device.contains("..")
        && !fs.device.contains([',', ':', '\0'])
        && !fs.fstype.is_empty()
        && !fs.fstype.contains([',', '\0', '/']);
    match ok {
        true => Ok(()),
        false => Err(invalid(format!(
            "layer device {:?} ({:?}) is not a device under /dev",
            fs.device, fs.fstype
        ))),
    }
}

fn mkdir(p: &Path) -> Result<(), AgentError> {
    std::fs::create_dir_all(p)
        .map_err(|e| AgentError::new(ErrorKind::Internal, format!("mkdir {}: {e}", p.display())))
}

/// The overlay's options for the layers mounted at `lower` and `upper`.
fn overlay_options(lower: &Path, upper: &Path) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.join("upper").display(),
        upper.join("work").display()
    )
}

/// Mount `lower` read-only, `upper` read-write and their overlay on `staging`.
pub fn mount(lower: &BlockFs, upper: &BlockFs, staging: &Path) -> Result<(), AgentError> {
    check_device(lower)?;
    check_device(upper)?;
    let base = staging
        .parent()
        .ok_or_else(|| invalid(format!("staging {} has no parent", staging.display())))?;
    let (lower_dir, upper_dir) = (base.join(LOWER), base.join(UPPER));
    for d in [&lower_dir, &upper_dir, &staging.to_path_buf()] {
        mkdir(d)?;
    }
    let safe = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    do_mount(
        Some(&lower.device),
        &lower_dir,
        Some(&lower.fstype),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None,
        "the image layer",
    )?;
    do_mount(
        Some(&upper.device),
        &upper_dir,
        Some(&upper.fstype),
        safe,
        None,
        "the writable layer",
    )?;
    // A writable layer made by an older host may lack them; overlayfs needs both.
    mkdir(&upper_dir.join("upper"))?;
    mkdir(&upper_dir.join("work"))?;
    do_mount(
        Some("overlay"),
        staging,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(&overlay_options(&lower_dir, &upper_dir)),
        "/",
    )
}

/// Both layers' devices (to wait for), once they are known to be plain ones.
pub fn devices<'a>(lower: &'a BlockFs, upper: &'a BlockFs) -> Result<[&'a str; 2], AgentError> {
    check_device(lower)?;
    check_device(upper)?;
    Ok([&lower.device, &upper.device])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(device: &str) -> BlockFs {
        BlockFs {
            device: device.into(),
            fstype: "erofs".into(),
        }
    }

    #[test]
    fn only_plain_device_paths_are_taken() {
        assert!(check_device(&fs("/dev/xvdb")).is_ok());
        for bad in ["xvdb", "/dev/../etc/x", "/dev/a,b", "/dev/a:b", ""] {
            assert!(check_device(&fs(bad)).is_err(), "{bad}");
        }
        let mut f = fs("/dev/xvdc");
        f.fstype = "ext4,x=y".into();
        assert!(check_device(&f).is_err());
    }

    #[test]
    fn the_overlay_uses_the_writable_layers_upper_and_work() {
        assert_eq!(
            overlay_options(Path::new("/run/c/layer-lower"), Path::new("/run/c/layer-upper")),
            "lowerdir=/run/c/layer-lower,upperdir=/run/c/layer-upper/upper,workdir=/run/c/layer-upper/work"
        );
    }
}
