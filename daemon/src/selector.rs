//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), evaluated purely by
//! the one evaluator in [`crate::election::selector`] (the election's node selectors use it
//! too), and converted to the election's form by [`node_selector`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::election::selector::{labels_hold, requirement_holds};
use crate::election::{NodeSelector, SelectorOperator, SelectorRequirement};

/// Whether `labels` match `selector`. An empty selector matches everything, as in Kubernetes.
/// An unknown operator matches nothing (`validate` reports it).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    labels_hold(selector.match_labels.iter().flatten(), labels)
        && selector.match_expressions.iter().flatten().all(|expr| {
            requirement_holds(
                SelectorOperator::parse(&expr.operator),
                labels.get(&expr.key),
                expr.values.as_deref().unwrap_or_default(),
            )
        })
}

/// Converts a Kubernetes label selector to the election's. Unknown operators were refused
/// by validation; should one arrive, it becomes a requirement nothing satisfies (as in
/// [`matches`]).
pub fn node_selector(s: &LabelSelector) -> NodeSelector {
    NodeSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .map(|e| {
                let (operator, values) = match SelectorOperator::parse(&e.operator) {
                    Some(op @ (SelectorOperator::In | SelectorOperator::NotIn)) => {
                        (op, e.values.clone().unwrap_or_default())
                    }
                    Some(op) => (op, Vec::new()),
                    None => (SelectorOperator::In, Vec::new()),
                };
                SelectorRequirement {
                    key: e.key.clone(),
                    operator,
                    values,
                }
            })
            .collect(),
    }
}

/// Whether `labels` match any of `selectors`; an empty list matches everything.
pub fn matches_any(selectors: &[LabelSelector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| matches(s, labels))
}

/// Problems of a selector, each as `(field suffix, message)`.
pub fn problems(selector: &LabelSelector) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let n = expr.values.as_ref().map_or(0, Vec::len);
        let field = format!("matchExpressions[{i}].operator");
        match expr.operator.as_str() {
            "In" | "NotIn" if n == 0 => out.push((
                field,
                format!("{:?} needs at least one value", expr.operator),
            )),
            "Exists" | "DoesNotExist" if n > 0 => {
                out.push((field, format!("{:?} takes no values", expr.operator)))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => out.push((
                field,
                format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let l = labels(&[("team", "a"), ("tier", "web")]);
        let sel = LabelSelector {
            match_labels: Some(labels(&[("team", "a")])),
            match_expressions: None,
        };
        assert!(matches(&sel, &l));
        assert!(!matches(&sel, &labels(&[("team", "b")])));
        assert!(matches(&expr("tier", "In", &["web", "db"]), &l));
        assert!(!matches(&expr("tier", "NotIn", &["web"]), &l));
        assert!(matches(&expr("zone", "DoesNotExist", &[]), &l));
        assert!(!matches(&expr("zone", "Exists", &[]), &l));
        assert!(!matches(&expr("zone", "Sometimes", &[]), &l));
        assert!(matches_any(&[], &l));
    }

    #[test]
    fn bad_operators_are_reported() {
        assert_eq!(
            problems(&expr("a", "In", &[])),
            vec![(
                "matchExpressions[0].operator".to_string(),
                "\"In\" needs at least one value".to_string()
            )]
        );
        assert_eq!(
            problems(&expr("a", "Maybe", &[]))[0].1,
            "\"Maybe\" is not In, NotIn, Exists or DoesNotExist"
        );
    }
}
