//! An IP owned by node-a is resolved to node-a's MAC; node-b never answers for it; after a
//! planned move to node-b the client's neighbour entry and its TCP connections follow at
//! once. IPv4 by ARP, IPv6 by NS/NA. Figures are printed; deadlines are generous because
//! the tests share a loaded 2-core machine.
mod l2_support;

use edgelb_tests::lab::{self, capture::Capture, wait_until};
use l2_support::*;
use std::time::Duration;

struct Family {
    svc: &'static str,
    ping: &'static [&'static str],
    /// Text in a tcpdump line of an announcement or answer for the service address.
    wire: &'static str,
    /// The multicast group the owner must join (IPv6: solicited-node, RFC 4861 §7.2.1).
    group: Option<&'static str>,
}

const V4: Family = Family {
    svc: SVC4,
    ping: &["ping", "-c", "1", "-W", "3"],
    wire: "192.0.2.100 is-at",
    group: None,
};

const V6: Family = Family {
    svc: SVC6,
    ping: &["ping", "-6", "-c", "1", "-W", "3"],
    wire: "tgt is 2001:db8::100",
    group: Some("ff02::1:ff00:100"),
};

fn joined(ns: &edgelb_tests::lab::Netns, group: &str) -> anyhow::Result<bool> {
    Ok(ns
        .ip(&["maddr", "show", "dev", "eth0"])?
        .split_whitespace()
        .any(|w| w == group))
}

