use super::*;
use proptest::prelude::*;

const MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x0a);
const PEER: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x0b);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("test address")
}

/// An ARP request as Linux sends it: who-has 192.0.2.100 tell 192.0.2.10.
const LINUX_ARP_REQUEST: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x06, // ethernet
    0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // htype, ptype, hlen, plen, op=request
    0x02, 0, 0, 0, 0, 0x0b, 192, 0, 2, 10, // sender
    0, 0, 0, 0, 0, 0, 192, 0, 2, 100, // target
];

#[test]
fn a_linux_arp_request_is_read_and_our_builder_writes_the_same_bytes() {
    let parsed = parse(&LINUX_ARP_REQUEST);
    assert_eq!(
        parsed,
        Ok(Incoming::ArpRequest {
            eth_src: PEER,
            sender_mac: PEER,
            sender_ip: Ipv4Addr::new(192, 0, 2, 10),
            target_ip: Ipv4Addr::new(192, 0, 2, 100),
        })
    );
    let built = arp_request(
        PEER,
        Ipv4Addr::new(192, 0, 2, 10),
        Ipv4Addr::new(192, 0, 2, 100),
    );
    assert_eq!(built, LINUX_ARP_REQUEST.to_vec());
}

#[test]
fn gratuitous_arp_request_form_has_zero_target_mac_and_both_ips_equal() {
    let ip = Ipv4Addr::new(192, 0, 2, 100);
    let frame = gratuitous_arp(MAC, ip, GarpForm::Request);
    let seen = parse_any_arp(&frame).expect("arp");
    assert_eq!(seen.eth_dst, MacAddr::broadcast());
    assert!(!seen.reply);
    assert_eq!((seen.sender_mac, seen.sender_ip), (MAC, ip));
    assert_eq!((seen.target_mac, seen.target_ip), (MacAddr::zero(), ip));
    assert_eq!(&frame[6..12], &MAC.octets());
}

#[test]
fn gratuitous_arp_reply_form_repeats_the_sender_mac_as_target_mac() {
    let ip = Ipv4Addr::new(192, 0, 2, 100);
    let seen = parse_any_arp(&gratuitous_arp(MAC, ip, GarpForm::Reply)).expect("arp");
    assert!(seen.reply);
    assert_eq!(seen.target_mac, MAC);
    assert_eq!(seen.target_ip, ip);
}

#[test]
fn arp_reply_is_unicast_to_the_requester() {
    let frame = arp_reply(
        MAC,
        Ipv4Addr::new(192, 0, 2, 100),
        PEER,
        Ipv4Addr::new(192, 0, 2, 10),
    );
    let seen = parse_any_arp(&frame).expect("arp");
    assert_eq!(seen.eth_dst, PEER);
    assert!(seen.reply);
    assert_eq!(seen.sender_mac, MAC);
    assert_eq!(seen.target_ip, Ipv4Addr::new(192, 0, 2, 10));
}

#[test]
fn arp_replies_and_non_ipv4_arp_are_ignored() {
    let mut reply = LINUX_ARP_REQUEST;
    reply[21] = 2;
    assert_eq!(parse(&reply), Err(Ignored::ArpNotRequest));
    let mut bad_hlen = LINUX_ARP_REQUEST;
    bad_hlen[18] = 8;
    assert_eq!(parse(&bad_hlen), Err(Ignored::ArpNotEthernetIpv4));
    assert_eq!(parse(&LINUX_ARP_REQUEST[..41]), Err(Ignored::Truncated));
}

#[test]
fn solicited_node_group_and_its_mac_follow_rfc_4291_and_rfc_2464() {
    let g = solicited_node(&v6("2001:db8::1:2345:6789"));
    assert_eq!(g, v6("ff02::1:ff45:6789"));
    assert_eq!(
        multicast_mac(&g),
        MacAddr(0x33, 0x33, 0xff, 0x45, 0x67, 0x89)
    );
}

#[test]
fn a_neighbor_solicitation_round_trips_with_its_source_link_layer_option() {
    let src = v6("2001:db8::10");
    let target = v6("2001:db8::100");
    let frame = neighbor_solicit(PEER, src, target);
    assert_eq!(
        parse(&frame),
        Ok(Incoming::NeighborSolicit {
            eth_src: PEER,
            src,
            dst: v6("ff02::1:ff00:100"),
            target,
            source_ll: Some(PEER),
        })
    );
}

