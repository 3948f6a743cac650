//! Cloud load balancers for PoolServices of a cloud class (issue 15; today ENS ELB,
//! `loadBalancerClass: alibabacloud.com/elb`).
//!
//! Sources -> decide -> act, as everywhere: [`adapter`] turns the snapshot into one
//! `edgelb_cloud::plan::PlanInput` per wanted PoolService and plans it (pure); the
//! [`driver`] runs the provider's `ensure` / `delete` in a task of its own, only while this
//! speaker's Lease fence is open (the writer of record), with bounded concurrency and a
//! level-triggered resync, and publishes a [`CloudState`] of reports per (Service, pool)
//! that the PoolService status writer and the local view read.
//!
//! Credentials come from one Secret of the speaker's namespace (`--elb-credentials-secret`),
//! read from the snapshot's redacted Secret data; they never reach a log, an Event, the
//! view or the state published here.

pub mod adapter;
pub mod driver;
pub mod testing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edgelb_cloud::ens::client::ActionStats;

use crate::snapshot::ObjectKey;

/// How the speaker reaches the cloud; set by `--elb-*` flags. Holds no secret.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudConfig {
    /// The Secret (speaker's namespace) with `accessKeyID`/`accessKeySecret` (or
    /// `access-key-id`/`access-key-secret`).
    pub credentials_secret: String,
    /// `https://ens.aliyuncs.com` by default; `http://...` for the emulator.
    pub endpoint: String,
    /// The ENS node (region) of pools without `alibabacloud.com/ens-region-id`.
    pub region: Option<String>,
    /// The cluster's name in `k8s/<service>/<namespace>/<pool>/<cluster>`: unique per
    /// cluster sharing a cloud account (the sweep deletes names of this cluster only).
    pub cluster: String,
    /// Calls per second for the account (the client's token bucket).
    pub rate_per_sec: f64,
    /// Every load balancer is converged again this often (drift repair), and the sweep for
    /// leftovers runs this often.
    pub resync: Duration,
    /// `ensure`/`delete` in flight at most.
    pub concurrency: usize,
    /// Per-request timeout of the cloud client.
    pub timeout: Duration,
    /// Rounds of one `ensure` before it hands back (and is requeued).
    pub max_rounds: usize,
    /// Pause between rounds while the cloud is mid-transition.
    pub poll: Duration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            credentials_secret: "edgelb-elb-credentials".into(),
            endpoint: "https://ens.aliyuncs.com".into(),
            region: None,
            cluster: "edgelb".into(),
            rate_per_sec: 5.0,
            resync: Duration::from_secs(60),
            concurrency: 8,
            timeout: Duration::from_secs(10),
            max_rounds: 20,
            poll: Duration::from_millis(500),
        }
    }
}

/// One listener as last observed: `tcp/80 -> 30080 running`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerReport {
    pub protocol: String,
    pub port: u16,
    pub backend_port: u16,
    pub status: String,
    /// Its health check as the cloud reports it (read once it runs).
    pub health: Option<String>,
}

/// What the driver knows of one PoolService's cloud load balancer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudEntry {
    /// The PoolService.
    pub pool_service: ObjectKey,
    /// `k8s/<service>/<namespace>/<pool>/<cluster>`.
    pub name: String,
    /// The user's own load balancer (`...-loadbalancer-id`), not one we created.
    pub user_managed: bool,
    pub region: Option<String>,
    pub lb_id: Option<String>,
    pub lb_status: Option<String>,
    pub lb_address: Option<String>,
    pub eip: Option<String>,
    pub eip_id: Option<String>,
    pub listeners: Vec<ListenerReport>,
    /// Backend instance id -> weight, as observed.
    pub backends: BTreeMap<String, u32>,
    /// Nodes of the pool that are not backends, and why.
    pub skipped: Vec<String>,
    /// The address clients use (EIP, or the load balancer's own for `intranet`).
    pub ingress: Option<String>,
    /// The cloud matches the plan.
    pub converged: bool,
    /// Why the last round could not finish (the cloud mid-transition).
    pub waiting: Option<String>,
    /// The last error (a plan refusal naming the field, or the failed call), cleared by
    /// a round that converges.
    pub error: Option<String>,
    /// Calls the last `ensure` made (`CreateLoadBalancer k8s/...`, `AddBackends i-1`).
    pub last_actions: Vec<String>,
    /// Unix seconds of the last `ensure`/`delete` that finished.
    pub updated: u64,
}