fn ownership_moves_and_the_client_follows(tag: &str, fam: &Family) -> anyhow::Result<()> {
    let lab = L2Lab::new(tag)?;
    let cap = Capture::start(lab.lan.switch(), "br0", "arp or icmp6", lab.dir.path())?;
    let _serve_a = lab.serve(&lab.a, "node-a")?;
    let _serve_b = lab.serve(&lab.b, "node-b")?;
    let mut ann_a = Announce::start(&lab.a, lab.dir.path(), "a")?;
    let mut ann_b = Announce::start(&lab.b, lab.dir.path(), "b")?;
    let own_svc = format!("eth0={}", fam.svc);
    let applied = ann_a.own(&own_svc)?;
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    // node-b serves eth0 but owns nothing there: it must stay silent for the address.
    assert!(ann_b.own("eth0=")?.errors.is_empty());

    if let Some(group) = fam.group {
        assert!(joined(&lab.a, group)?, "node-a joined {group}");
        assert!(
            !joined(&lab.b, group)?,
            "node-b owns nothing and joined no group"
        );
    }

    // The client's kernel resolves the address to node-a and reaches node-a's listener.
    let mut ping = vec![];
    ping.extend_from_slice(fam.ping);
    ping.push(fam.svc);
    lab.client.run(&ping)?;
    assert_eq!(lab.client_neighbour(fam.svc)?, Some(lab.mac_a.clone()));
    let (mut p, log) = lab.start_probe(fam.svc, 300)?;
    p.wait_exit(Duration::from_secs(20))?;
    let before = probe_results(&log);
    assert!(
        before.iter().any(|r| r.ok.as_deref() == Some("node-a")),
        "{before:?}"
    );
    assert!(before.iter().all(|r| r.ok.as_deref() != Some("node-b")));
    let answered_by_a = cap.from_mac(&lab.mac_a, fam.wire)?;
    assert!(!answered_by_a.is_empty(), "node-a announced and answered");
    assert_eq!(
        cap.from_mac(&lab.mac_b, fam.svc)?,
        vec![],
        "node-b does not own the address and must never speak for it"
    );

    // Planned move: the new owner announces first, then the old one lets go.
    let (mut probe, log) = lab.start_probe(fam.svc, 4000)?;
    std::thread::sleep(Duration::from_millis(1000));
    let moved_at = now();
    let applied_b = ann_b.own(&own_svc)?;
    assert!(applied_b.errors.is_empty(), "{:?}", applied_b.errors);
    ann_a.own("eth0=")?;
    let released_by_a = now();
    let neigh_moved = wait_until(
        "client neighbour entry to move to node-b",
        Duration::from_secs(10),
        Duration::from_millis(2),
        || Ok((lab.client_neighbour(fam.svc)? == Some(lab.mac_b.clone())).then(now)),
    )?;
    probe.wait_exit(Duration::from_secs(30))?;

    let first_frame = cap
        .from_mac(&lab.mac_b, fam.wire)?
        .into_iter()
        .map(|f| f.time)
        .fold(f64::INFINITY, f64::min);
    let results = probe_results(&log);
    let first_b = results
        .iter()
        .find(|r| r.ok.as_deref() == Some("node-b"))
        .map(|r| r.time)
        .unwrap_or(f64::INFINITY);
    let failures_after_move = results
        .iter()
        .filter(|r| r.time >= moved_at && r.ok.is_none())
        .count();
    let last_a = results
        .iter()
        .filter(|r| r.ok.as_deref() == Some("node-a"))
        .map(|r| r.time)
        .fold(0.0, f64::max);
    eprintln!(
        "{tag}: move -> set_owned returned {:.2} ms, first frame from node-b on the wire {:.2} ms, \
         client neighbour entry seen on node-b {:.1} ms (polled), first TCP success at node-b {:.1} ms; \
         last success at node-a {:.1} ms; failed connects after the move: {failures_after_move} of {}",
        (applied_b.done_at - moved_at) * 1e3,
        (first_frame - moved_at) * 1e3,
        (neigh_moved - moved_at) * 1e3,
        (first_b - moved_at) * 1e3,
        (last_a - moved_at) * 1e3,
        results.iter().filter(|r| r.time >= moved_at).count(),
    );
    assert!(
        first_frame >= moved_at && first_frame - moved_at < 1.0,
        "first announcement by node-b {:.3} s after the move",
        first_frame - moved_at
    );
    assert!(
        first_b - moved_at < 2.0,
        "client reached node-b {:.3} s after the move",
        first_b - moved_at
    );
    assert_eq!(failures_after_move, 0, "a planned move loses no connection");
    // After the move node-a no longer answers: a fresh resolution must find node-b.
    lab.client.ip(&["neigh", "flush", "dev", "eth0"])?;
    lab.client.run(&ping)?;
    assert_eq!(lab.client_neighbour(fam.svc)?, Some(lab.mac_b.clone()));
    if let Some(group) = fam.group {
        assert!(joined(&lab.b, group)?, "node-b joined {group}");
        assert!(!joined(&lab.a, group)?, "node-a left {group}");
    }
    let late_from_a: Vec<_> = cap
        .from_mac(&lab.mac_a, fam.wire)?
        .into_iter()
        .filter(|f| f.time > released_by_a)
        .collect();
    assert_eq!(
        late_from_a,
        vec![],
        "node-a stopped answering once released"
    );
    let stats_a = ann_a.stats()?;
    assert!(
        !stats_a.iter().any(|l| l.starts_with("ip ")),
        "node-a reports no owned address: {stats_a:?}"
    );
    let stats_b = ann_b.stats()?;
    let first = Announce::counter(&stats_b, &format!("ip eth0 {}", fam.svc), "first")?;
    assert_ne!(first, "-", "node-b reports its first announcement");
    Ok(())
}

#[test]
fn ipv4_ownership_moves_from_node_a_to_node_b_and_the_client_follows() -> anyhow::Result<()> {
    if !lab::enabled("l2_failover_ipv4") {
        return Ok(());
    }
    ownership_moves_and_the_client_follows("l2v4", &V4)
}

#[test]
fn ipv6_ownership_moves_from_node_a_to_node_b_and_the_client_follows() -> anyhow::Result<()> {
    if !lab::enabled("l2_failover_ipv6") {
        return Ok(());
    }
    ownership_moves_and_the_client_follows("l2v6", &V6)
}
