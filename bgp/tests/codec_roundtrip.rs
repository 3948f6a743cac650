//! Round trips (encode then decode gives the value back) for every message and attribute,
//! in 2- and 4-octet AS sessions; byte vectors checked both ways; decode never panics.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use bytes::{Bytes, BytesMut};
use edgelb_bgp::packet::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

// ---------- strategies ----------

fn v4_prefix() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
}

fn v6_prefix() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())
}

/// A unicast IPv4 address that NEXT_HOP accepts (not 0, broadcast or multicast).
fn unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    (1u32..0xe000_0000).prop_map(Ipv4Addr::from)
}

fn segment(max_asn: u32) -> impl Strategy<Value = AsSegment> {
    (
        prop_oneof![
            Just(AsSegmentKind::Sequence),
            Just(AsSegmentKind::Set),
            Just(AsSegmentKind::ConfedSequence),
            Just(AsSegmentKind::ConfedSet),
        ],
        prop::collection::vec(1..=max_asn, 1..8),
    )
        .prop_map(|(kind, asns)| AsSegment { kind, asns })
}

/// Paths as a 2-octet session can carry them: confederation segments (which AS4_PATH leaves
/// out, RFC 6793 §4.2.2) come first and hold 2-octet ASNs.
fn as_path(four_octet: bool) -> impl Strategy<Value = AsPath> {
    prop::collection::vec(segment(u32::MAX), 0..5).prop_map(move |mut segments| {
        if !four_octet {
            segments.sort_by_key(|s| !s.kind.is_confed());
            for s in segments.iter_mut().filter(|s| s.kind.is_confed()) {
                s.asns.iter_mut().for_each(|a| *a = (*a % 65535) + 1);
            }
        }
        AsPath { segments }
    })
}

fn mp_next_hop(v4_allowed: bool) -> impl Strategy<Value = MpNextHop> {
    let v6 = (any::<u128>(), prop::option::of(any::<u128>())).prop_map(|(g, ll)| MpNextHop::V6 {
        global: Ipv6Addr::from(g),
        link_local: ll.map(Ipv6Addr::from),
    });
    if v4_allowed {
        prop_oneof![
            any::<u32>().prop_map(|a| MpNextHop::V4(Ipv4Addr::from(a))),
            v6
        ]
        .boxed()
    } else {
        v6.boxed()
    }
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    prop_oneof![
        (
            mp_next_hop(true),
            prop::collection::vec(v4_prefix().prop_map(IpNet::V4), 0..20)
        )
            .prop_map(|(next_hop, nlri)| MpReach {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
                next_hop,
                nlri
            }),
        (
            mp_next_hop(false),
            prop::collection::vec(v6_prefix().prop_map(IpNet::V6), 0..20)
        )
            .prop_map(|(next_hop, nlri)| MpReach {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
                next_hop,
                nlri
            }),
    ]
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        prop::collection::vec(v4_prefix().prop_map(IpNet::V4), 0..20).prop_map(|withdrawn| {
            MpUnreach {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
                withdrawn,
            }
        }),
        prop::collection::vec(v6_prefix().prop_map(IpNet::V6), 0..20).prop_map(|withdrawn| {
            MpUnreach {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
                withdrawn,
            }
        }),
    ]
}

const KNOWN_ATTRS: [u8; 13] = [1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 17, 18, 32];

/// Unknown optional attributes, one per type code, some longer than 255 octets.
fn unknown_attrs() -> impl Strategy<Value = Vec<RawAttribute>> {
    prop::collection::btree_map(
        any::<u8>().prop_filter("unknown code", |c| !KNOWN_ATTRS.contains(c)),
        (
            prop_oneof![Just(0x80u8), Just(0xc0), Just(0xe0), Just(0xa0)],
            prop::collection::vec(any::<u8>(), 0..300),
        ),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(code, (flags, value))| RawAttribute {
                flags,
                code,
                value: Bytes::from(value),
            })
            .collect()
    })
}

fn origin() -> impl Strategy<Value = Origin> {
    prop_oneof![
        Just(Origin::Igp),
        Just(Origin::Egp),
        Just(Origin::Incomplete)
    ]
}

fn path_attributes(four_octet: bool) -> impl Strategy<Value = PathAttributes> {
    (
        (
            prop::option::of(origin()),
            prop::option::of(as_path(four_octet)),
            prop::option::of(unicast_v4()),
        ),
        (
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u32>()),
            any::<bool>(),
        ),
        prop::option::of((any::<u32>(), any::<u32>())),
        prop::collection::vec(any::<u32>().prop_map(Community), 0..10),
        prop::collection::vec(
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(g, a, b)| LargeCommunity {
                global_admin: g,
                local_data1: a,
                local_data2: b,
            }),
            0..5,
        ),
        (
            prop::option::of(mp_reach()),
            prop::option::of(mp_unreach()),
            unknown_attrs(),
        ),
    )
        .prop_map(
            move |(
                (origin, as_path, next_hop),
                (med, local_pref, atomic_aggregate),
                aggregator,
                communities,
                large_communities,
                (mp_reach, mp_unreach, unknown),
            )| {
                let aggregator = aggregator.map(|(asn, addr)| {
                    // RFC 6793 §4.2.3: on a 2-octet session an AGGREGATOR of a 2-octet ASN
                    // other than AS_TRANS makes the receiver ignore AS4_PATH, so only
                    // ASNs above 65535 survive a round trip together with a 4-octet path.
                    let asn = if four_octet { asn } else { asn | 0x1_0000 };
                    Aggregator {
                        asn,
                        address: Ipv4Addr::from(addr),
                    }
                });
                PathAttributes {
                    origin,
                    as_path,
                    next_hop,
                    med,
                    local_pref,
                    atomic_aggregate,
                    aggregator,
                    communities,
                    large_communities,
                    mp_reach,
                    mp_unreach,
                    unknown,
                }
            },
        )
}

