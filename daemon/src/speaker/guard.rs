//! Who is live and whether this node may own L2 IPs: the membership's members turned into
//! the planner's [`Members`], and the split-brain guard ([`crate::election::quorum`]) with
//! the join wait. One concern: the L2 ownership inputs that come from the gossip.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::election::{may_own_l2, InterfaceFacts, QuorumView};
use crate::membership::{Health, MemberSnapshot};
use crate::plan::l2::Members;

/// With gossip, a starting speaker owns no L2 IP until it has seen another live member or
/// this long has passed (then it is alone: a single-node cluster). Without the wait, a
/// restarted speaker would claim every IP for the moment before it joins.
pub const JOIN_WAIT: Duration = Duration::from_secs(2);

/// The guard's state.
pub struct L2Guard {
    members: Members,
    may_own: bool,
    joined: bool,
    api_reachable: bool,
}

impl L2Guard {
    /// Without gossip every Node counts as live and L2 is always owned.
    pub fn static_members() -> L2Guard {
        L2Guard {
            members: Members::Static,
            may_own: true,
            joined: false,
            api_reachable: false,
        }
    }

    /// With gossip: no member known and no L2 IP owned until the gossip runs and has
    /// members (or is alone for [`JOIN_WAIT`]).
    pub fn gossip() -> L2Guard {
        L2Guard {
            members: Members::Gossip(BTreeMap::new()),
            may_own: false,
            joined: false,
            api_reachable: false,
        }
    }

    /// The live members as the planner takes them.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Whether this node may own L2 IPs now.
    pub fn may_own(&self) -> bool {
        self.may_own
    }

    /// Cluster mode: whether the API server answered lately.
    pub fn set_api_reachable(&mut self, reachable: bool) {
        self.api_reachable = reachable;
    }

    /// Re-reads members and quorum from the membership's view (`running_for`: how long
    /// the gossip has run); true when they changed.
    pub fn refresh(&mut self, all: &[MemberSnapshot], running_for: Duration) -> bool {
        let live: BTreeMap<String, Vec<InterfaceFacts>> = all
            .iter()
            .filter(|s| s.health != Health::Down && !s.is_self)
            .map(|s| {
                let facts = s
                    .facts
                    .as_ref()
                    .map(|f| f.interfaces.clone())
                    .unwrap_or_default();
                (s.id.node.clone(), facts)
            })
            .collect();
        self.joined |= !live.is_empty();
        // Standalone: no API server to ask, so only a majority of the members keeps L2.
        let may_own = may_own_l2(&quorum(all, false)) && (self.joined || running_for >= JOIN_WAIT);
        if may_own != self.may_own {
            tracing::warn!(may_own, "L2 split-brain guard changed");
        }
        let members = Members::Gossip(live);
        let changed = members != self.members || may_own != self.may_own;
        self.members = members;
        self.may_own = may_own;
        changed
    }
}

/// The counts of the cluster-wide guard: live members, and known ones (live plus failed
/// and not forgotten; those that left gracefully are not counted).
fn quorum(all: &[MemberSnapshot], api_reachable: bool) -> QuorumView {
    let live = all.iter().filter(|m| m.health != Health::Down).count();
    let failed = all
        .iter()
        .filter(|m| m.health == Health::Down && !m.left)
        .count();
    QuorumView {
        live_members: live,
        known_members: live + failed,
        api_reachable,
    }
}
