//! The BGP planner: from the snapshot, the allocation and this node's facts, the BGP
//! sessions this node opens ([`PeerConfig`] per peer) and the whole route table each peer
//! must have (prefix -> attributes).
//!
//! - Peers: every valid `BGPPeer` whose `nodeSelectors` match this node; the TCP MD5
//!   password (RFC 2385) comes from the Secret named by `passwordSecret`, key `password`.
//!   A peer whose Secret is missing is not opened (a [`BgpProblem`] says why).
//! - Routes: each IP of each Service, for each valid `BGPAdvertisement` that covers the IP's
//!   pool and selects this node, to the advertisement's peers (all selected peers when it
//!   names none). The prefix is the IP truncated to `aggregationLength(V6)`; attributes carry
//!   the advertisement's communities (RFC 1997), large communities (RFC 8092) and LOCAL_PREF
//!   (RFC 4271 5.1.5, sent to iBGP peers only by the speaker).
//! - The floor ([`super::node_floor`]): a Node that is not `Ready`, has `NetworkUnavailable`, or
//!   carries `node.kubernetes.io/exclude-from-external-load-balancers` keeps its sessions
//!   but announces nothing, as in L2.
//! - Traffic policy ([`super::endpoints`]): `Local` announces only from nodes with a ready
//!   local endpoint, `Cluster` from every selected node while any endpoint is ready.
//! - Two advertisements giving one prefix to one peer: their communities are merged and the
//!   highest LOCAL_PREF wins, so the result does not depend on object order.
//!
//! Pure: no I/O, no clock. BGP announcements do not depend on the election (every eligible
//! node announces; the router spreads the traffic by ECMP).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use edgelb_bgp::packet::{Community, Family, LargeCommunity};
use edgelb_bgp::{
    BfdPeerConfig, GracefulRestartConfig, PeerConfig, RouteAttrs, RouteTable, Secret,
};
use ipnet::IpNet;

use crate::api::bfd_profile::{
    DEFAULT_DETECT_MULTIPLIER, DEFAULT_ECHO_INTERVAL_MS, DEFAULT_INTERVAL_MS, DEFAULT_MINIMUM_TTL,
};
use crate::api::validate::parse_duration;
use crate::api::{BFDProfileSpec, BGPAdvertisement, BGPPeer};
use crate::election::ExclusionReason;
use crate::ipam::Assignments;
use crate::plan::endpoints::node_may_serve_key;
use crate::plan::node_floor::node_floor;
use crate::selector::matches_any;
use crate::snapshot::{ObjectKey, Snapshot};

/// The Secret key that holds a BGP password (MetalLB's too).
pub const PASSWORD_KEY: &str = "password";

/// What the planner knows about this node besides the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's name.
    pub name: String,
    /// Its labels (from the Node object).
    pub labels: BTreeMap<String, String>,
    /// The node's addresses, first the preferred ones (Node `InternalIP`s, then the host's).
    pub addresses: Vec<IpAddr>,
}

impl NodeFacts {
    /// Facts from the Node object in the snapshot, with `extra` addresses (from the command
    /// line or the host) after the Node's own `InternalIP`s.
    pub fn from_snapshot(snap: &Snapshot, name: &str, extra: &[IpAddr]) -> NodeFacts {
        let node = snap.nodes.get(name);
        let labels = node
            .and_then(|n| n.node.metadata.labels.clone())
            .unwrap_or_default();
        let mut addresses: Vec<IpAddr> = node
            .and_then(|n| n.node.status.as_ref())
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        for a in extra {
            if !addresses.contains(a) {
                addresses.push(*a);
            }
        }
        NodeFacts {
            name: name.to_string(),
            labels,
            addresses,
        }
    }

    /// The BGP identifier: the first IPv4 address (RFC 6286 only asks it to be unique
    /// within the AS; a node's address is).
    pub fn router_id(&self) -> Option<Ipv4Addr> {
        self.addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }
}

/// Session settings that are not in the CRDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpDefaults {
    /// First reconnect interval (it doubles per failure up to `connect_retry_max`).
    pub connect_retry: Duration,
    /// Reconnect interval ceiling.
    pub connect_retry_max: Duration,
    /// Restart time advertised with graceful restart (RFC 4724 3), seconds, when the peer
    /// sets no `gracefulRestartTime`.
    pub graceful_restart_time: u16,
    /// This speaker is coming back from a planned restart (its restart marker was fresh at
    /// start): graceful restart peers get the R bit (RFC 4724 3) in the first OPEN.
    pub restarting: bool,
}

