//! Restore verification: on its own schedule, restore the newest ready snapshot of each
//! selected PVC into a scratch PVC in a namespace Rampart owns, give it a first consumer, wait
//! until it binds (and the check Job completes), record the result and delete the scratch
//! objects. Pure: the spec, what was observed (scratch objects included) and `now` are
//! arguments; the writer makes every change.
//!
//! A VolumeSnapshot is namespaced and a PVC's dataSource must be in the PVC's namespace, so the
//! restore goes through a pre-provisioned VolumeSnapshotContent (`deletionPolicy: Retain`, so
//! deleting it never deletes the real snapshot) pointing at the source snapshot's handle, bound
//! to a VolumeSnapshot made in the scratch namespace, which the scratch PVC restores from.
//!
//! Each selected PVC is in one [`Stage`] per pass, worked out from what was observed; each stage
//! has one small function that says what to write. Two records keep a PVC verified once per
//! slot, across retries and restarts: the scratch objects themselves (named from namespace, PVC
//! and slot, labelled with the slot) while a verification runs, and the status's
//! `verificationRound` (a digest per PVC, never truncated) once it is recorded. A result is
//! recorded first and its scratch objects deleted from the next pass on, so a crash between
//! the two finds the objects and the record, never neither.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::backups::{pvc_label_value, PVC_LABEL};
use super::{bounded_name, DesiredObject, ManagedKind, ObjectKey, ObservedObject, Outcome, Write};
use crate::api::{
    BackupControl, ControlName, VerificationResult, VerificationRound, VerificationStatus,
    VerifyControl, VerifyJob, CONTROL_LABEL, STATUS_LIST_LIMIT,
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
/// The image of the reader pod. It never needs to run: a pod that is scheduled is what makes a
/// `WaitForFirstConsumer` class provision; the pause image is on every node that runs pods.
pub const READER_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The ResourceQuota of the scratch namespace.
pub const QUOTA_NAME: &str = "rampart-verify";
/// The scratch namespace's default-deny NetworkPolicy: a restore check needs no network.
pub const DENY_ALL_POLICY: &str = "rampart-verify-deny-all";
/// Pod Security admission's enforce label, set to `restricted` on the scratch namespace, so a
/// check Job's pod that would escalate is refused by the API server as well as by Rampart.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
/// How soon a pass looks again after asking for the scratch namespace or its quota.
const NAMESPACE_WAIT: i64 = 2;
/// How often a running check Job is looked at: Jobs are not watched (a cluster-wide Job cache
/// for the few scratch Jobs would cost more than reading them while one runs).
const JOB_POLL: i64 = 5;
/// How soon a pass looks again after a result is recorded (its scratch objects go then) or a
/// volume's reclaim policy is changed (volumes are not watched).
const CLEANUP_WAIT: i64 = 1;

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

/// The reader pod's name for a PVC and a slot.
pub fn reader_name(namespace: &str, pvc: &str, slot: DateTime<Utc>) -> String {
    bounded_name("read-", &slot_base(namespace, pvc, slot), 253)
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

/// Whether one of Rampart's objects, or a write's target, is restore verification's rather than
/// one of the profile's real backups: the one answer observation, events and metrics use.
/// Scratch objects live in a scratch namespace, or are of a cluster-scoped kind only
/// verification writes (contents, the volumes it releases, the scratch namespaces).
pub fn is_scratch(kind: &str, namespace: &str, name: &str) -> bool {
    match kind {
        "VolumeSnapshotContent" | "PersistentVolume" => true,
        "Namespace" => name.starts_with(SCRATCH_NAMESPACE_PREFIX),
        _ => namespace.starts_with(SCRATCH_NAMESPACE_PREFIX),
    }
}

/// A PVC as the round records it: the first 12 hex digits of the SHA-256 of `namespace/name`.
pub fn pvc_digest(namespace: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(format!("{namespace}/{name}").as_bytes())[..6])
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
    /// A PVC's `spec.volumeName`.
    pub volume: Option<String>,
    /// It carries a deletionTimestamp: on its way out.
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

/// A volume a scratch PVC bound to, as far as its cleanup needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScratchVolume {
    /// `spec.persistentVolumeReclaimPolicy` is Delete.
    pub reclaim_delete: bool,
    /// `spec.claimRef` namespace and name: only a volume bound to our scratch PVC is touched.
    pub claim: Option<(String, String)>,
}

/// What restore verification observes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyObserved {
    pub namespace: ScratchNamespace,
    /// The scratch namespace as an object of ours, for its deletion.
    pub namespace_object: Option<ObservedObject>,
    pub pvcs: Vec<VerifyPvc>,
    pub snapshots: Vec<SourceSnapshot>,
    /// Bound contents of source snapshots, by name, as far as they were read.
    pub contents: BTreeMap<String, ContentInfo>,
    /// Whether [`VerifyFindings::needs_contents`] were read (absent ones do not exist).
    pub contents_read: bool,
    pub scratch: Vec<ScratchObject>,
    /// The volumes scratch PVCs bound to, by name.
    pub volumes: BTreeMap<String, ScratchVolume>,
    /// The scratch namespace's quota's `spec.hard`, when it exists.
    pub quota: Option<BTreeMap<String, String>>,
    /// The scratch namespace's default-deny NetworkPolicy exists (ours).
    pub deny_all: bool,
    /// The newest `ProvisioningFailed` (or other warning) message of each pending scratch PVC.
    pub pending_reasons: BTreeMap<String, String>,
    pub previous: Vec<VerificationStatus>,
    pub round: Option<VerificationRound>,
    pub previous_round: Option<VerificationRound>,
}

/// What restore verification reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyFindings {
    /// The last verification of each selected PVC (bounded, failures first).
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
    /// The current slot's record, and the one before.
    pub round: Option<VerificationRound>,
    pub previous_round: Option<VerificationRound>,
    /// Selected PVCs recorded in the current round, and of those the failed ones.
    pub round_verified: usize,
    pub round_failed: usize,
    /// The uid of the scratch namespace Rampart created, while it exists (the writer's answer
    /// to the create replaces it in the pass that makes the namespace).
    pub namespace_uid: Option<String>,
    /// The scratch namespace's name, when a namespace of that name exists that Rampart did not
    /// create.
    pub namespace_taken: Option<String>,
}

/// Where one selected PVC's verification stands in the slot being worked on.
#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// Recorded for the slot, and nothing of it is left.
    Done,
    /// Not begun: waits for a place among `maxConcurrent` (or for the scratch namespace).
    Waiting,
    /// The scratch content, snapshot, PVC and its first consumer are being made; waits for the
    /// PVC to bind.
    Restoring,
    /// The restored PVC bound; the check Job runs.
    Checking,
    /// Decided by this pass: recorded now, its scratch objects go from the next pass on.
    Decided(VerificationResult, String),
    /// Its scratch objects go (recorded for the slot, or already being deleted).
    Cleanup,
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

/// One pass's fixed inputs.
struct Planning<'a> {
    profile: &'a str,
    backups: &'a BackupControl,
    spec: &'a VerifyControl,
    observed: &'a VerifyObserved,
    now: DateTime<Utc>,
    ns: String,
    timeout: Duration,
}

/// One selected PVC's scratch objects, split by the slot being worked on.
struct Work<'a> {
    pvc: &'a VerifyPvc,
    slot: DateTime<Utc>,
    current: Vec<&'a ScratchObject>,
    stale: Vec<&'a ScratchObject>,
}

impl Work<'_> {
    fn find(&self, kind: ManagedKind, name: &str) -> Option<&ScratchObject> {
        self.current
            .iter()
            .find(|o| o.object.key.kind == kind && o.object.key.name == name)
            .copied()
    }

    fn started(&self) -> Option<DateTime<Utc>> {
        self.current.iter().filter_map(|o| o.created).min()
    }

    /// The snapshot being restored: the one the scratch objects name, else the newest ready.
    fn snapshot(&self, observed: &VerifyObserved) -> String {
        self.current
            .iter()
            .find_map(|o| o.snapshot.clone())
            .or_else(|| newest_ready(self.pvc, &observed.snapshots).map(|s| s.name.clone()))
            .unwrap_or_default()
    }
}

/// The results: the bounded per-PVC list and the complete per-slot round.
struct Book {
    entries: BTreeMap<(String, String), VerificationStatus>,
    round: Option<VerificationRound>,
    previous_round: Option<VerificationRound>,
}

