//! The writer of record's PoolService fan-out: a task of its own that, while this speaker's
//! Lease fence is open, carries out [`super::pool_services::plan`] for the latest snapshot:
//! creates and repairs PoolServices, deletes those of ours nothing wants, adds and removes
//! the Service finalizer, and reports problems as Warning Events on the Service.
//!
//! - **Only ours.** A create is a POST (a name taken meanwhile fails with 409 and is looked
//!   at again from the next snapshot, never overwritten); a repair is a server-side apply
//!   of a PoolService the snapshot showed as ours; a delete carries the UID it saw as a
//!   precondition.
//! - **Fenced and bounded.** Every request starts only with at least [`MIN_WRITE`] of the
//!   fence left and times out within what is left.
//! - **At rest, nothing.** A request that succeeded is not repeated for [`SETTLE`] while the
//!   snapshot catches up; a failed one is tried again after [`RETRY`].

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::Client;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::events::{post_about, Note};
use super::leader::Fence;
use super::pool_ingress::{CloudSource, CLOUD_FINALIZER};
use super::pool_services::{has_cloud_finalizer, plan_with, Plan};
use super::writer::MIN_WRITE;
use crate::api::openyurt::{PoolService, FINALIZER};
use crate::snapshot::{has_finalizer, ObjectKey, Snapshot};

/// The field manager of the finalizer on Services (its own, so that removing ours never
/// touches another manager's finalizers).
pub const FINALIZER_MANAGER: &str = "edgelb-pool-services";
/// The field manager of PoolService applies.
pub const FIELD_MANAGER: &str = "edgelb";
/// How long a request that succeeded is not repeated while the snapshot catches up.
pub const SETTLE: Duration = Duration::from_secs(5);
/// Wait before a failed request is tried again.
pub const RETRY: Duration = Duration::from_secs(1);
/// Requests in flight at most.
const CONCURRENCY: usize = 16;

/// One request of the fan-out, as remembered between rounds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Request {
    Create(ObjectKey),
    Repair(ObjectKey),
    Delete(ObjectKey),
    Finalizer(ObjectKey, bool),
    /// Remove [`CLOUD_FINALIZER`] from a PoolService being deleted.
    Release(ObjectKey),
}

/// Counts since start, for tests and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FanOutStats {
    /// PoolServices created.
    pub created: usize,
    /// PoolServices of ours repaired.
    pub repaired: usize,
    /// PoolServices of ours deleted.
    pub deleted: usize,
    /// Finalizers added or removed.
    pub finalizers: usize,
    /// Cloud finalizers released from PoolServices.
    pub released: usize,
    /// Warning Events posted.
    pub events: usize,
    /// Requests that failed (tried again).
    pub failed: usize,
    /// Plans made: one per change of what the plan reads (the snapshot, the cloud's
    /// reports, the term) and per retry, none for a Lease renewal.
    pub plans: usize,
}

/// A running fan-out writer.
pub struct PoolServiceWriter {
    tx: watch::Sender<Option<Snapshot>>,
    stats: watch::Receiver<FanOutStats>,
    task: tokio::task::JoinHandle<()>,
}

impl PoolServiceWriter {
    /// Starts the task; it writes only while `fence` permits.
    pub fn spawn(
        client: Client,
        node: &str,
        fence: watch::Receiver<Fence>,
        write_timeout: Duration,
        cloud: CloudSource,
    ) -> PoolServiceWriter {
        let (tx, rx) = watch::channel(None);
        let (stats_tx, stats) = watch::channel(FanOutStats::default());
        let task = tokio::spawn(run(
            client,
            node.to_string(),
            fence,
            write_timeout,
            rx,
            cloud,
            stats_tx,
        ));
        PoolServiceWriter { tx, stats, task }
    }

    /// Hands the task the latest snapshot; never waits.
    pub fn submit(&self, snap: Snapshot) {
        self.tx.send_replace(Some(snap));
    }

    /// The counts so far.
    pub fn stats(&self) -> FanOutStats {
        self.stats.borrow().clone()
    }
}

impl Drop for PoolServiceWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one request did.
enum Outcome {
    Done(Request),
    /// The name is taken or the object changed: the next snapshot says what to do.
    Stale(Request),
    Failed(Request, String),
}

