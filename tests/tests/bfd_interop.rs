//! edgelb's BFD (RFC 5880/5881) against FRR's bfdd and BIRD's `protocol bfd`: the session
//! comes Up, then a frozen speaker (SIGSTOP) and, separately, a cut link (the speaker's veth
//! downed) make the router withdraw the routes within the BFD detection time, far below the
//! BGP hold time. Figures are printed and kept in `target/tmp/figures/bfd_interop.txt`.
//! Bounds are generous (the machine may be loaded): the assertion is "well before the hold
//! timer", the figure says how fast.
mod bgp_support;

use bgp_support::{ip, refs, speaker_args, topology, Announcer, ROUTE, SESSION, SPEAKER_AS};
use edgelb_tests::lab::{
    self, netns::veth, BgpRouter, Bird, BirdConfig, Frr, FrrConfig, Neighbor, Netns,
};
use std::time::{Duration, Instant};

/// BGP hold time on both sides: what detects a failure without BFD.
const HOLD: u16 = 9;
/// BFD: 100 ms both ways, multiplier 3 => detection 300 ms.
const BFD_MS: u64 = 100;
const BFD_MULT: u64 = 3;
/// What a withdrawal may take and still count as BFD's doing (the hold timer needs 9 s).
const BOUND: Duration = Duration::from_secs(4);

