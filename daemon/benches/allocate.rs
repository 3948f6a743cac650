//! Allocation and snapshot build at scale: 10 000 Services, 50 pools, 1 000 nodes; cold, and
//! after one Service change. Goal (issue 4): under 20 ms cold, under 1 ms for one change.
//! `allocate_*` is the full reference; `incremental_*` is what the speaker runs
//! (`IncrementalAllocator`). Also timed: a copy of the whole result and the diff of two
//! whole results, which the speaker's loop still pays per snapshot or would without the
//! incremental path's own diff.
//!
//! With node pools (issue 14, `node_pools_*`): the same 10 000 Services, each selecting 2 of
//! 50 node pools (`service.openyurt.io/nodepool-labelselector`, evaluated on every run) over
//! 1 000 nodes, 50 `IPAddressPool`s each scoped to one node pool: 20 000 allocations.
//!
//! `cargo bench -p edgelb-daemon --bench allocate -- --measurement-time 3 --warm-up-time 1`

mod common;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgelb_daemon::api::annotations::{NODEPOOL_LABEL, NODEPOOL_SELECTOR};
use edgelb_daemon::fixtures::{annotate, node, pool, scoped_pool, service};
use edgelb_daemon::ipam::{allocate, Assignments, IncrementalAllocator, UpdateKind};
use edgelb_daemon::snapshot::{Object, Selection, Store};
use edgelb_daemon::status::changes::diff;

const NS: &str = "edgelb-system";

fn cluster() -> Store {
    let mut store = Store::default();
    for p in 0..50 {
        // 50 pools of /23 (512 addresses each, 25 600 in all), in 198.18.0.0/15 style space.
        let cidr = format!("10.{}.{}.0/23", p / 4, (p % 4) * 2 * 32);
        store.apply(
            Object::IPAddressPool(pool(NS, &format!("pool-{p:02}"), &[&cidr])),
            NS,
        );
    }
    for n in 0..1000 {
        let region = format!("region-{}", n % 10);
        store.apply(
            Object::Node(node(
                &format!("node-{n:04}"),
                &[("topology.kubernetes.io/region", &region)],
            )),
            NS,
        );
    }
    for s in 0..10_000 {
        store.apply(
            Object::Service(service(
                &format!("ns-{}", s % 100),
                &format!("svc-{s:05}"),
                80,
            )),
            NS,
        );
    }
    store
}

fn bench(c: &mut Criterion) {
    let sel = Selection::default();
    let store = cluster();
    let snap = store.snapshot(&sel);
    assert_eq!(snap.services.len(), 10_000);
    let cold = allocate(&snap, &Assignments::default());
    assert_eq!(cold.outcomes.values().filter(|o| o.is_ok()).count(), 10_000);

    let mut changed_store = store.clone();
    changed_store.apply(Object::Service(service("ns-new", "svc-new", 80)), NS);
    let changed = changed_store.snapshot(&sel);

    // Baseline for ratios on a loaded machine: the least any allocator does, one hash-map
    // insert per Service key.
    let keys: Vec<_> = snap.services.keys().cloned().collect();
    c.bench_function("baseline_hashmap_insert_10k_keys", |b| {
        b.iter(|| black_box(common::hashmap_insert_baseline(&keys)))
    });
    c.bench_function("snapshot_build_cold_10k_services", |b| {
        b.iter(|| black_box(store.snapshot(&sel)))
    });
    c.bench_function("allocate_cold_10k_services_50_pools", |b| {
        b.iter(|| black_box(allocate(&snap, &Assignments::default())))
    });
    let mut live = changed_store.clone();
    let edited = service("ns-new", "svc-new", 81);
    c.bench_function("snapshot_build_after_one_change", |b| {
        b.iter(|| {
            live.apply(Object::Service(edited.clone()), NS);
            black_box(live.snapshot(&sel))
        })
    });
    c.bench_function("allocate_after_one_change", |b| {
        b.iter(|| black_box(allocate(&changed, &cold)))
    });
    // The incremental path (what the speaker runs): cold, then one Service edited per
    // iteration (svc-new flips between port 81 and 82; every other Service keeps its Arc).
    c.bench_function("incremental_cold_10k_services_50_pools", |b| {
        b.iter(|| black_box(IncrementalAllocator::new(&snap, &Assignments::default())))
    });
    let mut flip_store = changed_store.clone();
    flip_store.apply(Object::Service(service("ns-new", "svc-new", 81)), NS);
    let flip_a = flip_store.snapshot(&sel);
    flip_store.apply(Object::Service(service("ns-new", "svc-new", 82)), NS);
    let flip_b = flip_store.snapshot(&sel);
    let mut inc = IncrementalAllocator::new(&changed, &cold);
    let first = inc.update(&flip_a);
    assert_eq!(first.kind, UpdateKind::Incremental { rechecked: 1 });
    let mut on_a = true;
    c.bench_function("incremental_update_after_one_change", |b| {
        b.iter(|| {
            on_a = !on_a;
            black_box(inc.update(if on_a { &flip_a } else { &flip_b }))
        })
    });
    // What the speaker does with a result besides allocating: one copy, and the changes.
    let after = allocate(&changed, &cold);
    c.bench_function("assignments_clone_10k", |b| {
        b.iter(|| black_box(after.clone()))
    });
    c.bench_function("diff_whole_results_10k", |b| {
        b.iter(|| black_box(diff(&cold, &after)))
    });
}

