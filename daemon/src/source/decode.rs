//! Decoding each object on its own, so that one object the API server accepts but our types
//! cannot read never fails a whole list (and with it every speaker's start).
//!
//! The watchers list and watch [`Lenient<K>`]: its `Deserialize` reads the raw JSON first and
//! then tries `K`; an object that does not decode becomes [`Lenient::Undecodable`], carrying
//! its metadata, its status conditions (so the `Valid` condition is written only when it
//! differs) and a [`FieldError`] that names the field and quotes its value.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::Resource;
use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::Value;

use crate::api::validate::FieldError;

/// Longest quoted value in a decoding error: enough to recognise it, never a whole body.
const MAX_VALUE_CHARS: usize = 80;

/// An object that did not decode into its Rust type.
#[derive(Clone, Debug, PartialEq)]
pub struct Undecodable {
    /// Its metadata (name, namespace, uid, generation).
    pub meta: ObjectMeta,
    /// `status.conditions` as far as they decode (to compare before writing).
    pub conditions: Vec<Condition>,
    /// The field that did not decode, and why.
    pub problem: FieldError,
}

/// An object of kind `K` as the API server sent it: decoded, or why not.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Lenient<K> {
    /// It decoded.
    Decoded(K),
    /// It did not.
    Undecodable(Undecodable),
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(decode(Value::deserialize(d)?))
    }
}

/// Decodes one object, or says which field of it does not decode.
pub fn decode<K: DeserializeOwned>(value: Value) -> Lenient<K> {
    match serde_path_to_error::deserialize::<_, K>(&value) {
        Ok(k) => Lenient::Decoded(k),
        Err(e) => {
            let field = e.path().to_string();
            let problem = FieldError {
                message: describe(&value, &field, &e.into_inner().to_string()),
                field,
            };
            Lenient::Undecodable(Undecodable {
                meta: value
                    .get("metadata")
                    .and_then(|m| serde_json::from_value(m.clone()).ok())
                    .unwrap_or_default(),
                conditions: value
                    .pointer("/status/conditions")
                    .and_then(|c| c.as_array())
                    .map(|cs| {
                        cs.iter()
                            .filter_map(|c| serde_json::from_value(c.clone()).ok())
                            .collect()
                    })
                    .unwrap_or_default(),
                problem,
            })
        }
    }
}

/// `VALUE cannot be read: CAUSE`, the value looked up by its `a.b[2].c` path.
fn describe(value: &Value, path: &str, cause: &str) -> String {
    match lookup(value, path) {
        Some(v) if !path.is_empty() && path != "." => {
            let mut text = v.to_string();
            if text.chars().count() > MAX_VALUE_CHARS {
                text = text.chars().take(MAX_VALUE_CHARS).collect::<String>() + "...";
            }
            format!("{text} cannot be read: {cause}")
        }
        _ => format!("cannot be read: {cause}"),
    }
}

/// The value at a serde_path_to_error path (`spec.gateways[0]`).
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = value;
    for part in path.split('.').filter(|p| !p.is_empty() && *p != "?") {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            cur = cur.get(index.parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

impl<K: Resource> Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Decoded(k) => k.meta(),
            Lenient::Undecodable(u) => &u.meta,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Decoded(k) => k.meta_mut(),
            Lenient::Undecodable(u) => &mut u.meta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy_route::PolicyRoute;
    use crate::api::BGPPeer;
    use serde_json::json;

    fn peer(port: Value) -> Value {
        json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": "p", "namespace": "edgelb-system", "generation": 3},
            "spec": {"myASN": 64512, "peerASN": 64500, "peerAddress": "192.0.2.1", "peerPort": port},
            "status": {"conditions": [{"type": "Valid", "status": "True", "reason": "Valid",
                "message": "spec accepted", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    }

    #[test]
    fn a_good_object_decodes() {
        match decode::<BGPPeer>(peer(json!(1179))) {
            Lenient::Decoded(p) => assert_eq!(p.spec.peer_port, Some(1179)),
            Lenient::Undecodable(u) => panic!("{u:?}"),
        }
    }

    #[test]
    fn an_out_of_range_port_names_field_and_value_and_keeps_meta_and_conditions() {
        let Lenient::Undecodable(u) = decode::<BGPPeer>(peer(json!(70000))) else {
            panic!("decoded");
        };
        assert_eq!(u.problem.field, "spec.peerPort");
        assert!(
            u.problem.message.starts_with("70000 cannot be read:"),
            "{}",
            u.problem.message
        );
        assert_eq!(u.meta.name.as_deref(), Some("p"));
        assert_eq!(u.meta.generation, Some(3));
        assert_eq!(u.conditions.len(), 1);
    }

    #[test]
    fn a_bad_list_item_is_named_by_index_and_a_long_value_is_cut() {
        let long = "x".repeat(500);
        let v = json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "PolicyRoute",
            "metadata": {"name": "r"},
            "spec": {"table": 4, "gateways": ["10.0.0.1", long]}});
        let Lenient::Undecodable(u) = decode::<PolicyRoute>(v) else {
            panic!("decoded");
        };
        assert_eq!(u.problem.field, "spec.gateways[1]");
        assert!(u.problem.message.len() < 300, "{}", u.problem.message);
        assert!(
            u.problem.message.contains("xxx..."),
            "{}",
            u.problem.message
        );
    }

    /// The list of a kind decodes even when one item does not: that item alone is marked.
    #[test]
    fn one_bad_item_does_not_fail_the_list() {
        let list = json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "BGPPeerList",
            "metadata": {"resourceVersion": "7"},
            "items": [peer(json!(179)), peer(json!(-1)), peer(json!(1179))]});
        assert!(
            serde_json::from_value::<kube::core::ObjectList<BGPPeer>>(list.clone()).is_err(),
            "decoded as one typed list (as before), the whole list fails"
        );
        let list: kube::core::ObjectList<Lenient<BGPPeer>> =
            serde_json::from_value(list).expect("the list decodes");
        let decoded: Vec<bool> = list
            .items
            .iter()
            .map(|i| matches!(i, Lenient::Decoded(_)))
            .collect();
        assert_eq!(decoded, vec![true, false, true]);
    }
}
