//! Reading Kyverno's two generate APIs into one shape, [`GenerateRule`]: what triggers it,
//! in which namespaces, and the objects it makes. Pure.
//!
//! `kyverno.io` ClusterPolicies and Policies carry `generate` rules with `data` (or `clone`,
//! resolved against the other documents given) and `{{request.object...}}` variables;
//! `policies.kyverno.io` GeneratingPolicies build their objects in CEL (read by
//! [`super::cel`]) and hand them to `generator.Apply`. Both end up here with references spelt
//! `{{object...}}`, so [`super::profile`] maps them with one piece of code. What cannot be read
//! is a [`Read::NotMapped`] with the reason, never dropped.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::{cel, Origin};
use crate::api::{LabelSelector, LabelSelectorRequirement, SelectorOperator};

/// The label the API server puts on every namespace with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What makes a rule fire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A Namespace: the objects are made in it.
    Namespaces,
    /// Workloads of these kinds (`Deployment`, `StatefulSet`): the objects are made beside them.
    Workloads(BTreeSet<String>),
}

/// Which namespaces a rule acts in. No selector and no names means every namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub selector: Option<LabelSelector>,
    pub names: BTreeSet<String>,
    pub excluded: BTreeSet<String>,
}

impl Scope {
    /// A short description for findings.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.selector {
            let labels: Vec<String> = s
                .match_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(
                    s.match_expressions
                        .iter()
                        .map(|e| format!("{} {:?} {:?}", e.key, e.operator, e.values)),
                )
                .collect();
            parts.push(format!("namespaces labelled {}", labels.join(",")));
        }
        if !self.names.is_empty() {
            parts.push(format!("namespaces {:?}", self.names));
        }
        if parts.is_empty() {
            parts.push("every namespace".into());
        }
        if !self.excluded.is_empty() {
            parts.push(format!("except {:?}", self.excluded));
        }
        parts.join(" ")
    }
}

/// One generate rule, read.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRule {
    pub origin: Origin,
    pub trigger: Trigger,
    pub scope: Scope,
    /// Whole objects (`apiVersion`, `kind`, `metadata`, `spec`), references as `{{object...}}`.
    pub objects: Vec<Value>,
    /// Kyverno keeps the object as generated (recreates and reverts it).
    pub synchronize: bool,
    /// Kyverno also generates for triggers that existed before the policy.
    pub generate_existing: bool,
    /// The trigger's replicas must be at least this (a precondition or match condition).
    pub min_replicas: Option<i32>,
    /// Conditions read but not expressible, kept to be reported as differences.
    pub differences: Vec<String>,
}

/// A rule read, or why it could not be.
#[derive(Clone, Debug, PartialEq)]
pub enum Read {
    Rule(Box<GenerateRule>),
    NotMapped(Origin, String),
    /// A document that is no Kyverno policy (a Namespace, a ConfigMap, a clone source).
    Ignored(String),
}

