//! The router lab works: FRR, BIRD and GoBGP come up in their own namespaces on a LAN, carry
//! routes with their attributes, withdraw them, honour TCP MD5 (RFC 2385), and leave nothing
//! behind. Interop tests of our speaker rely on every helper used here.
use edgelb_tests::lab::{
    self, Announce, BgpRouter, Bird, BirdConfig, Family, Frr, FrrConfig, Gobgp, GobgpConfig, Lan,
    ListenRange, Neighbor, Netns, Origin,
};
use std::net::IpAddr;
use std::time::{Duration, Instant};

const SESSION: Duration = Duration::from_secs(30);
const ROUTE: Duration = Duration::from_secs(15);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// A LAN with one namespace per router: `192.0.2.N/24` and `2001:db8::N/64` on `eth0`.
fn lan(n: usize) -> anyhow::Result<(Lan, Vec<Netns>)> {
    let mut lan = Lan::new()?;
    let mut hosts = Vec::new();
    for i in 1..=n {
        let ns = Netns::new("r")?;
        lan.attach(&ns, "eth0")?;
        ns.addr("eth0", &format!("192.0.2.{i}/24"))?;
        ns.addr("eth0", &format!("2001:db8::{i}/64"))?;
        hosts.push(ns);
    }
    Ok((lan, hosts))
}

fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn frr_and_bird_exchange_ipv4_and_ipv6_routes_with_communities_then_withdraw() -> anyhow::Result<()>
{
    if !lab::enabled("lab_routers") {
        return Ok(());
    }
    let (_lan, hosts) = lan(2)?;
    let started = Instant::now();
    let frr = Frr::start(
        &hosts[0],
        FrrConfig::new("192.0.2.1".parse()?, 65001)
            .neighbor(Neighbor::new(ip("192.0.2.2"), 65002))
            .neighbor(Neighbor::new(ip("2001:db8::2"), 65002))
            .announce(
                Announce::new("203.0.113.0/24")
                    .community("65001:7")
                    .large_community("65001:1:1")
                    .med(33),
            ),
    )?;
    let mut bird = Bird::start(
        &hosts[1],
        BirdConfig::new("192.0.2.2".parse()?, 65002)
            .neighbor(Neighbor::new(ip("192.0.2.1"), 65001))
            .neighbor(Neighbor::new(ip("2001:db8::1"), 65001))
            .announce(
                Announce::new("198.51.100.0/24")
                    .community("65002:1")
                    .community("65535:65281")
                    .large_community("65002:1:2")
                    .med(50),
            )
            .announce(Announce::new("2001:db8:100::/48").community("65002:6")),
    )?;
    frr.wait_established(ip("192.0.2.2"), SESSION)?;
    frr.wait_established(ip("2001:db8::2"), SESSION)?;
    assert_eq!(bird.neighbor_state(ip("192.0.2.1"))?, "Established");
    eprintln!("frr<->bird Established after {:?}", started.elapsed());

    let r = frr.wait_route("198.51.100.0/24", ROUTE)?;
    assert_eq!(r.as_path, vec![65002]);
    assert_eq!(r.origin, Origin::Igp);
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));
    assert_eq!(r.peer, Some(ip("192.0.2.2")));
    assert_eq!(r.med, Some(50));
    assert_eq!(r.communities, vec!["65002:1", "65535:65281"]);
    assert_eq!(r.large_communities, vec!["65002:1:2"]);
    let r6 = frr.wait_route("2001:db8:100::/48", ROUTE)?;
    assert_eq!(r6.communities, vec!["65002:6"]);
    assert_eq!(r6.next_hop, Some(ip("2001:db8::2")));
    assert_eq!(r6.as_path, vec![65002]);

    // The other direction exercises the BIRD RIB reader on real output.
    let b = bird.wait_route("203.0.113.0/24", ROUTE)?;
    assert_eq!(b.as_path, vec![65001]);
    assert_eq!(b.next_hop, Some(ip("192.0.2.1")));
    assert_eq!(b.peer, Some(ip("192.0.2.1")));
    assert_eq!(b.med, Some(33));
    assert_eq!(b.communities, vec!["65001:7"]);
    assert_eq!(b.large_communities, vec!["65001:1:1"]);
    // Its own static route is there too, originated (no peer, no next hop).
    let own = bird.rib_v4()?;
    assert!(own
        .iter()
        .any(|r| r.prefix == "198.51.100.0/24" && r.peer.is_none()));

    let t = Instant::now();
    bird.withdraw("198.51.100.0/24")?;
    frr.wait_no_route("198.51.100.0/24", ROUTE)?;
    eprintln!("withdraw seen at FRR after {:?}", t.elapsed());
    // The IPv6 route is untouched.
    assert!(frr
        .rib_v6()?
        .iter()
        .any(|r| r.prefix == "2001:db8:100::/48"));

    frr.withdraw("203.0.113.0/24")?;
    bird.wait_no_route("203.0.113.0/24", ROUTE)?;

    // Everything is cleaned up: processes and run directories.
    let (fp, bp) = (frr.pid(), bird.pid());
    let (fd, bd) = (frr.dir().to_path_buf(), bird.dir().to_path_buf());
    drop(frr);
    drop(bird);
    assert!(gone(fp) && gone(bp), "a router survived its guard");
    assert!(!fd.exists() && !bd.exists(), "a run directory was left");
    assert!(!std::path::Path::new(&format!("/var/tmp/frr/bgpd.{fp}")).exists());
    Ok(())
}