impl Book {
    /// The records as observed, with a new round begun when the slot moved on (the old one kept
    /// as counts).
    fn open(observed: &VerifyObserved, latest: Option<DateTime<Utc>>) -> Self {
        let entries = observed
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
        let (round, previous_round) = match (latest, &observed.round) {
            (None, _) => (None, observed.previous_round.clone()),
            (Some(slot), Some(r)) if r.slot == slot => {
                (Some(r.clone()), observed.previous_round.clone())
            }
            (Some(slot), Some(r)) if r.slot < slot => {
                let mut before = r.clone();
                before.succeeded_pvcs.clear();
                before.failed_pvcs.clear();
                (Some(new_round(slot)), Some(before))
            }
            (Some(slot), _) => (Some(new_round(slot)), observed.previous_round.clone()),
        };
        Book {
            entries,
            round,
            previous_round,
        }
    }

    /// Whether `pvc` has a result for `slot`: in the round (which covers its own slot and any
    /// older one a verification began in), or (a status written before rounds existed) in the
    /// per-PVC list.
    fn recorded(&self, pvc: &VerifyPvc, slot: DateTime<Utc>) -> bool {
        let in_round = self.round.as_ref().is_some_and(|r| {
            let d = pvc_digest(&pvc.namespace, &pvc.name);
            slot <= r.slot
                && (r.succeeded_pvcs.binary_search(&d).is_ok()
                    || r.failed_pvcs.binary_search(&d).is_ok())
        });
        in_round
            || self
                .entries
                .get(&(pvc.namespace.clone(), pvc.name.clone()))
                .is_some_and(|e| e.slot >= slot)
    }

    /// Records a result. One that began in an older slot and ended in this one counts for this
    /// round: it is this slot's verification of the PVC, and the bounded list could not be
    /// trusted to remember it.
    fn record(&mut self, entry: VerificationStatus) {
        if let Some(r) = self.round.as_mut().filter(|r| entry.slot <= r.slot) {
            let d = pvc_digest(&entry.namespace, &entry.pvc);
            let list = match entry.result {
                VerificationResult::Succeeded => &mut r.succeeded_pvcs,
                VerificationResult::Failed => &mut r.failed_pvcs,
            };
            if let Err(at) = list.binary_search(&d) {
                list.insert(at, d);
            }
        }
        self.entries
            .insert((entry.namespace.clone(), entry.pvc.clone()), entry);
    }

    fn into_findings(self, pvcs: &[VerifyPvc], findings: &mut VerifyFindings) {
        let mut round = self.round;
        if let Some(r) = round.as_mut() {
            r.pvcs = pvcs.len() as i64;
            r.succeeded = r.succeeded_pvcs.len() as i64;
            r.failed = r.failed_pvcs.len() as i64;
            for p in pvcs {
                let d = pvc_digest(&p.namespace, &p.name);
                let failed = r.failed_pvcs.binary_search(&d).is_ok();
                if failed || r.succeeded_pvcs.binary_search(&d).is_ok() {
                    findings.round_verified += 1;
                }
                findings.round_failed += usize::from(failed);
            }
        }
        let mut list: Vec<VerificationStatus> = self.entries.into_values().collect();
        // Failures first, so the bounded list never drops one for a success.
        list.sort_by_key(|e| {
            (
                e.result != VerificationResult::Failed,
                e.namespace.clone(),
                e.pvc.clone(),
            )
        });
        list.truncate(STATUS_LIST_LIMIT);
        findings.verified_times = list
            .iter()
            .filter(|e| e.result == VerificationResult::Succeeded)
            .map(|e| (e.namespace.clone(), e.pvc.clone(), e.time))
            .collect();
        findings.entries = list;
        findings.pvcs = pvcs.len();
        findings.round = round;
        findings.previous_round = self.previous_round;
    }
}

fn new_round(slot: DateTime<Utc>) -> VerificationRound {
    VerificationRound {
        slot,
        ..Default::default()
    }
}

/// The scratch objects of each source PVC, by the (namespace, PVC) label values they carry.
fn by_source(scratch: &[ScratchObject]) -> BTreeMap<(&str, &str), Vec<&ScratchObject>> {
    let mut out: BTreeMap<(&str, &str), Vec<&ScratchObject>> = BTreeMap::new();
    for o in scratch {
        out.entry((o.source_namespace.as_str(), o.source_pvc.as_str()))
            .or_default()
            .push(o);
    }
    out
}

fn source_key(pvc: &VerifyPvc) -> (String, String) {
    (pvc_label_value(&pvc.namespace), pvc_label_value(&pvc.name))
}

/// Restore verification for one pass: the scratch objects to make or delete, the results to
/// record, and when to look again (the next slot, a running verification's timeout, a poll).
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
    let latest = schedule.latest_at_or_before(now);
    let p = Planning {
        profile,
        backups,
        spec,
        observed,
        now,
        ns: scratch_namespace(profile),
        timeout: Duration::seconds(spec.timeout_seconds),
    };
    let mut out: Outcome<VerifyFindings> = Outcome {
        next_due: schedule.next_after(now),
        ..Default::default()
    };
    let mut book = Book::open(observed, latest);
    let sources = by_source(&observed.scratch);
    let selected: BTreeSet<(String, String)> = observed.pvcs.iter().map(source_key).collect();
    // A place is taken while any object of a verification exists, being deleted included: the
    // bound is on scratch PVCs in the cluster, not on verifications in this plan.
    let mut places = usize::try_from(spec.max_concurrent)
        .unwrap_or(1)
        .saturating_sub(sources.len());
    for (source, objects) in &sources {
        let key = (source.0.to_string(), source.1.to_string());
        if !selected.contains(&key) {
            // Deselected or deleted mid-verification: nothing of it is kept.
            p.clean_up(objects, &mut out);
        }
    }
    let mut namespace_wanted = false;
    for pvc in &observed.pvcs {
        let key = source_key(pvc);
        let mine = sources
            .get(&(key.0.as_str(), key.1.as_str()))
            .cloned()
            .unwrap_or_default();
        let Some(latest) = latest else {
            p.clean_up(&mine, &mut out);
            continue;
        };
        let work = p.work_of(pvc, mine, latest, &book);
        p.clean_up(&work.stale, &mut out);
        match p.stage(&work, &book) {
            Stage::Done => {}
            Stage::Cleanup => p.clean_up(&work.current, &mut out),
            Stage::Waiting if places == 0 => {}
            Stage::Waiting => {
                if p.begin(&work, &mut book, &mut namespace_wanted, &mut out) {
                    places -= 1;
                }
            }
            Stage::Restoring => p.restore(&work, &mut out),
            Stage::Checking => p.check(&work, &mut out),
            Stage::Decided(result, message) => {
                p.record(&work, result, message, &mut book, &mut out);
                out.findings.in_flight += 1;
                due(&mut out, now + Duration::seconds(CLEANUP_WAIT));
            }
        }
    }
    if namespace_wanted {
        out.writes
            .insert(0, Write::Create(namespace_object(profile, &p.ns)));
    }
    if observed.namespace == ScratchNamespace::Ours {
        p.keep_jail(&mut out);
    }
    out.findings.namespace_uid = observed
        .namespace_object
        .as_ref()
        .and_then(|n| n.uid.clone());
    out.findings.namespace_taken =
        (observed.namespace == ScratchNamespace::Taken).then(|| p.ns.clone());
    book.into_findings(&observed.pvcs, &mut out.findings);
    out
}

/// Restore verification switched off (or its profile's backups removed): every scratch object
/// and the scratch namespace go, once no volume a scratch PVC bound to would be left behind as
/// Released. Pure, like [`plan`].
pub fn remove(profile: &str, observed: &VerifyObserved, now: DateTime<Utc>) -> Outcome<()> {
    let mut out = Outcome::default();
    let held = release_volumes(profile, &observed.scratch, &observed.volumes, &mut out);
    if held.is_empty() {
        let all: Vec<&ScratchObject> = observed.scratch.iter().collect();
        out.writes.extend(delete_all(&all, &[]));
        if let Some(ns) = &observed.namespace_object {
            if observed.namespace == ScratchNamespace::Ours {
                out.writes.push(Write::Delete(ns.clone()));
            }
        }
    } else {
        // The volume's new policy is seen on the next pass; volumes are not watched.
        out.next_due = Some(now + Duration::seconds(CLEANUP_WAIT));
    }
    out
}

fn due<F>(out: &mut Outcome<F>, t: DateTime<Utc>) {
    out.next_due = Some(out.next_due.map_or(t, |d| d.min(t)));
}

