//! One test per validation rule, each asserting the exact text users see.

use super::*;
use crate::api::bgp_peer::SecretReference;
use crate::api::{CommunityAlias, ServiceAllocation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use k8s_openapi::jiff::Timestamp;

fn messages(problems: Vec<FieldError>) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

fn pool(addresses: &[&str]) -> IPAddressPoolSpec {
    IPAddressPoolSpec {
        addresses: addresses.iter().map(|s| s.to_string()).collect(),
        auto_assign: true,
        ..Default::default()
    }
}

fn peer() -> BGPPeerSpec {
    BGPPeerSpec {
        my_asn: 64512,
        peer_asn: 64513,
        peer_address: "192.0.2.1".into(),
        ..Default::default()
    }
}

fn ctx() -> Context {
    Context {
        namespace: "edgelb-system".into(),
        community_aliases: ["no-export".to_string()].into(),
        bfd_profiles: [
            ("fast".to_string(), true),
            ("broken".to_string(), false),
            ("echo".to_string(), true),
        ]
        .into(),
        bfd_echo_profiles: ["echo".to_string()].into(),
    }
}

#[test]
fn valid_pool_has_no_problems() {
    assert!(ip_address_pool(&pool(&["192.0.2.0/28", "2001:db8::10-2001:db8::1f"])).is_empty());
}

#[test]
fn pool_address_that_is_not_a_cidr_or_range_is_named() {
    assert_eq!(
        messages(ip_address_pool(&pool(&["192.0.2.0/28", "10.0.0.300/24"]))),
        vec![r#"spec.addresses[1]: "10.0.0.300/24" is not a CIDR or range"#]
    );
}

#[test]
fn pool_range_reversed_is_named() {
    assert_eq!(
        messages(ip_address_pool(&pool(&["192.0.2.9-192.0.2.1"]))),
        vec![r#"spec.addresses[0]: "192.0.2.9-192.0.2.1": first address is after the last"#]
    );
}

#[test]
fn pool_range_mixing_families_is_named() {
    assert_eq!(
        messages(ip_address_pool(&pool(&["192.0.2.1-2001:db8::1"]))),
        vec![r#"spec.addresses[0]: "192.0.2.1-2001:db8::1": mixes IPv4 and IPv6"#]
    );
}

#[test]
fn pool_overlapping_entries_are_named() {
    assert_eq!(
        messages(ip_address_pool(&pool(&[
            "192.0.2.0/28",
            "192.0.2.8-192.0.2.20"
        ]))),
        vec![
            r#"spec.addresses[1]: "192.0.2.8-192.0.2.20" overlaps spec.addresses[0] "192.0.2.0/28""#
        ]
    );
}

#[test]
fn pool_without_addresses_is_refused() {
    assert_eq!(
        messages(ip_address_pool(&pool(&[]))),
        vec!["spec.addresses: must list at least one CIDR or range"]
    );
}

#[test]
fn pool_bad_selector_and_negative_priority_are_named() {
    let mut spec = pool(&["192.0.2.0/28"]);
    spec.service_allocation = Some(ServiceAllocation {
        priority: Some(-1),
        service_selectors: vec![LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "Near".into(),
                values: None,
            }]),
            match_labels: None,
        }],
        ..Default::default()
    });
    assert_eq!(
        messages(ip_address_pool(&spec)),
        vec![
            r#"spec.serviceAllocation.serviceSelectors[0].matchExpressions[0].operator: "Near" is not In, NotIn, Exists or DoesNotExist"#,
            "spec.serviceAllocation.priority: -1 must not be negative",
        ]
    );
}

