//! The run loop's side of the local API and the metrics: after a reconcile (at most every
//! [`CHANGES_EVERY`]) and at least every [`TICK_EVERY`] otherwise, it hands over what it
//! holds ([`ViewParts`]); the [`Publisher`] assembles a [`LocalView`] with the pure
//! builders, sends it on the `watch` channel the servers read, and updates the metrics from
//! it. [`publication_due`] is the rule.
//!
//! The sections that grow with the number of Services (announcements, allocations, pools,
//! Services) are made again only when what they are built from changed: the snapshot, the
//! allocation, the peers' route tables, which sessions are up, the L2 owned IPs, the
//! election candidates. A periodic publication at rest therefore refreshes the counters
//! (sessions, interfaces, members) and shares the last sections (`Arc`), so a speaker with
//! 10 000 Services does no per-Service work while nothing changes ([`SectionBuilds`]
//! counts the builds). The announcements, allocations and Services sections are
//! [`Section::deferred`]: only what they are built from is kept (shared with the run loop),
//! and a request that reads them builds them, so the speaker does not hold them rendered
//! (issue 17). The announcements are also made once when their inputs change, to record
//! since when each exists and to count the owned IPs for the metrics.
//!
//! Cheap to clone (one `Arc`), so it can sit in the speaker's `Config`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use edgelb_bgp::{PeerStatus, RouteTable};
use edgelb_l2::{InterfaceStats, IpStats};
use tokio::sync::watch;

use super::build::{
    allocations_view, announcements, fill_since, interface_view, node_pools_view, owned_ip_texts,
    peer_view, policy_routes_view, pools_view, services_view, unix, unix_ms, SinceTracker,
};
use super::view::{
    AllocationView, AnnouncementView, Health, InterfaceView, LocalView, MemberView, PoolView,
    Section, ServiceView, VIEW_API,
};
use crate::actuate::policy_route_task::TaskReport;
use crate::election::Candidate;
use crate::ipam::Assignments;
use crate::membership::{self, MemberSnapshot};
use crate::metrics::{failover_gaps, Metrics};
use crate::snapshot::Snapshot;
use crate::status::announced::service_elections;

/// Periodic publications (between reconciles) are at least this far apart.
pub const TICK_EVERY: Duration = Duration::from_millis(500);

/// Publications of a change are at least this far apart. A change made after a quiet spell
/// is shown at once; during a burst (a load of 50 000 Services brings several snapshots a
/// second) the Service-sized sections, O(Services) each to build, are made a few times a
/// second instead of once per snapshot, which was half of a speaker's CPU while Services
/// were created (issue 17); the run loop's tick shows the last change.
pub const CHANGES_EVERY: Duration = Duration::from_millis(250);

/// Whether a publication is due at `now`, given when the last one was made (`last`), when
/// the last one that showed a change was made (`last_change`), and whether a change is not
/// shown yet (`pending`): the first one; a pending change once the last change shown is
/// [`CHANGES_EVERY`] old; the periodic refresh once the last publication is [`TICK_EVERY`]
/// old.
pub fn publication_due(
    now: Instant,
    last: Option<Instant>,
    last_change: Option<Instant>,
    pending: bool,
) -> bool {
    let old = |t: Option<Instant>, age: Duration| {
        t.is_none_or(|t| now.saturating_duration_since(t) >= age)
    };
    old(last, TICK_EVERY) || (pending && old(last_change, CHANGES_EVERY))
}

/// What the run loop holds, borrowed for one publication.
#[derive(Default)]
pub struct ViewParts<'a> {
    /// The last snapshot and allocation, once there is one.
    pub last: Option<(&'a Snapshot, &'a Assignments)>,
    /// BGP sessions.
    pub peers: Vec<PeerStatus>,
    /// The route table handed to each peer.
    pub bgp_tables: Option<&'a BTreeMap<IpAddr, Arc<RouteTable>>>,
    /// L2 announcer statistics.
    pub l2_stats: Vec<InterfaceStats>,
    /// L2 IPs this node won and waits to answer for (the handoff), until when.
    pub l2_held: Vec<(IpAddr, SystemTime)>,
    /// Gossip members (empty without gossip).
    pub members: Vec<MemberSnapshot>,
    /// The Lease holder, when known.
    pub leader: Option<String>,
    /// The policy-route task's last report.
    pub policy_routes: TaskReport,
    /// The election candidates as this speaker sees them (liveness, interfaces), for the
    /// per-Service exclusion reasons.
    pub candidates: Vec<Candidate>,
    /// The cloud driver's state, when one runs (`--elb-*`).
    pub cloud: Option<Arc<crate::cloud_lb::CloudState>>,
}

