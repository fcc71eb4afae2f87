//! The `HardeningProfile` status: what Rampart observed and did. Pure types, no API calls.

use chrono::{DateTime, Utc};
use kube::KubeSchema;
use schemars::JsonSchema;
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

    /// Objects that depart from the profile, at most 50 of them; the total is in
    /// `summary.driftedObjects`.
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

    /// Restore verification's rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationRounds>,
}

/// A condition, after the Kubernetes API conventions.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition type, such as Ready.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable explanation.
    #[serde(default)]
    pub message: String,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed. Kept while only the reason or message change.
    pub last_transition_time: DateTime<Utc>,
}

/// A condition's status, after the Kubernetes API conventions.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
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
    /// Objects repaired (Enforce mode) since the spec last changed: made again after they were
    /// deleted, re-applied after an edit, or deleted when no longer desired. A running total
    /// rather than the last pass's count, so a pass that repairs nothing writes nothing.
    #[serde(default)]
    pub repaired_objects: i64,
    /// Objects created for the first time (Enforce mode) since the spec last changed: desired
    /// objects the operator never saw exist, such as on the first apply. A running total, like
    /// repairedObjects.
    #[serde(default)]
    pub created_objects: i64,
}

/// One object that departs from the profile.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DriftEntry {
    /// Namespace of the drifted object.
    pub namespace: String,
    /// Kind of the drifted object, such as NetworkPolicy or PodDisruptionBudget.
    pub kind: String,
    /// Name of the drifted object.
    pub name: String,
    /// Missing, Modified, Unexpected or NameTaken.
    pub reason: DriftReason,
    /// For Modified: the fields that differ from the profile, such as `spec.podSelector` or
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// When this drift was first seen.
    pub since: DateTime<Utc>,
}

/// Why an object departs from the profile.
#[derive(
    JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
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

/// A reference to a namespaced object.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRefStatus {
    /// Namespace of the object.
    pub namespace: String,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// Why it is listed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// An exception and whether it still applies.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionStatus {
    /// The namespace the exception exempts.
    pub namespace: String,
    /// The control it exempts the namespace from.
    pub control: String,
    /// The reason given in the spec.
    pub reason: String,
    /// Active, or Expired (the control applies again).
    pub state: ExceptionState,
    /// When the exception stops applying; absent when it never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
}

/// Whether an exception still applies.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionState {
    Active,
    Expired,
}

impl ExceptionState {
    pub const ALL: [ExceptionState; 2] = [ExceptionState::Active, ExceptionState::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionState::Active => "Active",
            ExceptionState::Expired => "Expired",
        }
    }
}

/// A namespace and control held by another, older profile.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ConflictEntry {
    /// The namespace both profiles select.
    pub namespace: String,
    /// The control held by the other profile.
    pub control: String,
    /// The profile that holds it.
    pub held_by: String,
}

/// Progress of a secret rotation.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// The rotationId this progress belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rotation_id: Option<String>,
    /// Pending, Rotating, Restarting, Complete or Stalled.
    pub phase: RotationPhase,
    /// Secrets the selector matches in the selected namespaces.
    pub secrets_selected: i64,
    /// Selected Secrets given new values for this rotation id.
    pub secrets_rotated: i64,
    /// Selected Secrets that had never carried a rotation id and were adopted at this one:
    /// stamped with the id, their values left as they were and their consumers not restarted.
    #[serde(default)]
    pub secrets_adopted: i64,
    /// Workloads that use a rotated Secret and must be restarted.
    pub workloads_total: i64,
    /// Workloads restarted for this rotation id so far.
    pub workloads_restarted: i64,
    /// Workloads of the batch being rolled out (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_progress: Vec<String>,
    /// What the rotation waits on, such as the rollout that overran its timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the rotation to this id started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When every selected Secret was rotated and every consumer restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// When every selected Secret first held its value for this rotation id: a workload created
    /// after it started with the new values and is not restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_rotated_at: Option<DateTime<Utc>>,
    /// The rotation ids this profile has applied, oldest first (at most 20). An id on this list
    /// never rotates again: setting `rotationId` back to one (a GitOps revert) is reported in
    /// `revertedRotationId` and rotates nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub used_rotation_ids: Vec<String>,
    /// A new `rotationId` that waits for the rotation under way (`observedRotationId`) to
    /// complete: one rotation at a time, so `<key>.previous` always holds the values the
    /// consumers not yet restarted were started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_rotation_id: Option<String>,
    /// The spec's `rotationId` when it is one this profile applied before: nothing rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_rotation_id: Option<String>,
    /// Consumers whose rollout overran `rolloutTimeoutSeconds`. Each holds back only the
    /// consumers not yet restarted in its own namespace; the rest of the rotation proceeds
    /// (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub stalled_consumers: Vec<RotationItem>,
    /// Selected Secrets the API server refused to write (immutable, or refused by an admission
    /// webhook or the role): skipped for this rotation id, their consumers not restarted
    /// (at most 20). A new rotation id tries them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub unwritable_secrets: Vec<RotationItem>,
    /// Selected Secrets controlled by another controller (an ExternalSecret, a SealedSecret):
    /// neither rotated nor stamped, since their owner would write its values back (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub foreign_secrets: Vec<RotationItem>,
    /// Consumers of a rotated Secret that Rampart does not restart (a StatefulSet or DaemonSet
    /// with the `OnDelete` update strategy), with what to do (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub skipped_consumers: Vec<RotationItem>,
    /// Rotated Secrets whose `beforeRestart` hook has not finished; their consumers wait.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hooks_pending: i64,
    /// Rotated Secrets whose `beforeRestart` hook completed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hooks_succeeded: i64,
    /// Secrets whose `beforeRestart` hook failed (their previous values were put back and their
    /// consumers not restarted) or whose hook Job went away unseen, naming the Job and why
    /// (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub hook_failures: Vec<RotationItem>,
    /// The rotations this profile carried out, newest first (at most 10): the evidence of what
    /// rotated when, and what was restarted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub history: Vec<RotationRecord>,
}