/// A Service selecting node pools `np-{s % 50}` and `np-{(s + 1) % 50}`.
fn pooled_service(s: usize, port: i32) -> Object {
    let sel = format!(
        "{NODEPOOL_LABEL} in (np-{:02},np-{:02})",
        s % 50,
        (s + 1) % 50
    );
    Object::Service(annotate(
        service(&format!("ns-{}", s % 100), &format!("svc-{s:05}"), port),
        NODEPOOL_SELECTOR,
        &sel,
    ))
}

fn pooled_cluster() -> Store {
    let mut store = Store::default();
    for p in 0..50 {
        let cidr = format!("10.{}.{}.0/23", p / 4, (p % 4) * 2 * 32);
        store.apply(
            Object::IPAddressPool(scoped_pool(
                NS,
                &format!("pool-{p:02}"),
                &[&cidr],
                &[&format!("np-{p:02}")],
            )),
            NS,
        );
    }
    for n in 0..1000 {
        let np = format!("np-{:02}", n % 50);
        store.apply(
            Object::Node(node(&format!("node-{n:04}"), &[(NODEPOOL_LABEL, &np)])),
            NS,
        );
    }
    for s in 0..10_000 {
        store.apply(pooled_service(s, 80), NS);
    }
    store
}

fn bench_node_pools(c: &mut Criterion) {
    let sel = Selection::default();
    let store = pooled_cluster();
    let snap = store.snapshot(&sel);
    assert_eq!(snap.node_pools.len(), 50);
    let cold = allocate(&snap, &Assignments::default());
    assert_eq!(cold.outcomes.len(), 20_000);
    assert!(cold.outcomes.values().all(|o| o.is_ok()));
    assert!(cold.outcomes.keys().all(|k| k.node_pool.is_some()));

    let mut changed_store = store.clone();
    changed_store.apply(pooled_service(10_000, 80), NS);
    let changed = changed_store.snapshot(&sel);

    let mut g = c.benchmark_group("node_pools_10k_services_50_pools_1k_nodes");
    g.sample_size(10);
    let keys: Vec<_> = snap.services.keys().cloned().collect();
    g.bench_function("baseline_hashmap_insert_10k_keys", |b| {
        b.iter(|| black_box(common::hashmap_insert_baseline(&keys)))
    });
    g.bench_function("snapshot_build_cold", |b| {
        b.iter(|| black_box(store.snapshot(&sel)))
    });
    g.bench_function("allocate_cold", |b| {
        b.iter(|| black_box(allocate(&snap, &Assignments::default())))
    });
    g.bench_function("allocate_after_one_change", |b| {
        b.iter(|| black_box(allocate(&changed, &cold)))
    });
    g.bench_function("incremental_cold", |b| {
        b.iter(|| black_box(IncrementalAllocator::new(&snap, &Assignments::default())))
    });
    let mut flip_store = changed_store.clone();
    flip_store.apply(pooled_service(10_000, 81), NS);
    let flip_a = flip_store.snapshot(&sel);
    flip_store.apply(pooled_service(10_000, 82), NS);
    let flip_b = flip_store.snapshot(&sel);
    let mut inc = IncrementalAllocator::new(&changed, &cold);
    let first = inc.update(&flip_a);
    assert_eq!(first.kind, UpdateKind::Incremental { rechecked: 1 });
    let mut on_a = true;
    g.bench_function("incremental_update_after_one_change", |b| {
        b.iter(|| {
            on_a = !on_a;
            black_box(inc.update(if on_a { &flip_a } else { &flip_b }))
        })
    });
    // A node joining a pool (its labels shared by the pool): no selection changes, so the
    // update stays incremental and re-checks nothing.
    let mut joined = flip_store.clone();
    joined.apply(
        Object::Node(node("node-new", &[(NODEPOOL_LABEL, "np-07")])),
        NS,
    );
    let joined = joined.snapshot(&sel);
    let mut inc_j = IncrementalAllocator::new(&flip_b, &allocate(&flip_b, &cold));
    let u = inc_j.update(&joined);
    assert_eq!(u.kind, UpdateKind::Incremental { rechecked: 0 });
    let mut joined_now = true;
    g.bench_function(
        "incremental_update_after_a_node_joins_or_leaves_a_pool",
        |b| {
            b.iter(|| {
                joined_now = !joined_now;
                black_box(inc_j.update(if joined_now { &joined } else { &flip_b }))
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench, bench_node_pools);
criterion_main!(benches);
