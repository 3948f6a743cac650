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

/// Every stream the speaker needs.
pub fn streams(client: &Client, namespace: &str) -> Vec<BoxStream<'static, Update>> {
    let ns = |c: &Client| c.clone();
    vec![
        stream(Api::<Service>::all(ns(client)), "Service", Object::Service),
        stream(
            Api::<EndpointSlice>::all(ns(client)),
            "EndpointSlice",
            Object::EndpointSlice,
        ),
        stream(Api::<Node>::all(ns(client)), "Node", Object::Node),
        stream(
            Api::<Namespace>::all(ns(client)),
            "Namespace",
            Object::Namespace,
        ),
        stream(
            Api::<Secret>::namespaced(ns(client), namespace),
            "Secret",
            Object::Secret,
        ),
        stream(
            Api::<IPAddressPool>::namespaced(ns(client), namespace),
            "IPAddressPool",
            Object::IPAddressPool,
        ),
        stream(
            Api::<BGPPeer>::namespaced(ns(client), namespace),
            "BGPPeer",
            Object::BGPPeer,
        ),
        stream(
            Api::<BGPAdvertisement>::namespaced(ns(client), namespace),
            "BGPAdvertisement",
            Object::BGPAdvertisement,
        ),
        stream(
            Api::<L2Advertisement>::namespaced(ns(client), namespace),
            "L2Advertisement",
            Object::L2Advertisement,
        ),
        stream(
            Api::<Community>::namespaced(ns(client), namespace),
            "Community",
            Object::Community,
        ),
        stream(
            Api::<BFDProfile>::namespaced(ns(client), namespace),
            "BFDProfile",
            Object::BFDProfile,
        ),
        stream(
            Api::<PolicyRoute>::all(ns(client)),
            "PolicyRoute",
            Object::PolicyRoute,
        ),
    ]
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
