//! Decodes every message captured from FRR 8.4, BIRD 2.0 and GoBGP 3.10 in the lab
//! (`bgp/tests/fixtures/*.hex`, see the README there for how they were captured) and checks
//! their content against what the routers were configured to send.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
use bytes::BytesMut;
use edgelb_bgp::packet::*;
use ipnet::IpNet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Sessions in the lab negotiated 4-octet AS; Extended Message only FRR offered.
const CTX: CodecContext = CodecContext {
    four_octet_as: true,
    extended_message: false,
};

fn load(name: &str) -> Message {
    let path = fixtures_dir().join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let bytes = hex(&text);
    assert_eq!(
        frame_len(&bytes, &CTX).unwrap(),
        Some(bytes.len()),
        "{name}: one whole message"
    );
    Message::decode(&bytes, &CTX).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn open(name: &str) -> Open {
    match load(name) {
        Message::Open(o) => o,
        other => panic!("{name}: not an OPEN: {other:?}"),
    }
}

fn update(name: &str) -> Update {
    match load(name) {
        Message::Update(u) => u,
        other => panic!("{name}: not an UPDATE: {other:?}"),
    }
}

fn community(asn: u16, value: u16) -> Community {
    Community((u32::from(asn) << 16) | u32::from(value))
}

fn large(g: u32, a: u32, b: u32) -> LargeCommunity {
    LargeCommunity {
        global_admin: g,
        local_data1: a,
        local_data2: b,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn unknown(code: u8, value: &[u8]) -> Capability {
    Capability::Unknown {
        code,
        value: bytes::Bytes::copy_from_slice(value),
    }
}

const MP_V4: Capability = Capability::Multiprotocol {
    afi: Afi::IPV4,
    safi: Safi::UNICAST,
};
const MP_V6: Capability = Capability::Multiprotocol {
    afi: Afi::IPV6,
    safi: Safi::UNICAST,
};

#[test]
fn every_fixture_decodes_and_round_trips() {
    let mut names: Vec<_> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 20,
        "expected the lab's captures, found {}",
        names.len()
    );
    for path in &names {
        let name = path.file_stem().unwrap().to_str().unwrap();
        let msg = load(name);
        // Our encoding may differ in octets (attribute order, Extended Length use), never in
        // meaning.
        let mut out = BytesMut::new();
        msg.encode(&CTX, &mut out).unwrap();
        assert_eq!(
            Message::decode(&out, &CTX).unwrap(),
            msg,
            "{name}: re-encoded"
        );
    }
    eprintln!("{} fixtures decoded and round-tripped", names.len());
}

#[test]
fn keepalives_and_end_of_rib_markers_from_all_routers() {
    for r in ["frr", "bird", "gobgp"] {
        assert_eq!(load(&format!("{r}_keepalive")), Message::Keepalive);
    }
    // GoBGP sent no End-of-RIB without graceful restart (see the fixtures README).
    for r in ["frr", "bird"] {
        assert_eq!(
            update(&format!("{r}_eor_ipv4")).is_end_of_rib(),
            Some(Family::Ipv4Unicast)
        );
        assert_eq!(
            update(&format!("{r}_eor_ipv6")).is_end_of_rib(),
            Some(Family::Ipv6Unicast)
        );
    }
}

#[test]
fn frr_open_carries_its_capabilities() {
    for (name, mp, afi) in [
        ("frr_open", MP_V4, Afi::IPV4),
        ("frr_open_ipv6_session", MP_V6, Afi::IPV6),
    ] {
        let o = open(name);
        assert_eq!(
            (o.asn(), o.hold_time, o.bgp_id),
            (65001, 180, Ipv4Addr::new(192, 0, 2, 1))
        );
        let add_path = [(afi.0 >> 8) as u8, afi.0 as u8, 1, 1];
        assert_eq!(
            o.capabilities,
            vec![
                mp,
                unknown(128, &[]), // Cisco's pre-standard route refresh
                Capability::RouteRefresh,
                unknown(70, &[]), // enhanced route refresh (RFC 7313)
                Capability::FourOctetAs(65001),
                Capability::ExtendedMessage,
                unknown(69, &add_path),      // ADD-PATH receive
                unknown(73, b"\x03frr\x00"), // FQDN: host "frr", no domain
                // FRR sets R and N at start-up (RFC 4724 §3, RFC 8538), restart time 120.
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: true,
                    notification: true,
                    restart_time: 120,
                    families: vec![],
                }),
                unknown(71, &[add_path[0], add_path[1], 1, 0x80, 0, 0, 0]), // long-lived GR
            ],
            "{name}"
        );
    }
}

#[test]
fn bird_open_carries_its_capabilities() {
    for (name, mp) in [("bird_open", MP_V4), ("bird_open_ipv6_session", MP_V6)] {
        let o = open(name);
        assert_eq!(
            (o.asn(), o.my_as, o.hold_time, o.bgp_id),
            (65001, 65001, 240, Ipv4Addr::new(192, 0, 2, 2))
        );
        assert_eq!(
            o.capabilities,
            vec![
                mp,
                Capability::RouteRefresh,
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: false,
                    notification: false,
                    restart_time: 120,
                    families: vec![],
                }),
                Capability::FourOctetAs(65001),
                unknown(70, &[]),
                unknown(71, &[]),
            ],
            "{name}"
        );
    }
}

