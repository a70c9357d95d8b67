//! dom0's side of the container network: the bridge with the gateway
//! address, forwarding and NAT to the uplink (an nftables table of our own;
//! on a Docker host also two rules in Docker's `DOCKER-USER` chain, see
//! `docker_user`), and dnsmasq as the containers' DNS forwarder and, where
//! wanted, DHCP server. `vxnctl network up` / `down` / `status`; every step is
//! idempotent, so `up` also repairs a half-made setup.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{docker_user, NetworkConfig};
use crate::command;
use crate::error::{Error, Result};

const TIMEOUT: Duration = Duration::from_secs(20);
/// Our nftables table: created whole, deleted whole, never mixed with others'.
const NFT_TABLE: &str = "vxn";
const RUN_DIR: &str = "/run/vxn-network";

#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Also serve DHCP on the bridge (`[network] mode = "dhcp"` needs it).
    pub dhcp: bool,
    /// Masquerade the containers' traffic to the outside (default on).
    pub no_nat: bool,
}

fn pid_file(bridge: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("dnsmasq-{bridge}.pid"))
}

async fn run(program: &str, args: &[&str]) -> Result<String> {
    command::run(program, args, TIMEOUT)
        .await
        .map(|o| o.stdout)
        .map_err(|e| Error::FailedPrecondition(e.to_string()))
}

fn bridge_exists(bridge: &str) -> bool {
    Path::new("/sys/class/net")
        .join(bridge)
        .join("bridge")
        .is_dir()
}

/// The vifs on the bridge now (containers using it).
pub fn ports(bridge: &str) -> Vec<String> {
    std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn nft_script(cfg: &NetworkConfig) -> Result<String> {
    let net = cfg.subnet().map_err(Error::InvalidArgument)?;
    let br = &cfg.bridge;
    let mut s = String::new();
    // "add" then "delete" makes the delete succeed whether or not it existed.
    let _ = writeln!(s, "add table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}");
    let _ = writeln!(s, "table ip {NFT_TABLE} {{");
    let _ = writeln!(
        s,
        "  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n    \
         ip saddr {}/{} oifname != \"{br}\" masquerade\n  }}",
        net.base, net.prefix_len
    );
    let _ = writeln!(
        s,
        "  chain forward {{ type filter hook forward priority filter; policy accept;\n    \
         iifname \"{br}\" accept\n    oifname \"{br}\" ct state established,related accept\n  }}"
    );
    s.push_str("}\n");
    Ok(s)
}

fn dnsmasq_pid(bridge: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(bridge))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "dnsmasq").then_some(pid)
}

async fn dnsmasq_running(bridge: &str) -> Option<u32> {
    dnsmasq_pid(bridge)
}

/// Have the bridge's dnsmasq re-read its DHCP host files (SIGHUP): it picks
/// up new ones by itself, but forgets a removed one only when told.
pub fn reload_dnsmasq(bridge: &str) {
    if let Some(pid) = dnsmasq_pid(bridge) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        );
    }
}

async fn stop_dnsmasq(bridge: &str) {
    if let Some(pid) = dnsmasq_running(bridge).await {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..50 {
            if dnsmasq_running(bridge).await.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _ = std::fs::remove_file(pid_file(bridge));
}

/// Make (or repair) the bridge, NAT and dnsmasq; returns what it did.
pub async fn up(cfg: &NetworkConfig, opts: &UpOptions) -> Result<Vec<String>> {
    cfg.validate().map_err(Error::InvalidArgument)?;
    let net = cfg.subnet().map_err(Error::InvalidArgument)?;
    let br = cfg.bridge.as_str();
    let mut done = Vec::new();
    if !bridge_exists(br) {
        run("ip", &["link", "add", "name", br, "type", "bridge"]).await?;
        done.push(format!("created bridge {br}"));
    }
    let gw = format!("{}/{}", cfg.gateway, net.prefix_len);
    run("ip", &["addr", "replace", &gw, "dev", br]).await?;
    run("ip", &["link", "set", br, "up"]).await?;
    done.push(format!("{br} is up with {gw}"));
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| Error::FailedPrecondition(format!("enable IPv4 forwarding: {e}")))?;
    if let Some(m) = docker_user::allow_bridge(br).await.map_err(|e| {
        Error::FailedPrecondition(format!("allow {br} in Docker's FORWARD chain: {e}"))
    })? {
        done.push(m);
    }
    if opts.no_nat {
        let _ = run("nft", &["delete", "table", "ip", NFT_TABLE]).await;
    } else {
        std::fs::create_dir_all(RUN_DIR)
            .map_err(|e| Error::Internal(format!("mkdir {RUN_DIR}: {e}")))?;
        let script = Path::new(RUN_DIR).join("nat.nft");
        std::fs::write(&script, nft_script(cfg)?)
            .map_err(|e| Error::Internal(format!("write {}: {e}", script.display())))?;
        run("nft", &["-f", &script.to_string_lossy()]).await?;
        done.push(format!(
            "NAT for {}/{} (nftables table ip {NFT_TABLE})",
            net.base, net.prefix_len
        ));
    }
    // dnsmasq is restarted so its options always match the config.
    stop_dnsmasq(br).await;
    let serves_dns = cfg.dns.contains(&std::net::IpAddr::V4(cfg.gateway));
    if serves_dns || opts.dhcp {
        std::fs::create_dir_all(RUN_DIR)
            .map_err(|e| Error::Internal(format!("mkdir {RUN_DIR}: {e}")))?;
        let mut args = vec![
            format!("--interface={br}"),
            "--bind-interfaces".into(),
            "--except-interface=lo".into(),
            format!("--listen-address={}", cfg.gateway),
            format!("--pid-file={}", pid_file(br).display()),
            "--conf-file=/dev/null".into(),
        ];
        if opts.dhcp {
            args.extend(dhcp_args(cfg, net.prefix_len)?);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        run("dnsmasq", &argv).await.map_err(|e| {
            Error::FailedPrecondition(format!(
                "{e} (DNS for containers on {} needs dnsmasq: apt-get install dnsmasq-base, \
                 or set [network] dns to reachable servers)",
                cfg.gateway
            ))
        })?;
        done.push(format!(
            "dnsmasq on {}: DNS{}",
            cfg.gateway,
            if opts.dhcp {
                format!(", DHCP {}-{}", cfg.dhcp_start, cfg.dhcp_end)
            } else {
                String::new()
            }
        ));
    }
    Ok(done)
}

/// dnsmasq's DHCP options: the range served `static`, to the MACs vxn bound
/// to an address of it (a host file each, see `dhcp_binding`) and no others.
fn dhcp_args(cfg: &NetworkConfig, prefix_len: u8) -> Result<Vec<String>> {
    let dir = &cfg.dhcp_hosts_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("mkdir {}: {e}", dir.display())))?;
    let mask = std::net::Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0),
    );
    let br = &cfg.bridge;
    Ok(vec![
        format!("--dhcp-range={},static,{mask},1h", cfg.dhcp_start),
        format!("--dhcp-hostsdir={}", dir.display()),
        format!("--dhcp-option=option:router,{}", cfg.gateway),
        format!("--dhcp-leasefile={RUN_DIR}/dnsmasq-{br}.leases"),
    ])
}

