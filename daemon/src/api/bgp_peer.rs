//! `BGPPeer`: a BGP session the speakers open (MetalLB's kind of the same name).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ObjectStatus;

/// A BGP neighbour of the speakers.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "edgelb.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    namespaced,
    status = "ObjectStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"ASN","type":"integer","jsonPath":".spec.peerASN"}"#
)]
#[x_kube(validation = Rule::new("self.myASN != 0 && self.peerASN != 0").message("myASN and peerASN must not be 0"))]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// Our AS number (RFC 6793 four-octet ASNs allowed).
    #[serde(rename = "myASN")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub my_asn: u32,
    /// The peer's AS number; equal to `myASN` makes an iBGP session.
    #[serde(rename = "peerASN")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub peer_asn: u32,
    /// The peer's IPv4 or IPv6 address.
    pub peer_address: String,
    /// TCP port of the peer (default 179, RFC 4271 section 8.2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub peer_port: Option<u16>,
    /// Address to open the session from; default: chosen by the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// Hold time proposed in OPEN as a Go duration (`90s`, `1m30s`); whole seconds, 0 or at
    /// least 3 s (RFC 4271 4.2). Default 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    /// KEEPALIVE interval as a Go duration (`30s`); whole seconds, at least 1 s and below
    /// the hold time. Default a third of the negotiated hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// How long to wait between connection attempts, as a Go duration (`5s`); whole
    /// seconds, 1 s to 65535 s. The wait doubles after each failed attempt up to the larger
    /// of this and 30 s. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    /// How long a new connection may wait for the peer's OPEN before it is closed, as a Go
    /// duration; 1 s to 240 s. Short, so connections that never send an OPEN cannot keep
    /// the peer's own connection out. Default 20s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_wait_time: Option<String>,
    /// BGP identifier to use instead of the node's address (dotted quad). Spelled `routerID`
    /// as in MetalLB; the `routerId` of edgelb's first CRDs is still read.
    #[serde(
        default,
        rename = "routerID",
        alias = "routerId",
        skip_serializing_if = "Option::is_none"
    )]
    pub router_id: Option<String>,
    /// Only nodes matching one of these selectors open this session; empty means all nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Secret (in the speaker's namespace) holding the TCP MD5 password (RFC 2385) under the
    /// key `password`. The password itself is never written to a CR, log or Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    /// Allow the peer to be more than one hop away (eBGP multihop).
    #[serde(default)]
    pub ebgp_multi_hop: bool,
    /// GTSM (RFC 5082): send with TTL 255 and drop the peer's packets that arrive with a
    /// lower TTL, so only a directly connected router can talk to the session. Excludes
    /// `ebgpMultiHop`.
    #[serde(default, rename = "enableGTSM")]
    pub enable_gtsm: bool,
    /// Never connect to the peer; only accept its connection (needs the speaker's
    /// `--bgp-listen`).
    #[serde(default)]
    pub passive: bool,
    /// Announce only the family of `peerAddress` (MetalLB's name). By default both IPv4 and
    /// IPv6 go over the one session (multiprotocol BGP, RFC 4760), each with a next hop of
    /// its own family.
    #[serde(default, rename = "disableMP")]
    pub disable_mp: bool,
    /// Read the peer's UPDATEs and end the session with Cease / Maximum Number of Prefixes
    /// Reached (RFC 4486) when it announces more than this many prefixes. By default the
    /// speaker does not read what the peer announces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub max_prefixes: Option<u32>,
    /// Name of a BFD profile; empty: no BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,
    /// Graceful restart (RFC 4724, with RFC 8538's N bit): on a planned restart of the
    /// speaker the router keeps our routes and traffic keeps flowing; see
    /// docs/configuration.md for when a stop is a restart.
    #[serde(default)]
    pub enable_graceful_restart: bool,
    /// How long the router keeps our routes after the session drops without a withdrawal
    /// (restart or crash), as a Go duration; whole seconds, 1 s to 4095 s (12 bits,
    /// RFC 4724 3). Needs `enableGracefulRestart`. Default 120s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart_time: Option<String>,
}

/// A reference to a Secret by name, in the speaker's namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    pub name: String,
    /// Namespace of the Secret; must be the speaker's own namespace when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::BGPPeerSpec;

    fn router_id(yaml: &str) -> Option<String> {
        let spec: BGPPeerSpec = serde_norway::from_str(yaml).expect("spec");
        spec.router_id
    }

    /// MetalLB's spelling is the field; edgelb's first spelling is still read; writing uses
    /// MetalLB's, so a round trip through the API keeps it.
    #[test]
    fn router_id_reads_metallb_and_old_spelling_and_writes_metallb() {
        let base = "myASN: 64512\npeerASN: 64500\npeerAddress: 192.0.2.1\n";
        assert_eq!(
            router_id(&format!("{base}routerID: 10.0.0.1\n")).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            router_id(&format!("{base}routerId: 10.0.0.2\n")).as_deref(),
            Some("10.0.0.2")
        );
        let spec: BGPPeerSpec =
            serde_norway::from_str(&format!("{base}routerId: 10.0.0.3\n")).expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(json["routerID"], "10.0.0.3");
        assert!(json.get("routerId").is_none());
    }
}
