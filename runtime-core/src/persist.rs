//! What a container made on the host, recorded in
//! `<state_dir>/<namespace>/<id>/state.json` *before* each thing is made, and
//! the one teardown that undoes it: after a failed Create, at Delete, and in
//! the `delete` action containerd runs for a lost shim. A SIGKILL at any
//! point leaves a record that names everything there may be; what a record
//! cannot name (it was lost) is found by name, since names are unique per
//! (namespace, id).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hypervisor::Hypervisor;
use crate::names::ContainerName;
use crate::network::lease::{self, LeaseRecord};
use crate::network::pod_netns::PodNetns;
use crate::storage::mounts::unmount_all;
use crate::storage::rootfs::RootfsExport;

const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// The backend that ran it ("xen", "process").
    pub backend: String,
    /// Set just before the domain is created (never for a name that was taken).
    pub domain: Option<String>,
    /// Set just before the snapshot is mounted there.
    pub rootfs_mount: Option<PathBuf>,
    /// Set just before the rootfs image is built there.
    pub image_dir: Option<PathBuf>,
    /// Set just before the address is leased (under the pool's lock).
    #[serde(default)]
    pub lease: Option<LeaseRecord>,
    /// A pod's container: set just before its rootfs disk is attached to the pod's VM.
    #[serde(default)]
    pub disk: Option<PodDisk>,
    /// A pod's container with a layered rootfs: its writable layer's disk,
    /// set with `disk` (the read-only image's).
    #[serde(default)]
    pub upper_disk: Option<PodDisk>,
    /// A pod: set just before its VM's vif is moved into the pod's namespace.
    #[serde(default)]
    pub netns: Option<PodNetns>,
    /// Set before host directories are bound there for the VM's share.
    #[serde(default)]
    pub share_dir: Option<PathBuf>,
    /// A pod's container: its pod's sandbox id, in the first record. A lost
    /// pod shim's teardown finds its containers by it (containerd 2.x runs no
    /// `delete` action of their own for a shim that reports version 3).
    #[serde(default)]
    pub pod: Option<String>,
}

/// A disk of a pod's container in the pod's VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodDisk {
    pub domain: String,
    pub vdev: String,
}

impl Record {
    /// Fill what a lost or partial record does not name from the names this
    /// container's things have whether or not they were recorded.
    /// `bundle`: where the front-end mounts the rootfs (`<bundle>/rootfs`);
    /// None for one that never mounts it (the runc CLI: the engine does).
    pub fn or_by_name(
        mut self,
        name: &ContainerName,
        bundle: Option<&Path>,
        image_root: &Path,
        share_root: &Path,
    ) -> Self {
        self.domain.get_or_insert_with(|| name.domain());
        // A VM's share (a pod's, or a container's with host binds); removing one
        // that never was is a no-op, and removal never crosses a mount point.
        self.share_dir
            .get_or_insert_with(|| name.dir_under(share_root));
        if let (None, Some(bundle)) = (&self.rootfs_mount, bundle) {
            self.rootfs_mount = Some(bundle.join("rootfs"));
        }
        self.image_dir
            .get_or_insert_with(|| name.dir_under(image_root));
        self
    }

    /// A lost record's lease, found by its owner in the pool.
    pub fn or_lease_of(mut self, state: &StateDir, lease_dir: &Path) -> Self {
        if self.lease.is_none() {
            self.lease = lease::owned_by(lease_dir, &state.path);
        }
        self
    }
}

/// The lease `state_dir`'s record names (how the lease pool tells a live
/// owner's lease from a stale one).
pub fn recorded_lease(state_dir: &Path) -> Option<LeaseRecord> {
    StateDir::at(state_dir.to_path_buf()).load()?.lease
}

/// `<state_root>/<namespace>/<id>`: the container's directory of record.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{what} {}: {e}", path.display()))
}

