//! The profile's status, computed from one pass's findings. Pure: the previous status and
//! `now` are arguments, and unchanged findings give an identical status, so the controller
//! writes only when something changed. Each control has its own condition builder; `Ready`
//! sums them up.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::api::conditions::{self, Computed};
use crate::api::validate::InvalidField;
use crate::api::{
    BackupStatus, ControlName, DriftEntry, HardeningProfileSpec, HardeningProfileStatus, Mode,
    RotationItem, RotationPhase, RotationRecord, RotationStatus, Summary, VerificationRounds,
    DRIFT_LIST_LIMIT, STATUS_LIST_LIMIT,
};
use crate::apply::{Applied, Effect};
use crate::controls::backups::BackupFindings;
use crate::controls::rotation::{ConsumerRef, RotationPlan, UnwritableSecret};
use crate::controls::{Drift, DriftReason, NamespaceFindings, Target, WriteVerb};
use crate::selection::Selection;

/// What happened to one drifted object in this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriftOutcome {
    /// Enforce mode made it for the first time: it was missing and this process never saw
    /// it exist (a first apply, a namespace newly selected, a new workload). Not a repair: a
    /// tamper alert on repairs must not fire on every install.
    Created,
    /// Enforce mode fixed it: made again after it was deleted, re-applied after an edit, or
    /// deleted when no longer desired.
    Repaired,
    /// Already as the profile wants when written: an earlier pass's write the cache did not
    /// show yet (a create that found our object, a delete that found it gone). Neither a
    /// creation nor a repair, so nothing is counted twice.
    Settled,
    /// Audit mode, or a name held by someone else: reported only.
    Reported,
    /// The repair was attempted and failed.
    Failed,
}

/// Everything one pass found, for the status.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    pub invalid: Vec<InvalidField>,
    pub selection: Selection,
    pub drift: Vec<(Drift, DriftOutcome)>,
    /// Network policies' and budgets' findings over every namespace.
    pub namespaces: NamespaceFindings,
    pub rotation: Option<RotationPlan>,
    pub backups: Option<BackupFindings>,
    /// Restore verification, when `backups.verify` is set.
    pub verify: Option<crate::controls::verify::VerifyFindings>,
    /// The uid of the scratch namespace Rampart created, while that namespace exists (kept
    /// after `verify` is removed until the namespace is gone, so its cleanup knows it).
    pub scratch_namespace_uid: Option<String>,
}

impl DriftOutcome {
    /// Whether the object is as the profile wants after this pass.
    pub fn resolved(self) -> bool {
        matches!(
            self,
            DriftOutcome::Created | DriftOutcome::Repaired | DriftOutcome::Settled
        )
    }
}

impl Findings {
    /// Drift still standing after this pass.
    pub fn unresolved(&self) -> impl Iterator<Item = &Drift> {
        self.drift
            .iter()
            .filter(|(_, o)| !o.resolved())
            .map(|(d, _)| d)
    }

    /// How many objects this pass created and repaired, per control.
    pub fn resolved_counts(&self, outcome: DriftOutcome) -> BTreeMap<ControlName, usize> {
        let mut out = BTreeMap::new();
        for (d, o) in &self.drift {
            if *o == outcome {
                *out.entry(d.control).or_insert(0) += 1;
            }
        }
        out
    }
}

/// What became of each drift, from the write that resolves it. `seen_before` says whether
/// this process ever saw the object exist: a missing object it never saw is made for the
/// first time (Created), one it saw was deleted since (Repaired).
pub fn drift_outcomes(
    drift: Vec<Drift>,
    applied: &[Applied],
    seen_before: impl Fn(&crate::controls::ObjectKey) -> bool,
) -> Vec<(Drift, DriftOutcome)> {
    let by_target: BTreeMap<&Target, &Applied> = applied.iter().map(|a| (&a.target, a)).collect();
    drift
        .into_iter()
        .map(
            |d| match by_target.get(&Target::from(&d.key)).map(|a| &a.effect) {
                Some(Ok(Effect::Done))
                    if d.reason == DriftReason::Missing && !seen_before(&d.key) =>
                {
                    (d, DriftOutcome::Created)
                }
                Some(Ok(Effect::Done)) => (d, DriftOutcome::Repaired),
                Some(Ok(Effect::Unchanged)) => (d, DriftOutcome::Settled),
                Some(Ok(Effect::NameTaken)) => (
                    Drift {
                        reason: DriftReason::NameTaken,
                        ..d
                    },
                    DriftOutcome::Reported,
                ),
                Some(Ok(Effect::Audited)) => (d, DriftOutcome::Reported),
                Some(Ok(Effect::Refused(_)) | Err(_)) | None => (d, DriftOutcome::Failed),
            },
        )
        .collect()
}

/// Most consumers named as in progress in the status.
const IN_PROGRESS_LIMIT: usize = 20;

/// A rotation status with nothing in it yet.
pub fn empty_rotation_status() -> RotationStatus {
    RotationStatus {
        observed_rotation_id: None,
        phase: RotationPhase::Pending,
        secrets_selected: 0,
        secrets_rotated: 0,
        secrets_adopted: 0,
        workloads_total: 0,
        workloads_restarted: 0,
        in_progress: vec![],
        message: None,
        started_at: None,
        completed_at: None,
        secrets_rotated_at: None,
        used_rotation_ids: vec![],
        queued_rotation_id: None,
        reverted_rotation_id: None,
        stalled_consumers: vec![],
        unwritable_secrets: vec![],
        foreign_secrets: vec![],
        skipped_consumers: vec![],
        hooks_pending: 0,
        hooks_succeeded: 0,
        hook_failures: vec![],
        history: vec![],
    }
}

/// Most rotations kept in `status.rotation.history`.
pub const ROTATION_HISTORY_LIMIT: usize = 10;

/// The history with this pass's record of the rotation to its id first: an earlier record of
/// the same id is replaced, the others kept, newest first. Audit mode rotates nothing and
/// records nothing.
fn rotation_history(
    previous: Option<&RotationStatus>,
    record: RotationRecord,
    audit: bool,
) -> Vec<RotationRecord> {
    let mut history: Vec<RotationRecord> = previous.map(|p| p.history.clone()).unwrap_or_default();
    if audit {
        return history;
    }
    history.retain(|r| r.rotation_id != record.rotation_id);
    history.insert(0, record);
    history.truncate(ROTATION_HISTORY_LIMIT);
    history
}

/// Most rotation ids kept in `usedRotationIds`. An id that falls off the list could rotate
/// again if set once more; twenty bumps back is further than a revert reaches.
pub const USED_ROTATION_IDS_LIMIT: usize = 20;

