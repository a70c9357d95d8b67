//! Fakes of the model's seams, for tests without Xen: a hypervisor whose
//! "VMs" are a scripted agent on a socketpair, and a rootfs export that
//! builds nothing. Any step can be made to fail, to test what a failure
//! leaves behind.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use tokio::net::UnixStream;
use tokio::sync::watch;
use vxn_wire::mux::{handshake_agent, Mux, Role};
use vxn_wire::protocol::{
    AgentError, ErrorKind, Event, ExitStatus, ProcessInfo, Request, Response, ResponseBody,
    RootfsSource, Stats,
};

use crate::hypervisor::{HotDisk, Hypervisor, Resize, VmError, VmSpec};
use crate::stdio::{ProcessStdio, Relay};
use crate::storage::rootfs::{ExportError, ExportedRootfs, RootfsExport};
use crate::{HostStdio, StdioRequest};

/// Where a fake can be told to fail. Hypervisor calls by name ("create",
/// "unpause", "pause", "destroy", "exists", "resize"); the agent's
/// ("agent.hello": never answers, "agent.create", "agent.start" (the process
/// exits 127), "agent.ignore_kill": takes signals, ends nothing).
#[derive(Default)]
pub struct Faults(Mutex<HashSet<&'static str>>);

impl Faults {
    pub fn set(&self, what: &'static str) {
        self.lock().insert(what);
    }
    pub fn clear(&self, what: &'static str) {
        self.lock().remove(what);
    }
    pub fn has(&self, what: &str) -> bool {
        self.lock().contains(what)
    }
    fn lock(&self) -> MutexGuard<'_, HashSet<&'static str>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One process as the fake agent keeps it.
struct FakeProcess {
    started: bool,
    exit: watch::Sender<Option<ExitStatus>>,
}

/// The agent inside one fake VM.
#[derive(Default)]
pub struct FakeAgent {
    processes: Mutex<HashMap<(String, Option<String>), FakeProcess>>,
    mux: Mutex<Option<Mux>>,
    /// What each container was created with, apart from its process.
    isolations: Mutex<HashMap<String, vxn_wire::protocol::Isolation>>,
}

type Key = (String, Option<String>);

fn exit_status(code: i32, signal: Option<i32>) -> ExitStatus {
    ExitStatus {
        code,
        signal,
        exited_at_ns: 1,
    }
}

fn agent_err(kind: ErrorKind, m: &str) -> AgentError {
    AgentError::new(kind, m.to_string())
}

impl FakeAgent {
    fn procs(&self) -> MutexGuard<'_, HashMap<Key, FakeProcess>> {
        self.processes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// End a running process as the guest would report it.
    pub fn exit(&self, container: &str, exec: Option<&str>, code: i32, signal: Option<i32>) {
        let key = (container.to_string(), exec.map(str::to_string));
        if let Some(p) = self.procs().get(&key) {
            p.exit.send_replace(Some(exit_status(code, signal)));
        }
    }

    /// The isolation a container was created with.
    pub fn isolation(&self, container: &str) -> Option<vxn_wire::protocol::Isolation> {
        let isolations = self.isolations.lock().unwrap_or_else(|p| p.into_inner());
        isolations.get(container).cloned()
    }

    /// Send an event as the guest would.
    pub fn event(&self, ev: &Event) {
        if let Some(m) = &*self.mux.lock().unwrap_or_else(|p| p.into_inner()) {
            m.send_event(ev);
        }
    }

    /// The VM is gone: the channel closes under every pending call.
    fn die(&self) {
        if let Some(m) = self.mux.lock().unwrap_or_else(|p| p.into_inner()).take() {
            m.close("domain destroyed");
        }
    }

    fn add(&self, key: Key) -> Result<(), AgentError> {
        let mut procs = self.procs();
        if procs.contains_key(&key) {
            return Err(agent_err(ErrorKind::AlreadyExists, "process exists"));
        }
        procs.insert(
            key,
            FakeProcess {
                started: false,
                exit: watch::channel(None).0,
            },
        );
        Ok(())
    }

    fn answer(&self, faults: &Faults, req: Request) -> Result<Response, AgentError> {
        let missing = || agent_err(ErrorKind::NotFound, "no such process");
        match req {
            Request::Ping | Request::Shutdown => Ok(Response::Ok),
            Request::CreateContainer(c) => {
                if faults.has("agent.create") {
                    return Err(agent_err(
                        ErrorKind::InvalidArgument,
                        "mount failed in the guest",
                    ));
                }
                self.add((c.container_id.clone(), None))?;
                self.isolations
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(c.container_id, *c.isolation);
                Ok(Response::Ok)
            }
            Request::Exec {
                container_id,
                exec_id,
                process,
                ..
            } => {
                process
                    .validate()
                    .map_err(|m| agent_err(ErrorKind::InvalidArgument, &m))?;
                self.add((container_id, Some(exec_id)))?;
                Ok(Response::Ok)
            }
            Request::Start {
                container_id,
                exec_id,
            } => {
                let mut procs = self.procs();
                let p = procs
                    .get_mut(&(container_id, exec_id))
                    .ok_or_else(missing)?;
                if faults.has("agent.start") {
                    p.exit.send_replace(Some(exit_status(127, None)));
                    return Err(agent_err(ErrorKind::NotFound, "executable not found"));
                }
                p.started = true;
                Ok(Response::Started { pid: 42 })
            }
            Request::Signal {
                container_id,
                exec_id,
                signal,
                ..
            } => {
                let procs = self.procs();
                let p = procs.get(&(container_id, exec_id)).ok_or_else(missing)?;
                if p.exit.borrow().is_some() {
                    return Err(agent_err(ErrorKind::NotFound, "process already finished"));
                }
                let fatal = vxn_wire::protocol::ENDS_UNSTARTED.contains(&signal);
                if !p.started && !fatal {
                    return Err(agent_err(
                        ErrorKind::FailedPrecondition,
                        "process is not started",
                    ));
                }
                if !faults.has("agent.ignore_kill") {
                    p.exit
                        .send_replace(Some(exit_status(128 + signal, Some(signal))));
                }
                Ok(Response::Ok)
            }
            Request::Delete {
                container_id,
                exec_id,
            } => {
                self.procs().remove(&(container_id, exec_id));
                Ok(Response::Ok)
            }
            Request::ResizeTty { .. } | Request::CloseStdin { .. } => Ok(Response::Ok),
            Request::Stats { .. } => Ok(Response::Stats(Stats::default())),
            // The fake VM has no devices: it reports the addresses it was given.
            Request::SetupNetwork(_) if faults.has("agent.network") => {
                Err(agent_err(ErrorKind::Unavailable, "no DHCP server answered"))
            }
            Request::SetupNetwork(n) | Request::AddInterfaces(n) => {
                Ok(Response::Network(vxn_wire::protocol::NetworkState {
                    addresses: n
                        .interfaces
                        .iter()
                        .flat_map(|i| i.addresses.clone())
                        .collect(),
                    gateway: None,
                    dns: n.dns,
                }))
            }
            Request::ListPids { .. } => Ok(Response::Pids {
                processes: vec![ProcessInfo {
                    pid: 42,
                    exec_id: None,
                    command: "init".into(),
                }],
                more: false,
            }),
            Request::Wait { .. } => unreachable!("answered by wait()"),
        }
    }

    async fn wait(&self, key: Key) -> Result<Response, AgentError> {
        let rx = self.procs().get(&key).map(|p| p.exit.subscribe());
        let Some(mut rx) = rx else {
            return Err(agent_err(ErrorKind::NotFound, "no such process"));
        };
        let st = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| agent_err(ErrorKind::NotFound, "process deleted"))?
            .expect("waited for Some");
        Ok(Response::Exited(st))
    }

    async fn serve(self: Arc<Self>, mut io: UnixStream, faults: Arc<Faults>) {
        if faults.has("agent.hello") {
            // Alive, silent: the host's hello timeout must end this.
            let _keep = io;
            std::future::pending::<()>().await;
            return;
        }
        let Ok((_, leftover)) = handshake_agent(&mut io, "fake-agent").await else {
            return;
        };
        let (mux, mut incoming) = Mux::start(io, BytesMut::from(&leftover[..]), Role::Agent);
        *self.mux.lock().unwrap_or_else(|p| p.into_inner()) = Some(mux.clone());
        while let Some(r) = incoming.requests.recv().await {
            let Ok(req) = r.request else { continue };
            let me = self.clone();
            let (mux, faults) = (mux.clone(), faults.clone());
            tokio::spawn(async move {
                let body: ResponseBody = match req {
                    Request::Wait {
                        container_id,
                        exec_id,
                    } => me.wait((container_id, exec_id)).await,
                    other => me.answer(&faults, other),
                };
                mux.respond(r.id, &body);
            });
        }
    }
}

/// A hypervisor of fake VMs; every call is logged.
#[derive(Default)]
pub struct FakeHypervisor {
    pub faults: Arc<Faults>,
    domains: Mutex<HashMap<String, Arc<FakeAgent>>>,
    calls: Mutex<Vec<String>>,
    /// Disks, from the create or hot-plugged: (domain, vdev, writable).
    disks: Mutex<Vec<(String, String, bool)>>,
    /// Hot-plugged vifs: (domain, MAC).
    pub vifs: Mutex<Vec<(String, String)>>,
    /// The shares VMs were made with: (domain, host directory).
    pub shares: Mutex<Vec<(String, std::path::PathBuf)>>,
    /// Each domain's pause count, as Xen keeps it: 1 from a paused create;
    /// an unpause at 0 fails as Xen's does.
    paused: Mutex<HashMap<String, u32>>,
}

impl FakeHypervisor {
    pub fn domains(&self) -> Vec<String> {
        let mut v: Vec<_> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// The agent of a running fake VM.
    pub fn agent(&self, domain: &str) -> Option<Arc<FakeAgent>> {
        self.lock().get(domain).cloned()
    }

    /// The VM dies behind our back (a guest crash, `xl destroy` by hand).
    pub fn crash(&self, domain: &str) {
        if let Some(agent) = self.lock().remove(domain) {
            agent.die();
        }
    }

    /// A domain that exists without us having made it (another tenant's).
    pub fn add_foreign(&self, domain: &str) {
        self.lock().insert(domain.into(), Arc::default());
    }

    /// The disks attached to running domains, as `domain vdev` (`... ro`:
    /// read-only).
    pub fn disks(&self) -> Vec<String> {
        let domains = self.domains();
        let mut v: Vec<String> = self
            .disks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(d, _, _)| domains.contains(d))
            .map(|(d, v, w)| format!("{d} {v}{}", if *w { "" } else { " ro" }))
            .collect();
        v.sort();
        v
    }

    /// Whether the domain is paused (a missing one is not).
    pub fn is_paused(&self, domain: &str) -> bool {
        self.pauses().get(domain).is_some_and(|n| *n > 0)
    }

    fn pauses(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        self.paused.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<FakeAgent>>> {
        self.domains.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn call(&self, what: &'static str, name: &str) -> Result<(), VmError> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{what} {name}"));
        if self.faults.has(what) {
            return Err(VmError::Missing(format!("fake {what} failed")));
        }
        Ok(())
    }
}

#[async_trait]
impl Hypervisor for FakeHypervisor {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn create_paused(
        &self,
        spec: &VmSpec,
    ) -> Result<crate::hypervisor::AgentConnect, VmError> {
        self.call("create", &spec.name)?;
        if self.lock().contains_key(&spec.name) {
            return Err(VmError::Exists(spec.name.clone()));
        }
        let (host, guest) = UnixStream::pair().map_err(|source| VmError::Io {
            what: "socketpair".into(),
            source,
        })?;
        let agent = Arc::new(FakeAgent::default());
        self.lock().insert(spec.name.clone(), agent.clone());
        self.pauses().insert(spec.name.clone(), 1);
        let disks = [
            (
                vxn_wire::boot::ROOTFS_VDEV,
                &spec.rootfs_disk,
                spec.rootfs_writable,
            ),
            (vxn_wire::boot::UPPER_VDEV, &spec.upper_disk, true),
        ];
        self.disks.lock().unwrap_or_else(|p| p.into_inner()).extend(
            disks
                .into_iter()
                .filter(|(_, d, _)| d.is_some())
                .map(|(vdev, _, w)| (spec.name.clone(), vdev.to_string(), w)),
        );
        self.shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(
                spec.shares
                    .iter()
                    .map(|(_, d)| (spec.name.clone(), d.clone())),
            );
        tokio::spawn(agent.serve(guest, self.faults.clone()));
        Ok(crate::hypervisor::connected(host))
    }

    async fn unpause(&self, name: &str) -> Result<(), VmError> {
        self.call("unpause", name)?;
        match self.pauses().get_mut(name) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Ok(())
            }
            _ => Err(VmError::Missing(format!("fake: {name} is not paused"))),
        }
    }

    async fn pause(&self, name: &str) -> Result<(), VmError> {
        self.call("pause", name)?;
        *self.pauses().entry(name.into()).or_default() += 1;
        Ok(())
    }

    async fn destroy(&self, name: &str) -> Result<(), VmError> {
        if self.faults.has("destroy") {
            return Err(VmError::Survived {
                name: name.into(),
                detail: "fake destroy failed".into(),
            });
        }
        self.call("destroy", name)?;
        if let Some(agent) = self.lock().remove(name) {
            agent.die();
        }
        self.disks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(d, _, _)| d != name);
        Ok(())
    }

    async fn check_vif(&self, bridge: &str) -> Result<(), VmError> {
        if self.faults.has("check_vif") {
            return Err(VmError::HostNotReady(format!("fake: no bridge {bridge}")));
        }
        Ok(())
    }

    async fn exists(&self, name: &str) -> Result<bool, VmError> {
        self.call("exists", name)?;
        Ok(self.lock().contains_key(name))
    }

    async fn cpu_time(&self, _: &str) -> Option<Duration> {
        Some(Duration::from_millis(5))
    }

    async fn resize(&self, name: &str, _: Resize) -> Result<(), VmError> {
        self.call("resize", name)
    }

    async fn attach_disk(&self, name: &str, disk: &HotDisk) -> Result<(), VmError> {
        self.call("attach_disk", name)?;
        if !self.lock().contains_key(name) {
            return Err(VmError::Missing(format!("fake: no domain {name}")));
        }
        let mut disks = self.disks.lock().unwrap_or_else(|p| p.into_inner());
        if disks.iter().any(|(d, v, _)| d == name && *v == disk.vdev) {
            return Err(VmError::Missing(format!("fake: {} is taken", disk.vdev)));
        }
        disks.push((name.into(), disk.vdev.clone(), disk.writable));
        Ok(())
    }

    async fn detach_disk(&self, name: &str, vdev: &str) -> Result<(), VmError> {
        self.call("detach_disk", name)?;
        self.disks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(d, v, _)| !(d == name && v == vdev));
        Ok(())
    }

    async fn attach_vif(
        &self,
        name: &str,
        vif: &crate::hypervisor::Vif,
    ) -> Result<String, VmError> {
        self.call("attach_vif", name)?;
        if !self.lock().contains_key(name) {
            return Err(VmError::Missing(format!("fake: no domain {name}")));
        }
        let mut vifs = self.vifs.lock().unwrap_or_else(|p| p.into_inner());
        vifs.push((name.into(), vif.mac.clone()));
        Ok(format!("fakevif.{}", vifs.len()))
    }

    async fn agent_published(&self, name: &str) -> Result<(), VmError> {
        self.call("agent_published", name)?;
        match self.lock().contains_key(name) {
            true => Ok(()),
            false => Err(VmError::Missing(format!("fake: no domain {name}"))),
        }
    }

    async fn connect_agent(&self, name: &str) -> Result<crate::hypervisor::AgentConnect, VmError> {
        self.call("connect_agent", name)?;
        let agent = self
            .agent(name)
            .ok_or_else(|| VmError::Missing(format!("fake: no domain {name}")))?;
        let (host, guest) = UnixStream::pair().map_err(|source| VmError::Io {
            what: "socketpair".into(),
            source,
        })?;
        tokio::spawn(agent.serve(guest, self.faults.clone()));
        Ok(crate::hypervisor::connected(host))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), VmError> {
        self.call("rename", from)?;
        let mut domains = self.lock();
        if domains.contains_key(to) {
            return Err(VmError::Exists(to.into()));
        }
        let agent = domains
            .remove(from)
            .ok_or_else(|| VmError::Missing(format!("fake: no domain {from}")))?;
        domains.insert(to.into(), agent);
        drop(domains);
        let mut pauses = self.pauses();
        if let Some(n) = pauses.remove(from) {
            pauses.insert(to.into(), n);
        }
        drop(pauses);
        for d in self
            .disks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            if d.0 == from {
                d.0 = to.into();
            }
        }
        Ok(())
    }

    async fn detach_vif(&self, name: &str, mac: &str) -> Result<(), VmError> {
        self.call("detach_vif", name)?;
        self.vifs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(d, m)| !(d == name && m == mac));
        Ok(())
    }
}

