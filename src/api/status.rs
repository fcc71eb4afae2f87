//! The `HardeningProfile` status: what Rampart observed and did. Pure types, no API calls.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// What Rampart observed at its last reconcile of the profile.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HardeningProfileStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, one per enabled control (NetworkPoliciesReady, DisruptionBudgetsReady,
    /// SecretsRotated, BackupsHealthy), Drifted, and InvalidSpec, Conflict or DrainBlocked when
    /// they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Counts over the selected namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,

    /// Objects that depart from the profile, at most `DRIFT_LIST_LIMIT` of them; the total is
    /// in `summary.driftedObjects`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftEntry>,

    /// Workloads left without a Rampart budget because a user's PDB already covers their pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covered_by_user_budgets: Vec<ObjectRefStatus>,

    /// Budgets in scope (Rampart's or a user's) that allow no disruption while their pods are
    /// healthy, so a node drain would hang.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drain_blocking_budgets: Vec<ObjectRefStatus>,

    /// Exceptions in the spec and whether each still applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<ExceptionStatus>,

    /// Namespaces this profile does not act in because an older profile holds the control.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ConflictEntry>,

    /// Progress of the current secret rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,

    /// State of the snapshot schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<BackupStatus>,
}

/// A condition, after the Kubernetes API conventions.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition type, such as Ready.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable explanation.
    #[serde(default)]
    pub message: String,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
}

/// Counts over the selected namespaces.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Namespaces the profile selects (before conflicts).
    pub namespaces: i64,
    /// Selected namespaces with no drift.
    pub compliant: i64,
    /// Selected namespaces with drift.
    pub drifted_namespaces: i64,
    /// Objects that depart from the profile, in all namespaces.
    pub drifted_objects: i64,
    /// Objects Rampart manages for this profile.
    pub managed_objects: i64,
    /// Drifted objects repaired by the last reconcile (Enforce mode).
    #[serde(default)]
    pub repaired_objects: i64,
}

/// One object that departs from the profile.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DriftEntry {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// Missing, Modified, Unexpected or NameTaken.
    pub reason: String,
    /// When this drift was first seen (RFC 3339).
    pub since: String,
}

/// A reference to a namespaced object.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRefStatus {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// Why it is listed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// An exception and whether it still applies.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionStatus {
    pub namespace: String,
    pub control: String,
    pub reason: String,
    /// Active, or Expired (the control applies again).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A namespace and control held by another, older profile.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ConflictEntry {
    pub namespace: String,
    pub control: String,
    /// The profile that holds it.
    pub held_by: String,
}

/// Progress of a secret rotation.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// The rotationId this progress belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rotation_id: Option<String>,
    /// Pending, Rotating, Restarting, Complete or Stalled.
    pub phase: String,
    pub secrets_selected: i64,
    pub secrets_rotated: i64,
    /// Selected Secrets that had never carried a rotation id and were adopted at this one:
    /// stamped with the id, their values left as they were and their consumers not restarted.
    #[serde(default)]
    pub secrets_adopted: i64,
    pub workloads_total: i64,
    pub workloads_restarted: i64,
    /// Workloads of the batch being rolled out (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_progress: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

/// State of the snapshot schedule.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,
    pub pvcs: i64,
    pub ready_snapshots: i64,
    pub failed_snapshots: i64,
    pub missed_slots: i64,
    /// The newest ready snapshot of each PVC (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_successful: Vec<ObjectRefStatus>,
    /// Failed snapshots and missed slots (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ObjectRefStatus>,
}
