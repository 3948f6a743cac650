//! The in-memory index of cluster objects (one map per kind, with `apply` / `delete` /
//! `reset` as watchers deliver them) and the immutable [`Snapshot`] built from it.
//!
//! Sources (kube watchers or the YAML file) only ever touch the [`Store`]; everything that
//! decides reads a [`Snapshot`]. A snapshot is an `Arc`: cloning it is one atomic increment,
//! and a broken watch never changes it (fail-static: the last one stays in force).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use imbl::OrdMap;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;

use crate::api::annotations::{NODEPOOL_LABEL, REGION_LABEL};
use crate::api::openyurt::{NodePool, PoolService};
use crate::api::policy_route::PolicyRoute;
use crate::api::validate::{self, FieldError};
use crate::api::{
    BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement,
};
use crate::ipam::pool::PoolView;
use crate::nodepool::NodePoolView;
use crate::service::ServiceFacts;
use crate::source::decode::Undecodable;

/// `namespace/name` of an object; cluster-scoped objects have an empty namespace. Strings are
/// shared so that building a snapshot of 10 000 Services copies pointers, not text.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, empty for cluster-scoped kinds.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of any Kubernetes object.
    pub fn of<K: Resource>(obj: &K) -> ObjectKey {
        let meta = obj.meta();
        ObjectKey::new(
            meta.namespace.as_deref().unwrap_or(""),
            meta.name.as_deref().unwrap_or(""),
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Holds a secret value; `Debug` prints `***` so it can never reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The data of a Secret in the speaker's namespace, redacted in `Debug`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretData {
    /// Key -> bytes (`data` and `stringData` merged, `stringData` wins as in the API).
    pub data: Redacted<BTreeMap<String, Vec<u8>>>,
}

impl SecretData {
    /// Copies the values out of a Secret (the Secret itself is dropped).
    pub fn from_secret(secret: &Secret) -> SecretData {
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            data.insert(k.clone(), v.as_bytes().to_vec());
        }
        SecretData {
            data: Redacted(data),
        }
    }
}

/// An edgelb object with the outcome of its validation. Invalid objects stay visible (their
/// status must say why) but take no part in allocation or announcement.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked<T> {
    /// The object as the API server has it.
    pub object: Arc<T>,
    /// What is wrong with it; empty when valid.
    pub problems: Vec<FieldError>,
}

impl<T> Checked<T> {
    /// Whether the object passed validation.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One map of objects of a kind, keyed by `namespace/name`, fed by a watcher.
#[derive(Clone, Debug)]
pub struct Index<T> {
    objects: BTreeMap<ObjectKey, Arc<T>>,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Index {
            objects: BTreeMap::new(),
        }
    }
}

impl<T> Index<T> {
    /// Adds or replaces an object.
    pub fn apply(&mut self, key: ObjectKey, obj: T) {
        self.objects.insert(key, Arc::new(obj));
    }

    /// Removes an object; removing an absent one is not an error.
    pub fn delete(&mut self, key: &ObjectKey) {
        self.objects.remove(key);
    }

    /// Adds or replaces an already shared object; returns the one it replaced.
    fn put(&mut self, key: ObjectKey, obj: Arc<T>) -> Option<Arc<T>> {
        self.objects.insert(key, obj)
    }

    /// Removes an object and returns it.
    fn take(&mut self, key: &ObjectKey) -> Option<Arc<T>> {
        self.objects.remove(key)
    }

    /// Replaces everything (after a watcher's re-list).
    pub fn reset(&mut self, objects: impl IntoIterator<Item = (ObjectKey, T)>) {
        self.objects = objects.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    }

