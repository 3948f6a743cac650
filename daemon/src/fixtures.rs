//! Small builders of cluster objects, for tests, benches and examples. Not used by the
//! daemon itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::annotations::DEFAULT_LOAD_BALANCER_CLASS;
use crate::api::{IPAddressPool, IPAddressPoolSpec};

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        ..Default::default()
    }
}

/// A LoadBalancer Service of our class exposing TCP `port`.
pub fn service(namespace: &str, name: &str, port: i32) -> Service {
    Service {
        metadata: meta(Some(namespace), name),
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            load_balancer_class: Some(DEFAULT_LOAD_BALANCER_CLASS.into()),
            ports: Some(vec![ServicePort {
                port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Sets an annotation.
pub fn annotate(mut svc: Service, key: &str, value: &str) -> Service {
    svc.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
    svc
}

/// Sets `ipFamilies` and `ipFamilyPolicy`.
pub fn families(mut svc: Service, families: &[&str], policy: &str) -> Service {
    if let Some(spec) = svc.spec.as_mut() {
        spec.ip_families = Some(families.iter().map(|f| f.to_string()).collect());
        spec.ip_family_policy = Some(policy.to_string());
    }
    svc
}

/// An `IPAddressPool` in `namespace`.
pub fn pool(namespace: &str, name: &str, addresses: &[&str]) -> IPAddressPool {
    IPAddressPool {
        metadata: meta(Some(namespace), name),
        spec: IPAddressPoolSpec {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            auto_assign: true,
            ..Default::default()
        },
        status: None,
    }
}

/// A Node with labels.
pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    let mut m = meta(None, name);
    m.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    Node {
        metadata: m,
        ..Default::default()
    }
}

/// An OpenYurt `NodePool` with labels and annotations of its own.
pub fn node_pool(
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> crate::api::openyurt::NodePool {
    let pairs = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut m = meta(None, name);
    m.labels = Some(pairs(labels));
    m.annotations = Some(pairs(annotations));
    crate::api::openyurt::NodePool {
        metadata: m,
        ..Default::default()
    }
}

/// A Namespace with labels.
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    let mut m = meta(None, name);
    m.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    Namespace {
        metadata: m,
        ..Default::default()
    }
}

/// An IPv4 EndpointSlice `name` of Service `namespace/service`, with one ready endpoint on
/// each of `nodes`.
pub fn endpoint_slice(
    namespace: &str,
    service: &str,
    name: &str,
    nodes: impl IntoIterator<Item = String>,
) -> EndpointSlice {
    let mut m = meta(Some(namespace), name);
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        service.to_string(),
    )]));
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: Some(
            nodes
                .into_iter()
                .enumerate()
                .map(|(i, node)| Endpoint {
                    addresses: vec![format!("10.244.0.{}", i + 1)],
                    node_name: Some(node),
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: None,
    }
}

/// The annotation [`node_pools_from_annotation`] reads: a comma-separated list of node pool
/// names. Tests and benches only; the daemon reads `service.openyurt.io/nodepool-labelselector`.
pub const NODE_POOLS_ANNOTATION: &str = "fixtures.edgelb.io/node-pools";

/// An `ipam::Selection` for tests and benches: the node pools listed in
/// [`NODE_POOLS_ANNOTATION`], or `None` (cluster-wide) without it.
pub fn node_pools_from_annotation(
    _: &crate::snapshot::Snapshot,
    svc: &crate::service::ServiceFacts,
) -> Result<Option<Vec<std::sync::Arc<str>>>, String> {
    let Some(list) = svc.annotation(NODE_POOLS_ANNOTATION) else {
        return Ok(None);
    };
    let mut pools: Vec<std::sync::Arc<str>> = list
        .split(',')
        .filter(|p| !p.is_empty())
        .map(std::sync::Arc::from)
        .collect();
    pools.sort();
    Ok(Some(pools))
}

/// An `IPAddressPool` scoped to node pools by name (`spec.nodePools`).
pub fn scoped_pool(
    namespace: &str,
    name: &str,
    addresses: &[&str],
    node_pools: &[&str],
) -> IPAddressPool {
    let mut p = pool(namespace, name, addresses);
    p.spec.node_pools = node_pools.iter().map(|n| n.to_string()).collect();
    p
}

/// A cluster in regions: an `IPAddressPool` per `(name, CIDR, node pool)` scoped to that
/// node pool, a cluster-wide pool `cluster` on `cluster_cidr`, and a `Node` per
/// `(name, node pool)` labelled into its node pool.
pub fn regions(
    namespace: &str,
    scoped: &[(&str, &str, &str)],
    cluster_cidr: &str,
    nodes: &[(&str, &str)],
) -> Vec<crate::snapshot::Object> {
    use crate::snapshot::Object;
    let pools = scoped
        .iter()
        .map(|(name, cidr, np)| scoped_pool(namespace, name, &[cidr], &[np]))
        .chain([pool(namespace, "cluster", &[cluster_cidr])])
        .map(Object::IPAddressPool);
    let nodes = nodes.iter().map(|(name, np)| {
        Object::Node(node(name, &[(crate::api::annotations::NODEPOOL_LABEL, np)]))
    });
    pools.chain(nodes).collect()
}

/// What the store keeps of `svc` ([`crate::service::ServiceFacts`]), for the decision
/// functions tests call directly.
pub fn facts(svc: &Service) -> crate::service::ServiceFacts {
    crate::service::ServiceFacts::unshared(svc)
}
