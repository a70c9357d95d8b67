//! SetupNetwork against a real kernel: the test agent lives in its own
//! network namespace, and a veth pair stands in for the Xen vif (its guest
//! end carries the MAC the host chose). Needs root and `ip` (iproute2).

mod common;

use std::process::Command;

use common::*;
use vxn_wire::protocol::{Dns, Interface, NetworkSetup, Route};

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A veth pair: `host` stays here with `host_addr`, the other end goes into
/// the agent's namespace under a kernel-chosen name with `mac`.
struct Veth {
    host: String,
}

impl Veth {
    fn new(tag: &str, agent_pid: u32, mac: &str, host_addr: &str) -> Self {
        let host = format!("vxh{tag}{}", std::process::id() % 100_000);
        let guest = format!("vxg{tag}{}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["link", "del", &host]).output();
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", &guest, "address", mac,
        ]);
        ip(&["link", "set", &guest, "netns", &agent_pid.to_string()]);
        ip(&["addr", "add", host_addr, "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        Self { host }
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
    }
}

/// A test agent with a veth whose guest end has `mac`; the host end is
/// `10.<octet>.<n>.1/24`, n from the pid (tests of several runs do not meet).
async fn agent_on_link(tag: &str, mac: &str, octet: u8) -> Option<(TestAgent, Veth, u32)> {
    if !require_root() {
        return None;
    }
    let agent = start_agent().await;
    let n = 100 + std::process::id() % 100;
    let veth = Veth::new(tag, agent.child.id(), mac, &format!("10.{octet}.{n}.1/24"));
    Some((agent, veth, n))
}

#[tokio::test]
async fn static_address_route_and_container_files() {
    let mac = "00:16:3e:7a:00:01";
    let Some((agent, veth, n)) = agent_on_link("s", mac, 231).await else {
        return;
    };
    let state = agent
        .client
        .setup_network(NetworkSetup {
            interfaces: vec![Interface {
                mac: mac.into(),
                name: "eth0".into(),
                mtu: Some(1400),
                addresses: vec![format!("10.231.{n}.201/24").parse().unwrap()],
                dhcp: false,
            }],
            routes: vec![Route {
                destination: None,
                gateway: Some(format!("10.231.{n}.1").parse().unwrap()),
                interface: Some("eth0".into()),
            }],
            dns: Dns {
                servers: vec![format!("10.231.{n}.1").parse().unwrap()],
                search: vec!["vxn.test".into()],
                options: vec![],
            },
            dns_relay: None,
        })
        .await
        .expect("setup network");
    assert_eq!(state.addresses[0].to_string(), format!("10.231.{n}.201/24"));

    // The host reaches the guest on its address.
    let ping = Command::new(BUSYBOX)
        .args(["ping", "-c", "1", "-W", "3", &format!("10.231.{n}.201")])
        .output()
        .unwrap();
    assert!(ping.status.success(), "ping from the host: {ping:?}");

    // A container sees eth0 with its address, MTU and default route, its
    // hostname (the id: the spec has none) and the network's /etc files.
    let mut p = spec(&[
        "/bin/sh",
        "-c",
        "ip -o -4 addr show eth0; cat /sys/class/net/eth0/mtu; ip route; hostname; \
         cat /etc/resolv.conf /etc/hosts /etc/hostname; ping -c 1 -W 3 $GW >/dev/null && echo gw-ok",
    ]);
    p.env.push(format!("GW=10.231.{n}.1"));
    let mut io = agent
        .client
        .open_stdio(vxn_runtime_core::StdioRequest {
            stdin: false,
            stdout: true,
            stderr: true,
            terminal: false,
        })
        .unwrap();
    agent
        .client
        .create_container(vxn_wire::protocol::CreateContainer {
            container_id: "net1".into(),
            hostname: None,
            rootfs: vxn_wire::protocol::RootfsSource::Directory {
                path: agent.rootfs.path().to_string_lossy().into(),
            },
            readonly_rootfs: false,
            mounts: vxn_wire::protocol::MountSpec::defaults(),
            process: p,
            stdio: io.0,
            memory_limit_bytes: None,
            isolation: Default::default(),
        })
        .await
        .expect("create");
    agent.client.start("net1", None).await.expect("start");
    let (out, err) = tokio::join!(collect(io.1.stdout.take()), collect(io.1.stderr.take()));
    let status = agent.client.wait("net1", None).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status.code, 0, "{out}\n{}", String::from_utf8_lossy(&err));
    assert!(out.contains(&format!("inet 10.231.{n}.201/24")), "{out}");
    assert!(out.contains("1400\n"), "{out}");
    assert!(
        out.contains(&format!("default via 10.231.{n}.1 dev eth0")),
        "{out}"
    );
    assert!(out.contains("\nnet1\n"), "hostname: {out}");
    assert!(
        out.contains(&format!("nameserver 10.231.{n}.1\nsearch vxn.test\n")),
        "{out}"
    );
    assert!(out.contains(&format!("10.231.{n}.201\tnet1\n")), "{out}");
    assert!(out.contains("gw-ok"), "{out}");

    // Once per VM.
    let again = agent.client.setup_network(NetworkSetup::default()).await;
    assert!(again.is_err());
    drop(veth);
}

