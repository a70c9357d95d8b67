//! The model without Xen: fake hypervisor, fake export, a scripted agent.
//! Each test asserts what a user of the front-ends would see: states,
//! errors by kind, events in order, and nothing left behind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vxn_wire::protocol::{Event, ProcessSpec};

use super::*;
use crate::config::Config;
use crate::fake::{FakeExport, FakeHypervisor, NoStdio};
use crate::model::container::{CreateRequest, RootfsSource};
use crate::model::process::Exit;

#[derive(Default)]
struct Recorder(Mutex<Vec<TaskEvent>>);

impl EventSink for Recorder {
    fn publish(&self, ev: TaskEvent) {
        self.0.lock().unwrap().push(ev);
    }
}

impl Recorder {
    fn take(&self) -> Vec<TaskEvent> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

struct World {
    dir: tempfile::TempDir,
    cfg: Config,
    hv: Arc<FakeHypervisor>,
    export: Arc<FakeExport>,
    events: Arc<Recorder>,
}

const SPEC: &str = r#"{"process":{"args":["sh","-c","exit 3"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}"#;

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    crate::fake::bundle_under(dir.path(), SPEC);
    let cfg = crate::fake::config_under(dir.path());
    World {
        dir,
        cfg,
        hv: Arc::default(),
        export: Arc::default(),
        events: Arc::default(),
    }
}

impl World {
    fn name(&self) -> ContainerName {
        ContainerName::new("default", "c1").unwrap()
    }

    fn domain(&self) -> String {
        self.name().domain()
    }

    async fn create(&self) -> Result<Arc<Container<NoStdio>>> {
        let req = CreateRequest {
            name: self.name(),
            bundle: self.dir.path().join("bundle"),
            rootfs: RootfsSource::Bundle,
            network: None,
            stdio: NoStdio,
        };
        Container::create(
            req,
            &self.cfg,
            self.hv.clone(),
            self.export.clone(),
            self.events.clone(),
        )
        .await
    }

