//! runc's verbs as Docker's and Podman's shims call them, against a keeper
//! serving a container on the model's fakes (no VM): what each verb answers,
//! its refusals, and nothing left after delete.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vxn_runtime_core::fake::{self, FakeExport, FakeHypervisor};
use vxn_runtime_core::model::container::create::EngineNetwork;
use vxn_runtime_core::model::container::{Container, CreateRequest, RootfsSource};
use vxn_runtime_core::model::process::Status;
use vxn_runtime_core::Error as Core;

use crate::cli::{Delete, Kill};
use crate::error::Error;
use crate::holding::Keeper;
use crate::keeper::LogEvents;
use crate::serve;
use crate::state::{ContainerDir, Saved};
use crate::stdio::FdStdio;
use crate::Globals;

const SPEC: &str =
    r#"{"process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}"#;

struct World {
    dir: tempfile::TempDir,
    hv: Arc<FakeHypervisor>,
    keeper: Arc<Keeper>,
}

/// A container `c1` created under a root of its own, its keeper serving in
/// this process (as `vxn-oci-runtime create` leaves it).
async fn world(faults: &[&'static str]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let bundle = fake::bundle_under(dir.path(), SPEC);
    let cfg = fake::config_under(dir.path());
    let hv = Arc::new(FakeHypervisor::default());
    for f in faults {
        hv.faults.set(f);
    }
    let cdir = ContainerDir::new(&dir.path().join("root"), "c1").unwrap();
    std::fs::create_dir_all(&cdir.dir).unwrap();
    let keeper = Arc::new(Keeper::new(cdir.clone(), cfg.clone(), None));
    tokio::spawn(serve::accept_loop(
        serve::bind(&cdir).unwrap(),
        keeper.clone(),
    ));
    let request = CreateRequest {
        name: cdir.name.clone(),
        bundle: bundle.clone(),
        rootfs: RootfsSource::Bundle,
        stdio: FdStdio::plain(None, None, None),
        network: Some(EngineNetwork::None),
    };
    let export: Arc<FakeExport> = Arc::default();
    let events = Arc::new(LogEvents("c1".into()));
    let c = Container::create(request, &cfg, hv.clone(), export, events)
        .await
        .unwrap();
    keeper.created(c);
    cdir.save(&Saved {
        id: "c1".into(),
        pid: std::process::id(),
        bundle: bundle.clone(),
        rootfs: bundle.join("rootfs"),
        created: "2026-12-04T00:00:00Z".into(),
        annotations: Default::default(),
    })
    .unwrap();
    World { dir, hv, keeper }
}

impl World {
    fn globals(&self) -> Globals {
        Globals {
            root: self.root(),
            log: None,
            json: false,
            debug: false,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A verb, as the CLI runs it: blocking, on a thread with no runtime.
    async fn cli<T: Send + 'static>(&self, verb: impl FnOnce(&Globals) -> T + Send + 'static) -> T {
        let g = self.globals();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(verb(&g));
        });
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("the verb returns within 30 s")
            .unwrap()
    }

    fn init_status(&self) -> Status {
        self.keeper.container().unwrap().init().status()
    }

    async fn init_exit(&self) -> u32 {
        let c = self.keeper.container().unwrap().clone();
        let exit = tokio::time::timeout(Duration::from_secs(10), c.init().wait());
        exit.await.expect("an exit within 10 s").code
    }
}

fn kill(id: &str, signal: &str) -> Kill {
    Kill {
        all: false,
        id: id.into(),
        signal: Some(signal.into()),
    }
}

fn delete(id: &str, force: bool) -> Delete {
    Delete {
        force,
        id: id.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_kill_and_delete_as_runc_does_them() {
    let w = world(&[]).await;
    w.cli(|g| super::state(g, "c1")).await.unwrap();
    w.cli(|g| super::start(g, "c1")).await.unwrap();
    assert_eq!(w.init_status(), Status::Running);
    w.cli(|g| super::kill(g, &kill("c1", "TERM")))
        .await
        .unwrap();
    assert_eq!(w.init_exit().await, 128 + libc::SIGTERM as u32);
    // runc: a stopped container cannot be signalled, in runc's words (the
    // keeper's reach the caller; exit status 1 as every error)
    let again = w.cli(|g| super::kill(g, &kill("c1", "KILL"))).await;
    let said = again
        .expect_err("a kill of a stopped container")
        .to_string();
    assert_eq!(said, "container not running: c1");
    w.cli(|g| super::delete(g, &delete("c1", false)))
        .await
        .unwrap();
    assert_eq!(w.hv.domains(), Vec::<String>::new(), "the VM is gone");
    assert!(
        !w.root().join("c1").exists(),
        "the container's directory is gone"
    );
    assert!(!w
        .dir
        .path()
        .join("state")
        .join(w.keeper.dir.name.namespace())
        .join("c1")
        .exists());
    // what a caller sees of a container that is gone
    let gone = w.cli(|g| super::state(g, "c1")).await;
    assert!(gone.is_err());
    let gone = w.cli(|g| super::delete(g, &delete("c1", false))).await;
    assert!(matches!(gone, Err(Error::NoSuchContainer(_))), "{gone:?}");
    w.cli(|g| super::delete(g, &delete("c1", true)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_container_is_deleted_only_with_force() {
    let w = world(&[]).await;
    w.cli(|g| super::start(g, "c1")).await.unwrap();
    let refused = w.cli(|g| super::delete(g, &delete("c1", false))).await;
    assert!(
        matches!(refused, Err(Error::Core(Core::FailedPrecondition(_)))),
        "{refused:?}"
    );
    assert_eq!(w.hv.domains().len(), 1, "a refused delete leaves the VM");
    assert_eq!(w.init_status(), Status::Running);
    w.cli(|g| super::delete(g, &delete("c1", true)))
        .await
        .unwrap();
    assert_eq!(w.init_exit().await, 137);
    assert_eq!(w.hv.domains(), Vec::<String>::new());
    assert!(!w.root().join("c1").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_the_guest_refuses_is_starts_error_and_the_init_ends() {
    let w = world(&["agent.start"]).await;
    let started = w.cli(|g| super::start(g, "c1")).await;
    assert!(
        matches!(started, Err(Error::Core(Core::NotFound(_)))),
        "{started:?}"
    );
    assert_eq!(w.init_exit().await, 127);
    w.cli(|g| super::delete(g, &delete("c1", false)))
        .await
        .unwrap();
    assert_eq!(w.hv.domains(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_refused_before_the_keeper_is_asked() {
    let w = world(&[]).await;
    let bad = w.cli(|g| super::kill(g, &kill("c1", "NOSUCHSIGNAL"))).await;
    assert!(matches!(bad, Err(Error::Refused(_))), "{bad:?}");
    let missing = w.cli(|g| super::start(g, "c2")).await;
    assert!(missing.is_err());
    let missing = w.cli(|g| super::kill(g, &kill("c2", "TERM"))).await;
    assert!(missing.is_err());
    // none of it touched c1
    assert_eq!(w.init_status(), Status::Created);
    w.cli(|g| super::delete(g, &delete("c1", true)))
        .await
        .unwrap();
    assert_eq!(w.hv.domains(), Vec::<String>::new());
}
