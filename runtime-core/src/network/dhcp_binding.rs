//! A DHCP-mode container's address, bound to its MAC in dom0's DHCP server.
//!
//! vxn leases the address from its own pool (the DHCP range), as it does a
//! static one, and tells dnsmasq: one `dhcp-hostsdir` file per MAC holding
//! `MAC,ADDRESS`. dnsmasq serves the range `static`, so it answers only the
//! MACs it has a file for, each with its one address, and the vif's guard
//! lets that MAC send from that address only: a guest can no longer pick
//! another address of the range, nor have one given to it.
//!
//! Unbinding removes the file, releases dnsmasq's lease of the address (a
//! DHCPRELEASE, as dnsmasq's `dhcp_release` sends, so the next owner of the
//! address is not refused it for the hour the old lease would last), and has
//! dnsmasq re-read its host files (it only adds entries by itself).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::NetworkConfig;
use crate::error::{Error, Result};

use vxn_wire::dhcp::{client_message, OPT_SERVER_ID, RELEASE, SERVER_PORT};

/// Where a lease's binding lives and whom to tell: kept in the lease file,
/// so whoever frees the lease (its Delete or a reaper) undoes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub hosts_file: PathBuf,
    pub bridge: String,
    /// dnsmasq's address on the bridge (the gateway).
    pub server: Ipv4Addr,
}

impl Binding {
    pub fn for_mac(cfg: &NetworkConfig, mac: &str) -> Self {
        Self {
            hosts_file: cfg.dhcp_hosts_dir.join(mac.replace(':', "-")),
            bridge: cfg.bridge.clone(),
            server: cfg.gateway,
        }
    }

    /// Write the host entry (whole: aside, then renamed) and tell dnsmasq.
    pub fn bind(&self, mac: &str, address: Ipv4Addr) -> Result<()> {
        let io = |what: &str, p: &Path, e: std::io::Error| {
            Error::Internal(format!("{what} {}: {e}", p.display()))
        };
        let dir = self
            .hosts_file
            .parent()
            .ok_or_else(|| Error::Internal("a DHCP host file needs a directory".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| io("mkdir", dir, e))?;
        let tmp = dir.join(format!(".tmp-{}", std::process::id()));
        std::fs::write(&tmp, entry(mac, address)).map_err(|e| io("write", &tmp, e))?;
        if let Err(e) = std::fs::rename(&tmp, &self.hosts_file) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("rename", &self.hosts_file, e));
        }
        super::host::reload_dnsmasq(&self.bridge);
        Ok(())
    }

    /// Undo `bind`, if the file still binds this MAC to this address.
    pub fn unbind(&self, mac: &str, address: Ipv4Addr) {
        match std::fs::read_to_string(&self.hosts_file) {
            Ok(s) if s == entry(mac, address) => {
                if let Err(e) = std::fs::remove_file(&self.hosts_file) {
                    tracing::warn!(file = %self.hosts_file.display(), error = %e, "DHCP host entry not removed");
                }
            }
            _ => {}
        }
        if let Err(e) = self.release(mac, address) {
            // dnsmasq may be down; its lease then ends with its lease time.
            tracing::info!(address = %address, error = %e, "DHCP lease not released");
        }
        super::host::reload_dnsmasq(&self.bridge);
    }

    /// Send dnsmasq a DHCPRELEASE for (mac, address) as if from the bridge.
    fn release(&self, mac: &str, address: Ipv4Addr) -> std::io::Result<()> {
        use nix::sys::socket::{setsockopt, sockopt};
        let packet = release_packet(mac, address, self.server)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let sock = std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        // Bound to the bridge, a packet to dom0's own address arrives as if it
        // came in on the bridge: dnsmasq accepts releases only from there.
        setsockopt(
            &sock,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(&self.bridge),
        )?;
        sock.send_to(&packet, SocketAddrV4::new(self.server, SERVER_PORT))?;
        tracing::info!(address = %address, mac, "DHCP lease released");
        Ok(())
    }
}

/// One dnsmasq `dhcp-host` line.
fn entry(mac: &str, address: Ipv4Addr) -> String {
    format!("{mac},{address}\n")
}

/// A DHCPRELEASE of `address` by `mac`, to `server`.
fn release_packet(
    mac: &str,
    address: Ipv4Addr,
    server: Ipv4Addr,
) -> std::result::Result<Vec<u8>, String> {
    let mac = vxn_wire::protocol::parse_mac(mac)?;
    Ok(client_message(
        RELEASE,
        0,
        &mac,
        address,
        false,
        &[(OPT_SERVER_ID, &server.octets())],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(dir: &Path) -> Binding {
        Binding::for_mac(
            &NetworkConfig {
                dhcp_hosts_dir: dir.join("hosts"),
                bridge: "vxn-test-nobr".into(),
                ..NetworkConfig::default()
            },
            "00:16:3e:0a:0b:0c",
        )
    }

    #[test]
    fn bind_writes_one_host_line_per_mac_and_unbind_removes_only_its_own() {
        let d = tempfile::tempdir().unwrap();
        let b = binding(d.path());
        assert_eq!(b.hosts_file, d.path().join("hosts/00-16-3e-0a-0b-0c"));
        let a: Ipv4Addr = "10.0.100.60".parse().unwrap();
        b.bind("00:16:3e:0a:0b:0c", a).unwrap();
        assert_eq!(
            std::fs::read_to_string(&b.hosts_file).unwrap(),
            "00:16:3e:0a:0b:0c,10.0.100.60\n"
        );
        // A late unbind of an older address leaves the current binding alone.
        b.unbind("00:16:3e:0a:0b:0c", "10.0.100.61".parse().unwrap());
        assert!(b.hosts_file.exists());
        b.unbind("00:16:3e:0a:0b:0c", a);
        assert!(!b.hosts_file.exists());
        // Nothing else left in the directory (no temporary file).
        assert_eq!(
            std::fs::read_dir(d.path().join("hosts")).unwrap().count(),
            0
        );
    }

    #[test]
    fn the_release_names_the_client_the_address_and_the_server() {
        let p = release_packet(
            "00:16:3e:0a:0b:0c",
            "10.0.100.60".parse().unwrap(),
            "10.0.100.1".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(&p[..4], &[1, 1, 6, 0]);
        assert_eq!(&p[12..16], &[10, 0, 100, 60]);
        assert_eq!(&p[28..34], &[0x00, 0x16, 0x3e, 0x0a, 0x0b, 0x0c]);
        assert_eq!(&p[236..240], &vxn_wire::dhcp::MAGIC);
        assert_eq!(&p[240..], &[53, 1, 7, 54, 4, 10, 0, 100, 1, 255]);
        assert!(release_packet(
            "not-a-mac",
            "10.0.100.60".parse().unwrap(),
            "10.0.100.1".parse().unwrap()
        )
        .is_err());
    }
}