/// The size of the fake exporter's blank writable layers.
pub const FAKE_UPPER_MIB: u64 = 256;

/// A rootfs export that writes a marker file in its work dir (so a test can
/// see it removed) and nothing else. Fails on demand ("export").
#[derive(Default)]
pub struct FakeExport {
    pub faults: Arc<Faults>,
    /// Exports layers itself (as the Xen exporter does); otherwise it leaves
    /// them to be mounted and exported as a directory.
    pub layered: bool,
}

#[async_trait]
impl RootfsExport for FakeExport {
    async fn export(&self, rootfs: &Path, work_dir: &Path) -> Result<ExportedRootfs, ExportError> {
        if self.faults.has("export") {
            return Err(ExportError::Failed {
                what: "mkfs".into(),
                detail: "fake export failed".into(),
            });
        }
        let made = std::fs::create_dir_all(work_dir)
            .and_then(|()| std::fs::write(work_dir.join("image"), b"fake"));
        made.map_err(|e| ExportError::Failed {
            what: format!("write {}", work_dir.display()),
            detail: e.to_string(),
        })?;
        Ok(ExportedRootfs {
            disk: Some(work_dir.join("image")),
            disk_writable: true,
            upper_disk: None,
            blank_upper_mib: None,
            guest: RootfsSource::Directory {
                path: rootfs.display().to_string(),
            },
            size_bytes: 0,
            took: Duration::ZERO,
        })
    }

