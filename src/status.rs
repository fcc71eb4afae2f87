//! The profile's status, computed from one reconcile's findings. Pure: the previous status and
//! `now` are arguments, and unchanged findings give an identical status, so the controller
//! writes only when something changed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::api::conditions::{self, rfc3339, Computed};
use crate::api::validate::InvalidField;
use crate::api::{
    ControlName, DriftEntry, HardeningProfileSpec, HardeningProfileStatus, Mode, ObjectRefStatus,
    Summary, DRIFT_LIST_LIMIT, STATUS_LIST_LIMIT,
};
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
    let failed = findings
        .drift
        .iter()
        .filter(|(_, o)| *o == DriftOutcome::Failed)
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
    } else {
        Computed::new(
            conditions::READY,
            true,
            "Converged",
            format!("{selected} namespaces hold the profile"),
        )
    };
    conds.insert(0, ready);
    let _ = failed;

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
        rotation: previous.rotation.clone(),
        backups: previous.backups.clone(),
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