    /// The objects in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Arc<T>)> {
        self.objects.iter()
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<T>> {
        self.objects.get(key)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// What decisions read of one EndpointSlice: its Service and the nodes of its ready
/// endpoints. The store keeps this instead of the object (issue 17: an EndpointSlice with
/// one endpoint, its labels and ports cost ~1.5 KB; this costs ~100 B, node names shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Its name (shared with the store's key): a Service's slices are kept in name order.
    pub name: Arc<str>,
    /// The Service it belongs to (label `kubernetes.io/service-name`, same namespace).
    pub service: Option<Arc<str>>,
    /// The nodes of its ready endpoints, sorted, each once, with how many ready endpoints it
    /// hosts. An endpoint whose `ready` condition is unset counts as ready, as the
    /// EndpointSlice API says consumers must interpret it.
    pub ready_nodes: Box<[(Arc<str>, u32)]>,
    /// Whether any endpoint is ready (with or without a node name).
    pub any_ready: bool,
}

impl Slice {
    /// The facts of `slice`, node names made by `name` (the store shares them).
    pub fn of(slice: &EndpointSlice, mut name: impl FnMut(&str) -> Arc<str>) -> Slice {
        let mut nodes: Vec<(Arc<str>, u32)> = Vec::new();
        let mut any_ready = false;
        for ep in slice.endpoints.iter().flatten() {
            if ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true) {
                any_ready = true;
                if let Some(node) = ep.node_name.as_deref() {
                    match nodes.iter_mut().find(|(n, _)| &**n == node) {
                        Some((_, count)) => *count += 1,
                        None => nodes.push((name(node), 1)),
                    }
                }
            }
        }
        nodes.sort();
        Slice {
            name: slice.metadata.name.as_deref().unwrap_or("").into(),
            service: slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(|s| Arc::from(s.as_str())),
            ready_nodes: nodes.into_boxed_slice(),
            any_ready,
        }
    }
}

/// Strings many objects repeat (node names, namespaces), stored once; shared by the
/// store's keys and slices.
#[derive(Clone, Debug, Default)]
struct Names {
    names: std::collections::HashSet<Arc<str>>,
    /// Size after the last sweep: the next sweep comes when it doubled.
    swept: usize,
}

impl Names {
    /// The shared copy of `s`.
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.names.get(s) {
            return a.clone();
        }
        if self.names.len() >= 2 * self.swept.max(64) {
            // Names nothing holds any more (nodes, namespaces gone): the set tracks the cluster.
            self.names.retain(|a| Arc::strong_count(a) > 1);
            self.swept = self.names.len();
        }
        let a: Arc<str> = Arc::from(s);
        self.names.insert(a.clone());
        a
    }
}

/// Every kind a source delivers, so that the file and kube sources share one entry point.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// A Service (any class; the snapshot filters).
    Service(Service),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
    /// A Node.
    Node(Node),
    /// A Namespace (for `serviceAllocation.namespaceSelectors`).
    Namespace(Namespace),
    /// A Secret; only those in the speaker's namespace are kept.
    Secret(Secret),
    /// An `IPAddressPool`.
    IPAddressPool(IPAddressPool),
    /// A `BGPPeer`.
    BGPPeer(BGPPeer),
    /// A `BGPAdvertisement`.
    BGPAdvertisement(BGPAdvertisement),
    /// An `L2Advertisement`.
    L2Advertisement(L2Advertisement),
    /// A `Community`.
    Community(Community),
    /// A `BFDProfile`.
    BFDProfile(BFDProfile),
    /// A `PolicyRoute`.
    PolicyRoute(PolicyRoute),
    /// An OpenYurt `NodePool` (when its CRD is installed).
    NodePool(NodePool),
    /// A `PoolService` (any class: the fan-out tells ours from foreign ones).
    PoolService(PoolService),
    /// An object of `kind` that the API server accepted but our types cannot read.
    Undecodable {
        /// Kind name as in [`Object::describe`].
        kind: &'static str,
        /// What is known of it and why it does not decode.
        object: Undecodable,
    },
}

