//! Reports for dashboards: one OpenReports `Report` (`openreports.io/v1alpha1`) per profile and
//! selected namespace, with a result per control, so Policy Reporter and Kyverno's UI show
//! Rampart beside every other engine. Pure: the content is a function of the profile and what
//! the pass found (no clock, so an unchanged finding never rewrites a report), and the writes
//! come from comparing it with the reports observed (`observe::reports`, from a watch). The
//! writer (`apply::Writer::write_reports`) carries them out, in Audit mode too: a report, like
//! the status, only describes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};

use crate::api::{
    ControlName, ExceptionState, HardeningProfileSpec, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    PROFILE_LABEL,
};
use crate::status::{DriftOutcome, Findings};

pub const REPORT_GROUP: &str = "openreports.io";
pub const REPORT_VERSION: &str = "v1alpha1";
pub const REPORT_KIND: &str = "Report";
pub const REPORT_PLURAL: &str = "reports";
/// The `source` dashboards group results by.
pub const SOURCE: &str = "rampart";
/// Objects named in one result at most; the rest are counted in its `moreResources`
/// property, so a report stays small however far a namespace drifted.
pub const RESOURCES_PER_RESULT: usize = 20;
const CATEGORY: &str = "Rampart hardening";

/// One report's name: per profile, so two profiles selecting a namespace (each for other
/// controls) keep their reports apart.
pub fn report_name(profile: &str) -> String {
    format!("rampart-{profile}")
}

/// A result's verdict, as OpenReports spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Warn,
    Error,
    Skip,
}

/// An object a result names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    pub kind: String,
    pub name: String,
    /// Why it is named (`Missing`, `Modified`, a rotation's refusal...).
    pub why: String,
}

/// One control's result in one namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlResult {
    pub control: ControlName,
    pub verdict: Verdict,
    pub message: String,
    /// Every object concerned, sorted; the report lists the first [`RESOURCES_PER_RESULT`].
    pub resources: Vec<Resource>,
    pub properties: BTreeMap<String, String>,
}

/// What the writer does to bring one profile's reports to the desired ones.
#[derive(Clone, Debug, PartialEq)]
pub enum ReportWrite {
    /// A plain create where no report of ours is (the writer adds the owner reference): a
    /// report of the same name that someone else made is never taken over.
    Create { namespace: String, manifest: Value },
    /// A forced server-side apply of the whole report over ours, which differs.
    Update { namespace: String, manifest: Value },
    /// A report of this profile in a namespace it no longer reports on, preconditioned on its
    /// uid.
    Delete {
        namespace: String,
        name: String,
        uid: String,
    },
}

/// A report observed in the cluster, reduced to what the comparison reads.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ObservedReport {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub owner_uids: Vec<String>,
    pub source: Value,
    pub summary: Value,
    pub results: Value,
}

/// The report each namespace the profile selects should hold, keyed by namespace. None in
/// a terminating namespace: its deletion takes the report, and a write there is refused.
pub fn desired_reports(
    profile: &str,
    spec: &HardeningProfileSpec,
    findings: &Findings,
    terminating: &BTreeSet<String>,
) -> BTreeMap<String, Value> {
    findings
        .selection
        .namespaces
        .iter()
        .filter(|ns| !terminating.contains(*ns))
        .map(|ns| {
            let results = namespace_results(spec, findings, ns);
            (ns.clone(), report_manifest(profile, spec, ns, &results))
        })
        .collect()
}

/// The writes that make the cluster's reports of the profile (name and uid) the desired
/// ones: an apply where a report is missing or differs in what Rampart sets, a delete where
/// a namespace left the profile. Nothing when they match, so a steady state writes nothing.
pub fn report_writes(
    profile: &str,
    uid: &str,
    desired: BTreeMap<String, Value>,
    observed: &[ObservedReport],
    terminating: &BTreeSet<String>,
) -> Vec<ReportWrite> {
    let name = report_name(profile);
    let ours: BTreeMap<&str, &ObservedReport> = observed
        .iter()
        .filter(|o| o.name == name && o.owner_uids.iter().any(|u| u == uid))
        .map(|o| (o.namespace.as_str(), o))
        .collect();
    let mut writes: Vec<ReportWrite> = ours
        .iter()
        .filter(|(ns, _)| !desired.contains_key(**ns) && !terminating.contains(**ns))
        .map(|(ns, o)| ReportWrite::Delete {
            namespace: ns.to_string(),
            name: o.name.clone(),
            uid: o.uid.clone(),
        })
        .collect();
    for (ns, manifest) in desired {
        writes.push(match ours.get(ns.as_str()) {
            Some(o) if matches(o, &manifest) => continue,
            Some(_) => ReportWrite::Update {
                namespace: ns,
                manifest,
            },
            None => ReportWrite::Create {
                namespace: ns,
                manifest,
            },
        });
    }
    writes
}

