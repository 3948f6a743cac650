//! A speaker at rest does no work that grows with the number of Services (issue 17).
//!
//! Work is counted as heap allocations (a counting global allocator, this test binary
//! only): any pass over every Service allocates (views, strings, copies), so the
//! allocations of the periodic paths at rest are compared between a small and a large
//! cluster. The periodic paths are the run loop's tick (`Announcing::tick` and a
//! publication of the local view and metrics from `Announcing::view_parts`) and the file
//! source's poll of an unchanged file. No network: each measurement runs in a network
//! namespace of its own, where the one BGP peer is on loopback port 1 (nothing listens); the
//! L2 measurement announces on a veth pair of that namespace (nothing reads the frames).

mod alloc_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use alloc_support::{cluster_yaml, l2_cluster_yaml, Counting};
use edgelb_daemon::ipam::Assignments;
use edgelb_daemon::local_api::publish::Publisher;
use edgelb_daemon::metrics::Metrics;
use edgelb_daemon::snapshot::{Selection, Snapshot};
use edgelb_daemon::source::file::{parse, store_of, watch_file};
use edgelb_daemon::speaker::{Allocator, AnnounceConfig, Announcing};

/// Counts every allocation of this test binary.
#[global_allocator]
static GLOBAL: Counting = Counting::new();

