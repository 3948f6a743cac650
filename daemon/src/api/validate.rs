//! Pure validation of edgelb objects. The schema (with CEL rules) rejects what is
//! structurally wrong at admission; this catches the rest and turns it into a `Valid`
//! condition whose message names each bad field and value. A bad object is left out of the
//! snapshot's working set; it never stops the others.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};

use super::{
    BGPAdvertisementSpec, BGPPeerSpec, CommunitySpec, IPAddressPoolSpec, L2AdvertisementSpec,
};
use crate::ipam::range::IpRange;
use crate::selector;

/// One problem: the field path (`spec.addresses[1]`) and what is wrong with its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, from the object root.
    pub field: String,
    /// What is wrong, quoting the bad value.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What validation needs to know beyond the object itself.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// The speaker's namespace: Secrets are read only there.
    pub namespace: String,
    /// Names of every `Community` alias.
    pub community_aliases: BTreeSet<String>,
    /// Every `BFDProfile` by name: whether it is valid.
    pub bfd_profiles: std::collections::BTreeMap<String, bool>,
    /// Names of the `BFDProfile`s with `echoMode` (Echo needs a single-hop IPv4 session).
    pub bfd_echo_profiles: BTreeSet<String>,
}

fn err(out: &mut Vec<FieldError>, field: impl Into<String>, message: impl Into<String>) {
    out.push(FieldError {
        field: field.into(),
        message: message.into(),
    });
}

fn check_selectors(out: &mut Vec<FieldError>, field: &str, selectors: &[LabelSelector]) {
    for (i, s) in selectors.iter().enumerate() {
        for (sub, message) in selector::problems(s) {
            err(out, format!("{field}[{i}].{sub}"), message);
        }
    }
}

/// Validates an `IPAddressPool` spec.
pub fn ip_address_pool(spec: &IPAddressPoolSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    if spec.addresses.is_empty() {
        err(
            &mut out,
            "spec.addresses",
            "must list at least one CIDR or range",
        );
    }
    let mut parsed: Vec<(usize, IpRange)> = Vec::new();
    for (i, text) in spec.addresses.iter().enumerate() {
        match IpRange::parse(text) {
            Ok(r) => {
                if let Some((j, _)) = parsed.iter().find(|(_, p)| p.overlaps(&r)) {
                    err(
                        &mut out,
                        format!("spec.addresses[{i}]"),
                        format!(
                            "{text:?} overlaps spec.addresses[{j}] {:?}",
                            spec.addresses[*j]
                        ),
                    );
                }
                parsed.push((i, r));
            }
            Err(e) => err(&mut out, format!("spec.addresses[{i}]"), e.to_string()),
        }
    }
    if let Some(a) = &spec.service_allocation {
        check_selectors(
            &mut out,
            "spec.serviceAllocation.namespaceSelectors",
            &a.namespace_selectors,
        );
        check_selectors(
            &mut out,
            "spec.serviceAllocation.serviceSelectors",
            &a.service_selectors,
        );
        if let Some(p) = a.priority {
            if p < 0 {
                err(
                    &mut out,
                    "spec.serviceAllocation.priority",
                    format!("{p} must not be negative"),
                );
            }
        }
    }
    check_selectors(
        &mut out,
        "spec.nodePoolSelectors",
        &spec.node_pool_selectors,
    );
    check_node_pool_names(&mut out, &spec.node_pools);
    out
}

/// Why `value` is not a Kubernetes label value (at most 63 characters, alphanumerics, `-`,
/// `_` and `.`, starting and ending with an alphanumeric), or `None` when it is one.
fn label_value_problem(value: &str) -> Option<&'static str> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if value.len() > 63 {
        Some("longer than 63 characters")
    } else if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("only letters, digits, '-', '_' and '.' are allowed")
    } else if !edge_ok(value.chars().next()) || !edge_ok(value.chars().last()) {
        Some("must start and end with a letter or digit")
    } else {
        None
    }
}

/// `spec.nodePools`: node pool names are label values (`apps.openyurt.io/nodepool`) or
/// object names, so each must be a valid label value, non-empty, and listed once.
fn check_node_pool_names(out: &mut Vec<FieldError>, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let field = format!("spec.nodePools[{i}]");
        if name.is_empty() {
            err(out, field, "must not be empty");
        } else if let Some(why) = label_value_problem(name) {
            err(
                out,
                field,
                format!("{name:?} is not a node pool name: {why}"),
            );
        } else if names[..i].contains(name) {
            err(out, field, format!("{name:?} is listed twice"));
        }
    }
}

