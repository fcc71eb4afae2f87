//! The shape every control shares. Each control is a pure function from the profile's spec and
//! what was observed to an [`Outcome`]: the writes Enforce mode would make, the drift they
//! repair, the findings for the status, events, and when to look again. Nothing here holds a
//! `Client`; [`crate::apply::Writer`] carries out the writes (or, in Audit mode, does not).

pub mod backups;
pub mod disruption_budgets;
pub mod network_policies;
pub mod rotation;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use crate::api::DriftReason;
use crate::api::{ControlName, RegeneratedKey};
use crate::events::Event;
use rotation::ConsumerRef;

/// The kinds of object controls create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ManagedKind {
    NetworkPolicy,
    PodDisruptionBudget,
    VolumeSnapshot,
    /// The scratch namespace restore verification works in (cluster-scoped).
    Namespace,
    /// A pre-provisioned content pointing at a snapshot's handle (cluster-scoped).
    VolumeSnapshotContent,
    /// A scratch PVC restored from a snapshot.
    PersistentVolumeClaim,
    /// The check restore verification runs against a restored volume.
    Job,
    /// The reader pod that is a restored volume's first consumer when there is no check Job.
    Pod,
    /// The volume a scratch PVC bound to; only its reclaim policy is ever written.
    PersistentVolume,
    /// The bound on the scratch namespace's PVCs.
    ResourceQuota,
    /// A rotation's `beforeRestart` hook Job, in a tenant namespace. It outlives the profile:
    /// a profile deleted (even in the foreground) while a hook runs must not have the garbage
    /// collector kill the Job halfway through changing a password.
    HookJob,
}

impl ManagedKind {
    pub fn kind(self) -> &'static str {
        match self {
            ManagedKind::NetworkPolicy => "NetworkPolicy",
            ManagedKind::PodDisruptionBudget => "PodDisruptionBudget",
            ManagedKind::VolumeSnapshot => "VolumeSnapshot",
            ManagedKind::Namespace => "Namespace",
            ManagedKind::VolumeSnapshotContent => "VolumeSnapshotContent",
            ManagedKind::PersistentVolumeClaim => "PersistentVolumeClaim",
            ManagedKind::Job => "Job",
            ManagedKind::Pod => "Pod",
            ManagedKind::PersistentVolume => "PersistentVolume",
            ManagedKind::ResourceQuota => "ResourceQuota",
            ManagedKind::HookJob => "Job",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            ManagedKind::NetworkPolicy => "networking.k8s.io/v1",
            ManagedKind::PodDisruptionBudget => "policy/v1",
            ManagedKind::VolumeSnapshot | ManagedKind::VolumeSnapshotContent => {
                "snapshot.storage.k8s.io/v1"
            }
            ManagedKind::Namespace
            | ManagedKind::PersistentVolumeClaim
            | ManagedKind::Pod
            | ManagedKind::PersistentVolume
            | ManagedKind::ResourceQuota => "v1",
            ManagedKind::Job | ManagedKind::HookJob => "batch/v1",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ManagedKind::NetworkPolicy => "networkpolicies",
            ManagedKind::PodDisruptionBudget => "poddisruptionbudgets",
            ManagedKind::VolumeSnapshot => "volumesnapshots",
            ManagedKind::Namespace => "namespaces",
            ManagedKind::VolumeSnapshotContent => "volumesnapshotcontents",
            ManagedKind::PersistentVolumeClaim => "persistentvolumeclaims",
            ManagedKind::Job => "jobs",
            ManagedKind::Pod => "pods",
            ManagedKind::PersistentVolume => "persistentvolumes",
            ManagedKind::ResourceQuota => "resourcequotas",
            ManagedKind::HookJob => "jobs",
        }
    }

    /// Whether objects of this kind must outlive the profile whatever way it is deleted: they
    /// name the profile's uid in a label instead of an owner reference, so garbage collection
    /// never takes them (see [`crate::ownership`]).
    pub fn outlives_profile(self) -> bool {
        matches!(self, ManagedKind::VolumeSnapshot | ManagedKind::HookJob)
    }

    /// Whether objects of this kind live outside namespaces (their key's namespace is empty).
    pub fn cluster_scoped(self) -> bool {
        matches!(
            self,
            ManagedKind::Namespace
                | ManagedKind::VolumeSnapshotContent
                | ManagedKind::PersistentVolume
        )
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
/// references, which the writer adds).
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
    /// The [`Fingerprint`] of its fields; `None` where only deletion matters.
    pub fingerprint: Option<Fingerprint>,
}

/// One departure from the profile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Drift {
    pub key: ObjectKey,
    pub control: ControlName,
    pub reason: DriftReason,
    /// For [`DriftReason::Modified`]: which fields differ (`spec.podSelector`,
    /// `metadata.labels`).
    pub fields: Vec<String>,
}