/// Whether an observed report holds everything the desired one sets: its labels (others may
/// add theirs), source, summary and results.
fn matches(observed: &ObservedReport, desired: &Value) -> bool {
    let labels_held = desired["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| observed.labels.get(k).map(String::as_str) == v.as_str());
    labels_held
        && observed.source == desired["source"]
        && observed.summary == desired["summary"]
        && observed.results == desired["results"]
}

/// One result per control, in a fixed order.
pub fn namespace_results(
    spec: &HardeningProfileSpec,
    findings: &Findings,
    ns: &str,
) -> Vec<ControlResult> {
    ControlName::ALL
        .into_iter()
        .map(|control| control_result(spec, findings, ns, control))
        .collect()
}

fn control_result(
    spec: &HardeningProfileSpec,
    findings: &Findings,
    ns: &str,
    control: ControlName,
) -> ControlResult {
    let mut properties = BTreeMap::new();
    let exception = findings
        .selection
        .exceptions
        .iter()
        .find(|e| e.namespace == ns && e.control == control.as_str());
    if let Some(e) = exception {
        let key = match e.state {
            ExceptionState::Active => "exception",
            ExceptionState::Expired => "expiredException",
        };
        properties.insert(key.into(), e.reason.clone());
        if let Some(t) = e.expires {
            properties.insert(format!("{key}Expires"), t.to_rfc3339());
        }
    }
    let skip = |message: &str, properties| ControlResult {
        control,
        verdict: Verdict::Skip,
        message: message.into(),
        resources: vec![],
        properties,
    };
    if !enabled(spec, control) {
        return skip("not enabled in the profile", properties);
    }
    if exception.is_some_and(|e| e.state == ExceptionState::Active) {
        return skip("exempted by the profile's exception", properties);
    }
    if !findings.selection.acting_in(control).contains(ns) {
        return skip(
            "another profile holds this control in this namespace",
            properties,
        );
    }
    let drifted = drifted(findings, ns, control);
    if !drifted.is_empty() {
        return ControlResult {
            control,
            verdict: Verdict::Fail,
            message: format!(
                "{} object(s) drifted from the profile{}",
                drifted.len(),
                repair_note(spec)
            ),
            resources: drifted,
            properties,
        };
    }
    let (verdict, message, resources) = control_specific(findings, ns, control);
    ControlResult {
        control,
        verdict,
        message,
        resources,
        properties,
    }
}

fn repair_note(spec: &HardeningProfileSpec) -> &'static str {
    match spec.mode {
        crate::api::Mode::Audit => " (Audit mode: reported, not repaired)",
        crate::api::Mode::Enforce => " (the repair failed or is refused)",
    }
}

fn enabled(spec: &HardeningProfileSpec, control: ControlName) -> bool {
    match control {
        ControlName::NetworkPolicies => spec.network_policies.is_some(),
        ControlName::PodDisruptionBudgets => spec.pod_disruption_budgets.is_some(),
        ControlName::SecretRotation => spec.secret_rotation.is_some(),
        ControlName::Backups => spec.backups.is_some(),
    }
}