/// The YAML documents of one file, as JSON values (empty documents dropped).
pub fn documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Every rule of every policy among `docs`; other documents are [`Read::Ignored`] (and serve as
/// `clone` sources).
pub fn read_all(docs: &[Value]) -> Vec<Read> {
    let mut out = Vec::new();
    for doc in docs {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        let group = api_version.split('/').next().unwrap_or_default();
        match (group, kind) {
            ("kyverno.io", "ClusterPolicy" | "Policy") => out.extend(read_classic(doc, docs)),
            ("policies.kyverno.io", "GeneratingPolicy" | "NamespacedGeneratingPolicy") => {
                out.extend(read_generating(doc))
            }
            ("kyverno.io" | "policies.kyverno.io", _) => out.push(Read::NotMapped(
                Origin {
                    policy: format!("{kind} {}", display_name(doc)),
                    rule: String::new(),
                },
                format!("a {kind} generates nothing; only generate rules are imported"),
            )),
            _ => out.push(Read::Ignored(format!("{kind} {}", display_name(doc)))),
        }
    }
    out
}

fn display_name(doc: &Value) -> String {
    let name = doc["metadata"]["name"].as_str().unwrap_or("<unnamed>");
    match doc["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

// ---- kyverno.io ClusterPolicy / Policy ----------------------------------------------------

fn read_classic(policy: &Value, docs: &[Value]) -> Vec<Read> {
    let kind = policy["kind"].as_str().unwrap_or_default();
    let policy_name = format!("{kind} {}", display_name(policy));
    let Some(rules) = policy["spec"]["rules"].as_array() else {
        return vec![Read::NotMapped(
            Origin {
                policy: policy_name,
                rule: String::new(),
            },
            "no rules".into(),
        )];
    };
    // A namespaced Policy acts only in its own namespace.
    let home = (kind == "Policy")
        .then(|| policy["metadata"]["namespace"].as_str().map(String::from))
        .flatten();
    let policy_existing = policy["spec"]["generateExisting"].as_bool();
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let origin = Origin {
                policy: policy_name.clone(),
                rule: rule["name"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| format!("rules[{i}]")),
            };
            match read_classic_rule(rule, docs, home.as_deref(), policy_existing) {
                Ok(mut r) => {
                    r.origin = origin;
                    Read::Rule(Box::new(r))
                }
                Err(reason) => Read::NotMapped(origin, reason),
            }
        })
        .collect()
}

fn read_classic_rule(
    rule: &Value,
    docs: &[Value],
    home: Option<&str>,
    policy_existing: Option<bool>,
) -> Result<GenerateRule, String> {
    let generate = rule
        .get("generate")
        .filter(|g| g.is_object())
        .ok_or_else(|| {
            let what = ["validate", "mutate", "verifyImages"]
                .into_iter()
                .find(|k| rule.get(*k).is_some())
                .unwrap_or("non-generate");
            format!("a {what} rule; only generate rules are imported")
        })?;
    if generate.get("foreach").is_some() {
        return Err("a generate foreach: the objects depend on a list in the trigger".into());
    }
    if generate.get("cloneList").is_some() {
        return Err("cloneList copies objects chosen by label at run time; give the import the objects as `data` or `clone` rules".into());
    }
    let (trigger, mut scope) = read_match(&rule["match"])?;
    scope.excluded = read_exclude(rule.get("exclude"))?;
    if let Some(ns) = home {
        if scope.selector.is_some() || !scope.names.is_empty() && !scope.names.contains(ns) {
            return Err(format!(
                "a namespaced Policy in {ns} whose match names other namespaces"
            ));
        }
        scope.selector = None;
        scope.names = BTreeSet::from([ns.to_string()]);
    }
    let object = classic_object(generate, docs)?;
    let mut differences = Vec::new();
    let min_replicas =
        read_preconditions(rule.get("preconditions"), &trigger, rule, &mut differences)?;
    Ok(GenerateRule {
        origin: Origin {
            policy: String::new(),
            rule: String::new(),
        },
        trigger,
        scope,
        objects: vec![normalize_refs(object)],
        synchronize: generate["synchronize"].as_bool().unwrap_or(false),
        generate_existing: generate["generateExisting"]
            .as_bool()
            .or(policy_existing)
            .unwrap_or(false),
        min_replicas,
        differences,
    })
}

/// The generated object of a `data` rule, or the clone source found among the documents.
fn classic_object(generate: &Value, docs: &[Value]) -> Result<Value, String> {
    let kind = generate["kind"].as_str().unwrap_or_default();
    if let Some(data) = generate.get("data") {
        let mut metadata = data
            .get("metadata")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        metadata["name"] = generate["name"].clone();
        metadata["namespace"] = generate["namespace"].clone();
        let mut object = serde_json::json!({
            "apiVersion": generate["apiVersion"],
            "kind": kind,
            "metadata": metadata,
        });
        for (k, v) in data.as_object().into_iter().flatten() {
            if k != "metadata" {
                object[k] = v.clone();
            }
        }
        return Ok(object);
    }
    if let Some(clone) = generate.get("clone") {
        let ns = clone["namespace"].as_str().unwrap_or_default();
        let name = clone["name"].as_str().unwrap_or_default();
        let source = docs.iter().find(|d| {
            d["kind"].as_str() == Some(kind)
                && d["metadata"]["name"].as_str() == Some(name)
                && d["metadata"]["namespace"].as_str() == Some(ns)
        });
        return match source {
            Some(s) => {
                let mut object = s.clone();
                object["metadata"]["name"] = generate["name"].clone();
                object["metadata"]["namespace"] = generate["namespace"].clone();
                Ok(object)
            }
            None => Err(format!(
                "clones {kind} {ns}/{name}, which is not among the input files (add it with -f, e.g. from `kubectl get {} -n {ns} {name} -o yaml`)",
                kind.to_lowercase()
            )),
        };
    }
    Err("a generate rule with neither data nor clone".into())
}

/// The trigger and namespaces of a `match` block.
fn read_match(m: &Value) -> Result<(Trigger, Scope), String> {
    let filters = resource_filters(m, "match")?;
    if filters.is_empty() {
        return Err("match names no resources".into());
    }
    let mut trigger: Option<Trigger> = None;
    let mut scope = Scope::default();
    let mut every = false;
    let mut selectors = Vec::new();
    for f in &filters {
        let kinds: BTreeSet<String> = f["kinds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|k| k.rsplit('/').next().unwrap_or(k).to_string())
            .collect();
        let this = if kinds.iter().all(|k| k == "Namespace") && !kinds.is_empty() {
            Trigger::Namespaces
        } else if !kinds.is_empty()
            && kinds
                .iter()
                .all(|k| k == "Deployment" || k == "StatefulSet")
        {
            Trigger::Workloads(kinds.clone())
        } else {
            return Err(format!(
                "triggered by {kinds:?}; the import reads rules triggered by Namespaces (NetworkPolicies) or by Deployments and StatefulSets (PodDisruptionBudgets)"
            ));
        };
        trigger = Some(match (trigger, this) {
            (None, t) => t,
            (Some(Trigger::Namespaces), Trigger::Namespaces) => Trigger::Namespaces,
            (Some(Trigger::Workloads(a)), Trigger::Workloads(b)) => {
                Trigger::Workloads(a.union(&b).cloned().collect())
            }
            _ => return Err("matches Namespaces and workloads in one rule".into()),
        });
        let namespaces_trigger = matches!(trigger, Some(Trigger::Namespaces));
        let (name_keys, selector_keys, other_keys): (&[&str], &[&str], &[&str]) =
            if namespaces_trigger {
                (
                    &["names", "namespaces"],
                    &["selector", "namespaceSelector"],
                    &[],
                )
            } else {
                (
                    &["namespaces"],
                    &["namespaceSelector"],
                    &["names", "selector"],
                )
            };
        for k in other_keys {
            if f.get(*k).is_some() {
                return Err(format!(
                    "matches workloads by `{k}`; Rampart budgets every replicated Deployment and StatefulSet in its namespaces"
                ));
            }
        }
        for k in ["annotations", "name"] {
            if f.get(k).is_some() {
                return Err(format!("matches by `{k}`, which a profile cannot express"));
            }
        }
        let names = string_list(name_keys.iter().filter_map(|k| f.get(*k)));
        let mut selector = None;
        for k in selector_keys {
            if let Some(s) = f.get(*k) {
                selector = Some(read_selector(s)?);
            }
        }
        if names.iter().any(|n| n == "*") || (names.is_empty() && selector.is_none()) {
            every = true;
            continue;
        }
        if let Some(bad) = names.iter().find(|n| n.contains('*') || n.contains('?')) {
            return Err(format!(
                "names namespaces by the pattern {bad}; a profile names namespaces exactly or selects them by label"
            ));
        }
        match (names.is_empty(), selector) {
            (false, Some(_)) => {
                return Err("a match filter with both names and a selector (ANDed); a profile's names and selector add up".into())
            }
            (false, None) => scope.names.extend(names),
            (true, Some(s)) => selectors.push(s),
            (true, None) => {}
        }
    }
    if every {
        return Ok((trigger.unwrap_or(Trigger::Namespaces), Scope::default()));
    }
    match selectors.len() {
        0 => {}
        1 => scope.selector = selectors.pop(),
        _ => return Err("several label selectors in `match.any`; a profile has one".into()),
    }
    Ok((trigger.unwrap_or(Trigger::Namespaces), scope))
}

/// The resource filters of a match or exclude block: `any`, a single-entry `all`, or the
/// older bare `resources`.
fn resource_filters(m: &Value, what: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    if let Some(r) = m.get("resources") {
        out.push(r.clone());
    }
    for entry in m["any"].as_array().into_iter().flatten() {
        out.extend(entry_resources(entry, what)?);
    }
    if let Some(all) = m["all"].as_array() {
        if all.len() > 1 {
            return Err(format!(
                "`{what}.all` with several filters (ANDed); a profile cannot express it"
            ));
        }
        for entry in all {
            out.extend(entry_resources(entry, what)?);
        }
    }
    Ok(out)
}

fn entry_resources(entry: &Value, what: &str) -> Result<Option<Value>, String> {
    for k in ["subjects", "roles", "clusterRoles"] {
        if entry.get(k).is_some() {
            return Err(format!("`{what}` on the requester's `{k}`; a profile acts on namespaces, whoever made them"));
        }
    }
    Ok(entry.get("resources").cloned())
}

/// Excluded namespace names; any other kind of exclusion cannot be expressed.
fn read_exclude(exclude: Option<&Value>) -> Result<BTreeSet<String>, String> {
    let Some(exclude) = exclude else {
        return Ok(BTreeSet::new());
    };
    let mut out = BTreeSet::new();
    for f in resource_filters(exclude, "exclude")? {
        for (k, _) in f.as_object().into_iter().flatten() {
            if !matches!(k.as_str(), "names" | "namespaces" | "kinds") {
                return Err(format!(
                    "excludes by `{k}`; a profile excludes namespaces by name only"
                ));
            }
        }
        out.extend(string_list(
            ["names", "namespaces"].iter().filter_map(|k| f.get(*k)),
        ));
    }
    if let Some(bad) = out.iter().find(|n| n.contains('*')) {
        return Err(format!("excludes namespaces by the pattern {bad}"));
    }
    Ok(out)
}

fn string_list<'a>(lists: impl Iterator<Item = &'a Value>) -> Vec<String> {
    lists
        .flat_map(|l| l.as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

fn read_selector(s: &Value) -> Result<LabelSelector, String> {
    serde_json::from_value(s.clone())
        .map_err(|e| format!("a label selector the import cannot read: {e}"))
}

/// The replica floor in preconditions; Rampart's own user-budget rule is recognised and
/// anything else on a workload rule is a difference (on a Namespace rule, a refusal: the
/// objects would reach namespaces the policy left out).
fn read_preconditions(
    pre: Option<&Value>,
    trigger: &Trigger,
    rule: &Value,
    differences: &mut Vec<String>,
) -> Result<Option<i32>, String> {
    let Some(pre) = pre else {
        return Ok(None);
    };
    let mut conditions: Vec<&Value> = Vec::new();
    match pre {
        Value::Array(items) => conditions.extend(items),
        _ => {
            if pre["any"].as_array().is_some_and(|a| a.len() > 1) {
                return Err(
                    "preconditions under `any` (ORed); only conditions that all hold are read"
                        .into(),
                );
            }
            conditions.extend(pre["all"].as_array().into_iter().flatten());
            conditions.extend(pre["any"].as_array().into_iter().flatten());
        }
    }
    let budget_lookups: BTreeSet<String> = rule["context"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["apiCall"]["urlPath"]
                .as_str()
                .is_some_and(|p| p.contains("/poddisruptionbudgets"))
        })
        .filter_map(|c| c["name"].as_str().map(|n| format!("{{{{{n}}}}}")))
        .collect();
    let mut min = None;
    for c in conditions {
        let key = compact(c["key"].as_str().unwrap_or_default());
        let op = c["operator"].as_str().unwrap_or_default();
        let value = match &c["value"] {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        if matches!(trigger, Trigger::Workloads(_)) {
            if key == "{{request.object.spec.replicas}}" {
                match (op, value) {
                    ("GreaterThanOrEquals", Some(n)) => min = Some(n as i32),
                    ("GreaterThan", Some(n)) => min = Some(n as i32 + 1),
                    _ => differences.push(format!("precondition replicas {op} {}; Rampart budgets workloads of at least minReplicas", c["value"])),
                }
                continue;
            }
            // "no budget of the user's selects these pods": what Rampart always does.
            if budget_lookups.contains(&key) && op == "Equals" && value == Some(0) {
                continue;
            }
            differences.push(format!(
                "precondition `{key} {op} {}` not expressible; Rampart budgets every replicated workload no user budget covers",
                c["value"]
            ));
        } else {
            return Err(format!(
                "precondition `{key} {op} {}` picks namespaces in a way a profile cannot express",
                c["value"]
            ));
        }
    }
    Ok(min)
}

/// Variables as `{{object...}}`, whitespace and the `request.` prefix dropped, so both APIs
/// spell references alike.
fn normalize_refs(v: Value) -> Value {
    match v {
        Value::String(s) if s.contains("{{") => {
            Value::String(compact(&s).replace("{{request.object.", "{{object."))
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_refs).collect()),
        Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, normalize_refs(v))).collect())
        }
        other => other,
    }
}

