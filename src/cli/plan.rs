//! `rampart plan`: what applying a profile would do, read from the live cluster and computed
//! by the very functions a pass runs (`crate::pass`'s planners over `crate::observe`'s
//! queries), so the preview cannot disagree with the controller. Calls the API, reads only:
//! lists (namespaces and Secrets as metadata), a few gets for restore verification, never a
//! write.
//!
//! [`plan`] observes and plans; [`Plan`] sorts the writes per namespace into what a person
//! asks of a preview (create, change, delete, adopt, rotate, restart, snapshot) and renders
//! them as text or JSON.

use std::collections::BTreeMap;

use chrono::{SubsecRound, Utc};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use crate::api::validate::{invalid_fields_within, invalid_profile_name, InvalidField, Limits};
use crate::api::{ControlName, HardeningProfile, Mode};
use crate::controls::{backups, Drift, ManagedKind, Write};
use crate::observe::{self, clock::ServerClock};
use crate::pass::{
    backups_outcome, removal_outcome, rotation_outcome, select_among, verify_outcome,
    NamespacePlanner,
};
use crate::selection::ExcludedNamespaces;

/// The uid a profile not yet in the cluster plans under: no object carries it, so nothing
/// counts as already its own (a first apply).
pub const NEW_PROFILE_UID: &str = "rampart-plan-not-yet-created";

/// Exit code when the cluster already holds what the profile asks (like `kubectl diff`).
pub const EXIT_NO_CHANGES: i32 = 0;
/// Exit code when applying the profile would write something.
pub const EXIT_CHANGES: i32 = 2;

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a HardeningProfile: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("the profile in the file has no metadata.name")]
    NoName,
    #[error("the profile is invalid, so the operator would do nothing but report: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidSpec(Vec<InvalidField>),
    #[error("reading {what} from the cluster: {source}")]
    Observe {
        what: &'static str,
        source: kube::Error,
    },
    #[error(transparent)]
    Plan(#[from] crate::Error),
}

/// What the plan is asked beyond the profile: what the operator's own flags would decide.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub excluded_namespaces: ExcludedNamespaces,
    pub limits: Limits,
}

/// Reads a profile manifest (YAML or JSON) from `path`, `-` for stdin.
pub fn read_profile(path: &str) -> Result<HardeningProfile, PlanError> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|source| PlanError::Read {
        path: path.to_string(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|source| PlanError::Parse {
        path: path.to_string(),
        source,
    })
}

