use super::*;
use crate::fixtures::{node, pool, service};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

const NS: &str = "edgelb-system";

fn with_class(class: Option<&str>, type_: &str) -> Service {
    let mut s = service("default", "x", 80);
    if let Some(spec) = s.spec.as_mut() {
        spec.load_balancer_class = class.map(str::to_string);
        spec.type_ = Some(type_.to_string());
    }
    s
}

fn facts_with_class(class: Option<&str>, type_: &str) -> ServiceFacts {
    crate::fixtures::facts(&with_class(class, type_))
}

#[test]
fn class_filter_takes_only_our_load_balancers() {
    let ours = Selection::default();
    let default = Selection {
        default_class: true,
        ..Selection::default()
    };
    assert!(is_ours(
        &facts_with_class(Some("edgelb.io/speaker"), "LoadBalancer"),
        &ours
    ));
    assert!(!is_ours(
        &facts_with_class(Some("alibabacloud.com/elb"), "LoadBalancer"),
        &ours
    ));
    assert!(!is_ours(
        &facts_with_class(Some("alibabacloud.com/elb"), "LoadBalancer"),
        &default
    ));
    assert!(!is_ours(&facts_with_class(None, "LoadBalancer"), &ours));
    assert!(is_ours(&facts_with_class(None, "LoadBalancer"), &default));
    assert!(!is_ours(
        &facts_with_class(Some("edgelb.io/speaker"), "ClusterIP"),
        &ours
    ));
    let custom = Selection {
        class: "example.com/lb".into(),
        ..Selection::default()
    };
    assert!(is_ours(
        &facts_with_class(Some("example.com/lb"), "LoadBalancer"),
        &custom
    ));
}

#[test]
fn node_pool_is_openyurt_label_else_region() {
    assert_eq!(
        node_pool_of(&node(
            "a",
            &[(NODEPOOL_LABEL, "hz"), (REGION_LABEL, "cn-hangzhou")]
        )),
        Some("hz".into())
    );
    assert_eq!(
        node_pool_of(&node("b", &[(REGION_LABEL, "cn-beijing")])),
        Some("cn-beijing".into())
    );
    assert_eq!(node_pool_of(&node("c", &[])), None);
}

#[test]
fn index_apply_delete_reset() {
    let mut idx: Index<u32> = Index::default();
    idx.apply(ObjectKey::new("a", "1"), 1);
    idx.apply(ObjectKey::new("a", "1"), 2);
    idx.apply(ObjectKey::new("a", "2"), 3);
    assert_eq!(idx.len(), 2);
    assert_eq!(idx.get(&ObjectKey::new("a", "1")).map(|v| **v), Some(2));
    idx.delete(&ObjectKey::new("a", "1"));
    idx.delete(&ObjectKey::new("a", "404"));
    assert_eq!(idx.len(), 1);
    idx.reset(vec![(ObjectKey::new("b", "9"), 9)]);
    assert_eq!(
        idx.iter()
            .map(|(k, v)| (k.to_string(), **v))
            .collect::<Vec<_>>(),
        vec![("b/9".to_string(), 9)]
    );
}

