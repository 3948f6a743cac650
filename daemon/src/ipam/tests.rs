//! Allocation: examples for each rule, then properties over random clusters.

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::api::annotations::{ADDRESS_POOL, ALLOW_SHARED_IP, LOAD_BALANCER_IPS};
use crate::fixtures::{annotate, families, namespace, pool, service};
use crate::snapshot::{Object, Selection, Store};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

const NS: &str = "edgelb-system";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name)
}

fn snap(objects: Vec<Object>) -> Snapshot {
    let mut store = Store::default();
    for o in objects {
        store.apply(o, NS);
    }
    store.snapshot(&Selection::default())
}

fn ok_ips(a: &Assignments, name: &str) -> Vec<IpAddr> {
    match a.get(&key(name)) {
        Some(Ok(alloc)) => alloc.ips.clone(),
        other => panic!("{name}: expected IPs, got {other:?}"),
    }
}

fn err_text(a: &Assignments, name: &str) -> String {
    match a.get(&key(name)) {
        Some(Err(e)) => e.to_string(),
        other => panic!("{name}: expected an error, got {other:?}"),
    }
}

fn svc(name: &str) -> Object {
    Object::Service(service("default", name, 80))
}

fn p(name: &str, addrs: &[&str]) -> Object {
    Object::IPAddressPool(pool(NS, name, addrs))
}

#[test]
fn first_free_addresses_in_key_order() {
    let s = snap(vec![p("a", &["192.0.2.0/30"]), svc("x"), svc("y")]);
    let a = allocate(&s, &Assignments::default());
    assert_eq!(ok_ips(&a, "x"), vec![ip("192.0.2.0")]);
    assert_eq!(ok_ips(&a, "y"), vec![ip("192.0.2.1")]);
}

