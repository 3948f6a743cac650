//! The announcing half of the run loop: plans BGP and L2 for each (snapshot, allocation),
//! follows the membership and the host's interfaces, applies the split-brain guard, and
//! stops gracefully.
//!
//! ```text
//!  snapshot + allocation ──► plan::bgp ──► BgpActuator (edgelb_bgp::Speaker)
//!                        └─► plan::l2 ──► L2Actuator  (edgelb_l2::Announcer)
//!  membership (events, members, quorum) ─┘      ▲
//!  host interfaces (netlink, every second) ─────┘
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use edgelb_bgp::{Speaker, SpeakerConfig, SpeakerError};
use tokio::sync::mpsc;

use crate::actuate::bgp::BgpActuator;
use crate::actuate::interfaces::HostInterfaces;
use crate::actuate::l2::L2Actuator;
use crate::election::{may_own_l2, InterfaceFacts};
use crate::ipam::Assignments;
use crate::membership::{
    AuthError, Health, KeyRotation, KeySource, Keyring, Membership, MembershipConfig,
    MembershipError, MembershipEvent, MembershipHandle, Timings,
};
use crate::plan::bgp::{self as bgp_plan, BgpDefaults, NodeFacts};
use crate::plan::l2::{self as l2_plan, L2Node, L2Plan, Members};
use crate::plan::l2_incremental::L2Planner;
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

/// What a stop of the speaker (SIGTERM, SIGINT) does to BGP peers with graceful restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BgpStop {
    /// A planned restart (RFC 4724 §4.1): the sessions close without a NOTIFICATION, the
    /// routers keep our routes for the restart time, the next start sets the R bit.
    #[default]
    Restart,
    /// Withdraw: Cease / Administrative Shutdown (a Hard Reset with RFC 8538 peers).
    Withdraw,
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

/// How often interfaces are re-read.
const INTERFACE_POLL: Duration = Duration::from_secs(1);

/// With gossip, a starting speaker owns no L2 IP until it has seen another live member or
/// this long has passed (then it is alone: a single-node cluster). Without the wait, a
/// restarted speaker would claim every IP for the moment before it joins.
const JOIN_WAIT: Duration = Duration::from_secs(2);

/// Plans and applies announcements.
pub struct Announcing {
    node: String,
    extra_addresses: Vec<IpAddr>,
    defaults: BgpDefaults,
    grace: Duration,
    bgp_stop: BgpStop,
    restart_marker: Option<std::path::PathBuf>,
    bgp: BgpActuator,
    l2: L2Actuator,
    host: Option<HostInterfaces>,
    interfaces: Vec<InterfaceFacts>,
    interfaces_read: Option<Instant>,
    membership: Option<MembershipHandle>,
    events: Option<mpsc::Receiver<MembershipEvent>>,
    /// Gossip that waits for its key Secret to appear in a snapshot.
    pending_gossip: Option<GossipConfig>,
    /// The Secret the gossip keys come from, if any.
    key_secret: Option<String>,
    keys: Option<KeyRotation>,
    keys_applied: Option<Keyring>,
    /// The last problem with the key Secret (logged once per change).
    key_problem: Option<String>,
    members: Members,
    may_own: bool,
    started: Instant,
    joined: bool,
    api_reachable: bool,
    last: Option<(Snapshot, Assignments)>,
    l2_plan: L2Plan,
    /// Gossip address and `--member-peers`, when gossiping.
    gossip: Option<(SocketAddr, Vec<SocketAddr>)>,
    /// The seeds last handed to the membership.
    seeds: Vec<SocketAddr>,
    l2_planner: L2Planner,
}