/// How many times each Service-sized section of the view was made from new inputs (built,
/// or for the deferred ones, set to be built from them when read); at rest these stay put.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SectionBuilds {
    /// `announcements`.
    pub announcements: u64,
    /// `allocations`.
    pub allocations: u64,
    /// `pools`.
    pub pools: u64,
    /// `services` (with the election it needs).
    pub services: u64,
}

/// What the Service-sized sections are built from. Compared by identity where the run loop
/// shares its values (snapshot, allocation, route tables), so that a comparison at rest
/// costs O(peers + L2 IPs + nodes), never O(Services).
#[derive(Debug)]
struct SectionInputs {
    snapshot: Snapshot,
    assignments: Assignments,
    tables: Vec<(IpAddr, Arc<RouteTable>)>,
    established: BTreeSet<IpAddr>,
    /// The L2 announcer's interfaces; their owned IPs are compared by identity (the
    /// announcer hands out the same list until it changes).
    l2: Vec<InterfaceStats>,
    candidates: Vec<Candidate>,
    /// L2 IPs held for a handoff, until when (Unix ms).
    held: Vec<(IpAddr, u64)>,
}

impl SectionInputs {
    fn same_tables(&self, other: &SectionInputs) -> bool {
        self.tables.len() == other.tables.len()
            && self
                .tables
                .iter()
                .zip(&other.tables)
                .all(|((a, t), (b, u))| a == b && Arc::ptr_eq(t, u))
    }

    fn same_l2(&self, other: &SectionInputs) -> bool {
        self.l2.len() == other.l2.len()
            && self
                .l2
                .iter()
                .zip(&other.l2)
                .all(|(a, b)| a.interface == b.interface && Arc::ptr_eq(&a.ips, &b.ips))
    }
}

/// The last Service-sized sections and their inputs.
#[derive(Debug)]
struct Sections {
    inputs: SectionInputs,
    announcements: Section<AnnouncementView>,
    allocations: Section<AllocationView>,
    pools: Arc<Vec<PoolView>>,
    services: Section<ServiceView>,
}

