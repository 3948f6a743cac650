//! Where a speaker finds the others for the gossip in cluster mode: every other Node's
//! `InternalIP` at the member port. The DaemonSet starts each speaker with
//! `--member-addr=<hostIP>:<port>` and nothing else, so the Node list is the only place
//! all speakers can learn about one another; as Nodes come and go the list follows.
//!
//! Pure: the snapshot and this speaker's own gossip address in, a sorted list out.
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use crate::snapshot::Snapshot;

/// The gossip seeds from the Node list: each other Node's `InternalIP`s of the same
/// family as `me` (a speaker gossips on one address), at `me`'s port, sorted, without
/// duplicates and without `me` itself. `node` is this speaker's Node name (skipped even if
/// its InternalIP differs from the address it gossips on).
pub fn member_seeds(snap: &Snapshot, node: &str, me: SocketAddr) -> Vec<SocketAddr> {
    let mut out = BTreeSet::new();
    for (name, view) in &snap.nodes {
        if &**name == node {
            continue;
        }
        let addresses = view
            .node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP");
        for a in addresses {
            let Ok(ip) = a.address.trim().parse::<IpAddr>() else {
                continue;
            };
            if ip.is_ipv4() == me.is_ipv4() && !ip.is_unspecified() {
                out.insert(SocketAddr::new(ip, me.port()));
            }
        }
    }
    out.remove(&me);
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Object, Selection, Store};
    use k8s_openapi::api::core::v1::Node;
    use proptest::prelude::*;

    fn node(name: &str, addresses: &[(&str, &str)]) -> Node {
        let list: Vec<String> = addresses
            .iter()
            .map(|(t, a)| format!("{{type: {t}, address: '{a}'}}"))
            .collect();
        serde_norway::from_str(&format!(
            "metadata: {{name: {name}}}\nstatus: {{addresses: [{}]}}",
            list.join(", ")
        ))
        .expect("test YAML")
    }

    fn snap(nodes: Vec<Node>) -> Snapshot {
        let mut store = Store::default();
        for n in nodes {
            store.apply(Object::Node(n), "edgelb-system");
        }
        store.snapshot(&Selection::default())
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn other_nodes_internal_ips_of_my_family_at_my_port() {
        let s = snap(vec![
            node("a", &[("InternalIP", "10.0.0.1"), ("Hostname", "a")]),
            node(
                "b",
                &[
                    ("InternalIP", "10.0.0.2"),
                    ("InternalIP", "fd00::2"),
                    ("ExternalIP", "203.0.113.2"),
                ],
            ),
            node(
                "c",
                &[("InternalIP", "not-an-ip"), ("InternalIP", " 10.0.0.3 ")],
            ),
            node("d", &[]),
        ]);
        assert_eq!(
            member_seeds(&s, "a", addr("10.0.0.1:7946")),
            vec![addr("10.0.0.2:7946"), addr("10.0.0.3:7946")]
        );
        assert_eq!(
            member_seeds(&s, "a", addr("[fd00::1]:7000")),
            vec![addr("[fd00::2]:7000")]
        );
    }

    #[test]
    fn nodes_coming_and_going_change_the_seeds() {
        let two = snap(vec![
            node("a", &[("InternalIP", "10.0.0.1")]),
            node("b", &[("InternalIP", "10.0.0.2")]),
        ]);
        assert_eq!(
            member_seeds(&two, "a", addr("10.0.0.1:7946")),
            vec![addr("10.0.0.2:7946")]
        );
        let three = snap(vec![
            node("a", &[("InternalIP", "10.0.0.1")]),
            node("b", &[("InternalIP", "10.0.0.2")]),
            node("c", &[("InternalIP", "10.0.0.3")]),
        ]);
        assert_eq!(
            member_seeds(&three, "a", addr("10.0.0.1:7946")),
            vec![addr("10.0.0.2:7946"), addr("10.0.0.3:7946")]
        );
        let alone = snap(vec![node("a", &[("InternalIP", "10.0.0.1")])]);
        assert!(member_seeds(&alone, "a", addr("10.0.0.1:7946")).is_empty());
    }

    proptest! {
        /// Whatever the Node list: never my own address, always my port and family, sorted
        /// and unique, and every other node's matching InternalIP is in.
        #[test]
        fn seeds_are_the_others_sorted_unique_and_never_me(
            ips in prop::collection::vec((0u8..6, 1u8..5), 0..12),
            me_last in 1u8..5,
            port in 1u16..,
        ) {
            let nodes: Vec<Node> = ips
                .iter()
                .map(|(n, last)| node(&format!("n{n}-{last}"), &[("InternalIP", &format!("10.0.0.{last}"))]))
                .collect();
            let s = snap(nodes);
            let me = SocketAddr::new(IpAddr::from([10, 0, 0, me_last]), port);
            let seeds = member_seeds(&s, "n0-1", me);
            prop_assert!(!seeds.contains(&me));
            prop_assert!(seeds.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(seeds.iter().all(|a| a.port() == port && a.is_ipv4()));
            for (n, last) in &ips {
                let a = SocketAddr::new(IpAddr::from([10, 0, 0, *last]), port);
                if format!("n{n}-{last}") != "n0-1" && a != me {
                    prop_assert!(seeds.contains(&a), "{} missing from {:?}", a, seeds);
                }
            }
        }
    }
}