impl StateDir {
    /// The state directory at this path (a lease's owner).
    pub fn at(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn of(state_root: &Path, name: &ContainerName) -> Self {
        Self {
            path: name.dir_under(state_root),
        }
    }

    /// Make the directory; one that exists belongs to a task of the same
    /// (namespace, id) that was not cleaned up: refuse, touch nothing.
    pub fn create(state_root: &Path, name: &ContainerName) -> Result<Self> {
        let dir = Self::of(state_root, name);
        if let Some(parent) = dir.path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err("mkdir", parent, e))?;
        }
        match std::fs::create_dir(&dir.path) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::AlreadyExists(format!(
                    "{} holds the state of an earlier task {}/{} that was not deleted \
                     (ctr task delete {} cleans it up)",
                    dir.path.display(),
                    name.namespace(),
                    name.id(),
                    name.id()
                )))
            }
            Err(e) => Err(io_err("mkdir", &dir.path, e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn save(&self, r: &Record) -> Result<()> {
        let tmp = self.path.join("state.json.tmp");
        let json = serde_json::to_vec_pretty(r).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&tmp, json).map_err(|e| io_err("write", &tmp, e))?;
        std::fs::rename(&tmp, self.path.join(STATE_FILE)).map_err(|e| io_err("rename", &tmp, e))
    }

    pub fn load(&self) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(self.path.join(STATE_FILE)).ok()?).ok()
    }

    /// Take this directory's turn (an exclusive flock on it, released on
    /// drop): two reapers of one container (its own `delete` action and its
    /// pod's) never tear it down at once. None when the directory is gone.
    pub fn lock(&self) -> Option<nix::fcntl::Flock<std::fs::File>> {
        let dir = std::fs::File::open(&self.path).ok()?;
        nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive).ok()
    }
}

/// Undo everything `r` names, each step even if an earlier one failed. Ok
/// only when all is gone; otherwise the state directory stays, so the next
/// Delete or `delete` action can try again, and the error says what is left.
pub async fn teardown(
    r: &Record,
    state: &StateDir,
    hv: &dyn Hypervisor,
    exporter: &dyn RootfsExport,
) -> Result<()> {
    let mut left = Vec::new();
    // A pooled VM this container claimed (docs/warm-pool.md) has the pool's
    // name until it takes the container's: whichever exists goes.
    let pooled = crate::pool::claimed(&state.path).map(|p| p.domain);
    for domain in r.domain.iter().chain(pooled.iter()) {
        if let Err(e) = hv.destroy(domain).await {
            tracing::error!(domain = %domain, error = %e, "the domain could not be destroyed");
            left.push(e.to_string());
        }
    }
    // A pod's container leaves the pod's VM (which may be gone already).
    for d in r.disk.iter().chain(r.upper_disk.iter()) {
        if let Err(e) = hv.detach_disk(&d.domain, &d.vdev).await {
            tracing::error!(domain = %d.domain, vdev = %d.vdev, error = %e, "the disk could not be detached");
            left.push(e.to_string());
        }
    }
    if let (Some(ns), true) = (&r.netns, left.is_empty()) {
        ns.leave().await;
    }
    if let Some(dir) = &r.share_dir {
        if let Err(e) = crate::storage::binds::remove(dir) {
            left.push(e.to_string());
        }
    }
    // The address goes back to the pool only once the domain that used it is gone.
    if let (Some(l), true) = (&r.lease, left.is_empty()) {
        if let Err(e) = lease::release(l, &state.path).await {
            left.push(e.to_string());
        }
    }
    if let Some(dir) = &r.image_dir {
        exporter.cleanup(dir).await;
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => left.push(format!("remove {}: {e}", dir.display())),
        }
    }
    if let Some(target) = &r.rootfs_mount {
        if let Err(e) = unmount_all(target) {
            left.push(format!("unmount {}: {e}", target.display()));
        }
    }
    if !left.is_empty() {
        return Err(Error::Internal(format!(
            "teardown incomplete, left: {}",
            left.join("; ")
        )));
    }
    match std::fs::remove_dir_all(&state.path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &state.path, e)),
    }
}

