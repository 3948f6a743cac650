//! `plan` for 10 000 Services x 1 000 nodes: the BGP plan and the L2 plan (with the
//! election over 1 000 live members) of one node, cold, after one Service change (an
//! endpoint moving to another node) and after one node change (a member leaving; a Node
//! label for BGP), and with node-7 the only live node (it owns every IP it may: the
//! failover worst case). The L2 figures after a change are for the planner with memory
//! (`L2Planner`), beside the full plan; the BGP plan is always planned in full.
//!
//! With node pools (issue 14, group `plan_node_pools_*`): the 1 000 nodes in 50 node pools,
//! every Service selecting 2 of them (20 000 IPs, each elected among its pool's 20 nodes),
//! one `IPAddressPool` scoped to each node pool; cold, and after one Service change.
//!
//! `cargo bench -p edgelb-daemon --bench plan`

mod common;

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use edgelb_daemon::api::{
    BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec, L2Advertisement,
    L2AdvertisementSpec,
};
use edgelb_daemon::election::InterfaceFacts;
use edgelb_daemon::fixtures;
use edgelb_daemon::ipam::{allocate, Assignments};
use edgelb_daemon::plan::bgp::{self, BgpDefaults, NodeFacts};
use edgelb_daemon::plan::l2::{self, L2Node, Members};
use edgelb_daemon::plan::l2_incremental::{L2PlanKind, L2Planner, Replanned};
use edgelb_daemon::snapshot::{Object, Selection, Snapshot, Store};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const NS: &str = "edgelb-system";
const SERVICES: usize = 10_000;
const NODES: usize = 1_000;

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

fn slice(svc: usize, nodes: [usize; 3]) -> Object {
    Object::EndpointSlice(fixtures::endpoint_slice(
        "default",
        &format!("svc-{svc}"),
        &format!("svc-{svc}-1"),
        nodes.map(|n| format!("node-{n}")),
    ))
}

fn store() -> Store {
    let mut s = Store::default();
    s.apply(
        Object::IPAddressPool(fixtures::pool(NS, "big", &["10.96.0.0/16"])),
        NS,
    );
    for n in 0..NODES {
        s.apply(Object::Node(fixtures::node(&format!("node-{n}"), &[])), NS);
    }
    for i in 0..SERVICES {
        let mut svc = fixtures::service("default", &format!("svc-{i}"), 80);
        if i % 2 == 1 {
            if let Some(spec) = svc.spec.as_mut() {
                spec.external_traffic_policy = Some("Local".into());
            }
        }
        s.apply(Object::Service(svc), NS);
        s.apply(slice(i, [i % NODES, (i * 7) % NODES, (i * 13) % NODES]), NS);
    }
    s.apply(
        Object::BGPPeer(BGPPeer {
            metadata: meta(NS, "router"),
            spec: BGPPeerSpec {
                my_asn: 64512,
                peer_asn: 64500,
                peer_address: "192.0.2.1".into(),
                ..Default::default()
            },
            status: None,
        }),
        NS,
    );
    s.apply(
        Object::BGPAdvertisement(BGPAdvertisement {
            metadata: meta(NS, "all"),
            spec: BGPAdvertisementSpec {
                communities: vec!["64512:1".into()],
                ..Default::default()
            },
            status: None,
        }),
        NS,
    );
    s.apply(
        Object::L2Advertisement(L2Advertisement {
            metadata: meta(NS, "lan"),
            spec: L2AdvertisementSpec::default(),
            status: None,
        }),
        NS,
    );
    s
}

fn iface() -> Vec<InterfaceFacts> {
    vec![InterfaceFacts {
        name: "eth0".into(),
        up: true,
        subnets: vec!["10.96.0.0/16".parse().expect("literal")],
    }]
}

/// One group's world: a store, its allocation, and node-7 with every node alive.
struct World {
    store: Store,
    sel: Selection,
    snap: Snapshot,
    a: Assignments,
    me_bgp: NodeFacts,
    me_l2: L2Node,
    members: Members,
    defaults: BgpDefaults,
}

