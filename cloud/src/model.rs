//! The provider-neutral shapes of a cloud load balancer: what we want (`Desired`), what the
//! cloud has (`Observed`) and the steps between them (`Action`). No provider's wire names here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A listener's transport protocol. Kubernetes' SCTP has no ENS listener and is refused by
/// the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The lower-case name clouds use on the wire (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// Parses `tcp`/`TCP`/`udp`/`UDP`.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A listener is identified by its frontend port and protocol (TCP 53 and UDP 53 coexist).
pub type ListenerKey = (Protocol, u16);

/// The network a pool's load balancer is created in (from the pool's annotations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkRef {
    /// ENS node (edge region), e.g. `cn-chengdu-telecom`.
    pub region: String,
    pub network_id: String,
    /// The vSwitch the load balancer is created in (the first of the pool's list).
    pub vswitch_id: String,
}

/// Whether the Service is reached from the Internet (an EIP in front of the load balancer) or
/// only inside the network (the load balancer's own address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressType {
    Internet,
    Intranet,
}

/// Who owns the load balancer instance, which decides what we may change or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Created by us, named `k8s/<service>/<namespace>/<pool>/<cluster>`; we own the instance,
    /// its listeners, its backends and its EIP, and delete them all.
    Managed,
    /// The user's own instance (`...-loadbalancer-id` on the PoolService): never released, its
    /// attributes and EIP never changed. We keep the backends of our pool's nodes and, when
    /// `manage_listeners`, the listeners on the Service's ports; nothing else.
    UserManaged {
        lb_id: String,
        manage_listeners: bool,
    },
}

/// What identifies a PoolService's load balancer and bounds what we may touch; enough to
/// delete it after the Service is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `k8s/<service>/<namespace>/<pool>/<cluster>`: the name of everything we create.
    pub name: String,
    pub region: String,
    pub ownership: Ownership,
    /// Instance ids of every node of the pool (ready or not): the only backends we may remove
    /// from a user-managed load balancer.
    pub owned_backends: BTreeSet<String>,
    /// The Service's listener keys: the only listeners we may touch on a user-managed one.
    pub listener_keys: BTreeSet<ListenerKey>,
    /// Other Services sharing this user-managed load balancer; while any remain we leave
    /// the shared backends in place on delete.
    pub shared_with: Vec<String>,
}

/// The cloud state one PoolService should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub target: Target,
    pub network: NetworkRef,
    /// Provider-specific instance size (ENS: `LoadBalancerSpec`, e.g. `elb.s2.medium`).
    pub spec: String,
    pub address_type: AddressType,
    /// EIP peak bandwidth in Mbit/s (ENS: 5 to 10000).
    pub eip_bandwidth: u32,
    /// Listener key -> its backend port (the Service port's NodePort) and health check.
    pub listeners: BTreeMap<ListenerKey, ListenerSpec>,
    /// Backend instance id -> weight (0..=100).
    pub backends: BTreeMap<String, u32>,
    /// Nodes of the pool that are not backends, and why (shown in status and `edgelbctl elb`).
    pub skipped: Vec<SkippedNode>,
}

/// One listener as we want it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The Service port's NodePort.
    pub backend_port: u16,
    pub health: HealthCheck,
}

/// How the load balancer probes a listener's backends (SPEC: "health checks are set"). ENS
/// listeners always probe (the TCP and UDP listener calls have no switch), so every field has
/// a value: the Service's annotation or the cloud's documented default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// Consecutive successes before a failed backend is healthy again.
    pub healthy_threshold: u32,
    /// Consecutive failures before a backend is taken out.
    pub unhealthy_threshold: u32,
    /// Seconds to wait for a probe's answer.
    pub connect_timeout: u32,
    /// Seconds between probes.
    pub interval: u32,
    /// The port probed; `None`: the listener's backend port.
    pub connect_port: Option<u16>,
    /// An HTTP probe instead of a TCP connect (TCP listeners only; `None` on UDP ones).
    pub http: Option<HttpCheck>,
}

/// An HTTP health check's request and the answers that count as healthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// The `Host` sent; `None`: the backend's own address.
    pub domain: Option<String>,
    /// The path asked for; `None`: the cloud's default.
    pub uri: Option<String>,
    /// Healthy status classes, e.g. `http_2xx,http_3xx`.
    pub http_codes: String,
}

impl HealthCheck {
    /// The port actually probed for a listener forwarding to `backend_port`.
    pub fn port_for(&self, backend_port: u16) -> u16 {
        self.connect_port.unwrap_or(backend_port)
    }

    /// `tcp` or `http`.
    pub fn kind(&self) -> &'static str {
        if self.http.is_some() {
            "http"
        } else {
            "tcp"
        }
    }
}

impl fmt::Display for HealthCheck {
    /// `tcp :30080 every 2s timeout 5s healthy 3 unhealthy 3` (port shown when set).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        if let Some(h) = &self.http {
            write!(
                f,
                " {}{} {}",
                h.domain.as_deref().unwrap_or(""),
                h.uri.as_deref().unwrap_or("/"),
                h.http_codes
            )?;
        }
        if let Some(p) = self.connect_port {
            write!(f, " port {p}")?;
        }
        write!(
            f,
            " every {}s timeout {}s healthy {} unhealthy {}",
            self.interval, self.connect_timeout, self.healthy_threshold, self.unhealthy_threshold
        )
    }
}