/// A write a control asks for. The writer carries it out in Enforce mode and only reports it
/// in Audit mode; it is the one place that decides.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Create a missing object (a plain create: never takes over someone else's).
    Create(DesiredObject),
    /// Re-apply a drifted object of ours with server-side apply.
    Repair(DesiredObject),
    /// Delete an object of ours, preconditioned on its uid.
    Delete(ObservedObject),
    /// Drop our owner reference so the object outlives the profile (snapshots are data).
    Orphan(ObservedObject),
    /// Give a Secret new random values for `regenerate` and stamp it with the rotation id;
    /// the values are made by the writer, never here.
    RotateSecret(SecretRotation),
    /// Write this profile's entry at the current id into a Secret's stamp, marked adopted,
    /// values untouched; only if its entry still holds `expected` (what the plan saw).
    AdoptSecret {
        secret: SecretRef,
        rotation_id: String,
        expected: Option<String>,
    },
    /// Restart a workload by stamping its pod template, unless it already carries the id or
    /// was created after `created_before` (it started with the new values).
    StampWorkload {
        consumer: ConsumerRef,
        rotation_id: String,
        at: DateTime<Utc>,
        created_before: Option<DateTime<Utc>>,
        /// Its rollout gates the next batch: false for a consumer that was not Ready before
        /// its restart, whose rollout may never complete for reasons of its own.
        gates: bool,
    },
    /// Create a Secret's hook Job (a plain create; one of ours under its name counts as made)
    /// and then mark the Secret's hook started, only if its entry is still `hook-due` at the id.
    StartHook {
        job: DesiredObject,
        secret: SecretRef,
        rotation_id: String,
        /// The keys given back their previous values if the Job is refused.
        regenerate: Vec<String>,
    },
    /// Record how a Secret's hook ended, only if its entry still says the hook has not ended at
    /// the id: a failure first gives each of `regenerate` back its `<key>.previous` value, in the
    /// same guarded write.
    EndHook {
        secret: SecretRef,
        rotation_id: String,
        end: rotation::hooks::HookEnd,
        regenerate: Vec<String>,
    },
}

/// A Secret by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

/// What rotating one Secret means.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretRotation {
    pub secret: SecretRef,
    pub rotation_id: String,
    /// The id this profile's entry held when the plan was made: the write happens only if it
    /// still does, so a stale plan never rotates a Secret twice.
    pub expected: Option<String>,
    pub regenerate: Vec<RegeneratedKey>,
    pub keep_previous: bool,
    /// The mark written with the id: `HookDue` when a hook runs before the consumers restart.
    pub mark: rotation::stamp::Mark,
}

/// The object a write is about, for drift outcomes, events and errors.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl From<&ObjectKey> for Target {
    fn from(k: &ObjectKey) -> Self {
        Target {
            kind: k.kind.kind(),
            namespace: k.namespace.clone(),
            name: k.name.clone(),
        }
    }
}

impl Write {
    pub fn target(&self) -> Target {
        match self {
            Write::Create(d) | Write::Repair(d) => Target::from(&d.key),
            Write::Delete(o) | Write::Orphan(o) => Target::from(&o.key),
            Write::RotateSecret(r) => Target {
                kind: "Secret",
                namespace: r.secret.namespace.clone(),
                name: r.secret.name.clone(),
            },
            Write::AdoptSecret { secret, .. }
            | Write::StartHook { secret, .. }
            | Write::EndHook { secret, .. } => Target {
                kind: "Secret",
                namespace: secret.namespace.clone(),
                name: secret.name.clone(),
            },
            Write::StampWorkload { consumer, .. } => Target {
                kind: consumer.kind.as_str(),
                namespace: consumer.namespace.clone(),
                name: consumer.name.clone(),
            },
        }
    }

    pub fn verb(&self) -> WriteVerb {
        match self {
            Write::Create(_) => WriteVerb::Create,
            Write::Repair(_) => WriteVerb::Repair,
            Write::Delete(_) => WriteVerb::Delete,
            Write::Orphan(_) => WriteVerb::Orphan,
            Write::RotateSecret(_) => WriteVerb::Rotate,
            Write::AdoptSecret { .. } => WriteVerb::Adopt,
            Write::StampWorkload { .. } => WriteVerb::Restart,
            Write::StartHook { .. } => WriteVerb::StartHook,
            Write::EndHook { end, .. } => WriteVerb::EndHook(*end),
        }
    }
}

/// What kind of write, once carried out (its payload is gone by then).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WriteVerb {
    Create,
    Repair,
    Delete,
    Orphan,
    Rotate,
    Adopt,
    Restart,
    StartHook,
    EndHook(rotation::hooks::HookEnd),
}

