//! The speaker's main loops: take each new snapshot, allocate, report. Standalone mode
//! reports through the log and a local state file; cluster mode additionally writes to the
//! API while it holds the Lease.

mod allocator;
mod announcing;
mod bgp_announcer;
mod gossip;
mod guard;
mod host;
mod l2_announcer;
mod policy_routes;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use allocator::Allocator;
pub use announcing::{AnnounceConfig, AnnounceError, Announcing, GossipConfig};
pub use policy_routes::{config_from_snapshot, PolicyRoutes};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::ipam::Assignments;
use crate::snapshot::{Selection, Snapshot};
use crate::status::announced::{announcements, AnnouncedTracker};
use crate::status::leader::Leadership;
use crate::status::local::LocalState;
use crate::status::policy_route::PolicyRouteStatusWriter;
use crate::status::writer::{StatusWriter, Written};

/// What a speaker is told at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name (Lease identity, Event instance).
    pub node: String,
    /// Which Services are ours and the speaker's namespace.
    pub selection: Selection,
    /// Where to write the local state file, if anywhere.
    pub state_file: Option<PathBuf>,
    /// How this node announces.
    pub announce: AnnounceConfig,
    /// Feeds the local API and the metrics, when they run.
    pub publisher: Option<crate::local_api::publish::Publisher>,
}

fn write_local(cfg: &Config, a: &Assignments) {
    if let Some(path) = &cfg.state_file {
        match LocalState::new(&cfg.node, a).write_if_changed(path) {
            Ok(true) => tracing::debug!(file = %path.display(), "state written"),
            Ok(false) => {}
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot write state"),
        }
    }
}

/// How often the membership view and the split-brain guard are re-checked.
const MEMBERSHIP_TICK: Duration = Duration::from_millis(100);