/// An UPDATE that decodes without any RFC 7606 action: mandatory attributes present
/// whenever there is NLRI (RFC 4271 §5, RFC 4760 §3).
fn update(four_octet: bool) -> impl Strategy<Value = Update> {
    (
        prop::collection::vec(v4_prefix(), 0..20),
        path_attributes(four_octet),
        prop::collection::vec(v4_prefix(), 0..20),
        unicast_v4(),
    )
        .prop_map(|(withdrawn, mut attributes, nlri, nh)| {
            if !nlri.is_empty() || attributes.mp_reach.is_some() {
                attributes.origin.get_or_insert(Origin::Igp);
                attributes.as_path.get_or_insert_with(AsPath::default);
            }
            if !nlri.is_empty() {
                attributes.next_hop.get_or_insert(nh);
            }
            Update {
                withdrawn,
                attributes,
                nlri,
            }
        })
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(a, s)| Capability::Multiprotocol {
            afi: Afi(a),
            safi: Safi(s)
        }),
        Just(Capability::RouteRefresh),
        Just(Capability::ExtendedMessage),
        (1u32..).prop_map(Capability::FourOctetAs),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            prop::collection::vec((any::<u16>(), any::<u8>(), any::<bool>()), 0..4)
        )
            .prop_map(|(restart_state, notification, restart_time, fams)| {
                Capability::GracefulRestart(GracefulRestart {
                    restart_state,
                    notification,
                    restart_time,
                    families: fams
                        .into_iter()
                        .map(|(a, s, f)| GracefulRestartFamily {
                            afi: Afi(a),
                            safi: Safi(s),
                            forwarding_preserved: f,
                        })
                        .collect(),
                })
            }),
        (
            any::<u8>().prop_filter("unknown", |c| ![1, 2, 6, 64, 65].contains(c)),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(code, v)| Capability::Unknown {
                code,
                value: Bytes::from(v)
            }),
    ]
}

/// Up to 40 capabilities, so some OPENs need RFC 9072 extended optional parameters.
fn open() -> impl Strategy<Value = Open> {
    (
        1u16..,
        prop_oneof![Just(0u16), 3u16..],
        1u32..,
        prop::collection::vec(capability(), 0..40),
    )
        .prop_map(|(my_as, hold_time, id, capabilities)| Open {
            version: 4,
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
            other_params: Vec::new(),
        })
}

fn message(four_octet: bool) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(four_octet).prop_map(Message::Update),
        (
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..100)
        )
            .prop_map(|(c, s, d)| Message::Notification(Notification::new(c, s, d))),
        Just(Message::Keepalive),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(a, st, s)| Message::RouteRefresh(
            RouteRefresh {
                afi: Afi(a),
                safi: Safi(s),
                subtype: st
            }
        )),
    ]
}

fn ctx(four_octet_as: bool, extended_message: bool) -> CodecContext {
    CodecContext {
        four_octet_as,
        extended_message,
    }
}