#[test]
fn frr_and_gobgp_exchange_routes_with_large_communities_then_withdraw() -> anyhow::Result<()> {
    if !lab::enabled("lab_routers") {
        return Ok(());
    }
    let (_lan, hosts) = lan(2)?;
    let started = Instant::now();
    // GoBGP waits 5-10 s before it connects: it is passive and FRR connects.
    let gobgp = Gobgp::start(
        &hosts[1],
        GobgpConfig::new("192.0.2.2".parse()?, 65003)
            .neighbor(Neighbor::new(ip("192.0.2.1"), 65001).passive())
            .announce(
                Announce::new("203.0.113.99/32")
                    .community("65003:1")
                    .community("65003:2")
                    .large_community("65003:1:2")
                    .med(10)
                    .prepend(&[65010]),
            ),
    )?;
    let frr = Frr::start(
        &hosts[0],
        FrrConfig::new("192.0.2.1".parse()?, 65001)
            .neighbor(Neighbor::new(ip("192.0.2.2"), 65003))
            .announce(Announce::new("192.0.2.128/25").community("65001:9")),
    )?;
    frr.wait_established(ip("192.0.2.2"), SESSION)?;
    gobgp.wait_established(ip("192.0.2.1"), SESSION)?;
    eprintln!("frr<->gobgp Established after {:?}", started.elapsed());

    let r = frr.wait_route("203.0.113.99/32", ROUTE)?;
    assert_eq!(r.as_path, vec![65003, 65010]);
    assert_eq!(r.med, Some(10));
    assert_eq!(r.communities, vec!["65003:1", "65003:2"]);
    assert_eq!(r.large_communities, vec!["65003:1:2"]);
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")));

    let g = gobgp.wait_route("192.0.2.128/25", ROUTE)?;
    assert_eq!(g.as_path, vec![65001]);
    assert_eq!(g.communities, vec!["65001:9"]);
    assert_eq!(g.peer, Some(ip("192.0.2.1")));
    assert_eq!(g.next_hop, Some(ip("192.0.2.1")));
    let own = gobgp.rib_v4()?;
    assert!(own
        .iter()
        .any(|r| r.prefix == "203.0.113.99/32" && r.peer.is_none() && r.best));

    let t = Instant::now();
    gobgp.withdraw("203.0.113.99/32")?;
    frr.wait_no_route("203.0.113.99/32", ROUTE)?;
    eprintln!("withdraw seen at FRR after {:?}", t.elapsed());
    let gp = gobgp.pid();
    gobgp.stop()?;
    assert!(gone(gp));
    Ok(())
}

