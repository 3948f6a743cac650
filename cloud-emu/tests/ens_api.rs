//! The ENS client and provider against the emulator process: lifecycle, drift, user-managed
//! load balancers, throttling storms, faults during create, and the gateway's refusals.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use edgelb_cloud::ens::{api, sign};
use edgelb_cloud::model::{Action, Protocol};
use edgelb_cloud::plan::{ANNOTATION_LB_ID, ANNOTATION_MANAGED_BY_USER};
use edgelb_cloud::provider::{ConvergeOptions, LoadBalancerProvider};
use serde_json::json;
use support::*;

fn opts() -> ConvergeOptions {
    ConvergeOptions {
        max_rounds: 40,
        poll: Duration::from_millis(60),
    }
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test took over 60 s")
}

#[tokio::test]
async fn lifecycle_create_repair_drift_follow_nodes_and_ports_then_delete_everything() {
    let emu = Emulator::start(&[]);
    emu.register(&[("i-cd1", "10.0.1.2"), ("i-cd2", "10.0.1.3")]);
    let p = emu.provider();
    bounded(async {
        let i = input("cube-svc", &[("n1", "i-cd1"), ("n2", "i-cd2")]);
        let d = desired(&i);
        let r = p.ensure(&d, &opts()).await.unwrap();
        assert!(r.converged, "{r:?}");
        let inv = emu.inventory();
        assert_eq!(count(&inv, "LoadBalancers"), 1);
        assert_eq!(count(&inv, "EipAddresses"), 1);
        let lb = &inv["LoadBalancers"][0];
        assert_eq!(lb["LoadBalancerName"], "k8s/cube-svc/default/np-cd/c-emu");
        assert_eq!(lb["Listeners"], json!(["tcp/80", "udp/53"]));
        assert_eq!(lb["BackendServers"], json!({"i-cd1": 100, "i-cd2": 100}));
        assert_eq!(
            r.ingress.as_deref(),
            inv["EipAddresses"][0]["IpAddress"].as_str()
        );

        // Drift: someone deletes a listener and a backend in the console; both come back.
        let lb_id = lb["LoadBalancerId"].as_str().unwrap().to_string();
        api::listener_call(
            p.client(),
            "DeleteLoadBalancerListener",
            &lb_id,
            (Protocol::Udp, 53),
        )
        .await
        .unwrap();
        api::backend_call(
            p.client(),
            "RemoveBackendServers",
            &lb_id,
            &[("i-cd2".into(), None)],
        )
        .await
        .unwrap();
        let r = p.ensure(&d, &opts()).await.unwrap();
        assert!(r.converged);
        let verbs: Vec<_> = r.actions.iter().map(Action::verb).collect();
        assert_eq!(verbs, ["CreateListener", "AddBackends", "StartListener"]);

        // A node leaves the pool and the UDP port goes away.
        let mut i2 = input("cube-svc", &[("n1", "i-cd1")]);
        i2.ports.truncate(1);
        let r = p.ensure(&desired(&i2), &opts()).await.unwrap();
        let verbs: Vec<_> = r.actions.iter().map(Action::verb).collect();
        assert_eq!(verbs, ["DeleteListener", "RemoveBackends"]);
        let inv = emu.inventory();
        assert_eq!(inv["LoadBalancers"][0]["Listeners"], json!(["tcp/80"]));
        assert_eq!(
            inv["LoadBalancers"][0]["BackendServers"],
            json!({"i-cd1": 100})
        );

        // The Service goes: everything we made goes, EIP unbound first.
        let r = p.delete(&d.target, &opts()).await.unwrap();
        assert!(r.converged);
        let verbs: Vec<_> = r.actions.iter().map(Action::verb).collect();
        assert_eq!(
            verbs,
            ["UnassociateEip", "ReleaseLoadBalancer", "ReleaseEip"]
        );
    })
    .await;
    let leaks = emu.stop();
    assert_eq!(
        (
            count(&leaks, "LoadBalancers"),
            count(&leaks, "EipAddresses")
        ),
        (0, 0),
        "{leaks}"
    );
}

