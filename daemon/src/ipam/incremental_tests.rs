//! The incremental path equals the full reference over random sequences of changes.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::api::annotations::ADDRESS_POOL;
use crate::fixtures::{annotate, namespace, pool};
use crate::ipam::allocate;
use crate::snapshot::{Object, Selection, Store};
use crate::status::changes::diff;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

const NS: &str = "edgelb-system";

/// One Service as the generator describes it.
#[derive(Clone, Debug)]
struct Svc {
    gold: bool,
    name: u8,
    port: i32,
    share: Option<u8>,
    request: Option<u8>,
    pool: Option<u8>,
    family: u8,
}

fn svc_strategy() -> impl Strategy<Value = Svc> {
    (
        any::<bool>(),
        0u8..30,
        1i32..4,
        proptest::option::weighted(0.25, 0u8..3),
        proptest::option::weighted(0.15, 0u8..24),
        proptest::option::weighted(0.1, 0u8..3),
        0u8..4,
    )
        .prop_map(|(gold, name, port, share, request, pool, family)| Svc {
            gold,
            name,
            port,
            share,
            request,
            pool,
            family,
        })
}

fn object(s: &Svc) -> Object {
    let ns = if s.gold { "gold" } else { "default" };
    let mut o =
        crate::ipam::tests::generated_service(ns, s.name, s.port, s.share, s.request, s.family);
    if let Some(p) = s.pool {
        o = annotate(o, ADDRESS_POOL, ["a", "b", "c"][usize::from(p)]);
    }
    Object::Service(o)
}

#[derive(Clone, Debug)]
enum Op {
    /// Add or replace a Service.
    Put(Svc),
    /// Remove the Service with this name (in both namespaces).
    Remove(u8),
    /// Re-apply the same object (a new `Arc`, same content: a resync).
    Touch(u8),
    /// Edit the pools.
    Pools(u8),
    /// Toggle the label that the `gold` pool selects namespaces by.
    GoldLabel(bool),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => svc_strategy().prop_map(Op::Put),
        3 => (0u8..30).prop_map(Op::Remove),
        1 => (0u8..30).prop_map(Op::Touch),
        1 => (0u8..5).prop_map(Op::Pools),
        1 => any::<bool>().prop_map(Op::GoldLabel),
    ]
}

fn pool_a() -> Object {
    Object::IPAddressPool(pool(NS, "a", &["192.0.2.0/28", "2001:db8::/124"]))
}

fn pool_b(addresses: &str) -> Object {
    Object::IPAddressPool(pool(NS, "b", &[addresses]))
}

/// Pool `c` overlaps `a` and is not used automatically.
fn pool_c() -> Object {
    let mut c = pool(NS, "c", &["192.0.2.8/29"]);
    c.spec.auto_assign = false;
    Object::IPAddressPool(c)
}

/// Pool `gold` serves only namespaces labelled `tier=gold`, before every other pool.
fn pool_gold() -> Object {
    let mut g = pool(NS, "gold", &["198.51.100.0/30"]);
    g.spec.service_allocation = Some(crate::api::ServiceAllocation {
        priority: Some(1),
        namespace_selectors: vec![LabelSelector {
            match_labels: Some([("tier".to_string(), "gold".to_string())].into()),
            match_expressions: None,
        }],
        ..Default::default()
    });
    Object::IPAddressPool(g)
}

struct World {
    store: Store,
    services: BTreeMap<(bool, u8), Svc>,
}

