//! Node pools (SPEC.md, "Node pools and regions"): which pools exist, their labels and
//! annotations and members, and which pools a Service selects.
//!
//! A pool is an OpenYurt `NodePool` object (when its CRD is installed), or a pool name that
//! nodes carry ([`crate::snapshot::node_pool_of`]: label `apps.openyurt.io/nodepool`, else
//! `topology.kubernetes.io/region`). OpenYurt's own controller puts that label on every
//! member of a `NodePool`, so the label is the membership in both cases; the object adds
//! the pool's own labels and annotations, and makes a pool without nodes exist.
//!
//! A pool without an object has no labels of its own: its labels are those every one of
//! its nodes carries (so `nodepool-labelselector: k8s-svc=cube` selects a label-only pool
//! whose nodes are all labelled `k8s-svc=cube`, and always `apps.openyurt.io/nodepool=<it>`
//! or `topology.kubernetes.io/region=<it>`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::annotations::NODEPOOL_SELECTOR;
use crate::api::openyurt::NodePool;
use crate::selector;
use crate::service::ServiceFacts;
use crate::snapshot::{Index, NodeView, ObjectKey};

/// One node pool as every decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePoolView {
    /// The pool's name (the `NodePool`'s name, or the label value its nodes carry).
    pub name: Arc<str>,
    /// The pool's labels: the `NodePool`'s `metadata.labels`, else those all its nodes share.
    pub labels: BTreeMap<String, String>,
    /// The pool's annotations: the `NodePool`'s `metadata.annotations`, else none.
    pub annotations: BTreeMap<String, String>,
    /// Member node names, sorted.
    pub nodes: Vec<Arc<str>>,
    /// Whether an OpenYurt `NodePool` object stands for it.
    pub from_crd: bool,
}

/// Builds every pool from the nodes (with their pool, as [`crate::snapshot::node_pool_of`]
/// says) and the `NodePool` objects. A `NodePool` being deleted counts as gone (as in
/// OpenYurt's fan-out): its nodes still form a label-only pool until they are relabelled.
pub fn build<'a>(
    nodes: impl IntoIterator<Item = (&'a Arc<str>, &'a NodeView)>,
    objects: &Index<NodePool>,
) -> BTreeMap<Arc<str>, NodePoolView> {
    let mut pools: BTreeMap<Arc<str>, NodePoolView> = BTreeMap::new();
    for (_, np) in objects.iter() {
        if np.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(name) = np.metadata.name.as_deref() else {
            continue;
        };
        let name: Arc<str> = name.into();
        pools.insert(
            name.clone(),
            NodePoolView {
                name,
                labels: np.metadata.labels.clone().unwrap_or_default(),
                annotations: np.metadata.annotations.clone().unwrap_or_default(),
                nodes: Vec::new(),
                from_crd: true,
            },
        );
    }
    for (node, view) in nodes {
        let Some(pool) = view.node_pool.as_deref() else {
            continue;
        };
        let node_labels = view.node.metadata.labels.as_ref();
        match pools.get_mut(pool) {
            Some(p) => {
                if !p.from_crd {
                    // Keep only the labels this node shares too.
                    p.labels
                        .retain(|k, v| node_labels.and_then(|l| l.get(k)) == Some(v));
                }
                p.nodes.push(node.clone());
            }
            None => {
                let name: Arc<str> = pool.into();
                pools.insert(
                    name.clone(),
                    NodePoolView {
                        name,
                        labels: node_labels.cloned().unwrap_or_default(),
                        annotations: BTreeMap::new(),
                        nodes: vec![node.clone()],
                        from_crd: false,
                    },
                );
            }
        }
    }
    for p in pools.values_mut() {
        p.nodes.sort();
    }
    pools
}

/// A Service's `service.openyurt.io/nodepool-labelselector` that does not parse. Its text
/// names the Service, the annotation and the value, for the Event and the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Service {service}: annotation {NODEPOOL_SELECTOR}: {value:?} is not a label selector ({source}); the Service gets no node-pool entry points until it is fixed")]
pub struct NodePoolSelectorError {
    /// The Service.
    pub service: ObjectKey,
    /// The annotation's value.
    pub value: String,
    /// Why it does not parse.
    pub source: selector::ParseError,
}

