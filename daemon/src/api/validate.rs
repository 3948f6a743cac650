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
    out
}

/// Parses a Go-style duration (`90s`, `1m30s`, `500ms`, `1h`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        total = total.checked_add(unit.checked_mul(u32::try_from(n).ok()?)?)?;
        rest = &rest[len..];
    }
    Some(total)
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
    let hold = spec.hold_time.as_ref().map(|t| (t, parse_duration(t)));
    if let Some((text, parsed)) = &hold {
        match parsed {
            None => err(
                &mut out,
                "spec.holdTime",
                format!("{text:?} is not a duration"),
            ),
            // RFC 4271 section 4.2: the hold time MUST be either zero or at least three seconds.
            Some(d) if !d.is_zero() && *d < Duration::from_secs(3) => err(
                &mut out,
                "spec.holdTime",
                format!("{text:?} must be 0 or at least 3s (RFC 4271 4.2)"),
            ),
            Some(d) if *d > Duration::from_secs(65535) => err(
                &mut out,
                "spec.holdTime",
                format!("{text:?} exceeds 65535s"),
            ),
            Some(_) => {}
        }
    }
    if let Some(text) = &spec.keepalive_time {
        match parse_duration(text) {
            None => err(
                &mut out,
                "spec.keepaliveTime",
                format!("{text:?} is not a duration"),
            ),
            Some(k) => {
                if let Some((hold_text, Some(h))) = &hold {
                    if !h.is_zero() && k >= *h {
                        err(
                            &mut out,
                            "spec.keepaliveTime",
                            format!("{text:?} must be less than spec.holdTime {hold_text:?}"),
                        );
                    }
                }
            }
        }
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
    }
    check_selectors(&mut out, "spec.nodeSelectors", &spec.node_selectors);
    out
}

/// Validates a `BFDProfile` spec: MetalLB's ranges, and no Echo mode (not implemented).
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
    if spec.echo_mode {
        err(
            &mut out,
            "spec.echoMode",
            "true is not supported: edgelb's BFD runs asynchronous mode without Echo",
        );
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