impl Default for BgpDefaults {
    fn default() -> Self {
        BgpDefaults {
            connect_retry: Duration::from_secs(1),
            connect_retry_max: Duration::from_secs(30),
            graceful_restart_time: 120,
            restarting: false,
        }
    }
}

/// One session and the routes it must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPlan {
    /// The `BGPPeer` this comes from.
    pub object: ObjectKey,
    /// The session.
    pub config: PeerConfig,
    /// The whole table the peer must have.
    pub routes: Arc<RouteTable>,
}

/// Why something configured does not take effect on this node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BgpProblem {
    /// The password Secret or its key is missing.
    #[error("BGPPeer {peer}: Secret {secret:?} has no key {PASSWORD_KEY:?} (or does not exist); the session is not opened")]
    MissingPassword {
        /// The peer object.
        peer: ObjectKey,
        /// The Secret's name.
        secret: String,
    },
    /// The password is not UTF-8 or too long for TCP MD5.
    #[error("BGPPeer {peer}: the password in Secret {secret:?} must be 1 to 80 UTF-8 bytes")]
    BadPassword {
        /// The peer object.
        peer: ObjectKey,
        /// The Secret's name.
        secret: String,
    },
    /// `spec.bfdProfile` names no valid `BFDProfile` (validation says so too; this covers
    /// a profile deleted between the two).
    #[error(
        "BGPPeer {peer}: BFDProfile {profile:?} is missing or not Valid; the session is not opened"
    )]
    MissingBfdProfile {
        /// The peer object.
        peer: ObjectKey,
        /// The profile's name.
        profile: String,
    },
    /// No router id: neither `spec.routerID` nor an IPv4 address of the node.
    #[error("BGPPeer {peer}: no spec.routerID and node {node} has no IPv4 address to use as BGP identifier")]
    NoRouterId {
        /// The peer object.
        peer: ObjectKey,
        /// The node.
        node: String,
    },
    /// Two `BGPPeer`s for one address; the first by key wins.
    #[error("BGPPeer {peer}: address {address} is already used by BGPPeer {winner}; ignored")]
    DuplicateAddress {
        /// The ignored peer.
        peer: ObjectKey,
        /// The address.
        address: IpAddr,
        /// The peer that keeps it.
        winner: ObjectKey,
    },
    /// This node is below the floor: sessions stay up, nothing is announced.
    #[error("node {node} announces nothing: {}", reason.as_str())]
    NodeExcluded {
        /// The node.
        node: String,
        /// Why (`excludedByLabel`, `nodeNotReady` or `networkUnavailable`).
        reason: ExclusionReason,
    },
}

/// Everything BGP this node must do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpPlan {
    /// Sessions by peer address.
    pub peers: BTreeMap<IpAddr, PeerPlan>,
    /// What could not be applied, for logs and status.
    pub problems: Vec<BgpProblem>,
}

/// A valid advertisement that selects this node, prepared once per plan.
struct Adv {
    spec_pools: Vec<String>,
    obj: Arc<BGPAdvertisement>,
    attrs: Arc<RouteAttrs>,
    len_v4: u8,
    len_v6: u8,
    /// Peer addresses this advertisement goes to.
    peers: Vec<IpAddr>,
}

