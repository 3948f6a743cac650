//! `L2Advertisement`: announce the IPs of some pools by gratuitous ARP / unsolicited NDP
//! (MetalLB's kind of the same name).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ObjectStatus;

/// Announce the IPs of some pools on a LAN (RFC 826 gratuitous ARP, RFC 4861 7.2.6 NA).
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "edgelb.io",
    version = "v1alpha1",
    kind = "L2Advertisement",
    namespaced,
    status = "ObjectStatus",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools (by name) whose IPs this advertisement covers; empty with no selector: all.
    #[serde(
        default,
        rename = "ipAddressPools",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pools: Vec<String>,
    /// Pools (by labels) whose IPs this advertisement covers.
    #[serde(
        default,
        rename = "ipAddressPoolSelectors",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Only these nodes announce; empty means all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Only on these interfaces; empty means every interface with a matching subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}
