//! The speaker's main loops: take each new snapshot, allocate, report. Standalone mode
//! reports through the log and a local state file; cluster mode additionally writes to the
//! API while it holds the Lease.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use edgelb_bgp::{Speaker, SpeakerConfig, SpeakerError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::actuate::bgp::BgpActuator;
use crate::ipam::{allocate, Assignments};
use crate::plan::bgp::{self as bgp_plan, BgpDefaults, NodeFacts};
use crate::snapshot::{Selection, Snapshot};
use crate::status::changes::{diff, Change};
use crate::status::leader::Leadership;
use crate::status::local::LocalState;
use crate::status::writer::StatusWriter;

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
}

/// What announcing needs besides the cluster objects.
#[derive(Clone, Debug, Default)]
pub struct AnnounceConfig {
    /// Accept BGP connections here (`None`: active sessions only).
    pub bgp_listen: Option<SocketAddr>,
    /// This node's addresses, after the Node object's `InternalIP`s (router id, L2 interface).
    pub node_addresses: Vec<IpAddr>,
    /// Session settings that are not in the CRDs.
    pub bgp: BgpDefaults,
}

/// Plans and applies announcements for each new (snapshot, allocation).
pub struct Announcing {
    node: String,
    extra_addresses: Vec<IpAddr>,
    defaults: BgpDefaults,
    bgp: BgpActuator,
}

impl Announcing {
    /// Starts the BGP speaker (no peers yet). Needs a tokio runtime.
    pub fn new(cfg: &Config) -> Result<Announcing, SpeakerError> {
        // Every peer carries its own router id from the plan; this one is never sent.
        let speaker = Speaker::new(SpeakerConfig {
            router_id: Ipv4Addr::UNSPECIFIED,
            listen: cfg.announce.bgp_listen,
        })?;
        Ok(Announcing {
            node: cfg.node.clone(),
            extra_addresses: cfg.announce.node_addresses.clone(),
            defaults: cfg.announce.bgp.clone(),
            bgp: BgpActuator::new(speaker),
        })
    }

    /// Plans for this node and converges the actuators; problems and errors are logged.
    pub fn step(&mut self, snap: &Snapshot, a: &Assignments) {
        let me = NodeFacts::from_snapshot(snap, &self.node, &self.extra_addresses);
        let plan = bgp_plan::plan(snap, a, &me, &self.defaults);
        for p in &plan.problems {
            tracing::warn!(problem = %p, "bgp plan");
        }
        let (done, errors) = self.bgp.apply(&plan);
        for e in errors {
            tracing::warn!(error = %e, "bgp apply");
        }
        if done != Default::default() {
            let routes: usize = plan.peers.values().map(|p| p.routes.len()).sum();
            tracing::info!(
                peers = plan.peers.len(),
                routes,
                peers_set = done.peers_set,
                peers_removed = done.peers_removed,
                tables_set = done.tables_set,
                "bgp applied"
            );
        }
    }

    /// The BGP actuator (peer status for the local API).
    pub fn bgp(&self) -> &BgpActuator {
        &self.bgp
    }

    /// Graceful stop: Cease / Administrative Shutdown (RFC 8203) to every peer, bounded.
    pub async fn stop(self) {
        self.bgp.shutdown("edgelb-speaker stopping").await;
    }
}

/// Allocation across snapshots: keeps the previous result so that IPs stay put.
#[derive(Debug, Default)]
pub struct Allocator {
    previous: Option<Assignments>,
}

impl Allocator {
    /// Allocates for `snap`; the first run is seeded from the Services' status so that a
    /// restart never moves an IP. Returns the result and what changed, each change logged.
    pub fn step(&mut self, snap: &Snapshot) -> (Assignments, Vec<Change>) {
        let previous = self
            .previous
            .take()
            .unwrap_or_else(|| Assignments::from_status(snap));
        let next = allocate(snap, &previous);
        let changes = diff(&previous, &next);
        for c in &changes {
            let service = c.key().service.to_string();
            match c {
                Change::Failed { .. } => {
                    tracing::warn!(%service, reason = c.reason(), message = %c.message(), "allocation")
                }
                _ => {
                    tracing::info!(%service, reason = c.reason(), message = %c.message(), "allocation")
                }
            }
        }
        self.previous = Some(next.clone());
        (next, changes)
    }
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

/// Standalone: allocate and announce on every snapshot and write the local state file.
/// Returns when the source stops or `stop` completes, after a graceful stop of the
/// announcements.
pub async fn run_standalone(
    cfg: Config,
    mut rx: watch::Receiver<Snapshot>,
    stop: impl Future<Output = ()>,
) -> Result<(), SpeakerError> {
    let mut announcing = Announcing::new(&cfg)?;
    let mut alloc = Allocator::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    break;
                }
                let snap = rx.borrow_and_update().clone();
                let (a, _) = alloc.step(&snap);
                write_local(&cfg, &a);
                announcing.step(&snap, &a);
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
            name: "edgelb-leader".into(),
            duration: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Cluster mode: allocate on every snapshot; while leader, write statuses, conditions and
/// Events. Statuses and conditions are re-checked on every Lease round, so a failed write
/// is retried without waiting for a cluster change.
pub async fn run_cluster(
    cfg: Config,
    lease: LeaseConfig,
    client: kube::Client,
    mut rx: watch::Receiver<Snapshot>,
) {
    let mut leadership = Leadership::new(
        client.clone(),
        &cfg.selection.namespace,
        &lease.name,
        &cfg.node,
        lease.duration,
    );
    let mut writer = StatusWriter::new(client, &cfg.node, lease.write_timeout);
    let mut alloc = Allocator::default();
    let mut ticker = tokio::time::interval(lease.duration / 3);
    let mut current: Option<(Snapshot, Assignments)> = None;
    loop {
        let mut changes = Vec::new();
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    return;
                }
                let snap = rx.borrow_and_update().clone();
                let (a, c) = alloc.step(&snap);
                write_local(&cfg, &a);
                changes = c;
                current = Some((snap, a));
            }
            _ = ticker.tick() => {
                leadership.tick(Timestamp::now()).await;
            }
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
        }
    }
}
