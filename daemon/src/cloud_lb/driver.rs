//! The cloud driver: a task of its own that, while this speaker's Lease fence is open,
//! converges every wanted PoolService's cloud load balancer (`ensure`) and removes what we
//! created for the ones that went (`delete`), and publishes what it saw.
//!
//! - **Writer of record only.** Nothing starts while the fence is closed; when it closes,
//!   every call in flight is dropped (the next leader observes and converges by name).
//! - **Never in the way.** The Lease renewal and the status writers run in other tasks;
//!   the driver only reads snapshots from a `watch` and publishes a `watch`.
//! - **Bounded.** At most [`CloudConfig::concurrency`] `ensure`/`delete`/sweep jobs at once;
//!   the client's token bucket holds the account's call rate.
//! - **Level-triggered.** A PoolService is converged again when its plan changes, after an
//!   error (exponential backoff up to the resync period), while the cloud is mid-transition,
//!   and every resync period (drift: a listener or backend removed in the console comes
//!   back). A sweep per region every resync period deletes load balancers and EIPs with this
//!   cluster's names that no PoolService wants (a crash, a PoolService deleted while no
//!   speaker led).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edgelb_cloud::ens::{ClientConfig, Credentials, EnsClient, EnsProvider, RetryPolicy};
use edgelb_cloud::model::{Action, Desired, Observed, Ownership, Target};
use edgelb_cloud::plan::PlanError;
use edgelb_cloud::provider::{ConvergeError, ConvergeOptions, LoadBalancerProvider, Report};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::adapter::{is_our_name, work, Planned, Work};
use super::{CloudConfig, CloudEntry, CloudState, Deleting, ListenerReport};
use crate::api::openyurt::PoolService;
use crate::snapshot::{ObjectKey, SecretData, Snapshot};
use crate::status::events::{post_about, Note};
use crate::status::leader::Fence;
use crate::status::pass_through::{decide, requested, Frontend};
use crate::status::pool_ingress::{CloudEntry as ReportEntry, CloudReports, CloudSender};
use crate::status::writer::MIN_WRITE;
use k8s_openapi::api::core::v1::LoadBalancerIngress;

/// First wait after a failed job; doubled per failure up to the resync period.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Wait before looking again at a load balancer the cloud is still building.
const IN_TRANSITION: Duration = Duration::from_millis(500);

/// A running cloud driver.
pub struct CloudDriver {
    tx: watch::Sender<Option<Snapshot>>,
    state: watch::Receiver<Arc<CloudState>>,
    task: tokio::task::JoinHandle<()>,
}

impl CloudDriver {
    /// Starts the task. `client` posts Events about PoolServices (none without it);
    /// nothing is done while `fence` is closed.
    pub fn spawn(
        client: Option<kube::Client>,
        node: &str,
        cfg: CloudConfig,
        fence: watch::Receiver<Fence>,
        write_timeout: Duration,
        reports: CloudSender,
    ) -> CloudDriver {
        let (tx, rx) = watch::channel(None);
        let (state_tx, state) = watch::channel(Arc::new(CloudState::default()));
        let d = Driver {
            client,
            node: node.to_string(),
            cfg,
            write_timeout,
            provider: None,
            mem: BTreeMap::new(),
            dels: BTreeMap::new(),
            running: BTreeSet::new(),
            ensuring: BTreeMap::new(),
            entries: BTreeMap::new(),
            next_sweep: None,
            work: None,
            problem: None,
            swept_regions: BTreeSet::new(),
            released: BTreeSet::new(),
            reports,
        };
        let task = tokio::spawn(d.run(fence, rx, state_tx));
        CloudDriver { tx, state, task }
    }

    /// Hands the task the latest snapshot; never waits.
    pub fn submit(&self, snap: Snapshot) {
        self.tx.send_replace(Some(snap));
    }

    /// What the driver knows, updated after every job.
    pub fn state(&self) -> watch::Receiver<Arc<CloudState>> {
        self.state.clone()
    }
}

