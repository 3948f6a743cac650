//! The `Valid` condition of every edgelb object, from the snapshot's validation outcome.
//! Pure: the writer sends only those that differ from what the object carries.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{json, Value};

use crate::api::validate::{valid_condition, FieldError};
use crate::snapshot::{ObjectKey, Snapshot};

/// One object whose conditions must be written.
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionUpdate {
    /// Kind, e.g. `IPAddressPool`.
    pub kind: &'static str,
    /// URL plural, e.g. `ipaddresspools`.
    pub plural: &'static str,
    /// The object.
    pub key: ObjectKey,
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
}

/// Equal for writing purposes: the timestamp alone never causes a write.
pub(crate) fn same(a: &Condition, b: &Condition) -> bool {
    a.type_ == b.type_
        && a.status == b.status
        && a.reason == b.reason
        && a.message == b.message
        && a.observed_generation == b.observed_generation
}

fn update(
    out: &mut Vec<ConditionUpdate>,
    (kind, plural): (&'static str, &'static str),
    key: &ObjectKey,
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
    out
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