/// One rotation, as the history keeps it.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RotationRecord {
    pub rotation_id: String,
    /// Where it stands (Complete once done).
    pub phase: RotationPhase,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Secrets given new values.
    pub secrets_rotated: i64,
    /// Secrets taken at this id with the values they had.
    pub secrets_adopted: i64,
    /// Workloads restarted.
    pub workloads_restarted: i64,
    /// `beforeRestart` hooks that completed.
    #[serde(default)]
    pub hooks_succeeded: i64,
    /// `beforeRestart` hooks that failed or went away.
    #[serde(default)]
    pub hooks_failed: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// One object the rotation left aside, and why.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RotationItem {
    pub namespace: String,
    /// `Secret`, or the consumer's kind.
    pub kind: String,
    pub name: String,
    /// Why it was left aside and what to do.
    pub reason: String,
}

/// State of the snapshot schedule.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The newest schedule slot taken or recorded as missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<DateTime<Utc>>,
    /// The next schedule slot, when the next reconcile is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<DateTime<Utc>>,
    /// Selected PersistentVolumeClaims.
    pub pvcs: i64,
    /// Rampart's snapshots of this profile that are ready to use.
    pub ready_snapshots: i64,
    /// Rampart's snapshots of this profile that report an error.
    pub failed_snapshots: i64,
    /// Schedule slots neither taken nor caught up within the deadline.
    pub missed_slots: i64,
    /// Snapshots of PVCs that are gone or no longer selected: often the only copy of deleted
    /// data, so kept (never aged out below `maxCount`) and never held against the health.
    #[serde(default)]
    pub orphaned_snapshots: i64,
    /// The PVCs those snapshots are of, with their newest snapshot (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphaned: Vec<ObjectRefStatus>,
    /// The newest ready snapshot of each PVC (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_successful: Vec<ObjectRefStatus>,
    /// Failed snapshots and missed slots (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ObjectRefStatus>,
    /// The last restore verification of each selected PVC (bounded; `backups.verify`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_verified: Vec<VerificationStatus>,
}

/// Restore verification's record of its rounds (`backups.verify`): complete at any number of
/// PVCs, unlike `backups.lastVerified`, so each PVC is verified once per slot.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRounds {
    /// The current slot's round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<VerificationRound>,
    /// The round before it, as counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<VerificationRound>,
    /// The uid of the scratch namespace Rampart created (`rampart-verify-<profile>`), recorded
    /// from the API server's answer to its create. Only Rampart writes the status, so a
    /// namespace of that name with another uid (made in advance, labels and owner reference
    /// copied) is not Rampart's: nothing is restored in it and it is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_namespace_uid: Option<String>,
}

/// One verification slot's results. PVCs are recorded as short digests (the first 12 hex
/// digits of the SHA-256 of `namespace/name`) so the record stays small and is never cut.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerificationRound {
    /// The verification schedule slot.
    pub slot: DateTime<Utc>,
    /// Selected PVCs when the round was last recorded.
    pub pvcs: i64,
    /// PVCs whose verification in this slot succeeded.
    pub succeeded: i64,
    /// PVCs whose verification in this slot failed.
    pub failed: i64,
    /// Digests of the PVCs that succeeded (sorted; dropped once the round is the previous one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub succeeded_pvcs: Vec<String>,
    /// Digests of the PVCs that failed (sorted; dropped once the round is the previous one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_pvcs: Vec<String>,
}

/// The outcome of one restore verification.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerificationResult {
    /// The snapshot restored into a scratch PVC that bound.
    Succeeded,
    /// The restore failed or did not finish within the timeout; the message says why.
    Failed,
}

/// One PVC's last restore verification.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    /// Namespace of the verified PVC.
    pub namespace: String,
    /// The verified PVC.
    pub pvc: String,
    /// The VolumeSnapshot restored (empty when there was none to restore).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot: String,
    /// The verification schedule slot this result is for.
    pub slot: DateTime<Utc>,
    /// When the result was recorded.
    pub time: DateTime<Utc>,
    pub result: VerificationResult,
    /// What happened, naming the PVC.
    pub message: String,
}

/// Where a rotation stands.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationPhase {
    /// Audit mode: what would happen, not done.
    Pending,
    /// Secrets are being given new values.
    Rotating,
    /// Consumers are being restarted, batch by batch.
    Restarting,
    /// The `beforeRestart` hook Jobs of rotated Secrets are running; their consumers wait.
    RunningHooks,
    Complete,
    /// A rollout overran its timeout; the rotation waits.
    Stalled,
}

impl RotationPhase {
    pub const ALL: [RotationPhase; 6] = [
        RotationPhase::Pending,
        RotationPhase::Rotating,
        RotationPhase::RunningHooks,
        RotationPhase::Restarting,
        RotationPhase::Complete,
        RotationPhase::Stalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RotationPhase::Pending => "Pending",
            RotationPhase::Rotating => "Rotating",
            RotationPhase::Restarting => "Restarting",
            RotationPhase::RunningHooks => "RunningHooks",
            RotationPhase::Complete => "Complete",
            RotationPhase::Stalled => "Stalled",
        }
    }
}

/// Status words print as they are written in the status.
macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_str!(ConditionStatus, DriftReason, ExceptionState, RotationPhase);
