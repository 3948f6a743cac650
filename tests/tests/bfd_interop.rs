//! edgelb's BFD (RFC 5880/5881) against FRR's bfdd and BIRD's `protocol bfd`: the session
//! comes Up, then a frozen speaker (SIGSTOP) and, separately, a cut link (the speaker's veth
//! downed) make the router withdraw the routes within the BFD detection time, far below the
//! BGP hold time. Figures are printed and kept in `target/tmp/figures/bfd_interop.txt`.
//! Bounds are generous (the machine may be loaded): the assertion is "well before the hold
//! timer", the figure says how fast.
mod bgp_support;

use bgp_support::{ip, refs, speaker_args, topology, Announcer, ROUTE, SESSION, SPEAKER_AS};
use edgelb_tests::lab::frr::BfdProfile;
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
    lab::figure("bfd_interop", &line);
}

/// FRR's bfdd profile of these tests: [`BFD_MS`] both ways, x [`BFD_MULT`].
fn fast(name: &str) -> BfdProfile {
    BfdProfile::new(name).timers(BFD_MS as u32, BFD_MULT as u32)
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
        lab::load()
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
        lab::load()
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
    let cfg = FrrConfig::new("192.0.2.1".parse()?, bgp_support::ROUTER_AS)
        .neighbor(Neighbor::new(ip("192.0.2.2"), SPEAKER_AS).hold_time(HOLD));
    let frr = Frr::start_with_bfd_profile(&t.router, cfg, ip("192.0.2.2"), &fast("fast"))?;
    let up = |f: &Frr| f.bfd_up(ip("192.0.2.2"));
    let r = speaker(&t.speakers[0], "192.0.2.1", &[])
        .and_then(|s| scenario(&frr, "frr", &t.speakers[0], s, up));
    frr.log_bfd_if_failed(r)
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
    let cfg = FrrConfig::new("203.0.113.2".parse()?, bgp_support::ROUTER_AS).neighbor(
        Neighbor::new(ip("192.0.2.2"), SPEAKER_AS)
            .hold_time(HOLD)
            .ebgp_multihop(2),
    );
    let profile = fast("mh").minimum_ttl(254);
    let frr = Frr::start_with_bfd_profile(&router_ns, cfg, ip("192.0.2.2"), &profile)?;
    let up = |f: &Frr| -> anyhow::Result<bool> {
        Ok(f.bfd_peer(ip("192.0.2.2"))?
            .is_some_and(|p| p["multihop"] == true && p["status"] == "up"))
    };
    let r = speaker(&speaker_ns, "203.0.113.2", &["--multihop", "2"])
        .and_then(|s| scenario(&frr, "frr multihop", &speaker_ns, s, up));
    frr.log_bfd_if_failed(r)
}

/// The MAC of `dev` in `ns`.
fn mac(ns: &Netns, dev: &str) -> anyhow::Result<String> {
    let out = ns.ip(&["-br", "link", "show", dev])?;
    out.split_whitespace()
        .nth(2)
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no MAC for {dev} in {out:?}"))
}

/// RFC 5880 §6.4 Echo against FRR: the speaker sends Echo packets (UDP 3785, to and from
/// its own address, in frames to the router's MAC) and the router's forwarding plane loops
/// them back, as FRR's bfdd expects on Linux. Control packets run slowly (3 × 1 s) and Echo
/// fast (3 × 100 ms). Then the router stops forwarding (`ip_forward=0`): Control packets
/// still flow both ways (they are addressed to the routers themselves), so only Echo can see
/// it; the speaker's session goes Down with diagnostic 2 (Echo Function Failed), BGP closes
/// with Cease / BFD Down and the router withdraws within the Echo detection time.
#[test]
fn frr_echo_loops_our_echo_packets_and_a_forwarding_failure_withdraws_fast() -> anyhow::Result<()> {
    if !lab::enabled("bfd_interop") {
        return Ok(());
    }
    let t = topology(1)?;
    t.router.sysctl("net.ipv4.ip_forward", "1")?;
    let speaker_ns = &t.speakers[0];
    // FRR accepts Echo at 100 ms (its Required Min Echo RX Interval) and runs its own
    // Control timers at 1 s.
    let cfg = FrrConfig::new("192.0.2.1".parse()?, bgp_support::ROUTER_AS)
        .neighbor(Neighbor::new(ip("192.0.2.2"), SPEAKER_AS).hold_time(HOLD));
    let frr = Frr::start_with_bfd_profile(&t.router, cfg, ip("192.0.2.2"), &BfdProfile::echo())?;
    let dir = std::env::temp_dir().join(format!("edgelb-bfd-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let r = (|| -> anyhow::Result<()> {
        let capture = lab::capture::Capture::start(speaker_ns, "eth0", "udp port 3785", &dir)?;
        let hold = HOLD.to_string();
        let args = speaker_args(
            SPEAKER_AS,
            "192.0.2.2",
            &["192.0.2.1"],
            &[
                "--hold",
                &hold,
                "--count",
                "10",
                "--bfd",
                "1000,1000,3",
                "--bfd-echo",
                "100",
            ],
        );
        let s = Announcer::start(speaker_ns, &refs(&args))?;
        frr.wait_established(ip("192.0.2.2"), SESSION)
            .map_err(|e| e.context(format!("speaker output:\n{}", s.output())))?;
        frr.wait_route("198.18.0.9/32", SESSION)?;
        // Echo packets go out and come back through the router (source MAC: the router's).
        let router_mac = mac(&t.router, "eth0")?;
        let back = lab::wait_until(
            "Echo packets looped back by the router",
            SESSION,
            Duration::from_millis(100),
            || {
                let n = capture.from_mac(&router_mac, "3785")?.len();
                Ok((n >= 10).then_some(n))
            },
        )?;
        // Stable: no session loss while Echo runs.
        std::thread::sleep(Duration::from_secs(1));
        assert!(!s.has_event("down"), "a session went down:\n{}", s.output());
        let start = Instant::now();
        t.router.sysctl("net.ipv4.ip_forward", "0")?;
        frr.wait_no_route("198.18.0.0/32", ROUTE)?;
        let took = start.elapsed();
        t.router.sysctl("net.ipv4.ip_forward", "1")?;
        figure(format!(
            "bfd frr echo: {back} Echo packets looped back by the router; forwarding stopped (Control packets still flowing, 3 x 1000 ms) -> Echo (3 x 100 ms) took the session down, routes withdrawn after {took:?} (BGP hold time {HOLD} s; load {})",
            lab::load()
        ));
        let down = s.wait_event("down", Duration::from_secs(2))?;
        assert_eq!(
            down["code"], "6/10",
            "BGP must close with Cease / BFD Down: {down}"
        );
        assert!(
            took < Duration::from_millis(2500),
            "Echo detection took {took:?}"
        );
        // FRR heard why.
        let peers = frr.vtysh_bfdd("show bfd peers json")?;
        eprintln!("frr bfd peers after the Echo failure: {peers}");
        // Forwarding back: the session and the routes come back.
        frr.wait_route("198.18.0.9/32", SESSION)?;
        Ok(())
    })();
    if r.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    frr.log_bfd_if_failed(r)
}
