//! Election tests: one per exclusion reason, shared IPs, and the rendezvous
//! properties (agreement, minimal movement on removal and addition).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().expect("test literal")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test literal")
}

/// A ready, live node with `eth0` up on 192.0.2.0/24 and 2001:db8::/64.
fn node(name: &str) -> Candidate {
    Candidate {
        node: name.into(),
        labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        ready: true,
        network_unavailable: false,
        excluded_label: false,
        node_pool: Some("pool-1".into()),
        live: true,
        interfaces: vec![InterfaceFacts {
            name: "eth0".into(),
            up: true,
            subnets: vec![net("192.0.2.0/24"), net("2001:db8::/64")],
        }],
    }
}

fn l2(ip_s: &str) -> ElectionRequest {
    ElectionRequest::new(
        ip(ip_s),
        Arc::new(RequestTerms {
            mode: Mode::L2 { interfaces: None },
            node_selectors: vec![],
            pool: None,
            local_endpoints: None,
        }),
    )
}

fn bgp(ip_s: &str) -> ElectionRequest {
    let mut r = l2(ip_s);
    terms(&mut r).mode = Mode::Bgp;
    r
}

/// The request's own terms, to change (copied if shared).
fn terms(r: &mut ElectionRequest) -> &mut RequestTerms {
    Arc::make_mut(&mut r.terms)
}

fn names(result: &ElectionResult) -> Vec<&str> {
    result.owners.iter().map(|n| &**n).collect()
}

/// Elect with `bad` (alone with one good node `ok`) and return bad's reason.
fn reason_with(
    bad: Candidate,
    request: &ElectionRequest,
) -> (Option<ExclusionReason>, Vec<String>) {
    let view = ElectionView::new([bad, node("ok")]);
    let r = view.elect(request);
    (
        r.exclusion_of("bad"),
        r.owners.iter().map(|n| n.to_string()).collect(),
    )
}

#[test]
fn excluded_by_label_node_never_announces() {
    let bad = Candidate {
        excluded_label: true,
        ..node("bad")
    };
    assert_eq!(
        reason_with(bad, &bgp("192.0.2.1")),
        (
            Some(ExclusionReason::ExcludedByLabel),
            vec!["ok".to_string()]
        )
    );
}

#[test]
fn not_ready_and_network_unavailable_nodes_never_announce() {
    let not_ready = Candidate {
        ready: false,
        ..node("bad")
    };
    assert_eq!(
        reason_with(not_ready, &bgp("192.0.2.1")).0,
        Some(ExclusionReason::NodeNotReady)
    );
    let no_net = Candidate {
        network_unavailable: true,
        ..node("bad")
    };
    assert_eq!(
        reason_with(no_net, &bgp("192.0.2.1")).0,
        Some(ExclusionReason::NetworkUnavailable)
    );
}

#[test]
fn selector_mismatch_and_pool_mismatch_exclude() {
    let mut req = bgp("192.0.2.1");
    terms(&mut req).node_selectors = vec![NodeSelector {
        match_labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        match_expressions: vec![],
    }];
    let other_zone = Candidate {
        labels: BTreeMap::from([("zone".to_string(), "b".to_string())]),
        ..node("bad")
    };
    assert_eq!(
        reason_with(other_zone, &req),
        (
            Some(ExclusionReason::SelectorMismatch),
            vec!["ok".to_string()]
        )
    );
    terms(&mut req).pool = Some("pool-1".into());
    let other_pool = Candidate {
        node_pool: Some("pool-2".into()),
        ..node("bad")
    };
    assert_eq!(
        reason_with(other_pool, &req).0,
        Some(ExclusionReason::NotInPool)
    );
}

#[test]
fn not_live_node_is_excluded() {
    let dead = Candidate {
        live: false,
        ..node("bad")
    };
    assert_eq!(
        reason_with(dead, &l2("192.0.2.1")),
        (Some(ExclusionReason::NotLive), vec!["ok".to_string()])
    );
}

#[test]
fn node_without_local_endpoint_is_excluded_under_local_policy() {
    let mut req = bgp("192.0.2.1");
    terms(&mut req).local_endpoints = Some(BTreeSet::from(["ok".to_string()]));
    assert_eq!(
        reason_with(node("bad"), &req),
        (
            Some(ExclusionReason::NoLocalEndpoints),
            vec!["ok".to_string()]
        )
    );
}

