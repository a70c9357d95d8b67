//! Making and unmaking pooled VMs: fill a shape's pool up to its size, drain
//! every pool. One filler per shape at a time (the shape's lock); a filler
//! killed midway leaves its VM recorded as "filling", and the next filler or
//! drain, holding the lock, destroys it. A drain also stops refills until
//! the next explicit fill: an administrator empties the pool to change its
//! kernel, and a container's create must not start filling it again.

use std::fs;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::store::{PoolStore, PoolStoreError, Pooled, Shape};
use super::uppers;
use crate::hypervisor::{Hypervisor, VmError, VmSpec};
use crate::storage::binds::SHARE_TAG;
use crate::storage::rootfs::RootfsExport;

/// What pooled VMs are made with: the backend and its rootfs exporter (for
/// a shape's blank writable layers).
#[derive(Clone, Copy)]
pub struct Platform<'a> {
    pub hv: &'a dyn Hypervisor,
    pub exporter: &'a dyn RootfsExport,
}

/// Present while the pool is drained: refills are refused.
const DRAINED_MARK: &str = "drained";
/// How long a drain waits for a shape's filler to finish its current VM.
const LOCK_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Store(#[from] PoolStoreError),
    #[error("pooled VM {domain}: {source}")]
    Vm {
        domain: String,
        #[source]
        source: VmError,
    },
    #[error("pooled VM {domain}: its agent did not serve within {secs} s")]
    AgentTimeout { domain: String, secs: u64 },
    #[error("the pool's {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Upper(#[from] uppers::LayerError),
    #[error("another filler held the pool's lock for {0:?}")]
    Busy(Duration),
}

/// What a fill is to reach.
#[derive(Debug, Clone)]
pub struct FillPlan {
    pub shape: Shape,
    /// VMs kept ready.
    pub size: usize,
    /// The dom0 memory all of this shape's pooled VMs may hold, in MiB.
    pub max_pool_mib: u64,
    /// The agent's log level in pooled VMs.
    pub agent_log: String,
    /// How long a VM may take from unpause to its agent serving.
    pub agent_timeout: Duration,
}

impl FillPlan {
    /// The VMs this plan keeps: its size, within its memory.
    pub fn target(&self) -> usize {
        let by_memory = self.max_pool_mib / self.shape.boot_memory_mib.max(1);
        self.size
            .min(usize::try_from(by_memory).unwrap_or(usize::MAX))
    }
}

/// What a fill did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filled {
    /// VMs booted and made ready now.
    pub made: usize,
    /// Ready VMs after the fill.
    pub ready: usize,
    /// VMs a killed filler left, destroyed.
    pub reaped: usize,
    /// Nothing done: another filler is at work, or the pool is drained.
    pub skipped: Option<&'static str>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PoolError {
    let what = what.into();
    move |source| PoolError::Io { what, source }
}

/// The shape's lock file, taken without waiting (`None`: another holds it).
fn try_lock(store: &PoolStore, shape: &Shape) -> Result<Option<Flock<fs::File>>, PoolError> {
    let dir = store.shape_dir(shape);
    fs::create_dir_all(&dir).map_err(io(format!("directory {}", dir.display())))?;
    let path = dir.join(".lock");
    let f = fs::File::create(&path).map_err(io(format!("lock {}", path.display())))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(io(format!("lock {}", path.display()))(e.into())),
    }
}

/// The shape's lock, waiting up to `wait` for a filler to let it go.
async fn lock(
    store: &PoolStore,
    shape: &Shape,
    wait: Duration,
) -> Result<Flock<fs::File>, PoolError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(l) = try_lock(store, shape)? {
            return Ok(l);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(PoolError::Busy(wait));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn drained_mark(store: &PoolStore) -> PathBuf {
    store.root().join(DRAINED_MARK)
}

/// Whether a drain has stopped refills.
pub fn drained(store: &PoolStore) -> bool {
    drained_mark(store).exists()
}

/// A pool VM's working directory (the backend's config for it).
fn vm_dir(store: &PoolStore, p: &Pooled) -> PathBuf {
    store.shape_dir(&p.shape).join("vm").join(&p.domain)
}

/// Destroy a pooled VM nobody holds and forget it; false when it survived.
async fn unmake(store: &PoolStore, pf: &Platform<'_>, p: &Pooled) -> bool {
    match pf.hv.destroy(&p.domain).await {
        Ok(()) => {
            store.forget_fill(p);
            remove_made(store, pf, p).await;
            true
        }
        Err(e) => {
            tracing::error!(domain = %p.domain, error = %e, "cannot destroy a pooled VM; it stays recorded");
            false
        }
    }
}

/// What was made for a pooled VM that is gone (or never was): its working
/// directory, its share and its writable layer.
async fn remove_made(store: &PoolStore, pf: &Platform<'_>, p: &Pooled) {
    let _ = fs::remove_dir_all(vm_dir(store, p));
    remove_share(store, p);
    uppers::remove(store, pf.exporter, p).await;
}

/// A destroyed pooled VM's share (empty: nothing is put in one before a
/// claim renames it away).
fn remove_share(store: &PoolStore, p: &Pooled) {
    if let Some(dir) = store.share_of(p) {
        let _ = fs::remove_dir(dir);
    }
}

/// An empty share for a pooled VM, private to root as a container's is.
fn make_share(dir: &std::path::Path) -> Result<(), PoolError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    b.create(dir)
        .map_err(io(format!("share {}", dir.display())))
}

