//! Desired PodDisruptionBudgets for one namespace, and budgets that would block a node drain.
//! Pure.
//!
//! Rules: one `maxUnavailable` budget per Deployment or StatefulSet with at least
//! `minReplicas` replicas, evicting unhealthy pods always; none where a user's budget already
//! selects the pods, because two budgets on one pod make eviction fail.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    bounded_name, namespace_outcome, DesiredObject, ManagedKind, NamespaceFindings,
    NamespaceObserved, ObjectKey, Outcome,
};
use crate::api::{ControlName, DisruptionBudgetControl, MaxUnavailable, ObjectRefStatus};
use crate::labels;
use crate::ownership::managed_labels;

/// The workload kinds that get budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }

    fn name_prefix(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "rampart-deploy-",
            WorkloadKind::StatefulSet => "rampart-sts-",
        }
    }
}

/// What the budget control needs to know of a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadInfo {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub replicas: i32,
    pub selector: Option<LabelSelector>,
    pub pod_labels: BTreeMap<String, String>,
}

/// What the budget control needs to know of a PodDisruptionBudget, Rampart's or a user's.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetInfo {
    pub namespace: String,
    pub name: String,
    /// Made by Rampart (carries its labels).
    pub ours: bool,
    pub selector: Option<LabelSelector>,
    pub max_unavailable: Option<IntOrString>,
    pub min_available: Option<IntOrString>,
    /// From the status, when the disruption controller has observed the current generation.
    pub health: Option<BudgetHealth>,
}

/// The disruption controller's view of a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetHealth {
    pub disruptions_allowed: i32,
    pub current_healthy: i32,
    pub expected_pods: i32,
}

/// Budgets wanted in a namespace, and workloads left to a user's budget.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BudgetOutcome {
    pub desired: Vec<DesiredObject>,
    pub covered_by_user: Vec<ObjectRefStatus>,
}

/// The budget control in one namespace: the budgets `spec` asks for (none where the profile
/// does not act, `None`) against the profile's budgets there, and, where `judge_drains` (the
/// namespace is selected), the budgets that would hang a drain.
pub fn plan(
    profile: &str,
    spec: Option<&DisruptionBudgetControl>,
    judge_drains: bool,
    observed: &NamespaceObserved,
) -> Outcome<NamespaceFindings> {
    let wanted = spec
        .map(|s| desired_disruption_budgets(profile, s, &observed.workloads, &observed.budgets))
        .unwrap_or_default();
    let mut out = namespace_outcome(
        ControlName::PodDisruptionBudgets,
        ManagedKind::PodDisruptionBudget,
        wanted.desired,
        observed,
    );
    out.findings.covered_by_user = wanted.covered_by_user;
    if judge_drains {
        out.findings.drain_blocking = drain_blocking_budgets(&observed.budgets);
    }
    out
}

/// The budgets `spec` asks for among `workloads`, given every budget in their namespace.
pub fn desired_disruption_budgets(
    profile: &str,
    spec: &DisruptionBudgetControl,
    workloads: &[WorkloadInfo],
    budgets: &[BudgetInfo],
) -> BudgetOutcome {
    let mut out = BudgetOutcome::default();
    for w in workloads.iter().filter(|w| w.replicas >= spec.min_replicas) {
        let Some(selector) = &w.selector else {
            continue;
        };
        if let Some(user) = budgets.iter().find(|b| {
            !b.ours
                && b.namespace == w.namespace
                && b.selector
                    .as_ref()
                    .is_some_and(|s| labels::k8s_matches(s, &w.pod_labels))
        }) {
            out.covered_by_user.push(ObjectRefStatus {
                namespace: w.namespace.clone(),
                kind: w.kind.as_str().into(),
                name: w.name.clone(),
                message: format!("pods already selected by PodDisruptionBudget {}", user.name),
            });
            continue;
        }
        out.desired.push(budget_object(profile, spec, w, selector));
    }
    out
}

/// The name of the budget Rampart makes for a workload.
pub fn budget_name(kind: WorkloadKind, workload: &str) -> String {
    bounded_name(kind.name_prefix(), workload, 253)
}

fn budget_object(
    profile: &str,
    spec: &DisruptionBudgetControl,
    w: &WorkloadInfo,
    selector: &LabelSelector,
) -> DesiredObject {
    let name = budget_name(w.kind, &w.name);
    let max_unavailable = match &spec.max_unavailable {
        MaxUnavailable::Count(n) => IntOrString::Int(*n),
        MaxUnavailable::Percent(p) => IntOrString::String(p.clone()),
    };
    let pdb = PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(w.namespace.clone()),
            labels: Some(managed_labels(profile, ControlName::PodDisruptionBudgets)),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(max_unavailable),
            min_available: None,
            selector: Some(selector.clone()),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
        }),
        status: None,
    };
    let mut manifest = serde_json::to_value(&pdb).unwrap_or_default();
    manifest["apiVersion"] = ManagedKind::PodDisruptionBudget.api_version().into();
    manifest["kind"] = ManagedKind::PodDisruptionBudget.kind().into();
    DesiredObject {
        key: ObjectKey {
            kind: ManagedKind::PodDisruptionBudget,
            namespace: w.namespace.clone(),
            name,
        },
        control: ControlName::PodDisruptionBudgets,
        manifest,
    }
}

