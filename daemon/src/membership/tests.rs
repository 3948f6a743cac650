//! Membership on loopback: real UDP sockets on 127.0.0.1, real timers.
//! Deadlines are generous (a loaded 2-core machine runs tests in parallel);
//! measured figures are printed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::*;
use crate::election::{may_own_l2, InterfaceFacts};

const CONVERGE: Duration = Duration::from_secs(10);
/// Crash detection bound for the assertion; the expected figure is ~1 s.
const DETECT: Duration = Duration::from_secs(5);

fn key(id: u8, fill: u8) -> GossipKey {
    GossipKey::new(id, vec![fill; 32]).expect("valid key")
}

fn ring(current: GossipKey, others: Vec<GossipKey>) -> Keyring {
    Keyring::new(current, others).expect("valid ring")
}

fn eth0(last: u8, up: bool) -> Vec<InterfaceFacts> {
    vec![InterfaceFacts {
        name: "eth0".into(),
        up,
        subnets: vec![format!("192.0.2.{last}/24").parse().expect("literal")],
    }]
}

fn config(node: &str, seeds: Vec<SocketAddr>, keys: Keyring) -> MembershipConfig {
    let local: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    MembershipConfig {
        node: node.into(),
        bind: local,
        advertise: local,
        seeds,
        keys,
        timings: Timings::lan(3),
        interfaces: eth0(1, true),
        generation: None,
        own_thread: true,
    }
}

struct Member {
    handle: MembershipHandle,
    events: mpsc::Receiver<MembershipEvent>,
}

async fn start(node: &str, seeds: Vec<SocketAddr>, keys: Keyring) -> Member {
    let (handle, events) = Membership::start(config(node, seeds, keys))
        .await
        .expect("membership starts");
    Member { handle, events }
}

fn live_nodes(m: &Member) -> Vec<String> {
    let mut v: Vec<String> = m
        .handle
        .members()
        .into_iter()
        .filter(|s| s.health != Health::Down)
        .map(|s| s.id.node)
        .collect();
    v.sort();
    v
}

async fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three members seeded through the first; returns once all see all three.
async fn trio(keys: impl Fn() -> Keyring) -> (Member, Member, Member) {
    let a = start("node-a", vec![], keys()).await;
    let seed = a.handle.local_id().addr;
    let b = start("node-b", vec![seed], keys()).await;
    let c = start("node-c", vec![seed], keys()).await;
    let all = vec!["node-a".to_string(), "node-b".into(), "node-c".into()];
    wait_for("three members to converge", CONVERGE, || {
        [&a, &b, &c].iter().all(|m| live_nodes(m) == all)
    })
    .await;
    (a, b, c)
}

