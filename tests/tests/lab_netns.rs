//! The lab itself works: namespaces talk over a LAN, and everything is removed afterwards.
use edgelb_tests::lab::{self, Lan, Netns};

#[test]
fn two_namespaces_on_a_lan_reach_each_other_and_are_removed_on_drop() -> anyhow::Result<()> {
    if !lab::enabled("lab_netns") {
        return Ok(());
    }
    let names;
    {
        let mut lan = Lan::new()?;
        let a = Netns::new("a")?;
        let b = Netns::new("b")?;
        lan.attach(&a, "eth0")?;
        lan.attach(&b, "eth0")?;
        a.addr("eth0", "192.0.2.1/24")?;
        b.addr("eth0", "192.0.2.2/24")?;
        a.run(&["ping", "-c", "1", "-W", "2", "192.0.2.2"])?;
        names = vec![
            a.name().to_string(),
            b.name().to_string(),
            lan.switch().name().to_string(),
        ];
    }
    let list = lab::netns::host(&["ip", "netns", "list"])?;
    for n in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str())),
            "{n} left behind"
        );
    }
    Ok(())
}

#[test]
fn a_spawned_process_is_killed_when_its_guard_drops() -> anyhow::Result<()> {
    if !lab::enabled("lab_netns") {
        return Ok(());
    }
    let ns = Netns::new("p")?;
    let pid = {
        let mut p = ns.spawn(&["sleep", "30"], None)?;
        assert!(p.running());
        p.pid().expect("pid of a fresh child")
    };
    // Reaped by the guard: /proc/<pid> is gone.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    Ok(())
}
