//! Split-brain guard for L2 ownership.
//!
//! In L2 mode two owners of one IP fight over the clients' ARP/NDP caches, so
//! a speaker that may be on the wrong side of a partition must stop
//! announcing. BGP is different: every eligible node announces and the router
//! chooses among live sessions, so BGP announcements are never withdrawn by
//! this guard.
//!
//! A speaker keeps its L2 IPs while it can reach either the API server (it then
//! sees the same Node readiness as everyone else) or a strict majority of the
//! members it knows (itself included). A partitioned speaker declares the
//! members it cannot reach down after one failure-detection period, after
//! which this function turns false on the next evaluation; with the daemon
//! re-evaluating on every membership event and on each API reachability
//! change, L2 ownership stops within two detection periods.

use serde::{Deserialize, Serialize};

/// What a speaker knows about its own reachability, as plain numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumView {
    /// Members this speaker currently sees alive or suspect, itself included.
    pub live_members: usize,
    /// Members this speaker knows of (live ones plus those that failed and
    /// have not been forgotten), itself included. Members that left
    /// gracefully are not counted: a scaled-down cluster keeps its quorum.
    pub known_members: usize,
    /// Whether the last request to the API server succeeded recently.
    pub api_reachable: bool,
}

/// Whether this speaker may own (announce) L2 IPs now.
pub fn may_own_l2(view: &QuorumView) -> bool {
    if view.api_reachable {
        return true;
    }
    // Never fewer known than live (a caller's counting slip must not grant
    // ownership); a strict majority of the known members, self included.
    let known = view.known_members.max(view.live_members);
    known > 0 && view.live_members * 2 > known
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(live: usize, known: usize, api: bool) -> QuorumView {
        QuorumView {
            live_members: live,
            known_members: known,
            api_reachable: api,
        }
    }

    #[test]
    fn a_speaker_alone_in_a_minority_without_api_stops_owning() {
        assert!(!may_own_l2(&view(1, 3, false)));
        assert!(!may_own_l2(&view(2, 4, false)), "half is not a majority");
    }

    #[test]
    fn a_majority_or_the_api_server_is_enough() {
        assert!(may_own_l2(&view(2, 3, false)));
        assert!(may_own_l2(&view(1, 3, true)));
        assert!(may_own_l2(&view(1, 1, false)), "a single-node cluster owns");
    }

    #[test]
    fn inconsistent_counts_do_not_grant_ownership() {
        assert!(!may_own_l2(&view(0, 0, false)));
        assert!(may_own_l2(&view(3, 1, false)), "known is raised to live");
        assert!(!may_own_l2(&view(0, 5, false)));
    }
}
