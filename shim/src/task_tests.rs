//! The Task service as containerd calls it, on the model's fakes (no VM, no
//! containerd): answers, ttrpc codes, the events containerd gets, and nothing
//! left behind.

use std::sync::Arc;
use std::time::Duration;

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext, Code};
use containerd_shim_protos::types::task::Status as ApiStatus;
use tokio::sync::mpsc;
use vxn_runtime_core::fake::{self, FakeAgent, FakeExport, FakeHypervisor};
use vxn_runtime_core::names::ContainerName;

use super::TaskService;
use crate::events::{Events, Published};

const SPEC: &str = r#"{"process":{"args":["sh","-c","exit 3"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}"#;
const EXEC: &str = r#"{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}}"#;

struct Shim {
    dir: tempfile::TempDir,
    hv: Arc<FakeHypervisor>,
    svc: TaskService,
    published: mpsc::Receiver<Published>,
    exit: Arc<ExitSignal>,
}

fn shim() -> Shim {
    shim_with(|hv, export| Ok((hv, export)))
}

fn shim_with(
    platform: impl FnOnce(
        Arc<FakeHypervisor>,
        Arc<FakeExport>,
    ) -> Result<vxn_runtime_core::platform::Platform, String>,
) -> Shim {
    let dir = tempfile::tempdir().unwrap();
    fake::bundle_under(dir.path(), SPEC);
    let mut cfg = fake::config_under(dir.path());
    cfg.network.mode = vxn_runtime_core::network::Mode::None;
    let hv = Arc::new(FakeHypervisor::default());
    let (events, published) = Events::queue();
    let exit = Arc::new(ExitSignal::default());
    let svc = TaskService::new(
        "default".into(),
        Arc::new(cfg),
        platform(hv.clone(), Arc::default()),
        events,
        exit.clone(),
    );
    Shim {
        dir,
        hv,
        svc,
        published,
        exit,
    }
}

fn ctx() -> TtrpcContext {
    TtrpcContext {
        mh: Default::default(),
        metadata: Default::default(),
        timeout_nano: 0,
    }
}

fn code<T: std::fmt::Debug>(r: ttrpc::Result<T>) -> Code {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => s.code(),
        other => panic!("expected an error status, got {other:?}"),
    }
}

impl Shim {
    fn bundle(&self) -> String {
        self.dir.path().join("bundle").display().to_string()
    }

    async fn create(&self, id: &str) -> ttrpc::Result<CreateTaskResponse> {
        let req = CreateTaskRequest {
            id: id.into(),
            bundle: self.bundle(),
            ..Default::default()
        };
        self.svc.create(&ctx(), req).await
    }

