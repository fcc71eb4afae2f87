//! Restore verification: on its own schedule, restore the newest ready snapshot of each
//! selected PVC into a scratch PVC in a namespace Rampart owns, wait until it binds, record the
//! result and delete the scratch objects. Pure: the spec, what was observed (scratch objects
//! included) and `now` are arguments; the writer makes every change.
//!
//! A VolumeSnapshot is namespaced and a PVC's dataSource must be in the PVC's namespace, so the
//! restore goes through a pre-provisioned VolumeSnapshotContent (`deletionPolicy: Retain`, so
//! deleting it never deletes the real snapshot) pointing at the source snapshot's handle, bound
//! to a VolumeSnapshot made in the scratch namespace, which the scratch PVC restores from.
//!
//! The cluster is the record: scratch objects are named from (namespace, PVC, slot) and carry
//! labels saying which PVC and slot they verify, so a restart or a retry finds them and goes on,
//! and never makes a second set. A result is final for its slot once it is in the status.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::backups::{pvc_label_value, PVC_LABEL};
use super::{bounded_name, DesiredObject, ManagedKind, ObjectKey, ObservedObject, Outcome, Write};
use crate::api::{
    BackupControl, ControlName, VerificationResult, VerificationStatus, VerifyControl, VerifyJob,
    CONTROL_LABEL, STATUS_LIST_LIMIT,
};
use crate::events::Event;
use crate::ownership::managed_labels;
use crate::schedule::Schedule;

/// The `rampart.dev/control` value on scratch objects: they are the backups control's, but are
/// never counted, pruned or orphaned as its snapshots.
pub const SCRATCH_CONTROL: &str = "verify";
/// Label naming the namespace of the PVC a scratch object verifies (hashed when too long).
pub const SOURCE_NAMESPACE_LABEL: &str = "rampart.dev/pvc-namespace";
/// Label naming the verification slot a scratch object is for (`20261123T020000Z`).
pub const SLOT_LABEL: &str = "rampart.dev/verify-slot";
/// Annotation naming the source VolumeSnapshot a scratch object restores.
pub const SOURCE_SNAPSHOT_ANNOTATION: &str = "rampart.dev/source-snapshot";
/// Prefix of the scratch namespace, one per profile.
pub const SCRATCH_NAMESPACE_PREFIX: &str = "rampart-verify-";
/// How soon a pass looks again after asking for the scratch namespace.
const NAMESPACE_WAIT: i64 = 2;
/// How often a running check Job is looked at: Jobs are not watched (a cluster-wide Job cache
/// for the few scratch Jobs would cost more than reading them while one runs).
const JOB_POLL: i64 = 5;

/// The scratch namespace of a profile.
pub fn scratch_namespace(profile: &str) -> String {
    bounded_name(SCRATCH_NAMESPACE_PREFIX, profile, 63)
}

/// What a scratch object of a PVC and a slot is named from.
fn slot_base(namespace: &str, pvc: &str, slot: DateTime<Utc>) -> String {
    format!("{namespace}-{pvc}-{}", slot.format("%Y%m%d-%H%M%S"))
}

/// The scratch VolumeSnapshot's and PVC's name for a PVC and a slot.
pub fn scratch_name(namespace: &str, pvc: &str, slot: DateTime<Utc>) -> String {
    bounded_name("", &slot_base(namespace, pvc, slot), 253)
}

/// The check Job's name for a PVC and a slot: 63 characters at most, since the Job controller
/// puts it in its pods' `job-name` label.
pub fn job_name(namespace: &str, pvc: &str, slot: DateTime<Utc>) -> String {
    bounded_name("", &slot_base(namespace, pvc, slot), 63)
}

/// The scratch VolumeSnapshotContent's name (cluster-scoped, so the profile is in it).
pub fn content_name(profile: &str, namespace: &str, pvc: &str, slot: DateTime<Utc>) -> String {
    bounded_name(
        SCRATCH_NAMESPACE_PREFIX,
        &format!("{profile}-{}", slot_base(namespace, pvc, slot)),
        253,
    )
}

/// The slot as a label value.
pub fn slot_label(slot: DateTime<Utc>) -> String {
    slot.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Reads a [`slot_label`] back.
pub fn parse_slot_label(value: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Whether a write's target is a scratch object (not one of the profile's real snapshots).
pub fn is_scratch(kind: &str, namespace: &str) -> bool {
    kind == "VolumeSnapshotContent" || namespace.starts_with(SCRATCH_NAMESPACE_PREFIX)
}

/// A selected PVC as verification sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyPvc {
    pub namespace: String,
    pub name: String,
    pub storage_class: Option<String>,
    /// `spec.resources.requests.storage`.
    pub request: Option<String>,
}

/// One of the profile's real snapshots, with what a restore needs of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceSnapshot {
    pub namespace: String,
    pub name: String,
    pub pvc: String,
    /// Its slot, else its creation time: what "newest" orders by.
    pub taken: Option<DateTime<Utc>>,
    pub ready: bool,
    pub failed: bool,
    /// `status.boundVolumeSnapshotContentName`.
    pub content: Option<String>,
    /// `status.restoreSize`.
    pub restore_size: Option<String>,
}

/// What a restore needs of a source snapshot's bound content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentInfo {
    pub snapshot_handle: String,
    pub driver: String,
}

