//! A container's create with a warm pool (docs/warm-pool.md), on the fakes:
//! a pooled VM is claimed, renamed, fitted and run instead of a boot; no VM
//! serves two containers; what cannot take one, or finds none, boots; a
//! claim that fails, or a shim lost right after claiming, leaves nothing.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::fake::{FakeExport, FakeHypervisor, NoStdio};
use crate::hypervisor::Hypervisor as _;
use crate::model::container::{CreateRequest, RootfsSource};
use crate::model::events::TaskEvent;
use crate::pool::{self, PoolStore};

struct NoEvents;
impl crate::model::events::EventSink for NoEvents {
    fn publish(&self, _: TaskEvent) {}
}

const SPEC: &str = r#"{"process":{"args":["sh","-c","exit 3"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}"#;

struct World {
    dir: tempfile::TempDir,
    cfg: Config,
    hv: Arc<FakeHypervisor>,
}

/// A world whose pool keeps `size` VMs, filled now.
async fn world(size: usize) -> World {
    world_with(size, |_| {}).await
}

/// The same, its config changed by `tweak` before the fill.
async fn world_with(size: usize, tweak: impl FnOnce(&mut Config)) -> World {
    let dir = tempfile::tempdir().unwrap();
    crate::fake::bundle_under(dir.path(), SPEC);
    let mut cfg = crate::fake::config_under(dir.path());
    cfg.pool.size = size;
    cfg.pool.refill = false;
    tweak(&mut cfg);
    let hv: Arc<FakeHypervisor> = Arc::default();
    let export = FakeExport::default();
    let pf = pool::Platform {
        hv: hv.as_ref(),
        exporter: &export,
    };
    let filled = pool::fill(&store(&cfg), &pf, &cfg.pool_plan(), true)
        .await
        .unwrap();
    assert_eq!(filled.ready, size);
    World { dir, cfg, hv }
}

fn store(cfg: &Config) -> PoolStore {
    cfg.pool_store()
}

fn name(id: &str) -> ContainerName {
    ContainerName::new("default", id).unwrap()
}

impl World {
    /// A container of the bundle's rootfs (no writable layer disk).
    async fn create(&self, id: &str) -> Result<Arc<Container<NoStdio>>> {
        self.create_with(id, false).await
    }

    /// `layered`: of an overlay snapshot's layers (an empty upper), exported
    /// as the Xen exporter does (the image and a writable layer).
    async fn create_with(&self, id: &str, layered: bool) -> Result<Arc<Container<NoStdio>>> {
        let bundle = self.dir.path().join(format!("bundle-{id}"));
        if !bundle.exists() {
            std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
            std::fs::copy(
                self.dir.path().join("bundle/config.json"),
                bundle.join("config.json"),
            )
            .unwrap();
        }
        let rootfs = match layered {
            false => RootfsSource::Bundle,
            true => RootfsSource::Layers {
                layers: crate::storage::layers::Layers {
                    lower: vec![bundle.join("rootfs")],
                    upper: None,
                },
                mount: Box::new(|_| Ok(())),
            },
        };
        let req = CreateRequest {
            name: name(id),
            bundle,
            rootfs,
            network: None,
            stdio: NoStdio,
        };
        let export = FakeExport {
            layered,
            ..Default::default()
        };
        Container::create(
            req,
            &self.cfg,
            self.hv.clone(),
            Arc::new(export),
            Arc::new(NoEvents),
        )
        .await
    }

    /// The domain's disks (`vdev`s), from its create or plugged in.
    fn disks_of(&self, domain: &str) -> Vec<String> {
        self.hv
            .disks()
            .into_iter()
            .filter_map(|d| d.strip_prefix(&format!("{domain} ")).map(String::from))
            .collect()
    }

    fn ready(&self) -> Vec<String> {
        store(&self.cfg)
            .ready_list(&self.cfg.pool_plan().shape)
            .into_iter()
            .map(|p| p.domain)
            .collect()
    }

    fn calls_for(&self, domain: &str) -> Vec<String> {
        self.hv
            .calls()
            .into_iter()
            .filter(|c| c.ends_with(&format!(" {domain}")))
            .map(|c| c.split(' ').next().unwrap_or_default().to_string())
            .collect()
    }
}

#[tokio::test]
async fn a_pooled_vm_of_the_containers_size_is_not_resized() {
    // the pool boots VMs of the size a container gets by default
    let w = world_with(1, |cfg| cfg.pool.boot_memory_mib = cfg.memory_mib).await;
    let c = w.create("c1").await.unwrap();
    let domain = name("c1").domain();
    let steps = w.calls_for(&domain);
    assert!(steps.contains(&"attach_vif".to_string()), "{steps:?}");
    assert!(!steps.contains(&"resize".to_string()), "{steps:?}");
    assert_eq!(c.sandbox.size().memory_mib, w.cfg.memory_mib);
    c.start(&ExecId::Init).await.unwrap();
    w.hv.agent(&domain).unwrap().exit("c1", None, 0, None);
    c.init().wait().await;
    c.delete().await.unwrap();
}

