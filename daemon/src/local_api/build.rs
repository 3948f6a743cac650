//! Pure builders: the daemon's own types in, [`super::view`] types out. Time comes in as
//! values (`now` as an `Instant` and the wall clock at that instant), never read here.
//!
//! They copy field by field, so a secret held by a source type (a BGP peer's password lives
//! in `PeerConfig`, never in `PeerStatus`) cannot reach the view by accident.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use edgelb_bgp::{PeerStatus, RouteTable};
use edgelb_l2::InterfaceStats;
use ipnet::IpNet;

use super::view::{
    AllocationView, AnnouncementView, CandidateView, FamilyNotAnnouncedView, InterfaceView,
    IpRankView, Mode, NodePoolView, PeerView, PolicyRouteEntryView, PolicyRouteView,
    PolicyRuleView, PoolView, ServiceView,
};
use crate::actuate::policy_route_task::TaskReport;
use crate::election::{self, ElectionResult, ModeKind};
use crate::ipam::range::IpRange;
use crate::ipam::{AllocationError, Assignments};
use crate::plan::endpoints::{has_ready_endpoint_for, is_local, pool_topology};
use crate::snapshot::{ObjectKey, Snapshot};

/// Unix seconds of a wall-clock time (0 before the epoch).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall-clock time of a monotonic `at`, given that `now` is `wall_now`.
pub fn wall_of(at: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    let ago = now.saturating_duration_since(at);
    wall_now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
}

/// The view of one BGP session. `name` is the `BGPPeer` object when known (else the
/// speaker's description of the peer).
pub fn peer_view(
    p: &PeerStatus,
    name: Option<&str>,
    now: Instant,
    wall_now: SystemTime,
) -> PeerView {
    let established_since = match (p.established_at, p.uptime) {
        (Some(at), _) => Some(unix(wall_of(at, now, wall_now))),
        (None, Some(up)) => Some(unix(wall_now.checked_sub(up).unwrap_or(UNIX_EPOCH))),
        (None, None) => None,
    };
    let established_since = if p.state == edgelb_bgp::fsm::State::Established {
        established_since
    } else {
        None
    };
    let last_error = p.last_error.as_ref().map(|e| match e.code {
        Some((code, sub)) => format!(
            "{} NOTIFICATION {code}/{sub}: {}",
            if e.received { "received" } else { "sent" },
            e.text
        ),
        None => e.text.clone(),
    });
    let last_error_at = p
        .last_error
        .as_ref()
        .map(|e| unix(wall_of(e.at, now, wall_now)));
    PeerView {
        address: p.address.to_string(),
        name: name.map_or_else(|| p.description.clone(), str::to_string),
        state: format!("{:?}", p.state),
        established_since,
        last_error,
        last_error_at,
        prefixes_sent: p.prefixes_sent,
        prefixes_received: p.prefixes_received,
        messages_in: p.messages_in,
        messages_out: p.messages_out,
        updates_in: p.updates_in,
        updates_out: p.updates_out,
        established_count: p.established_count,
        bfd: p.bfd.as_ref().map(|b| {
            b.state()
                .map_or_else(|| "Starting".to_string(), |s| s.to_string())
        }),
        bfd_diag: p.bfd.as_ref().and_then(|b| {
            b.error
                .clone()
                .or_else(|| {
                    b.echo_error
                        .as_ref()
                        .map(|e| format!("Echo not running: {e}"))
                })
                .or_else(|| {
                    b.last_change
                        .filter(|c| c.diag != edgelb_bgp::bfd::Diag::None)
                        .map(|c| c.diag.to_string())
                })
        }),
        bfd_failures: p.bfd.as_ref().map_or(0, |b| b.failures),
        families: p
            .families
            .iter()
            .map(|f| family_name(*f).to_string())
            .collect(),
        families_not_announced: p
            .families_not_announced
            .iter()
            .map(|f| FamilyNotAnnouncedView {
                family: family_name(f.family).to_string(),
                reason: f.reason.clone(),
            })
            .collect(),
        prefixes_not_sent: p.prefixes_not_sent,
        graceful_restart: p.graceful_restart,
        graceful_notification: p.graceful_notification,
    }
}