/// The tests measure one at a time (the counters are process-wide).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the future made by `make` alone, on a current-thread runtime of a thread of its own
/// (all the work on that thread), in a fresh network namespace: the speaker code under test
/// never runs in the host's network namespace.
fn alone<F, M>(make: M) -> F::Output
where
    M: FnOnce() -> F + Send,
    F: std::future::Future,
    F::Output: Send,
{
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    std::thread::scope(|s| {
        s.spawn(|| {
            edgelb_tests::lab::netns::isolate_this_thread()
                .expect("a network namespace of its own");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(make())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// (allocations, bytes) made so far.
fn counters() -> (u64, u64) {
    GLOBAL.made()
}

fn snapshot(n: usize) -> Snapshot {
    snapshot_of(&cluster_yaml(n), n)
}

fn snapshot_of(yaml: &str, n: usize) -> Snapshot {
    let loaded = parse(yaml);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let sel = Selection::default();
    let snap = store_of(&loaded, &sel.namespace).snapshot(&sel);
    assert_eq!(snap.services.len(), n);
    snap
}

/// Allocations per tick of the run loop at rest with `n` Services: after the snapshot is
/// applied and published once, `ticks` ticks (each: `Announcing::tick` and a publication).
async fn allocs_per_tick(n: usize, ticks: u64) -> (u64, u64) {
    let snap = snapshot(n);
    let mut alloc = Allocator::default();
    let (a, _): (Assignments, _) = alloc.step(&snap);
    let ok = a.outcomes.values().filter(|o| o.is_ok()).count();
    assert_eq!(ok, n, "every Service has an IP");
    let mut announcing = Announcing::start("node-a", &AnnounceConfig::default())
        .await
        .expect("announcing starts");
    announcing.step(&snap, &a).await;
    let tables: usize = announcing.bgp().tables().values().map(|t| t.len()).sum();
    assert_eq!(tables, n, "one /32 per Service for the peer");
    let (publisher, _rx) = Publisher::new("node-a", Arc::new(Metrics::new()));
    publisher.publish(announcing.view_parts());
    // Let the peer's first connection attempt and the first interface read happen.
    for _ in 0..3 {
        announcing.tick().await;
        publisher.publish(announcing.view_parts());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (c0, b0) = counters();
    for _ in 0..ticks {
        announcing.tick().await;
        publisher.publish(announcing.view_parts());
    }
    let (c1, b1) = counters();
    announcing.stop().await;
    ((c1 - c0) / ticks, (b1 - b0) / ticks)
}

#[test]
fn a_tick_at_rest_costs_the_same_with_40_or_4000_services() {
    let (small, small_bytes) = alone(|| allocs_per_tick(40, 20));
    let (large, large_bytes) = alone(|| allocs_per_tick(4000, 20));
    eprintln!(
        "per tick at rest: 40 Services {small} allocations ({small_bytes} B), \
         4000 Services {large} allocations ({large_bytes} B)"
    );
    // A pass over 4000 Services allocates thousands of times; a tick that does no
    // per-Service work allocates about as much with 40 as with 4000.
    assert!(
        large <= small * 2 + 100,
        "a tick at rest allocates {large} times with 4000 Services and {small} with 40: \
         some periodic work grows with the number of Services"
    );
    assert!(
        large_bytes <= small_bytes * 2 + 64 * 1024,
        "a tick at rest allocates {large_bytes} B with 4000 Services and {small_bytes} B with 40"
    );
}

/// Runs `ip` in this thread's network namespace (a child inherits the calling thread's).
fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// Announcement rounds sent so far, every interface.
fn rounds(announcing: &Announcing) -> u64 {
    announcing
        .l2()
        .stats()
        .iter()
        .map(|s| s.announcements)
        .sum()
}

/// Allocations per tick at rest with `n` Services announced by L2 (node-a alone owns every
/// IP, on a veth of its namespace), once every IP is owned and its first announcements are sent: each tick
/// is `Announcing::tick` and a publication, which reads the L2 announcer's statistics.
async fn l2_allocs_per_tick(n: usize, ticks: u64) -> (u64, u64) {
    // A veth pair of this namespace: frames sent on l2a arrive at l2b, which nothing reads.
    ip(&["link", "add", "l2a", "type", "veth", "peer", "name", "l2b"]);
    ip(&["addr", "add", "198.18.200.1/16", "dev", "l2a"]);
    ip(&["link", "set", "l2b", "up"]);
    ip(&["link", "set", "l2a", "up"]);
    let snap = snapshot_of(&l2_cluster_yaml(n), n);
    let mut alloc = Allocator::default();
    let (a, _): (Assignments, _) = alloc.step(&snap);
    assert_eq!(a.outcomes.values().filter(|o| o.is_ok()).count(), n);
    let mut announcing = Announcing::start("node-a", &AnnounceConfig::default())
        .await
        .expect("announcing starts");
    announcing.step(&snap, &a).await;
    let (publisher, _rx) = Publisher::new("node-a", Arc::new(Metrics::new()));
    // Every IP owned, and no announcement round sent for a while (the first rounds and
    // their repeats are over): bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = (0, u64::MAX);
    loop {
        announcing.tick().await;
        publisher.publish(announcing.view_parts());
        let owned: usize = announcing.l2().stats().iter().map(|s| s.ips.len()).sum();
        let now = (owned, rounds(&announcing));
        if owned == n && now == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} L2 IPs not owned and announced in 60 s: {now:?}"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (c0, b0) = counters();
    for _ in 0..ticks {
        announcing.tick().await;
        publisher.publish(announcing.view_parts());
    }
    let (c1, b1) = counters();
    assert_eq!(
        rounds(&announcing),
        last.1,
        "no announcement was sent while measuring"
    );
    announcing.stop().await;
    ((c1 - c0) / ticks, (b1 - b0) / ticks)
}

#[test]
fn a_tick_at_rest_with_l2_costs_the_same_with_40_or_4000_owned_ips() {
    let (small, small_bytes) = alone(|| l2_allocs_per_tick(40, 20));
    let (large, large_bytes) = alone(|| l2_allocs_per_tick(4000, 20));
    eprintln!(
        "per tick at rest, L2: 40 owned IPs {small} allocations ({small_bytes} B), \
         4000 owned IPs {large} allocations ({large_bytes} B)"
    );
    // Copying the announcer's per-IP statistics, or writing every owned IP as text, on
    // each publication allocates thousands of times with 4000 IPs.
    assert!(
        large <= small * 2 + 100,
        "a tick at rest allocates {large} times with 4000 L2 IPs and {small} with 40: \
         some periodic work grows with the number of owned IPs"
    );
    assert!(
        large_bytes <= small_bytes * 2 + 64 * 1024,
        "a tick at rest allocates {large_bytes} B with 4000 L2 IPs and {small_bytes} B with 40"
    );
}

/// Bytes allocated by the file source while it polls an unchanged file of `n` Services
/// (every 5 ms for 300 ms), after its first load.
async fn bytes_polling(n: usize) -> u64 {
    let dir = std::env::temp_dir().join(format!("edgelb-at-rest-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("cluster.yaml");
    std::fs::write(&path, cluster_yaml(n)).expect("write");
    // Old enough that its mtime tells every later change.
    let old = SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");
    let (tx, mut rx) = tokio::sync::watch::channel(Snapshot::default());
    let task = tokio::spawn(watch_file(
        path.clone(),
        Selection::default(),
        Duration::from_millis(5),
        tx,
    ));
    rx.changed().await.expect("first load");
    assert_eq!(rx.borrow_and_update().services.len(), n);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, b0) = counters();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, b1) = counters();
    task.abort();
    let _ = task.await;
    assert!(
        !rx.has_changed().unwrap_or(false),
        "no change was published"
    );
    let _ = std::fs::remove_dir_all(&dir);
    b1 - b0
}

#[test]
fn polling_an_unchanged_file_does_not_read_it() {
    let size = cluster_yaml(4000).len() as u64;
    let bytes = alone(|| bytes_polling(4000));
    eprintln!("polling an unchanged file of {size} B for 300 ms allocated {bytes} B");
    assert!(
        bytes < size,
        "polling an unchanged file of {size} B allocated {bytes} B: it is read on every poll"
    );
}