impl Planning<'_> {
    /// A PVC's objects, split into those of the slot being worked on and stale ones. A
    /// verification under way finishes for its own slot even when later slots have passed (a
    /// timeout longer than the period); the next one starts after it.
    fn work_of<'a>(
        &self,
        pvc: &'a VerifyPvc,
        mine: Vec<&'a ScratchObject>,
        latest: DateTime<Utc>,
        book: &Book,
    ) -> Work<'a> {
        let slot = mine
            .iter()
            .filter_map(|o| o.slot)
            .filter(|s| *s <= latest && !book.recorded(pvc, *s))
            .max()
            .unwrap_or(latest);
        let (current, stale) = mine.into_iter().partition(|o| o.slot == Some(slot));
        Work {
            pvc,
            slot,
            current,
            stale,
        }
    }

    /// Where the PVC's verification of `work.slot` stands.
    fn stage(&self, work: &Work<'_>, book: &Book) -> Stage {
        if book.recorded(work.pvc, work.slot) {
            return if work.current.is_empty() {
                Stage::Done
            } else {
                Stage::Cleanup
            };
        }
        if work.current.is_empty() {
            return Stage::Waiting;
        }
        // Objects being deleted are a finished verification's remains, or a deselection's:
        // they are let go rather than judged as a verification of their own.
        if work.current.iter().any(|o| o.deleting) {
            return Stage::Cleanup;
        }
        let what = format!(
            "restore of PVC {}/{} from snapshot {}",
            work.pvc.namespace,
            work.pvc.name,
            work.snapshot(self.observed)
        );
        let timed_out = work.started().is_some_and(|s| self.now >= s + self.timeout);
        let limit = self.spec.timeout_seconds;
        let claim = scratch_name(&work.pvc.namespace, &work.pvc.name, work.slot);
        let restored = work.find(ManagedKind::PersistentVolumeClaim, &claim);
        let jname = job_name(&work.pvc.namespace, &work.pvc.name, work.slot);
        let job = self
            .spec
            .job
            .as_ref()
            .and_then(|_| work.find(ManagedKind::Job, &jname));
        if let Some(JobState::Failed(why)) = job.map(|j| &j.job) {
            return Stage::Decided(
                VerificationResult::Failed,
                format!("{what}: Job {jname} failed: {why}"),
            );
        }
        match restored {
            Some(p) if p.bound => match (&self.spec.job, job.map(|j| &j.job)) {
                (None, _) => Stage::Decided(
                    VerificationResult::Succeeded,
                    format!("{what}: the restored volume bound"),
                ),
                (Some(_), Some(JobState::Complete)) => Stage::Decided(
                    VerificationResult::Succeeded,
                    format!("{what}: the restored volume bound and Job {jname} completed"),
                ),
                _ if timed_out => Stage::Decided(
                    VerificationResult::Failed,
                    format!("{what}: Job {jname} did not finish within {limit}s"),
                ),
                _ => Stage::Checking,
            },
            Some(_) if timed_out => {
                let why = self
                    .observed
                    .pending_reasons
                    .get(&claim)
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                Stage::Decided(
                    VerificationResult::Failed,
                    format!("{what}: the restored PVC did not bind within {limit}s{why}"),
                )
            }
            // A scratch snapshot's error is not final: the snapshot controller reports
            // "VolumeSnapshotContent is missing" when its cache has not yet seen the content
            // made a moment before, and clears it once it binds. Only an error still there at
            // the timeout is the verdict, and then it says why.
            None if timed_out => {
                let why = work
                    .find(ManagedKind::VolumeSnapshot, &claim)
                    .and_then(|v| v.error.clone())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                Stage::Decided(
                    VerificationResult::Failed,
                    format!("{what}: the scratch snapshot was not ready within {limit}s{why}"),
                )
            }
            _ => Stage::Restoring,
        }
    }

    /// Starts a verification: the scratch content and snapshot. Returns whether it took a place
    /// (a PVC with nothing to restore, or waiting for what a restore needs, takes none).
    fn begin(
        &self,
        work: &Work<'_>,
        book: &mut Book,
        namespace_wanted: &mut bool,
        out: &mut Outcome<VerifyFindings>,
    ) -> bool {
        let pvc = work.pvc;
        let Some(source) = newest_ready(pvc, &self.observed.snapshots) else {
            if self.now >= work.slot + self.timeout {
                let message = format!(
                    "PVC {}/{} has no ready snapshot to restore",
                    pvc.namespace, pvc.name
                );
                self.record(work, VerificationResult::Failed, message, book, out);
            } else {
                // A snapshot of the same slot may still be becoming ready; its watch event
                // brings the next pass.
                due(out, work.slot + self.timeout);
            }
            return false;
        };
        let what = format!(
            "restore of PVC {}/{} from snapshot {}",
            pvc.namespace, pvc.name, source.name
        );
        let info = source
            .content
            .as_ref()
            .and_then(|c| self.observed.contents.get(c));
        let Some(info) = info else {
            match &source.content {
                Some(c) if !self.observed.contents_read => {
                    out.findings.needs_contents.push(c.clone());
                }
                _ => self.record(
                    work,
                    VerificationResult::Failed,
                    format!(
                        "{what}: the snapshot has no bound VolumeSnapshotContent with a handle"
                    ),
                    book,
                    out,
                ),
            }
            return false;
        };
        match self.observed.namespace {
            ScratchNamespace::Ours if self.jail_ready() => {}
            ScratchNamespace::Ours => {
                // The jail comes before the first restore; [`Planning::keep_jail`] makes it.
                out.findings.in_flight += 1;
                due(out, self.now + Duration::seconds(NAMESPACE_WAIT));
                return false;
            }
            ScratchNamespace::Taken => {
                let message = format!(
                    "{what}: namespace {} exists and Rampart did not create it (its uid is not \
                     the one in status.verification.scratchNamespaceUid); nothing is restored \
                     there. Delete it and Rampart makes its own",
                    self.ns
                );
                self.record(work, VerificationResult::Failed, message, book, out);
                return false;
            }
            ScratchNamespace::Missing | ScratchNamespace::Terminating => {
                *namespace_wanted |= self.observed.namespace == ScratchNamespace::Missing;
                out.findings.in_flight += 1;
                due(out, self.now + Duration::seconds(NAMESPACE_WAIT));
                return false;
            }
        }
        let names = self.names(work);
        out.findings.in_flight += 1;
        out.writes.push(Write::Create(
            self.content_object(work, source, info, &names),
        ));
        out.writes.push(Write::Create(self.snapshot_object(
            work,
            &source.name,
            &names,
        )));
        due(out, self.now + self.timeout);
        true
    }

    /// A restore under way: whichever of snapshot, PVC and first consumer is missing, in order.
    fn restore(&self, work: &Work<'_>, out: &mut Outcome<VerifyFindings>) {
        out.findings.in_flight += 1;
        if let Some(s) = work.started() {
            due(out, s + self.timeout);
        }
        let names = self.names(work);
        let snapshot = work.snapshot(self.observed);
        let Some(vs) = work.find(ManagedKind::VolumeSnapshot, &names.claim) else {
            // A crash between the two creates: the content is there, the snapshot is not.
            out.writes
                .push(Write::Create(self.snapshot_object(work, &snapshot, &names)));
            return;
        };
        if work
            .find(ManagedKind::PersistentVolumeClaim, &names.claim)
            .is_none()
        {
            if vs.ready {
                let source = self
                    .observed
                    .snapshots
                    .iter()
                    .find(|s| s.namespace == work.pvc.namespace && s.name == snapshot);
                out.writes.push(Write::Create(
                    self.pvc_object(work, source, &snapshot, &names),
                ));
            }
            return;
        }
        self.give_consumer(work, &snapshot, &names, out);
    }

    /// The restored PVC bound and the check Job runs: it is polled (Jobs are not watched).
    fn check(&self, work: &Work<'_>, out: &mut Outcome<VerifyFindings>) {
        out.findings.in_flight += 1;
        if let Some(s) = work.started() {
            due(out, s + self.timeout);
        }
        let names = self.names(work);
        self.give_consumer(work, &work.snapshot(self.observed), &names, out);
        due(out, self.now + Duration::seconds(JOB_POLL));
    }

    /// The restore's first consumer, so a `WaitForFirstConsumer` class provisions it: the check
    /// Job when the profile has one, else a reader pod.
    fn give_consumer(
        &self,
        work: &Work<'_>,
        snapshot: &str,
        names: &Names,
        out: &mut Outcome<VerifyFindings>,
    ) {
        match &self.spec.job {
            Some(job) => {
                if work.find(ManagedKind::Job, &names.job).is_none() {
                    out.writes
                        .push(Write::Create(self.job_object(work, job, snapshot, names)));
                }
                due(out, self.now + Duration::seconds(JOB_POLL));
            }
            None => {
                if work.find(ManagedKind::Pod, &names.reader).is_none() {
                    out.writes
                        .push(Write::Create(self.reader_object(work, snapshot, names)));
                }
            }
        }
    }

    fn record(
        &self,
        work: &Work<'_>,
        result: VerificationResult,
        message: String,
        book: &mut Book,
        out: &mut Outcome<VerifyFindings>,
    ) {
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
        book.record(VerificationStatus {
            namespace: work.pvc.namespace.clone(),
            pvc: work.pvc.name.clone(),
            snapshot: work.snapshot(self.observed),
            slot: work.slot,
            time: self.now,
            result,
            message,
        });
    }

    /// Deletes `objects`, except a scratch PVC whose volume would be left behind: its volume's
    /// reclaim policy is set to Delete first, and the PVC goes on a later pass.
    fn clean_up(&self, objects: &[&ScratchObject], out: &mut Outcome<VerifyFindings>) {
        let owned: Vec<ScratchObject> = objects.iter().map(|o| (*o).clone()).collect();
        let held = release_volumes(self.profile, &owned, &self.observed.volumes, out);
        if !held.is_empty() {
            due(out, self.now + Duration::seconds(CLEANUP_WAIT));
        }
        out.writes.extend(delete_all(objects, &held));
    }

    /// The jail around the scratch namespace: its Pod Security labels, its quota and its
    /// default-deny policy, made with it and repaired when they drift (or `maxConcurrent`
    /// or the largest restore changes).
    fn keep_jail(&self, out: &mut Outcome<VerifyFindings>) {
        if let Some(ns) = &self.observed.namespace_object {
            if !pod_security_held(ns) {
                out.writes
                    .push(Write::Repair(namespace_object(self.profile, &self.ns)));
            }
        }
        let hard = self.quota_wanted();
        let desired = quota_object(self.profile, &self.ns, &hard);
        match &self.observed.quota {
            None => out.writes.push(Write::Create(desired)),
            Some(observed) if *observed != hard => out.writes.push(Write::Repair(desired)),
            Some(_) => {}
        }
        if !self.observed.deny_all {
            out.writes
                .push(Write::Create(deny_all_object(self.profile, &self.ns)));
        }
    }

    /// The quota for `maxConcurrent` restores of the largest selected PVC. A size Rampart
    /// cannot read leaves storage unbounded rather than refusing the restore.
    fn quota_wanted(&self) -> BTreeMap<String, String> {
        let largest = self
            .observed
            .pvcs
            .iter()
            .map(|pvc| {
                let newest = newest_ready(pvc, &self.observed.snapshots);
                crate::quantity::bytes(&restore_size(pvc, newest))
            })
            .try_fold(0u128, |most, size| size.map(|s| most.max(s)));
        quota_hard(self.spec.max_concurrent, largest.filter(|b| *b > 0))
    }

    /// Whether the namespace is a jail yet: no restore starts in it before.
    fn jail_ready(&self) -> bool {
        self.observed.quota.is_some()
            && self.observed.deny_all
            && self
                .observed
                .namespace_object
                .as_ref()
                .is_some_and(pod_security_held)
    }

    fn names(&self, work: &Work<'_>) -> Names {
        let (ns, pvc) = (&work.pvc.namespace, &work.pvc.name);
        Names {
            claim: scratch_name(ns, pvc, work.slot),
            content: content_name(self.profile, ns, pvc, work.slot),
            job: job_name(ns, pvc, work.slot),
            reader: reader_name(ns, pvc, work.slot),
        }
    }

    fn labels(&self, work: &Work<'_>) -> BTreeMap<String, String> {
        scratch_labels(self.profile, work.pvc, work.slot)
    }

    fn content_object(
        &self,
        work: &Work<'_>,
        source: &SourceSnapshot,
        info: &ContentInfo,
        names: &Names,
    ) -> DesiredObject {
        scratch_object(
            ManagedKind::VolumeSnapshotContent,
            "",
            &names.content,
            json!({
                "apiVersion": ManagedKind::VolumeSnapshotContent.api_version(),
                "kind": "VolumeSnapshotContent",
                "metadata": {
                    "name": names.content,
                    "labels": self.labels(work),
                    "annotations": {SOURCE_SNAPSHOT_ANNOTATION: source.name},
                },
                "spec": {
                    // Retain: deleting this content never deletes the snapshot it points at.
                    "deletionPolicy": "Retain",
                    "driver": info.driver,
                    "source": {"snapshotHandle": info.snapshot_handle},
                    "volumeSnapshotClassName": self.backups.volume_snapshot_class_name,
                    "volumeSnapshotRef": {"name": names.claim, "namespace": self.ns},
                },
            }),
        )
    }

    fn snapshot_object(&self, work: &Work<'_>, source: &str, names: &Names) -> DesiredObject {
        scratch_object(
            ManagedKind::VolumeSnapshot,
            &self.ns,
            &names.claim,
            json!({
                "apiVersion": ManagedKind::VolumeSnapshot.api_version(),
                "kind": "VolumeSnapshot",
                "metadata": {
                    "name": names.claim,
                    "namespace": self.ns,
                    "labels": self.labels(work),
                    "annotations": {SOURCE_SNAPSHOT_ANNOTATION: source},
                },
                "spec": {"source": {"volumeSnapshotContentName": names.content}},
            }),
        )
    }

    fn pvc_object(
        &self,
        work: &Work<'_>,
        source: Option<&SourceSnapshot>,
        snapshot: &str,
        names: &Names,
    ) -> DesiredObject {
        let class = self
            .spec
            .storage_class_name
            .clone()
            .or(work.pvc.storage_class.clone());
        let mut pvc_spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": restore_size(work.pvc, source)}},
            "dataSource": {
                "apiGroup": "snapshot.storage.k8s.io",
                "kind": "VolumeSnapshot",
                "name": names.claim,
            },
        });
        if let Some(c) = class {
            pvc_spec["storageClassName"] = json!(c);
        }
        scratch_object(
            ManagedKind::PersistentVolumeClaim,
            &self.ns,
            &names.claim,
            json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": names.claim,
                    "namespace": self.ns,
                    "labels": self.labels(work),
                    "annotations": {SOURCE_SNAPSHOT_ANNOTATION: snapshot},
                },
                "spec": pvc_spec,
            }),
        )
    }

    /// The check Job: the user's pod template, with the restricted security context filled where
    /// it is empty and no token, and the scratch PVC added read-only as the volume it names, run
    /// once (no retries: a check that fails has answered), stopped by the
    /// API server at the verification's timeout.
    fn job_object(
        &self,
        work: &Work<'_>,
        job: &VerifyJob,
        snapshot: &str,
        names: &Names,
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
        // The check runs with no token and under `restricted` whatever the template leaves out;
        // what it sets dangerously was refused before (CRD rules and `InvalidSpec`).
        crate::api::restricted::fill_restricted_defaults(pod);
        let volume = json!({
            "name": job.volume_name,
            "persistentVolumeClaim": {"claimName": names.claim, "readOnly": true},
        });
        match pod.get_mut("volumes").and_then(|v| v.as_array_mut()) {
            Some(volumes) => volumes.push(volume),
            None => pod["volumes"] = json!([volume]),
        }
        scratch_object(
            ManagedKind::Job,
            &self.ns,
            &names.job,
            json!({
                "apiVersion": ManagedKind::Job.api_version(),
                "kind": "Job",
                "metadata": {
                    "name": names.job,
                    "namespace": self.ns,
                    "labels": self.labels(work),
                    "annotations": {SOURCE_SNAPSHOT_ANNOTATION: snapshot},
                },
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": self.spec.timeout_seconds,
                    "template": template,
                },
            }),
        )
    }

    /// The reader pod: the least a pod can be and still consume the restored volume. It holds
    /// no token, cannot gain privileges and mounts the volume read-only; being scheduled is all
    /// that is asked of it.
    fn reader_object(&self, work: &Work<'_>, snapshot: &str, names: &Names) -> DesiredObject {
        scratch_object(
            ManagedKind::Pod,
            &self.ns,
            &names.reader,
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": names.reader,
                    "namespace": self.ns,
                    "labels": self.labels(work),
                    "annotations": {SOURCE_SNAPSHOT_ANNOTATION: snapshot},
                },
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65535,
                        "runAsGroup": 65535,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [{
                        "name": "reader",
                        "image": READER_IMAGE,
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "resources": {
                            "requests": {"cpu": "1m", "memory": "8Mi"},
                            "limits": {"cpu": "10m", "memory": "16Mi"},
                        },
                        "volumeMounts": [{
                            "name": "restored", "mountPath": "/restored", "readOnly": true,
                        }],
                    }],
                    "volumes": [{
                        "name": "restored",
                        "persistentVolumeClaim": {"claimName": names.claim, "readOnly": true},
                    }],
                },
            }),
        )
    }
}

