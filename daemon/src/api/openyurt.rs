//! OpenYurt's kinds that edgelb reads and writes, in OpenYurt's own shape so that an
//! OpenYurt cluster keeps its CRDs and tools (`kubectl get np`, `kubectl get ps`):
//!
//! - `NodePool` (`apps.openyurt.io/v1beta1`, cluster-scoped): read only, when its CRD is
//!   installed. Its labels are what `service.openyurt.io/nodepool-labelselector` selects,
//!   its annotations describe the pool's network (cloud providers read them).
//! - `PoolService` (`network.openyurt.io/v1alpha1`, namespaced): one per (Service, selected
//!   pool), written by the writer of record (SPEC.md, "Node pools and regions").
//!
//! Only the fields edgelb uses are typed; the rest of an object is kept by the API server
//! (we write with server-side apply, so unknown fields are never dropped).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LoadBalancerStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of `NodePool`.
pub const NODEPOOL_GROUP: &str = "apps.openyurt.io";
/// `apiVersion` of the `NodePool` we read.
pub const NODEPOOL_API_VERSION: &str = "apps.openyurt.io/v1beta1";
/// API group of `PoolService`.
pub const POOLSERVICE_GROUP: &str = "network.openyurt.io";
/// `apiVersion` of `PoolService`.
pub const POOLSERVICE_API_VERSION: &str = "network.openyurt.io/v1alpha1";

/// The spec of an OpenYurt node pool (the fields edgelb reads).
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "apps.openyurt.io",
    version = "v1beta1",
    kind = "NodePool",
    status = "NodePoolStatus",
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolSpec {
    /// `Edge` or `Cloud`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Labels OpenYurt puts on every node of the pool (not the pool's own labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations OpenYurt puts on every node of the pool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The status of an OpenYurt node pool.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// Names of the pool's nodes, as OpenYurt's controller last counted them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

/// The spec of a `PoolService`: the Service's class, copied (OpenYurt's shape).
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "network.openyurt.io",
    version = "v1alpha1",
    kind = "PoolService",
    namespaced,
    status = "PoolServiceStatus",
    shortname = "ps",
    category = "all",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PoolServiceSpec {
    /// Inherited from the Service's `spec.loadBalancerClass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
}

/// The status of a `PoolService`: its pool's entry point.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolServiceStatus {
    /// The pool's load-balancer ingress points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerStatus>,
    /// Conditions in the standard shape (a map list keyed by `type`, so a server-side apply
    /// of ours leaves another controller's conditions alone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Labels to aggregate into the Service (OpenYurt's field; edgelb writes none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aggregate_to_labels: BTreeMap<String, String>,
    /// Annotations to aggregate into the Service (OpenYurt's field; edgelb writes none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aggregate_to_annotations: BTreeMap<String, String>,
}

/// PoolService label naming its Service (OpenYurt's key, so OpenYurt's tools read ours).
pub const LABEL_SERVICE_NAME: &str = "openyurt.io/service-name";
/// PoolService label naming its node pool (OpenYurt's key).
pub const LABEL_POOL_NAME: &str = "openyurt.io/pool-name";
/// PoolService label naming the controller that keeps it (OpenYurt's key: OpenYurt's own
/// controller then sees ours as not its own and leaves it alone, and we do the same).
pub const LABEL_MANAGED_BY: &str = "poolservice.openyurt.io/managed-by";
/// Our value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "edgelb";
/// The finalizer edgelb puts on a Service it fans out into PoolServices: the Service stays
/// until its PoolServices (and what they carry) are gone.
pub const FINALIZER: &str = "edgelb.io/pool-services";
