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