/// The names of one verification's scratch objects.
struct Names {
    claim: String,
    content: String,
    job: String,
    reader: String,
}

/// The size a restore asks for: the snapshot's restore size, else the source PVC's request.
fn restore_size(pvc: &VerifyPvc, source: Option<&SourceSnapshot>) -> String {
    source
        .and_then(|s| s.restore_size.clone())
        .filter(|s| !s.is_empty() && s != "0")
        .or_else(|| pvc.request.clone())
        .unwrap_or_else(|| "1Gi".to_string())
}

/// For each scratch PVC among `objects` bound to a volume that would be kept as Released (its
/// reclaim policy is not Delete), a write setting the policy to Delete; returns those PVCs,
/// whose deletion waits until the volume shows the new policy. Only a volume whose claim is
/// that very scratch PVC is touched.
fn release_volumes<F>(
    profile: &str,
    objects: &[ScratchObject],
    volumes: &BTreeMap<String, ScratchVolume>,
    out: &mut Outcome<F>,
) -> Vec<ObjectKey> {
    let mut held = Vec::new();
    for o in objects {
        let key = &o.object.key;
        if key.kind != ManagedKind::PersistentVolumeClaim {
            continue;
        }
        let Some(name) = &o.volume else { continue };
        let Some(volume) = volumes.get(name) else {
            continue;
        };
        let ours = volume.claim.as_ref() == Some(&(key.namespace.clone(), key.name.clone()));
        if ours && !volume.reclaim_delete {
            out.writes
                .push(Write::Repair(reclaim_object(profile, name, o)));
            held.push(key.clone());
        }
    }
    held
}

