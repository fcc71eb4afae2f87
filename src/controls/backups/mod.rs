//! The backups control: snapshot schedules (which VolumeSnapshots to create for the current
//! slot, which to prune, which slots were missed, when to look again) and the backup status.
//! Pure: the schedule, the observed PVCs and snapshots, and both clocks are arguments.
//! The slot choice is in [`slots`], retention's checks in [`retention`].
//!
//! One snapshot per PVC per slot, named from the slot, so a restart, a retry or a second
//! replica asks for the same name and the API server refuses the duplicate. Retention counts
//! only ready snapshots, never prunes the newest ready one, one labelled `rampart.dev/keep`,
//! or one a PVC restores from; failed and never-ready ones are kept for inspection, the newest
//! few of them. Ages and order are by `creationTimestamp` (the API server's clock); the slot
//! is a name only. Snapshots of PVCs that are gone or deselected may be the only copy of their
//! data: never aged out, only held to the count.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::{bounded_name, DesiredObject, ManagedKind, ObjectKey, ObservedObject, Outcome, Write};
use crate::api::conditions::rfc3339;
use crate::api::{BackupControl, BackupStatus, ControlName, ObjectRefStatus, STATUS_LIST_LIMIT};
use crate::events::{summarize, Event};
use crate::ownership::managed_labels;
use crate::schedule::Schedule;

pub mod retention;
pub mod slots;

pub use retention::UNFINISHED_KEPT;
use retention::{
    never_backed_up, orphan_entry, pvc_health, record_failed, record_newest_ready, Retained,
};
use slots::plan_slot;
pub use slots::Clock;

/// Label naming the PVC a snapshot is of (hashed when the name is too long for a label).
pub const PVC_LABEL: &str = "rampart.dev/pvc";
/// Annotation holding the slot a snapshot was taken for (RFC 3339).
pub const SLOT_ANNOTATION: &str = "rampart.dev/slot";
/// What the snapshot control needs to know of a PVC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvcInfo {
    pub namespace: String,
    pub name: String,
    pub created: Option<DateTime<Utc>>,
    /// The snapshot this PVC was restored from, if any: never pruned.
    pub restored_from: Option<String>,
}

/// What the snapshot control needs to know of a snapshot the profile made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub namespace: String,
    pub name: String,
    pub pvc: String,
    pub slot: Option<DateTime<Utc>>,
    pub ready: bool,
    pub failed: bool,
    pub keep: bool,
    pub created: Option<DateTime<Utc>>,
    /// Being deleted (a finalizer holds it while the driver removes its content): no longer
    /// counted, ordered or pruned, but its name is still taken.
    pub deleting: bool,
    /// Still carries an owner reference to the profile (made before snapshots stopped carrying
    /// one): garbage collection would delete it with the profile, so it is detached.
    pub owner_referenced: bool,
}

/// The snapshot control's decisions for one reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotPlan {
    pub create: Vec<DesiredObject>,
    pub prune: Vec<SnapshotInfo>,
    /// The slot the creations are for.
    pub slot: Option<DateTime<Utc>>,
    pub next_slot: Option<DateTime<Utc>>,
    /// Slots since the last recorded one that were neither taken nor within the deadline.
    pub missed_slots: Vec<DateTime<Utc>>,
    /// Whether the creations catch up a slot that passed while no reconcile ran.
    pub catching_up: bool,
    pub ready: usize,
    pub failed: Vec<ObjectRefStatus>,
    pub last_successful: Vec<ObjectRefStatus>,
    /// Each PVC's newest ready snapshot time, for the last-success metric.
    pub last_success_times: Vec<(String, String, DateTime<Utc>)>,
    /// PVCs whose newest snapshot failed or whose newest ready one is older than two periods.
    pub unhealthy: Vec<ObjectRefStatus>,
    /// Snapshots of PVCs that are gone or no longer selected, and those PVCs (bounded).
    pub orphaned_snapshots: usize,
    pub orphaned: Vec<ObjectRefStatus>,
    /// The latest slot was refused: it is this far ahead of the API server's time.
    pub clock_ahead: Option<Duration>,
}

/// What the snapshot control observes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackupObserved {
    /// Whether the cluster serves snapshot.storage.k8s.io/v1 at all.
    pub api_served: bool,
    /// The PVCs the profile backs up, by namespace then name.
    pub pvcs: Vec<PvcInfo>,
    /// Every PVC restored from a snapshot in the namespaces the profile acts in, selected or
    /// not: retention never prunes the snapshot one restores from.
    pub restoring: Vec<PvcInfo>,
    /// The profile's snapshots, with the identity a delete or orphan needs.
    pub snapshots: Vec<(SnapshotInfo, ObservedObject)>,
    /// What the last pass wrote in the status.
    pub previous: Option<BackupStatus>,
}

/// What the snapshot control reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackupFindings {
    pub status: BackupStatus,
    pub unhealthy: Vec<ObjectRefStatus>,
    /// The cluster does not serve snapshot.storage.k8s.io/v1.
    pub api_missing: bool,
    /// The creations take a slot that passed while no pass ran.
    pub catching_up: bool,
    /// Slots missed since the last pass (counted once, when first seen).
    pub missed_now: usize,
    /// Each PVC's newest ready snapshot time, for the last-success metric.
    pub last_success_times: Vec<(String, String, DateTime<Utc>)>,
    /// The latest slot was refused because this replica's clock is ahead of the API server's
    /// by more than a period: how far ahead it is.
    pub clock_ahead: Option<Duration>,
}

