//! Which Services a pass of the status writer must look at again.
//!
//! The writer's decisions about a Service (its status, `AllocationFailed`, `AnnouncedBy`)
//! read only that Service, its EndpointSlices, its allocation outcome, what the writer has
//! written for it, and things that are not per Service: the configuration objects
//! (pools, advertisements, Nodes, ...) and the election candidates. So after a change only
//! the Services whose own inputs changed need deciding again ([`Scope::Only`]); a change to
//! anything else decides every Service again ([`Scope::All`]). Pure; the writer's property
//! test checks that deciding only the scope ends in the same state as deciding everything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::ordmap::DiffItem;

use super::pool_services::owner_of;
use crate::ipam::Assignments;
use crate::snapshot::{Checked, ObjectKey, Snapshot, SnapshotData};

/// The Services a pass decides again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every Service (first pass of a term, configuration or candidates changed).
    All,
    /// Only these (their own inputs changed, or a write about them ended).
    Only(BTreeSet<ObjectKey>),
}

impl Scope {
    /// Whether the pass decides nothing per Service.
    pub fn is_empty(&self) -> bool {
        matches!(self, Scope::Only(k) if k.is_empty())
    }
}

/// Services added, removed or changed between two snapshots (the object or its
/// EndpointSlices) or whose allocation outcome differs between `a_before` and `a_after`.
/// Successive snapshots and allocations share every map node a change did not touch and
/// the diffs skip those: O(changes x log n), not a walk over every Service.
pub fn changed_services(
    before: &Snapshot,
    after: &Snapshot,
    a_before: &Assignments,
    a_after: &Assignments,
) -> BTreeSet<ObjectKey> {
    fn key_of<'a, K, V>(item: DiffItem<'a, 'a, K, V>) -> &'a K {
        match item {
            DiffItem::Add(k, _) | DiffItem::Remove(k, _) | DiffItem::Update { new: (k, _), .. } => {
                k
            }
        }
    }
    let mut out = BTreeSet::new();
    out.extend(
        before
            .services
            .diff(&after.services)
            .map(|d| key_of(d).clone()),
    );
    out.extend(
        before
            .endpoint_slices
            .diff(&after.endpoint_slices)
            .map(|d| key_of(d).clone()),
    );
    out.extend(
        a_before
            .outcomes
            .diff(&a_after.outcomes)
            .map(|d| key_of(d).service.clone()),
    );
    out
}

/// The Services whose PoolServices were added, removed or changed between two snapshots
/// (their per-pool statuses are decided again). O(changes x log n), as above.
pub fn changed_pool_services(before: &Snapshot, after: &Snapshot) -> BTreeSet<ObjectKey> {
    before
        .pool_services
        .diff(&after.pool_services)
        .filter_map(|d| match d {
            DiffItem::Add(_, ps)
            | DiffItem::Remove(_, ps)
            | DiffItem::Update { new: (_, ps), .. } => owner_of(ps).map(|(s, _)| s),
        })
        .collect()
}

/// Whether everything a Service's decisions read besides its own objects and outcome is
/// the same in both snapshots. Objects are compared by identity first (the store shares
/// unchanged ones between snapshots), so this costs O(configuration objects + Nodes).
pub fn same_config(a: &SnapshotData, b: &SnapshotData) -> bool {
    a.selection == b.selection
        && same_map(&a.nodes, &b.nodes, |x, y| {
            x.node_pool == y.node_pool && same_arc(&x.node, &y.node)
        })
        && a.node_pools == b.node_pools
        && a.namespace_labels == b.namespace_labels
        && same_map(&a.secrets, &b.secrets, same_arc)
        && same_map(&a.pools, &b.pools, same_checked)
        && same_map(&a.peers, &b.peers, same_checked)
        && same_map(&a.bgp_advertisements, &b.bgp_advertisements, same_checked)
        && same_map(&a.l2_advertisements, &b.l2_advertisements, same_checked)
        && same_map(&a.communities, &b.communities, same_checked)
        && same_map(&a.bfd_profiles, &b.bfd_profiles, same_checked)
        && same_map(&a.policy_routes, &b.policy_routes, Arc::ptr_eq)
        && same_map(&a.undecodable, &b.undecodable, same_arc)
}

fn same_arc<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

fn same_checked<T: PartialEq>(a: &Checked<T>, b: &Checked<T>) -> bool {
    a.problems == b.problems && same_arc(&a.object, &b.object)
}

fn same_map<K: Ord, V>(
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{pool, service};
    use crate::ipam::allocate;
    use crate::snapshot::{Object, Selection, Store};

    const NS: &str = "edgelb-system";

    #[test]
    fn a_service_change_is_scoped_and_a_pool_change_is_not() {
        let mut store = Store::default();
        store.apply(
            Object::IPAddressPool(pool(NS, "lan", &["192.0.2.0/28"])),
            NS,
        );
        for n in ["a", "b", "c"] {
            store.apply(Object::Service(service("default", n, 80)), NS);
        }
        let sel = Selection::default();
        let s1 = store.snapshot(&sel);
        let a1 = allocate(&s1, &Assignments::default());
        store.apply(Object::Service(service("default", "b", 81)), NS);
        let s2 = store.snapshot(&sel);
        assert!(same_config(&s1, &s2), "only a Service changed");
        assert_eq!(
            changed_services(&s1, &s2, &a1, &a1),
            BTreeSet::from([ObjectKey::new("default", "b")])
        );
        assert!(changed_services(&s2, &s2, &a1, &a1).is_empty());
        store.apply(
            Object::IPAddressPool(pool(NS, "lan", &["192.0.2.0/27"])),
            NS,
        );
        assert!(!same_config(&s2, &store.snapshot(&sel)), "a pool changed");
    }
}
