use std::sync::Arc;

use super::*;
use crate::fake::FakeHypervisor;
use crate::persist::{Record, StateDir};

struct Pool {
    cfg: NetworkConfig,
    states: tempfile::TempDir,
    _leases: tempfile::TempDir,
    hv: FakeHypervisor,
}

fn pool(start: u8, end: u8) -> Pool {
    let leases = tempfile::tempdir().unwrap();
    Pool {
        cfg: NetworkConfig {
            range_start: Ipv4Addr::new(10, 0, 100, start),
            range_end: Ipv4Addr::new(10, 0, 100, end),
            lease_dir: leases.path().join("leases"),
            dhcp_hosts_dir: leases.path().join("dhcp-hosts"),
            // no such bridge and no dnsmasq: binding touches files only
            bridge: "vxn-test-nobr".into(),
            ..NetworkConfig::default()
        },
        states: tempfile::tempdir().unwrap(),
        _leases: leases,
        hv: FakeHypervisor::default(),
    }
}

impl Pool {
    /// A container's state dir and a lease for it, recorded as create does.
    async fn take(
        &self,
        id: &str,
        address: Option<Ipv4Addr>,
    ) -> Result<Option<(HeldLease, StateDir)>> {
        self.take_mode(id, address, false).await.map(Some)
    }

    async fn take_mode(
        &self,
        id: &str,
        address: Option<Ipv4Addr>,
        dhcp: bool,
    ) -> Result<(HeldLease, StateDir)> {
        let name = ContainerName::new("default", id).unwrap();
        let state = StateDir::create(self.states.path(), &name).unwrap();
        let domain = name.domain();
        let got = acquire(
            &self.cfg,
            Want {
                name: &name,
                domain: &domain,
                state: state.path(),
                owner_lease: crate::persist::recorded_lease,
                address,
                dhcp,
            },
            &self.hv,
            |l| {
                state.save(&Record {
                    domain: Some(domain.clone()),
                    lease: Some(l.clone()),
                    ..Record::default()
                })
            },
        )
        .await;
        match got {
            Ok(l) => Ok((l, state)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(state.path());
                Err(e)
            }
        }
    }

    /// The dnsmasq host lines vxn has written.
    fn dhcp_hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.cfg.dhcp_hosts_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 100, last)
}

#[tokio::test]
async fn first_free_addresses_distinct_macs_and_release() {
    let p = pool(201, 254);
    let (a, sa) = p.take("a", None).await.unwrap().unwrap();
    let (b, _sb) = p.take("b", None).await.unwrap().unwrap();
    assert_eq!((a.record.address, b.record.address), (ip(201), ip(202)));
    assert_ne!(a.record.mac, b.record.mac);
    let on_disk = read_lease(&p.cfg.lease_dir.join("10.0.100.201")).unwrap();
    assert_eq!(
        (on_disk.id.as_str(), on_disk.mac.as_str()),
        ("a", a.record.mac.as_str())
    );
    let rec = a.abandon();
    release(&rec, sa.path()).await.unwrap();
    assert!(!p.cfg.lease_dir.join("10.0.100.201").exists());
    // The freed address is the first free one again.
    let (c, _sc) = p.take("c", None).await.unwrap().unwrap();
    assert_eq!(c.record.address, ip(201));
}

#[tokio::test]
async fn a_requested_address_is_honoured_once() {
    let p = pool(201, 254);
    let (a, _s) = p.take("a", Some(ip(230))).await.unwrap().unwrap();
    assert_eq!(a.record.address, ip(230));
    let e = p.take("b", Some(ip(230))).await.err().unwrap();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    assert!(e.to_string().contains("by default/a"), "{e}");
}

#[tokio::test]
async fn an_exhausted_pool_is_a_clear_error_or_dhcp() {
    let mut p = pool(201, 202);
    let _a = p.take("a", None).await.unwrap().unwrap();
    let _b = p.take("b", None).await.unwrap().unwrap();
    let e = p.take("c", None).await.err().unwrap();
    assert!(matches!(e, Error::ResourceExhausted(_)), "{e}");
    assert!(e.to_string().contains("10.0.100.201-10.0.100.202"), "{e}");
    // The fallback leases from the DHCP range, bound in dnsmasq like any DHCP lease.
    p.cfg.dhcp_when_exhausted = true;
    let (d, _s) = p.take("d", None).await.unwrap().unwrap();
    assert_eq!((d.record.address, d.record.dhcp), (ip(50), true));
    assert_eq!(p.dhcp_hosts(), [format!("{},10.0.100.50\n", d.record.mac)]);
}

