use super::*;
use crate::api::annotations::{NODEPOOL_LABEL, REGION_LABEL};
use crate::fixtures::{annotate, facts, node, node_pool, service};
use crate::snapshot::{Object, Selection, Store};
use proptest::prelude::*;

fn snapshot_pools(objects: Vec<Object>) -> BTreeMap<Arc<str>, NodePoolView> {
    let mut store = Store::default();
    for o in objects {
        store.apply(o, "edgelb-system");
    }
    store.snapshot(&Selection::default()).node_pools.clone()
}

#[test]
fn pools_from_labels_share_their_nodes_labels() {
    let pools = snapshot_pools(vec![
        Object::Node(node("n2", &[(NODEPOOL_LABEL, "hz"), ("k8s-svc", "cube")])),
        Object::Node(node(
            "n1",
            &[(NODEPOOL_LABEL, "hz"), ("k8s-svc", "cube"), ("gpu", "yes")],
        )),
        Object::Node(node("n3", &[(REGION_LABEL, "cn-chengdu")])),
        Object::Node(node("n4", &[])),
    ]);
    assert_eq!(
        pools.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["cn-chengdu", "hz"]
    );
    let hz = &pools["hz"];
    assert_eq!(hz.nodes, vec![Arc::from("n1"), Arc::from("n2")]);
    assert!(!hz.from_crd);
    assert_eq!(
        hz.labels,
        BTreeMap::from([
            ("k8s-svc".to_string(), "cube".to_string()),
            (NODEPOOL_LABEL.to_string(), "hz".to_string())
        ])
    );
    assert_eq!(pools["cn-chengdu"].nodes, vec![Arc::from("n3")]);
}

#[test]
fn a_nodepool_object_gives_the_pool_its_labels_and_annotations() {
    let pools = snapshot_pools(vec![
        Object::Node(node("n1", &[(NODEPOOL_LABEL, "np-hefei")])),
        Object::NodePool(node_pool(
            "np-hefei",
            &[("k8s-svc", "cube")],
            &[("alibabacloud.com/ens-region-id", "cn-hefei-cmcc")],
        )),
        // A pool object without nodes still exists.
        Object::NodePool(node_pool("np-empty", &[("k8s-svc", "cube")], &[])),
    ]);
    let hf = &pools["np-hefei"];
    assert!(hf.from_crd);
    assert_eq!(hf.nodes, vec![Arc::from("n1")]);
    assert_eq!(hf.labels["k8s-svc"], "cube");
    assert!(!hf.labels.contains_key(NODEPOOL_LABEL));
    assert_eq!(
        hf.annotations["alibabacloud.com/ens-region-id"],
        "cn-hefei-cmcc"
    );
    assert!(pools["np-empty"].nodes.is_empty());
}

#[test]
fn a_nodepool_being_deleted_is_gone() {
    let mut np = node_pool("np", &[("k8s-svc", "cube")], &[]);
    np.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Default::default(),
    ));
    let pools = snapshot_pools(vec![Object::NodePool(np)]);
    assert!(pools.is_empty());
}

#[test]
fn selection_follows_the_annotation() {
    let pools = snapshot_pools(vec![
        Object::NodePool(node_pool("np-hefei", &[("k8s-svc", "cube")], &[])),
        Object::NodePool(node_pool(
            "np-chengdu",
            &[("k8s-svc", "cube"), ("tier", "b")],
            &[],
        )),
        Object::NodePool(node_pool("np-other", &[("k8s-svc", "web")], &[])),
    ]);
    let svc = service("default", "cube-svc", 80);
    assert_eq!(selected_node_pools(&facts(&svc), &pools), Ok(None));
    let blank = annotate(svc.clone(), NODEPOOL_SELECTOR, "  ");
    assert_eq!(selected_node_pools(&facts(&blank), &pools), Ok(None));
    let cube = annotate(svc.clone(), NODEPOOL_SELECTOR, "k8s-svc=cube");
    assert_eq!(
        selected_node_pools(&facts(&cube), &pools),
        Ok(Some(vec![Arc::from("np-chengdu"), Arc::from("np-hefei")]))
    );
    let none = annotate(svc.clone(), NODEPOOL_SELECTOR, "k8s-svc=nothing");
    assert_eq!(selected_node_pools(&facts(&none), &pools), Ok(Some(vec![])));
    let set = annotate(
        svc.clone(),
        NODEPOOL_SELECTOR,
        "k8s-svc in (cube, web), !tier",
    );
    assert_eq!(
        selected_node_pools(&facts(&set), &pools),
        Ok(Some(vec![Arc::from("np-hefei"), Arc::from("np-other")]))
    );
}

