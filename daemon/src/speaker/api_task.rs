//! Cluster mode's side of the API server, apart from the failover path: the Lease rounds,
//! the status, condition, Event and `PolicyRoute` writes, and the witness probe run in
//! tasks of their own. The cluster loop hands them its latest results through a mailbox
//! that never blocks (newer results replace older ones; allocation changes accumulate) and
//! reads back a watch of what they learnt (leader, holder, last answer). Membership,
//! election and the actuators therefore never wait on an API round trip; every API call
//! here is bounded by a timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::actuate::policy_route_task::TaskReport;
use crate::election::Candidate;
use crate::ipam::Assignments;
use crate::snapshot::Snapshot;
use crate::status::announced::{announcements, AnnouncedTracker};
use crate::status::changes::Change;
use crate::status::leader::Leadership;
use crate::status::policy_route::PolicyRouteStatusWriter;
use crate::status::writer::{StatusWriter, Written};

use super::{Config, LeaseConfig};

/// How often the witness probe asks the API server while the split-brain guard wants it
/// fresh ([`super::guard::WITNESS_TTL`] is three of these).
const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// Allocation changes kept for the Events while the API is slow; older ones are dropped
/// (the statuses themselves are always rewritten from the latest allocation).
const MAX_PENDING_CHANGES: usize = 10_000;

/// What the API side learnt, for the cluster loop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiState {
    /// This speaker holds the Lease (as of the last round).
    pub leader: bool,
    /// The Lease holder as the last round read it.
    pub holder: Option<String>,
    /// When the API server last answered (the split-brain guard's witness).
    pub contact: Option<Instant>,
}

/// The cluster loop's latest results, coalesced.
#[derive(Default)]
struct Pending {
    current: Option<(Snapshot, Assignments)>,
    changes: Vec<Change>,
    candidates: Option<Vec<Candidate>>,
    routes: Option<TaskReport>,
}