impl Announcing {
    /// Starts the BGP speaker, reads the interfaces and joins the gossip.
    pub async fn start(node: &str, cfg: &AnnounceConfig) -> Result<Announcing, AnnounceError> {
        // Every peer carries its own router id from the plan; this one is never sent.
        let speaker = Speaker::new(SpeakerConfig {
            router_id: Ipv4Addr::UNSPECIFIED,
            listen: cfg.bgp_listen,
        })?;
        let mut defaults = cfg.bgp.clone();
        if let Some(path) = &cfg.restart_marker {
            defaults.restarting = super::restart_marker::read(path, std::time::SystemTime::now());
            if defaults.restarting {
                tracing::info!(marker = %path.display(), "back from a planned restart: graceful restart peers get the R bit");
            }
        }
        let host = match HostInterfaces::new() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read interfaces; L2 knows none");
                None
            }
        };
        let mut a = Announcing {
            node: node.to_string(),
            extra_addresses: cfg.node_addresses.clone(),
            defaults,
            grace: cfg.handoff_grace,
            bgp_stop: cfg.bgp_stop,
            restart_marker: cfg.restart_marker.clone(),
            bgp: BgpActuator::new(speaker),
            l2: L2Actuator::new(edgelb_l2::Config::default()),
            host,
            interfaces: Vec::new(),
            interfaces_read: None,
            membership: None,
            events: None,
            pending_gossip: None,
            key_secret: None,
            keys: None,
            keys_applied: None,
            key_problem: None,
            members: Members::Static,
            may_own: true,
            started: Instant::now(),
            joined: false,
            api_reachable: false,
            last: None,
            l2_plan: L2Plan::default(),
            gossip: cfg.gossip.as_ref().map(|g| (g.addr, g.peers.clone())),
            seeds: cfg
                .gossip
                .as_ref()
                .map(|g| g.peers.clone())
                .unwrap_or_default(),
            l2_planner: L2Planner::default(),
        };
        a.read_interfaces().await;
        if let Some(g) = &cfg.gossip {
            // No L2 IP until the gossip runs and has members (or is alone for JOIN_WAIT).
            a.members = Members::Gossip(BTreeMap::new());
            a.may_own = false;
            match &g.key {
                KeySource::Bytes(bytes) => {
                    let keys = Keyring::from_plain_key(&bytes.0)?;
                    a.start_membership(g, keys).await?;
                }
                KeySource::Secret(name) => {
                    tracing::info!(secret = %name, "gossip starts once its key Secret is read");
                    a.key_secret = Some(name.clone());
                    a.pending_gossip = Some(g.clone());
                }
            }
        }
        Ok(a)
    }

    async fn start_membership(
        &mut self,
        g: &GossipConfig,
        keys: Keyring,
    ) -> Result<(), AnnounceError> {
        let (handle, events) = Membership::start(MembershipConfig {
            node: self.node.clone(),
            bind: g.addr,
            advertise: g.addr,
            seeds: g.peers.clone(),
            keys: keys.clone(),
            timings: Timings::lan(g.peers.len() + 1),
            interfaces: self.interfaces.clone(),
            generation: None,
        })
        .await?;
        self.membership = Some(handle);
        self.events = Some(events);
        self.keys = Some(KeyRotation::new(keys.clone(), Instant::now()));
        self.keys_applied = Some(keys);
        self.started = Instant::now();
        self.refresh_members();
        Ok(())
    }

    /// Reads the gossip key Secret from a snapshot: starts the gossip on the first usable
    /// keys, follows later changes ([`KeyRotation`]). A missing or malformed Secret keeps
    /// the keys in use (and is logged once).
    async fn follow_key_secret(&mut self, snap: &Snapshot) {
        let Some(name) = self.key_secret.clone() else {
            return;
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
                return;
            }
        };
        self.key_problem = None;
        if let Some(g) = self.pending_gossip.take() {
            if let Err(e) = self.start_membership(&g, keys).await {
                tracing::warn!(error = %e, "cannot start the gossip; retrying on the next change");
                self.pending_gossip = Some(g);
            }
            return;
        }
        if let Some(rotation) = &mut self.keys {
            if rotation.update(keys, Instant::now()) {
                tracing::info!(secret = %name, "gossip key Secret changed");
            }
        }
        self.apply_keys().await;
    }

    /// Hands the membership the keys of this moment of a rotation, when they changed.
    async fn apply_keys(&mut self) {
        let (Some(rotation), Some(m)) = (&self.keys, &self.membership) else {
            return;
        };
        let now = rotation.keyring_at(Instant::now());
        if self.keys_applied.as_ref() == Some(&now) {
            return;
        }
        match m.set_keys(now.clone()).await {
            Ok(()) => {
                tracing::info!(current_key = now.current_id(), "gossip keys applied");
                self.keys_applied = Some(now);
            }
            Err(e) => tracing::warn!(error = %e, "cannot apply gossip keys"),
        }
    }

    async fn read_interfaces(&mut self) -> bool {
        let Some(host) = &self.host else { return false };
        self.interfaces_read = Some(Instant::now());
        match host.read().await {
            Ok(now) if now != self.interfaces => {
                self.interfaces = now;
                if let Some(m) = &self.membership {
                    if let Err(e) = m.update_facts(self.interfaces.clone()).await {
                        tracing::warn!(error = %e, "cannot publish interface facts");
                    }
                }
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read interfaces");
                false
            }
        }
    }

    /// Re-reads members and quorum; true when they changed.
    fn refresh_members(&mut self) -> bool {
        let Some(m) = &self.membership else {
            return false;
        };
        let live: BTreeMap<String, Vec<InterfaceFacts>> = m
            .members()
            .into_iter()
            .filter(|s| s.health != Health::Down && !s.is_self)
            .map(|s| {
                let facts = s.facts.map(|f| f.interfaces).unwrap_or_default();
                (s.id.node, facts)
            })
            .collect();
        self.joined |= !live.is_empty();
        // Standalone: no API server to ask, so only a majority of the members keeps L2.
        let may_own =
            may_own_l2(&m.quorum(false)) && (self.joined || self.started.elapsed() >= JOIN_WAIT);
        if may_own != self.may_own {
            tracing::warn!(may_own, "L2 split-brain guard changed");
        }
        let members = Members::Gossip(live);
        let changed = members != self.members || may_own != self.may_own;
        self.members = members;
        self.may_own = may_own;
        changed
    }

    /// Cluster mode: whether the API server answered lately (the split-brain guard keeps
    /// L2 ownership while it does, whatever the gossip says).
    pub fn set_api_reachable(&mut self, reachable: bool) {
        self.api_reachable = reachable;
    }

    /// The election candidates as this speaker sees them (for the leader's `AnnouncedBy`).
    pub fn candidates(&self, snap: &Snapshot) -> Vec<crate::election::Candidate> {
        let facts = NodeFacts::from_snapshot(snap, &self.node, &self.extra_addresses);
        let me = L2Node {
            name: self.node.clone(),
            interfaces: self.interfaces.clone(),
            addresses: facts.addresses,
        };
        l2_plan::candidates(snap, &me, &self.members)
    }

    /// Cluster mode: the gossip seeds follow the Node list (every other Node's InternalIP
    /// at our member port, [`crate::plan::member_seeds`]) plus `--member-peers`; the
    /// membership is told only when they change, and announces to the new ones.
    pub async fn seed_members_from(&mut self, snap: &Snapshot) {
        let (Some(m), Some((addr, peers))) = (&self.membership, &self.gossip) else {
            return;
        };
        let mut seeds = crate::plan::member_seeds::member_seeds(snap, &self.node, *addr);
        seeds.extend(peers.iter().filter(|p| *p != addr));
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

    /// Waits for the next membership event (forever without gossip).
    pub async fn membership_event(&mut self) -> Option<MembershipEvent> {
        let ev = match self.events.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        };
        if ev.is_none() {
            tracing::warn!("the membership task stopped");
            self.events = None;
        }
        ev
    }

    /// Periodic work: members, quorum and (every second) interfaces; re-plans L2 on change.
    pub async fn tick(&mut self) {
        self.apply_keys().await;
        let mut changed = self.refresh_members();
        if self
            .interfaces_read
            .is_none_or(|t| t.elapsed() >= INTERFACE_POLL)
        {
            changed |= self.read_interfaces().await;
        }
        if changed {
            self.apply_l2(false).await;
        }
    }

    /// Plans for a new snapshot and allocation and converges both actuators.
    pub async fn step(&mut self, snap: &Snapshot, a: &Assignments) {
        self.follow_key_secret(snap).await;
        self.last = Some((snap.clone(), a.clone()));
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
        self.apply_l2(true).await;
    }

    /// Re-plans L2; with `new_inputs` false only the members or interfaces changed, and
    /// the planner re-elects only for the nodes that changed.
    async fn apply_l2(&mut self, new_inputs: bool) {
        let Some((snap, a)) = &self.last else { return };
        let facts = NodeFacts::from_snapshot(snap, &self.node, &self.extra_addresses);
        let me = L2Node {
            name: self.node.clone(),
            interfaces: self.interfaces.clone(),
            addresses: facts.addresses,
        };
        let replanned = if new_inputs {
            None
        } else {
            self.l2_planner
                .replan_members(&me, &self.members, self.may_own)
        };
        let plan = replanned.unwrap_or_else(|| {
            self.l2_planner
                .plan(snap, a, &me, &self.members, self.may_own)
        });
        for ip in &plan.unplaced {
            tracing::warn!(%ip, "won the election but no interface can announce it");
        }
        if let Some(errors) = self.l2.apply(&plan).await {
            let owned: Vec<String> = plan
                .owned
                .iter()
                .flat_map(|(i, ips)| ips.iter().map(move |ip| format!("{ip}@{i}")))
                .collect();
            tracing::info!(owned = ?owned, may_own = self.may_own, "l2 applied");
            for e in errors {
                tracing::warn!(error = %e, "l2 apply");
            }
        }
        self.l2_plan = plan;
    }

    /// The BGP actuator (peer status for the local API).
    pub fn bgp(&self) -> &BgpActuator {
        &self.bgp
    }

    /// The L2 actuator (owned IPs and stats for the local API).
    pub fn l2(&self) -> &L2Actuator {
        &self.l2
    }

    /// The last L2 plan (owners of every L2 IP).
    pub fn l2_plan(&self) -> &L2Plan {
        &self.l2_plan
    }

    /// What the local API and the metrics show (see `local_api::publish`).
    pub fn view_parts(&self) -> crate::local_api::publish::ViewParts<'_> {
        crate::local_api::publish::ViewParts {
            last: self.last.as_ref().map(|(s, a)| (s, a)),
            peers: self.bgp.peers(),
            bgp_tables: Some(self.bgp.tables()),
            l2_stats: self.l2.stats(),
            members: self
                .membership
                .as_ref()
                .map(|m| m.members())
                .unwrap_or_default(),
            leader: None,
            policy_routes: Default::default(),
            candidates: self
                .last
                .as_ref()
                .map(|(s, _)| self.candidates(s))
                .unwrap_or_default(),
        }
    }

    /// Graceful stop: goodbye to the gossip (the next L2 owners take over at once), Cease /
    /// Administrative Shutdown (RFC 8203) to every BGP peer (with [`BgpStop::Restart`] and
    /// graceful restart peers, a planned restart instead: no NOTIFICATION to those, and the
    /// restart marker), and after the handoff grace stop answering for L2 IPs. Bounded well
    /// under 2 s.
    pub async fn stop(self) {
        let Announcing {
            bgp,
            mut l2,
            membership,
            grace,
            bgp_stop,
            restart_marker,
            ..
        } = self;
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
        if let Some(m) = membership {
            match tokio::time::timeout(Duration::from_millis(300), m.leave()).await {
                Ok(Ok(())) => tracing::info!("said goodbye to the gossip"),
                Ok(Err(e)) => tracing::warn!(error = %e, "goodbye failed"),
                Err(_) => tracing::warn!("goodbye timed out"),
            }
        }
        let l2_stop = async {
            tokio::time::sleep(grace.saturating_sub(started.elapsed())).await;
            l2.shutdown().await;
        };
        let restart_time = bgp.graceful_restart_time();
        let bgp_stop = async {
            match (bgp_stop, restart_time) {
                (BgpStop::Restart, Some(t)) => {
                    if let Some(path) = &restart_marker {
                        let window = Duration::from_secs(u64::from(t));
                        if let Err(e) =
                            super::restart_marker::write(path, std::time::SystemTime::now(), window)
                        {
                            tracing::warn!(marker = %path.display(), error = %e, "cannot write the graceful restart marker");
                        }
                    }
                    tracing::info!(
                        restart_time_s = t,
                        "planned restart: graceful restart peers keep our routes"
                    );
                    bgp.shutdown_for_restart().await;
                }
                _ => bgp.shutdown("edgelb-speaker stopping").await,
            }
        };
        let all = async {
            tokio::join!(bgp_stop, l2_stop);
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
