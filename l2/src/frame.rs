//! Ethernet frames this crate reads (ARP requests, neighbour solicitations) and writes
//! (ARP announcements and replies, neighbour advertisements).
//!
//! Fixed headers go through `pnet_packet`. NDP options are walked by hand with bounds
//! checks: `pnet_packet` 0.35 computes an option's payload as `length * 8 - 2` in `u8`
//! arithmetic, which overflows (and panics in debug builds) for any option length of 32 or
//! more, so its option iterator must never see bytes from the wire.
use pnet_base::MacAddr;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{MutableNeighborAdvertPacket, NeighborAdvertFlags};
use pnet_packet::icmpv6::{self, Icmpv6Code, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Length of an Ethernet header without VLAN tag.
pub const ETHERNET_HEADER: usize = 14;
/// Length of an ARP body for IPv4 over Ethernet (RFC 826).
pub const ARP_BODY: usize = 28;
const IPV6_HEADER: usize = 40;
/// Type, code, checksum, reserved/flags and target address (RFC 4861 §4.3, §4.4).
const ND_FIXED: usize = 24;
/// Hop limit every ND message carries, and the only one accepted (RFC 4861 §7.1.1).
const ND_HOP_LIMIT: u8 = 255;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;

/// A frame that may need an answer. Everything else is [`Ignored`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// An ARP request (RFC 826) for IPv4 over Ethernet.
    ArpRequest {
        eth_src: MacAddr,
        sender_mac: MacAddr,
        sender_ip: Ipv4Addr,
        target_ip: Ipv4Addr,
    },
    /// A neighbour solicitation that passed the checks of RFC 4861 §7.1.1.
    NeighborSolicit {
        eth_src: MacAddr,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        target: Ipv6Addr,
        source_ll: Option<MacAddr>,
    },
}

/// Why a frame gets no answer; kept for debug logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    Truncated,
    OtherEtherType,
    ArpNotEthernetIpv4,
    ArpNotRequest,
    NotIcmpv6,
    NotNeighborSolicit,
    /// RFC 4861 §7.1.1: hop limit must be 255, code 0, the checksum valid.
    NdInvalid,
    /// An option of length zero or running past the message (RFC 4861 §7.1.1).
    NdBadOption,
    /// The target of a solicitation may not be a multicast address (RFC 4861 §7.1.1).
    NdMulticastTarget,
    /// DAD solicitations come from `::` to a solicited-node group, without a source
    /// link-layer option (RFC 4861 §7.1.1).
    NdBadDad,
}

/// Reads one Ethernet frame. Never panics, whatever the bytes.
pub fn parse(frame: &[u8]) -> Result<Incoming, Ignored> {
    let eth = EthernetPacket::new(frame).ok_or(Ignored::Truncated)?;
    let eth_src = eth.get_source();
    match eth.get_ethertype() {
        EtherTypes::Arp => parse_arp(eth_src, &frame[ETHERNET_HEADER..]),
        EtherTypes::Ipv6 => parse_ns(eth_src, &frame[ETHERNET_HEADER..]),
        _ => Err(Ignored::OtherEtherType),
    }
}

fn parse_arp(eth_src: MacAddr, body: &[u8]) -> Result<Incoming, Ignored> {
    if body.len() < ARP_BODY {
        return Err(Ignored::Truncated);
    }
    let arp = ArpPacket::new(body).ok_or(Ignored::Truncated)?;
    if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
        || arp.get_protocol_type() != EtherTypes::Ipv4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
    {
        return Err(Ignored::ArpNotEthernetIpv4);
    }
    if arp.get_operation() != ArpOperations::Request {
        return Err(Ignored::ArpNotRequest);
    }
    Ok(Incoming::ArpRequest {
        eth_src,
        sender_mac: arp.get_sender_hw_addr(),
        sender_ip: arp.get_sender_proto_addr(),
        target_ip: arp.get_target_proto_addr(),
    })
}