/// The control's objects in `ns` whose drift is still standing (a repaired one is no
/// longer drift), sorted.
fn drifted(findings: &Findings, ns: &str, control: ControlName) -> Vec<Resource> {
    let mut out: Vec<Resource> = findings
        .drift
        .iter()
        .filter(|(d, o)| {
            *o != DriftOutcome::Repaired && d.control == control && d.key.namespace == ns
        })
        .map(|(d, _)| Resource {
            kind: d.key.kind.kind().to_string(),
            name: d.key.name.clone(),
            why: d.reason.as_str().to_string(),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What fails or warns beyond drift, per control.
fn control_specific(
    findings: &Findings,
    ns: &str,
    control: ControlName,
) -> (Verdict, String, Vec<Resource>) {
    let pass = (Verdict::Pass, "as the profile asks".to_string(), vec![]);
    match control {
        ControlName::NetworkPolicies => pass,
        ControlName::PodDisruptionBudgets => {
            let n = &findings.namespaces;
            let warned = refs_in(&n.drain_blocking, ns)
                .chain(refs_in(&n.covered_by_user, ns))
                .collect::<Vec<_>>();
            if warned.is_empty() {
                pass
            } else {
                let r = sorted(warned);
                let msg = format!(
                    "{} workload(s) or budget(s) left to the user's budgets or blocking a drain",
                    r.len()
                );
                (Verdict::Warn, msg, r)
            }
        }
        ControlName::SecretRotation => {
            let Some(plan) = &findings.rotation else {
                return pass;
            };
            // A Secret refused by the API server and one whose hook failed both did not rotate.
            let failed: Vec<Resource> = plan
                .unwritable
                .iter()
                .chain(&plan.hook_failures)
                .filter(|s| s.namespace == ns)
                .map(|s| Resource {
                    kind: "Secret".into(),
                    name: s.name.clone(),
                    why: s.reason.clone(),
                })
                .chain(
                    plan.stalled
                        .iter()
                        .filter(|c| c.namespace == ns)
                        .map(|c| Resource {
                            kind: c.kind.as_str().to_string(),
                            name: c.name.clone(),
                            why: "rollout overran its timeout".into(),
                        }),
                )
                .collect();
            if failed.is_empty() {
                pass
            } else {
                let r = sorted(failed);
                let msg = format!("{} Secret(s) or workload(s) hold the rotation", r.len());
                (Verdict::Fail, msg, r)
            }
        }
        ControlName::Backups => {
            let Some(b) = &findings.backups else {
                return pass;
            };
            if b.api_missing {
                return (
                    Verdict::Error,
                    "the cluster does not serve snapshot.storage.k8s.io/v1".into(),
                    vec![],
                );
            }
            let failed: Vec<Resource> = refs_in(&b.unhealthy, ns).collect();
            if failed.is_empty() {
                pass
            } else {
                let r = sorted(failed);
                let msg = format!("{} snapshot(s) unhealthy", r.len());
                (Verdict::Fail, msg, r)
            }
        }
    }
}

fn refs_in<'a>(
    refs: &'a [crate::api::ObjectRefStatus],
    ns: &'a str,
) -> impl Iterator<Item = Resource> + 'a {
    refs.iter()
        .filter(move |r| r.namespace == ns)
        .map(|r| Resource {
            kind: r.kind.clone(),
            name: r.name.clone(),
            why: r.message.clone(),
        })
}

fn sorted(mut r: Vec<Resource>) -> Vec<Resource> {
    r.sort();
    r.dedup();
    r
}

/// The API version dashboards need to link a resource.
fn api_version(kind: &str) -> &'static str {
    match kind {
        "NetworkPolicy" => "networking.k8s.io/v1",
        "PodDisruptionBudget" => "policy/v1",
        "VolumeSnapshot" | "VolumeSnapshotContent" => "snapshot.storage.k8s.io/v1",
        "Deployment" | "StatefulSet" | "DaemonSet" => "apps/v1",
        "Job" => "batch/v1",
        _ => "v1",
    }
}

fn severity(control: ControlName) -> &'static str {
    match control {
        ControlName::NetworkPolicies | ControlName::Backups => "high",
        ControlName::PodDisruptionBudgets | ControlName::SecretRotation => "medium",
    }
}