/// Parses a Go duration ([`super::duration::parse_duration`]); `None` when it is not one.
pub fn parse_duration(text: &str) -> Option<Duration> {
    super::duration::parse_duration(text).ok()
}

/// A duration field the speaker counts in whole seconds: parsed, whole, within
/// `min..=max` seconds (0 passes when `zero_ok`). Each problem names the field and the value.
fn whole_seconds(
    out: &mut Vec<FieldError>,
    field: &str,
    text: &str,
    (min, max): (u64, u64),
    zero_ok: bool,
) -> Option<u64> {
    let d = match super::duration::parse_duration(text) {
        Ok(d) => d,
        Err(e) => {
            err(out, field, e.to_string());
            return None;
        }
    };
    if d.subsec_nanos() != 0 {
        let hint = if d.as_secs() == 0 {
            " (it would be 0)".to_string()
        } else {
            format!(" (it would be {}s)", d.as_secs())
        };
        err(
            out,
            field,
            format!("{text:?} is not a whole number of seconds, which BGP counts in{hint}"),
        );
        return None;
    }
    let secs = d.as_secs();
    if secs == 0 && zero_ok {
        return Some(0);
    }
    if secs < min || secs > max {
        err(
            out,
            field,
            format!("{text:?} must be between {min}s and {max}s"),
        );
        return None;
    }
    Some(secs)
}

/// The hold time proposed when `spec.holdTime` is not set (RFC 4271 suggests 90 s).
pub const DEFAULT_HOLD_TIME: u64 = 90;

/// Timers of a `BGPPeer`: hold, keepalive, connect, OPEN wait, graceful restart time.
fn check_timers(out: &mut Vec<FieldError>, spec: &BGPPeerSpec) {
    let hold = match &spec.hold_time {
        Some(text) => {
            let before = out.len();
            let h = whole_seconds(out, "spec.holdTime", text, (3, 65535), true);
            if h.is_none() && out.len() > before {
                // Keep the RFC's words for the common mistake.
                if let Ok(d) = super::duration::parse_duration(text) {
                    if !d.is_zero() && d < Duration::from_secs(3) {
                        out.truncate(before);
                        err(
                            out,
                            "spec.holdTime",
                            format!("{text:?} must be 0 or at least 3s (RFC 4271 4.2)"),
                        );
                    }
                }
            }
            h
        }
        None => Some(DEFAULT_HOLD_TIME),
    };
    if let Some(text) = &spec.keepalive_time {
        if let Some(k) = whole_seconds(out, "spec.keepaliveTime", text, (1, 65535), false) {
            match hold {
                Some(0) => err(
                    out,
                    "spec.keepaliveTime",
                    format!("{text:?} cannot be honoured: spec.holdTime 0 turns keepalives off"),
                ),
                Some(h) if k >= h => {
                    let hold_text = spec
                        .hold_time
                        .clone()
                        .unwrap_or_else(|| format!("{DEFAULT_HOLD_TIME}s (default)"));
                    err(
                        out,
                        "spec.keepaliveTime",
                        format!("{text:?} must be less than spec.holdTime {hold_text:?}"),
                    );
                }
                _ => {}
            }
        }
    }
    if let Some(text) = &spec.connect_time {
        whole_seconds(out, "spec.connectTime", text, (1, 65535), false);
    }
    if let Some(text) = &spec.open_wait_time {
        match super::duration::parse_duration(text) {
            Err(e) => err(out, "spec.openWaitTime", e.to_string()),
            Ok(d) if d < Duration::from_secs(1) || d > Duration::from_secs(240) => err(
                out,
                "spec.openWaitTime",
                format!("{text:?} must be between 1s and 240s"),
            ),
            Ok(_) => {}
        }
    }
    if let Some(text) = &spec.graceful_restart_time {
        whole_seconds(out, "spec.gracefulRestartTime", text, (1, 4095), false);
        if !spec.enable_graceful_restart {
            err(
                out,
                "spec.gracefulRestartTime",
                format!("{text:?} is set but spec.enableGracefulRestart is false"),
            );
        }
    }
}

