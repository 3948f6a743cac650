//! Allocation keyed by (Service, node pool): per-pool keys, pool scoping, per-pool errors,
//! stickiness across unrelated changes, and incremental == full with node pools.

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::api::annotations::NODEPOOL_LABEL;
use crate::fixtures::NODE_POOLS_ANNOTATION;
use crate::fixtures::{
    annotate, node, node_pools_from_annotation, pool, regions, scoped_pool, service,
};
use crate::snapshot::{Object, Selection as SvcSelection, Store};
use crate::status::changes::diff;

const NS: &str = "edgelb-system";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

fn akey(name: &str, np: Option<&str>) -> AllocationKey {
    AllocationKey {
        service: ObjectKey::new("default", name),
        node_pool: np.map(Arc::from),
    }
}

fn two_regions() -> Store {
    let mut store = Store::default();
    let scoped = [
        ("hefei", "192.0.2.0/30", "np-hefei"),
        ("chengdu", "198.51.100.0/30", "np-chengdu"),
    ];
    let nodes = [("hf-1", "np-hefei"), ("cd-1", "np-chengdu")];
    for o in regions(NS, &scoped, "203.0.113.0/30", &nodes) {
        store.apply(o, NS);
    }
    store
}

fn pooled(name: &str, pools: &str) -> Object {
    Object::Service(annotate(
        service("default", name, 80),
        NODE_POOLS_ANNOTATION,
        pools,
    ))
}

/// An outcome as (pool, IPs) or the error text.
type Plain = Result<(String, Vec<IpAddr>), String>;

fn run(store: &Store, previous: &Assignments) -> Assignments {
    allocate_with(
        node_pools_from_annotation,
        &store.snapshot(&SvcSelection::default()),
        previous,
    )
}

#[test]
fn a_service_with_two_node_pools_gets_one_ip_per_pool_from_that_pools_range() {
    let mut store = two_regions();
    store.apply(pooled("cube", "np-hefei,np-chengdu"), NS);
    store.apply(Object::Service(service("default", "plain", 80)), NS);
    let a = run(&store, &Assignments::default());
    let got: Vec<(AllocationKey, Plain)> = a
        .outcomes
        .iter()
        .map(|(k, o)| {
            (
                k.clone(),
                o.clone()
                    .map(|a| (a.pool.to_string(), a.ips))
                    .map_err(|e| e.to_string()),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                akey("cube", Some("np-chengdu")),
                Ok(("chengdu".into(), vec![ip("198.51.100.0")]))
            ),
            (
                akey("cube", Some("np-hefei")),
                Ok(("hefei".into(), vec![ip("192.0.2.0")]))
            ),
            // A cluster-wide Service never gets a region's range.
            (
                akey("plain", None),
                Ok(("cluster".into(), vec![ip("203.0.113.0")]))
            ),
        ]
    );
    assert_eq!(a.of_service(&ObjectKey::new("default", "cube")).count(), 2);
}

#[test]
fn a_node_pool_without_a_scoped_pool_or_with_a_full_one_fails_alone_and_says_which() {
    let mut store = two_regions();
    // hefei has 4 addresses: the fifth Service finds it full; chengdu still serves it.
    for i in 0..5 {
        store.apply(pooled(&format!("s{i}"), "np-hefei,np-chengdu,np-wuhan"), NS);
    }
    let a = run(&store, &Assignments::default());
    let err = |name: &str, np: &str| match a.outcomes.get(&akey(name, Some(np))) {
        Some(Err(e)) => e.to_string(),
        other => panic!("{name}/{np}: {other:?}"),
    };
    assert_eq!(
        err("s0", "np-wuhan"),
        r#"no IPAddressPool with autoAssign scoped to node pool "np-wuhan" (spec.nodePools / spec.nodePoolSelectors) serves this Service"#
    );
    assert_eq!(
        err("s4", "np-hefei"),
        r#"no free address in IPAddressPool "hefei""#
    );
    assert_eq!(
        err("s4", "np-chengdu"),
        r#"no free address in IPAddressPool "chengdu""#
    );
    assert!(matches!(
        a.outcomes.get(&akey("s3", Some("np-hefei"))),
        Some(Ok(_))
    ));
    // The Event names the node pool.
    let changes = diff(&Assignments::default(), &a);
    let wuhan = changes
        .iter()
        .find(|c| c.key() == &akey("s0", Some("np-wuhan")))
        .expect("an event for wuhan");
    assert!(
        wuhan
            .message()
            .starts_with("no IP assigned for node pool np-wuhan: "),
        "{}",
        wuhan.message()
    );
}

