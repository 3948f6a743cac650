//! Node pools in the planners: a pool's IP is elected, owned (L2) and announced (BGP) only
//! by nodes of that pool; failover stays inside the pool; `openyurt.io/topologyKeys` counts
//! only the pool's endpoints; unrelated changes never move an IP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;

use crate::api::annotations::{NODEPOOL_LABEL, NODEPOOL_SELECTOR};
use crate::api::{
    BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec, L2Advertisement,
    L2AdvertisementSpec,
};
use crate::election::{ElectionView, ExclusionReason, InterfaceFacts, ModeKind};
use crate::fixtures::{annotate, endpoint_slice, node, node_pool, scoped_pool, service};
use crate::ipam::{allocate, AllocationKey, Assignments};
use crate::plan::bgp::{self, BgpDefaults, NodeFacts};
use crate::plan::endpoints::TOPOLOGY_KEYS;
use crate::plan::l2::{self, L2Node, Members};
use crate::snapshot::{Object, ObjectKey, Selection, Snapshot, Store};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

const NS: &str = "edgelb-system";
const HF: [&str; 2] = ["hf-1", "hf-2"];
const CD: [&str; 2] = ["cd-1", "cd-2"];

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        ..Default::default()
    }
}

fn subnet_of(n: &str) -> &'static str {
    if n.starts_with("hf") {
        "192.0.2.0/24"
    } else {
        "198.51.100.0/24"
    }
}

fn iface(n: &str) -> Vec<InterfaceFacts> {
    vec![InterfaceFacts {
        name: "eth0".into(),
        up: true,
        subnets: vec![subnet_of(n).parse().expect("literal")],
    }]
}

fn pool_selector(np: &str) -> Vec<LabelSelector> {
    vec![LabelSelector {
        match_labels: Some([(NODEPOOL_LABEL.to_string(), np.to_string())].into()),
        match_expressions: None,
    }]
}