impl World {
    /// Plans `store` once and prints what node-7 announces (`what`: the group's set-up).
    fn new(store: Store, what: &str) -> World {
        let sel = Selection::default();
        let snap = store.snapshot(&sel);
        let a = allocate(&snap, &Assignments::default());
        let mut me_bgp = NodeFacts::from_snapshot(&snap, "node-7", &[]);
        me_bgp
            .addresses
            .push("192.0.2.17".parse().expect("literal"));
        let me_l2 = L2Node {
            name: "node-7".into(),
            interfaces: iface(),
            addresses: Vec::new(),
        };
        let members = Members::Gossip((0..NODES).map(|n| (format!("node-{n}"), iface())).collect());
        let defaults = BgpDefaults::default();
        let routes = bgp::plan(&snap, &a, &me_bgp, &defaults)
            .peers
            .values()
            .map(|p| p.routes.len())
            .sum::<usize>();
        let owned: usize = l2::plan(&snap, &a, &me_l2, &members, true)
            .owned
            .values()
            .map(|s| s.len())
            .sum();
        eprintln!(
            "plan bench ({what}): node-7 announces {routes} BGP routes and owns {owned} L2 IPs"
        );
        World {
            store,
            sel,
            snap,
            a,
            me_bgp,
            me_l2,
            members,
            defaults,
        }
    }
}

/// The benches of every group: the baseline (one hash-map insert per Service key, for
/// ratios on a loaded machine), BGP and L2 cold, and after one Service change (an endpoint
/// of one Local Service moves to node-7 and back; the allocation is unchanged and the
/// snapshots share every other object). The L2 planner's first step is checked to be
/// `kind` (when given) before timing. Returns the snapshot before the change and the
/// planner, for the group's own benches.
fn plan_benches(
    g: &mut BenchmarkGroup<'_, WallTime>,
    w: &mut World,
    kind: Option<L2PlanKind>,
) -> (Snapshot, L2Planner) {
    let keys: Vec<_> = w.snap.services.keys().cloned().collect();
    g.bench_function("baseline_hashmap_insert_10k_keys", |b| {
        b.iter(|| black_box(common::hashmap_insert_baseline(&keys)))
    });
    g.bench_function("bgp_cold", |b| {
        b.iter(|| black_box(bgp::plan(&w.snap, &w.a, &w.me_bgp, &w.defaults)))
    });
    g.bench_function("l2_cold", |b| {
        b.iter(|| black_box(l2::plan(&w.snap, &w.a, &w.me_l2, &w.members, true)))
    });
    let snap_a = w.store.snapshot(&w.sel);
    w.store.apply(slice(1, [7, 8, 9]), NS);
    let snap_b = w.store.snapshot(&w.sel);
    g.bench_function("bgp_after_one_service_change", |b| {
        b.iter(|| black_box(bgp::plan(&snap_b, &w.a, &w.me_bgp, &w.defaults)))
    });
    // Set up (and check) one step before timing, whatever the filter runs.
    let mut planner = L2Planner::default();
    planner.plan(&snap_a, &w.a, &w.me_l2, &w.members, true);
    assert_eq!(
        planner.plan(&snap_b, &w.a, &w.me_l2, &w.members, true),
        l2::plan(&snap_b, &w.a, &w.me_l2, &w.members, true)
    );
    if let Some(kind) = kind {
        assert_eq!(planner.last_kind(), Some(kind));
    }
    let mut on_a = false;
    g.bench_function("l2_after_one_service_change_incremental", |b| {
        b.iter(|| {
            on_a = !on_a;
            let s = if on_a { &snap_a } else { &snap_b };
            black_box(planner.plan(s, &w.a, &w.me_l2, &w.members, true))
        })
    });
    (snap_a, planner)
}