#[test]
fn a_selector_that_selects_no_pool_or_cannot_be_read_is_reported_on_the_service() {
    fn bad(
        _: &Snapshot,
        _: &crate::service::ServiceFacts,
    ) -> Result<Option<Vec<Arc<str>>>, String> {
        Err("Service default/cube: annotation service.openyurt.io/nodepool-labelselector: \"=x\" is not a label selector".into())
    }
    let mut store = two_regions();
    store.apply(pooled("cube", ""), NS);
    let a = run(&store, &Assignments::default());
    assert_eq!(
        a.outcomes.get(&akey("cube", None)),
        Some(&Err(AllocationError::NoNodePoolSelected))
    );
    let snap = store.snapshot(&SvcSelection::default());
    let a = allocate_with(bad, &snap, &Assignments::default());
    assert!(matches!(
        a.outcomes.get(&akey("cube", None)),
        Some(Err(AllocationError::BadNodePoolSelector { message })) if message.contains("nodepool-labelselector")
    ));
}

#[test]
fn rescoping_one_pool_moves_only_that_pools_ip() {
    let mut store = two_regions();
    store.apply(pooled("cube", "np-hefei,np-chengdu"), NS);
    let a = run(&store, &Assignments::default());
    // hefei's range is now scoped elsewhere; a new range serves np-hefei.
    store.apply(
        Object::IPAddressPool(scoped_pool(NS, "hefei", &["192.0.2.0/30"], &["np-other"])),
        NS,
    );
    store.apply(
        Object::IPAddressPool(scoped_pool(
            NS,
            "hefei-2",
            &["192.0.2.64/30"],
            &["np-hefei"],
        )),
        NS,
    );
    let b = run(&store, &a);
    assert_eq!(
        b.outcomes.get(&akey("cube", Some("np-chengdu"))),
        a.outcomes.get(&akey("cube", Some("np-chengdu")))
    );
    assert_eq!(
        b.outcomes
            .get(&akey("cube", Some("np-hefei")))
            .and_then(|o| o.as_ref().ok())
            .map(|a| a.ips.clone()),
        Some(vec![ip("192.0.2.64")])
    );
}

#[test]
fn requested_ips_are_split_between_the_node_pools_that_hold_them() {
    let mut store = two_regions();
    store.apply(
        Object::Service(annotate(
            annotate(
                service("default", "cube", 80),
                NODE_POOLS_ANNOTATION,
                "np-hefei,np-chengdu",
            ),
            crate::api::annotations::LOAD_BALANCER_IPS,
            "192.0.2.2,198.51.100.3",
        )),
        NS,
    );
    let a = run(&store, &Assignments::default());
    let ips = |np: &str| {
        a.outcomes
            .get(&akey("cube", Some(np)))
            .and_then(|o| o.as_ref().ok())
            .map(|a| a.ips.clone())
    };
    assert_eq!(ips("np-hefei"), Some(vec![ip("192.0.2.2")]));
    assert_eq!(ips("np-chengdu"), Some(vec![ip("198.51.100.3")]));
}

// ---- property: incremental == full, and unrelated changes never move an IP ----

#[derive(Clone, Debug)]
enum Op {
    /// Add or replace Service `s{name}` with these node pools (bit i: pool i; 0: none).
    Put(u8, u8, i32),
    /// Remove Service `s{name}`.
    Remove(u8),
    /// Scope pool `p{i}` to node pool `np{j}`.
    Rescope(u8, u8),
    /// Add node `n{i}` to node pool `np{j}` (a membership change: no selection changes).
    NodeJoins(u8, u8),
    /// Remove node `n{i}`.
    NodeLeaves(u8),
}

const NODE_POOLS: [&str; 3] = ["np0", "np1", "np2"];

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..20, 0u8..8, 1i32..3).prop_map(|(n, p, port)| Op::Put(n, p, port)),
        3 => (0u8..20).prop_map(Op::Remove),
        1 => (0u8..3, 0u8..3).prop_map(|(p, j)| Op::Rescope(p, j)),
        2 => (0u8..6, 0u8..3).prop_map(|(i, j)| Op::NodeJoins(i, j)),
        1 => (0u8..6).prop_map(Op::NodeLeaves),
    ]
}