#[test]
fn a_dad_solicitation_from_unspecified_is_accepted_without_option() {
    let frame = neighbor_solicit(PEER, Ipv6Addr::UNSPECIFIED, v6("2001:db8::100"));
    assert!(matches!(
        parse(&frame),
        Ok(Incoming::NeighborSolicit {
            source_ll: None,
            ..
        })
    ));
}

fn ns_frame() -> Vec<u8> {
    neighbor_solicit(PEER, v6("2001:db8::10"), v6("2001:db8::100"))
}

/// Recomputes the ICMPv6 checksum of a test frame so that only the field under test is wrong.
fn fix_checksum(f: &mut [u8]) {
    let (src, dst) = (v6("2001:db8::10"), v6("ff02::1:ff00:100"));
    let icmp = &mut f[54..];
    let sum = icmpv6::checksum(&Icmpv6Packet::new(icmp).expect("icmp"), &src, &dst);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn a_solicitation_with_hop_limit_below_255_is_ignored() {
    let mut f = ns_frame();
    f[14 + 7] = 64;
    assert_eq!(parse(&f), Err(Ignored::NdInvalid));
}

#[test]
fn a_solicitation_with_a_bad_checksum_is_ignored() {
    let mut f = ns_frame();
    f[14 + 40 + 2] ^= 0xff;
    assert_eq!(parse(&f), Err(Ignored::NdInvalid));
}

#[test]
fn a_solicitation_with_an_option_of_length_zero_or_past_the_end_is_ignored() {
    for units in [0u8, 2, 255] {
        let mut f = ns_frame();
        f[14 + 40 + 25] = units;
        fix_checksum(&mut f);
        assert_eq!(parse(&f), Err(Ignored::NdBadOption), "units {units}");
    }
}

#[test]
fn a_solicitation_with_a_payload_length_past_the_frame_is_ignored() {
    let mut f = ns_frame();
    f[14 + 5] = 200;
    assert_eq!(parse(&f), Err(Ignored::Truncated));
}

#[test]
fn a_neighbor_advert_carries_override_solicited_and_our_mac_with_a_valid_checksum() {
    let target = v6("2001:db8::100");
    let frame = neighbor_advert(MAC, target, v6("2001:db8::10"), PEER, true);
    assert_eq!(&frame[..6], &PEER.octets());
    let na = parse_advert(&frame).expect("advert");
    assert_eq!(na.target, target);
    assert_eq!(na.src, target);
    assert_eq!(
        na.flags,
        NeighborAdvertFlags::Override | NeighborAdvertFlags::Solicited
    );
    assert_eq!(na.target_ll, Some(MAC));
    let icmp = Icmpv6Packet::new(&frame[54..]).expect("icmp");
    assert_eq!(
        icmpv6::checksum(&icmp, &target, &v6("2001:db8::10")),
        icmp.get_checksum()
    );
    assert_eq!(frame[14 + 7], 255, "hop limit");
}

#[test]
fn an_unsolicited_advert_goes_to_all_nodes_with_override_only() {
    let target = v6("2001:db8::100");
    let frame = neighbor_advert(MAC, target, ALL_NODES, multicast_mac(&ALL_NODES), false);
    assert_eq!(&frame[..6], &[0x33, 0x33, 0, 0, 0, 1]);
    let na = parse_advert(&frame).expect("advert");
    assert_eq!(na.dst, ALL_NODES);
    assert_eq!(na.flags, NeighborAdvertFlags::Override);
}

proptest! {
    #[test]
    fn parse_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&bytes);
        let _ = parse_advert(&bytes);
        let _ = parse_any_arp(&bytes);
    }

    #[test]
    fn parse_never_panics_on_ndp_with_any_tail(tail in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut f = ns_frame();
        f.truncate(54 + 24);
        f.extend_from_slice(&tail);
        let len = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&len.to_be_bytes());
        fix_checksum(&mut f);
        let _ = parse(&f);
        let _ = parse_advert(&f);
    }

    #[test]
    fn every_mutated_arp_request_parses_or_is_ignored_without_panic(
        at in 0usize..42, value in any::<u8>()
    ) {
        let mut f = LINUX_ARP_REQUEST;
        f[at] = value;
        let _ = parse(&f);
    }
}
