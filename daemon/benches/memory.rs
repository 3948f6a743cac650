//! Where a speaker's memory goes with N Services (issue 17): the heap held after each stage
//! of a start from one file (the text, the store, the snapshot, the allocation, the
//! announcers, the published view), measured by a counting global allocator (this bench
//! binary only), beside the same stages with 0 Services in the same run (the baseline).
//!
//! `cargo bench -p edgelb-daemon --bench memory` (env `MEM_N="1000 10000"`, the default).
//! Per stage and N it prints the live heap in MiB, the live allocations, and the bytes per
//! Service over the baseline; at the end, the process's RSS. Two tables: the objects as
//! written in a standalone file, and as the API server returns them to a cluster-mode
//! speaker's watch (uid, resourceVersion, cluster IP, the spec's defaults, the status IP);
//! then the API shape with L2 instead of BGP, as in the cluster_scale bench (three nodes,
//! every one live: the L2 plan elects an owner for every IP, node-a owns about a third
//! and announces them on a veth of the namespace). The announcers run in a network
//! namespace of their own (the one BGP peer is on loopback port 1, nothing listens; the
//! veth's frames reach nobody): root is needed, as for the speaker tests.

#[path = "../tests/alloc_support/mod.rs"]
mod alloc_support;

use std::sync::Arc;

use alloc_support::{l2_services_yaml, services_yaml, Counting, Shape};
use edgelb_daemon::local_api::publish::Publisher;
use edgelb_daemon::metrics::Metrics;
use edgelb_daemon::snapshot::{Selection, Store};
use edgelb_daemon::source::file::parse_each;
use edgelb_daemon::speaker::{Allocator, AnnounceConfig, Announcing};

/// Counts the live heap of this bench binary.
#[global_allocator]
static GLOBAL: Counting = Counting::new();

/// The live heap now: (bytes, allocations).
fn live() -> (i64, i64) {
    GLOBAL.live()
}

/// The stages, in order; each row is the heap held after it.
const STAGES: [&str; 7] = [
    "file text",
    "store (kube source keeps it)",
    "+ snapshot",
    "+ allocation",
    "+ announcing (BGP or L2 plan)",
    "+ view (published)",
    "file source: text, store dropped",
];

/// How the Services are announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Adv {
    /// One BGP peer (nothing listens).
    Bgp,
    /// L2 among three nodes.
    L2,
}

/// The live heap after each stage with `n` Services, over the heap before the first.
async fn stages(n: usize, shape: Shape, adv: Adv) -> Vec<(i64, i64)> {
    let (b0, c0) = live();
    let mut out = Vec::new();
    let mark = |out: &mut Vec<(i64, i64)>| {
        let (b, c) = live();
        out.push((b - b0, c - c0));
    };
    let text = match adv {
        Adv::Bgp => services_yaml(n, shape),
        Adv::L2 => l2_services_yaml(n, shape),
    };
    mark(&mut out);
    let sel = Selection::default();
    let mut store = Store::default();
    store.select(&sel);
    let errors = parse_each(&text, |o| store.apply(o, &sel.namespace));
    assert!(errors.is_empty(), "{errors:?}");
    mark(&mut out);
    let snap = store.snapshot(&sel);
    assert_eq!(snap.services.len(), n);
    mark(&mut out);
    let mut alloc = Allocator::default();
    let (a, changes) = alloc.step(&snap);
    drop(changes);
    assert_eq!(a.outcomes.values().filter(|o| o.is_ok()).count(), n);
    mark(&mut out);
    let mut announcing = Announcing::start("node-a", &AnnounceConfig::default())
        .await
        .expect("announcing starts");
    announcing.step(&snap, &a).await;
    mark(&mut out);
    let (publisher, rx) = Publisher::new("node-a", Arc::new(Metrics::new()));
    publisher.publish(announcing.view_parts());
    mark(&mut out);
    drop((text, store));
    mark(&mut out);
    drop(rx);
    announcing.stop().await;
    out
}

/// Runs `stages(n)` on a current-thread runtime of a thread of its own in a fresh network
/// namespace (the speaker code never runs in the host's).
fn alone(n: usize, shape: Shape, adv: Adv) -> Vec<(i64, i64)> {
    std::thread::scope(|s| {
        s.spawn(|| {
            edgelb_tests::lab::netns::isolate_this_thread()
                .expect("a network namespace of its own (root)");
            if adv == Adv::L2 {
                veth_on_pool_subnet();
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(stages(n, shape, adv))
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// node-a's interface for the L2 table: a veth pair of this thread's namespace, 198.18.200.1/16
/// (every IP of the pool) on `l2a`; its frames arrive at `l2b`, which nothing reads.
fn veth_on_pool_subnet() {
    for args in [
        &["link", "add", "l2a", "type", "veth", "peer", "name", "l2b"][..],
        &["addr", "add", "198.18.200.1/16", "dev", "l2a"],
        &["link", "set", "l2b", "up"],
        &["link", "set", "l2a", "up"],
    ] {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("ip runs");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }
}

fn mib(b: i64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// VmRSS of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One table: every stage for the baseline (0 Services) and each N, objects in `shape`.
fn table(ns: &[usize], shape: Shape, adv: Adv) {
    println!(
        "# objects {}, {}",
        match shape {
            Shape::File => "as written in the standalone file",
            Shape::Api => "as the API server returns them (cluster mode: uid, resourceVersion, cluster IP, defaults, status IP)",
        },
        match adv {
            Adv::Bgp => "BGP",
            Adv::L2 => "L2 among three nodes (cluster_scale's layout)",
        }
    );
    let base = alone(0, shape, adv);
    let runs: Vec<(usize, Vec<(i64, i64)>)> =
        ns.iter().map(|&n| (n, alone(n, shape, adv))).collect();
    print!("{:<34} {:>18}", "stage", "baseline 0: MiB/allocs");
    for (n, _) in &runs {
        print!(" {:>30}", format!("N={n}: MiB/allocs/B per Service"));
    }
    println!();
    for (i, stage) in STAGES.iter().enumerate() {
        let (b0, c0) = base[i];
        print!("{stage:<34} {:>9.2} {:>8}", mib(b0), c0);
        for (n, r) in &runs {
            let (b, c) = r[i];
            let per = (b - b0) / (*n as i64).max(1);
            print!(" {:>10.2} {:>10} {:>8}", mib(b), c, per);
        }
        println!();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used.
    let ns: Vec<usize> = std::env::var("MEM_N")
        .unwrap_or_else(|_| "1000 10000".into())
        .split_whitespace()
        .map(|s| s.parse().expect("MEM_N: numbers"))
        .collect();
    println!(
        "# memory by stage (live heap requested; {} build), sizes: Service {} B, EndpointSlice {} B, Endpoint {} B",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        std::mem::size_of::<k8s_openapi::api::core::v1::Service>(),
        std::mem::size_of::<k8s_openapi::api::discovery::v1::EndpointSlice>(),
        std::mem::size_of::<k8s_openapi::api::discovery::v1::Endpoint>(),
    );
    for (shape, adv) in [
        (Shape::File, Adv::Bgp),
        (Shape::Api, Adv::Bgp),
        (Shape::Api, Adv::L2),
    ] {
        table(&ns, shape, adv);
    }
    println!(
        "# RSS of this bench after the runs (every run's objects dropped): {:.1} MiB",
        rss_kib() as f64 / 1024.0
    );
}
