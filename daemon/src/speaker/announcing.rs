//! The announcing half of the run loop: plans BGP and L2 for each (snapshot, allocation),
//! follows the membership and the host's interfaces, applies the split-brain guard, and
//! stops gracefully. Each concern is its own part:
//!
//! ```text
//!  snapshot + allocation ──► BgpAnnouncer (plan::bgp ──► BgpActuator)
//!                        └─► L2Announcer  (plan::l2  ──► L2Actuator)
//!  Gossip (lifecycle, keys, seeds) ──► L2Guard (members, quorum) ─┘ ▲
//!  InterfacePoller (netlink, every second) ─────────────────────────┘
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use edgelb_bgp::SpeakerError;

use super::bgp_announcer::BgpAnnouncer;
pub use super::bgp_announcer::BgpStop;
use super::gossip::Gossip;
use super::guard::L2Guard;
use super::host::InterfacePoller;
use super::l2_announcer::L2Announcer;
use crate::actuate::bgp::BgpActuator;
use crate::actuate::l2::L2Actuator;
use crate::ipam::Assignments;
use crate::membership::{AuthError, KeySource, MembershipError, MembershipEvent};
use crate::plan::bgp::{BgpDefaults, NodeFacts};
use crate::plan::l2::{self as l2_plan, L2Node, L2Plan};
use crate::snapshot::Snapshot;

/// Gossip settings of this speaker.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Where this speaker gossips (node address and port).
    pub addr: SocketAddr,
    /// Other speakers to join through.
    pub peers: Vec<SocketAddr>,
    /// Where the shared key (at least 16 bytes) comes from; never logged.
    pub key: KeySource,
}

/// What announcing needs besides the cluster objects.
#[derive(Clone, Debug)]
pub struct AnnounceConfig {
    /// Accept BGP connections here (`None`: active sessions only).
    pub bgp_listen: Option<SocketAddr>,
    /// This node's addresses, after the Node object's `InternalIP`s (router id, L2 interface).
    pub node_addresses: Vec<IpAddr>,
    /// Session settings that are not in the CRDs.
    pub bgp: BgpDefaults,
    /// Gossip membership; `None`: every Node counts as live (no failover between speakers).
    pub gossip: Option<GossipConfig>,
    /// On a graceful stop, how long this node keeps answering for its L2 IPs after saying
    /// goodbye, so that the next owner announces before this one goes quiet.
    pub handoff_grace: Duration,
    /// What a stop does to graceful restart peers.
    pub bgp_stop: BgpStop,
    /// The graceful restart marker ([`super::restart_marker`]); `None`: no R bit, ever.
    pub restart_marker: Option<std::path::PathBuf>,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            bgp_listen: None,
            node_addresses: Vec::new(),
            bgp: BgpDefaults::default(),
            gossip: None,
            handoff_grace: Duration::from_millis(300),
            bgp_stop: BgpStop::default(),
            restart_marker: None,
        }
    }
}