/// Deletes of the objects not already being deleted, but for `held` ones.
fn delete_all(objects: &[&ScratchObject], held: &[ObjectKey]) -> Vec<Write> {
    objects
        .iter()
        .filter(|o| !o.deleting && !held.contains(&o.object.key))
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

fn scratch_object(
    kind: ManagedKind,
    namespace: &str,
    name: &str,
    manifest: serde_json::Value,
) -> DesiredObject {
    DesiredObject {
        key: ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
        control: ControlName::Backups,
        manifest,
    }
}

/// The scratch namespace: Rampart's labels and the `restricted` Pod Security level (enforced,
/// and warned and audited at the same level, pinned to `latest`).
fn namespace_object(profile: &str, ns: &str) -> DesiredObject {
    let mut labels = managed_labels(profile, ControlName::Backups);
    labels.insert(CONTROL_LABEL.to_string(), SCRATCH_CONTROL.to_string());
    for (key, value) in pod_security_labels() {
        labels.insert(key.to_string(), value.to_string());
    }
    scratch_object(
        ManagedKind::Namespace,
        "",
        ns,
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": labels},
        }),
    )
}

fn pod_security_labels() -> [(&'static str, &'static str); 6] {
    [
        (POD_SECURITY_ENFORCE, "restricted"),
        ("pod-security.kubernetes.io/enforce-version", "latest"),
        ("pod-security.kubernetes.io/warn", "restricted"),
        ("pod-security.kubernetes.io/warn-version", "latest"),
        ("pod-security.kubernetes.io/audit", "restricted"),
        ("pod-security.kubernetes.io/audit-version", "latest"),
    ]
}

/// Whether the observed scratch namespace still carries the Pod Security labels.
fn pod_security_held(namespace: &ObservedObject) -> bool {
    pod_security_labels()
        .iter()
        .all(|(k, v)| namespace.labels.get(*k).map(String::as_str) == Some(*v))
}

/// The scratch namespace's quota: no more PVCs, check Jobs or storage than `maxConcurrent`
/// restores need, whatever a bug or a stale cache would have the planner make. Pods are
/// allowed twice over: a restore's consumer may be replaced (a check Job's retry) while the
/// old pod is still terminating.
pub fn quota_hard(max_concurrent: i32, largest_restore: Option<u128>) -> BTreeMap<String, String> {
    let n = max_concurrent.max(1);
    let mut hard = BTreeMap::from([
        ("persistentvolumeclaims".to_string(), n.to_string()),
        ("count/jobs.batch".to_string(), n.to_string()),
        ("pods".to_string(), (2 * n).to_string()),
    ]);
    if let Some(bytes) = largest_restore {
        hard.insert(
            "requests.storage".to_string(),
            (bytes * u128::from(n.unsigned_abs())).to_string(),
        );
    }
    hard
}

fn quota_object(profile: &str, ns: &str, hard: &BTreeMap<String, String>) -> DesiredObject {
    let mut labels = managed_labels(profile, ControlName::Backups);
    labels.insert(CONTROL_LABEL.to_string(), SCRATCH_CONTROL.to_string());
    scratch_object(
        ManagedKind::ResourceQuota,
        ns,
        QUOTA_NAME,
        json!({
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": QUOTA_NAME, "namespace": ns, "labels": labels},
            "spec": {"hard": hard},
        }),
    )
}

/// Denies all ingress and egress to every pod of the scratch namespace: a reader pod and a
/// check Job read a mounted volume and need no network, and a check that could reach the
/// network could send the restored data anywhere.
fn deny_all_object(profile: &str, ns: &str) -> DesiredObject {
    let mut labels = managed_labels(profile, ControlName::Backups);
    labels.insert(CONTROL_LABEL.to_string(), SCRATCH_CONTROL.to_string());
    scratch_object(
        ManagedKind::NetworkPolicy,
        ns,
        DENY_ALL_POLICY,
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": DENY_ALL_POLICY, "namespace": ns, "labels": labels},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        }),
    )
}