/// The snapshot control: the current slot's snapshots, retention's prunes, missed slots
/// reported, and a look again at the next slot.
pub fn plan(
    profile: &str,
    spec: &BackupControl,
    observed: &BackupObserved,
    clock: Clock,
) -> Outcome<BackupFindings> {
    if !observed.api_served {
        return Outcome {
            findings: BackupFindings {
                api_missing: true,
                ..Default::default()
            },
            ..Default::default()
        };
    }
    // The spec was validated before this runs; a schedule that still fails to parse is
    // reported as nothing scheduled rather than guessed at.
    let Ok(schedule) = Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) else {
        return Outcome::default();
    };
    let previous = observed.previous.as_ref();
    let infos: Vec<SnapshotInfo> = observed.snapshots.iter().map(|(i, _)| i.clone()).collect();
    let mut p = plan_snapshots(&SnapshotInputs {
        profile,
        spec,
        schedule: &schedule,
        pvcs: &observed.pvcs,
        restoring: &observed.restoring,
        snapshots: &infos,
        last_scheduled: previous.and_then(|b| b.last_schedule_time),
        clock,
    });
    let mut writes: Vec<Write> = p.create.drain(..).map(Write::Create).collect();
    writes.extend(detach_from_profile(&observed.snapshots));
    let pruned: BTreeSet<(&str, &str)> = p
        .prune
        .iter()
        .map(|s| (s.namespace.as_str(), s.name.as_str()))
        .collect();
    writes.extend(
        observed
            .snapshots
            .iter()
            .filter(|(i, _)| pruned.contains(&(i.namespace.as_str(), i.name.as_str())))
            .map(|(_, o)| Write::Delete(o.clone())),
    );
    let mut events = Vec::new();
    if let Some(ahead) = p.clock_ahead {
        events.push(Event::warning(
            "ClockAhead",
            "Snapshot",
            format!(
                "this replica's clock is {}s ahead of the API server's: slot refused",
                ahead.num_seconds()
            ),
        ));
    }
    if !p.missed_slots.is_empty() {
        let when: Vec<String> = p.missed_slots.iter().map(|t| rfc3339(*t)).collect();
        events.push(Event::warning(
            "SlotMissed",
            "Snapshot",
            summarize("Missed", &when),
        ));
    }
    let status = backup_status(&p, observed.pvcs.len(), previous);
    Outcome {
        writes,
        drift: vec![],
        events,
        next_due: p.next_slot,
        findings: BackupFindings {
            status,
            unhealthy: p.unhealthy,
            api_missing: false,
            catching_up: p.catching_up,
            missed_now: p.missed_slots.len(),
            last_success_times: p.last_success_times,
            clock_ahead: p.clock_ahead,
        },
    }
}

/// The backup status for a plan, carrying the miss count and last slot forward.
fn backup_status(
    plan: &SnapshotPlan,
    pvcs: usize,
    previous: Option<&BackupStatus>,
) -> BackupStatus {
    let last = plan
        .slot
        .into_iter()
        .chain(plan.missed_slots.iter().copied())
        .max()
        .or_else(|| previous.and_then(|p| p.last_schedule_time));
    let mut problems: Vec<ObjectRefStatus> = plan
        .failed
        .iter()
        .chain(plan.unhealthy.iter())
        .cloned()
        .collect();
    problems.truncate(STATUS_LIST_LIMIT);
    BackupStatus {
        last_schedule_time: last,
        next_schedule_time: plan.next_slot,
        pvcs: pvcs as i64,
        ready_snapshots: plan.ready as i64,
        failed_snapshots: plan.failed.len() as i64,
        missed_slots: previous.map(|p| p.missed_slots).unwrap_or(0)
            + plan.missed_slots.len() as i64,
        orphaned_snapshots: plan.orphaned_snapshots as i64,
        orphaned: plan.orphaned.clone(),
        last_successful: plan.last_successful.clone(),
        problems,
        // The verification control fills this in; carried forward until it does.
        last_verified: previous
            .map(|p| p.last_verified.clone())
            .unwrap_or_default(),
    }
}

/// Snapshots that still carry an owner reference to the profile (made by a version that set
/// one), detached from it: until then a foreground delete of the profile would take them.
fn detach_from_profile(
    snapshots: &[(SnapshotInfo, ObservedObject)],
) -> impl Iterator<Item = Write> + '_ {
    snapshots
        .iter()
        .filter(|(i, _)| i.owner_referenced && !i.deleting)
        .map(|(_, o)| Write::Orphan(o.clone()))
}

/// What cleanup does with the profile's snapshots when the profile goes: they are data, so they
/// are kept unless the profile says Delete. They carry no owner reference, so garbage
/// collection never takes them; one made before that is detached here.
pub fn on_profile_deletion(
    spec: Option<&BackupControl>,
    snapshots: Vec<(SnapshotInfo, ObservedObject)>,
) -> Vec<Write> {
    if spec.is_some_and(|b| b.deletion_policy == crate::api::SnapshotDeletionPolicy::Delete) {
        return snapshots
            .into_iter()
            .map(|(_, o)| Write::Delete(o))
            .collect();
    }
    detach_from_profile(&snapshots).collect()
}