/// What applying `wanted` would do to the cluster `client` reaches. A profile of that name
/// already in the cluster lends its identity and status (rotation history, snapshot slots);
/// otherwise the plan is a first apply.
pub async fn plan(
    client: &Client,
    wanted: &HardeningProfile,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let name = wanted.metadata.name.clone().ok_or(PlanError::NoName)?;
    let mut invalid = invalid_fields_within(&wanted.spec, options.limits);
    invalid.extend(invalid_profile_name(&name));
    if !invalid.is_empty() {
        return Err(PlanError::InvalidSpec(invalid));
    }
    let now = Utc::now().trunc_subsecs(0);
    let profiles = Api::<HardeningProfile>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| PlanError::Observe {
            what: "HardeningProfiles",
            source,
        })?
        .items;
    let existing = profiles.iter().find(|p| p.name_any() == name);
    let profile = as_applied(wanted, existing, now);
    let uid = profile
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| NEW_PROFILE_UID.into());
    let caches = observe::caches_listed(client)
        .await
        .map_err(|source| PlanError::Observe {
            what: "the objects the controls read",
            source,
        })?;
    let others = profiles.iter().filter(|p| p.name_any() != name);
    let selection = select_among(
        &profile,
        others.chain(std::iter::once(&profile)),
        &caches,
        &options.excluded_namespaces,
        now,
    );
    let mut writes = Vec::new();
    let mut drift = Vec::new();
    let planner = NamespacePlanner::new(&name, &profile.spec, &selection);
    let index = caches.namespace_index(&name, &uid, None);
    for ns in planner.full_scope(&index) {
        let out = planner.plan(&index.observed(&ns));
        writes.extend(out.writes);
        drift.extend(out.drift);
    }
    let status = profile.status.as_ref();
    if let Some(rot) = &profile.spec.secret_rotation {
        let out = rotation_outcome(
            &caches,
            client,
            (&name, &uid),
            rot,
            &selection,
            status,
            Utc::now(),
        )
        .await;
        writes.extend(out.writes);
        drift.extend(out.drift);
    }
    let verify = profile
        .spec
        .backups
        .as_ref()
        .and_then(|b| b.verify.as_ref());
    if let Some(spec) = &profile.spec.backups {
        let acting = selection.acting_in(ControlName::Backups);
        let clock = backups::Clock {
            local: now,
            server: ServerClock::default().now(client).await,
        };
        let out = backups_outcome(&caches, (&name, &uid), spec, &acting, status, clock);
        writes.extend(out.writes);
        drift.extend(out.drift);
        if let Some(v) = verify {
            let out = verify_outcome(
                client,
                &caches,
                (&name, &uid),
                (spec, v),
                &acting,
                status,
                now,
            )
            .await?;
            writes.extend(out.writes);
            drift.extend(out.drift);
        }
    }
    if verify.is_none() {
        if let (_, Some(out)) = removal_outcome(client, &caches, (&name, &uid), status, now).await?
        {
            writes.extend(out.writes);
        }
    }
    Ok(Plan::of(&profile, existing.is_some(), &writes, &drift))
}

/// `wanted` as it would stand once applied: the file's spec, with the identity and status of
/// the profile of that name already in the cluster, or the metadata of a new one (created
/// now, so older profiles keep the namespaces they hold).
fn as_applied(
    wanted: &HardeningProfile,
    existing: Option<&HardeningProfile>,
    now: chrono::DateTime<Utc>,
) -> HardeningProfile {
    let mut profile = wanted.clone();
    match existing {
        Some(e) => {
            profile.metadata.uid = e.metadata.uid.clone();
            profile.metadata.creation_timestamp = e.metadata.creation_timestamp.clone();
            profile.status = e.status.clone();
        }
        None => {
            profile.metadata.uid = None;
            profile.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(now.timestamp()).unwrap_or_default(),
                ));
            profile.status = None;
        }
    }
    profile
}

/// What a write means to a person reading a preview.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Create,
    Change,
    Delete,
    Adopt,
    Rotate,
    Restart,
    Snapshot,
    /// A rotation hook's Job started, or its end recorded on the Secret.
    Hook,
}

impl Change {
    pub const ALL: [Change; 8] = [
        Change::Create,
        Change::Change,
        Change::Delete,
        Change::Adopt,
        Change::Rotate,
        Change::Restart,
        Change::Snapshot,
        Change::Hook,
    ];

    fn of(write: &Write) -> Self {
        match write {
            Write::Create(d) if d.key.kind == ManagedKind::VolumeSnapshot => Change::Snapshot,
            Write::Create(_) => Change::Create,
            // A released snapshot is kept, only no longer ours: a change, not a deletion.
            Write::Repair(_) | Write::Orphan(_) => Change::Change,
            Write::Delete(_) => Change::Delete,
            Write::AdoptSecret { .. } => Change::Adopt,
            Write::RotateSecret(_) => Change::Rotate,
            Write::StampWorkload { .. } => Change::Restart,
            Write::StartHook { .. } | Write::EndHook { .. } => Change::Hook,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Change => "change",
            Change::Delete => "delete",
            Change::Adopt => "adopt",
            Change::Rotate => "rotate",
            Change::Restart => "restart",
            Change::Snapshot => "snapshot",
            Change::Hook => "hook",
        }
    }
}