#[test]
fn pool_node_pool_scoping_problems_are_named() {
    let mut spec = pool(&["192.0.2.0/28"]);
    spec.node_pools = vec![
        "np-hefei".into(),
        "".into(),
        "np chengdu".into(),
        "np-hefei".into(),
        "-np".into(),
    ];
    spec.node_pool_selectors = vec![LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "k8s-svc".into(),
            operator: "In".into(),
            values: None,
        }]),
        match_labels: None,
    }];
    assert_eq!(
        messages(ip_address_pool(&spec)),
        vec![
            r#"spec.nodePoolSelectors[0].matchExpressions[0].operator: "In" needs at least one value"#,
            "spec.nodePools[1]: must not be empty",
            r#"spec.nodePools[2]: "np chengdu" is not a node pool name: only letters, digits, '-', '_' and '.' are allowed"#,
            r#"spec.nodePools[3]: "np-hefei" is listed twice"#,
            r#"spec.nodePools[4]: "-np" is not a node pool name: must start and end with a letter or digit"#,
        ]
    );
}

#[test]
fn pool_scoped_to_valid_node_pools_has_no_problems() {
    let mut spec = pool(&["192.0.2.0/28"]);
    spec.node_pools = vec!["np-hefei".into(), "cn.chengdu_1".into()];
    spec.node_pool_selectors = vec![LabelSelector {
        match_labels: Some([("k8s-svc".to_string(), "cube".to_string())].into()),
        match_expressions: None,
    }];
    assert!(ip_address_pool(&spec).is_empty());
    assert!(spec.is_node_pool_scoped());
    assert!(!pool(&["192.0.2.0/28"]).is_node_pool_scoped());
}

#[test]
fn valid_peer_has_no_problems() {
    let mut p = peer();
    p.hold_time = Some("90s".into());
    p.keepalive_time = Some("30s".into());
    p.source_address = Some("192.0.2.10".into());
    assert!(bgp_peer(&p, &ctx()).is_empty());
}

#[test]
fn peer_zero_asns_are_named() {
    let mut p = peer();
    p.my_asn = 0;
    p.peer_asn = 0;
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![
            "spec.myASN: 0 is not a valid AS number",
            "spec.peerASN: 0 is not a valid AS number"
        ]
    );
}

#[test]
fn peer_address_that_is_not_an_ip_is_named() {
    let mut p = peer();
    p.peer_address = "router.example".into();
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![r#"spec.peerAddress: "router.example" is not an IP address"#]
    );
}

#[test]
fn peer_source_address_of_other_family_is_named() {
    let mut p = peer();
    p.source_address = Some("2001:db8::1".into());
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![
            r#"spec.sourceAddress: "2001:db8::1" is not of the family of spec.peerAddress "192.0.2.1""#
        ]
    );
    p.source_address = Some("nope".into());
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![r#"spec.sourceAddress: "nope" is not an IP address"#]
    );
}

#[test]
fn peer_port_zero_is_refused() {
    let mut p = peer();
    p.peer_port = Some(0);
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec!["spec.peerPort: 0 is not a TCP port"]
    );
}

#[test]
fn peer_hold_time_below_three_seconds_is_refused() {
    let mut p = peer();
    p.hold_time = Some("2s".into());
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![r#"spec.holdTime: "2s" must be 0 or at least 3s (RFC 4271 4.2)"#]
    );
    p.hold_time = Some("0".into());
    assert!(bgp_peer(&p, &ctx()).is_empty());
}

#[test]
fn peer_hold_time_that_is_not_a_duration_is_named() {
    let mut p = peer();
    p.hold_time = Some("ninety".into());
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![r#"spec.holdTime: "ninety" is not a duration (e.g. 90s, 1m30s, 1.5s, 500ms)"#]
    );
    p.hold_time = Some("20h".into());
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![r#"spec.holdTime: "20h" must be between 3s and 65535s"#]
    );
}

#[test]
fn peer_keepalive_not_below_hold_time_is_refused() {
    let mut p = peer();
    p.hold_time = Some("1m".into());
    p.keepalive_time = Some("1m30s".into());
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![r#"spec.keepaliveTime: "1m30s" must be less than spec.holdTime "1m""#]
    );
    p.keepalive_time = Some("soon".into());
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![r#"spec.keepaliveTime: "soon" is not a duration (e.g. 90s, 1m30s, 1.5s, 500ms)"#]
    );
}