impl Object {
    /// The kind and key, for logs and errors.
    pub fn describe(&self) -> (&'static str, ObjectKey) {
        match self {
            Object::Service(o) => ("Service", ObjectKey::of(o)),
            Object::EndpointSlice(o) => ("EndpointSlice", ObjectKey::of(o)),
            Object::Node(o) => ("Node", ObjectKey::of(o)),
            Object::Namespace(o) => ("Namespace", ObjectKey::of(o)),
            Object::Secret(o) => ("Secret", ObjectKey::of(o)),
            Object::IPAddressPool(o) => ("IPAddressPool", ObjectKey::of(o)),
            Object::BGPPeer(o) => ("BGPPeer", ObjectKey::of(o)),
            Object::BGPAdvertisement(o) => ("BGPAdvertisement", ObjectKey::of(o)),
            Object::L2Advertisement(o) => ("L2Advertisement", ObjectKey::of(o)),
            Object::Community(o) => ("Community", ObjectKey::of(o)),
            Object::BFDProfile(o) => ("BFDProfile", ObjectKey::of(o)),
            Object::PolicyRoute(o) => ("PolicyRoute", ObjectKey::of(o)),
            Object::NodePool(o) => ("NodePool", ObjectKey::of(o)),
            Object::PoolService(o) => ("PoolService", ObjectKey::of(o)),
            Object::Undecodable { kind, object } => (
                kind,
                ObjectKey::new(
                    object.meta.namespace.as_deref().unwrap_or(""),
                    object.meta.name.as_deref().unwrap_or(""),
                ),
            ),
        }
    }
}

/// What decides which Services are ours and where Secrets are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Our `loadBalancerClass` (default `edgelb.io/speaker`).
    pub class: String,
    /// Also take LoadBalancer Services without a class (`--default-class`).
    pub default_class: bool,
    /// The speaker's namespace: Secrets and our CRs are read there only.
    pub namespace: String,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            class: crate::api::annotations::DEFAULT_LOAD_BALANCER_CLASS.to_string(),
            default_class: false,
            namespace: "edgelb-system".to_string(),
        }
    }
}

/// Whether a Service is ours: `type: LoadBalancer` and our class, or no class when we are the
/// cluster default (SPEC.md, "Service selection"). Other classes are never touched.
pub fn is_ours(svc: &ServiceFacts, sel: &Selection) -> bool {
    if !svc.load_balancer {
        return false;
    }
    match svc.class() {
        Some(class) => class == sel.class,
        None => sel.default_class,
    }
}

/// The node pool of a Node: the OpenYurt label, else the region label (SPEC.md, "Node pools
/// and regions"). The one rule for membership: OpenYurt's controller puts the label on every
/// member of a `NodePool` object, which adds the pool's labels ([`crate::nodepool::build`]).
pub fn node_pool_of(node: &Node) -> Option<String> {
    let labels = node.metadata.labels.as_ref()?;
    labels
        .get(NODEPOOL_LABEL)
        .or_else(|| labels.get(REGION_LABEL))
        .cloned()
}

