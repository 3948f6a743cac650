//! Unit tests of the emulated actions (no HTTP, time as a value).

#![allow(clippy::unwrap_used)]

use super::*;

fn params(kv: &[(&str, &str)]) -> Params {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn state() -> (State, Instant) {
    let mut s = State::new(
        "10.99.0.0/24".parse().unwrap(),
        "10.98.0.0/24".parse().unwrap(),
    );
    s.instances.insert(
        "i-1".into(),
        Instance {
            ip: Ipv4Addr::new(10, 0, 1, 2),
            running: true,
        },
    );
    (s, Instant::now())
}

fn create(s: &mut State, now: Instant, name: &str) -> String {
    let v = s
        .handle(
            "CreateLoadBalancer",
            &params(&[
                ("EnsRegionId", "r"),
                ("LoadBalancerSpec", "elb.s1.small"),
                ("PayType", "PostPaid"),
                ("NetworkId", "n"),
                ("VSwitchId", "v"),
                ("LoadBalancerName", name),
            ]),
            now,
        )
        .unwrap();
    v["LoadBalancerId"].as_str().unwrap().to_string()
}

#[test]
fn a_creating_instance_refuses_listeners_with_incorrect_status_then_takes_them() {
    let (mut s, now) = state();
    let id = create(&mut s, now, "a");
    let l = params(&[
        ("LoadBalancerId", &id),
        ("ListenerPort", "80"),
        ("BackendServerPort", "30080"),
    ]);
    let e = s
        .handle("CreateLoadBalancerTCPListener", &l, now)
        .unwrap_err();
    assert_eq!(e.code, "IncorrectStatus");
    let later = now + s.create_delay;
    s.handle("CreateLoadBalancerTCPListener", &l, later)
        .unwrap();
    let e = s
        .handle("CreateLoadBalancerTCPListener", &l, later)
        .unwrap_err();
    assert_eq!(e.code, "ListenerAlreadyExists");
    let v = s
        .handle(
            "DescribeLoadBalancerListeners",
            &params(&[("LoadBalancerId", &id)]),
            later,
        )
        .unwrap();
    assert_eq!(v["Listeners"]["Listener"][0]["Status"], "stopped");
}

#[test]
fn backends_must_be_running_known_instances_at_most_twenty_per_call() {
    let (mut s, now) = state();
    let id = create(&mut s, now, "a");
    let later = now + s.create_delay;
    let add = |list: &str| params(&[("LoadBalancerId", &id), ("BackendServers", list)]);
    let e = s
        .handle("AddBackendServers", &add(r#"[{"ServerId":"i-9"}]"#), later)
        .unwrap_err();
    assert_eq!(e.code, "InvalidInstanceId.NotFound");
    let many: Vec<String> = (0..21)
        .map(|n| format!(r#"{{"ServerId":"i-{n}"}}"#))
        .collect();
    let e = s
        .handle(
            "AddBackendServers",
            &add(&format!("[{}]", many.join(","))),
            later,
        )
        .unwrap_err();
    assert_eq!(e.code, "InvalidParameter.BackendServers");
    s.handle(
        "AddBackendServers",
        &add(r#"[{"ServerId":"i-1","Weight":30,"Type":"ens"}]"#),
        later,
    )
    .unwrap();
    assert_eq!(s.lbs[&id].backends["i-1"], 30);
}

#[test]
fn a_bound_eip_cannot_be_released_and_pages_hold_what_they_say() {
    let (mut s, now) = state();
    let later = now + s.create_delay;
    let lb = create(&mut s, now, "a");
    for n in 0..5 {
        create(&mut s, now, &format!("x{n}"));
    }
    let eip = s
        .handle(
            "CreateEipInstance",
            &params(&[
                ("EnsRegionId", "r"),
                ("InstanceChargeType", "PostPaid"),
                ("InternetChargeType", "95BandwidthByMonth"),
                ("Name", "e"),
            ]),
            now,
        )
        .unwrap()["AllocationId"]
        .as_str()
        .unwrap()
        .to_string();
    let assoc = params(&[
        ("AllocationId", &eip),
        ("InstanceId", &lb),
        ("InstanceType", "SlbInstance"),
    ]);
    s.handle("AssociateEnsEipAddress", &assoc, later).unwrap();
    let e = s
        .handle("ReleaseInstance", &params(&[("InstanceId", &eip)]), later)
        .unwrap_err();
    assert_eq!(e.code, "IncorrectStatus");
    let mut page = |n: &str| {
        s.handle(
            "DescribeLoadBalancers",
            &params(&[("PageNumber", n), ("PageSize", "4")]),
            later,
        )
        .unwrap()
    };
    let (p1, p2) = (page("1"), page("2"));
    assert_eq!(p1["TotalCount"], 6);
    assert_eq!(
        p1["LoadBalancers"]["LoadBalancer"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        p2["LoadBalancers"]["LoadBalancer"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let e = s
        .handle(
            "DescribeLoadBalancers",
            &params(&[("PageSize", "101")]),
            later,
        )
        .unwrap_err();
    assert_eq!(e.code, "InvalidParameter.PageSize");
}

#[test]
fn listener_health_checks_are_range_checked_stored_described_and_set() {
    let (mut s, now) = state();
    let id = create(&mut s, now, "hc");
    let now = now + s.create_delay;
    let base = [
        ("LoadBalancerId", id.as_str()),
        ("ListenerPort", "80"),
        ("BackendServerPort", "30080"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut kv: Vec<(&str, &str)> = base.to_vec();
        kv.extend_from_slice(extra);
        params(&kv)
    };
    // Each documented range, one past either end: refused with InvalidParameter.<Field>.
    for (field, bad) in [
        ("HealthyThreshold", "1"),
        ("HealthyThreshold", "11"),
        ("UnhealthyThreshold", "1"),
        ("UnhealthyThreshold", "11"),
        ("HealthCheckConnectTimeout", "0"),
        ("HealthCheckConnectTimeout", "301"),
        ("HealthCheckInterval", "0"),
        ("HealthCheckInterval", "51"),
        ("HealthCheckConnectPort", "0"),
        ("HealthCheckConnectPort", "65536"),
        ("HealthCheckInterval", "two"),
        ("HealthCheckType", "udp"),
        ("HealthCheckURI", "/"),
        ("HealthCheckDomain", "a_b"),
        ("HealthCheckHttpCode", "http_200"),
    ] {
        let e = s
            .handle("CreateLoadBalancerTCPListener", &with(&[(field, bad)]), now)
            .unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str()),
            (400, format!("InvalidParameter.{field}").as_str()),
            "{field}={bad}"
        );
    }
    assert!(
        s.lbs[&id].listeners.is_empty(),
        "a refused create made nothing"
    );
    // Both ends of each range are taken; unset ones are the defaults.
    s.handle(
        "CreateLoadBalancerTCPListener",
        &with(&[
            ("HealthyThreshold", "10"),
            ("UnhealthyThreshold", "2"),
            ("HealthCheckConnectTimeout", "300"),
            ("HealthCheckInterval", "1"),
        ]),
        now,
    )
    .unwrap();
    let desc = |s: &mut State, action: &str| {
        s.handle(
            action,
            &params(&[("LoadBalancerId", &id), ("ListenerPort", "80")]),
            now,
        )
        .unwrap()
    };
    let v = desc(&mut s, "DescribeLoadBalancerTCPListenerAttribute");
    assert_eq!(
        (
            &v["HealthyThreshold"],
            &v["UnhealthyThreshold"],
            &v["HealthCheckConnectTimeout"],
            &v["HealthCheckInterval"],
            &v["HealthCheckConnectPort"],
            &v["HealthCheckType"],
        ),
        (
            &json!(10),
            &json!(2),
            &json!(300),
            &json!(1),
            &json!(30080),
            &json!("tcp")
        )
    );
    // Set changes what it names and keeps the rest; an out-of-range set changes nothing.
    let set = |kv: &[(&str, &str)]| {
        let mut all = vec![("LoadBalancerId", id.as_str()), ("ListenerPort", "80")];
        all.extend_from_slice(kv);
        params(&all)
    };
    s.handle(
        "SetLoadBalancerTCPListenerAttribute",
        &set(&[
            ("HealthCheckType", "http"),
            ("HealthCheckURI", "/healthz"),
            ("HealthCheckConnectPort", "8080"),
        ]),
        now,
    )
    .unwrap();
    let e = s
        .handle(
            "SetLoadBalancerTCPListenerAttribute",
            &set(&[("HealthCheckInterval", "60")]),
            now,
        )
        .unwrap_err();
    assert_eq!(e.code, "InvalidParameter.HealthCheckInterval");
    let v = desc(&mut s, "DescribeLoadBalancerTCPListenerAttribute");
    assert_eq!(
        (
            &v["HealthCheckType"],
            &v["HealthCheckURI"],
            &v["HealthCheckConnectPort"],
            &v["HealthyThreshold"],
            &v["HealthCheckInterval"]
        ),
        (
            &json!("http"),
            &json!("/healthz"),
            &json!(8080),
            &json!(10),
            &json!(1)
        )
    );
    // The TCP call does not describe a UDP listener; a UDP listener has no type.
    let e = s
        .handle(
            "DescribeLoadBalancerUDPListenerAttribute",
            &params(&[("LoadBalancerId", &id), ("ListenerPort", "80")]),
            now,
        )
        .unwrap_err();
    assert_eq!(e.code, "ListenerNotFound");
    s.handle(
        "CreateLoadBalancerUDPListener",
        &params(&[
            ("LoadBalancerId", &id),
            ("ListenerPort", "53"),
            ("BackendServerPort", "30053"),
            ("UnhealthyThreshold", "7"),
        ]),
        now,
    )
    .unwrap();
    let v = s
        .handle(
            "DescribeLoadBalancerUDPListenerAttribute",
            &params(&[("LoadBalancerId", &id), ("ListenerPort", "53")]),
            now,
        )
        .unwrap();
    assert_eq!(v["UnhealthyThreshold"], json!(7));
    assert!(v.get("HealthCheckType").is_none(), "{v}");
    // The inventory shows each listener's attributes.
    let inv = s.inventory(now);
    assert_eq!(
        inv["LoadBalancers"][0]["ListenerAttributes"]["tcp/80"]["HealthCheckURI"],
        "/healthz"
    );
}