#[tokio::test]
async fn a_users_load_balancer_keeps_its_instance_eip_and_own_backends() {
    let emu = Emulator::start(&[]);
    emu.register(&[("i-cd1", "10.0.1.2"), ("i-user", "10.0.1.9")]);
    let p = emu.provider();
    bounded(async {
        let c = p.client();
        let net = edgelb_cloud::model::NetworkRef {
            region: "cn-chengdu-telecom".into(),
            network_id: "n-emu1".into(),
            vswitch_id: "vsw-emu1".into(),
        };
        let lb_id = api::create_load_balancer(c, "users-own", &net, "elb.s1.small", "t1")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        api::backend_call(
            c,
            "AddBackendServers",
            &lb_id,
            &[("i-user".into(), Some(40))],
        )
        .await
        .unwrap();
        api::create_listener(
            c,
            &lb_id,
            (Protocol::Tcp, 8443),
            &support::listener(31443),
            "user's",
        )
        .await
        .unwrap();
        let eip = api::create_eip(c, "users-eip", "cn-chengdu-telecom", 5)
            .await
            .unwrap();
        api::associate_eip(c, &eip, &lb_id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;

        let mut i = input("shop", &[("n1", "i-cd1")]);
        i.pool_service_annotations
            .insert(ANNOTATION_LB_ID.into(), lb_id.clone());
        i.service_annotations
            .insert(ANNOTATION_MANAGED_BY_USER.into(), "true".into());
        let d = desired(&i);
        let r = p.ensure(&d, &opts()).await.unwrap();
        assert!(r.converged, "{r:?}");
        let verbs: Vec<_> = r.actions.iter().map(Action::verb).collect();
        assert_eq!(
            verbs,
            ["AddBackends"],
            "listeners are the user's unless force-override"
        );
        let ip = emu.inventory()["EipAddresses"][0]["IpAddress"].clone();
        assert_eq!(
            r.ingress.as_deref(),
            ip.as_str(),
            "the user's EIP is the ingress"
        );

        let r = p.delete(&d.target, &opts()).await.unwrap();
        assert!(r.converged);
        let inv = emu.inventory();
        assert_eq!(
            count(&inv, "LoadBalancers"),
            1,
            "a user's instance is never released"
        );
        assert_eq!(count(&inv, "EipAddresses"), 1);
        assert_eq!(
            inv["LoadBalancers"][0]["BackendServers"],
            json!({"i-user": 40})
        );
        assert_eq!(inv["LoadBalancers"][0]["Listeners"], json!(["tcp/8443"]));
    })
    .await;
}

#[tokio::test]
async fn a_throttling_storm_is_ridden_out_with_backoff_and_no_duplicates() {
    // 15 calls a second per action for the account; eight Services at once.
    let emu = Emulator::start(&["--limit", "*=15"]);
    emu.register(&[("i-cd1", "10.0.1.2"), ("i-cd2", "10.0.1.3")]);
    // The client's own bucket (200/s, as if several writers shared the account) is far above
    // the account's limit, so the cloud throttles and the retries (full jitter, up to 1 s)
    // carry the calls through.
    let p = edgelb_cloud::ens::EnsProvider::new(emu.client_with(|c| {
        c.rate_per_sec = 200.0;
        c.burst = 50;
        c.retry.max_attempts = 12;
        c.retry.base = Duration::from_millis(50);
        c.retry.max = Duration::from_secs(1);
    }));
    let services: Vec<_> = (0..8)
        .map(|n| {
            desired(&input(
                &format!("svc{n}"),
                &[("n1", "i-cd1"), ("n2", "i-cd2")],
            ))
        })
        .collect();
    let started = std::time::Instant::now();
    let o = opts();
    // As the writer of record does: a Service whose ensure failed (retries used up) or ran
    // out of rounds is requeued.
    let requeues = std::sync::atomic::AtomicU32::new(0);
    bounded(futures::future::join_all(services.iter().map(|d| async {
        loop {
            match p.ensure(d, &o).await {
                Ok(r) if r.converged => break,
                _ => requeues.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            };
        }
    })))
    .await;
    let requeues = requeues.into_inner();
    let inv = emu.inventory();
    assert_eq!(
        (count(&inv, "LoadBalancers"), count(&inv, "EipAddresses")),
        (8, 8)
    );
    let stats = emu.control("GET", "/control/stats", &serde_json::Value::Null);
    let throttled: u64 = stats
        .as_object()
        .unwrap()
        .values()
        .filter_map(|codes| codes.get("Throttling.User").and_then(|n| n.as_u64()))
        .sum();
    let client = p.client().stats();
    let calls: u64 = client.values().map(|s| s.ok).sum();
    let retried: u64 = client.values().map(|s| s.retried).sum();
    println!(
        "storm: 8 Services converged in {:?}, {calls} calls ({:.1} per Service), {throttled} throttled, {retried} retried, {requeues} requeued",
        started.elapsed(),
        calls as f64 / 8.0
    );
    assert!(throttled > 0, "the storm never hit the limit: {stats}");
    // Exactly one instance and one EIP per Service, whatever was retried or requeued.
    assert_eq!(
        (count(&inv, "LoadBalancers"), count(&inv, "EipAddresses")),
        (8, 8)
    );
}

#[tokio::test]
async fn faults_during_create_end_with_one_of_each_adopted_and_none_leaked() {
    let emu = Emulator::start(&[]);
    emu.register(&[("i-cd1", "10.0.1.2")]);
    // The create succeeds but its answer is lost (500): the retry's ClientToken returns the
    // same instance. The EIP create answers too late: the retry makes a second EIP, which
    // the next round finds by name and releases.
    emu.control(
        "POST",
        "/control/faults",
        &json!({"Action": "CreateLoadBalancer", "Kind": "commit-then-500"}),
    );
    emu.control(
        "POST",
        "/control/faults",
        &json!({"Action": "CreateEipInstance", "Kind": "timeout", "DelayMs": 900}),
    );
    emu.control(
        "POST",
        "/control/faults",
        &json!({"Action": "AddBackendServers", "Kind": "503", "Count": 2}),
    );
    let p = edgelb_cloud::ens::EnsProvider::new(
        emu.client_with(|c| c.timeout = Duration::from_millis(400)),
    );
    bounded(async {
        let d = desired(&input("cube-svc", &[("n1", "i-cd1")]));
        let r = p.ensure(&d, &opts()).await.unwrap();
        assert!(r.converged, "{r:?}");
        let inv = emu.inventory();
        assert_eq!(
            (count(&inv, "LoadBalancers"), count(&inv, "EipAddresses")),
            (1, 1),
            "{inv}"
        );
        assert!(
            r.actions
                .iter()
                .any(|a| matches!(a, Action::ReleaseEip { .. })),
            "{:?}",
            r.actions
        );

        // A speaker killed right after CreateLoadBalancer: the instance exists, nothing
        // recorded it. A fresh provider finds it by name and adopts it.
        let d2 = desired(&input("crashed", &[("n1", "i-cd1")]));
        let net = d2.network.clone();
        api::create_load_balancer(p.client(), &d2.target.name, &net, "elb.s2.medium", "lost")
            .await
            .unwrap();
        let fresh = emu.provider();
        let r = fresh.ensure(&d2, &opts()).await.unwrap();
        assert!(r.converged);
        assert!(!r
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateLoadBalancer { .. })));
        assert_eq!(count(&emu.inventory(), "LoadBalancers"), 2);
        fresh.delete(&d.target, &opts()).await.unwrap();
        fresh.delete(&d2.target, &opts()).await.unwrap();
    })
    .await;
    let leaks = emu.stop();
    assert_eq!(
        (
            count(&leaks, "LoadBalancers"),
            count(&leaks, "EipAddresses")
        ),
        (0, 0),
        "{leaks}"
    );
}