/// Plans the BGP sessions and routes of node `me`.
pub fn plan(
    snap: &Snapshot,
    assignments: &Assignments,
    me: &NodeFacts,
    defaults: &BgpDefaults,
) -> BgpPlan {
    let mut out = BgpPlan::default();
    let mut names: BTreeMap<Arc<str>, IpAddr> = BTreeMap::new();
    let mut owners: BTreeMap<IpAddr, ObjectKey> = BTreeMap::new();
    for (key, checked) in &snap.peers {
        if !checked.is_valid() || !matches_any(&checked.object.spec.node_selectors, &me.labels) {
            continue;
        }
        let Ok(addr) = checked.object.spec.peer_address.parse::<IpAddr>() else {
            continue;
        };
        if let Some(winner) = owners.get(&addr) {
            out.problems.push(BgpProblem::DuplicateAddress {
                peer: key.clone(),
                address: addr,
                winner: winner.clone(),
            });
            continue;
        }
        match peer_config(snap, key, &checked.object, addr, me, defaults) {
            Ok(config) => {
                owners.insert(addr, key.clone());
                names.insert(key.name.clone(), addr);
                out.peers.insert(
                    addr,
                    PeerPlan {
                        object: key.clone(),
                        config,
                        routes: Arc::new(RouteTable::new()),
                    },
                );
            }
            Err(p) => out.problems.push(p),
        }
    }
    if out.peers.is_empty() {
        return out;
    }
    if let Some(reason) = snap
        .nodes
        .get(me.name.as_str())
        .and_then(|n| node_floor(&n.node))
    {
        out.problems.push(BgpProblem::NodeExcluded {
            node: me.name.clone(),
            reason,
        });
        return out;
    }

    let advs = advertisements(snap, me, &names, &out.peers);
    let pool_labels: HashMap<&str, &BTreeMap<String, String>> = snap
        .pools
        .iter()
        .filter_map(|(k, p)| Some((&*k.name, p.object.metadata.labels.as_ref()?)))
        .collect();
    let empty = BTreeMap::new();
    let mut by_pool: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
    let mut tables: BTreeMap<IpAddr, RouteTable> = BTreeMap::new();

    for (akey, outcome) in &assignments.outcomes {
        let Ok(alloc) = outcome else { continue };
        let Some(svc) = snap.services.get(&akey.service) else {
            continue;
        };
        let covering = by_pool.entry(alloc.pool.clone()).or_insert_with(|| {
            let labels = pool_labels.get(&*alloc.pool).copied().unwrap_or(&empty);
            advs.iter()
                .enumerate()
                .filter(|(_, a)| covers(a, &alloc.pool, labels))
                .map(|(i, _)| i)
                .collect()
        });
        // A per-node-pool IP only from that pool's nodes (to the peers of that pool: the
        // BGPPeers this node opens), as the election's `pool` restriction says.
        if covering.is_empty() || !node_may_serve_key(snap, akey, svc, &me.name) {
            continue;
        }
        for &i in covering.iter() {
            let adv = &advs[i];
            for ip in &alloc.ips {
                let len = if ip.is_ipv4() { adv.len_v4 } else { adv.len_v6 };
                let Ok(net) = IpNet::new(*ip, len) else {
                    continue;
                };
                let prefix = net.trunc();
                for peer in &adv.peers {
                    let table = tables.entry(*peer).or_default();
                    match table.get(&prefix) {
                        Some(have) if **have != *adv.attrs => {
                            let merged = merge(have, &adv.attrs);
                            table.insert(prefix, Arc::new(merged));
                        }
                        Some(_) => {}
                        None => {
                            table.insert(prefix, adv.attrs.clone());
                        }
                    }
                }
            }
        }
    }
    for (addr, table) in tables {
        if let Some(p) = out.peers.get_mut(&addr) {
            p.routes = Arc::new(table);
        }
    }
    out
}

/// The advertisement covers pool `pool`: by name, by labels, or (neither given) all pools.
/// ([`super::coverage::covers`], the rule every caller shares).
fn covers(adv: &Adv, pool: &str, labels: &BTreeMap<String, String>) -> bool {
    let spec = &adv.obj.spec;
    super::coverage::covers(
        &adv.spec_pools,
        &spec.ip_address_pool_selectors,
        pool,
        labels,
    )
}

/// Communities merged (sorted, deduplicated), the higher LOCAL_PREF.
fn merge(a: &RouteAttrs, b: &RouteAttrs) -> RouteAttrs {
    let communities: BTreeSet<Community> = a
        .communities
        .iter()
        .chain(&b.communities)
        .copied()
        .collect();
    let large: BTreeSet<LargeCommunity> = a
        .large_communities
        .iter()
        .chain(&b.large_communities)
        .copied()
        .collect();
    RouteAttrs {
        communities: communities.into_iter().collect(),
        large_communities: large.into_iter().collect(),
        local_pref: a.local_pref.max(b.local_pref),
        ..a.clone()
    }
}