#[test]
fn a_bad_selector_names_service_and_annotation() {
    let svc = annotate(
        service("shop", "cube-svc", 80),
        NODEPOOL_SELECTOR,
        "k8s-svc in cube",
    );
    let err = selected_node_pools(&facts(&svc), &BTreeMap::new()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("Service shop/cube-svc"), "{text}");
    assert!(text.contains(NODEPOOL_SELECTOR), "{text}");
    assert!(text.contains("\"k8s-svc in cube\""), "{text}");
    assert!(text.contains("expected '('"), "{text}");
}

#[test]
fn cloud_classes_are_not_self_announced() {
    assert!(is_self_announced_class(None));
    assert!(is_self_announced_class(Some("edgelb.io/speaker")));
    assert!(!is_self_announced_class(Some("alibabacloud.com/elb")));
}

#[test]
fn a_pool_annotated_with_a_cloud_class_is_the_clouds_for_a_self_announced_service() {
    let pools = snapshot_pools(vec![
        Object::NodePool(node_pool("np-bgp", &[("k8s-svc", "cube")], &[])),
        Object::NodePool(node_pool(
            "np-elb",
            &[("k8s-svc", "cube")],
            &[(POOL_CLOUD_CLASS, "alibabacloud.com/elb")],
        )),
        Object::NodePool(node_pool(
            "np-typo",
            &[("k8s-svc", "cube")],
            &[(POOL_CLOUD_CLASS, "alibabacloud.com/slb")],
        )),
        Object::NodePool(node_pool("np-empty", &[], &[(POOL_CLOUD_CLASS, " ")])),
    ]);
    let ours = service("default", "cube", 80);
    assert_eq!(
        pool_source(&facts(&ours), pools.get("np-bgp")),
        PoolSource::SelfAnnounced
    );
    assert_eq!(
        pool_source(&facts(&ours), pools.get("np-elb")),
        PoolSource::Cloud("alibabacloud.com/elb")
    );
    assert_eq!(
        pool_source(&facts(&ours), pools.get("np-empty")),
        PoolSource::SelfAnnounced
    );
    assert_eq!(pool_source(&facts(&ours), None), PoolSource::SelfAnnounced);
    let PoolSource::Invalid(text) = pool_source(&facts(&ours), pools.get("np-typo")) else {
        panic!("an unknown class must be an error");
    };
    assert!(text.contains("NodePool np-typo"), "{text}");
    assert!(text.contains(POOL_CLOUD_CLASS), "{text}");
    assert!(text.contains("\"alibabacloud.com/slb\""), "{text}");
    assert!(!is_self_announced_in(&facts(&ours), pools.get("np-typo")));
    // A cloud-class Service is the cloud's in every pool, annotated or not.
    let mut elb = ours.clone();
    elb.spec.as_mut().unwrap().load_balancer_class = Some("alibabacloud.com/elb".into());
    for p in ["np-bgp", "np-elb", "np-typo"] {
        assert_eq!(
            pool_source(&facts(&elb), pools.get(p)),
            PoolSource::Cloud("alibabacloud.com/elb"),
            "{p}"
        );
    }
}

fn label_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("x.io/c".to_string())
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("2".to_string()),
        Just("v-3".to_string())
    ]
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(label_key(), label_value(), 0..3)
}

/// One requirement as text, and the same requirement as a predicate on labels.
#[derive(Clone, Debug)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

