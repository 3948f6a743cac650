//! The status shared by every edgelb CRD: Kubernetes-style conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Status of an edgelb object, written by the leader speaker.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// Conditions in the standard shape. `Valid` says whether the spec was accepted; when it
    /// is `False` its message names each bad field and value.
    // A map keyed by `type`, as every Kubernetes conditions list: the speaker's apply of
    // `Valid` must not remove the conditions other controllers write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