/// The mutable side: one [`Index`] per kind, fed by a source.
///
/// Services and EndpointSlices change only through [`Store::apply`], [`Store::delete`] and
/// [`Store::reset`] (read them with [`Store::services`] / [`Store::endpoint_slices`]): the
/// store keeps the snapshot's maps of our Services and of slices by Service up to date as
/// they change, as persistent maps, so that a snapshot after one change costs O(log n), not a
/// rebuild of 10 000 entries.
#[derive(Clone, Debug, Default)]
pub struct Store {
    /// Services (all classes: a class change must be seen as ours -> not ours), as what
    /// decisions read of them.
    services: Index<ServiceFacts>,
    /// EndpointSlices, as what decisions read of them.
    endpoint_slices: Index<Slice>,
    /// The slices of every Service that has any, by Service key, in name order (as
    /// `SnapshotData::endpoint_slices`, which shares it).
    slices_by_service: OrdMap<ObjectKey, Vec<Arc<Slice>>>,
    /// Node and namespace names the slices and keys share.
    names: Names,
    /// The snapshot's Service and slice maps for one [`Selection`].
    derived: Derived,
    /// Nodes.
    pub nodes: Index<Node>,
    /// Namespaces.
    pub namespaces: Index<Namespace>,
    /// Secrets of the speaker's namespace, as redacted data.
    pub secrets: Index<SecretData>,
    /// `IPAddressPool`s.
    pub pools: Index<IPAddressPool>,
    /// `BGPPeer`s.
    pub peers: Index<BGPPeer>,
    /// `BGPAdvertisement`s.
    pub bgp_advertisements: Index<BGPAdvertisement>,
    /// `L2Advertisement`s.
    pub l2_advertisements: Index<L2Advertisement>,
    /// `Community` aliases.
    pub communities: Index<Community>,
    /// `BFDProfile`s.
    pub bfd_profiles: Index<BFDProfile>,
    /// `PolicyRoute`s.
    pub policy_routes: Index<PolicyRoute>,
    /// OpenYurt `NodePool`s (empty while their CRD is not installed).
    pub node_pool_objects: Index<NodePool>,
    /// `PoolService`s of every namespace, as a persistent map (shared with snapshots).
    pool_services: OrdMap<ObjectKey, Arc<PoolService>>,
    /// Objects of any kind that do not decode, by kind and key. An edgelb object here is
    /// absent from its index (it is invalid); a built-in one keeps its last decoded version.
    undecodable: BTreeMap<(&'static str, ObjectKey), Arc<Undecodable>>,
}

/// The Service maps of a snapshot for one selection, kept in step with the index.
/// Unchanged Services keep their `Arc` (readers compare with `Arc::ptr_eq`).
#[derive(Clone, Debug, Default)]
struct Derived {
    /// The selection these maps were made for.
    sel: Selection,
    /// Our Services (as `SnapshotData::services`).
    services: OrdMap<ObjectKey, Arc<ServiceFacts>>,
    /// Services that are not ours but still carry our finalizer (as
    /// `SnapshotData::finalized_elsewhere`).
    finalized_elsewhere: OrdMap<ObjectKey, Arc<ServiceFacts>>,
}

impl Derived {
    /// The maps for `sel`, from scratch.
    fn build(services: &Index<ServiceFacts>, sel: &Selection) -> Derived {
        let mut d = Derived {
            sel: sel.clone(),
            ..Derived::default()
        };
        for (key, svc) in services.iter() {
            d.service_changed(key, Some(svc));
        }
        d
    }

    /// After Service `key` was added, replaced (`Some`) or removed (`None`).
    fn service_changed(&mut self, key: &ObjectKey, svc: Option<&Arc<ServiceFacts>>) {
        match svc {
            Some(svc) if is_ours(svc, &self.sel) => {
                self.services.insert(key.clone(), svc.clone());
            }
            _ => {
                self.services.remove(key);
            }
        }
        match svc {
            Some(svc) if !is_ours(svc, &self.sel) && has_finalizer(svc) => {
                self.finalized_elsewhere.insert(key.clone(), svc.clone());
            }
            _ => {
                self.finalized_elsewhere.remove(key);
            }
        }
    }
}

/// The slices of every Service, by Service key, each Service's in name order.
fn slices_by_service(slices: &Index<Slice>) -> OrdMap<ObjectKey, Vec<Arc<Slice>>> {
    let mut out: OrdMap<ObjectKey, Vec<Arc<Slice>>> = OrdMap::new();
    for (key, slice) in slices.iter() {
        if let Some(owner) = owner_of(key, slice) {
            // The index is in key order: each Service's list comes out sorted.
            out.entry(owner).or_default().push(slice.clone());
        }
    }
    out
}

/// After slice `key` went from `old` to `new` (either absent): its Service's list.
fn slice_changed(
    by_service: &mut OrdMap<ObjectKey, Vec<Arc<Slice>>>,
    key: &ObjectKey,
    old: Option<&Arc<Slice>>,
    new: Option<&Arc<Slice>>,
) {
    if let Some(owner) = old.and_then(|s| owner_of(key, s)) {
        if let Some(slices) = by_service.get_mut(&owner) {
            slices.retain(|s| s.name != key.name);
            if slices.is_empty() {
                by_service.remove(&owner);
            }
        }
    }
    if let Some((owner, slice)) = new.and_then(|s| Some((owner_of(key, s)?, s))) {
        let slices = by_service.entry(owner).or_default();
        match slices.binary_search_by(|s| s.name.cmp(&key.name)) {
            Ok(i) => slices[i] = slice.clone(),
            Err(i) => slices.insert(i, slice.clone()),
        }
    }
}

/// Whether a Service carries edgelb's PoolService finalizer.
pub fn has_finalizer(svc: &ServiceFacts) -> bool {
    svc.has_finalizer
}

/// The Service an EndpointSlice belongs to (label `kubernetes.io/service-name`, same
/// namespace).
fn owner_of(key: &ObjectKey, slice: &Slice) -> Option<ObjectKey> {
    Some(ObjectKey {
        namespace: key.namespace.clone(),
        name: slice.service.clone()?,
    })
}

impl Store {
    /// Services (all classes).
    pub fn services(&self) -> &Index<ServiceFacts> {
        &self.services
    }

