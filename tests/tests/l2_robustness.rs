//! A burst of malformed, foreign and spoofed frames changes nothing and crashes nothing; an
//! interface the announcer was not given is never answered on.
mod l2_support;

use edgelb_tests::lab::{self, capture::Capture, netns::veth};
use l2_support::*;
use std::time::Duration;

fn counter(lines: &[String], key: &str) -> anyhow::Result<u64> {
    Ok(Announce::counter(lines, "iface eth0", key)?.parse()?)
}

#[test]
fn a_burst_of_malformed_and_unrelated_frames_changes_nothing() -> anyhow::Result<()> {
    if !lab::enabled("l2_robustness") {
        return Ok(());
    }
    let lab = L2Lab::new("l2rb")?;
    // A second link between node-a and the client that the announcer is not given.
    veth(&lab.a, "eth1", &lab.client, "eth1")?;
    lab.a.sysctl("net.ipv4.conf.eth1.arp_ignore", "1")?;
    let cap = Capture::start(lab.lan.switch(), "br0", "arp or icmp6", lab.dir.path())?;
    // What reaches node-a, through the same test as the announcer's kernel filter: ARP
    // requests that are not announcements (sender = target), and neighbour solicitations.
    let arrived = Capture::start_with(
        &lab.a,
        "eth0",
        "(arp and arp[6:2] == 1 and arp[14:4] != arp[24:4]) or (ip6[6] == 58 and ip6[40] == 135)",
        &["-Q", "in"],
        lab.dir.path(),
    )?;
    let mut ann = Announce::start(&lab.a, lab.dir.path(), "a")?;
    let applied = ann.own(&format!("eth0={SVC4},{SVC6}"))?;
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    lab.client.run(&["ping", "-c", "1", "-W", "3", SVC4])?;
    lab.client
        .run(&["ping", "-6", "-c", "1", "-W", "3", SVC6])?;
    // Let the announcement timetable (0, 0.5, 1, 2 s) finish so the wire is quiet.
    std::thread::sleep(Duration::from_millis(2500));
    let before = ann.stats()?;

    let tool = example("lab_tool")?.display().to_string();
    let start = now();
    let rounds = 200;
    let out = lab.client.run(&[
        &tool,
        "blast",
        "eth0",
        SVC4,
        SVC6,
        &lab.mac_a,
        &rounds.to_string(),
    ])?;
    eprintln!("blast: {}", out.trim());
    // Valid questions for an owned address, but on eth1, which the announcer was not given.
    let rtt = lab
        .client
        .run(&[&tool, "arp-rtt", "eth1", "192.0.2.10", "3", SVC4])?;
    assert!(
        rtt.contains("n=0 lost=3"),
        "nobody may answer on eth1: {rtt}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let end = now();
    assert!(ann.running(), "the announcer survived: {}", ann.log());
    let after = ann.stats()?;
    let received = counter(&after, "received")? - counter(&before, "received")?;
    let ignored = counter(&after, "ignored")? - counter(&before, "ignored")?;
    let reached = arrived
        .frames()?
        .into_iter()
        .filter(|f| f.time >= start && f.time <= end)
        .count() as u64;
    eprintln!(
        "{reached} frames of the burst reached node-a's eth0 (the switch drops some invalid \
         IPv6); the announcer read {received} and ignored {ignored}"
    );
    assert!(reached >= rounds * 10, "the burst reached node-a");
    assert!(received >= reached, "every frame that arrived was read");
    assert_eq!(received, ignored, "every frame of the burst was ignored");
    assert_eq!(
        counter(&after, "answered")?,
        counter(&before, "answered")?,
        "nothing in the burst was answered"
    );
    assert_eq!(counter(&after, "receive_errors")?, 0);
    assert_eq!(counter(&after, "receive_drops")?, 0);
    let spoken: Vec<_> = cap
        .frames()?
        .into_iter()
        .filter(|f| f.src_mac == lab.mac_a && f.time >= start && f.time <= end)
        .filter(|f| f.line.contains(SVC4) || f.line.contains(SVC6))
        .collect();
    assert_eq!(spoken, vec![], "node-a said nothing about its addresses");

    // Still serving: fresh resolutions of both addresses get node-a's answer.
    lab.client.ip(&["neigh", "flush", "dev", "eth0"])?;
    lab.client.run(&["ping", "-c", "1", "-W", "3", SVC4])?;
    lab.client
        .run(&["ping", "-6", "-c", "1", "-W", "3", SVC6])?;
    assert_eq!(lab.client_neighbour(SVC4)?, Some(lab.mac_a.clone()));
    assert_eq!(lab.client_neighbour(SVC6)?, Some(lab.mac_a.clone()));
    let last = ann.stats()?;
    assert!(counter(&last, "answered")? >= counter(&after, "answered")? + 2);
    Ok(())
}
