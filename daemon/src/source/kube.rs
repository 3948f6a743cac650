//! Kubernetes source: one `kube::runtime::watcher` per kind feeding a [`Store`], merged into
//! one task that publishes a new [`Snapshot`] after each batch of changes.
//!
//! - Services and EndpointSlices of every namespace (the class filter is applied when the
//!   snapshot is built: a class change must be seen as a removal), Nodes, Namespaces;
//!   Secrets and our CRs only in the speaker's namespace (PolicyRoute is cluster-scoped).
//! - Nothing is published until every kind has been listed once, so no decision is ever
//!   taken on a half-known cluster.
//! - A re-list is buffered and swapped in at `InitDone`, so a reconnect never empties an
//!   index for a moment.
//! - A watch error publishes nothing: the last snapshot stays in force (fail-static) while
//!   the watcher reconnects with kube's default exponential backoff.

use std::collections::{BTreeSet, HashMap};

use futures::stream::{select_all, BoxStream};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::api::policy_route::PolicyRoute;
use crate::api::{BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};
use crate::snapshot::{Object, Selection, Snapshot, Store};

/// One thing a watcher reported. (Large, but each is moved once, straight into the feeder.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Update {
    /// An event of a kind.
    Event {
        /// Kind name as in [`Object::describe`].
        kind: &'static str,
        /// The event.
        event: watcher::Event<Object>,
    },
    /// The watch of a kind failed; it reconnects by itself.
    Error {
        /// Kind name.
        kind: &'static str,
        /// The error.
        message: String,
    },
}

/// Applies watcher updates to a [`Store`]; pure apart from logging.
#[derive(Debug)]
pub struct Feeder {
    /// The objects known now.
    pub store: Store,
    namespace: String,
    relist: HashMap<&'static str, Vec<Object>>,
    listed: BTreeSet<&'static str>,
    kinds: usize,
    dirty: bool,
}

impl Feeder {
    /// A feeder expecting `kinds` watchers.
    pub fn new(namespace: &str, kinds: usize) -> Feeder {
        Feeder {
            store: Store::default(),
            namespace: namespace.to_string(),
            relist: HashMap::new(),
            listed: BTreeSet::new(),
            kinds,
            dirty: false,
        }
    }

    /// Applies one update.
    pub fn handle(&mut self, update: Update) {
        match update {
            Update::Error { kind, message } => {
                tracing::warn!(kind, error = %message, "watch failed; keeping the last snapshot and reconnecting");
            }
            Update::Event { kind, event } => match event {
                watcher::Event::Apply(o) => {
                    self.store.apply(o, &self.namespace);
                    self.dirty = true;
                }
                watcher::Event::Delete(o) => {
                    let (_, key) = o.describe();
                    self.store.delete(kind, &key);
                    self.dirty = true;
                }
                watcher::Event::Init => {
                    self.relist.insert(kind, Vec::new());
                }
                watcher::Event::InitApply(o) => self.relist.entry(kind).or_default().push(o),
                watcher::Event::InitDone => {
                    let objects = self.relist.remove(kind).unwrap_or_default();
                    tracing::debug!(kind, objects = objects.len(), "listed");
                    self.store.reset(kind, objects, &self.namespace);
                    self.listed.insert(kind);
                    self.dirty = true;
                }
            },
        }
    }

    /// Whether every kind has been listed once.
    pub fn ready(&self) -> bool {
        self.listed.len() >= self.kinds
    }

    /// Whether something changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }
}