/// Why announcing could not start.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The BGP speaker (listener) could not start.
    #[error(transparent)]
    Bgp(#[from] SpeakerError),
    /// The gossip key is unusable.
    #[error("gossip key: {0}")]
    Key(#[from] AuthError),
    /// The membership could not start.
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// Plans and applies announcements: the parts below, each with one concern, composed.
pub struct Announcing {
    node: String,
    extra_addresses: Vec<IpAddr>,
    grace: Duration,
    bgp: BgpAnnouncer,
    l2: L2Announcer,
    host: InterfacePoller,
    /// `None` without gossip (every Node counts as live).
    gossip: Option<Gossip>,
    guard: L2Guard,
    last: Option<(Snapshot, Assignments)>,
}

impl Announcing {
    /// Starts the BGP speaker, reads the interfaces and joins the gossip.
    pub async fn start(node: &str, cfg: &AnnounceConfig) -> Result<Announcing, AnnounceError> {
        let bgp = BgpAnnouncer::start(
            cfg.bgp_listen,
            cfg.bgp.clone(),
            cfg.bgp_stop,
            cfg.restart_marker.clone(),
        )?;
        let mut host = InterfacePoller::new();
        host.read().await;
        let (gossip, guard) = match &cfg.gossip {
            Some(g) => (
                Some(Gossip::start(node, g, host.current()).await?),
                L2Guard::gossip(),
            ),
            None => (None, L2Guard::static_members()),
        };
        let mut a = Announcing {
            node: node.to_string(),
            extra_addresses: cfg.node_addresses.clone(),
            grace: cfg.handoff_grace,
            bgp,
            l2: L2Announcer::new(),
            host,
            gossip,
            guard,
            last: None,
        };
        a.refresh_members();
        Ok(a)
    }

    /// Re-reads members; true when they changed.
    fn refresh_members(&mut self) -> bool {
        let Some(g) = &self.gossip else { return false };
        let Some(running_for) = g.running_for() else {
            return false;
        };
        self.guard
            .refresh(&g.members(), running_for, Instant::now())
    }

    /// Cluster mode: when the API server last answered (the split-brain guard's
    /// tie-breaking witness, [`super::guard::WITNESS_TTL`]).
    pub fn set_witness(&mut self, at: Option<Instant>) {
        self.guard.set_witness(at);
    }

    /// Whether the split-brain guard wants the witness kept fresh (a scope where one more
    /// loss would need the API server's tie-break).
    pub fn witness_needed(&self) -> bool {
        self.guard.witness_needed()
    }

    /// This node as the L2 planner sees it.
    fn me(&self, snap: &Snapshot) -> L2Node {
        let facts = NodeFacts::from_snapshot(snap, &self.node, &self.extra_addresses);
        L2Node {
            name: self.node.clone(),
            interfaces: self.host.current().to_vec(),
            addresses: facts.addresses,
        }
    }

    /// The election candidates as this speaker sees them (for the leader's `AnnouncedBy`).
    pub fn candidates(&self, snap: &Snapshot) -> Vec<crate::election::Candidate> {
        l2_plan::candidates(snap, &self.me(snap), self.guard.members())
    }

    /// Cluster mode: the gossip seeds follow the Node list ([`Gossip::seed_from`]).
    pub async fn seed_members_from(&mut self, snap: &Snapshot) {
        if let Some(g) = &mut self.gossip {
            g.seed_from(snap).await;
        }
    }

    /// Waits for the next membership event (forever without gossip).
    pub async fn membership_event(&mut self) -> Option<MembershipEvent> {
        match &mut self.gossip {
            Some(g) => g.next_event().await,
            None => std::future::pending().await,
        }
    }

    /// Periodic work: members, quorum and (every second) interfaces; re-plans L2 on change.
    pub async fn tick(&mut self) {
        if let Some(g) = &mut self.gossip {
            g.apply_keys().await;
        }
        let mut changed = self.refresh_members();
        changed |= self.guard.due(Instant::now());
        if self.host.due() && self.host.read().await {
            if let Some(g) = &self.gossip {
                g.publish_interfaces(self.host.current()).await;
            }
            changed = true;
        }
        if changed || self.l2.hold_ended(Instant::now()) {
            self.apply_l2(false).await;
        }
    }

    /// We may have been replaced without knowing it (frozen, cut off, declared down while
    /// alive): release our L2 IPs and own them again, announcing, after the takeover hold,
    /// so that whoever answers for an IP has announced it since anyone else did and two
    /// nodes never answer at once.
    pub async fn reannounce(&mut self) {
        if self.l2.hold_all() {
            self.apply_l2(false).await;
        }
    }

    /// Plans for a new snapshot and allocation and converges both actuators.
    pub async fn step(&mut self, snap: &Snapshot, a: &Assignments) {
        if let Some(g) = &mut self.gossip {
            if g.follow_key_secret(snap, self.host.current()).await {
                self.refresh_members();
            }
        }
        self.last = Some((snap.clone(), a.clone()));
        let me = NodeFacts::from_snapshot(snap, &self.node, &self.extra_addresses);
        self.bgp.apply(snap, a, &me);
        self.apply_l2(true).await;
    }

    /// Re-plans L2 ([`L2Announcer::apply`]).
    async fn apply_l2(&mut self, new_inputs: bool) {
        let Some((snap, a)) = &self.last else { return };
        let me = self.me(snap);
        self.l2
            .apply(snap, a, &me, &mut self.guard, new_inputs)
            .await;
        if let Some(g) = &mut self.gossip {
            g.set_heartbeat_targets(self.l2.heartbeat_targets()).await;
        }
    }

    /// The BGP actuator (peer status for the local API).
    pub fn bgp(&self) -> &BgpActuator {
        self.bgp.actuator()
    }

    /// The L2 actuator (owned IPs and stats for the local API).
    pub fn l2(&self) -> &L2Actuator {
        self.l2.actuator()
    }

    /// The last L2 plan (owners of every L2 IP).
    pub fn l2_plan(&self) -> &L2Plan {
        self.l2.plan()
    }

    /// What the local API and the metrics show (see `local_api::publish`).
    pub fn view_parts(&self) -> crate::local_api::publish::ViewParts<'_> {
        crate::local_api::publish::ViewParts {
            last: self.last.as_ref().map(|(s, a)| (s, a)),
            peers: self.bgp().peers(),
            bgp_tables: Some(self.bgp().tables()),
            l2_stats: self.l2().stats(),
            l2_held: {
                let (now, wall) = (std::time::Instant::now(), std::time::SystemTime::now());
                self.l2
                    .held()
                    .into_iter()
                    .map(|(ip, until)| (ip, wall + until.saturating_duration_since(now)))
                    .collect()
            },
            members: self
                .gossip
                .as_ref()
                .map(Gossip::members)
                .unwrap_or_default(),
            leader: None,
            policy_routes: Default::default(),
            candidates: self
                .last
                .as_ref()
                .map(|(s, _)| self.candidates(s))
                .unwrap_or_default(),
            cloud: None,
        }
    }

    /// Graceful stop: goodbye to the gossip (the next L2 owners take over at once), BGP's
    /// stop ([`BgpAnnouncer::stop`]: Cease to every peer, or a planned restart for graceful
    /// restart peers), and after the handoff grace stop answering for L2 IPs. Bounded well
    /// under 2 s.
    pub async fn stop(self) {
        let Announcing {
            bgp,
            l2,
            gossip,
            grace,
            ..
        } = self;
        let mut l2 = l2.into_actuator();
        let started = Instant::now();
        // The grace only matters when there is something to hand over.
        let grace = if l2.owned().values().all(|ips| ips.is_empty()) {
            Duration::ZERO
        } else {
            grace
        };
        // Keep answering through the grace, but announce nothing more: a scheduled repeat
        // of our gratuitous ARP after the next owner's would turn the clients back to us
        // right before we go. Bounded (an in-memory hand-off to the interface tasks).
        if !grace.is_zero() {
            let quiet = tokio::time::timeout(Duration::from_millis(100), l2.go_quiet()).await;
            for e in quiet.unwrap_or_default() {
                tracing::warn!(error = %e, "l2 quiet");
            }
        }
        if let Some(g) = gossip {
            g.leave().await;
        }
        let l2_stop = async {
            tokio::time::sleep(grace.saturating_sub(started.elapsed())).await;
            l2.shutdown().await;
        };
        let all = async {
            tokio::join!(bgp.stop(), l2_stop);
        };
        if tokio::time::timeout(Duration::from_millis(1500), all)
            .await
            .is_err()
        {
            tracing::warn!("graceful stop timed out");
        }
        tracing::info!(took = ?started.elapsed(), "stopped");
    }
}

#[cfg(test)]
#[path = "announcing_tests.rs"]
mod tests;