/// Drain events until `node` is declared down; return why and when.
async fn wait_down(m: &mut Member, node: &str, deadline: Duration) -> (DownReason, Instant) {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until, m.events.recv()).await {
            Ok(Some(MembershipEvent::MemberDown {
                id,
                reason,
                at_instant,
                ..
            })) if id.node == node => return (reason, at_instant),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event channel closed"),
            Err(_) => panic!("{node} not declared down within {deadline:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_converge_and_see_each_others_facts() {
    let t0 = Instant::now();
    let (a, b, c) = trio(|| ring(key(1, 7), vec![])).await;
    eprintln!("three members converged in {:?}", t0.elapsed());
    wait_for("facts of every member everywhere", CONVERGE, || {
        [&a, &b, &c].iter().all(|m| {
            m.handle.members().iter().all(|s| {
                s.facts
                    .as_ref()
                    .is_some_and(|f| f.interfaces == eth0(1, true))
            })
        })
    })
    .await;
    let q = a.handle.quorum(false);
    assert_eq!((q.live_members, q.known_members), (3, 3));
    assert!(may_own_l2(&q));
    assert_eq!(a.handle.stats().rejected_auth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_member_is_declared_down_within_the_detection_bound() {
    let (mut a, mut b, c) = trio(|| ring(key(1, 7), vec![])).await;
    let killed = Instant::now();
    drop(c); // no goodbye: the task and socket vanish as in a crash
    let (reason_a, at_a) = wait_down(&mut a, "node-c", DETECT).await;
    let (reason_b, at_b) = wait_down(&mut b, "node-c", DETECT).await;
    eprintln!(
        "crash detection: node-a after {:?}, node-b after {:?}",
        at_a - killed,
        at_b - killed
    );
    assert_eq!(
        (reason_a, reason_b),
        (DownReason::Failed, DownReason::Failed)
    );
    // A failed member still counts as known: 2 of 3 live is a majority.
    let q = a.handle.quorum(false);
    assert_eq!((q.live_members, q.known_members), (2, 3));
    assert!(may_own_l2(&q));
}

fn nodes(names: &[&str]) -> std::collections::BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// An owner heartbeats to its successor; when it crashes, the successor declares it down
/// on the heartbeat timeout (not SWIM's longer suspicion) and the verdict reaches the
/// third member through the gossip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_owner_is_declared_down_by_the_successor_it_heartbeats_to() {
    let (mut a, mut b, c) = trio(|| ring(key(1, 7), vec![])).await;
    c.handle
        .set_heartbeat_targets(nodes(&["node-a"]))
        .await
        .expect("targets");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    drop(c);
    let (reason_a, at_a) = wait_down(&mut a, "node-c", DETECT).await;
    let (_, at_b) = wait_down(&mut b, "node-c", DETECT).await;
    eprintln!(
        "owner crash, heartbeat detection: node-a (watching) after {:?}, node-b (gossip) after {:?}; timeout {:?}",
        at_a - killed,
        at_b - killed,
        Timings::lan(3).heartbeat_timeout
    );
    assert_eq!(reason_a, DownReason::Failed);
    assert_eq!(a.handle.stats().heartbeat_down, 1, "{:?}", a.handle.stats());
    assert_eq!(a.handle.stats().declared_down, 0, "not SWIM's verdict");
    assert_eq!(
        b.handle.stats().heartbeat_down,
        0,
        "node-b was not watching"
    );
}

/// At rest (every member alive, facts known, an owner heartbeating to both others) the
/// loops run on every datagram and timer, and nothing in the member snapshot changes: no
/// member publishes a snapshot (a copy of every member with its facts) then. Counted per
/// window of 20 heartbeat intervals; the quietest of a few windows is taken, since a
/// loaded machine may make SWIM suspect someone for a moment (a real change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_at_rest_publish_no_snapshot() {
    let (a, b, c) = trio(|| ring(key(1, 7), vec![])).await;
    wait_for("facts of every member everywhere", CONVERGE, || {
        [&a, &b, &c]
            .iter()
            .all(|m| m.handle.members().iter().all(|s| s.facts.is_some()))
    })
    .await;
    a.handle
        .set_heartbeat_targets(nodes(&["node-b", "node-c"]))
        .await
        .expect("targets");
    let window = Timings::lan(3).heartbeat_interval * 20;
    let members = [&a, &b, &c];
    let published = || -> u64 {
        members
            .iter()
            .map(|m| m.handle.stats().snapshots_published)
            .sum()
    };
    let received = || -> u64 { members.iter().map(|m| m.handle.stats().accepted).sum() };
    tokio::time::sleep(window).await;
    let mut quietest = None;
    for _ in 0..8 {
        let (p0, r0) = (published(), received());
        tokio::time::sleep(window).await;
        let (p, r) = (published() - p0, received() - r0);
        eprintln!("at rest over {window:?}: {r} datagrams received, {p} snapshots published");
        // The heartbeats alone are 2 per interval: the loops ran.
        assert!(
            r >= 20,
            "only {r} datagrams in {window:?}: the members are not at rest"
        );
        if quietest.is_none_or(|q| p < q) {
            quietest = Some(p);
        }
        if p == 0 {
            break;
        }
    }
    assert_eq!(
        quietest,
        Some(0),
        "a snapshot was published in every window at rest"
    );
    assert_eq!(
        live_nodes(&a),
        ["node-a", "node-b", "node-c"],
        "the snapshot is still read"
    );
}

/// A member on its own thread and current-thread runtime (as in its own process) that
/// heartbeats to `targets`; a `Some(d)` sent on the returned channel blocks that runtime
/// for `d` (a frozen process: its socket stays open, the kernel queues what arrives),
/// `None` or a dropped sender stops it.
fn freezable_member(
    node: &'static str,
    seed: SocketAddr,
    targets: &'static [&'static str],
    own_thread: bool,
) -> (
    SocketAddr,
    std::sync::mpsc::Sender<Option<Duration>>,
    std::thread::JoinHandle<()>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (freeze_tx, freeze_rx) = std::sync::mpsc::channel::<Option<Duration>>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            // `own_thread` false: on this runtime, so that blocking the runtime freezes it.
            let config = MembershipConfig {
                own_thread,
                ..config(node, vec![seed], ring(key(1, 7), vec![]))
            };
            let (handle, _events) = Membership::start(config).await.expect("membership starts");
            let m = Member {
                handle,
                events: _events,
            };
            let _ = addr_tx.send(m.handle.local_id().addr);
            m.handle
                .set_heartbeat_targets(nodes(targets))
                .await
                .expect("targets");
            loop {
                match freeze_rx.try_recv() {
                    Ok(Some(d)) => std::thread::sleep(d),
                    Ok(None) | Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        });
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("member starts");
    (addr, freeze_tx, thread)
}