fn parse_ns(eth_src: MacAddr, body: &[u8]) -> Result<Incoming, Ignored> {
    if body.len() < IPV6_HEADER {
        return Err(Ignored::Truncated);
    }
    let ip = Ipv6Packet::new(body).ok_or(Ignored::Truncated)?;
    if ip.get_version() != 6 || ip.get_next_header() != IpNextHeaderProtocols::Icmpv6 {
        return Err(Ignored::NotIcmpv6);
    }
    let payload_len = usize::from(ip.get_payload_length());
    let icmp = body
        .get(IPV6_HEADER..IPV6_HEADER + payload_len)
        .ok_or(Ignored::Truncated)?;
    if icmp.first() != Some(&Icmpv6Types::NeighborSolicit.0) {
        return Err(Ignored::NotNeighborSolicit);
    }
    if icmp.len() < ND_FIXED {
        return Err(Ignored::Truncated);
    }
    let (src, dst) = (ip.get_source(), ip.get_destination());
    let icmp_packet = Icmpv6Packet::new(icmp).ok_or(Ignored::Truncated)?;
    if ip.get_hop_limit() != ND_HOP_LIMIT
        || icmp_packet.get_icmpv6_code() != Icmpv6Code(0)
        || icmpv6::checksum(&icmp_packet, &src, &dst) != icmp_packet.get_checksum()
    {
        return Err(Ignored::NdInvalid);
    }
    let target = ipv6_at(icmp, 8).ok_or(Ignored::Truncated)?;
    if target.is_multicast() {
        return Err(Ignored::NdMulticastTarget);
    }
    let source_ll = option_mac(&icmp[ND_FIXED..], OPT_SOURCE_LL)?;
    if src.is_unspecified() && (!is_solicited_node(&dst) || source_ll.is_some()) {
        return Err(Ignored::NdBadDad);
    }
    Ok(Incoming::NeighborSolicit {
        eth_src,
        src,
        dst,
        target,
        source_ll,
    })
}

fn ipv6_at(bytes: &[u8], at: usize) -> Option<Ipv6Addr> {
    let octets: [u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(octets))
}

/// Walks NDP options (RFC 4861 §4.6): each is type, length in units of 8 octets (never 0),
/// data. Returns the link-layer address of the first option of `kind`, if any.
fn option_mac(mut options: &[u8], kind: u8) -> Result<Option<MacAddr>, Ignored> {
    let mut found = None;
    while !options.is_empty() {
        let (Some(&opt_type), Some(&units)) = (options.first(), options.get(1)) else {
            return Err(Ignored::NdBadOption);
        };
        let len = usize::from(units) * 8;
        if len == 0 || len > options.len() {
            return Err(Ignored::NdBadOption);
        }
        if opt_type == kind && found.is_none() && len >= 8 {
            found = Some(MacAddr::new(
                options[2], options[3], options[4], options[5], options[6], options[7],
            ));
        }
        options = &options[len..];
    }
    Ok(found)
}

/// The solicited-node multicast group of `ip`: ff02::1:ff00:0/104 plus its low 24 bits
/// (RFC 4291 §2.7.1).
pub fn solicited_node(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

fn is_solicited_node(ip: &Ipv6Addr) -> bool {
    let o = ip.octets();
    o[..11] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0] && o[11] == 1 && o[12] == 0xff
}

/// The Ethernet address of an IPv6 multicast group: 33:33 and its low 32 bits (RFC 2464 §7).
pub fn multicast_mac(group: &Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr::new(0x33, 0x33, o[12], o[13], o[14], o[15])
}

/// All-nodes multicast, the destination of unsolicited advertisements (RFC 4861 §7.2.6).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The two forms of a gratuitous ARP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GarpForm {
    /// Request with sender and target IP both the announced address, target MAC zero. Linux
    /// clients update an existing entry from it at once; send it first.
    Request,
    /// Reply with target MAC equal to sender MAC: Linux accepts it even inside the 1 s
    /// `locktime` after an entry changed; some other stacks only heed replies.
    Reply,
}

