//! The device model QEMU that serves a domain's 9p shares: whether it can
//! run under its seccomp sandbox. Xen's own confinement (`dm_restrict`)
//! chroots QEMU away from the shares, so `-sandbox` is what is left, and
//! only some builds have it: Debian 12's qemu-system-xen has no seccomp.

use std::path::Path;
use std::time::Duration;

use tokio::sync::OnceCell;

/// Where distributions put Xen's QEMU (Debian's qemu-system-xen, Xen's own
/// build under /usr/lib/xen and /usr/local/lib/xen).
const CANDIDATES: &[&str] = &[
    "/usr/libexec/xen-qemu-system-i386",
    "/usr/lib/xen/bin/qemu-system-i386",
    "/usr/local/lib/xen/bin/qemu-system-i386",
];
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

static SANDBOX: OnceCell<bool> = OnceCell::const_new();

/// True when the device model accepts `-sandbox` (asked once per process).
pub async fn sandbox_supported() -> bool {
    *SANDBOX
        .get_or_init(|| async {
            let Some(dm) = CANDIDATES.iter().find(|p| Path::new(p).is_file()) else {
                tracing::warn!(
                    "no Xen device model found: 9p shares run without QEMU's seccomp sandbox"
                );
                return false;
            };
            let ok = crate::command::run(dm, &["-sandbox", "on", "-version"], PROBE_TIMEOUT)
                .await
                .is_ok();
            if !ok {
                tracing::warn!(
                    device_model = dm,
                    "this QEMU has no seccomp support: 9p shares run without its sandbox"
                );
            }
            ok
        })
        .await
}
