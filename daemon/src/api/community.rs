//! `Community`: names for BGP community values (MetalLB's kind of the same name).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ObjectStatus;

/// Aliases for BGP communities, usable by name in `BGPAdvertisement.spec.communities`.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "edgelb.io",
    version = "v1alpha1",
    kind = "Community",
    namespaced,
    status = "ObjectStatus",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySpec {
    /// The aliases.
    #[serde(default)]
    pub communities: Vec<CommunityAlias>,
}

/// One alias.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommunityAlias {
    /// The alias, e.g. `no-advertise`.
    pub name: String,
    /// The value: `ASN:VALUE` (RFC 1997) or `large:A:B:C` (RFC 8092).
    pub value: String,
}
