//! `BFDProfile`: BFD timers for the BGP peers that name it in `spec.bfdProfile` (MetalLB's
//! kind of the same name and fields). The speaker runs BFD itself (RFC 5880 asynchronous
//! mode; RFC 5881 single hop, or RFC 5883 multihop for a peer with `ebgpMultiHop`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ObjectStatus;

/// Default receive and transmit interval in milliseconds (MetalLB's and FRR's).
pub const DEFAULT_INTERVAL_MS: u32 = 300;
/// Default detect multiplier.
pub const DEFAULT_DETECT_MULTIPLIER: u32 = 3;
/// Default echo interval in milliseconds.
pub const DEFAULT_ECHO_INTERVAL_MS: u32 = 50;
/// Default minimum TTL of multihop packets.
pub const DEFAULT_MINIMUM_TTL: u32 = 254;

/// BFD settings shared by the peers that reference the profile by name.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "edgelb.io",
    version = "v1alpha1",
    kind = "BFDProfile",
    namespaced,
    status = "ObjectStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Passive","type":"boolean","jsonPath":".spec.passiveMode"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// Shortest interval, in milliseconds, at which this speaker can receive control
    /// packets (RFC 5880 Required Min RX Interval); 10 to 60000, default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: Option<u32>,
    /// Shortest interval, in milliseconds, at which this speaker wants to send control
    /// packets (RFC 5880 Desired Min TX Interval); 10 to 60000, default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: Option<u32>,
    /// Packets the peer may miss before the session is declared down (RFC 5880 Detect
    /// Mult); 2 to 255, default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: Option<u32>,
    /// Echo interval in milliseconds (10 to 60000, default 50): with `echoMode`, how often
    /// Echo packets are sent (never faster than the peer's Required Min Echo RX Interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub echo_interval: Option<u32>,
    /// Echo function (RFC 5880 6.4, RFC 5881 port 3785): the speaker sends Echo packets that
    /// the peer's forwarding plane loops back, and a missing return takes the session down
    /// (diagnostic 2). Single-hop IPv4 peers only (others are Valid=False); the peer must
    /// accept Echo (a non-zero Required Min Echo RX Interval); the speaker asks for none.
    #[serde(default)]
    pub echo_mode: bool,
    /// Wait for the peer's first packet instead of sending first (RFC 5880 6.1).
    #[serde(default)]
    pub passive_mode: bool,
    /// Multihop sessions only: the smallest TTL accepted on received packets (1 to 254,
    /// default 254).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub minimum_ttl: Option<u32>,
}