#[test]
fn nic_down_excludes_in_both_modes_and_interface_list_is_honoured() {
    let mut dead_nic = node("bad");
    dead_nic.interfaces[0].up = false;
    assert_eq!(
        reason_with(dead_nic.clone(), &l2("192.0.2.1")).0,
        Some(ExclusionReason::NicDown)
    );
    assert_eq!(
        reason_with(dead_nic, &bgp("192.0.2.1")).0,
        Some(ExclusionReason::NicDown)
    );

    // eth0 is up, but the advertisement announces only on eth1.
    let mut req = l2("192.0.2.1");
    terms(&mut req).mode = Mode::L2 {
        interfaces: Some(vec!["eth1".into()]),
    };
    let mut ok = node("ok");
    ok.interfaces.push(InterfaceFacts {
        name: "eth1".into(),
        up: true,
        subnets: vec![net("192.0.2.0/24")],
    });
    let r = ElectionView::new([node("bad"), ok]).elect(&req);
    assert_eq!(r.exclusion_of("bad"), Some(ExclusionReason::NicDown));
    assert_eq!(names(&r), vec!["ok"]);
}

#[test]
fn l2_node_in_another_subnet_never_wins_but_bgp_ignores_subnets() {
    let mut far = node("bad");
    far.interfaces[0].subnets = vec![net("198.51.100.0/24")];
    assert_eq!(
        reason_with(far.clone(), &l2("192.0.2.1")),
        (
            Some(ExclusionReason::SubnetNotLocal),
            vec!["ok".to_string()]
        )
    );
    let r = ElectionView::new([far, node("ok")]).elect(&bgp("192.0.2.1"));
    assert_eq!(
        names(&r),
        vec!["bad", "ok"],
        "BGP: every eligible node announces"
    );
    assert_eq!(r.exclusions().count(), 0);
}

#[test]
fn subnet_on_a_down_interface_does_not_count() {
    let mut c = node("bad");
    c.interfaces[0].subnets = vec![net("198.51.100.0/24")];
    c.interfaces.push(InterfaceFacts {
        name: "eth1".into(),
        up: false,
        subnets: vec![net("192.0.2.0/24")],
    });
    assert_eq!(
        reason_with(c, &l2("192.0.2.1")).0,
        Some(ExclusionReason::SubnetNotLocal)
    );
}

#[test]
fn reason_codes_serialize_as_camel_case() {
    let all = [
        (ExclusionReason::NotLive, "notLive"),
        (ExclusionReason::NoLocalEndpoints, "noLocalEndpoints"),
        (ExclusionReason::NicDown, "nicDown"),
        (ExclusionReason::SubnetNotLocal, "subnetNotLocal"),
        (ExclusionReason::ExcludedByLabel, "excludedByLabel"),
        (ExclusionReason::SelectorMismatch, "selectorMismatch"),
        (ExclusionReason::NotInPool, "notInPool"),
        (ExclusionReason::NodeNotReady, "nodeNotReady"),
        (ExclusionReason::NetworkUnavailable, "networkUnavailable"),
    ];
    for (reason, code) in all {
        assert_eq!(
            serde_json::to_string(&reason).expect("serialize"),
            format!("\"{code}\"")
        );
        assert_eq!(reason.as_str(), code);
        let back: ExclusionReason = serde_json::from_str(&format!("\"{code}\"")).expect("parse");
        assert_eq!(back, reason);
    }
}

#[test]
fn result_serializes_owners_and_all_exclusions() {
    let dead = Candidate {
        live: false,
        ..node("b")
    };
    let r = ElectionView::new([node("a"), dead]).elect(&l2("192.0.2.7"));
    let v = serde_json::to_value(&r).expect("serialize");
    assert_eq!(
        v,
        serde_json::json!({
            "ip": "192.0.2.7", "mode": "l2", "owners": ["a"],
            "excluded": [{"node": "b", "reason": "notLive"}]
        })
    );
}

#[test]
fn no_eligible_node_gives_no_owner() {
    let dead = Candidate {
        live: false,
        ..node("a")
    };
    let r = ElectionView::new([dead]).elect(&l2("192.0.2.7"));
    assert!(r.owners.is_empty());
    assert!(ElectionView::new([])
        .elect(&l2("192.0.2.7"))
        .owners
        .is_empty());
}