/// Standalone: allocate and announce on every snapshot and write the local state file.
/// Returns when the source stops or `stop` completes, after a graceful stop of the
/// announcements.
pub async fn run_standalone(
    cfg: Config,
    mut rx: watch::Receiver<Snapshot>,
    stop: impl Future<Output = ()>,
) -> Result<(), AnnounceError> {
    let mut announcing = Announcing::start(&cfg.node, &cfg.announce).await?;
    let policy_routes = PolicyRoutes::start();
    let mut alloc = Allocator::default();
    let mut tick = tokio::time::interval(MEMBERSHIP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    break;
                }
                let t0 = std::time::Instant::now();
                let snap = rx.borrow_and_update().clone();
                let (a, _) = alloc.step(&snap);
                write_local(&cfg, &a);
                announcing.step(&snap, &a).await;
                policy_routes.update(&snap, &cfg.node);
                if let Some(p) = &cfg.publisher {
                    p.observe_reconcile(t0.elapsed());
                    p.publish(view_parts(&announcing, &policy_routes));
                }
            }
            ev = announcing.membership_event() => {
                on_membership_event(&mut announcing, cfg.publisher.as_ref(), ev).await;
            }
            _ = tick.tick() => {
                announcing.tick().await;
                if let Some(p) = cfg.publisher.as_ref().filter(|p| p.due()) {
                    p.publish(view_parts(&announcing, &policy_routes));
                }
            }
            _ = &mut stop => {
                tracing::info!("stopping");
                break;
            }
        }
    }
    announcing.stop().await;
    Ok(())
}

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name (in the speaker's namespace).
    pub name: String,
    /// Term length; renewed every third of it.
    pub duration: Duration,
    /// Timeout of each write.
    pub write_timeout: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            name: crate::access::LEADER_LEASE.into(),
            duration: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Cluster mode: allocate on every snapshot; while leader, write statuses, conditions and
/// Events. Statuses and conditions are re-checked on every Lease round, so a failed write
/// is retried without waiting for a cluster change. Leader or not, every speaker writes its
/// own node's condition on the `PolicyRoute`s after each policy-route pass that changed it.
pub async fn run_cluster(
    cfg: Config,
    lease: LeaseConfig,
    client: kube::Client,
    mut rx: watch::Receiver<Snapshot>,
    stop: impl Future<Output = ()>,
) -> Result<(), AnnounceError> {
    let mut leadership = Leadership::new(
        client.clone(),
        &cfg.selection.namespace,
        &lease.name,
        &cfg.node,
        lease.duration,
    );
    let mut writer = StatusWriter::new(client.clone(), &cfg.node, lease.write_timeout);
    let mut route_status = PolicyRouteStatusWriter::new(client, &cfg.node, lease.write_timeout);
    let mut alloc = Allocator::default();
    let mut ticker = tokio::time::interval(lease.duration / 3);
    let mut current: Option<(Snapshot, Assignments)> = None;
    let mut announcing = Announcing::start(&cfg.node, &cfg.announce).await?;
    let mut policy_routes = PolicyRoutes::start();
    let mut announced = AnnouncedTracker::default();
    let mut tick = tokio::time::interval(MEMBERSHIP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        let mut changes = Vec::new();
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    break;
                }
                let t0 = std::time::Instant::now();
                let snap = rx.borrow_and_update().clone();
                // A follower takes the leader's record (the Services' status) over its own
                // result wherever they differ, so every speaker announces the same IPs.
                let (a, c) = if leadership.is_leader() {
                    alloc.step(&snap)
                } else {
                    alloc.step_following(&snap)
                };
                write_local(&cfg, &a);
                announcing.seed_members_from(&snap).await;
                announcing.step(&snap, &a).await;
                policy_routes.update(&snap, &cfg.node);
                if let Some(p) = &cfg.publisher {
                    p.observe_reconcile(t0.elapsed());
                    publish_cluster(p, view_parts(&announcing, &policy_routes), leadership.holder());
                }
                changes = c;
                current = Some((snap, a));
            }
            _ = ticker.tick() => {
                leadership.tick(Timestamp::now()).await;
                announcing.set_api_reachable(leadership.api_reachable());
            }
            ev = announcing.membership_event() => {
                on_membership_event(&mut announcing, cfg.publisher.as_ref(), ev).await;
            }
            () = policy_routes.changed() => {}
            _ = tick.tick() => {
                announcing.tick().await;
                if let Some(p) = cfg.publisher.as_ref().filter(|p| p.due()) {
                    publish_cluster(p, view_parts(&announcing, &policy_routes), leadership.holder());
                }
                continue;
            }
            _ = &mut stop => {
                tracing::info!("stopping");
                break;
            }
        }
        if let Some((snap, _)) = &current {
            route_status
                .write(snap, &policy_routes.report(), Time(Timestamp::now()))
                .await;
        }
        if !leadership.is_leader() {
            continue;
        }
        if let Some((snap, a)) = &current {
            let written = writer
                .write(snap, a, &changes, Time(Timestamp::now()))
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
            let now = announcements(snap, a, announcing.candidates(snap));
            let todo = announced.changes(&now);
            let mut out = Written::default();
            for (k, v) in writer.write_announced(snap, &todo, &mut out).await {
                announced.reported(k, v);
            }
        }
    }
    announcing.stop().await;
    Ok(())
}

/// Publishes the local view in cluster mode, naming the Lease holder as the last round
/// read it (leader and followers alike).
fn publish_cluster(
    p: &crate::local_api::publish::Publisher,
    mut parts: crate::local_api::publish::ViewParts<'_>,
    holder: Option<&str>,
) {
    parts.leader = holder.map(str::to_string);
    p.publish(parts);
}

/// What the local API shows: the announcers' state and the policy-route task's last report.
fn view_parts<'a>(
    announcing: &'a Announcing,
    policy_routes: &PolicyRoutes,
) -> crate::local_api::publish::ViewParts<'a> {
    let mut parts = announcing.view_parts();
    parts.policy_routes = policy_routes.report();
    parts
}

/// A membership event, the same in both run modes: log it, count it for the view and the
/// failover histogram, and re-check ownership at once.
async fn on_membership_event(
    announcing: &mut Announcing,
    publisher: Option<&crate::local_api::publish::Publisher>,
    ev: Option<crate::membership::MembershipEvent>,
) {
    if let Some(ev) = ev {
        tracing::info!(event = ?ev, "membership");
        if let Some(p) = publisher {
            p.on_membership_event(&ev);
        }
    }
    announcing.tick().await;
}
