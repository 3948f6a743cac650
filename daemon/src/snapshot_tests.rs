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

#[test]
fn class_filter_takes_only_our_load_balancers() {
    let ours = Selection::default();
    let default = Selection {
        default_class: true,
        ..Selection::default()
    };
    assert!(is_ours(
        &with_class(Some("edgelb.io/speaker"), "LoadBalancer"),
        &ours
    ));
    assert!(!is_ours(
        &with_class(Some("alibabacloud.com/elb"), "LoadBalancer"),
        &ours
    ));
    assert!(!is_ours(
        &with_class(Some("alibabacloud.com/elb"), "LoadBalancer"),
        &default
    ));
    assert!(!is_ours(&with_class(None, "LoadBalancer"), &ours));
    assert!(is_ours(&with_class(None, "LoadBalancer"), &default));
    assert!(!is_ours(
        &with_class(Some("edgelb.io/speaker"), "ClusterIP"),
        &ours
    ));
    let custom = Selection {
        class: "example.com/lb".into(),
        ..Selection::default()
    };
    assert!(is_ours(
        &with_class(Some("example.com/lb"), "LoadBalancer"),
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
        snap.node_pools["hz"],
        vec![Arc::from("n1"), Arc::from("n2")]
    );
    assert!(snap.pools[&ObjectKey::new(NS, "good")].is_valid());
    assert_eq!(
        snap.pools[&ObjectKey::new(NS, "bad")].problems[0].to_string(),
        r#"spec.addresses[0]: "nope" is not a CIDR or range"#
    );
    assert_eq!(snap.allocation_pools.len(), 1);
    // Snapshots are immutable: a later change makes a new one, the old stays as it was.
    store.services.delete(&ObjectKey::new("default", "web"));
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