/// A frozen owner (its socket open: no "port unreachable") is probed after
/// `heartbeat_probe_after` of silence and declared down by its successor once its whole
/// timeout has passed without an answer; an owner stalled for less than that answers the
/// probe when it runs again and stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_is_probed_then_declared_down_and_a_briefly_stalled_one_is_not() {
    let mut a = start("node-a", vec![], ring(key(1, 7), vec![])).await;
    let seed = a.handle.local_id().addr;
    let b = start("node-b", vec![seed], ring(key(1, 7), vec![])).await;
    let (_c_addr, freeze, thread) = freezable_member("node-c", seed, &["node-a"], false);
    let all = vec!["node-a".to_string(), "node-b".into(), "node-c".into()];
    wait_for("three members to converge", CONVERGE, || {
        live_nodes(&a) == all && live_nodes(&b) == all
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Timings::lan(3);

    // Stalled past the probe delay and short of the timeout by as much: the silence the
    // watcher sees is the stall plus up to one heartbeat interval (the last heartbeat came
    // up to an interval before the stall), so the stall sits halfway between the probe
    // delay and the timeout less one interval (112 ms of 75..150 with the LAN timings; a
    // fixed 160 ms was 40 ms short of the old 225 ms timeout, and over the 175 ms one).
    let stall = (t.heartbeat_probe_after + t.heartbeat_timeout - t.heartbeat_interval) / 2;
    freeze.send(Some(stall)).expect("freeze");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stats = a.handle.stats();
    eprintln!("owner stalled {stall:?}: {stats:?}");
    assert!(stats.heartbeat_probes >= 1, "probed: {stats:?}");
    assert_eq!(
        stats.heartbeat_down, 0,
        "a stalled owner stays up: {stats:?}"
    );
    assert_eq!(live_nodes(&a), all);

    // Frozen for 1.5 s: down after the timeout, by the silence (not a refusal).
    let probes = stats.heartbeat_probes;
    let frozen = Instant::now();
    freeze
        .send(Some(Duration::from_millis(1500)))
        .expect("freeze");
    let (reason, at) = wait_down(&mut a, "node-c", DETECT).await;
    let stats = a.handle.stats();
    eprintln!(
        "frozen owner declared down after {:?} (timeout {:?}, probe after {:?}): {stats:?}",
        at - frozen,
        t.heartbeat_timeout,
        t.heartbeat_probe_after
    );
    assert_eq!(reason, DownReason::Failed);
    assert_eq!(stats.heartbeat_down, 1, "{stats:?}");
    assert!(stats.heartbeat_probes > probes, "probed first: {stats:?}");
    assert!(
        at - frozen >= t.heartbeat_timeout - t.heartbeat_interval,
        "not before the timeout: {:?}",
        at - frozen
    );
    let _ = freeze.send(None);
    drop(freeze);
    thread.join().expect("member thread");
}

/// The daemon's membership runs on a thread and runtime of its own: an owner whose other
/// work holds its runtime for 1.5 s (as moving thousands of L2 IPs in one go did in the
/// 10 000-IP cluster run) keeps heartbeating and is never declared down. The same member
/// on the busy runtime is declared down (the test above, `own_thread: false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_runtime_is_busy_keeps_heartbeating_from_its_own_thread() {
    let a = start("node-a", vec![], ring(key(1, 7), vec![])).await;
    let seed = a.handle.local_id().addr;
    let (_c_addr, busy, thread) = freezable_member("node-c", seed, &["node-a"], true);
    let all = vec!["node-a".to_string(), "node-c".into()];
    wait_for("two members to converge", CONVERGE, || {
        live_nodes(&a) == all
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy.send(Some(Duration::from_millis(1500))).expect("busy");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let stats = a.handle.stats();
    eprintln!("owner's runtime busy 1.5 s: {stats:?}");
    assert_eq!(stats.heartbeat_down, 0, "declared down: {stats:?}");
    assert_eq!(stats.declared_down, 0, "declared down by SWIM: {stats:?}");
    assert_eq!(live_nodes(&a), all);
    let _ = busy.send(None);
    drop(busy);
    thread.join().expect("member thread");
}

/// A successor the owner no longer heartbeats to is told to stop watching: the owner's
/// later crash is SWIM's to find, not the heartbeat's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_successor_stops_watching() {
    let (mut a, _b, c) = trio(|| ring(key(1, 7), vec![])).await;
    c.handle
        .set_heartbeat_targets(nodes(&["node-a"]))
        .await
        .expect("targets");
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.handle
        .set_heartbeat_targets(nodes(&[]))
        .await
        .expect("targets");
    // Silent for longer than the heartbeat timeout while alive: not declared down.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(live_nodes(&a).len(), 3);
    drop(c);
    let _ = wait_down(&mut a, "node-c", DETECT).await;
    let stats = a.handle.stats();
    assert_eq!(stats.heartbeat_down, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_member_is_seen_down_at_once() {
    let (mut a, mut b, c) = trio(|| ring(key(1, 7), vec![])).await;
    let left = Instant::now();
    c.handle.leave().await.expect("leave");
    let (reason_a, at_a) = wait_down(&mut a, "node-c", DETECT).await;
    let (reason_b, at_b) = wait_down(&mut b, "node-c", DETECT).await;
    eprintln!(
        "graceful leave seen: node-a after {:?}, node-b after {:?}",
        at_a - left,
        at_b - left
    );
    assert_eq!((reason_a, reason_b), (DownReason::Left, DownReason::Left));
    // "At once": far below one failure-detection period (probe + suspicion).
    let period = Timings::lan(3).probe_period + Timings::lan(3).suspect_to_down_after;
    assert!(
        at_a - left < period && at_b - left < period,
        "leave took a detection period"
    );
    // A member that left is not counted as known: 2 of 2.
    let q = a.handle.quorum(false);
    assert_eq!((q.live_members, q.known_members), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_wrong_key_is_never_admitted_and_counted() {
    let a = start("node-a", vec![], ring(key(1, 7), vec![])).await;
    let seed = a.handle.local_id().addr;
    let b = start("node-b", vec![seed], ring(key(1, 7), vec![])).await;
    // Same key id, other secret; and another id altogether.
    let intruder = start("intruder", vec![seed], ring(key(1, 8), vec![])).await;
    let stranger = start("stranger", vec![seed], ring(key(9, 7), vec![])).await;
    wait_for("a and b to converge", CONVERGE, || {
        live_nodes(&a).len() == 2 && live_nodes(&b).len() == 2
    })
    .await;
    // The intruders re-announce every rejoin period; give them several.
    wait_for("rejected datagrams", CONVERGE, || {
        a.handle.stats().rejected_auth >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(live_nodes(&a), vec!["node-a".to_string(), "node-b".into()]);
    assert_eq!(live_nodes(&b), vec!["node-a".to_string(), "node-b".into()]);
    assert_eq!(live_nodes(&intruder), vec!["intruder".to_string()]);
    assert_eq!(live_nodes(&stranger), vec!["stranger".to_string()]);
    eprintln!(
        "seed rejected {} unauthenticated datagrams",
        a.handle.stats().rejected_auth
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_flag_day() {
    let old = || key(1, 7);
    let new = || key(2, 9);
    // Start on the old key everywhere.
    let (mut a, mut b, mut c) = trio(|| ring(old(), vec![])).await;
    // Step 1: everyone accepts the new key, then b starts sending with it.
    for m in [&a, &b, &c] {
        m.handle
            .set_keys(ring(old(), vec![new()]))
            .await
            .expect("keys");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.handle
        .set_keys(ring(new(), vec![old()]))
        .await
        .expect("keys");
    // Step 2: all send with the new key; step 3: the old key is dropped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for m in [&a, &b, &c] {
        m.handle
            .set_keys(ring(new(), vec![old()]))
            .await
            .expect("keys");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for m in [&a, &b, &c] {
        m.handle.set_keys(ring(new(), vec![])).await.expect("keys");
    }
    // Stay together for several detection periods: no one is declared down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for m in [&mut a, &mut b, &mut c] {
        assert_eq!(live_nodes(m).len(), 3);
        while let Ok(e) = m.events.try_recv() {
            assert!(
                !matches!(e, MembershipEvent::MemberDown { .. }),
                "rotation caused {e:?}"
            );
        }
        assert_eq!(
            m.handle.stats().rejected_auth,
            0,
            "a datagram was rejected during rotation"
        );
    }
    // A latecomer on the retired key is refused.
    let late = start("late", vec![a.handle.local_id().addr], ring(old(), vec![])).await;
    wait_for("the retired key to be rejected", CONVERGE, || {
        a.handle.stats().rejected_auth > 0
    })
    .await;
    assert_eq!(live_nodes(&late), vec!["late".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_facts_propagate_to_every_member() {
    let (mut a, b, c) = trio(|| ring(key(1, 7), vec![])).await;
    let changed_at = Instant::now();
    b.handle.update_facts(eth0(2, false)).await.expect("update");
    let until = tokio::time::Instant::now() + CONVERGE;
    loop {
        match tokio::time::timeout_at(until, a.events.recv()).await {
            Ok(Some(MembershipEvent::FactsChanged { facts }))
                if facts.node == "node-b" && facts.interfaces == eth0(2, false) =>
            {
                assert!(facts.version >= 2);
                break;
            }
            Ok(Some(_)) => continue,
            other => panic!("no facts change from node-b: {other:?}"),
        }
    }
    eprintln!(
        "facts change reached node-a after {:?}",
        changed_at.elapsed()
    );
    wait_for("node-c to see node-b's new facts", CONVERGE, || {
        c.handle.members().iter().any(|m| {
            m.id.node == "node-b"
                && m.facts
                    .as_ref()
                    .is_some_and(|f| f.interfaces == eth0(2, false))
        })
    })
    .await;
}

/// A member cut off from the others (here: its key no longer matches, which
/// drops every datagram both ways, like a cut link) loses its L2 quorum
/// within two detection periods, the majority keeps it, and the member
/// rejoins under a new generation once the cut heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_member_loses_its_l2_quorum_and_rejoins_after_healing() {
    let (a, _b, c) = trio(|| ring(key(1, 7), vec![])).await;
    let old_generation = c.handle.local_id().generation;
    let cut = Instant::now();
    c.handle
        .set_keys(ring(key(1, 99), vec![]))
        .await
        .expect("keys");
    wait_for("the cut member to lose its quorum", DETECT, || {
        !may_own_l2(&c.handle.quorum(false))
    })
    .await;
    let lost = cut.elapsed();
    let t = Timings::lan(3);
    let detection = t.probe_period * 2 + t.suspect_to_down_after;
    eprintln!(
        "partitioned member stopped owning L2 after {lost:?} (one detection period ~{detection:?})"
    );
    assert!(
        !may_own_l2(&c.handle.quorum(true)),
        "the API server breaks ties only: 1 of 3 stays out"
    );
    wait_for("the majority to see the cut member down", DETECT, || {
        live_nodes(&a) == vec!["node-a".to_string(), "node-b".into()]
    })
    .await;
    assert!(may_own_l2(&a.handle.quorum(false)), "2 of 3 is a majority");

    c.handle
        .set_keys(ring(key(1, 7), vec![]))
        .await
        .expect("keys");
    let all = vec!["node-a".to_string(), "node-b".into(), "node-c".into()];
    wait_for("the healed member to rejoin", CONVERGE, || {
        live_nodes(&a) == all && live_nodes(&c) == all
    })
    .await;
    eprintln!("healed member rejoined after {:?}", cut.elapsed() - lost);
    let rejoined = a
        .handle
        .members()
        .into_iter()
        .find(|m| m.id.node == "node-c" && m.health != Health::Down)
        .expect("node-c live");
    assert!(
        rejoined.id.generation > old_generation,
        "a member declared down comes back as a new identity"
    );
}

/// Two speakers that started knowing nobody (a DaemonSet without `--member-peers`) find
/// each other once one of them is given the other's address as a new seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_added_at_run_time_is_announced_to_and_joins_the_two() {
    let a = start("node-a", vec![], ring(key(1, 7), vec![])).await;
    let b = start("node-b", vec![], ring(key(1, 7), vec![])).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live_nodes(&a), vec!["node-a".to_string()], "no seed: alone");
    // The Node list also sizes the timings: a bad set is refused before it reaches foca,
    // a good one is taken and the two still meet under it.
    let mut bad = Timings::lan(100);
    bad.probe_rtt = bad.probe_period;
    match a.handle.set_timings(&bad).await {
        Err(MembershipError::Config { field, .. }) => assert_eq!(field, "probe_rtt"),
        other => panic!("bad timings accepted: {other:?}"),
    }
    a.handle
        .set_timings(&Timings::lan(100))
        .await
        .expect("good timings taken");
    let t0 = Instant::now();
    a.handle
        .set_seeds(vec![b.handle.local_id().addr])
        .await
        .expect("task runs");
    let both = vec!["node-a".to_string(), "node-b".into()];
    wait_for("the two to meet through the new seed", CONVERGE, || {
        live_nodes(&a) == both && live_nodes(&b) == both
    })
    .await;
    eprintln!("met {:?} after the seed was added", t0.elapsed());
}

/// What one member of [`live_members_under_cpu_load_are_never_declared_down`]
/// saw.
struct LoadOutcome {
    node: String,
    downs: Vec<String>,
    stats: MembershipStats,
    live_at_end: usize,
    /// The longest time the member's thread got no CPU (its 20 ms loop ran this much late):
    /// its heartbeats, probes and answers were held back as long.
    longest_stall: Duration,
}

/// One member on its own thread and current-thread runtime, as in its own
/// process, at niceness `nice` (0: like the load): runs until `stop`,
/// recording every member it declared down.
fn member_on_own_thread(
    node: &'static str,
    nice: u8,
    seeds: Vec<SocketAddr>,
    addr: std::sync::mpsc::Sender<SocketAddr>,
    converged: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<LoadOutcome> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        if nice > 0 {
            renice_this_thread(nice);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut m = start(node, seeds, ring(key(1, 7), vec![])).await;
            let _ = addr.send(m.handle.local_id().addr);
            // node-a and node-b (nice 0, like the load) are owners watching each other
            // through the heartbeats too; node-c (nice 10) is SWIM's alone: see below.
            let others = ["node-a", "node-b"]
                .into_iter()
                .filter(|n| *n != node && nice == 0)
                .map(str::to_string)
                .collect();
            m.handle
                .set_heartbeat_targets(others)
                .await
                .expect("heartbeat targets");
            let mut seen_all = false;
            let mut downs = Vec::new();
            let mut longest_stall = Duration::ZERO;
            let mut last_turn = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(20), m.events.recv()).await {
                    Ok(Some(MembershipEvent::MemberDown { id, .. })) => downs.push(id.node),
                    Ok(None) => break,
                    _ => {}
                }
                let now = Instant::now();
                let late = now
                    .duration_since(last_turn)
                    .saturating_sub(Duration::from_millis(20));
                longest_stall = longest_stall.max(late);
                last_turn = now;
                if !seen_all && live_nodes(&m).len() == 3 {
                    seen_all = true;
                    converged.fetch_add(1, Ordering::SeqCst);
                }
            }
            LoadOutcome {
                node: node.to_string(),
                downs,
                stats: m.handle.stats(),
                live_at_end: live_nodes(&m).len(),
                longest_stall,
            }
        })
    })
}

/// Lowers the scheduling priority of the calling thread (Linux: a thread id
/// is a valid `renice -p` target; `unsafe` is forbidden in this crate, so no
/// `setpriority`).
fn renice_this_thread(nice: u8) {
    let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let tid = me
        .file_name()
        .expect("a thread id")
        .to_string_lossy()
        .into_owned();
    let out = std::process::Command::new("renice")
        .args(["-n", &nice.to_string(), "-p", &tid])
        .output()
        .expect("renice (util-linux) runs");
    assert!(out.status.success(), "renice: {out:?}");
}

/// The failure detector's timings ([`Timings::lan`]) are short, the owner
/// heartbeats' ([`heartbeat`]) shorter; a member that is alive but slow must
/// still never be declared down. node-a and node-b also heartbeat to each other.
///
/// The heartbeats tolerate a loaded node at the load's priority, not node-c's
/// nice 10 on a host far busier than CI: with other builds at load 20 on the 2
/// cores, node-c (a tenth of a busy thread's weight) stalls 200-300 ms, and a
/// heartbeat watch of it declared it down about once in 20 s while SWIM refuted
/// in time (see issue 16's note): a starved owner cannot be told from a frozen
/// one faster than it stalls. Three members,
/// each on its own thread (as three processes would be), stay together for
/// 20 s while busy-loop threads, two per core, keep every core saturated;
/// node-c, the slow one, also runs at niceness 10 (about a tenth of a busy
/// thread's CPU share): no member declares another down. Bounded: the busy
/// threads and the members stop on a flag after the load period.
///
/// Each member measures how long its own thread got no CPU. A down is a failure unless the
/// member (or its watcher) stalled at least as long as the detector waits for it (the
/// heartbeat timeout for node-a and node-b, SWIM's suspicion for node-c): no detector can
/// tell such a member from a frozen one, and a host loaded far beyond this test's own busy
/// threads does that (a parallel cluster bench starved nice-0 threads for 0.4-1.9 s).
///
/// Where it breaks (measured on 2 cores, 4 busy threads): node-c at nice 15
/// is suspected about once in 20 s and never declared down; at nice 19 (1.5%
/// of a busy thread's share, stalls of a third of a second and more) it is
/// declared down a few times; with the old 150/60/600 ms timings once.
#[test]
fn live_members_under_cpu_load_are_never_declared_down() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const LOAD_FOR: Duration = Duration::from_secs(20);
    let stop = Arc::new(AtomicBool::new(false));
    let converged = Arc::new(AtomicUsize::new(0));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let a = member_on_own_thread(
        "node-a",
        0,
        vec![],
        addr_tx.clone(),
        converged.clone(),
        stop.clone(),
    );
    let seed = addr_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("node-a starts");
    let b = member_on_own_thread(
        "node-b",
        0,
        vec![seed],
        addr_tx.clone(),
        converged.clone(),
        stop.clone(),
    );
    let c = member_on_own_thread(
        "node-c",
        10,
        vec![seed],
        addr_tx,
        converged.clone(),
        stop.clone(),
    );
    let t0 = Instant::now();
    while converged.load(Ordering::SeqCst) < 3 {
        if t0.elapsed() > CONVERGE {
            stop.store(true, Ordering::SeqCst);
            panic!("three members did not converge within {CONVERGE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burners: Vec<_> = (0..(2 * cores).min(8))
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x: u64 = 1;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
                x
            })
        })
        .collect();
    let loaded_at = Instant::now();
    std::thread::sleep(LOAD_FOR);
    stop.store(true, Ordering::SeqCst);
    let loaded_for = loaded_at.elapsed();
    for t in burners {
        let _ = t.join();
    }
    let outcomes: Vec<LoadOutcome> = [a, b, c]
        .into_iter()
        .map(|t| t.join().expect("member thread"))
        .collect();
    let timings = Timings::lan(3);
    for o in &outcomes {
        eprintln!(
            "under load ({} busy threads on {cores} cores, {loaded_for:?}; node-c at nice 10): {} suspected {} times, declared {} down (heartbeats: {}), sent {} heartbeat probes, longest heartbeat silence {} ms (timeout {:?}), longest stall of its own thread {:?}, sees {} live",
            (2 * cores).min(8),
            o.node,
            o.stats.suspected,
            o.stats.declared_down,
            o.stats.heartbeat_down,
            o.stats.heartbeat_probes,
            o.stats.longest_heartbeat_silence_ms,
            timings.heartbeat_timeout,
            o.longest_stall,
            o.live_at_end
        );
    }
    // What no detector can tell from a dead member: one whose thread (or whose watcher's)
    // got no CPU for longer than the detector waits. node-a and node-b watch each other by
    // heartbeats; node-c is SWIM's alone, which waits out a suspicion first. The busy
    // threads of this test alone do not stall a member that long (CI); a host loaded far
    // beyond them (other builds) may, and such a down is then reported, not failed.
    let waits_for = |node: &str| {
        if node == "node-c" {
            timings.suspect_to_down_after
        } else {
            timings.heartbeat_timeout
        }
    };
    let stall_of = |node: &str| {
        outcomes
            .iter()
            .find(|o| o.node == node)
            .map_or(Duration::ZERO, |o| o.longest_stall)
    };
    let mut starved_downs = 0;
    for o in &outcomes {
        for down in &o.downs {
            let starved = stall_of(down).max(o.longest_stall);
            assert!(
                starved >= waits_for(down),
                "{} declared {down} down under CPU load, yet neither thread stalled longer than {:?} ({down} {:?}, {} {:?}); all downs: {:?}",
                o.node,
                waits_for(down),
                stall_of(down),
                o.node,
                o.longest_stall,
                o.downs
            );
            eprintln!(
                "under load: {} declared {down} down after a stall of {starved:?} (past the {:?} any detector waits): the host starved the test, not a fault of the detector",
                o.node,
                waits_for(down)
            );
            starved_downs += 1;
        }
    }
    if starved_downs == 0 {
        for o in &outcomes {
            assert!(
                o.stats.declared_down == 0 && o.stats.heartbeat_down == 0,
                "{} counted members down under CPU load ({} by SWIM, {} by heartbeats) without a down event",
                o.node,
                o.stats.declared_down,
                o.stats.heartbeat_down
            );
            assert_eq!(o.live_at_end, 3, "{} lost members under load", o.node);
        }
    }
}

/// Keys as the speaker gets them from its Secret: two members whose keys come from the
/// same Secret data (a plain `key` entry, as the README's `kubectl create secret` makes
/// it) join; a member with another key is not admitted. The Secret's key is then replaced,
/// and each member follows it through [`KeyRotation`] at its own moment (one sees the
/// change, then the other, through every phase): they keep talking, no datagram between
/// them is refused, no one is declared down. Afterwards the retired key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_keyed_from_a_secret_join_and_survive_its_rotation() {
    use std::collections::BTreeMap;
    let secret = |value: &str| -> Keyring {
        let data: BTreeMap<String, Vec<u8>> =
            [("key".to_string(), format!("{value}\n").into_bytes())].into();
        Keyring::from_secret_data(&data).expect("a valid Secret")
    };
    let (old, new) = (
        "old-key-0123456789abcdef0123456789",
        "new-key-fedcba9876543210fedcba9876",
    );
    let t0 = Instant::now();
    let mut rot_a = KeyRotation::new(secret(old), t0);
    let mut rot_b = KeyRotation::new(secret(old), t0);
    let mut a = start("node-a", vec![], rot_a.keyring_at(t0)).await;
    let seed = a.handle.local_id().addr;
    let mut b = start("node-b", vec![seed], rot_b.keyring_at(t0)).await;
    let wrong = start(
        "wrong",
        vec![seed],
        secret("wrong-key-0123456789abcdef012345"),
    )
    .await;
    let two = vec!["node-a".to_string(), "node-b".into()];
    wait_for("a and b to join", CONVERGE, || {
        live_nodes(&a) == two && live_nodes(&b) == two
    })
    .await;
    wait_for("the wrong key to be refused", CONVERGE, || {
        a.handle.stats().rejected_auth > 0
    })
    .await;
    assert_eq!(live_nodes(&wrong), vec!["wrong".to_string()]);
    drop(wrong);
    let refused_before = a.handle.stats().rejected_auth;

    // The Secret changes at t1; a sees it at once, b 2 s later (a slow watch). Each phase
    // of the rotation is reached at a different moment on each member; the clock is
    // simulated, the gossip between the steps is real.
    let t1 = t0 + Duration::from_secs(100);
    assert!(rot_a.update(secret(new), t1));
    let b_sees = t1 + Duration::from_secs(2);
    let steps = [
        (t1, true, false),
        (b_sees, false, true),
        (t1 + rotation::SEND_PREVIOUS_FOR, true, false),
        (b_sees + rotation::SEND_PREVIOUS_FOR, false, true),
        (t1 + rotation::ACCEPT_PREVIOUS_FOR, true, false),
        (b_sees + rotation::ACCEPT_PREVIOUS_FOR, false, true),
    ];
    for (i, (at, on_a, on_b)) in steps.into_iter().enumerate() {
        if on_b && i == 1 {
            assert!(rot_b.update(secret(new), b_sees));
        }
        if on_a {
            a.handle.set_keys(rot_a.keyring_at(at)).await.expect("keys");
        }
        if on_b {
            b.handle.set_keys(rot_b.keyring_at(at)).await.expect("keys");
        }
        // Several detection periods at each step.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(live_nodes(&a), two, "after rotation step {i}");
        assert_eq!(live_nodes(&b), two, "after rotation step {i}");
    }
    for (name, m) in [("node-a", &mut a), ("node-b", &mut b)] {
        while let Ok(e) = m.events.try_recv() {
            if let MembershipEvent::MemberDown { id, .. } = &e {
                assert_ne!(id.node, "node-b", "{name}: rotation took b down");
                assert_ne!(id.node, "node-a", "{name}: rotation took a down");
            }
        }
    }
    assert_eq!(
        a.handle.stats().rejected_auth,
        refused_before,
        "a datagram of b was refused during the rotation"
    );
    assert_eq!(b.handle.stats().rejected_auth, 0);
    assert_eq!(
        rot_a.keyring_at(t1 + rotation::ACCEPT_PREVIOUS_FOR),
        secret(new)
    );

    // The retired key is refused now.
    let late = start("late", vec![seed], secret(old)).await;
    wait_for("the retired key to be refused", CONVERGE, || {
        a.handle.stats().rejected_auth > refused_before
    })
    .await;
    assert_eq!(live_nodes(&late), vec!["late".to_string()]);
    assert_eq!(live_nodes(&a), two);
}

#[test]
fn lan_timings_keep_the_suspicion_floor_and_grow_with_log_n_beyond_it() {
    let ms = Duration::from_millis;
    for (n, suspicion) in [
        (1, 1000),
        (3, 1000),
        (100, 1000),
        (1000, 1000),
        (10_000, 1200),
    ] {
        let t = Timings::lan(n);
        assert_eq!(t.suspect_to_down_after, ms(suspicion), "{n} members");
        assert_eq!((t.probe_period, t.probe_rtt), (ms(100), ms(40)));
        assert!(t.foca_config().is_ok(), "{n} members: {t:?}");
    }
}

#[test]
fn a_gossip_period_off_the_heartbeat_phase_is_refused_naming_the_field() {
    let ms = Duration::from_millis;
    for (field, t) in [
        (
            "probe_period",
            Timings {
                probe_period: ms(130),
                ..Timings::lan(3)
            },
        ),
        (
            "gossip_period",
            Timings {
                gossip_period: ms(110),
                ..Timings::lan(3)
            },
        ),
    ] {
        match t.foca_config() {
            Err(MembershipError::Config { field: f, value }) => {
                assert_eq!(f, field, "{value}");
                assert!(value.contains("heartbeat_interval"), "{value}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}
