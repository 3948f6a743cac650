//! Prometheus metrics (OpenMetrics text) from `prometheus-client`, the Prometheus project's
//! own Rust client: typed families with label structs, no global registry.
//!
//! Most values are derived from the [`LocalView`] the run loop publishes ([`Metrics::update`]),
//! so `/metrics` and `edgelbctl` always say the same thing. Counters that the BGP speaker and
//! the L2 announcer keep as absolute numbers are turned into Prometheus counters by adding
//! the difference since the last update ([`counter_delta`]); a source that restarted from zero
//! (a peer removed and added again) counts its new value in full, as a Prometheus counter
//! reset would. The two histograms are observed directly by the run loop.
//!
//! The server for `/metrics`, `/healthz` and `/readyz` is in [`server`].

pub mod server;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::local_api::view::{AnnouncementView, Health, LocalView, MemberView, Mode, PoolView};

/// Label: one BGP peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// Peer address.
    pub peer: String,
}

/// Labels: one address family of one BGP peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerFamilyLabels {
    /// Peer address.
    pub peer: String,
    /// `ipv4-unicast` or `ipv6-unicast`.
    pub family: String,
}

/// Labels: one BGP peer in one FSM state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerStateLabels {
    /// Peer address.
    pub peer: String,
    /// RFC 4271 state name.
    pub state: String,
}

/// Label: one cloud API action (`CreateLoadBalancer`, `DescribeLoadBalancers`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudActionLabels {
    /// The action's name.
    pub action: String,
}

/// Label: a cloud load balancer's state (`converged`, `error`, `pending`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudStateLabels {
    /// The state.
    pub state: String,
}

/// Label: one L2 interface.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabels {
    /// Interface name.
    pub interface: String,
}

/// Label: one IP pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
}

/// Label: an announcement mode (`BGP`, `L2`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    /// `BGP` or `L2`.
    pub mode: String,
}

/// Label: a member health.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    /// `Alive`, `Suspect`, `Dead`, `Unknown`.
    pub health: String,
}

/// Labels of the build info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    /// Node name.
    pub node: String,
    /// Speaker version.
    pub version: String,
}

/// What a counter grows by when its source went from `prev` to `now`: the difference, or
/// `now` in full when the source restarted (went down) or is new.
pub fn counter_delta(prev: Option<u64>, now: u64) -> u64 {
    match prev {
        Some(p) if now >= p => now - p,
        _ => now,
    }
}

/// Members that became `Suspect` since the previous view (a suspicion each).
pub fn new_suspicions(prev: &BTreeMap<String, Health>, now: &[MemberView]) -> u64 {
    now.iter()
        .filter(|m| m.health == Health::Suspect && prev.get(&m.name) != Some(&Health::Suspect))
        .count() as u64
}

/// Failover gaps: for each IP this node took over after a member was declared dead at
/// `declared_dead`, the time from that moment to this node's first announcement of it.
/// `taken` holds `(ip, owned_since, first_announced)`; IPs owned before the death, or not
/// announced yet, give no gap.
pub fn failover_gaps(
    declared_dead: SystemTime,
    taken: &[(IpAddr, SystemTime, Option<SystemTime>)],
) -> Vec<(IpAddr, Duration)> {
    taken
        .iter()
        .filter(|(_, owned, _)| *owned >= declared_dead)
        .filter_map(|(ip, _, first)| {
            first
                .and_then(|f| f.duration_since(declared_dead).ok())
                .map(|d| (*ip, d))
        })
        .collect()
}