/// Values the speaker could not honour are refused with the field named, never truncated
/// into a session the speaker then refuses (issue 13).
#[test]
fn peer_timers_the_speaker_cannot_honour_are_named() {
    type Edit<'a> = &'a dyn Fn(&mut BGPPeerSpec);
    let cases: [(Edit, &str); 9] = [
        (
            &|p| p.keepalive_time = Some("500ms".into()),
            r#"spec.keepaliveTime: "500ms" is not a whole number of seconds, which BGP counts in (it would be 0)"#,
        ),
        (
            &|p| p.hold_time = Some("9.5s".into()),
            r#"spec.holdTime: "9.5s" is not a whole number of seconds, which BGP counts in (it would be 9s)"#,
        ),
        (
            &|p| p.keepalive_time = Some("90s".into()),
            r#"spec.keepaliveTime: "90s" must be less than spec.holdTime "90s (default)""#,
        ),
        (
            &|p| {
                p.hold_time = Some("0s".into());
                p.keepalive_time = Some("10s".into());
            },
            r#"spec.keepaliveTime: "10s" cannot be honoured: spec.holdTime 0 turns keepalives off"#,
        ),
        (
            &|p| p.hold_time = Some("1500ms".into()),
            r#"spec.holdTime: "1500ms" must be 0 or at least 3s (RFC 4271 4.2)"#,
        ),
        (
            &|p| p.connect_time = Some("0s".into()),
            r#"spec.connectTime: "0s" must be between 1s and 65535s"#,
        ),
        (
            &|p| p.open_wait_time = Some("10m".into()),
            r#"spec.openWaitTime: "10m" must be between 1s and 240s"#,
        ),
        (
            &|p| {
                p.enable_graceful_restart = true;
                p.graceful_restart_time = Some("2h".into());
            },
            r#"spec.gracefulRestartTime: "2h" must be between 1s and 4095s"#,
        ),
        (
            &|p| p.hold_time = Some("-9s".into()),
            r#"spec.holdTime: "-9s" must not be negative"#,
        ),
    ];
    for (edit, want) in cases {
        let mut p = peer();
        edit(&mut p);
        assert_eq!(messages(bgp_peer(&p, &ctx())), vec![want]);
    }
}

#[test]
fn peer_knobs_in_go_durations_are_accepted() {
    let mut p = peer();
    p.hold_time = Some("1m30s".into());
    p.keepalive_time = Some("1m".into());
    p.connect_time = Some("1.0s".into());
    p.open_wait_time = Some("1.5s".into());
    p.enable_graceful_restart = true;
    p.graceful_restart_time = Some("2m".into());
    p.enable_gtsm = true;
    p.passive = true;
    p.disable_mp = true;
    p.max_prefixes = Some(100);
    assert!(
        bgp_peer(&p, &ctx()).is_empty(),
        "{:?}",
        bgp_peer(&p, &ctx())
    );
}

#[test]
fn peer_knobs_that_exclude_each_other_are_named() {
    let mut p = peer();
    p.enable_gtsm = true;
    p.ebgp_multi_hop = true;
    p.graceful_restart_time = Some("60s".into());
    p.max_prefixes = Some(0);
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![
            r#"spec.gracefulRestartTime: "60s" is set but spec.enableGracefulRestart is false"#,
            "spec.enableGTSM: cannot be combined with spec.ebgpMultiHop: GTSM (RFC 5082) accepts only a directly connected peer",
            "spec.maxPrefixes: 0 would refuse every route; must be at least 1",
        ]
    );
}