/// The VolumeSnapshot name for a PVC and a slot.
pub fn snapshot_name(pvc: &str, slot: DateTime<Utc>) -> String {
    bounded_name(
        &format!("{pvc}-"),
        &slot.format("%Y%m%d-%H%M%S").to_string(),
        253,
    )
}

/// The label value naming a PVC: the name itself when it fits a label.
pub fn pvc_label_value(pvc: &str) -> String {
    if pvc.len() <= 63 {
        pvc.to_string()
    } else {
        bounded_name("", pvc, 63)
    }
}

/// What the snapshot planner reads: the spec and schedule, the observed PVCs and snapshots, the
/// slot the previous pass recorded, and both clocks.
pub struct SnapshotInputs<'a> {
    pub profile: &'a str,
    pub spec: &'a BackupControl,
    pub schedule: &'a Schedule,
    /// The selected PVCs of the namespaces the profile acts in.
    pub pvcs: &'a [PvcInfo],
    /// Every PVC there restored from a snapshot, selected or not: retention keeps what they
    /// restore from.
    pub restoring: &'a [PvcInfo],
    pub snapshots: &'a [SnapshotInfo],
    /// The slot recorded in the status by the previous pass.
    pub last_scheduled: Option<DateTime<Utc>>,
    pub clock: Clock,
}

impl SnapshotInfo {
    /// When it was taken by the API server's clock: what ordering and ages use. The slot is a
    /// name only (a replica with a skewed clock could have named it for any time); it stands in
    /// only where no creation time is known.
    pub fn taken(&self) -> Option<DateTime<Utc>> {
        self.created.or(self.slot)
    }

    pub(super) fn good(&self) -> bool {
        self.ready && !self.failed
    }
}

/// Decides creations, prunes and misses for the PVCs of the namespaces the profile acts in.
pub fn plan_snapshots(input: &SnapshotInputs) -> SnapshotPlan {
    let SnapshotInputs {
        spec,
        schedule,
        clock,
        ..
    } = *input;
    let now = clock.local;
    let mut out = SnapshotPlan {
        next_slot: schedule.next_after(now),
        ..Default::default()
    };
    let by_pvc = snapshots_by_pvc(input.snapshots);
    if let Some(slot) = schedule.latest_at_or_before(now) {
        plan_slot(input, slot, &by_pvc, &mut out);
    }
    let selected: BTreeSet<(&str, &str)> = input
        .pvcs
        .iter()
        .map(|p| (p.namespace.as_str(), p.name.as_str()))
        .collect();
    let in_use: BTreeSet<(&str, &str)> = input
        .pvcs
        .iter()
        .chain(input.restoring)
        .filter_map(|p| {
            p.restored_from
                .as_deref()
                .map(|s| (p.namespace.as_str(), s))
        })
        .collect();
    let period = schedule.period_around(now);
    for (&(ns, pvc), snaps) in &by_pvc {
        let orphaned = !selected.contains(&(ns, pvc));
        let ready: Vec<&SnapshotInfo> = snaps.iter().copied().filter(|s| s.good()).collect();
        out.ready += ready.len();
        record_newest_ready(ns, pvc, &ready, &mut out);
        record_failed(ns, pvc, snaps, &mut out);
        let protected = |s: &SnapshotInfo| s.keep || in_use.contains(&(ns, s.name.as_str()));
        let retention = Retained {
            spec,
            now: clock.ages_now(),
            period,
            orphaned,
        };
        out.prune.extend(
            retention
                .beyond_retention(&ready)
                .into_iter()
                .chain(retention.unfinished_beyond_bound(snaps))
                .filter(|s| !protected(s))
                .cloned(),
        );
        if orphaned {
            out.orphaned_snapshots += snaps.len();
            out.orphaned.push(orphan_entry(ns, pvc, snaps));
        } else if let Some(problem) = pvc_health(snaps, &ready, period, clock.ages_now()) {
            out.unhealthy.push(ObjectRefStatus {
                namespace: ns.to_string(),
                kind: "PersistentVolumeClaim".into(),
                name: pvc.to_string(),
                message: problem.into(),
            });
        }
    }
    if let Some(p) = period {
        let listed: BTreeSet<(String, String)> = out
            .unhealthy
            .iter()
            .map(|u| (u.namespace.clone(), u.name.clone()))
            .collect();
        out.unhealthy.extend(
            never_backed_up(input, &by_pvc, p)
                .filter(|u| !listed.contains(&(u.namespace.clone(), u.name.clone()))),
        );
    }
    out.failed.truncate(STATUS_LIST_LIMIT);
    out.last_successful.truncate(STATUS_LIST_LIMIT);
    out.unhealthy.truncate(STATUS_LIST_LIMIT);
    out.orphaned.truncate(STATUS_LIST_LIMIT);
    out
}

pub(super) type ByPvc<'a> = BTreeMap<(&'a str, &'a str), Vec<&'a SnapshotInfo>>;

