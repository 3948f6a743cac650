//! The link lookup against real interfaces, in a network namespace of the test's own.
//!
//! Each test moves its thread into a new, empty network namespace (`unshare`), builds
//! veths, a tun and alternative names there (veth rather than dummy: the lab kernel has
//! no dummy driver; a veth whose peer is up has carrier like a dummy) with `ip` (started from that thread, so in that
//! namespace), and compares what [`Links::lookup`] says field by field with what
//! `getifaddrs(3)` says for the same interface: the call the lookup replaced, kept here as
//! the oracle. The namespace and everything in it go away when the test thread ends.
use anyhow::{bail, Context};
use edgelb_l2::link::{LinkState, Links};
use edgelb_l2::MacAddr;
use nix::net::if_::InterfaceFlags;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Moves this test's thread into a new network namespace with `lo` up.
fn isolate() -> anyhow::Result<()> {
    let ns = || std::fs::read_link("/proc/thread-self/ns/net");
    let before = ns().context("reading this thread's network namespace")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("unshare(CLONE_NEWNET): the test needs root (CAP_SYS_ADMIN)")?;
    if ns()? == before {
        bail!("unshare(CLONE_NEWNET) left the thread in {before:?}");
    }
    ip("link set lo up")
}

/// Runs `ip ARGS` in this thread's namespace.
fn ip(args: &str) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {args}"))?;
    if !out.status.success() {
        bail!("ip {args}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// What the lookup said before it asked for one link: `getifaddrs`, the first link entry
/// of that name.
fn oracle(name: &str) -> anyhow::Result<Option<LinkState>> {
    for a in nix::ifaddrs::getifaddrs()? {
        if a.interface_name != name {
            continue;
        }
        let Some(link) = a.address.as_ref().and_then(|s| s.as_link_addr()) else {
            continue;
        };
        let o = link.addr().unwrap_or([0; 6]);
        let up = a.flags.contains(InterfaceFlags::IFF_UP)
            && a.flags.contains(InterfaceFlags::IFF_LOWER_UP);
        return Ok(Some(LinkState {
            ifindex: u32::try_from(link.ifindex())?,
            mac: MacAddr::new(o[0], o[1], o[2], o[3], o[4], o[5]),
            up,
            running: up && a.flags.contains(InterfaceFlags::IFF_RUNNING),
        }));
    }
    Ok(None)
}

/// Looks `name` up once the kernel has settled (the oracle reads the same before and after
/// the lookup; `IFF_RUNNING` follows the carrier a moment later), and checks it against
/// the oracle field by field.
fn checked(links: &mut Links, name: &str) -> anyhow::Result<Option<LinkState>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let before = oracle(name)?;
        let got = links.lookup(name)?;
        let after = oracle(name)?;
        if before == after {
            match (&got, &after) {
                (Some(g), Some(o)) => {
                    assert_eq!(g.ifindex, o.ifindex, "{name}: ifindex");
                    assert_eq!(g.mac, o.mac, "{name}: mac");
                    assert_eq!(g.up, o.up, "{name}: up");
                    assert_eq!(g.running, o.running, "{name}: running");
                }
                _ => assert_eq!(got, after, "{name}: present"),
            }
            return Ok(got);
        }
        if Instant::now() > deadline {
            bail!("{name} did not settle within 5 s: {before:?} then {after:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the oracle sees `want` for `name` (bounded), then checks the lookup.
fn expect(
    links: &mut Links,
    name: &str,
    want: impl Fn(&Option<LinkState>) -> bool,
) -> anyhow::Result<Option<LinkState>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !want(&oracle(name)?) {
        if Instant::now() > deadline {
            bail!("{name}: the kernel did not reach the expected state within 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    checked(links, name)
}

#[test]
fn a_veth_reads_as_getifaddrs_reads_it_through_down_up_rename_and_delete() -> anyhow::Result<()> {
    isolate()?;
    let mut links = Links::new();
    ip("link add d0 address 02:00:00:00:17:01 type veth peer name d0peer")?;
    ip("link set d0peer up")?;
    let down = expect(&mut links, "d0", |s| s.is_some())?.context("d0 is there")?;
    assert_eq!(down.mac, MacAddr::new(2, 0, 0, 0, 0x17, 1));
    assert!(!down.up && !down.running);

    ip("link set d0 up")?;
    let up = expect(&mut links, "d0", |s| s.is_some_and(|s| s.running))?.context("d0 up")?;
    assert_eq!((up.ifindex, up.up), (down.ifindex, true));

    ip("link set d0 address 02:00:00:00:17:02")?;
    let moved = expect(&mut links, "d0", |s| {
        s.is_some_and(|s| s.mac == MacAddr::new(2, 0, 0, 0, 0x17, 2))
    })?;
    assert_eq!(moved.map(|s| s.ifindex), Some(down.ifindex));

    ip("link set d0 down")?;
    ip("link set d0 name d0renamed")?;
    assert_eq!(expect(&mut links, "d0", |s| s.is_none())?, None);
    let renamed = checked(&mut links, "d0renamed")?.context("d0renamed")?;
    assert_eq!(renamed.ifindex, down.ifindex);

    ip("link del d0renamed")?;
    assert_eq!(expect(&mut links, "d0renamed", |s| s.is_none())?, None);

    ip("link add d0 type veth peer name d0peer")?;
    let again = expect(&mut links, "d0", |s| s.is_some())?.context("d0 again")?;
    assert_ne!(
        again.ifindex, down.ifindex,
        "a new interface has a new index"
    );
    Ok(())
}

#[test]
fn a_veth_without_carrier_is_not_up_and_with_carrier_is() -> anyhow::Result<()> {
    isolate()?;
    let mut links = Links::new();
    ip("link add va type veth peer name vb")?;
    ip("link set va up")?;
    // vb down: va is administratively up without carrier (no IFF_LOWER_UP).
    let no_carrier = expect(&mut links, "va", |s| s.is_some())?.context("va")?;
    assert!(!no_carrier.up && !no_carrier.running, "{no_carrier:?}");

    ip("link set vb up")?;
    let carrier = expect(&mut links, "va", |s| s.is_some_and(|s| s.running))?.context("va")?;
    assert!(carrier.up);

    ip("link set vb down")?;
    let lost = expect(&mut links, "va", |s| s.is_some_and(|s| !s.up))?.context("va")?;
    assert!(!lost.running);

    ip("link del va")?;
    assert_eq!(expect(&mut links, "vb", |s| s.is_none())?, None);
    Ok(())
}

#[test]
fn names_that_are_not_an_interface_of_their_own_are_none() -> anyhow::Result<()> {
    isolate()?;
    let mut links = Links::new();
    assert_eq!(checked(&mut links, "neverexisted0")?, None);
    assert_eq!(checked(&mut links, "")?, None);
    assert_eq!(checked(&mut links, "sixteen-chars-xx")?, None);
    // The kernel also finds a link by an alternative name; getifaddrs never did.
    ip("link add d1 type veth peer name d1peer")?;
    ip("link property add dev d1 altname d1alt")?;
    assert!(checked(&mut links, "d1")?.is_some());
    assert_eq!(checked(&mut links, "d1alt")?, None);
    // A layer-3 tun has no link-layer address: getifaddrs listed no link entry for it.
    ip("tuntap add dev tun0 mode tun")?;
    ip("link set tun0 up")?;
    assert_eq!(checked(&mut links, "tun0")?, None);
    let lo = checked(&mut links, "lo")?.context("lo")?;
    assert_eq!((lo.ifindex, lo.mac), (1, MacAddr::zero()));
    Ok(())
}

#[test]
fn many_lookups_reuse_one_socket_and_agree_after_an_interface_comes_and_goes() -> anyhow::Result<()>
{
    isolate()?;
    let mut links = Links::new();
    for round in 0..3 {
        ip("link add d2 type veth peer name d2peer")?;
        ip("link set d2peer up")?;
        ip("link set d2 up")?;
        let s = expect(&mut links, "d2", |s| s.is_some_and(|s| s.running))?;
        assert!(s.is_some(), "round {round}");
        for _ in 0..200 {
            assert_eq!(links.lookup("d2")?, s);
        }
        ip("link del d2")?;
        assert_eq!(expect(&mut links, "d2", |s| s.is_none())?, None);
    }
    Ok(())
}
