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
