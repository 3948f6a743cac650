//! The writer decides only what changed ([`super::scope`]): on random sequences of
//! Service, EndpointSlice, record, candidate and pool changes and of writes ending in
//! every way, a writer deciding only its scope ends every pass in the same state (queue,
//! what it wrote and reported) as one deciding every Service on every pass.

use super::*;
use crate::api::{BGPAdvertisement, L2Advertisement};
use crate::election::InterfaceFacts;
use crate::fixtures::{annotate, endpoint_slice, pool, service};
use crate::mock_api::scripted;
use crate::snapshot::{Object, Store};
use k8s_openapi::api::core::v1::{LoadBalancerStatus, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use std::collections::BTreeMap;

const NS: &str = "edgelb-system";
const NODES: [&str; 3] = ["n0", "n1", "n2"];

#[derive(Clone, Debug)]
enum Op {
    /// Add or edit Service i: port, `Local`, sharing key, pass-through asked.
    Service(u8, u8, bool, bool, bool),
    Delete(u8),
    /// EndpointSlice of Service i with ready endpoints on these nodes (none: removed).
    Slice(u8, Vec<u8>),
    /// The watch shows Service i with the IPs the writer wants (a status write landed),
    /// or with its status cleared.
    Record(u8, bool),
    /// Node n's speaker is (not) live.
    Live(u8, bool),
    /// The pool's range (a configuration change).
    Pool(bool),
    /// The next queued write starts and ends this way.
    Finish(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, 0u8..3, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(i, p, l, s, t)| Op::Service(i, p, l, s, t)),
        1 => (0u8..8).prop_map(Op::Delete),
        2 => (0u8..8, proptest::collection::vec(0u8..3, 0..3)).prop_map(|(i, n)| Op::Slice(i, n)),
        3 => (0u8..8, prop::bool::weighted(0.8)).prop_map(|(i, r)| Op::Record(i, r)),
        1 => (0u8..3, any::<bool>()).prop_map(|(n, l)| Op::Live(n, l)),
        1 => any::<bool>().prop_map(Op::Pool),
        6 => (0u8..6).prop_map(Op::Finish),
    ]
}

fn name(i: u8) -> String {
    format!("s{i}")
}

fn candidates(live: &[bool; 3]) -> Vec<Candidate> {
    NODES
        .iter()
        .zip(live)
        .map(|(n, live)| Candidate {
            node: n.to_string(),
            labels: Default::default(),
            ready: true,
            network_unavailable: false,
            excluded_label: false,
            node_pool: None,
            live: *live,
            interfaces: vec![InterfaceFacts {
                name: "eth0".into(),
                up: true,
                subnets: vec!["192.0.2.0/24".parse().expect("subnet")],
            }],
        })
        .collect()
}

fn world() -> Store {
    let mut store = Store::default();
    store.apply(
        Object::IPAddressPool(pool(NS, "lan", &["192.0.2.0/29"])),
        NS,
    );
    let meta = |n: &str| ObjectMeta {
        name: Some(n.into()),
        namespace: Some(NS.into()),
        ..Default::default()
    };
    store.apply(
        Object::L2Advertisement(L2Advertisement {
            metadata: meta("l2"),
            spec: Default::default(),
            status: None,
        }),
        NS,
    );
    store.apply(
        Object::BGPAdvertisement(BGPAdvertisement {
            metadata: meta("bgp"),
            spec: Default::default(),
            status: None,
        }),
        NS,
    );
    store
}

fn with_status(mut svc: Service, ingress: Vec<LoadBalancerIngress>) -> Service {
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(ingress),
        }),
        ..Default::default()
    });
    svc
}

fn leading_writer(full: bool) -> Writer {
    let (client, _server) = scripted(vec![]);
    let fence = Fence {
        epoch: 1,
        tenure: 1,
        until: Some(Instant::now() + Duration::from_secs(600)),
        holder: Some("n0".into()),
        api_reachable: true,
        contact: None,
    };
    let (_tx, rx) = watch::channel(fence);
    let mut w = Writer::new(client, WriterConfig::new("n0", Selection::default()), rx);
    w.term = Term::Leading {
        epoch: 1,
        alloc: Box::default(),
    };
    w.always_full = full;
    w
}

/// The state a pass leaves besides the queue, as comparable text.
fn state(w: &Writer) -> String {
    let mut applied: Vec<_> = w.applied.iter().collect();
    applied.sort_by(|a, b| a.0.cmp(b.0));
    let mut failed: Vec<_> = w.failed.iter().collect();
    failed.sort();
    let mut announced: Vec<_> = w.announced.iter().collect();
    announced.sort();
    let mut pass: Vec<_> = w
        .pass_applied
        .iter()
        .map(|(k, c)| (k, c.0.as_ref().map(|c| (&c.status, &c.reason, &c.message))))
        .collect();
    pass.sort();
    format!(
        "applied {applied:?}\nfailed {failed:?}\nannounced {announced:?}\npass {pass:?}\nchanged {:?}",
        w.changed
    )
}