fn bench(c: &mut Criterion) {
    let mut w = World::new(store(), &format!("{SERVICES} Services x {NODES} nodes"));
    let mut g = c.benchmark_group("plan_10k_services_1k_nodes");
    g.sample_size(10);
    let (snap_a, mut planner) = plan_benches(&mut g, &mut w, Some(L2PlanKind::RequestsChanged(1)));
    let World {
        store,
        sel,
        a,
        me_bgp,
        me_l2,
        members,
        defaults,
        ..
    } = &mut w;

    // One node change: node-500 leaves the membership and comes back (same snapshot), as
    // the speaker's tick re-plans L2 on a membership event.
    let members_down = match &*members {
        Members::Gossip(m) => {
            let mut m = m.clone();
            m.remove("node-500");
            Members::Gossip(m)
        }
        Members::Static => Members::Static,
    };
    // Every other node down: node-7 owns every IP it may (a failover's worst case; with
    // three nodes each owns a third). The plan's work must stay linear in the owned IPs.
    let members_alone = Members::Gossip([("node-7".to_string(), iface())].into_iter().collect());
    let owned: usize = l2::plan(&snap_a, a, me_l2, &members_alone, true)
        .owned
        .values()
        .map(|s| s.len())
        .sum();
    eprintln!("plan bench: node-7 alone owns {owned} L2 IPs");
    g.bench_function("l2_cold_owning_every_ip", |b| {
        b.iter(|| black_box(l2::plan(&snap_a, a, me_l2, &members_alone, true)))
    });
    g.bench_function("l2_after_one_node_change_full", |b| {
        b.iter(|| black_box(l2::plan(&snap_a, a, me_l2, &members_down, true)))
    });
    planner.plan(&snap_a, a, me_l2, members, true);
    assert_eq!(
        planner.replan_members(me_l2, &members_down, true),
        Some(Replanned::Changed(l2::plan(
            &snap_a,
            a,
            me_l2,
            &members_down,
            true
        )))
    );
    assert_eq!(planner.last_kind(), Some(L2PlanKind::NodesChanged(1)));
    let mut up = false;
    g.bench_function("l2_after_one_node_change_incremental", |b| {
        b.iter(|| {
            up = !up;
            let m = if up { &*members } else { &members_down };
            black_box(planner.replan_members(me_l2, m, true))
        })
    });
    // BGP does not depend on the membership; a Node object change (a label on node-500)
    // gives a new snapshot, planned in full.
    store.apply(
        Object::Node(fixtures::node("node-500", &[("zone", "b")])),
        NS,
    );
    let snap_n = store.snapshot(sel);
    g.bench_function("bgp_after_one_node_change", |b| {
        b.iter(|| black_box(bgp::plan(&snap_n, a, me_bgp, defaults)))
    });

    g.bench_function("snapshot_and_bgp_after_one_change", |b| {
        b.iter(|| {
            let snap = store.snapshot(sel);
            black_box(bgp::plan(&snap, a, me_bgp, defaults))
        })
    });
    g.bench_function("snapshot_only", |b| {
        b.iter(|| black_box(store.snapshot(sel)))
    });
    g.finish();
}

fn pooled_store() -> Store {
    use edgelb_daemon::api::annotations::{NODEPOOL_LABEL, NODEPOOL_SELECTOR};
    let mut s = store();
    for p in 0..50 {
        s.apply(
            Object::IPAddressPool(fixtures::scoped_pool(
                NS,
                &format!("pool-{p:02}"),
                &[&format!("10.96.{}.0/23", 100 + 2 * p)],
                &[&format!("np-{p:02}")],
            )),
            NS,
        );
    }
    for n in 0..NODES {
        let np = format!("np-{:02}", n % 50);
        s.apply(
            Object::Node(fixtures::node(
                &format!("node-{n}"),
                &[(NODEPOOL_LABEL, &np)],
            )),
            NS,
        );
    }
    for i in 0..SERVICES {
        let mut svc = fixtures::service("default", &format!("svc-{i}"), 80);
        if i % 2 == 1 {
            if let Some(spec) = svc.spec.as_mut() {
                spec.external_traffic_policy = Some("Local".into());
            }
        }
        let sel = format!(
            "{NODEPOOL_LABEL} in (np-{:02},np-{:02})",
            i % 50,
            (i + 7) % 50
        );
        s.apply(
            Object::Service(fixtures::annotate(svc, NODEPOOL_SELECTOR, &sel)),
            NS,
        );
    }
    s
}

/// The same plans with node pools: every Service's IPs elected among its pools' nodes.
fn bench_node_pools(c: &mut Criterion) {
    let mut w = World::new(
        pooled_store(),
        &format!(
            "node pools: {SERVICES} Services x 2 of 50 pools x {NODES} nodes, node-7 in np-07"
        ),
    );
    assert_eq!(
        w.a.outcomes.values().filter(|o| o.is_ok()).count(),
        2 * SERVICES
    );
    let mut g = c.benchmark_group("plan_node_pools_10k_services_50_pools_1k_nodes");
    g.sample_size(10);
    plan_benches(&mut g, &mut w, None);
    g.finish();
}

criterion_group!(benches, bench, bench_node_pools);
criterion_main!(benches);
