//! Who is live and which L2 IPs this node may own: the membership's members turned into
//! the planner's [`Members`], the join wait, and the split-brain guard scoped per IP
//! ([`crate::election::quorum`]). One concern: the L2 ownership inputs that come from the
//! gossip and the API server's reachability.
//!
//! The guard remembers every member it has seen (with its last interfaces) until it says
//! goodbye, or is down for [`FORGET_AFTER`] and may be forgotten
//! ([`crate::election::quorum::may_forget`]). For every L2 IP this node is eligible for,
//! the scope is the set of remembered nodes (live or not) that would be eligible if they
//! were live; the IP is denied when that scope gives no quorum.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::election::quorum::{may_forget, may_own_l2, witness_needed, QuorumView};
use crate::election::{Candidate, ElectionView, InterfaceFacts, ModeKind, NodeName};
use crate::membership::{Health, MemberSnapshot};
use crate::plan::l2::{self, L2Node, L2Requests, Members};
use crate::snapshot::Snapshot;

/// With gossip, a starting speaker owns no L2 IP until it has seen another live member or
/// this long has passed (then it is alone: a single-node cluster). Without the wait, a
/// restarted speaker would claim every IP for the moment before it joins.
pub const JOIN_WAIT: Duration = Duration::from_secs(2);

/// How long after the last answer of the API server it still counts as the tie-breaking
/// witness. Also the stated bound for two owners in a partition that leaves the API
/// server on one side and exactly half of a scope on each (plus one guard tick).
pub const WITNESS_TTL: Duration = Duration::from_secs(3);

/// A member down this long may be forgotten (if this node holds the quorum of every scope
/// it shares with it), so a crashed node stops counting against the survivors.
pub const FORGET_AFTER: Duration = Duration::from_secs(10);

/// What the guard remembers of another node.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Remembered {
    /// Its interfaces as last gossiped (they decide the scopes it is in).
    facts: Vec<InterfaceFacts>,
    /// When it was first seen down since it was last live.
    down_since: Option<Instant>,
}

/// The scopes of the L2 IPs this node is eligible for, and what they were made from.
struct Scopes {
    /// The election candidates, every remembered member counted live.
    candidates: Vec<Candidate>,
    /// The generation of the requests ([`crate::plan::l2_incremental::L2Planner::requests`]).
    requests: u64,
    /// Each scope (sorted) with its IPs.
    of: Vec<(BTreeSet<NodeName>, Vec<IpAddr>)>,
    /// Which scopes had no quorum at the last evaluation (what `denied` was made from).
    no_quorum: Vec<bool>,
}

/// The guard's state.
pub struct L2Guard {
    gossip: bool,
    members: Members,
    may_own: bool,
    joined: bool,
    memory: BTreeMap<String, Remembered>,
    witness_at: Option<Instant>,
    witness_was_fresh: bool,
    scopes: Option<Scopes>,
    /// How many times the scopes were made (an election over every L2 request).
    scope_builds: u64,
    denied: BTreeSet<IpAddr>,
    witness_needed: bool,
    /// When a down member may next be forgotten (checked on the tick).
    next_forget: Option<Instant>,
}

impl L2Guard {
    fn new(gossip: bool) -> L2Guard {
        L2Guard {
            gossip,
            members: if gossip {
                Members::Gossip(BTreeMap::new())
            } else {
                Members::Static
            },
            may_own: !gossip,
            joined: false,
            memory: BTreeMap::new(),
            witness_at: None,
            witness_was_fresh: false,
            scopes: None,
            scope_builds: 0,
            denied: BTreeSet::new(),
            witness_needed: false,
            next_forget: None,
        }
    }

    /// Without gossip every Node counts as live and L2 is always owned.
    pub fn static_members() -> L2Guard {
        L2Guard::new(false)
    }

    /// With gossip: no member known and no L2 IP owned until the gossip runs and has
    /// members (or is alone for [`JOIN_WAIT`]).
    pub fn gossip() -> L2Guard {
        L2Guard::new(true)
    }

    /// The live members as the planner takes them.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Whether this node may own L2 IPs at all now (the join wait).
    pub fn may_own(&self) -> bool {
        self.may_own
    }

    /// The IPs this node is eligible for but may not own now (no quorum in their scope).
    pub fn denied(&self) -> &BTreeSet<IpAddr> {
        &self.denied
    }