/// The shares no pooled VM holds any more: a claimant SIGKILLed between its
/// claim and renaming the share, an unmaking cut short. Only empty
/// directories named as pool VMs that no entry records (a filler records its
/// VM before it makes the share) and whose VM is gone are removed.
async fn sweep_shares(store: &PoolStore, hv: &dyn Hypervisor) -> usize {
    let unheld = super::orphans::unheld(store, hv, store.share_root()).await;
    unheld
        .iter()
        .filter(|dir| fs::remove_dir(dir).is_ok())
        .count()
}

/// 64 random bits for a VM's name.
fn unique() -> Result<u64, PoolError> {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io("random name"))?;
    Ok(u64::from_le_bytes(b))
}

/// The vcpus a pooled VM boots with (its memory: the shape's
/// `boot_memory_mib`); a claim sets what the container asks for.
pub const BOOT_VCPUS: u32 = 1;

/// Boot one VM of the plan's shape until its agent serves and put it in the
/// pool, running: an idle guest costs Xen nothing, and its claimant's disks
/// and vif connect while the rest is plugged in (a paused VM connects them
/// only at its unpause). No tenant data or code is in it until a claim, and
/// its agent configures no device before the claimant asks. On any failure
/// nothing of it is left.
async fn make_one(store: &PoolStore, pf: &Platform<'_>, plan: &FillPlan) -> Result<(), PoolError> {
    let hv = pf.hv;
    let mut p = Pooled {
        domain: plan.shape.domain_name(unique()?),
        shape: plan.shape.clone(),
        running: true,
        upper_disk: None,
    };
    store.begin_fill(&p)?;
    let share = store.share_of(&p);
    if let Some(dir) = &share {
        if let Err(e) = make_share(dir) {
            store.forget_fill(&p);
            return Err(e);
        }
    }
    // (recorded again with its disk, which the ready entry names)
    match uppers::make(store, pf.exporter, &p)
        .await
        .map_err(PoolError::from)
        .and_then(|disk| {
            p.upper_disk = disk;
            store.begin_fill(&p).map_err(PoolError::from)
        }) {
        Ok(()) => {}
        Err(e) => {
            // (a layer made but not recorded goes too)
            store.forget_fill(&p);
            remove_made(store, pf, &p).await;
            return Err(e);
        }
    }
    let spec = VmSpec {
        name: p.domain.clone(),
        kernel: plan.shape.kernel.clone(),
        initramfs: plan.shape.initramfs.clone(),
        cmdline_extra: plan.shape.cmdline_extra.clone(),
        agent_log: plan.agent_log.clone(),
        memory_mib: plan.shape.boot_memory_mib,
        max_memory_mib: plan.shape.max_memory_mib,
        vcpus: BOOT_VCPUS,
        max_vcpus: plan.shape.max_vcpus,
        rootfs_disk: None,
        rootfs_writable: true,
        upper_disk: p.upper_disk.clone(),
        vif: None,
        shares: share
            .iter()
            .map(|d| (SHARE_TAG.to_string(), d.clone()))
            .collect(),
        state_dir: vm_dir(store, &p),
    };
    let vm = |source| PoolError::Vm {
        domain: p.domain.clone(),
        source,
    };
    let booted = async {
        // The channel is the claimant's to open: the future is dropped unpolled.
        drop(hv.create_paused(&spec).await.map_err(vm)?);
        hv.unpause(&p.domain).await.map_err(vm)?;
        tokio::time::timeout(plan.agent_timeout, hv.agent_published(&p.domain))
            .await
            .map_err(|_| PoolError::AgentTimeout {
                domain: p.domain.clone(),
                secs: plan.agent_timeout.as_secs(),
            })?
            .map_err(vm)?;
        store.ready(&p).map_err(PoolError::from)
    };
    match booted.await {
        Ok(()) => Ok(()),
        Err(e) => {
            // (a create that failed on the name left nothing of ours to destroy)
            if !matches!(
                &e,
                PoolError::Vm {
                    source: VmError::Exists(_),
                    ..
                }
            ) {
                unmake(store, pf, &p).await;
            } else {
                store.forget_fill(&p);
                remove_made(store, pf, &p).await;
            }
            Err(e)
        }
    }
}

