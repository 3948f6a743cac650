use super::*;
use crate::fixtures::{pool, service};
use crate::ipam::{allocate, AllocationKey};
use crate::mock_api::{scripted, Call};
use crate::snapshot::{Object, Selection, Store};
use crate::status::changes::diff;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

const NS: &str = "edgelb-system";

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).expect("ts"))
}

fn cluster(objects: Vec<Object>) -> Snapshot {
    let mut store = Store::default();
    for o in objects {
        store.apply(o, NS);
    }
    store.snapshot(&Selection::default())
}

const SVC_STATUS: &str =
    "/api/v1/namespaces/default/services/web/status?&force=true&fieldManager=edgelb";

#[tokio::test]
async fn service_status_is_applied_once_with_the_exact_body() {
    let snap = cluster(vec![
        Object::IPAddressPool(pool(NS, "lan", &["192.0.2.0/30"])),
        Object::Service(service("default", "web", 80)),
    ]);
    let a = allocate(&snap, &Assignments::default());
    let (client, server) = scripted(vec![Call::new("PATCH", SVC_STATUS, 200, json!({}))
        .with_body(json!({
            "apiVersion": "v1", "kind": "Service",
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.0", "ipMode": "VIP"}]}}
        }))]);
    let mut w = StatusWriter::new(client, "node-a", Duration::from_secs(2));
    let mut out = Written::default();
    w.write_services(&snap, &a, &mut out).await;
    assert_eq!(
        out,
        Written {
            services: 1,
            ..Default::default()
        }
    );
    // The watch has not yet delivered the new status: nothing is sent again.
    let mut again = Written::default();
    w.write_services(&snap, &a, &mut again).await;
    assert_eq!(again, Written::default());
    server.await.expect("every call came");
}

#[tokio::test]
async fn a_service_that_already_carries_its_ip_is_not_written() {
    let mut svc = service("default", "web", 80);
    svc.status = Some(k8s_openapi::api::core::v1::ServiceStatus {
        load_balancer: Some(k8s_openapi::api::core::v1::LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("192.0.2.0".into()),
                ip_mode: Some("VIP".into()),
                ..Default::default()
            }]),
        }),
        conditions: None,
    });
    let snap = cluster(vec![
        Object::IPAddressPool(pool(NS, "lan", &["192.0.2.0/30"])),
        Object::Service(svc),
    ]);
    let a = allocate(&snap, &Assignments::from_status(&snap));
    let (client, server) = scripted(vec![]);
    let mut w = StatusWriter::new(client, "node-a", Duration::from_secs(2));
    let mut out = Written::default();
    w.write_services(&snap, &a, &mut out).await;
    assert_eq!(out, Written::default());
    server.await.expect("no call expected");
}

#[tokio::test]
async fn a_failed_write_is_counted_and_retried_next_round() {
    let snap = cluster(vec![
        Object::IPAddressPool(pool(NS, "lan", &["192.0.2.0/30"])),
        Object::Service(service("default", "web", 80)),
    ]);
    let a = allocate(&snap, &Assignments::default());
    let (client, server) = scripted(vec![
        Call::new(
            "PATCH",
            SVC_STATUS,
            500,
            crate::mock_api::status_error(500, "InternalError"),
        ),
        Call::new("PATCH", SVC_STATUS, 200, json!({})),
    ]);
    let mut w = StatusWriter::new(client, "node-a", Duration::from_secs(2));
    let mut first = Written::default();
    w.write_services(&snap, &a, &mut first).await;
    assert_eq!(first.failed, 1);
    let mut second = Written::default();
    w.write_services(&snap, &a, &mut second).await;
    assert_eq!(second.services, 1);
    server.await.expect("every call came");
}

#[tokio::test]
async fn conditions_of_a_valid_and_an_invalid_pool_are_applied() {
    let snap = cluster(vec![
        Object::IPAddressPool(pool(NS, "bad", &["10.0.0.300/24"])),
        Object::IPAddressPool(pool(NS, "good", &["192.0.2.0/30"])),
    ]);
    let url = |n: &str| {
        format!("/apis/edgelb.io/v1alpha1/namespaces/{NS}/ipaddresspools/{n}/status?&force=true&fieldManager=edgelb")
    };
    let (client, server) = scripted(vec![
        Call::new("PATCH", url("bad"), 200, json!({})).with_body(json!({
            "apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
            "status": {"conditions": [{"type": "Valid", "status": "False", "reason": "InvalidSpec",
                "message": "spec.addresses[0]: \"10.0.0.300/24\" is not a CIDR or range",
                "lastTransitionTime": "2023-11-14T22:13:20Z"}]}
        })),
        // Valid=False also gets a Warning Event on the pool, naming field and value.
        Call::new(
            "POST",
            format!("/apis/events.k8s.io/v1/namespaces/{NS}/events?"),
            201,
            json!({}),
        )
        .check_body(|b| {
            assert_eq!(b["type"], "Warning");
            assert_eq!(b["reason"], "InvalidSpec");
            assert_eq!(b["regarding"]["kind"], "IPAddressPool");
            assert_eq!(b["regarding"]["apiVersion"], "edgelb.io/v1alpha1");
            assert_eq!(b["regarding"]["name"], "bad");
            assert_eq!(
                b["note"],
                "spec.addresses[0]: \"10.0.0.300/24\" is not a CIDR or range"
            );
        }),
        Call::new("PATCH", url("good"), 200, json!({})).check_body(|b| {
            assert_eq!(b["status"]["conditions"][0]["status"], "True");
            assert_eq!(b["status"]["conditions"][0]["message"], "spec accepted");
        }),
    ]);
    let w = StatusWriter::new(client, "node-a", Duration::from_secs(2));
    let mut out = Written::default();
    w.write_conditions(&snap, now(), &mut out).await;
    assert_eq!(out.conditions, 2);
    assert_eq!(out.events, 1);
    server.await.expect("every call came");
}

