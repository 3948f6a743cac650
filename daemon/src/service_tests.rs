//! Every decision reads the same from [`ServiceFacts`] as it did from the whole k8s
//! `Service`: for generated Services, each function gives the answer of its old body (kept
//! here, reading the `Service`, as the oracle).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, ObjectReference, PortStatus, Service, ServicePort,
    ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, LabelSelectorRequirement, ObjectMeta, Time,
};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use proptest::prelude::*;

use super::*;
use crate::api::annotations::{
    ADDRESS_POOL, ELB_PASS_THROUGH, LOAD_BALANCER_IPS, NODEPOOL_SELECTOR, PASS_THROUGH,
};
use crate::ipam::range::Family;
use crate::ipam::request::{request_of, FamilyPolicy, Request, Sharing};
use crate::ipam::AllocationError;
use crate::nodepool::{pool_source, selected_node_pools, NodePoolView, PoolSource};
use crate::nodepool::{CLOUD_CLASSES, POOL_CLOUD_CLASS};
use crate::plan::endpoints::{is_local, pool_topology, NODEPOOL_TOPOLOGY, TOPOLOGY_KEYS};
use crate::snapshot::{has_finalizer, is_ours, Selection};
use crate::status::pass_through::{self as pass, Frontend};
use crate::status::service::current_ingress;

/// The old readers, on the whole Service.
mod old {
    use super::*;