/// Tear down (namespace, id) when its owner is gone (a SIGKILLed shim, an
/// exited runc keeper): what its record names and, where the record is lost,
/// what its name implies. Ok once nothing is left.
/// A pod's containers are torn down with it (each as by its own `delete`
/// action: the reapers of one name take turns, `StateDir::lock`).
pub async fn teardown_by_name(
    cfg: &crate::config::Config,
    name: &ContainerName,
    bundle: Option<&Path>,
) -> Result<()> {
    let (hv, exporter) = crate::platform::build(cfg).map_err(Error::InvalidArgument)?;
    let dir = StateDir::of(&cfg.state_dir, name);
    let own = {
        let _turn = dir.lock();
        let record = dir
            .load()
            .unwrap_or_default()
            .or_by_name(name, bundle, &cfg.image_dir, &cfg.share_dir)
            .or_lease_of(&dir, &cfg.network.lease_dir);
        teardown(&record, &dir, hv.as_ref(), exporter.as_ref()).await
    };
    let mut left = own
        .err()
        .map(|e| e.to_string())
        .into_iter()
        .collect::<Vec<_>>();
    for member in members_of(&cfg.state_dir, name) {
        let dir = StateDir::of(&cfg.state_dir, &member);
        let _turn = dir.lock();
        let Some(record) = dir.load() else { continue };
        let record = record
            .or_by_name(&member, None, &cfg.image_dir, &cfg.share_dir)
            .or_lease_of(&dir, &cfg.network.lease_dir);
        if let Err(e) = teardown(&record, &dir, hv.as_ref(), exporter.as_ref()).await {
            left.push(format!("container {}: {e}", member.id()));
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(Error::Internal(left.join("; ")))
    }
}

/// The containers whose records name `pod` as their pod, in its namespace.
/// Bounded: a namespace's directory holds what its tasks made, nothing else.
pub fn members_of(state_root: &Path, pod: &ContainerName) -> Vec<ContainerName> {
    const MAX_SCAN: usize = 65536;
    let Ok(entries) = std::fs::read_dir(state_root.join(pod.namespace())) else {
        return Vec::new();
    };
    entries
        .take(MAX_SCAN)
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().into_string().ok()?;
            let name = ContainerName::new(pod.namespace(), &id).ok()?;
            let record = StateDir::of(state_root, &name).load()?;
            (record.pod.as_deref() == Some(pod.id())).then_some(name)
        })
        .collect()
}

