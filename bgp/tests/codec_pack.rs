//! `encode_announce` / `encode_withdraw`: every prefix lands in exactly one UPDATE, every
//! UPDATE is as full as the maximum length allows, and each decodes to the attributes given.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use bytes::BytesMut;
use edgelb_bgp::packet::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

fn attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath {
            segments: vec![AsSegment {
                kind: AsSegmentKind::Sequence,
                asns: vec![64512, 4_200_000_000],
            }],
        }),
        med: Some(10),
        communities: vec![Community(0xfde9_0001)],
        ..PathAttributes::default()
    }
}

fn v4_hosts(n: u32) -> Vec<IpNet> {
    (0..n)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0xc612_0000 + i), 32).unwrap()))
        .collect()
}

fn v6_nets(n: u32) -> Vec<IpNet> {
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
    (0..n)
        .map(|i| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(base + (u128::from(i) << 64)), 64).unwrap()))
        .collect()
}

fn frames<'a>(buf: &'a [u8], ctx: &CodecContext) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let n = frame_len(rest, ctx).unwrap().unwrap();
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// Decodes the packed UPDATEs; returns (attributes without NLRI, announced prefixes) of
/// each and checks every message but the last had no room for one more prefix.
fn unpack(buf: &[u8], ctx: &CodecContext, next_len: usize) -> Vec<(PathAttributes, Vec<IpNet>)> {
    let frames = frames(buf, ctx);
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        assert!(f.len() <= ctx.max_message_len());
        if i + 1 < frames.len() {
            assert!(
                f.len() + next_len > ctx.max_message_len(),
                "UPDATE {i} of {} octets is not full",
                f.len()
            );
        }
        let Message::Update(mut u) = Message::decode(f, ctx).unwrap() else {
            panic!("not an UPDATE")
        };
        let mut prefixes: Vec<IpNet> = u.nlri.iter().map(|p| IpNet::V4(*p)).collect();
        if let Some(mp) = u.attributes.mp_reach.as_mut() {
            prefixes.append(&mut mp.nlri);
        }
        out.push((u.attributes, prefixes));
    }
    out
}

#[test]
fn hundred_thousand_ipv4_hosts_fill_4096_octet_updates_with_one_attribute_set() {
    let ctx = CodecContext {
        four_octet_as: true,
        extended_message: false,
    };
    let prefixes = v4_hosts(100_000);
    let nh = Ipv4Addr::new(192, 0, 2, 1);
    let mut out = BytesMut::new();
    let n = encode_announce(
        Family::Ipv4Unicast,
        &attrs(),
        MpNextHop::V4(nh),
        &prefixes,
        &ctx,
        &mut out,
    )
    .unwrap();
    let got = unpack(&out, &ctx, 5);
    assert_eq!(got.len(), n);
    let want_attrs = PathAttributes {
        next_hop: Some(nh),
        ..attrs()
    };
    assert!(got.iter().all(|(a, _)| *a == want_attrs));
    let all: Vec<IpNet> = got.into_iter().flat_map(|(_, p)| p).collect();
    assert_eq!(all, prefixes);
    // 4096 - 23 header octets - 38 attribute octets leave room for 807 /32s.
    assert_eq!(n, 100_000usize.div_ceil(807));
    eprintln!("100000 IPv4 /32s in {n} UPDATEs, {} octets", out.len());
}

#[test]
fn ipv6_prefixes_go_in_mp_reach_with_global_and_link_local_next_hop() {
    for ext in [false, true] {
        let ctx = CodecContext {
            four_octet_as: true,
            extended_message: ext,
        };
        let prefixes = v6_nets(20_000);
        let nh = MpNextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: Some("fe80::1".parse().unwrap()),
        };
        let mut out = BytesMut::new();
        let n =
            encode_announce(Family::Ipv6Unicast, &attrs(), nh, &prefixes, &ctx, &mut out).unwrap();
        let got = unpack(&out, &ctx, 9);
        assert_eq!(got.len(), n);
        for (a, _) in &got {
            let mp = a.mp_reach.as_ref().unwrap();
            assert_eq!(
                (mp.afi, mp.safi, mp.next_hop),
                (Afi::IPV6, Safi::UNICAST, nh)
            );
            assert_eq!(
                PathAttributes {
                    mp_reach: None,
                    ..a.clone()
                },
                attrs()
            );
        }
        let all: Vec<IpNet> = got.into_iter().flat_map(|(_, p)| p).collect();
        assert_eq!(all, prefixes);
        eprintln!(
            "20000 IPv6 /64s in {n} UPDATEs of at most {} octets",
            ctx.max_message_len()
        );
    }
}

#[test]
fn ipv4_prefixes_with_an_ipv6_next_hop_use_mp_reach_per_rfc8950() {
    let ctx = CodecContext {
        four_octet_as: true,
        extended_message: false,
    };
    let nh = MpNextHop::V6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: None,
    };
    let mut out = BytesMut::new();
    encode_announce(
        Family::Ipv4Unicast,
        &attrs(),
        nh,
        &v4_hosts(3),
        &ctx,
        &mut out,
    )
    .unwrap();
    let Message::Update(u) = Message::decode(&out, &ctx).unwrap() else {
        panic!()
    };
    assert!(u.nlri.is_empty() && u.attributes.next_hop.is_none());
    let mp = u.attributes.mp_reach.unwrap();
    assert_eq!((mp.afi, mp.next_hop, mp.nlri), (Afi::IPV4, nh, v4_hosts(3)));
}

