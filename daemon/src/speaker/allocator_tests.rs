use super::*;
use crate::fixtures;
use crate::ipam::allocate;
use crate::snapshot::{Object, Selection, Store};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};

const NS: &str = "edgelb-system";

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name)
}

fn with_status(mut svc: Service, ips: &[IpAddr]) -> Service {
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(
                ips.iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: Some(ip.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }),
        ..Default::default()
    });
    svc
}

fn store() -> Store {
    let mut s = Store::default();
    s.apply(
        Object::IPAddressPool(fixtures::pool(NS, "lan", &["198.51.100.10-198.51.100.19"])),
        NS,
    );
    s
}

/// The leader saw `a` and `b` arrive together; this follower saw `b` first, so its own
/// result differs. Once the leader's status reaches the follower, the follower holds the
/// leader's IPs; a plain `step` (what a leader does) would keep its own.
#[test]
fn a_follower_takes_the_leaders_ips_once_they_are_in_the_status() {
    let mut leader_store = store();
    leader_store.apply(Object::Service(fixtures::service("default", "a", 80)), NS);
    leader_store.apply(Object::Service(fixtures::service("default", "b", 81)), NS);
    let leader = allocate(
        &leader_store.snapshot(&Selection::default()),
        &Assignments::default(),
    );

    let mut follower_store = store();
    let mut following = Allocator::default();
    let mut own_way = Allocator::default();
    follower_store.apply(Object::Service(fixtures::service("default", "b", 81)), NS);
    let snap = follower_store.snapshot(&Selection::default());
    following.step_following(&snap);
    own_way.step(&snap);
    follower_store.apply(Object::Service(fixtures::service("default", "a", 80)), NS);
    let snap = follower_store.snapshot(&Selection::default());
    let (before, _) = following.step_following(&snap);
    own_way.step(&snap);
    assert_ne!(
        before.ips(&key("b")),
        leader.ips(&key("b")),
        "the arrival order must matter for this test to mean anything"
    );

    // The leader writes its result; the watch brings it to the follower.
    for name in ["a", "b"] {
        let port = if name == "a" { 80 } else { 81 };
        let svc = with_status(
            fixtures::service("default", name, port),
            leader.ips(&key(name)),
        );
        follower_store.apply(Object::Service(svc), NS);
    }
    let snap = follower_store.snapshot(&Selection::default());
    let (after, changes) = following.step_following(&snap);
    for name in ["a", "b"] {
        assert_eq!(after.ips(&key(name)), leader.ips(&key(name)), "{name}");
    }
    assert!(!changes.is_empty(), "the move is reported");
    let (kept, _) = own_way.step(&snap);
    assert_eq!(kept.ips(&key("b")), before.ips(&key("b")));

    // Settled: the next snapshot with nothing new changes nothing.
    follower_store.apply(Object::Service(fixtures::service("default", "c", 82)), NS);
    let snap = follower_store.snapshot(&Selection::default());
    let (next, _) = following.step_following(&snap);
    for name in ["a", "b"] {
        assert_eq!(next.ips(&key(name)), leader.ips(&key(name)), "{name}");
    }
}

#[test]
fn only_changed_services_with_a_differing_status_disagree() {
    let mut s = store();
    let ip = |t: &str| -> IpAddr { t.parse().expect("ip") };
    s.apply(Object::Service(fixtures::service("default", "a", 80)), NS);
    s.apply(
        Object::Service(with_status(
            fixtures::service("default", "b", 81),
            &[ip("198.51.100.15")],
        )),
        NS,
    );
    let snap = s.snapshot(&Selection::default());
    let mine = allocate(&snap, &Assignments::default());
    let all: BTreeSet<ObjectKey> = [key("a"), key("b")].into();

    // `a` has no status: nothing to follow. `b`'s status names .15, which it does not hold.
    let d = status_disagreements(&mine, &snap, &all);
    assert_eq!(
        d,
        vec![(AllocationKey::cluster(key("b")), vec![ip("198.51.100.15")])]
    );
    // Not among the changed keys: not looked at.
    assert!(status_disagreements(&mine, &snap, &[key("a")].into()).is_empty());
    // A status equal to the own result (order aside) is agreement.
    let held = mine.ips(&key("b")).to_vec();
    s.apply(
        Object::Service(with_status(fixtures::service("default", "b", 81), &held)),
        NS,
    );
    let snap = s.snapshot(&Selection::default());
    assert!(status_disagreements(&mine, &snap, &all).is_empty());
}