/// Encodes, checks framing, decodes; `None` when the message is too long for `ctx`.
fn round_trip(msg: &Message, ctx: &CodecContext) -> Option<Message> {
    let mut out = BytesMut::new();
    match msg.encode(ctx, &mut out) {
        Ok(()) => {}
        Err(EncodeError::MessageTooLong { length, max, .. }) => {
            assert!(length > max);
            assert!(
                out.is_empty(),
                "a failed encode leaves the buffer as it was"
            );
            return None;
        }
        Err(e) => panic!("encode failed: {e}"),
    }
    assert!(out.len() <= ctx.max_message_len());
    assert_eq!(frame_len(&out, ctx).unwrap(), Some(out.len()));
    Some(Message::decode(&out, ctx).unwrap_or_else(|e| panic!("decode of {out:02x?}: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips_in_a_four_octet_session(msg in message(true), ext in any::<bool>()) {
        let c = ctx(true, ext);
        if let Some(back) = round_trip(&msg, &c) {
            prop_assert_eq!(back, msg);
        }
    }

    #[test]
    fn every_message_round_trips_in_a_two_octet_session(msg in message(false), ext in any::<bool>()) {
        let c = ctx(false, ext);
        if let Some(back) = round_trip(&msg, &c) {
            prop_assert_eq!(back, msg);
        }
    }

    #[test]
    fn every_attribute_round_trips_alone(attrs in path_attributes(false), four in any::<bool>()) {
        // One attribute at a time, so a failure names the attribute.
        let full = Update { attributes: attrs, ..Update::default() };
        let singles = split_attributes(&full.attributes);
        for single in singles {
            let msg = Message::Update(Update { attributes: single, ..Update::default() });
            if let Some(back) = round_trip(&msg, &ctx(four, true)) {
                prop_assert_eq!(back, msg);
            }
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
        for c in [ctx(false, false), ctx(true, true)] {
            let _ = frame_len(&bytes, &c);
            let _ = Message::decode(&bytes, &c);
            let _ = Update::decode(&bytes, &c);
        }
    }

    #[test]
    fn decode_never_panics_after_a_valid_header(
        kind in 1u8..=5,
        body in prop::collection::vec(any::<u8>(), 0..3000),
        four in any::<bool>(),
    ) {
        let frame = with_header(kind, &body);
        let c = ctx(four, true);
        if let Ok(Some(len)) = frame_len(&frame, &c) {
            prop_assert_eq!(len, frame.len());
            let _ = Message::decode(&frame, &c);
            let _ = Update::decode(&frame, &c);
        }
    }

    #[test]
    fn decode_never_panics_on_update_attributes(attrs in prop::collection::vec(any::<u8>(), 0..3000), four in any::<bool>()) {
        let frame = update_with_attributes(&attrs, &[]);
        let c = ctx(four, true);
        if let Ok(d) = Update::decode(&frame, &c) {
            // What decodes must re-encode and decode to the same value.
            let msg = Message::Update(d.update.clone());
            if let Some(Message::Update(back)) = round_trip(&msg, &c) {
                prop_assert_eq!(back, d.update);
            }
        }
    }

    #[test]
    fn shutdown_message_survives_up_to_255_octets(text in ".{0,300}") {
        let n = Notification::admin_shutdown(&text);
        let got = n.shutdown_message().unwrap();
        prop_assert!(got.len() <= 255);
        prop_assert!(text.starts_with(&got));
        prop_assert!(text.len() <= 255 || got.len() > 255 - 4, "cut at most one character");
        prop_assert_eq!(n.data[0] as usize, got.len());
    }
}

/// Every attribute of `a` alone in its own PathAttributes.
fn split_attributes(a: &PathAttributes) -> Vec<PathAttributes> {
    let d = PathAttributes::default;
    let mut v = vec![
        PathAttributes {
            origin: a.origin,
            ..d()
        },
        PathAttributes {
            as_path: a.as_path.clone(),
            ..d()
        },
        PathAttributes {
            next_hop: a.next_hop,
            ..d()
        },
        PathAttributes { med: a.med, ..d() },
        PathAttributes {
            local_pref: a.local_pref,
            ..d()
        },
        PathAttributes {
            atomic_aggregate: a.atomic_aggregate,
            ..d()
        },
        PathAttributes {
            aggregator: a.aggregator,
            ..d()
        },
        PathAttributes {
            communities: a.communities.clone(),
            ..d()
        },
        PathAttributes {
            large_communities: a.large_communities.clone(),
            ..d()
        },
        PathAttributes {
            mp_unreach: a.mp_unreach.clone(),
            ..d()
        },
        PathAttributes {
            unknown: a.unknown.clone(),
            ..d()
        },
    ];
    if let Some(mp) = &a.mp_reach {
        // MP_REACH_NLRI needs ORIGIN and AS_PATH (RFC 4760 §3).
        v.push(PathAttributes {
            mp_reach: Some(mp.clone()),
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            ..d()
        });
    }
    v
}

fn with_header(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 16];
    f.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    f.push(kind);
    f.extend_from_slice(body);
    f
}

fn update_with_attributes(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    with_header(2, &body)
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

/// An UPDATE frame from hand-written attribute and NLRI octets; the two lengths it needs
/// (message length, Total Path Attribute Length) are computed.
fn update_hex(attrs: &str, nlri: &str) -> Vec<u8> {
    update_with_attributes(&hex(attrs), &hex(nlri))
}

/// Checks `bytes` decode to `msg` and `msg` encodes to `bytes`.
fn both_ways(bytes: &[u8], msg: &Message, c: &CodecContext) {
    assert_eq!(Message::decode(bytes, c).unwrap(), *msg, "decode");
    let mut out = BytesMut::new();
    msg.encode(c, &mut out).unwrap();
    assert_eq!(&out[..], bytes, "encode");
}

// ---------- byte vectors, checked by hand against RFC 4271 §4 diagrams ----------

#[test]
fn keepalive_is_a_bare_19_octet_header() {
    both_ways(
        &hex(&format!("{MARKER} 0013 04")),
        &Message::Keepalive,
        &CodecContext::PRE_OPEN,
    );
}

#[test]
fn open_with_multiprotocol_route_refresh_and_four_octet_as_matches_rfc_layout() {
    let bytes = hex(&format!(
        "{MARKER} 002d 01 04 fde9 00b4 c0000201 10 02 0e 01040001 0001 0200 4104 0000fde9"
    ));
    let open = Open::new(
        65001,
        180,
        Ipv4Addr::new(192, 0, 2, 1),
        vec![
            Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs(65001),
        ],
    );
    both_ways(
        &bytes,
        &Message::Open(open.clone()),
        &CodecContext::PRE_OPEN,
    );
    assert_eq!(open.asn(), 65001);
}

#[test]
fn open_with_a_four_octet_asn_sends_as_trans_in_my_as() {
    let open = Open::new(
        4_200_000_000,
        90,
        Ipv4Addr::new(192, 0, 2, 1),
        vec![Capability::FourOctetAs(4_200_000_000)],
    );
    assert_eq!(open.my_as, AS_TRANS);
    let bytes = hex(&format!(
        "{MARKER} 0025 01 04 5ba0 005a c0000201 08 02 06 4104 fa56ea00"
    ));
    both_ways(
        &bytes,
        &Message::Open(open.clone()),
        &CodecContext::PRE_OPEN,
    );
    assert_eq!(open.asn(), 4_200_000_000);
}

#[test]
fn open_graceful_restart_capability_encodes_restart_flags_time_and_f_bit() {
    // RFC 4724 §3: R bit, restart time 120, IPv4 unicast with forwarding preserved.
    let gr = Capability::GracefulRestart(GracefulRestart {
        restart_state: true,
        notification: false,
        restart_time: 120,
        families: vec![GracefulRestartFamily {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
            forwarding_preserved: true,
        }],
    });
    let open = Open::new(65001, 90, Ipv4Addr::new(192, 0, 2, 1), vec![gr]);
    let bytes = hex(&format!(
        "{MARKER} 0027 01 04 fde9 005a c0000201 0a 02 08 4006 8078 0001 01 80"
    ));
    both_ways(&bytes, &Message::Open(open), &CodecContext::PRE_OPEN);
}

#[test]
fn open_with_rfc9072_extended_optional_parameters_decodes() {
    // Non-Ext OP Len 255, Non-Ext OP Type 255, Extended Opt. Parm. Length 9, then one
    // capabilities parameter with a 2-octet length of 6 holding a 4-octet AS capability.
    let bytes = hex(&format!(
        "{MARKER} 0029 01 04 fde9 005a c0000201 ff ff 0009 02 0006 4104 0000fde9"
    ));
    let Message::Open(open) = Message::decode(&bytes, &CodecContext::PRE_OPEN).unwrap() else {
        panic!()
    };
    assert_eq!(open.capabilities, vec![Capability::FourOctetAs(65001)]);
}

#[test]
fn open_with_many_capabilities_uses_the_rfc9072_form_and_round_trips() {
    let caps: Vec<_> = (0..30)
        .map(|i| Capability::Unknown {
            code: 100 + i,
            value: Bytes::from(vec![i; 10]),
        })
        .collect();
    let open = Message::Open(Open::new(65001, 90, Ipv4Addr::new(192, 0, 2, 1), caps));
    let mut out = BytesMut::new();
    open.encode(&CodecContext::PRE_OPEN, &mut out).unwrap();
    assert_eq!(&out[28..30], &[0xff, 0xff], "extended form announced");
    assert_eq!(
        Message::decode(&out, &CodecContext::PRE_OPEN).unwrap(),
        open
    );
}

fn ipv4_announce() -> Update {
    Update {
        withdrawn: vec![],
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath {
                segments: vec![AsSegment {
                    kind: AsSegmentKind::Sequence,
                    asns: vec![65001],
                }],
            }),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..PathAttributes::default()
        },
        nlri: vec!["203.0.113.0/24".parse().unwrap()],
    }
}

#[test]
fn update_announcing_one_ipv4_prefix_matches_rfc_layout_four_octet() {
    let bytes = hex(&format!(
        "{MARKER} 002f 02 0000 0014 400101 00 400206 0201 0000fde9 400304 c0000201 18 cb0071"
    ));
    both_ways(&bytes, &Message::Update(ipv4_announce()), &ctx(true, false));
}

#[test]
fn update_announcing_one_ipv4_prefix_matches_rfc_layout_two_octet() {
    let bytes = hex(&format!(
        "{MARKER} 002d 02 0000 0012 400101 00 400204 0201 fde9 400304 c0000201 18 cb0071"
    ));
    both_ways(
        &bytes,
        &Message::Update(ipv4_announce()),
        &CodecContext::PRE_OPEN,
    );
}

#[test]
fn update_with_ipv6_global_and_link_local_next_hop_matches_rfc2545_layout() {
    let update = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            mp_reach: Some(MpReach {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
                next_hop: MpNextHop::V6 {
                    global: "2001:db8::1".parse().unwrap(),
                    link_local: Some("fe80::1".parse().unwrap()),
                },
                nlri: vec!["2001:db8:0:1::/64".parse().unwrap()],
            }),
            ..PathAttributes::default()
        },
        ..Update::default()
    };
    let bytes = update_hex(
        "800e2e 0002 01 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00 \
         40 20010db800000001 \
         400101 00 400200",
        "",
    );
    both_ways(&bytes, &Message::Update(update), &ctx(true, false));
}

