//! The profile's status, computed from one reconcile's findings. Pure: the previous status and
//! `now` are arguments, and unchanged findings give an identical status, so the controller
//! writes only when something changed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::api::conditions::{self, rfc3339, Computed};
use crate::api::validate::InvalidField;
use crate::api::{
    BackupStatus, ControlName, DriftEntry, HardeningProfileSpec, HardeningProfileStatus, Mode,
    ObjectRefStatus, RotationStatus, Summary, DRIFT_LIST_LIMIT, STATUS_LIST_LIMIT,
};
use crate::controls::rotation::{RotationPhase, RotationPlan};
use crate::controls::snapshots::SnapshotPlan;
use crate::controls::{Drift, ObjectKey};
use crate::selection::Selection;

/// What happened to one drifted object in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriftOutcome {
    /// Enforce mode fixed it.
    Repaired,
    /// Audit mode, or a name held by someone else: reported only.
    Reported,
    /// The repair was attempted and failed.
    Failed,
}

/// Everything one reconcile found, for the status.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    pub invalid: Vec<InvalidField>,
    pub selection: Selection,
    pub drift: Vec<(Drift, DriftOutcome)>,
    pub managed: BTreeMap<ControlName, usize>,
    pub covered_by_user: Vec<ObjectRefStatus>,
    pub drain_blocking: Vec<ObjectRefStatus>,
    pub rotation: Option<RotationFindings>,
    pub backups: Option<BackupFindings>,
}

/// The rotation control's outcome.
#[derive(Clone, Debug)]
pub struct RotationFindings {
    pub status: RotationStatus,
    pub phase: RotationPhase,
}

/// The snapshot control's outcome.
#[derive(Clone, Debug, Default)]
pub struct BackupFindings {
    pub status: BackupStatus,
    pub unhealthy: Vec<ObjectRefStatus>,
    /// The cluster does not serve snapshot.storage.k8s.io/v1.
    pub api_missing: bool,
}

/// Most consumers named as in progress in the status.
const IN_PROGRESS_LIMIT: usize = 20;

/// The rotation status for a plan, keeping the start time of the same rotation id.
pub fn rotation_status(
    plan: &RotationPlan,
    id: &str,
    previous: Option<&RotationStatus>,
    now: DateTime<Utc>,
) -> RotationStatus {
    let same = previous.filter(|p| p.observed_rotation_id.as_deref() == Some(id));
    let started_at = same
        .and_then(|p| p.started_at.clone())
        .unwrap_or_else(|| rfc3339(now));
    let completed_at = (plan.phase == RotationPhase::Complete).then(|| {
        same.and_then(|p| p.completed_at.clone())
            .unwrap_or_else(|| rfc3339(now))
    });
    RotationStatus {
        observed_rotation_id: Some(id.to_string()),
        phase: plan.phase.as_str().to_string(),
        secrets_selected: plan.secrets_selected as i64,
        secrets_rotated: plan.secrets_rotated as i64,
        secrets_adopted: plan.secrets_adopted as i64,
        workloads_total: plan.consumers_total as i64,
        workloads_restarted: plan.consumers_restarted as i64,
        in_progress: plan
            .in_progress
            .iter()
            .take(IN_PROGRESS_LIMIT)
            .map(|c| c.to_string())
            .collect(),
        message: plan
            .stalled
            .as_ref()
            .map(|c| format!("the rollout of {c} did not complete in time; the rotation waits")),
        started_at: Some(started_at),
        completed_at,
    }
}

/// The backup status for a plan, carrying the miss count and last slot forward.
pub fn backup_status(
    plan: &SnapshotPlan,
    pvcs: usize,
    previous: Option<&BackupStatus>,
) -> BackupStatus {
    let last = plan
        .slot
        .into_iter()
        .chain(plan.missed_slots.iter().copied())
        .max()
        .map(rfc3339)
        .or_else(|| previous.and_then(|p| p.last_schedule_time.clone()));
    let mut problems: Vec<ObjectRefStatus> = plan
        .failed
        .iter()
        .chain(plan.unhealthy.iter())
        .cloned()
        .collect();
    problems.truncate(STATUS_LIST_LIMIT);
    BackupStatus {
        last_schedule_time: last,
        next_schedule_time: plan.next_slot.map(rfc3339),
        pvcs: pvcs as i64,
        ready_snapshots: plan.ready as i64,
        failed_snapshots: plan.failed.len() as i64,
        missed_slots: previous.map(|p| p.missed_slots).unwrap_or(0)
            + plan.missed_slots.len() as i64,
        last_successful: plan.last_successful.clone(),
        problems,
    }
}