    pub fn is_ours(svc: &Service, sel: &Selection) -> bool {
        let Some(spec) = &svc.spec else { return false };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return false;
        }
        match spec.load_balancer_class.as_deref() {
            Some(class) => class == sel.class,
            None => sel.default_class,
        }
    }

    pub fn has_finalizer(svc: &Service) -> bool {
        svc.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
    }

    fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a String> {
        svc.metadata.annotations.as_ref().and_then(|a| a.get(key))
    }

    pub fn class(svc: &Service) -> Option<&str> {
        svc.spec
            .as_ref()
            .and_then(|s| s.load_balancer_class.as_deref())
    }

    pub fn is_local(svc: &Service) -> bool {
        svc.spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local")
    }

    pub fn pool_topology(svc: &Service) -> bool {
        annotation(svc, TOPOLOGY_KEYS)
            .is_some_and(|v| v.split(',').any(|k| k.trim() == NODEPOOL_TOPOLOGY))
    }

    pub fn selector_value(svc: &Service) -> Option<&String> {
        annotation(svc, NODEPOOL_SELECTOR).filter(|v| !v.trim().is_empty())
    }

    pub fn pass_requested(svc: &Service) -> Option<&'static str> {
        let a = svc.metadata.annotations.as_ref()?;
        [PASS_THROUGH, ELB_PASS_THROUGH]
            .into_iter()
            .find(|k| a.get(*k).is_some_and(|v| v == "true"))
    }

    pub fn pass_current(svc: &Service) -> Option<&Condition> {
        svc.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == pass::CONDITION)
    }

    pub fn current_ingress(svc: &Service) -> Vec<LoadBalancerIngress> {
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
            .unwrap_or_default()
    }

    pub fn status_ips(svc: &Service) -> Vec<std::net::IpAddr> {
        current_ingress(svc)
            .iter()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect()
    }

    /// `ipam::request::request_of` as it was.
    pub fn request_of(svc: &Service) -> Result<Request, AllocationError> {
        let no_spec = ServiceSpec::default();
        let no_annotations = BTreeMap::new();
        let spec = svc.spec.as_ref().unwrap_or(&no_spec);
        let annotations = svc.metadata.annotations.as_ref().unwrap_or(&no_annotations);
        let bad = |annotation: &str, value: &str| AllocationError::BadAnnotation {
            annotation: annotation.to_string(),
            value: value.to_string(),
        };
        let mut requested = Vec::new();
        if let Some(list) = annotations.get(LOAD_BALANCER_IPS) {
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                requested.push(part.parse().map_err(|_| bad(LOAD_BALANCER_IPS, list))?);
            }
        } else if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
            requested.push(ip.parse().map_err(|_| AllocationError::BadLoadBalancerIp {
                value: ip.to_string(),
            })?);
        }
        let mut families: Vec<Family> = Vec::new();
        for name in spec.ip_families.iter().flatten() {
            let f = match name.as_str() {
                "IPv4" => Family::V4,
                "IPv6" => Family::V6,
                _ => {
                    return Err(AllocationError::BadIpFamily {
                        value: name.clone(),
                    })
                }
            };
            if !families.contains(&f) {
                families.push(f);
            }
        }
        if families.is_empty() {
            for ip in &requested {
                let f = Family::of(ip);
                if !families.contains(&f) {
                    families.push(f);
                }
            }
        }
        if families.is_empty() {
            families.push(Family::V4);
        }
        let policy = match spec.ip_family_policy.as_deref() {
            None | Some("SingleStack") => FamilyPolicy::SingleStack,
            Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
            Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
            Some(other) => {
                return Err(AllocationError::BadIpFamilyPolicy {
                    value: other.to_string(),
                })
            }
        };
        if policy != FamilyPolicy::SingleStack && families.len() == 1 {
            families.push(if families[0] == Family::V4 {
                Family::V6
            } else {
                Family::V4
            });
        }
        let sharing = annotations
            .get(ALLOW_SHARED_IP)
            .filter(|k| !k.is_empty())
            .map(|key| Sharing {
                key: key.as_str().into(),
                ports: spec
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| {
                        (
                            p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                            p.port,
                        )
                    })
                    .collect(),
                local: spec.external_traffic_policy.as_deref() == Some("Local"),
                selector: spec.selector.clone().unwrap_or_default(),
            });
        Ok(Request {
            families,
            policy,
            requested,
            pool: annotations
                .get(ADDRESS_POOL)
                .filter(|p| !p.is_empty())
                .cloned(),
            sharing,
        })
    }

    /// `nodepool::pool_source` as it was.
    pub fn pool_source<'a>(svc: &'a Service, pool: Option<&'a NodePoolView>) -> PoolSource<'a> {
        if let Some(c) = class(svc).filter(|c| CLOUD_CLASSES.contains(c)) {
            return PoolSource::Cloud(c);
        }
        let Some((p, value)) = pool.and_then(|p| {
            p.annotations
                .get(POOL_CLOUD_CLASS)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (p, v))
        }) else {
            return PoolSource::SelfAnnounced;
        };
        match CLOUD_CLASSES.iter().find(|c| **c == value.trim()) {
            Some(c) => PoolSource::Cloud(c),
            None => PoolSource::Invalid(format!(
                "NodePool {}: annotation {POOL_CLOUD_CLASS}: {value:?} is not a cloud load-balancer class (known: {}); the pool gets no entry point until it is fixed",
                p.name,
                CLOUD_CLASSES.join(", ")
            )),
        }
    }

    /// `status::pass_through::desired` as it was.
    pub fn pass_desired(
        svc: &Service,
        pool: &str,
        frontend: Frontend,
        now: Time,
    ) -> Option<Condition> {
        let request = pass_requested(svc)?;
        let d = pass::decide(frontend, Some(request));
        let service = format!(
            "{}/{}",
            svc.metadata.namespace.as_deref().unwrap_or_default(),
            svc.metadata.name.as_deref().unwrap_or_default()
        );
        let (status, reason, message) = match d.refused {
            Some(annotation) => (
                "False",
                pass::IGNORED,
                pass::refusal_message(&service, annotation, pool),
            ),
            None => (
                "True",
                pass::PROXIED,
                format!("a proxying load balancer fronts pool {pool}: ipMode Proxy"),
            ),
        };
        Some(Condition {
            type_: pass::CONDITION.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: svc.metadata.generation,
            last_transition_time: now,
        })
    }

    /// The cloud adapter's listener inputs: ports and traffic policy.
    pub fn cloud_ports(svc: &Service) -> Vec<edgelb_cloud::plan::ServicePort> {
        let spec = svc.spec.clone().unwrap_or_default();
        spec.ports
            .iter()
            .flatten()
            .map(|p| edgelb_cloud::plan::ServicePort {
                name: p.name.clone().unwrap_or_else(|| p.port.to_string()),
                port: u16::try_from(p.port).unwrap_or(0),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
            })
            .collect()
    }
}

fn pick<T: Clone + std::fmt::Debug + 'static>(xs: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(xs)
}

fn opt(xs: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(pick(xs).prop_map(str::to_string))
}

const CLOUD_SPEC: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-spec";
const CLOUD_ADDRESS: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type";
const CLOUD_BANDWIDTH: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-bandwidth";
const CLOUD_USER: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-managed-by-user";

