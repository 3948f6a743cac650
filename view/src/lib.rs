//! The JSON a speaker serves on its local API (`GET /v1/view`) and `edgelbctl` reads.
//!
//! A crate of its own so that a client depends on the types it reads, not on the daemon
//! (kube, netlink, tokio): serde only. Plain data: strings, numbers and Unix times in seconds, so the CLI, scripts and tests read
//! it without knowing the daemon's internals. Times are wall-clock seconds since the epoch on
//! the speaker; `generated_at` is the speaker's clock when the view was taken, so a reader
//! computes ages as `generated_at - since` and is not fooled by its own clock.
//!
//! Nothing here can hold a secret: BGP passwords are never copied into a view (the daemon's
//! builders take its types and copy only what is listed here).
#![forbid(unsafe_code)]

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The version of this JSON shape; bumped on an incompatible change.
pub const VIEW_API: &str = "v1";

/// Where a speaker's local API listens by default (a Unix socket).
pub const DEFAULT_SOCKET: &str = "/run/edgelb/speaker.sock";

/// The header edgelbctl sends its token in through the pod proxy (which removes
/// `Authorization`): `Bearer TOKEN`.
pub const TOKEN_HEADER: &str = "x-edgelb-authorization";

/// Everything a speaker shows about itself. The sections that grow with the number of
/// Services are shared (`Arc`) between successive views that did not change them.
///
/// A reader has the three Service-sized lists `announcements`, `allocations` and `services`
/// as `Vec`s (the defaults); the speaker fills them with lists it builds only when a request
/// reads them (its own type, serialized as the same list).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalView<
    Allocations = Vec<AllocationView>,
    Services = Vec<ServiceView>,
    Announcements = Vec<AnnouncementView>,
> {
    /// [`VIEW_API`].
    pub api: String,
    /// This node's name.
    pub node: String,
    /// The speaker's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// When the view was taken (Unix seconds, the speaker's clock).
    pub generated_at: u64,
    /// True once the first snapshot has been applied.
    pub ready: bool,
    /// The node holding the leader Lease, when known (standalone mode: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Speakers this node knows of, with their health.
    #[serde(default)]
    pub members: Vec<MemberView>,
    /// BGP sessions.
    #[serde(default)]
    pub peers: Vec<PeerView>,
    /// What this node announces now (a list of [`AnnouncementView`]).
    #[serde(default)]
    pub announcements: Announcements,
    /// Interfaces the L2 announcer serves.
    #[serde(default)]
    pub interfaces: Vec<InterfaceView>,
    /// Policy routes this node installs.
    #[serde(default)]
    pub policy_routes: Vec<PolicyRouteView>,
    /// Allocation outcome of every Service (a list of [`AllocationView`]).
    #[serde(default)]
    pub allocations: Allocations,
    /// IP pools with their size and usage.
    #[serde(default, with = "shared")]
    pub pools: Arc<Vec<PoolView>>,
    /// Per Service: which nodes may serve it and why the others may not (`explain`; a list
    /// of [`ServiceView`]).
    #[serde(default)]
    pub services: Services,
    /// Cloud load balancers (`--elb-*`), as this speaker's driver last saw them; only the
    /// Lease holder drives them (`edgelbctl elb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudView>,
    /// The node pools (OpenYurt `NodePool` objects or node labels) and their members.
    #[serde(default)]
    pub node_pools: Vec<NodePoolView>,
}

/// The cloud driver's state (no credentials: only the Secret's name appears, in `problem`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudView {
    /// This speaker drives the cloud now (holds the Lease and has credentials).
    pub active: bool,
    /// Why it cannot (e.g. the credentials Secret is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// One per (Service, node pool).
    #[serde(default)]
    pub load_balancers: Vec<CloudLbView>,
    /// Names being deleted, with the last error if any.
    #[serde(default)]
    pub deleting: Vec<String>,
    /// Calls per cloud action since start.
    #[serde(default)]
    pub calls: Vec<CloudCallView>,
}