#[tokio::test]
async fn a_paused_vm_an_older_vxn_pooled_is_run_at_its_claim() {
    let w = world(1).await;
    let pooled = w.ready().pop().unwrap();
    // what an older vxn left: the VM paused, its entry without `running`
    w.hv.pause(&pooled).await.unwrap();
    let shape = w.cfg.pool_plan().shape;
    let entry = store(&w.cfg)
        .shape_dir(&shape)
        .join("ready")
        .join(format!("{pooled}.json"));
    let old = serde_json::json!({ "domain": pooled, "shape": shape });
    std::fs::write(&entry, old.to_string()).unwrap();
    let c = w.create("c1").await.unwrap();
    let domain = name("c1").domain();
    assert_eq!(w.hv.domains(), vec![domain.clone()]);
    let steps = w.calls_for(&domain);
    let unpause = steps.iter().position(|s| s == "unpause");
    let attach = steps.iter().position(|s| s == "attach_vif");
    assert!(unpause > attach, "fitted while paused, then run: {steps:?}");
    c.start(&ExecId::Init).await.unwrap();
    assert!(!w.hv.is_paused(&domain));
    w.hv.agent(&domain).unwrap().exit("c1", None, 0, None);
    c.init().wait().await;
    c.delete().await.unwrap();
    assert!(w.hv.domains().is_empty());
}

#[tokio::test]
async fn a_create_takes_the_pooled_vm_and_its_delete_destroys_it() {
    let w = world(1).await;
    let pooled = w.ready().pop().unwrap();
    let c = w.create("c1").await.unwrap();
    let domain = name("c1").domain();
    // the pooled VM became the container's: renamed, never booted under its name
    assert_eq!(w.hv.domains(), vec![domain.clone()]);
    assert!(w.ready().is_empty());
    let steps = w.calls_for(&domain);
    assert!(!steps.contains(&"create".to_string()), "{steps:?}");
    for step in ["resize", "attach_vif", "connect_agent", "pause"] {
        assert!(
            steps.contains(&step.to_string()),
            "{step} missing: {steps:?}"
        );
    }
    // the pooled VM ran: nothing unpaused it, and the create froze it until Start
    assert!(!steps.contains(&"unpause".to_string()), "{steps:?}");
    assert!(w.hv.is_paused(&domain));
    assert!(w.calls_for(&pooled).contains(&"rename".to_string()));
    assert_eq!(c.sandbox.size().max_memory_mib, w.cfg.pool.max_memory_mib);
    // and it runs the container as a booted one would
    c.start(&ExecId::Init).await.unwrap();
    w.hv.agent(&domain).unwrap().exit("c1", None, 3, None);
    let exit = tokio::time::timeout(Duration::from_secs(10), c.init().wait())
        .await
        .unwrap();
    assert_eq!(exit.code, 3);
    assert_eq!(c.delete().await.unwrap().code, 3);
    assert!(w.hv.domains().is_empty(), "{:?}", w.hv.domains());
    assert!(!name("c1").dir_under(&w.cfg.state_dir).exists());
    // renamed, the VM is the record's: the delete does not look for the pool's name
    let pooled_steps = w.calls_for(&pooled);
    assert!(
        !pooled_steps.contains(&"destroy".to_string()),
        "{pooled_steps:?}"
    );
}

#[tokio::test]
async fn an_empty_pool_means_a_boot() {
    let w = world(1).await;
    w.create("c1").await.unwrap();
    let c2 = w.create("c2").await.unwrap();
    assert!(w
        .calls_for(&name("c2").domain())
        .contains(&"create".to_string()));
    assert_eq!(w.hv.domains().len(), 2);
    c2.delete().await.unwrap();
}

