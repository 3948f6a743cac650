//! The speaker's main loops: take each new snapshot, allocate, report. Standalone mode
//! reports through the log and a local state file; cluster mode additionally writes to the
//! API while it holds the Lease.

mod allocator;
mod announcing;
mod api_task;
mod bgp_announcer;
mod gossip;
mod guard;
mod host;
mod l2_announcer;
mod policy_routes;
pub mod restart_marker;
mod shown;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use allocator::{is_recorded, recorded_only, Allocator};
pub use announcing::{AnnounceConfig, AnnounceError, Announcing, BgpStop, GossipConfig};
pub use api_task::{ApiState, ApiTask};
pub use policy_routes::{config_from_snapshot, PolicyRoutes};
use shown::{Published, Shown};

use tokio::sync::watch;

use crate::ipam::Assignments;
use crate::snapshot::{Selection, Snapshot};
use crate::status::local::LocalState;

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
    /// Cloud load balancers for PoolServices of a cloud class (`--elb-*`), if configured.
    pub cloud: Option<crate::cloud_lb::CloudConfig>,
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
                    if p.changed() {
                        p.publish(view_parts(&announcing, &policy_routes));
                    }
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
    /// Lease duration, renew deadline and retry period.
    pub timings: crate::status::leader::LeaseTimings,
    /// Timeout of each status write (a write starts only if the Lease outlasts it).
    pub write_timeout: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            name: crate::access::LEADER_LEASE.into(),
            timings: crate::status::leader::LeaseTimings::default(),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// Cluster mode: sources (snapshots, membership, interfaces, the API side's state) →
/// decide (allocate, plan, guard) → actuate (BGP, L2) → report (local view, and the API
/// tasks through a mailbox that never blocks, [`ApiTask`]). Nothing on this loop awaits
/// an API round trip: a failover is acted on while the API server is slow or frozen.
/// Every speaker announces only what the record (the Services' status) shows; the
/// allocator of record writes it from its own task while its Lease fence is open.
///
/// One allocator per speaker: while the allocator of record runs here (this speaker
/// leads), the loop announces each snapshot from the allocation of record of that very
/// snapshot (published by the writer a pass after the snapshot is handed to it; the loop
/// goes on meanwhile) and drops its own allocator; when the writer stops allocating (the
/// fence closed, a term starts over), the loop's own allocator starts again from the
/// record in the current snapshot, as a follower's does, and follows it.
pub async fn run_cluster(
    cfg: Config,
    lease: LeaseConfig,
    client: kube::Client,
    mut rx: watch::Receiver<Snapshot>,
    stop: impl Future<Output = ()>,
) -> Result<(), AnnounceError> {
    let mut api = ApiTask::spawn(client, &cfg, &lease);
    let mut allocated = api.allocated();
    // What is shown of each snapshot, and this speaker's own allocator.
    let mut shown = Shown::default();
    let mut current: Option<Snapshot> = None;
    let mut candidates = Vec::new();
    let mut announcing = Announcing::start(&cfg.node, &cfg.announce).await?;
    let mut policy_routes = PolicyRoutes::start();
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
                // While the allocator of record runs here, this snapshot is shown once it
                // has allocated for it.
                let publishing = allocated.borrow().is_some();
                if let Some(a) = shown.snapshot(&snap, publishing) {
                    show(&cfg, &mut announcing, &snap, &a).await;
                }
                policy_routes.update(&snap, &cfg.node);
                if let Some(p) = &cfg.publisher {
                    p.observe_reconcile(t0.elapsed());
                    if p.changed() {
                        publish_cluster(p, view_parts(&announcing, &policy_routes), &api);
                    }
                }
                candidates = announcing.candidates(&snap);
                api.submit(&snap, candidates.clone());
                api.want_witness(announcing.witness_needed());
                current = Some(snap);
            }
            r = allocated.changed(), if shown.writer_runs() => {
                // A writer task that ended (it never should before the loop) counts as
                // not allocating: its last published allocation must not hold the loop's
                // own allocator back for good.
                let published = match r {
                    Ok(()) => Published::Now(allocated.borrow_and_update().clone()),
                    Err(_) => Published::Ended,
                };
                let Some(a) = shown.published(current.as_ref(), published) else { continue };
                let Some(snap) = current.clone() else { continue };
                show(&cfg, &mut announcing, &snap, &a).await;
                if let Some(p) = &cfg.publisher {
                    if p.changed() {
                        publish_cluster(p, view_parts(&announcing, &policy_routes), &api);
                    }
                }
                // The step may have started gossip: its members are candidates too.
                let now = announcing.candidates(&snap);
                if now != candidates {
                    candidates = now;
                    api.submit(&snap, candidates.clone());
                }
                api.want_witness(announcing.witness_needed());
            }
            ev = announcing.membership_event() => {
                on_membership_event(&mut announcing, cfg.publisher.as_ref(), ev).await;
                if let Some(snap) = &current {
                    let now = announcing.candidates(snap);
                    if now != candidates {
                        candidates = now;
                        api.submit(snap, candidates.clone());
                    }
                }
                api.want_witness(announcing.witness_needed());
            }
            r = api.state().changed() => {
                if r.is_err() {
                    tracing::warn!("the API task stopped");
                    break;
                }
                let contact = api.state().borrow_and_update().contact;
                announcing.set_witness(contact);
            }
            () = policy_routes.changed() => {
                api.routes(policy_routes.report());
            }
            _ = tick.tick() => {
                announcing.tick().await;
                api.want_witness(announcing.witness_needed());
                if let Some(p) = cfg.publisher.as_ref().filter(|p| p.due()) {
                    publish_cluster(p, view_parts(&announcing, &policy_routes), &api);
                }
            }
            _ = &mut stop => {
                tracing::info!("stopping");
                break;
            }
        }
    }
    // No status write in flight, then the Lease handed to the next speaker at once; side
    // by side with the goodbye and the L2 handoff, which never wait on the API server.
    tokio::join!(api.stop(), announcing.stop());
    Ok(())
}

/// Announces what the record shows of a snapshot's allocation (`shown`) and writes the
/// local state file.
async fn show(cfg: &Config, announcing: &mut Announcing, snap: &Snapshot, shown: &Assignments) {
    write_local(cfg, shown);
    announcing.step(snap, shown).await;
    // After the step: a gossip keyed from a Secret starts in it, and must be seeded from
    // this very snapshot's Nodes (the next one may be long coming).
    announcing.seed_members_from(snap).await;
}

/// Publishes the local view in cluster mode, naming the Lease holder as the last round
/// read it (leader and followers alike).
fn publish_cluster(
    p: &crate::local_api::publish::Publisher,
    mut parts: crate::local_api::publish::ViewParts<'_>,
    api: &ApiTask,
) {
    parts.leader = api.holder();
    parts.cloud = api.cloud_state().map(|rx| rx.borrow().clone());
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
        if let crate::membership::MembershipEvent::LostContact { .. } = ev {
            announcing.reannounce().await;
        }
    }
    announcing.tick().await;
}
