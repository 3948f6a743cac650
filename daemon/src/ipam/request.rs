//! What a Service asks of the allocator, read from its spec and annotations.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::range::Family;
use super::AllocationError;
use crate::api::annotations::{ADDRESS_POOL, ALLOW_SHARED_IP, LOAD_BALANCER_IPS};
use crate::service::ServiceFacts;

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyPolicy {
    /// One IP of the first family.
    SingleStack,
    /// One IP per family when a pool has both, else one.
    PreferDualStack,
    /// One IP per family, or nothing.
    RequireDualStack,
}

/// What decides whether two Services may share an IP (`edgelb.io/allow-shared-ip`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharing {
    /// The sharing key; only equal keys share.
    pub key: Arc<str>,
    /// `(protocol, port)` pairs; sharers must not overlap.
    pub ports: Vec<(String, i32)>,
    /// `externalTrafficPolicy: Local`; sharers must agree.
    pub local: bool,
    /// Pod selector; sharers with `Local` must have the same (their endpoints decide who
    /// announces, so they must be the same endpoints).
    pub selector: BTreeMap<String, String>,
}

/// A Service's request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Families in preference order (`spec.ipFamilies`, default IPv4 or the requested IPs').
    pub families: Vec<Family>,
    /// `spec.ipFamilyPolicy`.
    pub policy: FamilyPolicy,
    /// Specific IPs (`edgelb.io/loadBalancerIPs`, else `spec.loadBalancerIP`).
    pub requested: Vec<IpAddr>,
    /// `edgelb.io/address-pool`.
    pub pool: Option<String>,
    /// Sharing terms; `None` means the IP is exclusive.
    pub sharing: Option<Sharing>,
}

impl Request {
    /// Families the Service must get an IP of.
    pub fn required(&self) -> &[Family] {
        match self.policy {
            FamilyPolicy::RequireDualStack => &self.families,
            _ => &self.families[..1.min(self.families.len())],
        }
    }

    /// Families the Service may get an IP of.
    pub fn wanted(&self) -> &[Family] {
        match self.policy {
            FamilyPolicy::SingleStack => &self.families[..1.min(self.families.len())],
            _ => &self.families,
        }
    }
}

fn family_named(name: &str) -> Option<Family> {
    match name {
        "IPv4" => Some(Family::V4),
        "IPv6" => Some(Family::V6),
        _ => None,
    }
}

/// Reads a Service's request; an unreadable annotation is an error for this Service alone.
pub fn request_of(svc: &ServiceFacts) -> Result<Request, AllocationError> {
    let bad = |annotation: &str, value: &str| AllocationError::BadAnnotation {
        annotation: annotation.to_string(),
        value: value.to_string(),
    };

    let mut requested = Vec::new();
    if let Some(list) = svc.annotation(LOAD_BALANCER_IPS) {
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            requested.push(part.parse().map_err(|_| bad(LOAD_BALANCER_IPS, list))?);
        }
    } else if let Some(ip) = svc.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
        requested.push(ip.parse().map_err(|_| AllocationError::BadLoadBalancerIp {
            value: ip.to_string(),
        })?);
    }

    let mut families: Vec<Family> = Vec::new();
    for name in svc.ip_families.iter() {
        let f = family_named(name).ok_or_else(|| AllocationError::BadIpFamily {
            value: name.to_string(),
        })?;
        if !families.contains(&f) {
            families.push(f);
        }
    }
    if families.is_empty() {
        for ip in &requested {
            let f = Family::of(ip);
            if !families.contains(&f) {
                families.push(f);
            }
        }
    }
    if families.is_empty() {
        families.push(Family::V4);
    }
    let policy = match svc.ip_family_policy.as_deref() {
        None | Some("SingleStack") => FamilyPolicy::SingleStack,
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
        Some(other) => {
            return Err(AllocationError::BadIpFamilyPolicy {
                value: other.to_string(),
            })
        }
    };
    if policy != FamilyPolicy::SingleStack && families.len() == 1 {
        families.push(if families[0] == Family::V4 {
            Family::V6
        } else {
            Family::V4
        });
    }

    let sharing = svc
        .annotation(ALLOW_SHARED_IP)
        .filter(|k| !k.is_empty())
        .map(|key| Sharing {
            key: key.into(),
            ports: svc
                .ports
                .iter()
                .map(|p| (p.protocol.as_deref().unwrap_or("TCP").to_string(), p.port))
                .collect(),
            local: svc.local,
            selector: svc.sharing_selector.to_map(),
        });

    Ok(Request {
        families,
        policy,
        requested,
        pool: svc
            .annotation(ADDRESS_POOL)
            .filter(|p| !p.is_empty())
            .map(str::to_string),
        sharing,
    })
}