/// One object a write is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Item {
    pub change: Change,
    pub kind: String,
    pub name: String,
    /// For a change: the fields that differ from the profile.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// Drift that no write repairs (an object of someone else's holding a name, for example).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Reported {
    pub kind: String,
    pub name: String,
    pub reason: String,
}

/// One namespace's share of the plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NamespacePlan {
    pub changes: Vec<Item>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reported: Vec<Reported>,
}

/// The namespace key of cluster-scoped objects (restore verification's scratch namespace).
pub const CLUSTER_SCOPED: &str = "(cluster)";

/// What applying one profile would do, per namespace; the JSON form (`-o json`) is this
/// struct, field for field.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub profile: String,
    pub mode: Mode,
    /// The cluster already has a profile of this name (its status was planned from).
    pub exists: bool,
    /// Counts per change over every namespace.
    pub totals: BTreeMap<Change, usize>,
    pub namespaces: BTreeMap<String, NamespacePlan>,
}

impl Plan {
    /// Sorts `writes` per namespace and change; drift no write repairs is listed as reported.
    pub fn of(profile: &HardeningProfile, exists: bool, writes: &[Write], drift: &[Drift]) -> Self {
        let ns_key = |ns: &str| {
            if ns.is_empty() {
                CLUSTER_SCOPED.to_string()
            } else {
                ns.to_string()
            }
        };
        let mut namespaces: BTreeMap<String, NamespacePlan> = BTreeMap::new();
        let mut written = std::collections::BTreeSet::new();
        for w in writes {
            let target = w.target();
            let change = Change::of(w);
            let fields = match w {
                Write::Repair(d) => drift
                    .iter()
                    .find(|x| x.key == d.key)
                    .map(|x| x.fields.clone())
                    .unwrap_or_default(),
                _ => vec![],
            };
            written.insert((target.kind, target.namespace.clone(), target.name.clone()));
            namespaces
                .entry(ns_key(&target.namespace))
                .or_default()
                .changes
                .push(Item {
                    change,
                    kind: target.kind.to_string(),
                    name: target.name,
                    fields,
                });
        }
        for d in drift {
            let key = (
                d.key.kind.kind(),
                d.key.namespace.clone(),
                d.key.name.clone(),
            );
            if !written.contains(&key) {
                namespaces
                    .entry(ns_key(&d.key.namespace))
                    .or_default()
                    .reported
                    .push(Reported {
                        kind: key.0.to_string(),
                        name: key.2,
                        reason: d.reason.as_str().to_string(),
                    });
            }
        }
        let mut totals = BTreeMap::new();
        for p in namespaces.values_mut() {
            p.changes.sort();
            p.changes.dedup();
            p.reported.sort();
            p.reported.dedup();
            for i in &p.changes {
                *totals.entry(i.change).or_default() += 1;
            }
        }
        Self {
            profile: profile.name_any(),
            mode: profile.spec.mode,
            exists,
            totals,
            namespaces,
        }
    }

    /// How many writes applying the profile in Enforce mode would make.
    pub fn writes(&self) -> usize {
        self.totals.values().sum()
    }

    /// 0 when nothing would be written, 2 when something would (as `kubectl diff`).
    pub fn exit_code(&self) -> i32 {
        if self.writes() == 0 {
            EXIT_NO_CHANGES
        } else {
            EXIT_CHANGES
        }
    }