impl Findings {
    /// Drift still standing after this reconcile.
    pub fn unresolved(&self) -> impl Iterator<Item = &Drift> {
        self.drift
            .iter()
            .filter(|(_, o)| *o != DriftOutcome::Repaired)
            .map(|(d, _)| d)
    }
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
        let message = findings
            .invalid
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let conds = vec![
            Computed::new(conditions::READY, false, "InvalidSpec", message.clone()),
            Computed::new(conditions::INVALID_SPEC, true, "InvalidSpec", message),
        ];
        return HardeningProfileStatus {
            observed_generation: generation,
            conditions: conditions::settle(&previous.conditions, conds, generation, now),
            // Keep the last good picture: an invalid edit acts on nothing, so nothing moved.
            ..previous.clone()
        };
    }

    let since: BTreeMap<(&str, &str, &str), &str> = previous
        .drift
        .iter()
        .map(|d| {
            (
                (d.namespace.as_str(), d.kind.as_str(), d.name.as_str()),
                d.since.as_str(),
            )
        })
        .collect();
    let now_s = rfc3339(now);
    let mut drift_entries: Vec<DriftEntry> = findings
        .unresolved()
        .map(|d| DriftEntry {
            namespace: d.key.namespace.clone(),
            kind: d.key.kind.kind().to_string(),
            name: d.key.name.clone(),
            reason: d.reason.as_str().to_string(),
            since: since
                .get(&(
                    d.key.namespace.as_str(),
                    d.key.kind.kind(),
                    d.key.name.as_str(),
                ))
                .map(|s| s.to_string())
                .unwrap_or_else(|| now_s.clone()),
        })
        .collect();
    drift_entries
        .sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    let drifted_total = drift_entries.len();
    drift_entries.truncate(DRIFT_LIST_LIMIT);

    let unresolved_by_control: BTreeMap<ControlName, usize> =
        findings.unresolved().fold(BTreeMap::new(), |mut m, d| {
            *m.entry(d.control).or_insert(0) += 1;
            m
        });
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
    let selected = findings.selection.namespaces.len();
    let compliant = findings
        .selection
        .namespaces
        .iter()
        .filter(|n| !drifted_namespaces.contains(n.as_str()) && !conflicted.contains(n.as_str()))
        .count();
    let repaired = findings
        .drift
        .iter()
        .filter(|(_, o)| *o == DriftOutcome::Repaired)
        .count();

    let audit = spec.mode == Mode::Audit;
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
        if !spec.enables(control) {
            continue;
        }
        let n = unresolved_by_control.get(&control).copied().unwrap_or(0);
        conds.push(if n == 0 {
            Computed::new(
                type_,
                true,
                "Converged",
                format!(
                    "{} objects match the profile",
                    findings.managed.get(&control).copied().unwrap_or(0)
                ),
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
        });
    }

    let mut not_ready: Vec<String> = Vec::new();
    if let Some(r) = &findings.rotation {
        let (ok, reason) = match r.phase {
            RotationPhase::Complete => (true, "Complete"),
            RotationPhase::Pending => (false, "RotationPending"),
            RotationPhase::Rotating => (false, "Rotating"),
            RotationPhase::Restarting => (false, "Restarting"),
            RotationPhase::Stalled => (false, "RotationStalled"),
        };
        let message = r.status.message.clone().unwrap_or_else(|| {
            format!(
                "rotation {}: {}/{} Secrets rotated, {}/{} workloads restarted",
                r.status.observed_rotation_id.as_deref().unwrap_or_default(),
                r.status.secrets_rotated,
                r.status.secrets_selected,
                r.status.workloads_restarted,
                r.status.workloads_total
            )
        });
        if !ok {
            not_ready.push(format!("secret rotation is {}", r.phase.as_str()));
        }
        conds.push(Computed::new(
            conditions::SECRETS_ROTATED,
            ok,
            reason,
            message,
        ));
    }
    if let Some(b) = &findings.backups {
        let c = if b.api_missing {
            Computed::new(
                conditions::BACKUPS_HEALTHY,
                false,
                "SnapshotAPIMissing",
                "the cluster does not serve snapshot.storage.k8s.io/v1",
            )
        } else if let Some(first) = b.unhealthy.first() {
            Computed::new(
                conditions::BACKUPS_HEALTHY,
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
            && previous.backups.as_ref().map(|p| p.missed_slots) != Some(b.status.missed_slots)
        {
            Computed::new(
                conditions::BACKUPS_HEALTHY,
                false,
                "SlotMissed",
                format!("{} schedule slots were missed", b.status.missed_slots),
            )
        } else {
            Computed::new(
                conditions::BACKUPS_HEALTHY,
                true,
                "Healthy",
                format!(
                    "{} PVCs, {} ready snapshots",
                    b.status.pvcs, b.status.ready_snapshots
                ),
            )
        };
        if !c.status {
            not_ready.push(format!("backups: {}", c.reason));
        }
        conds.push(c);
    }
    conds.push(if drifted_total == 0 {
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
            if audit {
                "DriftReported"
            } else {
                "RepairIncomplete"
            },
            format!("{drifted_total} objects depart from the profile"),
        )
    });
    conds.push(Computed::new(
        conditions::INVALID_SPEC,
        false,
        "Valid",
        "the spec is valid",
    ));
    let conflicts = &findings.selection.conflicts;
    conds.push(if conflicts.is_empty() {
        Computed::new(conditions::CONFLICT, false, "NoConflict", "no other profile holds a selected namespace")
    } else {
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
    });
    if spec.enables(ControlName::PodDisruptionBudgets) {
        conds.push(if findings.drain_blocking.is_empty() {
            Computed::new(
                conditions::DRAIN_BLOCKED,
                false,
                "DrainsAllowed",
                "every budget in scope allows a disruption",
            )
        } else {
            let first = &findings.drain_blocking[0];
            Computed::new(
                conditions::DRAIN_BLOCKED,
                true,
                "BudgetAllowsNoDisruption",
                format!(
                    "{} budgets block node drains, e.g. {}/{} ({})",
                    findings.drain_blocking.len(),
                    first.namespace,
                    first.name,
                    first.message
                ),
            )
        });
    }
    let ready = if drifted_total > 0 {
        Computed::new(
            conditions::READY,
            false,
            if audit {
                "DriftReported"
            } else {
                "RepairIncomplete"
            },
            format!("{drifted_total} objects depart from the profile"),
        )
    } else if !conflicts.is_empty() {
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
    } else {
        Computed::new(
            conditions::READY,
            true,
            "Converged",
            format!("{selected} namespaces hold the profile"),
        )
    };
    conds.insert(0, ready);

    let mut covered = findings.covered_by_user.clone();
    covered.sort();
    covered.truncate(STATUS_LIST_LIMIT);
    let mut blocking = findings.drain_blocking.clone();
    blocking.truncate(STATUS_LIST_LIMIT);
    let mut conflicts_list = conflicts.clone();
    conflicts_list.truncate(STATUS_LIST_LIMIT);

    HardeningProfileStatus {
        observed_generation: generation,
        conditions: conditions::settle(&previous.conditions, conds, generation, now),
        summary: Some(Summary {
            namespaces: selected as i64,
            compliant: compliant as i64,
            drifted_namespaces: drifted_namespaces.len() as i64,
            drifted_objects: drifted_total as i64,
            managed_objects: findings.managed.values().sum::<usize>() as i64,
            repaired_objects: repaired as i64,
        }),
        drift: drift_entries,
        covered_by_user_budgets: covered,
        drain_blocking_budgets: blocking,
        exceptions: findings.selection.exceptions.clone(),
        conflicts: conflicts_list,
        rotation: findings.rotation.as_ref().map(|r| r.status.clone()),
        backups: findings.backups.as_ref().map(|b| b.status.clone()),
    }
}