#[tokio::test]
async fn events_are_emitted_on_the_service_for_each_decision() {
    let snap = cluster(vec![
        Object::IPAddressPool(pool(NS, "lan", &["192.0.2.0/32"])),
        Object::Service(service("default", "a", 80)),
        Object::Service(service("default", "b", 80)),
    ]);
    let a = allocate(&snap, &Assignments::default());
    let changes = diff(&Assignments::default(), &a);
    assert_eq!(changes.len(), 2);
    let ev = |reason: &'static str, kind: &'static str, note: &'static str, name: &'static str| {
        Call::new(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/default/events?",
            201,
            json!({}),
        )
        .check_body(move |b| {
            assert_eq!(b["reason"], reason);
            assert_eq!(b["type"], kind);
            assert_eq!(b["note"], note);
            assert_eq!(b["regarding"]["kind"], "Service");
            assert_eq!(b["regarding"]["name"], name);
            assert_eq!(b["reportingController"], "edgelb");
            assert_eq!(b["reportingInstance"], "node-a");
        })
    };
    let (client, server) = scripted(vec![
        ev(
            "IPAllocated",
            "Normal",
            "assigned IP 192.0.2.0 from pool lan",
            "a",
        ),
        ev(
            "AllocationFailed",
            "Warning",
            "no IP assigned: no free address in IPAddressPool \"lan\"",
            "b",
        ),
    ]);
    let w = StatusWriter::new(client, "node-a", Duration::from_secs(2));
    let mut out = Written::default();
    w.write_events(&snap, &changes, &mut out).await;
    assert_eq!(out.events, 2);
    assert_eq!(
        changes[0].key(),
        &AllocationKey::cluster(crate::snapshot::ObjectKey::new("default", "a"))
    );
    server.await.expect("every call came");
}

/// A `PolicyRoute` (cluster-scoped) that does not decode gets `Valid=False` on its own
/// status URL (no namespace in the path) and a Warning Event.
#[tokio::test]
async fn an_undecodable_policy_route_gets_valid_false_and_a_warning() {
    let raw = json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "PolicyRoute",
        "metadata": {"name": "r", "uid": "u-1", "generation": 4},
        "spec": {"table": 4, "gateways": ["10.0.0.1.5"]}});
    let crate::source::decode::Lenient::Undecodable(object) =
        crate::source::decode::decode::<crate::api::PolicyRoute>(raw)
    else {
        panic!("decoded");
    };
    let snap = cluster(vec![Object::Undecodable {
        kind: "PolicyRoute",
        object,
    }]);
    let (client, server) = scripted(vec![
        Call::new(
            "PATCH",
            "/apis/edgelb.io/v1alpha1/policyroutes/r/status?&force=true&fieldManager=edgelb",
            200,
            json!({}),
        )
        .check_body(|b| {
            let c = &b["status"]["conditions"][0];
            assert_eq!(c["type"], "Valid");
            assert_eq!(c["status"], "False");
            assert_eq!(c["observedGeneration"], 4);
            assert_eq!(
                c["message"],
                "spec.gateways[0]: \"10.0.0.1.5\" cannot be read: invalid IP address syntax"
            );
        }),
        Call::new(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/default/events?",
            201,
            json!({}),
        )
        .check_body(|b| {
            assert_eq!(b["type"], "Warning");
            assert_eq!(b["regarding"]["kind"], "PolicyRoute");
            assert_eq!(b["regarding"]["uid"], "u-1");
        }),
    ]);
    let w = StatusWriter::new(client, "node-a", Duration::from_secs(2));
    let mut out = Written::default();
    w.write_conditions(&snap, now(), &mut out).await;
    assert_eq!((out.conditions, out.events, out.failed), (1, 1, 0));
    server.await.expect("every call came");
}
