use super::*;
use crate::api::annotations::{NODEPOOL_LABEL, NODEPOOL_SELECTOR};
use crate::fixtures::{annotate, node, node_pool, service};
use crate::snapshot::{Object, Store};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;
use std::ops::Deref;

const NS: &str = "edgelb-system";

fn svc(name: &str, selector: Option<&str>) -> Service {
    let mut s = service("default", name, 80);
    s.metadata.uid = Some(format!("uid-{name}"));
    match selector {
        Some(sel) => annotate(s, NODEPOOL_SELECTOR, sel),
        None => s,
    }
}

fn pool(name: &str, labels: &[(&str, &str)]) -> Object {
    let mut np = node_pool(name, labels, &[]);
    np.metadata.uid = Some(format!("uid-{name}"));
    Object::NodePool(np)
}

fn foreign(name: &str) -> Object {
    let mut ps = PoolService::default();
    ps.metadata.name = Some(name.into());
    ps.metadata.namespace = Some("default".into());
    ps.metadata.uid = Some(format!("uid-{name}"));
    ps.metadata.labels = Some(BTreeMap::from([(
        LABEL_MANAGED_BY.to_string(),
        "pool-service-controller".to_string(),
    )]));
    ps.spec.load_balancer_class = Some("edgelb.io/speaker".into());
    Object::PoolService(ps)
}

/// The store, and the Services as the API server has them (the store keeps only what
/// decisions read of them; the tests edit the objects, as users and the writer do).
#[derive(Default)]
struct Cluster {
    store: Store,
    services: BTreeMap<ObjectKey, Service>,
}

impl Cluster {
    fn apply(&mut self, o: Object, ns: &str) {
        if let Object::Service(s) = &o {
            self.services.insert(ObjectKey::of(s), s.clone());
        }
        self.store.apply(o, ns);
    }

    fn delete(&mut self, kind: &str, key: &ObjectKey) {
        if kind == "Service" {
            self.services.remove(key);
        }
        self.store.delete(kind, key);
    }
}

impl Deref for Cluster {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

/// The Service `default/cube-svc` as the API server has it.
fn cube(store: &Cluster) -> Service {
    store
        .services
        .get(&ObjectKey::new("default", "cube-svc"))
        .cloned()
        .unwrap_or_default()
}

/// What the store keeps of `default/cube-svc`.
fn cube_facts(store: &Cluster) -> Arc<ServiceFacts> {
    store
        .services()
        .get(&ObjectKey::new("default", "cube-svc"))
        .cloned()
        .expect("cube-svc")
}

fn snap_of(store: &Store) -> Snapshot {
    store.snapshot(&Selection::default())
}

/// Carries a plan out on the store, as the API server would (UIDs from names).
fn carry_out(store: &mut Cluster, p: &Plan) {
    for a in &p.apply {
        let mut o = a.object.clone();
        o.metadata.uid = Some(format!(
            "uid-{}",
            o.metadata.name.clone().unwrap_or_default()
        ));
        store.apply(Object::PoolService(o), NS);
    }
    for (k, _) in &p.delete {
        store.delete("PoolService", k);
    }
    for (k, add) in p
        .add_finalizer
        .iter()
        .map(|k| (k, true))
        .chain(p.remove_finalizer.iter().map(|k| (k, false)))
    {
        let Some(mut s) = store.services.get(k).cloned() else {
            continue;
        };
        let f = s.metadata.finalizers.get_or_insert_with(Vec::new);
        f.retain(|x| x != crate::api::openyurt::FINALIZER);
        if add {
            f.push(crate::api::openyurt::FINALIZER.into());
        }
        if !add && f.is_empty() && s.metadata.deletion_timestamp.is_some() {
            store.delete("Service", k);
        } else {
            store.apply(Object::Service(s), NS);
        }
    }
}

/// Plans and carries out until nothing is left to do (at most 5 rounds).
fn settle(store: &mut Cluster) -> Plan {
    for _ in 0..5 {
        let p = plan(&snap_of(store));
        if p.apply.is_empty()
            && p.delete.is_empty()
            && p.add_finalizer.is_empty()
            && p.remove_finalizer.is_empty()
        {
            return p;
        }
        carry_out(store, &p);
    }
    panic!("the fan-out does not settle");
}

fn names(store: &Cluster) -> Vec<String> {
    store
        .pool_services()
        .keys()
        .map(|k| k.to_string())
        .collect()
}

fn two_pools() -> Cluster {
    let mut store = Cluster::default();
    store.apply(pool("np-hefei", &[("k8s-svc", "cube")]), NS);
    store.apply(pool("np-chengdu", &[("k8s-svc", "cube")]), NS);
    store.apply(
        Object::Node(node("n1", &[(NODEPOOL_LABEL, "np-hefei")])),
        NS,
    );
    store.apply(Object::Service(svc("cube-svc", Some("k8s-svc=cube"))), NS);
    store
}

#[test]
fn one_pool_service_per_selected_pool_owned_by_both() {
    let mut store = two_pools();
    settle(&mut store);
    assert_eq!(
        names(&store),
        ["default/cube-svc-np-chengdu", "default/cube-svc-np-hefei"]
    );
    let ps = &store.pool_services()[&ObjectKey::new("default", "cube-svc-np-hefei")];
    let labels = ps.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels[LABEL_SERVICE_NAME], "cube-svc");
    assert_eq!(labels[LABEL_POOL_NAME], "np-hefei");
    assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
    let owners = ps.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 2);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("Service", "uid-cube-svc")
    );
    assert_eq!(owners[0].controller, Some(true));
    assert_eq!(
        (owners[1].kind.as_str(), owners[1].uid.as_str()),
        ("NodePool", "uid-np-hefei")
    );
    assert_eq!(
        ps.spec.load_balancer_class.as_deref(),
        Some("edgelb.io/speaker")
    );
    let s = &cube_facts(&store);
    assert!(has_finalizer(s));
}