/// The rotation status for a plan, keeping the start time of the same rotation id. In Audit
/// mode nothing was written: a rotation with work left is Pending, adoption is not counted
/// and no id is recorded as used.
pub fn rotation_status(
    plan: &RotationPlan,
    mode: Mode,
    previous: Option<&RotationStatus>,
    now: DateTime<Utc>,
) -> RotationStatus {
    let id = plan.rotation_id.as_str();
    let audit = mode == Mode::Audit;
    let phase = match plan.phase {
        RotationPhase::Complete => RotationPhase::Complete,
        _ if audit => RotationPhase::Pending,
        p => p,
    };
    let same = previous.filter(|p| p.observed_rotation_id.as_deref() == Some(id));
    let started_at = same.and_then(|p| p.started_at).unwrap_or(now);
    let completed_at = (phase == RotationPhase::Complete)
        .then(|| same.and_then(|p| p.completed_at).unwrap_or(now));
    let secrets_rotated_at = (!audit && plan.rotate.is_empty())
        .then(|| same.and_then(|p| p.secrets_rotated_at).unwrap_or(now));
    let adopted_now = if audit { 0 } else { plan.adopt.len() };
    let message = stall_message(&plan.stalled)
        .or_else(|| {
            plan.queued.as_ref().map(|q| {
                format!("rotationId {q} is queued: it starts when the rotation to {id} completes")
            })
        })
        .or_else(|| {
            plan.reverted.as_ref().map(|r| {
                format!(
                    "rotationId {r} was applied before by this profile: a revert rotates nothing \
                     (the Secrets stay at {id}; set a new id to rotate)"
                )
            })
        });
    let record = RotationRecord {
        rotation_id: id.to_string(),
        phase,
        started_at,
        completed_at,
        secrets_rotated: plan.secrets_rotated as i64,
        secrets_adopted: (plan.secrets_adopted_before + adopted_now) as i64,
        workloads_restarted: plan.consumers_restarted as i64,
        hooks_succeeded: plan.hooks_succeeded as i64,
        hooks_failed: plan.hook_failures.len() as i64,
    };
    RotationStatus {
        history: rotation_history(previous, record, audit),
        hooks_pending: if audit { 0 } else { plan.hooks_pending as i64 },
        hooks_succeeded: plan.hooks_succeeded as i64,
        hook_failures: bounded(plan.hook_failures.iter().map(|u| RotationItem {
            namespace: u.namespace.clone(),
            kind: "Secret".into(),
            name: u.name.clone(),
            reason: u.reason.clone(),
        })),
        observed_rotation_id: Some(id.to_string()),
        phase,
        secrets_selected: plan.secrets_selected as i64,
        secrets_rotated: plan.secrets_rotated as i64,
        secrets_adopted: (plan.secrets_adopted_before + adopted_now) as i64,
        workloads_total: plan.consumers_total as i64,
        workloads_restarted: plan.consumers_restarted as i64,
        in_progress: if audit {
            vec![]
        } else {
            plan.in_progress
                .iter()
                .take(IN_PROGRESS_LIMIT)
                .map(|c| c.to_string())
                .collect()
        },
        message,
        started_at: Some(started_at),
        completed_at,
        secrets_rotated_at,
        used_rotation_ids: used_rotation_ids(previous, id, audit),
        queued_rotation_id: plan.queued.clone(),
        reverted_rotation_id: plan.reverted.clone(),
        stalled_consumers: if audit {
            vec![]
        } else {
            bounded(plan.stalled.iter().map(|c| {
                consumer_item(
                    c,
                    "its rollout did not complete in time; consumers not yet restarted in its \
                     namespace wait for it, the others proceed",
                )
            }))
        },
        unwritable_secrets: bounded(plan.unwritable.iter().map(|u| RotationItem {
            namespace: u.namespace.clone(),
            kind: "Secret".into(),
            name: u.name.clone(),
            reason: u.reason.clone(),
        })),
        foreign_secrets: bounded(plan.foreign.iter().map(|s| RotationItem {
            namespace: s.namespace.clone(),
            kind: "Secret".into(),
            name: s.name.clone(),
            reason: format!(
                "controlled by {}, which would write its values back: rotate it at its source, \
                 or remove the rotation label",
                s.controller.as_deref().unwrap_or_default()
            ),
        })),
        skipped_consumers: bounded(plan.skipped.iter().map(|c| {
            consumer_item(
                c,
                "its update strategy is OnDelete, so Rampart does not restart it: delete its \
                 pods to start them with the new values",
            )
        })),
    }
}

/// The Secrets whose rotation the API server refused in `applied`, with why.
pub fn refused_secrets(applied: &[Applied]) -> Vec<UnwritableSecret> {
    refused(applied, WriteVerb::Rotate)
}

/// The Secrets whose hook Job the API server refused in `applied` (their previous values were
/// put back by the same write), with why.
pub fn refused_hooks(applied: &[Applied]) -> Vec<UnwritableSecret> {
    refused(applied, WriteVerb::StartHook)
}

