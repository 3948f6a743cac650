//! edgelb-bgp against FRR in a network namespace: the speaker is the `announce` example
//! process, the router a real FRR (see `bgp_support` for the scenarios).
mod bgp_support;

use edgelb_tests::lab::{self, Frr};

#[test]
fn frr_ebgp_and_ibgp_routes_carry_exact_attributes_and_withdrawals_disappear() -> anyhow::Result<()>
{
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    bgp_support::attributes_and_withdrawal::<Frr>()
}

#[test]
fn frr_md5_session_comes_up_with_the_right_password_only() -> anyhow::Result<()> {
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    bgp_support::md5::<Frr>()
}

#[test]
fn frr_sigterm_withdraws_at_once_and_sigkill_within_the_hold_time() -> anyhow::Result<()> {
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    bgp_support::sigterm_and_sigkill::<Frr>()
}

#[test]
fn frr_restart_brings_the_session_and_routes_back() -> anyhow::Result<()> {
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    bgp_support::router_restart::<Frr>()
}

#[test]
fn frr_receives_graceful_restart_capability_and_end_of_rib() -> anyhow::Result<()> {
    use bgp_support::{ip, refs, speaker_args, topology, Announcer, Router, SESSION, SPEAKER_AS};
    use edgelb_tests::lab::{BgpRouter, Neighbor};
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    let t = topology(1)?;
    let frr = Frr::boot(&t.router, &[Neighbor::new(ip("192.0.2.2"), SPEAKER_AS)])?;
    let args = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["192.0.2.1"],
        &["--count", "3", "--graceful-restart", "120"],
    );
    let _s = Announcer::start(&t.speakers[0], &refs(&args))?;
    frr.wait_established(ip("192.0.2.2"), SESSION)?;
    frr.wait_route("198.18.0.2/32", SESSION)?;
    // RFC 4724: FRR received our capability (restart time, F bit for IPv4 unicast) and our
    // End-of-RIB after the initial table.
    let out = frr.vtysh("show bgp neighbors 192.0.2.2 json")?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let n = &v["192.0.2.2"];
    assert_eq!(
        n["neighborCapabilities"]["gracefulRestart"], "advertisedAndReceived",
        "{out}"
    );
    let gr = &n["gracefulRestartInfo"];
    assert_eq!(gr["remoteGrMode"], "Restart", "{out}");
    assert_eq!(gr["timers"]["receivedRestartTimer"], 120, "{out}");
    assert_eq!(gr["ipv4Unicast"]["fBit"], true, "{out}");
    assert_eq!(gr["endOfRibRecv"]["ipv4Unicast"], true, "{out}");
    eprintln!("frr: graceful restart capability (120 s, F bit) and End-of-RIB received");
    Ok(())
}

#[test]
fn frr_ebgp_ttl_1_stops_at_a_router_hop_and_multihop_2_passes() -> anyhow::Result<()> {
    use bgp_support::{ip, refs, speaker_args, Announcer, SESSION, SPEAKER_AS};
    use edgelb_tests::lab::{netns::veth, BgpRouter, FrrConfig, Neighbor, Netns};
    use std::time::Duration;
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    // speaker 192.0.2.2 -- 192.0.2.254 [forwarding m] 198.51.100.254 -- 198.51.100.1 FRR
    let (s, m, r) = (Netns::new("s")?, Netns::new("m")?, Netns::new("r")?);
    veth(&s, "eth0", &m, "eth0")?;
    veth(&m, "eth1", &r, "eth0")?;
    s.addr("eth0", "192.0.2.2/24")?;
    m.addr("eth0", "192.0.2.254/24")?;
    m.addr("eth1", "198.51.100.254/24")?;
    r.addr("eth0", "198.51.100.1/24")?;
    m.sysctl("net.ipv4.ip_forward", "1")?;
    s.ip(&["route", "add", "default", "via", "192.0.2.254"])?;
    r.ip(&["route", "add", "default", "via", "198.51.100.254"])?;
    let frr = Frr::start(
        &r,
        FrrConfig::new("198.51.100.1".parse()?, 65001)
            .neighbor(Neighbor::new(ip("192.0.2.2"), SPEAKER_AS).ebgp_multihop(2)),
    )?;
    let base = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["198.51.100.1"],
        &["--count", "1"],
    );

    // eBGP default TTL 1: the SYN dies at the forwarding hop.
    let direct = Announcer::start(&s, &refs(&base))?;
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !direct.has_event("established"),
        "TTL 1 crossed a router:\n{}",
        direct.output()
    );
    let state = frr.neighbor_state(ip("192.0.2.2"))?;
    assert_ne!(state, lab::router::ESTABLISHED);
    drop(direct);

    let mut args = base.clone();
    args.extend(["--multihop".to_string(), "2".to_string()]);
    let multihop = Announcer::start(&s, &refs(&args))?;
    frr.wait_established(ip("192.0.2.2"), SESSION)?;
    frr.wait_route("198.18.0.0/32", SESSION)?;
    eprintln!("frr: TTL 1 stays {state} across one hop; ebgp-multihop 2 Established");
    drop(multihop);
    Ok(())
}

#[test]
fn frr_gtsm_session_needs_ttl_255_from_us() -> anyhow::Result<()> {
    use bgp_support::{ip, refs, speaker_args, topology, Announcer, SESSION, SPEAKER_AS};
    use edgelb_tests::lab::{BgpRouter, FrrConfig, Neighbor};
    use std::time::Duration;
    if !lab::enabled("bgp_interop_frr") {
        return Ok(());
    }
    let t = topology(2)?;
    let mut cfg = FrrConfig::new("192.0.2.1".parse()?, 65001)
        .neighbor(Neighbor::new(ip("192.0.2.2"), SPEAKER_AS))
        .neighbor(Neighbor::new(ip("192.0.2.3"), SPEAKER_AS));
    // RFC 5082 on FRR's side: it sends TTL 255 and drops anything below 255.
    cfg.extra
        .push("neighbor 192.0.2.2 ttl-security hops 1".into());
    cfg.extra
        .push("neighbor 192.0.2.3 ttl-security hops 1".into());
    let frr = Frr::start(&t.router, cfg)?;
    let gtsm = Announcer::start(
        &t.speakers[0],
        &refs(&speaker_args(
            SPEAKER_AS,
            "192.0.2.2",
            &["192.0.2.1"],
            &["--gtsm", "--count", "1"],
        )),
    )?;
    let plain = Announcer::start(
        &t.speakers[1],
        &refs(&speaker_args(
            SPEAKER_AS,
            "192.0.2.3",
            &["192.0.2.1"],
            &["--count", "1"],
        )),
    )?;
    frr.wait_established(ip("192.0.2.2"), SESSION)?;
    frr.wait_route("198.18.0.0/32", SESSION)?;
    std::thread::sleep(Duration::from_secs(5));
    let state = frr.neighbor_state(ip("192.0.2.3"))?;
    assert_ne!(
        state,
        lab::router::ESTABLISHED,
        "FRR took TTL 1 packets under GTSM"
    );
    // (FRR sets IP_MINTTL after accept(), so our first segment, the OPEN, can slip in and
    // our side may see FRR's KEEPALIVE; nothing of ours after it reaches FRR.)
    assert!(
        !frr.rib_v4()?.iter().any(|r| r.prefix == "198.18.1.0/32"),
        "a route crossed GTSM with TTL 1"
    );
    drop(plain);
    eprintln!("frr: GTSM with --gtsm Established; without it (TTL 1) stays {state}");
    drop(gtsm);
    Ok(())
}