async fn run(
    client: Client,
    node: String,
    mut fence: watch::Receiver<Fence>,
    write_timeout: Duration,
    mut rx: watch::Receiver<Option<Snapshot>>,
    mut cloud: CloudSource,
    stats: watch::Sender<FanOutStats>,
) {
    let mut cloud_closed = false;
    let mut recent: HashMap<Request, Instant> = HashMap::new();
    let mut reported: BTreeSet<(ObjectKey, &'static str, String)> = BTreeSet::new();
    let mut epoch = None;
    let mut wake: Option<Instant> = None;
    loop {
        let renewed = tokio::select! {
            r = fence.changed() => if r.is_err() { return } else { true },
            r = rx.changed() => if r.is_err() { return } else { false },
            r = cloud.changed(), if !cloud_closed => { cloud_closed = r.is_err(); false }
            () = sleep_until(wake) => false,
        };
        let f = fence.borrow().clone();
        let now = Instant::now();
        if !f.leads(now) {
            recent.clear();
            reported.clear();
            epoch = None;
            wake = None;
            continue;
        }
        if renewed && epoch == Some(f.epoch) {
            // A renewal in the same term (a later deadline, a contact): nothing the plan
            // reads changed, and a pass over every Service at each renewal is work at
            // rest that grows with the cluster. A retry or settle timer stays set.
            continue;
        }
        wake = None;
        if epoch != Some(f.epoch) {
            // A new term reports afresh (Events are named after what they say, so a
            // report another leader made is not posted twice).
            recent.clear();
            reported.clear();
            epoch = Some(f.epoch);
        }
        let Some(snap) = rx.borrow().clone() else {
            continue;
        };
        recent.retain(|req, at| now.duration_since(*at) < SETTLE && !reflected(req, &snap));
        let reports = cloud.borrow_and_update().clone();
        let p = plan_with(&snap, &reports);
        let (todo, events) = requests(&p, &recent, &reported);
        let mut st = stats.borrow().clone();
        st.plans += 1;
        let mut failed = false;
        let results: Vec<Outcome> = futures::stream::iter(todo)
            .map(|(req, action)| {
                let client = client.clone();
                let f = f.clone();
                async move {
                    let Some(budget) = f.write_budget(Instant::now(), MIN_WRITE, write_timeout)
                    else {
                        return Outcome::Failed(req, "the fence is closing".into());
                    };
                    carry_out(&client, req, action, budget).await
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for r in results {
            match r {
                Outcome::Done(req) => {
                    match &req {
                        Request::Create(k) => {
                            st.created += 1;
                            tracing::info!(pool_service = %k, "PoolService created");
                        }
                        Request::Repair(k) => {
                            st.repaired += 1;
                            tracing::info!(pool_service = %k, "PoolService repaired");
                        }
                        Request::Delete(k) => {
                            st.deleted += 1;
                            tracing::info!(pool_service = %k, "PoolService deleted");
                        }
                        Request::Finalizer(k, add) => {
                            st.finalizers += 1;
                            tracing::info!(service = %k, add, "Service finalizer {FINALIZER}");
                        }
                        Request::Release(k) => {
                            st.released += 1;
                            tracing::info!(pool_service = %k, "cloud resources released: {CLOUD_FINALIZER} removed");
                        }
                    }
                    recent.insert(req, Instant::now());
                }
                Outcome::Stale(req) => {
                    recent.insert(req, Instant::now());
                }
                Outcome::Failed(req, e) => {
                    tracing::warn!(request = ?req, error = %e, "PoolService fan-out request failed; trying again");
                    st.failed += 1;
                    failed = true;
                }
            }
        }
        for problem in events {
            let Some(svc) = snap.services.get(&problem.0) else {
                continue;
            };
            let Some(budget) = f.write_budget(Instant::now(), MIN_WRITE, write_timeout) else {
                failed = true;
                break;
            };
            let note = Note {
                reason: problem.1,
                type_: "Warning",
                action: "FanOut",
                note: problem.2.clone(),
            };
            tracing::warn!(service = %problem.0, reason = problem.1, "{}", problem.2);
            match post_about(&client, &node, &svc.object_ref(), &note, false, budget).await {
                Ok(_) => {
                    st.events += 1;
                    reported.insert(problem);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot post the fan-out Event; trying again");
                    failed = true;
                }
            }
        }
        // Problems that are gone may be reported again if they come back.
        let live: BTreeSet<_> = p
            .problems
            .iter()
            .map(|x| (x.service.clone(), x.reason, x.message.clone()))
            .collect();
        reported.retain(|r| live.contains(r));
        stats.send_replace(st);
        let pending = !recent.is_empty();
        if failed {
            wake = Some(Instant::now() + RETRY);
        } else if pending {
            // Look again once what was done should show in the snapshot.
            wake = Some(Instant::now() + SETTLE);
        }
    }
}

/// Whether the snapshot shows what a request did (then it need not be held back).
fn reflected(req: &Request, snap: &Snapshot) -> bool {
    match req {
        Request::Create(k) | Request::Repair(k) => snap.pool_services.contains_key(k),
        Request::Delete(k) => !snap.pool_services.contains_key(k),
        Request::Finalizer(k, add) => snap
            .services
            .get(k)
            .or_else(|| snap.finalized_elsewhere.get(k))
            .is_none_or(|s| has_finalizer(s) == *add),
        Request::Release(k) => snap
            .pool_services
            .get(k)
            .is_none_or(|ps| !has_cloud_finalizer(ps)),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One request with what it sends.
enum Action {
    Create(Box<PoolService>),
    Repair(Box<PoolService>),
    Delete(String),
    Finalizer(bool),
    Release(String),
}

/// The requests of a plan not done recently, and the problems not reported yet.
#[allow(clippy::type_complexity)]
fn requests(
    p: &Plan,
    recent: &HashMap<Request, Instant>,
    reported: &BTreeSet<(ObjectKey, &'static str, String)>,
) -> (
    Vec<(Request, Action)>,
    Vec<(ObjectKey, &'static str, String)>,
) {
    let mut out = Vec::new();
    for a in &p.apply {
        let key = ObjectKey::of(&a.object);
        let (req, action) = match &a.existing {
            None => (
                Request::Create(key),
                Action::Create(Box::new(a.object.clone())),
            ),
            Some(_) => (
                Request::Repair(key),
                Action::Repair(Box::new(a.object.clone())),
            ),
        };
        out.push((req, action));
    }
    for (k, uid) in &p.delete {
        out.push((Request::Delete(k.clone()), Action::Delete(uid.clone())));
    }
    for k in &p.add_finalizer {
        out.push((Request::Finalizer(k.clone(), true), Action::Finalizer(true)));
    }
    for (k, uid) in &p.release {
        out.push((Request::Release(k.clone()), Action::Release(uid.clone())));
    }
    for k in &p.remove_finalizer {
        out.push((
            Request::Finalizer(k.clone(), false),
            Action::Finalizer(false),
        ));
    }
    out.retain(|(r, _)| !recent.contains_key(r));
    let events = p
        .problems
        .iter()
        .map(|x| (x.service.clone(), x.reason, x.message.clone()))
        .filter(|x| !reported.contains(x))
        .collect();
    (out, events)
}

async fn carry_out(client: &Client, req: Request, action: Action, budget: Duration) -> Outcome {
    let key = match &req {
        Request::Create(k)
        | Request::Repair(k)
        | Request::Delete(k)
        | Request::Finalizer(k, _)
        | Request::Release(k) => k.clone(),
    };
    let ps: Api<PoolService> = Api::namespaced(client.clone(), &key.namespace);
    let result = match action {
        Action::Create(o) => tokio::time::timeout(budget, ps.create(&PostParams::default(), &o))
            .await
            .map(|r| r.map(|_| ())),
        Action::Repair(o) => {
            let mut body = serde_json::to_value(&*o).unwrap_or_default();
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
            let params = PatchParams::apply(FIELD_MANAGER).force();
            tokio::time::timeout(budget, ps.patch(&key.name, &params, &Patch::Apply(&body)))
                .await
                .map(|r| r.map(|_| ()))
        }
        Action::Delete(uid) => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            tokio::time::timeout(budget, ps.delete(&key.name, &dp))
                .await
                .map(|r| r.map(|_| ()))
        }
        Action::Release(uid) => {
            // A merge patch of the list without ours, on the version just read: if anyone
            // changed the object meanwhile it fails with 409 and the next snapshot decides.
            let current = match tokio::time::timeout(budget, ps.get_opt(&key.name)).await {
                Ok(Ok(Some(o))) if o.metadata.uid.as_deref() == Some(uid.as_str()) => o,
                Ok(Ok(_)) => return Outcome::Stale(req),
                Ok(Err(e)) => return Outcome::Failed(req, e.to_string()),
                Err(_) => return Outcome::Failed(req, "timed out".into()),
            };
            if !has_cloud_finalizer(&current) {
                return Outcome::Done(req);
            }
            let rest: Vec<&String> = current
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != CLOUD_FINALIZER)
                .collect();
            let body = json!({ "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "finalizers": rest,
            }});
            tokio::time::timeout(
                budget,
                ps.patch(&key.name, &PatchParams::default(), &Patch::Merge(&body)),
            )
            .await
            .map(|r| r.map(|_| ()))
        }
        Action::Finalizer(add) => {
            let svcs: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
            let finalizers: Vec<&str> = if add { vec![FINALIZER] } else { vec![] };
            let body = json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": &*key.name, "namespace": &*key.namespace, "finalizers": finalizers },
            });
            let params = PatchParams::apply(FINALIZER_MANAGER).force();
            tokio::time::timeout(budget, svcs.patch(&key.name, &params, &Patch::Apply(&body)))
                .await
                .map(|r| r.map(|_| ()))
        }
    };
    match result {
        Ok(Ok(())) => Outcome::Done(req),
        // Taken meanwhile (409), gone (404), or not the object we saw (a UID precondition
        // fails with 409): the next snapshot decides.
        Ok(Err(kube::Error::Api(s))) if s.code == 409 || s.code == 404 => Outcome::Stale(req),
        Ok(Err(e)) => Outcome::Failed(req, e.to_string()),
        Err(_) => Outcome::Failed(req, "timed out".into()),
    }
}

#[cfg(test)]
#[path = "pool_service_writer_tests.rs"]
mod tests;
