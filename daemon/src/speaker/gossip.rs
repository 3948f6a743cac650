//! The gossip's lifecycle as the speaker drives it: start (at once with a key file, or once
//! the key Secret appears in a snapshot), key rotation from that Secret, the seeds that
//! follow the Node list, membership events, and the goodbye on stop.
//!
//! One concern: keeping the [`Membership`] running with the right keys and seeds. Who is
//! live and whether this node may own L2 IPs are decided elsewhere ([`super::guard`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::election::InterfaceFacts;
use crate::membership::{
    KeyRotation, KeySource, Keyring, MemberSnapshot, Membership, MembershipConfig, MembershipEvent,
    MembershipHandle, Timings,
};
use crate::snapshot::Snapshot;

use super::announcing::{AnnounceError, GossipConfig};

/// The gossip of one speaker (idle until its key is known).
pub struct Gossip {
    node: String,
    /// Gossip address and `--member-peers`.
    addr: SocketAddr,
    peers: Vec<SocketAddr>,
    running: Option<Running>,
    /// Keyed from a Secret: its name, and the last problem with it (logged once per change).
    key_secret: Option<String>,
    key_problem: Option<String>,
    /// The seeds last handed to the membership.
    seeds: Vec<SocketAddr>,
    /// The owner-heartbeat targets last handed to the membership.
    heartbeat_targets: BTreeSet<String>,
}

/// A started membership with its event stream and keys.
struct Running {
    handle: MembershipHandle,
    events: Option<mpsc::Receiver<MembershipEvent>>,
    keys: KeyRotation,
    keys_applied: Keyring,
    started: Instant,
}

impl Gossip {
    /// Starts the membership now when the key is given as bytes; with a key Secret, waits
    /// for [`Gossip::follow_key_secret`] to find it.
    pub async fn start(
        node: &str,
        g: &GossipConfig,
        interfaces: &[InterfaceFacts],
    ) -> Result<Gossip, AnnounceError> {
        let mut gossip = Gossip {
            node: node.to_string(),
            addr: g.addr,
            peers: g.peers.clone(),
            running: None,
            key_secret: None,
            key_problem: None,
            seeds: g.peers.clone(),
            heartbeat_targets: BTreeSet::new(),
        };
        match &g.key {
            KeySource::Bytes(bytes) => {
                let keys = Keyring::from_plain_key(&bytes.0)?;
                gossip.start_membership(keys, interfaces).await?;
            }
            KeySource::Secret(name) => {
                tracing::info!(secret = %name, "gossip starts once its key Secret is read");
                gossip.key_secret = Some(name.clone());
            }
        }
        Ok(gossip)
    }

    async fn start_membership(
        &mut self,
        keys: Keyring,
        interfaces: &[InterfaceFacts],
    ) -> Result<(), AnnounceError> {
        let (handle, events) = Membership::start(MembershipConfig {
            node: self.node.clone(),
            bind: self.addr,
            advertise: self.addr,
            seeds: self.peers.clone(),
            keys: keys.clone(),
            timings: Timings::lan(self.peers.len() + 1),
            interfaces: interfaces.to_vec(),
            generation: None,
            own_thread: true,
        })
        .await?;
        self.running = Some(Running {
            handle,
            events: Some(events),
            keys: KeyRotation::new(keys.clone(), Instant::now()),
            keys_applied: keys,
            started: Instant::now(),
        });
        Ok(())
    }

    /// The running membership, if started.
    pub fn handle(&self) -> Option<&MembershipHandle> {
        self.running.as_ref().map(|r| &r.handle)
    }

    /// Every member as the membership sees it (empty before the gossip starts).
    pub fn members(&self) -> Vec<MemberSnapshot> {
        self.handle().map(|m| m.members()).unwrap_or_default()
    }

    /// How long the membership has run (`None`: not started).
    pub fn running_for(&self) -> Option<Duration> {
        self.running.as_ref().map(|r| r.started.elapsed())
    }

    /// The keys last handed to the membership.
    #[cfg(test)]
    pub fn keys_applied(&self) -> Option<&Keyring> {
        self.running.as_ref().map(|r| &r.keys_applied)
    }