#[test]
fn two_octet_session_sends_as_trans_and_as4_path_for_a_four_octet_asn() {
    // RFC 6793 §4.2.2: AS_PATH [65001 AS_TRANS], AS4_PATH [65001 4200000000],
    // AGGREGATOR AS_TRANS plus AS4_AGGREGATOR 4200000000.
    let mut u = ipv4_announce();
    u.attributes.as_path = Some(AsPath {
        segments: vec![AsSegment {
            kind: AsSegmentKind::Sequence,
            asns: vec![65001, 4_200_000_000],
        }],
    });
    u.attributes.aggregator = Some(Aggregator {
        asn: 4_200_000_000,
        address: Ipv4Addr::new(192, 0, 2, 9),
    });
    let bytes = update_hex(
        "400101 00 400206 0202 fde9 5ba0 400304 c0000201 \
         c00706 5ba0 c0000209 \
         c0110a 0202 0000fde9 fa56ea00 \
         c01208 fa56ea00 c0000209",
        "18 cb0071",
    );
    both_ways(&bytes, &Message::Update(u), &CodecContext::PRE_OPEN);
}

#[test]
fn as4_path_is_merged_after_asns_an_old_speaker_prepended() {
    // RFC 6793 §4.2.3: AS_PATH [100 AS_TRANS 65001] (100 prepended by an OLD speaker),
    // AS4_PATH [4200000000 65001] -> [100 4200000000 65001].
    let bytes = update_hex(
        "400101 00 400208 0203 0064 5ba0 fde9 400304 c0000201 c0110a 0202 fa56ea00 0000fde9",
        "18 cb0071",
    );
    let Message::Update(u) = Message::decode(&bytes, &CodecContext::PRE_OPEN).unwrap() else {
        panic!()
    };
    assert_eq!(
        u.attributes.as_path.unwrap().segments,
        vec![AsSegment {
            kind: AsSegmentKind::Sequence,
            asns: vec![100, 4_200_000_000, 65001]
        }]
    );
}

