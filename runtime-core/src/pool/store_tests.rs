use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use super::*;
use crate::names::ContainerName;

fn shape(max_memory_mib: u64) -> Shape {
    Shape {
        kernel: "/usr/share/vxn/x86_64/vmlinuz".into(),
        initramfs: "/usr/share/vxn/x86_64/initramfs.cpio.gz".into(),
        cmdline_extra: String::new(),
        boot_memory_mib: 64,
        max_memory_mib,
        max_vcpus: 2,
        share: false,
        upper_mib: None,
    }
}

fn pooled(shape: &Shape, n: u64) -> Pooled {
    Pooled {
        domain: shape.domain_name(n),
        shape: shape.clone(),
        running: true,
        upper_disk: None,
    }
}

/// A booted VM's entry: recorded while made, then ready.
fn add_ready(store: &PoolStore, p: &Pooled) {
    store.begin_fill(p).unwrap();
    store.ready(p).unwrap();
}

#[test]
fn an_empty_pool_has_nothing_to_claim() {
    let d = tempfile::tempdir().unwrap();
    let store = PoolStore::under(d.path());
    let state = d.path().join("c");
    fs::create_dir_all(&state).unwrap();
    assert_eq!(store.claim(&shape(512), &state).unwrap(), None);
    assert!(claimed(&state).is_none());
}

#[test]
fn a_claim_moves_the_entry_into_the_containers_state() {
    let d = tempfile::tempdir().unwrap();
    let store = PoolStore::under(d.path());
    let s = shape(512);
    let p = pooled(&s, 1);
    store.begin_fill(&p).unwrap();
    assert_eq!(store.filling_list(&s), vec![p.clone()]);
    // not claimable while it is being made
    let state = d.path().join("c");
    fs::create_dir_all(&state).unwrap();
    assert_eq!(store.claim(&s, &state).unwrap(), None);
    store.ready(&p).unwrap();
    assert!(store.filling_list(&s).is_empty());
    assert_eq!(store.ready_list(&s), vec![p.clone()]);

    assert_eq!(store.claim(&s, &state).unwrap(), Some(p.clone()));
    assert_eq!(claimed(&state), Some(p));
    assert!(store.ready_list(&s).is_empty());
}

#[test]
fn one_state_directory_holds_one_claim() {
    let d = tempfile::tempdir().unwrap();
    let store = PoolStore::under(d.path());
    let s = shape(512);
    let (a, b) = (pooled(&s, 1), pooled(&s, 2));
    add_ready(&store, &a);
    add_ready(&store, &b);
    let state = d.path().join("c");
    fs::create_dir_all(&state).unwrap();
    assert_eq!(store.claim(&s, &state).unwrap(), Some(a.clone()));
    assert!(store.claim(&s, &state).is_err());
    // the first claim is intact and the other VM still in the pool
    assert_eq!(claimed(&state), Some(a));
    assert_eq!(store.ready_list(&s), vec![b]);
}

#[test]
fn racing_claimants_never_share_a_vm() {
    let d = tempfile::tempdir().unwrap();
    let store = PoolStore::under(d.path());
    let s = shape(512);
    for n in 0..5 {
        add_ready(&store, &pooled(&s, n));
    }
    let claimants = 12;
    let start = Arc::new(Barrier::new(claimants));
    let handles: Vec<_> = (0..claimants)
        .map(|i| {
            let (store, s, start) = (store.clone(), s.clone(), start.clone());
            let state = d.path().join(format!("c{i}"));
            fs::create_dir_all(&state).unwrap();
            std::thread::spawn(move || {
                start.wait();
                store.claim(&s, &state).unwrap()
            })
        })
        .collect();
    let got: Vec<Pooled> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    let domains: HashSet<_> = got.iter().map(|p| p.domain.clone()).collect();
    assert_eq!(got.len(), 5, "every ready VM claimed once: {got:?}");
    assert_eq!(domains.len(), 5, "no VM claimed twice: {got:?}");
    assert!(store.ready_list(&s).is_empty());
}