/// A scratch object of the profile (its labels and an owner reference to it).
#[derive(Clone, Debug, PartialEq)]
pub struct ScratchObject {
    pub object: ObservedObject,
    /// The labels naming the PVC it verifies ([`pvc_label_value`] of each).
    pub source_namespace: String,
    pub source_pvc: String,
    pub slot: Option<DateTime<Utc>>,
    pub created: Option<DateTime<Utc>>,
    /// The source snapshot, from [`SOURCE_SNAPSHOT_ANNOTATION`] where the object keeps it.
    pub snapshot: Option<String>,
    /// A VolumeSnapshot's `readyToUse`.
    pub ready: bool,
    /// A VolumeSnapshot's error message.
    pub error: Option<String>,
    /// A PVC's phase is Bound.
    pub bound: bool,
    /// It carries a deletionTimestamp: a finished verification's leftover on its way out.
    pub deleting: bool,
    /// A check Job's state.
    pub job: JobState,
}

/// Where a check Job stands, from its `Complete` and `Failed` conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum JobState {
    #[default]
    Running,
    Complete,
    /// The Failed condition's reason and message.
    Failed(String),
}

/// Whether the scratch namespace is there and whose it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScratchNamespace {
    #[default]
    Missing,
    Ours,
    Terminating,
    /// Someone else's namespace holds the name: nothing is made there.
    Taken,
}

/// What restore verification observes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyObserved {
    pub namespace: ScratchNamespace,
    pub pvcs: Vec<VerifyPvc>,
    pub snapshots: Vec<SourceSnapshot>,
    /// Bound contents of source snapshots, by name, as far as they were read.
    pub contents: BTreeMap<String, ContentInfo>,
    /// Whether [`VerifyFindings::needs_contents`] were read (absent ones do not exist).
    pub contents_read: bool,
    pub scratch: Vec<ScratchObject>,
    /// The newest `ProvisioningFailed` (or other warning) message of each pending scratch PVC.
    pub pending_reasons: BTreeMap<String, String>,
    pub previous: Vec<VerificationStatus>,
}

/// What restore verification reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyFindings {
    /// The last verification of each selected PVC.
    pub entries: Vec<VerificationStatus>,
    /// Selected PVCs.
    pub pvcs: usize,
    /// Contents the plan must read before it can start a restore.
    pub needs_contents: Vec<String>,
    /// Failures recorded by this pass.
    pub failed_now: usize,
    /// Verifications under way.
    pub in_flight: usize,
    /// Each PVC's last successful verification time, for the metric.
    pub verified_times: Vec<(String, String, DateTime<Utc>)>,
}

/// The newest ready snapshot of a PVC that did not fail: what verification restores.
pub fn newest_ready<'a>(
    pvc: &VerifyPvc,
    snapshots: &'a [SourceSnapshot],
) -> Option<&'a SourceSnapshot> {
    snapshots
        .iter()
        .filter(|s| s.namespace == pvc.namespace && s.pvc == pvc.name && s.ready && !s.failed)
        .max_by_key(|s| (s.taken, s.name.clone()))
}