impl Req {
    fn text(&self) -> String {
        match self {
            Req::Eq(k, v) => format!("{k}={v}"),
            Req::Ne(k, v) => format!("{k} != {v}"),
            Req::In(k, vs) => format!("{k} in ({})", vs.join(",")),
            Req::NotIn(k, vs) => format!("{k} notin ( {} )", vs.join(" , ")),
            Req::Exists(k) => k.clone(),
            Req::Absent(k) => format!("!{k}"),
        }
    }

    fn holds(&self, l: &BTreeMap<String, String>) -> bool {
        match self {
            Req::Eq(k, v) => l.get(k) == Some(v),
            Req::Ne(k, v) => l.get(k) != Some(v),
            Req::In(k, vs) => l.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => l.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => l.contains_key(k),
            Req::Absent(k) => !l.contains_key(k),
        }
    }
}

fn req() -> impl Strategy<Value = Req> {
    let vs = || proptest::collection::vec(label_value(), 1..3);
    prop_oneof![
        (label_key(), label_value()).prop_map(|(k, v)| Req::Eq(k, v)),
        (label_key(), label_value()).prop_map(|(k, v)| Req::Ne(k, v)),
        (label_key(), vs()).prop_map(|(k, v)| Req::In(k, v)),
        (label_key(), vs()).prop_map(|(k, v)| Req::NotIn(k, v)),
        label_key().prop_map(Req::Exists),
        label_key().prop_map(Req::Absent),
    ]
}

proptest! {
    /// The text syntax means what Kubernetes says: a conjunction of its requirements.
    #[test]
    fn parsed_selectors_mean_their_requirements(
        reqs in proptest::collection::vec(req(), 1..4),
        l in labels(),
    ) {
        let text = reqs.iter().map(Req::text).collect::<Vec<_>>().join(", ");
        let sel = selector::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(selector::matches(&sel, &l), reqs.iter().all(|r| r.holds(&l)), "{}", text);
    }

    /// No text makes the parser panic.
    #[test]
    fn the_parser_never_panics(text in "[a-z=!,() /.<>-]{0,24}") {
        let _ = selector::parse(&text);
    }

    /// Exactly the pools whose labels match are selected, in name order, whatever the
    /// nodes and objects.
    #[test]
    fn selected_pools_are_exactly_the_matching_ones_sorted(
        objects in proptest::collection::vec((0..5usize, labels()), 0..5),
        nodes in proptest::collection::vec((proptest::option::of(0..5usize), labels()), 0..8),
        req in req(),
    ) {
        let mut all = Vec::new();
        for (p, l) in &objects {
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            all.push(Object::NodePool(node_pool(&format!("p{p}"), &l, &[])));
        }
        for (i, (p, l)) in nodes.iter().enumerate() {
            let mut l: Vec<(String, String)> = l.clone().into_iter().collect();
            if let Some(p) = p {
                l.push((NODEPOOL_LABEL.to_string(), format!("p{p}")));
            }
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            all.push(Object::Node(node(&format!("n{i}"), &l)));
        }
        let pools = snapshot_pools(all);
        // Every node with a pool is a member of exactly that pool; members are sorted.
        for (i, (p, _)) in nodes.iter().enumerate() {
            let n: Arc<str> = format!("n{i}").into();
            for (name, view) in &pools {
                prop_assert_eq!(view.nodes.contains(&n), p.map(|p| format!("p{p}")).as_deref() == Some(&**name));
            }
        }
        for view in pools.values() {
            prop_assert!(view.nodes.windows(2).all(|w| w[0] < w[1]));
        }
        let svc = annotate(service("default", "s", 80), NODEPOOL_SELECTOR, &req.text());
        let got = selected_node_pools(&facts(&svc), &pools).map_err(|e| TestCaseError::fail(e.to_string()))?
            .ok_or_else(|| TestCaseError::fail("no selection"))?;
        let want: Vec<Arc<str>> = pools.values().filter(|p| req.holds(&p.labels)).map(|p| p.name.clone()).collect();
        prop_assert_eq!(got, want);
    }
}