#[test]
fn services_sharing_an_ip_share_one_owner_eligible_for_both() {
    let nodes: Vec<Candidate> = (0..20).map(|i| node(&format!("n{i:02}"))).collect();
    let view = ElectionView::new(nodes);
    // Two Services on one IP, each Local with endpoints on different node sets.
    let mut a = l2("192.0.2.50");
    terms(&mut a).local_endpoints = Some((0..12).map(|i| format!("n{i:02}")).collect());
    let mut b = l2("192.0.2.50");
    terms(&mut b).local_endpoints = Some((6..20).map(|i| format!("n{i:02}")).collect());
    let results = view.elect_many(&[a.clone(), b.clone()]);
    assert_eq!(results.len(), 1, "one result per shared IP");
    let owner = results[0].owner().expect("an owner").to_string();
    let idx: usize = owner[1..].parse().expect("node number");
    assert!(
        (6..12).contains(&idx),
        "owner {owner} must have endpoints for both Services"
    );
    assert_eq!(
        results[0].exclusion_of("n00"),
        Some(ExclusionReason::NoLocalEndpoints)
    );
    // Two Cluster-policy Services on one IP get exactly the owner of the IP.
    let same = view.elect_many(&[l2("192.0.2.50"), l2("192.0.2.50")]);
    assert_eq!(same.len(), 1);
    assert_eq!(same[0].owners, view.elect(&l2("192.0.2.50")).owners);
}

#[test]
fn elect_many_matches_elect_and_is_sorted() {
    let view = ElectionView::new((0..30).map(|i| node(&format!("n{i}"))));
    let reqs: Vec<ElectionRequest> = (0..100u8)
        .rev()
        .map(|i| l2(&format!("192.0.2.{i}")))
        .collect();
    let many = view.elect_many(&reqs);
    assert_eq!(many.len(), 100);
    for (r, want_ip) in many.iter().zip(0..100u8) {
        assert_eq!(r.ip, IpAddr::V4(Ipv4Addr::new(192, 0, 2, want_ip)));
        assert_eq!(r.owners, view.elect(&l2(&r.ip.to_string())).owners);
    }
}

// ---- properties ----

fn cluster(n: usize) -> Vec<Candidate> {
    (0..n).map(|i| node(&format!("node-{i}"))).collect()
}

fn requests(count: u32) -> Vec<ElectionRequest> {
    // 192.0.2.0/24 holds 256 IPs; use 2001:db8::/64 for more.
    (0..count)
        .map(|i| l2(&format!("2001:db8::{:x}", i + 1)))
        .collect()
}