/// One control's decisions for one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome<F> {
    /// What Enforce mode writes now.
    pub writes: Vec<Write>,
    /// What departs from the profile (the writes above repair it).
    pub drift: Vec<Drift>,
    /// What the status reports beyond drift.
    pub findings: F,
    /// Events that follow from what was observed (events about writes follow the writes).
    pub events: Vec<Event>,
    /// When this control must be looked at again without any event.
    pub next_due: Option<DateTime<Utc>>,
}

impl<F: Default> Default for Outcome<F> {
    fn default() -> Self {
        Self {
            writes: vec![],
            drift: vec![],
            findings: F::default(),
            events: vec![],
            next_due: None,
        }
    }
}

impl<F> Outcome<F> {
    /// The same writes, drift, events and due time with other findings.
    pub fn with_findings<G>(self, findings: G) -> Outcome<G> {
        Outcome {
            writes: self.writes,
            drift: self.drift,
            findings,
            events: self.events,
            next_due: self.next_due,
        }
    }
}

/// What a namespaced control (network policies, budgets) sees of one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceObserved {
    pub namespace: String,
    /// Deployments and StatefulSets, by kind then name.
    pub workloads: Vec<disruption_budgets::WorkloadInfo>,
    /// Every budget in the namespace, Rampart's and users'.
    pub budgets: Vec<disruption_budgets::BudgetInfo>,
    /// The profile's own policies and budgets there.
    pub owned: Vec<ObservedObject>,
}

/// What a namespaced control reports of one namespace beyond drift.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceFindings {
    /// Objects the profile wants there, per control.
    pub managed: BTreeMap<ControlName, usize>,
    /// Workloads left to a user's budget.
    pub covered_by_user: Vec<crate::api::ObjectRefStatus>,
    /// Budgets that would hang a node drain.
    pub drain_blocking: Vec<crate::api::ObjectRefStatus>,
}

impl NamespaceFindings {
    /// Both controls' findings for one namespace.
    pub fn merge(mut self, other: NamespaceFindings) -> Self {
        for (c, n) in other.managed {
            *self.managed.entry(c).or_insert(0) += n;
        }
        self.covered_by_user.extend(other.covered_by_user);
        self.drain_blocking.extend(other.drain_blocking);
        self
    }
}

/// The desired objects of one control in one namespace compared with the profile's objects of
/// that kind there.
fn namespace_outcome(
    control: ControlName,
    kind: ManagedKind,
    desired: Vec<DesiredObject>,
    observed: &NamespaceObserved,
) -> Outcome<NamespaceFindings> {
    let mine: Vec<ObservedObject> = observed
        .owned
        .iter()
        .filter(|o| o.key.kind == kind)
        .cloned()
        .collect();
    let managed = desired.len();
    compare(desired, &mine, &[kind]).with_findings(NamespaceFindings {
        managed: BTreeMap::from([(control, managed)]),
        ..Default::default()
    })
}

/// Compares desired objects with what is observed as ours: create what is missing, repair what
/// departs, delete what is ours of `owned_kinds` but no longer desired. A control that prunes by
/// its own rules (snapshots) leaves its kind out of `owned_kinds`.
pub fn compare(
    desired: Vec<DesiredObject>,
    observed: &[ObservedObject],
    owned_kinds: &[ManagedKind],
) -> Outcome<()> {
    let observed_by_key: BTreeMap<&ObjectKey, &ObservedObject> =
        observed.iter().map(|o| (&o.key, o)).collect();
    let desired_keys: BTreeSet<ObjectKey> = desired.iter().map(|d| d.key.clone()).collect();
    let mut out = Outcome::default();
    for d in desired {
        let (reason, fields) = match observed_by_key.get(&d.key) {
            None => (DriftReason::Missing, vec![]),
            Some(o) => {
                let fields = differing_fields(o, &d.manifest);
                if fields.is_empty() {
                    continue;
                }
                (DriftReason::Modified, fields)
            }
        };
        out.drift.push(Drift {
            key: d.key.clone(),
            control: d.control,
            reason,
            fields,
        });
        out.writes.push(if reason == DriftReason::Missing {
            Write::Create(d)
        } else {
            Write::Repair(d)
        });
    }
    for o in observed {
        if owned_kinds.contains(&o.key.kind) && !desired_keys.contains(&o.key) {
            if let Some(control) = o.control {
                out.drift.push(Drift {
                    key: o.key.clone(),
                    control,
                    reason: DriftReason::Unexpected,
                    fields: vec![],
                });
            }
            out.writes.push(Write::Delete(o.clone()));
        }
    }
    out
}

