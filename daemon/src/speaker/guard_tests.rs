//! The guard on a 2-node pool (the blackout) and a scope split by subnet: which IPs
//! are denied as members crash, leave, are forgotten, and as the API server answers or not.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::api::{L2Advertisement, L2AdvertisementSpec};
use crate::fixtures;
use crate::ipam::{allocate, Assignments};
use crate::membership::{MemberFacts, SpeakerId};
use crate::snapshot::{Object, Selection, Store};

const NS: &str = "edgelb-system";
const LAN_A: &str = "192.0.2.0/24";
const LAN_B: &str = "198.51.100.0/24";

fn iface(subnet: &str) -> Vec<InterfaceFacts> {
    vec![InterfaceFacts {
        name: "eth0".into(),
        up: true,
        subnets: vec![subnet.parse().expect("literal")],
    }]
}

/// Nodes a and b on LAN A, c on LAN B; one Service with an IP on LAN A (ready endpoints
/// everywhere), one L2Advertisement for all.
fn world() -> (Snapshot, Assignments) {
    let mut store = Store::default();
    store.apply(
        Object::IPAddressPool(fixtures::pool(NS, "lan", &["192.0.2.100/32"])),
        NS,
    );
    for n in ["a", "b", "c"] {
        store.apply(Object::Node(fixtures::node(n, &[])), NS);
    }
    store.apply(Object::Service(fixtures::service("default", "web", 80)), NS);
    store.apply(
        Object::EndpointSlice(fixtures::endpoint_slice(
            "default",
            "web",
            "web-1",
            ["a".to_string(), "b".into(), "c".into()],
        )),
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

fn member(node: &str, health: Health, left: bool, subnet: &str) -> MemberSnapshot {
    MemberSnapshot {
        id: SpeakerId {
            node: node.into(),
            addr: "127.0.0.1:7946".parse().expect("literal"),
            generation: 1,
        },
        health,
        left,
        facts: Some(MemberFacts {
            node: node.into(),
            generation: 1,
            version: 1,
            interfaces: iface(subnet),
        }),
        is_self: false,
    }
}

fn me() -> L2Node {
    L2Node {
        name: "a".into(),
        interfaces: iface(LAN_A),
        addresses: Vec::new(),
    }
}

/// The snapshot and the L2 requests the guard evaluates (generation 1, as the planner's).
struct Inputs {
    snap: Snapshot,
    requests: L2Requests,
}

impl Inputs {
    fn evaluate(&self, g: &mut L2Guard, now: Instant) -> bool {
        g.evaluate(&self.snap, &me(), &self.requests, 1, now)
    }
}

/// A guard for node a that has seen b (LAN A) and c (LAN B) live.
fn started(t0: Instant) -> (L2Guard, Inputs) {
    let (snap, a) = world();
    let requests = l2::requests(&snap, &a);
    let inputs = Inputs { snap, requests };
    let mut g = L2Guard::gossip();
    let all = [
        member("b", Health::Alive, false, LAN_A),
        member("c", Health::Alive, false, LAN_B),
    ];
    g.refresh(&all, JOIN_WAIT, t0);
    inputs.evaluate(&mut g, t0);
    (g, inputs)
}

fn ip() -> IpAddr {
    "192.0.2.100".parse().expect("literal")
}

#[test]
fn the_scope_is_the_nodes_that_can_own_the_ip() {
    let t0 = Instant::now();
    let (mut g, inputs) = started(t0);
    assert!(g.denied().is_empty());
    assert!(
        g.witness_needed(),
        "a 2-node scope needs the witness kept fresh"
    );
    // c (another subnet) crashes: a's scope {a, b} is whole, nothing denied.
    let all = [
        member("b", Health::Alive, false, LAN_A),
        member("c", Health::Down, false, LAN_B),
    ];
    g.refresh(&all, JOIN_WAIT, t0);
    inputs.evaluate(&mut g, t0);
    assert!(
        g.denied().is_empty(),
        "c cannot own the IP; its loss is not ours"
    );
}

#[test]
fn a_crashed_peer_in_a_two_node_scope_leaves_the_ip_to_the_survivor_with_the_api_server() {
    let t0 = Instant::now();
    let (mut g, inputs) = started(t0);
    let crashed = [
        member("b", Health::Down, false, LAN_A),
        member("c", Health::Alive, false, LAN_B),
    ];
    g.refresh(&crashed, JOIN_WAIT, t0);
    // Without the API server: 1 of 2 is no quorum (it may be a partition).
    inputs.evaluate(&mut g, t0);
    assert_eq!(g.denied().iter().copied().collect::<Vec<_>>(), vec![ip()]);
    // The API server answers: the tie goes to us.
    g.set_witness(Some(t0));
    assert!(g.due(t0), "a fresh witness re-evaluates");
    inputs.evaluate(&mut g, t0);
    assert!(g.denied().is_empty());
    // The witness goes stale after WITNESS_TTL: denied again (the partition bound).
    let later = t0 + WITNESS_TTL + Duration::from_millis(100);
    assert!(g.due(later));
    inputs.evaluate(&mut g, later);
    assert_eq!(g.denied().len(), 1);
}

#[test]
fn a_crashed_peer_is_forgotten_only_under_quorum() {
    let t0 = Instant::now();
    let (mut g, inputs) = started(t0);
    let crashed = [
        member("b", Health::Down, false, LAN_A),
        member("c", Health::Alive, false, LAN_B),
    ];
    g.refresh(&crashed, JOIN_WAIT, t0);
    // Past FORGET_AFTER without the API server: no quorum, b is not forgotten.
    let t1 = t0 + FORGET_AFTER + Duration::from_secs(1);
    inputs.evaluate(&mut g, t1);
    assert_eq!(g.denied().len(), 1);
    assert!(g.memory.contains_key("b"));
    // With the API server: forgotten, and the IP stays ours when the API server goes.
    g.set_witness(Some(t1));
    inputs.evaluate(&mut g, t1);
    assert!(!g.memory.contains_key("b"));
    let t2 = t1 + WITNESS_TTL * 2;
    inputs.evaluate(&mut g, t2);
    assert!(g.denied().is_empty(), "1 of 1 known after forgetting");
    // b comes back: known and live again.
    let back = [
        member("b", Health::Alive, false, LAN_A),
        member("c", Health::Alive, false, LAN_B),
    ];
    assert!(g.refresh(&back, JOIN_WAIT, t2));
    inputs.evaluate(&mut g, t2);
    assert!(g.denied().is_empty());
    assert!(g.memory.contains_key("b"));
}

#[test]
fn a_peer_that_said_goodbye_is_not_counted() {
    let t0 = Instant::now();
    let (mut g, inputs) = started(t0);
    let left = [
        member("b", Health::Down, true, LAN_A),
        member("c", Health::Alive, false, LAN_B),
    ];
    g.refresh(&left, JOIN_WAIT, t0);
    inputs.evaluate(&mut g, t0);
    assert!(
        g.denied().is_empty(),
        "a rolling update: the survivor keeps the IP without the API server"
    );
}

#[test]
fn the_scopes_are_made_again_only_when_what_they_are_made_from_changes() {
    let t0 = Instant::now();
    let (mut g, inputs) = started(t0);
    assert_eq!(g.scope_builds(), 1);
    // Ticks at rest, a heartbeat-only refresh (same members, same facts): kept.
    let all = [
        member("b", Health::Alive, false, LAN_A),
        member("c", Health::Alive, false, LAN_B),
    ];
    for i in 0..5 {
        let now = t0 + Duration::from_millis(100 * i);
        assert!(!g.refresh(&all, JOIN_WAIT, now));
        assert!(!inputs.evaluate(&mut g, now));
    }
    assert_eq!(g.scope_builds(), 1);
    // Liveness is not an input of the scopes: b crashing changes the verdict only.
    let crashed = [
        member("b", Health::Down, false, LAN_A),
        member("c", Health::Alive, false, LAN_B),
    ];
    g.refresh(&crashed, JOIN_WAIT, t0);
    assert!(inputs.evaluate(&mut g, t0), "the IP is denied");
    assert_eq!(g.scope_builds(), 1);
    // New requests (another generation): made again.
    g.evaluate(&inputs.snap, &me(), &inputs.requests, 2, t0);
    assert_eq!(g.scope_builds(), 2);
    // c gossips new interfaces (now on LAN A: in the IP's scope): made again.
    let moved = [
        member("b", Health::Down, false, LAN_A),
        member("c", Health::Alive, false, LAN_A),
    ];
    assert!(g.refresh(&moved, JOIN_WAIT, t0));
    g.evaluate(&inputs.snap, &me(), &inputs.requests, 2, t0);
    assert_eq!(g.scope_builds(), 3);
    assert!(
        g.denied().is_empty(),
        "2 of 3 live in the scope {{a, b, c}}"
    );
}