fn owners(view: &ElectionView, reqs: &[ElectionRequest]) -> Vec<Option<String>> {
    view.elect_many(reqs)
        .iter()
        .map(|r| r.owner().map(|n| n.to_string()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Views that agree (same candidates, any order, duplicates of facts in
    /// other order) give the same owner on every speaker.
    #[test]
    fn agreeing_views_elect_the_same_owner(n in 1usize..40, seed in any::<u64>()) {
        let nodes = cluster(n);
        let mut shuffled = nodes.clone();
        // Deterministic shuffle from the seed.
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = rendezvous::mix64(s.wrapping_add(0x9e37_79b9_7f4a_7c15));
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let reqs = requests(64);
        let a = ElectionView::new(nodes);
        let b = ElectionView::new(shuffled);
        prop_assert_eq!(owners(&a, &reqs), owners(&b, &reqs));
    }

    /// Removing one node moves exactly the IPs it owned, nothing else.
    #[test]
    fn removing_a_node_moves_only_its_ips(n in 2usize..40, victim in any::<prop::sample::Index>()) {
        let nodes = cluster(n);
        let gone = victim.index(n);
        let gone_name = nodes[gone].node.clone();
        let reqs = requests(200);
        let before = owners(&ElectionView::new(nodes.clone()), &reqs);
        let mut rest = nodes;
        rest.remove(gone);
        let after = owners(&ElectionView::new(rest), &reqs);
        for (b, a) in before.iter().zip(&after) {
            if b.as_deref() == Some(gone_name.as_str()) {
                prop_assert!(a.is_some() && a != b);
            } else {
                prop_assert_eq!(a, b);
            }
        }
    }

    /// Marking a node not live is the same as removing it.
    #[test]
    fn a_dead_node_counts_as_removed(n in 2usize..30, victim in any::<prop::sample::Index>()) {
        let nodes = cluster(n);
        let gone = victim.index(n);
        let reqs = requests(100);
        let mut dead = nodes.clone();
        dead[gone].live = false;
        let mut removed = nodes;
        removed.remove(gone);
        prop_assert_eq!(owners(&ElectionView::new(dead), &reqs), owners(&ElectionView::new(removed), &reqs));
    }
}

/// Adding one node to N moves about 1/(N+1) of the IPs, all of them to the
/// new node. Over 20 000 IPs the binomial standard deviation is small; the
/// bound (half to twice the expectation) only fails on a broken hash.
#[test]
fn adding_a_node_moves_about_one_nth_all_to_the_new_node() {
    let reqs = requests(20_000);
    for n in [3usize, 10, 50] {
        let before = owners(&ElectionView::new(cluster(n)), &reqs);
        let after = owners(&ElectionView::new(cluster(n + 1)), &reqs);
        let new_name = format!("node-{n}");
        let mut moved = 0usize;
        for (b, a) in before.iter().zip(&after) {
            if a != b {
                moved += 1;
                assert_eq!(
                    a.as_deref(),
                    Some(new_name.as_str()),
                    "an IP moved to an old node"
                );
            }
        }
        let expected = reqs.len() as f64 / (n + 1) as f64;
        eprintln!(
            "n={n}: added one node, {moved} of {} IPs moved (expected {expected:.0})",
            reqs.len()
        );
        assert!((moved as f64) > expected * 0.5 && (moved as f64) < expected * 2.0);
    }
}

/// The load is spread evenly: with 10 nodes no node owns more than twice
/// its share of 20 000 IPs or less than half.
#[test]
fn ownership_is_balanced() {
    let reqs = requests(20_000);
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for o in owners(&ElectionView::new(cluster(10)), &reqs)
        .into_iter()
        .flatten()
    {
        *count.entry(o).or_default() += 1;
    }
    assert_eq!(count.len(), 10);
    for (node, c) in count {
        assert!((1000..4000).contains(&c), "{node} owns {c} of 20000");
    }
}

// ---- incremental re-election equals a full one ----

/// A varied node: some dead, some with a dead NIC, some in another subnet,
/// some in another zone.
fn varied_node(i: usize, bits: u8) -> Candidate {
    let mut c = node(&format!("v{i:02}"));
    c.live = bits & 1 == 0;
    c.interfaces[0].up = bits & 2 == 0;
    if bits & 4 != 0 {
        c.interfaces[0].subnets = vec![net("198.51.100.0/24")];
    }
    if bits & 8 != 0 {
        c.labels.insert("zone".into(), "b".into());
    }
    c
}

fn varied_requests(count: u8, local_mask: u32) -> Vec<ElectionRequest> {
    let zone_a = vec![NodeSelector {
        match_labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        match_expressions: vec![],
    }];
    (0..count)
        .map(|i| {
            let mut r = if i % 3 == 0 {
                bgp(&format!("192.0.2.{i}"))
            } else {
                l2(&format!("192.0.2.{i}"))
            };
            if i % 4 == 1 {
                terms(&mut r).node_selectors = zone_a.clone();
            }
            if i % 5 == 2 {
                terms(&mut r).local_endpoints = Some(
                    (0..32)
                        .filter(|b| local_mask & (1 << b) != 0)
                        .map(|b| format!("v{b:02}"))
                        .collect(),
                );
            }
            r
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reelection_after_one_change_equals_a_full_election(
        bits in prop::collection::vec(0u8..16, 2..24),
        victim in any::<prop::sample::Index>(),
        change in 0u8..6,
        local_mask in any::<u32>(),
    ) {
        let before: Vec<Candidate> = bits.iter().enumerate().map(|(i, b)| varied_node(i, *b)).collect();
        let reqs = varied_requests(60, local_mask);
        let v = victim.index(before.len());
        let name = before[v].node.clone();
        let mut after = before.clone();
        match change {
            0 => { after.remove(v); }
            1 => after[v].live = !after[v].live,
            2 => after[v].interfaces[0].up = !after[v].interfaces[0].up,
            3 => after[v].interfaces[0].subnets = vec![net("192.0.2.0/25")],
            4 => after[v].ready = false,
            _ => after.push(node("zz-new")),
        }
        let changed = if change == 5 { "zz-new".to_string() } else { name };
        let prev = ElectionView::new(before).elect_many(&reqs);
        let view = ElectionView::new(after);
        prop_assert_eq!(view.reelect_after_change(&reqs, &prev, &changed), view.elect_many(&reqs));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The first successor of an IP is the node that owns it once the owner is dead (so
    /// the owner heartbeats to the node that would take over), and no successor is
    /// excluded or the owner itself.
    #[test]
    fn the_first_successor_owns_the_ip_when_the_owner_dies(
        bits in prop::collection::vec(0u8..16, 2..24),
        local_mask in any::<u32>(),
    ) {
        let nodes: Vec<Candidate> = bits.iter().enumerate().map(|(i, b)| varied_node(i, *b)).collect();
        let reqs = varied_requests(60, local_mask);
        let view = ElectionView::new(nodes.clone());
        for r in view.elect_many(&reqs) {
            let succ = view.successors(&r, 2);
            let Some(owner) = r.owner().filter(|_| r.mode == ModeKind::L2) else {
                prop_assert!(r.mode == ModeKind::Bgp || succ.is_empty());
                continue;
            };
            prop_assert!(succ.len() <= 2);
            prop_assert!(succ.iter().all(|s| s != owner && r.exclusion_of(s).is_none()));
            let mut dead = nodes.clone();
            for c in dead.iter_mut().filter(|c| *c.node == **owner) {
                c.live = false;
            }
            let again = ElectionView::new(dead).elect_many(&reqs);
            let next = again.iter().find(|x| x.ip == r.ip && x.mode == r.mode).and_then(|x| x.owner().cloned());
            prop_assert_eq!(succ.first().cloned(), next);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `explain`'s ranking agrees with the election: every node appears once; the owner is
    /// the first node without a reason; each node ranked above the owner carries the reason
    /// the election gave it; the eligible nodes after the owner are the successors, in
    /// order.
    #[test]
    fn the_ranking_explains_the_owner_and_lists_the_successors(
        bits in prop::collection::vec(0u8..16, 1..24),
        local_mask in any::<u32>(),
    ) {
        let nodes: Vec<Candidate> = bits.iter().enumerate().map(|(i, b)| varied_node(i, *b)).collect();
        let names: Vec<String> = nodes.iter().map(|c| c.node.clone()).collect();
        let view = ElectionView::new(nodes);
        for r in view.elect_many(&varied_requests(40, local_mask)) {
            if r.mode != ModeKind::L2 {
                continue;
            }
            let ranked = ranking(&r, names.iter().map(String::as_str));
            prop_assert_eq!(ranked.len(), names.len());
            for (n, why) in &ranked {
                prop_assert_eq!(*why, r.exclusion_of(n));
            }
            let first_eligible = ranked.iter().find(|(_, why)| why.is_none()).map(|(n, _)| *n);
            prop_assert_eq!(first_eligible, r.owner().map(|o| &**o));
            let after_owner: Vec<&str> = ranked
                .iter()
                .filter(|(n, why)| why.is_none() && Some(*n) != first_eligible)
                .map(|(n, _)| *n)
                .collect();
            let successors = view.successors(&r, names.len());
            let successors: Vec<&str> = successors.iter().map(|n| &**n).collect();
            prop_assert_eq!(after_owner, successors);
        }
    }
}

/// One function per rule, in reporting order: a node failing several rules reports the
/// first.
#[test]
fn the_first_failing_rule_names_the_reason() {
    let mut c = node("n");
    c.live = false;
    c.interfaces[0].up = false;
    assert_eq!(
        class_status(&c, &[], None, &Mode::L2 { interfaces: None }),
        Some(ExclusionReason::NotLive)
    );
    c.ready = false;
    assert_eq!(
        class_status(&c, &[], None, &Mode::L2 { interfaces: None }),
        Some(ExclusionReason::NodeNotReady)
    );
    assert_eq!(not_in_pool(&node("n"), Some("pool-1")), None);
    assert_eq!(
        not_in_pool(&node("n"), Some("pool-2")),
        Some(ExclusionReason::NotInPool)
    );
    assert_eq!(not_in_pool(&node("n"), None), None);
    let mut r = l2("198.51.100.1");
    assert_eq!(
        ip_status(&node("n"), &r),
        Some(ExclusionReason::SubnetNotLocal)
    );
    terms(&mut r).local_endpoints = Some(BTreeSet::new());
    assert_eq!(
        ip_status(&node("n"), &r),
        Some(ExclusionReason::NoLocalEndpoints)
    );
}
