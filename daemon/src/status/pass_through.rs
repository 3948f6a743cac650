//! Pass-through (`ipMode: Proxy`) only where a proxying load balancer fronts the IP.
//!
//! `ipMode: Proxy` tells kube-proxy to install no shortcut for the IP: in-cluster clients
//! then send their packets to the IP itself and rely on whatever owns it to proxy them.
//! On a pool the speakers announce themselves (BGP, ARP, NDP), nothing of ours proxies:
//! the packets reach one announcing node, which (with `Proxy`) has no rule for the IP
//! either, and the Service is a blackhole from inside the cluster. So:
//!
//! - [`frontend`] says what fronts a pool's IPs. Today every pool is
//!   [`Frontend::SelfAnnounced`]; a cloud load balancer (issue 15) returns
//!   [`Frontend::ProxyingLoadBalancer`] there, where `Proxy` is right.
//! - [`decide`] is the one rule: `Proxy` only when the Service asks for it *and* a proxying
//!   load balancer fronts the pool; a request on a self-announced pool is refused.
//! - A refused request is told on the Service: condition [`CONDITION`] `False` (reason
//!   [`IGNORED`]) and a Warning Event [`IGNORED`], both naming the Service, the annotation
//!   and the pool. Pure: the writer compares [`desired`] with [`current`] and sends.
//!
//! What MetalLB and Cilium do: both leave `ipMode` unset on the IPs they announce
//! (`nil` means `VIP`) and have no pass-through switch; cloud controllers (OpenStack's,
//! Hetzner's) set `Proxy` only when their load balancer proxies (PROXY protocol).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{json, Value};

use crate::api::annotations::{ELB_PASS_THROUGH, PASS_THROUGH};
use crate::api::IPAddressPool;
use crate::service::ServiceFacts;
use crate::snapshot::SnapshotData;

/// The Service condition about pass-through (present only while the Service asks).
pub const CONDITION: &str = "edgelb.io/PassThrough";
/// Reason of the condition and of the Warning Event when the request is refused.
pub const IGNORED: &str = "PassThroughIgnored";
/// Reason of the condition when a proxying load balancer honours the request.
pub const PROXIED: &str = "ProxiedByLoadBalancer";
/// The field manager of the condition (apart from `status.loadBalancer`'s, so neither
/// apply removes the other's field).
pub const FIELD_MANAGER: &str = "edgelb-pass-through";

/// What fronts a pool's IPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    /// The speakers announce the IPs themselves (BGP, ARP, NDP); kube-proxy on the node
    /// that receives a packet is what forwards it.
    SelfAnnounced,
    /// A load balancer that terminates and proxies the traffic (a cloud load balancer).
    ProxyingLoadBalancer,
}

/// What fronts `pool`'s IPs. Every pool is announced by the speakers today; the seam for
/// cloud load balancers (issue 15).
pub fn frontend(_pool: &IPAddressPool) -> Frontend {
    Frontend::SelfAnnounced
}

/// What fronts the pool named `pool` in the snapshot; an unknown pool (an IP seeded from
/// the record before its pool is checked) counts as self-announced, whose `VIP` is safe.
pub fn frontend_of(snap: &SnapshotData, pool: &str) -> Frontend {
    snap.pools
        .iter()
        .find(|(k, _)| &*k.name == pool)
        .map_or(Frontend::SelfAnnounced, |(_, p)| frontend(&p.object))
}

/// The annotation by which the Service asks for pass-through (`"true"`), if any.
pub fn requested(svc: &ServiceFacts) -> Option<&'static str> {
    [PASS_THROUGH, ELB_PASS_THROUGH]
        .into_iter()
        .find(|k| svc.annotation(k) == Some("true"))
}

/// `status.loadBalancer.ingress[].ipMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpMode {
    /// kube-proxy routes in-cluster traffic to the IP locally.
    Vip,
    /// kube-proxy leaves the IP to the load balancer in front.
    Proxy,
}

impl IpMode {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IpMode::Vip => "VIP",
            IpMode::Proxy => "Proxy",
        }
    }
}

/// The ipMode of a Service's IPs, and the request refused, if one was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The mode written.
    pub mode: IpMode,
    /// The annotation whose request is refused (a self-announced pool).
    pub refused: Option<&'static str>,
}

/// The rule: `Proxy` only when asked and a proxying load balancer fronts the pool.
pub fn decide(frontend: Frontend, request: Option<&'static str>) -> Decision {
    match (frontend, request) {
        (Frontend::ProxyingLoadBalancer, Some(_)) => Decision {
            mode: IpMode::Proxy,
            refused: None,
        },
        (Frontend::SelfAnnounced, Some(annotation)) => Decision {
            mode: IpMode::Vip,
            refused: Some(annotation),
        },
        (_, None) => Decision {
            mode: IpMode::Vip,
            refused: None,
        },
    }
}