#[test]
fn as4_path_longer_than_as_path_is_ignored() {
    let bytes = update_hex(
        "400101 00 400204 0201 5ba0 400304 c0000201 c0110a 0202 fa56ea00 0000fde9",
        "18 cb0071",
    );
    let Message::Update(u) = Message::decode(&bytes, &CodecContext::PRE_OPEN).unwrap() else {
        panic!()
    };
    assert_eq!(
        u.attributes.as_path.unwrap().segments[0].asns,
        vec![u32::from(AS_TRANS)]
    );
}

#[test]
fn aggregator_other_than_as_trans_makes_as4_path_and_as4_aggregator_ignored() {
    let bytes = update_hex(
        "400101 00 400204 0201 5ba0 400304 c0000201 \
         c00706 fde9 c0000209 c01106 0201 fa56ea00 c01208 fa56ea00 c0000209",
        "18 cb0071",
    );
    let Message::Update(u) = Message::decode(&bytes, &CodecContext::PRE_OPEN).unwrap() else {
        panic!()
    };
    assert_eq!(
        u.attributes.as_path.unwrap().segments[0].asns,
        vec![u32::from(AS_TRANS)]
    );
    assert_eq!(u.attributes.aggregator.unwrap().asn, 65001);
}

#[test]
fn as4_path_from_a_four_octet_peer_is_discarded_without_error() {
    // RFC 6793 §4.1: between NEW speakers AS4_PATH is not used.
    let bytes = update_hex(
        "400101 00 400206 0201 0000fde9 400304 c0000201 c01106 0201 fa56ea00",
        "18 cb0071",
    );
    let d = Update::decode(&bytes, &ctx(true, false)).unwrap();
    assert_eq!(d.action, None);
    assert_eq!(
        d.update.attributes.as_path.unwrap().segments[0].asns,
        vec![65001]
    );
    assert!(d.update.attributes.unknown.is_empty());
}

#[test]
fn unknown_optional_transitive_attribute_passes_unharmed() {
    // Type 99, flags optional+transitive+partial, 3 octets; the low flag bits are ignored.
    let bytes = update_hex(
        "400101 00 400206 0201 0000fde9 400304 c0000201 e7 63 03 aabbcc",
        "18 cb0071",
    );
    let Message::Update(u) = Message::decode(&bytes, &ctx(true, false)).unwrap() else {
        panic!()
    };
    assert_eq!(
        u.attributes.unknown,
        vec![RawAttribute {
            flags: 0xe0,
            code: 99,
            value: Bytes::from_static(&[0xaa, 0xbb, 0xcc])
        }]
    );
    let mut out = BytesMut::new();
    Message::Update(u)
        .encode(&ctx(true, false), &mut out)
        .unwrap();
    let mut expected = bytes.clone();
    expected[19 + 4 + 20] = 0xe0; // the ignored low bits are sent as zero
    assert_eq!(&out[..], &expected[..]);
}

#[test]
fn attribute_value_over_255_octets_uses_extended_length() {
    let u = Update {
        attributes: PathAttributes {
            communities: (0..100).map(Community).collect(),
            ..PathAttributes::default()
        },
        ..Update::default()
    };
    let mut out = BytesMut::new();
    Message::Update(u.clone())
        .encode(&CodecContext::PRE_OPEN, &mut out)
        .unwrap();
    assert_eq!(
        &out[23..27],
        &[0xd0, 8, 0x01, 0x90],
        "O+T+E flags, type 8, length 400"
    );
    assert_eq!(
        Message::decode(&out, &CodecContext::PRE_OPEN).unwrap(),
        Message::Update(u)
    );
}

#[test]
fn notification_admin_shutdown_matches_rfc9003_layout() {
    let n = Notification::admin_shutdown("bye");
    both_ways(
        &hex(&format!("{MARKER} 0019 03 06 02 03 627965")),
        &Message::Notification(n.clone()),
        &CodecContext::PRE_OPEN,
    );
    assert_eq!(n.shutdown_message().as_deref(), Some("bye"));
    assert_eq!(
        n.to_string(),
        "Cease / Administrative Shutdown (6/2): \"bye\""
    );
}