#[test]
fn two_octet_session_packs_as_trans_and_as4_path() {
    let ctx = CodecContext::PRE_OPEN;
    let mut out = BytesMut::new();
    let nh = MpNextHop::V4(Ipv4Addr::new(192, 0, 2, 1));
    encode_announce(
        Family::Ipv4Unicast,
        &attrs(),
        nh,
        &v4_hosts(2),
        &ctx,
        &mut out,
    )
    .unwrap();
    // AS4_PATH (type 17, optional transitive) is on the wire ...
    assert!(out.windows(2).any(|w| w == [0xc0, 17]));
    // ... and the receiver rebuilds the 4-octet path from it.
    let Message::Update(u) = Message::decode(&out, &ctx).unwrap() else {
        panic!()
    };
    assert_eq!(u.attributes.as_path, attrs().as_path);
}

#[test]
fn withdrawals_fill_updates_for_both_families() {
    let ctx = CodecContext {
        four_octet_as: true,
        extended_message: false,
    };
    for (family, prefixes, per_prefix) in [
        (Family::Ipv4Unicast, v4_hosts(10_000), 5),
        (Family::Ipv6Unicast, v6_nets(10_000), 9),
    ] {
        let mut out = BytesMut::new();
        let n = encode_withdraw(family, &prefixes, &ctx, &mut out).unwrap();
        let mut all = Vec::new();
        let frames = frames(&out, &ctx);
        assert_eq!(frames.len(), n);
        for (i, f) in frames.iter().enumerate() {
            if i + 1 < frames.len() {
                assert!(f.len() + per_prefix > 4096);
            }
            let Message::Update(u) = Message::decode(f, &ctx).unwrap() else {
                panic!()
            };
            assert!(u.nlri.is_empty() && u.attributes.mp_reach.is_none());
            all.extend(u.withdrawn.iter().map(|p| IpNet::V4(*p)));
            if let Some(mp) = u.attributes.mp_unreach {
                assert_eq!(
                    u.attributes.origin, None,
                    "a withdrawal needs no other attribute"
                );
                all.extend(mp.withdrawn);
            }
        }
        assert_eq!(all, prefixes, "{family:?}");
    }
}

#[test]
fn nothing_to_pack_writes_nothing() {
    let ctx = CodecContext::PRE_OPEN;
    let mut out = BytesMut::new();
    let nh = MpNextHop::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(
        encode_announce(Family::Ipv4Unicast, &attrs(), nh, &[], &ctx, &mut out),
        Ok(0)
    );
    assert_eq!(
        encode_withdraw(Family::Ipv6Unicast, &[], &ctx, &mut out),
        Ok(0)
    );
    assert!(out.is_empty());
}

#[test]
fn prefix_of_the_wrong_family_is_refused_and_nothing_is_written() {
    let ctx = CodecContext::PRE_OPEN;
    let mut out = BytesMut::from(&b"prev"[..]);
    let nh = MpNextHop::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mixed = vec![v4_hosts(1)[0], v6_nets(1)[0]];
    let err =
        encode_announce(Family::Ipv4Unicast, &attrs(), nh, &mixed, &ctx, &mut out).unwrap_err();
    assert_eq!(
        err,
        EncodeError::PrefixFamily {
            prefix: mixed[1],
            family: Family::Ipv4Unicast
        }
    );
    assert!(encode_withdraw(Family::Ipv6Unicast, &mixed, &ctx, &mut out).is_err());
    assert_eq!(&out[..], b"prev");
}

#[test]
fn ipv6_family_with_an_ipv4_next_hop_is_refused() {
    let ctx = CodecContext::PRE_OPEN;
    let nh = MpNextHop::V4(Ipv4Addr::new(192, 0, 2, 1));
    let err = encode_announce(
        Family::Ipv6Unicast,
        &attrs(),
        nh,
        &v6_nets(1),
        &ctx,
        &mut BytesMut::new(),
    );
    assert_eq!(
        err,
        Err(EncodeError::NextHopFamily {
            next_hop: nh,
            family: Family::Ipv6Unicast
        })
    );
}

#[test]
fn attributes_that_leave_no_room_for_a_prefix_are_refused_and_nothing_is_written() {
    let ctx = CodecContext::PRE_OPEN;
    let big = PathAttributes {
        large_communities: (0..340)
            .map(|i| LargeCommunity {
                global_admin: i,
                local_data1: 0,
                local_data2: 0,
            })
            .collect(),
        ..attrs()
    };
    let nh = MpNextHop::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mut out = BytesMut::new();
    let err = encode_announce(Family::Ipv4Unicast, &big, nh, &v4_hosts(10), &ctx, &mut out);
    assert_eq!(
        err,
        Err(EncodeError::AttributesTooLong {
            family: Family::Ipv4Unicast,
            prefixes: 10
        })
    );
    assert!(out.is_empty());
}

#[test]
fn next_hop_and_mp_fields_of_the_given_attributes_are_ignored() {
    let ctx = CodecContext {
        four_octet_as: true,
        extended_message: false,
    };
    let stray = PathAttributes {
        next_hop: Some(Ipv4Addr::new(203, 0, 113, 9)),
        mp_unreach: Some(MpUnreach {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
            withdrawn: vec![],
        }),
        ..attrs()
    };
    let nh = Ipv4Addr::new(192, 0, 2, 1);
    let mut out = BytesMut::new();
    encode_announce(
        Family::Ipv4Unicast,
        &stray,
        MpNextHop::V4(nh),
        &v4_hosts(1),
        &ctx,
        &mut out,
    )
    .unwrap();
    let Message::Update(u) = Message::decode(&out, &ctx).unwrap() else {
        panic!()
    };
    assert_eq!(
        u.attributes,
        PathAttributes {
            next_hop: Some(nh),
            ..attrs()
        }
    );
}
