//! N Services × M ENS node pools created at once, through the daemon as deployed (the
//! speaker with the shipped token/RBAC and `--class=alibabacloud.com/elb`, a real API server,
//! the ENS emulator): time from the first create until every Service's status lists its M
//! EIPs (so every PoolService got its finalizer, its load balancer went Active with listener,
//! backends and a bound EIP, and the writer of record wrote the ingress), and cloud calls per
//! Service from the emulator's counters. Same-run baseline: the same N × M load balancers
//! ensured by the provider directly against a second emulator at the same client rate (no
//! API server, no finalizer gate, no status writes), so the ratio is the daemon's overhead.
//!
//! `N` (default 10) and `M` (default 2) from the environment; run by hand, needs the
//! control-plane binaries (`EDGELB_K8S_BIN=$(.ci/k8s bin)`) and network namespaces.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

use edgelb_cloud::provider::{ConvergeOptions, LoadBalancerProvider};
use edgelb_tests::kube::objects::then_clean;
use edgelb_tests::kube::{self as harness, Cluster};
use edgelb_tests::lab::{self, Lan, Netns};
use support::cluster::{self as cloud, REGION};
use support::Emulator;

const NAME: &str = "kube_cloud";
const NS: &str = "kc-bench";
const CREDENTIALS: &str = "kc-credentials";
const WAIT: Duration = Duration::from_secs(300);

fn node_ip(j: usize) -> String {
    format!("192.0.2.{}", 70 + j)
}

/// Total answered calls in the emulator's counters; writes apart.
fn calls(emu: &Emulator) -> (u64, u64) {
    let by_action = cloud::calls_by_action(emu);
    let all = by_action.values().sum();
    let writes = by_action
        .iter()
        .filter(|(a, _)| !a.starts_with("Describe"))
        .map(|(_, n)| n)
        .sum();
    (all, writes)
}

/// The baseline: N × M ensured directly, all at once, client at the daemon's rate (100/s).
async fn baseline(n: usize, m: usize) -> (Duration, u64, u64) {
    let emu = Emulator::start(&[]);
    let instances: Vec<(String, String)> =
        (0..m).map(|j| (format!("i-kc{j}"), node_ip(j))).collect();
    let refs: Vec<(&str, &str)> = instances
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    emu.register(&refs);
    let client = emu.client_with(|c| {
        c.rate_per_sec = 100.0;
        c.burst = 50;
        c.page_size = 50;
        c.retry.max = Duration::from_secs(2);
        c.retry.max_attempts = 12;
    });
    let p = edgelb_cloud::ens::EnsProvider::new(client);
    let mut desired = Vec::new();
    for s in 0..n {
        for (j, (instance, _)) in instances.iter().enumerate() {
            let mut i = support::input(&format!("s{s:03}"), &[(&format!("n{j}"), instance)]);
            i.ports.truncate(1);
            i.pool = format!("np-kc{j}");
            desired.push(support::desired(&i));
        }
    }
    let opts = ConvergeOptions {
        max_rounds: 400,
        poll: Duration::from_millis(100),
    };
    let t = Instant::now();
    futures::future::join_all(desired.iter().map(|d| {
        let (p, opts) = (&p, &opts);
        async move {
            let r = p.ensure(d, opts).await.unwrap();
            assert!(r.converged && r.ingress.is_some(), "{r:?}");
        }
    }))
    .await;
    let took = t.elapsed();
    let (all, writes) = calls(&emu);
    (took, all, writes)
}

