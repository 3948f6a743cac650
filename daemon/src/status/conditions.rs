//! The `Valid` condition of every edgelb object, from the snapshot's validation outcome.
//! Pure: the writer sends only those that differ from what the object carries.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{json, Value};

use k8s_openapi::api::core::v1::ObjectReference;

use crate::api::validate::{valid_condition, FieldError, CONDITION_VALID};
use crate::snapshot::{ObjectKey, Snapshot};

/// The reason of the Warning Event sent with each `Valid=False` condition.
pub const INVALID_REASON: &str = "InvalidSpec";

/// One object whose conditions must be written.
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionUpdate {
    /// Kind, e.g. `IPAddressPool`.
    pub kind: &'static str,
    /// URL plural, e.g. `ipaddresspools`.
    pub plural: &'static str,
    /// The object.
    pub key: ObjectKey,
    /// Its uid, for the Event's reference.
    pub uid: Option<String>,
    /// The full condition list to apply.
    pub conditions: Vec<Condition>,
}

impl ConditionUpdate {
    /// The server-side apply body for the status subresource.
    pub fn apply_body(&self) -> Value {
        json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": self.kind,
            "status": { "conditions": self.conditions },
        })
    }

    /// The Warning Event that goes with a `Valid=False` condition: the object it is about
    /// and the note (field and value). None for `Valid=True`.
    pub fn warning(&self) -> Option<(ObjectReference, String)> {
        let c = self
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_VALID && c.status == "False")?;
        let reference = ObjectReference {
            api_version: Some(crate::api::API_VERSION.to_string()),
            kind: Some(self.kind.to_string()),
            name: Some(self.key.name.to_string()),
            namespace: (!self.key.namespace.is_empty()).then(|| self.key.namespace.to_string()),
            uid: self.uid.clone(),
            ..ObjectReference::default()
        };
        Some((reference, c.message.clone()))
    }
}

/// Equal for writing purposes: the timestamp alone never causes a write.
pub(crate) fn same(a: &Condition, b: &Condition) -> bool {
    a.type_ == b.type_
        && a.status == b.status
        && a.reason == b.reason
        && a.message == b.message
        && a.observed_generation == b.observed_generation
}

#[allow(clippy::too_many_arguments)]
fn update(
    out: &mut Vec<ConditionUpdate>,
    (kind, plural): (&'static str, &'static str),
    key: &ObjectKey,
    uid: Option<&String>,
    generation: Option<i64>,
    existing: &[Condition],
    problems: &[FieldError],
    now: &Time,
) {
    let want = valid_condition(problems, generation, now.clone(), existing);
    let have = existing.iter().find(|c| c.type_ == want.type_);
    if have.is_some_and(|h| same(h, &want)) {
        return;
    }
    out.push(ConditionUpdate {
        kind,
        plural,
        key: key.clone(),
        uid: uid.cloned(),
        conditions: vec![want],
    });
}

/// Every edgelb object whose `Valid` condition differs from the one it carries.
pub fn updates(snap: &Snapshot, now: Time) -> Vec<ConditionUpdate> {
    let mut out = Vec::new();
    macro_rules! kind {
        ($map:expr, $kind:literal, $plural:literal) => {
            for (key, c) in &$map {
                let existing = c
                    .object
                    .status
                    .as_ref()
                    .map(|s| s.conditions.as_slice())
                    .unwrap_or_default();
                update(
                    &mut out,
                    ($kind, $plural),
                    key,
                    c.object.metadata.uid.as_ref(),
                    c.object.metadata.generation,
                    existing,
                    &c.problems,
                    &now,
                );
            }
        };
    }
    kind!(snap.pools, "IPAddressPool", "ipaddresspools");
    kind!(snap.peers, "BGPPeer", "bgppeers");
    kind!(
        snap.bgp_advertisements,
        "BGPAdvertisement",
        "bgpadvertisements"
    );
    kind!(
        snap.l2_advertisements,
        "L2Advertisement",
        "l2advertisements"
    );
    kind!(snap.communities, "Community", "communities");
    kind!(snap.bfd_profiles, "BFDProfile", "bfdprofiles");
    policy_routes(snap, &now, &mut out);
    out
}

/// `PolicyRoute`s carry per-node `Installed.<node>` conditions and the planner reports
/// their problems there; the leader adds `Valid=False` only to one that does not decode
/// (no node can read it), and turns it back to `True` once it does.
fn policy_routes(snap: &Snapshot, now: &Time, out: &mut Vec<ConditionUpdate>) {
    const KIND: (&str, &str) = ("PolicyRoute", "policyroutes");
    for ((_, key), u) in snap.undecodable.iter().filter(|((k, _), _)| *k == KIND.0) {
        let problems = [u.problem.clone()];
        update(
            out,
            KIND,
            key,
            u.meta.uid.as_ref(),
            u.meta.generation,
            &u.conditions,
            &problems,
            now,
        );
    }
    for (key, route) in &snap.policy_routes {
        let existing = route
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        if existing.iter().any(|c| c.type_ == CONDITION_VALID) {
            let m = &route.metadata;
            update(
                out,
                KIND,
                key,
                m.uid.as_ref(),
                m.generation,
                existing,
                &[],
                now,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ObjectStatus;
    use crate::fixtures::pool;
    use crate::snapshot::{Object, Selection, Store};
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn invalid_and_valid_objects_get_conditions_once() {
        let now = Time(Timestamp::from_second(1_700_000_000).expect("ts"));
        let mut store = Store::default();
        store.apply(
            Object::IPAddressPool(pool("edgelb-system", "good", &["192.0.2.0/30"])),
            "edgelb-system",
        );
        store.apply(
            Object::IPAddressPool(pool(
                "edgelb-system",
                "bad",
                &["192.0.2.0/30", "10.0.0.300/24"],
            )),
            "edgelb-system",
        );
        let ups = updates(&store.snapshot(&Selection::default()), now.clone());
        assert_eq!(ups.len(), 2);
        assert_eq!(ups[0].key.to_string(), "edgelb-system/bad");
        assert_eq!(
            ups[0].apply_body(),
            json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool", "status": {"conditions": [{
                "type": "Valid", "status": "False", "reason": "InvalidSpec",
                "message": "spec.addresses[1]: \"10.0.0.300/24\" is not a CIDR or range",
                "lastTransitionTime": "2023-11-14T22:13:20Z"}]}})
        );
        // Once the objects carry their conditions, nothing is written again.
        for up in &ups {
            let mut p = (**store.pools.get(&up.key).expect("pool")).clone();
            p.status = Some(ObjectStatus {
                conditions: up.conditions.clone(),
            });
            store.apply(Object::IPAddressPool(p), "edgelb-system");
        }
        let later = Time(Timestamp::from_second(1_700_000_100).expect("ts"));
        assert!(updates(&store.snapshot(&Selection::default()), later).is_empty());
    }
}
