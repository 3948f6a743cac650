//! Re-election after one node changed, without re-scoring every node.
//!
//! Rendezvous hashing makes this cheap: when node X changes, an IP's L2
//! owner can only change if X owned it (then the IP is re-elected in full)
//! or if X is now eligible and outscores the current owner (one score). BGP
//! owners gain or lose X. Everything else in the previous result stands.
//! Class-level exclusions are recomputed once per advertisement class.

use std::collections::HashMap;

use super::{
    class_key, group_requests, ip_status, rendezvous, ClassFilter, ClassKey, ElectionRequest,
    ElectionResult, ElectionView, Exclusion, ModeKind, NodeName,
};

impl ElectionView {
    /// The same as [`ElectionView::elect_many`] on this view, computed from
    /// `previous` (the results of `elect_many(requests)` on a view that
    /// differed from this one only in node `changed`: added, removed, or any
    /// of its fields changed). Falls back to a full election for a group
    /// whose previous result does not line up.
    pub fn reelect_after_change(
        &self,
        requests: &[ElectionRequest],
        previous: &[ElectionResult],
        changed: &str,
    ) -> Vec<ElectionResult> {
        self.reelect_after_change_owned(requests, previous.to_vec(), changed)
    }

    /// [`ElectionView::reelect_after_change`], consuming `previous`: the results that
    /// stand are patched in place instead of copied (with `externalTrafficPolicy: Local`
    /// a result lists nearly every node as excluded, so copying them costs more than the
    /// re-election).
    pub fn reelect_after_change_owned(
        &self,
        requests: &[ElectionRequest],
        previous: Vec<ElectionResult>,
        changed: &str,
    ) -> Vec<ElectionResult> {
        let groups = group_requests(requests);
        if groups.len() != previous.len() {
            return self.elect_many(requests);
        }
        let x = self.nodes.binary_search_by(|n| (*n.name).cmp(changed)).ok();
        let mut classes: HashMap<ClassKey<'_>, ClassFilter> = HashMap::new();
        let mut out = Vec::with_capacity(previous.len());
        for (((ip, kind), group), prev) in groups.into_iter().zip(previous) {
            let single = match group.as_slice() {
                [single] if prev.ip == ip && prev.mode == kind => *single,
                _ => {
                    out.extend(self.elect_many(&group.into_iter().cloned().collect::<Vec<_>>()));
                    continue;
                }
            };
            let key: ClassKey<'_> = class_key(single);
            let class = classes.entry(key).or_insert_with(|| self.class_filter(key));
            if *single.mode() == super::Mode::Bgp && single.terms.local_endpoints.is_none() {
                out.push(self.elect_one(single, class));
                continue;
            }
            let x_owned = prev.owners.iter().any(|o| &**o == changed);
            if x_owned && kind == ModeKind::L2 {
                out.push(self.elect_one(single, class));
                continue;
            }
            out.push(self.patch(single, prev, class, x, changed));
        }
        out
    }

    /// `owners` as a result holds them: one node's shared list ([`super::NodeEntry`]'s
    /// `alone`) when it is one node of this view.
    fn shared(&self, owners: Vec<NodeName>) -> std::sync::Arc<[NodeName]> {
        match owners.as_slice() {
            [one] => match self.nodes.binary_search_by(|n| n.name.cmp(one)) {
                Ok(j) => self.nodes[j].alone.clone(),
                Err(_) => owners.into(),
            },
            _ => owners.into(),
        }
    }

    /// Node `i` became eligible for `request`: add it to the owners.
    fn admit(&self, request: &ElectionRequest, owners: &mut Vec<NodeName>, i: usize) {
        let n = &self.nodes[i];
        if request.mode().kind() == ModeKind::Bgp {
            let at = owners.partition_point(|o| **o < *n.name);
            owners.insert(at, n.name.clone());
            return;
        }
        let ip_key = rendezvous::ip_key(request.ip);
        let wins = match owners.first() {
            None => true,
            Some(owner) => {
                let owner_key = self
                    .nodes
                    .binary_search_by(|m| m.name.cmp(owner))
                    .map_or_else(|_| rendezvous::node_key(owner), |j| self.nodes[j].key);
                rendezvous::beats(
                    rendezvous::score(ip_key, n.key),
                    &n.name,
                    rendezvous::score(ip_key, owner_key),
                    owner,
                )
            }
        };
        if wins {
            *owners = vec![n.name.clone()];
        }
    }

    fn patch(
        &self,
        request: &ElectionRequest,
        prev: ElectionResult,
        class: &ClassFilter,
        x: Option<usize>,
        changed: &str,
    ) -> ElectionResult {
        let mut owners: Vec<NodeName> = prev
            .owners
            .iter()
            .filter(|o| &***o != changed)
            .cloned()
            .collect();
        let mut own: Vec<Exclusion> = prev.own_exclusions;
        // Sorted by node: the changed node's entry, if any, is found by bisection.
        let at = own.partition_point(|e| *e.node < *changed);
        if own.get(at).is_some_and(|e| &*e.node == changed) {
            own.remove(at);
        }
        if let Some(i) = x {
            let n = &self.nodes[i];
            // A class-level reason is listed in the shared exclusions.
            let class_ok = class.status.get(i).is_some_and(Option::is_none);
            if class_ok {
                match ip_status(&n.candidate, request) {
                    Some(reason) => {
                        let at = own.partition_point(|e| *e.node < *n.name);
                        let node = n.name.clone();
                        own.insert(at, Exclusion { node, reason });
                    }
                    None => self.admit(request, &mut owners, i),
                }
            }
        }
        ElectionResult {
            ip: request.ip,
            mode: request.mode().kind(),
            owners: self.shared(owners),
            shared_exclusions: class.excluded.clone(),
            own_exclusions: own,
        }
    }
}