#[test]
fn an_ip_in_use_is_kept_when_a_service_sorting_before_it_appears() {
    let s1 = snap(vec![p("a", &["192.0.2.0/30"]), svc("m")]);
    let a1 = allocate(&s1, &Assignments::default());
    assert_eq!(ok_ips(&a1, "m"), vec![ip("192.0.2.0")]);
    let s2 = snap(vec![p("a", &["192.0.2.0/30"]), svc("a"), svc("m")]);
    let a2 = allocate(&s2, &a1);
    assert_eq!(ok_ips(&a2, "m"), vec![ip("192.0.2.0")], "sticky");
    assert_eq!(ok_ips(&a2, "a"), vec![ip("192.0.2.1")]);
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut pl = pool(NS, "a", &["192.0.2.255-192.0.3.1"]);
    pl.spec.avoid_buggy_ips = true;
    let s = snap(vec![Object::IPAddressPool(pl), svc("x"), svc("y")]);
    let a = allocate(&s, &Assignments::default());
    assert_eq!(ok_ips(&a, "x"), vec![ip("192.0.3.1")]);
    assert_eq!(err_text(&a, "y"), r#"no free address in IPAddressPool "a""#);
}

#[test]
fn exhausted_pool_fails_only_that_service() {
    let s = snap(vec![p("a", &["192.0.2.7/32"]), svc("x"), svc("y")]);
    let a = allocate(&s, &Assignments::default());
    assert_eq!(ok_ips(&a, "x"), vec![ip("192.0.2.7")]);
    assert_eq!(err_text(&a, "y"), r#"no free address in IPAddressPool "a""#);
}

#[test]
fn requested_ip_is_honoured_even_from_a_manual_pool() {
    let mut manual = pool(NS, "manual", &["198.51.100.0/29"]);
    manual.spec.auto_assign = false;
    let s = snap(vec![
        p("a", &["192.0.2.0/30"]),
        Object::IPAddressPool(manual),
        Object::Service(annotate(
            service("default", "x", 80),
            LOAD_BALANCER_IPS,
            "198.51.100.5",
        )),
        svc("y"),
    ]);
    let a = allocate(&s, &Assignments::default());
    assert_eq!(ok_ips(&a, "x"), vec![ip("198.51.100.5")]);
    assert_eq!(
        a.get(&key("x"))
            .and_then(|o| o.as_ref().ok())
            .map(|a| &*a.pool),
        Some("manual")
    );
    assert_eq!(
        ok_ips(&a, "y"),
        vec![ip("192.0.2.0")],
        "manual pool is not auto-assigned"
    );
}

#[test]
fn spec_load_balancer_ip_is_honoured() {
    let mut s = service("default", "x", 80);
    if let Some(spec) = s.spec.as_mut() {
        spec.load_balancer_ip = Some("192.0.2.2".into());
    }
    let a = allocate(
        &snap(vec![p("a", &["192.0.2.0/30"]), Object::Service(s)]),
        &Assignments::default(),
    );
    assert_eq!(ok_ips(&a, "x"), vec![ip("192.0.2.2")]);
}

#[test]
fn requested_ip_taken_outside_pools_or_wrong_family_is_refused_with_a_reason() {
    let s = snap(vec![
        p("a", &["192.0.2.0/30", "2001:db8::/126"]),
        svc("a-first"),
        Object::Service(annotate(
            service("default", "taken", 80),
            LOAD_BALANCER_IPS,
            "192.0.2.0",
        )),
        Object::Service(annotate(
            service("default", "outside", 80),
            LOAD_BALANCER_IPS,
            "203.0.113.9",
        )),
        Object::Service(annotate(
            service("default", "family", 80),
            LOAD_BALANCER_IPS,
            "2001:db8::1",
        )),
        Object::Service(families(
            annotate(
                service("default", "family6", 80),
                LOAD_BALANCER_IPS,
                "192.0.2.3",
            ),
            &["IPv6"],
            "SingleStack",
        )),
        Object::Service(annotate(
            service("default", "garbage", 80),
            LOAD_BALANCER_IPS,
            "192.0.2.x",
        )),
    ]);
    let a = allocate(&s, &Assignments::default());
    assert_eq!(ok_ips(&a, "a-first"), vec![ip("192.0.2.0")]);
    assert_eq!(
        err_text(&a, "taken"),
        "requested IP 192.0.2.0 is already used by default/a-first: the IP is not shared (edgelb.io/allow-shared-ip unset on one of them)"
    );
    assert_eq!(
        err_text(&a, "outside"),
        "requested IP 203.0.113.9 is not in any IPAddressPool"
    );
    // No ipFamilies: the family follows the requested IP, so a v6 request alone is fine.
    assert_eq!(ok_ips(&a, "family"), vec![ip("2001:db8::1")]);
    assert_eq!(
        err_text(&a, "family6"),
        "requested IP 192.0.2.3 is IPv4, but the Service's ipFamilies/ipFamilyPolicy allow only IPv6"
    );
    assert_eq!(
        err_text(&a, "garbage"),
        r#"annotation edgelb.io/loadBalancerIPs: "192.0.2.x" is not a comma-separated list of IP addresses"#
    );
}

#[test]
fn address_pool_annotation_selects_the_pool() {
    let s = snap(vec![
        p("a", &["192.0.2.0/30"]),
        p("b", &["198.51.100.0/30"]),
        Object::Service(annotate(service("default", "x", 80), ADDRESS_POOL, "b")),
        Object::Service(annotate(service("default", "y", 80), ADDRESS_POOL, "nope")),
        Object::Service(annotate(
            annotate(service("default", "z", 80), ADDRESS_POOL, "b"),
            LOAD_BALANCER_IPS,
            "192.0.2.1",
        )),
    ]);
    let a = allocate(&s, &Assignments::default());
    assert_eq!(ok_ips(&a, "x"), vec![ip("198.51.100.0")]);
    assert_eq!(
        err_text(&a, "y"),
        r#"IPAddressPool "nope" does not exist or is invalid"#
    );
    assert_eq!(
        err_text(&a, "z"),
        r#"requested IP 192.0.2.1 is not in the requested IPAddressPool "b""#
    );
}

#[test]
fn invalid_pool_is_not_used_and_others_keep_working() {
    let s = snap(vec![
        p("bad", &["10.0.0.300/24"]),
        p("good", &["192.0.2.0/30"]),
        svc("x"),
    ]);
    assert!(!s.pools[&ObjectKey::new(NS, "bad")].is_valid());
    let a = allocate(&s, &Assignments::default());
    assert_eq!(ok_ips(&a, "x"), vec![ip("192.0.2.0")]);
}

#[test]
fn service_allocation_priority_and_selectors_decide_the_pool() {
    let mut hi = pool(NS, "z-high", &["198.51.100.0/30"]);
    hi.spec.service_allocation = Some(crate::api::ServiceAllocation {
        priority: Some(1),
        namespace_selectors: vec![LabelSelector {
            match_labels: Some([("tier".to_string(), "gold".to_string())].into()),
            match_expressions: None,
        }],
        ..Default::default()
    });
    let s = snap(vec![
        p("a-low", &["192.0.2.0/30"]),
        Object::IPAddressPool(hi),
        Object::Namespace(namespace("gold", &[("tier", "gold")])),
        Object::Service(service("gold", "g", 80)),
        svc("plain"),
        Object::Service(annotate(
            service("default", "forced", 80),
            ADDRESS_POOL,
            "z-high",
        )),
    ]);
    let a = allocate(&s, &Assignments::default());
    assert_eq!(a.ips(&ObjectKey::new("gold", "g")), &[ip("198.51.100.0")]);
    assert_eq!(ok_ips(&a, "plain"), vec![ip("192.0.2.0")]);
    assert_eq!(
        err_text(&a, "forced"),
        r#"IPAddressPool "z-high" does not serve this Service (spec.serviceAllocation)"#
    );
}

#[test]
fn dual_stack_policies() {
    let s = snap(vec![
        p("v4", &["192.0.2.0/30"]),
        p("w-dual", &["198.51.100.0/30", "2001:db8::/126"]),
        Object::Service(families(
            service("default", "req", 80),
            &["IPv6", "IPv4"],
            "RequireDualStack",
        )),
        Object::Service(families(
            service("default", "pref", 80),
            &["IPv4"],
            "PreferDualStack",
        )),
        Object::Service(families(
            service("default", "six", 80),
            &["IPv6"],
            "SingleStack",
        )),
    ]);
    let a = allocate(&s, &Assignments::default());
    assert_eq!(
        ok_ips(&a, "req"),
        vec![ip("2001:db8::"), ip("198.51.100.0")],
        "family order kept"
    );
    // PreferDualStack takes the first pool that has the first family; v4 has no IPv6.
    assert_eq!(ok_ips(&a, "pref"), vec![ip("192.0.2.0")]);
    assert_eq!(ok_ips(&a, "six"), vec![ip("2001:db8::1")]);
    let only_v4 = snap(vec![
        p("v4", &["192.0.2.0/30"]),
        Object::Service(families(
            service("default", "req", 80),
            &["IPv4", "IPv6"],
            "RequireDualStack",
        )),
    ]);
    let a = allocate(&only_v4, &Assignments::default());
    assert_eq!(
        err_text(&a, "req"),
        "no eligible IPAddressPool has IPv4 and IPv6 addresses"
    );
}

#[test]
fn sharing_needs_same_key_and_distinct_ports() {
    let shared = |name: &str, port: i32, k: &str| {
        Object::Service(annotate(
            annotate(service("default", name, port), ALLOW_SHARED_IP, k),
            LOAD_BALANCER_IPS,
            "192.0.2.1",
        ))
    };
    let s = snap(vec![
        p("a", &["192.0.2.0/30"]),
        shared("a-http", 80, "k"),
        shared("b-https", 443, "k"),
        shared("c-clash", 443, "k"),
        shared("d-other", 8080, "other"),
        Object::Service(annotate(
            service("default", "e-auto", 8443),
            ALLOW_SHARED_IP,
            "k",
        )),
    ]);
    let a = allocate(&s, &Assignments::default());
    assert_eq!(ok_ips(&a, "a-http"), vec![ip("192.0.2.1")]);
    assert_eq!(ok_ips(&a, "b-https"), vec![ip("192.0.2.1")]);
    assert_eq!(
        err_text(&a, "c-clash"),
        "requested IP 192.0.2.1 is already used by default/a-http: port TCP/443 is already exposed on it"
    );
    assert_eq!(
        err_text(&a, "d-other"),
        r#"requested IP 192.0.2.1 is already used by default/a-http: sharing key "other" differs from "k""#
    );
    assert_eq!(
        ok_ips(&a, "e-auto"),
        vec![ip("192.0.2.1")],
        "auto allocation joins the key's IP"
    );
}

#[test]
fn sharing_with_local_traffic_policy_needs_the_same_selector() {
    let local = |name: &str, port: i32, app: &str| {
        let mut s = annotate(
            annotate(service("default", name, port), ALLOW_SHARED_IP, "k"),
            LOAD_BALANCER_IPS,
            "192.0.2.1",
        );
        if let Some(spec) = s.spec.as_mut() {
            spec.external_traffic_policy = Some("Local".into());
            spec.selector = Some([("app".to_string(), app.to_string())].into());
        }
        Object::Service(s)
    };
    let a = allocate(
        &snap(vec![
            p("a", &["192.0.2.0/30"]),
            local("a", 80, "web"),
            local("b", 81, "db"),
        ]),
        &Assignments::default(),
    );
    assert_eq!(
        err_text(&a, "b"),
        "requested IP 192.0.2.1 is already used by default/a: externalTrafficPolicy is Local and the pod selectors differ"
    );
}

#[test]
fn ip_removed_from_its_pool_is_reported_not_moved_and_comes_back_with_the_range() {
    let a1 = allocate(
        &snap(vec![p("a", &["192.0.2.0/31"]), svc("x"), svc("y")]),
        &Assignments::default(),
    );
    assert_eq!(ok_ips(&a1, "y"), vec![ip("192.0.2.1")]);
    let shrunk = snap(vec![
        p("a", &["192.0.2.0/32", "198.51.100.0/30"]),
        svc("x"),
        svc("y"),
    ]);
    let a2 = allocate(&shrunk, &a1);
    assert_eq!(ok_ips(&a2, "x"), vec![ip("192.0.2.0")]);
    assert_eq!(
        err_text(&a2, "y"),
        "IP 192.0.2.1 was removed from its IPAddressPool while in use; restore it or request another IP"
    );
    let a3 = allocate(&shrunk, &a2);
    assert_eq!(
        a3.get(&key("y")),
        a2.get(&key("y")),
        "calm: the same answer again"
    );
    let restored = snap(vec![p("a", &["192.0.2.0/31"]), svc("x"), svc("y")]);
    assert_eq!(
        ok_ips(&allocate(&restored, &a3), "y"),
        vec![ip("192.0.2.1")]
    );
}

#[test]
fn status_seeds_stickiness_after_a_restart() {
    let mut s = service("default", "x", 80);
    s.status = Some(k8s_openapi::api::core::v1::ServiceStatus {
        load_balancer: Some(k8s_openapi::api::core::v1::LoadBalancerStatus {
            ingress: Some(vec![k8s_openapi::api::core::v1::LoadBalancerIngress {
                ip: Some("192.0.2.3".into()),
                ..Default::default()
            }]),
        }),
        conditions: None,
    });
    let snapshot = snap(vec![
        p("a", &["192.0.2.0/30"]),
        svc("a"),
        Object::Service(s),
    ]);
    let a = allocate(&snapshot, &Assignments::from_status(&snapshot));
    assert_eq!(ok_ips(&a, "x"), vec![ip("192.0.2.3")]);
    assert_eq!(ok_ips(&a, "a"), vec![ip("192.0.2.0")]);
}

// ---- properties ----

#[derive(Clone, Debug)]
struct Svc {
    name: u8,
    port: i32,
    share: Option<u8>,
    request: Option<u8>,
    family: u8,
}

fn svc_strategy() -> impl Strategy<Value = Svc> {
    (
        0u8..40,
        1i32..4,
        proptest::option::weighted(0.2, 0u8..3),
        proptest::option::weighted(0.2, 0u8..24),
        0u8..4,
    )
        .prop_map(|(name, port, share, request, family)| Svc {
            name,
            port,
            share,
            request,
            family,
        })
}

fn build(svcs: &[Svc], pools: &[Object]) -> Snapshot {
    let mut objects: Vec<Object> = pools.to_vec();
    for s in svcs {
        let o = generated_service("default", s.name, s.port, s.share, s.request, s.family);
        objects.push(Object::Service(o));
    }
    snap(objects)
}

/// A Service as the property tests generate it (here and in `incremental`'s): named
/// `s<name>`, sharing key `k<share>`, a requested IP in the family's documentation range,
/// and its families (0 default, 1 IPv6, 2 required dual stack, 3 preferred dual stack).
pub(super) fn generated_service(
    ns: &str,
    name: u8,
    port: i32,
    share: Option<u8>,
    request: Option<u8>,
    family: u8,
) -> k8s_openapi::api::core::v1::Service {
    let mut o = service(ns, &format!("s{name}"), port);
    if let Some(k) = share {
        o = annotate(o, ALLOW_SHARED_IP, &format!("k{k}"));
    }
    if let Some(r) = request {
        let req = if family == 1 {
            format!("2001:db8::{r:x}")
        } else {
            format!("192.0.2.{r}")
        };
        o = annotate(o, LOAD_BALANCER_IPS, &req);
    }
    match family {
        1 => families(o, &["IPv6"], "SingleStack"),
        2 => families(o, &["IPv4", "IPv6"], "RequireDualStack"),
        3 => families(o, &["IPv6", "IPv4"], "PreferDualStack"),
        _ => o,
    }
}

/// One spec per name (the last wins, as it would in the snapshot), so that "unrelated
/// change" really leaves a kept Service's spec alone.
fn unique(svcs: Vec<Svc>) -> Vec<Svc> {
    let by_name: BTreeMap<u8, Svc> = svcs.into_iter().map(|s| (s.name, s)).collect();
    by_name.into_values().collect()
}

fn default_pools() -> Vec<Object> {
    vec![
        p("a", &["192.0.2.0/28", "2001:db8::/124"]),
        p("b", &["192.0.2.16/29"]),
    ]
}

/// Checks the invariants of one outcome set against its snapshot.
fn check_invariants(s: &Snapshot, a: &Assignments) -> Result<(), TestCaseError> {
    let mut holders: HashMap<IpAddr, Vec<ObjectKey>> = HashMap::new();
    for (k, o) in &a.outcomes {
        prop_assert!(
            s.services.contains_key(&k.service),
            "outcome for a Service not in the snapshot"
        );
        let Ok(alloc) = o else { continue };
        let svc = &s.services[&k.service];
        let req = request_of(svc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let pool = s.allocation_pools.iter().find(|p| p.name == alloc.pool);
        prop_assert!(pool.is_some(), "pool {} not valid", alloc.pool);
        for ip in &alloc.ips {
            prop_assert!(
                pool.is_some_and(|p| p.contains(ip)),
                "{ip} outside pool {}",
                alloc.pool
            );
            prop_assert!(
                req.wanted().contains(&Family::of(ip)),
                "{ip} of a family {k:?} did not ask for"
            );
            holders.entry(*ip).or_default().push(k.service.clone());
        }
        for f in req.required() {
            prop_assert!(
                alloc.ips.iter().any(|ip| Family::of(ip) == *f),
                "{k:?} misses {f:?}"
            );
        }
        if !req.requested.is_empty() {
            for r in &req.requested {
                prop_assert!(
                    alloc.ips.contains(r),
                    "requested {r} not honoured for {k:?}"
                );
            }
        }
    }
    for (ip, users) in holders {
        if users.len() > 1 {
            let keys: Vec<Option<String>> = users
                .iter()
                .map(|u| {
                    s.services[u]
                        .annotation(ALLOW_SHARED_IP)
                        .map(str::to_string)
                })
                .collect();
            prop_assert!(
                keys[0].is_some() && keys.iter().all(|k| k == &keys[0]),
                "{ip} given twice: {users:?}"
            );
            let ports: Vec<i32> = users
                .iter()
                .map(|u| {
                    request_of(&s.services[u])
                        .map(|r| r.sharing.map(|s| s.ports[0].1))
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                })
                .collect();
            let mut dedup = ports.clone();
            dedup.sort();
            dedup.dedup();
            prop_assert_eq!(
                dedup.len(),
                ports.len(),
                "{} shared with clashing ports",
                ip
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn prop_no_ip_twice_inside_pool_and_family_requests_honoured_or_refused(svcs in proptest::collection::vec(svc_strategy(), 0..30)) {
        let s = build(&svcs, &default_pools());
        let a = allocate(&s, &Assignments::default());
        prop_assert_eq!(a.outcomes.len(), s.services.len(), "every Service has an outcome");
        check_invariants(&s, &a)?;
        prop_assert_eq!(allocate(&s, &Assignments::default()), a, "deterministic");
    }

    #[test]
    fn prop_sticky_across_unrelated_changes(
        svcs in proptest::collection::vec(svc_strategy(), 0..25),
        extra in proptest::collection::vec(svc_strategy(), 0..10),
        drop in proptest::collection::vec(any::<bool>(), 25),
    ) {
        let svcs = unique(svcs);
        let s1 = build(&svcs, &default_pools());
        let a1 = allocate(&s1, &Assignments::default());
        // Remove some Services, add others (new names only), add a pool.
        let kept: Vec<Svc> = svcs.iter().zip(drop.iter()).filter(|(_, d)| !**d).map(|(s, _)| s.clone()).collect();
        let mut next = kept.clone();
        next.extend(extra.into_iter().map(|mut e| { e.name += 100; e }));
        let mut pools = default_pools();
        pools.push(p("c", &["198.51.100.0/29"]));
        let s2 = build(&next, &pools);
        let a2 = allocate(&s2, &a1);
        check_invariants(&s2, &a2)?;
        for s in &kept {
            let k = ObjectKey::new("default", &format!("s{}", s.name));
            if let (Some(Ok(before)), Some(after)) = (a1.get(&k), a2.get(&k)) {
                prop_assert_eq!(Ok(before), after.as_ref(), "{:?} moved", k);
            }
        }
    }

    #[test]
    fn prop_removed_service_frees_its_ip(svcs in proptest::collection::vec(svc_strategy(), 1..20), victim in any::<prop::sample::Index>()) {
        let svcs = unique(svcs);
        let pools = vec![p("a", &["192.0.2.0/28", "2001:db8::/124"])];
        let s1 = build(&svcs, &pools);
        let a1 = allocate(&s1, &Assignments::default());
        let v = victim.get(&svcs).clone();
        let vk = ObjectKey::new("default", &format!("s{}", v.name));
        let rest: Vec<Svc> = svcs.iter().filter(|s| s.name != v.name).cloned().collect();
        let s2 = build(&rest, &pools);
        let a2 = allocate(&s2, &a1);
        prop_assert!(a2.get(&vk).is_none());
        let freed: Vec<IpAddr> = a1.ips(&vk).iter().copied()
            .filter(|ip| a2.outcomes.values().all(|o| o.as_ref().map_or(true, |a| !a.ips.contains(ip))))
            .collect();
        // A Service asking for exactly the freed IP gets it.
        for ip in freed {
            let mut objects = pools.clone();
            let mut s3 = rest.iter().map(|s| Object::Service(generated_service("default", s.name, s.port, s.share, s.request, s.family))).collect::<Vec<_>>();
            objects.append(&mut s3);
            let fam = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
            objects.push(Object::Service(families(annotate(service("default", "zz-new", 9), LOAD_BALANCER_IPS, &ip.to_string()), &[fam], "SingleStack")));
            let s3 = snap(objects);
            let a3 = allocate(&s3, &a2);
            prop_assert_eq!(a3.ips(&key("zz-new")), &[ip][..]);
        }
    }
}