/// The Secrets `verb`'s writes in `applied` found refused, with why.
fn refused(applied: &[Applied], verb: WriteVerb) -> Vec<UnwritableSecret> {
    applied
        .iter()
        .filter(|a| a.verb == verb)
        .filter_map(|a| match a.effect {
            Ok(Effect::Refused(why)) => Some(UnwritableSecret {
                namespace: a.target.namespace.clone(),
                name: a.target.name.clone(),
                reason: why.to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// Most entries in each list of objects the rotation left aside.
pub const ROTATION_ITEMS_LIMIT: usize = 20;

fn bounded(items: impl Iterator<Item = RotationItem>) -> Vec<RotationItem> {
    items.take(ROTATION_ITEMS_LIMIT).collect()
}

fn consumer_item(c: &ConsumerRef, reason: &str) -> RotationItem {
    RotationItem {
        namespace: c.namespace.clone(),
        kind: c.kind.as_str().into(),
        name: c.name.clone(),
        reason: reason.into(),
    }
}

/// What the rotation waits on when rollouts overran their timeout.
fn stall_message(stalled: &[ConsumerRef]) -> Option<String> {
    let first = stalled.first()?;
    let more = match stalled.len() - 1 {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Some(format!(
        "the rollout of {first}{more} did not complete in time; consumers in the same \
         namespace wait, the others proceed"
    ))
}

/// The ids this profile applied, oldest first, with `id` once it is applied (Enforce). A status
/// written before the list existed names its applied id as `observedRotationId` only.
fn used_rotation_ids(previous: Option<&RotationStatus>, id: &str, audit: bool) -> Vec<String> {
    let mut used: Vec<String> = previous
        .map(|p| p.used_rotation_ids.clone())
        .unwrap_or_default();
    // Seeded once, on the first Enforce pass after an upgrade; Audit applies nothing.
    let seed = previous
        .filter(|p| p.phase != RotationPhase::Pending)
        .and_then(|p| p.observed_rotation_id.clone());
    if !audit && used.is_empty() {
        used.extend(seed);
    }
    if !audit && !used.iter().any(|u| u == id) {
        used.push(id.to_string());
    }
    let excess = used.len().saturating_sub(USED_ROTATION_IDS_LIMIT);
    used.drain(..excess);
    used
}

/// `NetworkPoliciesReady` or `DisruptionBudgetsReady`.
fn control_condition(
    type_: &'static str,
    control: ControlName,
    findings: &Findings,
    audit: bool,
) -> Computed {
    let n = findings
        .unresolved()
        .filter(|d| d.control == control)
        .count();
    if n == 0 {
        let managed = findings
            .namespaces
            .managed
            .get(&control)
            .copied()
            .unwrap_or(0);
        Computed::new(
            type_,
            true,
            "Converged",
            format!("{managed} objects match the profile"),
        )
    } else if audit {
        Computed::new(
            type_,
            false,
            "DriftReported",
            format!("{n} objects depart from the profile (Audit mode: not repaired)"),
        )
    } else {
        Computed::new(
            type_,
            false,
            "RepairIncomplete",
            format!("{n} objects could not be brought to the profile"),
        )
    }
}

/// `SecretsRotated`.
fn rotation_condition(status: &RotationStatus) -> Computed {
    // A Secret whose hook failed did not rotate: its service still holds the old credential
    // and its consumers were not restarted. Nothing more happens on its own (a new rotationId
    // tries again), so the condition says so until then, whatever the others did.
    if let Some(first) = status.hook_failures.first() {
        return Computed::new(
            conditions::SECRETS_ROTATED,
            false,
            "HookFailed",
            format!(
                "rotation {}: the beforeRestart hook of {} Secret(s) did not complete, first {}/{}: {}",
                status.observed_rotation_id.as_deref().unwrap_or_default(),
                status.hook_failures.len(),
                first.namespace,
                first.name,
                first.reason
            ),
        );
    }
    let reason = match status.phase {
        RotationPhase::Complete if status.reverted_rotation_id.is_some() => "RevertIgnored",
        RotationPhase::Complete => "Complete",
        RotationPhase::Pending => "RotationPending",
        RotationPhase::Rotating => "Rotating",
        RotationPhase::Restarting => "Restarting",
        RotationPhase::RunningHooks => "RunningHooks",
        RotationPhase::Stalled => "RotationStalled",
    };
    let message = status.message.clone().unwrap_or_else(|| {
        // Adopted Secrets are at the id as much as rotated ones (their values were kept on
        // purpose): "0/1 rotated" for the one Secret, adopted, would read as work left.
        let secrets = if status.secrets_adopted > 0 {
            format!(
                "{}/{} Secrets at the id ({} adopted with their values kept)",
                status.secrets_rotated + status.secrets_adopted,
                status.secrets_selected,
                status.secrets_adopted
            )
        } else {
            format!(
                "{}/{} Secrets rotated",
                status.secrets_rotated, status.secrets_selected
            )
        };
        format!(
            "rotation {}: {secrets}, {}/{} workloads restarted",
            status.observed_rotation_id.as_deref().unwrap_or_default(),
            status.workloads_restarted,
            status.workloads_total
        )
    });
    Computed::new(
        conditions::SECRETS_ROTATED,
        status.phase == RotationPhase::Complete,
        reason,
        message,
    )
}

/// `BackupsVerified`: True when every selected PVC's verification in the current slot
/// succeeded, or, while the current slot is under way without a failure, when the whole
/// previous round succeeded. Computed from the rounds, which are complete at any number of
/// PVCs; the bounded `lastVerified` list only names the first failure.
fn verified_condition(v: &crate::controls::verify::VerifyFindings, audit: bool) -> Computed {
    use crate::api::VerificationResult;
    let type_ = conditions::BACKUPS_VERIFIED;
    if audit {
        return Computed::new(
            type_,
            false,
            "AuditMode",
            "restore verification is not run in Audit mode",
        );
    }
    if let Some(ns) = &v.namespace_taken {
        return Computed::new(
            type_,
            false,
            "ScratchNamespaceTaken",
            format!(
                "namespace {ns} exists and Rampart did not create it; nothing is restored there \
                 (delete it and Rampart makes its own)"
            ),
        );
    }
    let first_failure = v
        .entries
        .iter()
        .find(|e| e.result == VerificationResult::Failed)
        .map(|e| format!("; first {}/{}: {}", e.namespace, e.pvc, e.message))
        .unwrap_or_default();
    if v.round_failed > 0 {
        return Computed::new(
            type_,
            false,
            "VerificationFailed",
            format!(
                "{} of {} PVCs failed restore verification{first_failure}",
                v.round_failed, v.pvcs
            ),
        );
    }
    if v.pvcs > 0 && v.round_verified >= v.pvcs {
        return Computed::new(
            type_,
            true,
            "Verified",
            format!(
                "the last restore verification of each of {} PVCs succeeded",
                v.pvcs
            ),
        );
    }
    match &v.previous_round {
        Some(p) if p.failed > 0 => Computed::new(
            type_,
            false,
            "VerificationFailed",
            format!(
                "{} of {} PVCs failed restore verification in the previous round{first_failure}",
                p.failed, p.pvcs
            ),
        ),
        Some(p) if p.pvcs > 0 && p.succeeded >= p.pvcs => Computed::new(
            type_,
            true,
            "Verified",
            format!(
                "the previous round verified each of its {} PVCs; this round: {} of {} so far",
                p.pvcs, v.round_verified, v.pvcs
            ),
        ),
        _ => Computed::new(
            type_,
            false,
            "NotYetVerified",
            format!(
                "{} of {} PVCs have no restore verification yet ({} under way)",
                v.pvcs.saturating_sub(v.round_verified),
                v.pvcs,
                v.in_flight
            ),
        ),
    }
}

/// `BackupsHealthy`.
fn backups_condition(b: &BackupFindings, previous: Option<&BackupStatus>) -> Computed {
    let type_ = conditions::BACKUPS_HEALTHY;
    if b.api_missing {
        Computed::new(
            type_,
            false,
            "SnapshotAPIMissing",
            "the cluster does not serve snapshot.storage.k8s.io/v1",
        )
    } else if let Some(ahead) = b.clock_ahead {
        Computed::new(
            type_,
            false,
            "ClockAhead",
            format!(
                "this replica's clock is {}s ahead of the API server's: the schedule's slot is refused until they agree",
                ahead.num_seconds()
            ),
        )
    } else if let Some(first) = b.unhealthy.first() {
        Computed::new(
            type_,
            false,
            "BackupsUnhealthy",
            format!(
                "{} PVCs lack a recent good snapshot, e.g. {}/{}: {}",
                b.unhealthy.len(),
                first.namespace,
                first.name,
                first.message
            ),
        )
    } else if b.status.missed_slots > 0
        && previous.map(|p| p.missed_slots) != Some(b.status.missed_slots)
    {
        Computed::new(
            type_,
            false,
            "SlotMissed",
            format!("{} schedule slots were missed", b.status.missed_slots),
        )
    } else if b.status.pvcs > 0 && b.status.ready_snapshots == 0 {
        // Nothing failed, so Ready need not wait for the first slot; but "healthy" with no
        // snapshot to restore from would be a claim the counts do not back.
        let next = b
            .status
            .next_schedule_time
            .map(|t| format!(" (next slot {})", conditions::rfc3339(t)))
            .unwrap_or_default();
        Computed::new(
            type_,
            true,
            "AwaitingFirstSnapshot",
            format!(
                "{} PVCs selected, none with a ready snapshot yet: waiting for the first{next}",
                b.status.pvcs
            ),
        )
    } else {
        Computed::new(
            type_,
            true,
            "Healthy",
            if b.status.orphaned_snapshots > 0 {
                format!(
                    "{} PVCs, {} ready snapshots; {} snapshots of PVCs no longer selected kept",
                    b.status.pvcs, b.status.ready_snapshots, b.status.orphaned_snapshots
                )
            } else {
                format!(
                    "{} PVCs, {} ready snapshots",
                    b.status.pvcs, b.status.ready_snapshots
                )
            },
        )
    }
}

/// `Drifted`.
fn drift_condition(drifted: usize, audit: bool) -> Computed {
    if drifted == 0 {
        Computed::new(
            conditions::DRIFTED,
            false,
            "NoDrift",
            "every managed object matches the profile",
        )
    } else {
        Computed::new(
            conditions::DRIFTED,
            true,
            drift_reason(audit),
            format!("{drifted} objects depart from the profile"),
        )
    }
}

fn drift_reason(audit: bool) -> &'static str {
    if audit {
        "DriftReported"
    } else {
        "RepairIncomplete"
    }
}

/// `Conflict`.
fn conflict_condition(selection: &Selection) -> Computed {
    let conflicts = &selection.conflicts;
    if conflicts.is_empty() {
        return Computed::new(
            conditions::CONFLICT,
            false,
            "NoConflict",
            "no other profile holds a selected namespace",
        );
    }
    let holders: BTreeSet<&str> = conflicts.iter().map(|c| c.held_by.as_str()).collect();
    Computed::new(
        conditions::CONFLICT,
        true,
        "HeldByOlderProfile",
        format!(
            "{} namespace/control pairs are held by older profile(s) {}; this profile does not act there",
            conflicts.len(),
            holders.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

/// `DrainBlocked`, naming the first budget that blocks.
fn drain_condition(namespaces: &NamespaceFindings) -> Computed {
    match namespaces.drain_blocking.first() {
        None => Computed::new(
            conditions::DRAIN_BLOCKED,
            false,
            "DrainsAllowed",
            "every budget in scope allows a disruption",
        ),
        Some(first) => Computed::new(
            conditions::DRAIN_BLOCKED,
            true,
            "BudgetAllowsNoDisruption",
            format!(
                "{} budgets block node drains, e.g. {}/{} ({})",
                namespaces.drain_blocking.len(),
                first.namespace,
                first.name,
                first.message
            ),
        ),
    }
}

/// `Ready`: no drift left (in Enforce), no conflict, and every other control's condition true.
///
/// In Audit, drift does not make a profile unready: Audit never repairs, so drift there is the
/// report the profile was asked for, not work in progress. Ready then says the report is
/// complete and current (reason `DriftReported`); `Drifted` and `status.drift` carry the drift.
/// This is what lets GitOps tools read an Audit profile as healthy rather than as converging
/// forever (docs/gitops.md).
fn ready_condition(
    drifted: usize,
    audit: bool,
    selection: &Selection,
    not_ready: &[String],
) -> Computed {
    if drifted > 0 && !audit {
        Computed::new(
            conditions::READY,
            false,
            drift_reason(audit),
            format!("{drifted} objects depart from the profile"),
        )
    } else if !selection.conflicts.is_empty() {
        Computed::new(
            conditions::READY,
            false,
            "Conflict",
            "some selected namespaces are held by an older profile",
        )
    } else if !not_ready.is_empty() {
        Computed::new(
            conditions::READY,
            false,
            "ControlsPending",
            not_ready.join("; "),
        )
    } else if drifted > 0 {
        Computed::new(
            conditions::READY,
            true,
            drift_reason(audit),
            format!(
                "Audit: {drifted} objects depart from the profile, reported and not repaired (see status.drift); switch to Enforce to repair them"
            ),
        )
    } else {
        Computed::new(
            conditions::READY,
            true,
            "Converged",
            format!("{} namespaces hold the profile", selection.namespaces.len()),
        )
    }
}

/// `Reconciling` and `Stalled` from `Ready` and what stalls: a profile that is not Ready is
/// either still converging or waiting for a person, never both, so kstatus reads it as
/// InProgress or Failed.
fn progress_conditions(ready: &Computed, stalled: Option<(&str, String)>) -> [Computed; 2] {
    let stalled_condition = match &stalled {
        Some((reason, message)) => {
            Computed::new(conditions::STALLED, true, *reason, message.clone())
        }
        None => Computed::new(
            conditions::STALLED,
            false,
            "NotStalled",
            "nothing waits for a person",
        ),
    };
    let reconciling = if !ready.status && stalled.is_none() {
        Computed::new(
            conditions::RECONCILING,
            true,
            ready.reason.clone(),
            ready.message.clone(),
        )
    } else {
        Computed::new(
            conditions::RECONCILING,
            false,
            "Settled",
            "nothing left to converge",
        )
    };
    [reconciling, stalled_condition]
}

/// The status for an invalid spec: the fields named, and the last good picture kept (an
/// invalid edit acts on nothing, so nothing moved).
fn invalid_status(
    invalid: &[InvalidField],
    generation: Option<i64>,
    previous: &HardeningProfileStatus,
    now: DateTime<Utc>,
) -> HardeningProfileStatus {
    let message = invalid
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let ready = Computed::new(conditions::READY, false, "InvalidSpec", message.clone());
    let [reconciling, stalled] =
        progress_conditions(&ready, Some(("InvalidSpec", message.clone())));
    let conds = vec![
        ready,
        Computed::new(conditions::INVALID_SPEC, true, "InvalidSpec", message),
        reconciling,
        stalled,
    ];
    HardeningProfileStatus {
        observed_generation: generation,
        conditions: conditions::settle(&previous.conditions, conds, generation, now),
        ..previous.clone()
    }
}

/// The drift list, each entry keeping the time it was first seen.
fn drift_entries(
    findings: &Findings,
    previous: &HardeningProfileStatus,
    now: DateTime<Utc>,
) -> Vec<DriftEntry> {
    let since: BTreeMap<(&str, &str, &str), DateTime<Utc>> = previous
        .drift
        .iter()
        .map(|d| {
            (
                (d.namespace.as_str(), d.kind.as_str(), d.name.as_str()),
                d.since,
            )
        })
        .collect();
    let mut entries: Vec<DriftEntry> = findings
        .unresolved()
        .map(|d| DriftEntry {
            namespace: d.key.namespace.clone(),
            kind: d.key.kind.kind().to_string(),
            name: d.key.name.clone(),
            reason: d.reason,
            fields: d.fields.clone(),
            since: since
                .get(&(
                    d.key.namespace.as_str(),
                    d.key.kind.kind(),
                    d.key.name.as_str(),
                ))
                .copied()
                .unwrap_or(now),
        })
        .collect();
    entries.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    entries
}

/// The status for `findings`, keeping timestamps from `previous` where nothing flipped.
pub fn compute(
    spec: &HardeningProfileSpec,
    generation: Option<i64>,
    findings: &Findings,
    previous: Option<&HardeningProfileStatus>,
    now: DateTime<Utc>,
) -> HardeningProfileStatus {
    let empty = HardeningProfileStatus::default();
    let previous = previous.unwrap_or(&empty);
    if !findings.invalid.is_empty() {
        return invalid_status(&findings.invalid, generation, previous, now);
    }
    let audit = spec.mode == Mode::Audit;
    let mut drift = drift_entries(findings, previous, now);
    let drifted_total = drift.len();
    drift.truncate(DRIFT_LIST_LIMIT);

    let mut conds = Vec::new();
    for (control, type_) in [
        (
            ControlName::NetworkPolicies,
            conditions::NETWORK_POLICIES_READY,
        ),
        (
            ControlName::PodDisruptionBudgets,
            conditions::DISRUPTION_BUDGETS_READY,
        ),
    ] {
        if spec.enables(control) {
            conds.push(control_condition(type_, control, findings, audit));
        }
    }
    let rotation = match (&findings.rotation, &spec.secret_rotation) {
        (Some(plan), Some(_)) => Some(rotation_status(
            plan,
            spec.mode,
            previous.rotation.as_ref(),
            now,
        )),
        _ => None,
    };
    let mut not_ready: Vec<String> = Vec::new();
    if let Some(r) = &rotation {
        let c = rotation_condition(r);
        if !c.status {
            not_ready.push(format!("secret rotation is {}", r.phase.as_str()));
        }
        conds.push(c);
    }
    if let Some(b) = &findings.backups {
        let c = backups_condition(b, previous.backups.as_ref());
        if !c.status {
            not_ready.push(format!("backups: {}", c.reason));
        }
        conds.push(c);
    }
    if let Some(v) = &findings.verify {
        // Not part of Ready: a restore that fails is data to act on, not a control that has
        // not converged, and Ready must not wait for the first verification slot.
        conds.push(verified_condition(v, audit));
    }
    conds.push(drift_condition(drifted_total, audit));
    conds.push(Computed::new(
        conditions::INVALID_SPEC,
        false,
        "Valid",
        "the spec is valid",
    ));
    conds.push(conflict_condition(&findings.selection));
    if spec.enables(ControlName::PodDisruptionBudgets) {
        conds.push(drain_condition(&findings.namespaces));
    }
    let ready = ready_condition(drifted_total, audit, &findings.selection, &not_ready);
    // An object whose name Rampart's would take but that Rampart did not create: retries
    // cannot fix it (and Rampart never overwrites it), so it waits for a person.
    let name_held: Vec<&Drift> = findings
        .unresolved()
        .filter(|d| d.reason == DriftReason::NameTaken)
        .collect();
    let stalled = if !findings.selection.conflicts.is_empty() {
        Some(("Conflict", "some selected namespaces are held by an older profile; narrow a selector or delete the older profile".to_string()))
    } else if let Some(r) = rotation
        .as_ref()
        .filter(|r| r.phase == RotationPhase::Stalled)
    {
        Some(("RotationStalled", rotation_condition(r).message))
    } else {
        name_held.first().map(|d| {
            (
                "NameHeld",
                format!(
                    "{} objects cannot be made: their names are taken by objects Rampart did not create, e.g. {} {}/{}; rename or remove them",
                    name_held.len(),
                    d.key.kind.kind(),
                    d.key.namespace,
                    d.key.name
                ),
            )
        })
    };
    conds.extend(progress_conditions(&ready, stalled));
    conds.insert(0, ready);

    HardeningProfileStatus {
        observed_generation: generation,
        conditions: conditions::settle(&previous.conditions, conds, generation, now),
        summary: Some(summary(findings, drifted_total, generation, previous)),
        drift,
        covered_by_user_budgets: bounded_sorted(&findings.namespaces.covered_by_user),
        drain_blocking_budgets: bounded_sorted(&findings.namespaces.drain_blocking),
        exceptions: findings.selection.exceptions.clone(),
        conflicts: bounded_sorted(&findings.selection.conflicts),
        rotation,
        backups: findings.backups.as_ref().map(|b| b.status.clone()),
        verification: verification_status(findings),
    }
}

/// `status.verification`: the rounds while `verify` is set, and the scratch namespace's uid
/// while that namespace exists.
fn verification_status(findings: &Findings) -> Option<VerificationRounds> {
    let rounds = VerificationRounds {
        current: findings.verify.as_ref().and_then(|v| v.round.clone()),
        previous: findings
            .verify
            .as_ref()
            .and_then(|v| v.previous_round.clone()),
        scratch_namespace_uid: findings.scratch_namespace_uid.clone(),
    };
    (findings.verify.is_some() || rounds.scratch_namespace_uid.is_some()).then_some(rounds)
}

fn summary(
    findings: &Findings,
    drifted_total: usize,
    generation: Option<i64>,
    previous: &HardeningProfileStatus,
) -> Summary {
    let before = previous
        .summary
        .as_ref()
        .filter(|_| previous.observed_generation == generation);
    let repaired_before = before.map(|s| s.repaired_objects).unwrap_or(0);
    let created_before = before.map(|s| s.created_objects).unwrap_or(0);
    let count =
        |outcome: DriftOutcome| findings.drift.iter().filter(|(_, o)| *o == outcome).count() as i64;
    let drifted_namespaces: BTreeSet<&str> = findings
        .unresolved()
        .map(|d| d.key.namespace.as_str())
        .collect();
    let conflicted: BTreeSet<&str> = findings
        .selection
        .conflicts
        .iter()
        .map(|c| c.namespace.as_str())
        .collect();
    let compliant = findings
        .selection
        .namespaces
        .iter()
        .filter(|n| !drifted_namespaces.contains(n.as_str()) && !conflicted.contains(n.as_str()))
        .count();
    Summary {
        namespaces: findings.selection.namespaces.len() as i64,
        compliant: compliant as i64,
        drifted_namespaces: drifted_namespaces.len() as i64,
        drifted_objects: drifted_total as i64,
        managed_objects: findings.namespaces.managed.values().sum::<usize>() as i64,
        repaired_objects: repaired_before + count(DriftOutcome::Repaired),
        created_objects: created_before + count(DriftOutcome::Created),
    }
}

fn bounded_sorted<T: Clone + Ord>(items: &[T]) -> Vec<T> {
    let mut out = items.to_vec();
    out.sort();
    out.truncate(STATUS_LIST_LIMIT);
    out
}

/// Whether two statuses differ in anything but timestamps that `settle` keeps anyway.
pub fn changed(previous: Option<&HardeningProfileStatus>, next: &HardeningProfileStatus) -> bool {
    previous != Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConditionStatus, ObjectRefStatus};
    use crate::controls::{DriftReason, ManagedKind, ObjectKey};
    use chrono::TimeZone;

    fn spec(mode: Mode) -> HardeningProfileSpec {
        crate::api::fixtures::budgets_only(mode)
    }

    fn rotation_spec() -> crate::api::SecretRotationControl {
        crate::api::fixtures::rotation("r1", 1)
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("valid")
    }

    fn findings(outcome: Option<DriftOutcome>) -> Findings {
        let mut f = Findings::default();
        f.selection.namespaces = ["a", "b"].iter().map(|s| s.to_string()).collect();
        if let Some(o) = outcome {
            f.drift.push((
                Drift {
                    key: ObjectKey {
                        kind: ManagedKind::PodDisruptionBudget,
                        namespace: "a".into(),
                        name: "rampart-deploy-x".into(),
                    },
                    control: ControlName::PodDisruptionBudgets,
                    reason: DriftReason::Missing,
                    fields: vec![],
                },
                o,
            ));
        }
        f
    }

    fn cond<'a>(s: &'a HardeningProfileStatus, t: &str) -> &'a crate::api::Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition present")
    }

    #[test]
    fn converged_profile_is_ready_and_recomputing_changes_nothing() {
        let s1 = compute(&spec(Mode::Enforce), Some(1), &findings(None), None, at(0));
        assert_eq!(cond(&s1, "Ready").status, ConditionStatus::True);
        assert_eq!(s1.summary.as_ref().map(|s| s.compliant), Some(2));
        let s2 = compute(
            &spec(Mode::Enforce),
            Some(1),
            &findings(None),
            Some(&s1),
            at(100),
        );
        assert!(!changed(Some(&s1), &s2), "steady state must not write");
    }

    #[test]
    fn audit_drift_is_listed_and_ready_as_a_finished_report() {
        let s = compute(
            &spec(Mode::Audit),
            Some(1),
            &findings(Some(DriftOutcome::Reported)),
            None,
            at(0),
        );
        // Audit never repairs: the drift is the report it was asked for, not work in
        // progress, so kstatus must read Current (Ready True, Reconciling and Stalled False).
        let ready = cond(&s, "Ready");
        assert_eq!(ready.status, ConditionStatus::True);
        assert_eq!(ready.reason, "DriftReported");
        assert!(
            ready.message.contains("Audit: 1 objects"),
            "{}",
            ready.message
        );
        assert_eq!(cond(&s, "Reconciling").status, ConditionStatus::False);
        assert_eq!(cond(&s, "Stalled").status, ConditionStatus::False);
        assert_eq!(cond(&s, "Drifted").status, ConditionStatus::True);
        assert_eq!(s.drift.len(), 1);
        assert_eq!(s.drift[0].reason, DriftReason::Missing);
        assert_eq!(
            s.summary.as_ref().map(|s| (s.compliant, s.drifted_objects)),
            Some((1, 1))
        );
    }

    #[test]
    fn enforce_drift_it_may_not_repair_waits_for_a_person() {
        // A name held by an object Rampart did not make: no retry fixes that, so kstatus must
        // read Failed, not InProgress forever.
        let mut f = findings(Some(DriftOutcome::Reported));
        f.drift[0].0.reason = DriftReason::NameTaken;
        let s = compute(&spec(Mode::Enforce), Some(1), &f, None, at(0));
        let stalled = cond(&s, "Stalled");
        assert_eq!(
            (stalled.status, stalled.reason.as_str()),
            (ConditionStatus::True, "NameHeld")
        );
        assert!(
            stalled.message.contains("not create"),
            "{}",
            stalled.message
        );
        assert_eq!(cond(&s, "Reconciling").status, ConditionStatus::False);
        assert_eq!(cond(&s, "Ready").status, ConditionStatus::False);
    }

    #[test]
    fn kstatus_conditions_follow_ready_converging_and_waiting_for_a_person() {
        let converged = compute(&spec(Mode::Enforce), Some(1), &findings(None), None, at(0));
        assert_eq!(
            cond(&converged, "Reconciling").status,
            ConditionStatus::False
        );
        assert_eq!(cond(&converged, "Stalled").status, ConditionStatus::False);

        let failing = compute(
            &spec(Mode::Enforce),
            Some(1),
            &findings(Some(DriftOutcome::Failed)),
            None,
            at(0),
        );
        assert_eq!(cond(&failing, "Ready").status, ConditionStatus::False);
        let reconciling = cond(&failing, "Reconciling");
        assert_eq!(reconciling.status, ConditionStatus::True);
        assert_eq!(reconciling.reason, "RepairIncomplete");
        assert_eq!(cond(&failing, "Stalled").status, ConditionStatus::False);

        let mut f = findings(None);
        f.invalid.push(InvalidField {
            field: "spec.backups.schedule".into(),
            message: "bad".into(),
        });
        let invalid = compute(&spec(Mode::Enforce), Some(2), &f, Some(&converged), at(5));
        let stalled = cond(&invalid, "Stalled");
        assert_eq!(
            (stalled.status, stalled.reason.as_str()),
            (ConditionStatus::True, "InvalidSpec")
        );
        assert!(stalled.message.contains("spec.backups.schedule"));
        assert_eq!(cond(&invalid, "Reconciling").status, ConditionStatus::False);
    }

    #[test]
    fn repaired_drift_counts_but_keeps_ready() {
        let s = compute(
            &spec(Mode::Enforce),
            Some(1),
            &findings(Some(DriftOutcome::Repaired)),
            None,
            at(0),
        );
        assert_eq!(cond(&s, "Ready").status, ConditionStatus::True);
        assert!(s.drift.is_empty());
        assert_eq!(s.summary.as_ref().map(|s| s.repaired_objects), Some(1));
        // The next pass repairs nothing: the total stands and nothing is written.
        let next = compute(
            &spec(Mode::Enforce),
            Some(1),
            &findings(None),
            Some(&s),
            at(5),
        );
        assert_eq!(next.summary.as_ref().map(|s| s.repaired_objects), Some(1));
        assert!(!changed(Some(&s), &next));
    }

    fn missing(ns: &str) -> Drift {
        Drift {
            key: ObjectKey {
                kind: ManagedKind::PodDisruptionBudget,
                namespace: ns.into(),
                name: "rampart-deploy-x".into(),
            },
            control: ControlName::PodDisruptionBudgets,
            reason: DriftReason::Missing,
            fields: vec![],
        }
    }

    fn done(d: &Drift) -> Applied {
        Applied {
            verb: WriteVerb::Create,
            target: Target::from(&d.key),
            effect: Ok(Effect::Done),
            created_uid: None,
        }
    }

    #[test]
    fn a_missing_object_never_seen_is_created_and_one_seen_before_is_repaired() {
        let (first, deleted) = (missing("a"), missing("b"));
        let applied = [done(&first), done(&deleted)];
        let outcomes = drift_outcomes(vec![first, deleted], &applied, |k| k.namespace == "b");
        let by_ns: Vec<(&str, DriftOutcome)> = outcomes
            .iter()
            .map(|(d, o)| (d.key.namespace.as_str(), *o))
            .collect();
        assert_eq!(
            by_ns,
            vec![("a", DriftOutcome::Created), ("b", DriftOutcome::Repaired)]
        );
        let mut again = done(&missing("a"));
        again.effect = Ok(Effect::Unchanged);
        let outcomes = drift_outcomes(vec![missing("a")], &[again], |_| true);
        assert_eq!(
            outcomes[0].1,
            DriftOutcome::Settled,
            "a create that found our object (the cache lagged our last write) counts nothing"
        );
        let mut edited = missing("c");
        edited.reason = DriftReason::Modified;
        let applied = [done(&edited)];
        let outcomes = drift_outcomes(vec![edited], &applied, |_| false);
        assert_eq!(
            outcomes[0].1,
            DriftOutcome::Repaired,
            "an edited object exists, so it was made before"
        );
    }

    #[test]
    fn first_creations_are_counted_apart_from_repairs_and_keep_ready() {
        let mut f = findings(Some(DriftOutcome::Created));
        f.drift.push((missing("b"), DriftOutcome::Created));
        let s = compute(&spec(Mode::Enforce), Some(1), &f, None, at(0));
        assert_eq!(cond(&s, "Ready").status, ConditionStatus::True);
        assert!(s.drift.is_empty(), "a created object is no drift left");
        assert_eq!(
            s.summary
                .as_ref()
                .map(|s| (s.created_objects, s.repaired_objects)),
            Some((2, 0))
        );
        let next = compute(
            &spec(Mode::Enforce),
            Some(1),
            &findings(Some(DriftOutcome::Repaired)),
            Some(&s),
            at(5),
        );
        assert_eq!(
            next.summary
                .as_ref()
                .map(|s| (s.created_objects, s.repaired_objects)),
            Some((2, 1))
        );
    }

    #[test]
    fn drift_since_survives_recompute() {
        let s1 = compute(
            &spec(Mode::Audit),
            Some(1),
            &findings(Some(DriftOutcome::Reported)),
            None,
            at(0),
        );
        let s2 = compute(
            &spec(Mode::Audit),
            Some(1),
            &findings(Some(DriftOutcome::Reported)),
            Some(&s1),
            at(50),
        );
        assert_eq!(s2.drift[0].since, at(0));
        assert!(!changed(Some(&s1), &s2));
    }

    #[test]
    fn drift_list_is_bounded_but_total_is_exact() {
        let mut f = findings(None);
        for i in 0..(DRIFT_LIST_LIMIT + 25) {
            f.drift.push((
                Drift {
                    key: ObjectKey {
                        kind: ManagedKind::NetworkPolicy,
                        namespace: format!("ns{i:04}"),
                        name: "p".into(),
                    },
                    control: ControlName::PodDisruptionBudgets,
                    reason: DriftReason::Missing,
                    fields: vec![],
                },
                DriftOutcome::Reported,
            ));
        }
        let s = compute(&spec(Mode::Audit), Some(1), &f, None, at(0));
        assert_eq!(s.drift.len(), DRIFT_LIST_LIMIT);
        assert_eq!(
            s.summary.as_ref().map(|s| s.drifted_objects),
            Some((DRIFT_LIST_LIMIT + 25) as i64)
        );
    }

    fn rotation_plan(id: &str) -> RotationPlan {
        crate::controls::rotation::plan_rotation(
            &crate::api::fixtures::rotation(id, 1),
            &[],
            &[],
            &crate::controls::rotation::Past::default(),
            at(0),
        )
    }

    #[test]
    fn objects_the_rotation_left_aside_are_listed_with_what_to_do_and_bounded() {
        use crate::controls::rotation::{ConsumerKind, SecretInfo};
        let consumer = |i: usize| ConsumerRef {
            namespace: "a".into(),
            kind: ConsumerKind::StatefulSet,
            name: format!("c{i:02}"),
        };
        let mut plan = rotation_plan("r1");
        plan.stalled = vec![consumer(0)];
        plan.skipped = (0..ROTATION_ITEMS_LIMIT + 5).map(consumer).collect();
        plan.foreign = vec![SecretInfo {
            namespace: "a".into(),
            name: "synced".into(),
            controller: Some("ExternalSecret/synced".into()),
            ..Default::default()
        }];
        plan.unwritable = vec![UnwritableSecret {
            namespace: "a".into(),
            name: "frozen".into(),
            reason: crate::apply::REFUSED_IMMUTABLE.into(),
        }];
        let s = rotation_status(&plan, Mode::Enforce, None, at(0));
        assert_eq!(s.skipped_consumers.len(), ROTATION_ITEMS_LIMIT);
        assert_eq!(s.skipped_consumers[0].kind, "StatefulSet");
        assert!(s.skipped_consumers[0].reason.contains("OnDelete"));
        assert_eq!(s.stalled_consumers[0].name, "c00");
        assert!(s.message.as_deref().is_some_and(|m| m.contains("c00")));
        assert!(s.foreign_secrets[0]
            .reason
            .contains("ExternalSecret/synced"));
        assert_eq!(
            (
                s.unwritable_secrets[0].name.as_str(),
                s.unwritable_secrets[0].kind.as_str()
            ),
            ("frozen", "Secret")
        );
        let audit = rotation_status(&plan, Mode::Audit, None, at(0));
        assert!(audit.stalled_consumers.is_empty(), "Audit restarts nothing");
    }

    #[test]
    fn a_refused_secret_rotation_is_read_from_the_writers_effects() {
        use crate::controls::SecretRef;
        let write = |name: &str| {
            crate::controls::Write::RotateSecret(crate::controls::SecretRotation {
                secret: SecretRef {
                    namespace: "a".into(),
                    name: name.into(),
                },
                rotation_id: "r1".into(),
                expected: None,
                regenerate: vec![],
                keep_previous: false,
                mark: crate::controls::rotation::stamp::Mark::Rotated,
            })
        };
        let applied = |name: &str, effect| Applied {
            verb: write(name).verb(),
            target: write(name).target(),
            effect: Ok(effect),
            created_uid: None,
        };
        let refused = refused_secrets(&[
            applied("db", Effect::Done),
            applied("frozen", Effect::Refused(crate::apply::REFUSED_IMMUTABLE)),
        ]);
        assert_eq!(
            refused,
            vec![UnwritableSecret {
                namespace: "a".into(),
                name: "frozen".into(),
                reason: crate::apply::REFUSED_IMMUTABLE.into(),
            }]
        );
    }

    #[test]
    fn used_rotation_ids_are_recorded_in_order_bounded_and_not_in_audit() {
        let mut previous: Option<RotationStatus> = None;
        for i in 0..(USED_ROTATION_IDS_LIMIT + 3) {
            let s = rotation_status(
                &rotation_plan(&format!("r{i}")),
                Mode::Enforce,
                previous.as_ref(),
                at(0),
            );
            previous = Some(s);
        }
        let used = previous
            .clone()
            .map(|p| p.used_rotation_ids)
            .unwrap_or_default();
        assert_eq!(used.len(), USED_ROTATION_IDS_LIMIT);
        assert_eq!(used.first().map(String::as_str), Some("r3"));
        assert_eq!(used.last().map(String::as_str), Some("r22"));
        let audit = rotation_status(&rotation_plan("a1"), Mode::Audit, previous.as_ref(), at(0));
        assert!(!audit.used_rotation_ids.contains(&"a1".to_string()));
    }

    #[test]
    fn a_status_from_before_the_used_list_seeds_it_with_its_applied_id() {
        let upgraded = RotationStatus {
            observed_rotation_id: Some("r1".into()),
            phase: RotationPhase::Complete,
            ..empty_rotation_status()
        };
        let s = rotation_status(&rotation_plan("r2"), Mode::Enforce, Some(&upgraded), at(0));
        assert_eq!(s.used_rotation_ids, vec!["r1", "r2"]);
        let audited = RotationStatus {
            phase: RotationPhase::Pending,
            ..upgraded
        };
        let s = rotation_status(&rotation_plan("r2"), Mode::Enforce, Some(&audited), at(0));
        assert_eq!(
            s.used_rotation_ids,
            vec!["r2"],
            "an id only reported was not applied"
        );
    }

    #[test]
    fn a_revert_is_complete_with_its_own_reason_and_a_queue_is_named() {
        let mut plan = rotation_plan("r2");
        plan.reverted = Some("r1".into());
        let s = rotation_status(&plan, Mode::Enforce, None, at(0));
        assert_eq!(s.reverted_rotation_id.as_deref(), Some("r1"));
        let c = rotation_condition(&s);
        assert!(c.status);
        assert_eq!(c.reason, "RevertIgnored");
        assert!(c.message.contains("r1"), "{}", c.message);

        let mut plan = rotation_plan("r2");
        plan.phase = RotationPhase::Restarting;
        plan.queued = Some("r3".into());
        let s = rotation_status(&plan, Mode::Enforce, None, at(0));
        assert_eq!(s.queued_rotation_id.as_deref(), Some("r3"));
        assert!(rotation_condition(&s).message.contains("queued"));
    }

    #[test]
    fn secrets_rotated_at_is_kept_once_the_secret_stage_is_done() {
        let done = rotation_plan("r2");
        let first = rotation_status(&done, Mode::Enforce, None, at(0));
        assert_eq!(first.secrets_rotated_at, Some(at(0)));
        let later = rotation_status(&done, Mode::Enforce, Some(&first), at(60));
        assert_eq!(later.secrets_rotated_at, Some(at(0)));
    }

    #[test]
    fn rotation_in_progress_or_unhealthy_backups_keep_ready_false() {
        let mut f = findings(None);
        let plan = crate::controls::rotation::plan_rotation(
            &rotation_spec(),
            &[],
            &[],
            &crate::controls::rotation::Past::default(),
            at(0),
        );
        f.rotation = Some(RotationPlan {
            phase: RotationPhase::Restarting,
            ..plan
        });
        let mut sp = spec(Mode::Enforce);
        sp.secret_rotation = Some(rotation_spec());
        let s = compute(&sp, Some(1), &f, None, at(0));
        assert_eq!(cond(&s, "Ready").status, ConditionStatus::False);
        assert!(cond(&s, "Ready").message.contains("Restarting"));
        assert_eq!(cond(&s, "SecretsRotated").reason, "Restarting");

        let mut f = findings(None);
        f.backups = Some(BackupFindings {
            unhealthy: vec![ObjectRefStatus {
                namespace: "a".into(),
                kind: "PersistentVolumeClaim".into(),
                name: "data".into(),
                message: "newest snapshot failed".into(),
            }],
            ..Default::default()
        });
        let s = compute(&spec(Mode::Enforce), Some(1), &f, None, at(0));
        assert_eq!(cond(&s, "Ready").status, ConditionStatus::False);
        assert_eq!(cond(&s, "BackupsHealthy").status, ConditionStatus::False);
    }

    #[test]
    fn backups_verified_names_the_first_failing_pvc_says_audit_and_stays_out_of_ready() {
        use crate::api::{VerificationResult, VerificationRound, VerificationStatus};
        use crate::controls::verify::VerifyFindings;
        let entry = |pvc: &str, result: VerificationResult| VerificationStatus {
            namespace: "a".into(),
            pvc: pvc.into(),
            snapshot: format!("{pvc}-snap"),
            slot: at(0),
            time: at(5),
            result,
            message: format!("restore of PVC a/{pvc}: x"),
        };
        let mut f = findings(None);
        f.verify = Some(VerifyFindings {
            pvcs: 2,
            entries: vec![
                entry("logs", VerificationResult::Failed),
                entry("data", VerificationResult::Succeeded),
            ],
            round_verified: 2,
            round_failed: 1,
            ..Default::default()
        });
        let s = compute(&spec(Mode::Enforce), Some(1), &f, None, at(10));
        let c = cond(&s, "BackupsVerified");
        assert_eq!(c.status, ConditionStatus::False);
        assert_eq!(c.reason, "VerificationFailed");
        assert!(c.message.contains("a/logs"), "{}", c.message);
        assert_eq!(cond(&s, "Ready").status, ConditionStatus::True);

        // Every PVC of the round verified: True, whatever the bounded list holds.
        if let Some(v) = f.verify.as_mut() {
            v.pvcs = 60;
            v.round_verified = 60;
            v.round_failed = 0;
            v.entries = vec![entry("data", VerificationResult::Succeeded)];
        }
        let s = compute(&spec(Mode::Enforce), Some(1), &f, None, at(10));
        assert_eq!(cond(&s, "BackupsVerified").status, ConditionStatus::True);
        // A new round under way: the previous, complete and clean, still holds.
        let previous = VerificationRound {
            slot: at(0),
            pvcs: 60,
            succeeded: 60,
            ..Default::default()
        };
        if let Some(v) = f.verify.as_mut() {
            v.round_verified = 3;
            v.previous_round = Some(previous.clone());
        }
        let s = compute(&spec(Mode::Enforce), Some(1), &f, None, at(10));
        assert_eq!(cond(&s, "BackupsVerified").status, ConditionStatus::True);
        if let Some(v) = f.verify.as_mut() {
            v.previous_round = Some(VerificationRound {
                failed: 1,
                succeeded: 59,
                ..previous
            });
        }
        let s = compute(&spec(Mode::Enforce), Some(1), &f, None, at(10));
        assert_eq!(cond(&s, "BackupsVerified").reason, "VerificationFailed");
        if let Some(v) = f.verify.as_mut() {
            v.previous_round = None;
        }
        let s = compute(&spec(Mode::Enforce), Some(1), &f, None, at(10));
        assert_eq!(cond(&s, "BackupsVerified").reason, "NotYetVerified");
        let s = compute(&spec(Mode::Audit), Some(1), &f, None, at(10));
        let c = cond(&s, "BackupsVerified");
        assert_eq!(c.reason, "AuditMode");
        assert!(c.message.contains("not run in Audit"), "{}", c.message);
    }

    #[test]
    fn backups_without_a_ready_snapshot_say_they_wait_for_the_first() {
        let mut b = BackupFindings::default();
        b.status.pvcs = 2;
        b.status.next_schedule_time = Some(at(3600));
        let c = backups_condition(&b, None);
        assert!(
            c.status,
            "nothing failed: Ready need not wait for the first slot"
        );
        assert_eq!(c.reason, "AwaitingFirstSnapshot");
        assert!(!c.message.contains("0 ready"), "{}", c.message);
        assert!(c.message.contains("2 PVCs"), "{}", c.message);
        assert!(c.message.contains("2027-01-15T09:00:00Z"), "{}", c.message);
        b.status.ready_snapshots = 2;
        let c = backups_condition(&b, None);
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            ("Healthy", "2 PVCs, 2 ready snapshots")
        );
    }

    #[test]
    fn secrets_adopted_at_the_id_count_as_at_the_id() {
        let adopted = RotationStatus {
            observed_rotation_id: Some("r1".into()),
            phase: RotationPhase::Complete,
            secrets_selected: 1,
            secrets_adopted: 1,
            ..empty_rotation_status()
        };
        let c = rotation_condition(&adopted);
        assert_eq!(
            c.message,
            "rotation r1: 1/1 Secrets at the id (1 adopted with their values kept), 0/0 \
             workloads restarted"
        );
        let rotated = RotationStatus {
            secrets_rotated: 1,
            secrets_adopted: 0,
            ..adopted
        };
        assert_eq!(
            rotation_condition(&rotated).message,
            "rotation r1: 1/1 Secrets rotated, 0/0 workloads restarted"
        );
    }

    #[test]
    fn invalid_spec_names_the_field_and_is_not_ready() {
        let mut f = findings(None);
        f.invalid.push(InvalidField {
            field: "spec.backups.schedule".into(),
            message: "bad".into(),
        });
        let s = compute(&spec(Mode::Enforce), Some(2), &f, None, at(0));
        assert_eq!(cond(&s, "InvalidSpec").status, ConditionStatus::True);
        assert!(cond(&s, "Ready").message.contains("spec.backups.schedule"));
    }
}
