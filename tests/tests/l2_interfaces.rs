//! Interfaces are watched: one that does not exist is an error for it alone and is served
//! when it appears; link down/up and a new MAC bring a fresh announcement.
mod l2_support;

use edgelb_tests::lab::{self, capture::Capture, wait_until};
use l2_support::*;
use std::time::Duration;

const LATE: &str = "198.51.100.100";

#[test]
fn a_missing_interface_is_an_error_for_it_alone_and_is_served_when_it_appears() -> anyhow::Result<()>
{
    if !lab::enabled("l2_interfaces") {
        return Ok(());
    }
    let lab = L2Lab::new("l2if")?;
    let mut ann = Announce::start(&lab.a, lab.dir.path(), "a")?;
    let applied = ann.own(&format!("eth0={SVC4} late0={LATE}"))?;
    assert_eq!(applied.errors.len(), 1, "{:?}", applied.errors);
    assert!(
        applied.errors[0].contains("\"late0\" does not exist"),
        "{:?}",
        applied.errors
    );
    // eth0 is served regardless.
    lab.client.run(&["ping", "-c", "1", "-W", "3", SVC4])?;
    assert_eq!(lab.client_neighbour(SVC4)?, Some(lab.mac_a.clone()));

    // late0 appears (a veth to the client, down on node-a's side at first).
    lab.client.ip(&[
        "link",
        "add",
        "late0",
        "type",
        "veth",
        "peer",
        "name",
        "late0",
        "netns",
        lab.a.name(),
    ])?;
    lab.client.ip(&["link", "set", "late0", "up"])?;
    let cap = Capture::start(&lab.client, "late0", "arp", lab.dir.path())?;
    let mac_late = mac_of(&lab.a, "late0")?;
    let up_at = now();
    lab.a.ip(&["link", "set", "late0", "up"])?;
    let first = wait_until(
        "an announcement on the new interface",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            let f = cap.from_mac(&mac_late, &format!("{LATE} is-at"))?;
            Ok(f.first().map(|f| f.time))
        },
    )?;
    eprintln!(
        "late0 up -> first announcement {:.1} ms (bounded by the 100 ms link poll)",
        (first - up_at) * 1e3
    );
    let stats = ann.stats()?;
    assert_eq!(Announce::counter(&stats, "iface late0", "error")?, "-");
    // eth0 was never disturbed.
    assert_eq!(Announce::counter(&stats, "iface eth0", "error")?, "-");
    Ok(())
}

#[test]
fn link_down_up_and_a_new_mac_bring_a_fresh_announcement() -> anyhow::Result<()> {
    if !lab::enabled("l2_interfaces") {
        return Ok(());
    }
    let lab = L2Lab::new("l2lk")?;
    let cap = Capture::start(lab.lan.switch(), "br0", "arp", lab.dir.path())?;
    let mut ann = Announce::start(&lab.a, lab.dir.path(), "a")?;
    assert!(ann.own(&format!("eth0={SVC4}"))?.errors.is_empty());
    lab.client.run(&["ping", "-c", "1", "-W", "3", SVC4])?;
    // Let the first timetable finish (0, 0.5, 1, 2 s).
    std::thread::sleep(Duration::from_millis(2300));
    // Either form of gratuitous ARP: right after link up the switch port may still drop
    // the first frame (its carrier change is processed later), which is why the timetable
    // repeats.
    let garp = |line: &str| {
        line.contains(&format!("who-has {SVC4} tell {SVC4}"))
            || line.contains(&format!("Reply {SVC4} is-at"))
    };

    lab.a.ip(&["link", "set", "eth0", "down"])?;
    std::thread::sleep(Duration::from_millis(300));
    let up_at = now();
    lab.a.ip(&["link", "set", "eth0", "up"])?;
    let again = wait_until(
        "an announcement after link up",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            let f = cap.from_mac(&lab.mac_a, SVC4)?;
            Ok(f.iter()
                .filter(|f| garp(&f.line))
                .map(|f| f.time)
                .find(|t| *t >= up_at))
        },
    )?;
    eprintln!("link up -> announcement {:.1} ms", (again - up_at) * 1e3);

    let new_mac = "02:00:5e:00:53:0a";
    let changed_at = now();
    lab.a.ip(&["link", "set", "eth0", "address", new_mac])?;
    let moved = wait_until(
        "the client to learn the new MAC",
        Duration::from_secs(10),
        Duration::from_millis(5),
        || Ok((lab.client_neighbour(SVC4)?.as_deref() == Some(new_mac)).then(now)),
    )?;
    let first = wait_until(
        "the announcement with the new MAC in the capture",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || {
            let f = cap.from_mac(new_mac, SVC4)?;
            Ok(f.iter().find(|f| garp(&f.line)).map(|f| f.time))
        },
    )?;
    eprintln!(
        "new MAC -> first announcement {:.1} ms, client entry updated {:.1} ms (polled)",
        (first - changed_at) * 1e3,
        (moved - changed_at) * 1e3
    );
    Ok(())
}
