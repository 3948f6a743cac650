//! What the store keeps of a Service: the fields some decision, status write or Event
//! reads, in compact forms, instead of the whole k8s `Service` (issue 17: the object cost
//! 824 B inline plus ~1 KB of strings per Service in a real cluster; this ~250 B plus what
//! the Service really sets). Sources still deliver `Object::Service(Service)`; the store
//! converts once ([`ServiceFacts::of`]), as it does EndpointSlices ([`crate::snapshot::Slice`]).
//!
//! Kept, and who reads it:
//! - key, uid, resourceVersion, generation: Events (`regarding`), status writes (the
//!   precondition), PoolService owner references, the pass-through condition;
//! - `deletionTimestamp` (whether set) and edgelb's finalizer (whether present): the
//!   PoolService fan-out and the cloud adapter;
//! - type (whether `LoadBalancer`) and class: which Services are ours, cloud classes;
//! - `loadBalancerIP`, `ipFamilies`, `ipFamilyPolicy`, ports, `externalTrafficPolicy`, and
//!   the pod selector of a Service that asks to share its IP: the allocator's request;
//!   ports also the cloud adapter's listeners;
//! - labels (all: pools' `serviceSelectors` may name any) and the annotations
//!   [`crate::api::annotations::is_read_on_services`] keeps;
//! - `status.loadBalancer.ingress` and the pass-through condition: what the status writer
//!   compares with what it wants, and the IPs recorded before a restart.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::annotations::{is_read_on_services, ALLOW_SHARED_IP};
use crate::api::openyurt::FINALIZER;
use crate::election::selector::Labels;
use crate::snapshot::ObjectKey;

/// Sorted `(key, value)` pairs: labels or annotations as the store keeps them (a boxed
/// slice, not a B-tree: one small allocation, none when empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairs(Box<[(Box<str>, Box<str>)]>);

impl Pairs {
    /// The pairs of `map` whose key `keep` accepts.
    pub fn of(map: Option<&BTreeMap<String, String>>, keep: impl Fn(&str) -> bool) -> Pairs {
        // A BTreeMap iterates in key order: the slice comes out sorted.
        Pairs(
            map.into_iter()
                .flatten()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str())))
                .collect(),
        )
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a map (for the cloud planner's input, built per cloud Service and pool).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl Labels for Pairs {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

/// One `spec.ports` entry: what the allocator's sharing rule and the cloud listeners read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    /// `name`.
    pub name: Option<Box<str>>,
    /// `protocol` (unset means TCP to every reader).
    pub protocol: Option<Arc<str>>,
    /// `port`.
    pub port: i32,
    /// `nodePort`.
    pub node_port: Option<i32>,
}

/// An opaque token of the API (`metadata.uid`, `metadata.resourceVersion`) in fewer bytes
/// when its text is the canonical text of a UUID (what the API server makes uids of) or of
/// a decimal number (what etcd's revisions give): 24 B and no allocation, instead of a
/// 36-character string in a 48 B heap block. Any other text is kept as it is; the token
/// reads back exactly as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// A UUID in lowercase 8-4-4-4-12 hex.
    Uuid([u8; 16]),
    /// A decimal number without leading zeros.
    Number(u64),
    /// Any other text.
    Text(Box<str>),
}

impl Token {
    /// The token of `text`.
    pub fn of(text: &str) -> Token {
        Token::uuid(text)
            .map(Token::Uuid)
            .or_else(|| {
                let n: u64 = text.parse().ok()?;
                (n.to_string() == text).then_some(Token::Number(n))
            })
            .unwrap_or_else(|| Token::Text(text.into()))
    }

    /// The bytes of a UUID in canonical text, if `text` is one.
    fn uuid(text: &str) -> Option<[u8; 16]> {
        let b = text.as_bytes();
        if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut hex = b.iter().copied().filter(|&c| c != b'-');
        let mut out = [0u8; 16];
        for byte in &mut out {
            *byte = (nibble(hex.next()?)? << 4) | nibble(hex.next()?)?;
        }
        Some(out)
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Uuid(b) => {
                for (i, byte) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Token::Number(n) => write!(f, "{n}"),
            Token::Text(t) => f.write_str(t),
        }
    }
}

