use super::*;
use crate::api::bgp_peer::SecretReference;
use crate::api::{BGPAdvertisementSpec, BGPPeerSpec, Community as CommunityObj, CommunityAlias};
use crate::fixtures;
use crate::ipam::allocate;
use crate::snapshot::{Object, Selection, Store};
use k8s_openapi::api::core::v1::Secret as K8sSecret;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

const NS: &str = "edgelb-system";

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

fn peer(name: &str, addr: &str, f: impl FnOnce(&mut BGPPeerSpec)) -> Object {
    let mut spec = BGPPeerSpec {
        my_asn: 64512,
        peer_asn: 64500,
        peer_address: addr.into(),
        ..Default::default()
    };
    f(&mut spec);
    Object::BGPPeer(BGPPeer {
        metadata: meta(NS, name),
        spec,
        status: None,
    })
}

fn adv(name: &str, f: impl FnOnce(&mut BGPAdvertisementSpec)) -> Object {
    let mut spec = BGPAdvertisementSpec::default();
    f(&mut spec);
    Object::BGPAdvertisement(BGPAdvertisement {
        metadata: meta(NS, name),
        spec,
        status: None,
    })
}

/// An EndpointSlice of `svc` with one endpoint per `(node, ready)`.
fn slice(svc: &str, name: &str, eps: &[(&str, bool)]) -> Object {
    let mut m = meta("default", name);
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        svc.to_string(),
    )]));
    Object::EndpointSlice(EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: Some(
            eps.iter()
                .enumerate()
                .map(|(i, (node, ready))| Endpoint {
                    addresses: vec![format!("10.0.0.{}", i + 1)],
                    node_name: Some(node.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: None,
    })
}

fn local(svc: k8s_openapi::api::core::v1::Service) -> k8s_openapi::api::core::v1::Service {
    let mut svc = svc;
    if let Some(s) = svc.spec.as_mut() {
        s.external_traffic_policy = Some("Local".into());
    }
    svc
}

fn base() -> Vec<Object> {
    vec![
        Object::IPAddressPool(fixtures::pool(NS, "lan", &["198.51.100.10-198.51.100.20"])),
        Object::Node(fixtures::node("node-a", &[("rack", "1")])),
        Object::Node(fixtures::node("node-b", &[("rack", "2")])),
        Object::Service(fixtures::service("default", "web", 80)),
        slice("web", "web-1", &[("node-a", true)]),
    ]
}

fn run(objects: Vec<Object>, node: &str) -> BgpPlan {
    let mut store = Store::default();
    for o in objects {
        store.apply(o, NS);
    }
    let snap = store.snapshot(&Selection::default());
    let a = allocate(&snap, &Assignments::default());
    let mut me = NodeFacts::from_snapshot(&snap, node, &[]);
    me.addresses.push("192.0.2.11".parse().unwrap());
    plan(&snap, &a, &me, &BgpDefaults::default())
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn prefixes(p: &BgpPlan, peer: &str) -> Vec<String> {
    p.peers[&addr(peer)]
        .routes
        .keys()
        .map(|k| k.to_string())
        .collect()
}

#[test]
fn cluster_service_is_announced_to_every_peer_with_a_host_route() {
    let mut objs = base();
    objs.push(peer("r1", "192.0.2.1", |_| {}));
    objs.push(peer("r2", "192.0.2.2", |_| {}));
    objs.push(adv("all", |_| {}));
    for node in ["node-a", "node-b"] {
        let p = run(objs.clone(), node);
        assert_eq!(
            prefixes(&p, "192.0.2.1"),
            vec!["198.51.100.10/32"],
            "{node}"
        );
        assert_eq!(
            prefixes(&p, "192.0.2.2"),
            vec!["198.51.100.10/32"],
            "{node}"
        );
        let c = &p.peers[&addr("192.0.2.1")].config;
        assert_eq!((c.local_as, c.remote_as), (64512, 64500));
        assert_eq!(c.router_id, Some("192.0.2.11".parse().unwrap()));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }
}

#[test]
fn no_advertisement_opens_sessions_but_announces_nothing() {
    let mut objs = base();
    objs.push(peer("r1", "192.0.2.1", |_| {}));
    let p = run(objs, "node-a");
    assert!(p.peers[&addr("192.0.2.1")].routes.is_empty());
}

#[test]
fn cluster_service_without_ready_endpoints_is_not_announced() {
    let mut objs = base();
    objs.pop();
    objs.push(slice("web", "web-1", &[("node-a", false)]));
    objs.push(peer("r1", "192.0.2.1", |_| {}));
    objs.push(adv("all", |_| {}));
    assert!(run(objs, "node-b").peers[&addr("192.0.2.1")]
        .routes
        .is_empty());
}

#[test]
fn local_service_is_announced_only_by_nodes_with_a_ready_endpoint() {
    let mut objs = base();
    objs[3] = Object::Service(local(fixtures::service("default", "web", 80)));
    objs.push(peer("r1", "192.0.2.1", |_| {}));
    objs.push(adv("all", |_| {}));
    assert_eq!(
        prefixes(&run(objs.clone(), "node-a"), "192.0.2.1"),
        vec!["198.51.100.10/32"]
    );
    assert!(prefixes(&run(objs.clone(), "node-b"), "192.0.2.1").is_empty());
    // The endpoint moves to node-b: so does the announcement.
    objs[4] = slice("web", "web-1", &[("node-a", false), ("node-b", true)]);
    assert!(prefixes(&run(objs.clone(), "node-a"), "192.0.2.1").is_empty());
    assert_eq!(
        prefixes(&run(objs, "node-b"), "192.0.2.1"),
        vec!["198.51.100.10/32"]
    );
}

#[test]
fn peer_node_selectors_decide_which_nodes_open_the_session() {
    let mut objs = base();
    objs.push(peer("r1", "192.0.2.1", |s| {
        s.node_selectors = vec![LabelSelector {
            match_labels: Some(BTreeMap::from([("rack".into(), "1".into())])),
            match_expressions: None,
        }]
    }));
    assert!(run(objs.clone(), "node-a")
        .peers
        .contains_key(&addr("192.0.2.1")));
    assert!(run(objs, "node-b").peers.is_empty());
}

#[test]
fn advertisement_attributes_aggregation_and_peer_selection() {
    let mut objs = base();
    objs.push(peer("r1", "192.0.2.1", |_| {}));
    objs.push(peer("r2", "192.0.2.2", |_| {}));
    objs.push(Object::Community(CommunityObj {
        metadata: meta(NS, "aliases"),
        spec: crate::api::CommunitySpec {
            communities: vec![CommunityAlias {
                name: "no-export".into(),
                value: "65535:65281".into(),
            }],
        },
        status: None,
    }));
    objs.push(adv("only-r2", |s| {
        s.peers = vec!["r2".into()];
        s.aggregation_length = Some(24);
        s.local_pref = Some(200);
        s.communities = vec![
            "64512:7".into(),
            "large:64512:1:2".into(),
            "no-export".into(),
        ];
    }));
    let p = run(objs, "node-a");
    assert!(prefixes(&p, "192.0.2.1").is_empty());
    assert_eq!(prefixes(&p, "192.0.2.2"), vec!["198.51.100.0/24"]);
    let attrs = p.peers[&addr("192.0.2.2")]
        .routes
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(attrs.local_pref, Some(200));
    assert_eq!(
        attrs.communities,
        vec![Community((64512 << 16) | 7), Community(0xffff_ff01)]
    );
    assert_eq!(
        attrs.large_communities,
        vec![LargeCommunity {
            global_admin: 64512,
            local_data1: 1,
            local_data2: 2
        }]
    );
}

#[test]
fn two_advertisements_for_one_prefix_merge_communities_and_keep_the_higher_local_pref() {
    let mut objs = base();
    objs.push(peer("r1", "192.0.2.1", |_| {}));
    objs.push(adv("a", |s| {
        s.communities = vec!["1:1".into()];
        s.local_pref = Some(50);
    }));
    objs.push(adv("b", |s| {
        s.communities = vec!["2:2".into(), "1:1".into()];
        s.local_pref = Some(150);
    }));
    let p = run(objs, "node-a");
    let attrs = p.peers[&addr("192.0.2.1")]
        .routes
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(
        attrs.communities,
        vec![Community(0x0001_0001), Community(0x0002_0002)]
    );
    assert_eq!(attrs.local_pref, Some(150));
}

#[test]
fn advertisement_for_another_pool_or_node_announces_nothing() {
    let mut objs = base();
    objs.push(peer("r1", "192.0.2.1", |_| {}));
    objs.push(adv("other-pool", |s| {
        s.ip_address_pools = vec!["wan".into()]
    }));
    objs.push(adv("rack-2", |s| {
        s.node_selectors = vec![LabelSelector {
            match_labels: Some(BTreeMap::from([("rack".into(), "2".into())])),
            match_expressions: None,
        }]
    }));
    assert!(prefixes(&run(objs.clone(), "node-a"), "192.0.2.1").is_empty());
    assert_eq!(
        prefixes(&run(objs, "node-b"), "192.0.2.1"),
        vec!["198.51.100.10/32"]
    );
}

#[test]
fn password_comes_from_the_secret_and_a_missing_one_keeps_the_session_closed() {
    let mut objs = base();
    objs.push(peer("r1", "192.0.2.1", |s| {
        s.password_secret = Some(SecretReference {
            name: "bgp-auth".into(),
            namespace: None,
        })
    }));
    let p = run(objs.clone(), "node-a");
    assert!(p.peers.is_empty());
    assert!(matches!(
        p.problems[..],
        [BgpProblem::MissingPassword { .. }]
    ));
    objs.push(Object::Secret(K8sSecret {
        metadata: meta(NS, "bgp-auth"),
        string_data: Some(BTreeMap::from([("password".into(), "s3cret".into())])),
        ..Default::default()
    }));
    let p = run(objs, "node-a");
    let c = &p.peers[&addr("192.0.2.1")].config;
    assert_eq!(c.password.as_ref().map(|s| s.expose()), Some("s3cret"));
    assert!(!format!("{p:?}").contains("s3cret"));
}

#[test]
fn session_fields_come_from_the_peer_object() {
    let mut objs = base();
    objs.push(peer("r1", "192.0.2.1", |s| {
        s.peer_port = Some(1179);
        s.hold_time = Some("9s".into());
        s.keepalive_time = Some("3s".into());
        s.router_id = Some("10.9.9.9".into());
        s.ebgp_multi_hop = true;
        s.enable_graceful_restart = true;
    }));
    let p = run(objs, "node-a");
    let c = &p.peers[&addr("192.0.2.1")].config;
    assert_eq!(c.port, 1179);
    assert_eq!(c.hold_time, 9);
    assert_eq!(c.keepalive, Some(3));
    assert_eq!(c.router_id, Some("10.9.9.9".parse().unwrap()));
    assert_eq!(c.ebgp_multihop, Some(255));
    assert!(c.graceful_restart.is_some());
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn every_session_knob_reaches_the_speaker_as_written() {
    let mut objs = base();
    objs.push(peer("r1", "192.0.2.1", |s| {
        s.hold_time = Some("30s".into());
        s.keepalive_time = Some("20s".into());
        s.connect_time = Some("7s".into());
        s.open_wait_time = Some("1.5s".into());
        s.enable_gtsm = true;
        s.passive = true;
        s.max_prefixes = Some(10);
        s.enable_graceful_restart = true;
        s.graceful_restart_time = Some("45s".into());
    }));
    objs.push(peer("r2", "192.0.2.2", |s| s.disable_mp = true));
    let p = run(objs, "node-a");
    let c = &p.peers[&addr("192.0.2.1")].config;
    // keepalive 20 s with hold 30 s: kept, not cut to a third.
    assert_eq!((c.hold_time, c.keepalive), (30, Some(20)));
    assert_eq!(c.connect_retry, std::time::Duration::from_secs(7));
    assert_eq!(c.open_wait, std::time::Duration::from_millis(1500));
    assert!(c.gtsm && c.passive && c.import);
    assert_eq!(c.max_prefixes, Some(10));
    let gr = c.graceful_restart.expect("graceful restart");
    assert_eq!(gr.restart_time, 45);
    assert!(gr.forwarding_preserved && gr.notification && !gr.restarting);
    assert_eq!(
        c.families,
        vec![
            edgelb_bgp::packet::Family::Ipv4Unicast,
            edgelb_bgp::packet::Family::Ipv6Unicast
        ]
    );
    assert_eq!(c.validate(), Ok(()));
    let c2 = &p.peers[&addr("192.0.2.2")].config;
    assert_eq!(c2.families, vec![edgelb_bgp::packet::Family::Ipv4Unicast]);
}

#[test]
fn duplicate_peer_addresses_keep_the_first() {
    let mut objs = base();
    objs.push(peer("a", "192.0.2.1", |_| {}));
    objs.push(peer("b", "192.0.2.1", |s| s.peer_asn = 64999));
    let p = run(objs, "node-a");
    assert_eq!(p.peers[&addr("192.0.2.1")].config.remote_as, 64500);
    assert!(matches!(
        p.problems[..],
        [BgpProblem::DuplicateAddress { .. }]
    ));
}

#[test]
fn plan_is_deterministic_and_unchanged_input_gives_equal_output() {
    let mut objs = base();
    objs.push(peer("r1", "192.0.2.1", |_| {}));
    objs.push(adv("all", |_| {}));
    assert_eq!(run(objs.clone(), "node-a"), run(objs, "node-a"));
}

#[test]
fn community_parsing() {
    assert_eq!(
        parse_community("65535:65281"),
        Some(Parsed::Standard(Community(0xffff_ff01)))
    );
    assert_eq!(parse_community("65536:1"), None);
    assert_eq!(parse_community("large:1:2"), None);
    assert_eq!(parse_community("large:1:2:3:4"), None);
    assert!(matches!(
        parse_community("large:1:2:3"),
        Some(Parsed::Large(_))
    ));
}

/// `node-a` as in `base()`, changed by `f`.
fn node_a(f: impl FnOnce(&mut k8s_openapi::api::core::v1::Node)) -> Vec<Object> {
    let mut objs = base();
    let mut n = fixtures::node("node-a", &[("rack", "1")]);
    f(&mut n);
    objs[1] = Object::Node(n);
    objs.push(peer("r1", "192.0.2.1", |_| {}));
    objs.push(adv("all", |_| {}));
    objs
}

type NodeEdit = dyn Fn(&mut k8s_openapi::api::core::v1::Node);

fn set_condition(n: &mut k8s_openapi::api::core::v1::Node, kind: &str, status: &str) {
    let status_obj = n.status.get_or_insert_with(Default::default);
    status_obj.conditions.get_or_insert_with(Vec::new).push(
        k8s_openapi::api::core::v1::NodeCondition {
            type_: kind.into(),
            status: status.into(),
            ..Default::default()
        },
    );
}

#[test]
fn a_node_below_the_floor_keeps_its_session_and_announces_nothing() {
    let healthy = run(node_a(|_| {}), "node-a");
    assert_eq!(prefixes(&healthy, "192.0.2.1"), ["198.51.100.10/32"]);
    assert!(healthy.problems.is_empty(), "{:?}", healthy.problems);

    let cases: [(&str, Box<NodeEdit>); 3] = [
        (
            "excludedByLabel",
            Box::new(|n| {
                n.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(
                        "node.kubernetes.io/exclude-from-external-load-balancers".into(),
                        String::new(),
                    );
            }),
        ),
        (
            "nodeNotReady",
            Box::new(|n| set_condition(n, "Ready", "False")),
        ),
        (
            "networkUnavailable",
            Box::new(|n| set_condition(n, "NetworkUnavailable", "True")),
        ),
    ];
    for (code, change) in cases {
        let p = run(node_a(|n| change(n)), "node-a");
        assert!(
            p.peers.contains_key(&addr("192.0.2.1")),
            "{code}: session dropped"
        );
        assert!(
            prefixes(&p, "192.0.2.1").is_empty(),
            "{code}: still announced"
        );
        assert_eq!(
            p.problems.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            [format!("node node-a announces nothing: {code}")]
        );
    }

    // Ready True and NetworkUnavailable False are no reason to stop.
    let fine = run(
        node_a(|n| {
            set_condition(n, "Ready", "True");
            set_condition(n, "NetworkUnavailable", "False");
        }),
        "node-a",
    );
    assert_eq!(prefixes(&fine, "192.0.2.1"), ["198.51.100.10/32"]);
}

fn bfd_profile(name: &str, f: impl FnOnce(&mut crate::api::BFDProfileSpec)) -> Object {
    let mut spec = crate::api::BFDProfileSpec::default();
    f(&mut spec);
    Object::BFDProfile(crate::api::BFDProfile {
        metadata: meta(NS, name),
        spec,
        status: None,
    })
}

#[test]
fn bfd_profile_sets_the_peers_bfd_single_hop_or_multihop() {
    let mut objs = base();
    objs.push(bfd_profile("fast", |p| {
        p.receive_interval = Some(100);
        p.transmit_interval = Some(50);
        p.detect_multiplier = Some(4);
        p.passive_mode = true;
    }));
    objs.push(bfd_profile("defaults", |_| {}));
    objs.push(peer("r1", "192.0.2.1", |s| {
        s.bfd_profile = Some("fast".into())
    }));
    objs.push(peer("r2", "192.0.2.2", |s| {
        s.bfd_profile = Some("defaults".into());
        s.ebgp_multi_hop = true;
    }));
    objs.push(peer("r3", "192.0.2.3", |_| {}));
    let p = run(objs, "node-a");
    let b = p.peers[&addr("192.0.2.1")].config.bfd.expect("bfd");
    assert_eq!(b.timers.desired_min_tx, Duration::from_millis(50));
    assert_eq!(b.timers.required_min_rx, Duration::from_millis(100));
    assert_eq!(b.timers.detect_mult, 4);
    assert!(b.timers.passive && !b.multihop);
    let b = p.peers[&addr("192.0.2.2")].config.bfd.expect("bfd");
    assert_eq!(b.timers.desired_min_tx, Duration::from_millis(300));
    assert_eq!((b.timers.detect_mult, b.minimum_ttl), (3, 254));
    assert!(b.multihop);
    assert_eq!(p.peers[&addr("192.0.2.3")].config.bfd, None);
}

#[test]
fn peer_with_a_missing_or_invalid_bfd_profile_is_not_opened() {
    let mut objs = base();
    objs.push(bfd_profile("bad", |p| p.detect_multiplier = Some(1)));
    objs.push(peer("r1", "192.0.2.1", |s| {
        s.bfd_profile = Some("nope".into())
    }));
    objs.push(peer("r2", "192.0.2.2", |s| {
        s.bfd_profile = Some("bad".into())
    }));
    let p = run(objs, "node-a");
    assert!(!p.peers.contains_key(&addr("192.0.2.1")));
    assert!(!p.peers.contains_key(&addr("192.0.2.2")));
}

#[test]
fn echo_mode_gives_single_hop_sessions_echo_at_the_echo_interval() {
    let mut objs = base();
    objs.push(bfd_profile("echo", |p| {
        p.echo_mode = true;
        p.echo_interval = Some(75);
    }));
    objs.push(bfd_profile("echo-default", |p| p.echo_mode = true));
    objs.push(bfd_profile("plain", |_| {}));
    objs.push(peer("r1", "192.0.2.1", |s| {
        s.bfd_profile = Some("echo".into())
    }));
    objs.push(peer("r2", "192.0.2.2", |s| {
        s.bfd_profile = Some("echo-default".into())
    }));
    objs.push(peer("r3", "192.0.2.3", |s| {
        s.bfd_profile = Some("plain".into())
    }));
    let p = run(objs, "node-a");
    let echo = |a: &str| p.peers[&addr(a)].config.bfd.expect("bfd").timers.echo;
    assert_eq!(echo("192.0.2.1"), Some(Duration::from_millis(75)));
    assert_eq!(
        echo("192.0.2.2"),
        Some(Duration::from_millis(50)),
        "MetalLB's default"
    );
    assert_eq!(echo("192.0.2.3"), None);
}