/// A result as the Report's schema has it, its resources capped.
fn result_json(profile: &str, spec: &HardeningProfileSpec, ns: &str, r: &ControlResult) -> Value {
    let mut properties = r.properties.clone();
    properties.insert("profile".into(), profile.to_string());
    properties.insert("mode".into(), format!("{:?}", spec.mode));
    let more = r.resources.len().saturating_sub(RESOURCES_PER_RESULT);
    if more > 0 {
        properties.insert("moreResources".into(), more.to_string());
    }
    let listed = &r.resources[..r.resources.len().min(RESOURCES_PER_RESULT)];
    let mut message = r.message.clone();
    if !listed.is_empty() {
        let named: Vec<String> = listed
            .iter()
            .map(|x| format!("{} {} ({})", x.kind, x.name, x.why))
            .collect();
        message = format!("{message}: {}", named.join(", "));
        if more > 0 {
            message = format!("{message}, and {more} more");
        }
    }
    let mut out = json!({
        "source": SOURCE,
        "policy": r.control.as_str(),
        "rule": r.control.label(),
        "category": CATEGORY,
        "severity": severity(r.control),
        "result": r.verdict,
        "scored": true,
        "message": message,
        "properties": properties,
    });
    if !listed.is_empty() {
        out["resources"] = listed
            .iter()
            .map(|x| {
                json!({
                    "apiVersion": api_version(&x.kind),
                    "kind": x.kind,
                    "namespace": ns,
                    "name": x.name,
                })
            })
            .collect();
    }
    out
}

