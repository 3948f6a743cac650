//! N Services × M node pools created at once against the emulator: time until every load
//! balancer is Active with listeners, backends and a bound EIP (the ingress known), and
//! cloud calls per (Service, pool). `N`, `M`, `RATE` (client calls/s for the account),
//! `PAGE` (Describe page size) from the environment; defaults 20, 3, 50, 50.
//!
//! The emulator answers in microseconds and creates in 200 ms; the real ENS takes longer per
//! create and allows 5-10 calls/s per user for most ELB actions, so `RATE=5` is the figure
//! closest to production.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use edgelb_cloud::provider::{ConvergeOptions, LoadBalancerProvider};
use support::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (n, m, rate, page) = (env("N", 20), env("M", 3), env("RATE", 50), env("PAGE", 50));
    let emu = Emulator::start(&[]);
    emu.register(&[
        ("i-b1", "10.0.1.2"),
        ("i-b2", "10.0.1.3"),
        ("i-b3", "10.0.1.4"),
    ]);
    let client = emu.client_with(|c| {
        c.rate_per_sec = rate as f64;
        c.burst = rate.min(50) as u32;
        c.page_size = page as u32;
        c.retry.max = Duration::from_secs(2);
        c.retry.max_attempts = 12;
    });
    let p = edgelb_cloud::ens::EnsProvider::new(client);
    let mut desired = Vec::new();
    for s in 0..n {
        for pool in 0..m {
            let mut i = input(
                &format!("svc{s}"),
                &[("a", "i-b1"), ("b", "i-b2"), ("c", "i-b3")],
            );
            i.pool = format!("np{pool}");
            i.pool_annotations.insert(
                "alibabacloud.com/ens-region-id".into(),
                format!("cn-region-{pool}"),
            );
            desired.push(desired_of(&i));
        }
    }
    let opts = ConvergeOptions {
        max_rounds: 200,
        poll: Duration::from_millis(100),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let times: Vec<Duration> = rt.block_on(async {
        let runs = desired.iter().map(|d| {
            let (p, opts) = (&p, &opts);
            async move {
                let r = p.ensure(d, opts).await.unwrap();
                assert!(r.converged && r.ingress.is_some(), "{r:?}");
                started.elapsed()
            }
        });
        futures::future::join_all(runs).await
    });
    let total = started.elapsed();
    let mut sorted = times.clone();
    sorted.sort();
    let pct = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    let stats = p.client().stats();
    let calls: u64 = stats.values().map(|s| s.requests).sum();
    let writes: u64 = stats
        .iter()
        .filter(|(a, _)| !a.starts_with("Describe"))
        .map(|(_, s)| s.ok)
        .sum();
    let pairs = (n * m) as f64;
    println!(
        "converge: {n} Services x {m} pools = {} load balancers, client {rate} calls/s, page {page}: \
         all active with ingress in {total:.2?} (p50 {:.2?}, p99 {:.2?}); {calls} calls = {:.1} per \
         (Service, pool), of which {:.1} writes",
        n * m,
        pct(0.5),
        pct(0.99),
        calls as f64 / pairs,
        writes as f64 / pairs,
    );
    let inv = emu.inventory();
    assert_eq!(count(&inv, "LoadBalancers") as u64, n * m);
}

fn desired_of(i: &edgelb_cloud::plan::PlanInput) -> edgelb_cloud::model::Desired {
    desired(i)
}
