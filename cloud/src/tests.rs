//! Planner and diff: examples, and properties over random pools and cloud states driven
//! through an in-memory cloud that walks the same asynchronous states as ENS.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::diff::{diff, diff_delete, ingress};
use crate::ens::EnsProfile;
use crate::model::*;
use crate::plan::*;

fn input() -> PlanInput {
    PlanInput {
        namespace: "default".into(),
        service: "cube-svc".into(),
        pool: "np-hefei".into(),
        cluster: "c1".into(),
        ports: vec![ServicePort {
            name: "cube".into(),
            port: 80,
            protocol: "TCP".into(),
            node_port: Some(30081),
        }],
        traffic_policy: TrafficPolicy::Cluster,
        nodes: vec![
            node("n1", Some("cn-hefei-telecom.i-aaa1"), true, 1),
            node("n2", Some("alicloud://cn-hefei-telecom.i-bbb2"), true, 0),
            node("n3", None, true, 1),
            node("n4", Some("cn-hefei-telecom.i-ccc3"), false, 1),
        ],
        service_annotations: BTreeMap::new(),
        pool_annotations: [
            ("alibabacloud.com/ens-network-id", "n-1"),
            ("alibabacloud.com/ens-region-id", "cn-hefei-telecom"),
            ("alibabacloud.com/ens-vswitch-id", "vsw-1,vsw-2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        pool_service_annotations: BTreeMap::new(),
        sharing_services: vec![],
    }
}

fn node(name: &str, pid: Option<&str>, ready: bool, eps: u32) -> PoolNode {
    PoolNode {
        name: name.into(),
        provider_id: pid.map(Into::into),
        ready,
        ready_endpoints: eps,
    }
}

#[test]
fn plan_names_listeners_backends_and_reports_nodes_without_provider_id() {
    let d = plan(&EnsProfile, &input()).unwrap();
    assert_eq!(d.target.name, "k8s/cube-svc/default/np-hefei/c1");
    assert_eq!(d.network.vswitch_id, "vsw-1");
    let ports: BTreeMap<ListenerKey, u16> = d
        .listeners
        .iter()
        .map(|(k, s)| (*k, s.backend_port))
        .collect();
    assert_eq!(ports, BTreeMap::from([((Protocol::Tcp, 80), 30081)]));
    // No annotation: ENS's documented defaults, a TCP probe of the NodePort.
    let h = &d.listeners[&(Protocol::Tcp, 80)].health;
    assert_eq!(
        (
            h.healthy_threshold,
            h.unhealthy_threshold,
            h.connect_timeout,
            h.interval
        ),
        (3, 3, 5, 2)
    );
    assert_eq!((h.port_for(30081), h.kind()), (30081, "tcp"));
    assert_eq!(
        d.backends,
        BTreeMap::from([("i-aaa1".to_string(), 100), ("i-bbb2".to_string(), 100)])
    );
    assert!(
        d.target.owned_backends.contains("i-ccc3"),
        "not-ready nodes stay ours to remove"
    );
    assert_eq!(
        d.skipped,
        vec![
            SkippedNode {
                node: "n3".into(),
                reason: SkipReason::NoProviderId
            },
            SkippedNode {
                node: "n4".into(),
                reason: SkipReason::NotReady
            },
        ]
    );
}

#[test]
fn local_policy_keeps_only_nodes_with_endpoints_weighted_by_endpoints() {
    let mut i = input();
    i.traffic_policy = TrafficPolicy::Local;
    i.nodes = vec![
        node("a", Some("r.i-a"), true, 4),
        node("b", Some("r.i-b"), true, 1),
        node("c", Some("r.i-c"), true, 0),
    ];
    let d = plan(&EnsProfile, &i).unwrap();
    assert_eq!(
        d.backends,
        BTreeMap::from([("i-a".into(), 100), ("i-b".into(), 25)])
    );
    assert_eq!(d.skipped[0].reason, SkipReason::NoLocalEndpoint);
}

#[test]
fn missing_pool_annotation_is_named() {
    let mut i = input();
    i.pool_annotations.remove("alibabacloud.com/ens-network-id");
    let e = plan(&EnsProfile, &i).unwrap_err();
    assert_eq!(
        e.to_string(),
        "node pool np-hefei: annotation alibabacloud.com/ens-network-id is missing"
    );
}

#[test]
fn sctp_and_missing_node_port_are_refused_naming_the_port() {
    let mut i = input();
    i.ports[0].protocol = "SCTP".into();
    assert!(plan(&EnsProfile, &i)
        .unwrap_err()
        .to_string()
        .contains("port cube has protocol SCTP"));
    let mut i = input();
    i.ports[0].node_port = None;
    assert!(matches!(
        plan(&EnsProfile, &i),
        Err(PlanError::NoNodePort { .. })
    ));
}

#[test]
fn user_lb_needs_the_services_consent_and_sharing_needs_cluster() {
    let mut i = input();
    i.pool_service_annotations
        .insert(ANNOTATION_LB_ID.into(), "lb-user".into());
    assert!(matches!(
        plan(&EnsProfile, &i),
        Err(PlanError::UserLbNotAllowed { .. })
    ));
    i.service_annotations
        .insert(ANNOTATION_MANAGED_BY_USER.into(), "true".into());
    let d = plan(&EnsProfile, &i).unwrap();
    assert_eq!(
        d.target.ownership,
        Ownership::UserManaged {
            lb_id: "lb-user".into(),
            manage_listeners: false
        }
    );
    i.sharing_services = vec!["default/other".into()];
    i.traffic_policy = TrafficPolicy::Local;
    assert!(matches!(
        plan(&EnsProfile, &i),
        Err(PlanError::SharedNeedsCluster { .. })
    ));
}

#[test]
fn a_name_over_80_characters_is_refused_not_truncated() {
    let mut i = input();
    i.service = "s".repeat(70);
    assert!(matches!(
        plan(&EnsProfile, &i),
        Err(PlanError::NameTooLong { len: 94, .. })
    ));
}

#[test]
fn fresh_cloud_creates_the_instance_first_then_waits_for_active() {
    let d = plan(&EnsProfile, &input()).unwrap();
    let step = diff(&d, &Observed::default());
    assert!(matches!(
        step.actions.as_slice(),
        [Action::CreateLoadBalancer { .. }]
    ));
    let obs = Observed {
        lb: Some(ObservedLb {
            id: "lb-1".into(),
            name: d.target.name.clone(),
            status: LbStatus::Creating,
            address: None,
        }),
        ..Default::default()
    };
    let step = diff(&d, &obs);
    assert!(step.actions.is_empty());
    assert!(step.waiting.unwrap().contains("Creating"));
}

#[test]
fn a_listener_forwarding_to_an_old_node_port_is_replaced() {
    let d = plan(&EnsProfile, &input()).unwrap();
    let obs = Observed {
        lb: Some(ObservedLb {
            id: "lb-1".into(),
            name: d.target.name.clone(),
            status: LbStatus::Active,
            address: Some("10.0.0.9".into()),
        }),
        listeners: vec![ObservedListener {
            port: 80,
            protocol: Protocol::Tcp,
            backend_port: 30000,
            status: ListenerStatus::Running,
            health: None,
        }],
        ..Default::default()
    };
    let step = diff(&d, &obs);
    assert!(step.actions.contains(&Action::DeleteListener {
        lb_id: "lb-1".into(),
        key: (Protocol::Tcp, 80)
    }));
    assert!(!step
        .actions
        .iter()
        .any(|a| matches!(a, Action::CreateListener { .. })));
}

/// Removing `-health-check-domain` / `-uri` leaves the listener's value, as Alibaba's CCM
/// does (it sets a domain or URI only when its annotation is not empty): no call at all.
/// A changed value is set in place, and a URI that is not named again stays.
#[test]
fn removing_the_domain_or_uri_annotation_keeps_the_listeners_value_as_alibabas_ccm_does() {
    const P: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-";
    let with = |pairs: &[(&str, &str)]| {
        let mut i = input();
        i.service_annotations = pairs
            .iter()
            .map(|(k, v)| (format!("{P}{k}"), v.to_string()))
            .collect();
        plan(&EnsProfile, &i).unwrap()
    };
    let http = |sim: &Sim| {
        sim.obs.listeners[0]
            .health
            .as_ref()
            .and_then(|h| h.http.clone())
            .map(|h| (h.domain, h.uri))
    };
    let some = |d: &str, u: &str| Some((Some(d.to_string()), Some(u.to_string())));
    let mut sim = Sim::default();
    let set = with(&[
        ("health-check-type", "http"),
        ("health-check-domain", "a.example"),
        ("health-check-uri", "/healthz"),
    ]);
    assert!(drive(&mut sim, |o| diff(&set, o)).1);
    assert_eq!(http(&sim), some("a.example", "/healthz"));
    let removed = with(&[("health-check-type", "http")]);
    let (calls, converged) = drive(&mut sim, |o| diff(&removed, o));
    assert!(converged && calls.is_empty(), "{calls:?}");
    assert_eq!(http(&sim), some("a.example", "/healthz"), "kept");
    let changed = with(&[
        ("health-check-type", "http"),
        ("health-check-domain", "b.example"),
    ]);
    let (calls, converged) = drive(&mut sim, |o| diff(&changed, o));
    assert!(converged);
    assert!(
        matches!(calls.as_slice(), [Action::SetListenerHealthCheck { .. }]),
        "{calls:?}"
    );
    assert_eq!(http(&sim), some("b.example", "/healthz"));
}

// ---- the in-memory cloud ----

/// Applies one call the way ENS does: instances are `Creating` until the next tick,
/// listeners are created `Stopped`, EIPs pass through `Associating`/`Unassociating`.
#[derive(Default)]
struct Sim {
    obs: Observed,
    next: u32,
    user_lb: Option<String>,
}

/// What ENS holds after a create or set call with `spec`'s parameters: the probed port as
/// sent (explicitly), an HTTP domain or URI not sent kept from before.
fn as_ens_stores(before: Option<&HealthCheck>, spec: &ListenerSpec) -> HealthCheck {
    let mut h = spec.health.clone();
    h.connect_port = Some(h.port_for(spec.backend_port));
    if let (Some(new), Some(Some(old))) = (&mut h.http, before.map(|b| &b.http)) {
        new.domain = new.domain.take().or_else(|| old.domain.clone());
        new.uri = new.uri.take().or_else(|| old.uri.clone());
    }
    h
}

impl Sim {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-{}", self.next)
    }

    fn apply(&mut self, a: &Action) {
        let o = &mut self.obs;
        match a {
            Action::CreateLoadBalancer { name, .. } => {
                let lb = ObservedLb {
                    id: self.id("lb"),
                    name: name.clone(),
                    status: LbStatus::Creating,
                    address: Some("10.9.0.1".into()),
                };
                let o = &mut self.obs;
                if o.lb.is_none() {
                    o.lb = Some(lb)
                } else {
                    o.duplicate_lbs.push(lb)
                }
            }
            Action::ReleaseLoadBalancer { lb_id } => {
                assert_ne!(
                    Some(lb_id),
                    self.user_lb.as_ref(),
                    "released a user's instance"
                );
                if o.lb.as_ref().is_some_and(|l| &l.id == lb_id) {
                    o.lb = None;
                    o.listeners.clear();
                    o.backends.clear();
                }
                o.duplicate_lbs.retain(|l| &l.id != lb_id);
                for e in o.eip.iter_mut().chain(o.duplicate_eips.iter_mut()) {
                    if e.instance_id.as_ref() == Some(lb_id) {
                        e.instance_id = None;
                        e.status = EipStatus::Available;
                    }
                }
            }
            Action::CreateListener { key, spec, .. } => {
                assert!(
                    !o.listeners.iter().any(|l| (l.protocol, l.port) == *key),
                    "port taken"
                );
                o.listeners.push(ObservedListener {
                    port: key.1,
                    protocol: key.0,
                    backend_port: spec.backend_port,
                    status: ListenerStatus::Stopped,
                    health: Some(as_ens_stores(None, spec)),
                });
            }
            Action::SetListenerHealthCheck { key, spec, .. } => {
                let l = o
                    .listeners
                    .iter_mut()
                    .find(|l| (l.protocol, l.port) == *key)
                    .expect("set on a missing listener");
                assert_eq!(
                    l.status,
                    ListenerStatus::Running,
                    "set on a listener not running"
                );
                assert_eq!(l.backend_port, spec.backend_port);
                l.health = Some(as_ens_stores(l.health.as_ref(), spec));
            }
            Action::StartListener { key, .. } => {
                for l in o
                    .listeners
                    .iter_mut()
                    .filter(|l| (l.protocol, l.port) == *key)
                {
                    l.status = ListenerStatus::Starting;
                }
            }
            Action::DeleteListener { key, .. } => {
                o.listeners.retain(|l| (l.protocol, l.port) != *key)
            }
            Action::AddBackends { backends, .. } | Action::SetBackendWeights { backends, .. } => {
                for (id, w) in backends {
                    o.backends.insert(id.clone(), *w);
                }
            }
            Action::RemoveBackends { server_ids, .. } => {
                for id in server_ids {
                    o.backends.remove(id);
                }
            }
            Action::CreateEip { .. } => {
                let e = ObservedEip {
                    allocation_id: self.id("eip"),
                    ip: "198.51.100.7".into(),
                    status: EipStatus::Available,
                    instance_id: None,
                };
                let o = &mut self.obs;
                if o.eip.is_none() {
                    o.eip = Some(e)
                } else {
                    o.duplicate_eips.push(e)
                }
            }
            Action::AssociateEip {
                allocation_id,
                lb_id,
            } => {
                for e in o
                    .eip
                    .iter_mut()
                    .filter(|e| &e.allocation_id == allocation_id)
                {
                    assert_eq!(e.status, EipStatus::Available);
                    e.status = EipStatus::Associating;
                    e.instance_id = Some(lb_id.clone());
                }
            }
            Action::UnassociateEip { allocation_id } => {
                for e in o.eip.iter_mut().chain(o.duplicate_eips.iter_mut()) {
                    if &e.allocation_id == allocation_id {
                        e.status = EipStatus::Unassociating;
                    }
                }
            }
            Action::ReleaseEip { allocation_id } => {
                if o.eip
                    .as_ref()
                    .is_some_and(|e| &e.allocation_id == allocation_id)
                {
                    o.eip = None;
                }
                o.duplicate_eips
                    .retain(|e| &e.allocation_id != allocation_id);
            }
        }
    }

    /// Time passes: transitions finish.
    fn tick(&mut self) {
        let o = &mut self.obs;
        for lb in o.lb.iter_mut().chain(o.duplicate_lbs.iter_mut()) {
            if lb.status == LbStatus::Creating {
                lb.status = LbStatus::Active;
            }
        }
        for l in &mut o.listeners {
            if l.status == ListenerStatus::Starting {
                l.status = ListenerStatus::Running;
            }
        }
        for e in o.eip.iter_mut().chain(o.duplicate_eips.iter_mut()) {
            match e.status {
                EipStatus::Associating => e.status = EipStatus::InUse,
                EipStatus::Unassociating => {
                    e.status = EipStatus::Available;
                    e.instance_id = None;
                }
                _ => {}
            }
        }
    }
}

/// Runs diff rounds against the simulator; the calls made, and whether it converged.
fn drive(sim: &mut Sim, step_of: impl Fn(&Observed) -> Step) -> (Vec<Action>, bool) {
    let mut all = Vec::new();
    for _ in 0..30 {
        let step = step_of(&sim.obs);
        if step.converged() {
            return (all, true);
        }
        for a in &step.actions {
            sim.apply(a);
            all.push(a.clone());
        }
        sim.tick();
    }
    (all, false)
}

prop_compose! {
    fn arb_port()(port in 1u16..6, udp in any::<bool>(), node_port in 30000u16..30005)
        -> ServicePort {
        ServicePort {
            name: String::new(),
            port,
            protocol: if udp { "UDP" } else { "TCP" }.into(),
            node_port: Some(node_port),
        }
    }
}

prop_compose! {
    fn arb_node()(n in 0u8..8, pid in 0u8..4, ready in any::<bool>(), eps in 0u32..4)
        -> PoolNode {
        let provider_id = match pid {
            0 => None,
            1 => Some("garbage".to_string()),
            _ => Some(format!("cn-x.i-{n}")),
        };
        PoolNode { name: format!("node{n}"), provider_id, ready, ready_endpoints: eps }
    }
}

prop_compose! {
    fn arb_input()(
        ports in prop::collection::vec(arb_port(), 0..4),
        nodes in prop::collection::vec(arb_node(), 0..6),
        local in any::<bool>(),
        user in any::<bool>(),
        manage_listeners in any::<bool>(),
        intranet in any::<bool>(),
        health in arb_health_annotations(),
    ) -> PlanInput {
        let mut i = input();
        // Kubernetes forbids two ports with one (protocol, port).
        let mut seen = BTreeSet::new();
        i.ports = ports.into_iter().filter(|p| seen.insert((p.protocol.clone(), p.port))).collect();
        let mut names = BTreeSet::new();
        i.nodes = nodes.into_iter().filter(|n| names.insert(n.name.clone())).collect();
        i.traffic_policy = if local { TrafficPolicy::Local } else { TrafficPolicy::Cluster };
        if user {
            i.pool_service_annotations.insert(ANNOTATION_LB_ID.into(), "lb-user".into());
            i.service_annotations.insert(ANNOTATION_MANAGED_BY_USER.into(), "true".into());
            if manage_listeners {
                i.service_annotations
                    .insert(ANNOTATION_FORCE_OVERRIDE_LISTENERS.into(), "true".into());
            }
        }
        if intranet {
            i.service_annotations.insert(ANNOTATION_ADDRESS_TYPE.into(), "intranet".into());
        }
        i.service_annotations.extend(health);
        i
    }
}

prop_compose! {
    /// A health check as a cloud may hold it (drift included).
    fn arb_health()(
        healthy in 2u32..5, unhealthy in 2u32..5, timeout in 1u32..6, interval in 1u32..4,
        port in prop::option::of(30000u16..30003),
        http in prop::option::of((prop::option::of(0u8..2), prop::option::of(0u8..2), 0u8..2)),
    ) -> HealthCheck {
        HealthCheck {
            healthy_threshold: healthy, unhealthy_threshold: unhealthy,
            connect_timeout: timeout, interval, connect_port: port,
            http: http.map(|(d, u, c)| HttpCheck {
                domain: d.map(|d| format!("d{d}.example")),
                uri: u.map(|u| format!("/health{u}")),
                http_codes: ["http_2xx", "http_2xx,http_3xx"][usize::from(c)].to_string(),
            }),
        }
    }
}

/// Valid health-check annotations, some absent.
fn arb_health_annotations() -> impl Strategy<Value = Vec<(String, String)>> {
    use crate::health::*;
    (
        prop::option::of(2u32..5),
        prop::option::of(1u32..6),
        prop::option::of(30000u16..30003),
        prop::option::of((prop::option::of(0u8..2), prop::option::of(0u8..2))),
    )
        .prop_map(|(threshold, timeout, port, http)| {
            let mut a = Vec::new();
            if let Some(t) = threshold {
                a.push((ANNOTATION_UNHEALTHY_THRESHOLD.to_string(), t.to_string()));
            }
            if let Some(t) = timeout {
                a.push((
                    ANNOTATION_HEALTH_CHECK_CONNECT_TIMEOUT.to_string(),
                    t.to_string(),
                ));
            }
            if let Some(p) = port {
                a.push((
                    ANNOTATION_HEALTH_CHECK_CONNECT_PORT.to_string(),
                    p.to_string(),
                ));
            }
            if let Some((d, u)) = http {
                a.push((ANNOTATION_HEALTH_CHECK_TYPE.to_string(), "http".to_string()));
                if let Some(d) = d {
                    a.push((
                        ANNOTATION_HEALTH_CHECK_DOMAIN.to_string(),
                        format!("d{d}.example"),
                    ));
                }
                if let Some(u) = u {
                    a.push((
                        ANNOTATION_HEALTH_CHECK_URI.to_string(),
                        format!("/health{u}"),
                    ));
                }
            }
            a
        })
}

prop_compose! {
    /// Whatever the cloud may hold: leftovers of a crash, drift, a user's own listeners.
    fn arb_cloud()(
        lb in 0u8..3,
        dup in any::<bool>(),
        listeners in prop::collection::vec(
            (1u16..8, any::<bool>(), 30000u16..30005, any::<bool>(), arb_health()),
            0..5),
        backends in prop::collection::btree_map(0u8..10, 0u32..=100, 0..6),
        eip in 0u8..4,
        dup_eip in any::<bool>(),
    ) -> Observed {
        let name = "k8s/cube-svc/default/np-hefei/c1".to_string();
        let mk = |id: &str, status| ObservedLb {
            id: id.into(), name: name.clone(), status, address: Some("10.9.0.2".into())
        };
        let mut o = Observed {
            lb: match lb { 0 => None, 1 => Some(mk("lb-old", LbStatus::Creating)),
                _ => Some(mk("lb-old", LbStatus::Active)) },
            ..Default::default()
        };
        if dup && o.lb.is_some() { o.duplicate_lbs.push(mk("lb-dup", LbStatus::Active)); }
        if o.lb.is_some() {
            let mut seen = BTreeSet::new();
            for (port, udp, bp, running, health) in listeners {
                let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
                if seen.insert((protocol, port)) {
                    // What the cloud holds (read by the provider once running).
                    let health = Some(HealthCheck {
                        http: health.http.clone().filter(|_| !udp),
                        ..health
                    });
                    o.listeners.push(ObservedListener { port, protocol, backend_port: bp,
                        status: if running { ListenerStatus::Running } else { ListenerStatus::Stopped },
                        health });
                }
            }
            o.backends = backends.into_iter().map(|(n, w)| (format!("i-{n}"), w)).collect();
        }
        let mk_eip = |id: &str, s: u8, lb: &Option<ObservedLb>| ObservedEip {
            allocation_id: id.into(), ip: "198.51.100.9".into(),
            status: if s == 1 || lb.is_none() { EipStatus::Available } else { EipStatus::InUse },
            instance_id: if s == 1 || lb.is_none() { None } else { lb.as_ref().map(|l| l.id.clone()) },
        };
        if eip > 0 { o.eip = Some(mk_eip("eip-old", eip, &o.lb)); }
        if dup_eip && o.eip.is_some() { o.duplicate_eips.push(mk_eip("eip-dup", 1, &None)); }
        o
    }
}

/// For a user-managed target the instance exists under the user's id and our EIP logic
/// never looks at EIPs by name.
fn user_view(mut o: Observed) -> Observed {
    let lb = o.lb.take().map(|mut l| {
        l.id = "lb-user".into();
        l.name = "the user's own".into();
        l
    });
    o.lb = Some(lb.unwrap_or(ObservedLb {
        id: "lb-user".into(),
        name: "the user's own".into(),
        status: LbStatus::Active,
        address: Some("10.9.9.9".into()),
    }));
    o.duplicate_lbs.clear();
    o.eip = None;
    o.duplicate_eips.clear();
    o
}

fn forbidden_for_user(target: &Target, a: &Action) -> bool {
    let manage = matches!(
        target.ownership,
        Ownership::UserManaged {
            manage_listeners: true,
            ..
        }
    );
    match a {
        Action::ReleaseLoadBalancer { .. }
        | Action::CreateLoadBalancer { .. }
        | Action::CreateEip { .. }
        | Action::AssociateEip { .. }
        | Action::UnassociateEip { .. }
        | Action::ReleaseEip { .. } => true,
        Action::DeleteListener { key, .. }
        | Action::CreateListener { key, .. }
        | Action::SetListenerHealthCheck { key, .. }
        | Action::StartListener { key, .. } => !manage || !target.listener_keys.contains(key),
        Action::RemoveBackends { server_ids, .. } => server_ids
            .iter()
            .any(|id| !target.owned_backends.contains(id)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn planning_is_deterministic_and_ignores_node_order(i in arb_input()) {
        let a = plan(&EnsProfile, &i);
        let mut j = i.clone();
        j.nodes.reverse();
        prop_assert_eq!(&a, &plan(&EnsProfile, &i));
        prop_assert_eq!(a, plan(&EnsProfile, &j));
    }

    #[test]
    fn any_cloud_state_converges_and_then_stays_still(i in arb_input(), cloud in arb_cloud()) {
        let d = plan(&EnsProfile, &i).unwrap();
        let user = matches!(d.target.ownership, Ownership::UserManaged { .. });
        let mut sim = Sim {
            obs: if user { user_view(cloud) } else { cloud },
            user_lb: user.then(|| "lb-user".to_string()),
            ..Default::default()
        };
        let before = sim.obs.clone();
        let (calls, converged) = drive(&mut sim, |o| diff(&d, o));
        prop_assert!(converged, "no convergence after {:?}", calls);
        // Idempotent: the converged state yields no call, and planning again changes nothing.
        prop_assert!(diff(&plan(&EnsProfile, &i).unwrap(), &sim.obs).converged());
        let o = &sim.obs;
        prop_assert!(o.duplicate_lbs.is_empty() && o.duplicate_eips.is_empty() || user);
        for (key, spec) in &d.listeners {
            let touch = !user || matches!(d.target.ownership,
                Ownership::UserManaged { manage_listeners: true, .. });
            if touch {
                prop_assert!(o.listeners.iter().any(|l| (l.protocol, l.port) == *key
                    && l.backend_port == spec.backend_port && l.status == ListenerStatus::Running
                    && l.health.is_some()
                    && crate::diff::health_matches(&spec.health, l)));
            }
        }
        for (id, w) in &d.backends {
            prop_assert_eq!(o.backends.get(id), Some(w));
        }
        if user {
            for a in &calls {
                prop_assert!(!forbidden_for_user(&d.target, a), "{:?} on a user's instance", a);
            }
            // A user's own backends (not our nodes) are still there.
            for (id, w) in &before.backends {
                if !d.target.owned_backends.contains(id) {
                    prop_assert_eq!(o.backends.get(id), Some(w));
                }
            }
        } else {
            prop_assert_eq!(&o.backends, &d.backends);
            let want_eip = d.address_type == AddressType::Internet;
            prop_assert_eq!(o.eip.is_some(), want_eip);
            prop_assert!(ingress(&d, o).is_some());
        }
    }

    #[test]
    fn a_health_check_change_is_set_in_place_on_running_listeners(
        i in arb_input(), before in arb_health_annotations(), after in arb_health_annotations()
    ) {
        let mut i = i;
        // Our own load balancer (a user's needs its instance in the cloud first).
        i.pool_service_annotations.clear();
        let mut a = i.clone();
        a.service_annotations.extend(before);
        let d = plan(&EnsProfile, &a).unwrap();
        let mut sim = Sim::default();
        let (_, converged) = drive(&mut sim, |o| diff(&d, o));
        prop_assert!(converged);
        let mut b = i;
        b.service_annotations.extend(after);
        let d2 = plan(&EnsProfile, &b).unwrap();
        let (calls, converged) = drive(&mut sim, |o| diff(&d2, o));
        prop_assert!(converged, "no convergence after {:?}", calls);
        // Only in-place sets: no listener is deleted or created for a health-check change.
        prop_assert!(calls.iter().all(|c| matches!(c, Action::SetListenerHealthCheck { .. })),
            "{:?}", calls);
        for (key, spec) in &d2.listeners {
            let l = sim.obs.listeners.iter().find(|l| (l.protocol, l.port) == *key);
            prop_assert!(l.is_some_and(|l| crate::diff::health_matches(&spec.health, l)));
        }
    }

    #[test]
    fn delete_leaves_nothing_of_ours_and_never_a_users_instance(
        i in arb_input(), cloud in arb_cloud()
    ) {
        let d = plan(&EnsProfile, &i).unwrap();
        let user = matches!(d.target.ownership, Ownership::UserManaged { .. });
        let mut sim = Sim {
            obs: if user { user_view(cloud) } else { cloud },
            user_lb: user.then(|| "lb-user".to_string()),
            ..Default::default()
        };
        let (calls, converged) = drive(&mut sim, |o| diff_delete(&d.target, o));
        prop_assert!(converged, "no convergence after {:?}", calls);
        if user {
            prop_assert!(sim.obs.lb.is_some());
            for a in &calls {
                prop_assert!(!forbidden_for_user(&d.target, a), "{:?} on a user's instance", a);
            }
            prop_assert!(sim.obs.backends.keys().all(|id| !d.target.owned_backends.contains(id)));
        } else {
            prop_assert_eq!(sim.obs, Observed::default());
        }
    }
}
