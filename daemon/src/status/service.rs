//! The `status.loadBalancer` each Service should carry, and the server-side-apply body that
//! sets it. Pure: the writer compares and sends.

use k8s_openapi::api::core::v1::LoadBalancerIngress;
use serde_json::{json, Value};

use super::pass_through::{decide, requested, Frontend};
use crate::ipam::Outcome;
use crate::service::ServiceFacts;

/// The ingress list the Service should have: one entry per IP, or none without an IP.
/// `frontend` is what fronts the IPs' pool: the ipMode is [`decide`]d from it and the
/// Service's pass-through request (`VIP` on every self-announced pool).
pub fn desired_ingress(
    svc: &ServiceFacts,
    outcome: Option<&Outcome>,
    frontend: Frontend,
) -> Vec<LoadBalancerIngress> {
    let mode = decide(frontend, requested(svc)).mode.as_str();
    match outcome {
        Some(Ok(a)) => a
            .ips
            .iter()
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some(mode.to_string()),
                ..Default::default()
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The ingress list the Service has now.
pub fn current_ingress(svc: &ServiceFacts) -> Vec<LoadBalancerIngress> {
    svc.ingress_entries()
}

/// The apply body for the status subresource (field manager `edgelb` owns the ingress list).
pub fn apply_body(ingress: &[LoadBalancerIngress]) -> Value {
    let lb = if ingress.is_empty() {
        json!({})
    } else {
        json!({ "ingress": ingress })
    };
    json!({ "apiVersion": "v1", "kind": "Service", "status": { "loadBalancer": lb } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::annotations::{ELB_PASS_THROUGH, PASS_THROUGH};
    use crate::fixtures::{annotate, facts, service};
    use crate::ipam::{Allocation, AllocationError};

    fn ok(ips: &[&str]) -> Outcome {
        Ok(Allocation {
            pool: "a".into(),
            ips: ips.iter().map(|i| i.parse().expect("ip")).collect(),
        })
    }

    #[test]
    fn ingress_is_vip_unless_a_proxying_load_balancer_passes_through() {
        let svc = service("default", "web", 80);
        let vip = desired_ingress(
            &facts(&svc),
            Some(&ok(&["192.0.2.1", "2001:db8::1"])),
            Frontend::SelfAnnounced,
        );
        assert_eq!(
            apply_body(&vip),
            json!({"apiVersion": "v1", "kind": "Service", "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.1", "ipMode": "VIP"}, {"ip": "2001:db8::1", "ipMode": "VIP"}]}}})
        );
        for key in [PASS_THROUGH, ELB_PASS_THROUGH] {
            let asks = annotate(service("default", "web", 80), key, "true");
            let mode = |f| {
                desired_ingress(&facts(&asks), Some(&ok(&["192.0.2.1"])), f)[0]
                    .ip_mode
                    .clone()
            };
            // Self-announced: the request cannot be honoured without a blackhole.
            assert_eq!(
                mode(Frontend::SelfAnnounced).as_deref(),
                Some("VIP"),
                "{key}"
            );
            assert_eq!(
                mode(Frontend::ProxyingLoadBalancer).as_deref(),
                Some("Proxy"),
                "{key}"
            );
        }
        let not = annotate(service("default", "web", 80), PASS_THROUGH, "yes");
        assert_eq!(
            desired_ingress(
                &facts(&not),
                Some(&ok(&["192.0.2.1"])),
                Frontend::ProxyingLoadBalancer
            )[0]
            .ip_mode
            .as_deref(),
            Some("VIP")
        );
    }

    #[test]
    fn no_ip_means_an_empty_load_balancer_status() {
        let svc = service("default", "web", 80);
        assert!(desired_ingress(
            &facts(&svc),
            Some(&Err(AllocationError::NoEligiblePool)),
            Frontend::SelfAnnounced
        )
        .is_empty());
        assert_eq!(
            apply_body(&[]),
            json!({"apiVersion": "v1", "kind": "Service", "status": {"loadBalancer": {}}})
        );
    }
}
