//! The address pool: one file per leased address in `lease_dir`, named by
//! the address and holding its owner. Static containers lease from the
//! static range, DHCP ones from the DHCP range; a DHCP lease is also bound
//! to its MAC in dnsmasq (`dhcp_binding`) for as long as it lives.
//!
//! Atomic: every change happens under an exclusive flock of `lease_dir/.lock`;
//! a lease file appears whole (written aside, then hard-linked into place,
//! which fails if the address is taken). Alive: the shim that owns a lease
//! holds a shared flock on its file for as long as the container exists, so
//! a lease is stale only when no process holds it *and* its owner's state
//! no longer names it or its domain is gone. Stale leases are reaped before
//! every allocation; Delete (and the `delete` action) releases a lease
//! explicitly, and only if it is still the same owner's.

use std::fs::File;
use std::io::ErrorKind as IoKind;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::dhcp_binding::Binding;
use super::{mac_for, NetworkConfig};
use crate::error::{Error, Result};
use crate::hypervisor::Hypervisor;
use crate::names::ContainerName;

const LOCK_FILE: &str = ".lock";
/// How long an allocation waits for another one to finish.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// MAC collisions tolerated before giving up (24 bits of digest each).
const MAC_TRIES: u32 = 64;

/// What a container's state records about its lease (before it is made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub dir: PathBuf,
    pub address: Ipv4Addr,
    pub mac: String,
    /// The guest gets the address by DHCP (from the DHCP range).
    #[serde(default)]
    pub dhcp: bool,
}

/// The contents of a lease file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseFile {
    pub namespace: String,
    pub id: String,
    pub domain: String,
    pub mac: String,
    /// The owner's state directory: where its record says it holds this lease.
    pub state_dir: PathBuf,
    /// Its binding in dnsmasq (a DHCP lease), undone when the lease is freed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<Binding>,
}

/// Remove a lease file and undo what it bound.
fn free(path: &Path, a: Ipv4Addr, lease: Option<&LeaseFile>) -> std::io::Result<()> {
    let removed = std::fs::remove_file(path);
    if let Some(l) = lease {
        if let Some(b) = &l.dhcp {
            b.unbind(&l.mac, a);
        }
    }
    removed
}

/// A lease its container holds: the shared flock says "alive" to reapers.
pub struct HeldLease {
    pub record: LeaseRecord,
    _alive: Flock<File>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{what} {}: {e}", path.display()))
}

/// The pool's directory, locked for one allocation or release.
struct Locked {
    dir: PathBuf,
    _lock: Flock<File>,
}

async fn lock(dir: &Path) -> Result<Locked> {
    std::fs::create_dir_all(dir).map_err(|e| io("mkdir", dir, e))?;
    let path = dir.join(LOCK_FILE);
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let f = File::create(&path).map_err(|e| io("open", &path, e))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => {
                return Ok(Locked {
                    dir: dir.to_path_buf(),
                    _lock: l,
                })
            }
            Err((_, nix::Error::EWOULDBLOCK)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err((_, e)) => {
                return Err(Error::Unavailable(format!(
                    "the address pool in {} stayed locked: {e}",
                    dir.display()
                )))
            }
        }
    }
}

fn read_lease(path: &Path) -> Option<LeaseFile> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

impl Locked {
    fn path(&self, a: Ipv4Addr) -> PathBuf {
        self.dir.join(a.to_string())
    }

