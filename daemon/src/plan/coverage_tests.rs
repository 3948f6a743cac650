//! The three former deciders of coverage agree: for random pools, advertisements, nodes
//! and Services, the elections that `edgelbctl explain` shows and the `AnnouncedBy` Events
//! report ([`service_elections`]) name exactly the nodes whose L2 planner owns each IP and
//! whose BGP planner routes it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use proptest::prelude::*;

use crate::api::{
    BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec, L2Advertisement,
    L2AdvertisementSpec,
};
use crate::election::{InterfaceFacts, ModeKind};
use crate::fixtures;
use crate::ipam::{allocate, Assignments};
use crate::plan::bgp::{self, BgpDefaults, NodeFacts};
use crate::plan::l2::{self, L2Node, Members};
use crate::snapshot::{Object, ObjectKey, Selection, Snapshot, Store};
use crate::status::announced::service_elections;

const NS: &str = "edgelb-system";

/// One generated advertisement (L2 or BGP).
#[derive(Clone, Debug)]
struct AdvGen {
    /// Bit i: names pool i in `ipAddressPools`.
    pools: u8,
    /// `ipAddressPoolSelectors`: none, `tier=x`, or `tier NotIn (x)`.
    pool_selector: u8,
    /// `nodeSelectors`: none, `zone=a`, or `zone Exists`.
    node_selector: u8,
    /// L2 `interfaces`: none, `[eth0]` or `[eth1]`.
    interfaces: u8,
    /// Invalid (a bad selector operator): covers nothing.
    invalid: bool,
}

#[derive(Clone, Debug)]
struct World {
    /// Per node: in zone `a`, and whether it has `eth1` on the second subnet.
    nodes: Vec<(bool, bool)>,
    /// Per pool: labelled `tier=x`.
    pools: Vec<bool>,
    /// Per Service: `Local` policy, ready endpoints on these nodes (bits), pool index.
    services: Vec<(bool, u8, usize)>,
    l2: Vec<AdvGen>,
    bgp: Vec<AdvGen>,
}

fn adv_gen() -> impl Strategy<Value = AdvGen> {
    (0u8..8, 0u8..3, 0u8..3, 0u8..3, prop::bool::weighted(0.1)).prop_map(
        |(pools, pool_selector, node_selector, interfaces, invalid)| AdvGen {
            pools,
            pool_selector,
            node_selector,
            interfaces,
            invalid,
        },
    )
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec((any::<bool>(), any::<bool>()), 1..5),
        prop::collection::vec(any::<bool>(), 1..4),
        prop::collection::vec((any::<bool>(), any::<u8>(), 0usize..3), 1..6),
        prop::collection::vec(adv_gen(), 0..4),
        prop::collection::vec(adv_gen(), 0..4),
    )
        .prop_map(|(nodes, pools, services, l2, bgp)| World {
            nodes,
            pools,
            services,
            l2,
            bgp,
        })
}

fn node_name(i: usize) -> String {
    format!("node-{i}")
}

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..Default::default()
    }
}

fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }]),
    }
}

/// The advertisement's pool names, pool selectors, node selectors and interfaces.
fn adv_fields(
    g: &AdvGen,
    pools: usize,
) -> (
    Vec<String>,
    Vec<LabelSelector>,
    Vec<LabelSelector>,
    Vec<String>,
) {
    let names = (0..pools)
        .filter(|i| g.pools & (1 << i) != 0)
        .map(|i| format!("pool-{i}"))
        .collect();
    let pool_sel = match g.pool_selector {
        1 => vec![expr("tier", "In", &["x"])],
        2 => vec![expr("tier", "NotIn", &["x"])],
        _ => vec![],
    };
    let mut node_sel = match g.node_selector {
        1 => vec![LabelSelector {
            match_labels: Some(BTreeMap::from([("zone".into(), "a".into())])),
            match_expressions: None,
        }],
        2 => vec![expr("zone", "Exists", &[])],
        _ => vec![],
    };
    if g.invalid {
        node_sel.push(expr("zone", "Sometimes", &[]));
    }
    let interfaces = match g.interfaces {
        1 => vec!["eth0".into()],
        2 => vec!["eth1".into()],
        _ => vec![],
    };
    (names, pool_sel, node_sel, interfaces)
}

