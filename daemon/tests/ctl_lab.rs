//! `edgelbctl` and `/metrics` against a live speaker: an FRR router and one node namespace
//! running the real `edgelb-speaker` (standalone) with its local API socket and metrics port.
//!
//! - `edgelbctl peers -o json` says what FRR says about the session (state, prefix count);
//!   the table shows the same, without colour when not on a terminal.
//! - `edgelbctl announcements -o json` lists the IP FRR has in its RIB, sent to the router.
//! - `/metrics`: UPDATEs sent > 0, prefixes announced = 1, session up = 1, `/readyz` 200.
//! - FRR killed: `edgelbctl peers --check` exits 1, `/metrics` shows the session down and one
//!   down transition.
mod speaker_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use edgelb_daemon::local_api::view::{AnnouncementView, PeerView};
use edgelb_tests::lab::{self, wait_until, Frr, FrrConfig, Lan, ListenRange, Netns};
use speaker_support::{cluster_yaml, write_atomic, Dir, SpeakerProc, Svc};

const NODE: (&str, &str) = ("node-0", "192.0.2.10");
const ROUTER: &str = "192.0.2.1";
const IP: &str = "198.51.100.20";
const METRICS: &str = "192.0.2.10:9472";

const PEERS: &str = "---\napiVersion: edgelb.io/v1alpha1\nkind: BGPPeer\n\
metadata: {name: router, namespace: edgelb-system}\n\
spec: {myASN: 64512, peerASN: 64500, peerAddress: \"192.0.2.1\", holdTime: 9s}\n\
---\napiVersion: edgelb.io/v1alpha1\nkind: BGPAdvertisement\n\
metadata: {name: all, namespace: edgelb-system}\nspec: {}\n";

/// The `edgelbctl` binary beside this test's target directory, built on demand.
fn edgelbctl() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>/edgelbctl
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?;
    let bin = profile_dir.join("edgelbctl");
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(env!("CARGO"));
    // A plain build resolves dependency features without the dev-dependencies `cargo test`
    // unifies in, so this compiles edgelbctl and what it depends on once more; that is
    // edgelb-view, not the daemon library (edgelbctl does not depend on it).
    cmd.args(["build", "-q", "--workspace", "--bin", "edgelbctl"]);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let status = cmd.status().context("building edgelbctl")?;
    if !status.success() || !bin.exists() {
        bail!("cannot build {}", bin.display());
    }
    Ok(bin)
}

