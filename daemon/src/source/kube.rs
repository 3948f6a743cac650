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
//!   the watcher reconnects with exponential backoff and jitter ([`Backoff`]: 0.8 s
//!   doubling to 30 s, as client-go's reflector). The backoff is reset only by progress (a
//!   finished list or a watch event), not by the `Init` every retry starts with, so a list
//!   that keeps failing (a missing grant, say) is retried ever more slowly. Each kind's
//!   error is logged when it changes, not at every retry, and cut short.
//! - An optional kind (OpenYurt's `NodePool`, [`Kind::optional`]) whose resource the API
//!   server does not serve (404: its CRD is not installed) counts as listed and empty, so
//!   the speaker works without it as before; the watcher keeps retrying with the same
//!   backoff (at most 30 s), so a CRD installed later is picked up, and one removed later
//!   empties the kind again.
//! - Every object is decoded on its own ([`super::decode::Lenient`]): one that our types
//!   cannot read becomes [`Object::Undecodable`] and never fails the list of its kind.

use std::collections::{BTreeSet, HashMap};

use std::time::Duration;

use futures::stream::{select_all, BoxStream};
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, watcher, DefaultBackoff};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::decode::Lenient;

use crate::api::openyurt::{NodePool, PoolService};
use crate::api::policy_route::PolicyRoute;
use crate::api::{
    BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement,
};
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
    /// An optional kind is not served (its CRD is not installed): it counts as listed and
    /// empty until it is. The watcher retries by itself.
    Absent {
        /// Kind name.
        kind: &'static str,
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
    /// The last error logged per kind, so a retry with the same error logs nothing.
    errors: HashMap<&'static str, String>,
    kinds: usize,
    dirty: bool,
}

/// What the feeder remembers as the "error" of a kind that is not served.
const ABSENT: &str = "(not served)";

/// Longest error text logged: a status message, never a whole response body.
const MAX_ERROR_CHARS: usize = 300;

/// The error text as logged: its first [`MAX_ERROR_CHARS`] characters.
pub fn short_error(message: &str) -> String {
    if message.chars().count() <= MAX_ERROR_CHARS {
        return message.to_string();
    }
    message.chars().take(MAX_ERROR_CHARS).collect::<String>() + "..."
}

impl Feeder {
    /// A feeder expecting `kinds` watchers.
    pub fn new(namespace: &str, kinds: usize) -> Feeder {
        Feeder {
            store: Store::default(),
            namespace: namespace.to_string(),
            relist: HashMap::new(),
            listed: BTreeSet::new(),
            errors: HashMap::new(),
            kinds,
            dirty: false,
        }
    }

    /// Applies one update.
    pub fn handle(&mut self, update: Update) {
        match update {
            Update::Absent { kind } => {
                if self.errors.get(kind).map(String::as_str) != Some(ABSENT) {
                    tracing::info!(kind, "not served by the API server (its CRD is not installed); it counts as empty and is looked for again with backoff");
                    self.errors.insert(kind, ABSENT.to_string());
                }
                self.relist.remove(kind);
                let had = !self.listed.contains(kind) || self.store_has(kind);
                self.store.reset(kind, Vec::new(), &self.namespace);
                self.listed.insert(kind);
                self.dirty |= had;
            }
            Update::Error { kind, message } => {
                let message = short_error(&message);
                if self.errors.get(kind) != Some(&message) {
                    tracing::warn!(kind, error = %message, "list/watch failed; keeping the last snapshot and retrying with backoff (logged again only when the error changes)");
                    self.errors.insert(kind, message);
                }
            }
            Update::Event { kind, event } => {
                if !matches!(event, watcher::Event::Init) && self.errors.remove(kind).is_some() {
                    tracing::info!(kind, "list/watch recovered");
                }
                self.handle_event(kind, event);
            }
        }
    }

    fn handle_event(&mut self, kind: &'static str, event: watcher::Event<Object>) {
        if let watcher::Event::Apply(Object::Undecodable { object, .. })
        | watcher::Event::InitApply(Object::Undecodable { object, .. }) = &event
        {
            tracing::warn!(kind, name = ?object.meta.name, namespace = ?object.meta.namespace, problem = %object.problem, "object does not decode; it is left out (Valid=False where the kind has status)");
        }
        match event {
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
        }
    }