    /// Nothing of the container is left on the "host".
    fn assert_clean(&self) {
        assert_eq!(self.hv.domains(), Vec::<String>::new(), "a domain leaked");
        let state = self.name().dir_under(&self.cfg.state_dir);
        assert!(!state.exists(), "state dir leaked: {}", state.display());
        let image = self.name().dir_under(&self.cfg.image_dir);
        assert!(!image.exists(), "image dir leaked: {}", image.display());
        let leases: Vec<_> = std::fs::read_dir(&self.cfg.network.lease_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(leases, Vec::<String>::new(), "a lease leaked");
    }

    fn agent(&self) -> Arc<crate::fake::FakeAgent> {
        self.hv.agent(&self.domain()).expect("the VM runs")
    }
}

fn exited(exec: ExecId, code: u32) -> impl Fn(&TaskEvent) -> bool {
    move |e| matches!(e, TaskEvent::Exited { exec: x, exit } if *x == exec && exit.code == code)
}

async fn wait_for_exit(c: &Container<NoStdio>) -> Exit {
    tokio::time::timeout(Duration::from_secs(10), c.init().wait())
        .await
        .expect("an exit in time")
}

#[tokio::test]
async fn a_container_lives_and_goes_leaving_nothing() {
    let w = world();
    let c = w.create().await.unwrap();
    assert_eq!(c.status(c.init()), TaskStatus::Created);
    assert_eq!(w.hv.domains(), vec![w.domain()]);
    c.start(&ExecId::Init).await.unwrap();
    assert_eq!(c.status(c.init()), TaskStatus::Running);
    w.agent().exit("c1", None, 3, None);
    let exit = wait_for_exit(&c).await;
    assert_eq!((exit.code, exit.signal), (3, None));
    // Published only after the exit's bookkeeping: give the task a moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(c.delete().await.unwrap().code, 3);
    let events = w.events.take();
    assert_eq!(events[0], TaskEvent::Created);
    assert_eq!(events[1], TaskEvent::Started(ExecId::Init));
    assert!(exited(ExecId::Init, 3)(&events[2]), "{events:?}");
    assert!(matches!(events[3], TaskEvent::Deleted { exit } if exit.code == 3));
    w.assert_clean();
}

/// A Layers rootfs whose mount records that it ran.
fn layers_source(w: &World, mounted: Arc<Mutex<bool>>) -> RootfsSource {
    let lower = w.dir.path().join("layer");
    std::fs::create_dir_all(&lower).unwrap();
    RootfsSource::Layers {
        layers: crate::storage::layers::Layers {
            lower: vec![lower],
            upper: None,
        },
        mount: Box::new(move |_| {
            *mounted.lock().unwrap() = true;
            Ok(())
        }),
    }
}

async fn create_from(
    w: &World,
    export: Arc<FakeExport>,
    rootfs: RootfsSource,
) -> Result<Arc<Container<NoStdio>>> {
    let req = CreateRequest {
        name: w.name(),
        bundle: w.dir.path().join("bundle"),
        rootfs,
        network: None,
        stdio: NoStdio,
    };
    Container::create(req, &w.cfg, w.hv.clone(), export, w.events.clone()).await
}

#[tokio::test]
async fn layers_are_exported_as_they_are_where_the_exporter_can_and_mounted_elsewhere() {
    for layered in [true, false] {
        let w = world();
        let mounted = Arc::new(Mutex::new(false));
        let export = Arc::new(FakeExport {
            layered,
            ..Default::default()
        });
        let c = create_from(&w, export, layers_source(&w, mounted.clone()))
            .await
            .unwrap();
        assert_eq!(*mounted.lock().unwrap(), !layered);
        c.kill(&ExecId::Init, 9, false).await.unwrap();
        wait_for_exit(&c).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.delete().await.unwrap();
        w.assert_clean();
    }
}

#[tokio::test]
async fn every_failing_create_phase_leaves_nothing_and_says_why() {
    for (fault, kind) in [
        ("export", "Internal"),
        ("exists", "InvalidArgument"),
        ("create", "InvalidArgument"),
        ("unpause", "InvalidArgument"),
        ("check_vif", "FailedPrecondition"),
        ("agent.hello", "Unavailable"),
        ("agent.network", "Unavailable"),
        ("agent.create", "InvalidArgument"),
        ("pause", "InvalidArgument"),
    ] {
        let w = world();
        w.hv.faults.set(fault);
        w.export.faults.set(fault);
        let e = match w.create().await {
            Ok(_) => panic!("{fault}: create succeeded"),
            Err(e) => e,
        };
        assert!(format!("{e:?}").starts_with(kind), "{fault}: {e:?}");
        w.assert_clean();
        assert!(
            w.events.take().is_empty(),
            "{fault}: events of a failed create"
        );
    }
}

#[tokio::test]
async fn a_failed_create_never_destroys_a_domain_it_did_not_make() {
    let w = world();
    w.hv.add_foreign(&w.domain());
    let e = w.create().await.err().expect("the name is taken");
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    assert_eq!(
        w.hv.domains(),
        vec![w.domain()],
        "the other one's VM survives"
    );
    assert!(!w.hv.calls().iter().any(|c| c.starts_with("destroy")));
}

#[tokio::test]
async fn a_second_create_of_the_same_name_is_refused_and_harms_nothing() {
    let w = world();
    let first = w.create().await.unwrap();
    let e = w.create().await.err().expect("state dir taken");
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    assert_eq!(w.hv.domains(), vec![w.domain()]);
    first.delete().await.unwrap();
    w.assert_clean();
}

#[tokio::test]
async fn a_start_the_agent_refuses_ends_with_the_agents_status() {
    let w = world();
    let c = w.create().await.unwrap();
    w.hv.faults.set("agent.start");
    let e = c.start(&ExecId::Init).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert_eq!(c.status(c.init()), TaskStatus::Stopped);
    assert_eq!(c.init().exit().unwrap().code, 127);
    let again = c.start(&ExecId::Init).await.unwrap_err();
    assert!(matches!(again, Error::FailedPrecondition(_)), "{again}");
    c.delete().await.unwrap();
    w.assert_clean();
}

#[tokio::test]
async fn illegal_transitions_are_failed_preconditions() {
    let w = world();
    let c = w.create().await.unwrap();
    let pre = |r: Result<()>| matches!(r, Err(Error::FailedPrecondition(_)));
    assert!(pre(c.pause().await), "pause before start");
    assert!(pre(c.resume().await), "resume of a running task");
    c.start(&ExecId::Init).await.unwrap();
    assert!(pre(c.start(&ExecId::Init).await), "start twice");
    assert!(
        matches!(c.delete().await, Err(Error::FailedPrecondition(_))),
        "delete while running"
    );
    c.pause().await.unwrap();
    assert!(pre(c.pause().await), "pause twice");
    assert!(
        pre(c.kill(&ExecId::Init, libc::SIGTERM as u32, false).await),
        "TERM while paused"
    );
    let exec = ExecId::new_exec("e1").unwrap();
    assert!(
        pre(c.exec(&exec, spec(&["true"]), NoStdio).await),
        "exec while paused"
    );
    assert!(c.stats().await.is_err(), "stats while paused");
    assert_eq!(c.pids().await.unwrap(), vec![]);
    c.resume().await.unwrap();
    assert!(c.stats().await.is_ok());
    let unknown = c.kill(&ExecId::new_exec("nope").unwrap(), 15, false).await;
    assert!(matches!(unknown, Err(Error::NotFound(_))));
    let events = w.events.take();
    assert!(events.contains(&TaskEvent::Paused) && events.contains(&TaskEvent::Resumed));
}

fn spec(args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn sigkill_ends_the_task_even_when_the_guest_ignores_it() {
    let w = world();
    let c = w.create().await.unwrap();
    c.start(&ExecId::Init).await.unwrap();
    w.hv.faults.set("agent.ignore_kill");
    c.kill(&ExecId::Init, libc::SIGKILL as u32, false)
        .await
        .unwrap();
    // The grace period (1 s here) passes, the VM is destroyed: 137.
    let exit = wait_for_exit(&c).await;
    assert_eq!((exit.code, exit.signal), (137, Some(libc::SIGKILL)));
    assert!(w.hv.calls().contains(&format!("destroy {}", w.domain())));
    c.delete().await.unwrap();
    w.assert_clean();
}

#[tokio::test]
async fn sigkill_of_a_paused_task_destroys_its_vm() {
    let w = world();
    let c = w.create().await.unwrap();
    c.start(&ExecId::Init).await.unwrap();
    c.pause().await.unwrap();
    c.kill(&ExecId::Init, libc::SIGKILL as u32, false)
        .await
        .unwrap();
    assert_eq!(wait_for_exit(&c).await.code, 137);
    c.delete().await.unwrap();
    w.assert_clean();
}

#[tokio::test]
async fn a_created_task_is_killed_by_the_agents_rules() {
    let w = world();
    let c = w.create().await.unwrap();
    // Not a signal that ends a process that never ran: refused by the agent.
    let e = c
        .kill(&ExecId::Init, libc::SIGUSR1 as u32, false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    c.kill(&ExecId::Init, libc::SIGTERM as u32, false)
        .await
        .unwrap();
    let exit = c.init().exit().expect("told at once");
    assert_eq!((exit.code, exit.signal), (143, Some(libc::SIGTERM)));
    assert!(w.events.take().iter().any(exited(ExecId::Init, 143)));
    assert!(matches!(
        c.kill(&ExecId::Init, 9, false).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        c.kill(&ExecId::Init, 0, false).await,
        Err(Error::InvalidArgument(_))
    ));
    c.delete().await.unwrap();
    w.assert_clean();
}

#[tokio::test]
async fn an_oom_is_told_before_the_exit_it_explains() {
    let w = world();
    let c = w.create().await.unwrap();
    c.start(&ExecId::Init).await.unwrap();
    let agent = w.agent();
    agent.event(&Event::Oom {
        container_id: String::new(),
    });
    agent.exit("c1", None, 137, Some(libc::SIGKILL));
    wait_for_exit(&c).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let events = w.events.take();
    let oom = events
        .iter()
        .position(|e| *e == TaskEvent::Oom)
        .expect("an OOM");
    let exit = events
        .iter()
        .position(exited(ExecId::Init, 137))
        .expect("an exit");
    assert!(oom < exit, "{events:?}");
}

#[tokio::test]
async fn execs_come_and_go() {
    let w = world();
    let c = w.create().await.unwrap();
    let e1 = ExecId::new_exec("e1").unwrap();
    let e = c.exec(&e1, spec(&["true"]), NoStdio).await.unwrap_err();
    assert!(
        matches!(e, Error::FailedPrecondition(_)),
        "exec before start: {e}"
    );
    c.start(&ExecId::Init).await.unwrap();
    let e = c.exec(&e1, spec(&[]), NoStdio).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "empty args: {e}");
    c.exec(&e1, spec(&["true"]), NoStdio).await.unwrap();
    let e = c.exec(&e1, spec(&["true"]), NoStdio).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "twice: {e}");
    let p = c.process(&e1).unwrap();
    assert!(matches!(
        c.delete_exec(&ExecId::Init).await,
        Err(Error::InvalidArgument(_))
    ));
    c.start(&e1).await.unwrap();
    assert!(matches!(
        c.delete_exec(&e1).await,
        Err(Error::FailedPrecondition(_))
    ));
    w.agent().exit("c1", Some("e1"), 0, None);
    tokio::time::timeout(Duration::from_secs(5), p.wait())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(c.delete_exec(&e1).await.unwrap().code, 0);
    assert!(matches!(c.process(&e1), Err(Error::NotFound(_))));
    let events = w.events.take();
    assert!(events.contains(&TaskEvent::ExecAdded(e1.clone())));
    assert!(events.contains(&TaskEvent::Started(e1.clone())));
    assert!(events.iter().any(exited(e1, 0)));
}

#[tokio::test]
async fn a_vm_that_survives_delete_keeps_the_task_until_a_retry_works() {
    let w = world();
    let c = w.create().await.unwrap();
    c.start(&ExecId::Init).await.unwrap();
    w.agent().exit("c1", None, 0, None);
    wait_for_exit(&c).await;
    w.hv.faults.set("destroy");
    let e = c.delete().await.unwrap_err();
    assert!(matches!(e, Error::Internal(_)), "{e}");
    assert!(
        w.name().dir_under(&w.cfg.state_dir).exists(),
        "the record stays"
    );
    w.hv.faults.clear("destroy");
    c.delete().await.unwrap();
    w.assert_clean();
}

#[tokio::test]
async fn update_stays_within_the_vms_maximums() {
    let w = world();
    let c = w.create().await.unwrap();
    c.start(&ExecId::Init).await.unwrap();
    let max = c.sandbox.size().max_memory_mib;
    // an update is a memory limit: the VM is the limit and the guest's own memory
    let overhead = w.cfg.guest_overhead_mib;
    let limit = max - overhead;
    let e = c.update(Some(limit + 1), None).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    c.update(Some(limit), None).await.unwrap();
    assert_eq!(c.sandbox.size().memory_mib, max);
    let resizes =
        w.hv.calls()
            .iter()
            .filter(|c| c.starts_with("resize"))
            .count();
    c.update(Some(limit), None).await.unwrap();
    let after =
        w.hv.calls()
            .iter()
            .filter(|c| c.starts_with("resize"))
            .count();
    assert_eq!(resizes, after, "the same size again is a no-op");
}

#[tokio::test]
async fn a_container_holds_its_address_until_delete() {
    let w = world();
    let c = w.create().await.unwrap();
    let lease = w.cfg.network.lease_dir.join("10.0.100.201");
    let text = std::fs::read_to_string(&lease).expect("leased");
    assert!(text.contains(&w.domain()), "{text}");
    let record: crate::persist::Record = serde_json::from_slice(
        &std::fs::read(w.name().dir_under(&w.cfg.state_dir).join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record.lease.unwrap().address.to_string(), "10.0.100.201");
    c.start(&ExecId::Init).await.unwrap();
    w.agent().exit("c1", None, 0, None);
    wait_for_exit(&c).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.delete().await.unwrap();
    w.assert_clean();
}