/// The name of an address family in the view and the metrics.
pub fn family_name(f: edgelb_bgp::packet::Family) -> &'static str {
    match f {
        edgelb_bgp::packet::Family::Ipv4Unicast => "ipv4-unicast",
        edgelb_bgp::packet::Family::Ipv6Unicast => "ipv6-unicast",
    }
}

/// The view of one L2 interface; `ips` is [`owned_ip_texts`] of `s`, which the publisher
/// makes once per change of the interface's list, not per view.
pub fn interface_view(s: &InterfaceStats, ips: Arc<Vec<String>>) -> InterfaceView {
    InterfaceView {
        name: s.interface.clone(),
        up: s.link.as_ref().is_some_and(|l| l.up && l.running),
        error: s.error.as_ref().map(ToString::to_string),
        ips,
        announcements: s.announcements,
        requests_answered: s.requests_answered,
        frames_received: s.frames_received,
        send_errors: s.send_errors,
        receive_drops: s.receive_drops,
    }
}

/// The IPs an interface owns, as the view shows them.
pub fn owned_ip_texts(s: &InterfaceStats) -> Vec<String> {
    s.ips.iter().map(|i| i.ip.to_string()).collect()
}

/// Every allocation outcome, in key order.
/// The node pools of the snapshot with their members.
pub fn node_pools_view(snap: &Snapshot) -> Vec<NodePoolView> {
    snap.node_pools
        .values()
        .map(|p| NodePoolView {
            name: p.name.to_string(),
            source: if p.from_crd { "NodePool" } else { "node label" }.into(),
            labels: p.labels.clone(),
            nodes: p.nodes.iter().map(ToString::to_string).collect(),
        })
        .collect()
}