#[tokio::test]
async fn dhcp_lease_from_a_server_on_the_link() {
    let mac = "00:16:3e:7a:00:02";
    let Some((agent, veth, n)) = agent_on_link("d", mac, 232).await else {
        return;
    };
    let conf = tempfile::NamedTempFile::new().unwrap();
    let leases = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        conf.path(),
        format!(
            "start 10.232.{n}.50\nend 10.232.{n}.60\ninterface {}\nlease_file {}\n\
             option subnet 255.255.255.0\noption router 10.232.{n}.1\noption dns 10.232.{n}.1\noption lease 600\n",
            veth.host,
            leases.path().display()
        ),
    )
    .unwrap();
    let mut server = Command::new(BUSYBOX)
        .args(["udhcpd", "-f"])
        .arg(conf.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = agent
        .client
        .setup_network(NetworkSetup {
            interfaces: vec![Interface {
                mac: mac.into(),
                name: "eth0".into(),
                mtu: None,
                addresses: vec![],
                dhcp: true,
            }],
            routes: vec![],
            dns: Dns::default(),
            dns_relay: None,
        })
        .await;
    let _ = server.kill();
    let _ = server.wait();
    let state = state.expect("a DHCP lease");
    let a = state.addresses[0];
    assert!(a.to_string().starts_with(&format!("10.232.{n}.")), "{a}");
    assert_eq!(a.prefix_len, 24);
    assert_eq!(state.gateway.unwrap().to_string(), format!("10.232.{n}.1"));
    assert_eq!(state.dns.servers[0].to_string(), format!("10.232.{n}.1"));
    let ping = Command::new(BUSYBOX)
        .args(["ping", "-c", "1", "-W", "3", &a.address.to_string()])
        .output()
        .unwrap();
    assert!(ping.status.success(), "ping the leased address: {ping:?}");
}

#[tokio::test]
async fn a_missing_device_is_a_clear_error() {
    if !require_root() {
        return;
    }
    let agent = start_agent().await;
    let t = std::time::Instant::now();
    let e = agent
        .client
        .setup_network(NetworkSetup {
            interfaces: vec![Interface {
                mac: "00:16:3e:7a:00:03".into(),
                name: "eth0".into(),
                mtu: None,
                addresses: vec!["10.233.0.2/24".parse().unwrap()],
                dhcp: false,
            }],
            ..NetworkSetup::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no network device with MAC 00:16:3e:7a:00:03"),
        "{e}"
    );
    assert!(t.elapsed().as_secs() < 60);
}

/// A network connected later (`docker network connect`): a second device
/// appears in the running guest and is set up beside the first, which is
/// left as it was; a name the guest uses is refused, as is DHCP.
#[tokio::test]
async fn an_interface_added_later_is_set_up_beside_the_first() {
    let (mac0, mac1) = ("00:16:3e:7a:00:11", "00:16:3e:7a:00:12");
    let Some((agent, veth0, n)) = agent_on_link("a", mac0, 233).await else {
        return;
    };
    let iface = |mac: &str, name: &str, address: String| Interface {
        mac: mac.into(),
        name: name.into(),
        mtu: None,
        addresses: vec![address.parse().unwrap()],
        dhcp: false,
    };
    agent
        .client
        .setup_network(NetworkSetup {
            interfaces: vec![iface(mac0, "eth0", format!("10.233.{n}.201/24"))],
            ..Default::default()
        })
        .await
        .expect("setup network");
    let veth1 = Veth::new("b", agent.child.id(), mac1, &format!("10.234.{n}.1/24"));
    let taken = agent
        .client
        .add_interfaces(NetworkSetup {
            interfaces: vec![iface(mac1, "eth0", format!("10.234.{n}.201/24"))],
            ..Default::default()
        })
        .await;
    assert!(taken.is_err(), "eth0 taken twice: {taken:?}");
    let mut dhcp = iface(mac1, "eth1", format!("10.234.{n}.201/24"));
    dhcp.dhcp = true;
    let refused = agent
        .client
        .add_interfaces(NetworkSetup {
            interfaces: vec![dhcp],
            ..Default::default()
        })
        .await;
    assert!(refused.is_err(), "DHCP on an added interface: {refused:?}");
    let added = agent
        .client
        .add_interfaces(NetworkSetup {
            interfaces: vec![iface(mac1, "eth1", format!("10.234.{n}.201/24"))],
            routes: vec![Route {
                destination: Some(format!("10.235.{n}.0/24").parse().unwrap()),
                gateway: Some(format!("10.234.{n}.1").parse().unwrap()),
                interface: Some("eth1".into()),
            }],
            ..Default::default()
        })
        .await
        .expect("add eth1");
    assert_eq!(added.addresses[0].to_string(), format!("10.234.{n}.201/24"));
    // Both networks reach the guest.
    for a in [format!("10.233.{n}.201"), format!("10.234.{n}.201")] {
        let ping = Command::new(BUSYBOX)
            .args(["ping", "-c", "1", "-W", "3", &a])
            .output()
            .unwrap();
        assert!(ping.status.success(), "ping {a}: {ping:?}");
    }
    drop((veth0, veth1));
}