#[test]
fn admin_shutdown_message_is_cut_on_a_character_boundary() {
    let text = "é".repeat(200); // 400 octets of 2-octet characters
    let n = Notification::admin_shutdown(&text);
    assert_eq!(n.data[0], 254);
    assert_eq!(n.shutdown_message().unwrap(), "é".repeat(127));
}

#[test]
fn shutdown_message_longer_than_its_data_is_ignored() {
    let n = Notification::new(6, 2, Bytes::from_static(&[5, b'a', b'b']));
    assert_eq!(n.shutdown_message(), None);
    assert_eq!(
        Notification::new(6, 3, Bytes::from_static(&[1, b'a'])).shutdown_message(),
        None
    );
}

#[test]
fn max_prefixes_notification_carries_afi_safi_and_limit() {
    let n = Notification::max_prefixes_reached(Afi::IPV6, Safi::UNICAST, 1000);
    assert_eq!((n.code, n.subcode), (6, 1));
    assert_eq!(&n.data[..], &[0, 2, 1, 0, 0, 0x03, 0xe8]);
    assert_eq!(
        n.to_string(),
        "Cease / Maximum Number of Prefixes Reached (6/1), data 000201000003e8"
    );
}

#[test]
fn notification_display_names_unknown_codes() {
    assert_eq!(
        Notification::new(99, 7, Bytes::new()).to_string(),
        "Unknown Error / Unknown Subcode (99/7)"
    );
    assert_eq!(
        Notification::new(3, 11, Bytes::new()).to_string(),
        "UPDATE Message Error / Malformed AS_PATH (3/11)"
    );
}

#[test]
fn route_refresh_matches_rfc2918_layout() {
    both_ways(
        &hex(&format!("{MARKER} 0017 05 0002 00 01")),
        &Message::RouteRefresh(RouteRefresh::new(Afi::IPV6, Safi::UNICAST)),
        &CodecContext::PRE_OPEN,
    );
}

#[test]
fn end_of_rib_is_an_empty_update_for_ipv4_and_mp_unreach_for_ipv6() {
    let c = ctx(true, false);
    for (family, hexed) in [
        (Family::Ipv4Unicast, format!("{MARKER} 0017 02 0000 0000")),
        (
            Family::Ipv6Unicast,
            format!("{MARKER} 001d 02 0000 0006 800f03 0002 01"),
        ),
    ] {
        let eor = Update::end_of_rib(family);
        assert_eq!(eor.is_end_of_rib(), Some(family));
        both_ways(&hex(&hexed), &Message::Update(eor), &c);
    }
    assert_eq!(ipv4_announce().is_end_of_rib(), None);
}

#[test]
fn encode_fails_with_sizes_when_the_message_exceeds_the_maximum() {
    let u = Update {
        nlri: (0..1100u32)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(i << 8), 32).unwrap())
            .collect(),
        ..ipv4_announce()
    };
    let mut out = BytesMut::from(&b"keep"[..]);
    let err = Message::Update(u.clone())
        .encode(&CodecContext::PRE_OPEN, &mut out)
        .unwrap_err();
    assert_eq!(
        err,
        EncodeError::MessageTooLong {
            message: "UPDATE",
            length: 19 + 4 + 18 + 1100 * 5,
            max: 4096
        }
    );
    assert_eq!(&out[..], b"keep");
    // The same UPDATE fits once both sides sent the Extended Message capability (RFC 8654).
    Message::Update(u)
        .encode(&ctx(true, true), &mut out)
        .unwrap();
}

// ---------- independent oracle: our encoder, netgauze-bgp-pkt's decoder ----------

mod oracle {
    use super::*;
    use netgauze_bgp_pkt::path_attribute::{
        Aggregator as NgAggregator, AsPath as NgAsPath, MpReach as NgMpReach,
        MpUnreach as NgMpUnreach, PathAttributeValue as V,
    };
    use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
    use netgauze_bgp_pkt::BgpMessage;
    use netgauze_parse_utils::reader::SliceReader;
    use netgauze_parse_utils::traits::ParseFromWithOneInput;
    use std::net::IpAddr;

    /// What both decoders must agree on.
    #[derive(Debug, PartialEq, Default)]
    struct Summary {
        withdrawn: Vec<IpNet>,
        nlri: Vec<IpNet>,
        origin: Option<u8>,
        as_path: Option<Vec<(u8, Vec<u32>)>>,
        next_hop: Option<Ipv4Addr>,
        med: Option<u32>,
        local_pref: Option<u32>,
        atomic_aggregate: bool,
        aggregator: Option<(u32, Ipv4Addr)>,
        communities: Vec<u32>,
        large: Vec<(u32, u32, u32)>,
        mp_reach: Option<(IpAddr, Option<Ipv6Addr>, Vec<IpNet>)>,
        mp_unreach: Option<Vec<IpNet>>,
    }

