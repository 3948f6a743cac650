//! Adj-RIB-Out (RFC 4271 §3.2, §9.2): what one peer should have from us, what it has, and
//! the difference between the two, grouped so that one UPDATE carries many prefixes.
//!
//! Pure: no I/O, no clock. The user hands over the whole desired table (prefix ->
//! attributes); [`diff`] compares it with what was sent and yields the withdrawals and the
//! announcements grouped by (family, equal attributes). Attribute sets are shared behind
//! `Arc`, so grouping is by pointer first and by value only across distinct pointers.
use crate::packet::{
    AsPath, AsSegment, AsSegmentKind, Community, Family, LargeCommunity, MpNextHop, Origin,
    PathAttributes,
};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The routes a peer should have: prefix -> attributes.
pub type RouteTable = BTreeMap<IpNet, Arc<RouteAttrs>>;

/// The user-level attributes of an announced route. The AS_PATH and the next hop come from
/// the session (see [`SessionRouteContext`]), not from here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteAttrs {
    pub origin: Origin,
    pub med: Option<u32>,
    /// Sent to iBGP peers only (RFC 4271 §5.1.5); 100 when `None` there.
    pub local_pref: Option<u32>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    /// Next hop instead of our own address on the session.
    pub next_hop: Option<IpAddr>,
}

impl Default for RouteAttrs {
    fn default() -> RouteAttrs {
        RouteAttrs {
            origin: Origin::Igp,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            next_hop: None,
        }
    }
}

/// Prefixes of one family that share one attribute set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub family: Family,
    pub attrs: Arc<RouteAttrs>,
    pub prefixes: Vec<IpNet>,
}

/// What to send to move a peer from `sent` to `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RibDiff {
    /// Per family, prefixes to withdraw (in order).
    pub withdraw: BTreeMap<Family, Vec<IpNet>>,
    pub announce: Vec<Announcement>,
}

impl RibDiff {
    pub fn is_empty(&self) -> bool {
        self.withdraw.values().all(Vec::is_empty) && self.announce.is_empty()
    }

    pub fn announced_count(&self) -> usize {
        self.announce.iter().map(|a| a.prefixes.len()).sum()
    }

    pub fn withdrawn_count(&self) -> usize {
        self.withdraw.values().map(Vec::len).sum()
    }
}

/// The difference between what a peer has (`sent`) and what it should have (`desired`),
/// restricted to `families` (the negotiated ones; other prefixes are neither announced nor
/// withdrawn). Applying it to `sent` gives `desired` on those families.
pub fn diff(sent: &RouteTable, desired: &RouteTable, families: &[Family]) -> RibDiff {
    let mut out = RibDiff::default();
    // Group by Arc pointer while walking; merge equal values at the end.
    let mut groups: HashMap<(Family, *const RouteAttrs), Announcement> = HashMap::new();
    let mut order: Vec<(Family, *const RouteAttrs)> = Vec::new();
    let mut announce = |prefix: IpNet, attrs: &Arc<RouteAttrs>| {
        let family = Family::of(&prefix);
        let key = (family, Arc::as_ptr(attrs));
        groups
            .entry(key)
            .or_insert_with(|| {
                order.push(key);
                Announcement {
                    family,
                    attrs: attrs.clone(),
                    prefixes: Vec::new(),
                }
            })
            .prefixes
            .push(prefix);
    };
    let wanted = |p: &IpNet| families.contains(&Family::of(p));

    let mut old = sent.iter().filter(|(p, _)| wanted(p)).peekable();
    let mut new = desired.iter().filter(|(p, _)| wanted(p)).peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some((op, _)), None) => {
                out.withdraw.entry(Family::of(op)).or_default().push(**op);
                old.next();
            }
            (None, Some((np, na))) => {
                announce(**np, na);
                new.next();
            }
            (Some((op, oa)), Some((np, na))) => match op.cmp(np) {
                std::cmp::Ordering::Less => {
                    out.withdraw.entry(Family::of(op)).or_default().push(**op);
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    announce(**np, na);
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if !Arc::ptr_eq(oa, na) && oa != na {
                        announce(**np, na);
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }

    // Merge groups whose distinct Arcs hold equal values, keeping first-seen order.
    let mut merged: Vec<Announcement> = Vec::new();
    for key in order {
        let Some(group) = groups.remove(&key) else {
            continue;
        };
        match merged
            .iter_mut()
            .find(|m| m.family == group.family && m.attrs == group.attrs)
        {
            Some(m) => m.prefixes.extend(group.prefixes),
            None => merged.push(group),
        }
    }
    out.announce = merged;
    out
}

/// How many prefixes of `families` are in `table`.
pub fn count(table: &RouteTable, families: &[Family]) -> usize {
    table
        .keys()
        .filter(|p| families.contains(&Family::of(p)))
        .count()
}

/// What the session adds to every route: our AS for eBGP, our address as next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRouteContext {
    pub ebgp: bool,
    pub local_as: u32,
    /// Our IPv4 address on the session (or on the interface toward the peer, for IPv4 over
    /// an IPv6 session; see [`crate::next_hop`]).
    pub local_v4: Option<Ipv4Addr>,
    /// Our global IPv6 address on the session (or on the interface toward the peer, for IPv6
    /// over an IPv4 session).
    pub local_v6: Option<Ipv6Addr>,
    /// Our link-local address when the session runs over one (RFC 2545 §3).
    pub link_local_v6: Option<Ipv6Addr>,
}