/// Starts the next queued write of `w` and ends it as `how` says.
fn finish(w: &mut Writer, how: u8, snap: &Snapshot) {
    let Some((key, write)) = w.queue.next(Instant::now()) else {
        return;
    };
    let outcome = match (how, write) {
        (0 | 1, Write::Status { ingress, .. }) => Ended::Status {
            ingress,
            version: snap
                .services
                .get(key.service())
                .and_then(|s| s.resource_version()),
            events: 1,
            owed: None,
        },
        (0 | 1, Write::Note(text)) => Ended::Reported(text, 1),
        (0 | 1, Write::Condition(c)) => Ended::Condition(c, 0),
        (0 | 1, Write::Undecodable(ev)) => Ended::Undecodable(ev),
        (0 | 1, Write::PassThrough(c)) => Ended::PassThrough(c, 1),
        (2, _) => Ended::Retry("refused".into()),
        (3, _) => Ended::Gone,
        (4, _) => Ended::Conflict("stale".into()),
        _ => Ended::Fenced,
    };
    w.finished(Finished {
        epoch: 1,
        key,
        outcome,
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn deciding_only_the_scope_equals_deciding_everything(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _enter = rt.enter();
        let mut store = world();
        let sel = Selection::default();
        let mut live = [true; 3];
        let mut inc = leading_writer(false);
        let mut full = leading_writer(true);
        // The Services as the API server has them (the store keeps what decisions read).
        let mut api: BTreeMap<ObjectKey, Service> = BTreeMap::new();
        for op in ops {
            let snap = store.snapshot(&sel);
            match op {
                Op::Service(i, port, local, shared, pass_through) => {
                    let mut svc = service("default", &name(i), 80 + i32::from(port));
                    if let Some(spec) = svc.spec.as_mut() {
                        spec.external_traffic_policy = Some(if local { "Local" } else { "Cluster" }.into());
                    }
                    if shared {
                        svc = annotate(svc, "edgelb.io/allow-shared-ip", "k");
                    }
                    if pass_through {
                        svc = annotate(svc, "edgelb.io/pass-through", "true");
                    }
                    // An edit keeps what the watch showed of the status.
                    if let Some(old) = api.get(&ObjectKey::new("default", &name(i))) {
                        svc.status = old.status.clone();
                    }
                    api.insert(ObjectKey::new("default", &name(i)), svc.clone());
                    store.apply(Object::Service(svc), NS);
                }
                Op::Delete(i) => {
                    api.remove(&ObjectKey::new("default", &name(i)));
                    store.delete("Service", &ObjectKey::new("default", &name(i)));
                }
                Op::Slice(i, nodes) => {
                    let slice = endpoint_slice(
                        "default",
                        &name(i),
                        &format!("{}-1", name(i)),
                        nodes.iter().map(|n| NODES[usize::from(*n)].to_string()),
                    );
                    store.apply(Object::EndpointSlice(slice), NS);
                }
                Op::Record(i, write) => {
                    let key = ObjectKey::new("default", &name(i));
                    if let (Some(svc), Some(obj)) = (snap.services.get(&key), api.get_mut(&key)) {
                        let ingress = if write {
                            desired_ingress(
                                svc,
                                inc.assignments.get(&key),
                                pass::Frontend::SelfAnnounced,
                            )
                        } else {
                            Vec::new()
                        };
                        *obj = with_status(obj.clone(), ingress);
                        store.apply(Object::Service(obj.clone()), NS);
                    }
                }
                Op::Live(n, l) => live[usize::from(n)] = l,
                Op::Pool(wide) => {
                    let range = if wide { "192.0.2.0/28" } else { "192.0.2.0/29" };
                    store.apply(Object::IPAddressPool(pool(NS, "lan", &[range])), NS);
                }
                Op::Finish(how) => {
                    finish(&mut inc, how, &snap);
                    finish(&mut full, how, &snap);
                }
            }
            let sub = Submission {
                snap: store.snapshot(&sel),
                candidates: Arc::new(candidates(&live)),
            };
            for w in [&mut inc, &mut full] {
                w.latest = Some(sub.clone());
                w.process();
            }
            // Queued values compare equal when only condition timestamps differ.
            prop_assert_eq!(inc.queue.entries(), full.queue.entries());
            prop_assert_eq!(state(&inc), state(&full));
        }
    }
}
