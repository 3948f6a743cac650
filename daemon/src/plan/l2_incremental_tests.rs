//! The L2 planner with memory gives the plan of `l2::plan` after any sequence of changes.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::api::{L2Advertisement, L2AdvertisementSpec};
use crate::election::InterfaceFacts;
use crate::fixtures;
use crate::ipam::allocate;
use crate::plan::l2;
use crate::snapshot::{Object, ObjectKey, Selection, Store};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const NS: &str = "edgelb-system";
const NODES: usize = 6;
const SERVICES: u8 = 8;

fn node_name(n: usize) -> String {
    format!("node-{n}")
}

fn iface(up: bool, lan: bool) -> Vec<InterfaceFacts> {
    let subnet = if lan {
        "192.0.2.0/24"
    } else {
        "198.51.100.0/24"
    };
    vec![InterfaceFacts {
        name: "eth0".into(),
        up,
        subnets: vec![subnet.parse().expect("literal")],
    }]
}

fn slice(svc: u8, nodes: &[usize]) -> Object {
    Object::EndpointSlice(fixtures::endpoint_slice(
        "default",
        &format!("s{svc}"),
        &format!("s{svc}-1"),
        nodes.iter().map(|n| node_name(*n)),
    ))
}

/// Even Services share IPs with each other (distinct ports, same traffic policy for those
/// with the same parity of `local`).
fn service(i: u8, local: bool) -> Object {
    let mut svc = fixtures::service("default", &format!("s{i}"), 80 + i32::from(i));
    if i.is_multiple_of(2) {
        svc = fixtures::annotate(
            svc,
            crate::api::annotations::ALLOW_SHARED_IP,
            if local { "shared-local" } else { "shared" },
        );
    }
    if local {
        if let Some(s) = svc.spec.as_mut() {
            s.external_traffic_policy = Some("Local".into());
        }
    }
    Object::Service(svc)
}

#[derive(Clone, Debug)]
enum Op {
    /// A member goes down or comes back.
    Live(usize, bool),
    /// A member gossips new interface facts.
    Iface(usize, bool, bool),
    /// A Node object is added (with a label) or removed.
    NodeObject(usize, bool),
    /// A Service's endpoints move.
    Endpoints(u8, Vec<usize>),
    /// A Service is added (Local or not) or removed.
    Service(u8, Option<bool>),
    /// The split-brain guard flips.
    MayOwn(bool),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..NODES, any::<bool>()).prop_map(|(n, b)| Op::Live(n, b)),
        2 => (0..NODES, any::<bool>(), any::<bool>()).prop_map(|(n, u, l)| Op::Iface(n, u, l)),
        1 => (0..NODES, any::<bool>()).prop_map(|(n, b)| Op::NodeObject(n, b)),
        2 => (0..SERVICES, proptest::collection::vec(0..NODES, 0..3)).prop_map(|(s, n)| Op::Endpoints(s, n)),
        2 => (0..SERVICES, proptest::option::of(any::<bool>())).prop_map(|(s, l)| Op::Service(s, l)),
        1 => any::<bool>().prop_map(Op::MayOwn),
    ]
}

struct World {
    store: Store,
    members: BTreeMap<String, Vec<InterfaceFacts>>,
    down: BTreeMap<String, Vec<InterfaceFacts>>,
    may_own: bool,
}

impl World {
    fn new() -> World {
        let mut store = Store::default();
        store.apply(
            Object::IPAddressPool(fixtures::pool(NS, "lan", &["192.0.2.100-192.0.2.120"])),
            NS,
        );
        store.apply(
            Object::L2Advertisement(L2Advertisement {
                metadata: ObjectMeta {
                    name: Some("lan".into()),
                    namespace: Some(NS.into()),
                    ..Default::default()
                },
                spec: L2AdvertisementSpec::default(),
                status: None,
            }),
            NS,
        );
        // A second advertisement covering the same pool, limited to eth0.
        store.apply(
            Object::L2Advertisement(L2Advertisement {
                metadata: ObjectMeta {
                    name: Some("lan-eth0".into()),
                    namespace: Some(NS.into()),
                    ..Default::default()
                },
                spec: L2AdvertisementSpec {
                    interfaces: vec!["eth0".into()],
                    ..Default::default()
                },
                status: None,
            }),
            NS,
        );
        let mut members = BTreeMap::new();
        for n in 0..NODES {
            store.apply(Object::Node(fixtures::node(&node_name(n), &[])), NS);
            members.insert(node_name(n), iface(true, true));
        }
        for i in 0..SERVICES {
            store.apply(service(i, i % 2 == 1), NS);
            store.apply(slice(i, &[usize::from(i) % NODES]), NS);
        }
        World {
            store,
            members,
            down: BTreeMap::new(),
            may_own: true,
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Live(n, live) => {
                let name = node_name(*n);
                if *live {
                    if let Some(f) = self.down.remove(&name) {
                        self.members.insert(name, f);
                    }
                } else if let Some(f) = self.members.remove(&name) {
                    self.down.insert(name, f);
                }
            }
            Op::Iface(n, up, lan) => {
                let name = node_name(*n);
                if let Some(f) = self.members.get_mut(&name) {
                    *f = iface(*up, *lan);
                }
            }
            Op::NodeObject(n, present) => {
                let name = node_name(*n);
                if *present {
                    self.store
                        .apply(Object::Node(fixtures::node(&name, &[("zone", "b")])), NS);
                } else {
                    self.store.delete("Node", &ObjectKey::new("", &name));
                }
            }
            Op::Endpoints(s, nodes) => self.store.apply(slice(*s, nodes), NS),
            Op::Service(s, Some(local)) => self.store.apply(service(*s, *local), NS),
            Op::Service(s, None) => self
                .store
                .delete("Service", &ObjectKey::new("default", &format!("s{s}"))),
            Op::MayOwn(b) => self.may_own = *b,
        }
    }
}