pub fn allocations_view(a: &Assignments) -> Vec<AllocationView> {
    a.outcomes
        .iter()
        .map(|(k, o)| AllocationView {
            service: k.service.to_string(),
            node_pool: k.node_pool.as_deref().map(str::to_string),
            pool: o.as_ref().ok().map(|a| a.pool.to_string()),
            ips: o
                .as_ref()
                .map(|a| a.ips.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            error: o.as_ref().err().map(ToString::to_string),
        })
        .collect()
}

/// The pools an allocation error names (to count failures per pool).
pub fn failed_pools(e: &AllocationError) -> Vec<String> {
    match e {
        AllocationError::RequestedIpNotInPool { pool, .. }
        | AllocationError::UnknownPool { pool }
        | AllocationError::PoolNotAllowed { pool } => vec![pool.clone()],
        AllocationError::RequestedIpsInDifferentPools {
            first_pool,
            second_pool,
            ..
        } => vec![first_pool.clone(), second_pool.clone()],
        AllocationError::PoolsExhausted { pools } => pools
            .split(',')
            .map(|p| p.trim().trim_matches('"').to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// Number of addresses in a range, saturating at `u64::MAX`.
fn range_size(r: &IpRange) -> u64 {
    let (first, last) = r.bounds();
    u64::try_from(last.saturating_sub(first).saturating_add(1)).unwrap_or(u64::MAX)
}

/// Every pool with its size (addresses in its ranges, before `avoidBuggyIPs`), the distinct
/// IPs allocated from it, and the allocations that fail naming it.
pub fn pools_view(snap: &Snapshot, a: &Assignments) -> Vec<PoolView> {
    let mut used: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for o in a.outcomes.values() {
        match o {
            Ok(al) => {
                used.entry(&al.pool)
                    .or_default()
                    .extend(al.ips.iter().copied());
            }
            Err(e) => {
                for p in failed_pools(e) {
                    *failures.entry(p).or_default() += 1;
                }
            }
        }
    }
    snap.pools
        .values()
        .map(|p| {
            let name = p.object.metadata.name.clone().unwrap_or_default();
            let size = p
                .object
                .spec
                .addresses
                .iter()
                .filter_map(|s| IpRange::parse(s).ok())
                .map(|r| range_size(&r))
                .fold(0u64, u64::saturating_add);
            PoolView {
                used: used.get(name.as_str()).map_or(0, |s| s.len() as u64),
                failures: failures.get(&name).copied().unwrap_or(0),
                addresses: p.object.spec.addresses.clone(),
                size,
                auto_assign: p.object.spec.auto_assign,
                error: (!p.is_valid()).then(|| {
                    p.problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                }),
                name,
            }
        })
        .collect()
}

/// For each of our Services with an IP: every known node and why the election excludes
/// it, as the election's reason codes (`notLive`, `noLocalEndpoints`, `nicDown`,
/// `subnetNotLocal`, `excludedByLabel`, `selectorMismatch`, ...). A node is a candidate
/// when some IP and mode of the Service may be announced by it; otherwise it shows the
/// reasons of every (IP, mode), without repeats. A Service the election never saw shows
/// why for every node: `noReadyEndpoints` (`Cluster` and no ready endpoint) or
/// `noAdvertisement` (no valid advertisement covers its pool).
///
/// Each L2 IP also gets its ranking ([`ip_rank_view`]); `held` lists the L2 IPs this node
/// won and waits to answer for (the handoff from a live previous owner), with when it
/// will (Unix ms).
pub fn services_view(
    snap: &Snapshot,
    a: &Assignments,
    elections: &BTreeMap<ObjectKey, Vec<ElectionResult>>,
    held: &[(IpAddr, u64)],
) -> Vec<ServiceView> {
    let mut out = Vec::new();
    for (key, outcome) in a.outcomes.iter() {
        let Some(svc) = snap.services.get(&key.service) else {
            continue;
        };
        let local = is_local(svc);
        let all = elections
            .get(&key.service)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // A Service with node pools has one allocation per pool: each view shows the
        // elections of its own IPs only.
        let own_ips: &[IpAddr] = match outcome {
            Ok(alloc) => &alloc.ips,
            Err(_) => &[],
        };
        let results: Vec<&ElectionResult> = all
            .iter()
            .filter(|r| key.node_pool.is_none() || own_ips.contains(&r.ip))
            .collect();
        let not_elected = if !results.is_empty() {
            None
        } else if !local && !has_ready_endpoint_for(snap, key, svc) {
            Some("noReadyEndpoints")
        } else {
            Some("noAdvertisement")
        };
        let candidates = snap
            .nodes
            .keys()
            .map(|name| {
                let excluded = match not_elected {
                    Some(why) => Some(why.to_string()),
                    None => {
                        let reasons: Option<BTreeSet<&str>> = results
                            .iter()
                            .map(|r| r.exclusion_of(name).map(|e| e.as_str()))
                            .collect();
                        reasons.map(|r| r.into_iter().collect::<Vec<_>>().join(", "))
                    }
                };
                CandidateView {
                    node: name.to_string(),
                    excluded,
                }
            })
            .collect();
        let ips = results
            .iter()
            .filter(|r| r.mode == ModeKind::L2)
            .map(|r| ip_rank_view(r, snap.nodes.keys().map(|n| &**n), held))
            .collect();
        let mut traffic_policy = if local { "Local" } else { "Cluster" }.to_string();
        if key.node_pool.is_some() && pool_topology(svc) {
            traffic_policy.push_str(
                " (openyurt.io/topologyKeys: openyurt.io/nodepool: only endpoints in the node pool count)",
            );
        }
        out.push(ServiceView {
            service: key.service.to_string(),
            node_pool: key.node_pool.as_deref().map(String::from),
            traffic_policy,
            candidates,
            ips,
        });
    }
    out
}

/// Why an L2 IP is where it is: `nodes` in the rendezvous order of the IP, each with the
/// reason the election skipped it (the owner is the first without one), and, when this
/// node won it but waits for the previous owner to let go, until when.
pub fn ip_rank_view<'n>(
    r: &ElectionResult,
    nodes: impl IntoIterator<Item = &'n str>,
    held: &[(IpAddr, u64)],
) -> IpRankView {
    IpRankView {
        ip: r.ip.to_string(),
        owner: r.owner().map(|o| o.to_string()),
        ranked: election::ranking(r, nodes)
            .into_iter()
            .map(|(node, why)| CandidateView {
                node: node.to_string(),
                excluded: why.map(|w| w.as_str().to_string()),
            })
            .collect(),
        handoff_until_ms: held
            .iter()
            .find(|(ip, _)| *ip == r.ip)
            .map(|(_, until)| *until),
    }
}

/// When each announcement was first seen, by IP and mode.
pub type FirstSeen = BTreeMap<(IpAddr, Mode), u64>;

/// Remembers since when each announcement exists, across views.
#[derive(Clone, Debug, Default)]
pub struct SinceTracker {
    /// By IP (parsed: no string per announcement kept) and mode; shared with the deferred
    /// announcements section made from the same list ([`fill_since`]).
    first_seen: Arc<FirstSeen>,
}

impl SinceTracker {
    /// Fills `since` of every announcement (first time this `(ip, mode)` was seen in an
    /// unbroken run of views) and forgets those that disappeared.
    pub fn stamp(&mut self, anns: &mut [AnnouncementView], now: u64) {
        let mut next = BTreeMap::new();
        for a in anns.iter_mut() {
            // Views are built from addresses: an IP that does not parse is not tracked.
            let key = a.ip.parse::<IpAddr>().ok().map(|ip| (ip, a.mode));
            let since = a
                .since
                .or_else(|| key.and_then(|k| self.first_seen.get(&k).copied()))
                .unwrap_or(now);
            a.since = Some(since);
            if let Some(k) = key {
                next.insert(k, since);
            }
        }
        self.first_seen = Arc::new(next);
    }

    /// What the last [`SinceTracker::stamp`] recorded.
    pub fn first_seen(&self) -> Arc<FirstSeen> {
        self.first_seen.clone()
    }
}

/// Fills `since` of announcements made again from the inputs of a stamped list, from what
/// that stamp recorded ([`SinceTracker::first_seen`]).
pub fn fill_since(first_seen: &FirstSeen, anns: &mut [AnnouncementView]) {
    for a in anns.iter_mut().filter(|a| a.since.is_none()) {
        let key = a.ip.parse::<IpAddr>().ok().map(|ip| (ip, a.mode));
        a.since = key.and_then(|k| first_seen.get(&k).copied());
    }
}

/// The prefix lengths a route table holds, per family (ascending): the prefix that covers
/// an IP is then found with one lookup per length, not a scan of the table.
struct Covering<'a> {
    table: &'a RouteTable,
    v4: Vec<u8>,
    v6: Vec<u8>,
}

impl<'a> Covering<'a> {
    fn new(table: &'a RouteTable) -> Covering<'a> {
        let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
        for net in table.keys() {
            match net {
                IpNet::V4(n) => v4.insert(n.prefix_len()),
                IpNet::V6(n) => v6.insert(n.prefix_len()),
            };
        }
        Covering {
            table,
            v4: v4.into_iter().collect(),
            v6: v6.into_iter().collect(),
        }
    }

    /// The first prefix of the table (in table order) that contains `ip`: the shortest,
    /// since among the prefixes covering one IP a shorter one sorts first.
    fn find(&self, ip: &IpAddr) -> Option<&'a IpNet> {
        let lens = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
        lens.iter().find_map(|len| {
            let net = IpNet::new(*ip, *len).ok()?.trunc();
            self.table.get_key_value(&net).map(|(k, _)| k)
        })
    }
}

/// BGP announcements of this node: for each allocated IP, the peers whose table carries a
/// prefix that covers it (only peers that are Established count as announced to).
/// O(IPs x peers x prefix lengths x log table), from an index of each table's lengths.
pub fn bgp_announcements(
    node: &str,
    a: &Assignments,
    tables: &BTreeMap<IpAddr, std::sync::Arc<RouteTable>>,
    established: &BTreeSet<IpAddr>,
) -> Vec<AnnouncementView> {
    let covering: Vec<(&IpAddr, Covering<'_>)> = tables
        .iter()
        .map(|(peer, t)| (peer, Covering::new(t)))
        .collect();
    let mut out = Vec::new();
    for (key, o) in &a.outcomes {
        let Ok(al) = o else { continue };
        for ip in &al.ips {
            let mut peers = Vec::new();
            let mut prefix = None;
            for (peer, table) in &covering {
                if let Some(net) = table.find(ip) {
                    prefix.get_or_insert(net.to_string());
                    if established.contains(peer) {
                        peers.push(peer.to_string());
                    }
                }
            }
            if prefix.is_none() {
                continue;
            }
            out.push(AnnouncementView {
                ip: ip.to_string(),
                service: key.service.to_string(),
                pool: al.pool.to_string(),
                node_pool: key.node_pool.as_deref().map(str::to_string),
                mode: Mode::Bgp,
                owner: node.to_string(),
                since: None,
                prefix,
                peers,
                interfaces: Vec::new(),
            });
        }
    }
    out
}

/// Everything this node announces: by BGP to the peers whose tables cover an IP
/// ([`bgp_announcements`]), then by L2 on the interfaces that own one
/// ([`l2_announcements`]); `since` unset for BGP ([`SinceTracker`] fills it).
pub fn announcements(
    node: &str,
    a: &Assignments,
    tables: &[(IpAddr, Arc<RouteTable>)],
    established: &BTreeSet<IpAddr>,
    l2: &[InterfaceStats],
) -> Vec<AnnouncementView> {
    let tables: BTreeMap<IpAddr, Arc<RouteTable>> = tables.iter().cloned().collect();
    let mut anns = bgp_announcements(node, a, &tables, established);
    anns.extend(l2_announcements(node, a, l2));
    anns
}

/// L2 announcements of this node: each owned IP with the interfaces it is announced on and
/// since when (the earliest of the announcer's `owned_since` on those interfaces).
pub fn l2_announcements(
    node: &str,
    a: &Assignments,
    stats: &[InterfaceStats],
) -> Vec<AnnouncementView> {
    let mut by_ip: BTreeMap<IpAddr, (Vec<String>, Option<SystemTime>)> = BTreeMap::new();
    for s in stats {
        for i in s.ips.iter() {
            let e = by_ip.entry(i.ip).or_default();
            e.0.push(s.interface.clone());
            e.1 = Some(e.1.map_or(i.owned_since, |t| t.min(i.owned_since)));
        }
    }
    let mut out = Vec::new();
    if by_ip.is_empty() {
        return out;
    }
    for (key, o) in &a.outcomes {
        let Ok(al) = o else { continue };
        for ip in &al.ips {
            if let Some((ifaces, since)) = by_ip.get(ip) {
                out.push(AnnouncementView {
                    ip: ip.to_string(),
                    service: key.service.to_string(),
                    pool: al.pool.to_string(),
                    node_pool: key.node_pool.as_deref().map(str::to_string),
                    mode: Mode::L2,
                    owner: node.to_string(),
                    since: since.map(unix),
                    prefix: None,
                    peers: Vec::new(),
                    interfaces: ifaces.clone(),
                });
            }
        }
    }
    out
}

/// Every `PolicyRoute` that selects this node, in name order, with the rules and routes the
/// policy-route task planned for it (grouped by the object's table, which is its own) and
/// its state: `Installed`, the planner's reason, or `KernelRefused` with the kernel's answer.
pub fn policy_routes_view(r: &TaskReport) -> Vec<PolicyRouteView> {
    r.conditions
        .iter()
        .map(|c| {
            let table = c.table.filter(|_| c.installed());
            let refused = table.and_then(|t| r.last.refused_tables.get(&t));
            let (state, message) = match refused {
                Some(error) => ("KernelRefused".to_string(), error.clone()),
                None => (c.reason.as_str().to_string(), c.message.clone()),
            };
            let rules = r
                .rules
                .iter()
                .filter(|x| Some(x.table) == table)
                .map(|x| PolicyRuleView {
                    priority: x.priority,
                    from: x.src.to_string(),
                    to: "all".into(),
                    table: x.table,
                })
                .collect();
            let routes = r
                .routes
                .iter()
                .filter(|x| Some(x.table) == table)
                .map(|x| PolicyRouteEntryView {
                    dst: x.dst.to_string(),
                    gateway: x.gateway.map(|g| g.to_string()),
                    dev: r
                        .links
                        .get(&x.oif)
                        .cloned()
                        .unwrap_or_else(|| format!("if{}", x.oif)),
                    table: x.table,
                })
                .collect();
            PolicyRouteView {
                name: c.policy_route.clone(),
                table: c.table,
                priority: c.priority,
                state,
                message,
                rules,
                routes,
            }
        })
        .collect()
}
