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
//!
//! Cluster mode (gossip on) adds the guard and the membership: the members are real gossip
//! members on the namespace's loopback (this speaker and two bare memberships for node-b
//! and node-c), the L2 IPs are on a veth of the namespace, and the tick re-reads the members
//! and, when one of its triggers fires, re-plans L2 (the split-brain guard's scopes, the
//! planner, the takeover holds, the heartbeat targets).

mod alloc_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use alloc_support::{cluster_yaml, l2_cluster_yaml, Counting};
use edgelb_daemon::election::InterfaceFacts;
use edgelb_daemon::ipam::Assignments;
use edgelb_daemon::local_api::publish::Publisher;
use edgelb_daemon::membership::{
    Health, KeySource, Keyring, Membership, MembershipConfig, MembershipHandle, Timings,
};
use edgelb_daemon::metrics::Metrics;
use edgelb_daemon::snapshot::{Redacted, Selection, Snapshot};
use edgelb_daemon::source::file::{parse, store_of, watch_file};
use edgelb_daemon::speaker::{Allocator, AnnounceConfig, Announcing, GossipConfig};

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
    let cost = per_tick(ticks, &mut announcing, &publisher, |_, _| {}).await;
    announcing.stop().await;
    cost
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

/// A veth pair `a`/`b` of this namespace with the L2 IPs' subnet (198.18.200.1/16) on `a`:
/// frames sent on `a` arrive at `b`, which nothing reads.
fn veth_on_pool_subnet(a: &str, b: &str) {
    ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
    ip(&["addr", "add", "198.18.200.1/16", "dev", a]);
    ip(&["link", "set", b, "up"]);
    ip(&["link", "set", a, "up"]);
}

