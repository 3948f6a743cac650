//! The speaker's main loops: take each new snapshot, allocate, report. Standalone mode
//! reports through the log and a local state file; cluster mode additionally writes to the
//! API while it holds the Lease.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::ipam::{allocate, Assignments};
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

/// Standalone: allocate on every snapshot and write the local state file. Returns when the
/// source stops.
pub async fn run_standalone(cfg: Config, mut rx: watch::Receiver<Snapshot>) {
    let mut alloc = Allocator::default();
    while rx.changed().await.is_ok() {
        let snap = rx.borrow_and_update().clone();
        let (a, _) = alloc.step(&snap);
        write_local(&cfg, &a);
    }
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
