//! Taking down what vxn mounted in dom0 (image cache merges, writable layers,
//! 9p share sources), whatever is stacked there.

use std::path::Path;

/// Detach every mount stacked on `target` (each with all below it); a path
/// that is no mount point (any more), or is gone, is done.
pub fn unmount_all(target: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // Mounts stack; each round takes the top one. Bounded, whatever is there.
    for _ in 0..64 {
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
                _ => Err(e),
            };
        }
    }
    Err(std::io::Error::other("more than 64 mounts stacked"))
}