#[test]
fn gobgp_open_carries_its_capabilities() {
    let o = open("gobgp_open");
    assert_eq!(
        (o.asn(), o.hold_time, o.bgp_id),
        (65001, 90, Ipv4Addr::new(192, 0, 2, 2))
    );
    assert_eq!(
        o.capabilities,
        vec![
            Capability::RouteRefresh,
            unknown(73, b"\x02vm\x00"),
            MP_V4,
            Capability::FourOctetAs(65001),
            // Extended next hop (RFC 8950): IPv4 unicast over an IPv6 next hop.
            unknown(5, &[0, 1, 0, 1, 0, 2]),
        ]
    );
    let o6 = open("gobgp_open_ipv6_session");
    assert!(o6.capabilities.contains(&MP_V6));
}

/// What the routers were told to announce (the fixtures README lists their configs).
struct Announce {
    origin: Origin,
    next_hop: &'static str,
    med: u32,
    local_pref: u32,
    communities: Vec<Community>,
    large: Vec<LargeCommunity>,
    prefix: &'static str,
}

fn check_announce(name: &str, want: Announce) {
    let u = update(name);
    let a = &u.attributes;
    assert_eq!(a.origin, Some(want.origin), "{name}");
    assert_eq!(
        a.as_path,
        Some(AsPath::default()),
        "{name}: iBGP, empty AS_PATH"
    );
    assert_eq!(
        (a.med, a.local_pref),
        (Some(want.med), Some(want.local_pref)),
        "{name}"
    );
    assert_eq!(a.communities, want.communities, "{name}");
    assert_eq!(a.large_communities, want.large, "{name}");
    assert!(
        a.unknown.is_empty() && a.aggregator.is_none() && !a.atomic_aggregate,
        "{name}"
    );
    match net(want.prefix) {
        IpNet::V4(p) => {
            assert_eq!(u.nlri, vec![p], "{name}");
            assert_eq!(a.next_hop, Some(want.next_hop.parse().unwrap()), "{name}");
            assert_eq!(a.mp_reach, None, "{name}");
        }
        p @ IpNet::V6(_) => {
            let global: Ipv6Addr = want.next_hop.parse().unwrap();
            assert_eq!(
                a.mp_reach,
                Some(MpReach {
                    afi: Afi::IPV6,
                    safi: Safi::UNICAST,
                    next_hop: MpNextHop::V6 {
                        global,
                        link_local: None
                    },
                    nlri: vec![p],
                }),
                "{name}"
            );
            assert!(u.nlri.is_empty() && a.next_hop.is_none(), "{name}");
        }
    }
}

#[test]
fn frr_updates_carry_the_route_map_attributes() {
    check_announce(
        "frr_update_ipv4",
        Announce {
            origin: Origin::Igp,
            next_hop: "192.0.2.1",
            med: 33,
            local_pref: 150,
            communities: vec![community(65001, 7), community(65001, 8)],
            large: vec![large(65001, 1, 1)],
            prefix: "203.0.113.0/24",
        },
    );
    check_announce(
        "frr_update_ipv6",
        Announce {
            origin: Origin::Igp,
            next_hop: "2001:db8::1",
            med: 34,
            local_pref: 160,
            communities: vec![community(65001, 9)],
            large: vec![large(65001, 6, 1)],
            prefix: "2001:db8:200::/48",
        },
    );
}

#[test]
fn bird_and_gobgp_updates_carry_the_configured_attributes() {
    for (router, origin) in [("bird", Origin::Igp), ("gobgp", Origin::Incomplete)] {
        check_announce(
            &format!("{router}_update_ipv4"),
            Announce {
                origin,
                next_hop: "192.0.2.2",
                med: 50,
                local_pref: 200,
                communities: vec![community(65001, 100), community(65001, 101)],
                large: vec![large(65001, 1, 2)],
                prefix: "198.51.100.0/24",
            },
        );
        check_announce(
            &format!("{router}_update_ipv6"),
            Announce {
                origin,
                next_hop: "2001:db8::2",
                med: 60,
                local_pref: 250,
                communities: vec![community(65001, 600)],
                large: vec![large(65001, 6, 6)],
                prefix: "2001:db8:100::/48",
            },
        );
    }
}

#[test]
fn withdrawals_from_all_routers() {
    for (router, v4, v6) in [
        ("frr", "203.0.113.0/24", "2001:db8:200::/48"),
        ("bird", "198.51.100.0/24", "2001:db8:100::/48"),
        ("gobgp", "198.51.100.0/24", "2001:db8:100::/48"),
    ] {
        let w4 = update(&format!("{router}_withdraw_ipv4"));
        assert_eq!(w4.withdrawn, vec![v4.parse().unwrap()], "{router}");
        assert_eq!(
            (w4.nlri.len(), w4.attributes.clone()),
            (0, PathAttributes::default())
        );
        let w6 = update(&format!("{router}_withdraw_ipv6"));
        assert_eq!(
            w6.attributes.mp_unreach,
            Some(MpUnreach {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
                withdrawn: vec![net(v6)]
            }),
            "{router}"
        );
        assert_eq!(w6.is_end_of_rib(), None);
    }
}

#[test]
fn cease_notifications_and_the_frr_shutdown_communication() {
    for r in ["frr", "bird", "gobgp"] {
        let Message::Notification(n) = load(&format!("{r}_notification_cease")) else {
            panic!("{r}")
        };
        assert_eq!(
            (n.code, n.subcode),
            (6, 2),
            "{r}: Cease / Administrative Shutdown"
        );
    }
    let Message::Notification(n) = load("frr_notification_cease_message") else {
        panic!()
    };
    assert_eq!(n.shutdown_message().as_deref(), Some("edgelb lab"));
    assert_eq!(
        n.to_string(),
        "Cease / Administrative Shutdown (6/2): \"edgelb lab\""
    );
}