/// Annotation keys: those decisions read, and others the store drops.
const KEYS: &[&str] = &[
    LOAD_BALANCER_IPS,
    ADDRESS_POOL,
    ALLOW_SHARED_IP,
    PASS_THROUGH,
    ELB_PASS_THROUGH,
    NODEPOOL_SELECTOR,
    TOPOLOGY_KEYS,
    CLOUD_SPEC,
    CLOUD_ADDRESS,
    CLOUD_BANDWIDTH,
    CLOUD_USER,
    edgelb_cloud::health::ANNOTATION_HEALTH_CHECK_FLAG,
    edgelb_cloud::health::ANNOTATION_HEALTH_CHECK_INTERVAL,
    crate::fixtures::NODE_POOLS_ANNOTATION,
    "meta.helm.sh/release-name",
    "kubectl.kubernetes.io/last-applied-configuration",
    "example.com/edgelb.io",
    "notedgelb.io/address-pool",
];

const VALUES: &[&str] = &[
    "",
    "true",
    "false",
    "lan",
    "192.0.2.7",
    "192.0.2.7,2001:db8::7",
    "nope",
    "k8s-svc=cube",
    "k8s-svc in (cube, web), !tier",
    "k8s-svc in cube",
    " ",
    "openyurt.io/nodepool",
    "kubernetes.io/hostname, openyurt.io/nodepool",
    "internet",
    "intranet",
    "100",
    "on",
    "off",
    "5",
    "x",
];

fn pairs(
    keys: &'static [&'static str],
    values: &'static [&'static str],
) -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    proptest::option::of(proptest::collection::btree_map(
        pick(keys).prop_map(str::to_string),
        pick(values).prop_map(str::to_string),
        0..6,
    ))
}

fn ports() -> impl Strategy<Value = Option<Vec<ServicePort>>> {
    proptest::option::of(proptest::collection::vec(
        (
            opt(&["http", "dns"]),
            opt(&["TCP", "UDP", "SCTP"]),
            pick(&[0, 53, 80, 443, 70000]),
            proptest::option::of(pick(&[30080, 30053, 70000])),
        )
            .prop_map(|(name, protocol, port, node_port)| ServicePort {
                name,
                protocol,
                port,
                node_port,
                ..Default::default()
            }),
        0..3,
    ))
}

fn ingress() -> impl Strategy<Value = Option<Vec<LoadBalancerIngress>>> {
    proptest::option::of(proptest::collection::vec(
        (
            // Canonical IPs are kept compact, the rest verbatim (upper case, leading
            // zeros, a mapped IPv4 in two spellings, not an IP).
            opt(&[
                "192.0.2.1",
                "2001:db8::1",
                "2001:DB8::1",
                "2001:db8:0::1",
                "::ffff:192.0.2.1",
                "::ffff:c000:201",
                "192.0.2.01",
                "not-an-ip",
                "",
            ]),
            opt(&["lb.example.com"]),
            opt(&["VIP", "Proxy", "vip", ""]),
            proptest::option::of(proptest::collection::vec(
                (pick(&["TCP", "UDP"]), 1..3i32).prop_map(|(protocol, port)| PortStatus {
                    protocol: protocol.to_string(),
                    port,
                    error: None,
                }),
                0..2,
            )),
        )
            .prop_map(|(ip, hostname, ip_mode, ports)| LoadBalancerIngress {
                ip,
                hostname,
                ip_mode,
                ports,
            }),
        0..3,
    ))
}

fn conditions() -> impl Strategy<Value = Option<Vec<Condition>>> {
    proptest::option::of(proptest::collection::vec(
        (pick(&[pass::CONDITION, "Other"]), pick(&["True", "False"])).prop_map(|(t, s)| {
            Condition {
                type_: t.to_string(),
                status: s.to_string(),
                reason: "R".into(),
                message: "m".into(),
                observed_generation: Some(2),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
            }
        }),
        0..3,
    ))
}