/// The Warning Event's note (and the condition's message) for a refused request.
pub fn refusal_message(service: &str, annotation: &str, pool: &str) -> String {
    format!(
        "annotation {annotation}=\"true\" on Service {service} is ignored: pool {pool} is \
         announced by the edgelb speakers themselves (BGP/ARP/NDP) with no proxying load \
         balancer in front, and ipMode Proxy would make kube-proxy skip the IP so that \
         in-cluster clients reach a node that may not own it; ipMode stays VIP"
    )
}

/// The condition the Service should carry, given its pool (when it has an IP). `None`:
/// no condition (the Service does not ask).
pub fn desired(svc: &ServiceFacts, pool: &str, frontend: Frontend, now: Time) -> Option<Condition> {
    let request = requested(svc)?;
    let d = decide(frontend, Some(request));
    let service = format!("{}/{}", svc.key.namespace, svc.key.name);
    let (status, reason, message) = match d.refused {
        Some(annotation) => (
            "False",
            IGNORED,
            refusal_message(&service, annotation, pool),
        ),
        None => (
            "True",
            PROXIED,
            format!("a proxying load balancer fronts pool {pool}: ipMode Proxy"),
        ),
    };
    Some(Condition {
        type_: CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: svc.generation,
        last_transition_time: now,
    })
}

/// The pass-through condition the Service carries now.
pub fn current(svc: &ServiceFacts) -> Option<&Condition> {
    svc.pass_through.as_deref()
}

/// The status apply body of [`FIELD_MANAGER`]: the condition, or none (which removes the
/// one this manager wrote).
pub fn apply_body(name: &str, condition: Option<&Condition>) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name },
        "status": { "conditions": condition.into_iter().collect::<Vec<_>>() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{annotate, facts, service};
    use k8s_openapi::jiff::Timestamp;
    use proptest::prelude::*;

    fn frontends() -> impl Strategy<Value = Frontend> {
        prop_oneof![
            Just(Frontend::SelfAnnounced),
            Just(Frontend::ProxyingLoadBalancer)
        ]
    }

    fn annotations() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        let key = prop_oneof![
            Just(PASS_THROUGH),
            Just(ELB_PASS_THROUGH),
            Just("edgelb.io/address-pool"),
            Just("example.com/pass-through"),
        ];
        let value = prop_oneof![
            Just("true".to_string()),
            Just("false".to_string()),
            Just("True".to_string()),
            "[a-z]{0,5}",
        ];
        proptest::collection::vec((key, value), 0..4)
    }

    proptest! {
        /// A self-announced pool's IPs are `VIP` whatever the Service says; `Proxy` only
        /// when asked and a proxying load balancer is in front; a request is refused
        /// exactly when it cannot be honoured.
        #[test]
        fn proxy_only_behind_a_proxying_load_balancer(
            f in frontends(),
            anns in annotations(),
        ) {
            let mut svc = service("default", "web", 80);
            for (k, v) in &anns {
                svc = annotate(svc, k, v);
            }
            let request = requested(&facts(&svc));
            let d = decide(f, request);
            prop_assert_eq!(
                d.mode == IpMode::Proxy,
                f == Frontend::ProxyingLoadBalancer && request.is_some()
            );
            prop_assert_eq!(d.refused.is_some(), f == Frontend::SelfAnnounced && request.is_some());
            if f == Frontend::SelfAnnounced {
                prop_assert_eq!(d.mode, IpMode::Vip);
            }
            let cond = desired(&facts(&svc), "lan", f, Time(Timestamp::now()));
            prop_assert_eq!(cond.is_some(), request.is_some());
            if let (Some(c), Some(a)) = (&cond, d.refused) {
                prop_assert_eq!(c.status.as_str(), "False");
                prop_assert_eq!(c.reason.as_str(), IGNORED);
                prop_assert!(c.message.contains(a) && c.message.contains("default/web"));
            }
        }
    }

    #[test]
    fn only_the_exact_value_true_asks() {
        for key in [PASS_THROUGH, ELB_PASS_THROUGH] {
            let svc = annotate(service("default", "web", 80), key, "true");
            assert_eq!(requested(&facts(&svc)), Some(key));
        }
        let svc = annotate(service("default", "web", 80), PASS_THROUGH, "yes");
        assert_eq!(requested(&facts(&svc)), None);
    }

    #[test]
    fn the_refusal_names_service_annotation_and_pool() {
        let svc = annotate(service("shop", "web", 80), ELB_PASS_THROUGH, "true");
        let c = desired(
            &facts(&svc),
            "lan",
            Frontend::SelfAnnounced,
            Time(Timestamp::now()),
        )
        .expect("a condition");
        assert_eq!(c.type_, CONDITION);
        assert!(
            c.message.starts_with(
                "annotation kubernetes.io/elb.pass-through=\"true\" on Service shop/web is \
                 ignored: pool lan is announced"
            ),
            "{}",
            c.message
        );
        assert!(c.message.len() < 1024, "fits an Event note");
        assert_eq!(
            apply_body("web", Some(&c))["status"]["conditions"][0]["reason"],
            IGNORED
        );
        assert_eq!(apply_body("web", None)["status"]["conditions"], json!([]));
    }
}