/// Validates a `BGPPeer` spec.
pub fn bgp_peer(spec: &BGPPeerSpec, ctx: &Context) -> Vec<FieldError> {
    let mut out = Vec::new();
    if spec.my_asn == 0 {
        err(&mut out, "spec.myASN", "0 is not a valid AS number");
    }
    if spec.peer_asn == 0 {
        err(&mut out, "spec.peerASN", "0 is not a valid AS number");
    }
    let peer: Option<IpAddr> = spec.peer_address.parse().ok();
    if peer.is_none() {
        err(
            &mut out,
            "spec.peerAddress",
            format!("{:?} is not an IP address", spec.peer_address),
        );
    }
    if let Some(src) = &spec.source_address {
        match src.parse::<IpAddr>() {
            Err(_) => err(
                &mut out,
                "spec.sourceAddress",
                format!("{src:?} is not an IP address"),
            ),
            Ok(s) if peer.is_some_and(|p| p.is_ipv4() != s.is_ipv4()) => err(
                &mut out,
                "spec.sourceAddress",
                format!(
                    "{src:?} is not of the family of spec.peerAddress {:?}",
                    spec.peer_address
                ),
            ),
            Ok(_) => {}
        }
    }
    if spec.peer_port == Some(0) {
        err(&mut out, "spec.peerPort", "0 is not a TCP port");
    }
    check_timers(&mut out, spec);
    if spec.enable_gtsm && spec.ebgp_multi_hop {
        err(
            &mut out,
            "spec.enableGTSM",
            "cannot be combined with spec.ebgpMultiHop: GTSM (RFC 5082) accepts only a directly connected peer",
        );
    }
    if spec.max_prefixes == Some(0) {
        err(
            &mut out,
            "spec.maxPrefixes",
            "0 would refuse every route; must be at least 1",
        );
    }
    if let Some(id) = &spec.router_id {
        if id.parse::<std::net::Ipv4Addr>().is_err() {
            err(
                &mut out,
                "spec.routerID",
                format!("{id:?} is not a dotted-quad IPv4 address"),
            );
        }
    }
    if let Some(secret) = &spec.password_secret {
        if secret.name.is_empty() {
            err(&mut out, "spec.passwordSecret.name", "must not be empty");
        }
        if let Some(ns) = &secret.namespace {
            if !ctx.namespace.is_empty() && ns != &ctx.namespace {
                err(
                    &mut out,
                    "spec.passwordSecret.namespace",
                    format!("{ns:?} is not the speaker's namespace {:?}", ctx.namespace),
                );
            }
        }
    }
    if let Some(name) = spec.bfd_profile.as_deref().filter(|n| !n.is_empty()) {
        match ctx.bfd_profiles.get(name) {
            None => err(
                &mut out,
                "spec.bfdProfile",
                format!("no BFDProfile named {name:?} in this namespace"),
            ),
            Some(false) => err(
                &mut out,
                "spec.bfdProfile",
                format!("BFDProfile {name:?} is not Valid (see its status)"),
            ),
            Some(true) => {}
        }
        if ctx.bfd_echo_profiles.contains(name) {
            let multihop = spec.ebgp_multi_hop && spec.my_asn != spec.peer_asn;
            if multihop {
                err(
                    &mut out,
                    "spec.bfdProfile",
                    format!("BFDProfile {name:?} has echoMode, but this eBGP peer is multihop (spec.ebgpMultiHop) and BFD Echo is single hop only (RFC 5883)"),
                );
            } else if peer.is_some_and(|p| p.is_ipv6()) {
                err(
                    &mut out,
                    "spec.bfdProfile",
                    format!("BFDProfile {name:?} has echoMode, which edgelb implements for IPv4 peers only"),
                );
            }
        }
    }
    check_selectors(&mut out, "spec.nodeSelectors", &spec.node_selectors);
    out
}