#[test]
fn peer_router_id_must_be_ipv4() {
    let mut p = peer();
    p.router_id = Some("2001:db8::1".into());
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![r#"spec.routerID: "2001:db8::1" is not a dotted-quad IPv4 address"#]
    );
}

#[test]
fn peer_password_secret_outside_our_namespace_is_refused() {
    let mut p = peer();
    p.password_secret = Some(SecretReference {
        name: "bgp".into(),
        namespace: Some("default".into()),
    });
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![
            r#"spec.passwordSecret.namespace: "default" is not the speaker's namespace "edgelb-system""#
        ]
    );
    p.password_secret = Some(SecretReference {
        name: String::new(),
        namespace: None,
    });
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec!["spec.passwordSecret.name: must not be empty"]
    );
}

#[test]
fn peer_bad_node_selector_is_named() {
    let mut p = peer();
    p.node_selectors = vec![LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "zone".into(),
            operator: "Exists".into(),
            values: Some(vec!["a".into()]),
        }]),
        match_labels: None,
    }];
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        vec![r#"spec.nodeSelectors[0].matchExpressions[0].operator: "Exists" takes no values"#]
    );
}

#[test]
fn advertisement_aggregation_lengths_out_of_range_are_named() {
    let spec = BGPAdvertisementSpec {
        aggregation_length: Some(33),
        aggregation_length_v6: Some(129),
        ..Default::default()
    };
    assert_eq!(
        messages(bgp_advertisement(&spec, &ctx())),
        vec![
            "spec.aggregationLength: 33 is not between 0 and 32",
            "spec.aggregationLengthV6: 129 is not between 0 and 128"
        ]
    );
}

#[test]
fn advertisement_unknown_community_is_named_and_aliases_are_accepted() {
    let spec = BGPAdvertisementSpec {
        communities: vec![
            "65000:1".into(),
            "large:1:2:3".into(),
            "no-export".into(),
            "65536:1".into(),
        ],
        ..Default::default()
    };
    assert_eq!(
        messages(bgp_advertisement(&spec, &ctx())),
        vec![
            r#"spec.communities[3]: "65536:1" is not ASN:VALUE, large:A:B:C or a Community alias"#
        ]
    );
}

#[test]
fn l2_bad_interface_names_are_named() {
    let spec = L2AdvertisementSpec {
        interfaces: vec!["eth0".into(), "a/b".into(), "x".repeat(16)],
        ..Default::default()
    };
    assert_eq!(
        messages(l2_advertisement(&spec)),
        vec![
            r#"spec.interfaces[1]: "a/b" is not a valid interface name"#.to_string(),
            format!(
                "spec.interfaces[2]: {:?} is not a valid interface name",
                "x".repeat(16)
            ),
        ]
    );
}

#[test]
fn community_duplicate_and_bad_values_are_named() {
    let spec = CommunitySpec {
        communities: vec![
            CommunityAlias {
                name: "a".into(),
                value: "65000:1".into(),
            },
            CommunityAlias {
                name: "a".into(),
                value: "65000:2".into(),
            },
            CommunityAlias {
                name: "".into(),
                value: "large:1:2".into(),
            },
        ],
    };
    assert_eq!(
        messages(community(&spec)),
        vec![
            r#"spec.communities[1].name: "a" is defined twice"#,
            "spec.communities[2].name: must not be empty",
            r#"spec.communities[2].value: "large:1:2" is not ASN:VALUE or large:A:B:C"#,
        ]
    );
}

#[test]
fn durations_parse_like_go() {
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("300us"), Some(Duration::from_micros(300)));
    assert_eq!(parse_duration("s"), None);
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration(""), None);
}

