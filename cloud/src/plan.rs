//! The pure planner: one PoolService's plain input -> the cloud state it should have.
//!
//! No I/O, no clock. Provider specifics (annotation names of the network, the providerID
//! form, name limits, the instance size) come from a [`Profile`], so a second provider plugs
//! in a profile and leaves this file alone.

use std::collections::{BTreeMap, BTreeSet};

use crate::health::{self, HealthLimits};
use crate::model::{
    AddressType, Desired, HealthCheck, ListenerKey, ListenerSpec, NetworkRef, Ownership, Protocol,
    SkipReason, SkippedNode, Target,
};

/// The PoolService's annotation naming a user's own load balancer (seed 000).
pub const ANNOTATION_LB_ID: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-id";
/// The Service's annotation allowing a user's load balancer (seed 000).
pub const ANNOTATION_MANAGED_BY_USER: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-managed-by-user";
/// Alibaba CCM's switch letting us keep the listeners of a user's load balancer (seed 002's
/// CCM; without it a user's listeners are left alone).
pub const ANNOTATION_FORCE_OVERRIDE_LISTENERS: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-force-override-listeners";
/// `intranet`: no EIP, the load balancer's own address is the ingress (seed 002).
pub const ANNOTATION_ADDRESS_TYPE: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type";
/// The instance size (ENS `LoadBalancerSpec`).
pub const ANNOTATION_SPEC: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-spec";
/// EIP peak bandwidth in Mbit/s.
pub const ANNOTATION_BANDWIDTH: &str =
    "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-bandwidth";

/// `externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

/// One Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP` as written in the Service.
    pub protocol: String,
    pub node_port: Option<u16>,
}

/// One node of the pool, as the snapshot sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolNode {
    pub name: String,
    /// `spec.providerID`, if set.
    pub provider_id: Option<String>,
    pub ready: bool,
    /// Ready endpoints of the Service on this node (used with `Local`).
    pub ready_endpoints: u32,
}

/// Everything the planner needs about one (Service, node pool) pair; built from the snapshot
/// by a thin adapter in the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanInput {
    pub namespace: String,
    pub service: String,
    pub pool: String,
    pub cluster: String,
    pub ports: Vec<ServicePort>,
    pub traffic_policy: TrafficPolicy,
    pub nodes: Vec<PoolNode>,
    pub service_annotations: BTreeMap<String, String>,
    pub pool_annotations: BTreeMap<String, String>,
    pub pool_service_annotations: BTreeMap<String, String>,
    /// Other Services (`ns/name`) whose PoolServices name the same user-managed load balancer.
    pub sharing_services: Vec<String>,
}

/// Provider specifics the planner asks for.
pub trait Profile {
    /// The network from the pool's annotations; the error names the pool and annotation.
    fn network(
        &self,
        pool: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<NetworkRef, PlanError>;
    /// The instance id in a Node's `spec.providerID`, or `None` when it names none.
    fn instance_id(&self, provider_id: &str) -> Option<String>;
    /// The longest instance name the cloud accepts.
    fn max_name_len(&self) -> usize;
    /// The instance size when the Service does not say.
    fn default_spec(&self) -> &str;
    /// The EIP bandwidth range (Mbit/s) and default.
    fn bandwidth_range(&self) -> (u32, u32, u32);
    /// Listener health-check ranges and defaults.
    fn health_limits(&self) -> HealthLimits;
}

/// Why a PoolService cannot be planned; each names the object and field at fault.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PlanError {
    #[error("node pool {pool}: annotation {annotation} is missing")]
    MissingPoolAnnotation { pool: String, annotation: String },
    #[error("node pool {pool}: annotation {annotation}={value:?} is invalid: {why}")]
    BadPoolAnnotation {
        pool: String,
        annotation: String,
        value: String,
        why: String,
    },
    #[error("Service {service}: port {port} has protocol {protocol}, which a cloud load balancer listener cannot carry (TCP or UDP)")]
    UnsupportedProtocol {
        service: String,
        port: String,
        protocol: String,
    },
    #[error("Service {service}: port {port} has no nodePort (spec.allocateLoadBalancerNodePorts false?); the cloud load balancer forwards to node ports")]
    NoNodePort { service: String, port: String },
    #[error("Service {service}: load balancer name {name:?} is {len} characters, longer than the cloud's {max}")]
    NameTooLong {
        service: String,
        name: String,
        len: usize,
        max: usize,
    },
    #[error("PoolService {pool_service}: annotation {ANNOTATION_LB_ID}={lb_id} names a user's load balancer but Service {service} lacks {ANNOTATION_MANAGED_BY_USER}: \"true\"")]
    UserLbNotAllowed {
        pool_service: String,
        service: String,
        lb_id: String,
    },
    #[error("Service {service}: load balancer {lb_id} is shared with {others:?}; sharing needs externalTrafficPolicy Cluster on every Service")]
    SharedNeedsCluster {
        service: String,
        lb_id: String,
        others: Vec<String>,
    },
    #[error("Service {service}: annotation {annotation}={value:?} is invalid: {why}")]
    BadServiceAnnotation {
        service: String,
        annotation: String,
        value: String,
        why: String,
    },
}

