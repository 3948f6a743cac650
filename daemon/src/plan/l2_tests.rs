use super::*;
use crate::api::{L2Advertisement, L2AdvertisementSpec};
use crate::fixtures;
use crate::ipam::allocate;
use crate::snapshot::{Object, Selection, Store};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const NS: &str = "edgelb-system";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn iface(name: &str, subnet: &str) -> Vec<InterfaceFacts> {
    vec![InterfaceFacts {
        name: name.into(),
        up: true,
        subnets: vec![subnet.parse().unwrap()],
    }]
}

fn snapshot(local_on: Option<&str>) -> (Snapshot, Assignments) {
    let mut store = Store::default();
    store.apply(
        Object::IPAddressPool(fixtures::pool(NS, "lan", &["192.0.2.100-192.0.2.103"])),
        NS,
    );
    for n in NODES {
        store.apply(Object::Node(fixtures::node(n, &[])), NS);
    }
    let mut svc = fixtures::service("default", "web", 80);
    if local_on.is_some() {
        if let Some(s) = svc.spec.as_mut() {
            s.external_traffic_policy = Some("Local".into());
        }
    }
    store.apply(Object::Service(svc), NS);
    store.apply(
        Object::EndpointSlice(EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("default".into()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/service-name".to_string(),
                    "web".to_string(),
                )])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![Endpoint {
                addresses: vec!["10.0.0.1".into()],
                node_name: Some(local_on.unwrap_or("node-a").into()),
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ports: None,
        }),
        NS,
    );
    store.apply(
        Object::L2Advertisement(L2Advertisement {
            metadata: ObjectMeta {
                name: Some("l2".into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            spec: L2AdvertisementSpec::default(),
            status: None,
        }),
        NS,
    );
    let snap = store.snapshot(&Selection::default());
    let a = allocate(&snap, &Assignments::default());
    (snap, a)
}

fn me(name: &str) -> L2Node {
    L2Node {
        name: name.into(),
        interfaces: iface("eth0", "192.0.2.0/24"),
        addresses: Vec::new(),
    }
}

fn gossip(live: &[&str]) -> Members {
    Members::Gossip(
        live.iter()
            .map(|n| (n.to_string(), iface("eth0", "192.0.2.0/24")))
            .collect(),
    )
}

/// The nodes that own 192.0.2.100 when each plans with `live` as its view.
fn owners(snap: &Snapshot, a: &Assignments, live: &[&str]) -> Vec<String> {
    live.iter()
        .filter(|n| {
            plan(snap, a, &me(n), &gossip(live), true)
                .owned
                .get("eth0")
                .is_some_and(|s| s.contains(&"192.0.2.100".parse().unwrap()))
        })
        .map(|n| n.to_string())
        .collect()
}

#[test]
fn exactly_one_live_node_owns_each_ip_and_all_agree_on_it() {
    let (snap, a) = snapshot(None);
    let all = owners(&snap, &a, &NODES);
    assert_eq!(all.len(), 1, "{all:?}");
    for n in NODES {
        let p = plan(&snap, &a, &me(n), &gossip(&NODES), true);
        assert_eq!(p.owners.len(), 1);
        assert_eq!(p.owners[0].node.as_deref(), Some(all[0].as_str()));
    }
}

#[test]
fn when_the_owner_leaves_another_node_takes_over() {
    let (snap, a) = snapshot(None);
    let first = owners(&snap, &a, &NODES)[0].clone();
    let rest: Vec<&str> = NODES.iter().copied().filter(|n| *n != first).collect();
    let next = owners(&snap, &a, &rest);
    assert_eq!(next.len(), 1);
    assert_ne!(next[0], first);
}

#[test]
fn a_node_without_quorum_owns_nothing_but_still_reports_the_owner() {
    let (snap, a) = snapshot(None);
    let first = owners(&snap, &a, &NODES)[0].clone();
    let p = plan(&snap, &a, &me(&first), &gossip(&NODES), false);
    assert!(p.owned.is_empty());
    assert_eq!(p.owners[0].node.as_deref(), Some(first.as_str()));
}

#[test]
fn local_policy_elects_only_a_node_with_a_ready_endpoint() {
    let (snap, a) = snapshot(Some("node-c"));
    assert_eq!(owners(&snap, &a, &NODES), vec!["node-c".to_string()]);
}

#[test]
fn the_ip_goes_on_the_interface_of_its_subnet() {
    let node = L2Node {
        name: "n".into(),
        interfaces: [
            iface("eth1", "198.51.100.0/24"),
            iface("eth0", "192.0.2.0/24"),
        ]
        .concat(),
        addresses: vec!["198.51.100.7".parse().unwrap()],
    };
    assert_eq!(
        interface_for(&node, "192.0.2.100".parse().unwrap(), None).as_deref(),
        Some("eth0")
    );
    assert_eq!(
        interface_for(&node, "203.0.113.1".parse().unwrap(), None).as_deref(),
        Some("eth1"),
        "no subnet matches: the interface of the node's address"
    );
    assert_eq!(
        interface_for(
            &node,
            "192.0.2.100".parse().unwrap(),
            Some(&["eth1".into()])
        )
        .as_deref(),
        Some("eth1")
    );
}