/// Remove what `up` made. Refused while containers are attached, unless forced.
pub async fn down(cfg: &NetworkConfig, force: bool) -> Result<Vec<String>> {
    let br = cfg.bridge.as_str();
    let attached = ports(br);
    if !attached.is_empty() && !force {
        return Err(Error::FailedPrecondition(format!(
            "{} container interface(s) are still on {br} ({}): delete those containers first, or use --force",
            attached.len(),
            attached.join(" ")
        )));
    }
    let mut done = Vec::new();
    stop_dnsmasq(br).await;
    if run("nft", &["delete", "table", "ip", NFT_TABLE])
        .await
        .is_ok()
    {
        done.push(format!("removed nftables table ip {NFT_TABLE}"));
    }
    match docker_user::remove_bridge(br).await {
        Ok(true) => done.push(format!("removed {br}'s rules from Docker's FORWARD chain")),
        Ok(false) => {}
        Err(e) => {
            return Err(Error::FailedPrecondition(format!(
                "remove {br}'s rules from Docker's FORWARD chain: {e}"
            )))
        }
    }
    if bridge_exists(br) {
        run("ip", &["link", "del", br]).await?;
        done.push(format!("removed bridge {br}"));
    }
    Ok(done)
}

/// One line per fact, for `vxnctl network status`.
pub async fn status(cfg: &NetworkConfig) -> Vec<String> {
    let br = cfg.bridge.as_str();
    let mut s = vec![format!("mode: {:?}", cfg.mode).to_lowercase()];
    if !bridge_exists(br) {
        s.push(format!("bridge {br}: missing (vxnctl network up)"));
        return s;
    }
    let ports = ports(br);
    s.push(format!(
        "bridge {br}: present, {} container interface(s)",
        ports.len()
    ));
    let nat = run("nft", &["list", "table", "ip", NFT_TABLE])
        .await
        .is_ok();
    s.push(format!("NAT: {}", if nat { "on" } else { "off" }));
    s.extend(docker_user::status(br).await);
    s.push(match dnsmasq_running(br).await {
        Some(pid) => format!("dnsmasq: running (pid {pid})"),
        None => "dnsmasq: not running".into(),
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_is_served_only_to_the_macs_vxn_bound() {
        let d = tempfile::tempdir().unwrap();
        let cfg = NetworkConfig {
            dhcp_hosts_dir: d.path().join("hosts"),
            ..NetworkConfig::default()
        };
        let a = dhcp_args(&cfg, 24).unwrap();
        assert_eq!(a[0], "--dhcp-range=10.0.100.50,static,255.255.255.0,1h");
        assert_eq!(
            a[1],
            format!("--dhcp-hostsdir={}", d.path().join("hosts").display())
        );
        assert!(d.path().join("hosts").is_dir());
    }

    #[test]
    fn nat_table_is_ours_and_replaced_whole() {
        let s = nft_script(&NetworkConfig::default()).unwrap();
        assert!(s.starts_with("add table ip vxn\ndelete table ip vxn\n"));
        assert!(s.contains("ip saddr 10.0.100.0/24 oifname != \"xenbr0\" masquerade"));
    }
}