/// Restore verification for one pass: the scratch objects to make or delete, the results to
/// record, and when to look again (the next slot, or a running verification's timeout).
pub fn plan(
    profile: &str,
    backups: &BackupControl,
    spec: &VerifyControl,
    observed: &VerifyObserved,
    now: DateTime<Utc>,
) -> Outcome<VerifyFindings> {
    let Ok(schedule) = Schedule::parse(&spec.schedule, backups.time_zone.as_deref()) else {
        return Outcome::default();
    };
    let slot = schedule.latest_at_or_before(now);
    let timeout = Duration::seconds(spec.timeout_seconds);
    let ns = scratch_namespace(profile);
    let mut out: Outcome<VerifyFindings> = Outcome {
        next_due: schedule.next_after(now),
        ..Default::default()
    };
    let due = |t: DateTime<Utc>, out: &mut Outcome<VerifyFindings>| {
        out.next_due = Some(out.next_due.map_or(t, |d| d.min(t)));
    };
    let mut entries: BTreeMap<(String, String), VerificationStatus> = observed
        .previous
        .iter()
        .filter(|e| {
            observed
                .pvcs
                .iter()
                .any(|p| p.namespace == e.namespace && p.name == e.pvc)
        })
        .map(|e| ((e.namespace.clone(), e.pvc.clone()), e.clone()))
        .collect();
    let mut namespace_wanted = false;
    for pvc in &observed.pvcs {
        let key = (pvc.namespace.clone(), pvc.name.clone());
        let mine: Vec<&ScratchObject> = observed
            .scratch
            .iter()
            .filter(|o| {
                o.source_namespace == pvc_label_value(&pvc.namespace)
                    && o.source_pvc == pvc_label_value(&pvc.name)
            })
            .collect();
        let Some(latest) = slot else {
            out.writes.extend(delete_all(&mine));
            continue;
        };
        // A verification under way finishes for its own slot even when later slots have
        // passed (a timeout longer than the period); the next one starts after it.
        let recorded = entries.get(&key).map(|e| e.slot);
        let slot = mine
            .iter()
            .filter_map(|o| o.slot)
            .filter(|s| *s <= latest && recorded.is_none_or(|r| *s > r))
            .max()
            .unwrap_or(latest);
        let (current, stale): (Vec<&ScratchObject>, Vec<&ScratchObject>) =
            mine.into_iter().partition(|o| o.slot == Some(slot));
        out.writes.extend(delete_all(&stale));
        let done = entries.get(&key).is_some_and(|e| e.slot >= slot);
        if done {
            out.writes.extend(delete_all(&current));
            continue;
        }
        // Objects being deleted mean this slot's result was recorded by a pass whose status
        // the profile read here may not show yet: wait for them to go rather than judge the
        // remains as a verification of their own.
        if current.iter().any(|o| o.deleting) {
            out.writes.extend(delete_all(&current));
            continue;
        }
        let name = scratch_name(&pvc.namespace, &pvc.name, slot);
        let content = content_name(profile, &pvc.namespace, &pvc.name, slot);
        let find = |kind: ManagedKind, n: &str| {
            current
                .iter()
                .find(|o| o.object.key.kind == kind && o.object.key.name == n)
                .copied()
        };
        let scratch_pvc = find(ManagedKind::PersistentVolumeClaim, &name);
        let scratch_vs = find(ManagedKind::VolumeSnapshot, &name);
        let scratch_content = find(ManagedKind::VolumeSnapshotContent, &content);
        let started = current.iter().filter_map(|o| o.created).min();
        let timed_out = started.is_some_and(|s| now >= s + timeout);
        let recorded_snapshot = current.iter().find_map(|o| o.snapshot.clone());
        let chosen = newest_ready(pvc, &observed.snapshots);
        let snapshot = recorded_snapshot
            .clone()
            .or_else(|| chosen.map(|s| s.name.clone()))
            .unwrap_or_default();
        let mut record =
            |result: VerificationResult, message: String, out: &mut Outcome<VerifyFindings>| {
                if result == VerificationResult::Failed {
                    out.findings.failed_now += 1;
                    out.events.push(Event::warning(
                        "VerificationFailed",
                        "Verify",
                        message.clone(),
                    ));
                } else {
                    out.events
                        .push(Event::normal("Verified", "Verify", message.clone()));
                }
                out.writes.extend(delete_all(&current));
                entries.insert(
                    key.clone(),
                    VerificationStatus {
                        namespace: pvc.namespace.clone(),
                        pvc: pvc.name.clone(),
                        snapshot: snapshot.clone(),
                        slot,
                        time: now,
                        result,
                        message,
                    },
                );
            };
        let what = format!(
            "restore of PVC {}/{} from snapshot {}",
            pvc.namespace, pvc.name, snapshot
        );
        if let Some(p) = scratch_pvc {
            if p.bound {
                let Some(job) = &spec.job else {
                    record(
                        VerificationResult::Succeeded,
                        format!("{what}: the restored volume bound"),
                        &mut out,
                    );
                    continue;
                };
                let jname = job_name(&pvc.namespace, &pvc.name, slot);
                let state = find(ManagedKind::Job, &jname).map(|j| j.job.clone());
                match state {
                    Some(JobState::Complete) => record(
                        VerificationResult::Succeeded,
                        format!("{what}: the restored volume bound and Job {jname} completed"),
                        &mut out,
                    ),
                    Some(JobState::Failed(why)) => record(
                        VerificationResult::Failed,
                        format!("{what}: Job {jname} failed: {why}"),
                        &mut out,
                    ),
                    _ if timed_out => record(
                        VerificationResult::Failed,
                        format!(
                            "{what}: Job {jname} did not finish within {}s",
                            spec.timeout_seconds
                        ),
                        &mut out,
                    ),
                    running => {
                        if running.is_none() {
                            out.writes.push(Write::Create(job_object(
                                profile, spec, job, pvc, &snapshot, &ns, &name, &jname, slot,
                            )));
                        }
                        out.findings.in_flight += 1;
                        due(now + Duration::seconds(JOB_POLL), &mut out);
                    }
                }
            } else if timed_out {
                let why = observed
                    .pending_reasons
                    .get(&name)
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                record(
                    VerificationResult::Failed,
                    format!(
                        "{what}: the restored PVC did not bind within {}s{why}",
                        spec.timeout_seconds
                    ),
                    &mut out,
                );
            } else {
                out.findings.in_flight += 1;
                if let Some(s) = started {
                    due(s + timeout, &mut out);
                }
            }
            continue;
        }
        // A scratch snapshot's error is not final: the snapshot controller reports
        // "VolumeSnapshotContent is missing" when its cache has not yet seen the content made
        // a moment before, and clears it once it binds. Only an error still there at the
        // timeout is the verdict, and then it says why.
        if timed_out {
            let why = scratch_vs
                .and_then(|v| v.error.clone())
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            record(
                VerificationResult::Failed,
                format!(
                    "{what}: the scratch snapshot was not ready within {}s{why}",
                    spec.timeout_seconds
                ),
                &mut out,
            );
            continue;
        }
        // Nothing restored yet: the scratch content and snapshot, then (once the snapshot is
        // ready) the PVC.
        if scratch_content.is_none() && scratch_vs.is_none() {
            let Some(source) = chosen else {
                if now >= slot + timeout {
                    record(
                        VerificationResult::Failed,
                        format!(
                            "PVC {}/{} has no ready snapshot to restore",
                            pvc.namespace, pvc.name
                        ),
                        &mut out,
                    );
                } else {
                    // A snapshot of the same slot may still be becoming ready; its watch
                    // event brings the next pass.
                    due(slot + timeout, &mut out);
                }
                continue;
            };
            let info = source
                .content
                .as_ref()
                .and_then(|c| observed.contents.get(c));
            let Some(info) = info else {
                match &source.content {
                    Some(c) if !observed.contents_read => {
                        out.findings.needs_contents.push(c.clone());
                    }
                    _ => record(
                        VerificationResult::Failed,
                        format!(
                            "{what}: the snapshot has no bound VolumeSnapshotContent with a handle"
                        ),
                        &mut out,
                    ),
                }
                continue;
            };
            match observed.namespace {
                ScratchNamespace::Ours => {}
                ScratchNamespace::Taken => {
                    record(
                        VerificationResult::Failed,
                        format!(
                            "{what}: namespace {ns} exists and is not Rampart's; nothing is restored there"
                        ),
                        &mut out,
                    );
                    continue;
                }
                ScratchNamespace::Missing | ScratchNamespace::Terminating => {
                    namespace_wanted |= observed.namespace == ScratchNamespace::Missing;
                    out.findings.in_flight += 1;
                    due(now + Duration::seconds(NAMESPACE_WAIT), &mut out);
                    continue;
                }
            }
            out.findings.in_flight += 1;
            out.writes.push(Write::Create(content_object(
                profile, backups, pvc, source, info, &content, &ns, &name, slot,
            )));
            out.writes.push(Write::Create(snapshot_object(
                profile,
                pvc,
                &source.name,
                &content,
                &ns,
                &name,
                slot,
            )));
            due(now + timeout, &mut out);
            continue;
        }
        out.findings.in_flight += 1;
        if let Some(s) = started {
            due(s + timeout, &mut out);
        }
        let Some(vs) = scratch_vs else {
            // A crash between the two creates: the content is there, the snapshot is not.
            out.writes.push(Write::Create(snapshot_object(
                profile, pvc, &snapshot, &content, &ns, &name, slot,
            )));
            continue;
        };
        if vs.ready {
            let source = observed
                .snapshots
                .iter()
                .find(|s| s.namespace == pvc.namespace && s.name == snapshot);
            out.writes.push(Write::Create(pvc_object(
                profile, spec, pvc, source, &snapshot, &ns, &name, slot,
            )));
        }
    }
    if namespace_wanted {
        out.writes
            .insert(0, Write::Create(namespace_object(profile, &ns)));
    }
    let mut list: Vec<VerificationStatus> = entries.into_values().collect();
    // Failures first, so the bounded list never drops one for a success.
    list.sort_by_key(|e| {
        (
            e.result != VerificationResult::Failed,
            e.namespace.clone(),
            e.pvc.clone(),
        )
    });
    list.truncate(STATUS_LIST_LIMIT);
    out.findings.verified_times = list
        .iter()
        .filter(|e| e.result == VerificationResult::Succeeded)
        .map(|e| (e.namespace.clone(), e.pvc.clone(), e.time))
        .collect();
    out.findings.entries = list;
    out.findings.pvcs = observed.pvcs.len();
    out
}

