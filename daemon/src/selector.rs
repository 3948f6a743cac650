//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), evaluated purely by
//! the one evaluator in [`crate::election::selector`] (the election's node selectors use it
//! too), and converted to the election's form by [`node_selector`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::election::selector::{labels_hold, requirement_holds, Labels};
use crate::election::{NodeSelector, SelectorOperator, SelectorRequirement};

/// Whether `labels` match `selector`. An empty selector matches everything, as in Kubernetes.
/// An unknown operator matches nothing (`validate` reports it).
pub fn matches<L: Labels + ?Sized>(selector: &LabelSelector, labels: &L) -> bool {
    labels_hold(selector.match_labels.iter().flatten(), labels)
        && selector.match_expressions.iter().flatten().all(|expr| {
            requirement_holds(
                SelectorOperator::parse(&expr.operator),
                labels.label(&expr.key),
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
pub fn matches_any<L: Labels + ?Sized>(selectors: &[LabelSelector], labels: &L) -> bool {
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

/// Why a selector in Kubernetes' text syntax (`k8s-svc=cube,tier in (a,b),!legacy`) does
/// not parse: where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at character {at}: {message}")]
pub struct ParseError {
    /// 0-based character offset of the problem.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a label selector in Kubernetes' text syntax (as `kubectl -l` and
/// `labels.Parse` take it): comma-separated requirements `k=v`, `k==v`, `k!=v`,
/// `k in (a,b)`, `k notin (a,b)`, `k` (exists) and `!k` (does not exist). Every
/// requirement becomes a `matchExpressions` entry (`=` is `In [v]`, `!=` is `NotIn [v]`),
/// so the one evaluator [`matches`] decides. The numeric `>` / `<` of `labels.Parse` have
/// no `LabelSelector` form and are refused. Never panics, whatever the text.
pub fn parse(text: &str) -> Result<LabelSelector, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut p = TextParser { chars, at: 0 };
    let mut exprs = Vec::new();
    p.skip_space();
    if p.done() {
        return Ok(LabelSelector::default());
    }
    loop {
        exprs.push(p.requirement()?);
        p.skip_space();
        if p.done() {
            break;
        }
        p.expect(',')?;
    }
    Ok(LabelSelector {
        match_labels: None,
        match_expressions: Some(exprs),
    })
}

struct TextParser {
    chars: Vec<char>,
    at: usize,
}

impl TextParser {
    fn done(&self) -> bool {
        self.at >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            at: self.at,
            message: message.into(),
        })
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        self.skip_space();
        match self.peek() {
            Some(x) if x == c => {
                self.at += 1;
                Ok(())
            }
            Some(x) => self.fail(format!("expected {c:?}, found {x:?}")),
            None => self.fail(format!("expected {c:?}, found the end")),
        }
    }

    /// A label key or value: letters, digits, `-`, `_`, `.`, and `/` in keys.
    fn word(&mut self, key: bool) -> String {
        self.skip_space();
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "-_.".contains(c) || (key && c == '/'))
        {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    fn key(&mut self) -> Result<String, ParseError> {
        let k = self.word(true);
        if k.is_empty() {
            return match self.peek() {
                Some(c) => self.fail(format!("expected a label key, found {c:?}")),
                None => self.fail("expected a label key, found the end"),
            };
        }
        let name = k.rsplit('/').next().unwrap_or("");
        if name.is_empty() || name.len() > 63 || k.matches('/').count() > 1 {
            return self.fail(format!("{k:?} is not a valid label key"));
        }
        Ok(k)
    }

    fn value(&mut self) -> Result<String, ParseError> {
        let v = self.word(false);
        if v.len() > 63 {
            return self.fail(format!("{v:?} is longer than 63 characters"));
        }
        Ok(v)
    }

    fn requirement(&mut self) -> Result<LabelSelectorRequirement, ParseError> {
        self.skip_space();
        let req = |key, op: &str, values: Option<Vec<String>>| LabelSelectorRequirement {
            key,
            operator: op.to_string(),
            values,
        };
        if self.peek() == Some('!') {
            self.at += 1;
            return Ok(req(self.key()?, "DoesNotExist", None));
        }
        let key = self.key()?;
        self.skip_space();
        match self.peek() {
            None | Some(',') => Ok(req(key, "Exists", None)),
            Some('=') => {
                self.at += 1;
                if self.peek() == Some('=') {
                    self.at += 1;
                }
                Ok(req(key, "In", Some(vec![self.value()?])))
            }
            Some('!') if self.chars.get(self.at + 1) == Some(&'=') => {
                self.at += 2;
                Ok(req(key, "NotIn", Some(vec![self.value()?])))
            }
            Some('>' | '<') => {
                self.fail("the numeric operators > and < are not supported (no LabelSelector form)")
            }
            Some(_) => {
                let op = self.word(false);
                let op = match op.as_str() {
                    "in" => "In",
                    "notin" => "NotIn",
                    "" => return self.fail(format!("expected an operator after {key:?}")),
                    other => {
                        return self.fail(format!(
                            "{other:?} is not an operator (=, ==, !=, in, notin)"
                        ))
                    }
                };
                Ok(req(key, op, Some(self.set()?)))
            }
        }
    }

    /// `(a, b, c)`: at least one value.
    fn set(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect('(')?;
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            self.skip_space();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(')') => {
                    self.at += 1;
                    return Ok(values);
                }
                Some(c) => return self.fail(format!("expected ',' or ')', found {c:?}")),
                None => return self.fail("expected ')', found the end"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