#[tokio::test]
async fn no_pooled_vm_serves_two_containers() {
    let w = world(1).await;
    let (a, b) = tokio::join!(w.create("a"), w.create("b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    let renames =
        w.hv.calls()
            .into_iter()
            .filter(|c| c.starts_with("rename "))
            .count();
    assert_eq!(renames, 1);
    let mut want = vec![name("a").domain(), name("b").domain()];
    want.sort();
    assert_eq!(w.hv.domains(), want);
    a.delete().await.unwrap();
    b.delete().await.unwrap();
    assert!(w.hv.domains().is_empty());
}

#[tokio::test]
async fn a_container_bigger_than_the_pools_shape_boots() {
    let w = world(1).await;
    let mut cfg = w.cfg.clone();
    cfg.memory_mib = cfg.pool.max_memory_mib; // its headroom goes past the shape's maximum
    let w = World { cfg, ..w };
    let c = w.create("big").await.unwrap();
    assert!(w
        .calls_for(&name("big").domain())
        .contains(&"create".to_string()));
    assert_eq!(
        w.ready().len(),
        1,
        "the pooled VM stays for a container it fits"
    );
    c.delete().await.unwrap();
}

#[tokio::test]
async fn a_pooled_vm_that_does_not_come_up_goes_and_a_vm_is_booted() {
    let w = world(1).await;
    let pooled = w.ready().pop().unwrap();
    w.hv.faults.set("connect_agent");
    let c = w.create("c1").await.unwrap();
    let domain = name("c1").domain();
    assert!(w.calls_for(&domain).contains(&"create".to_string()));
    assert_eq!(w.hv.domains(), vec![domain]);
    assert!(!w.hv.domains().contains(&pooled));
    assert!(w.ready().is_empty(), "never returned to the pool");
    assert!(!name("c1")
        .dir_under(&w.cfg.state_dir)
        .join(pool::CLAIM_FILE)
        .exists());
    c.delete().await.unwrap();
    assert!(w.hv.domains().is_empty());
}

#[tokio::test]
async fn a_claim_whose_vm_cannot_be_destroyed_fails_the_create_and_leaves_it_named() {
    let w = world(1).await;
    w.hv.faults.set("connect_agent");
    w.hv.faults.set("destroy");
    let e = w.create("c1").await.err().expect("the create fails");
    assert!(matches!(e, Error::Internal(_)), "{e}");
    // the record (and the claim) stay for Delete or the delete action to retry
    w.hv.faults.clear("destroy");
    let state = crate::persist::StateDir::of(&w.cfg.state_dir, &name("c1"));
    let record = state.load().unwrap_or_default();
    crate::persist::teardown(&record, &state, w.hv.as_ref(), &FakeExport::default())
        .await
        .unwrap();
    assert!(w.hv.domains().is_empty(), "{:?}", w.hv.domains());
}

#[tokio::test]
async fn a_shim_lost_right_after_its_claim_leaves_the_vm_to_its_teardown() {
    let w = world(1).await;
    let pooled = w.ready().pop().unwrap();
    // the claim is made, then the shim is SIGKILLed: no record, no rename yet
    let state = crate::persist::StateDir::create(&w.cfg.state_dir, &name("c1")).unwrap();
    let shape = w.cfg.pool_plan().shape;
    assert!(store(&w.cfg).claim(&shape, state.path()).unwrap().is_some());
    let record = crate::persist::Record::default();
    crate::persist::teardown(&record, &state, w.hv.as_ref(), &FakeExport::default())
        .await
        .unwrap();
    assert!(!w.hv.domains().contains(&pooled), "{:?}", w.hv.domains());
    assert!(w.hv.domains().is_empty());
    assert!(!state.path().exists());
}

#[tokio::test]
async fn a_claimed_vm_brings_a_blank_writable_layer_and_only_the_image_is_plugged_in() {
    let w = world(1).await;
    let pooled = w.ready().pop().unwrap();
    // the pooled VM was made with its blank writable layer attached
    assert_eq!(w.disks_of(&pooled), ["xvdc"]);
    let upper_dir = w.cfg.image_dir.join(".pool").join(&pooled);
    assert!(upper_dir.join("upper.ext4").is_file());
    let c = w.create_with("c1", true).await.unwrap();
    let domain = name("c1").domain();
    // that layer is the container's: one disk plugged in at the claim, none made
    let attached = w
        .calls_for(&domain)
        .iter()
        .filter(|s| *s == "attach_disk")
        .count();
    assert_eq!(attached, 1);
    let mut disks = w.disks_of(&domain);
    disks.sort();
    assert_eq!(disks, ["xvdb ro", "xvdc"]);
    let image_dir = name("c1").dir_under(&w.cfg.image_dir);
    assert_eq!(
        std::fs::read_to_string(image_dir.join("upper.ext4")).unwrap(),
        format!("blank {}", crate::fake::FAKE_UPPER_MIB)
    );
    assert!(!upper_dir.exists());
    c.start(&ExecId::Init).await.unwrap();
    w.hv.agent(&domain).unwrap().exit("c1", None, 0, None);
    c.init().wait().await;
    c.delete().await.unwrap();
    assert!(w.hv.domains().is_empty());
}

#[tokio::test]
async fn without_a_pooled_vm_a_blank_writable_layer_is_made_for_the_boot() {
    let w = world_with(1, |cfg| cfg.pool.max_memory_mib = 64).await;
    // too big for the pool's VMs: a boot, its layer made and given at the create
    let mut c = w.cfg.clone();
    c.memory_mib = 512;
    let w = World { cfg: c, ..w };
    let created = w.create_with("c1", true).await.unwrap();
    let domain = name("c1").domain();
    assert!(w.calls_for(&domain).contains(&"create".to_string()));
    assert!(!w.calls_for(&domain).contains(&"attach_disk".to_string()));
    let mut disks = w.disks_of(&domain);
    disks.sort();
    assert_eq!(disks, ["xvdb ro", "xvdc"]);
    let image_dir = name("c1").dir_under(&w.cfg.image_dir);
    assert!(image_dir.join("upper.ext4").is_file());
    // the pooled VM and its layer are untouched
    assert_eq!(w.ready().len(), 1);
    created.start(&ExecId::Init).await.unwrap();
}
