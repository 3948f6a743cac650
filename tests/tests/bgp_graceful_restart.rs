//! Graceful restart (RFC 4724, RFC 8538) against real routers: a planned restart of the
//! speaker keeps every route at the router the whole time; a crash withdraws them after the
//! advertised restart time (printed), not the hold time nor never.
mod bgp_support;

use bgp_support::{ip, refs, speaker_args, topology, Announcer, Router, SESSION, SPEAKER_AS};
use edgelb_tests::lab::{self, Bird, Frr, Neighbor};
use std::time::{Duration, Instant};

const COUNT: &str = "50";
const LAST: &str = "198.18.0.49/32";

/// SIGUSR1: the speaker closes without a NOTIFICATION and exits; a second later the router
/// still has every route; the next speaker sets the R bit, and the router's table is sampled
/// every 50 ms until the new End-of-RIB: every route is there in every sample and after.
fn planned_restart<R: Router>() -> anyhow::Result<()> {
    let t = topology(1)?;
    let router = R::boot(&t.router, &[Neighbor::new(ip("192.0.2.2"), SPEAKER_AS)])?;
    let base = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["192.0.2.1"],
        &["--count", COUNT, "--graceful-restart", "30", "--hold", "9"],
    );
    let mut first = Announcer::start(&t.speakers[0], &refs(&base))?;
    router.wait_route(LAST, SESSION)?;
    let stop = Instant::now();
    first.signal(libc::SIGUSR1)?;
    first.wait_exit(Duration::from_secs(5))?;
    // Nobody announces now: the router keeps the routes (stale) only because of graceful
    // restart; without it they are gone within a few hundred ms of the close.
    std::thread::sleep(Duration::from_secs(1));
    let stale = router
        .rib_v4()?
        .iter()
        .filter(|r| r.prefix.starts_with("198.18.0."))
        .count();
    eprintln!(
        "{}: 1 s after the speaker exited without a NOTIFICATION the router still has {stale} of 50 routes",
        router.kind()
    );
    assert_eq!(
        stale, 50,
        "the router dropped our routes on a planned restart"
    );
    let mut args = base.clone();
    args.push("--restarting".into());
    let second = Announcer::start(&t.speakers[0], &refs(&args))?;
    let mut samples = 0u32;
    let mut missing = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(25);
    while !second.has_event("all_sent") && Instant::now() < deadline {
        let rib = router.rib_v4()?;
        let have = rib
            .iter()
            .filter(|r| r.prefix.starts_with("198.18.0."))
            .count();
        if have != 50 {
            missing.push((stop.elapsed(), have));
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    second.wait_event("all_sent", Duration::from_secs(1))?;
    let back = stop.elapsed();
    // After End-of-RIB the router drops only what was not sent again: nothing.
    std::thread::sleep(Duration::from_millis(500));
    let after = router
        .rib_v4()?
        .iter()
        .filter(|r| r.prefix.starts_with("198.18.0."))
        .count();
    eprintln!(
        "{}: planned restart: new session and End-of-RIB {back:?} after the stop; {samples} samples of the router's table in between, {} with a route missing; {after} routes after End-of-RIB",
        router.kind(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "routes missing during the restart: {missing:?}"
    );
    assert_eq!(after, 50);
    Ok(())
}

/// SIGKILL with a 5 s restart time: the routes stay, then go after about 5 s.
fn crash_withdraws_after_the_restart_time<R: Router>() -> anyhow::Result<()> {
    let t = topology(1)?;
    let router = R::boot(&t.router, &[Neighbor::new(ip("192.0.2.2"), SPEAKER_AS)])?;
    let args = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["192.0.2.1"],
        &["--count", COUNT, "--graceful-restart", "5", "--hold", "90"],
    );
    let s = Announcer::start(&t.speakers[0], &refs(&args))?;
    router.wait_route(LAST, SESSION)?;
    let start = Instant::now();
    s.signal(libc::SIGKILL)?;
    router.wait_no_route(LAST, Duration::from_secs(30))?;
    let gone = start.elapsed();
    eprintln!(
        "{}: crash with restart time 5 s: routes withdrawn {gone:?} after the kill (hold time 90 s)",
        router.kind()
    );
    assert!(
        gone >= Duration::from_secs(4),
        "routes went before the restart time: {gone:?}"
    );
    assert!(
        gone < Duration::from_secs(12),
        "routes stayed long past the restart time: {gone:?}"
    );
    Ok(())
}

#[test]
fn frr_keeps_every_route_through_a_planned_restart() -> anyhow::Result<()> {
    if !lab::enabled("bgp_graceful_restart") {
        return Ok(());
    }
    planned_restart::<Frr>()
}

#[test]
fn frr_withdraws_after_the_restart_time_when_the_speaker_crashes() -> anyhow::Result<()> {
    if !lab::enabled("bgp_graceful_restart") {
        return Ok(());
    }
    crash_withdraws_after_the_restart_time::<Frr>()
}

#[test]
fn bird_keeps_every_route_through_a_planned_restart() -> anyhow::Result<()> {
    if !lab::enabled("bgp_graceful_restart") {
        return Ok(());
    }
    planned_restart::<Bird>()
}
