use super::*;
use crate::fake::{FakeExport, FakeHypervisor};

static EXPORT: std::sync::LazyLock<FakeExport> = std::sync::LazyLock::new(FakeExport::default);

/// The fake backend with the fake exporter.
fn on(hv: &FakeHypervisor) -> Platform<'_> {
    Platform {
        hv,
        exporter: &*EXPORT,
    }
}

fn plan(size: usize) -> FillPlan {
    FillPlan {
        shape: Shape {
            kernel: "/k".into(),
            initramfs: "/i".into(),
            cmdline_extra: String::new(),
            boot_memory_mib: 48,
            max_memory_mib: 1024,
            max_vcpus: 2,
            share: false,
            upper_mib: None,
        },
        size,
        max_pool_mib: 4096,
        agent_log: "info".into(),
        agent_timeout: Duration::from_secs(5),
    }
}

/// A VM a filler recorded and made, then was killed before it was ready.
async fn half_made(store: &PoolStore, hv: &FakeHypervisor, plan: &FillPlan, n: u64) -> Pooled {
    let p = Pooled {
        domain: plan.shape.domain_name(n),
        shape: plan.shape.clone(),
        running: true,
        upper_disk: None,
    };
    store.begin_fill(&p).unwrap();
    drop(
        hv.create_paused(&VmSpec {
            name: p.domain.clone(),
            kernel: "/k".into(),
            initramfs: "/i".into(),
            cmdline_extra: String::new(),
            agent_log: "info".into(),
            memory_mib: 48,
            max_memory_mib: 1024,
            vcpus: 1,
            max_vcpus: 2,
            rootfs_disk: None,
            rootfs_writable: true,
            upper_disk: None,
            vif: None,
            shares: vec![],
            state_dir: "/nonexistent".into(),
        })
        .await
        .unwrap(),
    );
    p
}

#[tokio::test]
async fn a_fill_boots_the_pool_to_its_size_each_vm_left_running_once_its_agent_serves() {
    let d = tempfile::tempdir().unwrap();
    let (store, hv, plan) = (
        PoolStore::under(d.path()),
        FakeHypervisor::default(),
        plan(3),
    );
    let done = fill(&store, &on(&hv), &plan, true).await.unwrap();
    assert_eq!((done.made, done.ready, done.reaped), (3, 3, 0));
    let ready: Vec<String> = store
        .ready_list(&plan.shape)
        .into_iter()
        .map(|p| p.domain)
        .collect();
    assert_eq!(ready, hv.domains());
    for domain in &ready {
        let steps: Vec<String> = hv
            .calls()
            .into_iter()
            .filter(|c| c.ends_with(domain.as_str()))
            .collect();
        let want = ["create", "unpause", "agent_published"].map(|s| format!("{s} {domain}"));
        assert_eq!(steps, want);
        assert!(!hv.is_paused(domain), "{domain} waits running");
    }
    // full: a second fill makes nothing
    let again = fill(&store, &on(&hv), &plan, false).await.unwrap();
    assert_eq!((again.made, again.ready), (0, 3));
}

#[tokio::test]
async fn the_pool_holds_no_more_memory_than_it_may() {
    let mut p = plan(10);
    p.max_pool_mib = 100;
    assert_eq!(p.target(), 2);
    let d = tempfile::tempdir().unwrap();
    let (store, hv) = (PoolStore::under(d.path()), FakeHypervisor::default());
    assert_eq!(fill(&store, &on(&hv), &p, true).await.unwrap().ready, 2);
}

#[tokio::test]
async fn a_vm_that_does_not_come_up_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (store, hv, plan) = (
        PoolStore::under(d.path()),
        FakeHypervisor::default(),
        plan(2),
    );
    hv.faults.set("agent_published");
    let e = fill(&store, &on(&hv), &plan, true).await.unwrap_err();
    assert!(matches!(e, PoolError::Vm { .. }), "{e}");
    assert!(hv.domains().is_empty());
    assert!(store.filling_list(&plan.shape).is_empty());
    assert!(store.ready_list(&plan.shape).is_empty());
    let vms = store.shape_dir(&plan.shape).join("vm");
    assert_eq!(fs::read_dir(&vms).map(|d| d.count()).unwrap_or(0), 0);
}