    fn ours(u: &Update) -> Summary {
        let a = &u.attributes;
        Summary {
            withdrawn: u.withdrawn.iter().map(|p| IpNet::V4(*p)).collect(),
            nlri: u.nlri.iter().map(|p| IpNet::V4(*p)).collect(),
            origin: a.origin.map(|o| o as u8),
            as_path: a.as_path.as_ref().map(|p| {
                p.segments
                    .iter()
                    .map(|s| (s.kind as u8, s.asns.clone()))
                    .collect()
            }),
            next_hop: a.next_hop,
            med: a.med,
            local_pref: a.local_pref,
            atomic_aggregate: a.atomic_aggregate,
            aggregator: a.aggregator.map(|g| (g.asn, g.address)),
            communities: a.communities.iter().map(|c| c.0).collect(),
            large: a
                .large_communities
                .iter()
                .map(|c| (c.global_admin, c.local_data1, c.local_data2))
                .collect(),
            mp_reach: a.mp_reach.as_ref().map(|m| match m.next_hop {
                MpNextHop::V4(v4) => (IpAddr::V4(v4), None, m.nlri.clone()),
                MpNextHop::V6 { global, link_local } => {
                    (IpAddr::V6(global), link_local, m.nlri.clone())
                }
            }),
            mp_unreach: a.mp_unreach.as_ref().map(|m| m.withdrawn.clone()),
        }
    }

    fn theirs(u: &netgauze_bgp_pkt::update::BgpUpdateMessage) -> Summary {
        let mut s = Summary {
            withdrawn: u
                .withdraw_routes()
                .iter()
                .map(|p| IpNet::V4(p.network().address()))
                .collect(),
            nlri: u
                .nlri()
                .iter()
                .map(|p| IpNet::V4(p.network().address()))
                .collect(),
            ..Summary::default()
        };
        for attr in u.path_attributes() {
            match attr.value() {
                V::Origin(o) => s.origin = Some(*o as u8),
                V::AsPath(NgAsPath::As4PathSegments(segs)) => {
                    s.as_path = Some(
                        segs.iter()
                            .map(|g| (u8::from(g.segment_type()), g.as_numbers().to_vec()))
                            .collect(),
                    )
                }
                V::AsPath(NgAsPath::As2PathSegments(segs)) => {
                    s.as_path = Some(
                        segs.iter()
                            .map(|g| {
                                let asns = g.as_numbers().iter().map(|a| u32::from(*a)).collect();
                                (u8::from(g.segment_type()), asns)
                            })
                            .collect(),
                    )
                }
                V::NextHop(n) => s.next_hop = Some(n.next_hop()),
                V::MultiExitDiscriminator(m) => s.med = Some(m.metric()),
                V::LocalPreference(l) => s.local_pref = Some(l.metric()),
                V::AtomicAggregate(_) => s.atomic_aggregate = true,
                V::Aggregator(NgAggregator::As4Aggregator(g)) => {
                    s.aggregator = Some((*g.asn(), g.origin()))
                }
                V::Aggregator(NgAggregator::As2Aggregator(g)) => {
                    s.aggregator = Some((u32::from(*g.asn()), g.origin()))
                }
                V::Communities(c) => {
                    s.communities = c.communities().iter().map(|c| c.value()).collect()
                }
                V::LargeCommunities(c) => {
                    s.large = c
                        .communities()
                        .iter()
                        .map(|c| (c.global_admin(), c.local_data1(), c.local_data2()))
                        .collect()
                }
                V::MpReach(NgMpReach::Ipv4Unicast {
                    next_hop,
                    next_hop_local,
                    nlri,
                }) => {
                    let nlri = nlri
                        .iter()
                        .map(|p| IpNet::V4(p.network().address()))
                        .collect();
                    s.mp_reach = Some((*next_hop, *next_hop_local, nlri));
                }
                V::MpReach(NgMpReach::Ipv6Unicast {
                    next_hop_global,
                    next_hop_local,
                    nlri,
                }) => {
                    let nlri = nlri
                        .iter()
                        .map(|p| IpNet::V6(p.network().address()))
                        .collect();
                    s.mp_reach = Some((IpAddr::V6(*next_hop_global), *next_hop_local, nlri));
                }
                V::MpUnreach(NgMpUnreach::Ipv4Unicast { nlri }) => {
                    s.mp_unreach = Some(
                        nlri.iter()
                            .map(|p| IpNet::V4(p.network().address()))
                            .collect(),
                    )
                }
                V::MpUnreach(NgMpUnreach::Ipv6Unicast { nlri }) => {
                    s.mp_unreach = Some(
                        nlri.iter()
                            .map(|p| IpNet::V6(p.network().address()))
                            .collect(),
                    )
                }
                other => panic!("netgauze decoded an attribute we did not send: {other:?}"),
            }
        }
        s
    }

    fn parse(bytes: &[u8], four_octet: bool) -> BgpMessage {
        let mut ctx = BgpParsingContext::default();
        ctx.set_asn4(four_octet);
        let mut reader = SliceReader::new(bytes);
        BgpMessage::parse(&mut reader, &mut ctx)
            .unwrap_or_else(|e| panic!("netgauze rejects {bytes:02x?}: {e:?}"))
    }

    /// UPDATEs netgauze can represent: no confederation segments (it has no type for them)
    /// and no unknown attributes (it knows codes we keep raw).
    fn update_for_oracle() -> impl Strategy<Value = Update> {
        update(true).prop_map(|mut u| {
            if let Some(p) = u.attributes.as_path.as_mut() {
                p.segments.retain(|s| !s.kind.is_confed());
            }
            u.attributes.unknown.clear();
            // netgauze refuses multicast networks as unicast NLRI.
            let unicast = |p: &IpNet| !p.addr().is_multicast();
            u.withdrawn.retain(|p| unicast(&IpNet::V4(*p)));
            u.nlri.retain(|p| unicast(&IpNet::V4(*p)));
            if let Some(m) = u.attributes.mp_reach.as_mut() {
                m.nlri.retain(unicast);
            }
            if let Some(m) = u.attributes.mp_unreach.as_mut() {
                m.withdrawn.retain(unicast);
            }
            u
        })
    }