/// A gratuitous ARP for `ip` at `mac`, broadcast (RFC 5227 §3 "ARP Announcement").
pub fn gratuitous_arp(mac: MacAddr, ip: Ipv4Addr, form: GarpForm) -> Vec<u8> {
    match form {
        GarpForm::Request => arp_frame(
            ArpOperations::Request,
            mac,
            MacAddr::broadcast(),
            mac,
            ip,
            MacAddr::zero(),
            ip,
        ),
        GarpForm::Reply => arp_frame(
            ArpOperations::Reply,
            mac,
            MacAddr::broadcast(),
            mac,
            ip,
            mac,
            ip,
        ),
    }
}

/// An ARP reply (RFC 826) telling `to_mac`/`to_ip` that `ip` is at `mac`, sent unicast.
pub fn arp_reply(mac: MacAddr, ip: Ipv4Addr, to_mac: MacAddr, to_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(ArpOperations::Reply, mac, to_mac, mac, ip, to_mac, to_ip)
}

fn arp_frame(
    op: pnet_packet::arp::ArpOperation,
    eth_src: MacAddr,
    eth_dst: MacAddr,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut buf = vec![0u8; ETHERNET_HEADER + ARP_BODY];
    write_ethernet(&mut buf, eth_dst, eth_src, EtherTypes::Arp);
    if let Some(mut arp) = MutableArpPacket::new(&mut buf[ETHERNET_HEADER..]) {
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(op);
        arp.set_sender_hw_addr(sender_mac);
        arp.set_sender_proto_addr(sender_ip);
        arp.set_target_hw_addr(target_mac);
        arp.set_target_proto_addr(target_ip);
    }
    buf
}

fn write_ethernet(
    buf: &mut [u8],
    dst: MacAddr,
    src: MacAddr,
    ethertype: pnet_packet::ethernet::EtherType,
) {
    if let Some(mut eth) = MutableEthernetPacket::new(buf) {
        eth.set_destination(dst);
        eth.set_source(src);
        eth.set_ethertype(ethertype);
    }
}

/// A neighbour advertisement for `target` at `mac` (RFC 4861 §4.4), with the Override flag
/// and a target link-layer address option. `solicited` sets the S flag (§7.2.4); an
/// unsolicited one goes to all-nodes (§7.2.6).
pub fn neighbor_advert(
    mac: MacAddr,
    target: Ipv6Addr,
    dst: Ipv6Addr,
    dst_mac: MacAddr,
    solicited: bool,
) -> Vec<u8> {
    let icmp_len = ND_FIXED + 8;
    let mut buf = vec![0u8; ETHERNET_HEADER + IPV6_HEADER + icmp_len];
    write_ethernet(&mut buf, dst_mac, mac, EtherTypes::Ipv6);
    if let Some(mut ip) = MutableIpv6Packet::new(&mut buf[ETHERNET_HEADER..]) {
        ip.set_version(6);
        ip.set_payload_length(icmp_len as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(ND_HOP_LIMIT);
        ip.set_source(target);
        ip.set_destination(dst);
    }
    let icmp = &mut buf[ETHERNET_HEADER + IPV6_HEADER..];
    if let Some(mut na) = MutableNeighborAdvertPacket::new(icmp) {
        na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        na.set_icmpv6_code(Icmpv6Code(0));
        let mut flags = NeighborAdvertFlags::Override;
        if solicited {
            flags |= NeighborAdvertFlags::Solicited;
        }
        na.set_flags(flags);
        na.set_target_addr(target);
    }
    icmp[ND_FIXED] = OPT_TARGET_LL;
    icmp[ND_FIXED + 1] = 1;
    icmp[ND_FIXED + 2..ND_FIXED + 8].copy_from_slice(&mac.octets());
    let sum = Icmpv6Packet::new(icmp).map(|p| icmpv6::checksum(&p, &target, &dst));
    if let Some(sum) = sum {
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    buf
}

/// An ARP request from `mac`/`ip` asking for `target` (RFC 826). Used by probes and tests.
pub fn arp_request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        ArpOperations::Request,
        mac,
        MacAddr::broadcast(),
        mac,
        ip,
        MacAddr::zero(),
        target,
    )
}