    async fn start(&self, id: &str, exec: &str) -> ttrpc::Result<StartResponse> {
        let req = StartRequest {
            id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        self.svc.start(&ctx(), req).await
    }

    async fn state(&self, id: &str, exec: &str) -> ttrpc::Result<StateResponse> {
        let req = StateRequest {
            id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        self.svc.state(&ctx(), req).await
    }

    async fn status(&self, id: &str, exec: &str) -> ApiStatus {
        self.state(id, exec).await.unwrap().status.unwrap()
    }

    /// Wait, bounded: a test never hangs on a lost exit.
    async fn wait(&self, id: &str, exec: &str) -> u32 {
        let req = WaitRequest {
            id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        let ctx = ctx();
        let waited = tokio::time::timeout(Duration::from_secs(10), self.svc.wait(&ctx, req));
        waited
            .await
            .expect("an exit within 10 s")
            .unwrap()
            .exit_status
    }

    async fn kill(&self, id: &str, exec: &str, signal: u32) -> ttrpc::Result<Empty> {
        let req = KillRequest {
            id: id.into(),
            exec_id: exec.into(),
            signal,
            ..Default::default()
        };
        self.svc.kill(&ctx(), req).await
    }

    async fn exec(&self, id: &str, exec: &str, spec: &str) -> ttrpc::Result<Empty> {
        let req = ExecProcessRequest {
            id: id.into(),
            exec_id: exec.into(),
            spec: MessageField::some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: spec.as_bytes().to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.svc.exec(&ctx(), req).await
    }

    async fn delete(&self, id: &str, exec: &str) -> ttrpc::Result<DeleteResponse> {
        let req = DeleteRequest {
            id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        self.svc.delete(&ctx(), req).await
    }

    async fn shutdown(&self) {
        self.svc
            .shutdown(&ctx(), ShutdownRequest::default())
            .await
            .unwrap();
    }

    fn agent(&self, id: &str) -> Arc<FakeAgent> {
        let domain = ContainerName::new("default", id).unwrap().domain();
        self.hv.agent(&domain).expect("the task's VM runs")
    }

    /// The topics published so far, in order.
    fn topics(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok((topic, _)) = self.published.try_recv() {
            v.push(topic);
        }
        v
    }

    /// Nothing of any task is left: no VM, no state, no image.
    fn assert_clean(&self) {
        assert_eq!(self.hv.domains(), Vec::<String>::new(), "a domain leaked");
        for dir in ["state", "images"] {
            let left: Vec<_> = std::fs::read_dir(self.dir.path().join(dir).join("default"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{dir} leaked: {left:?}");
        }
    }

    /// Whether the shim decided to exit within `limit`.
    async fn exits_within(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.exit.wait()).await.is_ok()
    }
}

#[tokio::test]
async fn a_task_runs_to_its_exit_and_is_gone_after_delete() {
    let mut s = shim();
    s.create("c1").await.unwrap();
    assert_eq!(s.status("c1", "").await, ApiStatus::CREATED);
    s.start("c1", "").await.unwrap();
    assert_eq!(s.status("c1", "").await, ApiStatus::RUNNING);
    s.agent("c1").exit("c1", None, 3, None);
    assert_eq!(s.wait("c1", "").await, 3);
    let st = s.state("c1", "").await.unwrap();
    assert_eq!(
        (st.status.unwrap(), st.exit_status),
        (ApiStatus::STOPPED, 3)
    );
    assert_eq!(s.delete("c1", "").await.unwrap().exit_status, 3);
    assert_eq!(code(s.state("c1", "").await), Code::NOT_FOUND);
    assert_eq!(
        s.topics(),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    s.assert_clean();
    s.shutdown().await;
    assert!(s.exits_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn requests_it_cannot_honour_get_their_code_and_leave_nothing() {
    let s = shim();
    s.create("c1").await.unwrap();
    assert_eq!(code(s.create("c1").await), Code::ALREADY_EXISTS);
    let req = CreateTaskRequest {
        id: "c2".into(),
        bundle: s.bundle(),
        checkpoint: "/tmp/cp".into(),
        ..Default::default()
    };
    assert_eq!(code(s.svc.create(&ctx(), req).await), Code::UNIMPLEMENTED);
    let req = CreateTaskRequest {
        id: "c3".into(),
        bundle: s.dir.path().join("no-bundle").display().to_string(),
        ..Default::default()
    };
    assert_eq!(
        code(s.svc.create(&ctx(), req).await),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(code(s.start("c9", "").await), Code::NOT_FOUND);
    assert_eq!(code(s.kill("c9", "", 9).await), Code::NOT_FOUND);
    let req = CheckpointTaskRequest {
        id: "c1".into(),
        ..Default::default()
    };
    assert_eq!(
        code(s.svc.checkpoint(&ctx(), req).await),
        Code::UNIMPLEMENTED
    );
    // The first task is untouched by all of it.
    assert_eq!(s.status("c1", "").await, ApiStatus::CREATED);
    s.kill("c1", "", 9).await.unwrap();
    assert_eq!(s.wait("c1", "").await, 137);
    s.delete("c1", "").await.unwrap();
    s.assert_clean();
}

#[tokio::test]
async fn a_vm_that_does_not_boot_fails_create_and_leaves_nothing() {
    for fault in ["create", "agent.hello", "agent.create"] {
        let mut s = shim();
        s.hv.faults.set(fault);
        let err = s.create("c1").await;
        assert!(err.is_err(), "{fault}: create succeeded");
        assert_eq!(code(s.state("c1", "").await), Code::NOT_FOUND, "{fault}");
        assert_eq!(s.topics(), Vec::<String>::new(), "{fault}");
        s.assert_clean();
        // containerd's Shutdown after a failed Create ends the shim.
        s.shutdown().await;
        assert!(s.exits_within(Duration::from_secs(5)).await, "{fault}");
    }
}

#[tokio::test]
async fn a_config_without_a_backend_fails_create_as_a_failed_precondition_naming_the_file() {
    // (serve.rs names the file in the error of a config it cannot use)
    let s = shim_with(|_, _| Err("/etc/vxn/config.toml: hypervisor = \"kvm\": use \"xen\"".into()));
    match s.create("c1").await {
        Err(ttrpc::Error::RpcStatus(st)) => {
            assert_eq!(st.code(), Code::FAILED_PRECONDITION);
            assert!(st.message().contains("config.toml"), "{}", st.message());
        }
        other => panic!("{other:?}"),
    }
    s.assert_clean();
}

#[tokio::test]
async fn execs_run_beside_the_init_with_their_own_status() {
    let mut s = shim();
    s.create("c1").await.unwrap();
    s.start("c1", "").await.unwrap();
    s.exec("c1", "e1", EXEC).await.unwrap();
    assert_eq!(s.status("c1", "e1").await, ApiStatus::CREATED);
    assert_eq!(code(s.exec("c1", "e1", EXEC).await), Code::ALREADY_EXISTS);
    assert_eq!(
        code(s.exec("c1", "e2", "not json").await),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(code(s.exec("c9", "e1", EXEC).await), Code::NOT_FOUND);
    s.start("c1", "e1").await.unwrap();
    s.agent("c1").exit("c1", Some("e1"), 5, None);
    assert_eq!(s.wait("c1", "e1").await, 5);
    assert_eq!(s.delete("c1", "e1").await.unwrap().exit_status, 5);
    // The exec is gone, the init runs on.
    assert_eq!(code(s.state("c1", "e1").await), Code::NOT_FOUND);
    assert_eq!(s.status("c1", "").await, ApiStatus::RUNNING);
    s.kill("c1", "", libc::SIGTERM as u32).await.unwrap();
    assert_eq!(s.wait("c1", "").await, 128 + libc::SIGTERM as u32);
    s.delete("c1", "").await.unwrap();
    assert_eq!(
        s.topics(),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    s.assert_clean();
}

#[tokio::test]
async fn the_shim_stays_while_it_has_a_task() {
    let s = shim();
    s.create("c1").await.unwrap();
    s.shutdown().await;
    assert!(!s.exits_within(Duration::from_millis(500)).await);
    s.kill("c1", "", 9).await.unwrap();
    s.wait("c1", "").await;
    s.delete("c1", "").await.unwrap();
    s.shutdown().await;
    assert!(s.exits_within(Duration::from_secs(5)).await);
}