/// Reap what a killed filler left (the caller holds the shape's lock).
async fn reap(store: &PoolStore, pf: &Platform<'_>, shape: &Shape) -> usize {
    let mut n = 0;
    for p in store.filling_list(shape) {
        tracing::warn!(domain = %p.domain, "destroying a pooled VM its filler left half made");
        if unmake(store, pf, &p).await {
            n += 1;
        }
    }
    n
}

/// Fill the plan's pool up to its target. `explicit`: an administrator's
/// fill, which lifts a drain; a refill after a claim is not, and does
/// nothing while the pool is drained. Another filler at work: nothing to do.
pub async fn fill(
    store: &PoolStore,
    pf: &Platform<'_>,
    plan: &FillPlan,
    explicit: bool,
) -> Result<Filled, PoolError> {
    if explicit {
        let _ = fs::remove_file(drained_mark(store));
    } else if drained(store) {
        return Ok(Filled {
            skipped: Some("the pool is drained"),
            ..Default::default()
        });
    }
    let Some(_lock) = try_lock(store, &plan.shape)? else {
        return Ok(Filled {
            skipped: Some("another filler is at work"),
            ..Default::default()
        });
    };
    let mut done = Filled {
        reaped: reap(store, pf, &plan.shape).await,
        ..Default::default()
    };
    sweep_shares(store, pf.hv).await;
    uppers::sweep(store, pf.hv, pf.exporter).await;
    while store.ready_list(&plan.shape).len() < plan.target() {
        // a drain started meanwhile: stop at once
        if drained(store) {
            break;
        }
        make_one(store, pf, plan).await?;
        done.made += 1;
    }
    done.ready = store.ready_list(&plan.shape).len();
    Ok(done)
}

/// Empty every pool and stop refills: every ready VM taken out (no claimant
/// can get one), destroyed; each shape's half-made VMs too, once its filler
/// has let go of its lock. Returns the VMs destroyed.
pub async fn drain(store: &PoolStore, pf: &Platform<'_>) -> Result<usize, PoolError> {
    let hv = pf.hv;
    fs::create_dir_all(store.root()).map_err(io("directory"))?;
    fs::write(drained_mark(store), b"").map_err(io("drain mark"))?;
    let draining = store.root().join("draining");
    let mut destroyed = 0;
    let mut failed = vec![];
    for shape in store.shapes() {
        // a filler finishes the VM it is making, then sees the mark
        let _lock = lock(store, &shape, LOCK_WAIT).await?;
        destroyed += reap(store, pf, &shape).await;
    }
    store.take_all(&draining)?;
    // (with what an earlier drain could not destroy)
    for p in super::store::entries_in(&draining) {
        match hv.destroy(&p.domain).await {
            Ok(()) => {
                let _ = fs::remove_file(draining.join(format!("{}.json", p.domain)));
                remove_made(store, pf, &p).await;
                destroyed += 1;
            }
            Err(e) => failed.push((p.domain, e)),
        }
    }
    sweep_shares(store, hv).await;
    uppers::sweep(store, hv, pf.exporter).await;
    match failed.pop() {
        None => Ok(destroyed),
        Some((domain, source)) => Err(PoolError::Vm { domain, source }),
    }
}

/// The ready VMs of every shape (for `vxnctl pool status`).
pub fn status(store: &PoolStore) -> Vec<(Shape, usize, usize)> {
    store
        .shapes()
        .into_iter()
        .map(|s| {
            let (ready, filling) = (store.ready_list(&s).len(), store.filling_list(&s).len());
            (s, ready, filling)
        })
        .collect()
}

#[cfg(test)]
#[path = "fill_tests.rs"]
mod tests;
