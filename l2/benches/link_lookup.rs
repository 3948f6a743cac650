//! What one link poll costs, before (`getifaddrs`: a dump of every link with its
//! statistics and of every address) and now (one `RTM_GETLINK` for one name), with 3 and
//! then about 200 interfaces (veths) in the namespace. Prints figures, asserts nothing about time.
//!
//! Runs in a network namespace of its own (`unshare` of this process's only thread; it
//! goes away with the process, with every veth in it). Needs root.
//! `LINK_BENCH_COUNT` lookups per method and size (default 2000), in 5 interleaved rounds;
//! the median round is reported, as wall time and as this thread's CPU time (kernel work
//! included: the dump runs in the caller's system call), from `/proc/thread-self/schedstat`
//! (ns; wall time on a loaded machine is mostly waiting for a core). At rest the announcer
//! polls 10 times a second per interface: the line gives that as % of one core.
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
    for (n, m) in [(3, small), (interfaces, large)] {
        println!(
            "link_lookup: {n:>3} interfaces: getifaddrs {:>8.1} us CPU ({:>8.1} us wall)/lookup = {:>6.3} % of a core at 10/s; \
             RTM_GETLINK by name {:>5.1} us CPU ({:>5.1} us wall) = {:.3} %; ratio old/new CPU {:.1}, wall {:.1}",
            micros(m.old_cpu),
            micros(m.old_wall),
            micros(m.old_cpu) * 10.0 / 1e4,
            micros(m.new_cpu),
            micros(m.new_wall),
            micros(m.new_cpu) * 10.0 / 1e4,
            ratio(m.old_cpu, m.new_cpu),
            ratio(m.old_wall, m.new_wall),
        );
    }
    println!(
        "link_lookup: growth 3 -> {interfaces} interfaces, CPU per lookup: getifaddrs x{:.1}, RTM_GETLINK x{:.2}",
        ratio(large.old_cpu, small.old_cpu),
        ratio(large.new_cpu, small.new_cpu),
    );
    Ok(())
}

/// Median per-lookup times of the old and the new method.
#[derive(Clone, Copy)]
struct Figures {
    old_wall: Duration,
    old_cpu: Duration,
    new_wall: Duration,
    new_cpu: Duration,
}

fn measure(count: usize) -> anyhow::Result<Figures> {
    let per_round = u32::try_from(count / ROUNDS)?;
    let mut links = Links::new();
    let want = links.lookup(NAME)?.context("v0 is there")?;
    let old = rounds(per_round, || {
        let found = nix::ifaddrs::getifaddrs()?.any(|a| {
            a.interface_name == NAME && a.address.is_some_and(|s| s.as_link_addr().is_some())
        });
        if !found {
            bail!("getifaddrs lost {NAME}");
        }
        Ok(())
    });
    let new = rounds(per_round, || {
        if links.lookup(NAME)?.map(|s| s.ifindex) != Some(want.ifindex) {
            bail!("the lookup lost {NAME}");
        }
        Ok(())
    });
    // Interleaved: round i of each method runs back to back, so load changes hit both.
    let (mut old, mut new) = (old, new);
    let (mut old_wall, mut old_cpu, mut new_wall, mut new_cpu) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let (wall, cpu) = old()?;
        old_wall.push(wall);
        old_cpu.push(cpu);
        let (wall, cpu) = new()?;
        new_wall.push(wall);
        new_cpu.push(cpu);
    }
    Ok(Figures {
        old_wall: median(old_wall),
        old_cpu: median(old_cpu),
        new_wall: median(new_wall),
        new_cpu: median(new_cpu),
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A round of `n` calls of `lookup`: (wall, CPU) per call.
fn rounds(
    n: u32,
    mut lookup: impl FnMut() -> anyhow::Result<()>,
) -> impl FnMut() -> anyhow::Result<(Duration, Duration)> {
    move || {
        let (wall, cpu) = (Instant::now(), thread_cpu()?);
        for _ in 0..n {
            lookup()?;
        }
        Ok((wall.elapsed() / n, thread_cpu()?.saturating_sub(cpu) / n))
    }
}

/// This thread's time on a CPU so far (first field of schedstat, ns). The kernel adds the
/// running slice to it when the thread is scheduled out; the yield makes it do so now.
fn thread_cpu() -> anyhow::Result<Duration> {
    std::thread::yield_now();
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    let ns = text
        .split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()
        .context("schedstat")?;
    Ok(Duration::from_nanos(ns))
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
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