/// Valid advertisements that select this node, with their attributes and peers resolved.
fn advertisements(
    snap: &Snapshot,
    me: &NodeFacts,
    names: &BTreeMap<Arc<str>, IpAddr>,
    peers: &BTreeMap<IpAddr, PeerPlan>,
) -> Vec<Adv> {
    let aliases: BTreeMap<&str, &str> = snap
        .communities
        .values()
        .filter(|c| c.is_valid())
        .flat_map(|c| c.object.spec.communities.iter())
        .map(|a| (a.name.as_str(), a.value.as_str()))
        .collect();
    let mut out = Vec::new();
    for checked in snap.bgp_advertisements.values() {
        let spec = &checked.object.spec;
        if !checked.is_valid() || !matches_any(&spec.node_selectors, &me.labels) {
            continue;
        }
        let mut communities = BTreeSet::new();
        let mut large = BTreeSet::new();
        for c in &spec.communities {
            let value = aliases.get(c.as_str()).copied().unwrap_or(c.as_str());
            match parse_community(value) {
                Some(Parsed::Standard(x)) => {
                    communities.insert(x);
                }
                Some(Parsed::Large(x)) => {
                    large.insert(x);
                }
                None => {}
            }
        }
        let attrs = RouteAttrs {
            local_pref: spec.local_pref,
            communities: communities.into_iter().collect(),
            large_communities: large.into_iter().collect(),
            ..RouteAttrs::default()
        };
        let targets: Vec<IpAddr> = if spec.peers.is_empty() {
            peers.keys().copied().collect()
        } else {
            spec.peers
                .iter()
                .filter_map(|n| names.get(n.as_str()).copied())
                .collect()
        };
        out.push(Adv {
            spec_pools: spec.ip_address_pools.clone(),
            obj: checked.object.clone(),
            attrs: Arc::new(attrs),
            len_v4: length(spec.aggregation_length, 32),
            len_v6: length(spec.aggregation_length_v6, 128),
            peers: targets,
        });
    }
    out
}

fn length(value: Option<i32>, max: u8) -> u8 {
    value
        .and_then(|v| u8::try_from(v).ok())
        .filter(|v| *v <= max)
        .unwrap_or(max)
}

/// A parsed community value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// `ASN:VALUE` (RFC 1997).
    Standard(Community),
    /// `large:A:B:C` (RFC 8092).
    Large(LargeCommunity),
}

/// Parses `ASN:VALUE` or `large:A:B:C`; `None` for anything else.
pub fn parse_community(text: &str) -> Option<Parsed> {
    if let Some(rest) = text.strip_prefix("large:") {
        let mut it = rest.split(':').map(|p| p.parse::<u32>());
        let (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return None;
        };
        return Some(Parsed::Large(LargeCommunity {
            global_admin: a,
            local_data1: b,
            local_data2: c,
        }));
    }
    let (asn, value) = text.split_once(':')?;
    let asn: u16 = asn.parse().ok()?;
    let value: u16 = value.parse().ok()?;
    Some(Parsed::Standard(Community(
        (u32::from(asn) << 16) | u32::from(value),
    )))
}

/// A validated duration field in whole seconds (validation refused anything else).
fn seconds(text: Option<&str>) -> Option<u16> {
    let d = parse_duration(text?)?;
    u16::try_from(d.as_secs()).ok()
}

/// BFD for a peer from its profile: MetalLB's defaults for unset fields; multihop (RFC
/// 5883) exactly when the BGP session is eBGP multihop, single hop (RFC 5881) otherwise.
/// Echo (`echoMode`, every `echoInterval`) only on single hop: RFC 5883 has none, and
/// validation refuses the combination.
pub fn bfd_config(p: &BFDProfileSpec, multihop: bool) -> BfdPeerConfig {
    let ms = |v: Option<u32>| Duration::from_millis(u64::from(v.unwrap_or(DEFAULT_INTERVAL_MS)));
    BfdPeerConfig {
        timers: edgelb_bgp::bfd::SessionConfig {
            desired_min_tx: ms(p.transmit_interval),
            required_min_rx: ms(p.receive_interval),
            detect_mult: u8::try_from(p.detect_multiplier.unwrap_or(DEFAULT_DETECT_MULTIPLIER))
                .unwrap_or(u8::MAX),
            passive: p.passive_mode,
            echo: (p.echo_mode && !multihop).then(|| {
                Duration::from_millis(u64::from(
                    p.echo_interval.unwrap_or(DEFAULT_ECHO_INTERVAL_MS),
                ))
            }),
        },
        multihop,
        minimum_ttl: u8::try_from(p.minimum_ttl.unwrap_or(DEFAULT_MINIMUM_TTL)).unwrap_or(u8::MAX),
    }
}