#[test]
fn each_lifecycle_rule_removes_that_pool_service() {
    // The pool's labels stop matching.
    let mut store = two_pools();
    settle(&mut store);
    store.apply(pool("np-chengdu", &[("k8s-svc", "other")]), NS);
    settle(&mut store);
    assert_eq!(
        names(&store),
        ["default/cube-svc-np-hefei"],
        "pool relabelled"
    );
    let mut s = cube(&store);
    // The selector changes.
    s.metadata
        .annotations
        .as_mut()
        .map(|a| a.insert(NODEPOOL_SELECTOR.into(), "k8s-svc=none".into()));
    store.apply(Object::Service(s.clone()), NS);
    settle(&mut store);
    assert!(names(&store).is_empty(), "selector changed");
    assert!(
        has_finalizer(&cube_facts(&store)),
        "still fans out (to no pool): the finalizer stays"
    );
    // The pool is deleted.
    let mut store = two_pools();
    settle(&mut store);
    store.delete("NodePool", &ObjectKey::new("", "np-chengdu"));
    settle(&mut store);
    assert_eq!(names(&store), ["default/cube-svc-np-hefei"], "pool deleted");
    // The annotation goes: every PoolService, then the finalizer.
    let mut s = cube(&store);
    s.metadata.annotations = None;
    store.apply(Object::Service(s), NS);
    settle(&mut store);
    assert!(names(&store).is_empty());
    assert!(!has_finalizer(&cube_facts(&store)));
    // The Service is deleted.
    let mut store = two_pools();
    settle(&mut store);
    let mut s = cube(&store);
    s.metadata.deletion_timestamp = Some(Time(Default::default()));
    store.apply(Object::Service(s), NS);
    let p = plan(&snap_of(&store));
    assert_eq!(p.delete.len(), 2);
    assert!(p.remove_finalizer.is_empty(), "the finalizer goes last");
    settle(&mut store);
    assert!(names(&store).is_empty());
    assert!(
        store.services().is_empty(),
        "the Service went once its finalizer did"
    );
}

#[test]
fn a_foreign_pool_service_is_left_alone_and_reported() {
    let mut store = two_pools();
    store.apply(foreign("cube-svc-np-hefei"), NS);
    let p = settle(&mut store);
    assert_eq!(p.problems.len(), 1);
    assert_eq!(p.problems[0].reason, "PoolServiceConflict");
    assert!(
        p.problems[0].message.contains("default/cube-svc-np-hefei"),
        "{}",
        p.problems[0].message
    );
    let ps = &store.pool_services()[&ObjectKey::new("default", "cube-svc-np-hefei")];
    assert_eq!(
        ps.metadata
            .labels
            .as_ref()
            .map(|l| l[LABEL_MANAGED_BY].as_str()),
        Some("pool-service-controller")
    );
    // Deleting the Service never deletes the foreign one.
    store.delete("Service", &ObjectKey::new("default", "cube-svc"));
    settle(&mut store);
    assert_eq!(names(&store), ["default/cube-svc-np-hefei"]);
}

