//! The allocator of record: a task of its own that, while this speaker's Lease fence is
//! open, allocates from what is recorded and writes Service statuses, CRD conditions and
//! Events; every speaker's run loop only submits snapshots to it and never waits on it.
//!
//! - **A term starts from the record.** On each new fence epoch the task reads every
//!   Service fresh from the API ([`super::record::read`]), waits until the submitted
//!   snapshots show that record (re-reading every [`REGATE`]), then seeds a fresh allocator
//!   from it. A record that changes under the writer (a 409 whose fresh read shows IPs
//!   another wrote) starts the term over the same way.
//! - **Fenced, bounded, coalesced writes.** Writes are queued per object ([`Queue`]: the
//!   latest value wins, one write in flight per object), at most `concurrency` at a time,
//!   each started only when the fence permits a write of `write_timeout`, each inside that
//!   timeout. Status writes carry the Service's `resourceVersion` as a precondition, so a
//!   write based on a stale view fails with 409 instead of overwriting.
//! - **Events from the record.** `IPAllocated` / `IPReleased` follow a successful status
//!   write (the record changed), `AllocationFailed` and `AnnouncedBy` once per change; see
//!   [`super::events`] for why a new leader does not post them again.
//! - **Incremental.** A pass decides again only the Services whose inputs changed since the
//!   last pass or whose write ended ([`super::scope`]); the `AnnouncedBy` elections run
//!   for those and the Services sharing an IP with them ([`Recorded`]). A burst of N
//!   Services costs O(N log N) in all, not a walk over every Service per write.
//! - **One allocator on the leader.** Each pass's allocation is published while leading
//!   ([`Allocated`], a persistent map shared with this allocator); the run loop announces
//!   from it instead of allocating beside it, and allocates on its own again, from the
//!   record, once nothing is published (the term ended or starts over).
//! - **Events owed outlive a lapse of the fence.** A status write that landed (or may
//!   have) but whose `IPReleased`/`IPAllocated` were not posted (the fence lapsed: a Lease
//!   renewal was late) leaves them owed ([`Owed`]) for as long as the same hold of the
//!   Lease may continue ([`super::leader::Fence::tenure`]): they are posted, with their
//!   first `eventTime`, once the hold writes again and the snapshot shows what was
//!   written; dropped if the Service holds other IPs by then (never posted stale) or the
//!   hold ended (another holder, or the Lease acquired anew).
//! - **Memory bounded by what is live.** Everything kept per object is dropped when the
//!   object leaves the snapshot ([`WriterStats::tracked`]).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use imbl::ordmap::DiffItem;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::Client;
use kube::Resource;
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::announced::{outcomes_of, Recorded};
use super::conditions::{same, updates, ConditionUpdate, INVALID_REASON};
use super::events::{post_about, post_report, Note, Posted, Report};
use super::leader::Fence;
use super::pass_through::{self as pass, frontend_of};
use super::pool_ingress::{self as pools, CloudReports, CloudSource, PoolEntry};
use super::pool_services::{is_ours as pool_service_is_ours, owner_of, pool_service_name};
use super::queue::{Done, Queue};
use super::record::{read, Record};
use super::scope::{changed_pool_services, changed_services, same_config, Scope};
use super::service::{apply_body, current_ingress, desired_ingress};
use super::undecodable::{Reported, UndecodableEvent};
use crate::api::openyurt::PoolService;
use crate::election::Candidate;
use crate::ipam::{status_ips, AllocationKey, Assignments, Outcome};
use crate::service::ServiceFacts;
use crate::snapshot::{ObjectKey, Selection, Snapshot};
use crate::speaker::Allocator;

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "edgelb";

/// How often a new leader whose snapshot is behind the record reads the record again
/// (a Service recorded then deleted would otherwise hold the term back).
pub const REGATE: Duration = Duration::from_secs(2);

/// The shortest write worth starting: with less of the fence left, wait for a renewal.
pub const MIN_WRITE: Duration = Duration::from_millis(300);

/// Writer settings.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// This node (Events' reporting instance).
    pub node: String,
    /// Which Services are ours (for the fresh read of the record).
    pub selection: Selection,
    /// Writes in flight at most.
    pub concurrency: usize,
    /// Timeout of each write; a write starts only if the fence outlasts it.
    pub write_timeout: Duration,
    /// Wait before a failed write is tried again.
    pub retry: Duration,
    /// The cloud load-balancer driver's reports (the entry points of cloud-class pools).
    pub cloud: CloudSource,
}

impl WriterConfig {
    /// Defaults for `node`: 32 writes in flight, 5 s timeout, 1 s retry.
    pub fn new(node: &str, selection: Selection) -> WriterConfig {
        WriterConfig {
            node: node.to_string(),
            selection,
            concurrency: 32,
            write_timeout: Duration::from_secs(5),
            retry: Duration::from_secs(1),
            cloud: pools::no_cloud(),
        }
    }
}

/// Counts of one round of the per-node `PolicyRoute` condition writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Objects whose conditions were applied.
    pub conditions: usize,
    /// Writes that failed (retried next round).
    pub failed: usize,
}

/// Counts since start, for logs, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Service statuses written.
    pub services: usize,
    /// PoolService statuses written.
    pub pool_services: usize,
    /// Objects whose conditions were written.
    pub conditions: usize,
    /// Events created or counted in a series.
    pub events: usize,
    /// Writes that failed (retried).
    pub failed: usize,
    /// Status writes refused by their `resourceVersion` precondition.
    pub conflicts: usize,
    /// Terms started (fresh reads of the record included).
    pub terms: usize,
    /// Entries kept per object (queue, applied writes, reported Events): bounded by the
    /// live objects, zero with none.
    pub tracked: usize,
    /// Writes queued or in flight.
    pub pending: usize,
}

/// The allocator of record's result for one snapshot, published while this speaker
/// leads: its run loop announces from it instead of running an allocator of its own
/// beside this one (one allocator on the leader; see `speaker::run_cluster`).
#[derive(Clone, Debug)]
pub struct Allocated {
    /// The snapshot it was made from.
    pub snap: Snapshot,
    /// The allocation of record for it.
    pub assignments: Arc<Assignments>,
}

/// What the run loop hands the writer: the snapshot and the election candidates as this
/// speaker sees them (for `AnnouncedBy`).
#[derive(Clone)]
struct Submission {
    snap: Snapshot,
    candidates: Arc<Vec<Candidate>>,
}

/// What is queued per object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Status(ObjectKey),
    Condition(&'static str, ObjectKey),
    Failed(ObjectKey),
    Announced(ObjectKey),
    Undecodable(String, ObjectKey),
    PassThrough(ObjectKey),
    /// The status of the PoolService of (Service, node pool).
    PoolStatus(ObjectKey, Arc<str>),
    /// The Events a status write owes ([`Owed`]).
    Owed(ObjectKey),
}

impl Key {
    fn service(&self) -> &ObjectKey {
        match self {
            Key::Status(k)
            | Key::Condition(_, k)
            | Key::Failed(k)
            | Key::Announced(k)
            | Key::Undecodable(_, k)
            | Key::PassThrough(k)
            | Key::PoolStatus(k, _)
            | Key::Owed(k) => k,
        }
    }

    /// Whether the key is about a Service (dropped when the Service goes).
    fn about_service(&self) -> bool {
        matches!(
            self,
            Key::Status(_)
                | Key::Failed(_)
                | Key::Announced(_)
                | Key::PassThrough(_)
                | Key::PoolStatus(..)
                | Key::Owed(_)
        )
    }
}