    /// Whether some scope needs the API server's tie-break kept fresh (so the API task
    /// probes it every second rather than on its Lease rounds only).
    pub fn witness_needed(&self) -> bool {
        self.witness_needed
    }

    /// The last time the API server answered (cluster mode).
    pub fn set_witness(&mut self, at: Option<Instant>) {
        self.witness_at = at;
    }

    fn witness_fresh(&self, now: Instant) -> bool {
        self.witness_at
            .is_some_and(|t| now.saturating_duration_since(t) <= WITNESS_TTL)
    }

    /// Whether the scopes must be evaluated again: the witness turned fresh or stale, or
    /// a down member may now be forgotten.
    pub fn due(&mut self, now: Instant) -> bool {
        let fresh = self.witness_fresh(now);
        let flipped = fresh != self.witness_was_fresh;
        let forget = self.next_forget.is_some_and(|t| now >= t);
        flipped || forget
    }

    /// Re-reads members from the membership's view (`running_for`: how long the gossip
    /// has run); true when what the planner or the scopes read changed.
    pub fn refresh(&mut self, all: &[MemberSnapshot], running_for: Duration, now: Instant) -> bool {
        // Per node: live when any generation is; left when every down one said goodbye.
        let mut live: BTreeMap<String, Vec<InterfaceFacts>> = BTreeMap::new();
        let mut down: BTreeSet<&str> = BTreeSet::new();
        let mut left: BTreeSet<&str> = BTreeSet::new();
        for s in all.iter().filter(|s| !s.is_self) {
            let facts = s.facts.as_ref().map(|f| f.interfaces.clone());
            match (s.health, s.left) {
                (Health::Down, true) => {
                    left.insert(&s.id.node);
                }
                (Health::Down, false) => {
                    down.insert(&s.id.node);
                }
                _ => {
                    live.insert(s.id.node.clone(), facts.unwrap_or_default());
                }
            }
        }
        let before = self.memory.clone();
        for (node, facts) in &live {
            self.memory.insert(
                node.clone(),
                Remembered {
                    facts: facts.clone(),
                    down_since: None,
                },
            );
        }
        for node in &left {
            if !live.contains_key(*node) && !down.contains(node) {
                self.memory.remove(*node);
            }
        }
        // Down, or gone from the membership's view without a goodbye: remembered down.
        for (node, r) in self.memory.iter_mut() {
            if !live.contains_key(node) && r.down_since.is_none() {
                r.down_since = Some(now);
                let at = now + FORGET_AFTER;
                self.next_forget = Some(self.next_forget.map_or(at, |t| t.min(at)));
            }
        }
        self.joined |= !live.is_empty();
        let may_own = self.joined || running_for >= JOIN_WAIT;
        if may_own != self.may_own {
            tracing::info!(may_own, "L2 join wait over");
        }
        let members = Members::Gossip(live);
        let changed = members != self.members || may_own != self.may_own || before != self.memory;
        self.members = members;
        self.may_own = may_own;
        changed
    }

    /// How many times the scopes were made: once per change of the requests, the Nodes or
    /// the remembered members' interfaces, never on a tick where none changed.
    #[cfg(test)]
    pub fn scope_builds(&self) -> u64 {
        self.scope_builds
    }