    async fn export_layers(
        &self,
        layers: &crate::storage::layers::Layers,
        work_dir: &Path,
        _owner: &Path,
        blank_upper_later: bool,
    ) -> Option<Result<ExportedRootfs, ExportError>> {
        if !self.layered {
            return None;
        }
        // (a fake snapshot's upper is always empty)
        let later = blank_upper_later.then_some(FAKE_UPPER_MIB);
        Some(
            self.export(&layers.lower[0], work_dir)
                .await
                .map(|e| ExportedRootfs {
                    disk_writable: false,
                    upper_disk: later.is_none().then(|| work_dir.join("upper")),
                    blank_upper_mib: later,
                    ..e
                }),
        )
    }

    /// `work_dir/upper.ext4`, holding its size; fails on demand ("blank_upper").
    async fn blank_upper(
        &self,
        work_dir: &Path,
        mib: u64,
    ) -> Option<Result<std::path::PathBuf, ExportError>> {
        if self.faults.has("blank_upper") {
            return Some(Err(ExportError::Failed {
                what: "mkfs".into(),
                detail: "fake blank upper failed".into(),
            }));
        }
        let path = work_dir.join(crate::storage::layers::upper::UPPER_IMAGE);
        let made = std::fs::create_dir_all(work_dir)
            .and_then(|()| std::fs::write(&path, format!("blank {mib}")));
        Some(made.map(|()| path).map_err(|e| ExportError::Failed {
            what: format!("write {}", work_dir.display()),
            detail: e.to_string(),
        }))
    }