/// `ipMode` of an ingress entry written as edgelb writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpMode {
    /// Not set.
    Unset,
    /// `VIP`.
    Vip,
    /// `Proxy`.
    Proxy,
}

impl IpMode {
    fn of(mode: Option<&str>) -> Option<IpMode> {
        match mode {
            None => Some(IpMode::Unset),
            Some("VIP") => Some(IpMode::Vip),
            Some("Proxy") => Some(IpMode::Proxy),
            Some(_) => None,
        }
    }

    fn text(self) -> Option<&'static str> {
        match self {
            IpMode::Unset => None,
            IpMode::Vip => Some("VIP"),
            IpMode::Proxy => Some("Proxy"),
        }
    }
}

/// One `status.loadBalancer.ingress` entry. What edgelb writes (an IP, an `ipMode` or
/// none, nothing else) is kept as an address and a tag (24 B, no allocation; the k8s
/// entry is 96 B plus a string per field); anything else (a hostname, ports, an IP not
/// in its canonical text, another mode) verbatim, so the entry reads back exactly as
/// written (the status writer compares it with what it wants).
#[derive(Clone, Debug, PartialEq)]
pub enum Ingress {
    /// `ip` (in the text `IpAddr` displays) and `ipMode`, nothing else set.
    Ip {
        /// `ip`.
        ip: IpAddr,
        /// `ipMode`.
        mode: IpMode,
    },
    /// Any other entry, as written.
    Other(Box<LoadBalancerIngress>),
}

impl Ingress {
    /// The compact form of `entry` when it reads back the same, else `entry` kept.
    pub fn of(entry: &LoadBalancerIngress) -> Ingress {
        let compact = match entry {
            LoadBalancerIngress {
                ip: Some(text),
                hostname: None,
                ip_mode,
                ports: None,
            } => text
                .parse::<IpAddr>()
                .ok()
                .filter(|ip| ip.to_string() == *text)
                .zip(IpMode::of(ip_mode.as_deref())),
            _ => None,
        };
        match compact {
            Some((ip, mode)) => Ingress::Ip { ip, mode },
            None => Ingress::Other(Box::new(entry.clone())),
        }
    }

    /// The entry as the API has it.
    pub fn entry(&self) -> LoadBalancerIngress {
        match self {
            Ingress::Ip { ip, mode } => LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: mode.text().map(str::to_string),
                ..Default::default()
            },
            Ingress::Other(entry) => (**entry).clone(),
        }
    }

    /// The IP the entry records, if its `ip` is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Ingress::Ip { ip, .. } => Some(*ip),
            Ingress::Other(entry) => entry.ip.as_deref()?.parse().ok(),
        }
    }
}

/// What the store keeps of one Service (see the module docs for who reads each field).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceFacts {
    /// `namespace/name` (the namespace shared by the store).
    pub key: ObjectKey,
    /// `metadata.uid`.
    pub uid: Option<Token>,
    /// `metadata.resourceVersion`: the precondition of status writes.
    pub resource_version: Option<Token>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// Whether `metadata.finalizers` holds edgelb's ([`FINALIZER`]).
    pub has_finalizer: bool,
    /// Whether `spec.type` is `LoadBalancer`.
    pub load_balancer: bool,
    /// `spec.loadBalancerClass` (shared by the store).
    pub class: Option<Arc<str>>,
    /// `spec.loadBalancerIP` (deprecated, rare).
    pub load_balancer_ip: Option<Box<str>>,
    /// `spec.ipFamilies`, as written (shared by the store).
    pub ip_families: Box<[Arc<str>]>,
    /// `spec.ipFamilyPolicy` (shared by the store).
    pub ip_family_policy: Option<Arc<str>>,
    /// Whether `spec.externalTrafficPolicy` is `Local`.
    pub local: bool,
    /// `spec.ports`.
    pub ports: Box<[Port]>,
    /// `spec.selector`, kept only when the Service asks to share its IP
    /// ([`ALLOW_SHARED_IP`] set and not empty): only the sharing rule reads it.
    pub sharing_selector: Pairs,
    /// `metadata.labels`.
    pub labels: Pairs,
    /// The annotations [`is_read_on_services`] keeps.
    pub annotations: Pairs,
    /// `status.loadBalancer.ingress`, compact ([`Ingress`]).
    pub ingress: Box<[Ingress]>,
    /// The pass-through condition in `status.conditions`
    /// ([`crate::status::pass_through::CONDITION`]), the only one read.
    pub pass_through: Option<Box<Condition>>,
}