/// One pool's cloud load balancer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudLbView {
    /// `namespace/name` of the Service.
    pub service: String,
    pub pool: String,
    /// `namespace/name` of the PoolService.
    pub pool_service: String,
    /// `k8s/<service>/<namespace>/<pool>/<cluster>`.
    pub name: String,
    pub user_managed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip_id: Option<String>,
    /// `tcp/80 -> 30080 Running`.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// `i-123:100`.
    #[serde(default)]
    pub backends: Vec<String>,
    /// Nodes of the pool that are not backends, and why.
    #[serde(default)]
    pub skipped: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    pub converged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The calls of the last round that changed something.
    #[serde(default)]
    pub last_actions: Vec<String>,
    /// Unix seconds of the last round.
    pub updated: u64,
}

/// One cloud action's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudCallView {
    pub action: String,
    /// HTTP requests, retries included.
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub retried: u64,
    /// Summed latency of the calls, milliseconds.
    pub latency_ms: u64,
}

/// One node pool and its members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolView {
    /// The pool's name.
    pub name: String,
    /// `NodePool` (an OpenYurt object exists) or `node label` (only nodes name it).
    pub source: String,
    /// The pool's labels (what `service.openyurt.io/nodepool-labelselector` selects).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its nodes, sorted.
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// (De)serializes a shared section as the list it holds (serde's `rc` feature would do
/// the same for every crate of the build).
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Arc<Vec<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.as_slice().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Arc<Vec<T>>, D::Error> {
        Vec::deserialize(d).map(Arc::new)
    }
}

/// Health of a member as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Health {
    /// Answers probes (or, without membership, is a Ready node).
    Alive,
    /// Missed probes; not yet declared dead.
    Suspect,
    /// Declared dead: its IPs moved.
    Dead,
    /// No information.
    Unknown,
}

impl Health {
    /// The word shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Alive => "Alive",
            Health::Suspect => "Suspect",
            Health::Dead => "Dead",
            Health::Unknown => "Unknown",
        }
    }
}

/// One speaker of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    /// Node name.
    pub name: String,
    /// Its health.
    pub health: Health,
    /// Since when it has had this health (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Its node pool, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
}

/// One BGP session (RFC 4271 §8 state and counters).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    /// Peer address.
    pub address: String,
    /// The `BGPPeer` object (or description) it comes from.
    pub name: String,
    /// FSM state: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub state: String,
    /// When the session reached Established (Unix seconds), while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established_since: Option<u64>,
    /// The last error (NOTIFICATION code/subcode and text, or a transport error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last error happened (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<u64>,
    /// Prefixes the peer has from us.
    pub prefixes_sent: u64,
    /// Prefixes the peer sent us.
    pub prefixes_received: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// UPDATE messages received.
    pub updates_in: u64,
    /// UPDATE messages sent.
    pub updates_out: u64,
    /// Times the session reached Established.
    pub established_count: u64,
    /// BFD state (RFC 5880: AdminDown, Down, Init, Up) when the peer has a `bfdProfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
    /// The diagnostic of BFD's last change, or why BFD (or its Echo function) cannot run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_diag: Option<String>,
    /// Times a BFD failure took the BGP session down.
    #[serde(default)]
    pub bfd_failures: u64,
    /// Families negotiated on the session (`ipv4-unicast`, `ipv6-unicast`), while it is up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<String>,
    /// Negotiated families whose routes are not announced, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families_not_announced: Vec<FamilyNotAnnouncedView>,
    /// Prefixes the peer should have from us but does not (family not negotiated or without
    /// a next hop); never counted in `prefixesSent`.
    #[serde(default)]
    pub prefixes_not_sent: u64,
    /// Graceful restart (RFC 4724) negotiated with the peer, while up.
    #[serde(default)]
    pub graceful_restart: bool,
    /// Both sides set the N bit (RFC 8538), while up.
    #[serde(default)]
    pub graceful_notification: bool,
}

/// A negotiated family whose routes are not announced to a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyNotAnnouncedView {
    /// `ipv4-unicast` or `ipv6-unicast`.
    pub family: String,
    /// Why (e.g. no IPv6 next hop on the interface toward the peer).
    pub reason: String,
}

