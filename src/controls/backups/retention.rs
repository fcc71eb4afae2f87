//! Retention as small named checks over one PVC's snapshots, newest first by creation time:
//! what is beyond the count or the age, which unfinished ones are beyond the few kept for
//! inspection, and what the status says of the PVC (its newest good snapshot, its failures,
//! whether it is unhealthy or orphaned).

use chrono::{DateTime, Duration, Utc};

use super::{ByPvc, SnapshotInfo, SnapshotInputs, SnapshotPlan};
use crate::api::{BackupControl, ObjectRefStatus};
use crate::schedule::parse_duration;
/// How many failed or never-ready snapshots of a PVC are kept for inspection; older ones are
/// pruned, so a PVC that cannot be snapshotted does not gain one more every slot forever.
pub const UNFINISHED_KEPT: usize = 3;

/// Retention's checks for one PVC's snapshots.
pub(super) struct Retained<'a> {
    pub(super) spec: &'a BackupControl,
    /// The API server's time.
    pub(super) now: DateTime<Utc>,
    pub(super) period: Option<Duration>,
    /// The PVC is gone or no longer selected: its snapshots may be the only copy of its data.
    pub(super) orphaned: bool,
}

impl Retained<'_> {
    /// Ready snapshots beyond the count, or (for a PVC still backed up) beyond the age, oldest
    /// first; never the newest ready one. An orphaned PVC's snapshots are never aged out: no
    /// newer one will come to replace them.
    pub(super) fn beyond_retention<'s>(&self, ready: &[&'s SnapshotInfo]) -> Vec<&'s SnapshotInfo> {
        let max_count = self.spec.retention.max_count.max(1) as usize;
        let max_age = self
            .spec
            .retention
            .max_age
            .as_deref()
            .and_then(parse_duration);
        ready
            .iter()
            .copied()
            .enumerate()
            .skip(1)
            .filter_map(|(i, s)| {
                let too_many = i >= max_count;
                let too_old = !self.orphaned
                    && max_age.is_some_and(|age| s.taken().is_some_and(|t| self.now - t > age));
                (too_many || too_old).then_some(s)
            })
            .collect()
    }

    /// Failed snapshots, and ones that never turned ready though a period has passed, beyond
    /// the newest [`UNFINISHED_KEPT`] of them.
    pub(super) fn unfinished_beyond_bound<'s>(
        &self,
        snaps: &[&'s SnapshotInfo],
    ) -> Vec<&'s SnapshotInfo> {
        let settle = self.period.unwrap_or_else(|| Duration::hours(1));
        let unfinished: Vec<&'s SnapshotInfo> = snaps
            .iter()
            .copied()
            .filter(|s| s.failed || (!s.ready && s.taken().is_some_and(|t| self.now - t > settle)))
            .collect();
        unfinished.into_iter().skip(UNFINISHED_KEPT).collect()
    }
}

/// The newest ready snapshot of a PVC, for the status and the last-success metric.
pub(super) fn record_newest_ready(
    ns: &str,
    pvc: &str,
    ready: &[&SnapshotInfo],
    out: &mut SnapshotPlan,
) {
    let Some(newest) = ready.first() else {
        return;
    };
    if let Some(t) = newest.taken() {
        out.last_success_times
            .push((ns.to_string(), pvc.to_string(), t));
    }
    out.last_successful.push(ObjectRefStatus {
        namespace: ns.to_string(),
        kind: "VolumeSnapshot".into(),
        name: newest.name.clone(),
        message: format!("PVC {pvc}"),
    });
}

pub(super) fn record_failed(ns: &str, pvc: &str, snaps: &[&SnapshotInfo], out: &mut SnapshotPlan) {
    out.failed
        .extend(snaps.iter().filter(|s| s.failed).map(|s| ObjectRefStatus {
            namespace: ns.to_string(),
            kind: "VolumeSnapshot".into(),
            name: s.name.clone(),
            message: format!("snapshot of PVC {pvc} reports an error; kept for inspection"),
        }));
}

/// A PVC that is gone or no longer selected, with how many snapshots of it are kept.
pub(super) fn orphan_entry(ns: &str, pvc: &str, snaps: &[&SnapshotInfo]) -> ObjectRefStatus {
    ObjectRefStatus {
        namespace: ns.to_string(),
        kind: "PersistentVolumeClaim".into(),
        name: pvc.to_string(),
        message: format!(
            "gone or no longer selected; {} snapshots kept, newest {}",
            snaps.len(),
            snaps.first().map(|s| s.name.as_str()).unwrap_or_default()
        ),
    }
}

/// Why a selected PVC's backups are unhealthy: its newest snapshot failed, or its newest ready
/// one is older than two periods.
pub(super) fn pvc_health(
    snaps: &[&SnapshotInfo],
    ready: &[&SnapshotInfo],
    period: Option<Duration>,
    now: DateTime<Utc>,
) -> Option<&'static str> {
    let stale = match (ready.first().and_then(|s| s.taken()), period) {
        (Some(t), Some(p)) => now - t > p * 2,
        _ => false,
    };
    if stale {
        Some("newest ready snapshot is older than two periods")
    } else if snaps.first().is_some_and(|s| s.failed) {
        Some("newest snapshot failed")
    } else {
        None
    }
}

/// Selected PVCs old enough to have two slots behind them but no ready snapshot: a backup that
/// never worked must not look healthy.
pub(super) fn never_backed_up<'a>(
    input: &'a SnapshotInputs,
    by_pvc: &'a ByPvc,
    period: Duration,
) -> impl Iterator<Item = ObjectRefStatus> + 'a {
    let now = input.clock.ages_now();
    input
        .pvcs
        .iter()
        .filter(move |pvc| {
            let key = (pvc.namespace.as_str(), pvc.name.as_str());
            let has_ready = by_pvc
                .get(&key)
                .is_some_and(|snaps| snaps.iter().any(|s| s.good()));
            let old = pvc.created.is_some_and(|c| now - c > period * 2);
            old && !has_ready && !input.spec.suspend
        })
        .map(|pvc| ObjectRefStatus {
            namespace: pvc.namespace.clone(),
            kind: "PersistentVolumeClaim".into(),
            name: pvc.name.clone(),
            message: "no ready snapshot for two periods".into(),
        })
}
