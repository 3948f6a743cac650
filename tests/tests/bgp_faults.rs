//! Issue 13's three interop faults against FRR in network namespaces (the same faults over
//! loopback, without a router: `bgp/tests/speaker_faults.rs`). Each test failed before the
//! fix: an IPv4-mapped next hop (`::ffff:192.0.2.2`), routes counted as sent that never
//! were, and a router locked out for 240 s by two idle connections.
mod bgp_support;

use bgp_support::{ip, refs, speaker_args, topology, Announcer, Router, SESSION, SPEAKER_AS};
use edgelb_tests::lab::{self, BgpRouter, Family, Frr, Neighbor, Netns};
use std::time::{Duration, Instant};

#[test]
fn frr_ipv6_route_over_an_ipv4_session_gets_the_speaker_ipv6_address_as_next_hop(
) -> anyhow::Result<()> {
    if !lab::enabled("bgp_faults") {
        return Ok(());
    }
    let t = topology(1)?;
    let frr = Frr::boot(
        &t.router,
        &[Neighbor::new(ip("192.0.2.2"), SPEAKER_AS).families(&[Family::V4, Family::V6])],
    )?;
    let args = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["192.0.2.1"],
        &["--families", "v4,v6"],
    );
    let mut s = Announcer::start(&t.speakers[0], &refs(&args))?;
    frr.wait_established(ip("192.0.2.2"), SESSION)?;
    s.send("add 2001:db8:ff::7/128")?;
    s.send("add 203.0.113.7/32")?;
    let r6 = frr.wait_route("2001:db8:ff::7/128", SESSION)?;
    let r4 = frr.wait_route("203.0.113.7/32", SESSION)?;
    eprintln!(
        "frr: /128 over the IPv4 session has next hop {:?}, /32 {:?}",
        r6.next_hop, r4.next_hop
    );
    // The speaker's IPv6 address on the interface toward the router, never ::ffff:192.0.2.2.
    assert_eq!(r6.next_hop, Some(ip("2001:db8::2")), "{r6:?}");
    assert_eq!(r4.next_hop, Some(ip("192.0.2.2")), "{r4:?}");
    Ok(())
}

#[test]
fn frr_ipv4_over_an_ipv6_only_link_is_not_announced_nor_counted_nor_withdrawn() -> anyhow::Result<()>
{
    if !lab::enabled("bgp_faults") {
        return Ok(());
    }
    let mut lan = lab::Lan::new()?;
    let router = Netns::new("r")?;
    lan.attach(&router, "eth0")?;
    router.addr("eth0", "192.0.2.1/24")?;
    router.addr("eth0", "2001:db8::1/64")?;
    // The speaker's link has IPv6 only: no IPv4 next hop toward the router.
    let speaker = Netns::new("s")?;
    lan.attach(&speaker, "eth0")?;
    speaker.addr("eth0", "2001:db8::2/64")?;
    let frr = Frr::boot(
        &router,
        &[Neighbor::new(ip("2001:db8::2"), SPEAKER_AS).families(&[Family::V4, Family::V6])],
    )?;
    let args = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["2001:db8::1"],
        &["--families", "v4,v6"],
    );
    let mut s = Announcer::start(&speaker, &refs(&args))?;
    frr.wait_established(ip("2001:db8::2"), SESSION)?;
    s.send("add 2001:db8:ff::8/128")?;
    s.send("add 203.0.113.8/32")?;
    frr.wait_route("2001:db8:ff::8/128", SESSION)?;
    let ev = s.wait_event("families_not_announced", SESSION)?;
    eprintln!("speaker says: {ev}");
    assert_eq!(ev["families"][0]["family"], "Ipv4Unicast", "{ev}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        frr.rib_v4()?.iter().all(|r| r.prefix != "203.0.113.8/32"),
        "an IPv4 route without a usable next hop reached the router"
    );
    // What the speaker says it sent is what the router has: the /128 only.
    let sent: Vec<serde_json::Value> = s
        .events()
        .into_iter()
        .filter(|e| e["event"] == "sent")
        .collect();
    assert!(
        sent.iter().all(|e| e["prefixes"].as_u64() <= Some(1)),
        "counted as sent: {sent:?}"
    );
    s.send("del 203.0.113.8/32")?;
    s.send("del 2001:db8:ff::8/128")?;
    frr.wait_no_route("2001:db8:ff::8/128", SESSION)?;
    std::thread::sleep(Duration::from_millis(500));
    let withdrawn: u64 = s
        .events()
        .iter()
        .filter(|e| e["event"] == "sent")
        .filter_map(|e| e["withdrawn"].as_u64())
        .sum();
    assert_eq!(
        withdrawn,
        1,
        "withdrawals for prefixes never announced:\n{}",
        s.output()
    );
    Ok(())
}

#[test]
fn frr_establishes_promptly_past_two_idle_connections_from_its_own_address() -> anyhow::Result<()> {
    if !lab::enabled("bgp_faults") {
        return Ok(());
    }
    let t = topology(1)?;
    let args = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["192.0.2.1"],
        &["--passive", "--listen", "[::]:179", "--count", "1"],
    );
    let _s = Announcer::start(&t.speakers[0], &refs(&args))?;
    std::thread::sleep(Duration::from_millis(500));
    // Two connections from the router's own address that never send an OPEN.
    let _idle = t.router.spawn(
        &[
            "python3",
            "-c",
            "import socket,time\ns=[socket.create_connection(('192.0.2.2',179)) for _ in range(2)]\ntime.sleep(300)",
        ],
        None,
    )?;
    std::thread::sleep(Duration::from_millis(800));
    let started = Instant::now();
    let frr = Frr::boot(&t.router, &[Neighbor::new(ip("192.0.2.2"), SPEAKER_AS)])?;
    frr.wait_established(ip("192.0.2.2"), Duration::from_secs(15))?;
    let took = started.elapsed();
    eprintln!("frr: Established {took:?} after it started, past two idle connections (before the fix: locked out for 240 s)");
    frr.wait_route("198.18.0.0/32", SESSION)?;
    Ok(())
}