/// The session for one `BGPPeer` on this node. The spec was validated: every value here is
/// one the speaker honours as written.
fn peer_config(
    snap: &Snapshot,
    key: &ObjectKey,
    peer: &BGPPeer,
    addr: IpAddr,
    me: &NodeFacts,
    defaults: &BgpDefaults,
) -> Result<PeerConfig, BgpProblem> {
    let spec = &peer.spec;
    let mut c = PeerConfig::new(addr, spec.my_asn, spec.peer_asn);
    c.port = spec.peer_port.unwrap_or(edgelb_bgp::config::BGP_PORT);
    c.router_id = match spec.router_id.as_deref().and_then(|r| r.parse().ok()) {
        Some(id) => Some(id),
        None => Some(me.router_id().ok_or_else(|| BgpProblem::NoRouterId {
            peer: key.clone(),
            node: me.name.clone(),
        })?),
    };
    c.source_address = spec.source_address.as_deref().and_then(|s| s.parse().ok());
    if let Some(h) = seconds(spec.hold_time.as_deref()) {
        c.hold_time = h;
    }
    c.keepalive = seconds(spec.keepalive_time.as_deref());
    c.connect_retry = defaults.connect_retry;
    if let Some(t) = seconds(spec.connect_time.as_deref()) {
        c.connect_retry = Duration::from_secs(u64::from(t));
    }
    c.connect_retry_max = defaults.connect_retry_max.max(c.connect_retry);
    if let Some(d) = spec.open_wait_time.as_deref().and_then(parse_duration) {
        c.open_wait = d;
    }
    if spec.ebgp_multi_hop && c.is_ebgp() {
        c.ebgp_multihop = Some(255);
    }
    c.gtsm = spec.enable_gtsm;
    c.passive = spec.passive;
    // Multiprotocol by default (as MetalLB): both families over one session, each with a
    // next hop of its own family (edgelb_bgp::next_hop).
    c.families = if spec.disable_mp {
        vec![Family::of(&IpNet::from(addr))]
    } else {
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    };
    if let Some(max) = spec.max_prefixes {
        c.import = true;
        c.max_prefixes = Some(max);
    }
    if spec.enable_graceful_restart {
        let time = seconds(spec.graceful_restart_time.as_deref())
            .unwrap_or(defaults.graceful_restart_time)
            .min(0x0fff);
        let mut gr = GracefulRestartConfig::new(time);
        gr.restarting = defaults.restarting;
        c.graceful_restart = Some(gr);
    }
    if let Some(name) = spec.bfd_profile.as_deref().filter(|n| !n.is_empty()) {
        let profile = snap
            .bfd_profiles
            .iter()
            .find(|(k, c)| &*k.name == name && c.is_valid())
            .map(|(_, c)| &c.object.spec)
            .ok_or_else(|| BgpProblem::MissingBfdProfile {
                peer: key.clone(),
                profile: name.to_string(),
            })?;
        c.bfd = Some(bfd_config(profile, c.ebgp_multihop.is_some()));
    }
    if let Some(secret) = &spec.password_secret {
        let value = snap
            .secrets
            .get(secret.name.as_str())
            .and_then(|s| s.data.0.get(PASSWORD_KEY).cloned())
            .ok_or_else(|| BgpProblem::MissingPassword {
                peer: key.clone(),
                secret: secret.name.clone(),
            })?;
        let text = String::from_utf8(value)
            .ok()
            .filter(|t| !t.is_empty() && t.len() <= 80)
            .ok_or_else(|| BgpProblem::BadPassword {
                peer: key.clone(),
                secret: secret.name.clone(),
            })?;
        c.password = Some(Secret::new(text));
    }
    c.description = key.to_string();
    Ok(c)
}

#[cfg(test)]
#[path = "bgp_tests.rs"]
mod tests;
