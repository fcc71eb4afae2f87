//! Label selector matching, shared by namespace selection, PDB coverage and Secret/PVC
//! selection. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use crate::api::{LabelSelector, LabelSelectorRequirement, SelectorOperator};

/// Whether `labels` satisfy the selector. An empty selector matches everything.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector
            .match_expressions
            .iter()
            .all(|req| requirement_matches(req, labels))
}

fn requirement_matches(req: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&req.key);
    match req.operator {
        SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
        SelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
        SelectorOperator::Exists => value.is_some(),
        SelectorOperator::DoesNotExist => value.is_none(),
    }
}

/// Reads a Kubernetes label selector (from a workload or a PDB). `None` when it uses an
/// operator we do not know: such a selector is treated as matching nothing, never everything.
pub fn from_k8s(selector: &metav1::LabelSelector) -> Option<LabelSelector> {
    let mut exprs = Vec::new();
    for e in selector.match_expressions.iter().flatten() {
        let operator = match e.operator.as_str() {
            "In" => SelectorOperator::In,
            "NotIn" => SelectorOperator::NotIn,
            "Exists" => SelectorOperator::Exists,
            "DoesNotExist" => SelectorOperator::DoesNotExist,
            _ => return None,
        };
        exprs.push(LabelSelectorRequirement {
            key: e.key.clone(),
            operator,
            values: e.values.clone().unwrap_or_default(),
        });
    }
    Some(LabelSelector {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions: exprs,
    })
}

/// Whether a Kubernetes selector matches `labels`. The API server treats a PDB's empty
/// selector as matching every pod in the namespace, so that is what we do too.
pub fn k8s_matches(selector: &metav1::LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    from_k8s(selector).is_some_and(|s| matches(&s, labels))
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

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn selector_table() {
        let tier = LabelSelector {
            match_labels: labels(&[("tier", "production")]),
            match_expressions: vec![],
        };
        let cases: Vec<(&str, LabelSelector, BTreeMap<String, String>, bool)> = vec![
            (
                "empty selects all",
                LabelSelector::default(),
                labels(&[]),
                true,
            ),
            (
                "matchLabels hit",
                tier.clone(),
                labels(&[("tier", "production"), ("x", "y")]),
                true,
            ),
            (
                "matchLabels miss",
                tier.clone(),
                labels(&[("tier", "dev")]),
                false,
            ),
            (
                "In",
                LabelSelector {
                    match_expressions: vec![req("team", SelectorOperator::In, &["a", "b"])],
                    ..Default::default()
                },
                labels(&[("team", "b")]),
                true,
            ),
            (
                "NotIn with label absent",
                LabelSelector {
                    match_expressions: vec![req("team", SelectorOperator::NotIn, &["a"])],
                    ..Default::default()
                },
                labels(&[]),
                true,
            ),
            (
                "DoesNotExist",
                LabelSelector {
                    match_expressions: vec![req("skip", SelectorOperator::DoesNotExist, &[])],
                    ..Default::default()
                },
                labels(&[("skip", "")]),
                false,
            ),
        ];
        for (name, sel, l, want) in cases {
            assert_eq!(matches(&sel, &l), want, "{name}");
        }
    }

    #[test]
    fn unknown_k8s_operator_matches_nothing() {
        let sel = metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "Near".into(),
                values: None,
            }]),
            match_labels: None,
        };
        assert!(!k8s_matches(&sel, &labels(&[("a", "b")])));
    }
}
