//! `plan` for 10 000 Services x 1 000 nodes: the BGP plan and the L2 plan (with the
//! election over 1 000 live members) of one node, cold and after one change (an endpoint
//! moving to another node: snapshot rebuilt, then planned again; the plan is not
//! incremental, so "after one change" is a full plan of the new snapshot).
//!
//! `cargo bench -p edgelb-daemon --bench plan`

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use edgelb_daemon::api::{
    BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec, L2Advertisement,
    L2AdvertisementSpec,
};
use edgelb_daemon::election::InterfaceFacts;
use edgelb_daemon::fixtures;
use edgelb_daemon::ipam::{allocate, Assignments};
use edgelb_daemon::plan::bgp::{self, BgpDefaults, NodeFacts};
use edgelb_daemon::plan::l2::{self, L2Node, Members};
use edgelb_daemon::snapshot::{Object, Selection, Store};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
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
    let mut m = meta("default", &format!("svc-{svc}-1"));
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        format!("svc-{svc}"),
    )]));
    Object::EndpointSlice(EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: Some(
            nodes
                .iter()
                .map(|n| Endpoint {
                    addresses: vec!["10.244.0.1".into()],
                    node_name: Some(format!("node-{n}")),
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: None,
    })
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

fn bench(c: &mut Criterion) {
    let mut store = store();
    let sel = Selection::default();
    let snap = store.snapshot(&sel);
    let a = allocate(&snap, &Assignments::default());
    let me_bgp = {
        let mut f = NodeFacts::from_snapshot(&snap, "node-7", &[]);
        f.addresses.push("192.0.2.17".parse().expect("literal"));
        f
    };
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
    eprintln!("plan bench: {SERVICES} Services x {NODES} nodes; node-7 announces {routes} BGP routes and owns {owned} L2 IPs");

    let mut g = c.benchmark_group("plan_10k_services_1k_nodes");
    g.sample_size(10);
    g.bench_function("bgp_cold", |b| {
        b.iter(|| black_box(bgp::plan(&snap, &a, &me_bgp, &defaults)))
    });
    g.bench_function("l2_cold", |b| {
        b.iter(|| black_box(l2::plan(&snap, &a, &me_l2, &members, true)))
    });
    // One change: an endpoint of one Local Service moves to node-7.
    store.apply(slice(1, [7, 8, 9]), NS);
    g.bench_function("snapshot_and_bgp_after_one_change", |b| {
        b.iter(|| {
            let snap = store.snapshot(&sel);
            black_box(bgp::plan(&snap, &a, &me_bgp, &defaults))
        })
    });
    g.bench_function("snapshot_and_l2_after_one_change", |b| {
        b.iter(|| {
            let snap = store.snapshot(&sel);
            black_box(l2::plan(&snap, &a, &me_l2, &members, true))
        })
    });
    g.bench_function("snapshot_only", |b| {
        b.iter(|| black_box(store.snapshot(&sel)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
