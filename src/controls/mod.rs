//! The shape every control shares: desired objects, the objects observed as ours, and the plan
//! (create, repair, delete) with the drift it repairs. Pure: nothing here holds a `Client`.

pub mod disruption_budgets;
pub mod network_policies;
pub mod rotation;
pub mod snapshots;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::api::{ControlName, CONTROL_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, PROFILE_LABEL};

/// The kinds of object controls create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ManagedKind {
    NetworkPolicy,
    PodDisruptionBudget,
    VolumeSnapshot,
}

impl ManagedKind {
    pub fn kind(self) -> &'static str {
        match self {
            ManagedKind::NetworkPolicy => "NetworkPolicy",
            ManagedKind::PodDisruptionBudget => "PodDisruptionBudget",
            ManagedKind::VolumeSnapshot => "VolumeSnapshot",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            ManagedKind::NetworkPolicy => "networking.k8s.io/v1",
            ManagedKind::PodDisruptionBudget => "policy/v1",
            ManagedKind::VolumeSnapshot => "snapshot.storage.k8s.io/v1",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ManagedKind::NetworkPolicy => "networkpolicies",
            ManagedKind::PodDisruptionBudget => "poddisruptionbudgets",
            ManagedKind::VolumeSnapshot => "volumesnapshots",
        }
    }
}

/// Identity of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: ManagedKind,
    pub namespace: String,
    pub name: String,
}

/// An object a control wants to exist, as the manifest Rampart applies (without owner
/// references, which the apply layer adds).
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObject {
    pub key: ObjectKey,
    pub control: ControlName,
    pub manifest: Value,
}

/// An object observed in the cluster that carries Rampart's labels for this profile and an
/// owner reference to it: the only objects a control may change or delete.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedObject {
    pub key: ObjectKey,
    pub control: Option<ControlName>,
    /// The uid a delete is preconditioned on, so a same-named object made since survives.
    pub uid: Option<String>,
    /// Labels and annotations as observed: others may add theirs, ours must be there.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The [`fingerprint`] of its spec; `None` where only deletion matters.
    pub fingerprint: Option<String>,
}

/// Why an object departs from the profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DriftReason {
    /// Desired but absent.
    Missing,
    /// Present but a field Rampart sets has another value.
    Modified,
    /// Ours but no longer desired.
    Unexpected,
    /// The name is held by an object Rampart did not create, so it will not touch it.
    NameTaken,
}

impl DriftReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftReason::Missing => "Missing",
            DriftReason::Modified => "Modified",
            DriftReason::Unexpected => "Unexpected",
            DriftReason::NameTaken => "NameTaken",
        }
    }
}

/// One departure from the profile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Drift {
    pub key: ObjectKey,
    pub control: ControlName,
    pub reason: DriftReason,
}

/// What must change to bring the cluster to the desired state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<DesiredObject>,
    pub repair: Vec<DesiredObject>,
    pub delete: Vec<ObservedObject>,
    pub drift: Vec<Drift>,
}

/// The labels every managed object carries.
pub fn managed_labels(profile: &str, control: ControlName) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (PROFILE_LABEL.to_string(), profile.to_string()),
        (CONTROL_LABEL.to_string(), control.label().to_string()),
    ])
}

/// Compares desired objects with what is observed as ours. `owned_kinds` are the kinds whose
/// every observed object must be desired (anything else of them is deleted); a control that
/// prunes by its own rules (snapshots) leaves its kind out.
pub fn plan(
    desired: Vec<DesiredObject>,
    observed: &[ObservedObject],
    owned_kinds: &[ManagedKind],
) -> Plan {
    let observed_by_key: BTreeMap<&ObjectKey, &ObservedObject> =
        observed.iter().map(|o| (&o.key, o)).collect();
    let desired_keys: BTreeSet<ObjectKey> = desired.iter().map(|d| d.key.clone()).collect();
    let mut out = Plan::default();
    for d in desired {
        match observed_by_key.get(&d.key) {
            None => {
                out.drift.push(Drift {
                    key: d.key.clone(),
                    control: d.control,
                    reason: DriftReason::Missing,
                });
                out.create.push(d);
            }
            Some(o) if !matches_desired(o, &d.manifest) => {
                out.drift.push(Drift {
                    key: d.key.clone(),
                    control: d.control,
                    reason: DriftReason::Modified,
                });
                out.repair.push(d);
            }
            Some(_) => {}
        }
    }
    for o in observed {
        if owned_kinds.contains(&o.key.kind) && !desired_keys.contains(&o.key) {
            if let Some(control) = o.control {
                out.drift.push(Drift {
                    key: o.key.clone(),
                    control,
                    reason: DriftReason::Unexpected,
                });
            }
            out.delete.push(o.clone());
        }
    }
    out
}

/// Whether an observed object matches a desired manifest. Metadata may carry more (other
/// managers' labels, the server's uid and timestamps); every other field Rampart sets, such
/// as `spec`, must be equal, because a selector that gained a label or a list that gained an
/// entry is exactly the drift we look for. They are compared by [`fingerprint`].
pub fn matches_desired(observed: &ObservedObject, desired: &Value) -> bool {
    let Some(want) = desired.as_object() else {
        return false;
    };
    let meta = want.get("metadata");
    let contained = |wanted: Option<&Value>, actual: &BTreeMap<String, String>| match wanted {
        Some(Value::Object(w)) => w
            .iter()
            .all(|(k, v)| actual.get(k).map(String::as_str) == v.as_str()),
        Some(other) => is_empty_value(other),
        None => true,
    };
    contained(meta.and_then(|m| m.get("labels")), &observed.labels)
        && contained(
            meta.and_then(|m| m.get("annotations")),
            &observed.annotations,
        )
        && observed.fingerprint.as_deref() == Some(fingerprint(want).as_str())
}