impl World {
    fn new(initial: &[Svc]) -> World {
        let mut store = Store::default();
        store.apply(pool_a(), NS);
        store.apply(pool_b("192.0.2.16/29"), NS);
        store.apply(pool_gold(), NS);
        store.apply(Object::Namespace(namespace("default", &[])), NS);
        store.apply(
            Object::Namespace(namespace("gold", &[("tier", "gold")])),
            NS,
        );
        let mut w = World {
            store,
            services: BTreeMap::new(),
        };
        for s in initial {
            w.apply(&Op::Put(s.clone()));
        }
        w
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Put(s) => {
                self.store.apply(object(s), NS);
                self.services.insert((s.gold, s.name), s.clone());
            }
            Op::Remove(name) => {
                for gold in [false, true] {
                    if self.services.remove(&(gold, *name)).is_some() {
                        let ns = if gold { "gold" } else { "default" };
                        self.store
                            .delete("Service", &ObjectKey::new(ns, &format!("s{name}")));
                    }
                }
            }
            Op::Touch(name) => {
                for gold in [false, true] {
                    if let Some(s) = self.services.get(&(gold, *name)) {
                        self.store.apply(object(s), NS);
                    }
                }
            }
            Op::Pools(v) => match v {
                0 => self.store.apply(pool_b("192.0.2.16/28"), NS),
                1 => self.store.apply(pool_b("192.0.2.16/29"), NS),
                2 => self.store.apply(pool_c(), NS),
                3 => self.store.delete("IPAddressPool", &ObjectKey::new(NS, "c")),
                _ => self.store.apply(pool_b("192.0.2.16/30"), NS),
            },
            Op::GoldLabel(on) => {
                let labels: &[(&str, &str)] = if *on { &[("tier", "gold")] } else { &[] };
                self.store
                    .apply(Object::Namespace(namespace("gold", labels)), NS);
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.store.snapshot(&Selection::default())
    }
}

#[test]
fn one_edit_rechecks_only_that_service_and_gives_the_full_result() {
    let initial: Vec<Svc> = (0..20)
        .map(|n| Svc {
            gold: false,
            name: n,
            port: 80,
            share: None,
            request: None,
            pool: None,
            family: 0,
        })
        .collect();
    let mut w = World::new(&initial);
    let s0 = w.snapshot();
    let mut inc = IncrementalAllocator::new(&s0, &Assignments::default());
    let full0 = allocate(&s0, &Assignments::default());
    assert_eq!(inc.assignments(), &full0);
    // 20 Services, 16 + 8 v4 addresses: all placed.
    assert!(full0.outcomes.values().all(|o| o.is_ok()));

    let mut edited = initial[3].clone();
    edited.port = 81;
    w.apply(&Op::Put(edited));
    let s1 = w.snapshot();
    let u = inc.update(&s1);
    assert_eq!(u.kind, UpdateKind::Incremental { rechecked: 1 });
    assert_eq!(inc.assignments(), &allocate(&s1, &full0));
    assert_eq!(u.after.outcomes.len(), 1);

    // Removing s0 frees 192.0.2.0; a new Service gets it (the scan went back to it).
    w.apply(&Op::Remove(0));
    w.apply(&Op::Put(Svc {
        name: 29,
        ..initial[0].clone()
    }));
    let s2 = w.snapshot();
    let before = inc.assignments().clone();
    let u = inc.update(&s2);
    assert_eq!(u.kind, UpdateKind::Incremental { rechecked: 1 });
    let full2 = allocate(&s2, &before);
    assert_eq!(inc.assignments(), &full2);
    assert_eq!(
        full2.ips(&ObjectKey::new("default", "s29")),
        &["192.0.2.0".parse::<IpAddr>().expect("literal")][..]
    );
    assert_eq!(diff(&u.before, &u.after), diff(&before, &full2));

    // A pool edit falls back to a full run.
    w.apply(&Op::Pools(0));
    let s3 = w.snapshot();
    let before = inc.assignments().clone();
    assert_eq!(inc.update(&s3).kind, UpdateKind::Full);
    assert_eq!(inc.assignments(), &allocate(&s3, &before));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn prop_incremental_equals_full_over_random_changes(
        initial in proptest::collection::vec(svc_strategy(), 0..30),
        ops in proptest::collection::vec(op_strategy(), 1..25),
        seeded in any::<bool>(),
    ) {
        let mut w = World::new(&initial);
        let s0 = w.snapshot();
        // Start from nothing, or from a previous result (as after a restart).
        let seed = if seeded {
            allocate(&s0, &Assignments::default())
        } else {
            Assignments::default()
        };
        let mut inc = IncrementalAllocator::new(&s0, &seed);
        let mut reference = allocate(&s0, &seed);
        prop_assert_eq!(inc.assignments(), &reference);
        for (step, op) in ops.iter().enumerate() {
            w.apply(op);
            let s = w.snapshot();
            let u = inc.update(&s);
            let next = allocate(&s, &reference);
            prop_assert_eq!(
                inc.assignments(), &next,
                "step {} ({:?}) via {:?}", step, op, u.kind
            );
            prop_assert_eq!(diff(&u.before, &u.after), diff(&reference, &next), "step {}: changes", step);
            reference = next;
        }
        // Nothing changed: nothing but the failures is re-checked, and nothing moves.
        let s = w.snapshot();
        let failed = reference.outcomes.values().filter(|o| o.is_err()).count();
        let u = inc.update(&s);
        prop_assert_eq!(u.kind, UpdateKind::Incremental { rechecked: failed });
        prop_assert_eq!(inc.assignments(), &allocate(&s, &reference));
    }
}