/// A mailbox that never blocks the sender.
#[derive(Default)]
struct Mailbox {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl Mailbox {
    fn put(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        self.notify.notify_one();
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Handles to the API tasks.
pub struct ApiTask {
    mailbox: Arc<Mailbox>,
    state: watch::Receiver<ApiState>,
    wanted: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ApiTask {
    /// Starts the writer (with the Lease rounds) and the witness probe.
    pub fn spawn(client: kube::Client, cfg: &Config, lease: &LeaseConfig) -> ApiTask {
        let mailbox = Arc::new(Mailbox::default());
        let (state_tx, state) = watch::channel(ApiState::default());
        let state_tx = Arc::new(state_tx);
        let (wanted, wanted_rx) = watch::channel(false);
        let writer = writer_task(
            client.clone(),
            cfg.clone(),
            lease.clone(),
            mailbox.clone(),
            state_tx.clone(),
        );
        let probe = probe_task(client, wanted_rx, state_tx);
        ApiTask {
            mailbox,
            state,
            wanted,
            tasks: vec![tokio::spawn(writer), tokio::spawn(probe)],
        }
    }

    /// What the API side learnt; `changed()` wakes the loop.
    pub fn state(&mut self) -> &mut watch::Receiver<ApiState> {
        &mut self.state
    }

    /// Whether this speaker leads, as of the last Lease round.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().leader
    }

    /// The Lease holder, as of the last Lease round.
    pub fn holder(&self) -> Option<String> {
        self.state.borrow().holder.clone()
    }

    /// A new snapshot, allocation and its changes.
    pub fn submit(&self, snap: &Snapshot, a: &Assignments, changes: Vec<Change>) {
        self.mailbox.put(|p| {
            p.current = Some((snap.clone(), a.clone()));
            p.changes.extend(changes);
            if p.changes.len() > MAX_PENDING_CHANGES {
                let over = p.changes.len() - MAX_PENDING_CHANGES;
                tracing::warn!(dropped = over, "API slow: oldest allocation Events dropped");
                p.changes.drain(..over);
            }
        });
    }

    /// The election candidates changed (a member came or went): who announces what.
    pub fn candidates(&self, c: Vec<Candidate>) {
        self.mailbox.put(|p| p.candidates = Some(c));
    }

    /// The policy-route task reported.
    pub fn routes(&self, report: TaskReport) {
        self.mailbox.put(|p| p.routes = Some(report));
    }

    /// Whether the split-brain guard wants the witness probed every second.
    pub fn want_witness(&self, wanted: bool) {
        self.wanted
            .send_if_modified(|w| std::mem::replace(w, wanted) != wanted);
    }

    /// Stops the tasks (a write in flight is abandoned; the next leader rewrites).
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Marks an answer of the API server.
fn answered(state: &watch::Sender<ApiState>) {
    state.send_modify(|s| s.contact = Some(Instant::now()));
}

/// Asks the API server for its version every [`PROBE_PERIOD`] while wanted; a cheap,
/// read-only request every ServiceAccount may make (`system:public-info-viewer`).
async fn probe_task(
    client: kube::Client,
    mut wanted: watch::Receiver<bool>,
    state: Arc<watch::Sender<ApiState>>,
) {
    let mut tick = tokio::time::interval(PROBE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !*wanted.borrow_and_update() {
            if wanted.changed().await.is_err() {
                return;
            }
            continue;
        }
        tick.tick().await;
        match tokio::time::timeout(PROBE_PERIOD, client.apiserver_version()).await {
            Ok(Ok(_)) => answered(&state),
            Ok(Err(e)) => tracing::debug!(error = %e, "API witness probe failed"),
            Err(_) => tracing::debug!("API witness probe timed out"),
        }
    }
}

/// The Lease rounds and every write, in one task for now (one round trip at a time).
async fn writer_task(
    client: kube::Client,
    cfg: Config,
    lease: LeaseConfig,
    mailbox: Arc<Mailbox>,
    state: Arc<watch::Sender<ApiState>>,
) {
    let mut leadership = Leadership::new(
        client.clone(),
        &cfg.selection.namespace,
        &lease.name,
        &cfg.node,
        lease.duration,
    );
    let mut writer = StatusWriter::new(client.clone(), &cfg.node, lease.write_timeout);
    let mut route_status = PolicyRouteStatusWriter::new(client, &cfg.node, lease.write_timeout);
    let mut announced = AnnouncedTracker::default();
    let mut ticker = tokio::time::interval(lease.duration / 3);
    let mut current: Option<(Snapshot, Assignments)> = None;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut routes = TaskReport::default();
    // Statuses and conditions are re-checked on every Lease round, so a failed write is
    // retried without waiting for a cluster change.
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let round = tokio::time::timeout(lease.write_timeout, leadership.tick(Timestamp::now())).await;
                let reachable = round.is_ok() && leadership.api_reachable();
                if round.is_err() {
                    tracing::warn!("lease round timed out; not leading this round");
                }
                let leader = round.is_ok() && leadership.is_leader();
                let holder = round.ok().and_then(|_| leadership.holder().map(str::to_string));
                state.send_modify(|s| {
                    s.leader = leader;
                    s.holder = holder;
                    if reachable {
                        s.contact = Some(Instant::now());
                    }
                });
            }
            () = mailbox.notify.notified() => {}
        }
        let p = mailbox.take();
        if let Some(c) = p.current {
            current = Some(c);
        }
        if let Some(c) = p.candidates {
            candidates = c;
        }
        if let Some(r) = p.routes {
            routes = r;
        }
        let Some((snap, a)) = &current else { continue };
        // Leader or not, this node's own conditions on the PolicyRoutes (written when
        // they changed).
        route_status
            .write(snap, &routes, Time(Timestamp::now()))
            .await;
        if !state.borrow().leader {
            continue;
        }
        let written = writer
            .write(snap, a, &p.changes, Time(Timestamp::now()))
            .await;
        if written != Default::default() {
            tracing::info!(
                services = written.services,
                conditions = written.conditions,
                events = written.events,
                failed = written.failed,
                "wrote to the API"
            );
        }
        // Who announces each Service: one Event per change, never per heartbeat.
        let now = announcements(snap, a, candidates.clone());
        let todo = announced.changes(&now);
        let mut out = Written::default();
        for (k, v) in writer.write_announced(snap, &todo, &mut out).await {
            announced.reported(k, v);
        }
    }
}
