//! Node selectors as the election sees them: Kubernetes label selectors
//! (`matchLabels` and set-based `matchExpressions`), reduced to plain data.
//!
//! The daemon loop converts an advertisement's `nodeSelectors` into these
//! structs, so the election needs no Kubernetes types. Semantics follow the
//! Kubernetes label selector documentation ("Label selectors", set-based
//! requirements): every `matchLabels` pair and every expression must hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The operator of one set-based requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label exists and its value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label exists (any value).
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl SelectorOperator {
    /// The operator named as in the Kubernetes API; `None` for any other text (validation
    /// reports it; [`requirement_holds`] treats it as matching nothing).
    pub fn parse(text: &str) -> Option<SelectorOperator> {
        match text {
            "In" => Some(SelectorOperator::In),
            "NotIn" => Some(SelectorOperator::NotIn),
            "Exists" => Some(SelectorOperator::Exists),
            "DoesNotExist" => Some(SelectorOperator::DoesNotExist),
            _ => None,
        }
    }
}

/// Whether one requirement holds for a label value (`None`: the label is absent). The one
/// evaluator of set-based requirements: [`NodeSelector::matches`] and
/// [`crate::selector::matches`] (pools, namespaces, policy routes) both call it, so no two
/// callers can read a selector differently. `op` is `None` for an unknown operator, which
/// matches nothing.
pub fn requirement_holds(
    op: Option<SelectorOperator>,
    have: Option<&str>,
    values: &[String],
) -> bool {
    match op {
        Some(SelectorOperator::In) => have.is_some_and(|v| values.iter().any(|x| x == v)),
        Some(SelectorOperator::NotIn) => have.is_none_or(|v| values.iter().all(|x| x != v)),
        Some(SelectorOperator::Exists) => have.is_some(),
        Some(SelectorOperator::DoesNotExist) => have.is_none(),
        None => false,
    }
}

/// Labels a selector is evaluated on: a node's or namespace's map, or a Service's sorted
/// pairs as the store keeps them ([`crate::service::Pairs`]).
pub trait Labels {
    /// The value of label `key`.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Whether every `matchLabels` pair holds (the other half of a selector).
pub fn labels_hold<'a, L: Labels + ?Sized>(
    want: impl IntoIterator<Item = (&'a String, &'a String)>,
    labels: &L,
) -> bool {
    want.into_iter()
        .all(|(k, v)| labels.label(k) == Some(v.as_str()))
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the label is compared with `values`.
    pub operator: SelectorOperator,
    /// The values for `In` / `NotIn`; ignored by `Exists` / `DoesNotExist`.
    pub values: Vec<String>,
}

/// One label selector. An empty selector matches every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeSelector {
    /// Equality requirements: each key must carry exactly this value.
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements, all of which must hold.
    pub match_expressions: Vec<SelectorRequirement>,
}

impl NodeSelector {
    /// Whether a node with `labels` satisfies this selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        labels_hold(&self.match_labels, labels)
            && self.match_expressions.iter().all(|req| {
                requirement_holds(Some(req.operator), labels.label(&req.key), &req.values)
            })
    }
}

/// Whether `labels` match any of `selectors`. An empty list selects every
/// node, as MetalLB's advertisements do for an absent `nodeSelectors`.
pub fn matches_any(selectors: &[NodeSelector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: SelectorOperator, values: &[&str]) -> NodeSelector {
        NodeSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![SelectorRequirement {
                key: key.into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        }
    }

    #[test]
    fn match_labels_require_every_pair() {
        let sel = NodeSelector {
            match_labels: labels(&[("zone", "a"), ("rack", "1")]),
            match_expressions: vec![],
        };
        assert!(sel.matches(&labels(&[("zone", "a"), ("rack", "1"), ("x", "y")])));
        assert!(!sel.matches(&labels(&[("zone", "a")])));
        assert!(!sel.matches(&labels(&[("zone", "a"), ("rack", "2")])));
    }

    #[test]
    fn set_based_operators_follow_kubernetes() {
        let node = labels(&[("zone", "a")]);
        let bare = labels(&[]);
        assert!(expr("zone", SelectorOperator::In, &["a", "b"]).matches(&node));
        assert!(!expr("zone", SelectorOperator::In, &["b"]).matches(&node));
        assert!(!expr("zone", SelectorOperator::In, &["a"]).matches(&bare));
        assert!(expr("zone", SelectorOperator::NotIn, &["b"]).matches(&node));
        assert!(!expr("zone", SelectorOperator::NotIn, &["a"]).matches(&node));
        assert!(expr("zone", SelectorOperator::NotIn, &["a"]).matches(&bare));
        assert!(expr("zone", SelectorOperator::Exists, &[]).matches(&node));
        assert!(!expr("zone", SelectorOperator::Exists, &[]).matches(&bare));
        assert!(!expr("zone", SelectorOperator::DoesNotExist, &[]).matches(&node));
        assert!(expr("zone", SelectorOperator::DoesNotExist, &[]).matches(&bare));
    }

    #[test]
    fn empty_selector_list_selects_all_and_list_is_any_of() {
        let node = labels(&[("zone", "a")]);
        assert!(matches_any(&[], &node));
        let a = expr("zone", SelectorOperator::In, &["a"]);
        let b = expr("zone", SelectorOperator::In, &["b"]);
        assert!(matches_any(&[b.clone(), a], &node));
        assert!(!matches_any(&[b], &node));
    }
}
