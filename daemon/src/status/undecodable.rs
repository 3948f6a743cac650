//! Warning Events for objects of built-in kinds (Services, Nodes, ...) that our types cannot
//! read. They have no `Valid` condition, so the leader tells once per object version. Pure:
//! the writer publishes what [`Reported::new_events`] returns and then marks it.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ObjectReference;

use crate::snapshot::{is_edgelb_kind, ObjectKey, Snapshot};

/// The reason of those Events.
pub const REASON: &str = "Undecodable";

/// One object version already reported: kind, key, resourceVersion.
type Seen = (&'static str, ObjectKey, Option<String>);

/// What was already reported.
#[derive(Debug, Default)]
pub struct Reported {
    seen: BTreeSet<Seen>,
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct UndecodableEvent {
    /// The object.
    pub reference: ObjectReference,
    /// Field, value and why.
    pub note: String,
    seen: Seen,
}

impl Reported {
    /// The Events for built-in objects that do not decode and were not reported yet at
    /// their current version. Forgets objects that decode again or are gone.
    pub fn new_events(&mut self, snap: &Snapshot) -> Vec<UndecodableEvent> {
        let now: BTreeSet<Seen> = snap
            .undecodable
            .iter()
            .filter(|((kind, _), _)| !is_edgelb_kind(kind))
            .map(|((kind, key), u)| (*kind, key.clone(), u.meta.resource_version.clone()))
            .collect();
        self.seen.retain(|s| now.contains(s));
        now.into_iter()
            .filter(|s| !self.seen.contains(s))
            .filter_map(|seen| {
                let u = snap.undecodable.get(&(seen.0, seen.1.clone()))?;
                Some(UndecodableEvent {
                    reference: ObjectReference {
                        api_version: Some(api_version(seen.0).to_string()),
                        kind: Some(seen.0.to_string()),
                        name: u.meta.name.clone(),
                        namespace: u.meta.namespace.clone(),
                        uid: u.meta.uid.clone(),
                        ..ObjectReference::default()
                    },
                    note: format!("edgelb cannot read this {}: {}", seen.0, u.problem),
                    seen,
                })
            })
            .collect()
    }

    /// Marks an Event as published.
    pub fn published(&mut self, ev: &UndecodableEvent) {
        self.seen.insert(ev.seen.clone());
    }
}

/// The `apiVersion` of the built-in kinds the speaker watches.
fn api_version(kind: &str) -> &'static str {
    match kind {
        "EndpointSlice" => "discovery.k8s.io/v1",
        _ => "v1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validate::FieldError;
    use crate::snapshot::{Object, Selection, Store};
    use crate::source::decode::Undecodable;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn bad(kind: &'static str, name: &str, rv: &str) -> Object {
        Object::Undecodable {
            kind,
            object: Undecodable {
                meta: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("default".into()),
                    resource_version: Some(rv.into()),
                    ..ObjectMeta::default()
                },
                conditions: vec![],
                problem: FieldError {
                    field: "spec.ports[0].port".into(),
                    message: "\"x\" cannot be read: invalid type".into(),
                },
            },
        }
    }

    #[test]
    fn each_version_of_a_bad_builtin_object_is_reported_once() {
        let mut store = Store::default();
        store.apply(bad("Service", "web", "1"), "edgelb-system");
        store.apply(bad("IPAddressPool", "p", "1"), "edgelb-system");
        let mut r = Reported::default();
        let evs = r.new_events(&store.snapshot(&Selection::default()));
        assert_eq!(evs.len(), 1, "edgelb kinds get a condition instead");
        assert_eq!(evs[0].reference.kind.as_deref(), Some("Service"));
        assert!(
            evs[0].note.contains("spec.ports[0].port"),
            "{}",
            evs[0].note
        );
        r.published(&evs[0]);
        assert!(r
            .new_events(&store.snapshot(&Selection::default()))
            .is_empty());
        store.apply(bad("Service", "web", "2"), "edgelb-system");
        assert_eq!(
            r.new_events(&store.snapshot(&Selection::default())).len(),
            1
        );
    }
}