prop_compose! {
    fn service()(
        namespace in opt(&["default", "shop"]),
        name in opt(&["web", "cube"]),
        // Canonical UUIDs and numbers are kept compact, anything else as text.
        uid in opt(&[
            "uid-1",
            "f3446372-834e-47e1-ac28-000000000042",
            "F3446372-834E-47E1-AC28-000000000042",
            "f3446372834e47e1ac28000000000042",
            "f3446372-834e-47e1-ac28-00000000004g",
            "",
        ]),
        version in opt(&["42", "0", "042", "18446744073709551615", "18446744073709551616", "-1", "v42", ""]),
        generation in proptest::option::of(1i64..4),
        deleting in any::<bool>(),
        finalizers in proptest::option::of(proptest::collection::vec(pick(&[FINALIZER, "other.io/f"]).prop_map(str::to_string), 0..3)),
        annotations in pairs(KEYS, VALUES),
        labels in pairs(&["k8s-svc", "tier", "app"], &["cube", "web", "a", ""]),
        spec in proptest::option::of((
            opt(&["LoadBalancer", "ClusterIP"]),
            opt(&[crate::api::annotations::DEFAULT_LOAD_BALANCER_CLASS, "alibabacloud.com/elb", "other.io/lb"]),
            opt(&["192.0.2.9", "", "bad"]),
            proptest::option::of(proptest::collection::vec(pick(&["IPv4", "IPv6", "IPv5"]).prop_map(str::to_string), 0..3)),
            opt(&["SingleStack", "PreferDualStack", "RequireDualStack", "Dual"]),
            opt(&["Local", "Cluster"]),
            ports(),
            pairs(&["app", "tier"], &["web", "a"]),
        )),
        status in proptest::option::of((ingress(), conditions())),
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace,
                name,
                uid,
                resource_version: version,
                generation,
                deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
                finalizers,
                annotations,
                labels,
                ..Default::default()
            },
            spec: spec.map(|(type_, class, lb_ip, families, policy, etp, ports, selector)| ServiceSpec {
                type_,
                load_balancer_class: class,
                load_balancer_ip: lb_ip,
                ip_families: families,
                ip_family_policy: policy,
                external_traffic_policy: etp,
                ports,
                selector,
                ..Default::default()
            }),
            status: status.map(|(ingress, conditions)| ServiceStatus {
                load_balancer: Some(LoadBalancerStatus { ingress }),
                conditions,
            }),
        }
    }
}

fn node_pools() -> BTreeMap<Arc<str>, NodePoolView> {
    let pool = |name: &str, labels: &[(&str, &str)], cloud: Option<&str>| {
        (
            Arc::from(name),
            NodePoolView {
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                annotations: cloud
                    .map(|c| BTreeMap::from([(POOL_CLOUD_CLASS.to_string(), c.to_string())]))
                    .unwrap_or_default(),
                nodes: Vec::new(),
                from_crd: true,
            },
        )
    };
    BTreeMap::from([
        pool("hz", &[("k8s-svc", "cube")], None),
        pool(
            "cd",
            &[("k8s-svc", "cube"), ("tier", "b")],
            Some(CLOUD_CLASSES[0]),
        ),
        pool("bj", &[("k8s-svc", "web")], Some("typo.io/lb")),
    ])
}

fn selections() -> [Selection; 3] {
    [
        Selection::default(),
        Selection {
            default_class: true,
            ..Selection::default()
        },
        Selection {
            class: "alibabacloud.com/elb".into(),
            ..Selection::default()
        },
    ]
}