/// `k8s/<service>/<namespace>/<pool>/<cluster>`: the name of every instance we create, so a
/// crash between create and record is found again by name (seed 000).
pub fn resource_name(input: &PlanInput) -> String {
    format!(
        "k8s/{}/{}/{}/{}",
        input.service, input.namespace, input.pool, input.cluster
    )
}

/// The PoolService's name, `<service>-<pool>` (SPEC, node pools).
pub fn pool_service_name(input: &PlanInput) -> String {
    format!("{}/{}-{}", input.namespace, input.service, input.pool)
}

/// Plans one PoolService's load balancer.
pub fn plan(profile: &impl Profile, input: &PlanInput) -> Result<Desired, PlanError> {
    let service = format!("{}/{}", input.namespace, input.service);
    let name = resource_name(input);
    if name.chars().count() > profile.max_name_len() {
        return Err(PlanError::NameTooLong {
            service,
            len: name.chars().count(),
            name,
            max: profile.max_name_len(),
        });
    }
    let network = profile.network(&input.pool, &input.pool_annotations)?;
    let health = health::from_annotations(profile, &service, &input.service_annotations)?;
    let listeners = listeners(&service, &input.ports, &health)?;
    let ownership = ownership(input, &service)?;
    let (backends, skipped, owned_backends) = backends(profile, input);
    let address_type = address_type(&service, &input.service_annotations)?;
    let spec = input
        .service_annotations
        .get(ANNOTATION_SPEC)
        .cloned()
        .unwrap_or_else(|| profile.default_spec().to_string());
    let eip_bandwidth = bandwidth(profile, &service, &input.service_annotations)?;
    Ok(Desired {
        target: Target {
            name,
            region: network.region.clone(),
            ownership,
            owned_backends,
            listener_keys: listeners.keys().copied().collect(),
            shared_with: input.sharing_services.clone(),
        },
        network,
        spec,
        address_type,
        eip_bandwidth,
        listeners,
        backends,
        skipped,
    })
}

/// One listener per Service port, forwarding to its NodePort, with the Service's health
/// check.
fn listeners(
    service: &str,
    ports: &[ServicePort],
    health: &HealthCheck,
) -> Result<BTreeMap<ListenerKey, ListenerSpec>, PlanError> {
    let mut out = BTreeMap::new();
    for p in ports {
        let label = if p.name.is_empty() {
            p.port.to_string()
        } else {
            p.name.clone()
        };
        let protocol =
            Protocol::parse(&p.protocol).ok_or_else(|| PlanError::UnsupportedProtocol {
                service: service.to_string(),
                port: label.clone(),
                protocol: p.protocol.clone(),
            })?;
        let node_port = p.node_port.ok_or_else(|| PlanError::NoNodePort {
            service: service.to_string(),
            port: label.clone(),
        })?;
        out.insert(
            (protocol, p.port),
            ListenerSpec {
                backend_port: node_port,
                health: health::for_protocol(health, protocol),
            },
        );
    }
    Ok(out)
}