/// A Service in two node pools has one allocation per pool and one status (the union):
/// each pool's IP counts as recorded once the status lists it, so cluster-mode speakers
/// announce it (the two-region lab, daemon/tests/kube_regions.rs, announced nothing while
/// this compared a pool's IPs with the whole union).
#[test]
fn a_node_pools_allocation_is_recorded_when_the_union_lists_its_ips() {
    let a: IpAddr = "198.51.100.10".parse().unwrap();
    let b: IpAddr = "203.0.113.10".parse().unwrap();
    let c: IpAddr = "198.51.100.11".parse().unwrap();
    let mut s = store();
    let svc = with_status(fixtures::service("default", "cube", 80), &[a, b]);
    s.apply(Object::Service(svc), NS);
    let snap = s.snapshot(&Selection::default());
    let pool_key = |p: &str| AllocationKey {
        service: key("cube"),
        node_pool: Some(p.into()),
    };
    let alloc = |ips: Vec<IpAddr>| -> Outcome {
        Ok(Allocation {
            pool: "lan".into(),
            ips,
        })
    };
    assert!(is_recorded(&snap, &pool_key("np-a"), &alloc(vec![a])));
    assert!(is_recorded(&snap, &pool_key("np-b"), &alloc(vec![b])));
    assert!(!is_recorded(&snap, &pool_key("np-a"), &alloc(vec![c])));
    assert!(!is_recorded(&snap, &pool_key("np-a"), &alloc(vec![])));
    // The cluster-wide key still needs the exact set.
    assert!(!is_recorded(
        &snap,
        &AllocationKey::cluster(key("cube")),
        &alloc(vec![a])
    ));
    assert!(is_recorded(
        &snap,
        &AllocationKey::cluster(key("cube")),
        &alloc(vec![a, b])
    ));
}

/// What `recorded_only` was before it shared nodes with its input: the recorded outcomes
/// collected into a new map (the oracle).
fn recorded_collected(snap: &Snapshot, a: &Assignments) -> Assignments {
    Assignments {
        outcomes: a
            .outcomes
            .iter()
            .filter(|(k, o)| is_recorded(snap, k, o))
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect(),
    }
}

proptest::proptest! {
    /// Up to 10 Services, each with no status, the IPs it was given, or another IP in its
    /// status: `recorded_only` keeps exactly the recorded outcomes (as the oracle), and
    /// when every outcome is recorded it is the input itself (every node shared).
    #[test]
    fn recorded_only_keeps_exactly_the_recorded_outcomes(
        statuses in proptest::collection::vec(0u8..3, 0..10),
    ) {
        let mut s = store();
        for (i, _) in statuses.iter().enumerate() {
            s.apply(Object::Service(fixtures::service("default", &format!("s{i}"), 80)), NS);
        }
        let given = allocate(&s.snapshot(&Selection::default()), &Assignments::default());
        for (i, status) in statuses.iter().enumerate() {
            let name = format!("s{i}");
            let svc = fixtures::service("default", &name, 80);
            let svc = match status {
                0 => svc,
                1 => with_status(svc, given.ips(&key(&name))),
                _ => with_status(svc, &["198.51.100.99".parse().expect("ip")]),
            };
            s.apply(Object::Service(svc), NS);
        }
        let snap = s.snapshot(&Selection::default());
        let shown = recorded_only(&snap, &given);
        proptest::prop_assert_eq!(&shown, &recorded_collected(&snap, &given));
        if statuses.iter().all(|&st| st == 1) {
            proptest::prop_assert!(shown.outcomes.ptr_eq(&given.outcomes));
        }
    }
}

/// One step of the cluster: what the API server and the allocator of record do.
#[derive(Clone, Debug)]
enum ClusterOp {
    /// Add or edit Service i: port, sharing key.
    Service(u8, u8, bool),
    Delete(u8),
    /// The allocator of record's result for Service i reaches the record (a status write
    /// landed; none or a failure clears the status).
    Land(u8),
    /// The pool's range (IPs leave or join it).
    Pool(bool),
    /// A new term of the allocator of record: it starts again from the record.
    Term,
    /// Every result of the allocator of record reaches the record.
    Settle,
    /// The leader's fence closes (it follows again, from the record) or opens.
    Fence(bool),
}

fn cluster_op() -> impl proptest::strategy::Strategy<Value = ClusterOp> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0u8..6, 0u8..3, any::<bool>()).prop_map(|(i, p, s)| ClusterOp::Service(i, p, s)),
        1 => (0u8..6).prop_map(ClusterOp::Delete),
        4 => (0u8..6).prop_map(ClusterOp::Land),
        1 => any::<bool>().prop_map(ClusterOp::Pool),
        1 => Just(ClusterOp::Term),
        2 => Just(ClusterOp::Settle),
        1 => any::<bool>().prop_map(ClusterOp::Fence),
    ]
}