/// Two regions (two LANs), two nodes each, one router each (a BGPPeer selecting that
/// region's nodes), one Service selecting both pools with endpoints on `endpoints`.
fn two_regions(
    endpoints: &[&str],
    tweak: impl FnOnce(&mut k8s_openapi::api::core::v1::Service),
) -> Store {
    let mut store = Store::default();
    for (np, nodes) in [("np-hefei", HF), ("np-chengdu", CD)] {
        store.apply(
            Object::NodePool(node_pool(np, &[("k8s-svc", "cube")], &[])),
            NS,
        );
        for n in nodes {
            store.apply(Object::Node(node(n, &[(NODEPOOL_LABEL, np)])), NS);
        }
    }
    store.apply(
        Object::IPAddressPool(scoped_pool(NS, "hefei", &["192.0.2.100/31"], &["np-hefei"])),
        NS,
    );
    store.apply(
        Object::IPAddressPool(scoped_pool(
            NS,
            "chengdu",
            &["198.51.100.100/31"],
            &["np-chengdu"],
        )),
        NS,
    );
    let mut svc = annotate(
        service("default", "cube", 80),
        NODEPOOL_SELECTOR,
        "k8s-svc=cube",
    );
    tweak(&mut svc);
    store.apply(Object::Service(svc), NS);
    store.apply(
        Object::EndpointSlice(endpoint_slice(
            "default",
            "cube",
            "cube-1",
            endpoints.iter().map(|n| n.to_string()),
        )),
        NS,
    );
    store.apply(
        Object::L2Advertisement(L2Advertisement {
            metadata: meta("l2"),
            spec: L2AdvertisementSpec::default(),
            status: None,
        }),
        NS,
    );
    for (name, addr, np) in [
        ("router-hefei", "192.0.2.1", "np-hefei"),
        ("router-chengdu", "198.51.100.1", "np-chengdu"),
    ] {
        store.apply(
            Object::BGPPeer(BGPPeer {
                metadata: meta(name),
                spec: BGPPeerSpec {
                    my_asn: 64512,
                    peer_asn: 64500,
                    peer_address: addr.into(),
                    node_selectors: pool_selector(np),
                    ..Default::default()
                },
                status: None,
            }),
            NS,
        );
    }
    store.apply(
        Object::BGPAdvertisement(BGPAdvertisement {
            metadata: meta("bgp"),
            spec: BGPAdvertisementSpec::default(),
            status: None,
        }),
        NS,
    );
    store
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

fn snap_and_alloc(store: &Store) -> (Snapshot, Assignments) {
    let snap = store.snapshot(&Selection::default());
    let a = allocate(&snap, &Assignments::default());
    (snap, a)
}

fn pool_ip(a: &Assignments, np: &str) -> IpAddr {
    let key = AllocationKey {
        service: ObjectKey::new("default", "cube"),
        node_pool: Some(np.into()),
    };
    match a.outcomes.get(&key) {
        Some(Ok(al)) => al.ips[0],
        other => panic!("{np}: {other:?}"),
    }
}

fn me(n: &str) -> L2Node {
    L2Node {
        name: n.into(),
        interfaces: iface(n),
        addresses: Vec::new(),
    }
}

fn gossip(live: &[&str]) -> Members {
    Members::Gossip(live.iter().map(|n| (n.to_string(), iface(n))).collect())
}

/// Who owns each L2 IP, as every live node computes it (they must agree).
fn l2_owners(snap: &Snapshot, a: &Assignments, live: &[&str]) -> BTreeMap<IpAddr, String> {
    let mut out: BTreeMap<IpAddr, String> = BTreeMap::new();
    for n in live {
        let p = l2::plan(snap, a, &me(n), &gossip(live), true);
        for ip in p.owned.values().flatten() {
            assert!(out.insert(*ip, n.to_string()).is_none(), "{ip} owned twice");
        }
    }
    out
}

fn bgp_routes(snap: &Snapshot, a: &Assignments, n: &str) -> BTreeMap<String, Vec<String>> {
    let mut facts = NodeFacts::from_snapshot(snap, n, &[]);
    facts.addresses.push(ip(if n.starts_with("hf") {
        "192.0.2.11"
    } else {
        "198.51.100.11"
    }));
    bgp::plan(snap, a, &facts, &BgpDefaults::default())
        .peers
        .iter()
        .map(|(addr, p)| {
            (
                addr.to_string(),
                p.routes.keys().map(|k| k.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn each_regions_ip_is_owned_and_announced_only_in_that_region_and_fails_over_inside_it() {
    let store = two_regions(&["hf-1", "hf-2", "cd-1", "cd-2"], |_| {});
    let (snap, a) = snap_and_alloc(&store);
    let (hf_ip, cd_ip) = (pool_ip(&a, "np-hefei"), pool_ip(&a, "np-chengdu"));
    assert_eq!((hf_ip, cd_ip), (ip("192.0.2.100"), ip("198.51.100.100")));

    let all = ["hf-1", "hf-2", "cd-1", "cd-2"];
    let owners = l2_owners(&snap, &a, &all);
    assert!(HF.contains(&owners[&hf_ip].as_str()), "{owners:?}");
    assert!(CD.contains(&owners[&cd_ip].as_str()), "{owners:?}");

    // The hefei owner dies: the other hefei node takes over, chengdu's owner stays.
    let dead = owners[&hf_ip].clone();
    let live: Vec<&str> = all.iter().copied().filter(|n| *n != dead).collect();
    let after = l2_owners(&snap, &a, &live);
    let survivor = HF.iter().find(|n| **n != dead).expect("two hefei nodes");
    assert_eq!(after[&hf_ip], *survivor);
    assert_eq!(after[&cd_ip], owners[&cd_ip]);
    // Both hefei nodes gone: hefei's IP has no owner; chengdu never takes it.
    let after = l2_owners(&snap, &a, &CD);
    assert!(!after.contains_key(&hf_ip));
    assert_eq!(after[&cd_ip], owners[&cd_ip]);

    // BGP: each region's nodes open only their router's session and announce only their
    // region's IP.
    for n in HF {
        assert_eq!(
            bgp_routes(&snap, &a, n),
            BTreeMap::from([("192.0.2.1".to_string(), vec!["192.0.2.100/32".to_string()])])
        );
    }
    for n in CD {
        assert_eq!(
            bgp_routes(&snap, &a, n),
            BTreeMap::from([(
                "198.51.100.1".to_string(),
                vec!["198.51.100.100/32".to_string()]
            )])
        );
    }
}

#[test]
fn nodes_outside_the_pool_are_excluded_as_not_in_pool_so_the_quorum_scope_is_the_pool() {
    let store = two_regions(&["hf-1", "cd-1"], |_| {});
    let (snap, a) = snap_and_alloc(&store);
    let all = ["hf-1", "hf-2", "cd-1", "cd-2"];
    let view = ElectionView::new(l2::candidates(&snap, &me("hf-1"), &gossip(&all)));
    let reqs = l2::requests(&snap, &a);
    for r in view.elect_many(&reqs.requests) {
        let (inside, outside) = if r.ip == pool_ip(&a, "np-hefei") {
            (HF, CD)
        } else {
            (CD, HF)
        };
        for n in outside {
            assert_eq!(
                r.exclusion_of(n),
                Some(ExclusionReason::NotInPool),
                "{} {n}",
                r.ip
            );
        }
        // The guard's scope of an IP is its non-excluded nodes: the pool's.
        let scope: BTreeSet<&str> = all
            .iter()
            .copied()
            .filter(|n| r.exclusion_of(n).is_none())
            .collect();
        assert_eq!(scope, inside.into_iter().collect(), "{}", r.ip);
    }
}

#[test]
fn topology_keys_nodepool_counts_only_the_pools_endpoints() {
    // Endpoints only in hefei.
    let with_topology = two_regions(&["hf-2"], |svc| {
        svc.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(TOPOLOGY_KEYS.into(), "openyurt.io/nodepool".into());
    });
    let (snap, a) = snap_and_alloc(&with_topology);
    let owners = l2_owners(&snap, &a, &["hf-1", "hf-2", "cd-1", "cd-2"]);
    assert!(owners.contains_key(&pool_ip(&a, "np-hefei")));
    assert!(
        !owners.contains_key(&pool_ip(&a, "np-chengdu")),
        "chengdu has no endpoint of its own: its entry point is not announced"
    );
    assert!(bgp_routes(&snap, &a, "cd-1")["198.51.100.1"].is_empty());
    // explain says so, pool by pool.
    let elections = crate::status::announced::service_elections(
        &snap,
        &a,
        l2::candidates(
            &snap,
            &me("hf-1"),
            &gossip(&["hf-1", "hf-2", "cd-1", "cd-2"]),
        ),
    );
    let views = crate::local_api::build::services_view(&snap, &a, &elections, &[]);
    let cd = views
        .iter()
        .find(|v| v.node_pool.as_deref() == Some("np-chengdu"))
        .expect("a view per pool");
    assert_eq!(
        cd.traffic_policy,
        "Cluster (openyurt.io/topologyKeys: openyurt.io/nodepool: only endpoints in the node pool count)"
    );
    assert!(cd
        .candidates
        .iter()
        .all(|c| c.excluded.as_deref() == Some("noReadyEndpoints")));

    // Without the annotation, any ready endpoint counts (kube-proxy forwards across pools).
    let without = two_regions(&["hf-2"], |_| {});
    let (snap, a) = snap_and_alloc(&without);
    let owners = l2_owners(&snap, &a, &["hf-1", "hf-2", "cd-1", "cd-2"]);
    assert!(owners.contains_key(&pool_ip(&a, "np-chengdu")));
}

#[test]
fn local_traffic_policy_announces_from_the_pools_nodes_with_a_ready_endpoint() {
    let store = two_regions(&["hf-2", "cd-1"], |svc| {
        if let Some(s) = svc.spec.as_mut() {
            s.external_traffic_policy = Some("Local".into());
        }
    });
    let (snap, a) = snap_and_alloc(&store);
    let owners = l2_owners(&snap, &a, &["hf-1", "hf-2", "cd-1", "cd-2"]);
    assert_eq!(owners[&pool_ip(&a, "np-hefei")], "hf-2");
    assert_eq!(owners[&pool_ip(&a, "np-chengdu")], "cd-1");
    assert!(bgp_routes(&snap, &a, "hf-1")["192.0.2.1"].is_empty());
    assert_eq!(
        bgp_routes(&snap, &a, "hf-2")["192.0.2.1"],
        vec!["192.0.2.100/32"]
    );
}

// ---- property: never outside the pool; unrelated changes never move an owner ----

fn pool_of(i: usize) -> &'static str {
    ["np0", "np1", "np2"][i % 3]
}

/// `n` nodes `n{i}` in pool `np{i % 3}`, all on one LAN; a Service per pool subset.
fn world(n: usize, services: &[u8]) -> Store {
    let mut store = Store::default();
    for i in 0..n {
        store.apply(
            Object::Node(node(&format!("n{i}"), &[(NODEPOOL_LABEL, pool_of(i))])),
            NS,
        );
    }
    for p in 0..3 {
        store.apply(
            Object::IPAddressPool(scoped_pool(
                NS,
                &format!("p{p}"),
                &[&format!("10.0.0.{}/28", p * 16)],
                &[pool_of(p)],
            )),
            NS,
        );
    }
    for (s, bits) in services.iter().enumerate() {
        let pools: Vec<&str> = (0..3)
            .filter(|p| bits & (1 << p) != 0)
            .map(pool_of)
            .collect();
        if pools.is_empty() {
            continue;
        }
        let sel = format!("{NODEPOOL_LABEL} in ({})", pools.join(","));
        store.apply(
            Object::Service(annotate(
                service("default", &format!("s{s}"), 80),
                NODEPOOL_SELECTOR,
                &sel,
            )),
            NS,
        );
        store.apply(
            Object::EndpointSlice(endpoint_slice(
                "default",
                &format!("s{s}"),
                &format!("s{s}-1"),
                (0..n).map(|i| format!("n{i}")),
            )),
            NS,
        );
    }
    store.apply(
        Object::L2Advertisement(L2Advertisement {
            metadata: meta("l2"),
            spec: L2AdvertisementSpec::default(),
            status: None,
        }),
        NS,
    );
    store
}

fn lan() -> Vec<InterfaceFacts> {
    vec![InterfaceFacts {
        name: "eth0".into(),
        up: true,
        subnets: vec!["10.0.0.0/24".parse().expect("literal")],
    }]
}

/// Owner of every L2 IP with `live` nodes, and the pool each IP belongs to.
fn elect(
    snap: &Snapshot,
    a: &Assignments,
    live: &BTreeSet<String>,
) -> BTreeMap<IpAddr, (Option<String>, String)> {
    let members = Members::Gossip(live.iter().map(|n| (n.clone(), lan())).collect());
    let me = L2Node {
        name: "observer".into(),
        interfaces: lan(),
        addresses: Vec::new(),
    };
    let view = ElectionView::new(l2::candidates(snap, &me, &members));
    let reqs = l2::requests(snap, a);
    let pools: BTreeMap<IpAddr, String> = reqs
        .requests
        .iter()
        .map(|r| (r.ip, r.terms.pool.clone().unwrap_or_default()))
        .collect();
    view.elect_many(&reqs.requests)
        .into_iter()
        .filter(|r| r.mode == ModeKind::L2)
        .map(|r| {
            (
                r.ip,
                (r.owner().map(|o| o.to_string()), pools[&r.ip].clone()),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_a_pools_ip_is_never_owned_outside_the_pool_and_unrelated_changes_never_move_it(
        n in 3usize..12,
        services in proptest::collection::vec(1u8..8, 1..6),
        dead in proptest::collection::btree_set(0usize..12, 0..4),
        changed_pool in 0usize..3,
    ) {
        let store = world(n, &services);
        let snap = store.snapshot(&Selection::default());
        let a = allocate(&snap, &Assignments::default());
        let live: BTreeSet<String> = (0..n).filter(|i| !dead.contains(i)).map(|i| format!("n{i}")).collect();
        let before = elect(&snap, &a, &live);
        for (ip, (owner, pool)) in &before {
            if let Some(o) = owner {
                let i: usize = o[1..].parse().expect("node name");
                prop_assert_eq!(pool_of(i), pool.as_str(), "{} owned by {} outside {}", ip, o, pool);
            }
        }
        // Every node of one pool dies: no IP of another pool moves, and the pool's own
        // IPs are owned by nobody (never by a node of another pool).
        let live2: BTreeSet<String> = live
            .iter()
            .filter(|name| {
                let i: usize = name[1..].parse().expect("node name");
                pool_of(i) != pool_of(changed_pool)
            })
            .cloned()
            .collect();
        let after = elect(&snap, &a, &live2);
        for (ip, (owner, pool)) in &after {
            if pool.as_str() == pool_of(changed_pool) {
                prop_assert_eq!(owner, &None, "{} of {} owned outside its pool", ip, pool);
            } else {
                prop_assert_eq!(Some(owner), before.get(ip).map(|(o, _)| o), "{} of {} moved", ip, pool);
            }
        }
        // A node joining another pool (the allocation re-run on the new snapshot) moves no
        // IP either.
        let mut store2 = store.clone();
        store2.apply(Object::Node(node("joiner", &[(NODEPOOL_LABEL, pool_of(changed_pool))])), NS);
        let snap2 = store2.snapshot(&Selection::default());
        let a2 = allocate(&snap2, &a);
        prop_assert_eq!(&a2.outcomes, &a.outcomes);
        let mut live3 = live.clone();
        live3.insert("joiner".into());
        let after = elect(&snap2, &a2, &live3);
        for (ip, (owner, pool)) in &after {
            if pool.as_str() != pool_of(changed_pool) {
                prop_assert_eq!(Some(owner), before.get(ip).map(|(o, _)| o), "{} of {} moved", ip, pool);
            }
        }
    }
}