    /// OPENs with the families netgauze knows (it rejects unknown AFIs in graceful restart)
    /// and unknown capabilities from an unassigned range.
    fn open_for_oracle() -> impl Strategy<Value = Open> {
        let family = prop_oneof![Just(Afi::IPV4), Just(Afi::IPV6)];
        let cap = prop_oneof![
            family.clone().prop_map(|afi| Capability::Multiprotocol {
                afi,
                safi: Safi::UNICAST
            }),
            Just(Capability::RouteRefresh),
            Just(Capability::ExtendedMessage),
            (1u32..).prop_map(Capability::FourOctetAs),
            (
                any::<bool>(),
                0u16..4096,
                prop::collection::vec((family, any::<bool>()), 0..3)
            )
                .prop_map(|(r, time, fams)| Capability::GracefulRestart(
                    GracefulRestart {
                        restart_state: r,
                        notification: false,
                        restart_time: time,
                        families: fams
                            .into_iter()
                            .map(|(afi, f)| GracefulRestartFamily {
                                afi,
                                safi: Safi::UNICAST,
                                forwarding_preserved: f
                            })
                            .collect(),
                    }
                )),
            (100u8..=120, prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(code, v)| {
                Capability::Unknown {
                    code,
                    value: Bytes::from(v),
                }
            }),
        ];
        (open(), prop::collection::vec(cap, 0..10)).prop_map(|(mut o, mut caps)| {
            // Two 4-octet AS capabilities are ambiguous: we take the first, netgauze the last.
            let mut seen_as4 = false;
            caps.retain(|c| {
                !matches!(c, Capability::FourOctetAs(_)) || !std::mem::replace(&mut seen_as4, true)
            });
            o.capabilities = caps;
            // RFC 6286 allows any non-zero identifier; netgauze insists on RFC 4271's unicast.
            if o.bgp_id.is_multicast() || o.bgp_id.is_broadcast() {
                o.bgp_id = Ipv4Addr::new(192, 0, 2, 1);
            }
            o
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn netgauze_decodes_our_updates_to_the_same_content(u in update_for_oracle()) {
            let ctx = CodecContext { four_octet_as: true, extended_message: true };
            let mut out = BytesMut::new();
            Message::Update(u.clone()).encode(&ctx, &mut out).unwrap();
            let BgpMessage::Update(theirs_u) = parse(&out, true) else { panic!("not an UPDATE") };
            prop_assert_eq!(theirs(&theirs_u), ours(&u));
        }

        #[test]
        fn netgauze_decodes_our_opens_to_the_same_header_and_capabilities(o in open_for_oracle()) {
            let mut out = BytesMut::new();
            Message::Open(o.clone()).encode(&CodecContext::PRE_OPEN, &mut out).unwrap();
            let BgpMessage::Open(theirs_o) = parse(&out, false) else { panic!("not an OPEN") };
            prop_assert_eq!((theirs_o.my_as(), theirs_o.hold_time(), theirs_o.bgp_id()), (o.my_as, o.hold_time, o.bgp_id));
            prop_assert_eq!(theirs_o.capabilities().len(), o.capabilities.len());
            prop_assert_eq!(theirs_o.my_asn4(), o.asn());
        }
    }

    #[test]
    fn netgauze_sees_end_of_rib_in_our_markers() {
        use netgauze_iana::address_family::AddressType;
        for (family, want) in [
            (Family::Ipv4Unicast, AddressType::Ipv4Unicast),
            (Family::Ipv6Unicast, AddressType::Ipv6Unicast),
        ] {
            let mut out = BytesMut::new();
            Message::Update(Update::end_of_rib(family))
                .encode(&CodecContext::PRE_OPEN, &mut out)
                .unwrap();
            let BgpMessage::Update(u) = parse(&out, false) else {
                panic!()
            };
            assert_eq!(u.end_of_rib(), Some(want));
        }
    }

    #[test]
    fn netgauze_decodes_our_packed_updates() {
        let ctx = CodecContext {
            four_octet_as: true,
            extended_message: false,
        };
        let prefixes: Vec<IpNet> = (0..3000u32)
            .map(|i| {
                IpNet::V6(
                    Ipv6Net::new(
                        Ipv6Addr::from((0x2001_0db8u128 << 96) + (u128::from(i) << 64)),
                        64,
                    )
                    .unwrap(),
                )
            })
            .collect();
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            ..PathAttributes::default()
        };
        let nh = MpNextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: Some("fe80::1".parse().unwrap()),
        };
        let mut out = BytesMut::new();
        let n =
            encode_announce(Family::Ipv6Unicast, &attrs, nh, &prefixes, &ctx, &mut out).unwrap();
        let mut rest = &out[..];
        let mut seen = Vec::new();
        for _ in 0..n {
            let len = frame_len(rest, &ctx).unwrap().unwrap();
            let BgpMessage::Update(u) = parse(&rest[..len], true) else {
                panic!()
            };
            seen.extend(theirs(&u).mp_reach.unwrap().2);
            rest = &rest[len..];
        }
        assert_eq!(seen, prefixes);
    }
}