/// A raw signed request (so a test can forge, replay and backdate).
fn raw(
    emu: &Emulator,
    params: &BTreeMap<String, String>,
    secret: &str,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let sig = sign::signature(secret, "POST", params);
    let q = format!(
        "{}&Signature={}",
        sign::canonical_query(params),
        sign::percent_encode(&sig)
    );
    let mut s = std::net::TcpStream::connect(emu.addr).unwrap();
    write!(
        s,
        "POST /?{q} HTTP/1.0\r\nHost: emu\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap(),
    )
}

#[tokio::test]
async fn forged_replayed_and_stale_requests_are_refused_with_the_gateways_codes() {
    let emu = Emulator::start(&[]);
    let mut p: BTreeMap<String, String> = [
        ("Action", "DescribeLoadBalancers"),
        ("Version", "2017-11-10"),
        ("Format", "JSON"),
        ("AccessKeyId", KEY_ID),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "nonce-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    p.insert(
        "Timestamp".into(),
        sign::format_timestamp(SystemTime::now()),
    );
    assert_eq!(raw(&emu, &p, SECRET).0, 200);
    let (status, body) = raw(&emu, &p, SECRET);
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("SignatureNonceUsed"))
    );
    p.insert("SignatureNonce".into(), "nonce-2".into());
    let (_, body) = raw(&emu, &p, "not-the-secret");
    assert_eq!(body["Code"], "SignatureDoesNotMatch");
    p.insert(
        "Timestamp".into(),
        sign::format_timestamp(SystemTime::now() - Duration::from_secs(3600)),
    );
    let (_, body) = raw(&emu, &p, SECRET);
    assert_eq!(body["Code"], "InvalidTimeStamp.Expired");
    p.insert("AccessKeyId".into(), "LTAI-someone-else".into());
    let (status, body) = raw(&emu, &p, SECRET);
    assert_eq!(
        (status, body["Code"].as_str()),
        (404, Some("InvalidAccessKeyId.NotFound"))
    );
    // The client's own errors say what failed, never the secret.
    let c = emu.client();
    let e = api::listener_call(
        &c,
        "StartLoadBalancerListener",
        "lb-nope",
        (Protocol::Tcp, 80),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some("LoadBalancerNotFound"));
    assert!(!format!("{e} {e:?} {c:?}").contains(SECRET));
}