async fn scenario(
    cluster: &Cluster,
    client: &Client,
    node: &Netns,
    emu: &Emulator,
    n: usize,
    m: usize,
) -> anyhow::Result<(Duration, u64, u64, usize)> {
    cloud::prepare(client, NS, CREDENTIALS).await?;
    for j in 0..m {
        let pool = format!("np-kc{j}");
        cloud::cloud_node(
            client,
            &format!("kc-node-{j}"),
            &node_ip(j),
            &pool,
            REGION,
            &format!("i-kc{j}"),
        )
        .await?;
        cloud::ens_pool(client, &pool, REGION, json!({"bench": "kc"})).await?;
    }
    let (speaker, _to_emu) = cloud::cloud_speaker(
        cluster,
        node,
        "kc-node-0",
        &node_ip(0),
        CREDENTIALS,
        "kc-cluster",
        emu.addr,
        100,
        &[],
    )
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let result = async {
        // Let the speaker lead and sync before the burst (the figure is the burst's).
        harness::eventually("the speaker leads", WAIT, || async {
            let leases: Api<Lease> = Api::namespaced(client.clone(), harness::SYSTEM_NAMESPACE);
            Ok(leases.get_opt(cloud::LEASE).await?.map(|_| ()))
        })
        .await?;
        let before = calls(emu).0;
        let t = Instant::now();
        let creates = (0..n).map(|s| {
            let services = &services;
            async move {
                let ports = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
                let svc =
                    cloud::cloud_service(NS, &format!("s{s:03}"), "bench=kc", json!({}), ports)?;
                services
                    .create(&PostParams::default(), &svc)
                    .await
                    .with_context(|| format!("Service s{s:03}"))?;
                anyhow::Ok(())
            }
        });
        for r in futures::future::join_all(creates).await {
            r?;
        }
        harness::eventually("every Service lists its M EIPs", WAIT, || async {
            let list = services.list(&Default::default()).await?;
            let done = list
                .items
                .iter()
                .filter(|s| {
                    s.status
                        .as_ref()
                        .and_then(|st| st.load_balancer.as_ref())
                        .and_then(|l| l.ingress.as_ref())
                        .is_some_and(|i| i.len() == m)
                })
                .count();
            Ok((done == n).then_some(()))
        })
        .await?;
        let took = t.elapsed();
        let inv = emu.inventory();
        let active = inv["LoadBalancers"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|l| l["LoadBalancerStatus"] == "Active")
                    .count()
            })
            .unwrap_or(0);
        let (all, writes) = calls(emu);
        eprintln!(
            "daemon's calls by action: {:?}",
            cloud::calls_by_action(emu)
        );
        anyhow::Ok((took, all - before, writes, active))
    }
    .await;
    speaker.log_if_failed(result)
}

async fn cleanup(client: &Client, m: usize) -> anyhow::Result<()> {
    let pools: Vec<String> = (0..m).map(|j| format!("np-kc{j}")).collect();
    let nodes: Vec<String> = (0..m).map(|j| format!("kc-node-{j}")).collect();
    let pools: Vec<&str> = pools.iter().map(String::as_str).collect();
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    cloud::cleanup(client, NS, CREDENTIALS, &pools, &nodes).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let (n, m): (usize, usize) = (harness::env_or("N", 10), harness::env_or("M", 2));
    let Some((cluster, client)) = harness::cluster_for(NAME).await? else {
        return Ok(());
    };
    let (base, base_calls, base_writes) = baseline(n, m).await;
    let mut lan = Lan::new()?;
    let node = lan.join("kcn", &format!("{}/24", node_ip(0)))?;
    let emu = Emulator::start(&[]);
    let instances: Vec<(String, String)> =
        (0..m).map(|j| (format!("i-kc{j}"), node_ip(j))).collect();
    let refs: Vec<(&str, &str)> = instances
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    emu.register(&refs);
    let mut out = None;
    then_clean(
        NAME,
        async {
            out = Some(scenario(cluster, &client, &node, &emu, n, m).await?);
            Ok(())
        },
        cleanup(&client, m),
    )
    .await?;
    let (took, all, writes, active) = out.context("no figures")?;
    let lbs = n * m;
    let per = |c: u64| c as f64 / n as f64;
    lab::figure(
        "kube_cloud",
        &format!(
            "kube_cloud: {n} Services x {m} ENS pools = {lbs} load balancers created at once through the speaker \
             as deployed: all {active} Active and every Service's {m} EIPs written in {took:.2?}; {all} cloud calls \
             = {:.1} per Service ({:.1} writes per Service). Baseline, same run, provider directly at the same rate: \
             {base:.2?}, {:.1} calls ({:.1} writes) per Service; daemon/baseline time {:.2}x (load {})",
            per(all),
            per(writes),
            per(base_calls),
            per(base_writes),
            took.as_secs_f64() / base.as_secs_f64(),
            lab::load(),
        ),
    );
    anyhow::ensure!(active == lbs, "{active} of {lbs} load balancers Active");
    Ok(())
}