#[test]
fn snapshot_holds_our_services_slices_by_service_nodes_by_pool_and_checked_pools() {
    let mut store = Store::default();
    store.apply(Object::Service(service("default", "web", 80)), NS);
    store.apply(
        Object::Service(with_class(Some("other"), "LoadBalancer")),
        NS,
    );
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("web-abc".into()),
            namespace: Some("default".into()),
            labels: Some([("kubernetes.io/service-name".to_string(), "web".to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: None,
        ports: None,
    };
    store.apply(Object::EndpointSlice(slice), NS);
    store.apply(Object::Node(node("n1", &[(NODEPOOL_LABEL, "hz")])), NS);
    store.apply(Object::Node(node("n2", &[(REGION_LABEL, "hz")])), NS);
    store.apply(
        Object::IPAddressPool(pool(NS, "good", &["192.0.2.0/30"])),
        NS,
    );
    store.apply(Object::IPAddressPool(pool(NS, "bad", &["nope"])), NS);
    let snap = store.snapshot(&Selection::default());
    assert_eq!(
        snap.services
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["default/web"]
    );
    assert_eq!(
        snap.endpoint_slices[&ObjectKey::new("default", "web")].len(),
        1
    );
    assert_eq!(
        snap.node_pools["hz"].nodes,
        vec![Arc::from("n1"), Arc::from("n2")]
    );
    assert!(snap.pools[&ObjectKey::new(NS, "good")].is_valid());
    assert_eq!(
        snap.pools[&ObjectKey::new(NS, "bad")].problems[0].to_string(),
        r#"spec.addresses[0]: "nope" is not a CIDR or range"#
    );
    assert_eq!(snap.allocation_pools.len(), 1);
    // Snapshots are immutable: a later change makes a new one, the old stays as it was.
    store.delete("Service", &ObjectKey::new("default", "web"));
    assert_eq!(snap.services.len(), 1);
    assert_eq!(store.snapshot(&Selection::default()).services.len(), 0);
}

#[test]
fn secrets_are_kept_only_from_our_namespace_and_never_printed() {
    let secret = |ns: &str| Secret {
        metadata: ObjectMeta {
            name: Some("bgp".into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into()),
        string_data: Some([("extra".to_string(), "s3cret".to_string())].into()),
        ..Default::default()
    };
    let mut store = Store::default();
    store.apply(Object::Secret(secret(NS)), NS);
    store.apply(Object::Secret(secret("default")), NS);
    let snap = store.snapshot(&Selection::default());
    assert_eq!(snap.secrets.len(), 1);
    let data = &snap.secrets["bgp"];
    assert_eq!(data.data.0["password"], b"hunter2");
    assert_eq!(data.data.0["extra"], b"s3cret");
    let printed = format!("{snap:?}");
    assert!(
        !printed.contains("hunter2") && !printed.contains("s3cret"),
        "{printed}"
    );
    assert!(printed.contains("***"));
}

/// The snapshot's Service maps the way a whole rebuild makes them (the reference the
/// store's patched maps must equal).
#[allow(clippy::type_complexity)]
fn rebuilt(
    store: &Store,
    sel: &Selection,
) -> (
    Vec<(ObjectKey, Arc<ServiceFacts>)>,
    Vec<(ObjectKey, Vec<Arc<Slice>>)>,
) {
    let services: BTreeMap<ObjectKey, Arc<ServiceFacts>> = store
        .services()
        .iter()
        .filter(|(_, s)| is_ours(s, sel))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    let mut slices: BTreeMap<ObjectKey, Vec<Arc<Slice>>> = BTreeMap::new();
    for (key, slice) in store.endpoint_slices().iter() {
        let Some(owner) = slice.service.as_deref() else {
            continue;
        };
        // Every Service's slices, ours or not.
        let owner = ObjectKey::new(&key.namespace, owner);
        slices.entry(owner).or_default().push(slice.clone());
    }
    (services.into_iter().collect(), slices.into_iter().collect())
}

/// Same keys in the same order, and the very same `Arc`s.
fn assert_same_maps(snap: &Snapshot, store: &Store, sel: &Selection) {
    let (services, slices) = rebuilt(store, sel);
    let got: Vec<_> = snap.services.iter().collect();
    assert_eq!(got.len(), services.len(), "{got:?} vs {services:?}");
    for ((gk, gs), (wk, ws)) in got.iter().zip(&services) {
        assert_eq!(*gk, wk);
        assert!(Arc::ptr_eq(gs, ws), "{gk}: another Arc");
    }
    let got: Vec<_> = snap.endpoint_slices.iter().collect();
    assert_eq!(got.len(), slices.len(), "{got:?} vs {slices:?}");
    for ((gk, gv), (wk, wv)) in got.iter().zip(&slices) {
        assert_eq!(*gk, wk);
        assert_eq!(gv.len(), wv.len(), "{gk}");
        assert!(gv.iter().zip(wv).all(|(a, b)| Arc::ptr_eq(a, b)), "{gk}");
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Service (namespace, name) with class: 0 ours, 1 another, 2 none.
    Service(usize, usize, usize),
    DeleteService(usize, usize),
    /// Slice (namespace, name) of Service name `Some(n)` or unlabelled.
    Slice(usize, usize, Option<usize>),
    DeleteSlice(usize, usize),
    /// Re-list of Services: (namespace, name, class).
    ResetServices(Vec<(usize, usize, usize)>),
    /// Re-list of slices: (namespace, name, owner).
    ResetSlices(Vec<(usize, usize, Option<usize>)>),
}

const NSS: [&str; 2] = ["a", "b"];

fn svc_obj(ns: usize, name: usize, class: usize) -> Object {
    let mut s = service(NSS[ns], &format!("s{name}"), 80);
    if let Some(spec) = s.spec.as_mut() {
        spec.load_balancer_class = match class {
            0 => Some("edgelb.io/speaker".into()),
            1 => Some("other.example/lb".into()),
            _ => None,
        };
    }
    Object::Service(s)
}

fn slice_obj(ns: usize, name: usize, owner: Option<usize>) -> Object {
    Object::EndpointSlice(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("e{name}")),
            namespace: Some(NSS[ns].into()),
            labels: owner
                .map(|o| [("kubernetes.io/service-name".to_string(), format!("s{o}"))].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: None,
        ports: None,
    })
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let svc = (0..2usize, 0..4usize, 0..3usize);
    let slice = (0..2usize, 0..5usize, proptest::option::of(0..4usize));
    prop_oneof![
        4 => svc.clone().prop_map(|(n, s, c)| Op::Service(n, s, c)),
        2 => (0..2usize, 0..4usize).prop_map(|(n, s)| Op::DeleteService(n, s)),
        4 => slice.clone().prop_map(|(n, s, o)| Op::Slice(n, s, o)),
        2 => (0..2usize, 0..5usize).prop_map(|(n, s)| Op::DeleteSlice(n, s)),
        1 => proptest::collection::vec(svc, 0..6).prop_map(Op::ResetServices),
        1 => proptest::collection::vec(slice, 0..6).prop_map(Op::ResetSlices),
    ]
}

proptest::proptest! {
    /// After any sequence of changes, the maps the store keeps up to date are the ones a
    /// whole rebuild makes (same keys and order, same `Arc`s), for the selection it keeps
    /// them for and, built whole, for another; and an earlier snapshot never changes.
    #[test]
    fn patched_service_maps_equal_a_rebuild(ops in proptest::collection::vec(op(), 1..40)) {
        let ours = Selection::default();
        let default_class = Selection { default_class: true, ..Selection::default() };
        let mut store = Store::default();
        let mut kept: Vec<(Snapshot, Store)> = Vec::new();
        for op in ops {
            match op {
                Op::Service(n, s, c) => store.apply(svc_obj(n, s, c), NS),
                Op::DeleteService(n, s) => {
                    store.delete("Service", &ObjectKey::new(NSS[n], &format!("s{s}")))
                }
                Op::Slice(n, s, o) => store.apply(slice_obj(n, s, o), NS),
                Op::DeleteSlice(n, s) => {
                    store.delete("EndpointSlice", &ObjectKey::new(NSS[n], &format!("e{s}")))
                }
                Op::ResetServices(list) => store.reset(
                    "Service",
                    list.into_iter().map(|(n, s, c)| svc_obj(n, s, c)).collect(),
                    NS,
                ),
                Op::ResetSlices(list) => store.reset(
                    "EndpointSlice",
                    list.into_iter().map(|(n, s, o)| slice_obj(n, s, o)).collect(),
                    NS,
                ),
            }
            let snap = store.snapshot(&ours);
            assert_same_maps(&snap, &store, &ours);
            assert_same_maps(&store.snapshot(&default_class), &store, &default_class);
            kept.push((snap, store.clone()));
        }
        for (snap, then) in &kept {
            assert_same_maps(snap, then, &ours);
        }
        // Switching the kept selection rebuilds the maps for it.
        store.select(&default_class);
        assert_same_maps(&store.snapshot(&default_class), &store, &default_class);
        assert_same_maps(&store.snapshot(&ours), &store, &ours);
    }
}

proptest::proptest! {
    /// What the store keeps of a slice ([`Slice`]) answers what the planners asked of the
    /// whole object: the nodes of its ready endpoints and how many on each (unset `ready`
    /// counts as ready) and whether any endpoint is ready, with or without a node.
    #[test]
    fn slice_facts_equal_what_the_endpoints_say(
        eps in proptest::collection::vec(
            (proptest::option::of(0..3usize), proptest::option::of(proptest::bool::ANY)),
            0..8,
        )
    ) {
        use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
        let nodes = ["n0", "n1", "n2"];
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                name: Some("e".into()),
                namespace: Some("default".into()),
                labels: Some([("kubernetes.io/service-name".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                eps.iter()
                    .map(|(n, ready)| Endpoint {
                        addresses: vec!["10.0.0.1".into()],
                        node_name: n.map(|i| nodes[i].to_string()),
                        conditions: Some(EndpointConditions { ready: *ready, ..Default::default() }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: None,
        };
        let facts = Slice::of(&slice, |n: &str| Arc::from(n));
        let mut want: BTreeMap<&str, u32> = BTreeMap::new();
        for (n, _) in eps.iter().filter(|(_, r)| r.unwrap_or(true)) {
            if let Some(i) = n {
                *want.entry(nodes[*i]).or_default() += 1;
            }
        }
        let got: Vec<(&str, u32)> = facts.ready_nodes.iter().map(|(n, c)| (&**n, *c)).collect();
        proptest::prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        proptest::prop_assert_eq!(facts.any_ready, eps.iter().any(|(_, r)| r.unwrap_or(true)));
        proptest::prop_assert_eq!(facts.service.as_deref(), Some("web"));
    }
}

#[test]
fn slices_share_node_names() {
    let mut store = Store::default();
    for s in ["e1", "e2"] {
        store.apply(
            Object::EndpointSlice(crate::fixtures::endpoint_slice(
                "default",
                "web",
                s,
                ["n1".to_string()],
            )),
            NS,
        );
    }
    let a = &store
        .endpoint_slices()
        .get(&ObjectKey::new("default", "e1"))
        .expect("e1")
        .ready_nodes[0]
        .0;
    let b = &store
        .endpoint_slices()
        .get(&ObjectKey::new("default", "e2"))
        .expect("e2")
        .ready_nodes[0]
        .0;
    assert!(Arc::ptr_eq(a, b), "one copy of a node name");
}