impl PeerView {
    /// True when the session is Established.
    pub fn is_up(&self) -> bool {
        self.state == "Established"
    }
}

/// How an IP is announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// To BGP peers.
    #[serde(rename = "BGP")]
    Bgp,
    /// By gratuitous ARP / unsolicited NA and answers on a LAN.
    #[serde(rename = "L2")]
    L2,
}

impl Mode {
    /// The word shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bgp => "BGP",
            Mode::L2 => "L2",
        }
    }
}

/// One IP this node announces, in one mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnouncementView {
    /// The address (BGP: the announced prefix may be wider, see `prefix`).
    pub ip: String,
    /// `namespace/name` of the Service.
    pub service: String,
    /// The pool the IP comes from.
    pub pool: String,
    /// The node pool of a per-pool IP (`service.openyurt.io/nodepool-labelselector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// BGP or L2.
    pub mode: Mode,
    /// The node that owns the IP (BGP: every announcing node is an owner; this node).
    pub owner: String,
    /// Since when this node announces it (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// BGP: the announced prefix (`ip/32` unless aggregated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// BGP: the peers it is announced to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// L2: the interfaces it is announced on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}

/// One interface of the L2 announcer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceView {
    /// Interface name.
    pub name: String,
    /// Carrier and operstate up.
    pub up: bool,
    /// Why it cannot be served now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// IPs owned on it (shared between the speaker's views while they do not change).
    #[serde(default, with = "shared")]
    pub ips: Arc<Vec<String>>,
    /// Announcement rounds sent (all IPs).
    pub announcements: u64,
    /// ARP requests and neighbour solicitations answered.
    pub requests_answered: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Frames that could not be sent.
    pub send_errors: u64,
    /// Frames the kernel dropped.
    pub receive_drops: u64,
}

/// One `PolicyRoute` object that selects this node: what it installs here, or why nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRouteView {
    /// The `PolicyRoute` object.
    pub name: String,
    /// Routing table on this node (after the node's annotation), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Priority of its rules.
    pub priority: u32,
    /// `Installed`; the planner's reason for installing nothing (`TableInUse`,
    /// `UnknownInterface`, ...); or `KernelRefused` when the kernel refused a change.
    pub state: String,
    /// The condition's message, or the kernel's refusal.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Its rules (none unless planned).
    #[serde(default)]
    pub rules: Vec<PolicyRuleView>,
    /// Its routes in `table` (none unless planned).
    #[serde(default)]
    pub routes: Vec<PolicyRouteEntryView>,
}

impl PolicyRouteView {
    /// True when everything the object wants on this node is installed.
    pub fn installed(&self) -> bool {
        self.state == "Installed"
    }
}

/// One rule, `ip rule` style: `priority: from FROM to TO lookup TABLE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRuleView {
    /// Rule priority.
    pub priority: u32,
    /// Source prefix (`10.0.0.3/32`).
    pub from: String,
    /// Destination prefix; `all` (our rules match any destination).
    pub to: String,
    /// Table looked up.
    pub table: u32,
}

/// One route in a policy table, `ip route` style: `DST [via GATEWAY] dev DEV table TABLE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRouteEntryView {
    /// Destination (`0.0.0.0/0`, or the interface's subnet).
    pub dst: String,
    /// Gateway; none for the on-link subnet route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Output interface (its index when the name is unknown).
    pub dev: String,
    /// Routing table.
    pub table: u32,
}

/// The allocation outcome of one Service (and node pool).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationView {
    /// `namespace/name`.
    pub service: String,
    /// The node pool, for per-pool allocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// The IP pool, when allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The IPs.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Why there is no IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One IP pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// The pool's ranges as written.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Allocatable addresses (saturating at `u64::MAX` for huge IPv6 ranges).
    pub size: u64,
    /// Addresses in use.
    pub used: u64,
    /// Allocations that failed and named this pool.
    #[serde(default)]
    pub failures: u64,
    /// `autoAssign`.
    pub auto_assign: bool,
    /// Why the pool is not used, when it is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `edgelbctl explain svc/NAME` shows besides allocations and announcements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    /// `namespace/name`.
    pub service: String,
    /// The node pool, for a per-pool allocation (one view per pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// `externalTrafficPolicy`, and for a per-pool allocation whether only the pool's
    /// endpoints count (`openyurt.io/topologyKeys: openyurt.io/nodepool`).
    pub traffic_policy: String,
    /// Every node considered, with why it was excluded (none when it may serve).
    #[serde(default)]
    pub candidates: Vec<CandidateView>,
    /// Each L2 IP of the Service: why it is where it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpRankView>,
}

