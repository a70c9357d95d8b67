//! A pod without Xen: fake hypervisor and agent. What CRI would see: the
//! sandbox's states, containers joining and leaving the one VM, and nothing
//! left behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::*;
use crate::config::Config;
use crate::fake::{FakeExport, FakeHypervisor, NoStdio};
use crate::model::container::{Container, CreateRequest, RootfsSource};
use crate::model::events::{EventSink, TaskEvent};
use crate::network::Mode;

#[derive(Default)]
struct Recorder(Mutex<Vec<TaskEvent>>);

impl EventSink for Recorder {
    fn publish(&self, ev: TaskEvent) {
        self.0.lock().unwrap().push(ev);
    }
}

struct World {
    dir: tempfile::TempDir,
    cfg: Config,
    hv: Arc<FakeHypervisor>,
    export: Arc<FakeExport>,
}

/// CRI's namespaces for a pod of its own (NamespaceMode POD); network mode
/// none here, so no network namespace.
const POD_NAMESPACES: &[&str] = &["pid", "ipc", "uts", "mount"];

fn bundle(dir: &std::path::Path, name: &str, annotations: &HashMap<&str, &str>) -> PathBuf {
    bundle_in(dir, name, annotations, POD_NAMESPACES)
}

fn bundle_in(
    dir: &std::path::Path,
    name: &str,
    annotations: &HashMap<&str, &str>,
    namespaces: &[&str],
) -> PathBuf {
    let b = dir.join(name);
    std::fs::create_dir_all(b.join("rootfs")).unwrap();
    let namespaces: Vec<_> = namespaces
        .iter()
        .map(|n| serde_json::json!({ "type": n }))
        .collect();
    let spec = serde_json::json!({
        "process": {"args": ["sleep", "100"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "annotations": annotations,
        "linux": {"resources": {"memory": {"limit": 128 << 20}}, "namespaces": namespaces},
    });
    std::fs::write(b.join("config.json"), spec.to_string()).unwrap();
    b
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::fake::config_under(dir.path());
    cfg.network.mode = Mode::None;
    World {
        dir,
        cfg,
        hv: Arc::default(),
        export: Arc::default(),
    }
}

impl World {
    async fn pod(&self) -> Result<Arc<Pod>> {
        self.pod_with(Arc::default()).await
    }

    async fn pod_with(&self, events: Arc<Recorder>) -> Result<Arc<Pod>> {
        let b = self.sandbox_bundle("pod1", POD_NAMESPACES);
        self.pod_from("pod1", b, events).await
    }

    /// A sandbox's bundle with these namespaces, to edit before `pod_from`.
    fn sandbox_bundle(&self, name: &str, namespaces: &[&str]) -> PathBuf {
        let annotations = HashMap::from([(ANNOTATION_CONTAINER_TYPE, "sandbox")]);
        bundle_in(self.dir.path(), name, &annotations, namespaces)
    }

    async fn pod_from(
        &self,
        name: &str,
        bundle: PathBuf,
        events: Arc<Recorder>,
    ) -> Result<Arc<Pod>> {
        let req = PodRequest {
            name: ContainerName::new("k8s.io", name).unwrap(),
            bundle,
        };
        Pod::create(req, &self.cfg, self.hv.clone(), self.export.clone(), events).await
    }

    async fn member(&self, pod: &Arc<Pod>, id: &str) -> Result<Arc<Container<NoStdio>>> {
        self.member_with(pod, id, Arc::default()).await
    }

    async fn member_with(
        &self,
        pod: &Arc<Pod>,
        id: &str,
        events: Arc<Recorder>,
    ) -> Result<Arc<Container<NoStdio>>> {
        let annotations = HashMap::from([
            (ANNOTATION_CONTAINER_TYPE, "container"),
            (ANNOTATION_SANDBOX_ID, "pod1"),
        ]);
        let req = CreateRequest {
            name: ContainerName::new("k8s.io", id).unwrap(),
            bundle: bundle(self.dir.path(), id, &annotations),
            rootfs: RootfsSource::Bundle,
            network: None,
            stdio: NoStdio,
        };
        Container::create_in_pod(pod.clone(), req, &self.cfg, self.export.clone(), events).await
    }

    fn state_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.cfg.state_dir.join("k8s.io"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[test]
fn annotations_say_what_a_container_is() {
    let a = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>()
    };
    assert_eq!(Role::of(&a(&[])).unwrap(), Role::Standalone);
    assert_eq!(
        Role::of(&a(&[(ANNOTATION_CONTAINER_TYPE, "sandbox")])).unwrap(),
        Role::PodSandbox
    );
    assert_eq!(
        Role::of(&a(&[
            (ANNOTATION_CONTAINER_TYPE, "container"),
            (ANNOTATION_SANDBOX_ID, "p1")
        ]))
        .unwrap(),
        Role::PodMember {
            sandbox_id: "p1".into()
        }
    );
    assert!(Role::of(&a(&[(ANNOTATION_CONTAINER_TYPE, "container")])).is_err());
    assert!(Role::of(&a(&[(ANNOTATION_CONTAINER_TYPE, "vm")])).is_err());
}

#[tokio::test]
async fn containers_share_the_pod_vm_and_leave_nothing() {
    let w = world();
    let pod = w.pod().await.unwrap();
    assert_eq!(pod.status(), Status::Created);
    pod.start(&ExecId::Init).unwrap();
    assert_eq!(pod.status(), Status::Running);
    assert!(pod.start(&ExecId::Init).is_err(), "started twice");
    let a = w.member(&pod, "a").await.unwrap();
    let b = w.member(&pod, "b").await.unwrap();
    // One VM, two disks in it.
    assert_eq!(w.hv.domains(), vec![pod.domain().to_string()]);
    let d = pod.domain();
    assert_eq!(w.hv.disks(), vec![format!("{d} xvdc"), format!("{d} xvdd")]);
    assert_eq!(a.domain(), d);
    // The VM grew by both limits.
    assert_eq!(pod.sandbox().size().memory_mib, 256 + 128 + 128);
    // An Update's limit counts as it is (the pod's base holds the guest).
    b.update(Some(16), None).await.unwrap();
    assert_eq!(pod.sandbox().size().memory_mib, 256 + 128 + 16);
    b.update(Some(128), None).await.unwrap();
    assert!(matches!(a.pause().await, Err(Error::Unimplemented(_))));
    // A member leaves: its disk goes, the VM stays for the other.
    a.delete().await.unwrap();
    assert_eq!(w.hv.disks(), vec![format!("{d} xvdd")]);
    assert_eq!(pod.sandbox().size().memory_mib, 256 + 128);
    // The sandbox's pause ends with SIGTERM as pause does: exit 0, VM gone.
    pod.kill(&ExecId::Init, libc::SIGWINCH as u32)
        .await
        .unwrap();
    assert_eq!(pod.status(), Status::Running, "a harmless signal");
    pod.kill(&ExecId::Init, libc::SIGTERM as u32).await.unwrap();
    assert_eq!(pod.wait().await.code, 0);
    assert!(w.hv.domains().is_empty());
    b.delete().await.unwrap();
    pod.delete().await.unwrap();
    assert!(w.state_dirs().is_empty(), "{:?}", w.state_dirs());
    assert!(w.hv.disks().is_empty());
    assert!(
        !w.cfg.share_dir.join("k8s.io/pod1").exists(),
        "share dir left"
    );
}

#[tokio::test]
async fn host_pid_and_ipc_pods_are_refused_and_leave_nothing() {
    let w = world();
    // hostPID: CRI leaves out the pid entry; hostIPC the ipc one.
    for (name, namespaces, says) in [
        ("hostpid", &["ipc", "uts", "mount"][..], "pid"),
        ("hostipc", &["pid", "uts", "mount"][..], "ipc"),
        ("both", &["uts", "mount"][..], "pid and ipc"),
    ] {
        let b = w.sandbox_bundle(name, namespaces);
        let e = w
            .pod_from(name, b, Arc::default())
            .await
            .err()
            .expect("refused");
        assert!(matches!(e, Error::Unimplemented(_)), "{name}: {e:?}");
        assert!(
            e.to_string().contains(&format!("host's {says} namespace")),
            "{e}"
        );
    }
    assert!(w.hv.domains().is_empty());
    assert!(w.state_dirs().is_empty(), "{:?}", w.state_dirs());
    assert!(
        !w.cfg.share_dir.join("k8s.io").exists()
            || std::fs::read_dir(w.cfg.share_dir.join("k8s.io"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// Rewrite a bundle's config.json through `f`.
fn edit_spec(bundle: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut spec);
    std::fs::write(&path, spec.to_string()).unwrap();
}

#[tokio::test]
async fn the_pods_sysctls_are_set_with_each_member() {
    let w = world();
    let b = w.sandbox_bundle("pod1", POD_NAMESPACES);
    // CRI puts a pod's sysctls in the sandbox's spec only.
    edit_spec(
        &b,
        |s| {
            s["linux"]["sysctl"] =
                serde_json::json!({"fs.mqueue.msg_max": "100", "kernel.shm_rmid_forced": "1"})
        },
    );
    let pod = w.pod_from("pod1", b, Arc::default()).await.unwrap();
    pod.start(&ExecId::Init).unwrap();
    let a = w.member(&pod, "a").await.unwrap();
    let agent = w.hv.agent(pod.domain()).unwrap();
    let got = agent.isolation("a").unwrap().sysctls;
    assert_eq!(
        got.get("fs.mqueue.msg_max").map(String::as_str),
        Some("100")
    );
    assert_eq!(
        got.get("kernel.shm_rmid_forced").map(String::as_str),
        Some("1")
    );
    a.delete().await.unwrap();
    pod.kill(&ExecId::Init, libc::SIGKILL as u32).await.unwrap();
    pod.delete().await.unwrap();
}

#[tokio::test]
async fn a_pod_with_a_bad_sysctl_is_refused_before_its_vm() {
    let w = world();
    let b = w.sandbox_bundle("pod1", POD_NAMESPACES);
    edit_spec(&b, |s| {
        s["linux"]["sysctl"] = serde_json::json!({"../../etc/x": "1"})
    });
    let e = w
        .pod_from("pod1", b, Arc::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert!(w.hv.domains().is_empty());
    assert!(w.state_dirs().is_empty(), "{:?}", w.state_dirs());
}

#[tokio::test]
async fn a_member_that_cannot_attach_leaves_nothing_and_the_pod_lives() {
    let w = world();
    let pod = w.pod().await.unwrap();
    pod.start(&ExecId::Init).unwrap();
    w.hv.faults.set("attach_disk");
    let e = w.member(&pod, "a").await.err().expect("attach fails");
    assert!(e.to_string().contains("attach_disk"), "{e}");
    w.hv.faults.clear("attach_disk");
    assert_eq!(w.state_dirs(), vec!["pod1".to_string()]);
    assert!(!w.cfg.image_dir.join("k8s.io/a").exists());
    // Its slot and size were given back; the next one gets them.
    assert_eq!(pod.sandbox().size().memory_mib, 256);
    let b = w.member(&pod, "b").await.unwrap();
    assert_eq!(w.hv.disks(), vec![format!("{} xvdc", pod.domain())]);
    pod.kill(&ExecId::Init, libc::SIGKILL as u32).await.unwrap();
    assert_eq!(pod.wait().await.code, 137);
    // Joining a stopped pod is refused.
    assert!(w.member(&pod, "c").await.is_err());
    b.delete().await.unwrap();
    pod.delete().await.unwrap();
    assert!(w.state_dirs().is_empty());
}

#[tokio::test]
async fn a_pod_vm_that_dies_ends_the_sandbox_task_and_its_containers() {
    let w = world();
    let events: Arc<Recorder> = Arc::default();
    let pod = w.pod_with(events.clone()).await.unwrap();
    pod.start(&ExecId::Init).unwrap();
    let a = w.member(&pod, "a").await.unwrap();
    a.start(&ExecId::Init).await.unwrap();
    w.hv.crash(pod.domain());
    let limit = std::time::Duration::from_secs(5);
    let exit = tokio::time::timeout(limit, pod.wait())
        .await
        .expect("the sandbox ends");
    assert_eq!(exit.code, crate::model::process::VM_GONE_CODE);
    assert_eq!(pod.status(), Status::Stopped);
    tokio::time::timeout(limit, a.init().wait())
        .await
        .expect("its container ends");
    let exited = |evs: &[TaskEvent]| {
        evs.iter()
            .filter(|e| matches!(e, TaskEvent::Exited { .. }))
            .count()
    };
    assert_eq!(exited(&events.0.lock().unwrap()), 1, "told once");
    // Deleting afterwards leaves nothing.
    a.delete().await.unwrap();
    pod.delete().await.unwrap();
    assert!(w.state_dirs().is_empty());
}

#[tokio::test]
async fn a_pod_stopped_by_kill_is_told_once() {
    let w = world();
    let events: Arc<Recorder> = Arc::default();
    let pod = w.pod_with(events.clone()).await.unwrap();
    pod.start(&ExecId::Init).unwrap();
    pod.kill(&ExecId::Init, libc::SIGTERM as u32).await.unwrap();
    assert_eq!(pod.wait().await.code, 0);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let evs = events.0.lock().unwrap().clone();
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, TaskEvent::Exited { .. }))
            .count(),
        1,
        "{evs:?}"
    );
}

#[tokio::test]
async fn a_sandbox_has_no_processes_of_its_own() {
    let w = world();
    let pod = w.pod().await.unwrap();
    let exec = ExecId::Exec("e1".into());
    assert!(matches!(pod.start(&exec), Err(Error::NotFound(_))));
    assert!(pod.kill(&exec, 9).await.is_err());
    // Delete of a created sandbox: nothing ran, VM gone.
    assert_eq!(pod.delete().await.unwrap().code, 0);
    assert!(w.hv.domains().is_empty());
    assert!(w.state_dirs().is_empty());
}

#[tokio::test]
async fn an_oom_goes_to_the_container_the_guest_names_before_its_exit() {
    use vxn_wire::protocol::Event;
    let w = world();
    let pod_events: Arc<Recorder> = Arc::default();
    let pod = w.pod_with(pod_events.clone()).await.unwrap();
    pod.start(&ExecId::Init).unwrap();
    let (a_events, b_events): (Arc<Recorder>, Arc<Recorder>) = Default::default();
    let a = w.member_with(&pod, "a", a_events.clone()).await.unwrap();
    let _b = w.member_with(&pod, "b", b_events.clone()).await.unwrap();
    a.start(&ExecId::Init).await.unwrap();
    let agent = w.hv.agent(pod.domain()).expect("the pod VM runs");
    agent.event(&Event::Oom {
        container_id: "a".into(),
    });
    agent.event(&Event::Oom {
        container_id: String::new(),
    });
    agent.exit("a", None, 137, Some(libc::SIGKILL));
    a.init().wait().await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let got = a_events.0.lock().unwrap().clone();
    let oom = got
        .iter()
        .position(|e| *e == TaskEvent::Oom)
        .expect("a's OOM");
    let exit = got
        .iter()
        .position(|e| matches!(e, TaskEvent::Exited { .. }))
        .expect("a's exit");
    assert!(oom < exit, "{got:?}");
    assert!(!b_events.0.lock().unwrap().contains(&TaskEvent::Oom));
    assert!(
        pod_events.0.lock().unwrap().contains(&TaskEvent::Oom),
        "the unattributed one"
    );
}

#[tokio::test]
async fn a_pod_takes_a_pooled_vm_whose_share_becomes_the_pods() {
    let mut w = world();
    w.cfg.pool.pod_size = 1;
    w.cfg.pool.refill = false;
    let store = w.cfg.pool_store();
    let plan = w.cfg.pod_pool_plan();
    let export = crate::fake::FakeExport::default();
    let pf = crate::pool::Platform {
        hv: w.hv.as_ref(),
        exporter: &export,
    };
    crate::pool::fill(&store, &pf, &plan, true).await.unwrap();
    let pooled = store.ready_list(&plan.shape).pop().unwrap();
    let pooled_share = store.share_of(&pooled).unwrap();
    let pod = w.pod().await.unwrap();
    // the pooled VM, renamed; its share (the one its QEMU serves) is the pod's now
    assert_eq!(w.hv.domains(), vec![pod.domain().to_string()]);
    assert!(w.hv.calls().contains(&format!("rename {}", pooled.domain)));
    let share = w.cfg.share_dir.join("k8s.io/pod1");
    assert!(share.is_dir() && !pooled_share.exists());
    assert!(w
        .hv
        .shares
        .lock()
        .unwrap()
        .contains(&(pooled.domain.clone(), pooled_share)));
    assert_eq!(
        pod.sandbox().size().max_memory_mib,
        plan.shape.max_memory_mib
    );
    let a = w.member(&pod, "a").await.unwrap();
    assert_eq!(a.domain(), pod.domain());
    a.delete().await.unwrap();
    pod.kill(&ExecId::Init, libc::SIGKILL as u32).await.unwrap();
    pod.wait().await;
    pod.delete().await.unwrap();
    assert!(w.hv.domains().is_empty());
    assert!(w.state_dirs().is_empty(), "{:?}", w.state_dirs());
    assert!(!share.exists(), "share dir left");
    // a container's pool does not serve pods, nor a pod's pool containers
    assert!(store.ready_list(&w.cfg.pool_plan().shape).is_empty());
}

#[tokio::test]
async fn a_layered_member_gets_the_cached_image_read_only_and_its_own_layer() {
    let mut w = world();
    w.export = Arc::new(FakeExport {
        layered: true,
        ..Default::default()
    });
    let pod = w.pod().await.unwrap();
    let lower = w.dir.path().join("layer");
    std::fs::create_dir_all(&lower).unwrap();
    let annotations = HashMap::from([
        (ANNOTATION_CONTAINER_TYPE, "container"),
        (ANNOTATION_SANDBOX_ID, "pod1"),
    ]);
    let req = |id: &str| CreateRequest {
        name: ContainerName::new("k8s.io", id).unwrap(),
        bundle: bundle(w.dir.path(), id, &annotations),
        rootfs: RootfsSource::Layers {
            layers: crate::storage::layers::Layers {
                lower: vec![lower.clone()],
                upper: None,
            },
            mount: Box::new(|_| panic!("a layered export mounts nothing on the host")),
        },
        network: None,
        stdio: NoStdio,
    };
    let a = Container::create_in_pod(
        pod.clone(),
        req("a"),
        &w.cfg,
        w.export.clone(),
        Arc::new(Recorder::default()),
    )
    .await
    .unwrap();
    let b = Container::create_in_pod(
        pod.clone(),
        req("b"),
        &w.cfg,
        w.export.clone(),
        Arc::new(Recorder::default()),
    )
    .await
    .unwrap();
    let d = pod.domain();
    assert_eq!(
        w.hv.disks(),
        vec![
            format!("{d} xvdc ro"),
            format!("{d} xvdd"),
            format!("{d} xvde ro"),
            format!("{d} xvdf")
        ]
    );
    // a member leaves: both its disks go, the other's stay
    a.delete().await.unwrap();
    assert_eq!(
        w.hv.disks(),
        vec![format!("{d} xvde ro"), format!("{d} xvdf")]
    );
    b.delete().await.unwrap();
    assert!(w.hv.disks().is_empty());
    pod.kill(&ExecId::Init, libc::SIGKILL as u32).await.unwrap();
    pod.wait().await;
    pod.delete().await.unwrap();
    assert!(w.state_dirs().is_empty(), "{:?}", w.state_dirs());
}