/// Deletes of the objects not already being deleted.
fn delete_all(objects: &[&ScratchObject]) -> Vec<Write> {
    objects
        .iter()
        .filter(|o| !o.deleting)
        .map(|o| Write::Delete(o.object.clone()))
        .collect()
}

fn scratch_labels(profile: &str, pvc: &VerifyPvc, slot: DateTime<Utc>) -> BTreeMap<String, String> {
    let mut labels = managed_labels(profile, ControlName::Backups);
    labels.insert(CONTROL_LABEL.to_string(), SCRATCH_CONTROL.to_string());
    labels.insert(PVC_LABEL.to_string(), pvc_label_value(&pvc.name));
    labels.insert(
        SOURCE_NAMESPACE_LABEL.to_string(),
        pvc_label_value(&pvc.namespace),
    );
    labels.insert(SLOT_LABEL.to_string(), slot_label(slot));
    labels
}

fn namespace_object(profile: &str, ns: &str) -> DesiredObject {
    let mut labels = managed_labels(profile, ControlName::Backups);
    labels.insert(CONTROL_LABEL.to_string(), SCRATCH_CONTROL.to_string());
    DesiredObject {
        key: ObjectKey {
            kind: ManagedKind::Namespace,
            namespace: String::new(),
            name: ns.to_string(),
        },
        control: ControlName::Backups,
        manifest: json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": labels},
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn content_object(
    profile: &str,
    backups: &BackupControl,
    pvc: &VerifyPvc,
    source: &SourceSnapshot,
    info: &ContentInfo,
    content: &str,
    ns: &str,
    name: &str,
    slot: DateTime<Utc>,
) -> DesiredObject {
    DesiredObject {
        key: ObjectKey {
            kind: ManagedKind::VolumeSnapshotContent,
            namespace: String::new(),
            name: content.to_string(),
        },
        control: ControlName::Backups,
        manifest: json!({
            "apiVersion": ManagedKind::VolumeSnapshotContent.api_version(),
            "kind": "VolumeSnapshotContent",
            "metadata": {
                "name": content,
                "labels": scratch_labels(profile, pvc, slot),
                "annotations": {SOURCE_SNAPSHOT_ANNOTATION: source.name},
            },
            "spec": {
                // Retain: deleting this content never deletes the snapshot it points at.
                "deletionPolicy": "Retain",
                "driver": info.driver,
                "source": {"snapshotHandle": info.snapshot_handle},
                "volumeSnapshotClassName": backups.volume_snapshot_class_name,
                "volumeSnapshotRef": {"name": name, "namespace": ns},
            },
        }),
    }
}

fn snapshot_object(
    profile: &str,
    pvc: &VerifyPvc,
    source: &str,
    content: &str,
    ns: &str,
    name: &str,
    slot: DateTime<Utc>,
) -> DesiredObject {
    DesiredObject {
        key: ObjectKey {
            kind: ManagedKind::VolumeSnapshot,
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        control: ControlName::Backups,
        manifest: json!({
            "apiVersion": ManagedKind::VolumeSnapshot.api_version(),
            "kind": "VolumeSnapshot",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": scratch_labels(profile, pvc, slot),
                "annotations": {SOURCE_SNAPSHOT_ANNOTATION: source},
            },
            "spec": {"source": {"volumeSnapshotContentName": content}},
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn pvc_object(
    profile: &str,
    spec: &VerifyControl,
    pvc: &VerifyPvc,
    source: Option<&SourceSnapshot>,
    snapshot: &str,
    ns: &str,
    name: &str,
    slot: DateTime<Utc>,
) -> DesiredObject {
    let size = source
        .and_then(|s| s.restore_size.clone())
        .filter(|s| !s.is_empty() && s != "0")
        .or_else(|| pvc.request.clone())
        .unwrap_or_else(|| "1Gi".to_string());
    let class = spec
        .storage_class_name
        .clone()
        .or(pvc.storage_class.clone());
    let mut pvc_spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
        "dataSource": {
            "apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot",
            "name": name,
        },
    });
    if let Some(c) = class {
        pvc_spec["storageClassName"] = json!(c);
    }
    DesiredObject {
        key: ObjectKey {
            kind: ManagedKind::PersistentVolumeClaim,
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        control: ControlName::Backups,
        manifest: json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": scratch_labels(profile, pvc, slot),
                "annotations": {SOURCE_SNAPSHOT_ANNOTATION: snapshot},
            },
            "spec": pvc_spec,
        }),
    }
}

/// The check Job: the user's pod template with the scratch PVC added read-only as the volume
/// it names, run once (no retries: a check that fails has answered), stopped by the API server
/// at the verification's timeout.
#[allow(clippy::too_many_arguments)]
fn job_object(
    profile: &str,
    spec: &VerifyControl,
    job: &VerifyJob,
    pvc: &VerifyPvc,
    snapshot: &str,
    ns: &str,
    claim: &str,
    name: &str,
    slot: DateTime<Utc>,
) -> DesiredObject {
    let mut template = job.template.clone();
    if !template.is_object() {
        template = json!({});
    }
    if !template["spec"].is_object() {
        template["spec"] = json!({});
    }
    let pod = &mut template["spec"];
    if pod.get("restartPolicy").is_none() {
        pod["restartPolicy"] = json!("Never");
    }
    let volume = json!({
        "name": job.volume_name,
        "persistentVolumeClaim": {"claimName": claim, "readOnly": true},
    });
    match pod.get_mut("volumes").and_then(|v| v.as_array_mut()) {
        Some(volumes) => volumes.push(volume),
        None => pod["volumes"] = json!([volume]),
    }
    DesiredObject {
        key: ObjectKey {
            kind: ManagedKind::Job,
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        control: ControlName::Backups,
        manifest: json!({
            "apiVersion": ManagedKind::Job.api_version(),
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": scratch_labels(profile, pvc, slot),
                "annotations": {SOURCE_SNAPSHOT_ANNOTATION: snapshot},
            },
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": spec.timeout_seconds,
                "template": template,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LabelSelector, Retention, SnapshotDeletionPolicy};
    use chrono::TimeZone;

    const PROFILE: &str = "p";

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, s)
            .single()
            .expect("valid")
    }

    fn backups() -> BackupControl {
        BackupControl {
            schedule: "0 * * * *".into(),
            time_zone: None,
            pvc_selector: LabelSelector::default(),
            volume_snapshot_class_name: "csi-snapclass".into(),
            retention: Retention::default(),
            suspend: false,
            starting_deadline_seconds: 300,
            snapshot_on_create: false,
            deletion_policy: SnapshotDeletionPolicy::Retain,
            verify: Some(verify_spec()),
        }
    }

    /// Daily at 03:00, ten minutes to finish.
    fn verify_spec() -> VerifyControl {
        VerifyControl {
            schedule: "0 3 * * *".into(),
            storage_class_name: None,
            timeout_seconds: 600,
            job: None,
        }
    }

    fn pvc(name: &str) -> VerifyPvc {
        VerifyPvc {
            namespace: "db".into(),
            name: name.into(),
            storage_class: Some("fast".into()),
            request: Some("5Gi".into()),
        }
    }

    fn snap(
        pvc: &str,
        name: &str,
        taken: DateTime<Utc>,
        ready: bool,
        failed: bool,
    ) -> SourceSnapshot {
        SourceSnapshot {
            namespace: "db".into(),
            name: name.into(),
            pvc: pvc.into(),
            taken: Some(taken),
            ready,
            failed,
            content: Some(format!("content-{name}")),
            restore_size: Some("5Gi".into()),
        }
    }

    fn content(name: &str) -> (String, ContentInfo) {
        (
            format!("content-{name}"),
            ContentInfo {
                snapshot_handle: format!("handle-{name}"),
                driver: "hostpath.csi.rampart.dev".into(),
            },
        )
    }

    /// A scratch object of `kind` for PVC `db/<pvc>` at `slot`, made at `created`.
    fn scratch(
        kind: ManagedKind,
        pvc: &str,
        slot: DateTime<Utc>,
        created: DateTime<Utc>,
    ) -> ScratchObject {
        let (namespace, name) = match kind {
            ManagedKind::VolumeSnapshotContent => {
                (String::new(), content_name(PROFILE, "db", pvc, slot))
            }
            ManagedKind::Job => (scratch_namespace(PROFILE), job_name("db", pvc, slot)),
            _ => (scratch_namespace(PROFILE), scratch_name("db", pvc, slot)),
        };
        ScratchObject {
            object: ObservedObject {
                key: ObjectKey {
                    kind,
                    namespace,
                    name,
                },
                control: Some(ControlName::Backups),
                uid: Some("u".into()),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                fingerprint: None,
            },
            source_namespace: "db".into(),
            source_pvc: pvc.into(),
            slot: Some(slot),
            created: Some(created),
            snapshot: Some("data-new".into()),
            ready: false,
            error: None,
            bound: false,
            deleting: false,
            job: JobState::Running,
        }
    }

    fn observed() -> VerifyObserved {
        VerifyObserved {
            namespace: ScratchNamespace::Ours,
            pvcs: vec![pvc("data")],
            snapshots: vec![
                snap("data", "data-old", t(1, 0, 0), true, false),
                snap("data", "data-new", t(2, 0, 0), true, false),
            ],
            contents: BTreeMap::from([content("data-old"), content("data-new")]),
            contents_read: true,
            ..Default::default()
        }
    }

    fn created(out: &Outcome<VerifyFindings>) -> Vec<&DesiredObject> {
        out.writes
            .iter()
            .filter_map(|w| match w {
                Write::Create(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    fn deleted(out: &Outcome<VerifyFindings>) -> Vec<ManagedKind> {
        out.writes
            .iter()
            .filter_map(|w| match w {
                Write::Delete(o) => Some(o.key.kind),
                _ => None,
            })
            .collect()
    }

    fn run(o: &VerifyObserved, now: DateTime<Utc>) -> Outcome<VerifyFindings> {
        plan(PROFILE, &backups(), &verify_spec(), o, now)
    }

    #[test]
    fn the_newest_ready_snapshot_is_restored_never_a_failed_or_unready_one() {
        let mut o = observed();
        o.snapshots
            .push(snap("data", "data-failed", t(2, 30, 0), true, true));
        o.snapshots
            .push(snap("data", "data-pending", t(2, 45, 0), false, false));
        let out = run(&o, t(3, 0, 5));
        let made = created(&out);
        assert_eq!(made.len(), 2, "content and snapshot: {made:?}");
        let content = made
            .iter()
            .find(|d| d.key.kind == ManagedKind::VolumeSnapshotContent)
            .expect("a content");
        assert_eq!(
            content.manifest["spec"]["source"]["snapshotHandle"],
            "handle-data-new"
        );
        assert_eq!(content.manifest["spec"]["deletionPolicy"], "Retain");
        assert_eq!(
            content.manifest["spec"]["volumeSnapshotRef"]["namespace"],
            scratch_namespace(PROFILE)
        );
        let vs = made
            .iter()
            .find(|d| d.key.kind == ManagedKind::VolumeSnapshot)
            .expect("a snapshot");
        assert_eq!(vs.key.namespace, scratch_namespace(PROFILE));
        assert_eq!(
            vs.manifest["spec"]["source"]["volumeSnapshotContentName"],
            content.key.name.as_str()
        );
        assert_eq!(
            vs.manifest["metadata"]["labels"][SLOT_LABEL],
            "20261123T030000Z"
        );
        assert_eq!(
            out.next_due,
            Some(t(3, 10, 5)),
            "looks again at the timeout"
        );
    }

    #[test]
    fn contents_are_asked_for_before_a_restore_starts() {
        let mut o = observed();
        o.contents.clear();
        o.contents_read = false;
        let out = run(&o, t(3, 0, 5));
        assert!(out.writes.is_empty());
        assert_eq!(
            out.findings.needs_contents,
            vec!["content-data-new".to_string()]
        );
        o.contents_read = true;
        let out = run(&o, t(3, 0, 5));
        assert_eq!(out.findings.entries[0].result, VerificationResult::Failed);
        assert!(out.findings.entries[0].message.contains("db/data"));
    }

    #[test]
    fn one_verification_per_pvc_per_slot() {
        // Content and snapshot already made for 03:00 (a restart, a second replica).
        let mut o = begun(vec![]);
        let out = run(&o, t(3, 0, 5));
        assert!(
            created(&out).is_empty(),
            "nothing made twice: {:?}",
            out.writes
        );
        // Once it is ready, the PVC, restored from it, in the class and size asked.
        o.scratch[1].ready = true;
        let out = run(&o, t(3, 0, 6));
        let made = created(&out);
        assert_eq!(made.len(), 1);
        let p = made[0];
        assert_eq!(p.key.kind, ManagedKind::PersistentVolumeClaim);
        assert_eq!(p.key.name, scratch_name("db", "data", t(3, 0, 0)));
        assert_eq!(
            p.manifest["spec"]["dataSource"]["name"],
            p.key.name.as_str()
        );
        assert_eq!(p.manifest["spec"]["storageClassName"], "fast");
        assert_eq!(
            p.manifest["spec"]["resources"]["requests"]["storage"],
            "5Gi"
        );
        // A result recorded for the slot: nothing more until the next slot.
        o.scratch.clear();
        o.previous = vec![VerificationStatus {
            namespace: "db".into(),
            pvc: "data".into(),
            snapshot: "data-new".into(),
            slot: t(3, 0, 0),
            time: t(3, 1, 0),
            result: VerificationResult::Succeeded,
            message: "ok".into(),
        }];
        let out = run(&o, t(4, 0, 0));
        assert!(out.writes.is_empty());
        assert_eq!(
            out.next_due,
            Some(
                Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0)
                    .single()
                    .expect("valid")
            )
        );
        assert_eq!(out.findings.entries.len(), 1);
    }

    #[test]
    fn a_bound_restore_succeeds_and_its_scratch_objects_are_deleted() {
        let o = restored(vec![]);
        let out = run(&o, t(3, 0, 9));
        let e = &out.findings.entries[0];
        assert_eq!(e.result, VerificationResult::Succeeded);
        assert_eq!(e.snapshot, "data-new");
        assert_eq!(e.slot, t(3, 0, 0));
        assert!(e.message.contains("db/data"), "{}", e.message);
        let mut kinds = deleted(&out);
        kinds.sort();
        assert_eq!(
            kinds,
            vec![
                ManagedKind::VolumeSnapshot,
                ManagedKind::VolumeSnapshotContent,
                ManagedKind::PersistentVolumeClaim
            ]
        );
        assert_eq!(
            out.findings.verified_times,
            vec![("db".into(), "data".into(), t(3, 0, 9))]
        );
        assert_eq!(out.findings.failed_now, 0);
    }

    fn job_spec() -> VerifyControl {
        VerifyControl {
            job: Some(VerifyJob {
                template: json!({"spec": {"containers": [{
                    "name": "check", "image": "busybox",
                    "volumeMounts": [{"name": "restored", "mountPath": "/data"}],
                }]}}),
                volume_name: "restored".into(),
            }),
            ..verify_spec()
        }
    }

    /// The scratch content and snapshot (not yet ready) of slot 03:00, made at 03:00:01, then
    /// `more`.
    fn begun(more: Vec<ScratchObject>) -> VerifyObserved {
        let mut o = observed();
        o.scratch = vec![
            scratch(
                ManagedKind::VolumeSnapshotContent,
                "data",
                t(3, 0, 0),
                t(3, 0, 1),
            ),
            scratch(ManagedKind::VolumeSnapshot, "data", t(3, 0, 0), t(3, 0, 1)),
        ];
        o.scratch.extend(more);
        o
    }

    /// [`begun`] with the PVC restored and bound at 03:00:03, then `more`.
    fn restored(more: Vec<ScratchObject>) -> VerifyObserved {
        let mut p = scratch(
            ManagedKind::PersistentVolumeClaim,
            "data",
            t(3, 0, 0),
            t(3, 0, 3),
        );
        p.bound = true;
        begun(std::iter::once(p).chain(more).collect())
    }

    #[test]
    fn with_a_job_a_bound_restore_runs_the_check_against_the_restored_volume() {
        let spec = job_spec();
        let out = plan(PROFILE, &backups(), &spec, &restored(vec![]), t(3, 0, 9));
        assert!(
            out.findings.entries.is_empty(),
            "no result before the Job ran"
        );
        assert_eq!(out.findings.in_flight, 1);
        assert_eq!(out.next_due, Some(t(3, 0, 14)), "a running Job is polled");
        let made = created(&out);
        assert_eq!(made.len(), 1);
        let job = &made[0].manifest;
        assert_eq!(made[0].key.kind, ManagedKind::Job);
        assert_eq!(made[0].key.namespace, scratch_namespace(PROFILE));
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(
            pod["containers"][0]["name"], "check",
            "the user's template is kept"
        );
        assert_eq!(
            pod["volumes"],
            json!([{"name": "restored", "persistentVolumeClaim": {
                "claimName": scratch_name("db", "data", t(3, 0, 0)), "readOnly": true}}])
        );
        assert!(job["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.len() <= 63));
    }

    #[test]
    fn the_check_job_decides_the_result_and_goes_with_the_scratch_objects() {
        // The restore bound and its check Job (made at 03:00:10) in `state`, planned at `now`.
        let with_job = |state: JobState, now: DateTime<Utc>| {
            let mut j = scratch(ManagedKind::Job, "data", t(3, 0, 0), t(3, 0, 10));
            j.job = state;
            plan(PROFILE, &backups(), &job_spec(), &restored(vec![j]), now)
        };
        let running = with_job(JobState::Running, t(3, 1, 0));
        assert!(running.writes.is_empty(), "{:?}", running.writes);
        assert_eq!(running.findings.in_flight, 1);

        let done = with_job(JobState::Complete, t(3, 1, 0));
        let e = &done.findings.entries[0];
        assert_eq!(e.result, VerificationResult::Succeeded);
        assert!(e.message.contains("completed"), "{}", e.message);
        assert_eq!(
            deleted(&done).len(),
            4,
            "the Job goes with the scratch objects"
        );

        let failed = with_job(
            JobState::Failed(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into(),
            ),
            t(3, 1, 0),
        );
        let e = &failed.findings.entries[0];
        assert_eq!(e.result, VerificationResult::Failed);
        assert!(e.message.contains("PVC db/data"), "{}", e.message);
        assert!(e.message.contains("BackoffLimitExceeded"), "{}", e.message);
        assert_eq!(failed.findings.failed_now, 1);
        assert_eq!(deleted(&failed).len(), 4);

        let late = with_job(JobState::Running, t(3, 10, 1));
        let e = &late.findings.entries[0];
        assert_eq!(e.result, VerificationResult::Failed);
        assert!(
            e.message.contains("did not finish within 600s"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_scratch_snapshot_error_waits_for_the_timeout_and_is_then_the_reason() {
        let mut o = begun(vec![]);
        o.scratch[1].error = Some("VolumeSnapshotContent is missing".into());
        let early = run(&o, t(3, 0, 2));
        assert!(
            early.findings.entries.is_empty(),
            "a transient error is not a verdict"
        );
        assert_eq!(early.findings.in_flight, 1);
        assert!(early.writes.is_empty(), "{:?}", early.writes);
        let late = run(&o, t(3, 10, 1));
        let e = &late.findings.entries[0];
        assert_eq!(e.result, VerificationResult::Failed);
        assert!(
            e.message.contains("PVC db/data")
                && e.message.contains("VolumeSnapshotContent is missing"),
            "{}",
            e.message
        );
        // Once the controller has bound it, the error it still shows does not stop the restore.
        o.scratch[1].ready = true;
        let bound = run(&o, t(3, 0, 5));
        assert_eq!(
            created(&bound)
                .iter()
                .map(|d| d.key.kind)
                .collect::<Vec<_>>(),
            vec![ManagedKind::PersistentVolumeClaim]
        );
    }

    #[test]
    fn a_restore_that_does_not_bind_in_time_fails_naming_the_pvc_and_why() {
        let mut o = begun(vec![scratch(
            ManagedKind::PersistentVolumeClaim,
            "data",
            t(3, 0, 0),
            t(3, 0, 3),
        )]);
        o.pending_reasons.insert(
            scratch_name("db", "data", t(3, 0, 0)),
            "ProvisioningFailed: checksum mismatch".into(),
        );
        let waiting = run(&o, t(3, 5, 0));
        assert!(waiting.writes.is_empty());
        assert_eq!(waiting.next_due, Some(t(3, 10, 1)));
        assert_eq!(waiting.findings.in_flight, 1);
        let out = run(&o, t(3, 10, 1));
        let e = &out.findings.entries[0];
        assert_eq!(e.result, VerificationResult::Failed);
        assert!(e.message.contains("PVC db/data"), "{}", e.message);
        assert!(e.message.contains("checksum mismatch"), "{}", e.message);
        assert_eq!(deleted(&out).len(), 3, "a failed restore is cleaned up too");
        assert_eq!(out.findings.failed_now, 1);
    }

    #[test]
    fn a_verification_under_way_resumes_for_its_own_slot_and_stale_ones_go() {
        // Made for 03:00 before a crash; the operator is back at 03:04, and an older set from
        // the day before was left behind.
        let yesterday = Utc
            .with_ymd_and_hms(2026, 11, 22, 3, 0, 0)
            .single()
            .expect("valid");
        let mut o = begun(vec![scratch(
            ManagedKind::PersistentVolumeClaim,
            "data",
            yesterday,
            yesterday,
        )]);
        o.scratch[1].ready = true;
        let out = run(&o, t(3, 4, 0));
        assert_eq!(deleted(&out), vec![ManagedKind::PersistentVolumeClaim]);
        let made = created(&out);
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].key.name, scratch_name("db", "data", t(3, 0, 0)));
    }

    #[test]
    fn the_remains_of_a_recorded_verification_are_not_judged_again() {
        // The status read lags the pass that recorded the result and deleted the scratch
        // objects: what is left, being deleted, is neither a new result nor a restart.
        let mut o = observed();
        let mut vs = scratch(ManagedKind::VolumeSnapshot, "data", t(3, 0, 0), t(3, 0, 1));
        vs.ready = true;
        vs.deleting = true;
        o.scratch = vec![vs];
        let out = run(&o, t(3, 20, 0));
        assert!(out.writes.is_empty(), "{:?}", out.writes);
        assert!(out.findings.entries.is_empty());
    }

    #[test]
    fn no_ready_snapshot_waits_for_the_timeout_then_fails() {
        let mut o = observed();
        o.snapshots = vec![snap("data", "data-failed", t(2, 0, 0), false, true)];
        let out = run(&o, t(3, 0, 5));
        assert!(out.writes.is_empty());
        assert!(out.findings.entries.is_empty());
        let out = run(&o, t(3, 10, 0));
        let e = &out.findings.entries[0];
        assert_eq!(e.result, VerificationResult::Failed);
        assert!(
            e.message.contains("PVC db/data has no ready snapshot"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_scratch_namespace_comes_first_and_a_foreign_one_is_never_used() {
        let mut o = observed();
        o.namespace = ScratchNamespace::Missing;
        let out = run(&o, t(3, 0, 5));
        let made = created(&out);
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].key.kind, ManagedKind::Namespace);
        assert_eq!(made[0].key.name, scratch_namespace(PROFILE));
        assert_eq!(out.next_due, Some(t(3, 0, 7)));
        o.namespace = ScratchNamespace::Taken;
        let out = run(&o, t(3, 0, 5));
        assert!(out.writes.is_empty());
        assert!(out.findings.entries[0].message.contains("not Rampart's"));
    }

    #[test]
    fn names_are_bounded_and_slots_round_trip_through_labels() {
        let long = "x".repeat(300);
        assert!(scratch_namespace(&long).len() <= 63);
        assert!(scratch_name(&long, &long, t(3, 0, 0)).len() <= 253);
        assert!(content_name(&long, &long, &long, t(3, 0, 0)).len() <= 253);
        assert_eq!(parse_slot_label(&slot_label(t(3, 0, 0))), Some(t(3, 0, 0)));
        assert!(is_scratch("VolumeSnapshot", &scratch_namespace(PROFILE)));
        assert!(!is_scratch("VolumeSnapshot", "db"));
    }
}