#[tokio::test]
async fn what_a_killed_filler_left_is_destroyed_by_the_next() {
    let d = tempfile::tempdir().unwrap();
    let (store, hv, plan) = (
        PoolStore::under(d.path()),
        FakeHypervisor::default(),
        plan(1),
    );
    let left = half_made(&store, &hv, &plan, 42).await;
    let done = fill(&store, &on(&hv), &plan, false).await.unwrap();
    assert_eq!((done.reaped, done.made, done.ready), (1, 1, 1));
    assert!(!hv.domains().contains(&left.domain));
    assert!(store.filling_list(&plan.shape).is_empty());
}

#[tokio::test]
async fn one_filler_at_a_time() {
    let d = tempfile::tempdir().unwrap();
    let (store, hv, plan) = (
        PoolStore::under(d.path()),
        FakeHypervisor::default(),
        plan(2),
    );
    let held = try_lock(&store, &plan.shape).unwrap().expect("free");
    let done = fill(&store, &on(&hv), &plan, true).await.unwrap();
    assert_eq!(done.skipped, Some("another filler is at work"));
    assert!(hv.domains().is_empty());
    drop(held);
    assert_eq!(fill(&store, &on(&hv), &plan, true).await.unwrap().made, 2);
}

#[tokio::test]
async fn a_drain_destroys_every_pooled_vm_and_stops_refills() {
    let d = tempfile::tempdir().unwrap();
    let (store, hv, plan) = (
        PoolStore::under(d.path()),
        FakeHypervisor::default(),
        plan(3),
    );
    fill(&store, &on(&hv), &plan, true).await.unwrap();
    let half = half_made(&store, &hv, &plan, 7).await;
    assert_eq!(hv.domains().len(), 4);

    assert_eq!(drain(&store, &on(&hv)).await.unwrap(), 4);
    assert!(hv.domains().is_empty(), "{:?}", hv.domains());
    assert!(!hv.domains().contains(&half.domain));
    let state = d.path().join("c");
    fs::create_dir_all(&state).unwrap();
    assert_eq!(store.claim(&plan.shape, &state).unwrap(), None);

    // a container's refill does nothing while drained; an administrator's fill lifts it
    let refill = fill(&store, &on(&hv), &plan, false).await.unwrap();
    assert_eq!(refill.skipped, Some("the pool is drained"));
    assert!(hv.domains().is_empty());
    assert_eq!(fill(&store, &on(&hv), &plan, true).await.unwrap().ready, 3);
    assert!(!drained(&store));
}

#[tokio::test]
async fn a_vm_that_survives_the_drain_is_reported_and_stays_recorded() {
    let d = tempfile::tempdir().unwrap();
    let (store, hv, plan) = (
        PoolStore::under(d.path()),
        FakeHypervisor::default(),
        plan(1),
    );
    fill(&store, &on(&hv), &plan, true).await.unwrap();
    hv.faults.set("destroy");
    let e = drain(&store, &on(&hv)).await.unwrap_err();
    assert!(
        matches!(
            e,
            PoolError::Vm {
                source: VmError::Survived { .. },
                ..
            }
        ),
        "{e}"
    );
    // still named on disk (draining/), never claimable
    let draining = store.root().join("draining");
    assert_eq!(fs::read_dir(draining).unwrap().count(), 1);
    let state = d.path().join("c");
    fs::create_dir_all(&state).unwrap();
    assert_eq!(store.claim(&plan.shape, &state).unwrap(), None);

    // the next drain tries it again
    hv.faults.clear("destroy");
    assert_eq!(drain(&store, &on(&hv)).await.unwrap(), 1);
    assert!(hv.domains().is_empty());
}

#[tokio::test]
async fn a_pod_vm_is_pooled_with_an_empty_share_that_goes_with_it() {
    let d = tempfile::tempdir().unwrap();
    let (store, hv) = (PoolStore::under(d.path()), FakeHypervisor::default());
    let mut plan = plan(2);
    plan.shape.share = true;
    assert_eq!(fill(&store, &on(&hv), &plan, true).await.unwrap().ready, 2);
    let ready = store.ready_list(&plan.shape);
    for p in &ready {
        let share = store.share_of(p).unwrap();
        assert!(share.is_dir() && fs::read_dir(&share).unwrap().next().is_none());
        assert!(hv
            .shares
            .lock()
            .unwrap()
            .contains(&(p.domain.clone(), share)));
    }
    assert_eq!(drain(&store, &on(&hv)).await.unwrap(), 2);
    assert_eq!(fs::read_dir(store.share_root()).unwrap().count(), 0);
}