fn map_event<K>(event: watcher::Event<K>, wrap: fn(K) -> Object) -> watcher::Event<Object> {
    match event {
        watcher::Event::Apply(k) => watcher::Event::Apply(wrap(k)),
        watcher::Event::Delete(k) => watcher::Event::Delete(wrap(k)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(k) => watcher::Event::InitApply(wrap(k)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// A watcher of one kind as a stream of [`Update`]s, reconnecting with backoff.
pub fn stream<K>(
    api: Api<K>,
    kind: &'static str,
    wrap: fn(K) -> Object,
) -> BoxStream<'static, Update>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |r| match r {
            Ok(event) => Update::Event {
                kind,
                event: map_event(event, wrap),
            },
            Err(e) => Update::Error {
                kind,
                message: e.to_string(),
            },
        })
        .boxed()
}

/// Where a watch lists: every namespace (and cluster-scoped kinds), or only the speaker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Cluster-wide: every namespace, or a cluster-scoped kind.
    Cluster,
    /// Only the speaker's own namespace (`--namespace`).
    SpeakerNamespace,
}

/// A kind the speaker watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// core/v1 Node.
    Node,
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Secret.
    Secret,
    /// edgelb.io IPAddressPool.
    IPAddressPool,
    /// edgelb.io BGPPeer.
    BGPPeer,
    /// edgelb.io BGPAdvertisement.
    BGPAdvertisement,
    /// edgelb.io L2Advertisement.
    L2Advertisement,
    /// edgelb.io Community.
    Community,
    /// edgelb.io PolicyRoute (cluster-scoped).
    PolicyRoute,
}

/// One watch (a list, then a watch) the speaker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    /// What it watches.
    pub kind: Kind,
    /// Where.
    pub reach: Reach,
}

/// Every watch of the speaker. [`streams`] builds the watchers from this table and from
/// nothing else, so a new watch is a new row here, and the RBAC test
/// (`daemon/tests/kube_rbac.rs`) checks the shipped grants against every row.
pub const WATCHES: &[Watch] = &[
    Watch {
        kind: Kind::Service,
        reach: Reach::Cluster,
    },
    Watch {
        kind: Kind::EndpointSlice,
        reach: Reach::Cluster,
    },
    Watch {
        kind: Kind::Node,
        reach: Reach::Cluster,
    },
    Watch {
        kind: Kind::Namespace,
        reach: Reach::Cluster,
    },
    Watch {
        kind: Kind::Secret,
        reach: Reach::SpeakerNamespace,
    },
    Watch {
        kind: Kind::IPAddressPool,
        reach: Reach::SpeakerNamespace,
    },
    Watch {
        kind: Kind::BGPPeer,
        reach: Reach::SpeakerNamespace,
    },
    Watch {
        kind: Kind::BGPAdvertisement,
        reach: Reach::SpeakerNamespace,
    },
    Watch {
        kind: Kind::L2Advertisement,
        reach: Reach::SpeakerNamespace,
    },
    Watch {
        kind: Kind::Community,
        reach: Reach::SpeakerNamespace,
    },
    Watch {
        kind: Kind::PolicyRoute,
        reach: Reach::Cluster,
    },
];

/// The API group and URL plural of a typed kind, and whether it is namespaced.
fn resource_of<K>() -> (String, String, bool)
where
    K: Resource<DynamicType = ()>,
    K::Scope: 'static,
{
    let namespaced = std::any::TypeId::of::<K::Scope>()
        == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>();
    (
        K::group(&()).into_owned(),
        K::plural(&()).into_owned(),
        namespaced,
    )
}

/// `Api::all` or `Api::namespaced` as `reach` says.
fn api<K>(client: &Client, reach: Reach, namespace: &str) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match reach {
        Reach::Cluster => Api::all(client.clone()),
        Reach::SpeakerNamespace => Api::namespaced(client.clone(), namespace),
    }
}