#[tokio::test]
async fn a_dhcp_lease_is_one_address_of_the_dhcp_range_bound_to_its_mac() {
    let mut p = pool(201, 254);
    p.cfg.dhcp_start = ip(50);
    p.cfg.dhcp_end = ip(51);
    let (a, sa) = p.take_mode("a", None, true).await.unwrap();
    let (b, _sb) = p.take_mode("b", None, true).await.unwrap();
    assert_eq!((a.record.address, b.record.address), (ip(50), ip(51)));
    assert!(a.record.dhcp && b.record.dhcp);
    let mut want = vec![
        format!("{},10.0.100.50\n", a.record.mac),
        format!("{},10.0.100.51\n", b.record.mac),
    ];
    want.sort();
    assert_eq!(p.dhcp_hosts(), want);
    // The DHCP range is exhausted on its own, whatever the static pool holds.
    let e = p.take_mode("c", None, true).await.err().unwrap();
    assert!(matches!(e, Error::ResourceExhausted(_)), "{e}");
    assert!(
        e.to_string().contains("DHCP range 10.0.100.50-10.0.100.51"),
        "{e}"
    );
    // Released: the address and its binding go together.
    let rec = a.abandon();
    release(&rec, sa.path()).await.unwrap();
    assert_eq!(p.dhcp_hosts(), [format!("{},10.0.100.51\n", b.record.mac)]);
    // A reaped one too (its shim and its domain gone).
    let rec = b.abandon();
    let (c, _sc) = p.take_mode("c", None, true).await.unwrap();
    assert_eq!(c.record.address, ip(50));
    assert_ne!(rec.address, c.record.address);
    let (d, _sd) = p.take_mode("d", None, true).await.unwrap();
    assert_eq!(d.record.address, ip(51));
    let mut want = vec![
        format!("{},10.0.100.50\n", c.record.mac),
        format!("{},10.0.100.51\n", d.record.mac),
    ];
    want.sort();
    assert_eq!(p.dhcp_hosts(), want);
}

#[tokio::test]
async fn only_leases_nobody_holds_are_reaped() {
    let p = pool(201, 204);
    // Held by a live owner: never reaped, whatever else is true.
    let (_held, _s1) = p.take("held", None).await.unwrap().unwrap();
    // Owner's shim died; its state still names the lease; the domain runs: kept.
    let (l, _s2) = p.take("running", None).await.unwrap().unwrap();
    let running = l.abandon();
    p.hv.add_foreign(&ContainerName::new("default", "running").unwrap().domain());
    // Owner's shim died and so did its domain: reaped.
    let (l, _s3) = p.take("dead", None).await.unwrap().unwrap();
    let dead = l.abandon();
    // Owner's state is gone (deleted without releasing): reaped.
    let (l, s4) = p.take("gone", None).await.unwrap().unwrap();
    let gone = l.abandon();
    std::fs::remove_dir_all(s4.path()).unwrap();

    let (next, _s5) = p.take("next", None).await.unwrap().unwrap();
    let left: Vec<Ipv4Addr> = list(&p.cfg.lease_dir)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert!(
        left.contains(&ip(201)) && left.contains(&running.address),
        "{left:?}"
    );
    assert!(!left.contains(&gone.address) || next.record.address == gone.address);
    assert!(next.record.address == dead.address || next.record.address == gone.address);
    assert_eq!(left.len(), 3, "{left:?}");
}

#[tokio::test]
async fn release_never_frees_another_owners_lease() {
    let p = pool(201, 201);
    let (l, s1) = p.take("first", None).await.unwrap().unwrap();
    let first = l.abandon();
    std::fs::remove_dir_all(s1.path()).unwrap(); // reapable now
    let (_second, _s2) = p.take("second", None).await.unwrap().unwrap();
    // The first container's late Delete must not free the second's address.
    release(&first, s1.path()).await.unwrap();
    assert!(p.cfg.lease_dir.join("10.0.100.201").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_share_an_address() {
    let p = Arc::new(pool(201, 254));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move { p.take(&format!("c{i}"), None).await.unwrap().unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let mut addrs: Vec<Ipv4Addr> = got.iter().map(|(l, _)| l.record.address).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20);
    let mut macs: Vec<&str> = got.iter().map(|(l, _)| l.record.mac.as_str()).collect();
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), 20);
}

#[tokio::test]
async fn a_lost_record_finds_its_lease_by_owner() {
    let p = pool(201, 254);
    let (l, s) = p.take("lost", None).await.unwrap().unwrap();
    let rec = l.abandon();
    assert_eq!(owned_by(&p.cfg.lease_dir, s.path()), Some(rec.clone()));
    release(&rec, s.path()).await.unwrap();
    assert_eq!(owned_by(&p.cfg.lease_dir, s.path()), None);
}
