//! The BFD Echo function (RFC 5880 §6.4, RFC 5881 §4) for single-hop IPv4 sessions: what
//! goes on the wire and how the path is found.
//!
//! An Echo packet is a UDP datagram to port 3785 whose source and destination are our own
//! address, sent in an Ethernet frame to the **peer's MAC**: the peer's forwarding plane
//! routes it straight back to us, so only the path (both interfaces, the link and the
//! peer's forwarding) is tested, not the peer's BFD process. This is what FRR's bfdd sends
//! and expects on Linux. The kernel would deliver a datagram to our own address locally,
//! and drops one that comes back from the wire with a local source ("martian"), so both
//! directions go through a packet socket ([`super::socket::EchoLink`]).
//!
//! The payload is a local matter (RFC 5880 §6.4): a version, our discriminator (to find the
//! session) and a sequence number. A returned packet has been forwarded exactly once: TTL
//! 254. Pure functions here; the runtime does the I/O.
use std::net::{IpAddr, Ipv4Addr};

/// UDP port of Echo packets (RFC 5881 §4), source and destination.
pub const ECHO_PORT: u16 = 3785;
/// The TTL our Echo packets leave with, and the one they come back with.
pub const SEND_TTL: u8 = 255;
pub const RETURN_TTL: u8 = 254;
const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 16;
const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// The whole frame we send.
pub const FRAME_LEN: usize = ETH_LEN + IP_LEN + UDP_LEN + PAYLOAD_LEN;

/// Where a session's Echo packets go: out of interface `ifindex` (MAC `local_mac`), to the
/// peer's MAC, from and to `local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoPath {
    pub ifindex: usize,
    pub interface_mac: [u8; 6],
    pub peer_mac: [u8; 6],
    pub local: Ipv4Addr,
}

/// What a returned Echo packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Returned {
    /// The address it was sent from and to (ours).
    pub local: Ipv4Addr,
    pub discriminator: u32,
    pub sequence: u64,
}