/// Why a route cannot be sent on a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no {family:?} next hop: the session has no local address of that family and the route sets none")]
    NoNextHop { family: Family },
}

/// The wire attributes and next hop for `attrs` in `family` on a session (RFC 4271 §5.1,
/// RFC 4760 §3): AS_PATH empty for iBGP and our AS for eBGP, LOCAL_PREF only for iBGP,
/// next hop ours unless the route sets one. The packer puts the next hop in NEXT_HOP (IPv4)
/// or MP_REACH_NLRI (IPv6, with the link-local address when there is one, RFC 2545 §3).
pub fn path_attributes(
    attrs: &RouteAttrs,
    family: Family,
    ctx: &SessionRouteContext,
) -> Result<(PathAttributes, MpNextHop), RouteError> {
    let as_path = if ctx.ebgp {
        AsPath {
            segments: vec![AsSegment {
                kind: AsSegmentKind::Sequence,
                asns: vec![ctx.local_as],
            }],
        }
    } else {
        AsPath::default()
    };
    let pa = PathAttributes {
        origin: Some(attrs.origin),
        as_path: Some(as_path),
        med: attrs.med,
        local_pref: if ctx.ebgp {
            None
        } else {
            Some(attrs.local_pref.unwrap_or(100))
        },
        communities: attrs.communities.clone(),
        large_communities: attrs.large_communities.clone(),
        ..PathAttributes::default()
    };
    let next_hop = match family {
        Family::Ipv4Unicast => {
            let nh = match attrs.next_hop {
                Some(IpAddr::V4(v4)) => Some(v4),
                _ => ctx.local_v4,
            };
            MpNextHop::V4(nh.ok_or(RouteError::NoNextHop { family })?)
        }
        Family::Ipv6Unicast => {
            let global = match attrs.next_hop {
                Some(IpAddr::V6(v6)) => Some(v6),
                // Never an IPv4-mapped address: a router cannot forward to it.
                _ => ctx.local_v6,
            };
            let global = global.ok_or(RouteError::NoNextHop { family })?;
            let link_local = if attrs.next_hop.is_none() {
                ctx.link_local_v6
            } else {
                None
            };
            MpNextHop::V6 { global, link_local }
        }
    };
    Ok((pa, next_hop))
}

#[cfg(test)]
#[path = "rib_out_tests.rs"]
mod tests;