/// Managed unless the PoolService names a user's instance, which the Service must allow.
fn ownership(input: &PlanInput, service: &str) -> Result<Ownership, PlanError> {
    let Some(lb_id) = input.pool_service_annotations.get(ANNOTATION_LB_ID) else {
        return Ok(Ownership::Managed);
    };
    let allowed = input
        .service_annotations
        .get(ANNOTATION_MANAGED_BY_USER)
        .is_some_and(|v| v == "true");
    if !allowed {
        return Err(PlanError::UserLbNotAllowed {
            pool_service: pool_service_name(input),
            service: service.to_string(),
            lb_id: lb_id.clone(),
        });
    }
    if !input.sharing_services.is_empty() && input.traffic_policy == TrafficPolicy::Local {
        return Err(PlanError::SharedNeedsCluster {
            service: service.to_string(),
            lb_id: lb_id.clone(),
            others: input.sharing_services.clone(),
        });
    }
    let manage_listeners = input
        .service_annotations
        .get(ANNOTATION_FORCE_OVERRIDE_LISTENERS)
        .is_some_and(|v| v == "true");
    Ok(Ownership::UserManaged {
        lb_id: lb_id.clone(),
        manage_listeners,
    })
}

type Backends = (BTreeMap<String, u32>, Vec<SkippedNode>, BTreeSet<String>);

/// The pool's ready nodes' instances. `Cluster`: weight 100 each. `Local`: only nodes with a
/// ready endpoint, weighted by their endpoint count (the busiest node 100) so each pod gets
/// about the same share, as kube-proxy's Local policy would give it.
fn backends(profile: &impl Profile, input: &PlanInput) -> Backends {
    let mut skipped = Vec::new();
    let mut owned = BTreeSet::new();
    let mut candidates = Vec::new();
    for node in &input.nodes {
        let Some(pid) = node.provider_id.as_deref().filter(|p| !p.is_empty()) else {
            skipped.push(SkippedNode {
                node: node.name.clone(),
                reason: SkipReason::NoProviderId,
            });
            continue;
        };
        let Some(instance) = profile.instance_id(pid) else {
            skipped.push(SkippedNode {
                node: node.name.clone(),
                reason: SkipReason::BadProviderId(pid.to_string()),
            });
            continue;
        };
        owned.insert(instance.clone());
        if !node.ready {
            skipped.push(SkippedNode {
                node: node.name.clone(),
                reason: SkipReason::NotReady,
            });
            continue;
        }
        if input.traffic_policy == TrafficPolicy::Local && node.ready_endpoints == 0 {
            skipped.push(SkippedNode {
                node: node.name.clone(),
                reason: SkipReason::NoLocalEndpoint,
            });
            continue;
        }
        candidates.push((instance, node.ready_endpoints));
    }
    let max_endpoints = candidates.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let mut out = BTreeMap::new();
    for (instance, endpoints) in candidates {
        let weight = match input.traffic_policy {
            TrafficPolicy::Cluster => 100,
            TrafficPolicy::Local => (u64::from(endpoints) * 100)
                .div_ceil(u64::from(max_endpoints))
                .clamp(1, 100) as u32,
        };
        // Two nodes claiming one instance: keep the higher weight, deterministically.
        let slot = out.entry(instance).or_insert(0);
        *slot = (*slot).max(weight);
    }
    skipped.sort();
    (out, skipped, owned)
}

fn address_type(
    service: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<AddressType, PlanError> {
    match annotations.get(ANNOTATION_ADDRESS_TYPE).map(String::as_str) {
        None | Some("internet") => Ok(AddressType::Internet),
        Some("intranet") => Ok(AddressType::Intranet),
        Some(other) => Err(PlanError::BadServiceAnnotation {
            service: service.to_string(),
            annotation: ANNOTATION_ADDRESS_TYPE.to_string(),
            value: other.to_string(),
            why: "expected internet or intranet".to_string(),
        }),
    }
}

fn bandwidth(
    profile: &impl Profile,
    service: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<u32, PlanError> {
    let (min, max, default) = profile.bandwidth_range();
    let Some(v) = annotations.get(ANNOTATION_BANDWIDTH) else {
        return Ok(default);
    };
    match v.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(PlanError::BadServiceAnnotation {
            service: service.to_string(),
            annotation: ANNOTATION_BANDWIDTH.to_string(),
            value: v.clone(),
            why: format!("expected Mbit/s from {min} to {max}"),
        }),
    }
}
