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
use crate::cloud_lb::driver::CloudDriver;
use crate::cloud_lb::CloudState;
use crate::election::Candidate;
use crate::snapshot::Snapshot;
use crate::status::leader::{Fence, LeaderHandle, Leadership};
use crate::status::policy_route::PolicyRouteStatusWriter;
use crate::status::pool_ingress::{self, CloudSender};
use crate::status::pool_service_writer::PoolServiceWriter;
use crate::status::writer::{Allocated, WriterConfig, WriterHandle};

use super::{Config, LeaseConfig};

/// How often the witness probe asks the API server while the split-brain guard wants it
/// fresh ([`super::guard::WITNESS_TTL`] is three of these).
const PROBE_PERIOD: Duration = Duration::from_secs(1);

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

/// The cluster loop's latest results for this node's `PolicyRoute` conditions, coalesced.
#[derive(Default)]
struct Pending {
    current: Option<Snapshot>,
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

/// Handles to the API tasks: the Lease ([`LeaderHandle`]), the allocator of record
/// ([`WriterHandle`]), this node's `PolicyRoute` conditions and the witness probe.
pub struct ApiTask {
    leader: LeaderHandle,
    writer: WriterHandle,
    pool_services: PoolServiceWriter,
    cloud: Option<CloudDriver>,
    /// Where the cloud driver publishes its reports (see [`Self::cloud_sender`]).
    cloud_reports: CloudSender,
    mailbox: Arc<Mailbox>,
    state: watch::Receiver<ApiState>,
    wanted: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ApiTask {
    /// Starts the Lease, the writer, the route-condition writer and the witness probe.
    pub fn spawn(client: kube::Client, cfg: &Config, lease: &LeaseConfig) -> ApiTask {
        let leader = Leadership::new(
            client.clone(),
            &cfg.selection.namespace,
            &lease.name,
            &cfg.node,
            lease.timings,
        )
        .spawn();
        // A write must fit inside the fence between two renewals.
        let t = lease.timings;
        let write_timeout = lease
            .write_timeout
            .min(t.renew_deadline.saturating_sub(t.retry_period * 2));
        // The cloud load-balancer driver's reports: the writer of record writes cloud-class
        // pools' statuses from them, the fan-out keeps their finalizer by them.
        let (cloud_reports, cloud_rx) = pool_ingress::channel();
        let writer = WriterHandle::spawn(
            client.clone(),
            WriterConfig {
                write_timeout,
                cloud: cloud_rx.clone(),
                ..WriterConfig::new(&cfg.node, cfg.selection.clone())
            },
            leader.fence(),
        );
        let pool_services = PoolServiceWriter::spawn(
            client.clone(),
            &cfg.node,
            leader.fence(),
            write_timeout,
            cloud_rx,
        );
        // Cloud load balancers: their own task, fenced by the same Lease.
        let cloud = cfg.cloud.clone().map(|c| {
            CloudDriver::spawn(
                Some(client.clone()),
                &cfg.node,
                c,
                leader.fence(),
                write_timeout,
                cloud_reports.clone(),
            )
        });
        let mailbox = Arc::new(Mailbox::default());
        let (state_tx, state) = watch::channel(ApiState::default());
        let state_tx = Arc::new(state_tx);
        let (wanted, wanted_rx) = watch::channel(false);
        let routes = routes_task(client.clone(), cfg.clone(), write_timeout, mailbox.clone());
        let fence = fence_task(leader.fence(), state_tx.clone());
        let probe = probe_task(client, wanted_rx, state_tx);
        ApiTask {
            leader,
            writer,
            pool_services,
            cloud,
            cloud_reports,
            mailbox,
            state,
            wanted,
            tasks: vec![
                tokio::spawn(routes),
                tokio::spawn(fence),
                tokio::spawn(probe),
            ],
        }
    }

    /// Where the cloud load-balancer driver publishes its [`CloudReports`](crate::status::pool_ingress::CloudReports).
    pub fn cloud_sender(&self) -> CloudSender {
        self.cloud_reports.clone()
    }

    /// What the API side learnt; `changed()` wakes the loop.
    pub fn state(&mut self) -> &mut watch::Receiver<ApiState> {
        &mut self.state
    }

    /// Whether this speaker leads now (its fence is open).
    pub fn is_leader(&self) -> bool {
        self.leader.is_leader()
    }

    /// A watch of the allocation of record while this speaker leads (see
    /// [`WriterHandle::allocated`]).
    pub fn allocated(&self) -> watch::Receiver<Option<Allocated>> {
        self.writer.allocated()
    }

    /// The Lease holder, as of the last Lease round.
    pub fn holder(&self) -> Option<String> {
        self.leader.holder()
    }

    /// A new snapshot, with this speaker's election candidates (for `AnnouncedBy`). The
    /// writer allocates from it while this speaker is the allocator of record.
    pub fn submit(&self, snap: &Snapshot, candidates: Vec<Candidate>) {
        self.writer.submit(snap.clone(), candidates);
        self.pool_services.submit(snap.clone());
        if let Some(c) = &self.cloud {
            c.submit(snap.clone());
        }
        self.mailbox.put(|p| p.current = Some(snap.clone()));
    }

    /// The cloud driver's state (per-(Service, pool) reports), when one runs.
    pub fn cloud_state(&self) -> Option<watch::Receiver<Arc<CloudState>>> {
        self.cloud.as_ref().map(CloudDriver::state)
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

    /// Stops the tasks: no status write starts any more, then the Lease is handed back
    /// (bounded by the Lease request timeout).
    pub async fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
        self.writer.stop().await;
        self.leader.release().await;
    }
}

/// Follows the fence for the loop: leader, holder, and each Lease round that reached the
/// API server as a contact.
async fn fence_task(mut fence: watch::Receiver<Fence>, state: Arc<watch::Sender<ApiState>>) {
    loop {
        let f = fence.borrow_and_update().clone();
        state.send_if_modified(|s| {
            let before = s.clone();
            s.leader = f.leads(tokio::time::Instant::now());
            s.holder = f.holder.clone();
            if let Some(at) = f.contact {
                s.contact = Some(at.into_std());
            }
            *s != before
        });
        if fence.changed().await.is_err() {
            return;
        }
    }
}

/// This node's own conditions on the `PolicyRoute`s (leader or not), written when they
/// changed.
async fn routes_task(client: kube::Client, cfg: Config, timeout: Duration, mailbox: Arc<Mailbox>) {
    let mut route_status = PolicyRouteStatusWriter::new(client, &cfg.node, timeout);
    let mut current: Option<Snapshot> = None;
    let mut routes = TaskReport::default();
    loop {
        mailbox.notify.notified().await;
        let p = mailbox.take();
        if let Some(c) = p.current {
            current = Some(c);
        }
        if let Some(r) = p.routes {
            routes = r;
        }
        if let Some(snap) = &current {
            route_status
                .write(snap, &routes, Time(Timestamp::now()))
                .await;
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