/// A neighbour solicitation from `mac`/`src` for `target`, to its solicited-node group
/// (RFC 4861 §4.3, §7.2.2), with a source link-layer option unless `src` is `::`. Used by
/// probes and tests.
pub fn neighbor_solicit(mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let with_option = !src.is_unspecified();
    let icmp_len = ND_FIXED + if with_option { 8 } else { 0 };
    let dst = solicited_node(&target);
    let mut buf = vec![0u8; ETHERNET_HEADER + IPV6_HEADER + icmp_len];
    write_ethernet(&mut buf, multicast_mac(&dst), mac, EtherTypes::Ipv6);
    if let Some(mut ip) = MutableIpv6Packet::new(&mut buf[ETHERNET_HEADER..]) {
        ip.set_version(6);
        ip.set_payload_length(icmp_len as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(ND_HOP_LIMIT);
        ip.set_source(src);
        ip.set_destination(dst);
    }
    let icmp = &mut buf[ETHERNET_HEADER + IPV6_HEADER..];
    icmp[0] = Icmpv6Types::NeighborSolicit.0;
    icmp[8..24].copy_from_slice(&target.octets());
    if with_option {
        icmp[ND_FIXED] = OPT_SOURCE_LL;
        icmp[ND_FIXED + 1] = 1;
        icmp[ND_FIXED + 2..ND_FIXED + 8].copy_from_slice(&mac.octets());
    }
    let sum = Icmpv6Packet::new(icmp).map(|p| icmpv6::checksum(&p, &src, &dst));
    if let Some(sum) = sum {
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    buf
}

/// A neighbour advertisement read back: what a probe or test needs to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    pub flags: u8,
    pub target_ll: Option<MacAddr>,
}

/// Reads a neighbour advertisement (for probes and tests; the announcer never answers one).
pub fn parse_advert(frame: &[u8]) -> Option<Advert> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Ipv6 {
        return None;
    }
    let body = &frame[ETHERNET_HEADER..];
    let ip = Ipv6Packet::new(body)?;
    let icmp = body.get(IPV6_HEADER..IPV6_HEADER + usize::from(ip.get_payload_length()))?;
    if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6
        || icmp.first() != Some(&Icmpv6Types::NeighborAdvert.0)
        || icmp.len() < ND_FIXED
    {
        return None;
    }
    Some(Advert {
        src: ip.get_source(),
        dst: ip.get_destination(),
        target: ipv6_at(icmp, 8)?,
        flags: icmp[4],
        target_ll: option_mac(&icmp[ND_FIXED..], OPT_TARGET_LL).ok()?,
    })
}

/// An ARP packet read back, request or reply (for probes and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpSeen {
    pub eth_dst: MacAddr,
    pub reply: bool,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

/// Reads any ARP packet for IPv4 over Ethernet (for probes and tests).
pub fn parse_any_arp(frame: &[u8]) -> Option<ArpSeen> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Arp || frame.len() < ETHERNET_HEADER + ARP_BODY {
        return None;
    }
    let arp = ArpPacket::new(&frame[ETHERNET_HEADER..])?;
    if arp.get_hw_addr_len() != 6 || arp.get_proto_addr_len() != 4 {
        return None;
    }
    Some(ArpSeen {
        eth_dst: eth.get_destination(),
        reply: arp.get_operation() == ArpOperations::Reply,
        sender_mac: arp.get_sender_hw_addr(),
        sender_ip: arp.get_sender_proto_addr(),
        target_mac: arp.get_target_hw_addr(),
        target_ip: arp.get_target_proto_addr(),
    })
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
