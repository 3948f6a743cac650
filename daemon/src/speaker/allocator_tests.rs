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