fn label_selector() -> impl Strategy<Value = LabelSelector> {
    (
        pairs(&["k8s-svc", "tier"], &["cube", "web"]),
        proptest::option::of(proptest::collection::vec(
            (
                pick(&["k8s-svc", "tier", "app"]),
                pick(&["In", "NotIn", "Exists", "DoesNotExist"]),
                proptest::collection::vec(pick(&["cube", "a", ""]).prop_map(str::to_string), 0..2),
            )
                .prop_map(|(key, operator, values)| LabelSelectorRequirement {
                    key: key.to_string(),
                    operator: operator.to_string(),
                    values: Some(values),
                }),
            0..3,
        )),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_decision_reads_the_same_from_the_facts(svc in service(), sels in proptest::collection::vec(label_selector(), 0..3)) {
        let f = ServiceFacts::unshared(&svc);
        let key = ObjectKey::of(&svc);
        prop_assert_eq!(&f.key, &key);
        for sel in selections() {
            prop_assert_eq!(is_ours(&f, &sel), old::is_ours(&svc, &sel));
        }
        prop_assert_eq!(has_finalizer(&f), old::has_finalizer(&svc));
        prop_assert_eq!(f.deleting, svc.metadata.deletion_timestamp.is_some());
        prop_assert_eq!(f.class(), old::class(&svc));
        prop_assert_eq!(request_of(&f), old::request_of(&svc));
        prop_assert_eq!(is_local(&f), old::is_local(&svc));
        prop_assert_eq!(pool_topology(&f), old::pool_topology(&svc));

        // Node pools: the selection (or its error) and each pool's source.
        let pools = node_pools();
        let want = old::selector_value(&svc).map(|v| {
            crate::selector::parse(v).map(|sel| {
                pools
                    .values()
                    .filter(|p| crate::selector::matches(&sel, &p.labels))
                    .map(|p| p.name.clone())
                    .collect::<Vec<_>>()
            })
        });
        match (selected_node_pools(&f, &pools), want) {
            (Ok(None), None) => {}
            (Ok(Some(got)), Some(Ok(want))) => prop_assert_eq!(got, want),
            (Err(e), Some(Err(source))) => {
                prop_assert_eq!(&e.service, &key);
                prop_assert_eq!(Some(&e.value), old::selector_value(&svc));
                prop_assert_eq!(e.source, source);
            }
            (got, want) => prop_assert!(false, "{:?} vs {:?}", got, want),
        }
        for pool in [None, pools.get("hz"), pools.get("cd"), pools.get("bj")] {
            prop_assert_eq!(pool_source(&f, pool), old::pool_source(&svc, pool));
        }

        // Pass-through and the status the writer compares.
        prop_assert_eq!(pass::requested(&f), old::pass_requested(&svc));
        prop_assert_eq!(pass::current(&f), old::pass_current(&svc));
        prop_assert_eq!(current_ingress(&f), old::current_ingress(&svc));
        prop_assert_eq!(crate::ipam::status_ips(&f), old::status_ips(&svc));
        for frontend in [Frontend::SelfAnnounced, Frontend::ProxyingLoadBalancer] {
            let now = Time(Timestamp::UNIX_EPOCH);
            prop_assert_eq!(
                pass::desired(&f, "lan", frontend, now.clone()),
                old::pass_desired(&svc, "lan", frontend, now)
            );
        }

        // Pools' serviceSelectors over the labels.
        let labels = svc.metadata.labels.clone().unwrap_or_default();
        for sel in &sels {
            prop_assert_eq!(crate::selector::matches(sel, &f.labels), crate::selector::matches(sel, &labels));
        }

        // Events and owner references.
        let want: ObjectReference = svc.object_ref(&());
        prop_assert_eq!(f.object_ref(), want);
        prop_assert_eq!(f.uid(), svc.metadata.uid.clone());
        prop_assert_eq!(f.resource_version(), svc.metadata.resource_version.clone());
        prop_assert_eq!(f.namespace(), svc.metadata.namespace.as_deref().filter(|n| !n.is_empty()));

        // The cloud adapter: its listeners, its traffic policy, and the plan from the
        // annotations (all of them before, the kept ones now).
        let cfg = crate::cloud_lb::CloudConfig { cluster: "c1".into(), ..Default::default() };
        let snap = crate::snapshot::SnapshotData::default();
        let ps = crate::api::openyurt::PoolService::default();
        let got = crate::cloud_lb::adapter::plan_input(&snap, &cfg, &f, "hz", &ps);
        prop_assert_eq!(&got.ports, &old::cloud_ports(&svc));
        prop_assert_eq!(got.traffic_policy == edgelb_cloud::plan::TrafficPolicy::Local, old::is_local(&svc));
        let mut want = got.clone();
        want.service_annotations = svc.metadata.annotations.clone().unwrap_or_default();
        prop_assert_eq!(
            edgelb_cloud::plan::plan(&edgelb_cloud::ens::EnsProfile, &got),
            edgelb_cloud::plan::plan(&edgelb_cloud::ens::EnsProfile, &want)
        );
    }
}

/// Every annotation name a decision reads is one the store keeps.
#[test]
fn the_store_keeps_every_annotation_a_decision_reads() {
    use edgelb_cloud::plan as cloud;
    for key in [
        LOAD_BALANCER_IPS,
        ADDRESS_POOL,
        ALLOW_SHARED_IP,
        PASS_THROUGH,
        ELB_PASS_THROUGH,
        NODEPOOL_SELECTOR,
        TOPOLOGY_KEYS,
        crate::fixtures::NODE_POOLS_ANNOTATION,
        cloud::ANNOTATION_LB_ID,
        cloud::ANNOTATION_MANAGED_BY_USER,
        cloud::ANNOTATION_FORCE_OVERRIDE_LISTENERS,
        cloud::ANNOTATION_ADDRESS_TYPE,
        cloud::ANNOTATION_SPEC,
        cloud::ANNOTATION_BANDWIDTH,
    ]
    .into_iter()
    .chain(edgelb_cloud::health::ANNOTATIONS)
    {
        assert!(is_read_on_services(key), "{key}");
    }
    for key in [
        "meta.helm.sh/release-name",
        crate::slim::LAST_APPLIED,
        "notedgelb.io/x",
        "example.com/edgelb.io",
        "edgelb.io",
    ] {
        assert!(!is_read_on_services(key), "{key}");
    }
}