/// A digest (SHA-256, hex) of an object's fields other than `apiVersion`, `kind`, `metadata`
/// and `status`, with nulls and empty lists or maps dropped, as the API server drops them.
/// Equal fingerprints mean equal specs; the caches keep the digest of each managed object
/// rather than its spec, which at ten thousand objects is most of their size.
pub fn fingerprint(object: &serde_json::Map<String, Value>) -> String {
    use sha2::{Digest, Sha256};
    let fields: serde_json::Map<String, Value> = object
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // serde_json's maps are ordered by key, so the text is canonical.
    hex::encode(Sha256::digest(
        normalized(&Value::Object(fields)).to_string(),
    ))
}

/// Drops nulls and empty lists or maps, recursively.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !is_empty_value(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// The API server drops empty lists and maps, so an empty wanted value matches an absent one.
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Case = (
        &'static str,
        Vec<DesiredObject>,
        Vec<ObservedObject>,
        Vec<DriftReason>,
    );

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: ManagedKind::NetworkPolicy,
            namespace: "app".into(),
            name: name.into(),
        }
    }

    fn desired(name: &str, spec: Value) -> DesiredObject {
        DesiredObject {
            key: key(name),
            control: ControlName::NetworkPolicies,
            manifest: json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": "app", "labels": {"a": "b"}}, "spec": spec}),
        }
    }

    fn observed(name: &str, spec: Value) -> ObservedObject {
        let object = json!({"metadata": {"name": name}, "spec": spec});
        ObservedObject {
            key: key(name),
            control: Some(ControlName::NetworkPolicies),
            uid: Some("1".into()),
            labels: BTreeMap::from([("a".into(), "b".into()), ("extra".into(), "x".into())]),
            annotations: BTreeMap::new(),
            fingerprint: object.as_object().map(fingerprint),
        }
    }

    #[test]
    fn nulls_empties_and_extra_labels_are_not_drift() {
        let d = desired(
            "p",
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}),
        );
        let o = observed(
            "p",
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 53, "protocol": "UDP", "endPort": null}]}]}),
        );
        assert_eq!(
            plan(vec![d], &[o], &[ManagedKind::NetworkPolicy]),
            Plan::default()
        );
    }

    #[test]
    fn plan_table() {
        let spec = json!({"podSelector": {}, "policyTypes": ["Ingress"]});
        let edited =
            json!({"podSelector": {"matchLabels": {"x": "y"}}, "policyTypes": ["Ingress"]});
        let extra_rule = json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]});
        let cases: Vec<Case> = vec![
            (
                "missing is created",
                vec![desired("p", spec.clone())],
                vec![],
                vec![DriftReason::Missing],
            ),
            (
                "edited field is repaired",
                vec![desired("p", spec.clone())],
                vec![observed("p", edited)],
                vec![DriftReason::Modified],
            ),
            (
                "an added list is drift",
                vec![desired(
                    "p",
                    json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []}),
                )],
                vec![observed("p", extra_rule)],
                vec![DriftReason::Modified],
            ),
            (
                "ours but undesired is deleted",
                vec![],
                vec![observed("old", spec.clone())],
                vec![DriftReason::Unexpected],
            ),
            (
                "a removed label is drift",
                vec![desired("p", spec.clone())],
                vec![{
                    let mut o = observed("p", spec.clone());
                    o.labels = BTreeMap::from([("extra".into(), "x".into())]);
                    o
                }],
                vec![DriftReason::Modified],
            ),
            (
                "in sync is nothing",
                vec![desired("p", spec.clone())],
                vec![observed("p", spec.clone())],
                vec![],
            ),
        ];
        for (name, d, o, want) in cases {
            let p = plan(d, &o, &[ManagedKind::NetworkPolicy]);
            let got: Vec<DriftReason> = p.drift.iter().map(|d| d.reason).collect();
            assert_eq!(got, want, "{name}");
            assert_eq!(
                p.create.len() + p.repair.len() + p.delete.len(),
                want.len(),
                "{name}"
            );
        }
    }

    #[test]
    fn kinds_not_owned_wholly_are_never_deleted_by_plan() {
        let mut o = observed("snap", json!({}));
        o.key.kind = ManagedKind::VolumeSnapshot;
        assert!(plan(vec![], &[o], &[ManagedKind::NetworkPolicy])
            .delete
            .is_empty());
    }
}

/// A name made of `prefix` and `base`, cut to `max` characters with a hash of the whole so
/// that two long names never collide after cutting.
pub fn bounded_name(prefix: &str, base: &str, max: usize) -> String {
    use sha2::{Digest, Sha256};
    let full = format!("{prefix}{base}");
    if full.len() <= max {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
    let keep = max.saturating_sub(hash.len() + 1);
    let head: String = full.chars().take(keep).collect();
    format!("{}-{hash}", head.trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod name_tests {
    use super::bounded_name;

    #[test]
    fn long_names_are_cut_with_a_distinguishing_hash() {
        let a = bounded_name("rampart-deploy-", &"a".repeat(300), 253);
        let b = bounded_name("rampart-deploy-", &format!("{}b", "a".repeat(299)), 253);
        assert_eq!(a.len(), 253);
        assert_ne!(a, b);
        assert_eq!(bounded_name("rampart-sts-", "db", 253), "rampart-sts-db");
    }
}
