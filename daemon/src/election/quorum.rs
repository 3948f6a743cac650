//! Split-brain guard for L2 ownership, scoped to the nodes that can own each IP.
//!
//! In L2 mode two owners of one IP fight over the clients' ARP/NDP caches, so a speaker
//! that may be on the wrong side of a partition must stop announcing. BGP is different:
//! every eligible node announces and the router chooses among live sessions, so BGP
//! announcements are never withdrawn by this guard.
//!
//! **Scope.** An L2 IP can only live on the nodes eligible for it (its pool, the
//! advertisements' selectors, an interface on its subnet). The guard counts those nodes
//! only, so a split between regions or subnets never costs a region its own IPs.
//!
//! **Rule** ([`may_own_l2`]). A speaker may own an IP while it sees a strict majority of
//! the scope's known members live (itself included), or exactly half of them and a
//! reachable API server (the witness breaks ties only). Two sides of a partition cannot
//! both hold a strict majority, and a tie goes to the side that reaches the API server, so
//! a partition that leaves the API server on at most one side never leaves two owners
//! beyond the time the other side needs to notice (the speaker's stated bound: the
//! witness's freshness, 3 s, plus one guard tick). A 2-node scope keeps its IPs when either
//! node crashes (1 of 2 and the witness) or stops (a goodbye removes it from the known).
//!
//! **Known members.** Live members, plus members seen down that neither said goodbye nor
//! were forgotten. A down member is forgotten once it has been down for a while *and* this
//! speaker may own in every scope the member shares with it ([`may_forget`]): only the side
//! that holds the quorum shrinks it (as a dynamic quorum does), so the minority of a
//! partition never forgets its way into a majority.
//!
//! **Limit.** When the gossip is split but both sides reach the API server and hold exactly
//! half each, both keep their IPs until the gossip heals (the API server cannot tell which
//! half is right without a per-node heartbeat).
//!
//! Pure: no clock, no I/O.

use serde::{Deserialize, Serialize};

/// What a speaker knows about one scope (or the whole membership), as plain numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumView {
    /// Members of the scope this speaker currently sees alive or suspect, itself included.
    pub live_members: usize,
    /// Members of the scope this speaker knows of (live ones plus those that failed and
    /// have not been forgotten), itself included. Members that left gracefully are not
    /// counted: a scaled-down cluster keeps its quorum.
    pub known_members: usize,
    /// Whether the API server answered recently (the tie-breaking witness).
    pub api_reachable: bool,
}

impl QuorumView {
    /// Known never below live (a caller's counting slip must not grant ownership).
    fn known(&self) -> usize {
        self.known_members.max(self.live_members)
    }
}

/// Whether this speaker may own (announce) the scope's L2 IPs now.
pub fn may_own_l2(view: &QuorumView) -> bool {
    let (live, known) = (view.live_members, view.known());
    live > 0 && (live * 2 > known || (live * 2 == known && view.api_reachable))
}

/// Whether the witness must be kept fresh: losing one more live member (other than this
/// speaker) would leave it without a strict majority, so it would then need the API
/// server's tie-break.
pub fn witness_needed(view: &QuorumView) -> bool {
    let (live, known) = (view.live_members, view.known());
    live > 0 && known > 1 && (live - 1) * 2 <= known
}