/// Absolute values last seen, per counter and label.
#[derive(Debug, Default)]
struct Seen {
    counters: BTreeMap<(&'static str, String), u64>,
    members: BTreeMap<String, Health>,
    /// The pools section the pool gauges were last set from: a view that shares it (a
    /// periodic publication at rest) leaves those gauges as they are.
    pools: Option<Arc<Vec<PoolView>>>,
}

/// Every metric family of a speaker.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    info: Family<InfoLabels, Gauge>,
    ready: Gauge,
    bgp_session_up: Family<PeerLabels, Gauge>,
    bgp_session_state: Family<PeerStateLabels, Gauge>,
    bgp_up_transitions: Family<PeerLabels, Counter>,
    bgp_down_transitions: Family<PeerLabels, Counter>,
    bgp_prefixes_announced: Family<PeerLabels, Gauge>,
    bgp_prefixes_not_announced: Family<PeerLabels, Gauge>,
    bgp_family_not_announced: Family<PeerFamilyLabels, Gauge>,
    bgp_updates_sent: Family<PeerLabels, Counter>,
    bfd_session_up: Family<PeerLabels, Gauge>,
    bfd_failures: Family<PeerLabels, Counter>,
    l2_announcements_sent: Family<InterfaceLabels, Counter>,
    l2_requests_answered: Family<InterfaceLabels, Counter>,
    cloud_calls: Family<CloudActionLabels, Counter>,
    cloud_call_errors: Family<CloudActionLabels, Counter>,
    cloud_call_retries: Family<CloudActionLabels, Counter>,
    cloud_call_latency: Family<CloudActionLabels, Counter>,
    cloud_load_balancers: Family<CloudStateLabels, Gauge>,
    owned_ips: Family<ModeLabels, Gauge>,
    allocation_failures: Family<PoolLabels, Gauge>,
    pool_size: Family<PoolLabels, Gauge>,
    pool_used: Family<PoolLabels, Gauge>,
    members: Family<HealthLabels, Gauge>,
    member_suspicions: Counter,
    reconcile_duration: Histogram,
    failover_duration: Histogram,
    seen: Mutex<Seen>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    /// A registry with every family, names prefixed `edgelb_`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("edgelb");
        let m = Metrics {
            info: Family::default(),
            ready: Gauge::default(),
            bgp_session_up: Family::default(),
            bgp_session_state: Family::default(),
            bgp_up_transitions: Family::default(),
            bgp_down_transitions: Family::default(),
            bgp_prefixes_announced: Family::default(),
            bgp_prefixes_not_announced: Family::default(),
            bgp_family_not_announced: Family::default(),
            bgp_updates_sent: Family::default(),
            bfd_session_up: Family::default(),
            bfd_failures: Family::default(),
            l2_announcements_sent: Family::default(),
            l2_requests_answered: Family::default(),
            cloud_calls: Family::default(),
            cloud_call_errors: Family::default(),
            cloud_call_retries: Family::default(),
            cloud_call_latency: Family::default(),
            cloud_load_balancers: Family::default(),
            owned_ips: Family::default(),
            allocation_failures: Family::default(),
            pool_size: Family::default(),
            pool_used: Family::default(),
            members: Family::default(),
            member_suspicions: Counter::default(),
            // 1 ms .. ~16 s
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            // 10 ms .. ~80 s
            failover_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            seen: Mutex::new(Seen::default()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("info", "Speaker build and node (value 1)", m.info.clone());
        r.register(
            "ready",
            "1 once the first snapshot has been applied",
            m.ready.clone(),
        );
        r.register(
            "bgp_session_up",
            "1 while the BGP session is Established",
            m.bgp_session_up.clone(),
        );
        r.register(
            "bfd_session_up",
            "1 while the peer's BFD session is Up (peers with a bfdProfile only)",
            m.bfd_session_up.clone(),
        );
        r.register(
            "bfd_session_failures",
            "Times a BFD failure took the peer's BGP session down",
            m.bfd_failures.clone(),
        );
        r.register(
            "bgp_session_state",
            "1 for the current RFC 4271 FSM state of each peer",
            m.bgp_session_state.clone(),
        );
        r.register(
            "bgp_session_up_transitions",
            "Times the session reached Established",
            m.bgp_up_transitions.clone(),
        );
        r.register(
            "bgp_session_down_transitions",
            "Times an Established session went down",
            m.bgp_down_transitions.clone(),
        );
        r.register(
            "bgp_prefixes_announced",
            "Prefixes the peer has from this node",
            m.bgp_prefixes_announced.clone(),
        );
        r.register(
            "bgp_prefixes_not_announced",
            "Prefixes this node should announce to the peer but does not: of a family the session did not negotiate or has no next hop for",
            m.bgp_prefixes_not_announced.clone(),
        );
        r.register(
            "bgp_family_not_announced",
            "1 for a negotiated address family whose routes are not announced (no usable next hop)",
            m.bgp_family_not_announced.clone(),
        );
        r.register(
            "bgp_updates_sent",
            "BGP UPDATE messages sent",
            m.bgp_updates_sent.clone(),
        );
        r.register(
            "l2_announcements_sent",
            "Gratuitous ARP / unsolicited NA rounds sent",
            m.l2_announcements_sent.clone(),
        );
        r.register(
            "l2_requests_answered",
            "ARP requests and neighbour solicitations answered",
            m.l2_requests_answered.clone(),
        );
        r.register(
            "cloud_calls",
            "Cloud API requests by action (retries included)",
            m.cloud_calls.clone(),
        );
        r.register(
            "cloud_call_errors",
            "Cloud API calls that failed for good, by action",
            m.cloud_call_errors.clone(),
        );
        r.register(
            "cloud_call_retries",
            "Cloud API answers retried (throttling, 5xx, timeouts), by action",
            m.cloud_call_retries.clone(),
        );
        r.register(
            "cloud_call_latency_milliseconds",
            "Summed latency of cloud API calls (retries and backoff included), by action",
            m.cloud_call_latency.clone(),
        );
        r.register(
            "cloud_load_balancers",
            "Cloud load balancers this speaker drives, by state (converged, error, pending)",
            m.cloud_load_balancers.clone(),
        );
        r.register(
            "owned_ips",
            "IPs this node announces, by mode",
            m.owned_ips.clone(),
        );
        r.register(
            "allocation_failures",
            "Services whose allocation fails now, by the pool the error names",
            m.allocation_failures.clone(),
        );
        r.register(
            "pool_size",
            "Addresses in the pool's ranges",
            m.pool_size.clone(),
        );
        r.register(
            "pool_used",
            "Addresses of the pool allocated to Services",
            m.pool_used.clone(),
        );
        r.register(
            "members",
            "Speakers known to this node, by health",
            m.members.clone(),
        );
        r.register(
            "member_suspicions",
            "Times a member became Suspect",
            m.member_suspicions.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time to turn one snapshot into applied state",
            m.reconcile_duration.clone(),
        );
        r.register(
            "failover_duration_seconds",
            "From a member declared dead to this node's first announcement of each IP it took over",
            m.failover_duration.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Observes one reconcile (snapshot -> applied).
    pub fn observe_reconcile(&self, took: Duration) {
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Observes one failover gap.
    pub fn observe_failover(&self, gap: Duration) {
        self.failover_duration.observe(gap.as_secs_f64());
    }

    fn add(&self, seen: &mut Seen, name: &'static str, label: &str, now: u64, c: &Counter) {
        let prev = seen.counters.insert((name, label.to_string()), now);
        c.inc_by(counter_delta(prev, now));
    }

    /// The owned-IP gauges, from every announcement of a new announcements section (the
    /// publisher has the list in hand only while it makes the section: the view keeps what
    /// builds it, not the list).
    pub fn set_owned_ips(&self, announcements: &[AnnouncementView]) {
        self.owned_ips.clear();
        for mode in [Mode::Bgp, Mode::L2] {
            let n = announcements
                .iter()
                .filter(|a| a.mode == mode)
                .map(|a| a.ip.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            self.owned_ips
                .get_or_create(&ModeLabels {
                    mode: mode.as_str().into(),
                })
                .set(gauge_value(n as u64));
        }
    }

    /// The gauges that are counted over every pool.
    fn update_pools(&self, view: &LocalView) {
        self.pool_size.clear();
        self.pool_used.clear();
        self.allocation_failures.clear();
        for p in view.pools.iter() {
            let l = PoolLabels {
                pool: p.name.clone(),
            };
            self.pool_size.get_or_create(&l).set(gauge_value(p.size));
            self.pool_used.get_or_create(&l).set(gauge_value(p.used));
            self.allocation_failures
                .get_or_create(&l)
                .set(gauge_value(p.failures));
        }
    }

    /// Sets every view-derived family from `view`.
    pub fn update(&self, view: &LocalView) {
        let mut guard = match self.seen.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let seen = &mut *guard;
        self.info.clear();
        self.info
            .get_or_create(&InfoLabels {
                node: view.node.clone(),
                version: view.version.clone(),
            })
            .set(1);
        self.ready.set(i64::from(view.ready));

        self.bgp_session_up.clear();
        self.bfd_session_up.clear();
        self.bgp_session_state.clear();
        self.bgp_prefixes_announced.clear();
        self.bgp_prefixes_not_announced.clear();
        self.bgp_family_not_announced.clear();
        for p in &view.peers {
            let l = PeerLabels {
                peer: p.address.clone(),
            };
            self.bgp_session_up
                .get_or_create(&l)
                .set(i64::from(p.is_up()));
            self.bgp_session_state
                .get_or_create(&PeerStateLabels {
                    peer: p.address.clone(),
                    state: p.state.clone(),
                })
                .set(1);
            self.bgp_prefixes_announced
                .get_or_create(&l)
                .set(gauge_value(p.prefixes_sent));
            self.bgp_prefixes_not_announced
                .get_or_create(&l)
                .set(gauge_value(p.prefixes_not_sent));
            for f in &p.families_not_announced {
                self.bgp_family_not_announced
                    .get_or_create(&PeerFamilyLabels {
                        peer: p.address.clone(),
                        family: f.family.clone(),
                    })
                    .set(1);
            }
            if let Some(state) = &p.bfd {
                self.bfd_session_up
                    .get_or_create(&l)
                    .set(i64::from(state == "Up"));
                self.add(
                    seen,
                    "bfd_down",
                    &p.address,
                    p.bfd_failures,
                    &self.bfd_failures.get_or_create(&l),
                );
            }
            let downs = p.established_count.saturating_sub(u64::from(p.is_up()));
            self.add(
                seen,
                "up",
                &p.address,
                p.established_count,
                &self.bgp_up_transitions.get_or_create(&l),
            );
            self.add(
                seen,
                "down",
                &p.address,
                downs,
                &self.bgp_down_transitions.get_or_create(&l),
            );
            self.add(
                seen,
                "updates",
                &p.address,
                p.updates_out,
                &self.bgp_updates_sent.get_or_create(&l),
            );
        }

        for i in &view.interfaces {
            let l = InterfaceLabels {
                interface: i.name.clone(),
            };
            self.add(
                seen,
                "l2ann",
                &i.name,
                i.announcements,
                &self.l2_announcements_sent.get_or_create(&l),
            );
            self.add(
                seen,
                "l2req",
                &i.name,
                i.requests_answered,
                &self.l2_requests_answered.get_or_create(&l),
            );
        }

        self.cloud_load_balancers.clear();
        if let Some(c) = &view.cloud {
            for call in &c.calls {
                let l = CloudActionLabels {
                    action: call.action.clone(),
                };
                let a = call.action.as_str();
                self.add(
                    seen,
                    "cloudreq",
                    a,
                    call.requests,
                    &self.cloud_calls.get_or_create(&l),
                );
                self.add(
                    seen,
                    "clouderr",
                    a,
                    call.failed,
                    &self.cloud_call_errors.get_or_create(&l),
                );
                self.add(
                    seen,
                    "cloudretry",
                    a,
                    call.retried,
                    &self.cloud_call_retries.get_or_create(&l),
                );
                self.add(
                    seen,
                    "cloudms",
                    a,
                    call.latency_ms,
                    &self.cloud_call_latency.get_or_create(&l),
                );
            }
            for lb in &c.load_balancers {
                let state = if lb.last_error.is_some() {
                    "error"
                } else if lb.converged {
                    "converged"
                } else {
                    "pending"
                };
                self.cloud_load_balancers
                    .get_or_create(&CloudStateLabels {
                        state: state.into(),
                    })
                    .inc();
            }
        }

        if !seen
            .pools
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &view.pools))
        {
            self.update_pools(view);
            seen.pools = Some(view.pools.clone());
        }

        self.members.clear();
        for h in [
            Health::Alive,
            Health::Suspect,
            Health::Dead,
            Health::Unknown,
        ] {
            let n = view.members.iter().filter(|m| m.health == h).count();
            self.members
                .get_or_create(&HealthLabels {
                    health: h.as_str().into(),
                })
                .set(gauge_value(n as u64));
        }
        self.member_suspicions
            .inc_by(new_suspicions(&seen.members, &view.members));
        seen.members = view
            .members
            .iter()
            .map(|m| (m.name.clone(), m.health))
            .collect();
    }
}

#[cfg(test)]
mod tests;