    /// Computes the scope of every L2 IP `me` is eligible for and the IPs without quorum;
    /// forgets members the rule lets go. `requests` are the planner's, `generation` changes
    /// whenever they do. True when the denied IPs changed.
    pub fn evaluate(
        &mut self,
        snap: &Snapshot,
        me: &L2Node,
        requests: &L2Requests,
        generation: u64,
        now: Instant,
    ) -> bool {
        let fresh = self.witness_fresh(now);
        self.witness_was_fresh = fresh;
        if !self.gossip {
            return false;
        }
        self.memory
            .retain(|n, _| snap.nodes.contains_key(n.as_str()));
        let mut forgot = true;
        let mut rebuilt = false;
        let mut no_quorum = Vec::new();
        // At most twice: once more after forgetting, so the denied IPs reflect it.
        for _ in 0..2 {
            if !forgot {
                break;
            }
            rebuilt |= self.update_scopes(snap, me, requests, generation);
            let Some(scopes) = &self.scopes else { break };
            let live = |n: &str| {
                n == me.name || matches!(&self.members, Members::Gossip(l) if l.contains_key(n))
            };
            let view_of = |scope: &BTreeSet<NodeName>| QuorumView {
                live_members: scope.iter().filter(|n| live(n)).count(),
                known_members: scope.len(),
                api_reachable: fresh,
            };
            no_quorum.clear();
            self.witness_needed = false;
            for (scope, _) in &scopes.of {
                let v = view_of(scope);
                no_quorum.push(!may_own_l2(&v));
                self.witness_needed |= witness_needed(&v);
            }
            let due: Vec<String> = self
                .memory
                .iter()
                .filter(|(_, r)| r.down_since.is_some_and(|t| now >= t + FORGET_AFTER))
                .map(|(n, _)| n.clone())
                .collect();
            forgot = false;
            for node in due {
                let shared = scopes
                    .of
                    .iter()
                    .filter(|(s, _)| s.contains(node.as_str()))
                    .map(|(s, _)| view_of(s));
                if may_forget(shared) {
                    tracing::info!(%node, "forgot a member down for {FORGET_AFTER:?}");
                    self.memory.remove(&node);
                    forgot = true;
                }
            }
        }
        // Members that could not be forgotten are tried again a second later.
        self.next_forget = self
            .memory
            .values()
            .filter_map(|r| r.down_since)
            .map(|t| (t + FORGET_AFTER).max(now + Duration::from_secs(1)))
            .min();
        let Some(scopes) = &mut self.scopes else {
            return false;
        };
        // The denied IPs are made again only when a scope or a verdict changed.
        if !rebuilt && scopes.no_quorum == no_quorum {
            return false;
        }
        let denied: BTreeSet<IpAddr> = scopes
            .of
            .iter()
            .zip(&no_quorum)
            .filter(|(_, no)| **no)
            .flat_map(|((_, ips), _)| ips.iter().copied())
            .collect();
        scopes.no_quorum = no_quorum;
        let changed = denied != self.denied;
        if changed {
            tracing::warn!(
                denied = denied.len(),
                witness = fresh,
                "L2 split-brain guard: IPs whose scope has no quorum are not owned"
            );
        }
        self.denied = denied;
        changed
    }

    /// Makes the scopes again when what they are made from changed; true when it did.
    fn update_scopes(
        &mut self,
        snap: &Snapshot,
        me: &L2Node,
        requests: &L2Requests,
        generation: u64,
    ) -> bool {
        let everyone = Members::Gossip(
            self.memory
                .iter()
                .map(|(n, r)| (n.clone(), r.facts.clone()))
                .collect(),
        );
        let candidates = l2::candidates(snap, me, &everyone);
        if self
            .scopes
            .as_ref()
            .is_some_and(|s| s.requests == generation && s.candidates == candidates)
        {
            return false;
        }
        self.scope_builds += 1;
        let of = scopes(&candidates, requests, &me.name);
        self.scopes = Some(Scopes {
            candidates,
            requests: generation,
            no_quorum: Vec::new(),
            of,
        });
        true
    }
}

/// The scopes (nodes that could own the IP were they live, `me` included) of every L2 IP
/// `me` is eligible for, with their IPs, in scope order.
fn scopes(
    candidates: &[Candidate],
    requests: &L2Requests,
    me: &str,
) -> Vec<(BTreeSet<NodeName>, Vec<IpAddr>)> {
    let view = ElectionView::new(candidates.iter().cloned());
    let all: Vec<NodeName> = view
        .candidates()
        .map(|c| NodeName::from(c.node.as_str()))
        .collect();
    let mut out: BTreeMap<BTreeSet<NodeName>, Vec<IpAddr>> = BTreeMap::new();
    for r in view.elect_many(&requests.requests) {
        if r.mode != ModeKind::L2 || r.exclusion_of(me).is_some() {
            continue;
        }
        let excluded: HashSet<&str> = r.exclusions().map(|e| &*e.node).collect();
        let scope = all
            .iter()
            .filter(|n| !excluded.contains(&***n))
            .cloned()
            .collect();
        out.entry(scope).or_default().push(r.ip);
    }
    out.into_iter()
        .map(|(scope, mut ips)| {
            ips.shrink_to_fit();
            (scope, ips)
        })
        .collect()
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
