//! When a leader's write round has anything to do. Every round reads the snapshot, the
//! allocation and the election candidates, and walks every Service to compare what the API
//! holds with what it should (statuses, conditions, who announces what). A round over the
//! very inputs of the last round that wrote everything it meant to would find nothing: the
//! gate skips it, so a Lease renewal at rest costs nothing per Service. A failed write, new
//! inputs or a new term (the Lease lost and taken again) open it.

use crate::election::Candidate;
use crate::ipam::Assignments;
use crate::snapshot::Snapshot;

/// Remembers the inputs of the last complete round.
#[derive(Debug, Default)]
pub struct RoundGate {
    last: Option<(Snapshot, Assignments, Vec<Candidate>)>,
}

impl RoundGate {
    /// True when a round over these inputs may have something to write. O(nodes): the
    /// snapshot is compared by identity and the allocation by its shared map nodes.
    pub fn due(&self, snap: &Snapshot, a: &Assignments, candidates: &[Candidate]) -> bool {
        !self
            .last
            .as_ref()
            .is_some_and(|(s, la, lc)| s.same_as(snap) && la == a && lc.as_slice() == candidates)
    }

    /// Records a round over these inputs; `complete` when every write succeeded (else the
    /// next round runs again and retries).
    pub fn done(
        &mut self,
        snap: &Snapshot,
        a: &Assignments,
        candidates: &[Candidate],
        complete: bool,
    ) {
        self.last = complete.then(|| (snap.clone(), a.clone(), candidates.to_vec()));
    }

    /// Forgets the last round (this node is not leading: its next term starts afresh).
    pub fn forget(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{Allocation, AllocationKey};
    use crate::snapshot::{ObjectKey, SnapshotData};

    fn allocation(ip: &str) -> Assignments {
        let mut a = Assignments::default();
        a.outcomes.insert(
            AllocationKey::cluster(ObjectKey::new("default", "web")),
            Ok(Allocation {
                pool: "p".into(),
                ips: vec![ip.parse().expect("ip")],
            }),
        );
        a
    }

    #[test]
    fn a_round_over_the_same_inputs_after_a_complete_one_is_skipped() {
        let snap = Snapshot::from_data(SnapshotData::default());
        let a = allocation("192.0.2.1");
        let mut gate = RoundGate::default();
        assert!(gate.due(&snap, &a, &[]), "the first round runs");
        gate.done(&snap, &a, &[], true);
        assert!(!gate.due(&snap, &a, &[]), "nothing changed: skipped");
        assert!(
            !gate.due(&snap, &a.clone(), &[]),
            "an equal allocation is the same input"
        );

        let other_snap = Snapshot::from_data(SnapshotData::default());
        assert!(gate.due(&other_snap, &a, &[]), "a new snapshot");
        assert!(
            gate.due(&snap, &allocation("192.0.2.2"), &[]),
            "a new allocation"
        );

        gate.done(&snap, &a, &[], false);
        assert!(
            gate.due(&snap, &a, &[]),
            "a failed write is retried next round"
        );

        gate.done(&snap, &a, &[], true);
        gate.forget();
        assert!(
            gate.due(&snap, &a, &[]),
            "a new term writes everything again"
        );
    }
}