#[tokio::test]
async fn shares_no_pooled_vm_holds_are_swept_and_no_other() {
    let d = tempfile::tempdir().unwrap();
    let (store, hv) = (PoolStore::under(d.path()), FakeHypervisor::default());
    let mut plan = plan(1);
    plan.shape.share = true;
    let root = store.share_root().to_path_buf();
    // a claimant killed before it renamed its share: the VM is gone
    let gone = root.join(plan.shape.domain_name(1));
    // a filler at work: recorded, its VM not made yet
    let recorded = Pooled {
        domain: plan.shape.domain_name(2),
        shape: plan.shape.clone(),
        running: true,
        upper_disk: None,
    };
    store.begin_fill(&recorded).unwrap();
    // a VM that exists (a claimant about to rename its share)
    let living = plan.shape.domain_name(3);
    hv.add_foreign(&living);
    let not_empty = root.join(plan.shape.domain_name(4));
    for dir in [
        &gone,
        &root.join(&recorded.domain),
        &root.join(&living),
        &not_empty,
        &root.join("not-a-pool-vm"),
    ] {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(not_empty.join("f"), b"").unwrap();
    assert_eq!(sweep_shares(&store, &hv).await, 1);
    assert!(!gone.exists());
    for kept in [
        root.join(&recorded.domain),
        root.join(&living),
        not_empty,
        root.join("not-a-pool-vm"),
    ] {
        assert!(kept.exists(), "{} swept", kept.display());
    }
}

/// The plan with a blank writable layer per VM.
fn with_upper(mut plan: FillPlan) -> FillPlan {
    plan.shape.upper_mib = Some(256);
    plan
}

#[tokio::test]
async fn each_vm_of_a_shape_with_a_writable_layer_has_its_own_attached_and_a_drain_removes_them() {
    let d = tempfile::tempdir().unwrap();
    let (store, hv, plan) = (
        PoolStore::under(d.path()),
        FakeHypervisor::default(),
        with_upper(plan(2)),
    );
    assert_eq!(fill(&store, &on(&hv), &plan, true).await.unwrap().ready, 2);
    let ready = store.ready_list(&plan.shape);
    let mut layers = vec![];
    for p in &ready {
        let layer = store.upper_dir_of(p).unwrap().join("upper.ext4");
        assert_eq!(fs::read_to_string(&layer).unwrap(), "blank 256");
        // the entry names the layer's disk, attached at the VM's create
        assert_eq!(p.upper_disk.as_ref(), Some(&layer));
        assert!(hv.disks().contains(&format!("{} xvdc", p.domain)));
        layers.push(layer);
    }
    assert_ne!(layers[0], layers[1]);
    assert_eq!(drain(&store, &on(&hv)).await.unwrap(), 2);
    assert_eq!(fs::read_dir(store.upper_root()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_vm_whose_writable_layer_cannot_be_made_is_not_made_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (store, hv, plan) = (
        PoolStore::under(d.path()),
        FakeHypervisor::default(),
        with_upper(plan(1)),
    );
    let export = FakeExport::default();
    export.faults.set("blank_upper");
    let pf = Platform {
        hv: &hv,
        exporter: &export,
    };
    let e = fill(&store, &pf, &plan, true).await.unwrap_err();
    assert!(matches!(e, PoolError::Upper(_)), "{e}");
    assert!(hv.domains().is_empty());
    assert!(store.filling_list(&plan.shape).is_empty());
    assert!(store.ready_list(&plan.shape).is_empty());
    assert_eq!(fs::read_dir(store.upper_root()).map_or(0, |d| d.count()), 0);
}

#[tokio::test]
async fn writable_layers_no_pooled_vm_holds_are_swept_with_what_is_in_them() {
    // (which directories are unheld: the shares' sweep test, the same finder)
    let d = tempfile::tempdir().unwrap();
    let (store, hv) = (PoolStore::under(d.path()), FakeHypervisor::default());
    let plan = with_upper(plan(1));
    let root = store.upper_root().to_path_buf();
    // a claimant killed before it took its VM's layer: the VM is gone
    let gone = root.join(plan.shape.domain_name(1));
    // a VM that exists (a claimant about to take its layer)
    let living = root.join(plan.shape.domain_name(3));
    hv.add_foreign(&plan.shape.domain_name(3));
    for dir in [&gone, &living] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("upper.ext4"), b"").unwrap();
    }
    assert_eq!(uppers::sweep(&store, &hv, &*EXPORT).await, 1);
    assert!(!gone.exists());
    assert!(living.join("upper.ext4").exists());
}