    async fn cleanup(&self, _: &Path) {}
}

/// A process without streams: its output is empty, its exit told at once.
pub struct NoStdio;

impl ProcessStdio for NoStdio {
    fn request(&self) -> StdioRequest {
        StdioRequest::default()
    }
    fn attach(&self, _: HostStdio) -> crate::Result<Relay> {
        Ok(Relay::new(vec![], Arc::new(tokio::sync::Notify::new())))
    }
}

/// A config whose every directory (state, images, shares, leases) is under
/// `dir`, with short agent timeouts: what the model's and the front-ends'
/// tests run with.
pub fn config_under(dir: &Path) -> crate::config::Config {
    crate::config::Config {
        state_dir: dir.join("state"),
        image_dir: dir.join("images"),
        share_dir: dir.join("shares"),
        agent_timeout_secs: 1,
        agent_call_timeout_secs: 2,
        kill_grace_secs: 1,
        network: crate::network::NetworkConfig {
            lease_dir: dir.join("leases"),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// An OCI bundle at `dir/bundle`: this config.json and an empty rootfs.
pub fn bundle_under(dir: &Path, config_json: &str) -> std::path::PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).expect("bundle rootfs");
    std::fs::write(bundle.join("config.json"), config_json).expect("bundle config.json");
    bundle
}