#[test]
fn condition_says_valid_or_lists_every_problem_and_keeps_transition_time() {
    let t0 = Time(Timestamp::from_second(1_000).expect("ts"));
    let t1 = Time(Timestamp::from_second(2_000).expect("ts"));
    let ok = valid_condition(&[], Some(3), t0.clone(), &[]);
    assert_eq!(
        (ok.status.as_str(), ok.reason.as_str(), ok.message.as_str()),
        ("True", "Valid", "spec accepted")
    );
    assert_eq!(ok.observed_generation, Some(3));
    let again = valid_condition(&[], Some(4), t1.clone(), std::slice::from_ref(&ok));
    assert_eq!(
        again.last_transition_time, t0,
        "unchanged status keeps its transition time"
    );
    let problems = ip_address_pool(&pool(&["nope", "192.0.2.9-192.0.2.1"]));
    let bad = valid_condition(&problems, Some(5), t1.clone(), &[ok]);
    assert_eq!(bad.status, "False");
    assert_eq!(bad.reason, "InvalidSpec");
    assert_eq!(bad.last_transition_time, t1);
    assert_eq!(
        bad.message,
        r#"spec.addresses[0]: "nope" is not a CIDR or range; spec.addresses[1]: "192.0.2.9-192.0.2.1": first address is after the last"#
    );
}

#[test]
fn peer_naming_a_missing_or_invalid_bfd_profile_is_invalid() {
    let mut p = peer();
    p.bfd_profile = Some("fast".into());
    assert!(bgp_peer(&p, &ctx()).is_empty());
    p.bfd_profile = Some("nope".into());
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        ["spec.bfdProfile: no BFDProfile named \"nope\" in this namespace"]
    );
    p.bfd_profile = Some("broken".into());
    assert_eq!(
        messages(bgp_peer(&p, &ctx())),
        ["spec.bfdProfile: BFDProfile \"broken\" is not Valid (see its status)"]
    );
}

#[test]
fn bfd_profile_values_outside_metallb_ranges_name_the_field() {
    use crate::api::BFDProfileSpec;
    assert!(bfd_profile(&BFDProfileSpec::default()).is_empty());
    let bad = BFDProfileSpec {
        receive_interval: Some(5),
        transmit_interval: Some(60_001),
        detect_multiplier: Some(1),
        echo_interval: Some(0),
        minimum_ttl: Some(255),
        ..Default::default()
    };
    assert_eq!(
        messages(bfd_profile(&bad)),
        [
            "spec.receiveInterval: 5 is not between 10 and 60000",
            "spec.transmitInterval: 60001 is not between 10 and 60000",
            "spec.detectMultiplier: 1 is not between 2 and 255",
            "spec.echoInterval: 0 is not between 10 and 60000",
            "spec.minimumTtl: 255 is not between 1 and 254",
        ]
    );
}

#[test]
fn bfd_echo_mode_is_valid_for_single_hop_ipv4_peers_only() {
    let spec = crate::api::BFDProfileSpec {
        echo_mode: true,
        echo_interval: Some(50),
        ..Default::default()
    };
    assert!(messages(bfd_profile(&spec)).is_empty());
    let with = |edit: fn(&mut BGPPeerSpec)| {
        let mut s = peer();
        s.bfd_profile = Some("echo".into());
        edit(&mut s);
        messages(bgp_peer(&s, &ctx()))
    };
    assert!(with(|_| {}).is_empty(), "single-hop IPv4 eBGP");
    assert!(
        with(|s| {
            s.ebgp_multi_hop = true;
            s.peer_asn = s.my_asn;
        })
        .is_empty(),
        "iBGP runs single-hop BFD whatever ebgpMultiHop says"
    );
    assert_eq!(
        with(|s| s.ebgp_multi_hop = true),
        ["spec.bfdProfile: BFDProfile \"echo\" has echoMode, but this eBGP peer is multihop (spec.ebgpMultiHop) and BFD Echo is single hop only (RFC 5883)"]
    );
    assert_eq!(
        with(|s| s.peer_address = "2001:db8::1".into()),
        ["spec.bfdProfile: BFDProfile \"echo\" has echoMode, which edgelb implements for IPv4 peers only"]
    );
}