    /// The JSON form: stable field names, namespaces and items sorted.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The text form: a header, then per namespace one line per object.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "HardeningProfile {} ({}, {})",
            self.profile,
            if self.exists { "in the cluster" } else { "new" },
            match self.mode {
                Mode::Enforce => "Enforce",
                Mode::Audit => "Audit",
            }
        );
        if self.mode == Mode::Audit && self.writes() > 0 {
            out.push_str(
                "Audit mode: nothing below is written; it is reported as drift, and is what \
                 setting mode: Enforce would write.\n",
            );
        }
        if self.writes() == 0 {
            out.push_str("No changes: the cluster already holds what the profile asks.\n");
        } else {
            let counts: Vec<String> = Change::ALL
                .iter()
                .filter_map(|c| {
                    self.totals
                        .get(c)
                        .filter(|n| **n > 0)
                        .map(|n| format!("{n} to {}", c.as_str()))
                })
                .collect();
            let _ = writeln!(out, "Plan: {}.", counts.join(", "));
        }
        for (ns, p) in &self.namespaces {
            let _ = writeln!(out, "\nnamespace {ns}:");
            for i in &p.changes {
                let _ = write!(out, "  {:<9} {}/{}", i.change.as_str(), i.kind, i.name);
                if !i.fields.is_empty() {
                    let _ = write!(out, " ({})", i.fields.join(", "));
                }
                out.push('\n');
            }
            for r in &p.reported {
                let _ = writeln!(
                    out,
                    "  {:<9} {}/{} ({})",
                    "reported", r.kind, r.name, r.reason
                );
            }
        }
        out
    }
}

