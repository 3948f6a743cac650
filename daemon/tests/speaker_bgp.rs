//! End to end, BGP: an FRR router and three node namespaces on one LAN, each node running
//! the real `edgelb-speaker` binary in standalone mode on its own copy of the cluster file.
//!
//! - `Cluster`: every node announces the IP; FRR (maximum-paths 8) holds three paths, all
//!   used (multipath).
//! - `Local`: only the node with a ready endpoint announces; moving the endpoint (rewriting
//!   the files) moves the announcement.
//! - SIGTERM: the node's paths leave FRR at once (Cease / Administrative Shutdown) and the
//!   process exits within 2 s.
mod speaker_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use edgelb_tests::lab::{self, wait_until, BgpRouter, Frr, FrrConfig, Lan, ListenRange, Netns};
use speaker_support::{cluster_yaml, write_atomic, Dir, SpeakerProc, Svc};

const NODES: [(&str, &str); 3] = [
    ("node-0", "192.0.2.10"),
    ("node-1", "192.0.2.11"),
    ("node-2", "192.0.2.12"),
];
const ROUTER: &str = "192.0.2.1";
const CLUSTER_IP: &str = "198.51.100.10";
const LOCAL_IP: &str = "198.51.100.11";

const PEERS: &str = "---\napiVersion: edgelb.io/v1alpha1\nkind: BGPPeer\n\
metadata: {name: router, namespace: edgelb-system}\n\
spec: {myASN: 64512, peerASN: 64500, peerAddress: \"192.0.2.1\", holdTime: 9s}\n\
---\napiVersion: edgelb.io/v1alpha1\nkind: BGPAdvertisement\n\
metadata: {name: all, namespace: edgelb-system}\nspec: {communities: [\"64512:100\"]}\n";

fn yaml(local_endpoint: &'static str) -> String {
    cluster_yaml(
        &NODES,
        "198.51.100.10-198.51.100.19",
        &[
            Svc {
                name: "web",
                ip: CLUSTER_IP,
                local: false,
                endpoints: vec!["node-0"],
            },
            Svc {
                name: "db",
                ip: LOCAL_IP,
                local: true,
                endpoints: vec![local_endpoint],
            },
        ],
        PEERS,
    )
}

/// The peers (node addresses) FRR holds a path from for `prefix`, and how many of those
/// paths are best or multipath (installed for ECMP).
fn paths(frr: &Frr, prefix: &str) -> anyhow::Result<(Vec<IpAddr>, usize)> {
    let out = frr.vtysh(&format!("show bgp ipv4 unicast {prefix} json"))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("FRR prefix JSON")?;
    let mut peers = Vec::new();
    let mut used = 0;
    for p in v["paths"].as_array().into_iter().flatten() {
        if let Some(a) = p["peer"]["peerId"].as_str().and_then(|s| s.parse().ok()) {
            peers.push(a);
        }
        if p["multipath"].as_bool() == Some(true)
            || p["bestpath"]["overall"].as_bool() == Some(true)
        {
            used += 1;
        }
    }
    peers.sort();
    Ok((peers, used))
}

fn addrs(nodes: &[usize]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = nodes
        .iter()
        .filter_map(|i| NODES[*i].1.parse().ok())
        .collect();
    v.sort();
    v
}

fn wait_paths(
    frr: &Frr,
    prefix: &str,
    want: &[usize],
    timeout: Duration,
    speakers: &[SpeakerProc],
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let want = addrs(want);
    let mut last = (Vec::new(), 0);
    wait_until(
        &format!("FRR paths for {prefix} from {want:?}"),
        timeout,
        Duration::from_millis(20),
        || {
            last = paths(frr, prefix)?;
            Ok((last.0 == want && last.1 == want.len()).then_some(()))
        },
    )
    .with_context(|| {
        let logs: Vec<String> = speakers
            .iter()
            .map(|s| format!("--- {}:\n{}", s.node, lab::router::tail(&s.logs(), 15)))
            .collect();
        format!(
            "last paths {:?} ({} used)\nFRR:\n{}\n{}",
            last.0,
            last.1,
            lab::router::tail(&frr.logs(), 20),
            logs.join("\n")
        )
    })?;
    Ok(t.elapsed())
}