/// Why a node of the pool is not a backend.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SkippedNode {
    pub node: String,
    pub reason: SkipReason,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// `spec.providerID` is empty: we do not guess an instance from a name or an address.
    NoProviderId,
    /// `spec.providerID` is not one of the provider's forms.
    BadProviderId(String),
    NotReady,
    /// `externalTrafficPolicy: Local` and no ready endpoint on the node.
    NoLocalEndpoint,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoProviderId => f.write_str("node has no spec.providerID"),
            SkipReason::BadProviderId(id) => write!(f, "spec.providerID {id:?} names no instance"),
            SkipReason::NotReady => f.write_str("node is not Ready"),
            SkipReason::NoLocalEndpoint => {
                f.write_str("externalTrafficPolicy Local and no ready endpoint on the node")
            }
        }
    }
}

/// A load balancer's lifecycle state as the cloud reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LbStatus {
    Creating,
    Active,
    Inactive,
    Deleting,
    Other(String),
}

/// A listener's state: created `Stopped`, started to `Running`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerStatus {
    Running,
    Stopped,
    Starting,
    Stopping,
    Configuring,
    Other(String),
}

/// An EIP's state: `Available` (unbound), `Associating`, `InUse`, `Unassociating`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EipStatus {
    Available,
    Associating,
    InUse,
    Unassociating,
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedLb {
    pub id: String,
    pub name: String,
    pub status: LbStatus,
    /// The load balancer's own (network-internal) address.
    pub address: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedListener {
    pub port: u16,
    pub protocol: Protocol,
    pub backend_port: u16,
    pub status: ListenerStatus,
    /// The health check as the cloud reports it; `None` when not read (only Running
    /// listeners of ours are read, one call each).
    pub health: Option<HealthCheck>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedEip {
    pub allocation_id: String,
    pub ip: String,
    pub status: EipStatus,
    /// The instance the EIP is bound to, if any.
    pub instance_id: Option<String>,
}

/// What the cloud has for one target. For a managed target everything carrying our name;
/// for a user-managed one the named instance and the EIP bound to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub lb: Option<ObservedLb>,
    /// Further instances with our exact name (a crash between create and record): released.
    pub duplicate_lbs: Vec<ObservedLb>,
    pub listeners: Vec<ObservedListener>,
    /// Backend instance id -> weight.
    pub backends: BTreeMap<String, u32>,
    pub eip: Option<ObservedEip>,
    /// Further EIPs with our exact name: unbound and released.
    pub duplicate_eips: Vec<ObservedEip>,
}

/// One cloud call. Providers map each to their API; ids come from the last observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CreateLoadBalancer {
        name: String,
        network: NetworkRef,
        spec: String,
    },
    ReleaseLoadBalancer {
        lb_id: String,
    },
    CreateListener {
        lb_id: String,
        key: ListenerKey,
        spec: ListenerSpec,
    },
    /// Changes a running listener's health check in place (`spec.backend_port` is the one
    /// it forwards to, for the probed port).
    SetListenerHealthCheck {
        lb_id: String,
        key: ListenerKey,
        spec: ListenerSpec,
    },
    StartListener {
        lb_id: String,
        key: ListenerKey,
    },
    DeleteListener {
        lb_id: String,
        key: ListenerKey,
    },
    AddBackends {
        lb_id: String,
        backends: Vec<(String, u32)>,
    },
    SetBackendWeights {
        lb_id: String,
        backends: Vec<(String, u32)>,
    },
    RemoveBackends {
        lb_id: String,
        server_ids: Vec<String>,
    },
    CreateEip {
        name: String,
        region: String,
        bandwidth: u32,
    },
    AssociateEip {
        allocation_id: String,
        lb_id: String,
    },
    UnassociateEip {
        allocation_id: String,
    },
    ReleaseEip {
        allocation_id: String,
    },
}

impl Action {
    /// A short verb for Events, metrics and logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::CreateLoadBalancer { .. } => "CreateLoadBalancer",
            Action::ReleaseLoadBalancer { .. } => "ReleaseLoadBalancer",
            Action::CreateListener { .. } => "CreateListener",
            Action::SetListenerHealthCheck { .. } => "SetListenerHealthCheck",
            Action::StartListener { .. } => "StartListener",
            Action::DeleteListener { .. } => "DeleteListener",
            Action::AddBackends { .. } => "AddBackends",
            Action::SetBackendWeights { .. } => "SetBackendWeights",
            Action::RemoveBackends { .. } => "RemoveBackends",
            Action::CreateEip { .. } => "CreateEip",
            Action::AssociateEip { .. } => "AssociateEip",
            Action::UnassociateEip { .. } => "UnassociateEip",
            Action::ReleaseEip { .. } => "ReleaseEip",
        }
    }
}

/// The result of one diff: the calls to make now, or why nothing can be done until the
/// cloud finishes a transition. Empty actions and no wait = converged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub actions: Vec<Action>,
    pub waiting: Option<String>,
}

impl Step {
    pub fn converged(&self) -> bool {
        self.actions.is_empty() && self.waiting.is_none()
    }
}