    /// Whether the store holds any object of an optional kind.
    fn store_has(&self, kind: &str) -> bool {
        (kind == Kind::NodePool.name() && !self.store.node_pool_objects.is_empty())
            || (kind == Kind::PoolService.name() && !self.store.pool_services().is_empty())
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

fn map_event<K>(
    event: watcher::Event<Lenient<K>>,
    kind: &'static str,
    wrap: fn(K) -> Object,
) -> watcher::Event<Object> {
    let one = |l: Lenient<K>| match l {
        Lenient::Decoded(k) => {
            // Slimmed as it arrives: a relist holds every object until it is done.
            let mut o = wrap(k);
            crate::slim::object(&mut o);
            o
        }
        Lenient::Undecodable(object) => Object::Undecodable { kind, object },
    };
    match event {
        watcher::Event::Apply(k) => watcher::Event::Apply(one(k)),
        watcher::Event::Delete(k) => watcher::Event::Delete(one(k)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(k) => watcher::Event::InitApply(one(k)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Whether an event shows that listing or watching works again. `Init` does not: the
/// watcher emits it before every list, including lists that then fail.
fn is_progress<K>(event: &watcher::Event<K>) -> bool {
    !matches!(event, watcher::Event::Init)
}

/// Waits `backoff.next()` (for the speaker kube's [`DefaultBackoff`]: exponential with
/// jitter, 0.8 s to 30 s) after each error before polling `events` again (the watcher
/// retries only when polled); progress resets the backoff.
pub fn with_backoff<K, S, B>(
    events: S,
    backoff: B,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>>
where
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + Unpin,
    B: Backoff,
{
    futures::stream::unfold(
        (events, backoff, None::<Duration>),
        |(mut events, mut backoff, wait)| async move {
            if let Some(d) = wait {
                tokio::time::sleep(d).await;
            }
            let item = events.next().await?;
            let wait = match &item {
                Ok(e) => {
                    if is_progress(e) {
                        backoff.reset();
                    }
                    None
                }
                Err(_) => backoff.next(),
            };
            Some((item, (events, backoff, wait)))
        },
    )
}

/// A watcher of one kind as a stream of [`Update`]s, reconnecting with backoff. Every
/// object is decoded on its own.
pub fn stream<K>(
    api: Api<Lenient<K>>,
    kind: &'static str,
    wrap: fn(K) -> Object,
) -> BoxStream<'static, Update>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Clone + Send + Sync + Eq + std::hash::Hash,
{
    stream_of(api, kind, wrap, false)
}

/// As [`stream`]; when `optional`, a 404 (the resource is not served) becomes
/// [`Update::Absent`].
pub fn stream_of<K>(
    api: Api<Lenient<K>>,
    kind: &'static str,
    wrap: fn(K) -> Object,
    optional: bool,
) -> BoxStream<'static, Update>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Clone + Send + Sync + Eq + std::hash::Hash,
{
    with_backoff(
        watcher(api, watcher::Config::default()).boxed(),
        DefaultBackoff::default(),
    )
    .map(move |r| match r {
        Ok(event) => Update::Event {
            kind,
            event: map_event(event, kind, wrap),
        },
        Err(e) if optional && is_not_found(&e) => Update::Absent { kind },
        Err(e) => Update::Error {
            kind,
            message: e.to_string(),
        },
    })
    .boxed()
}

/// Whether a watcher error says the resource is not served (HTTP 404 on list or watch).
pub fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
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
    /// edgelb.io BFDProfile.
    BFDProfile,
    /// edgelb.io PolicyRoute (cluster-scoped).
    PolicyRoute,
    /// apps.openyurt.io/v1beta1 NodePool (cluster-scoped; optional: its CRD may be absent).
    NodePool,
    /// network.openyurt.io/v1alpha1 PoolService (optional: a cluster may run without it).
    PoolService,
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
        kind: Kind::BFDProfile,
        reach: Reach::SpeakerNamespace,
    },
    Watch {
        kind: Kind::PolicyRoute,
        reach: Reach::Cluster,
    },
    Watch {
        kind: Kind::NodePool,
        reach: Reach::Cluster,
    },
    Watch {
        kind: Kind::PoolService,
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

/// `Api::all` or `Api::namespaced` as `reach` says, each object decoded on its own.
fn api<K>(client: &Client, reach: Reach, namespace: &str) -> Api<Lenient<K>>
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
            Kind::BFDProfile => "BFDProfile",
            Kind::PolicyRoute => "PolicyRoute",
            Kind::NodePool => "NodePool",
            Kind::PoolService => "PoolService",
        }
    }

    /// Whether the speaker works without this kind: its CRD belongs to another project
    /// (OpenYurt) and may not be installed; a 404 counts as an empty list.
    pub fn optional(self) -> bool {
        matches!(self, Kind::NodePool | Kind::PoolService)
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
            Kind::BFDProfile => resource_of::<BFDProfile>(),
            Kind::PolicyRoute => resource_of::<PolicyRoute>(),
            Kind::NodePool => resource_of::<NodePool>(),
            Kind::PoolService => resource_of::<PoolService>(),
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
            Kind::Node => stream(Api::<Lenient<Node>>::all(c.clone()), name, Object::Node),
            Kind::Namespace => stream(
                Api::<Lenient<Namespace>>::all(c.clone()),
                name,
                Object::Namespace,
            ),
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
            Kind::BFDProfile => stream(api::<BFDProfile>(c, r, ns), name, Object::BFDProfile),
            Kind::PolicyRoute => stream(
                Api::<Lenient<PolicyRoute>>::all(c.clone()),
                name,
                Object::PolicyRoute,
            ),
            Kind::NodePool => stream_of(
                Api::<Lenient<NodePool>>::all(c.clone()),
                name,
                Object::NodePool,
                self.kind.optional(),
            ),
            Kind::PoolService => stream_of(
                api::<PoolService>(c, r, ns),
                name,
                Object::PoolService,
                self.kind.optional(),
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