/// The fields in which an observed object departs from a desired manifest, empty when it
/// matches. Metadata may carry more (other managers' labels, the server's uid and timestamps);
/// every other field Rampart sets must be equal, because a selector that gained a label or a
/// list that gained an entry is exactly the drift we look for.
pub fn differing_fields(observed: &ObservedObject, desired: &Value) -> Vec<String> {
    let Some(want) = desired.as_object() else {
        return vec!["manifest".into()];
    };
    let meta = want.get("metadata");
    let contained = |wanted: Option<&Value>, actual: &BTreeMap<String, String>| match wanted {
        Some(Value::Object(w)) => w
            .iter()
            .all(|(k, v)| actual.get(k).map(String::as_str) == v.as_str()),
        Some(other) => is_empty_value(other),
        None => true,
    };
    let mut out = Vec::new();
    if !contained(meta.and_then(|m| m.get("labels")), &observed.labels) {
        out.push("metadata.labels".to_string());
    }
    if !contained(
        meta.and_then(|m| m.get("annotations")),
        &observed.annotations,
    ) {
        out.push("metadata.annotations".to_string());
    }
    match &observed.fingerprint {
        Some(have) => out.extend(have.differing(&Fingerprint::of(want))),
        None => out.push("spec".to_string()),
    }
    out
}

/// A digest per field of an object (SHA-256, cut to 64 bits) for every field other than
/// `apiVersion`, `kind`, `metadata` and `status`, one level deep (`spec.podSelector`), with
/// nulls and empty lists or maps dropped, as the API server drops them. The caches keep this
/// rather than the object's spec, which at ten thousand objects is most of their size, and it
/// still says which field drifted.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint(Vec<(String, u64)>);

impl Fingerprint {
    pub fn of(object: &serde_json::Map<String, Value>) -> Self {
        let mut fields = Vec::new();
        for (k, v) in object {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                continue;
            }
            match normalized(v) {
                Value::Object(inner) => {
                    for (ik, iv) in inner {
                        fields.push((format!("{k}.{ik}"), digest(&iv)));
                    }
                }
                other if is_empty_value(&other) => {}
                other => fields.push((k.clone(), digest(&other))),
            }
        }
        // serde_json's maps are ordered by key, so the list is sorted already.
        fields.sort();
        Fingerprint(fields)
    }

    /// The fields whose digests differ or that only one side has.
    pub fn differing(&self, other: &Fingerprint) -> Vec<String> {
        let a: BTreeMap<&str, u64> = self.0.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let b: BTreeMap<&str, u64> = other.0.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        a.keys()
            .chain(b.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| k.to_string())
            .collect()
    }
}

fn digest(v: &Value) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(v.to_string());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
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
            fingerprint: object.as_object().map(Fingerprint::of),
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
            compare(vec![d], &[o], &[ManagedKind::NetworkPolicy]),
            Outcome::default()
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
            let p = compare(d, &o, &[ManagedKind::NetworkPolicy]);
            let got: Vec<DriftReason> = p.drift.iter().map(|d| d.reason).collect();
            assert_eq!(got, want, "{name}");
            assert_eq!(p.writes.len(), want.len(), "{name}");
        }
    }

    #[test]
    fn kinds_not_owned_wholly_are_never_deleted_by_plan() {
        let mut o = observed("snap", json!({}));
        o.key.kind = ManagedKind::VolumeSnapshot;
        assert!(compare(vec![], &[o], &[ManagedKind::NetworkPolicy])
            .writes
            .is_empty());
    }

    #[test]
    fn drift_names_the_fields_that_changed() {
        let spec = json!({"podSelector": {}, "policyTypes": ["Ingress"]});
        let mut o = observed(
            "p",
            json!({"podSelector": {"matchLabels": {"x": "y"}}, "policyTypes": ["Ingress"]}),
        );
        o.labels.remove("a");
        let out = compare(
            vec![desired("p", spec)],
            &[o],
            &[ManagedKind::NetworkPolicy],
        );
        assert_eq!(
            out.drift[0].fields,
            vec![
                "metadata.labels".to_string(),
                "spec.podSelector".to_string()
            ]
        );
        assert!(matches!(out.writes[0], Write::Repair(_)));
    }

    #[test]
    fn a_missing_object_is_created_and_an_unexpected_one_deleted() {
        let spec = json!({"podSelector": {}});
        let out = compare(
            vec![desired("new", spec.clone())],
            &[observed("old", spec)],
            &[ManagedKind::NetworkPolicy],
        );
        let verbs: Vec<WriteVerb> = out.writes.iter().map(Write::verb).collect();
        assert_eq!(verbs, vec![WriteVerb::Create, WriteVerb::Delete]);
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