    /// EndpointSlices, as what decisions read of them.
    pub fn endpoint_slices(&self) -> &Index<Slice> {
        &self.endpoint_slices
    }

    /// `PoolService`s.
    pub fn pool_services(&self) -> &OrdMap<ObjectKey, Arc<PoolService>> {
        &self.pool_services
    }

    /// Keeps the snapshot's Service maps for `sel` from now on (the default selection
    /// until called). A snapshot for another selection is still right, but built whole.
    pub fn select(&mut self, sel: &Selection) {
        if self.derived.sel != *sel {
            self.derived = Derived::build(&self.services, sel);
        }
    }

    /// Adds or replaces one object of any kind. Secrets outside `namespace` are ignored.
    pub fn apply(&mut self, mut obj: Object, namespace: &str) {
        crate::slim::object(&mut obj);
        let (kind, mut key) = obj.describe();
        // One copy of each namespace name for all the keys (10 000 Services and their slices
        // are often in a few namespaces).
        key.namespace = self.names.get(&key.namespace);
        if let Object::Undecodable { kind, object } = obj {
            if is_edgelb_kind(kind) {
                self.delete_decoded(kind, &key);
            }
            self.undecodable.insert((kind, key), Arc::new(object));
            return;
        }
        self.undecodable.remove(&(kind, key.clone()));
        match obj {
            Object::Service(o) => {
                let svc = Arc::new(ServiceFacts::of(&o, |n| self.names.get(n)));
                // The map's key shares the facts' strings.
                let key = svc.key.clone();
                self.derived.service_changed(&key, Some(&svc));
                self.services.put(key, svc);
            }
            Object::EndpointSlice(o) => {
                let slice = Arc::new(Slice::of(&o, |n| self.names.get(n)));
                // The index's key shares the slice's name.
                let key = ObjectKey {
                    namespace: key.namespace,
                    name: slice.name.clone(),
                };
                let old = self.endpoint_slices.put(key.clone(), slice.clone());
                slice_changed(
                    &mut self.slices_by_service,
                    &key,
                    old.as_ref(),
                    Some(&slice),
                );
            }
            Object::Node(o) => self.nodes.apply(key, o),
            Object::Namespace(o) => self.namespaces.apply(key, o),
            Object::Secret(o) => {
                if &*key.namespace == namespace {
                    self.secrets.apply(key, SecretData::from_secret(&o))
                }
            }
            Object::IPAddressPool(o) => self.pools.apply(key, o),
            Object::BGPPeer(o) => self.peers.apply(key, o),
            Object::BGPAdvertisement(o) => self.bgp_advertisements.apply(key, o),
            Object::L2Advertisement(o) => self.l2_advertisements.apply(key, o),
            Object::Community(o) => self.communities.apply(key, o),
            Object::BFDProfile(o) => self.bfd_profiles.apply(key, o),
            Object::PolicyRoute(o) => self.policy_routes.apply(key, o),
            Object::NodePool(o) => self.node_pool_objects.apply(key, o),
            Object::PoolService(o) => {
                self.pool_services.insert(key, Arc::new(o));
            }
            Object::Undecodable { .. } => {}
        }
    }

    /// Objects that do not decode, by kind and key.
    pub fn undecodable(&self) -> &BTreeMap<(&'static str, ObjectKey), Arc<Undecodable>> {
        &self.undecodable
    }

    /// Removes one object of a kind (as [`Object::describe`] names kinds).
    pub fn delete(&mut self, kind: &str, key: &ObjectKey) {
        self.undecodable
            .retain(|(k, o), _| !(*k == kind && o == key));
        self.delete_decoded(kind, key);
    }