fn report_manifest(
    profile: &str,
    spec: &HardeningProfileSpec,
    ns: &str,
    results: &[ControlResult],
) -> Value {
    let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
    json!({
        "apiVersion": format!("{REPORT_GROUP}/{REPORT_VERSION}"),
        "kind": REPORT_KIND,
        "metadata": {
            "name": report_name(profile),
            "namespace": ns,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY_VALUE,
                PROFILE_LABEL: profile,
            },
        },
        "source": SOURCE,
        "summary": {
            "pass": count(Verdict::Pass),
            "fail": count(Verdict::Fail),
            "warn": count(Verdict::Warn),
            "error": count(Verdict::Error),
            "skip": count(Verdict::Skip),
        },
        "results": results.iter().map(|r| result_json(profile, spec, ns, r)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DriftReason, ExceptionStatus};
    use crate::controls::{Drift, ManagedKind, ObjectKey};

    const UID: &str = "uid-1";

    fn spec(mode: &str) -> HardeningProfileSpec {
        serde_json::from_value(json!({
            "mode": mode,
            "namespaces": ["a", "b"],
            "networkPolicies": {},
            "podDisruptionBudgets": {"minReplicas": 2, "maxUnavailable": 1},
        }))
        .expect("a valid spec")
    }

    /// Both namespaces selected, both controls acting in each.
    fn findings() -> Findings {
        let both: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let mut f = Findings::default();
        f.selection.namespaces = both.clone();
        f.selection.acting = BTreeMap::from([
            (ControlName::NetworkPolicies, both.clone()),
            (ControlName::PodDisruptionBudgets, both),
        ]);
        f
    }

    fn policy_drift(ns: &str, name: &str, outcome: DriftOutcome) -> (Drift, DriftOutcome) {
        (
            Drift {
                key: ObjectKey {
                    kind: ManagedKind::NetworkPolicy,
                    namespace: ns.into(),
                    name: name.into(),
                },
                control: ControlName::NetworkPolicies,
                reason: DriftReason::Missing,
                fields: vec![],
            },
            outcome,
        )
    }

    fn reports(spec: &HardeningProfileSpec, f: &Findings) -> BTreeMap<String, Value> {
        desired_reports("regulated", spec, f, &BTreeSet::new())
    }

    fn result<'a>(report: &'a Value, policy: &str) -> &'a Value {
        report["results"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["policy"] == policy))
            .unwrap_or_else(|| panic!("no result for {policy} in {report}"))
    }

    /// What the API server returns for a report Rampart wrote.
    fn as_stored(manifest: &Value, owner: &str) -> ObservedReport {
        ObservedReport {
            namespace: manifest["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .into(),
            name: manifest["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .into(),
            uid: format!("report-in-{}", manifest["metadata"]["namespace"]),
            labels: serde_json::from_value(manifest["metadata"]["labels"].clone())
                .unwrap_or_default(),
            owner_uids: vec![owner.into()],
            source: manifest["source"].clone(),
            summary: manifest["summary"].clone(),
            results: manifest["results"].clone(),
        }
    }

    #[test]
    fn every_selected_namespace_gets_one_report_with_a_result_per_control() {
        let out = reports(&spec("Enforce"), &findings());
        assert_eq!(out.keys().collect::<Vec<_>>(), ["a", "b"]);
        let a = &out["a"];
        assert_eq!(a["metadata"]["name"], "rampart-regulated");
        assert_eq!(a["metadata"]["labels"][MANAGED_BY_LABEL], "rampart");
        assert_eq!(a["metadata"]["labels"][PROFILE_LABEL], "regulated");
        assert_eq!(a["source"], "rampart");
        assert_eq!(a["results"].as_array().map(Vec::len), Some(4));
        assert_eq!(result(a, "NetworkPolicies")["result"], "pass");
        assert_eq!(result(a, "PodDisruptionBudgets")["result"], "pass");
        assert_eq!(result(a, "SecretRotation")["result"], "skip");
        assert_eq!(result(a, "Backups")["result"], "skip");
        assert_eq!(
            a["summary"],
            json!({"pass": 2, "fail": 0, "warn": 0, "error": 0, "skip": 2})
        );
    }

    #[test]
    fn standing_drift_fails_its_control_in_its_namespace_naming_the_object() {
        let mut f = findings();
        f.drift = vec![policy_drift(
            "a",
            "rampart-default-deny",
            DriftOutcome::Reported,
        )];
        let out = reports(&spec("Audit"), &f);
        let np = result(&out["a"], "NetworkPolicies");
        assert_eq!(np["result"], "fail");
        assert_eq!(
            np["resources"],
            json!([{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "namespace": "a", "name": "rampart-default-deny"}])
        );
        assert!(np["message"]
            .as_str()
            .is_some_and(|m| m.contains("rampart-default-deny (Missing)")));
        assert_eq!(out["a"]["summary"]["fail"], 1);
        assert_eq!(result(&out["b"], "NetworkPolicies")["result"], "pass");
    }

    #[test]
    fn a_secret_whose_rotation_hook_failed_fails_rotation_in_its_namespace() {
        use crate::controls::rotation::{
            plan_rotation, stamp::Mark, Past, SecretInfo, UnwritableSecret,
        };
        let mut sp = spec("Enforce");
        sp.secret_rotation = Some(crate::api::fixtures::rotation("r2", 1));
        let mut f = findings();
        f.selection.acting.insert(
            ControlName::SecretRotation,
            ["a".to_string(), "b".to_string()].into(),
        );
        let failed = SecretInfo {
            namespace: "a".into(),
            name: "db".into(),
            rotation_id: Some("r2".into()),
            mark: Mark::HookFailed,
            ..Default::default()
        };
        let past = Past {
            hook_failures: vec![UnwritableSecret {
                namespace: "a".into(),
                name: "db".into(),
                reason: "hook Job rampart-hook-db-1 failed: BackoffLimitExceeded".into(),
            }],
            ..Default::default()
        };
        let rotation = sp.secret_rotation.clone().expect("set above");
        f.rotation = Some(plan_rotation(
            &rotation,
            &[failed],
            &[],
            &past,
            chrono::Utc::now(),
        ));
        let out = reports(&sp, &f);
        let rot = result(&out["a"], "SecretRotation");
        assert_eq!(rot["result"], "fail", "{rot}");
        assert!(
            rot["message"]
                .as_str()
                .is_some_and(|m| m.contains("rampart-hook-db-1")),
            "{rot}"
        );
        assert_eq!(result(&out["b"], "SecretRotation")["result"], "pass");
    }

    #[test]
    fn repaired_drift_passes() {
        let mut f = findings();
        f.drift = vec![policy_drift(
            "a",
            "rampart-default-deny",
            DriftOutcome::Repaired,
        )];
        let out = reports(&spec("Enforce"), &f);
        assert_eq!(result(&out["a"], "NetworkPolicies")["result"], "pass");
    }

    #[test]
    fn resources_are_capped_and_the_rest_counted() {
        let mut f = findings();
        f.drift = (0..RESOURCES_PER_RESULT + 5)
            .map(|i| policy_drift("a", &format!("p-{i:03}"), DriftOutcome::Failed))
            .collect();
        let out = reports(&spec("Enforce"), &f);
        let np = result(&out["a"], "NetworkPolicies");
        assert_eq!(
            np["resources"].as_array().map(Vec::len),
            Some(RESOURCES_PER_RESULT)
        );
        assert_eq!(np["properties"]["moreResources"], "5");
        assert!(np["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("and 5 more")));
    }

    #[test]
    fn an_active_exception_skips_the_control_with_its_reason() {
        let mut f = findings();
        f.selection
            .acting
            .entry(ControlName::NetworkPolicies)
            .or_default()
            .remove("a");
        f.selection.exceptions = vec![ExceptionStatus {
            namespace: "a".into(),
            control: "NetworkPolicies".into(),
            reason: "legacy app, ticket SEC-1".into(),
            state: ExceptionState::Active,
            expires: Some("2027-01-01T00:00:00Z".parse().expect("a time")),
        }];
        let out = reports(&spec("Enforce"), &f);
        let np = result(&out["a"], "NetworkPolicies");
        assert_eq!(np["result"], "skip");
        assert_eq!(np["properties"]["exception"], "legacy app, ticket SEC-1");
        assert_eq!(
            np["properties"]["exceptionExpires"],
            "2027-01-01T00:00:00+00:00"
        );
        assert!(result(&out["b"], "NetworkPolicies")["properties"]
            .get("exception")
            .is_none());
    }

    #[test]
    fn an_expired_exception_is_named_and_the_control_judged_again() {
        let mut f = findings();
        f.selection.exceptions = vec![ExceptionStatus {
            namespace: "a".into(),
            control: "NetworkPolicies".into(),
            reason: "was temporary".into(),
            state: ExceptionState::Expired,
            expires: None,
        }];
        f.drift = vec![policy_drift(
            "a",
            "rampart-default-deny",
            DriftOutcome::Reported,
        )];
        let np = result(&reports(&spec("Audit"), &f)["a"], "NetworkPolicies").clone();
        assert_eq!(np["result"], "fail");
        assert_eq!(np["properties"]["expiredException"], "was temporary");
    }

    #[test]
    fn a_terminating_namespace_gets_no_report_and_keeps_its_own() {
        let f = findings();
        let terminating: BTreeSet<String> = ["b".to_string()].into();
        let desired = desired_reports("regulated", &spec("Enforce"), &f, &terminating);
        assert_eq!(desired.keys().collect::<Vec<_>>(), ["a"]);
        let observed = vec![
            as_stored(&desired["a"], UID),
            ObservedReport {
                namespace: "b".into(),
                ..as_stored(&desired["a"], UID)
            },
        ];
        assert_eq!(
            report_writes("regulated", UID, desired, &observed, &terminating),
            vec![]
        );
    }

    #[test]
    fn the_same_findings_give_the_same_reports_and_no_write() {
        let (s, f) = (spec("Enforce"), findings());
        let first = reports(&s, &f);
        assert_eq!(first, reports(&s, &f));
        let observed: Vec<ObservedReport> = first.values().map(|m| as_stored(m, UID)).collect();
        let writes = report_writes(
            "regulated",
            UID,
            reports(&s, &f),
            &observed,
            &BTreeSet::new(),
        );
        assert_eq!(writes, vec![]);
    }

    #[test]
    fn a_changed_result_updates_only_that_namespace_and_a_missing_report_is_created() {
        let s = spec("Audit");
        let before = reports(&s, &findings());
        let observed = vec![as_stored(&before["a"], UID)];
        let mut f = findings();
        f.drift = vec![policy_drift(
            "a",
            "rampart-allow-dns",
            DriftOutcome::Reported,
        )];
        let after = reports(&s, &f);
        let writes = report_writes("regulated", UID, after.clone(), &observed, &BTreeSet::new());
        assert_eq!(
            writes,
            vec![
                ReportWrite::Update {
                    namespace: "a".into(),
                    manifest: after["a"].clone()
                },
                ReportWrite::Create {
                    namespace: "b".into(),
                    manifest: after["b"].clone()
                },
            ]
        );
    }

    #[test]
    fn a_namespace_that_left_the_profile_loses_only_our_report() {
        let s = spec("Enforce");
        let before = reports(&s, &findings());
        let mut f = findings();
        f.selection.namespaces.remove("b");
        let theirs = ObservedReport {
            namespace: "c".into(),
            ..as_stored(&before["b"], "someone-else")
        };
        let observed = vec![
            as_stored(&before["a"], UID),
            as_stored(&before["b"], UID),
            theirs,
        ];
        let writes = report_writes(
            "regulated",
            UID,
            reports(&s, &f),
            &observed,
            &BTreeSet::new(),
        );
        assert_eq!(
            writes,
            vec![ReportWrite::Delete {
                namespace: "b".into(),
                name: "rampart-regulated".into(),
                uid: "report-in-\"b\"".into(),
            }]
        );
    }
}