fn base() -> Store {
    let mut store = Store::default();
    store.apply(
        Object::IPAddressPool(pool(NS, "cluster", &["203.0.113.0/29"])),
        NS,
    );
    for i in 0..3u8 {
        store.apply(
            Object::IPAddressPool(scoped_pool(
                NS,
                &format!("p{i}"),
                &[&format!("10.0.{i}.0/29")],
                &[NODE_POOLS[usize::from(i)]],
            )),
            NS,
        );
    }
    store
}

fn apply(store: &mut Store, op: &Op) {
    match op {
        Op::Put(n, bits, port) => {
            let pools: Vec<&str> = (0..3)
                .filter(|i| bits & (1 << i) != 0)
                .map(|i| NODE_POOLS[i])
                .collect();
            let mut svc = service("default", &format!("s{n}"), *port);
            if !pools.is_empty() {
                svc = annotate(svc, NODE_POOLS_ANNOTATION, &pools.join(","));
            }
            store.apply(Object::Service(svc), NS);
        }
        Op::Remove(n) => store.delete("Service", &ObjectKey::new("default", &format!("s{n}"))),
        Op::Rescope(p, j) => store.apply(
            Object::IPAddressPool(scoped_pool(
                NS,
                &format!("p{p}"),
                &[&format!("10.0.{p}.0/29")],
                &[NODE_POOLS[usize::from(*j)]],
            )),
            NS,
        ),
        Op::NodeJoins(i, j) => store.apply(
            Object::Node(node(
                &format!("n{i}"),
                &[(NODEPOOL_LABEL, NODE_POOLS[usize::from(*j)])],
            )),
            NS,
        ),
        Op::NodeLeaves(i) => store.delete("Node", &ObjectKey::new("", &format!("n{i}"))),
    }
}

fn ok_ips(a: &Assignments) -> BTreeMap<AllocationKey, Vec<IpAddr>> {
    a.outcomes
        .iter()
        .filter_map(|(k, o)| Some((k.clone(), o.as_ref().ok()?.ips.clone())))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn prop_incremental_equals_full_with_node_pools(
        initial in proptest::collection::vec(op_strategy(), 0..20),
        ops in proptest::collection::vec(op_strategy(), 1..20),
    ) {
        let mut store = base();
        for op in &initial {
            apply(&mut store, op);
        }
        let s0 = store.snapshot(&SvcSelection::default());
        let mut inc = IncrementalAllocator::new_with(node_pools_from_annotation, &s0, &Assignments::default());
        let mut reference = allocate_with(node_pools_from_annotation, &s0, &Assignments::default());
        prop_assert_eq!(inc.assignments(), &reference);
        for (step, op) in ops.iter().enumerate() {
            apply(&mut store, op);
            let s = store.snapshot(&SvcSelection::default());
            let u = inc.update(&s);
            let next = allocate_with(node_pools_from_annotation, &s, &reference);
            prop_assert_eq!(inc.assignments(), &next, "step {} ({:?}) via {:?}", step, op, u.kind);
            prop_assert_eq!(diff(&u.before, &u.after), diff(&reference, &next), "step {}: changes", step);
            // Every per-pool IP comes from a pool scoped to that node pool, every
            // cluster-wide IP from an unscoped one.
            for (k, o) in &next.outcomes {
                if let Ok(a) = o {
                    let p = s.allocation_pools.iter().find(|p| p.name == a.pool).expect("pool");
                    prop_assert!(p.serves_node_pool(k.node_pool.as_deref()), "{:?} from {}", k, a.pool);
                }
            }
            // Unrelated changes never move an IP: a node joining or leaving, or a Service
            // change, leaves every other allocation that was placed where it was.
            let (before, after) = (ok_ips(&reference), ok_ips(&next));
            match op {
                Op::Rescope(..) => {}
                Op::NodeJoins(..) | Op::NodeLeaves(_) => {
                    prop_assert_eq!(&before, &after, "step {}: a node change moved an IP", step);
                }
                Op::Put(n, ..) | Op::Remove(n) => {
                    let changed = format!("s{n}");
                    for (k, ips) in &before {
                        if *k.service.name != *changed {
                            prop_assert_eq!(after.get(k), Some(ips), "step {}: {:?} moved", step, k);
                        }
                    }
                }
            }
            reference = next;
        }
    }
}