#[test]
fn cluster_ecmp_local_follows_endpoints_and_sigterm_withdraws_at_once() -> anyhow::Result<()> {
    if !lab::enabled("speaker_bgp") {
        return Ok(());
    }
    let dir = Dir::new("speaker-bgp")?;
    let mut lan = Lan::new()?;
    let router_ns = Netns::new("rt")?;
    lan.attach(&router_ns, "eth0")?;
    router_ns.addr("eth0", &format!("{ROUTER}/24"))?;
    let frr = Frr::start(
        &router_ns,
        FrrConfig::new("192.0.2.1".parse()?, 64500)
            .listen_range(ListenRange::new("192.0.2.0/24", 64512)),
    )?;
    frr.configure(&[
        "router bgp 64500",
        "address-family ipv4 unicast",
        "maximum-paths 8",
    ])?;

    let mut node_ns = Vec::new();
    let mut speakers = Vec::new();
    for (i, (name, addr)) in NODES.iter().enumerate() {
        let ns = Netns::new(&format!("n{i}"))?;
        lan.attach(&ns, "eth0")?;
        ns.addr("eth0", &format!("{addr}/24"))?;
        let file = dir.path(&format!("{name}.yaml"));
        write_atomic(&file, &yaml("node-1"))?;
        speakers.push(SpeakerProc::start(
            &ns,
            name,
            &file,
            dir.path(&format!("{name}.log")),
            &[],
        )?);
        node_ns.push(ns);
    }

    // Cluster: three paths, all used.
    let t = wait_paths(
        &frr,
        &format!("{CLUSTER_IP}/32"),
        &[0, 1, 2],
        Duration::from_secs(60),
        &speakers,
    )?;
    eprintln!("speaker_bgp: Cluster IP on 3 paths (ECMP) after {t:?} from start");
    let route = frr
        .rib_v4()?
        .into_iter()
        .find(|r| r.prefix == format!("{CLUSTER_IP}/32"))
        .context("no route")?;
    assert_eq!(route.communities, vec!["64512:100".to_string()]);
    assert_eq!(route.as_path, vec![64512]);

    // Local: only node-1 has the endpoint.
    wait_paths(
        &frr,
        &format!("{LOCAL_IP}/32"),
        &[1],
        Duration::from_secs(20),
        &speakers,
    )?;
    eprintln!("speaker_bgp: Local IP only from node-1");

    // The endpoint moves to node-2: so does the announcement.
    let moved = Instant::now();
    for (name, _) in NODES {
        write_atomic(&dir.path(&format!("{name}.yaml")), &yaml("node-2"))?;
    }
    let t = wait_paths(
        &frr,
        &format!("{LOCAL_IP}/32"),
        &[2],
        Duration::from_secs(20),
        &speakers,
    )?;
    eprintln!(
        "speaker_bgp: Local IP moved to node-2 {:?} after the file rewrite",
        moved.elapsed().max(t)
    );

    // SIGTERM on node-0: its path goes at once, the others stay.
    let stop = Instant::now();
    let exit = speakers[0].terminate(Duration::from_secs(2))?;
    wait_paths(
        &frr,
        &format!("{CLUSTER_IP}/32"),
        &[1, 2],
        Duration::from_secs(5),
        &speakers,
    )?;
    let withdraw = stop.elapsed();
    eprintln!(
        "speaker_bgp: SIGTERM -> exit {exit:?}, path of node-0 gone {withdraw:?} after SIGTERM"
    );
    if exit > Duration::from_secs(2) {
        bail!("speaker took {exit:?} to exit after SIGTERM");
    }
    let logs = speakers[0].logs();
    assert!(logs.contains("stopping"), "node-0 log:\n{logs}");
    if withdraw > Duration::from_secs(1) {
        bail!("node-0's path took {withdraw:?} to leave FRR after SIGTERM (want < 1 s)");
    }
    let frr_logs = frr.logs();
    assert!(
        frr_logs.contains("Administrative Shutdown") || frr_logs.contains("Administratively"),
        "FRR did not log an Administrative Shutdown:\n{}",
        lab::router::tail(&frr_logs, 30)
    );
    drop(speakers);
    drop(frr);
    Ok(())
}
