//! What one link poll costs, before (`getifaddrs`: a dump of every link with its
//! statistics and of every address) and now (one `RTM_GETLINK` for one name), with 3 and
//! then about 200 interfaces (veths) in the namespace. Prints figures, asserts nothing about time.
//!
//! Runs in a network namespace of its own (`unshare` of this process's only thread; it
//! goes away with the process, with every veth in it). Needs root.
//! `LINK_BENCH_COUNT` lookups per method and size (default 2000), in 5 interleaved rounds;
//! the median round is reported.
//!
//! ```text
//! cargo bench -p edgelb-l2 --bench link_lookup
//! LINK_BENCH_COUNT=200 cargo bench -p edgelb-l2 --bench link_lookup   # quick
//! ```
use anyhow::{bail, Context};
use edgelb_l2::link::Links;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const NAME: &str = "v0";

fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("LINK_BENCH_COUNT")
        .ok()
        .map(|c| c.parse().context("LINK_BENCH_COUNT"))
        .transpose()?
        .unwrap_or(2000)
        .max(ROUNDS);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("unshare(CLONE_NEWNET): the bench needs root")?;
    // lo + the polled veth and its peer: 3 interfaces, as in the lab.
    ip_batch(
        "link set lo up\nlink add v0 type veth peer name v0p\nlink set v0p up\nlink set v0 up\n",
    )?;
    let small = measure(count)?;
    // 99 more veth pairs (201 interfaces), like a node's pods' host ends.
    let mut batch = String::new();
    for i in 1..=99 {
        batch.push_str(&format!(
            "link add p{i} type veth peer name p{i}x\nlink set p{i} up\nlink set p{i}x up\n"
        ));
    }
    ip_batch(&batch)?;
    let interfaces = nix::net::if_::if_nameindex()?.iter().count();
    let large = measure(count)?;
    println!("link_lookup: {count} lookups of {NAME:?} per method, median of {ROUNDS} interleaved rounds");
    for (n, (old, new)) in [(3, small), (interfaces, large)] {
        println!(
            "link_lookup: {n:>3} interfaces: getifaddrs {:>8.1} us/lookup, RTM_GETLINK by name {:>6.1} us/lookup, ratio old/new {:>6.1}",
            micros(old),
            micros(new),
            old.as_secs_f64() / new.as_secs_f64()
        );
    }
    println!(
        "link_lookup: growth 3 -> {interfaces} interfaces: getifaddrs x{:.1}, RTM_GETLINK x{:.2}",
        large.0.as_secs_f64() / small.0.as_secs_f64(),
        large.1.as_secs_f64() / small.1.as_secs_f64()
    );
    Ok(())
}

/// Median per-lookup time of the old and the new method.
fn measure(count: usize) -> anyhow::Result<(Duration, Duration)> {
    let per_round = count / ROUNDS;
    let mut links = Links::new();
    let want = links.lookup(NAME)?.context("v0 is there")?;
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..per_round {
            let found = nix::ifaddrs::getifaddrs()?.any(|a| {
                a.interface_name == NAME && a.address.is_some_and(|s| s.as_link_addr().is_some())
            });
            if !found {
                bail!("getifaddrs lost {NAME}");
            }
        }
        old.push(start.elapsed() / per_round as u32);
        let start = Instant::now();
        for _ in 0..per_round {
            if links.lookup(NAME)?.map(|s| s.ifindex) != Some(want.ifindex) {
                bail!("the lookup lost {NAME}");
            }
        }
        new.push(start.elapsed() / per_round as u32);
    }
    old.sort();
    new.sort();
    Ok((old[ROUNDS / 2], new[ROUNDS / 2]))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs `ip -batch -` in this process's namespace.
fn ip_batch(commands: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip -batch")?;
    child
        .stdin
        .take()
        .context("ip stdin")?
        .write_all(commands.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("ip -batch: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