/// A load balancer being deleted (its PoolService is gone, or a leftover the sweep found).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deleting {
    pub name: String,
    pub region: String,
    /// The PoolService it was for, when known.
    pub pool_service: Option<ObjectKey>,
    pub error: Option<String>,
}

/// What the driver publishes (a `watch`): per-(Service, pool) reports for the status
/// writer, deletions in progress for the PoolService finalizer, call statistics for
/// metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloudState {
    /// Whether this speaker drives the cloud now (holds the Lease and has credentials).
    pub active: bool,
    /// Why the driver cannot run (e.g. the credentials Secret is missing), naming the
    /// Secret and key, never a value.
    pub problem: Option<String>,
    /// By (Service, pool).
    pub entries: BTreeMap<(ObjectKey, Arc<str>), CloudEntry>,
    /// By resource name.
    pub deleting: BTreeMap<String, Deleting>,
    /// Per cloud action: requests, ok, failed, retried, latency.
    pub calls: BTreeMap<String, ActionStats>,
}

impl CloudState {
    /// Whether the PoolService's cloud resources are gone (or it never had any): what the
    /// PoolService finalizer waits for.
    pub fn released(&self, pool_service: &ObjectKey) -> bool {
        !self
            .entries
            .values()
            .any(|e| e.pool_service == *pool_service && (e.lb_id.is_some() || e.eip_id.is_some()))
            && !self
                .deleting
                .values()
                .any(|d| d.pool_service.as_ref() == Some(pool_service))
    }
}

impl CloudState {
    /// The local view's section (`edgelbctl elb`).
    pub fn view(&self) -> crate::local_api::view::CloudView {
        use crate::local_api::view::{CloudCallView, CloudLbView, CloudView};
        CloudView {
            active: self.active,
            problem: self.problem.clone(),
            load_balancers: self
                .entries
                .iter()
                .map(|((svc, pool), e)| CloudLbView {
                    service: svc.to_string(),
                    pool: pool.to_string(),
                    pool_service: e.pool_service.to_string(),
                    name: e.name.clone(),
                    user_managed: e.user_managed,
                    region: e.region.clone(),
                    load_balancer: e.lb_id.clone(),
                    status: e.lb_status.clone(),
                    address: e.lb_address.clone(),
                    eip: e.eip.clone(),
                    eip_id: e.eip_id.clone(),
                    listeners: e
                        .listeners
                        .iter()
                        .map(|l| {
                            let mut s = format!(
                                "{}/{} -> {} {}",
                                l.protocol, l.port, l.backend_port, l.status
                            );
                            if let Some(h) = &l.health {
                                s.push_str(&format!(" (health check {h})"));
                            }
                            s
                        })
                        .collect(),
                    backends: e
                        .backends
                        .iter()
                        .map(|(id, w)| format!("{id}:{w}"))
                        .collect(),
                    skipped: e.skipped.clone(),
                    ingress: e.ingress.clone(),
                    converged: e.converged,
                    waiting: e.waiting.clone(),
                    last_error: e.error.clone(),
                    last_actions: e.last_actions.clone(),
                    updated: e.updated,
                })
                .collect(),
            deleting: self
                .deleting
                .values()
                .map(|d| match &d.error {
                    Some(e) => format!("{} ({}): {e}", d.name, d.region),
                    None => format!("{} ({})", d.name, d.region),
                })
                .collect(),
            calls: self
                .calls
                .iter()
                .map(|(a, s)| CloudCallView {
                    action: a.clone(),
                    requests: s.requests,
                    ok: s.ok,
                    failed: s.failed,
                    retried: s.retried,
                    latency_ms: u64::try_from(s.total_latency.as_millis()).unwrap_or(u64::MAX),
                })
                .collect(),
        }
    }
}