/// Runs edgelbctl against `socket`; returns (exit code, stdout).
fn ctl(bin: &Path, socket: &Path, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new(bin)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .context("running edgelbctl")?;
    let code = out.status.code().unwrap_or(-1);
    if code == 3 {
        bail!(
            "edgelbctl {args:?}: unreachable: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((code, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// FRR's view of the neighbour: (state, prefixes accepted from it).
fn frr_neighbor(frr: &Frr, addr: &str) -> anyhow::Result<(String, u64)> {
    let out = frr.vtysh(&format!("show bgp neighbors {addr} json"))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("FRR neighbour JSON")?;
    let n = &v[addr];
    let state = n["bgpState"].as_str().unwrap_or("").to_string();
    let pfx = n["addressFamilyInfo"]["ipv4Unicast"]["acceptedPrefixCounter"]
        .as_u64()
        .unwrap_or(0);
    Ok((state, pfx))
}

/// The value of one sample line `series value` in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(ns: &Netns, path: &str) -> anyhow::Result<(bool, String)> {
    let out = ns.output(&[
        "curl",
        "-s",
        "-m",
        "5",
        "-w",
        "\n%{http_code}",
        &format!("http://{METRICS}{path}"),
    ])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    Ok((code == "200", body.to_string()))
}

#[test]
fn edgelbctl_and_metrics_agree_with_frr_and_check_fails_when_the_router_dies() -> anyhow::Result<()>
{
    if !lab::enabled("ctl_lab") {
        return Ok(());
    }
    let bin = edgelbctl()?;
    let dir = Dir::new("ctl-lab")?;
    let mut lan = Lan::new()?;
    let router_ns = Netns::new("crt")?;
    lan.attach(&router_ns, "eth0")?;
    router_ns.addr("eth0", &format!("{ROUTER}/24"))?;
    let frr = Frr::start(
        &router_ns,
        FrrConfig::new(ROUTER.parse()?, 64500)
            .listen_range(ListenRange::new("192.0.2.0/24", 64512)),
    )?;
    let ns = Netns::new("cn0")?;
    lan.attach(&ns, "eth0")?;
    ns.addr("eth0", &format!("{}/24", NODE.1))?;
    let file = dir.path("cluster.yaml");
    let yaml = cluster_yaml(
        &[NODE],
        "198.51.100.20-198.51.100.29",
        &[Svc {
            name: "web",
            ip: IP,
            local: false,
            endpoints: vec!["node-0"],
        }],
        PEERS,
    );
    write_atomic(&file, &yaml)?;
    let socket = dir.path("node-0.sock");
    let socket_s = socket.to_string_lossy().into_owned();
    let speaker = SpeakerProc::start(
        &ns,
        NODE.0,
        &file,
        dir.path("node-0.log"),
        &["--socket", &socket_s, "--metrics-addr", METRICS],
    )?;
    let logs = || lab::router::tail(&speaker.logs(), 20);

    // The session is up and FRR has the route.
    let mut last = (String::new(), 0);
    wait_until(
        "FRR has the prefix from node-0",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            last = frr_neighbor(&frr, NODE.1)?;
            Ok((last.0 == "Established" && last.1 == 1).then_some(()))
        },
    )
    .with_context(|| format!("FRR says {last:?}; speaker log:\n{}", logs()))?;
    let rib = frr.vtysh("show bgp ipv4 unicast json")?;
    assert!(rib.contains(&format!("{IP}/32")), "FRR RIB: {rib}");

    // peers -o json agrees with FRR (the speaker's counters may lag FRR by one publication).
    let mut peers: Vec<PeerView> = Vec::new();
    wait_until(
        "edgelbctl shows the session Established with 1 prefix",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let (_, out) = ctl(&bin, &socket, &["peers", "-o", "json"])?;
            peers = serde_json::from_str(&out).context("peers JSON")?;
            Ok((peers.len() == 1 && peers[0].is_up() && peers[0].prefixes_sent == 1).then_some(()))
        },
    )
    .with_context(|| format!("edgelbctl peers: {peers:?}; log:\n{}", logs()))?;
    let (frr_state, frr_pfx) = frr_neighbor(&frr, NODE.1)?;
    assert_eq!(peers[0].address, ROUTER);
    assert_eq!(peers[0].state, frr_state);
    assert_eq!(peers[0].prefixes_sent, frr_pfx);
    assert!(peers[0].updates_out >= 1, "{:?}", peers[0]);
    assert!(peers[0].established_since.is_some());
    eprintln!("edgelbctl peers -o json: {:?}", peers[0]);

    let (code, table) = ctl(&bin, &socket, &["peers"])?;
    eprintln!("edgelbctl peers:\n{table}");
    assert_eq!(code, 0);
    assert!(
        !table.contains('\u{1b}'),
        "no colour off a terminal: {table:?}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(ROUTER))
        .context("a row for the router")?;
    let cols: Vec<&str> = row.split_whitespace().collect();
    let header: Vec<&str> = table
        .lines()
        .next()
        .context("a header row")?
        .split_whitespace()
        .collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (state, sent) = (
        column("STATE").context("a STATE column")?,
        column("SENT").context("a SENT column")?,
    );
    assert_eq!(cols[state], "Established", "{row}");
    assert_eq!(cols[sent], frr_pfx.to_string(), "SENT column: {row}");
    assert_eq!(ctl(&bin, &socket, &["peers", "--check"])?.0, 0);

    // announcements: the IP FRR has, sent to the router.
    let (_, out) = ctl(&bin, &socket, &["announcements", "-o", "json"])?;
    let anns: Vec<AnnouncementView> = serde_json::from_str(&out).context("announcements")?;
    let ann = anns
        .iter()
        .find(|a| a.ip == IP)
        .with_context(|| format!("no announcement of {IP}: {anns:?}"))?;
    assert_eq!(ann.peers, vec![ROUTER.to_string()]);
    assert_eq!(ann.service, "default/web");
    assert_eq!(ann.owner, NODE.0);
    let (_, table) = ctl(&bin, &socket, &["announcements"])?;
    eprintln!("edgelbctl announcements:\n{table}");
    assert!(table
        .lines()
        .any(|l| l.starts_with(IP) && l.contains("BGP")));
    let (code, text) = ctl(&bin, &socket, &["explain", "svc/web"])?;
    eprintln!("edgelbctl explain svc/web:\n{text}");
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!("IPs:             {IP} (pool lan)")),
        "{text}"
    );
    // The election's verdict: the only node, live, may serve the Service.
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with(NODE.0) && l.contains(" yes ")),
        "{text}"
    );

    // metrics move.
    let (ready, _) = scrape(&ns, "/readyz")?;
    assert!(ready, "/readyz is 200 once the snapshot is applied");
    let (_, m) = scrape(&ns, "/metrics")?;
    let peer = format!("{{peer=\"{ROUTER}\"}}");
    let updates = sample(&m, &format!("edgelb_bgp_updates_sent_total{peer}"));
    eprintln!("UPDATEs sent: {updates:?}");
    assert!(updates.is_some_and(|u| u >= 1.0), "{m}");
    assert_eq!(
        sample(&m, &format!("edgelb_bgp_prefixes_announced{peer}")),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("edgelb_bgp_session_up{peer}")),
        Some(1.0)
    );
    assert_eq!(sample(&m, "edgelb_owned_ips{mode=\"BGP\"}"), Some(1.0));
    assert_eq!(sample(&m, "edgelb_pool_used{pool=\"lan\"}"), Some(1.0));
    assert!(sample(&m, "edgelb_reconcile_duration_seconds_count").is_some_and(|c| c >= 1.0));

    // The router dies: --check fails, the session is down in the metrics.
    let pid = frr.pid().to_string();
    let killed = Command::new("kill").args(["-9", &pid]).status()?;
    assert!(killed.success());
    let t = std::time::Instant::now();
    wait_until(
        "edgelbctl peers --check exits 1",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || Ok((ctl(&bin, &socket, &["peers", "--check"])?.0 == 1).then_some(())),
    )
    .with_context(|| format!("log:\n{}", logs()))?;
    eprintln!("--check failed {:?} after FRR was killed", t.elapsed());
    let mut m = String::new();
    wait_until(
        "metrics show the session down",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            m = scrape(&ns, "/metrics")?.1;
            Ok((sample(&m, &format!("edgelb_bgp_session_up{peer}")) == Some(0.0)).then_some(()))
        },
    )
    .with_context(|| m.clone())?;
    assert_eq!(
        sample(
            &m,
            &format!("edgelb_bgp_session_down_transitions_total{peer}")
        ),
        Some(1.0),
        "{m}"
    );
    let (_, table) = ctl(&bin, &socket, &["peers"])?;
    eprintln!("edgelbctl peers after the kill:\n{table}");
    drop(speaker);
    drop(frr);
    Ok(())
}