#[test]
fn a_bad_selector_is_reported_and_changes_nothing() {
    let mut store = two_pools();
    settle(&mut store);
    let mut s = cube(&store);
    s.metadata
        .annotations
        .as_mut()
        .map(|a| a.insert(NODEPOOL_SELECTOR.into(), "k8s-svc in cube".into()));
    store.apply(Object::Service(s), NS);
    store.apply(Object::Service(svc("web", Some("k8s-svc=cube"))), NS);
    let p = settle(&mut store);
    assert_eq!(p.problems.len(), 1);
    assert_eq!(p.problems[0].reason, "InvalidNodePoolSelector");
    assert!(p.problems[0].message.contains("Service default/cube-svc"));
    assert!(p.problems[0].message.contains(NODEPOOL_SELECTOR));
    assert_eq!(
        names(&store).len(),
        4,
        "the bad one keeps its two, the other Service got its two"
    );
}

#[test]
fn a_pool_name_that_cannot_name_an_object_is_reported() {
    let mut store = Cluster::default();
    store.apply(Object::Node(node("n1", &[(NODEPOOL_LABEL, "Hefei_1")])), NS);
    store.apply(Object::Service(svc("cube", Some(NODEPOOL_LABEL))), NS);
    let p = settle(&mut store);
    assert_eq!(p.problems[0].reason, "InvalidPoolServiceName");
    assert!(names(&store).is_empty());
}

proptest! {
    /// Whatever the pools, selectors and foreign objects, the fan-out settles with exactly
    /// one PoolService of ours per (Service, selected pool) whose name is free, named
    /// `<service>-<pool>`; foreign ones are never touched; a Service carries the finalizer
    /// exactly while it fans out.
    #[test]
    fn the_fan_out_settles_on_the_selection(
        pools in proptest::collection::vec((0..4usize, proptest::bool::ANY), 0..4),
        services in proptest::collection::vec((0..3usize, proptest::option::of(0..3usize)), 0..4),
        foreigns in proptest::collection::vec((0..3usize, 0..4usize), 0..2),
        changes in proptest::collection::vec((0..4usize, proptest::bool::ANY), 0..3),
    ) {
        let sels = ["k8s-svc=cube", "k8s-svc", "!k8s-svc"];
        let mut store = Cluster::default();
        let put_pool = |store: &mut Cluster, p: usize, labelled: bool| {
            let l: &[(&str, &str)] = if labelled { &[("k8s-svc", "cube")] } else { &[] };
            store.apply(pool(&format!("p{p}"), l), NS);
        };
        for (p, labelled) in &pools {
            put_pool(&mut store, *p, *labelled);
        }
        for (i, sel) in &services {
            store.apply(Object::Service(svc(&format!("s{i}"), sel.map(|s| sels[s]))), NS);
        }
        for (i, p) in &foreigns {
            store.apply(foreign(&format!("s{i}-p{p}")), NS);
        }
        settle(&mut store);
        for (p, labelled) in &changes {
            put_pool(&mut store, *p, *labelled);
        }
        settle(&mut store);
        let snap = snap_of(&store);
        let foreign_names: BTreeSet<String> = foreigns.iter().map(|(i, p)| format!("default/s{i}-p{p}")).collect();
        let mut want: BTreeSet<String> = BTreeSet::new();
        for (key, s) in &snap.services {
            let sel = selected_node_pools(s, &snap.node_pools).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(has_finalizer(s), sel.is_some(), "{}", key);
            for p in sel.into_iter().flatten() {
                let n = format!("default/{}-{p}", key.name);
                if !foreign_names.contains(&n) {
                    want.insert(n);
                }
            }
        }
        let ours: BTreeSet<String> = snap.pool_services.iter()
            .filter(|(_, ps)| is_ours(ps, &snap.selection))
            .map(|(k, _)| k.to_string()).collect();
        prop_assert_eq!(ours, want);
        for n in &foreign_names {
            let k = ObjectKey::new("default", n.trim_start_matches("default/"));
            let ps = &snap.pool_services[&k];
            prop_assert!(!is_ours(ps, &snap.selection), "{} was taken over", n);
        }
    }
}