/// Each PVC's snapshots (one being deleted is gone for every purpose but its name), newest
/// first by creation time. Every per-PVC question is a lookup here: scanning every snapshot
/// for each PVC cost tens of millions of comparisons a plan at 6,000 PVCs, and while a slot's
/// snapshots turn ready the backups are planned again every 2 s.
pub(super) fn snapshots_by_pvc(snapshots: &[SnapshotInfo]) -> ByPvc<'_> {
    let mut by_pvc: ByPvc = BTreeMap::new();
    for s in snapshots.iter().filter(|s| !s.deleting) {
        by_pvc
            .entry((s.namespace.as_str(), s.pvc.as_str()))
            .or_default()
            .push(s);
    }
    for snaps in by_pvc.values_mut() {
        snaps.sort_by_key(|s| std::cmp::Reverse(s.taken()));
    }
    by_pvc
}

pub(super) fn snapshot_object(
    profile: &str,
    spec: &BackupControl,
    pvc: &PvcInfo,
    name: &str,
    slot: DateTime<Utc>,
) -> DesiredObject {
    let mut labels = managed_labels(profile, ControlName::Backups);
    labels.insert(PVC_LABEL.to_string(), pvc_label_value(&pvc.name));
    let manifest = json!({
        "apiVersion": ManagedKind::VolumeSnapshot.api_version(),
        "kind": ManagedKind::VolumeSnapshot.kind(),
        "metadata": {
            "name": name,
            "namespace": pvc.namespace,
            "labels": labels,
            "annotations": {SLOT_ANNOTATION: rfc3339(slot)},
        },
        "spec": {
            "volumeSnapshotClassName": spec.volume_snapshot_class_name,
            "source": {"persistentVolumeClaimName": pvc.name},
        },
    });
    DesiredObject {
        key: ObjectKey {
            kind: ManagedKind::VolumeSnapshot,
            namespace: pvc.namespace.clone(),
            name: name.to_string(),
        },
        control: ControlName::Backups,
        manifest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LabelSelector, Retention, SnapshotDeletionPolicy};
    use chrono::TimeZone;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, s)
            .single()
            .expect("valid")
    }

    fn spec(schedule: &str) -> BackupControl {
        BackupControl {
            schedule: schedule.into(),
            time_zone: None,
            pvc_selector: LabelSelector::default(),
            volume_snapshot_class_name: "csi-snapclass".into(),
            retention: Retention {
                max_count: 2,
                max_age: None,
            },
            suspend: false,
            starting_deadline_seconds: 300,
            snapshot_on_create: false,
            deletion_policy: SnapshotDeletionPolicy::Retain,
            verify: None,
        }
    }

    fn pvc(name: &str) -> PvcInfo {
        PvcInfo {
            namespace: "db".into(),
            name: name.into(),
            created: Some(t(0, 0, 0)),
            restored_from: None,
        }
    }

    /// Argo CD prunes whatever carries its instance label: a snapshot carrying the profile's
    /// would be pruned as an orphan of the profile's Application. Only Rampart's own labels.
    #[test]
    fn snapshots_carry_only_rampart_labels() {
        let d = snapshot_object(
            "regulated",
            &spec("0 2 * * *"),
            &pvc("data"),
            "snap",
            t(0, 0, 0),
        );
        let labels = d.manifest["metadata"]["labels"]
            .as_object()
            .expect("labels");
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        let mut want: Vec<String> = managed_labels("regulated", ControlName::Backups)
            .into_keys()
            .chain([PVC_LABEL.to_string()])
            .collect();
        want.sort();
        assert_eq!(keys, want);
    }

    fn snap(pvc: &str, slot: DateTime<Utc>, ready: bool) -> SnapshotInfo {
        SnapshotInfo {
            namespace: "db".into(),
            name: snapshot_name(pvc, slot),
            pvc: pvc.into(),
            slot: Some(slot),
            ready,
            failed: false,
            keep: false,
            created: Some(slot),
            deleting: false,
            owner_referenced: false,
        }
    }

    fn decide(
        s: &BackupControl,
        pvcs: &[PvcInfo],
        snaps: &[SnapshotInfo],
        last: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> SnapshotPlan {
        let schedule = Schedule::parse(&s.schedule, s.time_zone.as_deref()).expect("schedule");
        plan_snapshots(&SnapshotInputs {
            profile: "p",
            spec: s,
            schedule: &schedule,
            pvcs,
            restoring: &[],
            snapshots: snaps,
            last_scheduled: last,
            clock: Clock::agreed(now),
        })
    }

    #[test]
    fn one_snapshot_per_pvc_per_slot_named_from_the_slot() {
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data"), pvc("logs")],
            &[],
            None,
            t(2, 0, 5),
        );
        let names: Vec<&str> = p.create.iter().map(|d| d.key.name.as_str()).collect();
        assert_eq!(names, vec!["data-20261123-020000", "logs-20261123-020000"]);
        assert_eq!(
            p.create[0].manifest["spec"]["source"]["persistentVolumeClaimName"],
            "data"
        );
        assert_eq!(p.next_slot, Some(t(3, 0, 0)));
    }

    #[test]
    fn an_existing_slot_snapshot_is_never_asked_for_again() {
        let existing = snap("data", t(2, 0, 0), false);
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data")],
            &[existing],
            None,
            t(2, 0, 30),
        );
        assert!(p.create.is_empty());
    }

    #[test]
    fn a_slot_past_its_deadline_is_missed_not_taken() {
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data")],
            &[],
            Some(t(1, 0, 0)),
            t(2, 10, 0),
        );
        assert!(p.create.is_empty());
        assert_eq!(p.missed_slots, vec![t(2, 0, 0)]);
    }

    #[test]
    fn a_slot_within_its_deadline_is_caught_up_once_and_older_ones_reported() {
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data")],
            &[],
            Some(t(0, 0, 0)),
            t(3, 2, 0),
        );
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.slot, Some(t(3, 0, 0)));
        assert_eq!(p.missed_slots, vec![t(1, 0, 0), t(2, 0, 0)]);
    }

    #[test]
    fn retention_keeps_max_count_ready_and_ignores_unready() {
        let snaps = vec![
            snap("data", t(1, 0, 0), true),
            snap("data", t(2, 0, 0), true),
            snap("data", t(3, 0, 0), true),
            snap("data", t(4, 0, 0), false),
        ];
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data")],
            &snaps,
            Some(t(4, 0, 0)),
            t(4, 0, 30),
        );
        let pruned: Vec<&str> = p.prune.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(pruned, vec!["data-20261123-010000"]);
    }

    #[test]
    fn keep_label_data_source_and_newest_ready_are_never_pruned() {
        let mut kept = snap("data", t(1, 0, 0), true);
        kept.keep = true;
        let restored = snap("data", t(2, 0, 0), true);
        let mut source = pvc("restored");
        source.restored_from = Some(restored.name.clone());
        let mut s = spec("0 * * * *");
        s.retention.max_count = 1;
        s.retention.max_age = Some("1s".into());
        let snaps = vec![kept, restored, snap("data", t(3, 0, 0), true)];
        let p = decide(
            &s,
            &[pvc("data"), source],
            &snaps,
            Some(t(3, 0, 0)),
            t(3, 30, 0),
        );
        assert!(p.prune.is_empty(), "{:?}", p.prune);
    }

    #[test]
    fn failed_snapshot_is_kept_reported_and_not_recreated() {
        let mut failed = snap("data", t(2, 0, 0), false);
        failed.failed = true;
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data")],
            &[failed],
            Some(t(2, 0, 0)),
            t(2, 0, 30),
        );
        assert!(
            p.create.is_empty(),
            "no create/delete cycle on a failed snapshot"
        );
        assert!(p.prune.is_empty());
        assert_eq!(p.failed.len(), 1);
        assert_eq!(p.unhealthy[0].name, "data");
    }

    #[test]
    fn stale_newest_ready_is_unhealthy() {
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data")],
            &[snap("data", t(1, 0, 0), true)],
            Some(t(4, 0, 0)),
            t(4, 30, 0),
        );
        assert_eq!(p.unhealthy.len(), 1, "{:?}", p.unhealthy);
    }

    #[test]
    fn pvc_created_after_the_slot_waits_unless_snapshot_on_create() {
        let mut late = pvc("late");
        late.created = Some(t(2, 0, 10));
        let p = decide(&spec("0 * * * *"), &[late.clone()], &[], None, t(2, 0, 20));
        assert!(p.create.is_empty());
        let mut s = spec("0 * * * *");
        s.snapshot_on_create = true;
        assert_eq!(decide(&s, &[late], &[], None, t(2, 0, 20)).create.len(), 1);
    }

    #[test]
    fn snapshot_on_create_takes_a_first_snapshot_outside_the_deadline() {
        let mut s = spec("0 2 * * *");
        s.snapshot_on_create = true;
        let mut fresh = pvc("fresh");
        fresh.created = Some(t(9, 0, 0));
        let p = decide(&s, &[fresh.clone()], &[], None, t(9, 0, 5));
        assert_eq!(p.create.len(), 1);
        let taken = snap("fresh", t(2, 0, 0), false);
        assert!(
            decide(&s, &[fresh], &[taken], None, t(9, 0, 10))
                .create
                .is_empty(),
            "only the first one"
        );
    }

    #[test]
    fn suspend_takes_nothing() {
        let mut s = spec("0 * * * *");
        s.suspend = true;
        assert!(decide(&s, &[pvc("data")], &[], None, t(2, 0, 5))
            .create
            .is_empty());
    }

    /// An instant written as local wall time with its offset.
    fn at(local: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(local)
            .expect("RFC 3339")
            .with_timezone(&Utc)
    }

    /// The day of each change of the clocks, local midnight to local midnight.
    const DST_DAYS: [(&str, &str, &str); 4] = [
        (
            "Europe/Berlin",
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T00:00:00+02:00",
        ),
        (
            "Europe/Berlin",
            "2026-10-25T00:00:00+02:00",
            "2026-10-26T00:00:00+01:00",
        ),
        (
            "America/New_York",
            "2026-03-08T00:00:00-05:00",
            "2026-03-09T00:00:00-04:00",
        ),
        (
            "America/New_York",
            "2026-11-01T00:00:00-04:00",
            "2026-11-02T00:00:00-05:00",
        ),
    ];
    // Fixed times in and just before each gap and repeat, hourly, and steps across both.
    const DST_SCHEDULES: [&str; 4] = ["30 2 * * *", "30 1 * * *", "0 * * * *", "*/15 1-3 * * *"];

    fn backups_in(schedule: &str, tz: &str) -> BackupControl {
        BackupControl {
            time_zone: Some(tz.into()),
            ..spec(schedule)
        }
    }

    /// The slots strictly between `from` and `to`, each found from the one before.
    fn slots_between(
        s: &BackupControl,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let schedule = Schedule::parse(&s.schedule, s.time_zone.as_deref()).expect("schedule");
        std::iter::successors(schedule.next_after(from), |t| schedule.next_after(*t))
            .take_while(|t| *t < to)
            .collect()
    }

    #[test]
    fn reconciles_across_a_dst_change_take_one_snapshot_per_slot_with_unique_names() {
        // Reconciles more often than the deadline, as the requeue at each slot ensures; the
        // slot is recorded as the status records it and every snapshot asked for is kept.
        let step = Duration::seconds(250);
        for (tz, from, to) in DST_DAYS {
            for schedule in DST_SCHEDULES {
                let s = backups_in(schedule, tz);
                let (from, to) = (at(from), at(to));
                let mut data = pvc("data");
                data.created = Some(from - Duration::days(1));
                let mut snaps: Vec<SnapshotInfo> = Vec::new();
                let mut names: Vec<String> = Vec::new();
                let mut last = None;
                let mut now = from;
                let mut last_now = from;
                while now < to {
                    let p = decide(&s, std::slice::from_ref(&data), &snaps, last, now);
                    assert!(p.missed_slots.is_empty(), "{schedule} in {tz} at {now}");
                    assert_eq!(
                        p.next_slot,
                        slots_between(&s, now, now + Duration::days(2))
                            .first()
                            .copied(),
                        "requeue: {schedule} in {tz} at {now}"
                    );
                    for d in &p.create {
                        let slot = p.slot.expect("a creation has a slot");
                        assert_eq!(d.key.name, snapshot_name("data", slot));
                        names.push(d.key.name.clone());
                        snaps.push(snap("data", slot, true));
                    }
                    last = p.slot.into_iter().chain(p.missed_slots).max().or(last);
                    last_now = now;
                    now += step;
                }
                let expected: Vec<String> = slots_between(
                    &s,
                    from - Duration::seconds(1),
                    last_now + Duration::seconds(1),
                )
                .into_iter()
                .map(|slot| snapshot_name("data", slot))
                .collect();
                assert_eq!(names, expected, "{schedule} in {tz}");
                let day_hours = (to - from).num_hours();
                let per_day = match schedule {
                    "0 * * * *" => day_hours,
                    // Eight wall times exist on a 23-hour day, sixteen on a 25-hour one.
                    "*/15 1-3 * * *" => 12 + 4 * (day_hours - 24),
                    _ => 1,
                };
                assert_eq!(names.len() as i64, per_day, "{schedule} in {tz}: {names:?}");
                let unique: BTreeSet<&String> = names.iter().collect();
                assert_eq!(unique.len(), names.len(), "{schedule} in {tz}: {names:?}");
            }
        }
    }

    #[test]
    fn an_outage_across_a_dst_change_reports_each_missed_slot_once() {
        for (tz, from, to) in DST_DAYS {
            for schedule in DST_SCHEDULES {
                let s = backups_in(schedule, tz);
                let (from, to) = (at(from), at(to));
                let last = Schedule::parse(schedule, Some(tz))
                    .expect("schedule")
                    .latest_at_or_before(from)
                    .expect("a slot before the day");
                // Past the deadline of any slot, including an hourly one at midnight.
                let now = to + Duration::minutes(10);
                let mut data = pvc("data");
                data.created = Some(from - Duration::days(1));
                let p = decide(&s, &[data], &[], Some(last), now);
                assert!(p.create.is_empty(), "{schedule} in {tz}");
                assert_eq!(
                    p.missed_slots,
                    slots_between(&s, last, now),
                    "{schedule} in {tz}"
                );
            }
        }
    }

    #[test]
    fn long_pvc_names_stay_within_limits() {
        let long = "p".repeat(250);
        assert!(snapshot_name(&long, t(2, 0, 0)).len() <= 253);
        assert!(pvc_label_value(&long).len() <= 63);
    }

    fn owned(s: &SnapshotInfo) -> (SnapshotInfo, ObservedObject) {
        (
            s.clone(),
            ObservedObject {
                key: ObjectKey {
                    kind: ManagedKind::VolumeSnapshot,
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                },
                control: Some(ControlName::Backups),
                uid: Some(format!("uid-{}", s.name)),
                labels: Default::default(),
                annotations: Default::default(),
                fingerprint: None,
            },
        )
    }

    fn observed(
        pvcs: Vec<PvcInfo>,
        restoring: Vec<PvcInfo>,
        snaps: &[SnapshotInfo],
    ) -> BackupObserved {
        BackupObserved {
            api_served: true,
            pvcs,
            restoring,
            snapshots: snaps.iter().map(owned).collect(),
            previous: None,
        }
    }

    fn deleted(out: &Outcome<BackupFindings>) -> Vec<String> {
        out.writes
            .iter()
            .filter_map(|w| match w {
                Write::Delete(o) => Some(o.key.name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn outcome_prunes_beyond_the_count_oldest_first_by_uid() {
        let snaps = [
            snap("data", t(1, 0, 0), true),
            snap("data", t(2, 0, 0), true),
            snap("data", t(3, 0, 0), true),
        ];
        let out = super::plan(
            "p",
            &spec("0 * * * *"),
            &observed(vec![pvc("data")], vec![], &snaps),
            Clock::agreed(t(3, 10, 0)),
        );
        assert_eq!(deleted(&out), vec![snapshot_name("data", t(1, 0, 0))]);
        let uid = out.writes.iter().find_map(|w| match w {
            Write::Delete(o) => o.uid.clone(),
            _ => None,
        });
        assert_eq!(
            uid,
            Some(format!("uid-{}", snapshot_name("data", t(1, 0, 0))))
        );
        assert_eq!(out.next_due, Some(t(4, 0, 0)));
    }

    #[test]
    fn outcome_never_prunes_what_an_unselected_pvc_restores_from() {
        let snaps = [
            snap("data", t(1, 0, 0), true),
            snap("data", t(2, 0, 0), true),
            snap("data", t(3, 0, 0), true),
        ];
        let restored = PvcInfo {
            name: "restore-test".into(),
            restored_from: Some(snapshot_name("data", t(1, 0, 0))),
            ..pvc("restore-test")
        };
        let out = super::plan(
            "p",
            &spec("0 * * * *"),
            &observed(vec![pvc("data")], vec![restored], &snaps),
            Clock::agreed(t(3, 10, 0)),
        );
        assert!(deleted(&out).is_empty(), "{:?}", deleted(&out));
    }

    #[test]
    fn outcome_reports_missed_slots_with_an_event_and_counts_them() {
        let mut o = observed(vec![pvc("data")], vec![], &[]);
        o.previous = Some(BackupStatus {
            last_schedule_time: Some(t(1, 0, 0)),
            missed_slots: 2,
            ..Default::default()
        });
        let out = super::plan("p", &spec("0 * * * *"), &o, Clock::agreed(t(4, 0, 30)));
        assert_eq!(out.findings.missed_now, 2, "02:00 and 03:00 passed unseen");
        assert_eq!(out.findings.status.missed_slots, 4);
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].reason, "SlotMissed");
        assert_eq!(out.writes.len(), 1, "the 04:00 slot is still taken");
    }

    #[test]
    fn without_the_snapshot_api_nothing_is_written_and_it_is_said() {
        let mut o = observed(vec![pvc("data")], vec![], &[]);
        o.api_served = false;
        let out = super::plan("p", &spec("0 * * * *"), &o, Clock::agreed(t(4, 0, 30)));
        assert!(out.writes.is_empty());
        assert!(out.findings.api_missing);
    }

    #[test]
    fn deleting_the_profile_keeps_snapshots_unless_told_to_delete() {
        let current = owned(&snap("data", t(1, 0, 0), true));
        let legacy = owned(&SnapshotInfo {
            owner_referenced: true,
            ..snap("data", t(2, 0, 0), true)
        });
        let retain = spec("0 * * * *");
        let kept = on_profile_deletion(Some(&retain), vec![current.clone(), legacy.clone()]);
        // Nothing to do for one without an owner reference; an old one is detached.
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(matches!(&kept[0], Write::Orphan(o) if o.key.name == legacy.0.name));
        let delete = BackupControl {
            deletion_policy: SnapshotDeletionPolicy::Delete,
            ..retain
        };
        let gone = on_profile_deletion(Some(&delete), vec![current, legacy]);
        assert!(gone.iter().all(|w| matches!(w, Write::Delete(_))) && gone.len() == 2);
    }

    #[test]
    fn a_snapshot_being_deleted_is_neither_counted_nor_pruned_again() {
        let mut going = snap("data", t(1, 0, 0), true);
        going.deleting = true;
        let snaps = [
            going,
            snap("data", t(2, 0, 0), true),
            snap("data", t(3, 0, 0), true),
        ];
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data")],
            &snaps,
            None,
            t(3, 10, 0),
        );
        assert!(p.prune.is_empty(), "{:?}", p.prune);
        assert_eq!(p.ready, 2);
        // Its name stays taken: a slot is never re-created while its old snapshot goes.
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data")],
            &snaps[..1],
            None,
            t(1, 0, 30),
        );
        assert!(p.create.is_empty());
    }

    fn names(snaps: &[SnapshotInfo]) -> Vec<&str> {
        snaps.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn a_future_slot_snapshot_never_gets_a_real_one_pruned() {
        // A leader whose clock ran 10 h ahead took a slot "20261123-120000" at 01:00 by the
        // API server's clock. Ordered by slot it would be the newest, and the real 02:00 and
        // 03:00 snapshots would be pruned as soon as they are ready; by creation time it is the
        // oldest and the one that goes.
        let mut future = snap("data", t(12, 0, 0), true);
        future.created = Some(t(1, 0, 5));
        let snaps = vec![
            future.clone(),
            snap("data", t(2, 0, 0), true),
            snap("data", t(3, 0, 0), true),
        ];
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data")],
            &snaps,
            Some(t(3, 0, 0)),
            t(3, 0, 30),
        );
        assert_eq!(
            names(&p.prune),
            vec![future.name.as_str()],
            "only the mis-named one goes"
        );
        assert_eq!(p.last_successful[0].name, "data-20261123-030000");
    }

    #[test]
    fn a_slot_more_than_a_period_ahead_of_the_api_server_is_refused() {
        let s = spec("0 * * * *");
        let schedule = Schedule::parse(&s.schedule, None).expect("schedule");
        let inputs = |server: DateTime<Utc>| SnapshotInputs {
            profile: "p",
            spec: &s,
            schedule: &schedule,
            pvcs: &[],
            restoring: &[],
            snapshots: &[],
            last_scheduled: None,
            clock: Clock {
                local: t(12, 0, 10),
                server: Some(server),
            },
        };
        let pvcs = [pvc("data")];
        let ahead = plan_snapshots(&SnapshotInputs {
            pvcs: &pvcs,
            ..inputs(t(2, 0, 10))
        });
        assert!(ahead.create.is_empty(), "{:?}", ahead.create);
        assert_eq!(ahead.clock_ahead, Some(Duration::hours(10)));
        // Within a period the replica's own clock rules the slot, as the schedule says.
        let close = plan_snapshots(&SnapshotInputs {
            pvcs: &pvcs,
            ..inputs(t(11, 59, 50))
        });
        assert_eq!(close.create.len(), 1);
        assert_eq!(close.clock_ahead, None);
    }

    #[test]
    fn a_deleted_pvcs_snapshots_are_kept_to_max_count_and_do_not_make_backups_unhealthy() {
        // "gone" was deleted at 01:30; its three snapshots are days older than maxAge by now.
        let mut s = spec("0 * * * *");
        s.retention.max_count = 2;
        s.retention.max_age = Some("2h".into());
        let snaps = vec![
            snap("gone", t(0, 0, 0), true),
            snap("gone", t(1, 0, 0), true),
            snap("data", t(23, 0, 0), true),
        ];
        let p = decide(&s, &[pvc("data")], &snaps, Some(t(23, 0, 0)), t(23, 0, 30));
        let later = t(23, 0, 30) + Duration::days(3);
        let p_later = decide(&s, &[pvc("data")], &snaps, Some(t(23, 0, 0)), later);
        for plan in [&p, &p_later] {
            assert!(
                plan.prune.iter().all(|x| x.pvc != "gone"),
                "never aged out: {:?}",
                plan.prune
            );
            assert!(
                plan.unhealthy.iter().all(|u| u.name != "gone"),
                "{:?}",
                plan.unhealthy
            );
            assert_eq!(plan.orphaned_snapshots, 2);
            assert_eq!(plan.orphaned[0].name, "gone");
        }
        // Beyond maxCount the oldest still goes: the count is the bound the user chose.
        let mut more = snaps.clone();
        more.push(snap("gone", t(0, 30, 0), true));
        let p = decide(&s, &[pvc("data")], &more, Some(t(23, 0, 0)), t(23, 0, 30));
        assert_eq!(names(&p.prune), vec!["gone-20261123-000000"]);
    }

    #[test]
    fn a_deleted_pvc_leaves_the_backups_control_healthy_in_the_outcome() {
        let mut o = BackupObserved {
            api_served: true,
            pvcs: vec![pvc("data")],
            ..Default::default()
        };
        o.snapshots = vec![
            owned(&snap("gone", t(1, 0, 0), true)),
            owned(&snap("data", t(4, 0, 0), true)),
        ];
        let out = super::plan("p", &spec("0 * * * *"), &o, Clock::agreed(t(9, 0, 30)));
        assert!(
            out.findings.unhealthy.iter().all(|u| u.name != "gone"),
            "{:?}",
            out.findings.unhealthy
        );
        assert_eq!(out.findings.status.orphaned_snapshots, 1);
        assert_eq!(out.findings.status.orphaned[0].name, "gone");
    }

    #[test]
    fn failed_and_never_ready_snapshots_stay_bounded() {
        // Ten slots of a PVC whose driver failed every snapshot, then five that never turned
        // ready and the current slot's, still within its period: the newest few unfinished
        // ones stay for inspection, older ones are pruned.
        let mut snaps: Vec<SnapshotInfo> = (0..10)
            .map(|h| SnapshotInfo {
                failed: true,
                ..snap("data", t(h, 0, 0), false)
            })
            .collect();
        snaps.extend((10..=15).map(|h| snap("data", t(h, 0, 0), false)));
        let p = decide(
            &spec("0 * * * *"),
            &[pvc("data")],
            &snaps,
            Some(t(15, 0, 0)),
            t(15, 0, 30),
        );
        let kept = snaps.len() - p.prune.len();
        assert_eq!(kept, UNFINISHED_KEPT + 1, "pruned {:?}", names(&p.prune));
        // Kept: 12:00, 13:00, 14:00 and the current slot's, which may still turn ready.
        assert!(p.prune.iter().all(|s| s.taken() < Some(t(12, 0, 0))));
        assert!(p.create.is_empty(), "the slot's snapshot exists, unready");
    }
}