    /// Removes the decoded version of an object.
    fn delete_decoded(&mut self, kind: &str, key: &ObjectKey) {
        match kind {
            "Service" => {
                self.services.take(key);
                self.derived.service_changed(key, None);
            }
            "EndpointSlice" => {
                let old = self.endpoint_slices.take(key);
                slice_changed(&mut self.slices_by_service, key, old.as_ref(), None);
            }
            "Node" => self.nodes.delete(key),
            "Namespace" => self.namespaces.delete(key),
            "Secret" => self.secrets.delete(key),
            "IPAddressPool" => self.pools.delete(key),
            "BGPPeer" => self.peers.delete(key),
            "BGPAdvertisement" => self.bgp_advertisements.delete(key),
            "L2Advertisement" => self.l2_advertisements.delete(key),
            "Community" => self.communities.delete(key),
            "BFDProfile" => self.bfd_profiles.delete(key),
            "PolicyRoute" => self.policy_routes.delete(key),
            "NodePool" => self.node_pool_objects.delete(key),
            "PoolService" => {
                self.pool_services.remove(key);
            }
            _ => {}
        }
    }

    /// Replaces every object of a kind (after a watcher's re-list).
    pub fn reset(&mut self, kind: &str, objects: Vec<Object>, namespace: &str) {
        self.undecodable.retain(|(k, _), _| *k != kind);
        match kind {
            "Service" => self.services = Index::default(),
            "EndpointSlice" => self.endpoint_slices = Index::default(),
            "Node" => self.nodes = Index::default(),
            "Namespace" => self.namespaces = Index::default(),
            "Secret" => self.secrets = Index::default(),
            "IPAddressPool" => self.pools = Index::default(),
            "BGPPeer" => self.peers = Index::default(),
            "BGPAdvertisement" => self.bgp_advertisements = Index::default(),
            "L2Advertisement" => self.l2_advertisements = Index::default(),
            "Community" => self.communities = Index::default(),
            "BFDProfile" => self.bfd_profiles = Index::default(),
            "PolicyRoute" => self.policy_routes = Index::default(),
            "NodePool" => self.node_pool_objects = Index::default(),
            "PoolService" => self.pool_services = OrdMap::new(),
            _ => {}
        }
        for o in objects {
            if o.describe().0 == kind {
                self.apply(o, namespace);
            }
        }
        // The patches above started from maps that still held the old list.
        if kind == "Service" {
            let sel = self.derived.sel.clone();
            self.derived = Derived::build(&self.services, &sel);
        }
        if kind == "EndpointSlice" {
            self.slices_by_service = slices_by_service(&self.endpoint_slices);
        }
    }

    /// Builds the immutable view: only our Services, EndpointSlices grouped by Service, node
    /// pools, every CR with its validation outcome, and the pools ready for allocation.
    pub fn snapshot(&self, sel: &Selection) -> Snapshot {
        build(self, sel)
    }
}

/// A Node with its node pool.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    /// The Node.
    pub node: Arc<Node>,
    /// Its node pool, if it has one.
    pub node_pool: Option<String>,
}

/// The immutable view every decision reads. Clone is cheap (one `Arc`).
#[derive(Clone, Debug, Default)]
pub struct Snapshot(Arc<SnapshotData>);