fn figure(line: String) {
    use std::io::Write;
    eprintln!("{line}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures");
    let file = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("bfd_interop.txt"))
    });
    if let Ok(mut f) = file {
        let _ = writeln!(f, "{line}");
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The speaker with BFD to `peer`; `extra` arguments after the common ones.
fn speaker(ns: &Netns, peer: &str, extra: &[&str]) -> anyhow::Result<Announcer> {
    let bfd = format!("{BFD_MS},{BFD_MS},{BFD_MULT}");
    let hold = HOLD.to_string();
    let mut more = vec!["--hold", &hold, "--count", "10", "--bfd", &bfd];
    more.extend_from_slice(extra);
    let args = speaker_args(SPEAKER_AS, "192.0.2.2", &[peer], &more);
    Announcer::start(ns, &refs(&args))
}

/// Up, then SIGSTOP, then (after recovery) a cut link: each must withdraw at the router
/// within [`BOUND`]. `bfd_up` says whether the router's BFD session is Up. `s` is the
/// speaker (in `speaker_ns`, its link `eth0`); `kind` names the router in figures.
fn scenario<R: BgpRouter>(
    router: &R,
    kind: &str,
    speaker_ns: &Netns,
    s: Announcer,
    bfd_up: impl Fn(&R) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    router
        .wait_established(ip("192.0.2.2"), SESSION)
        .map_err(|e| e.context(format!("speaker output:\n{}", s.output())))?;
    router.wait_route("198.18.0.9/32", SESSION)?;
    lab::wait_until(
        &format!("{kind} BFD session Up"),
        SESSION,
        Duration::from_millis(100),
        || Ok(bfd_up(router)?.then_some(())),
    )?;
    // Let the Poll Sequence to the fast timers finish on both sides.
    std::thread::sleep(Duration::from_millis(500));

    let start = Instant::now();
    s.signal(libc::SIGSTOP)?;
    router.wait_no_route("198.18.0.0/32", ROUTE)?;
    let frozen = start.elapsed();
    figure(format!(
        "bfd {kind}: frozen speaker (SIGSTOP) -> routes withdrawn after {frozen:?} (BFD {BFD_MULT} x {BFD_MS} ms; BGP hold time {HOLD} s; load {})",
        load()
    ));
    s.signal(libc::SIGCONT)?;
    assert!(frozen < BOUND, "{kind}: SIGSTOP withdrew after {frozen:?}");

    // The speaker wakes up, its BGP session reconnects (BFD first takes it down here too).
    router.wait_route("198.18.0.9/32", SESSION)?;
    lab::wait_until(
        &format!("{kind} BFD session Up again"),
        SESSION,
        Duration::from_millis(100),
        || Ok(bfd_up(router)?.then_some(())),
    )?;
    std::thread::sleep(Duration::from_millis(500));

    let start = Instant::now();
    speaker_ns.ip(&["link", "set", "eth0", "down"])?;
    router.wait_no_route("198.18.0.0/32", ROUTE)?;
    let cut = start.elapsed();
    figure(format!(
        "bfd {kind}: cut link (veth down) -> routes withdrawn after {cut:?} (BFD {BFD_MULT} x {BFD_MS} ms; BGP hold time {HOLD} s; load {})",
        load()
    ));
    speaker_ns.ip(&["link", "set", "eth0", "up"])?;
    assert!(cut < BOUND, "{kind}: cut link withdrew after {cut:?}");
    drop(s);
    Ok(())
}

#[test]
fn frr_bfdd_withdraws_within_the_detection_time_on_freeze_and_link_cut() -> anyhow::Result<()> {
    if !lab::enabled("bfd_interop") {
        return Ok(());
    }
    let t = topology(1)?;
    let bfdd = format!(
        "bfd\n profile fast\n  transmit-interval {BFD_MS}\n  receive-interval {BFD_MS}\n  detect-multiplier {BFD_MULT}\n !\n!\n"
    );
    let mut cfg = FrrConfig::new("192.0.2.1".parse()?, bgp_support::ROUTER_AS)
        .neighbor(Neighbor::new(ip("192.0.2.2"), SPEAKER_AS).hold_time(HOLD));
    cfg.extra.push("neighbor 192.0.2.2 bfd profile fast".into());
    let frr = Frr::start_with_bfd(&t.router, cfg, &bfdd)?;
    let up = |f: &Frr| -> anyhow::Result<bool> {
        let out = f.vtysh_bfdd("show bfd peers json")?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        Ok(v.as_array().is_some_and(|a| {
            a.iter()
                .any(|p| p["peer"] == "192.0.2.2" && p["status"] == "up")
        }))
    };
    let r = speaker(&t.speakers[0], "192.0.2.1", &[])
        .and_then(|s| scenario(&frr, "frr", &t.speakers[0], s, up));
    if r.is_err() {
        eprintln!("frr logs:\n{}", frr.logs());
        if let Ok(out) = frr.vtysh_bfdd("show bfd peers") {
            eprintln!("{out}");
        }
    }
    r
}

#[test]
fn bird_bfd_withdraws_within_the_detection_time_on_freeze_and_link_cut() -> anyhow::Result<()> {
    if !lab::enabled("bfd_interop") {
        return Ok(());
    }
    let t = topology(1)?;
    let mut cfg = BirdConfig::new("192.0.2.1".parse()?, bgp_support::ROUTER_AS).neighbor(
        Neighbor::new(ip("192.0.2.2"), SPEAKER_AS)
            .hold_time(HOLD)
            .bfd(),
    );
    cfg.extra.push(format!(
        "protocol bfd {{\n  interface \"*\" {{\n    min rx interval {BFD_MS} ms;\n    min tx interval {BFD_MS} ms;\n    multiplier {BFD_MULT};\n  }};\n}}"
    ));
    let bird = Bird::start(&t.router, cfg)?;
    let up = |b: &Bird| -> anyhow::Result<bool> {
        let out = b.birdc(&["show", "bfd", "sessions"])?;
        Ok(out
            .lines()
            .any(|l| l.contains("192.0.2.2") && l.contains(" Up ")))
    };
    let r = speaker(&t.speakers[0], "192.0.2.1", &[])
        .and_then(|s| scenario(&bird, "bird", &t.speakers[0], s, up));
    if r.is_err() {
        eprintln!("bird logs:\n{}", bird.logs());
        if let Ok(out) = bird.birdc(&["show", "bfd", "sessions"]) {
            eprintln!("{out}");
        }
    }
    r
}

/// RFC 5883 against FRR across a router: the speaker (192.0.2.2) and FRR (203.0.113.2) are
/// two hops apart, BGP is eBGP multihop and BFD runs on port 4784; FRR's packets arrive with
/// TTL 254 (accepted: minimum TTL 254) and ours reach FRR the same way. The session comes
/// Up as multihop on FRR's side, and a freeze or a cut link beyond FRR's own link withdraws
/// within the detection time.
#[test]
fn frr_bfdd_multihop_across_a_router_withdraws_within_the_detection_time() -> anyhow::Result<()> {
    if !lab::enabled("bfd_interop") {
        return Ok(());
    }
    let speaker_ns = Netns::new("s")?;
    let mid = Netns::new("m")?;
    let router_ns = Netns::new("r")?;
    veth(&speaker_ns, "eth0", &mid, "eth0")?;
    veth(&mid, "eth1", &router_ns, "eth0")?;
    speaker_ns.addr("eth0", "192.0.2.2/24")?;
    mid.addr("eth0", "192.0.2.1/24")?;
    mid.addr("eth1", "203.0.113.1/24")?;
    mid.sysctl("net.ipv4.ip_forward", "1")?;
    router_ns.addr("eth0", "203.0.113.2/24")?;
    speaker_ns.ip(&["route", "add", "203.0.113.0/24", "via", "192.0.2.1"])?;
    // A specific route, not a default: FRR resolves next hops through a default route only
    // when told to.
    router_ns.ip(&["route", "add", "192.0.2.0/24", "via", "203.0.113.1"])?;
    let bfdd = format!(
        "bfd\n profile mh\n  transmit-interval {BFD_MS}\n  receive-interval {BFD_MS}\n  detect-multiplier {BFD_MULT}\n  minimum-ttl 254\n !\n!\n"
    );
    let mut cfg = FrrConfig::new("203.0.113.2".parse()?, bgp_support::ROUTER_AS).neighbor(
        Neighbor::new(ip("192.0.2.2"), SPEAKER_AS)
            .hold_time(HOLD)
            .ebgp_multihop(2),
    );
    cfg.extra.push("neighbor 192.0.2.2 bfd profile mh".into());
    let frr = Frr::start_with_bfd(&router_ns, cfg, &bfdd)?;
    let up = |f: &Frr| -> anyhow::Result<bool> {
        let out = f.vtysh_bfdd("show bfd peers json")?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        Ok(v.as_array().is_some_and(|a| {
            a.iter()
                .any(|p| p["peer"] == "192.0.2.2" && p["multihop"] == true && p["status"] == "up")
        }))
    };
    let r = speaker(&speaker_ns, "203.0.113.2", &["--multihop", "2"])
        .and_then(|s| scenario(&frr, "frr multihop", &speaker_ns, s, up));
    if r.is_err() {
        eprintln!("frr logs:\n{}", frr.logs());
        if let Ok(out) = frr.vtysh_bfdd("show bfd peers") {
            eprintln!("{out}");
        }
    }
    r
}