fn interfaces(second: bool) -> Vec<InterfaceFacts> {
    let mut v = vec![InterfaceFacts {
        name: "eth0".into(),
        up: true,
        subnets: vec!["192.0.2.0/24".parse().expect("literal")],
    }];
    if second {
        v.push(InterfaceFacts {
            name: "eth1".into(),
            up: true,
            subnets: vec!["198.51.100.0/24".parse().expect("literal")],
        });
    }
    v
}

fn build(w: &World) -> (Snapshot, Assignments) {
    let mut store = Store::default();
    for (i, (zone_a, _)) in w.nodes.iter().enumerate() {
        let labels: &[(&str, &str)] = if *zone_a { &[("zone", "a")] } else { &[] };
        store.apply(Object::Node(fixtures::node(&node_name(i), labels)), NS);
    }
    for (i, tier_x) in w.pools.iter().enumerate() {
        // Even pools on the first subnet, odd ones on the second (only eth1 reaches them).
        let range = if i % 2 == 0 {
            format!("192.0.2.{}/29", 64 + 8 * i)
        } else {
            format!("198.51.100.{}/29", 64 + 8 * i)
        };
        let mut p = fixtures::pool(NS, &format!("pool-{i}"), &[&range]);
        if *tier_x {
            p.metadata.labels = Some(BTreeMap::from([("tier".into(), "x".into())]));
        }
        store.apply(Object::IPAddressPool(p), NS);
    }
    for (i, (local, endpoints, pool)) in w.services.iter().enumerate() {
        let name = format!("svc-{i}");
        let mut svc = fixtures::service("default", &name, 80);
        svc = fixtures::annotate(
            svc,
            crate::api::annotations::ADDRESS_POOL,
            &format!("pool-{}", pool % w.pools.len()),
        );
        if *local {
            if let Some(spec) = svc.spec.as_mut() {
                spec.external_traffic_policy = Some("Local".into());
            }
        }
        store.apply(Object::Service(svc), NS);
        let on: Vec<String> = (0..w.nodes.len())
            .filter(|n| endpoints & (1 << n) != 0)
            .map(node_name)
            .collect();
        if !on.is_empty() {
            let slice = fixtures::endpoint_slice("default", &name, &format!("{name}-1"), on);
            store.apply(Object::EndpointSlice(slice), NS);
        }
    }
    for (i, g) in w.l2.iter().enumerate() {
        let (pools, pool_sel, node_sel, ifaces) = adv_fields(g, w.pools.len());
        store.apply(
            Object::L2Advertisement(L2Advertisement {
                metadata: meta(&format!("l2-{i}"), &[]),
                spec: L2AdvertisementSpec {
                    ip_address_pools: pools,
                    ip_address_pool_selectors: pool_sel,
                    node_selectors: node_sel,
                    interfaces: ifaces,
                },
                status: None,
            }),
            NS,
        );
    }
    for (i, g) in w.bgp.iter().enumerate() {
        let (pools, pool_sel, node_sel, _) = adv_fields(g, w.pools.len());
        store.apply(
            Object::BGPAdvertisement(BGPAdvertisement {
                metadata: meta(&format!("bgp-{i}"), &[]),
                spec: BGPAdvertisementSpec {
                    ip_address_pools: pools,
                    ip_address_pool_selectors: pool_sel,
                    node_selectors: node_sel,
                    ..Default::default()
                },
                status: None,
            }),
            NS,
        );
    }
    store.apply(
        Object::BGPPeer(BGPPeer {
            metadata: meta("router", &[]),
            spec: BGPPeerSpec {
                my_asn: 64512,
                peer_asn: 64500,
                peer_address: "10.0.0.1".into(),
                router_id: Some("10.0.0.2".into()),
                ..Default::default()
            },
            status: None,
        }),
        NS,
    );
    let snap = store.snapshot(&Selection::default());
    let a = allocate(&snap, &Assignments::default());
    (snap, a)
}