/// After a failed create: tear down what `r` names; what is left is logged
/// (the record stays for Delete or the `delete` action to retry).
pub async fn undo(r: &Record, state: &StateDir, hv: &dyn Hypervisor, exporter: &dyn RootfsExport) {
    if let Err(left) = teardown(r, state, hv, exporter).await {
        tracing::error!(error = %left, "cleaning up after a failed create");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::VmError;

    #[test]
    fn a_second_task_of_the_same_name_never_takes_over_the_first_ones_state() {
        let root = tempfile::tempdir().unwrap();
        let name = ContainerName::new("default", "c1").unwrap();
        let dir = StateDir::create(root.path(), &name).unwrap();
        dir.save(&Record {
            backend: "xen".into(),
            ..Default::default()
        })
        .unwrap();
        let e = StateDir::create(root.path(), &name).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
        assert_eq!(dir.load().unwrap().backend, "xen");
        // Distinct tenants, distinct directories, even with dashes.
        let a = StateDir::of(root.path(), &ContainerName::new("a-b", "c").unwrap());
        let b = StateDir::of(root.path(), &ContainerName::new("a", "b-c").unwrap());
        assert_ne!(a.path(), b.path());
    }

    /// A backend whose domains survive every destroy (or not).
    struct Stubborn(bool);

    #[async_trait::async_trait]
    impl Hypervisor for Stubborn {
        fn kind(&self) -> &'static str {
            "stub"
        }
        async fn create_paused(
            &self,
            _: &crate::hypervisor::VmSpec,
        ) -> std::result::Result<crate::hypervisor::AgentConnect, VmError> {
            unreachable!()
        }
        async fn unpause(&self, _: &str) -> std::result::Result<(), VmError> {
            Ok(())
        }
        async fn check_vif(&self, _: &str) -> std::result::Result<(), VmError> {
            Ok(())
        }
        async fn pause(&self, _: &str) -> std::result::Result<(), VmError> {
            Ok(())
        }
        async fn destroy(&self, name: &str) -> std::result::Result<(), VmError> {
            if self.0 {
                return Err(VmError::Survived {
                    name: name.into(),
                    detail: "xl destroy failed 4 times".into(),
                });
            }
            Ok(())
        }
        async fn exists(&self, _: &str) -> std::result::Result<bool, VmError> {
            Ok(self.0)
        }
        async fn cpu_time(&self, _: &str) -> Option<std::time::Duration> {
            None
        }
        async fn resize(
            &self,
            _: &str,
            _: crate::hypervisor::Resize,
        ) -> std::result::Result<(), VmError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn teardown_is_not_ok_while_the_domain_lives_and_can_be_retried() {
        let root = tempfile::tempdir().unwrap();
        let images = tempfile::tempdir().unwrap();
        let name = ContainerName::new("default", "c1").unwrap();
        let dir = StateDir::create(root.path(), &name).unwrap();
        let image_dir = images.path().join("c1");
        std::fs::create_dir(&image_dir).unwrap();
        let r = Record {
            backend: "stub".into(),
            domain: Some(name.domain()),
            image_dir: Some(image_dir.clone()),
            ..Default::default()
        };
        dir.save(&r).unwrap();
        let exporter = crate::storage::rootfs::Directory;
        let e = teardown(&r, &dir, &Stubborn(true), &exporter)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("still there"), "{e}");
        // The record stays for the next attempt; what could go, went.
        assert_eq!(dir.load(), Some(r.clone()));
        assert!(!image_dir.exists());
        teardown(&r, &dir, &Stubborn(false), &exporter)
            .await
            .unwrap();
        assert!(!dir.path().exists());
    }

    #[tokio::test]
    async fn a_lost_pods_teardown_takes_its_containers_and_no_others() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let cfg = crate::config::Config::parse(&format!(
            "hypervisor = \"process\"\nstate_dir = \"{0}/state\"\nimage_dir = \"{0}/img\"\n\
             share_dir = \"{0}/share\"\n[network]\nlease_dir = \"{0}/leases\"\n",
            root.display()
        ))
        .unwrap();
        let pod = ContainerName::new("k8s.io", "pod1").unwrap();
        // The pod, two of its containers (each with an image directory), and a
        // container of another pod.
        let make = |id: &str, of: Option<&str>| {
            let name = ContainerName::new("k8s.io", id).unwrap();
            let dir = StateDir::create(&cfg.state_dir, &name).unwrap();
            let image_dir = name.dir_under(&cfg.image_dir);
            std::fs::create_dir_all(&image_dir).unwrap();
            dir.save(&Record {
                backend: "process".into(),
                image_dir: Some(image_dir.clone()),
                pod: of.map(String::from),
                ..Default::default()
            })
            .unwrap();
            (dir, image_dir)
        };
        let (pod_dir, _) = make("pod1", None);
        let (a, a_img) = make("a", Some("pod1"));
        let (b, b_img) = make("b", Some("pod1"));
        let (other, other_img) = make("c", Some("pod2"));
        assert_eq!(members_of(&cfg.state_dir, &pod).len(), 2);
        teardown_by_name(&cfg, &pod, None).await.unwrap();
        for gone in [pod_dir.path(), a.path(), b.path(), &a_img, &b_img] {
            assert!(!gone.exists(), "{} is left", gone.display());
        }
        assert!(other.path().exists() && other_img.exists());
        // Again (containerd retries; a member's own delete action may run too): nothing to do.
        teardown_by_name(&cfg, &pod, None).await.unwrap();
        teardown_by_name(&cfg, &ContainerName::new("k8s.io", "a").unwrap(), None)
            .await
            .unwrap();
    }

    #[test]
    fn a_lost_record_is_completed_by_name() {
        let name = ContainerName::new("ns", "id").unwrap();
        let r = Record::default().or_by_name(
            &name,
            Some(Path::new("/b")),
            Path::new("/img"),
            Path::new("/shares"),
        );
        assert_eq!(r.domain.as_deref(), Some(name.domain().as_str()));
        assert_eq!(r.share_dir.as_deref(), Some(Path::new("/shares/ns/id")));
        assert_eq!(r.rootfs_mount.as_deref(), Some(Path::new("/b/rootfs")));
        assert_eq!(r.image_dir.as_deref(), Some(Path::new("/img/ns/id")));
        // What was recorded wins.
        let r = Record {
            image_dir: Some("/elsewhere".into()),
            ..Default::default()
        }
        .or_by_name(
            &name,
            Some(Path::new("/b")),
            Path::new("/img"),
            Path::new("/s"),
        );
        assert_eq!(r.image_dir.as_deref(), Some(Path::new("/elsewhere")));
        // No pool, no lease: nothing invented.
        let state = StateDir::at("/run/vxn/ns/id".into());
        assert_eq!(r.or_lease_of(&state, Path::new("/nonexistent")).lease, None);
    }
}