#[test]
fn md5_session_comes_up_with_the_same_password_and_stays_down_with_another() -> anyhow::Result<()> {
    if !lab::enabled("lab_routers") {
        return Ok(());
    }
    let (_lan, hosts) = lan(3)?;
    let frr = Frr::start(
        &hosts[0],
        FrrConfig::new("192.0.2.1".parse()?, 65001)
            .neighbor(Neighbor::new(ip("192.0.2.2"), 65002).password("lab-secret"))
            .neighbor(Neighbor::new(ip("192.0.2.3"), 65003).password("lab-secret")),
    )?;
    let _good = Bird::start(
        &hosts[1],
        BirdConfig::new("192.0.2.2".parse()?, 65002)
            .neighbor(Neighbor::new(ip("192.0.2.1"), 65001).password("lab-secret"))
            .announce(Announce::new("198.51.100.0/24")),
    )?;
    let bad = Bird::start(
        &hosts[2],
        BirdConfig::new("192.0.2.3".parse()?, 65003)
            .neighbor(Neighbor::new(ip("192.0.2.1"), 65001).password("other-secret"))
            .announce(Announce::new("203.0.113.0/24")),
    )?;
    frr.wait_established(ip("192.0.2.2"), SESSION)?;
    frr.wait_route("198.51.100.0/24", ROUTE)?;
    // Both BIRDs retry every 2 s: give the wrong one several attempts.
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        assert_ne!(frr.neighbor_state(ip("192.0.2.3"))?, "Established");
        assert_ne!(bad.neighbor_state(ip("192.0.2.1"))?, "Established");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!frr.rib_v4()?.iter().any(|r| r.prefix == "203.0.113.0/24"));
    Ok(())
}

#[test]
fn ibgp_from_a_listen_range_carries_local_pref_and_med() -> anyhow::Result<()> {
    if !lab::enabled("lab_routers") {
        return Ok(());
    }
    let (_lan, hosts) = lan(2)?;
    let frr = Frr::start(
        &hosts[0],
        FrrConfig::new("192.0.2.1".parse()?, 65001)
            .listen_range(ListenRange::new("192.0.2.0/24", 65001)),
    )?;
    let bird = Bird::start(
        &hosts[1],
        BirdConfig::new("192.0.2.2".parse()?, 65001)
            .neighbor(
                Neighbor::new(ip("192.0.2.1"), 65001)
                    .hold_time(9)
                    .families(&[Family::V4]),
            )
            .announce(
                Announce::new("198.51.100.64/26")
                    .local_pref(200)
                    .med(7)
                    .community("65001:100"),
            ),
    )?;
    frr.wait_established(ip("192.0.2.2"), SESSION)?;
    bird.wait_established(ip("192.0.2.1"), SESSION)?;
    let r = frr.wait_route("198.51.100.64/26", ROUTE)?;
    assert_eq!(r.local_pref, Some(200));
    assert_eq!(r.med, Some(7));
    assert!(r.as_path.is_empty(), "iBGP adds no AS: {:?}", r.as_path);
    assert_eq!(r.communities, vec!["65001:100"]);
    let hold = frr.vtysh("show bgp neighbors 192.0.2.2 json")?;
    assert!(
        hold.contains("\"bgpTimerHoldTimeMsecs\":9000"),
        "negotiated hold time is not 9 s: {hold}"
    );
    Ok(())
}

#[test]
fn bird_and_gobgp_listen_ranges_accept_frr_as_a_dynamic_neighbour() -> anyhow::Result<()> {
    if !lab::enabled("lab_routers") {
        return Ok(());
    }
    let (_lan, hosts) = lan(3)?;
    let bird = Bird::start(
        &hosts[1],
        BirdConfig::new("192.0.2.2".parse()?, 65002)
            .listen_range(ListenRange::new("192.0.2.0/24", 65001))
            .announce(Announce::new("198.51.100.0/24").large_community("65002:0:1")),
    )?;
    let gobgp = Gobgp::start(
        &hosts[2],
        GobgpConfig::new("192.0.2.3".parse()?, 65003)
            .listen_range(ListenRange::new("192.0.2.0/24", 65001))
            .announce(Announce::new("203.0.113.0/24").community("65003:3")),
    )?;
    let frr = Frr::start(
        &hosts[0],
        FrrConfig::new("192.0.2.1".parse()?, 65001)
            .neighbor(Neighbor::new(ip("192.0.2.2"), 65002))
            .neighbor(Neighbor::new(ip("192.0.2.3"), 65003)),
    )?;
    frr.wait_established(ip("192.0.2.2"), SESSION)?;
    frr.wait_established(ip("192.0.2.3"), SESSION)?;
    // The dynamic sessions are found by the peer's address on both daemons.
    assert_eq!(bird.neighbor_state(ip("192.0.2.1"))?, "Established");
    assert_eq!(gobgp.neighbor_state(ip("192.0.2.1"))?, "Established");
    let b = frr.wait_route("198.51.100.0/24", ROUTE)?;
    assert_eq!(b.large_communities, vec!["65002:0:1"]);
    let g = frr.wait_route("203.0.113.0/24", ROUTE)?;
    assert_eq!(g.communities, vec!["65003:3"]);
    assert_eq!(g.as_path, vec![65003]);
    Ok(())
}