/// A cloud-class PoolService keeps `CLOUD_FINALIZER` while the driver holds its cloud
/// resources; when it is deleted, the finalizer goes only once a synced driver holds none,
/// and the Service keeps its own finalizer until then.
#[test]
fn a_cloud_pool_service_keeps_its_finalizer_until_the_driver_released_its_resources() {
    use crate::status::pool_ingress::{CloudEntry, CloudReports, CLOUD_FINALIZER};
    let sel = Selection {
        class: "alibabacloud.com/elb".into(),
        ..Selection::default()
    };
    let mut store = Cluster::default();
    store.apply(pool("np-a", &[("k8s-svc", "cube")]), NS);
    store.apply(Object::Node(node("a-1", &[(NODEPOOL_LABEL, "np-a")])), NS);
    let mut s = svc("cube-svc", Some("k8s-svc=cube"));
    if let Some(spec) = s.spec.as_mut() {
        spec.load_balancer_class = Some("alibabacloud.com/elb".into());
    }
    store.apply(Object::Service(s.clone()), NS);
    let key: crate::status::pool_ingress::PoolKey =
        (ObjectKey::new("default", "cube-svc"), "np-a".into());
    let ps_key = ObjectKey::new("default", "cube-svc-np-a");
    // No report: created without the finalizer (nothing held yet).
    let mut cloud = CloudReports::default();
    let p = plan_with(&store.snapshot(&sel), &cloud);
    assert_eq!(p.apply.len(), 1);
    assert!(!has_cloud_finalizer(&p.apply[0].object));
    let mut ps = p.apply[0].object.clone();
    ps.metadata.uid = Some("uid-ps".into());
    store.apply(Object::PoolService(ps.clone()), NS);
    // The driver is about to create: the finalizer is added (a repair).
    cloud.entries.insert(
        key.clone(),
        CloudEntry {
            holds_resources: true,
            ..CloudEntry::default()
        },
    );
    let p = plan_with(&store.snapshot(&sel), &cloud);
    assert_eq!(p.apply.len(), 1, "{p:?}");
    assert_eq!(p.apply[0].existing.as_deref(), Some("uid-ps"));
    assert!(has_cloud_finalizer(&p.apply[0].object));
    ps.metadata.finalizers = Some(vec![CLOUD_FINALIZER.into()]);
    store.apply(Object::PoolService(ps.clone()), NS);
    assert_eq!(plan_with(&store.snapshot(&sel), &cloud), {
        let mut want = Plan::default();
        want.add_finalizer.push(key.0.clone());
        want.wanted.insert(key.clone(), ps_key.clone());
        want
    });
    // The Service goes: the PoolService is deleted; the API server keeps it, deleting.
    let mut gone = s.clone();
    gone.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    gone.metadata.finalizers = Some(vec![crate::api::openyurt::FINALIZER.into()]);
    store.apply(Object::Service(gone), NS);
    let p = plan_with(&store.snapshot(&sel), &cloud);
    assert_eq!(p.delete, vec![(ps_key.clone(), "uid-ps".to_string())]);
    ps.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    store.apply(Object::PoolService(ps.clone()), NS);
    // Held, or not synced: nothing is released and the Service keeps its finalizer.
    for reports in [cloud.clone(), CloudReports::default()] {
        let p = plan_with(&store.snapshot(&sel), &reports);
        assert!(
            p.release.is_empty() && p.remove_finalizer.is_empty(),
            "{p:?}"
        );
        assert!(p.apply.is_empty() && p.delete.is_empty(), "{p:?}");
    }
    // Released by a synced driver: our finalizer goes.
    cloud.synced = true;
    cloud.entries.clear();
    let p = plan_with(&store.snapshot(&sel), &cloud);
    assert_eq!(p.release, vec![(ps_key.clone(), "uid-ps".to_string())]);
    assert!(p.remove_finalizer.is_empty());
    // Once the PoolService is gone, the Service's finalizer goes.
    store.delete("PoolService", &ps_key);
    let p = plan_with(&store.snapshot(&sel), &cloud);
    assert_eq!(p.remove_finalizer, vec![key.0.clone()]);
}
