//! Pools as the allocator sees them: valid `IPAddressPool`s, parsed once per snapshot, in the
//! order Services try them (priority, then name).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::range::{Family, IpRange};
use crate::api::IPAddressPool;
use crate::nodepool::NodePoolView;
use crate::selector;
use crate::service::Pairs;
use crate::snapshot::{Checked, ObjectKey};

/// A valid pool, ready for allocation.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolView {
    /// The pool's name (what `edgelb.io/address-pool` names).
    pub name: Arc<str>,
    /// Ranges sorted by family then first address.
    pub ranges: Vec<IpRange>,
    /// `spec.autoAssign`.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`.
    pub avoid_buggy_ips: bool,
    /// `spec.serviceAllocation.priority`.
    pub priority: Option<i32>,
    /// Namespaces allowed by name.
    pub namespaces: Vec<String>,
    /// Namespaces allowed by labels.
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services allowed by labels.
    pub service_selectors: Vec<LabelSelector>,
    /// The node pools the pool is scoped to (`spec.nodePools`, and the node pools whose
    /// labels match `spec.nodePoolSelectors`, resolved when the snapshot is built), or
    /// `None` for a cluster-wide pool. A scoped pool serves only per-node-pool allocations
    /// for those node pools; a cluster-wide pool only cluster-wide ones: a region's LAN
    /// range is never handed to a Service announced everywhere, and the reverse.
    pub node_pools: Option<BTreeSet<Arc<str>>>,
}

impl PoolView {
    /// Builds the view of a valid pool (ranges that fail to parse are skipped; `validate` has
    /// already refused pools that have any).
    pub fn new<'n>(
        pool: &IPAddressPool,
        node_pools: impl IntoIterator<Item = (&'n Arc<str>, &'n BTreeMap<String, String>)>,
    ) -> PoolView {
        let mut ranges: Vec<IpRange> = pool
            .spec
            .addresses
            .iter()
            .filter_map(|a| IpRange::parse(a).ok())
            .collect();
        ranges.sort();
        let alloc = pool.spec.service_allocation.clone().unwrap_or_default();
        let scoped = pool.spec.is_node_pool_scoped().then(|| {
            let mut set: BTreeSet<Arc<str>> = pool
                .spec
                .node_pools
                .iter()
                .map(|n| Arc::from(&**n))
                .collect();
            if !pool.spec.node_pool_selectors.is_empty() {
                set.extend(
                    node_pools
                        .into_iter()
                        .filter(|(_, labels)| {
                            pool.spec
                                .node_pool_selectors
                                .iter()
                                .any(|s| selector::matches(s, *labels))
                        })
                        .map(|(name, _)| name.clone()),
                );
            }
            set
        });
        PoolView {
            name: pool.metadata.name.as_deref().unwrap_or("").into(),
            ranges,
            auto_assign: pool.spec.auto_assign,
            avoid_buggy_ips: pool.spec.avoid_buggy_ips,
            priority: alloc.priority,
            namespaces: alloc.namespaces,
            namespace_selectors: alloc.namespace_selectors,
            service_selectors: alloc.service_selectors,
            node_pools: scoped,
        }
    }

    /// Whether the pool may serve an allocation for `node_pool` (`None`: cluster-wide); see
    /// [`PoolView::node_pools`].
    pub fn serves_node_pool(&self, node_pool: Option<&str>) -> bool {
        match (&self.node_pools, node_pool) {
            (None, None) => true,
            (Some(set), Some(np)) => set.contains(np),
            _ => false,
        }
    }

    /// Whether the pool holds `ip` as an allocatable address.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        (!self.avoid_buggy_ips || !super::range::is_buggy(ip))
            && self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether the pool has addresses of a family.
    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family() == family)
    }

    /// Whether the pool serves every Service (no namespace or Service restriction).
    pub fn serves_all(&self) -> bool {
        self.namespaces.is_empty()
            && self.namespace_selectors.is_empty()
            && self.service_selectors.is_empty()
    }

    /// Whether `serviceAllocation` lets a Service of this namespace and with these labels use
    /// the pool. Namespaces match by name or by selector (either suffices); Services by any
    /// selector; an empty list allows all.
    pub fn serves(
        &self,
        namespace: &str,
        namespace_labels: Option<&BTreeMap<String, String>>,
        service_labels: &Pairs,
    ) -> bool {
        if self.serves_all() {
            return true;
        }
        let ns_ok = (self.namespaces.is_empty() && self.namespace_selectors.is_empty())
            || self.namespaces.iter().any(|n| n == namespace)
            || namespace_labels.is_some_and(|l| {
                self.namespace_selectors
                    .iter()
                    .any(|s| selector::matches(s, l))
            });
        ns_ok && selector::matches_any(&self.service_selectors, service_labels)
    }
}

/// Valid pools in the order they are tried: lower priority first, pools without a priority
/// last, then by name, so every speaker computes the same order. `node_pools` gives every
/// node pool, whose labels `spec.nodePoolSelectors` match.
pub fn allocation_order(
    pools: &BTreeMap<ObjectKey, Checked<IPAddressPool>>,
    node_pools: &BTreeMap<Arc<str>, NodePoolView>,
) -> Vec<PoolView> {
    let mut out: Vec<PoolView> = pools
        .values()
        .filter(|p| p.is_valid())
        .map(|p| PoolView::new(&p.object, node_pools.iter().map(|(n, v)| (n, &v.labels))))
        .collect();
    out.sort_by(|a, b| {
        (a.priority.is_none(), a.priority, &a.name).cmp(&(
            b.priority.is_none(),
            b.priority,
            &b.name,
        ))
    });
    out
}