/// `{{ a.b }}` as `{{a.b}}`.
fn compact(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                out.push_str("{{");
                out.push_str(after[..close].trim());
                out.push_str("}}");
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

// ---- policies.kyverno.io GeneratingPolicy -------------------------------------------------

fn read_generating(policy: &Value) -> Vec<Read> {
    let kind = policy["kind"].as_str().unwrap_or_default();
    let policy_name = format!("{kind} {}", display_name(policy));
    let whole = |reason: String| {
        vec![Read::NotMapped(
            Origin {
                policy: policy_name.clone(),
                rule: String::new(),
            },
            reason,
        )]
    };
    let spec = &policy["spec"];
    let (trigger, mut scope, min_replicas) = match read_constraints(spec) {
        Ok(t) => t,
        Err(reason) => return whole(reason),
    };
    if kind == "NamespacedGeneratingPolicy" {
        if let Some(ns) = policy["metadata"]["namespace"].as_str() {
            scope.selector = None;
            scope.names = BTreeSet::from([ns.to_string()]);
        }
    }
    let variables: BTreeMap<String, String> = spec["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_string(),
                v["expression"].as_str()?.to_string(),
            ))
        })
        .collect();
    let synchronize = spec["evaluation"]["synchronize"]["enabled"]
        .as_bool()
        .unwrap_or(false);
    let generate_existing = spec["evaluation"]["generateExisting"]["enabled"]
        .as_bool()
        .unwrap_or(false);
    let Some(generates) = spec["generate"].as_array() else {
        return whole("no generate expressions".into());
    };
    generates
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let origin = Origin {
                policy: policy_name.clone(),
                rule: format!("generate[{i}]"),
            };
            let expr = g["expression"].as_str().unwrap_or_default();
            match generated_objects(expr, &variables) {
                Ok(objects) => Read::Rule(Box::new(GenerateRule {
                    origin,
                    trigger: trigger.clone(),
                    scope: scope.clone(),
                    objects,
                    synchronize,
                    generate_existing,
                    min_replicas,
                    differences: Vec::new(),
                })),
                Err(reason) => Read::NotMapped(origin, reason),
            }
        })
        .collect()
}