/// Whether a member down long enough may be forgotten: this speaker may own in every
/// scope the member shares with it (`shared`, the views counting the member as known).
pub fn may_forget(mut shared: impl Iterator<Item = QuorumView>) -> bool {
    shared.all(|v| may_own_l2(&v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(live: usize, known: usize, api: bool) -> QuorumView {
        QuorumView {
            live_members: live,
            known_members: known,
            api_reachable: api,
        }
    }

    #[test]
    fn a_speaker_alone_in_a_minority_stops_owning_even_with_the_api_server() {
        assert!(!may_own_l2(&view(1, 3, false)));
        assert!(
            !may_own_l2(&view(1, 3, true)),
            "the witness breaks ties only"
        );
        assert!(!may_own_l2(&view(2, 4, false)), "half is not a majority");
    }

    #[test]
    fn a_majority_or_half_and_the_api_server_is_enough() {
        assert!(may_own_l2(&view(2, 3, false)));
        assert!(may_own_l2(&view(2, 4, true)));
        assert!(may_own_l2(&view(1, 1, false)), "a single-node scope owns");
    }

    #[test]
    fn a_two_node_scope_survives_either_node_crashing_or_stopping() {
        // Crash: the survivor sees 1 of 2 and the API server.
        assert!(may_own_l2(&view(1, 2, true)));
        // Graceful stop: the goodbye leaves 1 known.
        assert!(may_own_l2(&view(1, 1, false)));
        // Both up: each needs the witness kept fresh for the day the other goes.
        assert!(witness_needed(&view(2, 2, false)));
        assert!(!witness_needed(&view(3, 3, false)));
    }

    #[test]
    fn inconsistent_counts_do_not_grant_ownership() {
        assert!(!may_own_l2(&view(0, 0, false)));
        assert!(!may_own_l2(&view(0, 0, true)));
        assert!(may_own_l2(&view(3, 1, false)), "known is raised to live");
        assert!(!may_own_l2(&view(0, 5, true)));
    }

    /// One side of a partition: its live nodes and what it still counts as known.
    #[derive(Clone, Copy, Debug)]
    struct Side {
        live: usize,
        known: usize,
        witness: bool,
    }

    impl Side {
        fn view(&self) -> QuorumView {
            view(self.live, self.known, self.witness)
        }
    }

    proptest! {
        /// However a scope of n nodes splits in two, with the API server on at most one
        /// side and each side forgetting the other's nodes whenever the rule lets it (in
        /// any order), the two sides never both may own.
        #[test]
        fn a_partition_never_leaves_two_owners(
            n in 1usize..9,
            left in 0usize..9,
            witness_left in any::<bool>(),
            witness_right in any::<bool>(),
            steps in prop::collection::vec(any::<bool>(), 0..20),
        ) {
            let left = left.min(n);
            // The witness is one API server: it sits on at most one side.
            let witness_right = witness_right && !witness_left;
            let mut sides = [
                Side { live: left, known: n, witness: witness_left },
                Side { live: n - left, known: n, witness: witness_right },
            ];
            for left_moves in steps {
                let (me, other) = if left_moves { (0, 1) } else { (1, 0) };
                // Forget one node of the other side, if any remains and the rule allows.
                let others_known = sides[me].known - sides[me].live;
                if others_known > 0 && may_forget(std::iter::once(sides[me].view())) {
                    sides[me].known -= 1;
                }
                prop_assert!(
                    !(may_own_l2(&sides[me].view()) && may_own_l2(&sides[other].view())),
                    "two owners: {:?}", sides
                );
            }
            prop_assert!(!(may_own_l2(&sides[0].view()) && may_own_l2(&sides[1].view())));
        }

        /// More live members or a witness never take ownership away.
        #[test]
        fn ownership_is_monotone(live in 0usize..10, known in 0usize..10, api in any::<bool>()) {
            if may_own_l2(&view(live, known, false)) {
                prop_assert!(may_own_l2(&view(live, known, true)));
            }
            if may_own_l2(&view(live, known, api)) && live < known {
                prop_assert!(may_own_l2(&view(live + 1, known, api)));
            }
        }

        /// A speaker that does not need the witness keeps a strict majority after losing
        /// any one live member (so a single crash never waits on the API server).
        #[test]
        fn no_witness_needed_means_one_loss_is_survived(live in 1usize..10, known in 1usize..10) {
            let v = view(live, known, false);
            if !witness_needed(&v) && live > 1 {
                prop_assert!(may_own_l2(&view(live - 1, known, false)));
            }
        }
    }
}