/// Whether two Services not sharing by key are announced with one IP.
fn double_announced(snap: &Snapshot, shown: &Assignments) -> Option<IpAddr> {
    let mut holders: std::collections::BTreeMap<IpAddr, Vec<&ObjectKey>> = Default::default();
    for (k, o) in &shown.outcomes {
        if let Ok(al) = o {
            for ip in &al.ips {
                holders.entry(*ip).or_default().push(&k.service);
            }
        }
    }
    let shares = |k: &ObjectKey| {
        snap.services.get(k).is_some_and(|s| {
            s.annotation(crate::api::annotations::ALLOW_SHARED_IP)
                .is_some()
        })
    };
    holders
        .into_iter()
        .find(|(_, ks)| ks.len() > 1 && !ks.iter().all(|k| shares(k)))
        .map(|(ip, _)| ip)
}

/// The Services as the API server has them (the store keeps what decisions read).
type Api = std::collections::BTreeMap<ObjectKey, Service>;

/// The allocator of record's result for `k` (its IPs, or none) written to its status.
fn land(s: &mut Store, api: &mut Api, snap: &Snapshot, last: &Assignments, k: &ObjectKey) {
    if let (Some(_), Some(old)) = (snap.services.get(k), api.get_mut(k)) {
        let ips = match last.merged(k) {
            Some(Ok(al)) => al.ips,
            _ => Vec::new(),
        };
        *old = with_status(old.clone(), &ips);
        s.apply(Object::Service(old.clone()), NS);
    }
}

/// Whether every Service's status shows the allocator of record's result (its writes have
/// landed).
fn settled(snap: &Snapshot, last: &Assignments) -> bool {
    snap.services.iter().all(|(k, svc)| {
        let mut want = match last.merged(k) {
            Some(Ok(al)) => al.ips,
            _ => Vec::new(),
        };
        let mut have = status_ips(svc);
        want.sort();
        have.sort();
        want == have
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
    /// The leader's run loop announces from the allocator of record's result while its
    /// fence is open (one allocator on the leader), and from its own allocator, started
    /// again from the record, once the fence closes. On random sequences of Service edits,
    /// status writes landing late, pool changes, terms and fence changes it shows only
    /// recorded IPs and never one IP for two Services that do not share it, and once the
    /// allocator of record's writes have landed it shows exactly what a follower (always
    /// following the record) shows from the same snapshot.
    #[test]
    fn the_leader_shows_what_a_follower_shows(
        ops in proptest::collection::vec(cluster_op(), 1..60)
    ) {
        let mut s = store();
        let sel = Selection::default();
        let mut record = Allocator::default();
        let mut follower = Allocator::default();
        let mut own = Allocator::default();
        let mut fenced = true;
        let mut last = record.step(&s.snapshot(&sel)).0;
        let mut api = Api::new();
        for op in ops {
            let snap = s.snapshot(&sel);
            match op {
                ClusterOp::Service(i, port, shared) => {
                    let name = format!("s{i}");
                    let mut svc = fixtures::service("default", &name, 80 + i32::from(port));
                    if shared {
                        svc = fixtures::annotate(svc, crate::api::annotations::ALLOW_SHARED_IP, "k");
                    }
                    if let Some(old) = api.get(&key(&name)) {
                        svc.status = old.status.clone();
                    }
                    api.insert(key(&name), svc.clone());
                    s.apply(Object::Service(svc), NS);
                }
                ClusterOp::Delete(i) => {
                    api.remove(&key(&format!("s{i}")));
                    s.delete("Service", &key(&format!("s{i}")));
                }
                ClusterOp::Land(i) => land(&mut s, &mut api, &snap, &last, &key(&format!("s{i}"))),
                ClusterOp::Settle => {
                    for k in snap.services.keys() {
                        land(&mut s, &mut api, &snap, &last, k);
                    }
                }
                ClusterOp::Pool(wide) => {
                    let range = if wide { "198.51.100.10-198.51.100.19" } else { "198.51.100.10-198.51.100.13" };
                    s.apply(Object::IPAddressPool(fixtures::pool(NS, "lan", &[range])), NS);
                }
                ClusterOp::Term => record = Allocator::default(),
                ClusterOp::Fence(open) => {
                    if fenced && !open {
                        own = Allocator::default();
                    }
                    fenced = open;
                }
            }
            let snap = s.snapshot(&sel);
            last = record.step(&snap).0;
            let theirs = recorded_only(&snap, &follower.step_following(&snap).0);
            let mine = if fenced {
                recorded_only(&snap, &last)
            } else {
                recorded_only(&snap, &own.step_following(&snap).0)
            };
            proptest::prop_assert!(mine.outcomes.iter().all(|(k, o)| is_recorded(&snap, k, o)));
            proptest::prop_assert!(double_announced(&snap, &mine).is_none(), "{:?}", mine);
            if settled(&snap, &last) {
                proptest::prop_assert_eq!(&mine, &theirs);
            }
        }
    }
}
