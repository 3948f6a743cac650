//! What changed between two allocation runs, as the user-visible decisions that become
//! Events (`IPAllocated`, `AllocationFailed`, `IPReleased`) and log lines.

use std::net::IpAddr;

use imbl::ordmap::DiffItem;

use crate::ipam::{AllocationKey, Assignments, Outcome};

/// One user-visible decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The Service got (other) IPs.
    Allocated {
        /// Which allocation.
        key: AllocationKey,
        /// The IPs now.
        ips: Vec<IpAddr>,
        /// The pool.
        pool: String,
    },
    /// The Service has no IP, and why (reported again only when the reason changes).
    Failed {
        /// Which allocation.
        key: AllocationKey,
        /// The reason, as shown to users.
        reason: String,
    },
    /// IPs the Service had are no longer its own (deleted, or the Service lost them).
    Released {
        /// Which allocation.
        key: AllocationKey,
        /// The IPs released.
        ips: Vec<IpAddr>,
    },
}

impl Change {
    /// The Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Change::Allocated { .. } => "IPAllocated",
            Change::Failed { .. } => "AllocationFailed",
            Change::Released { .. } => "IPReleased",
        }
    }

    /// The Event type (`Normal` or `Warning`).
    pub fn event_type(&self) -> &'static str {
        match self {
            Change::Failed { .. } => "Warning",
            _ => "Normal",
        }
    }

    /// The allocation it is about.
    pub fn key(&self) -> &AllocationKey {
        match self {
            Change::Allocated { key, .. }
            | Change::Failed { key, .. }
            | Change::Released { key, .. } => key,
        }
    }

    /// The Event message.
    pub fn message(&self) -> String {
        let list = |ips: &[IpAddr]| {
            ips.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        // One Event per node pool: say which, so that an exhausted region is told apart.
        let region = match &self.key().node_pool {
            Some(np) => format!(" for node pool {np}"),
            None => String::new(),
        };
        match self {
            Change::Allocated { ips, pool, .. } => {
                format!("assigned IP {}{region} from pool {pool}", list(ips))
            }
            Change::Failed { reason, .. } => format!("no IP assigned{region}: {reason}"),
            Change::Released { ips, .. } => format!("released IP {}{region}", list(ips)),
        }
    }
}

fn ips(o: Option<&Outcome>) -> &[IpAddr] {
    match o {
        Some(Ok(a)) => &a.ips,
        _ => &[],
    }
}

/// The decisions that differ between `before` and `after`, in key order (removed keys
/// last). Unchanged outcomes yield nothing, so repeating a run emits nothing. Walks only
/// what differs: results that share map nodes (one allocator's successive results do)
/// cost O(changes x log n), not a pass over every Service.
pub fn diff(before: &Assignments, after: &Assignments) -> Vec<Change> {
    let mut out = Vec::new();
    let mut removed = Vec::new();
    for item in before.outcomes.diff(&after.outcomes) {
        match item {
            DiffItem::Add(key, outcome) => changed(key, None, outcome, &mut out),
            DiffItem::Update {
                old: (_, prev),
                new: (key, outcome),
            } => changed(key, Some(prev), outcome, &mut out),
            DiffItem::Remove(key, outcome) => removed.push((key, outcome)),
        }
    }
    for (key, outcome) in removed {
        let old = ips(Some(outcome));
        if !old.is_empty() {
            out.push(Change::Released {
                key: key.clone(),
                ips: old.to_vec(),
            });
        }
    }
    out
}

/// The changes of one key whose outcome went from `prev` (absent: `None`) to `outcome`.
fn changed(key: &AllocationKey, prev: Option<&Outcome>, outcome: &Outcome, out: &mut Vec<Change>) {
    let old_ips = ips(prev);
    match outcome {
        Ok(a) => {
            let released: Vec<IpAddr> = old_ips
                .iter()
                .filter(|ip| !a.ips.contains(ip))
                .copied()
                .collect();
            if !released.is_empty() {
                out.push(Change::Released {
                    key: key.clone(),
                    ips: released,
                });
            }
            if old_ips != a.ips.as_slice() {
                out.push(Change::Allocated {
                    key: key.clone(),
                    ips: a.ips.clone(),
                    pool: a.pool.to_string(),
                });
            }
        }
        Err(e) => {
            if !old_ips.is_empty() {
                out.push(Change::Released {
                    key: key.clone(),
                    ips: old_ips.to_vec(),
                });
            }
            let same = matches!(prev, Some(Err(p)) if p == e);
            if !same {
                out.push(Change::Failed {
                    key: key.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{Allocation, AllocationError};
    use crate::snapshot::ObjectKey;

    fn key(n: &str) -> AllocationKey {
        AllocationKey::cluster(ObjectKey::new("default", n))
    }

    fn ok(ip: &str) -> Outcome {
        Ok(Allocation {
            pool: "a".into(),
            ips: vec![ip.parse().expect("ip")],
        })
    }

    fn set(entries: Vec<(&str, Outcome)>) -> Assignments {
        Assignments {
            outcomes: entries.into_iter().map(|(n, o)| (key(n), o)).collect(),
        }
    }

    #[test]
    fn allocation_failure_release_and_nothing_when_unchanged() {
        let before = set(vec![
            ("keep", ok("192.0.2.1")),
            ("gone", ok("192.0.2.2")),
            ("fail", ok("192.0.2.3")),
        ]);
        let err = AllocationError::NoEligiblePool;
        let after = set(vec![
            ("keep", ok("192.0.2.1")),
            ("fail", Err(err.clone())),
            ("new", ok("192.0.2.4")),
        ]);
        let changes = diff(&before, &after);
        let shown: Vec<(String, &str, String)> = changes
            .iter()
            .map(|c| (c.key().service.to_string(), c.reason(), c.message()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    "default/fail".into(),
                    "IPReleased",
                    "released IP 192.0.2.3".into()
                ),
                (
                    "default/fail".into(),
                    "AllocationFailed",
                    "no IP assigned: no IPAddressPool with autoAssign serves this Service".into()
                ),
                (
                    "default/new".into(),
                    "IPAllocated",
                    "assigned IP 192.0.2.4 from pool a".into()
                ),
                (
                    "default/gone".into(),
                    "IPReleased",
                    "released IP 192.0.2.2".into()
                ),
            ]
        );
        assert_eq!(changes[1].event_type(), "Warning");
        assert!(
            diff(&after, &after).is_empty(),
            "a repeated run emits nothing"
        );
    }
}
