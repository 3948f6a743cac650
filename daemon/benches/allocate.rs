//! Allocation and snapshot build at scale: 10 000 Services, 50 pools, 1 000 nodes; cold, and
//! after one Service change. Goal (issue 4): under 20 ms cold, under 1 ms for one change.
//! `allocate_*` is the full reference; `incremental_*` is what the speaker runs
//! (`IncrementalAllocator`). Also timed: a copy of the whole result and the diff of two
//! whole results, which the speaker's loop still pays per snapshot or would without the
//! incremental path's own diff.
//!
//! `cargo bench -p edgelb-daemon --bench allocate -- --measurement-time 3 --warm-up-time 1`

mod common;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgelb_daemon::fixtures::{node, pool, service};
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

criterion_group!(benches, bench);
criterion_main!(benches);