impl Drop for CloudDriver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a job is for (one at a time per key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum JobKey {
    Ensure(ObjectKey),
    Delete(String),
    Sweep(String),
}

enum Done {
    Ensure {
        ps: ObjectKey,
        result: Result<Report, (String, Option<Report>)>,
    },
    Invalid {
        ps: ObjectKey,
    },
    Delete {
        name: String,
        result: Result<Report, String>,
    },
    Sweep {
        region: String,
        result: Result<BTreeSet<String>, String>,
    },
}

/// What is remembered of one wanted PoolService between rounds.
struct Memory {
    service: ObjectKey,
    pool: Arc<str>,
    /// The plan last acted on.
    outcome: Result<Desired, PlanError>,
    /// The PoolService carries the cloud finalizer (nothing is created before).
    finalized: bool,
    next_due: Instant,
    failures: u32,
    /// The last `ensure` of this plan converged: the next one is a drift check, which
    /// waits while others still converge (they share the account's call rate).
    converged: bool,
}

/// A deletion in progress.
struct DelMemory {
    target: Target,
    pool_service: Option<ObjectKey>,
    next_due: Instant,
    failures: u32,
    error: Option<String>,
}

struct Driver {
    client: Option<kube::Client>,
    node: String,
    cfg: CloudConfig,
    write_timeout: Duration,
    provider: Option<(Arc<SecretData>, EnsProvider)>,
    mem: BTreeMap<ObjectKey, Memory>,
    dels: BTreeMap<String, DelMemory>,
    running: BTreeSet<JobKey>,
    /// The resource name of each `ensure` in flight: no delete of that name starts until it
    /// finished (its next round would create again what the delete just released).
    ensuring: BTreeMap<ObjectKey, String>,
    entries: BTreeMap<ObjectKey, CloudEntry>,
    next_sweep: Option<Instant>,
    /// The work of the last snapshot planned (recomputed only for a new snapshot).
    work: Option<(Snapshot, Work)>,
    problem: Option<String>,
    swept_regions: BTreeSet<String>,
    /// PoolServices being deleted whose cloud resources are gone (their finalizer may go).
    released: BTreeSet<ObjectKey>,
    /// Where the PoolService status writer and the fan-out read the reports.
    reports: CloudSender,
}

fn backoff(failures: u32, cap: Duration) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << failures.min(16))
        .min(cap.max(BACKOFF_BASE))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `CreateListener tcp/80 -> 30080` and the like, for Events and the view (no ids of
/// accounts, no credentials: actions carry none).
pub fn describe(action: &Action) -> String {
    match action {
        Action::CreateLoadBalancer {
            name,
            network,
            spec,
        } => format!(
            "CreateLoadBalancer {name} ({spec}) in {} network {} vSwitch {}",
            network.region, network.network_id, network.vswitch_id
        ),
        Action::ReleaseLoadBalancer { lb_id } => format!("ReleaseLoadBalancer {lb_id}"),
        Action::CreateListener { key, spec, .. } => format!(
            "CreateListener {}/{} -> {} (health check {})",
            key.0, key.1, spec.backend_port, spec.health
        ),
        Action::SetListenerHealthCheck { key, spec, .. } => format!(
            "SetListenerHealthCheck {}/{}: {}",
            key.0, key.1, spec.health
        ),
        Action::StartListener { key, .. } => format!("StartListener {}/{}", key.0, key.1),
        Action::DeleteListener { key, .. } => format!("DeleteListener {}/{}", key.0, key.1),
        Action::AddBackends { backends, .. } => format!("AddBackends {}", pairs(backends)),
        Action::SetBackendWeights { backends, .. } => {
            format!("SetBackendWeights {}", pairs(backends))
        }
        Action::RemoveBackends { server_ids, .. } => {
            format!("RemoveBackends {}", server_ids.join(","))
        }
        Action::CreateEip {
            name, bandwidth, ..
        } => format!("CreateEip {name} ({bandwidth} Mbit/s)"),
        Action::AssociateEip {
            allocation_id,
            lb_id,
        } => format!("AssociateEip {allocation_id} -> {lb_id}"),
        Action::UnassociateEip { allocation_id } => format!("UnassociateEip {allocation_id}"),
        Action::ReleaseEip { allocation_id } => format!("ReleaseEip {allocation_id}"),
    }
}

/// Every call of one ensure/delete, for its Event: `CreateLoadBalancer ...; CreateEip ...`.
pub fn calls_text(actions: &[Action]) -> String {
    actions.iter().map(describe).collect::<Vec<_>>().join("; ")
}

fn pairs(b: &[(String, u32)]) -> String {
    b.iter()
        .map(|(id, w)| format!("{id}:{w}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The published entry from an observation.
fn fill(entry: &mut CloudEntry, obs: &Observed) {
    entry.lb_id = obs.lb.as_ref().map(|l| l.id.clone());
    entry.lb_status = obs.lb.as_ref().map(|l| format!("{:?}", l.status));
    entry.lb_address = obs.lb.as_ref().and_then(|l| l.address.clone());
    entry.eip = obs.eip.as_ref().map(|e| e.ip.clone());
    entry.eip_id = obs.eip.as_ref().map(|e| e.allocation_id.clone());
    entry.listeners = obs
        .listeners
        .iter()
        .map(|l| ListenerReport {
            protocol: l.protocol.to_string(),
            port: l.port,
            backend_port: l.backend_port,
            status: format!("{:?}", l.status),
            // The probed port is shown only when it is not the backend port.
            health: l.health.as_ref().map(|h| {
                let mut h = h.clone();
                h.connect_port = h.connect_port.filter(|p| *p != l.backend_port);
                h.to_string()
            }),
        })
        .collect();
    entry.backends = obs.backends.clone();
}

impl Driver {
    async fn run(
        mut self,
        mut fence: watch::Receiver<Fence>,
        mut rx: watch::Receiver<Option<Snapshot>>,
        state: watch::Sender<Arc<CloudState>>,
    ) {
        let mut jobs: JoinSet<Done> = JoinSet::new();
        let mut wake: Option<Instant> = None;
        let mut active = false;
        loop {
            tokio::select! {
                r = fence.changed() => if r.is_err() { return },
                r = rx.changed() => if r.is_err() { return },
                () = sleep_until(wake) => {}
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    if let Ok(done) = done {
                        self.finished(done);
                    }
                }
            }
            wake = None;
            let f = fence.borrow().clone();
            let now = Instant::now();
            if !f.leads(now) {
                if active {
                    // Drop every call in flight: the next leader converges by name.
                    jobs = JoinSet::new();
                    self.forget();
                    active = false;
                    self.publish(&state, false);
                }
                continue;
            }
            let Some(snap) = rx.borrow().clone() else {
                continue;
            };
            if !self.credentials(&snap) {
                self.publish(&state, false);
                continue;
            }
            active = true;
            self.plan(&snap, now);
            let started = self.start(&mut jobs, &fence, now);
            if started > 0 || !self.running.is_empty() {
                tracing::debug!(started, running = self.running.len(), "cloud jobs");
            }
            self.publish(&state, true);
            wake = self.next_wake();
        }
    }

    /// Forgets everything of a term (the fence closed).
    fn forget(&mut self) {
        self.mem.clear();
        self.dels.clear();
        self.running.clear();
        self.ensuring.clear();
        self.entries.clear();
        self.next_sweep = None;
        self.swept_regions.clear();
        self.released.clear();
    }

    /// Builds the provider from the credentials Secret; `false` (and a problem) without.
    fn credentials(&mut self, snap: &Snapshot) -> bool {
        let name = self.cfg.credentials_secret.as_str();
        let secret = format!("{}/{}", snap.selection.namespace, name);
        let Some(data) = snap.secrets.get(name) else {
            self.provider = None;
            self.set_problem(format!(
                "Secret {secret} (--elb-credentials-secret) not found: no cloud load balancer is created or deleted"
            ));
            return false;
        };
        if self
            .provider
            .as_ref()
            .is_some_and(|(d, _)| Arc::ptr_eq(d, data) || **d == **data)
        {
            return true;
        }
        let creds = match Credentials::from_secret_data(&secret, &data.data.0) {
            Ok(c) => c,
            Err(e) => {
                self.provider = None;
                self.set_problem(e.to_string());
                return false;
            }
        };
        let burst = self.cfg.rate_per_sec.ceil().max(1.0) as u32;
        let config = ClientConfig {
            endpoint: self.cfg.endpoint.clone(),
            timeout: self.cfg.timeout,
            retry: RetryPolicy::default(),
            rate_per_sec: self.cfg.rate_per_sec,
            burst,
            ..ClientConfig::default()
        };
        match EnsClient::new(config, creds) {
            Ok(c) => {
                tracing::info!(secret = %secret, endpoint = %self.cfg.endpoint, "cloud credentials read");
                self.provider = Some((data.clone(), EnsProvider::new(c)));
                self.problem = None;
                true
            }
            Err(e) => {
                self.provider = None;
                self.set_problem(format!("--elb-endpoint: {e}"));
                false
            }
        }
    }

    fn set_problem(&mut self, p: String) {
        if self.problem.as_ref() != Some(&p) {
            tracing::warn!("{p}");
            self.problem = Some(p);
        }
    }

    /// Compares the snapshot's wants with what is remembered: new and changed plans are
    /// due now, PoolServices that went start their deletion.
    fn plan(&mut self, snap: &Snapshot, now: Instant) {
        if !self.work.as_ref().is_some_and(|(s, _)| s.same_as(snap)) {
            self.work = Some((snap.clone(), work(snap, &self.cfg)));
        }
        let Some((_, w)) = &self.work else { return };
        let w = w.clone();
        for (ps, p) in &w.planned {
            let entry = self.entries.entry(ps.clone()).or_default();
            entry.pool_service = ps.clone();
            entry.name = p.name.clone();
            match &p.outcome {
                Ok(d) => {
                    entry.user_managed =
                        matches!(d.target.ownership, Ownership::UserManaged { .. });
                    entry.region = Some(d.network.region.clone());
                    entry.skipped = d
                        .skipped
                        .iter()
                        .map(|s| format!("{}: {}", s.node, s.reason))
                        .collect();
                }
                Err(e) => {
                    entry.error = Some(e.to_string());
                    entry.converged = false;
                }
            }
            // A PoolService back while its old load balancer is being deleted: the delete
            // finishes first (it is not cancelled mid-call), then the create.
            let managed = matches!(&p.outcome, Ok(d) if d.target.ownership == Ownership::Managed);
            if managed && self.dels.contains_key(&p.name) {
                if !self.running.contains(&JobKey::Delete(p.name.clone())) {
                    self.dels.remove(&p.name);
                } else {
                    continue;
                }
            }
            if let (Some(Ok(was)), Ok(now_d)) = (self.mem.get(ps).map(|m| &m.outcome), &p.outcome) {
                if was.target.ownership == Ownership::Managed
                    && now_d.target.ownership != Ownership::Managed
                {
                    // The PoolService now names a user's load balancer: ours goes.
                    let mut target = was.target.clone();
                    target.shared_with.clear();
                    self.dels.insert(
                        target.name.clone(),
                        DelMemory {
                            target,
                            pool_service: None,
                            next_due: now,
                            failures: 0,
                            error: None,
                        },
                    );
                }
            }
            match self.mem.get_mut(ps) {
                Some(m) if m.outcome == p.outcome => m.finalized = p.finalized,
                Some(m) => {
                    m.outcome = p.outcome.clone();
                    m.finalized = p.finalized;
                    m.next_due = now;
                    m.failures = 0;
                    m.converged = false;
                }
                None => {
                    self.mem.insert(
                        ps.clone(),
                        Memory {
                            service: p.service.clone(),
                            pool: p.pool.clone(),
                            outcome: p.outcome.clone(),
                            finalized: p.finalized,
                            next_due: now,
                            failures: 0,
                            converged: false,
                        },
                    );
                }
            }
        }
        // PoolServices being deleted: delete what we made, then release their finalizer.
        self.released.retain(|k| w.doomed.contains_key(k));
        for (ps, d) in &w.doomed {
            let remembered = self
                .mem
                .remove(ps)
                .and_then(|m| m.outcome.ok())
                .map(|d| d.target);
            self.entries.remove(ps);
            if self.released.contains(ps) || self.dels.contains_key(&d.name) {
                continue;
            }
            let Some(target) = remembered.or_else(|| d.target.clone()) else {
                continue;
            };
            self.dels.insert(
                target.name.clone(),
                DelMemory {
                    target,
                    pool_service: Some(ps.clone()),
                    next_due: now,
                    failures: 0,
                    error: None,
                },
            );
        }
        // PoolServices that went: delete what we made for them.
        let gone: Vec<ObjectKey> = self
            .mem
            .keys()
            .filter(|k| !w.planned.contains_key(*k) && !w.doomed.contains_key(*k))
            .cloned()
            .collect();
        for ps in gone {
            let Some(m) = self.mem.remove(&ps) else {
                continue;
            };
            self.entries.remove(&ps);
            if let Ok(d) = m.outcome {
                let mut target = d.target;
                // Sharing is re-read: a Service that went no longer holds the backends.
                target
                    .shared_with
                    .retain(|s| w.planned.values().any(|p| p.service.to_string() == *s));
                self.dels.insert(
                    target.name.clone(),
                    DelMemory {
                        target,
                        pool_service: Some(ps.clone()),
                        next_due: now,
                        failures: 0,
                        error: None,
                    },
                );
            }
        }
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.next_sweep = Some(now + self.cfg.resync);
            let mut regions = w.regions();
            regions.extend(self.cfg.region.clone());
            regions.extend(self.dels.values().map(|d| d.target.region.clone()));
            self.swept_regions = regions;
        }
    }

    /// Starts due jobs up to the concurrency limit; how many started.
    fn start(
        &mut self,
        jobs: &mut JoinSet<Done>,
        fence: &watch::Receiver<Fence>,
        now: Instant,
    ) -> usize {
        let Some((_, provider)) = &self.provider else {
            return 0;
        };
        let mut due: Vec<JobKey> = Vec::new();
        due.extend(self.swept_regions.iter().map(|r| JobKey::Sweep(r.clone())));
        due.extend(
            self.dels
                .iter()
                .filter(|(n, d)| now >= d.next_due && !self.ensuring.values().any(|e| e == *n))
                .map(|(n, _)| JobKey::Delete(n.clone())),
        );
        // Creates and repairs first, then drift checks (see `due_at`).
        let busy = self.busy();
        let (drift, urgent): (Vec<_>, Vec<_>) = self
            .mem
            .iter()
            .filter(|(_, m)| m.finalized && now >= self.due_at(m, busy))
            .partition(|(_, m)| m.converged);
        due.extend(
            urgent
                .into_iter()
                .chain(drift)
                .map(|(k, _)| JobKey::Ensure(k.clone())),
        );
        let mut started = 0;
        for key in due {
            if self.running.len() >= self.cfg.concurrency.max(1) {
                break;
            }
            if self.running.contains(&key) {
                continue;
            }
            let provider = provider.clone();
            let opts = ConvergeOptions {
                max_rounds: self.cfg.max_rounds,
                poll: self.cfg.poll,
            };
            let ev = EventCtx {
                client: self.client.clone(),
                node: self.node.clone(),
                fence: fence.clone(),
                write_timeout: self.write_timeout,
            };
            match &key {
                JobKey::Sweep(region) => {
                    self.swept_regions.remove(region);
                    let region = region.clone();
                    jobs.spawn(async move {
                        let result = provider
                            .names_in_region(&region)
                            .await
                            .map_err(|e| e.to_string());
                        Done::Sweep { region, result }
                    });
                }
                JobKey::Delete(name) => {
                    let Some(d) = self.dels.get(name) else {
                        continue;
                    };
                    let target = d.target.clone();
                    let ps = d.pool_service.clone();
                    let name = name.clone();
                    let regarding = self.regarding(ps.as_ref());
                    jobs.spawn(async move {
                        let result = provider.delete(&target, &opts).await;
                        let result = match result {
                            Ok(r) => {
                                if !r.actions.is_empty() {
                                    ev.post(
                                        regarding.as_ref(),
                                        "CloudLoadBalancerDeleted",
                                        "Normal",
                                        format!(
                                            "{}load balancer {name}: {}",
                                            subject(ps.as_ref()),
                                            calls_text(&r.actions)
                                        ),
                                    )
                                    .await;
                                }
                                Ok(r)
                            }
                            Err(e) => Err(ev
                                .post_failed(
                                    regarding.as_ref(),
                                    format!("{}{e}", subject(ps.as_ref())),
                                )
                                .await),
                        };
                        Done::Delete { name, result }
                    });
                }
                JobKey::Ensure(ps) => {
                    let regarding = self.regarding(Some(ps));
                    let Some(m) = self.mem.get_mut(ps) else {
                        continue;
                    };
                    let outcome = m.outcome.clone();
                    if let Ok(d) = &outcome {
                        self.ensuring.insert(ps.clone(), d.target.name.clone());
                    }
                    // Until it finishes: not due again.
                    m.next_due = now + self.cfg.resync;
                    let ps = ps.clone();
                    let first = m.failures == 0;
                    jobs.spawn(async move {
                        let desired = match outcome {
                            Ok(d) => d,
                            Err(e) => {
                                ev.post(
                                    regarding.as_ref(),
                                    "CloudLoadBalancerInvalid",
                                    "Warning",
                                    format!("PoolService {ps}: {e}"),
                                )
                                .await;
                                return Done::Invalid { ps };
                            }
                        };
                        if first && !desired.skipped.is_empty() {
                            let nodes: Vec<String> = desired
                                .skipped
                                .iter()
                                .map(|s| format!("node {}: {}", s.node, s.reason))
                                .collect();
                            ev.post(
                                regarding.as_ref(),
                                "CloudBackendSkipped",
                                "Warning",
                                format!(
                                    "PoolService {ps}: not a backend of {}: {}",
                                    desired.target.name,
                                    nodes.join("; ")
                                ),
                            )
                            .await;
                        }
                        let result = provider.ensure(&desired, &opts).await;
                        let result = match result {
                            Ok(r) => {
                                if !r.actions.is_empty() {
                                    ev.post(
                                        regarding.as_ref(),
                                        "CloudLoadBalancerSynced",
                                        "Normal",
                                        format!(
                                            "PoolService {ps}: load balancer {}: {}",
                                            desired.target.name,
                                            calls_text(&r.actions)
                                        ),
                                    )
                                    .await;
                                }
                                Ok(r)
                            }
                            Err(e) => {
                                let partial = match &e {
                                    ConvergeError::Execute { report, .. } => {
                                        Some((**report).clone())
                                    }
                                    ConvergeError::Observe { .. } => None,
                                };
                                let msg = ev
                                    .post_failed(
                                        regarding.as_ref(),
                                        format!("PoolService {ps}: {e}"),
                                    )
                                    .await;
                                Err((msg, partial))
                            }
                        };
                        Done::Ensure { ps, result }
                    });
                }
            }
            self.running.insert(key);
            started += 1;
        }
        started
    }

    /// The PoolService an Event is about, when the snapshot still has it.
    fn regarding(&self, ps: Option<&ObjectKey>) -> Option<ObjectReference> {
        let (snap, _) = self.work.as_ref()?;
        let obj: &Arc<PoolService> = snap.pool_services.get(ps?)?;
        Some(obj.object_ref(&()))
    }

    /// Records what a job did.
    fn finished(&mut self, done: Done) {
        let now = Instant::now();
        let resync = self.cfg.resync;
        match done {
            Done::Sweep { region, result } => {
                self.running.remove(&JobKey::Sweep(region.clone()));
                match result {
                    Ok(names) => {
                        let kept: BTreeSet<String> = self
                            .work
                            .as_ref()
                            .map(|(_, w)| w.kept_names().into_iter().map(String::from).collect())
                            .unwrap_or_default();
                        for name in names {
                            if is_our_name(&name, &self.cfg.cluster)
                                && !kept.contains(&name)
                                && !self.dels.contains_key(&name)
                            {
                                tracing::info!(name = %name, region = %region, "cloud leftover found by the sweep; deleting");
                                self.dels.insert(
                                    name.clone(),
                                    DelMemory {
                                        target: Target {
                                            name,
                                            region: region.clone(),
                                            ownership: Ownership::Managed,
                                            owned_backends: BTreeSet::new(),
                                            listener_keys: BTreeSet::new(),
                                            shared_with: Vec::new(),
                                        },
                                        pool_service: None,
                                        next_due: now,
                                        failures: 0,
                                        error: None,
                                    },
                                );
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(region = %region, error = %e, "cloud sweep failed; trying again at the next resync");
                    }
                }
            }
            Done::Delete { name, result } => {
                self.running.remove(&JobKey::Delete(name.clone()));
                let Some(d) = self.dels.get_mut(&name) else {
                    return;
                };
                match result {
                    Ok(r) if r.converged => {
                        tracing::info!(name = %name, calls = r.actions.len(), "cloud load balancer deleted");
                        if let Some(ps) = self.dels.remove(&name).and_then(|d| d.pool_service) {
                            self.released.insert(ps);
                        }
                    }
                    Ok(_) => d.next_due = now + IN_TRANSITION,
                    Err(e) => {
                        tracing::warn!(name = %name, error = %e, "cloud delete failed; trying again");
                        d.failures += 1;
                        d.next_due = now + backoff(d.failures, resync);
                        d.error = Some(e);
                    }
                }
            }
            Done::Invalid { ps } => {
                self.running.remove(&JobKey::Ensure(ps.clone()));
            }
            Done::Ensure { ps, result } => {
                self.running.remove(&JobKey::Ensure(ps.clone()));
                self.ensuring.remove(&ps);
                let (Some(m), Some(entry)) = (self.mem.get_mut(&ps), self.entries.get_mut(&ps))
                else {
                    return;
                };
                entry.updated = unix_now();
                match result {
                    Ok(r) => {
                        fill(entry, &r.observed);
                        entry.ingress = r.ingress.clone();
                        entry.converged = r.converged;
                        entry.waiting = r.waiting.clone();
                        entry.error = None;
                        if !r.actions.is_empty() {
                            entry.last_actions = r.actions.iter().map(describe).collect();
                        }
                        m.failures = 0;
                        m.converged = r.converged;
                        // A plan that changed meanwhile stays due now.
                        if m.next_due > now {
                            m.next_due = if r.converged {
                                now + resync
                            } else {
                                now + IN_TRANSITION
                            };
                        }
                        tracing::debug!(pool_service = %ps, converged = r.converged, calls = r.actions.len(), "cloud ensure");
                    }
                    Err((msg, partial)) => {
                        tracing::warn!(pool_service = %ps, error = %msg, "cloud ensure failed; trying again");
                        if let Some(r) = partial {
                            fill(entry, &r.observed);
                            entry.last_actions = r.actions.iter().map(describe).collect();
                        }
                        entry.converged = false;
                        entry.error = Some(msg);
                        m.failures += 1;
                        m.converged = false;
                        if m.next_due > now {
                            m.next_due = now + backoff(m.failures, resync);
                        }
                    }
                }
            }
        }
    }

    /// Some load balancer is being created, repaired or deleted.
    fn busy(&self) -> bool {
        !self.dels.is_empty()
            || self
                .mem
                .values()
                .any(|m| m.finalized && m.outcome.is_ok() && !m.converged && m.failures == 0)
    }

    /// When an ensure is due: a drift check of a converged load balancer waits while others
    /// still converge (they share the account's call rate), for at most one more resync
    /// period (one that never converges must not starve drift repair).
    fn due_at(&self, m: &Memory, busy: bool) -> Instant {
        if m.converged && busy {
            m.next_due + self.cfg.resync
        } else {
            m.next_due
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut at = self.next_sweep;
        let busy = self.busy();
        let mut consider = |t: Instant| {
            at = Some(at.map_or(t, |a| a.min(t)));
        };
        for m in self.mem.values().filter(|m| m.finalized) {
            consider(self.due_at(m, busy));
        }
        for d in self.dels.values() {
            consider(d.next_due);
        }
        at
    }

    fn publish(&self, state: &watch::Sender<Arc<CloudState>>, active: bool) {
        let entries = self
            .entries
            .iter()
            .filter_map(|(ps, e)| {
                let m = self.mem.get(ps)?;
                Some(((m.service.clone(), m.pool.clone()), e.clone()))
            })
            .collect();
        let deleting = self
            .dels
            .iter()
            .map(|(n, d)| {
                (
                    n.clone(),
                    Deleting {
                        name: n.clone(),
                        region: d.target.region.clone(),
                        pool_service: d.pool_service.clone(),
                        error: d.error.clone(),
                    },
                )
            })
            .collect();
        let calls = self
            .provider
            .as_ref()
            .map(|(_, p)| p.client().stats())
            .unwrap_or_default();
        let next = CloudState {
            active,
            problem: self.problem.clone(),
            entries,
            deleting,
            calls,
        };
        state.send_if_modified(|s| {
            if **s == next {
                false
            } else {
                *s = Arc::new(next);
                true
            }
        });
        let reports = if active {
            self.reports()
        } else {
            CloudReports::default()
        };
        self.reports.send_if_modified(|r| {
            if **r == reports {
                false
            } else {
                *r = Arc::new(reports);
                true
            }
        });
    }

    /// The per-(Service, pool) reports for the PoolService status and finalizer.
    fn reports(&self) -> CloudReports {
        let mut out = CloudReports {
            synced: true,
            entries: BTreeMap::new(),
        };
        let Some((snap, w)) = &self.work else {
            out.synced = false;
            return out;
        };
        for (ps, p) in &w.planned {
            let e = self.entries.get(ps);
            let svc = snap.services.get(&p.service);
            let mode = decide(
                Frontend::ProxyingLoadBalancer,
                svc.and_then(|s| requested(s)),
            )
            .mode;
            let ingress: Vec<LoadBalancerIngress> = e
                .and_then(|e| e.ingress.clone())
                .map(|ip| LoadBalancerIngress {
                    ip: Some(ip),
                    ip_mode: Some(mode.as_str().to_string()),
                    ..Default::default()
                })
                .into_iter()
                .collect();
            let (reason, message) = report_reason(p, e);
            out.entries.insert(
                (p.service.clone(), p.pool.clone()),
                ReportEntry {
                    ingress,
                    reason,
                    message,
                    holds_resources: true,
                },
            );
        }
        for (ps, d) in &w.doomed {
            let holds = !self.released.contains(ps);
            let error = self.dels.get(&d.name).and_then(|x| x.error.clone());
            out.entries.insert(
                (d.service.clone(), d.pool.clone()),
                ReportEntry {
                    ingress: Vec::new(),
                    reason: if holds { "Deleting" } else { "Deleted" }.into(),
                    message: match (&d.target, error) {
                        (None, _) => format!(
                            "Service {}, node pool {}: cannot delete the cloud load balancer {}: the pool is gone and it names no region (set --elb-region)",
                            d.service, d.pool, d.name
                        ),
                        (_, Some(e)) => format!(
                            "Service {}, node pool {}: deleting the cloud load balancer {}: {e}",
                            d.service, d.pool, d.name
                        ),
                        _ => format!(
                            "Service {}, node pool {}: cloud load balancer {} {}",
                            d.service,
                            d.pool,
                            d.name,
                            if holds { "being deleted" } else { "deleted" }
                        ),
                    },
                    holds_resources: holds,
                },
            );
        }
        out
    }
}

/// The condition's reason and message while a pool has no address (or its address).
fn report_reason(p: &Planned, e: Option<&CloudEntry>) -> (String, String) {
    let head = format!("Service {}, node pool {}", p.service, p.pool);
    if let Err(err) = &p.outcome {
        return ("InvalidConfiguration".into(), format!("{head}: {err}"));
    }
    if !p.finalized {
        return (
            "WaitingForFinalizer".into(),
            format!("{head}: the cloud load balancer {} is created once the PoolService carries its finalizer", p.name),
        );
    }
    match e {
        Some(e) if e.ingress.is_some() => (
            String::new(),
            format!(
                "{head}: cloud load balancer {} ({}){}",
                p.name,
                e.lb_id.as_deref().unwrap_or("?"),
                e.eip_id
                    .as_ref()
                    .map(|id| format!(", EIP {id}"))
                    .unwrap_or_default()
            ),
        ),
        Some(e) if e.error.as_deref().is_some_and(is_throttled) => (
            "CloudLoadBalancerThrottled".into(),
            format!("{head}: {}", e.error.clone().unwrap_or_default()),
        ),
        Some(e) if e.error.is_some() => (
            "CloudLoadBalancerFailed".into(),
            format!("{head}: {}", e.error.clone().unwrap_or_default()),
        ),
        Some(e) if e.waiting.is_some() || e.lb_id.is_some() => (
            "Provisioning".into(),
            format!(
                "{head}: cloud load balancer {}: {}",
                p.name,
                e.waiting.as_deref().unwrap_or("being created")
            ),
        ),
        _ => (String::new(), String::new()),
    }
}

/// The cloud refused a call for flow control (its codes `Throttling`, `Throttling.User`,
/// `Throttling.Api` name it) and the client's retries ran out.
fn is_throttled(error: &str) -> bool {
    error.contains("Throttling")
}

/// `PoolService ns/name: ` or nothing (a leftover the sweep found).
fn subject(ps: Option<&ObjectKey>) -> String {
    ps.map(|p| format!("PoolService {p}: ")).unwrap_or_default()
}

/// What a job needs to post an Event (only while the fence is open).
struct EventCtx {
    client: Option<kube::Client>,
    node: String,
    fence: watch::Receiver<Fence>,
    write_timeout: Duration,
}

impl EventCtx {
    async fn post(
        &self,
        regarding: Option<&ObjectReference>,
        reason: &'static str,
        type_: &'static str,
        note: String,
    ) {
        let (Some(client), Some(regarding)) = (&self.client, regarding) else {
            return;
        };
        let budget =
            self.fence
                .borrow()
                .write_budget(Instant::now(), MIN_WRITE, self.write_timeout);
        let Some(budget) = budget else {
            return;
        };
        let note = Note {
            reason,
            type_,
            action: "CloudLoadBalancer",
            note,
        };
        if let Err(e) = post_about(client, &self.node, regarding, &note, false, budget).await {
            tracing::warn!(error = %e, reason, "cannot post the cloud Event");
        }
    }

    /// A `CloudLoadBalancerFailed` Warning (`CloudLoadBalancerThrottled` when the cloud
    /// refused for flow control); hands `msg` back for the report.
    async fn post_failed(&self, regarding: Option<&ObjectReference>, msg: String) -> String {
        let reason = if is_throttled(&msg) {
            "CloudLoadBalancerThrottled"
        } else {
            "CloudLoadBalancerFailed"
        };
        self.post(regarding, reason, "Warning", msg.clone()).await;
        msg
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