/// Trigger, namespaces and replica floor from `matchConstraints` and `matchConditions`.
fn read_constraints(spec: &Value) -> Result<(Trigger, Scope, Option<i32>), String> {
    let mc = &spec["matchConstraints"];
    let resources: BTreeSet<String> = mc["resourceRules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["resources"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    let trigger = if resources.iter().all(|r| r == "namespaces") && !resources.is_empty() {
        Trigger::Namespaces
    } else if !resources.is_empty()
        && resources
            .iter()
            .all(|r| r == "deployments" || r == "statefulsets")
    {
        Trigger::Workloads(
            resources
                .iter()
                .map(|r| {
                    if r == "deployments" {
                        "Deployment"
                    } else {
                        "StatefulSet"
                    }
                    .to_string()
                })
                .collect(),
        )
    } else {
        return Err(format!(
            "triggered by {resources:?}; the import reads policies triggered by namespaces (NetworkPolicies) or by deployments and statefulsets (PodDisruptionBudgets)"
        ));
    };
    let mut selector: Option<LabelSelector> = None;
    let selector_keys: &[&str] = match trigger {
        // For a Namespace, both selectors are matched against the namespace's own labels.
        Trigger::Namespaces => &["namespaceSelector", "objectSelector"],
        Trigger::Workloads(_) => &["namespaceSelector"],
    };
    if matches!(trigger, Trigger::Workloads(_))
        && mc
            .get("objectSelector")
            .is_some_and(|s| s != &serde_json::json!({}))
    {
        return Err("selects workloads by label (objectSelector); Rampart budgets every replicated workload".into());
    }
    for k in selector_keys {
        if let Some(s) = mc.get(*k) {
            let s = read_selector(s)?;
            let merged = selector.get_or_insert_with(LabelSelector::default);
            merged.match_labels.extend(s.match_labels);
            merged.match_expressions.extend(s.match_expressions);
        }
    }
    let mut scope = Scope {
        selector: selector.filter(|s| *s != LabelSelector::default()),
        ..Default::default()
    };
    let subject = match trigger {
        Trigger::Namespaces => "object.metadata.name",
        Trigger::Workloads(_) => "object.metadata.namespace",
    };
    let mut min_replicas = None;
    for c in spec["matchConditions"].as_array().into_iter().flatten() {
        let expr: String = c["expression"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let name = c["name"].as_str().unwrap_or_default();
        if let Some(list) = expr
            .strip_prefix(&format!("!({subject}in"))
            .and_then(|r| r.strip_suffix(')'))
        {
            scope.excluded.extend(name_list(list, name)?);
        } else if let Some(list) = expr.strip_prefix(&format!("{subject}in")) {
            if scope.selector.is_some() {
                return Err(format!(
                    "matchCondition {name} names namespaces beside a selector (ANDed)"
                ));
            }
            scope.names.extend(name_list(list, name)?);
        } else if let (Trigger::Workloads(_), Some(n)) = (&trigger, replica_floor(&expr)) {
            min_replicas = Some(n);
        } else {
            return Err(format!(
                "matchCondition {name} (`{}`) is not a namespace-name or replica test the import can read",
                c["expression"].as_str().unwrap_or_default()
            ));
        }
    }
    Ok((trigger, scope, min_replicas))
}

fn name_list(list: &str, condition: &str) -> Result<Vec<String>, String> {
    match cel::literal(list) {
        Ok(Value::Array(items)) => Ok(items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()),
        _ => Err(format!("matchCondition {condition}: not a list of names")),
    }
}

/// `object.spec.replicas>=N` or `>N` (whitespace already removed).
fn replica_floor(expr: &str) -> Option<i32> {
    if let Some(n) = expr.strip_prefix("object.spec.replicas>=") {
        return n.parse().ok();
    }
    expr.strip_prefix("object.spec.replicas>")
        .and_then(|n| n.parse::<i32>().ok())
        .map(|n| n + 1)
}

/// The objects of `generator.Apply(ns, objects)`, variables substituted and the target
/// namespace written into each object's metadata.
fn generated_objects(
    expr: &str,
    variables: &BTreeMap<String, String>,
) -> Result<Vec<Value>, String> {
    let (ns, objects) = cel::generator_apply_args(expr)
        .ok_or_else(|| format!("`{expr}` is not generator.Apply(namespace, objects)"))?;
    let ns = substitute(cel::literal(&ns).map_err(|e| e.to_string())?, variables, 0)?;
    let list = substitute(
        cel::literal(&objects).map_err(|e| e.to_string())?,
        variables,
        0,
    )?;
    let items = match list {
        Value::Array(items) => items
            .into_iter()
            .flat_map(|i| match i {
                Value::Array(inner) => inner,
                one => vec![one],
            })
            .collect::<Vec<_>>(),
        other => vec![other],
    };
    items
        .into_iter()
        .map(|mut o| {
            if !o.is_object() {
                return Err("generates something that is not an object literal".to_string());
            }
            o["metadata"]["namespace"] = ns.clone();
            Ok(normalize_refs(o))
        })
        .collect()
}

/// Replaces `{{variables.x}}` with the literal value of variable x.
fn substitute(v: Value, variables: &BTreeMap<String, String>, depth: u8) -> Result<Value, String> {
    if depth > 8 {
        return Err("variables refer to each other too deeply".into());
    }
    match v {
        Value::String(s) => match s
            .strip_prefix("{{variables.")
            .and_then(|r| r.strip_suffix("}}"))
        {
            Some(name) => {
                let expr = variables
                    .get(name)
                    .ok_or_else(|| format!("refers to an undefined variable {name}"))?;
                let value = cel::literal(expr).map_err(|e| format!("variable {name}: {e}"))?;
                substitute(value, variables, depth + 1)
            }
            None => Ok(Value::String(s)),
        },
        Value::Array(items) => items
            .into_iter()
            .map(|i| substitute(i, variables, depth))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| substitute(v, variables, depth).map(|v| (k, v)))
            .collect::<Result<serde_json::Map<_, _>, _>>()
            .map(Value::Object),
        other => Ok(other),
    }
}

/// A selector naming these namespaces (through the name label), for exclusions.
pub fn names_not_in(excluded: &BTreeSet<String>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: NAMESPACE_NAME_LABEL.into(),
        operator: SelectorOperator::NotIn,
        values: excluded.iter().cloned().collect(),
    }
}