/// A condition update, equal when only timestamps differ.
#[derive(Clone, Debug)]
struct Cond(ConditionUpdate);

impl PartialEq for Cond {
    fn eq(&self, o: &Cond) -> bool {
        self.0.conditions.len() == o.0.conditions.len()
            && self
                .0
                .conditions
                .iter()
                .zip(&o.0.conditions)
                .all(|(a, b)| same(a, b))
    }
}

/// A Service's pass-through condition (none: remove ours), equal when only timestamps
/// differ.
#[derive(Clone, Debug)]
struct PassCond(Option<Condition>);

impl PartialEq for PassCond {
    fn eq(&self, o: &PassCond) -> bool {
        match (&self.0, &o.0) {
            (Some(a), Some(b)) => same(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

/// The value queued per key.
#[derive(Clone, Debug, PartialEq)]
enum Write {
    Status {
        ingress: Vec<LoadBalancerIngress>,
        pool: String,
    },
    Condition(Cond),
    Note(String),
    Undecodable(UndecodableEvent),
    PassThrough(PassCond),
    /// A PoolService's status: the object (and its UID) and what its pool has.
    PoolStatus {
        object: ObjectKey,
        uid: String,
        entry: PoolEntry,
    },
    /// The owed reports of the status write `seq`.
    Owed(u64, Vec<Report>),
}

/// The Events a status write owes: it landed (or may have: no answer), and these reports
/// of its change were not posted. Kept over a lapse of the fence while the same hold of
/// the Lease (`tenure`) may continue; posted once the snapshot shows `after`.
#[derive(Clone, Debug, PartialEq)]
struct Owed {
    tenure: u64,
    /// The write's number: a later write's debt replaces an earlier one's, never the reverse.
    seq: u64,
    /// The Service's IPs before and after the write, sorted.
    before: Vec<IpAddr>,
    after: Vec<IpAddr>,
    reports: Vec<Report>,
}

/// How one write ended.
enum Ended {
    Status {
        ingress: Vec<LoadBalancerIngress>,
        version: Option<String>,
        events: usize,
        /// What it owes (nothing: every report posted); `None` when it posted nothing
        /// because the record already showed its value (an earlier debt stands).
        owed: Option<Owed>,
    },
    /// A status write without an answer: retried, and it owes its reports should the
    /// record come to show it.
    InDoubt(String, Owed),
    /// Owed reports posted (the write number, how many Events).
    Paid(u64, usize),
    Reported(String, usize),
    Condition(Cond, usize),
    Undecodable(UndecodableEvent),
    PassThrough(PassCond, usize),
    PoolStatus(String, PoolEntry),
    Retry(String),
    /// The fence left too little time: started again once it is renewed.
    Fenced,
    Conflict(String),
    Gone,
    Foreign,
}

struct Finished {
    epoch: u64,
    key: Key,
    outcome: Ended,
}

/// Where the current term stands.
enum Term {
    /// Not leading.
    Idle,
    /// Reading the record (epoch).
    Reading(u64),
    /// Waiting for the snapshots to show the record.
    Gating {
        epoch: u64,
        record: Record,
        read_at: Instant,
    },
    /// Allocating and writing.
    Leading { epoch: u64, alloc: Box<Allocator> },
}

impl Term {
    fn epoch(&self) -> Option<u64> {
        match self {
            Term::Idle => None,
            Term::Reading(e) | Term::Gating { epoch: e, .. } | Term::Leading { epoch: e, .. } => {
                Some(*e)
            }
        }
    }
}

/// A status write that succeeded but is not in the snapshot yet.
#[derive(Clone, Debug, PartialEq)]
struct Applied {
    ingress: Vec<LoadBalancerIngress>,
    version: Option<String>,
}

/// The state of the writer task.
struct Writer {
    client: Client,
    cfg: WriterConfig,
    fence: watch::Receiver<Fence>,
    term: Term,
    queue: Queue<Key, Write>,
    applied: HashMap<ObjectKey, Applied>,
    conditions_applied: HashMap<(&'static str, ObjectKey), Cond>,
    /// Pass-through conditions written this term, not yet in the snapshot.
    pass_applied: HashMap<ObjectKey, PassCond>,
    /// PoolService statuses written this term (PoolService UID, entry), not yet in the snapshot.
    pool_applied: HashMap<(ObjectKey, Arc<str>), (String, PoolEntry)>,
    /// The cloud driver's reports and the last of them a pass looked at.
    cloud: CloudSource,
    cloud_seen: Arc<CloudReports>,
    cloud_closed: bool,
    /// Reported this term: `AllocationFailed` reason per Service.
    failed: HashMap<ObjectKey, String>,
    /// Reported this term: a hash of the `AnnouncedBy` text per Service (kept for every
    /// announced Service, so 8 bytes rather than the text). A Service here saw its text
    /// change this term: a later equal text is a true repeat.
    announced: HashMap<ObjectKey, u64>,
    /// `AllocationFailed` keys whose reported text changed this term (a later equal text
    /// is a true repeat).
    changed: BTreeSet<Key>,
    /// Built-in objects already reported as undecodable (kind, key, version).
    undecodable: Reported,
    latest: Option<Submission>,
    processed: Option<Snapshot>,
    /// The candidates of the last pass; `None` before the first pass of a term.
    passed: Option<Arc<Vec<Candidate>>>,
    /// Objects whose write ended since the last pass (decided again by the next one).
    touched: BTreeSet<ObjectKey>,
    /// Which Services share each recorded IP, for the `AnnouncedBy` elections.
    recorded: Recorded,
    /// Events owed per Service, kept over the end of a term while the hold continues.
    owed: HashMap<ObjectKey, Owed>,
    /// Status writes started, numbering them.
    writes: u64,
    /// Decide every Service on every pass (the property test's reference).
    #[cfg(test)]
    always_full: bool,
    assignments: Arc<Assignments>,
    /// The allocation of the last pass while leading (none otherwise), for the run loop.
    allocated: watch::Sender<Option<Allocated>>,
    tasks: JoinSet<Finished>,
    reading: JoinSet<(u64, Result<Record, String>)>,
    stats: WriterStats,
}

/// A running writer.
pub struct WriterHandle {
    tx: watch::Sender<Option<Submission>>,
    stats: watch::Receiver<WriterStats>,
    allocated: watch::Receiver<Option<Allocated>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl WriterHandle {
    /// Starts the writer; it writes only while `fence` permits.
    pub fn spawn(client: Client, cfg: WriterConfig, fence: watch::Receiver<Fence>) -> WriterHandle {
        let (tx, rx) = watch::channel(None);
        let (stats_tx, stats) = watch::channel(WriterStats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let writer = Writer::new(client, cfg, fence);
        let allocated = writer.allocated.subscribe();
        let task = tokio::spawn(writer.run(rx, stats_tx, stop_rx));
        WriterHandle {
            tx,
            stats,
            allocated,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Hands the writer the latest snapshot and this speaker's election candidates.
    /// Never waits; a snapshot not yet taken is replaced by the newer one.
    pub fn submit(&self, snap: Snapshot, candidates: Vec<Candidate>) {
        self.tx.send_replace(Some(Submission {
            snap,
            candidates: Arc::new(candidates),
        }));
    }

    /// The counts so far.
    pub fn stats(&self) -> WriterStats {
        self.stats.borrow().clone()
    }

    /// A watch of the counts (updated after each pass).
    pub fn watch_stats(&self) -> watch::Receiver<WriterStats> {
        self.stats.clone()
    }

    /// A watch of the allocation of record while this speaker leads (after each pass
    /// that took a new snapshot); none while it does not, or not yet, allocate.
    pub fn allocated(&self) -> watch::Receiver<Option<Allocated>> {
        self.allocated.clone()
    }

    /// Stops the writer: no write starts after this; writes in flight are abandoned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What the writer keeps of a reported `AnnouncedBy` text.
fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn ips_of(ingress: &[LoadBalancerIngress]) -> Vec<IpAddr> {
    ingress
        .iter()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Writer {
    fn new(client: Client, cfg: WriterConfig, fence: watch::Receiver<Fence>) -> Writer {
        let cloud = cfg.cloud.clone();
        Writer {
            client,
            cfg,
            fence,
            term: Term::Idle,
            queue: Queue::default(),
            applied: HashMap::new(),
            conditions_applied: HashMap::new(),
            pass_applied: HashMap::new(),
            pool_applied: HashMap::new(),
            cloud,
            cloud_seen: Arc::default(),
            cloud_closed: false,
            failed: HashMap::new(),
            announced: HashMap::new(),
            changed: BTreeSet::new(),
            undecodable: Reported::default(),
            latest: None,
            processed: None,
            passed: None,
            touched: BTreeSet::new(),
            recorded: Recorded::default(),
            owed: HashMap::new(),
            writes: 0,
            #[cfg(test)]
            always_full: false,
            assignments: Arc::default(),
            allocated: watch::channel(None).0,
            tasks: JoinSet::new(),
            reading: JoinSet::new(),
            stats: WriterStats::default(),
        }
    }

    async fn run(
        mut self,
        mut rx: watch::Receiver<Option<Submission>>,
        stats: watch::Sender<WriterStats>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                _ = &mut stop => break,
                r = self.fence.changed() => {
                    if r.is_err() {
                        break;
                    }
                }
                r = self.cloud.changed(), if !self.cloud_closed => {
                    // No driver (or it stopped): its last reports stay.
                    self.cloud_closed = r.is_err();
                }
                r = rx.changed() => {
                    if r.is_err() {
                        break;
                    }
                    self.latest = rx.borrow_and_update().clone();
                }
                Some(done) = self.tasks.join_next() => {
                    if let Ok(done) = done {
                        self.finished(done);
                    }
                }
                Some(read) = self.reading.join_next() => {
                    if let Ok((epoch, record)) = read {
                        self.record_read(epoch, record);
                    }
                }
                () = sleep_until(wake) => {}
            }
            self.follow_fence();
            self.process();
            self.publish();
            self.dispatch();
            self.stats.tracked = self.tracked();
            self.stats.pending = self.queue.waiting() + self.queue.in_flight();
            stats.send_if_modified(|s| {
                let changed = *s != self.stats;
                *s = self.stats.clone();
                changed
            });
        }
        self.tasks.abort_all();
        self.reading.abort_all();
    }

    /// Publishes the allocation of the last pass while leading, none otherwise (at once
    /// when a term ends: the run loop then allocates on its own, from the record).
    fn publish(&self) {
        let now = match (&self.term, &self.processed) {
            (Term::Leading { .. }, Some(snap)) => Some((snap, &self.assignments)),
            _ => None,
        };
        self.allocated.send_if_modified(|cur| {
            let same = match (&*cur, now) {
                (None, None) => true,
                (Some(c), Some((snap, a))) => {
                    c.snap.same_as(snap) && Arc::ptr_eq(&c.assignments, a)
                }
                _ => false,
            };
            if !same {
                *cur = now.map(|(snap, a)| Allocated {
                    snap: snap.clone(),
                    assignments: a.clone(),
                });
            }
            !same
        });
    }

    fn tracked(&self) -> usize {
        self.queue.waiting()
            + self.queue.in_flight()
            + self.applied.len()
            + self.conditions_applied.len()
            + self.pass_applied.len()
            + self.pool_applied.len()
            + self.failed.len()
            + self.announced.len()
            + self.changed.len()
            + self.owed.len()
    }

    fn next_wake(&self) -> Option<Instant> {
        let regate = match &self.term {
            Term::Gating { read_at, .. } => Some(*read_at + REGATE),
            _ => None,
        };
        // Writes waiting for the fence to reopen are looked at again every 100 ms.
        let blocked =
            (self.queue.waiting() > 0).then(|| Instant::now() + Duration::from_millis(100));
        [self.queue.next_retry(), regate, blocked]
            .into_iter()
            .flatten()
            .min()
    }

    /// Starts a term when the fence opens a new epoch; ends it when the fence closes.
    fn follow_fence(&mut self) {
        let fence = self.fence.borrow().clone();
        let now = Instant::now();
        // What a hold that ended owed is not posted by a later one.
        self.owed.retain(|_, o| o.tenure == fence.tenure);
        if !fence.leads(now) {
            if !matches!(self.term, Term::Idle) {
                tracing::info!(epoch = ?self.term.epoch(), "not leading: the writer stops");
                self.end_term();
            }
            return;
        }
        if self.term.epoch() != Some(fence.epoch) {
            self.end_term();
            self.start_term(fence.epoch);
        }
    }

    fn end_term(&mut self) {
        self.term = Term::Idle;
        self.queue.clear();
        self.applied.clear();
        self.conditions_applied.clear();
        self.pass_applied.clear();
        self.pool_applied.clear();
        self.failed.clear();
        self.announced.clear();
        self.changed.clear();
        self.undecodable = Reported::default();
        self.processed = None;
        self.passed = None;
        self.touched.clear();
        self.recorded = Recorded::default();
        self.assignments = Arc::default();
        self.reading.abort_all();
    }

    fn start_term(&mut self, epoch: u64) {
        tracing::info!(epoch, "leading: reading the record before writing");
        self.stats.terms += 1;
        self.term = Term::Reading(epoch);
        let client = self.client.clone();
        let sel = self.cfg.selection.clone();
        let timeout = self.cfg.write_timeout * 2;
        self.reading
            .spawn(async move { (epoch, read(&client, &sel, timeout).await) });
    }

    fn record_read(&mut self, epoch: u64, record: Result<Record, String>) {
        if self.term.epoch() != Some(epoch) {
            return;
        }
        match record {
            Ok(record) => {
                tracing::info!(epoch, recorded = record.len(), "record read");
                self.term = Term::Gating {
                    epoch,
                    record,
                    read_at: Instant::now(),
                };
            }
            Err(e) => {
                tracing::warn!(epoch, error = %e, "cannot read the record; trying again");
                self.start_term(epoch);
                self.stats.terms -= 1;
            }
        }
    }

    /// Moves the term on with the latest submission and queues what differs.
    fn process(&mut self) {
        let Some(sub) = self.latest.clone() else {
            return;
        };
        if let Term::Gating {
            epoch,
            record,
            read_at,
        } = &self.term
        {
            let epoch = *epoch;
            match record.behind(&sub.snap) {
                None => {
                    tracing::info!(epoch, "the snapshot shows the record: writing");
                    self.term = Term::Leading {
                        epoch,
                        alloc: Box::default(),
                    };
                }
                Some(k) if read_at.elapsed() >= REGATE => {
                    tracing::info!(epoch, service = %k, "the snapshot is behind the record; reading it again");
                    self.start_term(epoch);
                    self.stats.terms -= 1;
                    return;
                }
                Some(_) => return,
            }
        }
        let Term::Leading { alloc, .. } = &mut self.term else {
            return;
        };
        let snap = &sub.snap;
        // New cloud reports: the Services they are about are decided again.
        let cloud = self.cloud.borrow_and_update().clone();
        if !Arc::ptr_eq(&cloud, &self.cloud_seen) {
            self.touched
                .extend(cloud.changed_services(&self.cloud_seen));
            self.cloud_seen = cloud;
        }
        let fresh = self.processed.as_ref().is_none_or(|p| !p.same_as(snap));
        let before = self.assignments.clone();
        if fresh {
            // The first step of a term seeds from the snapshot's status (the record).
            let (a, _) = alloc.step(snap);
            self.assignments = Arc::new(a);
            self.forget_gone(snap);
        }
        // Nothing new since the last pass (the same snapshot and candidates, no write
        // ended): at rest a Lease renewal or a timer decides nothing.
        let same_candidates = self
            .passed
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &sub.candidates) || **c == *sub.candidates);
        if !fresh && same_candidates && self.touched.is_empty() {
            return;
        }
        let scope = self.scope(snap, &before, same_candidates);
        let a = self.assignments.clone();
        self.queue_statuses(snap, &a, &scope);
        self.queue_pool_statuses(snap, &a, &scope);
        self.queue_pass_through(snap, &a, &scope);
        self.queue_conditions(snap);
        self.queue_undecodable(snap);
        self.queue_failures(snap, &a, &scope);
        self.queue_announced(snap, &a, &sub.candidates, &scope);
        self.queue_owed(snap);
        self.processed = Some(snap.clone());
        self.passed = Some(sub.candidates.clone());
    }

    /// The Services this pass decides: those whose inputs changed since the last pass
    /// (or whose write ended), or all of them when something every Service reads changed.
    fn scope(&mut self, snap: &Snapshot, before: &Assignments, same_candidates: bool) -> Scope {
        let touched = std::mem::take(&mut self.touched);
        #[cfg(test)]
        if self.always_full {
            return Scope::All;
        }
        match (&self.processed, &self.passed) {
            (Some(p), Some(_)) if same_candidates && same_config(p, snap) => {
                let mut keys = changed_services(p, snap, before, &self.assignments);
                keys.extend(changed_pool_services(p, snap));
                keys.extend(touched);
                Scope::Only(keys)
            }
            _ => Scope::All,
        }
    }

    /// Drops what is kept for Services that left the snapshot.
    fn forget_gone(&mut self, snap: &Snapshot) {
        let Some(before) = &self.processed else {
            let live = |k: &ObjectKey| snap.services.contains_key(k);
            self.applied.retain(|k, _| live(k));
            self.pass_applied.retain(|k, _| live(k));
            self.pool_applied.retain(|(k, _), _| live(k));
            self.failed.retain(|k, _| live(k));
            self.announced.retain(|k, _| live(k));
            self.owed.retain(|k, _| live(k));
            self.changed.retain(|k| live(k.service()));
            self.queue
                .retain(|k| !k.about_service() || live(k.service()));
            return;
        };
        let gone: Vec<ObjectKey> = before
            .services
            .diff(&snap.services)
            .filter_map(|d| match d {
                DiffItem::Remove(k, _) => Some(k.clone()),
                _ => None,
            })
            .collect();
        for k in gone {
            self.applied.remove(&k);
            self.pass_applied.remove(&k);
            self.pool_applied.retain(|(s, _), _| *s != k);
            self.queue
                .retain(|key| !matches!(key, Key::PoolStatus(s, _) if *s == k));
            self.failed.remove(&k);
            self.announced.remove(&k);
            self.owed.remove(&k);
            for key in [
                Key::Status(k.clone()),
                Key::Failed(k.clone()),
                Key::PassThrough(k.clone()),
                Key::Owed(k.clone()),
                Key::Announced(k),
            ] {
                self.changed.remove(&key);
                self.queue.forget(&key);
            }
        }
    }

    /// The Services of `scope` that exist in `snap`, in key order.
    fn services_in<'a>(
        snap: &'a Snapshot,
        scope: &'a Scope,
    ) -> Box<dyn Iterator<Item = (&'a ObjectKey, &'a Arc<ServiceFacts>)> + 'a> {
        match scope {
            Scope::All => Box::new(snap.services.iter()),
            Scope::Only(keys) => {
                Box::new(keys.iter().filter_map(|k| snap.services.get_key_value(k)))
            }
        }
    }

    fn queue_statuses(&mut self, snap: &Snapshot, a: &Assignments, scope: &Scope) {
        for (key, svc) in Self::services_in(snap, scope) {
            // One ingress list per Service: with node pools, the union over its pools (the
            // frontend of the first pool that has an IP: scoped pools are self-announced).
            let merged = a.merged(key);
            let outcome = merged.as_ref();
            let frontend = a
                .of_service(key)
                .find_map(|(_, o)| o.as_ref().ok())
                .map_or(pass::Frontend::SelfAnnounced, |al| {
                    frontend_of(snap, &al.pool)
                });
            let cloud = pools::is_cloud(svc);
            let want = if cloud {
                // A cloud class: the driver's addresses, whatever ipam decided.
                pools::cloud_union(&self.cloud_seen, key)
            } else if let Some(selected) = pools::pools_with_a_cloud_entry(snap, svc) {
                // Some pools behind a cloud load balancer: every pool's entry, in pool
                // order (the self-announced ones are the allocation, per pool).
                let entries = pools::of_service(snap, a, &self.cloud_seen, key, svc, &selected);
                pools::union(entries.iter().map(|(_, e)| e))
            } else {
                desired_ingress(svc, outcome, frontend)
            };
            let k = Key::Status(key.clone());
            if want == current_ingress(svc) {
                self.applied.remove(key);
                self.queue.withdraw(&k);
                continue;
            }
            if self.applied.get(key).is_some_and(|ap| ap.ingress == want) {
                self.queue.withdraw(&k);
                continue;
            }
            let pool = match outcome {
                _ if cloud => "(cloud load balancer)".to_string(),
                Some(Ok(al)) => al.pool.to_string(),
                _ => String::new(),
            };
            self.queue.offer(
                k,
                Write::Status {
                    ingress: want,
                    pool,
                },
            );
        }
    }

    /// The status of each PoolService of ours of the Services in scope: its pool's ingress
    /// and condition ([`pools::entry`]).
    fn queue_pool_statuses(&mut self, snap: &Snapshot, a: &Assignments, scope: &Scope) {
        let sel = &snap.selection;
        for (key, svc) in Self::services_in(snap, scope) {
            let Ok(Some(selected)) = crate::nodepool::selected_node_pools(svc, &snap.node_pools)
            else {
                continue;
            };
            for (pool, entry) in pools::of_service(snap, a, &self.cloud_seen, key, svc, &selected) {
                let k = Key::PoolStatus(key.clone(), pool.clone());
                let object = ObjectKey::new(&key.namespace, &pool_service_name(&key.name, &pool));
                let Some(ps) = snap.pool_services.get(&object).filter(|ps| {
                    pool_service_is_ours(ps, sel)
                        && ps.metadata.deletion_timestamp.is_none()
                        && owner_of(ps).is_some_and(|(s, p)| s == *key && p == pool)
                }) else {
                    self.queue.withdraw(&k);
                    continue;
                };
                let uid = ps.metadata.uid.clone().unwrap_or_default();
                let id = (key.clone(), pool.clone());
                if pools::shows(ps, &entry) {
                    self.pool_applied.remove(&id);
                    self.queue.withdraw(&k);
                    continue;
                }
                if self
                    .pool_applied
                    .get(&id)
                    .is_some_and(|(u, e)| *u == uid && *e == entry)
                {
                    self.queue.withdraw(&k);
                    continue;
                }
                self.queue
                    .offer(k, Write::PoolStatus { object, uid, entry });
            }
        }
    }

    /// The pass-through condition of each Service that asks (or still carries ours): set
    /// while it has an IP, removed once it no longer asks.
    fn queue_pass_through(&mut self, snap: &Snapshot, a: &Assignments, scope: &Scope) {
        let now = Time(Timestamp::now());
        for (key, svc) in Self::services_in(snap, scope) {
            let want = match a.get(key) {
                Some(Ok(al)) => {
                    pass::desired(svc, &al.pool, frontend_of(snap, &al.pool), now.clone())
                }
                // No IP: nothing to decide yet; a condition stays until the Service no
                // longer asks.
                _ if pass::requested(svc).is_some() => continue,
                _ => None,
            };
            let want = PassCond(want);
            let k = Key::PassThrough(key.clone());
            if want == PassCond(pass::current(svc).cloned()) {
                self.pass_applied.remove(key);
                self.queue.withdraw(&k);
                continue;
            }
            if self.pass_applied.get(key) == Some(&want) {
                self.queue.withdraw(&k);
                continue;
            }
            self.queue.offer(k, Write::PassThrough(want));
        }
    }

    fn queue_conditions(&mut self, snap: &Snapshot) {
        let now = Time(Timestamp::now());
        let ups = updates(snap, now);
        let wanted: BTreeSet<(&'static str, ObjectKey)> =
            ups.iter().map(|u| (u.kind, u.key.clone())).collect();
        self.conditions_applied.retain(|k, _| wanted.contains(k));
        self.queue.retain(|k| match k {
            Key::Condition(kind, key) => wanted.contains(&(*kind, key.clone())),
            _ => true,
        });
        for up in ups {
            let id = (up.kind, up.key.clone());
            let c = Cond(up);
            if self.conditions_applied.get(&id) == Some(&c) {
                continue;
            }
            self.queue
                .offer(Key::Condition(id.0, id.1), Write::Condition(c));
        }
    }

    fn queue_undecodable(&mut self, snap: &Snapshot) {
        for ev in self.undecodable.new_events(snap) {
            let kind = ev.reference.kind.clone().unwrap_or_default();
            let key = ObjectKey::new(
                ev.reference.namespace.as_deref().unwrap_or_default(),
                ev.reference.name.as_deref().unwrap_or_default(),
            );
            self.queue
                .offer(Key::Undecodable(kind, key), Write::Undecodable(ev));
        }
    }

    fn queue_failures(&mut self, snap: &Snapshot, a: &Assignments, scope: &Scope) {
        let outcomes: Box<dyn Iterator<Item = (&AllocationKey, &Outcome)>> = match scope {
            Scope::All => Box::new(a.outcomes.iter()),
            Scope::Only(keys) => Box::new(keys.iter().flat_map(|k| outcomes_of(a, k))),
        };
        // One note per Service: its failures over all its node pools, each named.
        let mut by_service: Vec<(&ObjectKey, Option<String>)> = Vec::new();
        for (akey, outcome) in outcomes {
            if by_service.last().is_none_or(|(k, _)| **k != akey.service) {
                by_service.push((&akey.service, None));
            }
            if let (Err(e), Some((_, text))) = (outcome, by_service.last_mut()) {
                let part = match &akey.node_pool {
                    Some(np) => format!("for node pool {np}: {e}"),
                    None => e.to_string(),
                };
                *text = Some(match text.take() {
                    Some(t) => format!("{t}; {part}"),
                    None => part,
                });
            }
        }
        for (key, failure) in by_service {
            let k = Key::Failed(key.clone());
            match failure {
                Some(e) if snap.services.contains_key(key) => {
                    let text = format!("no IP assigned: {e}");
                    if self.failed.get(key) != Some(&text) {
                        self.queue.offer(k, Write::Note(text));
                    } else {
                        self.queue.withdraw(&k);
                    }
                }
                _ => {
                    if self.failed.remove(key).is_some() {
                        self.changed.insert(k.clone());
                    }
                    self.queue.withdraw(&k);
                }
            }
        }
    }

    fn queue_announced(
        &mut self,
        snap: &Snapshot,
        a: &Assignments,
        candidates: &[Candidate],
        scope: &Scope,
    ) {
        let keys = match scope {
            Scope::All => {
                self.recorded = Recorded::full(snap, a);
                snap.services.keys().cloned().collect()
            }
            Scope::Only(keys) => self.recorded.update(snap, a, keys),
        };
        let now = self
            .recorded
            .announcements_of(snap, a, candidates.to_vec(), &keys);
        for key in keys {
            let k = Key::Announced(key.clone());
            match now.get(&key) {
                None => {
                    // No text any more: what was reported is forgotten, so a text coming
                    // back is a change, not a repeat.
                    self.announced.remove(&key);
                }
                Some(text) if self.announced.get(&key) == Some(&text_hash(text)) => {
                    self.queue.withdraw(&k)
                }
                Some(text) => self.queue.offer(k, Write::Note(text.clone())),
            }
        }
    }

    /// Offers the Events owed for each Service whose snapshot shows what its write wrote
    /// and that has no newer status write pending; forgets them once it holds other IPs
    /// (a report is never posted stale) or is gone.
    fn queue_owed(&mut self, snap: &Snapshot) {
        let mut stale = Vec::new();
        for (k, o) in &self.owed {
            let key = Key::Owed(k.clone());
            if self.queue.is_pending(&Key::Status(k.clone())) {
                self.queue.withdraw(&key);
                continue;
            }
            let shown = snap.services.get(k).map(|svc| {
                let mut ips = status_ips(svc);
                ips.sort();
                ips
            });
            match shown {
                Some(ips) if ips == o.after => {
                    self.queue.offer(key, Write::Owed(o.seq, o.reports.clone()))
                }
                // The snapshot does not show the write yet (or it did not land).
                Some(ips) if ips == o.before => self.queue.withdraw(&key),
                _ => stale.push(k.clone()),
            }
        }
        for k in stale {
            tracing::info!(service = %k, "owed Events dropped: the Service holds other IPs now");
            self.owed.remove(&k);
            self.queue.withdraw(&Key::Owed(k));
        }
    }

    /// Keeps what a status write owes, if it ended in the current hold and is the latest
    /// write of its Service to owe anything.
    fn owe(&mut self, key: &Key, outcome: &Ended) {
        let (Key::Status(k), Ended::Status { owed: Some(o), .. } | Ended::InDoubt(_, o)) =
            (key, outcome)
        else {
            return;
        };
        if o.tenure != self.fence.borrow().tenure
            || self.owed.get(k).is_some_and(|cur| cur.seq > o.seq)
        {
            return;
        }
        if o.reports.is_empty() {
            self.owed.remove(k);
        } else {
            self.owed.insert(k.clone(), o.clone());
        }
    }

    /// Starts queued writes while the fence permits and there is room.
    fn dispatch(&mut self) {
        let Term::Leading { epoch, .. } = self.term else {
            return;
        };
        let Some(sub) = self.latest.clone() else {
            return;
        };
        loop {
            if self.queue.in_flight() >= self.cfg.concurrency {
                return;
            }
            let now = Instant::now();
            let fence = self.fence.borrow().clone();
            if fence.epoch != epoch
                || fence
                    .write_budget(now, MIN_WRITE, self.cfg.write_timeout)
                    .is_none()
            {
                return;
            }
            let Some((key, write)) = self.queue.next(now) else {
                return;
            };
            match write {
                Write::Condition(_) => {
                    self.spawn_condition(epoch, key, write);
                    continue;
                }
                Write::Undecodable(ev) => {
                    self.spawn_undecodable(epoch, key, ev);
                    continue;
                }
                _ => {}
            }
            let Some(svc) = sub.snap.services.get(key.service()).cloned() else {
                self.queue.done(&key, Done::Dropped, now);
                continue;
            };
            match (&key, write) {
                (Key::Status(k), Write::Status { ingress, pool }) => {
                    let base = self.applied.get(k).cloned();
                    self.spawn_status(epoch, key.clone(), svc, ingress, pool, base);
                }
                (Key::Owed(_), Write::Owed(seq, reports)) => {
                    self.spawn_owed(epoch, key, svc, seq, reports);
                }
                (Key::Failed(_), Write::Note(text)) => {
                    let repeat = self.changed.contains(&key);
                    let note = Note {
                        reason: "AllocationFailed",
                        type_: "Warning",
                        action: "Allocate",
                        note: text.clone(),
                    };
                    self.spawn_note(epoch, key, svc, note, repeat, text);
                }
                (Key::PassThrough(_), Write::PassThrough(c)) => {
                    self.spawn_pass_through(epoch, key, svc, c);
                }
                (Key::PoolStatus(..), Write::PoolStatus { object, uid, entry }) => {
                    match sub.snap.pool_services.get(&object).cloned() {
                        Some(ps) => self.spawn_pool_status(epoch, key, ps, uid, entry),
                        None => self.queue.done(&key, Done::Dropped, now),
                    }
                }
                (Key::Announced(k), Write::Note(text)) => {
                    let repeat = self.announced.contains_key(k);
                    let note = Note {
                        reason: super::announced::REASON,
                        type_: "Normal",
                        action: "Announce",
                        note: format!("announced: {text}"),
                    };
                    self.spawn_note(epoch, key, svc, note, repeat, text);
                }
                (key, _) => self.queue.done(key, Done::Dropped, now),
            }
        }
    }

    fn spawn_status(
        &mut self,
        epoch: u64,
        key: Key,
        svc: Arc<ServiceFacts>,
        ingress: Vec<LoadBalancerIngress>,
        pool: String,
        base: Option<Applied>,
    ) {
        let client = self.client.clone();
        let timeout = self.cfg.write_timeout;
        let node = self.cfg.node.clone();
        let fence = self.fence.clone();
        self.writes += 1;
        let debt = Owed {
            tenure: fence.borrow().tenure,
            seq: self.writes,
            before: Vec::new(),
            after: Vec::new(),
            reports: Vec::new(),
        };
        self.tasks.spawn(async move {
            let outcome = write_status(
                &client, &node, &fence, epoch, timeout, &svc, ingress, &pool, base, debt,
            )
            .await;
            Finished {
                epoch,
                key,
                outcome,
            }
        });
    }

    /// Posts the reports a status write owes, in order, while this term leads. One that
    /// fails while it still leads is given up (logged), as a first post would be; one cut
    /// short by the fence stays owed.
    fn spawn_owed(
        &mut self,
        epoch: u64,
        key: Key,
        svc: Arc<ServiceFacts>,
        seq: u64,
        reports: Vec<Report>,
    ) {
        let client = self.client.clone();
        let timeout = self.cfg.write_timeout;
        let node = self.cfg.node.clone();
        let fence = self.fence.clone();
        self.tasks.spawn(async move {
            let still_leads = || {
                let f = fence.borrow();
                f.epoch == epoch && f.leads(Instant::now())
            };
            let regarding = svc.object_ref();
            let mut posted = 0;
            let mut outcome = None;
            for r in &reports {
                match post_report(&client, &node, &regarding, r, timeout, &still_leads).await {
                    Ok(_) => posted += 1,
                    Err(e) if still_leads() => {
                        tracing::warn!(error = %e, "owed Event not posted; given up");
                    }
                    Err(e) => {
                        outcome = Some(Ended::Retry(e));
                        break;
                    }
                }
            }
            Finished {
                epoch,
                key,
                outcome: outcome.unwrap_or(Ended::Paid(seq, posted)),
            }
        });
    }

    fn spawn_note(
        &mut self,
        epoch: u64,
        key: Key,
        svc: Arc<ServiceFacts>,
        note: Note,
        repeat: bool,
        text: String,
    ) {
        let client = self.client.clone();
        let timeout = self.cfg.write_timeout;
        let node = self.cfg.node.clone();
        self.tasks.spawn(async move {
            let outcome =
                match post_about(&client, &node, &svc.object_ref(), &note, repeat, timeout).await {
                    Ok(p) => Ended::Reported(text, usize::from(p != Posted::AlreadyReported)),
                    Err(e) => Ended::Retry(e),
                };
            Finished {
                epoch,
                key,
                outcome,
            }
        });
    }

    fn spawn_undecodable(&mut self, epoch: u64, key: Key, ev: UndecodableEvent) {
        let client = self.client.clone();
        let timeout = self.cfg.write_timeout;
        let node = self.cfg.node.clone();
        self.tasks.spawn(async move {
            let note = Note {
                reason: super::undecodable::REASON,
                type_: "Warning",
                action: "Validate",
                note: ev.note.clone(),
            };
            let outcome =
                match post_about(&client, &node, &ev.reference, &note, false, timeout).await {
                    Ok(_) => Ended::Undecodable(ev),
                    Err(e) => Ended::Retry(e),
                };
            Finished {
                epoch,
                key,
                outcome,
            }
        });
    }

    /// Applies one PoolService's status (its pool's ingress and our condition).
    fn spawn_pool_status(
        &mut self,
        epoch: u64,
        key: Key,
        ps: Arc<PoolService>,
        uid: String,
        entry: PoolEntry,
    ) {
        let client = self.client.clone();
        let timeout = self.cfg.write_timeout;
        self.tasks.spawn(async move {
            let outcome = match write_pool_status(&client, &ps, &entry, timeout).await {
                Ok(true) => Ended::PoolStatus(uid, entry),
                Ok(false) => Ended::Gone,
                Err(e) => Ended::Retry(e),
            };
            Finished {
                epoch,
                key,
                outcome,
            }
        });
    }

    /// Writes a Service's pass-through condition; a refusal also gets its Warning Event
    /// (named after its note, so once per Service, annotation and pool).
    fn spawn_pass_through(&mut self, epoch: u64, key: Key, svc: Arc<ServiceFacts>, c: PassCond) {
        let client = self.client.clone();
        let timeout = self.cfg.write_timeout;
        let node = self.cfg.node.clone();
        self.tasks.spawn(async move {
            let outcome = match write_pass_through(&client, &svc, c.0.as_ref(), timeout).await {
                Ok(()) => {
                    let mut events = 0;
                    if let Some(cond) = c.0.as_ref().filter(|c| c.reason == pass::IGNORED) {
                        let note = Note {
                            reason: pass::IGNORED,
                            type_: "Warning",
                            action: "Allocate",
                            note: cond.message.clone(),
                        };
                        match post_about(&client, &node, &svc.object_ref(), &note, false, timeout)
                            .await
                        {
                            Ok(Posted::AlreadyReported) => {}
                            Ok(_) => events = 1,
                            Err(e) => tracing::warn!(error = %e, "Warning Event not posted"),
                        }
                    }
                    Ended::PassThrough(c, events)
                }
                Err(e) => Ended::Retry(e),
            };
            Finished {
                epoch,
                key,
                outcome,
            }
        });
    }

    /// Writes a condition; a `Valid=False` written also gets a Warning Event on its
    /// object (named after its message, so once per message).
    fn spawn_condition(&mut self, epoch: u64, key: Key, write: Write) {
        let Write::Condition(c) = write else {
            return;
        };
        let client = self.client.clone();
        let timeout = self.cfg.write_timeout;
        let node = self.cfg.node.clone();
        self.tasks.spawn(async move {
            let outcome = match write_condition(&client, &c.0, timeout).await {
                Ok(()) => {
                    let mut events = 0;
                    if let Some((reference, text)) = c.0.warning() {
                        let note = Note {
                            reason: INVALID_REASON,
                            type_: "Warning",
                            action: "Validate",
                            note: text,
                        };
                        match post_about(&client, &node, &reference, &note, false, timeout).await {
                            Ok(Posted::AlreadyReported) => {}
                            Ok(_) => events = 1,
                            Err(e) => tracing::warn!(error = %e, "Warning Event not posted"),
                        }
                    }
                    Ended::Condition(c, events)
                }
                Err(e) => Ended::Retry(e),
            };
            Finished {
                epoch,
                key,
                outcome,
            }
        });
    }

    fn finished(&mut self, done: Finished) {
        let now = Instant::now();
        // Before the term check: a write of an earlier term of the same hold owes still.
        self.owe(&done.key, &done.outcome);
        if self.term.epoch() != Some(done.epoch) || !self.queue.is_busy(&done.key) {
            return;
        }
        // The next pass decides this object again (its write is no longer in flight).
        self.touched.insert(done.key.service().clone());
        let key = done.key;
        match done.outcome {
            Ended::Status {
                ingress,
                version,
                events,
                owed: _,
            } => {
                self.stats.services += 1;
                self.stats.events += events;
                self.applied
                    .insert(key.service().clone(), Applied { ingress, version });
                self.queue.done(&key, Done::Written, now);
            }
            Ended::Reported(text, events) => {
                self.stats.events += events;
                // From now on this term saw the text change: a later return to an
                // earlier text is a true repeat.
                match &key {
                    Key::Failed(k) => {
                        self.failed.insert(k.clone(), text);
                        self.changed.insert(key.clone());
                    }
                    Key::Announced(k) => {
                        self.announced.insert(k.clone(), text_hash(&text));
                    }
                    _ => {}
                }
                self.queue.done(&key, Done::Written, now);
            }
            Ended::Undecodable(ev) => {
                self.stats.events += 1;
                self.undecodable.published(&ev);
                self.queue.done(&key, Done::Written, now);
            }
            Ended::PassThrough(c, events) => {
                self.stats.conditions += 1;
                self.stats.events += events;
                self.pass_applied.insert(key.service().clone(), c);
                self.queue.done(&key, Done::Written, now);
            }
            Ended::PoolStatus(uid, entry) => {
                self.stats.pool_services += 1;
                if let Key::PoolStatus(s, p) = &key {
                    self.pool_applied
                        .insert((s.clone(), p.clone()), (uid, entry));
                }
                self.queue.done(&key, Done::Written, now);
            }
            Ended::Condition(c, events) => {
                self.stats.conditions += 1;
                self.stats.events += events;
                if let Key::Condition(kind, k) = &key {
                    self.conditions_applied.insert((kind, k.clone()), c);
                }
                self.queue.done(&key, Done::Written, now);
            }
            Ended::Retry(e) | Ended::InDoubt(e, _) => {
                tracing::warn!(?key, error = %e, "write failed; retrying");
                self.stats.failed += 1;
                self.queue.done(&key, Done::RetryAfter(self.cfg.retry), now);
            }
            Ended::Paid(seq, events) => {
                self.stats.events += events;
                if self.owed.get(key.service()).is_some_and(|o| o.seq == seq) {
                    self.owed.remove(key.service());
                }
                self.queue.done(&key, Done::Written, now);
            }
            Ended::Fenced => self.queue.done(&key, Done::RetryAfter(Duration::ZERO), now),
            Ended::Conflict(e) => {
                tracing::info!(?key, error = %e, "write based on a stale view refused; retrying from the latest");
                self.stats.conflicts += 1;
                self.applied.remove(key.service());
                self.queue.done(&key, Done::RetryAfter(Duration::ZERO), now);
            }
            Ended::Gone => self.queue.done(&key, Done::Dropped, now),
            Ended::Foreign => {
                tracing::warn!(
                    ?key,
                    "the record changed under the writer; reading it again"
                );
                self.stats.conflicts += 1;
                let epoch = done.epoch;
                self.end_term();
                self.start_term(epoch);
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The apply body with the `resourceVersion` precondition.
fn status_body(
    svc: &ServiceFacts,
    ingress: &[LoadBalancerIngress],
    version: Option<&str>,
) -> serde_json::Value {
    let mut body = apply_body(ingress);
    body["metadata"] = json!({ "name": &*svc.key.name });
    if let Some(v) = version {
        body["metadata"]["resourceVersion"] = json!(v);
    }
    body
}

/// Writes one Service's status (precondition: the version the record was read at), then
/// the Events of the change. On 409, reads the Service: if its record is still what this
/// writer based the write on, writes again on the new version (only metadata or spec
/// changed); if it now holds other IPs, the record changed under us ([`Ended::Foreign`]).
/// `debt` (its hold and number) comes back with the reports not posted.
#[allow(clippy::too_many_arguments)]
async fn write_status(
    client: &Client,
    node: &str,
    fence: &watch::Receiver<Fence>,
    epoch: u64,
    timeout: Duration,
    svc: &ServiceFacts,
    ingress: Vec<LoadBalancerIngress>,
    pool: &str,
    base: Option<Applied>,
    debt: Owed,
) -> Ended {
    let ns = svc.namespace().unwrap_or("default");
    let name = svc.key.name.to_string();
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let (mut version, before) = match &base {
        Some(ap) => (ap.version.clone(), ips_of(&ap.ingress)),
        None => (svc.resource_version(), status_ips(svc)),
    };
    let mut sorted_before = before.clone();
    sorted_before.sort();
    let want = ips_of(&ingress);
    let mut sorted_want = want.clone();
    sorted_want.sort();
    let debt = Owed {
        before: sorted_before.clone(),
        after: sorted_want.clone(),
        ..debt
    };
    // No answer (a timeout, a broken connection, a 5xx): the write may have landed.
    let in_doubt = |e: String| {
        let reports = change_notes(&before, &want, pool)
            .into_iter()
            .map(Report::now)
            .collect();
        Ended::InDoubt(
            e,
            Owed {
                reports,
                ..debt.clone()
            },
        )
    };
    for attempt in 0..2 {
        // The write's own timeout ends inside the fence.
        let budget = {
            let f = fence.borrow();
            (f.epoch == epoch)
                .then(|| f.write_budget(Instant::now(), MIN_WRITE, timeout))
                .flatten()
        };
        let Some(budget) = budget else {
            return Ended::Fenced;
        };
        let body = status_body(svc, &ingress, version.as_deref());
        let result = tokio::time::timeout(
            budget,
            api.patch_status(&name, &params, &Patch::Apply(&body)),
        )
        .await;
        match result {
            Ok(Ok(written)) => {
                tracing::info!(service = %format!("{ns}/{name}"), ingress = ?want, "status written");
                let (events, reports) = status_events(
                    client,
                    node,
                    fence,
                    epoch,
                    timeout,
                    &written.object_ref(&()),
                    &before,
                    &want,
                    pool,
                )
                .await;
                return Ended::Status {
                    ingress,
                    version: written.metadata.resource_version,
                    events,
                    owed: Some(Owed {
                        reports,
                        ..debt.clone()
                    }),
                };
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => return Ended::Gone,
            Ok(Err(kube::Error::Api(s))) if s.code == 409 && attempt == 0 => {
                let fresh = match tokio::time::timeout(timeout, api.get_opt(&name)).await {
                    Ok(Ok(Some(f))) => f,
                    Ok(Ok(None)) => return Ended::Gone,
                    Ok(Err(e)) => return Ended::Retry(e.to_string()),
                    Err(_) => return Ended::Retry("timed out".into()),
                };
                let mut now = status_ips(&ServiceFacts::unshared(&fresh));
                now.sort();
                if now == sorted_want {
                    return Ended::Status {
                        ingress,
                        version: fresh.metadata.resource_version,
                        events: 0,
                        owed: None,
                    };
                }
                if now != sorted_before {
                    return Ended::Foreign;
                }
                version = fresh.metadata.resource_version;
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => return Ended::Conflict(s.message),
            Ok(Err(e)) if matches!(&e, kube::Error::Api(s) if s.code < 500) => {
                return Ended::Retry(e.to_string())
            }
            Ok(Err(e)) => return in_doubt(e.to_string()),
            Err(_) => return in_doubt("timed out".into()),
        }
    }
    Ended::Retry("conflict".into())
}

/// The `IPReleased` and `IPAllocated` notes of a change of the record.
fn change_notes(before: &[IpAddr], after: &[IpAddr], pool: &str) -> Vec<Note> {
    let released: Vec<IpAddr> = before
        .iter()
        .filter(|ip| !after.contains(ip))
        .copied()
        .collect();
    let mut notes = Vec::new();
    if !released.is_empty() {
        notes.push(Note {
            reason: "IPReleased",
            type_: "Normal",
            action: "Allocate",
            note: format!("released IP {}", list(&released)),
        });
    }
    if !after.is_empty() {
        notes.push(Note {
            reason: "IPAllocated",
            type_: "Normal",
            action: "Allocate",
            note: format!("assigned IP {} from pool {pool}", list(after)),
        });
    }
    notes
}

/// `IPReleased` and `IPAllocated` after a status write changed the record, while this
/// term leads: how many were posted, and the reports left owed (the fence lapsed before
/// or during their post).
#[allow(clippy::too_many_arguments)]
async fn status_events(
    client: &Client,
    node: &str,
    fence: &watch::Receiver<Fence>,
    epoch: u64,
    timeout: Duration,
    regarding: &ObjectReference,
    before: &[IpAddr],
    after: &[IpAddr],
    pool: &str,
) -> (usize, Vec<Report>) {
    // The record changed, so an equal existing Event is a true repeat. Tried again
    // (timeouts, 5xx) only while this speaker still leads.
    let still_leads = || {
        let f = fence.borrow();
        f.epoch == epoch && f.leads(Instant::now())
    };
    let mut n = 0;
    let mut owed = Vec::new();
    for note in change_notes(before, after, pool) {
        let mut report = Report::now(note);
        if !still_leads() {
            owed.push(report);
            continue;
        }
        match post_report(client, node, regarding, &report, timeout, &still_leads).await {
            Ok(_) => n += 1,
            Err(e) if still_leads() => tracing::warn!(error = %e, "Event not posted"),
            Err(e) => {
                tracing::info!(error = %e, "Event not posted before the fence lapsed: owed");
                report.tried = true;
                owed.push(report);
            }
        }
    }
    (n, owed)
}

/// Applies a Service's pass-through condition (or removes ours) under its own field
/// manager, so the `status.loadBalancer` apply and this one never remove each other's.
async fn write_pass_through(
    client: &Client,
    svc: &ServiceFacts,
    condition: Option<&Condition>,
    timeout: Duration,
) -> Result<(), String> {
    let ns = svc.namespace().unwrap_or("default");
    let name = &*svc.key.name;
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply(pass::FIELD_MANAGER).force();
    let body = pass::apply_body(name, condition);
    match tokio::time::timeout(
        timeout,
        api.patch_status(name, &params, &Patch::Apply(&body)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("Service {ns}/{name} pass-through condition: {e}")),
        Err(_) => Err(format!(
            "Service {ns}/{name} pass-through condition: timed out"
        )),
    }
}

/// Applies a PoolService's status; `Ok(false)`: it is gone.
async fn write_pool_status(
    client: &Client,
    ps: &PoolService,
    entry: &PoolEntry,
    timeout: Duration,
) -> Result<bool, String> {
    let ns = ps.metadata.namespace.as_deref().unwrap_or("default");
    let name = ps.metadata.name.as_deref().unwrap_or_default();
    let api: Api<PoolService> = Api::namespaced(client.clone(), ns);
    // The transition time moves only when the condition's status does.
    let want_status = if entry.ingress.is_empty() {
        "False"
    } else {
        "True"
    };
    let since = match pools::current(ps).1 {
        Some(c) if c.status == want_status => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    let body = pools::apply_body(name, entry, since, ps.metadata.generation);
    let params = PatchParams::apply(pools::FIELD_MANAGER).force();
    match tokio::time::timeout(
        timeout,
        api.patch_status(name, &params, &Patch::Apply(&body)),
    )
    .await
    {
        Ok(Ok(_)) => {
            tracing::info!(pool_service = %format!("{ns}/{name}"), reason = %entry.reason, "PoolService status written");
            Ok(true)
        }
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(false),
        Ok(Err(e)) => Err(format!("PoolService {ns}/{name} status: {e}")),
        Err(_) => Err(format!("PoolService {ns}/{name} status: timed out")),
    }
}

async fn write_condition(
    client: &Client,
    up: &ConditionUpdate,
    timeout: Duration,
) -> Result<(), String> {
    let ar = ApiResource {
        group: crate::api::GROUP.into(),
        version: crate::api::VERSION.into(),
        api_version: crate::api::API_VERSION.into(),
        kind: up.kind.into(),
        plural: up.plural.into(),
    };
    // PolicyRoutes are cluster-scoped: no namespace in the key.
    let api: Api<DynamicObject> = if up.key.namespace.is_empty() {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), &up.key.namespace, &ar)
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let body = up.apply_body();
    match tokio::time::timeout(
        timeout,
        api.patch_status(&up.key.name, &params, &Patch::Apply(&body)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{} {} conditions: {e}", up.kind, up.key)),
        Err(_) => Err(format!("{} {} conditions: timed out", up.kind, up.key)),
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "writer_scope_tests.rs"]
mod scope_tests;