impl Snapshot {
    /// True when both are the very same snapshot (cheap; for caches keyed by snapshot).
    pub fn same_as(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for Snapshot {
    type Target = SnapshotData;
    fn deref(&self) -> &SnapshotData {
        &self.0
    }
}

/// The contents of a [`Snapshot`].
#[derive(Debug, Default)]
pub struct SnapshotData {
    /// What made a Service ours.
    pub selection: Selection,
    /// Our Services only, by `namespace/name` (a persistent map: shared with the store,
    /// iterated in key order like a `BTreeMap`).
    pub services: OrdMap<ObjectKey, Arc<ServiceFacts>>,
    /// EndpointSlices by Service key (label `kubernetes.io/service-name`), each Service's in
    /// name order: of every Service that has any, ours or not (readers look up ours; one map
    /// kept by the store and shared, not a second one filtered per selection).
    /// What decisions read of each slice ([`Slice`]), not the objects.
    pub endpoint_slices: OrdMap<ObjectKey, Vec<Arc<Slice>>>,
    /// Nodes by name, with their node pool.
    pub nodes: BTreeMap<Arc<str>, NodeView>,
    /// Node pools by name: their labels, annotations and members ([`crate::nodepool`]).
    pub node_pools: BTreeMap<Arc<str>, NodePoolView>,
    /// The OpenYurt `NodePool` objects by name (for owner references: their UIDs).
    pub node_pool_objects: BTreeMap<Arc<str>, Arc<NodePool>>,
    /// Every `PoolService` by `namespace/name`, ours and foreign ([`crate::status::pool_services`]
    /// tells them apart).
    pub pool_services: OrdMap<ObjectKey, Arc<PoolService>>,
    /// Services that are not ours (any more) but still carry our finalizer: the fan-out
    /// removes their PoolServices, then the finalizer.
    pub finalized_elsewhere: OrdMap<ObjectKey, Arc<ServiceFacts>>,
    /// Namespace labels by namespace name (for `namespaceSelectors`).
    pub namespace_labels: BTreeMap<Arc<str>, BTreeMap<String, String>>,
    /// Secrets of the speaker's namespace by name.
    pub secrets: BTreeMap<Arc<str>, Arc<SecretData>>,
    /// `IPAddressPool`s with validation outcome.
    pub pools: BTreeMap<ObjectKey, Checked<IPAddressPool>>,
    /// `BGPPeer`s with validation outcome.
    pub peers: BTreeMap<ObjectKey, Checked<BGPPeer>>,
    /// `BGPAdvertisement`s with validation outcome.
    pub bgp_advertisements: BTreeMap<ObjectKey, Checked<BGPAdvertisement>>,
    /// `L2Advertisement`s with validation outcome.
    pub l2_advertisements: BTreeMap<ObjectKey, Checked<L2Advertisement>>,
    /// `Community` objects with validation outcome.
    pub communities: BTreeMap<ObjectKey, Checked<Community>>,
    /// `BFDProfile`s with validation outcome.
    pub bfd_profiles: BTreeMap<ObjectKey, Checked<BFDProfile>>,
    /// `PolicyRoute`s (validated by the policy-route planner).
    pub policy_routes: BTreeMap<ObjectKey, Arc<PolicyRoute>>,
    /// Valid pools in allocation order (priority, then name), parsed once.
    pub allocation_pools: Vec<PoolView>,
    /// Objects of any kind that do not decode, by kind and key (edgelb's also appear,
    /// invalid, in their kind's map above).
    pub undecodable: BTreeMap<(&'static str, ObjectKey), Arc<Undecodable>>,
}

impl Snapshot {
    /// A snapshot from already-built data (tests, benches).
    pub fn from_data(data: SnapshotData) -> Snapshot {
        Snapshot(Arc::new(data))
    }
}

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The kinds edgelb defines (their objects carry a `Valid` condition).
pub const EDGELB_KINDS: [&str; 7] = [
    "IPAddressPool",
    "BGPPeer",
    "BGPAdvertisement",
    "L2Advertisement",
    "Community",
    "BFDProfile",
    "PolicyRoute",
];

/// Whether `kind` is one of ours (an undecodable one is invalid, not kept at its last
/// version: the user changed it and must see why it no longer counts).
pub fn is_edgelb_kind(kind: &str) -> bool {
    EDGELB_KINDS.contains(&kind)
}

/// An object that stands for an undecodable one in its kind's map: its metadata and
/// conditions, an empty spec, and the decoding problem. It is never valid, so nothing
/// reads its spec for a decision; views and the `Valid` condition show why.
trait Placeholder: Sized {
    fn placeholder(u: &Undecodable) -> Self;
}

macro_rules! placeholder {
    ($($t:ty),*) => {$(
        impl Placeholder for $t {
            fn placeholder(u: &Undecodable) -> Self {
                let mut o = <$t>::default();
                o.metadata = u.meta.clone();
                o.status = Some(crate::api::ObjectStatus {
                    conditions: u.conditions.clone(),
                });
                o
            }
        }
    )*};
}
placeholder!(
    IPAddressPool,
    BGPPeer,
    BGPAdvertisement,
    L2Advertisement,
    Community,
    BFDProfile
);

fn check<T, F>(store: &Store, kind: &str, index: &Index<T>, f: F) -> BTreeMap<ObjectKey, Checked<T>>
where
    T: Placeholder,
    F: Fn(&T) -> Vec<FieldError>,
{
    let mut out: BTreeMap<ObjectKey, Checked<T>> = index
        .iter()
        .map(|(k, o)| {
            (
                k.clone(),
                Checked {
                    object: o.clone(),
                    problems: f(o),
                },
            )
        })
        .collect();
    for ((_, key), u) in store.undecodable.iter().filter(|((k, _), _)| *k == kind) {
        out.insert(
            key.clone(),
            Checked {
                object: Arc::new(T::placeholder(u)),
                problems: vec![u.problem.clone()],
            },
        );
    }
    out
}

fn build(store: &Store, sel: &Selection) -> Snapshot {
    // O(1): persistent maps share their nodes with the store's.
    let (services, finalized_elsewhere) = if store.derived.sel == *sel {
        (
            store.derived.services.clone(),
            store.derived.finalized_elsewhere.clone(),
        )
    } else {
        let d = Derived::build(&store.services, sel);
        (d.services, d.finalized_elsewhere)
    };
    let endpoint_slices = store.slices_by_service.clone();

    let mut nodes = BTreeMap::new();
    for (key, node) in store.nodes.iter() {
        let node_pool = node_pool_of(node);
        nodes.insert(
            key.name.clone(),
            NodeView {
                node: node.clone(),
                node_pool,
            },
        );
    }

    let node_pools = crate::nodepool::build(&nodes, &store.node_pool_objects);
    let node_pool_objects = store
        .node_pool_objects
        .iter()
        .map(|(k, np)| (k.name.clone(), np.clone()))
        .collect();

    let namespace_labels = store
        .namespaces
        .iter()
        .map(|(k, ns)| {
            (
                k.name.clone(),
                ns.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect();
    let secrets = store
        .secrets
        .iter()
        .map(|(k, s)| (k.name.clone(), s.clone()))
        .collect();

    let communities = check(store, "Community", &store.communities, |c| {
        validate::community(&c.spec)
    });
    let bfd_profiles = check(store, "BFDProfile", &store.bfd_profiles, |p| {
        validate::bfd_profile(&p.spec)
    });
    let ctx = validate::Context {
        bfd_profiles: bfd_profiles
            .iter()
            .map(|(k, c)| (k.name.to_string(), c.is_valid()))
            .collect(),
        bfd_echo_profiles: store
            .bfd_profiles
            .iter()
            .filter(|(_, p)| p.spec.echo_mode)
            .map(|(k, _)| k.name.to_string())
            .collect(),
        namespace: sel.namespace.clone(),
        community_aliases: communities
            .values()
            .filter(|c| c.is_valid())
            .flat_map(|c| c.object.spec.communities.iter().map(|a| a.name.clone()))
            .collect(),
    };
    let pools = check(store, "IPAddressPool", &store.pools, |p| {
        validate::ip_address_pool(&p.spec)
    });
    let allocation_pools = crate::ipam::pool::allocation_order(&pools, &node_pools);

    Snapshot(Arc::new(SnapshotData {
        selection: sel.clone(),
        services,
        endpoint_slices,
        nodes,
        node_pools,
        node_pool_objects,
        pool_services: store.pool_services.clone(),
        finalized_elsewhere,
        namespace_labels,
        secrets,
        peers: check(store, "BGPPeer", &store.peers, |p| {
            validate::bgp_peer(&p.spec, &ctx)
        }),
        bgp_advertisements: check(store, "BGPAdvertisement", &store.bgp_advertisements, |a| {
            validate::bgp_advertisement(&a.spec, &ctx)
        }),
        l2_advertisements: check(store, "L2Advertisement", &store.l2_advertisements, |a| {
            validate::l2_advertisement(&a.spec)
        }),
        communities,
        bfd_profiles,
        policy_routes: store
            .policy_routes
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect(),
        pools,
        allocation_pools,
        undecodable: store.undecodable.clone(),
    }))
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
