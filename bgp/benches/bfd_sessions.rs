//! CPU cost of BFD: two BFD runtimes on loopback (distinct ports) run SESSIONS sessions
//! to each other, and the process's CPU time (`getrusage(RUSAGE_SELF)`: user + system) is
//! measured over SECONDS while every session stays Up: first at 300 ms (MetalLB's default,
//! the baseline), then, changed in place through a Poll Sequence, at 50 ms both ways
//! (multiplier 3). The idle runtimes are measured first as well. Both sides are in this
//! process, so one speaker's cost is half the figure.
//!
//! `cargo bench -p edgelb-bgp --bench bfd_sessions` (env `BFD_BENCH_SESSIONS`, default 100;
//! `BFD_BENCH_SECONDS`, default 10). Prints the load average: compare within one run.
#[path = "../tests/support/bfd.rs"]
mod bfd_support;

use bfd_support::{params, runtime};
use edgelb_bgp::bfd::{Bfd, BfdStatus, SessionKey, State};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) of this process so far.
fn cpu() -> Duration {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer, which is valid and zeroed.
    #[allow(unsafe_code)]
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU used over `d`.
async fn measure(d: Duration) -> Duration {
    let before = cpu();
    tokio::time::sleep(d).await;
    cpu().saturating_sub(before)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env("BFD_BENCH_SESSIONS", 100) as u8;
    let secs = Duration::from_secs(env("BFD_BENCH_SECONDS", 10));
    let (a, pa) = runtime(false);
    let (b, pb) = runtime(false);
    println!("bfd_sessions: load average {} at start", load());
    let idle = measure(secs).await;

    let slow = run(&a, &b, pa, pb, n, 300, secs).await;
    let fast = run(&a, &b, pa, pb, n, 50, secs).await;
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / secs.as_secs_f64();
    println!(
        "bfd_sessions: idle runtimes {idle:?} CPU in {secs:?} = {:.3} % of one core",
        pct(idle)
    );
    for (ms, (cpu, packets, failures)) in [(300, slow), (50, fast)] {
        println!(
            "bfd_sessions: {n} sessions x 2 sides at 3 x {ms} ms: {cpu:?} CPU in {secs:?} = {:.2} % of one core ({:.2} % per speaker), {:.1} us per packet sent and received (~{packets:.0} packets each way), {failures} failures",
            pct(cpu),
            pct(cpu) / 2.0,
            cpu.saturating_sub(idle).as_secs_f64() * 1e6 / packets,
        );
    }
    println!(
        "bfd_sessions: 50 ms costs {:.1}x the 300 ms baseline (6x the packets); load average {}",
        fast.0.as_secs_f64() / slow.0.as_secs_f64().max(1e-9),
        load()
    );
}

/// Sets every session to `ms` (new sessions, or a Poll Sequence for running ones), waits
/// until all agree on it, and measures: (CPU, packets sent by both sides, failures).
async fn run(
    a: &Bfd,
    b: &Bfd,
    pa: u16,
    pb: u16,
    n: u8,
    ms: u64,
    secs: Duration,
) -> (Duration, f64, u64) {
    let mut regs = Vec::new();
    let mut status: Vec<watch::Receiver<BfdStatus>> = Vec::new();
    for i in 1..=n {
        let ia = IpAddr::V4(Ipv4Addr::new(127, 1, 0, i));
        let ib = IpAddr::V4(Ipv4Addr::new(127, 2, 0, i));
        let key_a = SessionKey {
            peer: ib,
            multihop: false,
        };
        let key_b = SessionKey {
            peer: ia,
            multihop: false,
        };
        let (ra, sa) = a.register(key_a, params(ia, pb, ms));
        let (rb, sb) = b.register(key_b, params(ib, pa, ms));
        regs.push((ra, rb));
        status.push(sa);
        status.push(sb);
    }
    let started = Instant::now();
    let detect = Some(Duration::from_millis(3 * ms));
    for s in &mut status {
        let up = tokio::time::timeout(
            Duration::from_secs(60),
            s.wait_for(|x| {
                x.state() == Some(State::Up) && x.session.and_then(|s| s.detection_time) == detect
            }),
        )
        .await
        .map(|r| r.is_ok());
        if up != Ok(true) {
            eprintln!(
                "bfd_sessions: a session did not come Up at {ms} ms: {:?}",
                *s.borrow()
            );
            std::process::exit(1);
        }
    }
    println!(
        "bfd_sessions: {n} sessions x 2 sides Up at 3 x {ms} ms after {:?}",
        started.elapsed()
    );
    let before: u64 = status.iter().map(|s| s.borrow().failures).sum();
    let cpu = measure(secs).await;
    let failures = status.iter().map(|s| s.borrow().failures).sum::<u64>() - before;
    // Sent by both sides at 87.5 % of the interval on average (jitter 0-25 %).
    let packets = 2.0 * f64::from(n) * secs.as_secs_f64() / (ms as f64 / 1000.0 * 0.875);
    // The registrations are leaked on purpose: the next run takes the same sessions over
    // (same keys), and dropping these would end them with AdminDown.
    std::mem::forget(regs);
    (cpu, packets, failures)
}