/// The Ethernet frame of one Echo packet.
pub fn frame(path: &EchoPath, discriminator: u32, sequence: u64, ip_id: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_LEN);
    f.extend_from_slice(&path.peer_mac);
    f.extend_from_slice(&path.interface_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (IP_LEN + UDP_LEN + PAYLOAD_LEN) as u16;
    let src = path.local.octets();
    let mut ip = [0u8; IP_LEN];
    ip[0] = 0x45;
    ip[1] = 0xc0; // DSCP CS6 (network control), as FRR sends
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[6] = 0x40; // Don't Fragment
    ip[8] = SEND_TTL;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&src);
    let sum = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = Vec::with_capacity(UDP_LEN + PAYLOAD_LEN);
    udp.extend_from_slice(&ECHO_PORT.to_be_bytes());
    udp.extend_from_slice(&ECHO_PORT.to_be_bytes());
    udp.extend_from_slice(&((UDP_LEN + PAYLOAD_LEN) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.push(VERSION);
    udp.push(PAYLOAD_LEN as u8);
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&discriminator.to_be_bytes());
    udp.extend_from_slice(&sequence.to_be_bytes());
    // The pseudo-header: source, destination, protocol, UDP length.
    let mut pseudo = 0u32;
    for pair in src.chunks(2).chain(src.chunks(2)) {
        pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    pseudo += 17 + (UDP_LEN + PAYLOAD_LEN) as u32;
    let sum = match checksum(&udp, pseudo) {
        0 => 0xffff,
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

/// The Internet checksum (RFC 1071) of `data`, starting from `initial` (a pseudo-header sum).
fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for pair in data.chunks(2) {
        let hi = pair[0];
        let lo = pair.get(1).copied().unwrap_or(0);
        sum += u32::from(u16::from_be_bytes([hi, lo]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Reads a frame from the packet socket: `Some` only for one of our Echo packets that came
/// back through the peer (IPv4, UDP to [`ECHO_PORT`], source = destination, TTL 254, our
/// payload). Anything else, including our own packet on its way out (TTL 255), is `None`.
pub fn parse_returned(frame: &[u8]) -> Option<Returned> {
    let ip = frame.get(ETH_LEN..).filter(|ip| ip.len() >= IP_LEN)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < IP_LEN || ip[8] != RETURN_TTL || ip[9] != 17 {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    if src != dst {
        return None;
    }
    let udp = ip.get(ihl..)?;
    if udp.get(2..4)? != ECHO_PORT.to_be_bytes() {
        return None;
    }
    let p = udp.get(UDP_LEN..UDP_LEN + PAYLOAD_LEN)?;
    if p[0] != VERSION || usize::from(p[1]) != PAYLOAD_LEN {
        return None;
    }
    let discriminator = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&p[8..16]);
    Some(Returned {
        local: src,
        discriminator,
        sequence: u64::from_be_bytes(seq),
    })
}

/// The peer's MAC from the kernel's ARP table (`/proc/net/arp`: address, HW type, flags,
/// HW address, mask, device), on `device`, complete entries only (flag 0x2).
pub fn arp_lookup(table: &str, peer: Ipv4Addr, device: &str) -> Option<[u8; 6]> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [ip, _hw, flags, mac, _mask, dev] = f.as_slice() else {
            return None;
        };
        let complete = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()? & 0x2 != 0;
        if !complete || *dev != device || ip.parse::<Ipv4Addr>().ok()? != peer {
            return None;
        }
        parse_mac(mac).filter(|m| *m != [0; 6])
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Finds the Echo path to `peer` from `local` in this network namespace: the interface
/// holding `local`, its MAC and index, and the peer's MAC from the ARP table (the session's
/// Control packets have just been exchanged, so the entry is there). The error says what is
/// missing, for the session's status.
pub fn resolve(peer: IpAddr, local: IpAddr) -> Result<EchoPath, String> {
    let (IpAddr::V4(peer), IpAddr::V4(local)) = (peer, local) else {
        return Err("Echo is implemented for IPv4 sessions only".into());
    };
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    let addrs: Vec<_> = addrs.collect();
    let device = addrs
        .iter()
        .find(|a| {
            a.address
                .and_then(|s| s.as_sockaddr_in().map(|v4| v4.ip()))
                .is_some_and(|ip| ip == local)
        })
        .map(|a| a.interface_name.clone())
        .ok_or_else(|| format!("no interface holds the local address {local}"))?;
    let link = addrs
        .iter()
        .filter(|a| a.interface_name == device)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
        .ok_or_else(|| format!("interface {device} has no link-layer address"))?;
    let interface_mac = link
        .addr()
        .filter(|m| link.halen() == 6 && *m != [0; 6])
        .ok_or_else(|| format!("interface {device} is not Ethernet"))?;
    let table = std::fs::read_to_string("/proc/net/arp")
        .map_err(|e| format!("cannot read /proc/net/arp: {e}"))?;
    let peer_mac = arp_lookup(&table, peer, &device)
        .ok_or_else(|| format!("no ARP entry for {peer} on {device}"))?;
    Ok(EchoPath {
        ifindex: link.ifindex(),
        interface_mac,
        peer_mac,
        local,
    })
}

/// The interface's own link address (index and MAC) as `sendto`/`bind` take it on a packet
/// socket; found again by index so no raw `sockaddr_ll` has to be built by hand.
pub fn link_addr(ifindex: usize) -> Result<nix::sys::socket::LinkAddr, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    for a in addrs {
        if let Some(l) = a.address.and_then(|s| s.as_link_addr().copied()) {
            if l.ifindex() == ifindex {
                return Ok(l);
            }
        }
    }
    Err(format!("interface {ifindex} is gone"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> EchoPath {
        EchoPath {
            ifindex: 3,
            interface_mac: [2, 0, 0, 0, 0, 1],
            peer_mac: [2, 0, 0, 0, 0, 2],
            local: Ipv4Addr::new(192, 0, 2, 2),
        }
    }

    /// What the peer's forwarding does to our frame: new MACs, TTL − 1, IP checksum fixed.
    fn forwarded(mut f: Vec<u8>) -> Vec<u8> {
        f[22] -= 1;
        f[24] = 0;
        f[25] = 0;
        let sum = checksum(&f[14..34], 0);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f
    }

    #[test]
    fn a_frame_is_ethernet_ipv4_udp_3785_to_ourselves_via_the_peer_mac() {
        let f = frame(&path(), 0xdead_beef, 7, 1);
        assert_eq!(f.len(), FRAME_LEN);
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 2], "to the peer's MAC");
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[8, 0]);
        assert_eq!(f[14 + 8], 255, "TTL");
        assert_eq!(&f[26..30], &[192, 0, 2, 2]);
        assert_eq!(&f[30..34], &[192, 0, 2, 2]);
        assert_eq!(checksum(&f[14..34], 0), 0, "IP header checksum verifies");
        assert_eq!(&f[36..38], &ECHO_PORT.to_be_bytes());
        // UDP checksum over the pseudo-header verifies too.
        let mut pseudo = 0u32;
        for p in f[26..34].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([p[0], p[1]]));
        }
        pseudo += 17 + 24;
        assert_eq!(checksum(&f[34..], pseudo), 0);
    }

    #[test]
    fn only_our_packet_after_one_forwarding_hop_is_taken_back() {
        let f = frame(&path(), 42, 9, 1);
        assert_eq!(parse_returned(&f), None, "on its way out (TTL 255)");
        let back = forwarded(f.clone());
        assert_eq!(
            parse_returned(&back),
            Some(Returned {
                local: Ipv4Addr::new(192, 0, 2, 2),
                discriminator: 42,
                sequence: 9
            })
        );
        let mut other_port = back.clone();
        other_port[37] ^= 1;
        assert_eq!(parse_returned(&other_port), None);
        let mut not_ours = back.clone();
        not_ours[33] ^= 1;
        assert_eq!(parse_returned(&not_ours), None, "source != destination");
        for n in 0..back.len() {
            let _ = parse_returned(&back[..n]);
        }
    }

    #[test]
    fn the_arp_table_gives_complete_entries_on_the_device_only() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 192.0.2.1        0x1         0x2         aa:bb:cc:00:11:22     *        eth0\n\
                 192.0.2.9        0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                 192.0.2.1        0x1         0x2         aa:bb:cc:00:11:33     *        eth1\n";
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert_eq!(
            arp_lookup(t, ip("192.0.2.1"), "eth0"),
            Some([0xaa, 0xbb, 0xcc, 0, 0x11, 0x22])
        );
        assert_eq!(
            arp_lookup(t, ip("192.0.2.1"), "eth1"),
            Some([0xaa, 0xbb, 0xcc, 0, 0x11, 0x33])
        );
        assert_eq!(arp_lookup(t, ip("192.0.2.9"), "eth0"), None, "incomplete");
        assert_eq!(arp_lookup(t, ip("192.0.2.7"), "eth0"), None);
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_frames_never_panics(bytes in proptest::collection::vec(0u8..=255, 0..128)) {
            let _ = parse_returned(&bytes);
        }
    }

    #[test]
    fn ipv6_has_no_echo_path() {
        let e = resolve(
            "2001:db8::1".parse().expect("ip"),
            "2001:db8::2".parse().expect("ip"),
        )
        .expect_err("v6");
        assert!(e.contains("IPv4"), "{e}");
    }
}