/// The one change Rampart makes to a volume: its reclaim policy, so deleting the scratch PVC
/// deletes the copy of the data rather than keeping it as a Released volume. The scratch
/// labels of the PVC say why it was changed.
fn reclaim_object(profile: &str, volume: &str, claim: &ScratchObject) -> DesiredObject {
    let mut labels = managed_labels(profile, ControlName::Backups);
    labels.insert(CONTROL_LABEL.to_string(), SCRATCH_CONTROL.to_string());
    labels.insert(PVC_LABEL.to_string(), claim.source_pvc.clone());
    labels.insert(
        SOURCE_NAMESPACE_LABEL.to_string(),
        claim.source_namespace.clone(),
    );
    if let Some(slot) = claim.slot {
        labels.insert(SLOT_LABEL.to_string(), slot_label(slot));
    }
    scratch_object(
        ManagedKind::PersistentVolume,
        "",
        volume,
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume, "labels": labels},
            "spec": {"persistentVolumeReclaimPolicy": "Delete"},
        }),
    )
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

    /// Daily at 03:00, ten minutes to finish, two at a time.
    fn verify_spec() -> VerifyControl {
        VerifyControl {
            schedule: "0 3 * * *".into(),
            storage_class_name: None,
            timeout_seconds: 600,
            job: None,
            max_concurrent: 2,
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

    fn key(kind: ManagedKind, pvc: &str, slot: DateTime<Utc>) -> ObjectKey {
        let (namespace, name) = match kind {
            ManagedKind::VolumeSnapshotContent => {
                (String::new(), content_name(PROFILE, "db", pvc, slot))
            }
            ManagedKind::Job => (scratch_namespace(PROFILE), job_name("db", pvc, slot)),
            ManagedKind::Pod => (scratch_namespace(PROFILE), reader_name("db", pvc, slot)),
            _ => (scratch_namespace(PROFILE), scratch_name("db", pvc, slot)),
        };
        ObjectKey {
            kind,
            namespace,
            name,
        }
    }

    /// A scratch object of `kind` for PVC `db/<pvc>` at `slot`, made at `created`.
    fn scratch(
        kind: ManagedKind,
        pvc: &str,
        slot: DateTime<Utc>,
        created: DateTime<Utc>,
    ) -> ScratchObject {
        ScratchObject {
            object: ObservedObject {
                key: key(kind, pvc, slot),
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
            volume: None,
            deleting: false,
            job: JobState::Running,
        }
    }

    /// The quota `n` restores of the fixtures' 5Gi PVCs ask for.
    fn quota(n: i32) -> Option<BTreeMap<String, String>> {
        Some(quota_hard(n, Some(5 << 30)))
    }

    /// The scratch namespace as Rampart made it, Pod Security labels included.
    fn namespace_made() -> ObservedObject {
        let made = namespace_object(PROFILE, &scratch_namespace(PROFILE));
        ObservedObject {
            key: made.key.clone(),
            control: Some(ControlName::Backups),
            uid: Some("ns-uid".into()),
            labels: serde_json::from_value(made.manifest["metadata"]["labels"].clone())
                .unwrap_or_default(),
            annotations: BTreeMap::new(),
            fingerprint: None,
        }
    }

    fn observed() -> VerifyObserved {
        VerifyObserved {
            namespace: ScratchNamespace::Ours,
            namespace_object: Some(namespace_made()),
            deny_all: true,
            quota: quota(2),
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

    fn created<F>(out: &Outcome<F>) -> Vec<&DesiredObject> {
        out.writes
            .iter()
            .filter_map(|w| match w {
                Write::Create(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    fn deleted<F>(out: &Outcome<F>) -> Vec<ManagedKind> {
        let mut kinds: Vec<ManagedKind> = out
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Delete(o) => Some(o.key.kind),
                _ => None,
            })
            .collect();
        kinds.sort();
        kinds
    }

    fn repaired<F>(out: &Outcome<F>) -> Vec<&DesiredObject> {
        out.writes
            .iter()
            .filter_map(|w| match w {
                Write::Repair(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    fn run(o: &VerifyObserved, now: DateTime<Utc>) -> Outcome<VerifyFindings> {
        plan(PROFILE, &backups(), &verify_spec(), o, now)
    }

    /// `o` as the next pass sees it once the status `out` wrote is read back.
    fn with_status(mut o: VerifyObserved, out: &Outcome<VerifyFindings>) -> VerifyObserved {
        o.previous = out.findings.entries.clone();
        o.round = out.findings.round.clone();
        o.previous_round = out.findings.previous_round.clone();
        o
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
        o.scratch[1].ready = true;
        o.scratch.extend(more);
        o
    }

    /// [`begun`] with the PVC restored at 03:00:03 and `bound`, then `more`.
    fn restored(bound: bool, more: Vec<ScratchObject>) -> VerifyObserved {
        let mut p = scratch(
            ManagedKind::PersistentVolumeClaim,
            "data",
            t(3, 0, 0),
            t(3, 0, 3),
        );
        p.bound = bound;
        p.volume = bound.then(|| "pv-data".to_string());
        begun(std::iter::once(p).chain(more).collect())
    }

    fn stage_of(spec: &VerifyControl, o: &VerifyObserved, now: DateTime<Utc>) -> Stage {
        let p = Planning {
            profile: PROFILE,
            backups: &backups(),
            spec,
            observed: o,
            now,
            ns: scratch_namespace(PROFILE),
            timeout: Duration::seconds(spec.timeout_seconds),
        };
        let book = Book::open(o, Some(t(3, 0, 0)));
        let mine: Vec<&ScratchObject> = o.scratch.iter().collect();
        let work = p.work_of(&o.pvcs[0], mine, t(3, 0, 0), &book);
        p.stage(&work, &book)
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

    #[test]
    fn stages_follow_the_restore_from_waiting_to_cleanup() {
        let plain = verify_spec();
        let with_job = job_spec();
        let now = t(3, 0, 9);
        assert_eq!(stage_of(&plain, &observed(), now), Stage::Waiting);
        assert_eq!(stage_of(&plain, &begun(vec![]), now), Stage::Restoring);
        assert_eq!(
            stage_of(&plain, &restored(false, vec![]), now),
            Stage::Restoring
        );
        assert!(matches!(
            stage_of(&plain, &restored(true, vec![]), now),
            Stage::Decided(VerificationResult::Succeeded, _)
        ));
        let job = scratch(ManagedKind::Job, "data", t(3, 0, 0), t(3, 0, 4));
        assert_eq!(
            stage_of(&with_job, &restored(true, vec![job.clone()]), now),
            Stage::Checking
        );
        let mut complete = job.clone();
        complete.job = JobState::Complete;
        assert!(matches!(
            stage_of(&with_job, &restored(true, vec![complete]), now),
            Stage::Decided(VerificationResult::Succeeded, m) if m.contains("completed")
        ));
        let mut failed = job;
        failed.job = JobState::Failed("BackoffLimitExceeded".into());
        // A check that failed has answered, bound or not.
        assert!(matches!(
            stage_of(&with_job, &restored(false, vec![failed]), now),
            Stage::Decided(VerificationResult::Failed, m) if m.contains("BackoffLimitExceeded")
        ));
        assert!(matches!(
            stage_of(&plain, &restored(false, vec![]), t(3, 10, 1)),
            Stage::Decided(VerificationResult::Failed, m) if m.contains("did not bind within 600s")
        ));
        // Recorded: what is left goes, and once nothing is left the PVC is done for the slot.
        let decided = run(&restored(true, vec![]), now);
        let recorded = with_status(restored(true, vec![]), &decided);
        assert_eq!(stage_of(&plain, &recorded, now), Stage::Cleanup);
        let mut gone = recorded;
        gone.scratch.clear();
        assert_eq!(stage_of(&plain, &gone, now), Stage::Done);
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
    fn a_ready_scratch_snapshot_gets_its_pvc_and_then_a_reader_pod_as_first_consumer() {
        let o = begun(vec![]);
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

        // Pending (a WaitForFirstConsumer class): a reader pod, and nothing else, until it binds.
        let out = run(&restored(false, vec![]), t(3, 0, 7));
        let made = created(&out);
        assert_eq!(made.len(), 1, "{made:?}");
        assert_eq!(made[0].key.kind, ManagedKind::Pod);
        let pod = &made[0].manifest["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(
            pod["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(
            pod["containers"][0]["resources"]["limits"]["memory"],
            "16Mi"
        );
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"],
            json!({"claimName": scratch_name("db", "data", t(3, 0, 0)), "readOnly": true})
        );
        assert_eq!(out.findings.in_flight, 1);
        let reader = scratch(ManagedKind::Pod, "data", t(3, 0, 0), t(3, 0, 7));
        let out = run(&restored(false, vec![reader]), t(3, 0, 8));
        assert!(
            out.writes.is_empty(),
            "nothing made twice: {:?}",
            out.writes
        );
    }

    #[test]
    fn with_a_job_the_check_is_the_first_consumer_before_the_restore_binds() {
        let spec = job_spec();
        let out = plan(
            PROFILE,
            &backups(),
            &spec,
            &restored(false, vec![]),
            t(3, 0, 9),
        );
        assert!(
            out.findings.entries.is_empty(),
            "no result before the Job ran"
        );
        assert_eq!(out.findings.in_flight, 1);
        assert_eq!(out.next_due, Some(t(3, 0, 14)), "the Job is polled");
        let made = created(&out);
        assert_eq!(made.len(), 1, "the Job and no reader pod: {made:?}");
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
        assert_eq!(pod["automountServiceAccountToken"], false, "no token");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let sc = &pod["containers"][0]["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
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
    fn a_result_is_recorded_first_and_its_scratch_objects_go_on_the_next_pass() {
        let o = restored(true, vec![]);
        let out = run(&o, t(3, 0, 9));
        let e = &out.findings.entries[0];
        assert_eq!(e.result, VerificationResult::Succeeded);
        assert_eq!(e.snapshot, "data-new");
        assert_eq!(e.slot, t(3, 0, 0));
        assert!(e.message.contains("db/data"), "{}", e.message);
        assert!(deleted(&out).is_empty(), "kept until the record is written");
        assert_eq!(out.next_due, Some(t(3, 0, 10)));
        assert_eq!(out.findings.round_verified, 1);
        assert_eq!(
            out.findings.verified_times,
            vec![("db".into(), "data".into(), t(3, 0, 9))]
        );

        let next = run(&with_status(o, &out), t(3, 0, 10));
        assert_eq!(
            deleted(&next),
            vec![
                ManagedKind::VolumeSnapshot,
                ManagedKind::VolumeSnapshotContent,
                ManagedKind::PersistentVolumeClaim
            ]
        );
        assert!(created(&next).is_empty(), "never begun again in the slot");
        assert_eq!(next.findings.failed_now, 0);
        assert!(next.events.is_empty(), "the result is not announced twice");
    }

    #[test]
    fn a_retain_volume_is_set_to_delete_before_its_scratch_pvc_goes() {
        let o = restored(true, vec![]);
        let decided = run(&o, t(3, 0, 9));
        let mut o = with_status(o, &decided);
        let claim = key(ManagedKind::PersistentVolumeClaim, "data", t(3, 0, 0));
        o.volumes.insert(
            "pv-data".into(),
            ScratchVolume {
                reclaim_delete: false,
                claim: Some((claim.namespace.clone(), claim.name.clone())),
            },
        );
        let out = run(&o, t(3, 0, 10));
        let fixed = repaired(&out);
        assert_eq!(fixed.len(), 1);
        assert_eq!(fixed[0].key.kind, ManagedKind::PersistentVolume);
        assert_eq!(fixed[0].key.name, "pv-data");
        assert_eq!(
            fixed[0].manifest["spec"],
            json!({"persistentVolumeReclaimPolicy": "Delete"})
        );
        assert!(
            !deleted(&out).contains(&ManagedKind::PersistentVolumeClaim),
            "the PVC waits for the volume's new policy: {:?}",
            out.writes
        );
        assert_eq!(out.next_due, Some(t(3, 0, 11)), "volumes are not watched");

        if let Some(v) = o.volumes.get_mut("pv-data") {
            v.reclaim_delete = true;
        }
        let out = run(&o, t(3, 0, 11));
        assert!(repaired(&out).is_empty());
        assert!(deleted(&out).contains(&ManagedKind::PersistentVolumeClaim));

        // A volume whose claim is not our scratch PVC is never touched.
        if let Some(v) = o.volumes.get_mut("pv-data") {
            v.reclaim_delete = false;
            v.claim = Some(("db".into(), "data".into()));
        }
        let out = run(&o, t(3, 0, 11));
        assert!(repaired(&out).is_empty());
    }

    #[test]
    fn no_more_than_max_concurrent_restores_at_a_time() {
        let mut o = observed();
        o.pvcs = (0..5).map(|i| pvc(&format!("d{i}"))).collect();
        o.snapshots = (0..5)
            .map(|i| snap(&format!("d{i}"), &format!("s{i}"), t(2, 0, 0), true, false))
            .collect();
        o.contents = (0..5).map(|i| content(&format!("s{i}"))).collect();
        let starts = |o: &VerifyObserved| {
            created(&run(o, t(3, 0, 5)))
                .iter()
                .filter(|d| d.key.kind == ManagedKind::VolumeSnapshotContent)
                .count()
        };
        assert_eq!(starts(&o), 2);
        // One under way (even one whose objects are being deleted) leaves one place.
        let mut going = scratch(
            ManagedKind::PersistentVolumeClaim,
            "d4",
            t(3, 0, 0),
            t(3, 0, 1),
        );
        going.deleting = true;
        o.scratch = vec![going];
        assert_eq!(starts(&o), 1);
        // A deselected PVC's remains hold their place until they are gone.
        o.scratch = vec![
            scratch(
                ManagedKind::PersistentVolumeClaim,
                "x",
                t(3, 0, 0),
                t(3, 0, 1),
            ),
            scratch(ManagedKind::VolumeSnapshot, "y", t(3, 0, 0), t(3, 0, 1)),
        ];
        assert_eq!(starts(&o), 0);
    }

    /// A small cluster for many passes: writes are applied, scratch snapshots become ready and
    /// PVCs bind between passes, and the status is read back unless a crash lost it.
    struct Sim {
        objects: Vec<ScratchObject>,
        status: Option<VerifyFindings>,
        pvc_creates: BTreeMap<String, usize>,
        most_pvcs: usize,
    }

    impl Sim {
        fn pass(&mut self, base: &VerifyObserved, now: DateTime<Utc>, status_written: bool) {
            let mut o = base.clone();
            o.scratch = self.objects.clone();
            if let Some(f) = &self.status {
                o.previous = f.entries.clone();
                o.round = f.round.clone();
                o.previous_round = f.previous_round.clone();
            }
            let out = run(&o, now);
            for w in &out.writes {
                match w {
                    Write::Create(d) => {
                        let labels = &d.manifest["metadata"]["labels"];
                        let label = |k: &str| labels[k].as_str().unwrap_or_default().to_string();
                        let mut s = scratch(d.key.kind, &label(PVC_LABEL), t(3, 0, 0), now);
                        s.object.key = d.key.clone();
                        s.slot = parse_slot_label(&label(SLOT_LABEL));
                        if d.key.kind == ManagedKind::PersistentVolumeClaim {
                            *self.pvc_creates.entry(label(PVC_LABEL)).or_default() += 1;
                        }
                        self.objects.push(s);
                    }
                    Write::Delete(gone) => self.objects.retain(|s| s.object.key != gone.key),
                    other => panic!("unexpected write {other:?}"),
                }
            }
            if status_written {
                self.status = Some(out.findings);
            }
            for s in &mut self.objects {
                s.ready = true;
                s.bound = true;
            }
            let pvcs = self
                .objects
                .iter()
                .filter(|s| s.object.key.kind == ManagedKind::PersistentVolumeClaim)
                .count();
            self.most_pvcs = self.most_pvcs.max(pvcs);
        }
    }

    #[test]
    fn sixty_pvcs_are_each_verified_once_per_slot_across_passes_and_a_restart() {
        let names: Vec<String> = (0..60).map(|i| format!("d{i:02}")).collect();
        let mut base = observed();
        base.pvcs = names.iter().map(|n| pvc(n)).collect();
        base.snapshots = names
            .iter()
            .map(|n| snap(n, &format!("{n}-s"), t(2, 0, 0), true, false))
            .collect();
        base.contents = names.iter().map(|n| content(&format!("{n}-s"))).collect();
        let mut sim = Sim {
            objects: vec![],
            status: None,
            pvc_creates: BTreeMap::new(),
            most_pvcs: 0,
        };
        for i in 0..400 {
            // Passes 100 and 101 crash after their writes, before the status write: the
            // restarted operator plans from the older status and the cluster.
            let lost = i == 100 || i == 101;
            sim.pass(&base, t(3, 0, 0) + Duration::seconds(i), !lost);
        }
        assert!(sim.objects.is_empty(), "left: {:?}", sim.objects);
        assert_eq!(sim.pvc_creates.len(), 60);
        let twice: Vec<_> = sim.pvc_creates.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "restored more than once: {twice:?}");
        assert!(
            sim.most_pvcs <= 2,
            "at most maxConcurrent: {}",
            sim.most_pvcs
        );
        let f = sim.status.expect("a status");
        assert_eq!(f.round_verified, 60);
        assert_eq!(f.round.as_ref().map(|r| r.succeeded), Some(60));
        assert_eq!(f.entries.len(), STATUS_LIST_LIMIT, "the list stays bounded");

        // The next slot is a new round; the finished one is kept as counts.
        let mut o = base.clone();
        o.round = f.round.clone();
        let out = run(&o, t(3, 0, 0) + Duration::days(1));
        let previous = out.findings.previous_round.expect("the previous round");
        assert_eq!((previous.succeeded, previous.pvcs), (60, 60));
        assert!(previous.succeeded_pvcs.is_empty());
        assert_eq!(out.findings.round_verified, 0);
    }

    #[test]
    fn a_verification_that_outlives_its_slot_counts_for_the_next_and_is_not_judged_twice() {
        // Begun for 03:00 yesterday (a timeout longer than the period), bound today at 03:00:09.
        let yesterday = t(3, 0, 0) - Duration::days(1);
        let mut o = restored(true, vec![]);
        for s in &mut o.scratch {
            s.slot = Some(yesterday);
            s.object.key = key(s.object.key.kind, "data", yesterday);
        }
        let out = run(&o, t(3, 0, 9));
        assert_eq!(out.findings.entries[0].slot, yesterday);
        assert_eq!(out.findings.round_verified, 1, "it is today's verification");
        // Read back without the per-PVC list (cut at 50 with many PVCs): the round remembers.
        let mut next = with_status(o, &out);
        next.previous.clear();
        let out = run(&next, t(3, 0, 10));
        assert!(out.events.is_empty(), "not judged again: {:?}", out.events);
        assert!(created(&out).is_empty(), "not begun again today");
        assert_eq!(deleted(&out).len(), 3);
    }

    #[test]
    fn a_deselected_pvc_leaves_nothing_behind() {
        let mut o = restored(
            true,
            vec![scratch(ManagedKind::Pod, "data", t(3, 0, 0), t(3, 0, 4))],
        );
        o.pvcs = vec![pvc("other")];
        o.snapshots.clear();
        let out = run(&o, t(3, 0, 9));
        assert_eq!(
            deleted(&out),
            vec![
                ManagedKind::VolumeSnapshot,
                ManagedKind::VolumeSnapshotContent,
                ManagedKind::PersistentVolumeClaim,
                ManagedKind::Pod
            ]
        );
        assert!(
            out.findings.entries.is_empty(),
            "no result for a PVC not selected"
        );
    }

    #[test]
    fn removing_verify_releases_volumes_then_deletes_everything_and_the_namespace() {
        let mut o = restored(true, vec![]);
        let claim = key(ManagedKind::PersistentVolumeClaim, "data", t(3, 0, 0));
        o.volumes.insert(
            "pv-data".into(),
            ScratchVolume {
                reclaim_delete: false,
                claim: Some((claim.namespace.clone(), claim.name.clone())),
            },
        );
        o.namespace_object = Some(ObservedObject {
            key: ObjectKey {
                kind: ManagedKind::Namespace,
                namespace: String::new(),
                name: scratch_namespace(PROFILE),
            },
            control: Some(ControlName::Backups),
            uid: Some("ns-uid".into()),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            fingerprint: None,
        });
        let out = remove(PROFILE, &o, t(4, 0, 0));
        assert_eq!(repaired(&out).len(), 1);
        assert!(
            deleted(&out).is_empty(),
            "nothing goes before the volume is released"
        );
        assert_eq!(out.next_due, Some(t(4, 0, 1)));
        if let Some(v) = o.volumes.get_mut("pv-data") {
            v.reclaim_delete = true;
        }
        let out = remove(PROFILE, &o, t(4, 0, 1));
        assert_eq!(
            deleted(&out),
            vec![
                ManagedKind::VolumeSnapshot,
                ManagedKind::Namespace,
                ManagedKind::VolumeSnapshotContent,
                ManagedKind::PersistentVolumeClaim
            ]
        );
    }

    #[test]
    fn the_namespace_and_its_quota_come_before_the_first_restore() {
        let mut o = observed();
        o.namespace = ScratchNamespace::Missing;
        o.quota = None;
        let out = run(&o, t(3, 0, 5));
        let made = created(&out);
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].key.kind, ManagedKind::Namespace);
        assert_eq!(made[0].key.name, scratch_namespace(PROFILE));
        assert_eq!(out.next_due, Some(t(3, 0, 7)));
        o.namespace = ScratchNamespace::Ours;
        o.namespace_object = Some(namespace_made());
        o.deny_all = false;
        let out = run(&o, t(3, 0, 7));
        let made = created(&out);
        assert_eq!(made.len(), 2, "{made:?}");
        assert_eq!(made[0].key.kind, ManagedKind::ResourceQuota);
        assert_eq!(
            made[0].manifest["spec"]["hard"],
            json!({
                "persistentvolumeclaims": "2",
                "count/jobs.batch": "2",
                "pods": "4",
                // Two restores of the largest selected PVC (5Gi).
                "requests.storage": (2u64 * 5 * (1 << 30)).to_string(),
            })
        );
        assert_eq!(made[1].key.kind, ManagedKind::NetworkPolicy);
        assert_eq!(
            made[1].manifest["spec"],
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            "nothing in or out"
        );
        assert!(
            !out.writes
                .iter()
                .any(|w| w.verb() == crate::controls::WriteVerb::Create
                    && w.target().kind == "VolumeSnapshotContent"),
            "no restore before the jail is complete"
        );
        o.quota = quota(5);
        o.deny_all = true;
        let out = run(&o, t(3, 0, 9));
        assert_eq!(repaired(&out).len(), 1, "maxConcurrent changed");
        o.namespace = ScratchNamespace::Taken;
        o.namespace_object = None;
        let out = run(&o, t(3, 0, 5));
        assert!(out.writes.is_empty());
        let message = &out.findings.entries[0].message;
        assert!(message.contains("Rampart did not create it"), "{message}");
        assert_eq!(
            out.findings.namespace_taken,
            Some(scratch_namespace(PROFILE))
        );
    }

    #[test]
    fn the_scratch_namespace_enforces_restricted_and_a_stripped_label_is_put_back() {
        let made = namespace_object(PROFILE, &scratch_namespace(PROFILE));
        let labels = &made.manifest["metadata"]["labels"];
        assert_eq!(labels[POD_SECURITY_ENFORCE], "restricted");
        assert_eq!(
            labels["pod-security.kubernetes.io/enforce-version"],
            "latest"
        );
        let mut o = observed();
        if let Some(ns) = o.namespace_object.as_mut() {
            ns.labels.remove(POD_SECURITY_ENFORCE);
        }
        let out = run(&o, t(3, 0, 5));
        let repaired = repaired(&out);
        assert_eq!(repaired.len(), 1, "{repaired:?}");
        assert_eq!(repaired[0].key.kind, ManagedKind::Namespace);
        assert!(
            !out.writes
                .iter()
                .any(|w| w.verb() == crate::controls::WriteVerb::Create
                    && w.target().kind == "VolumeSnapshotContent"),
            "no restore while the namespace does not enforce restricted"
        );
    }

    #[test]
    fn the_storage_quota_follows_the_largest_restore_and_an_unreadable_size_leaves_it_open() {
        let mut o = observed();
        let mut big = pvc("big");
        big.request = Some("20Gi".into());
        o.pvcs.push(big);
        let out = run(&o, t(3, 0, 5));
        let quota = repaired(&out)
            .into_iter()
            .find(|d| d.key.kind == ManagedKind::ResourceQuota)
            .map(|d| d.manifest["spec"]["hard"]["requests.storage"].clone());
        assert_eq!(quota, Some(json!((2u64 * 20 * (1 << 30)).to_string())));
        o.pvcs[1].request = Some("twenty gigs".into());
        let out = run(&o, t(3, 0, 5));
        let quota = repaired(&out)
            .into_iter()
            .find(|d| d.key.kind == ManagedKind::ResourceQuota)
            .map(|d| d.manifest["spec"]["hard"].clone());
        assert_eq!(
            quota.map(|h| h.get("requests.storage").is_none()),
            Some(true),
            "an unreadable size must not bound the restore below what it needs"
        );
    }

    #[test]
    fn a_scratch_snapshot_error_waits_for_the_timeout_and_is_then_the_reason() {
        let mut o = begun(vec![]);
        o.scratch[1].ready = false;
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
    }

    #[test]
    fn a_restore_that_does_not_bind_in_time_fails_naming_the_pvc_and_why() {
        let reader = scratch(ManagedKind::Pod, "data", t(3, 0, 0), t(3, 0, 4));
        let mut o = restored(false, vec![reader]);
        o.pending_reasons.insert(
            scratch_name("db", "data", t(3, 0, 0)),
            "ProvisioningFailed: checksum mismatch".into(),
        );
        let waiting = run(&o, t(3, 5, 0));
        assert!(waiting.writes.is_empty());
        assert_eq!(waiting.next_due, Some(t(3, 10, 1)));
        let out = run(&o, t(3, 10, 1));
        let e = &out.findings.entries[0];
        assert_eq!(e.result, VerificationResult::Failed);
        assert!(e.message.contains("PVC db/data"), "{}", e.message);
        assert!(e.message.contains("checksum mismatch"), "{}", e.message);
        assert_eq!(out.findings.failed_now, 1);
        assert_eq!(out.findings.round_failed, 1);
        let next = run(&with_status(o, &out), t(3, 10, 2));
        assert_eq!(
            deleted(&next).len(),
            4,
            "a failed restore is cleaned up too"
        );
    }

    #[test]
    fn a_verification_under_way_resumes_for_its_own_slot_and_stale_ones_go() {
        let yesterday = t(3, 0, 0) - Duration::days(1);
        let o = begun(vec![scratch(
            ManagedKind::PersistentVolumeClaim,
            "data",
            yesterday,
            yesterday,
        )]);
        let out = run(&o, t(3, 4, 0));
        assert_eq!(deleted(&out), vec![ManagedKind::PersistentVolumeClaim]);
        let made = created(&out);
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].key.name, scratch_name("db", "data", t(3, 0, 0)));
    }

    #[test]
    fn the_remains_of_a_verification_being_deleted_are_not_judged() {
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
    fn names_are_bounded_slots_round_trip_and_scratch_is_one_answer() {
        let long = "x".repeat(300);
        assert!(scratch_namespace(&long).len() <= 63);
        assert!(scratch_name(&long, &long, t(3, 0, 0)).len() <= 253);
        assert!(content_name(&long, &long, &long, t(3, 0, 0)).len() <= 253);
        assert!(reader_name(&long, &long, t(3, 0, 0)).len() <= 253);
        assert_eq!(parse_slot_label(&slot_label(t(3, 0, 0))), Some(t(3, 0, 0)));
        let ns = scratch_namespace(PROFILE);
        assert!(is_scratch("VolumeSnapshot", &ns, "x"));
        assert!(is_scratch("Namespace", "", &ns));
        assert!(is_scratch("VolumeSnapshotContent", "", "x"));
        assert!(!is_scratch("VolumeSnapshot", "db", "x"));
        assert!(!is_scratch("Namespace", "", "db"));
        assert_eq!(pvc_digest("db", "data").len(), 12);
        assert_ne!(pvc_digest("db", "data"), pvc_digest("db", "dat"));
    }
}