/// (allocations, bytes) per tick over `ticks` ticks, each: `before(announcing, i)`,
/// `Announcing::tick` and a publication of the view.
async fn per_tick(
    ticks: u64,
    announcing: &mut Announcing,
    publisher: &Publisher,
    before: impl Fn(&mut Announcing, u64),
) -> (u64, u64) {
    let (c0, b0) = counters();
    for i in 0..ticks {
        before(announcing, i);
        announcing.tick().await;
        publisher.publish(announcing.view_parts());
    }
    let (c1, b1) = counters();
    ((c1 - c0) / ticks, (b1 - b0) / ticks)
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
    veth_on_pool_subnet("l2a", "l2b");
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
    let cost = per_tick(ticks, &mut announcing, &publisher, |_, _| {}).await;
    assert_eq!(
        rounds(&announcing),
        last.1,
        "no announcement was sent while measuring"
    );
    announcing.stop().await;
    cost
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

/// The gossip key every member of the cluster-mode measurement shares.
const KEY: &[u8] = b"at-rest-gossip-key-0123456789";

/// The subnet of the namespace's interface `d0`, holding the pool of [`l2_cluster_yaml`].
const LAN: &str = "198.18.0.0/16";

/// [`l2_cluster_yaml`] with the other two members' Nodes.
fn l2_cluster_snapshot(n: usize) -> Snapshot {
    let mut yaml = l2_cluster_yaml(n);
    for (node, ip) in [("node-b", "198.18.200.2"), ("node-c", "198.18.200.3")] {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n\
             status: {{addresses: [{{type: InternalIP, address: \"{ip}\"}}]}}\n"
        ));
    }
    snapshot_of(&yaml, n)
}

/// A bare gossip member (no announcer) on the namespace's loopback, with an interface on
/// [`LAN`] (as gossiped), so that it can win L2 IPs.
async fn member(node: &str) -> MembershipHandle {
    let (handle, events) = Membership::start(MembershipConfig {
        node: node.into(),
        bind: "127.0.0.1:0".parse().expect("literal"),
        advertise: "127.0.0.1:0".parse().expect("literal"),
        seeds: Vec::new(),
        keys: Keyring::from_plain_key(KEY).expect("key"),
        timings: Timings::lan(3),
        interfaces: vec![InterfaceFacts {
            name: "d0".into(),
            up: true,
            subnets: vec![LAN.parse().expect("literal")],
        }],
        generation: None,
        own_thread: true,
    })
    .await
    .expect("membership starts");
    // Nobody reads its events: a full channel drops them (counted), which is harmless.
    drop(events);
    handle
}

/// How many other members `a` sees live.
fn live_others(a: &Announcing) -> usize {
    a.view_parts()
        .members
        .iter()
        .filter(|m| !m.is_self && m.health != Health::Down)
        .count()
}

/// Ticks until `done` or 30 s.
async fn tick_until(a: &mut Announcing, what: &str, mut done: impl FnMut(&Announcing) -> bool) {
    let start = std::time::Instant::now();
    while !done(a) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        a.tick().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cluster mode with `n` L2 Services: (allocations, bytes) per tick at rest, and per tick
/// where the split-brain guard's trigger fires with nothing else changing ([`cheapest`]).
/// The members are real, so a window may see a real change (a member suspected on a
/// loaded machine); the cheapest window is one where nothing changed but heartbeats.
async fn cluster_allocs_per_tick(n: usize, windows: usize, ticks: u64) -> ((u64, u64), (u64, u64)) {
    veth_on_pool_subnet("d0", "d1");
    let snap = l2_cluster_snapshot(n);
    let mut alloc = Allocator::default();
    let (a, _): (Assignments, _) = alloc.step(&snap);
    let b = member("node-b").await;
    let c = member("node-c").await;
    let cfg = AnnounceConfig {
        gossip: Some(GossipConfig {
            addr: "127.0.0.1:0".parse().expect("literal"),
            peers: [&b, &c]
                .iter()
                .map(|m| m.local_id().addr)
                .collect::<Vec<SocketAddr>>(),
            key: KeySource::Bytes(Redacted(KEY.to_vec())),
        }),
        ..AnnounceConfig::default()
    };
    let mut announcing = Announcing::start("node-a", &cfg)
        .await
        .expect("announcing starts");
    tick_until(&mut announcing, "node-b and node-c live", |a| {
        live_others(a) == 2
    })
    .await;
    announcing.step(&snap, &a).await;
    // Every IP node-a won among the three is answered once the takeover holds end.
    tick_until(&mut announcing, "node-a answers for its IPs", |a| {
        let live = a.candidates(&snap).iter().filter(|c| c.live).count();
        let owned = a.l2().owned().values().map(|ips| ips.len()).sum::<usize>();
        live == 3 && owned > 0 && a.view_parts().l2_held.is_empty()
    })
    .await;
    let owned: usize = announcing.l2().owned().values().map(|ips| ips.len()).sum();
    assert!(
        owned > n / 10 && owned < n,
        "node-a owns a share of the {n} L2 IPs: {owned}"
    );
    // At rest: nothing changes but the gossip's heartbeats.
    let (publisher, _rx) = Publisher::new("node-a", Arc::new(Metrics::new()));
    publisher.publish(announcing.view_parts());
    let quiet = cheapest(windows, ticks, &mut announcing, &publisher, |_, _| {}).await;
    // The guard's trigger fires on every tick (the API server's answers turn fresh, then
    // stale), and nothing that decides an owner changes: 3 of 3 members live.
    let witness = cheapest(windows, ticks, &mut announcing, &publisher, |a, i| {
        a.set_witness((i % 2 == 0).then(std::time::Instant::now));
    })
    .await;
    announcing.stop().await;
    for m in [b, c] {
        let _ = m.leave().await;
    }
    (quiet, witness)
}

/// (allocations, bytes) per tick (each: `before(announcing, i)`, `Announcing::tick` and a
/// publication of the view), the cheapest of `windows` windows of `ticks` ticks.
async fn cheapest(
    windows: usize,
    ticks: u64,
    announcing: &mut Announcing,
    publisher: &Publisher,
    before: impl Fn(&mut Announcing, u64),
) -> (u64, u64) {
    let mut best = (u64::MAX, u64::MAX);
    for _ in 0..windows {
        best = best.min(per_tick(ticks, announcing, publisher, &before).await);
        // Let the gossip run between windows (heartbeats refresh the members).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    best
}

#[test]
fn a_tick_at_rest_in_cluster_mode_costs_the_same_with_40_or_4000_l2_services() {
    let (small, small_witness) = alone(|| cluster_allocs_per_tick(40, 5, 10));
    let (large, large_witness) = alone(|| cluster_allocs_per_tick(4000, 5, 10));
    let trigger = "with the guard's trigger firing";
    for (what, (s, sb), (l, lb)) in [
        ("at rest", small, large),
        (trigger, small_witness, large_witness),
    ] {
        eprintln!(
            "cluster mode, per tick {what}: 40 L2 Services {s} allocations ({sb} B), \
             4000 L2 Services {l} allocations ({lb} B)"
        );
        // A pass over every L2 IP (an election, a plan, a view of the owned IPs)
        // allocates thousands of times at 4000.
        assert!(
            l <= s * 2 + 100,
            "a tick {what} in cluster mode allocates {l} times with 4000 L2 Services and \
             {s} with 40: some periodic work grows with the number of Services"
        );
        assert!(
            lb <= sb * 2 + 64 * 1024,
            "a tick {what} in cluster mode allocates {lb} B with 4000 L2 Services and {sb} B \
             with 40"
        );
    }
}
