//! The DHCPv4 client message (RFC 2131), built the same by both ends: the
//! agent's client asks dom0's DHCP server for its lease, and the host
//! releases a lease it bound for a guest once that guest is gone.

use std::net::Ipv4Addr;

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;
/// The options' magic cookie, right after the fixed 236-byte header.
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;
pub const RELEASE: u8 = 7;
pub const OPT_SUBNET: u8 = 1;
pub const OPT_ROUTER: u8 = 3;
pub const OPT_DNS: u8 = 6;
pub const OPT_REQUESTED_IP: u8 = 50;
pub const OPT_LEASE_TIME: u8 = 51;
pub const OPT_MSG_TYPE: u8 = 53;
pub const OPT_SERVER_ID: u8 = 54;
pub const OPT_PARAMS: u8 = 55;
pub const OPT_RENEWAL: u8 = 58;
pub const OPT_END: u8 = 255;

/// A BOOTREQUEST of message type `kind` from the Ethernet client `mac`, with
/// `ciaddr` and the options in order (each at most 255 bytes). `broadcast`
/// asks the server to broadcast its answer (a client with no address yet).
pub fn client_message(
    kind: u8,
    xid: u32,
    mac: &[u8; 6],
    ciaddr: Ipv4Addr,
    broadcast: bool,
    opts: &[(u8, &[u8])],
) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = 1; // BOOTREQUEST
    b[1] = 1; // Ethernet
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    if broadcast {
        b[10..12].copy_from_slice(&0x8000u16.to_be_bytes());
    }
    b[12..16].copy_from_slice(&ciaddr.octets());
    b[28..34].copy_from_slice(mac);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&[OPT_MSG_TYPE, 1, kind]);
    for (code, value) in opts {
        let value = &value[..value.len().min(255)];
        b.push(*code);
        b.push(value.len() as u8);
        b.extend_from_slice(value);
    }
    b.push(OPT_END);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_names_the_client_its_address_and_the_server() {
        let p = client_message(
            RELEASE,
            0,
            &[0x00, 0x16, 0x3e, 0x0a, 0x0b, 0x0c],
            Ipv4Addr::new(10, 0, 100, 60),
            false,
            &[(OPT_SERVER_ID, &[10, 0, 100, 1])],
        );
        assert_eq!(&p[..4], &[1, 1, 6, 0]);
        assert_eq!(&p[10..16], &[0, 0, 10, 0, 100, 60]);
        assert_eq!(&p[28..34], &[0x00, 0x16, 0x3e, 0x0a, 0x0b, 0x0c]);
        assert_eq!(&p[236..240], &MAGIC);
        assert_eq!(&p[240..], &[53, 1, 7, 54, 4, 10, 0, 100, 1, 255]);
    }

    #[test]
    fn a_discover_asks_for_a_broadcast_answer() {
        let p = client_message(DISCOVER, 7, &[0; 6], Ipv4Addr::UNSPECIFIED, true, &[]);
        assert_eq!(&p[4..8], &[0, 0, 0, 7]);
        assert_eq!(&p[10..12], &[0x80, 0]);
    }
}