/// The pools a Service selects, sorted by name: `None` when it has no (or an empty)
/// `service.openyurt.io/nodepool-labelselector` (it is cluster-wide, as without pools;
/// OpenYurt treats an empty value the same way), `Some` (possibly empty) otherwise.
pub fn selected_node_pools(
    svc: &ServiceFacts,
    pools: &BTreeMap<Arc<str>, NodePoolView>,
) -> Result<Option<Vec<Arc<str>>>, NodePoolSelectorError> {
    let Some(value) = svc
        .annotation(NODEPOOL_SELECTOR)
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(None);
    };
    let sel = selector::parse(value).map_err(|source| NodePoolSelectorError {
        service: svc.key.clone(),
        value: value.to_string(),
        source,
    })?;
    Ok(Some(
        pools
            .values()
            .filter(|p| selector::matches(&sel, &p.labels))
            .map(|p| p.name.clone())
            .collect(),
    ))
}

/// `loadBalancerClass`es of cloud load balancers: a PoolService of such a class gets its
/// entry point from the provider, never a self-announced IP.
pub const CLOUD_CLASSES: &[&str] = &["alibabacloud.com/elb"];

/// Whether a PoolService of this class gets a self-announced IP (BGP/ARP/NDP by the
/// speakers): every class but a cloud load balancer's.
pub fn is_self_announced_class(class: Option<&str>) -> bool {
    !class.is_some_and(|c| CLOUD_CLASSES.contains(&c))
}

/// `NodePool` annotation: the pool sits behind a cloud load balancer of this class (one of
/// [`CLOUD_CLASSES`]) instead of announcing by BGP/ARP (SPEC.md, "Cloud load balancers"). A
/// Service of a self-announced class selecting several pools then gets, for this pool, the
/// cloud load balancer's address, and for the others their self-announced IPs: one Service,
/// a region behind a cloud ELB and a region announced by the speakers.
pub const POOL_CLOUD_CLASS: &str = "edgelb.io/cloud-load-balancer-class";

/// Where one pool's entry point of a Service comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolSource<'a> {
    /// An IP from an `IPAddressPool`, announced by the pool's speakers.
    SelfAnnounced,
    /// The cloud load balancer of this class (the Service's class, or the pool's
    /// [`POOL_CLOUD_CLASS`]).
    Cloud(&'a str),
    /// The pool's [`POOL_CLOUD_CLASS`] names no known class: no entry point until it is
    /// fixed (never a silent fallback to announcing). The text names the pool, the
    /// annotation and the value.
    Invalid(String),
}

/// The source of `svc`'s entry point in `pool` (`None`: a pool not in the snapshot). A
/// cloud-class Service is the cloud's in every pool; a self-announced Service is the
/// cloud's only in pools annotated with [`POOL_CLOUD_CLASS`].
pub fn pool_source<'a>(svc: &'a ServiceFacts, pool: Option<&'a NodePoolView>) -> PoolSource<'a> {
    let class = svc.class();
    if let Some(c) = class.filter(|c| CLOUD_CLASSES.contains(c)) {
        return PoolSource::Cloud(c);
    }
    let Some((p, value)) = pool.and_then(|p| {
        p.annotations
            .get(POOL_CLOUD_CLASS)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (p, v))
    }) else {
        return PoolSource::SelfAnnounced;
    };
    match CLOUD_CLASSES.iter().find(|c| **c == value.trim()) {
        Some(c) => PoolSource::Cloud(c),
        None => PoolSource::Invalid(format!(
            "NodePool {}: annotation {POOL_CLOUD_CLASS}: {value:?} is not a cloud load-balancer class (known: {}); the pool gets no entry point until it is fixed",
            p.name,
            CLOUD_CLASSES.join(", ")
        )),
    }
}

/// Whether `svc`'s entry point in `pool` is announced by the speakers (an IP from a pool).
pub fn is_self_announced_in(svc: &ServiceFacts, pool: Option<&NodePoolView>) -> bool {
    pool_source(svc, pool) == PoolSource::SelfAnnounced
}

#[cfg(test)]
#[path = "nodepool_tests.rs"]
mod tests;