    /// Reads the gossip key Secret from a snapshot: starts the gossip on the first usable
    /// keys, follows later changes ([`KeyRotation`]). A missing or malformed Secret keeps
    /// the keys in use (and is logged once). True when the gossip started now.
    pub async fn follow_key_secret(
        &mut self,
        snap: &Snapshot,
        interfaces: &[InterfaceFacts],
    ) -> bool {
        let Some(name) = self.key_secret.clone() else {
            return false;
        };
        let wanted = match snap.secrets.get(name.as_str()) {
            None => Err("not found in the speaker's namespace".to_string()),
            Some(secret) => Keyring::from_secret_data(&secret.data.0).map_err(|e| e.to_string()),
        };
        let keys = match wanted {
            Ok(keys) => keys,
            Err(problem) => {
                if self.key_problem.as_ref() != Some(&problem) {
                    tracing::warn!(secret = %name, %problem, "gossip key Secret unusable; keys unchanged");
                    self.key_problem = Some(problem);
                }
                return false;
            }
        };
        self.key_problem = None;
        let Some(running) = &mut self.running else {
            if let Err(e) = self.start_membership(keys, interfaces).await {
                tracing::warn!(error = %e, "cannot start the gossip; retrying on the next change");
                return false;
            }
            return true;
        };
        if running.keys.update(keys, Instant::now()) {
            tracing::info!(secret = %name, "gossip key Secret changed");
        }
        self.apply_keys().await;
        false
    }

    /// Hands the membership the keys of this moment of a rotation, when they changed.
    pub async fn apply_keys(&mut self) {
        let Some(r) = &mut self.running else { return };
        let now = r.keys.keyring_at(Instant::now());
        if r.keys_applied == now {
            return;
        }
        match r.handle.set_keys(now.clone()).await {
            Ok(()) => {
                tracing::info!(current_key = now.current_id(), "gossip keys applied");
                r.keys_applied = now;
            }
            Err(e) => tracing::warn!(error = %e, "cannot apply gossip keys"),
        }
    }

    /// Tells the other members this node's interfaces changed.
    pub async fn publish_interfaces(&self, interfaces: &[InterfaceFacts]) {
        if let Some(m) = self.handle() {
            if let Err(e) = m.update_facts(interfaces.to_vec()).await {
                tracing::warn!(error = %e, "cannot publish interface facts");
            }
        }
    }

    /// Cluster mode: the gossip seeds follow the Node list (every other Node's InternalIP
    /// at our member port, [`crate::plan::member_seeds`]) plus `--member-peers`; the
    /// membership is told only when they change, and announces to the new ones.
    pub async fn seed_from(&mut self, snap: &Snapshot) {
        let Some(m) = self.running.as_ref().map(|r| &r.handle) else {
            return;
        };
        let mut seeds = crate::plan::member_seeds::member_seeds(snap, &self.node, self.addr);
        seeds.extend(self.peers.iter().filter(|p| **p != self.addr));
        seeds.sort();
        seeds.dedup();
        if seeds == self.seeds {
            return;
        }
        // Size the suspicion timeout for the cluster we now know of, not for the
        // command line's `--member-peers` (none in a DaemonSet).
        let (old, new) = (
            Timings::lan(self.seeds.len() + 1),
            Timings::lan(seeds.len() + 1),
        );
        if old != new {
            if let Err(e) = m.set_timings(&new).await {
                tracing::warn!(error = %e, "cannot resize the gossip timings");
            }
        }
        match m.set_seeds(seeds.clone()).await {
            Ok(()) => self.seeds = seeds,
            Err(e) => tracing::warn!(error = %e, "cannot update the gossip seeds"),
        }
    }

    /// The nodes that get our owner heartbeats ([`crate::membership::heartbeat`]); the
    /// membership is told only when they change.
    pub async fn set_heartbeat_targets(&mut self, targets: &BTreeSet<String>) {
        let Some(m) = self.handle() else { return };
        if *targets == self.heartbeat_targets {
            return;
        }
        match m.set_heartbeat_targets(targets.clone()).await {
            Ok(()) => self.heartbeat_targets = targets.clone(),
            Err(e) => tracing::warn!(error = %e, "cannot set the heartbeat targets"),
        }
    }

    /// Waits for the next membership event (forever while the gossip is not running).
    pub async fn next_event(&mut self) -> Option<MembershipEvent> {
        let ev = match self.running.as_mut().and_then(|r| r.events.as_mut()) {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        };
        if ev.is_none() {
            tracing::warn!("the membership task stopped");
            if let Some(r) = &mut self.running {
                r.events = None;
            }
        }
        ev
    }

    /// Says goodbye (bounded), so the next L2 owners take over at once.
    pub async fn leave(self) {
        let Some(r) = self.running else { return };
        match tokio::time::timeout(Duration::from_millis(300), r.handle.leave()).await {
            Ok(Ok(())) => tracing::info!("said goodbye to the gossip"),
            Ok(Err(e)) => tracing::warn!(error = %e, "goodbye failed"),
            Err(_) => tracing::warn!("goodbye timed out"),
        }
    }
}