    /// Every lease file: (address, contents if readable).
    fn leases(&self) -> Result<Vec<(Ipv4Addr, Option<LeaseFile>)>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io("read", &self.dir, e))?;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Ok(a) = name.parse::<Ipv4Addr>() {
                out.push((a, read_lease(&e.path())));
            } else if name.starts_with(".tmp-") {
                // A writer died between writing and linking: never a lease.
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(out)
    }

    /// Whether a process (the owner's shim) holds the lease alive.
    fn held(&self, a: Ipv4Addr) -> bool {
        let Ok(f) = File::open(self.path(a)) else {
            return false;
        };
        Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err()
    }

    async fn stale(
        &self,
        a: Ipv4Addr,
        lease: &Option<LeaseFile>,
        hv: &dyn Hypervisor,
        owner_lease: OwnerLease,
    ) -> bool {
        if self.held(a) {
            return false;
        }
        let Some(lease) = lease else {
            return true; // unreadable: not something we wrote whole
        };
        match owner_lease(&lease.state_dir).as_ref() {
            Some(l) if l.address == a && l.dir == self.dir => {}
            _ => return true,
        }
        // Its shim is gone and its state still names it: keep it while the
        // domain lives (the guest has the address), free it once it is gone.
        matches!(hv.exists(&lease.domain).await, Ok(false))
    }

    async fn reap(
        &self,
        hv: &dyn Hypervisor,
        owner_lease: OwnerLease,
    ) -> Result<Vec<(Ipv4Addr, LeaseFile)>> {
        let mut live = Vec::new();
        for (a, lease) in self.leases()? {
            if self.stale(a, &lease, hv, owner_lease).await {
                tracing::info!(address = %a, owner = ?lease.as_ref().map(|l| (&l.namespace, &l.id)), "reaping a stale lease");
                let _ = free(&self.path(a), a, lease.as_ref());
            } else if let Some(l) = lease {
                live.push((a, l));
            }
        }
        Ok(live)
    }

    /// Write the lease whole under its address; AlreadyExists if taken.
    fn create(&self, a: Ipv4Addr, lease: &LeaseFile) -> Result<File> {
        let tmp = self.dir.join(format!(".tmp-{a}-{}", std::process::id()));
        let json = serde_json::to_vec(lease).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&tmp, json).map_err(|e| io("write", &tmp, e))?;
        let target = self.path(a);
        let linked = std::fs::hard_link(&tmp, &target);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => File::open(&target).map_err(|e| io("open", &target, e)),
            Err(e) if e.kind() == IoKind::AlreadyExists => {
                Err(Error::AlreadyExists(format!("address {a} is leased")))
            }
            Err(e) => Err(io("link", &target, e)),
        }
    }
}

/// The lease an owner's state directory records, if any.
pub type OwnerLease = fn(&Path) -> Option<LeaseRecord>;

/// What `acquire` is asked for.
pub struct Want<'a> {
    pub name: &'a ContainerName,
    pub domain: &'a str,
    /// The container's state directory: the lease names it as its owner.
    pub state: &'a Path,
    /// Reads the lease an owner's state directory records (the container
    /// state's own format: `persist::recorded_lease`).
    pub owner_lease: OwnerLease,
    pub address: Option<Ipv4Addr>,
    /// From the DHCP range (the container's network mode is DHCP).
    pub dhcp: bool,
}