impl Kind {
    /// The kind's name, as in [`Object::describe`].
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::Secret => "Secret",
            Kind::IPAddressPool => "IPAddressPool",
            Kind::BGPPeer => "BGPPeer",
            Kind::BGPAdvertisement => "BGPAdvertisement",
            Kind::L2Advertisement => "L2Advertisement",
            Kind::Community => "Community",
            Kind::PolicyRoute => "PolicyRoute",
        }
    }

    /// API group, URL plural and whether it is namespaced, from the Rust type watched.
    pub fn resource(self) -> (String, String, bool) {
        match self {
            Kind::Service => resource_of::<Service>(),
            Kind::EndpointSlice => resource_of::<EndpointSlice>(),
            Kind::Node => resource_of::<Node>(),
            Kind::Namespace => resource_of::<Namespace>(),
            Kind::Secret => resource_of::<Secret>(),
            Kind::IPAddressPool => resource_of::<IPAddressPool>(),
            Kind::BGPPeer => resource_of::<BGPPeer>(),
            Kind::BGPAdvertisement => resource_of::<BGPAdvertisement>(),
            Kind::L2Advertisement => resource_of::<L2Advertisement>(),
            Kind::Community => resource_of::<Community>(),
            Kind::PolicyRoute => resource_of::<PolicyRoute>(),
        }
    }
}

impl Watch {
    /// The watcher of this row. Cluster-scoped kinds are always listed cluster-wide.
    pub fn stream(&self, client: &Client, namespace: &str) -> BoxStream<'static, Update> {
        let (c, r, ns) = (client, self.reach, namespace);
        let name = self.kind.name();
        match self.kind {
            Kind::Service => stream(api::<Service>(c, r, ns), name, Object::Service),
            Kind::EndpointSlice => {
                stream(api::<EndpointSlice>(c, r, ns), name, Object::EndpointSlice)
            }
            Kind::Node => stream(Api::<Node>::all(c.clone()), name, Object::Node),
            Kind::Namespace => stream(Api::<Namespace>::all(c.clone()), name, Object::Namespace),
            Kind::Secret => stream(api::<Secret>(c, r, ns), name, Object::Secret),
            Kind::IPAddressPool => {
                stream(api::<IPAddressPool>(c, r, ns), name, Object::IPAddressPool)
            }
            Kind::BGPPeer => stream(api::<BGPPeer>(c, r, ns), name, Object::BGPPeer),
            Kind::BGPAdvertisement => stream(
                api::<BGPAdvertisement>(c, r, ns),
                name,
                Object::BGPAdvertisement,
            ),
            Kind::L2Advertisement => stream(
                api::<L2Advertisement>(c, r, ns),
                name,
                Object::L2Advertisement,
            ),
            Kind::Community => stream(api::<Community>(c, r, ns), name, Object::Community),
            Kind::PolicyRoute => stream(
                Api::<PolicyRoute>::all(c.clone()),
                name,
                Object::PolicyRoute,
            ),
        }
    }
}

/// Every stream the speaker needs: one per row of [`WATCHES`].
pub fn streams(client: &Client, namespace: &str) -> Vec<BoxStream<'static, Update>> {
    WATCHES
        .iter()
        .map(|w| w.stream(client, namespace))
        .collect()
}

/// Feeds `streams` into one store and publishes a snapshot after each batch, once every
/// kind is listed. Returns when every receiver is gone or every stream ended.
pub async fn run_streams(
    streams: Vec<BoxStream<'static, Update>>,
    sel: Selection,
    tx: watch::Sender<Snapshot>,
) {
    let mut feeder = Feeder::new(&sel.namespace, streams.len());
    feeder.store.select(&sel);
    let mut all = select_all(streams);
    while let Some(update) = all.next().await {
        feeder.handle(update);
        // Take whatever else is already waiting, so a burst becomes one snapshot.
        while let Some(Some(update)) = all.next().now_or_never() {
            feeder.handle(update);
        }
        if feeder.ready() && feeder.take_dirty() && tx.send(feeder.store.snapshot(&sel)).is_err() {
            return;
        }
    }
}

/// Watches the cluster through `client`.
pub async fn run(client: Client, sel: Selection, tx: watch::Sender<Snapshot>) {
    let s = streams(&client, &sel.namespace);
    run_streams(s, sel, tx).await;
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
