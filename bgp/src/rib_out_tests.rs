use super::*;
use proptest::prelude::*;

const BOTH: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn attrs(med: u32) -> Arc<RouteAttrs> {
    Arc::new(RouteAttrs {
        med: Some(med),
        ..RouteAttrs::default()
    })
}

/// Applies `d` to `sent` as the peer would see it.
fn apply(sent: &RouteTable, d: &RibDiff) -> RouteTable {
    let mut t = sent.clone();
    for p in d.withdraw.values().flatten() {
        t.remove(p);
    }
    for a in &d.announce {
        for p in &a.prefixes {
            t.insert(*p, a.attrs.clone());
        }
    }
    t
}

#[test]
fn unchanged_table_gives_no_update() {
    let mut t = RouteTable::new();
    t.insert(net("198.51.100.1/32"), attrs(1));
    t.insert(net("2001:db8::1/128"), attrs(1));
    assert!(diff(&t, &t, &BOTH).is_empty());
    assert!(diff(&t, &t.clone(), &BOTH).is_empty());
}

#[test]
fn equal_attributes_in_distinct_arcs_share_one_group() {
    let mut t = RouteTable::new();
    for i in 0..100u32 {
        let p = IpNet::from(ipnet::Ipv4Net::new(Ipv4Addr::from(0xc633_6400 + i), 32).unwrap());
        t.insert(p, attrs(7));
    }
    let d = diff(&RouteTable::new(), &t, &BOTH);
    assert_eq!(d.announce.len(), 1);
    assert_eq!(d.announce[0].prefixes.len(), 100);
}

#[test]
fn families_are_grouped_apart_and_filtered() {
    let mut t = RouteTable::new();
    let a = attrs(1);
    t.insert(net("198.51.100.1/32"), a.clone());
    t.insert(net("2001:db8::1/128"), a);
    let d = diff(&RouteTable::new(), &t, &BOTH);
    assert_eq!(d.announce.len(), 2);
    let d = diff(&RouteTable::new(), &t, &[Family::Ipv6Unicast]);
    assert_eq!(d.announce.len(), 1);
    assert_eq!(d.announce[0].family, Family::Ipv6Unicast);
    // A prefix of a family not negotiated is not withdrawn either.
    let d = diff(&t, &RouteTable::new(), &[Family::Ipv4Unicast]);
    assert_eq!(
        d.withdraw.get(&Family::Ipv4Unicast),
        Some(&vec![net("198.51.100.1/32")])
    );
    assert_eq!(d.withdraw.get(&Family::Ipv6Unicast), None);
}

#[test]
fn changed_attributes_are_announced_again_without_withdrawal() {
    let mut old = RouteTable::new();
    old.insert(net("198.51.100.1/32"), attrs(1));
    let mut new = RouteTable::new();
    new.insert(net("198.51.100.1/32"), attrs(2));
    let d = diff(&old, &new, &BOTH);
    assert_eq!(d.withdrawn_count(), 0);
    assert_eq!(d.announced_count(), 1);
    assert_eq!(d.announce[0].attrs.med, Some(2));
}

#[test]
fn ebgp_prepends_our_as_and_drops_local_pref() {
    let ctx = SessionRouteContext {
        ebgp: true,
        local_as: 65001,
        local_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        local_v6: None,
        link_local_v6: None,
    };
    let a = RouteAttrs {
        local_pref: Some(200),
        ..RouteAttrs::default()
    };
    let (pa, nh) = path_attributes(&a, Family::Ipv4Unicast, &ctx).unwrap();
    assert_eq!(pa.as_path.unwrap().segments[0].asns, vec![65001]);
    assert_eq!(pa.local_pref, None);
    assert_eq!(nh, MpNextHop::V4(Ipv4Addr::new(192, 0, 2, 1)));
    // IPv6 over an IPv4 session with no IPv6 address toward the peer: no next hop, never
    // the IPv4-mapped address no router can forward to.
    assert_eq!(
        path_attributes(&a, Family::Ipv6Unicast, &ctx).map(|_| ()),
        Err(RouteError::NoNextHop {
            family: Family::Ipv6Unicast
        })
    );
}

#[test]
fn ibgp_has_empty_as_path_and_local_pref() {
    let ctx = SessionRouteContext {
        ebgp: false,
        local_as: 65001,
        local_v4: None,
        local_v6: Some("2001:db8::1".parse().unwrap()),
        link_local_v6: Some("fe80::1".parse().unwrap()),
    };
    let (pa, nh) = path_attributes(&RouteAttrs::default(), Family::Ipv6Unicast, &ctx).unwrap();
    assert_eq!(pa.as_path, Some(AsPath::default()));
    assert_eq!(pa.local_pref, Some(100));
    assert!(matches!(
        nh,
        MpNextHop::V6 {
            link_local: Some(_),
            ..
        }
    ));
    assert_eq!(
        path_attributes(&RouteAttrs::default(), Family::Ipv4Unicast, &ctx).map(|_| ()),
        Err(RouteError::NoNextHop {
            family: Family::Ipv4Unicast
        })
    );
}

fn table_strategy() -> impl Strategy<Value = RouteTable> {
    let attr_pool: Vec<Arc<RouteAttrs>> = (0..4).map(attrs).collect();
    prop::collection::btree_map((0u32..64, any::<bool>()), 0usize..4, 0..40).prop_map(move |m| {
        m.into_iter()
            .map(|((i, v6), a)| {
                let p = if v6 {
                    IpNet::from(
                        ipnet::Ipv6Net::new(
                            Ipv6Addr::from(0x2001_0db8u128 << 96 | u128::from(i)),
                            128,
                        )
                        .unwrap(),
                    )
                } else {
                    IpNet::from(ipnet::Ipv4Net::new(Ipv4Addr::from(0xc633_6400 + i), 32).unwrap())
                };
                // Half the time a fresh Arc with an equal value: equality must not depend on pointers.
                let attrs = if i % 2 == 0 {
                    attr_pool[a].clone()
                } else {
                    Arc::new((*attr_pool[a]).clone())
                };
                (p, attrs)
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn applying_the_diff_reproduces_the_desired_table(old in table_strategy(), new in table_strategy()) {
        let d = diff(&old, &new, &BOTH);
        prop_assert_eq!(apply(&old, &d), new.clone());
        prop_assert!(diff(&new, &new, &BOTH).is_empty());
        // Every announcement group has distinct attributes within its family.
        for (i, a) in d.announce.iter().enumerate() {
            for b in &d.announce[i + 1..] {
                prop_assert!(a.family != b.family || a.attrs != b.attrs);
            }
        }
    }
}
