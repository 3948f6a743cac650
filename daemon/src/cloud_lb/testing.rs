//! A small world of cloud-class Services, node pools, nodes and PoolServices as snapshots,
//! for the adapter's tests, the driver's emulator tests and the bench. Not used by the
//! daemon itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSpec, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use crate::api::annotations::{NODEPOOL_LABEL, NODEPOOL_SELECTOR};
use crate::api::openyurt::PoolService;
use crate::fixtures;
use crate::snapshot::{Object, ObjectKey, Selection, Snapshot, Store};
use crate::status::pool_ingress::{CloudReports, CLOUD_FINALIZER};
use crate::status::pool_services::{has_cloud_finalizer, plan_with};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The ENS ELB class.
pub const CLASS: &str = "alibabacloud.com/elb";
/// The speaker's namespace of the world.
pub const SYSTEM: &str = "edgelb-system";
/// The credentials Secret's name.
pub const SECRET: &str = "edgelb-elb-credentials";

/// A store fed as the sources would, and the fan-out carried out by hand.
pub struct World {
    pub store: Store,
    pub selection: Selection,
    uid: u64,
    /// The Services as applied (the store keeps only what decisions read of them).
    services: BTreeMap<ObjectKey, Service>,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

fn pairs(p: &[(&str, &str)]) -> BTreeMap<String, String> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl World {
    /// Speakers of class [`CLASS`] in [`SYSTEM`].
    pub fn new() -> World {
        World {
            store: Store::default(),
            selection: Selection {
                class: CLASS.into(),
                default_class: false,
                namespace: SYSTEM.into(),
            },
            uid: 0,
            services: BTreeMap::new(),
        }
    }

    fn uid(&mut self) -> String {
        self.uid += 1;
        format!("uid-{}", self.uid)
    }

    /// The credentials Secret (`accessKeyID`/`accessKeySecret`).
    pub fn secret(&mut self, id: &str, secret: &str) {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(SECRET.into()),
                namespace: Some(SYSTEM.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (
                    "accessKeyID".to_string(),
                    ByteString(id.as_bytes().to_vec()),
                ),
                (
                    "accessKeySecret".to_string(),
                    ByteString(secret.as_bytes().to_vec()),
                ),
            ])),
            ..Default::default()
        };
        self.store.apply(Object::Secret(s), SYSTEM);
    }

    /// A NodePool with labels and the ENS network annotations.
    pub fn pool(&mut self, name: &str, labels: &[(&str, &str)], region: &str) {
        let mut p = fixtures::node_pool(
            name,
            labels,
            &[
                ("alibabacloud.com/ens-region-id", region),
                ("alibabacloud.com/ens-network-id", "n-emu1"),
                ("alibabacloud.com/ens-vswitch-id", "vsw-emu1"),
            ],
        );
        p.metadata.uid = Some(self.uid());
        self.store.apply(Object::NodePool(p), SYSTEM);
    }

    /// Removes a NodePool.
    pub fn delete_pool(&mut self, name: &str) {
        self.store.delete("NodePool", &ObjectKey::new("", name));
    }

    /// A Ready node of `pool` with `spec.providerID` (`None`: unset).
    pub fn node(&mut self, name: &str, pool: &str, provider_id: Option<&str>) {
        let mut n = fixtures::node(name, &[(NODEPOOL_LABEL, pool)]);
        n.spec = Some(NodeSpec {
            provider_id: provider_id.map(String::from),
            ..Default::default()
        });
        self.store.apply(Object::Node(n), SYSTEM);
    }

    /// Removes a node.
    pub fn delete_node(&mut self, name: &str) {
        self.store.delete("Node", &ObjectKey::new("", name));
    }

    /// A LoadBalancer Service of [`CLASS`] selecting pools by `selector`, ports
    /// `(port, protocol, nodePort)`, with annotations.
    pub fn service(
        &mut self,
        namespace: &str,
        name: &str,
        selector: &str,
        ports: &[(i32, &str, i32)],
        annotations: &[(&str, &str)],
    ) {
        let mut a = pairs(annotations);
        a.insert(NODEPOOL_SELECTOR.into(), selector.into());
        let svc = Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                annotations: Some(a),
                uid: Some(self.uid()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                load_balancer_class: Some(CLASS.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(port, proto, np)| ServicePort {
                            name: Some(format!("{}-{port}", proto.to_lowercase())),
                            port: *port,
                            protocol: Some(proto.to_string()),
                            node_port: Some(*np),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        };
        self.services
            .insert(ObjectKey::new(namespace, name), svc.clone());
        self.store.apply(Object::Service(svc), SYSTEM);
    }

    /// Changes a Service made by [`World::service`] and applies it again.
    pub fn edit_service(&mut self, namespace: &str, name: &str, edit: impl FnOnce(&mut Service)) {
        let key = ObjectKey::new(namespace, name);
        let svc = self
            .services
            .get_mut(&key)
            .expect("a Service of this world");
        edit(svc);
        let svc = svc.clone();
        self.store.apply(Object::Service(svc), SYSTEM);
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.services.remove(&ObjectKey::new(namespace, name));
        self.store
            .delete("Service", &ObjectKey::new(namespace, name));
    }

    /// Sets annotations on a PoolService (e.g. a user's load balancer id).
    pub fn annotate_pool_service(
        &mut self,
        namespace: &str,
        name: &str,
        annotations: &[(&str, &str)],
    ) {
        let snap = self.snapshot();
        if let Some(ps) = snap.pool_services.get(&ObjectKey::new(namespace, name)) {
            let mut ps: PoolService = (**ps).clone();
            ps.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(pairs(annotations));
            self.store.apply(Object::PoolService(ps), SYSTEM);
        }
    }

    /// Carries out the PoolService fan-out as the writer of record would (creates and
    /// deletes PoolServices), without cloud finalizers.
    pub fn fan_out(&mut self) {
        self.fan_out_with(None);
    }

    /// The fan-out as the writer of record carries it out (`pool_services::plan_with`):
    /// with the driver's reports, a PoolService of a cloud class carries
    /// [`CLOUD_FINALIZER`] while the driver holds resources for it; a delete only marks it
    /// (deletionTimestamp) while it carries the finalizer, which goes once the driver
    /// released its pool (then the API server removes it).
    pub fn fan_out_with(&mut self, reports: Option<&CloudReports>) {
        let snap = self.snapshot();
        let none = CloudReports::default();
        let p = plan_with(&snap, reports.unwrap_or(&none));
        for a in p.apply {
            let mut ps = a.object;
            let key = ObjectKey::of(&ps);
            if let Some(have) = snap.pool_services.get(&key) {
                // A server-side apply leaves others' annotations; a deleting object stays so.
                ps.metadata.annotations = have.metadata.annotations.clone();
                ps.metadata.deletion_timestamp = have.metadata.deletion_timestamp.clone();
                if ps.metadata.deletion_timestamp.is_some() {
                    ps.metadata.finalizers = have.metadata.finalizers.clone();
                }
            }
            ps.metadata.uid = Some(a.existing.unwrap_or_else(|| self.uid()));
            self.store.apply(Object::PoolService(ps), SYSTEM);
        }
        for (k, _) in p.delete {
            let Some(have) = snap.pool_services.get(&k) else {
                continue;
            };
            if has_cloud_finalizer(have) {
                let mut ps = (**have).clone();
                ps.metadata
                    .deletion_timestamp
                    .get_or_insert_with(|| Time(k8s_openapi::jiff::Timestamp::now()));
                self.store.apply(Object::PoolService(ps), SYSTEM);
            } else {
                self.store.delete("PoolService", &k);
            }
        }
        for (k, _) in p.release {
            let Some(have) = self.snapshot().pool_services.get(&k).cloned() else {
                continue;
            };
            let mut ps = (*have).clone();
            if let Some(f) = ps.metadata.finalizers.as_mut() {
                f.retain(|x| x != CLOUD_FINALIZER);
            }
            if ps.metadata.finalizers.iter().flatten().next().is_none()
                && ps.metadata.deletion_timestamp.is_some()
            {
                self.store.delete("PoolService", &k);
            } else {
                self.store.apply(Object::PoolService(ps), SYSTEM);
            }
        }
    }

    /// The snapshot now.
    pub fn snapshot(&self) -> Snapshot {
        self.store.snapshot(&self.selection)
    }
}