#[test]
fn a_claim_takes_only_its_own_shape() {
    let d = tempfile::tempdir().unwrap();
    let store = PoolStore::under(d.path());
    let (small, big) = (shape(256), shape(1024));
    assert_ne!(small.key(), big.key());
    let p = pooled(&big, 1);
    add_ready(&store, &p);
    let state = d.path().join("c");
    fs::create_dir_all(&state).unwrap();
    assert_eq!(store.claim(&small, &state).unwrap(), None);
    // an entry copied into another shape's directory is not that shape's VM
    let wrong = store.shape_dir(&small).join("ready");
    fs::create_dir_all(&wrong).unwrap();
    fs::copy(
        store
            .shape_dir(&big)
            .join("ready")
            .join(format!("{}.json", p.domain)),
        wrong.join(format!("{}.json", p.domain)),
    )
    .unwrap();
    assert_eq!(store.claim(&small, &state).unwrap(), None);
    assert_eq!(store.claim(&big, &state).unwrap(), Some(p));
}

#[test]
fn what_is_not_an_entry_is_never_claimed() {
    let d = tempfile::tempdir().unwrap();
    let store = PoolStore::under(d.path());
    let s = shape(512);
    let ready = store.shape_dir(&s).join("ready");
    fs::create_dir_all(&ready).unwrap();
    let real = pooled(&s, 7);
    let body = serde_json::to_vec(&real).unwrap();
    // named after another domain than it records
    fs::write(ready.join(format!("{}.json", s.domain_name(8))), &body).unwrap();
    // a container's domain instead of a pool VM's
    let tenant = Pooled {
        domain: ContainerName::new("default", "web").unwrap().domain(),
        shape: s.clone(),
        running: true,
        upper_disk: None,
    };
    fs::write(
        ready.join(format!("{}.json", tenant.domain)),
        serde_json::to_vec(&tenant).unwrap(),
    )
    .unwrap();
    // a symlink to a real entry elsewhere, an oversized file, garbage
    let elsewhere = d.path().join("elsewhere.json");
    fs::write(&elsewhere, &body).unwrap();
    std::os::unix::fs::symlink(&elsewhere, ready.join(format!("{}.json", real.domain))).unwrap();
    fs::write(ready.join("big.json"), vec![b' '; 8192]).unwrap();
    fs::write(ready.join("x.json"), b"{").unwrap();
    let state = d.path().join("c");
    fs::create_dir_all(&state).unwrap();
    assert_eq!(store.claim(&s, &state).unwrap(), None);
    assert!(store.ready_list(&s).is_empty());
    assert!(matches!(
        store.begin_fill(&tenant),
        Err(PoolStoreError::BadName(_))
    ));
}

#[test]
fn a_drain_takes_every_shape_and_leaves_nothing_to_claim() {
    let d = tempfile::tempdir().unwrap();
    let store = PoolStore::under(d.path());
    let (a, b) = (shape(256), shape(1024));
    for n in 0..3 {
        add_ready(&store, &pooled(&a, n));
    }
    add_ready(&store, &pooled(&b, 9));
    let taken = store.take_all(&d.path().join("draining")).unwrap();
    assert_eq!(taken.len(), 4);
    let state = d.path().join("c");
    fs::create_dir_all(&state).unwrap();
    assert_eq!(store.claim(&a, &state).unwrap(), None);
    assert_eq!(store.claim(&b, &state).unwrap(), None);
}

#[test]
fn pool_names_are_never_a_containers() {
    let s = shape(512);
    let name = s.domain_name(u64::MAX);
    assert!(name.starts_with(POOL_DOMAIN_PREFIX));
    assert!(name.len() <= MAX_DOMAIN_NAME, "{name}");
    for ns in ["a", "pool", "-pool", "_pool", "9"] {
        if let Ok(c) = ContainerName::new(ns, "x") {
            assert!(!c.domain().starts_with(POOL_DOMAIN_PREFIX), "{ns}");
        }
    }
    assert!(s.fits(512, 2));
    assert!(!s.fits(513, 1));
    assert!(!s.fits(128, 3));
    assert!(!s.fits(128, 0));
}

#[test]
fn a_forgotten_fill_is_gone() {
    let d = tempfile::tempdir().unwrap();
    let store = PoolStore::under(d.path());
    let s = shape(512);
    let p = pooled(&s, 3);
    store.begin_fill(&p).unwrap();
    store.forget_fill(&p);
    assert!(store.filling_list(&s).is_empty());
    assert!(store.ready(&p).is_err());
}
