//! Which advertisement covers which pool: the one rule that the L2 planner, the BGP planner
//! and the election every speaker publishes (`edgelbctl explain`, the `AnnouncedBy` Events)
//! all call, so they cannot disagree.
//!
//! An advertisement covers a pool when it names it in `ipAddressPools`, when one of its
//! `ipAddressPoolSelectors` matches the pool's labels, or when it gives neither (all
//! pools), as in MetalLB. Only valid advertisements cover anything.
//!
//! Pure: no I/O, no clock.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{BGPAdvertisement, L2Advertisement};
use crate::election::NodeSelector;
use crate::snapshot::{Checked, Snapshot};

/// The coverage rule on an advertisement's two pool fields.
pub fn covers(
    pools: &[String],
    pool_selectors: &[LabelSelector],
    pool: &str,
    pool_labels: &BTreeMap<String, String>,
) -> bool {
    if pools.is_empty() && pool_selectors.is_empty() {
        return true;
    }
    pools.iter().any(|p| p == pool)
        || pool_selectors
            .iter()
            .any(|s| crate::selector::matches(s, pool_labels))
}

/// The node selectors of several advertisements covering one IP, as one any-of list: a
/// node is selected when any advertisement selects it; an advertisement without
/// selectors selects every node (the empty list).
pub fn any_of<'a>(selectors: impl IntoIterator<Item = &'a [LabelSelector]>) -> Vec<NodeSelector> {
    let mut out = Vec::new();
    for s in selectors {
        if s.is_empty() {
            return Vec::new();
        }
        out.extend(s.iter().map(crate::selector::node_selector));
    }
    out.dedup();
    out
}

/// The labels of pool `pool` (none when it is unknown or unlabelled).
pub fn pool_labels<'s>(snap: &'s Snapshot, pool: &str) -> &'s BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    snap.pools
        .iter()
        .find(|(k, _)| &*k.name == pool)
        .and_then(|(_, p)| p.object.metadata.labels.as_ref())
        .unwrap_or(&EMPTY)
}

/// The valid `L2Advertisement`s that cover `pool`, in key order.
pub fn l2_covering<'s>(
    snap: &'s Snapshot,
    pool: &'s str,
) -> impl Iterator<Item = &'s Checked<L2Advertisement>> {
    let labels = pool_labels(snap, pool);
    snap.l2_advertisements.values().filter(move |c| {
        let s = &c.object.spec;
        c.is_valid()
            && covers(
                &s.ip_address_pools,
                &s.ip_address_pool_selectors,
                pool,
                labels,
            )
    })
}

/// The valid `BGPAdvertisement`s that cover `pool`, in key order.
pub fn bgp_covering<'s>(
    snap: &'s Snapshot,
    pool: &'s str,
) -> impl Iterator<Item = &'s Checked<BGPAdvertisement>> {
    let labels = pool_labels(snap, pool);
    snap.bgp_advertisements.values().filter(move |c| {
        let s = &c.object.spec;
        c.is_valid()
            && covers(
                &s.ip_address_pools,
                &s.ip_address_pool_selectors,
                pool,
                labels,
            )
    })
}

#[cfg(test)]
#[path = "coverage_tests.rs"]
mod tests;