/// Members as the view shows them; a member's `since` is when this node first saw it in
/// its current health.
pub fn member_views(
    members: &[MemberSnapshot],
    seen: &mut BTreeMap<String, (Health, u64)>,
    now: u64,
) -> Vec<MemberView> {
    let mut out: Vec<MemberView> = members
        .iter()
        .map(|m| {
            let health = match m.health {
                membership::Health::Alive => Health::Alive,
                membership::Health::Suspect => Health::Suspect,
                membership::Health::Down => Health::Dead,
            };
            let since = match seen.get(&m.id.node) {
                Some((h, t)) if *h == health => *t,
                _ => now,
            };
            seen.insert(m.id.node.clone(), (health, since));
            MemberView {
                name: m.id.node.clone(),
                health,
                since: Some(since),
                node_pool: None,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

#[derive(Debug)]
struct Inner {
    node: String,
    tx: watch::Sender<LocalView>,
    metrics: Arc<Metrics>,
    since: SinceTracker,
    members_seen: BTreeMap<String, (Health, u64)>,
    last_publish: Option<Instant>,
    /// The last publication that showed a change, and whether one is not shown yet.
    last_change: Option<Instant>,
    change_pending: bool,
    /// Members declared dead, not yet followed by a first announcement of every IP taken.
    deaths: Vec<SystemTime>,
    failovers_seen: BTreeSet<(IpAddr, SystemTime)>,
    sections: Option<Sections>,
    builds: SectionBuilds,
    /// Per L2 interface: its last owned-IP list and that list as text.
    ip_texts: BTreeMap<String, IpTexts>,
}

/// An interface's owned-IP list (compared by identity) and the same IPs as text.
type IpTexts = (Arc<[IpStats]>, Arc<Vec<String>>);

impl Inner {
    /// The views of the L2 interfaces: an interface's IPs are made into text again only
    /// when its list changed, so a publication at rest costs O(interfaces), not O(IPs).
    fn interface_views(&mut self, stats: &[InterfaceStats]) -> Vec<InterfaceView> {
        self.ip_texts
            .retain(|name, _| stats.iter().any(|s| &s.interface == name));
        stats
            .iter()
            .map(|s| {
                let texts = match self.ip_texts.get(&s.interface) {
                    Some((ips, texts)) if Arc::ptr_eq(ips, &s.ips) => texts.clone(),
                    _ => {
                        let texts = Arc::new(owned_ip_texts(s));
                        self.ip_texts
                            .insert(s.interface.clone(), (s.ips.clone(), texts.clone()));
                        texts
                    }
                };
                interface_view(s, texts)
            })
            .collect()
    }

    /// The Service-sized sections for `inputs`: each one rebuilt only when something it is
    /// built from differs from the last time.
    fn sections(&mut self, inputs: SectionInputs, secs: u64) -> &Sections {
        let last = self.sections.take();
        let node = self.node.as_str();
        let (snap, a) = (&inputs.snapshot, &inputs.assignments);
        let same_snap = last
            .as_ref()
            .is_some_and(|l| l.inputs.snapshot.same_as(snap));
        let same_alloc = last.as_ref().is_some_and(|l| l.inputs.assignments == *a);
        let announcements = match &last {
            Some(l)
                if same_alloc
                    && l.inputs.same_tables(&inputs)
                    && l.inputs.established == inputs.established
                    && l.inputs.same_l2(&inputs) =>
            {
                l.announcements.clone()
            }
            _ => {
                self.builds.announcements += 1;
                let (node, a) = (node.to_string(), a.clone());
                let (tables, established) = (inputs.tables.clone(), inputs.established.clone());
                let l2 = inputs.l2.clone();
                let make = move || announcements(&node, &a, &tables, &established, &l2);
                let mut anns = make();
                self.since.stamp(&mut anns, secs);
                self.metrics.set_owned_ips(&anns);
                drop(anns);
                let first_seen = self.since.first_seen();
                Section::deferred(move || {
                    let mut anns = make();
                    fill_since(&first_seen, &mut anns);
                    anns
                })
            }
        };
        let allocations = match &last {
            Some(l) if same_alloc => l.allocations.clone(),
            _ => {
                self.builds.allocations += 1;
                let a = a.clone();
                Section::deferred(move || allocations_view(&a))
            }
        };
        let pools = match &last {
            Some(l) if same_alloc && same_snap => l.pools.clone(),
            _ => {
                self.builds.pools += 1;
                Arc::new(pools_view(snap, a))
            }
        };
        let services = match &last {
            Some(l)
                if same_alloc
                    && same_snap
                    && l.inputs.candidates == inputs.candidates
                    && l.inputs.held == inputs.held =>
            {
                l.services.clone()
            }
            _ => {
                self.builds.services += 1;
                let (snap, a) = (snap.clone(), a.clone());
                let (candidates, held) = (inputs.candidates.clone(), inputs.held.clone());
                Section::deferred(move || {
                    let elections = service_elections(&snap, &a, candidates.clone());
                    services_view(&snap, &a, &elections, &held)
                })
            }
        };
        self.sections.insert(Sections {
            inputs,
            announcements,
            allocations,
            pools,
            services,
        })
    }
}

/// Publishes views and metrics; see the module doc.
#[derive(Clone, Debug)]
pub struct Publisher(Arc<Mutex<Inner>>);

impl Publisher {
    /// A publisher for `node`, and the receiver the servers read.
    pub fn new(node: &str, metrics: Arc<Metrics>) -> (Publisher, watch::Receiver<LocalView>) {
        let first = LocalView {
            api: VIEW_API.into(),
            node: node.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            generated_at: unix(SystemTime::now()),
            ..LocalView::default()
        };
        metrics.update(&first);
        let (tx, rx) = watch::channel(first);
        let inner = Inner {
            node: node.into(),
            tx,
            metrics,
            since: SinceTracker::default(),
            members_seen: BTreeMap::new(),
            last_publish: None,
            last_change: None,
            change_pending: false,
            deaths: Vec::new(),
            failovers_seen: BTreeSet::new(),
            sections: None,
            builds: SectionBuilds::default(),
            ip_texts: BTreeMap::new(),
        };
        (Publisher(Arc::new(Mutex::new(inner))), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The metrics this publisher updates.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.lock().metrics.clone()
    }

    /// Records one reconcile's duration.
    pub fn observe_reconcile(&self, took: Duration) {
        self.lock().metrics.observe_reconcile(took);
    }

    /// A member was declared dead at `at`: IPs this node starts announcing after it count
    /// toward the failover histogram (for 60 s).
    pub fn member_down(&self, at: SystemTime) {
        self.lock().deaths.push(at);
    }

    /// A receiver of the views this publisher sends.
    pub fn subscribe(&self) -> watch::Receiver<LocalView> {
        self.lock().tx.subscribe()
    }

    /// How many times each Service-sized section was built so far.
    pub fn section_builds(&self) -> SectionBuilds {
        self.lock().builds
    }

    /// Notes that what the run loop holds changed (a reconcile), and says whether to publish
    /// now; if not, the next publication due shows the change ([`publication_due`]).
    pub fn changed(&self) -> bool {
        self.lock().change_pending = true;
        self.due()
    }

    /// True when a publication is due now ([`publication_due`]).
    pub fn due(&self) -> bool {
        let inner = self.lock();
        publication_due(
            Instant::now(),
            inner.last_publish,
            inner.last_change,
            inner.change_pending,
        )
    }

    /// Builds and sends the view, and updates the metrics.
    pub fn publish(&self, parts: ViewParts<'_>) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let secs = unix(wall);
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.last_publish = Some(now);
        if std::mem::take(&mut inner.change_pending) {
            inner.last_change = Some(now);
        }
        let node = inner.node.clone();
        let mut view = LocalView {
            api: VIEW_API.into(),
            node: node.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            generated_at: secs,
            ready: parts.last.is_some(),
            leader: parts.leader,
            members: member_views(&parts.members, &mut inner.members_seen, secs),
            peers: parts
                .peers
                .iter()
                .map(|p| peer_view(p, None, now, wall))
                .collect(),
            interfaces: inner.interface_views(&parts.l2_stats),
            policy_routes: policy_routes_view(&parts.policy_routes),
            cloud: parts
                .cloud
                .as_deref()
                .map(crate::cloud_lb::CloudState::view),
            ..LocalView::default()
        };
        if let Some((snap, a)) = parts.last {
            let inputs = SectionInputs {
                snapshot: snap.clone(),
                assignments: a.clone(),
                tables: parts
                    .bgp_tables
                    .map(|t| t.iter().map(|(k, v)| (*k, v.clone())).collect())
                    .unwrap_or_default(),
                established: parts
                    .peers
                    .iter()
                    .filter(|p| p.state == edgelb_bgp::fsm::State::Established)
                    .map(|p| p.address)
                    .collect(),
                l2: parts.l2_stats.clone(),
                candidates: parts.candidates,
                held: parts
                    .l2_held
                    .iter()
                    .map(|(ip, until)| (*ip, unix_ms(*until)))
                    .collect(),
            };
            let sections = inner.sections(inputs, secs);
            view.announcements = sections.announcements.clone();
            view.allocations = sections.allocations.clone();
            view.pools = sections.pools.clone();
            view.services = sections.services.clone();
            view.node_pools = node_pools_view(snap);
        }
        // Failover: from a death to the first L2 announcement of each IP taken after it.
        inner
            .deaths
            .retain(|d| wall.duration_since(*d).unwrap_or_default() < Duration::from_secs(60));
        let deaths = inner.deaths.clone();
        inner.failovers_seen.retain(|(_, d)| deaths.contains(d));
        let taken: Vec<(IpAddr, SystemTime, Option<SystemTime>)> = if deaths.is_empty() {
            Vec::new()
        } else {
            parts
                .l2_stats
                .iter()
                .flat_map(|s| s.ips.iter())
                .map(|i| (i.ip, i.owned_since, i.first_announced))
                .collect()
        };
        for dead in deaths {
            // One line per failover, not per IP: a node taking over 10 000 IPs wrote
            // 10 000 lines in the middle of that work.
            let (mut ips, mut first, mut last) = (0usize, Duration::MAX, Duration::ZERO);
            for (ip, gap) in failover_gaps(dead, &taken) {
                if inner.failovers_seen.insert((ip, dead)) {
                    tracing::debug!(%ip, gap_ms = gap.as_millis() as u64, "failover: first announcement");
                    inner.metrics.observe_failover(gap);
                    ips += 1;
                    first = first.min(gap);
                    last = last.max(gap);
                }
            }
            if ips > 0 {
                tracing::info!(
                    ips,
                    first_ms = first.as_millis() as u64,
                    last_ms = last.as_millis() as u64,
                    "failover: first announcements"
                );
            }
        }
        inner.metrics.update(&view);
        inner.tx.send_replace(view);
    }
}

impl Publisher {
    /// Notes a membership event (a death starts a failover measurement).
    pub fn on_membership_event(&self, ev: &membership::MembershipEvent) {
        if let membership::MembershipEvent::MemberDown { at, .. } = ev {
            self.member_down(*at);
        }
    }
}

/// Why the servers cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Unix socket.
    #[error(transparent)]
    Socket(#[from] super::server::ServeError),
    /// The metrics port.
    #[error("metrics: cannot listen on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Binds the local API socket and (when given) the metrics port, spawns both servers and
/// returns the publisher that feeds them, with the server tasks (abort them to stop).
pub async fn start(
    node: &str,
    socket: &std::path::Path,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<(Publisher, Vec<tokio::task::JoinHandle<()>>), StartError> {
    let metrics = Arc::new(Metrics::new());
    let (publisher, rx) = Publisher::new(node, metrics.clone());
    let listener = super::server::bind(socket)?;
    tracing::info!(socket = %socket.display(), "local API listening");
    let mut tasks = vec![tokio::spawn(super::server::serve(listener, rx.clone()))];
    if let Some(addr) = metrics_addr {
        let l = crate::metrics::server::bind(addr)
            .await
            .map_err(|source| StartError::Metrics { addr, source })?;
        tracing::info!(%addr, "metrics listening");
        tasks.push(tokio::spawn(crate::metrics::server::serve(l, metrics, rx)));
    }
    Ok((publisher, tasks))
}