/// Budgets that allow no disruption while their pods are healthy: a drain would wait on them
/// forever. Judged from the spec where it alone decides (maxUnavailable 0, minAvailable 100%)
/// and otherwise from the disruption controller's status.
pub fn drain_blocking_budgets(budgets: &[BudgetInfo]) -> Vec<ObjectRefStatus> {
    let mut out: Vec<ObjectRefStatus> = budgets
        .iter()
        .filter_map(|b| {
            let by_spec = match (&b.max_unavailable, &b.min_available) {
                (Some(IntOrString::Int(0)), _) => Some("maxUnavailable is 0"),
                (Some(IntOrString::String(p)), _) if p.trim_end_matches('%') == "0" => {
                    Some("maxUnavailable is 0%")
                }
                (None, Some(IntOrString::String(p))) if p == "100%" => Some("minAvailable is 100%"),
                _ => None,
            };
            let by_status = b
                .health
                .filter(|h| {
                    h.expected_pods > 0
                        && h.current_healthy >= h.expected_pods
                        && h.disruptions_allowed == 0
                })
                .map(|_| "allows 0 disruptions while all its pods are healthy");
            by_spec.or(by_status).map(|why| ObjectRefStatus {
                namespace: b.namespace.clone(),
                kind: "PodDisruptionBudget".into(),
                name: b.name.clone(),
                message: why.into(),
            })
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DisruptionBudgetControl {
        DisruptionBudgetControl {
            min_replicas: 2,
            max_unavailable: MaxUnavailable::Count(1),
        }
    }

    fn app_labels(app: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_string(), app.to_string())])
    }

    fn workload(kind: WorkloadKind, name: &str, replicas: i32) -> WorkloadInfo {
        WorkloadInfo {
            kind,
            namespace: "countly".into(),
            name: name.into(),
            replicas,
            selector: Some(LabelSelector {
                match_labels: Some(app_labels(name)),
                match_expressions: None,
            }),
            pod_labels: app_labels(name),
        }
    }

    fn budget(name: &str, ours: bool, selects: &str) -> BudgetInfo {
        BudgetInfo {
            namespace: "countly".into(),
            name: name.into(),
            ours,
            selector: Some(LabelSelector {
                match_labels: Some(app_labels(selects)),
                match_expressions: None,
            }),
            max_unavailable: Some(IntOrString::Int(1)),
            min_available: None,
            health: None,
        }
    }

    #[test]
    fn budget_per_replicated_workload_with_drain_friendly_spec() {
        let out = desired_disruption_budgets(
            "p",
            &spec(),
            &[
                workload(WorkloadKind::Deployment, "api", 3),
                workload(WorkloadKind::StatefulSet, "db", 2),
            ],
            &[],
        );
        let names: Vec<&str> = out.desired.iter().map(|d| d.key.name.as_str()).collect();
        assert_eq!(names, vec!["rampart-deploy-api", "rampart-sts-db"]);
        let s = &out.desired[0].manifest["spec"];
        assert_eq!(s["maxUnavailable"], 1);
        assert_eq!(s["unhealthyPodEvictionPolicy"], "AlwaysAllow");
        assert_eq!(s["selector"]["matchLabels"]["app"], "api");
        assert!(s.get("minAvailable").is_none());
    }

    #[test]
    fn pdb_skipped_below_min_replicas() {
        let out = desired_disruption_budgets(
            "p",
            &spec(),
            &[workload(WorkloadKind::Deployment, "single", 1)],
            &[],
        );
        assert!(out.desired.is_empty());
    }

    #[test]
    fn percentage_is_passed_through() {
        let mut s = spec();
        s.max_unavailable = MaxUnavailable::Percent("25%".into());
        let out = desired_disruption_budgets(
            "p",
            &s,
            &[workload(WorkloadKind::Deployment, "api", 4)],
            &[],
        );
        assert_eq!(out.desired[0].manifest["spec"]["maxUnavailable"], "25%");
    }

    #[test]
    fn user_budget_covering_pods_suppresses_ours_and_is_reported() {
        let out = desired_disruption_budgets(
            "p",
            &spec(),
            &[
                workload(WorkloadKind::Deployment, "api", 3),
                workload(WorkloadKind::Deployment, "web", 3),
            ],
            &[
                budget("user-api", false, "api"),
                budget("rampart-deploy-web", true, "web"),
            ],
        );
        let names: Vec<&str> = out.desired.iter().map(|d| d.key.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["rampart-deploy-web"],
            "our own budget never suppresses ours"
        );
        assert_eq!(out.covered_by_user[0].name, "api");
        assert!(out.covered_by_user[0].message.contains("user-api"));
    }

    #[test]
    fn drain_blocking_table() {
        let mut zero = budget("zero", false, "a");
        zero.max_unavailable = Some(IntOrString::Int(0));
        let mut full = budget("full", false, "b");
        full.max_unavailable = None;
        full.min_available = Some(IntOrString::String("100%".into()));
        let mut stuck = budget("stuck", true, "c");
        stuck.health = Some(BudgetHealth {
            disruptions_allowed: 0,
            current_healthy: 1,
            expected_pods: 1,
        });
        let mut degraded = budget("degraded", true, "d");
        degraded.health = Some(BudgetHealth {
            disruptions_allowed: 0,
            current_healthy: 1,
            expected_pods: 3,
        });
        let mut fine = budget("fine", true, "e");
        fine.health = Some(BudgetHealth {
            disruptions_allowed: 1,
            current_healthy: 3,
            expected_pods: 3,
        });
        let blocked: Vec<String> = drain_blocking_budgets(&[zero, full, stuck, degraded, fine])
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(blocked, vec!["full", "stuck", "zero"]);
    }
}