/// Validates a `BFDProfile` spec: MetalLB's ranges.
pub fn bfd_profile(spec: &super::BFDProfileSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    let ranges = [
        ("spec.receiveInterval", spec.receive_interval, 10, 60_000),
        ("spec.transmitInterval", spec.transmit_interval, 10, 60_000),
        ("spec.detectMultiplier", spec.detect_multiplier, 2, 255),
        ("spec.echoInterval", spec.echo_interval, 10, 60_000),
        ("spec.minimumTtl", spec.minimum_ttl, 1, 254),
    ];
    for (field, value, low, high) in ranges {
        if let Some(v) = value {
            if !(low..=high).contains(&v) {
                err(
                    &mut out,
                    field,
                    format!("{v} is not between {low} and {high}"),
                );
            }
        }
    }
    out
}

/// Whether `text` is `ASN:VALUE` (RFC 1997, two 16-bit numbers) or `large:A:B:C` (RFC 8092,
/// three 32-bit numbers).
pub fn is_community_value(text: &str) -> bool {
    if let Some(rest) = text.strip_prefix("large:") {
        let parts: Vec<&str> = rest.split(':').collect();
        return parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok());
    }
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 2 && parts.iter().all(|p| p.parse::<u16>().is_ok())
}

/// Validates a `BGPAdvertisement` spec.
pub fn bgp_advertisement(spec: &BGPAdvertisementSpec, ctx: &Context) -> Vec<FieldError> {
    let mut out = Vec::new();
    if let Some(l) = spec.aggregation_length {
        if !(0..=32).contains(&l) {
            err(
                &mut out,
                "spec.aggregationLength",
                format!("{l} is not between 0 and 32"),
            );
        }
    }
    if let Some(l) = spec.aggregation_length_v6 {
        if !(0..=128).contains(&l) {
            err(
                &mut out,
                "spec.aggregationLengthV6",
                format!("{l} is not between 0 and 128"),
            );
        }
    }
    for (i, c) in spec.communities.iter().enumerate() {
        if !is_community_value(c) && !ctx.community_aliases.contains(c) {
            err(
                &mut out,
                format!("spec.communities[{i}]"),
                format!("{c:?} is not ASN:VALUE, large:A:B:C or a Community alias"),
            );
        }
    }
    check_selectors(
        &mut out,
        "spec.ipAddressPoolSelectors",
        &spec.ip_address_pool_selectors,
    );
    check_selectors(&mut out, "spec.nodeSelectors", &spec.node_selectors);
    out
}

/// Validates an `L2Advertisement` spec.
pub fn l2_advertisement(spec: &L2AdvertisementSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (i, name) in spec.interfaces.iter().enumerate() {
        // Linux IFNAMSIZ is 16 including the NUL; '/' and whitespace are refused by the kernel.
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\t', '\n']) {
            err(
                &mut out,
                format!("spec.interfaces[{i}]"),
                format!("{name:?} is not a valid interface name"),
            );
        }
    }
    check_selectors(
        &mut out,
        "spec.ipAddressPoolSelectors",
        &spec.ip_address_pool_selectors,
    );
    check_selectors(&mut out, "spec.nodeSelectors", &spec.node_selectors);
    out
}

/// Validates a `Community` spec.
pub fn community(spec: &CommunitySpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, alias) in spec.communities.iter().enumerate() {
        if alias.name.is_empty() {
            err(
                &mut out,
                format!("spec.communities[{i}].name"),
                "must not be empty",
            );
        } else if !seen.insert(alias.name.as_str()) {
            err(
                &mut out,
                format!("spec.communities[{i}].name"),
                format!("{:?} is defined twice", alias.name),
            );
        }
        if !is_community_value(&alias.value) {
            err(
                &mut out,
                format!("spec.communities[{i}].value"),
                format!("{:?} is not ASN:VALUE or large:A:B:C", alias.value),
            );
        }
    }
    out
}

/// The condition type written on every edgelb object.
pub const CONDITION_VALID: &str = "Valid";

/// The `Valid` condition for a list of problems. `previous` keeps `lastTransitionTime` when
/// the status did not change, so a repeated validation writes nothing new.
pub fn valid_condition(
    problems: &[FieldError],
    generation: Option<i64>,
    now: Time,
    previous: &[Condition],
) -> Condition {
    let (status, reason, message) = if problems.is_empty() {
        ("True", "Valid", "spec accepted".to_string())
    } else {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        ("False", "InvalidSpec", list.join("; "))
    };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == CONDITION_VALID && c.status == status)
        .map_or(now, |c| c.last_transition_time.clone());
    Condition {
        type_: CONDITION_VALID.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