/// Lease an address (the requested one, or the first free one of its range)
/// and a MAC no other lease uses; bind a DHCP one in dnsmasq. `record` saves
/// the container's state naming the lease; it runs before the lease file
/// exists. An exhausted static range falls back to the DHCP range if the
/// config says so.
pub async fn acquire(
    cfg: &NetworkConfig,
    want: Want<'_>,
    hv: &dyn Hypervisor,
    record: impl FnOnce(&LeaseRecord) -> Result<()>,
) -> Result<HeldLease> {
    let locked = lock(&cfg.lease_dir).await?;
    let live = locked.reap(hv, want.owner_lease).await?;
    let taken = |a: Ipv4Addr| live.iter().any(|(l, _)| *l == a);
    let first_free = |start: Ipv4Addr, end: Ipv4Addr| {
        (u32::from(start)..=u32::from(end))
            .map(Ipv4Addr::from)
            .find(|a| !taken(*a) && a != &cfg.gateway)
    };
    let (address, dhcp) = match want.address {
        Some(a) if taken(a) || locked.path(a).exists() => {
            let owner = live
                .iter()
                .find(|(l, _)| *l == a)
                .map(|(_, f)| format!(" by {}/{}", f.namespace, f.id))
                .unwrap_or_default();
            return Err(Error::AlreadyExists(format!(
                "address {a} (annotation {}) is already leased{owner}",
                super::ANNOTATION_IP
            )));
        }
        Some(a) => (a, false),
        None => {
            let from_static = match want.dhcp {
                true => None,
                false => first_free(cfg.range_start, cfg.range_end),
            };
            let from_dhcp = || match want.dhcp || cfg.dhcp_when_exhausted {
                true => first_free(cfg.dhcp_start, cfg.dhcp_end),
                false => None,
            };
            match (from_static, from_dhcp()) {
                (Some(a), _) => (a, false),
                (None, Some(a)) => (a, true),
                (None, None) => {
                    let (what, start, end) = match want.dhcp {
                        true => ("DHCP range", cfg.dhcp_start, cfg.dhcp_end),
                        false => ("pool", cfg.range_start, cfg.range_end),
                    };
                    return Err(Error::ResourceExhausted(format!(
                        "no free address in the {what} {start}-{end} ({} leases in {}); free one by \
                         deleting a container, widen range_start/range_end or dhcp_start/dhcp_end, \
                         or set dhcp_when_exhausted in [network]",
                        live.len(),
                        cfg.lease_dir.display()
                    )));
                }
            }
        }
    };
    let mac = (0..MAC_TRIES)
        .map(|salt| mac_for(want.name, salt))
        .find(|m| !live.iter().any(|(_, l)| &l.mac == m))
        .ok_or_else(|| Error::Internal("no unused MAC address found".into()))?;
    let lease_record = LeaseRecord {
        dir: cfg.lease_dir.clone(),
        address,
        mac: mac.clone(),
        dhcp,
    };
    record(&lease_record)?;
    let lease = LeaseFile {
        namespace: want.name.namespace().into(),
        id: want.name.id().into(),
        domain: want.domain.into(),
        dhcp: dhcp.then(|| Binding::for_mac(cfg, &mac)),
        mac,
        state_dir: want.state.to_path_buf(),
    };
    let file = locked.create(address, &lease)?;
    if let Some(b) = &lease.dhcp {
        if let Err(e) = b.bind(&lease.mac, address) {
            let _ = free(&locked.path(address), address, Some(&lease));
            return Err(e);
        }
    }
    let alive = Flock::lock(file, FlockArg::LockSharedNonblock)
        .map_err(|(_, e)| Error::Internal(format!("lock the lease of {address}: {e}")))?;
    tracing::info!(address = %address, mac = %lease_record.mac, dhcp, "address leased");
    Ok(HeldLease {
        record: lease_record,
        _alive: alive,
    })
}

/// Free a lease, if it is still the one `state` owns (a reaper may have
/// given the address to another container since).
pub async fn release(r: &LeaseRecord, state: &Path) -> Result<()> {
    let locked = lock(&r.dir).await?;
    let path = locked.path(r.address);
    match read_lease(&path) {
        Some(l) if l.state_dir == state && l.mac == r.mac => match free(&path, r.address, Some(&l))
        {
            Ok(()) => {
                tracing::info!(address = %r.address, "lease released");
                Ok(())
            }
            Err(e) if e.kind() == IoKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path, e)),
        },
        _ => Ok(()),
    }
}

/// The lease whose owner's state directory is `state` (a record that lost it).
pub fn owned_by(dir: &Path, state: &Path) -> Option<LeaseRecord> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let address: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
        let l = read_lease(&e.path()).filter(|l| l.state_dir == state)?;
        Some(LeaseRecord {
            dir: dir.to_path_buf(),
            address,
            dhcp: l.dhcp.is_some(),
            mac: l.mac,
        })
    })
}

/// Every lease, for `vxnctl network leases`.
pub async fn list(dir: &Path) -> Result<Vec<(Ipv4Addr, Option<LeaseFile>)>> {
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut v = lock(dir).await?.leases()?;
    v.sort_by_key(|(a, _)| *a);
    Ok(v)
}

/// Stop holding the lease alive without freeing it (tests: a shim that died).
impl HeldLease {
    pub fn abandon(self) -> LeaseRecord {
        self.record
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