impl ServiceFacts {
    /// The facts of `svc`; repeated strings (namespace, class, families, protocols) made
    /// by `name` (the store shares them).
    pub fn of(svc: &Service, mut name: impl FnMut(&str) -> Arc<str>) -> ServiceFacts {
        let meta = &svc.metadata;
        let spec = svc.spec.as_ref();
        let annotations = Pairs::of(meta.annotations.as_ref(), is_read_on_services);
        let shares = annotations
            .get(ALLOW_SHARED_IP)
            .is_some_and(|k| !k.is_empty());
        ServiceFacts {
            key: ObjectKey {
                namespace: name(meta.namespace.as_deref().unwrap_or("")),
                name: meta.name.as_deref().unwrap_or("").into(),
            },
            uid: meta.uid.as_deref().map(Token::of),
            resource_version: meta.resource_version.as_deref().map(Token::of),
            generation: meta.generation,
            deleting: meta.deletion_timestamp.is_some(),
            has_finalizer: meta
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|x| x == FINALIZER)),
            load_balancer: spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"),
            class: spec
                .and_then(|s| s.load_balancer_class.as_deref())
                .map(&mut name),
            load_balancer_ip: spec
                .and_then(|s| s.load_balancer_ip.as_deref())
                .map(Box::from),
            ip_families: spec
                .and_then(|s| s.ip_families.as_ref())
                .into_iter()
                .flatten()
                .map(|f| name(f))
                .collect(),
            ip_family_policy: spec
                .and_then(|s| s.ip_family_policy.as_deref())
                .map(&mut name),
            local: spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| Port {
                    name: p.name.as_deref().map(Box::from),
                    protocol: p.protocol.as_deref().map(&mut name),
                    port: p.port,
                    node_port: p.node_port,
                })
                .collect(),
            sharing_selector: if shares {
                Pairs::of(spec.and_then(|s| s.selector.as_ref()), |_| true)
            } else {
                Pairs::default()
            },
            labels: Pairs::of(meta.labels.as_ref(), |_| true),
            annotations,
            ingress: svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .map(|i| i.iter().map(Ingress::of).collect())
                .unwrap_or_default(),
            pass_through: svc
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.type_ == crate::status::pass_through::CONDITION)
                })
                .map(|c| Box::new(c.clone())),
        }
    }

    /// The facts of `svc`, no strings shared (a Service read once: the record, a fresh read
    /// after a conflict; tests).
    pub fn unshared(svc: &Service) -> ServiceFacts {
        ServiceFacts::of(svc, |s| Arc::from(s))
    }

    /// The namespace as the object's metadata has it (`None` for an empty one).
    pub fn namespace(&self) -> Option<&str> {
        Some(&*self.key.namespace).filter(|n| !n.is_empty())
    }

    /// An annotation edgelb keeps.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key)
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> Option<String> {
        self.uid.as_ref().map(Token::to_string)
    }

    /// `metadata.resourceVersion`.
    pub fn resource_version(&self) -> Option<String> {
        self.resource_version.as_ref().map(Token::to_string)
    }

    /// `status.loadBalancer.ingress` as the API has it.
    pub fn ingress_entries(&self) -> Vec<LoadBalancerIngress> {
        self.ingress.iter().map(Ingress::entry).collect()
    }

    /// `spec.loadBalancerClass`.
    pub fn class(&self) -> Option<&str> {
        self.class.as_deref()
    }

    /// The reference Events carry (`regarding`), as `kube`'s `object_ref` makes it of the
    /// Service.
    pub fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(self.key.name.to_string()).filter(|n| !n.is_empty()),
            namespace: self.namespace().map(str::to_string),
            uid: self.uid(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