/// Whether two statuses differ in anything but timestamps that `settle` keeps anyway.
pub fn changed(previous: Option<&HardeningProfileStatus>, next: &HardeningProfileStatus) -> bool {
    previous != Some(next)
}

/// A short key for drift in logs and events.
pub fn describe(key: &ObjectKey) -> String {
    format!("{} {}/{}", key.kind.kind(), key.namespace, key.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DisruptionBudgetControl, MaxUnavailable};
    use crate::controls::{DriftReason, ManagedKind};
    use chrono::TimeZone;

    fn spec(mode: Mode) -> HardeningProfileSpec {
        HardeningProfileSpec {
            mode,
            namespace_selector: None,
            namespaces: vec![],
            network_policies: None,
            pod_disruption_budgets: Some(DisruptionBudgetControl {
                min_replicas: 2,
                max_unavailable: MaxUnavailable::Count(1),
            }),
            secret_rotation: None,
            backups: None,
            exceptions: vec![],
        }
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
        assert_eq!(cond(&s1, "Ready").status, "True");
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
    fn audit_drift_is_listed_and_not_ready() {
        let s = compute(
            &spec(Mode::Audit),
            Some(1),
            &findings(Some(DriftOutcome::Reported)),
            None,
            at(0),
        );
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "Drifted").status, "True");
        assert_eq!(s.drift.len(), 1);
        assert_eq!(s.drift[0].reason, "Missing");
        assert_eq!(
            s.summary.as_ref().map(|s| (s.compliant, s.drifted_objects)),
            Some((1, 1))
        );
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
        assert_eq!(cond(&s, "Ready").status, "True");
        assert!(s.drift.is_empty());
        assert_eq!(s.summary.as_ref().map(|s| s.repaired_objects), Some(1));
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
        assert_eq!(s2.drift[0].since, rfc3339(at(0)));
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

    #[test]
    fn rotation_in_progress_or_unhealthy_backups_keep_ready_false() {
        let mut f = findings(None);
        f.rotation = Some(RotationFindings {
            status: RotationStatus {
                phase: "Restarting".into(),
                ..Default::default()
            },
            phase: RotationPhase::Restarting,
        });
        let s = compute(&spec(Mode::Enforce), Some(1), &f, None, at(0));
        assert_eq!(cond(&s, "Ready").status, "False");
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
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "BackupsHealthy").status, "False");
    }

    #[test]
    fn invalid_spec_names_the_field_and_is_not_ready() {
        let mut f = findings(None);
        f.invalid.push(InvalidField {
            field: "spec.backups.schedule".into(),
            message: "bad".into(),
        });
        let s = compute(&spec(Mode::Enforce), Some(2), &f, None, at(0));
        assert_eq!(cond(&s, "InvalidSpec").status, "True");
        assert!(cond(&s, "Ready").message.contains("spec.backups.schedule"));
    }
}