/// Why an L2 IP is where it is, as this node's election sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRankView {
    /// The IP.
    pub ip: String,
    /// The elected owner, if any node is eligible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Every node in the IP's rendezvous order (best first), with why the election skipped
    /// it; the owner is the first without a reason.
    #[serde(default)]
    pub ranked: Vec<CandidateView>,
    /// This node won the IP but waits until then (Unix ms, this node's clock) before
    /// answering for it: the previous owner is alive and lets go first (the handoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_until_ms: Option<u64>,
}

/// One node considered for a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateView {
    /// Node name.
    pub node: String,
    /// Why it may not serve the Service; `None` when it may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view with every section filled reads back to itself, and its JSON keeps the names
    /// scripts use (camelCase, `BGP`/`L2`, optional fields left out when empty).
    #[test]
    fn a_full_view_round_trips_and_keeps_its_field_names() {
        let view = LocalView {
            api: VIEW_API.into(),
            node: "edge-1".into(),
            version: "0.1.0".into(),
            generated_at: 100,
            ready: true,
            leader: Some("edge-2".into()),
            members: vec![MemberView {
                name: "edge-2".into(),
                health: Health::Suspect,
                since: Some(90),
                node_pool: None,
            }],
            peers: vec![PeerView {
                address: "192.0.2.1".into(),
                state: "Established".into(),
                ..PeerView::default()
            }],
            announcements: vec![AnnouncementView {
                ip: "198.51.100.7".into(),
                service: "default/web".into(),
                pool: "p".into(),
                node_pool: Some("hefei".into()),
                mode: Mode::L2,
                owner: "edge-1".into(),
                since: Some(95),
                prefix: None,
                peers: vec![],
                interfaces: vec!["eth1".into()],
            }],
            allocations: vec![AllocationView {
                service: "default/web".into(),
                node_pool: None,
                pool: Some("p".into()),
                ips: vec!["198.51.100.7".into()],
                error: None,
            }],
            pools: Arc::new(vec![PoolView {
                name: "p".into(),
                addresses: vec!["198.51.100.0/28".into()],
                size: 16,
                used: 1,
                failures: 0,
                auto_assign: true,
                error: None,
            }]),
            services: vec![ServiceView {
                service: "default/web".into(),
                node_pool: None,
                traffic_policy: "Cluster".into(),
                candidates: vec![CandidateView {
                    node: "edge-3".into(),
                    excluded: Some("not Ready".into()),
                }],
                ips: vec![],
            }],
            cloud: Some(CloudView::default()),
            ..LocalView::default()
        };
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["generatedAt"], 100);
        assert_eq!(json["announcements"][0]["mode"], "L2");
        assert_eq!(json["announcements"][0]["nodePool"], "hefei");
        assert!(json["announcements"][0].get("prefix").is_none());
        assert_eq!(json["members"][0]["health"], "suspect");
        assert_eq!(
            json["services"][0]["candidates"][0]["excluded"],
            "not Ready"
        );
        let back: LocalView = serde_json::from_value(json).expect("read back");
        assert_eq!(back, view);
    }

    /// An older or smaller speaker's view (only the required fields) still reads.
    #[test]
    fn a_minimal_view_reads_with_empty_sections() {
        let v: LocalView = serde_json::from_str(
            r#"{"api":"v1","node":"n","version":"0.1.0","generatedAt":1,"ready":false}"#,
        )
        .expect("minimal view");
        assert!(v.allocations.is_empty() && v.services.is_empty() && v.cloud.is_none());
    }
}
