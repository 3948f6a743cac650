//! edgelb's BFD (RFC 5880/5881) against FRR's bfdd and BIRD's `protocol bfd`: the session
//! comes Up, then a frozen speaker (SIGSTOP) and, separately, a cut link (the speaker's veth
//! downed) make the router withdraw the routes within the BFD detection time, far below the
//! BGP hold time. Figures are printed and kept in `target/tmp/figures/bfd_interop.txt`.
//! Bounds are generous (the machine may be loaded): the assertion is "well before the hold
//! timer", the figure says how fast.
mod bgp_support;

use bgp_support::{ip, refs, speaker_args, topology, Announcer, ROUTE, SESSION, SPEAKER_AS};
use edgelb_tests::lab::{self, BgpRouter, Bird, BirdConfig, Frr, FrrConfig, Neighbor, Netns};
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

fn speaker(ns: &Netns) -> anyhow::Result<Announcer> {
    let bfd = format!("{BFD_MS},{BFD_MS},{BFD_MULT}");
    let hold = HOLD.to_string();
    let args = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["192.0.2.1"],
        &["--hold", &hold, "--count", "10", "--bfd", &bfd],
    );
    Announcer::start(ns, &refs(&args))
}

/// Up, then SIGSTOP, then (after recovery) a cut link: each must withdraw at the router
/// within [`BOUND`]. `bfd_up` says whether the router's BFD session is Up.
fn scenario<R: BgpRouter>(
    router: &R,
    speaker_ns: &Netns,
    bfd_up: impl Fn(&R) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let kind = router.kind();
    let s = speaker(speaker_ns)?;
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
    let r = scenario(&frr, &t.speakers[0], up);
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
    let r = scenario(&bird, &t.speakers[0], up);
    if r.is_err() {
        eprintln!("bird logs:\n{}", bird.logs());
        if let Ok(out) = bird.birdc(&["show", "bfd", "sessions"]) {
            eprintln!("{out}");
        }
    }
    r
}