fn members(w: &World) -> Members {
    Members::Gossip(
        w.nodes
            .iter()
            .enumerate()
            .map(|(i, (_, second))| (node_name(i), interfaces(*second)))
            .collect(),
    )
}

fn me(w: &World, i: usize) -> L2Node {
    L2Node {
        name: node_name(i),
        interfaces: interfaces(w.nodes[i].1),
        addresses: Vec::new(),
    }
}

type Owners = BTreeMap<(ObjectKey, IpAddr), BTreeSet<String>>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn explain_events_and_both_planners_agree(w in world()) {
        let (snap, a) = build(&w);
        let members = members(&w);
        let cands = l2::candidates(&snap, &me(&w, 0), &members);
        let elections = service_elections(&snap, &a, cands);

        // What explain and the Events say, per (Service, IP) and mode.
        let mut said_l2: Owners = BTreeMap::new();
        let mut said_bgp: Owners = BTreeMap::new();
        for (service, results) in &elections {
            for r in results {
                let owners = r.owners.iter().map(|n| n.to_string()).collect();
                let into = match r.mode {
                    ModeKind::L2 => &mut said_l2,
                    ModeKind::Bgp => &mut said_bgp,
                };
                into.insert((service.clone(), r.ip), owners);
            }
        }

        // What each node's planners do.
        let mut did_l2: Owners = BTreeMap::new();
        let mut did_bgp: Owners = BTreeMap::new();
        let ip_services: BTreeMap<IpAddr, Vec<ObjectKey>> = a
            .outcomes
            .iter()
            .filter_map(|(k, o)| o.as_ref().ok().map(|al| (k, al)))
            .flat_map(|(k, al)| al.ips.iter().map(move |ip| (*ip, k.service.clone())))
            .fold(BTreeMap::new(), |mut m, (ip, s)| {
                m.entry(ip).or_default().push(s);
                m
            });
        for i in 0..w.nodes.len() {
            let plan = l2::plan(&snap, &a, &me(&w, i), &members, true);
            // Every node's planner names the same owner for every L2 IP as explain.
            for o in &plan.owners {
                let owner: BTreeSet<String> = o.node.iter().map(|n| n.to_string()).collect();
                prop_assert_eq!(
                    said_l2.get(&(o.service.clone(), o.ip)),
                    Some(&owner),
                    "L2 owner of {} ({}) as planned by node-{}", o.ip, o.service, i
                );
            }
            let mine = plan.owned.values().flatten().chain(&plan.unplaced);
            for ip in mine {
                for s in &ip_services[ip] {
                    did_l2.entry((s.clone(), *ip)).or_default().insert(node_name(i));
                }
            }
            let facts = NodeFacts::from_snapshot(&snap, &node_name(i), &[]);
            let bplan = bgp::plan(&snap, &a, &facts, &BgpDefaults::default());
            for peer in bplan.peers.values() {
                for (prefix, _) in peer.routes.iter() {
                    for s in &ip_services[&prefix.addr()] {
                        did_bgp
                            .entry((s.clone(), prefix.addr()))
                            .or_default()
                            .insert(node_name(i));
                    }
                }
            }
        }
        let nonempty = |m: &Owners| -> Owners {
            m.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        prop_assert_eq!(nonempty(&said_l2), did_l2, "L2: explain vs the owners' planners");
        prop_assert_eq!(nonempty(&said_bgp), did_bgp, "BGP: explain vs each node's routes");
    }
}