fn me() -> L2Node {
    L2Node {
        name: node_name(0),
        interfaces: iface(true, true),
        addresses: Vec::new(),
    }
}

#[test]
fn one_member_down_is_an_incremental_step_and_gives_the_full_plan() {
    let mut w = World::new();
    let snap = w.store.snapshot(&Selection::default());
    let a = allocate(&snap, &Assignments::default());
    let mut planner = L2Planner::default();
    let members = Members::Gossip(w.members.clone());
    assert_eq!(
        planner.plan(&snap, &a, &me(), &members, true),
        l2::plan(&snap, &a, &me(), &members, true)
    );
    assert_eq!(planner.last_kind(), Some(L2PlanKind::Full));
    let again = planner.plan(&snap, &a, &me(), &members, true);
    assert_eq!(planner.last_kind(), Some(L2PlanKind::Reused));
    assert_eq!(again, l2::plan(&snap, &a, &me(), &members, true));

    w.apply(&Op::Live(3, false));
    let members = Members::Gossip(w.members.clone());
    let got = planner
        .replan_members(&me(), &members, true)
        .expect("planned before");
    assert_eq!(planner.last_kind(), Some(L2PlanKind::NodesChanged(1)));
    let want = l2::plan(&snap, &a, &me(), &members, true);
    assert_eq!(got, Replanned::Changed(want.clone()));
    // Nothing changed since: the plan stands, and is said to without a new one.
    assert_eq!(
        planner.replan_members(&me(), &members, true),
        Some(Replanned::Same)
    );
    assert_eq!(planner.last_plan(), Some(want.clone()));
    assert!(want
        .owners
        .iter()
        .all(|o| o.node.as_deref() != Some("node-3")));

    // One Service's endpoints move: only its IP is re-elected.
    w.apply(&Op::Endpoints(1, vec![4]));
    let snap = w.store.snapshot(&Selection::default());
    let a = allocate(&snap, &a);
    let got = planner.plan(&snap, &a, &me(), &members, true);
    assert_eq!(planner.last_kind(), Some(L2PlanKind::RequestsChanged(1)));
    assert_eq!(got, l2::plan(&snap, &a, &me(), &members, true));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn prop_planner_equals_full_plan(ops in proptest::collection::vec(proptest::collection::vec(op_strategy(), 1..3), 1..15)) {
        let mut w = World::new();
        let mut planner = L2Planner::default();
        let mut a = Assignments::default();
        let mut last: Option<(l2::L2Requests, u64)> = None;
        for (step, batch) in ops.iter().enumerate() {
            for op in batch {
                w.apply(op);
            }
            let snap = w.store.snapshot(&Selection::default());
            a = allocate(&snap, &a);
            let members = Members::Gossip(w.members.clone());
            let got = planner.plan(&snap, &a, &me(), &members, w.may_own);
            let want = l2::plan(&snap, &a, &me(), &members, w.may_own);
            prop_assert_eq!(got, want, "step {} {:?} via {:?}", step, batch, planner.last_kind());
            // The requests the guard shares are the snapshot's, and their generation
            // changes whenever they do (the guard's scopes are kept by generation).
            let (reqs, generation) = planner.requests().expect("planned");
            prop_assert_eq!(reqs, &l2::requests(&snap, &a));
            if let Some((before, g)) = &last {
                if before != reqs {
                    prop_assert_ne!(*g, generation, "step {}: new requests, same generation", step);
                }
            }
            last = Some((reqs.clone(), generation));
        }
    }

    /// Membership-only changes on one snapshot: the path the speaker's tick takes.
    #[test]
    fn prop_planner_equals_full_plan_on_membership_changes(ops in proptest::collection::vec(proptest::collection::vec(op_strategy(), 1..4), 1..15)) {
        let mut w = World::new();
        let snap = w.store.snapshot(&Selection::default());
        let a = allocate(&snap, &Assignments::default());
        let mut planner = L2Planner::default();
        for (step, batch) in ops.iter().enumerate() {
            for op in batch {
                if matches!(op, Op::Live(..) | Op::Iface(..) | Op::MayOwn(_)) {
                    w.apply(op);
                }
            }
            let members = Members::Gossip(w.members.clone());
            let got = match planner.replan_members(&me(), &members, w.may_own) {
                Some(Replanned::Changed(p)) => p,
                // The last plan stands: it must be the plan for these members.
                Some(Replanned::Same) => planner.last_plan().expect("planned before"),
                None => planner.plan(&snap, &a, &me(), &members, w.may_own),
            };
            let want = l2::plan(&snap, &a, &me(), &members, w.may_own);
            prop_assert_eq!(got, want, "step {} {:?} via {:?}", step, batch, planner.last_kind());
        }
    }
}