/// Reads the profile in `path` and plans it against the cluster `client` reaches.
pub async fn plan_file(
    client: &Client,
    path: &str,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let wanted = read_profile(path)?;
    plan(client, &wanted, options).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::budgets_only;
    use crate::api::DriftReason;
    use crate::controls::rotation::{ConsumerKind, ConsumerRef};
    use crate::controls::{DesiredObject, ObjectKey, ObservedObject, SecretRef};

    fn key(kind: ManagedKind, ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn desired(kind: ManagedKind, ns: &str, name: &str) -> DesiredObject {
        DesiredObject {
            key: key(kind, ns, name),
            control: ControlName::NetworkPolicies,
            manifest: serde_json::json!({}),
        }
    }

    fn observed(kind: ManagedKind, ns: &str, name: &str) -> ObservedObject {
        ObservedObject {
            key: key(kind, ns, name),
            control: None,
            uid: None,
            labels: Default::default(),
            annotations: Default::default(),
            fingerprint: None,
        }
    }

    fn profile(mode: Mode) -> HardeningProfile {
        HardeningProfile::new("regulated", budgets_only(mode))
    }

    fn every_kind_of_write() -> Vec<Write> {
        vec![
            Write::Create(desired(
                ManagedKind::NetworkPolicy,
                "countly",
                "rampart-default-deny",
            )),
            Write::Repair(desired(
                ManagedKind::PodDisruptionBudget,
                "kafka",
                "rampart-broker",
            )),
            Write::Delete(observed(
                ManagedKind::PodDisruptionBudget,
                "kafka",
                "rampart-old",
            )),
            Write::Create(desired(
                ManagedKind::VolumeSnapshot,
                "mongodb",
                "data-0-slot",
            )),
            Write::AdoptSecret {
                secret: SecretRef {
                    namespace: "mongodb".into(),
                    name: "creds".into(),
                },
                rotation_id: "r1".into(),
                expected: None,
            },
            Write::StampWorkload {
                consumer: ConsumerRef {
                    kind: ConsumerKind::Deployment,
                    namespace: "countly".into(),
                    name: "api".into(),
                },
                rotation_id: "r1".into(),
                at: Utc::now(),
                created_before: None,
                gates: true,
            },
        ]
    }

    #[test]
    fn writes_are_sorted_per_namespace_into_what_a_person_asks() {
        let drift = vec![Drift {
            key: key(ManagedKind::PodDisruptionBudget, "kafka", "rampart-broker"),
            control: ControlName::PodDisruptionBudgets,
            reason: DriftReason::Modified,
            fields: vec!["spec.maxUnavailable".into()],
        }];
        let plan = Plan::of(
            &profile(Mode::Enforce),
            false,
            &every_kind_of_write(),
            &drift,
        );
        let changes = |ns: &str| -> Vec<(Change, String)> {
            plan.namespaces[ns]
                .changes
                .iter()
                .map(|i| (i.change, i.name.clone()))
                .collect()
        };
        assert_eq!(
            changes("countly"),
            [
                (Change::Create, "rampart-default-deny".to_string()),
                (Change::Restart, "api".to_string())
            ]
        );
        assert_eq!(
            changes("kafka"),
            [
                (Change::Change, "rampart-broker".to_string()),
                (Change::Delete, "rampart-old".to_string())
            ]
        );
        assert_eq!(
            changes("mongodb"),
            [
                (Change::Adopt, "creds".to_string()),
                (Change::Snapshot, "data-0-slot".to_string())
            ]
        );
        assert_eq!(
            plan.namespaces["kafka"].changes[0].fields,
            ["spec.maxUnavailable"]
        );
        assert_eq!(plan.writes(), 6);
        assert_eq!(plan.exit_code(), EXIT_CHANGES);
    }

    #[test]
    fn nothing_to_write_exits_zero_and_says_so() {
        let plan = Plan::of(&profile(Mode::Enforce), true, &[], &[]);
        assert_eq!(plan.exit_code(), EXIT_NO_CHANGES);
        assert!(plan.to_text().contains("No changes"));
    }

    #[test]
    fn drift_no_write_repairs_is_reported_not_counted() {
        let drift = vec![Drift {
            key: key(
                ManagedKind::NetworkPolicy,
                "countly",
                "rampart-default-deny",
            ),
            control: ControlName::NetworkPolicies,
            reason: DriftReason::NameTaken,
            fields: vec![],
        }];
        let plan = Plan::of(&profile(Mode::Enforce), true, &[], &drift);
        assert_eq!(plan.exit_code(), EXIT_NO_CHANGES);
        assert_eq!(
            plan.namespaces["countly"].reported,
            [Reported {
                kind: "NetworkPolicy".into(),
                name: "rampart-default-deny".into(),
                reason: "NameTaken".into()
            }]
        );
    }

    #[test]
    fn audit_plan_says_nothing_is_written() {
        let plan = Plan::of(&profile(Mode::Audit), false, &every_kind_of_write(), &[]);
        let text = plan.to_text();
        assert!(
            text.contains("Audit mode: nothing below is written"),
            "{text}"
        );
        assert!(
            text.contains("namespace countly:\n  create    NetworkPolicy/rampart-default-deny\n"),
            "{text}"
        );
    }

    #[test]
    fn json_names_are_stable() {
        let plan = Plan::of(&profile(Mode::Enforce), false, &every_kind_of_write(), &[]);
        let v: serde_json::Value = serde_json::from_str(&plan.to_json()).expect("valid JSON");
        assert_eq!(v["profile"], "regulated");
        assert_eq!(v["mode"], "Enforce");
        assert_eq!(v["exists"], false);
        assert_eq!(v["totals"]["snapshot"], 1);
        assert_eq!(
            v["namespaces"]["mongodb"]["changes"][1]["change"],
            "snapshot"
        );
        assert_eq!(
            v["namespaces"]["mongodb"]["changes"][1]["kind"],
            "VolumeSnapshot"
        );
    }

    #[test]
    fn a_new_profile_plans_as_created_now_and_an_existing_one_with_its_status() {
        let now = Utc::now().trunc_subsecs(0);
        let wanted = profile(Mode::Enforce);
        let fresh = as_applied(&wanted, None, now);
        assert_eq!(fresh.metadata.uid, None);
        assert_eq!(
            fresh
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(observe::to_chrono),
            Some(now)
        );
        let mut there = profile(Mode::Audit);
        there.metadata.uid = Some("u-1".into());
        there.status = Some(Default::default());
        let applied = as_applied(&wanted, Some(&there), now);
        assert_eq!(applied.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(applied.spec.mode, Mode::Enforce);
        assert!(applied.status.is_some());
    }
}
