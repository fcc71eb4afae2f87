//! Snapshot schedules end to end, with a seconds-level schedule, on the local CSI stack: PVCs
//! bind to hostpath volumes, snapshot-controller and csi-snapshotter have the driver cut each
//! snapshot (readiness comes from there, never from the tests), and a failure is a real one:
//! the driver refuses to cut a volume whose directory is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart_e2e::csi::{snapshot_resource, volume_dir, IMMEDIATE_CLASS};
use rampart_e2e::{
    client, delete_profile_and_wait, metric_sum, unique_id, wait_until, OperatorProcess,
    TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

const SLOT: &str = "rampart.dev/slot";
const TIMEOUT: Duration = Duration::from_secs(60);

struct Fixture {
    client: Client,
    run: String,
    ns: TestNamespace,
    tag: String,
}

impl Fixture {
    async fn new(prefix: &str) -> Result<Self> {
        let client = client().await?;
        let run = format!("{prefix}-{}", unique_id());
        let ns = TestNamespace::create_named(
            &client,
            &format!("e2e-{run}"),
            &[("e2e.rampart.dev/run", &run)],
        )
        .await?;
        let tag = format!("{prefix}-{}", unique_id());
        Ok(Self {
            client,
            run,
            ns,
            tag,
        })
    }

    fn snapshots(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns.name, &snapshot_resource())
    }

    async fn pvc(&self, name: &str, backup: bool, restored_from: Option<&str>) -> Result<()> {
        // No pod mounts these: the class that binds at once (the default waits for a consumer).
        let mut spec = json!({"accessModes": ["ReadWriteOnce"], "storageClassName": IMMEDIATE_CLASS,
                              "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(snap) = restored_from {
            spec["dataSource"] = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snap});
        }
        let labels = if backup {
            json!({"backup": "true"})
        } else {
            json!({})
        };
        let p: PersistentVolumeClaim = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "spec": spec}),
        )?;
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &p)
            .await?;
        Ok(())
    }

    fn profile(&self, name: &str, schedule: &str, deadline: i64, max_count: i32) -> Value {
        json!({
            "apiVersion": "rampart.dev/v1alpha1",
            "kind": "HardeningProfile",
            "metadata": {"name": name, "labels": {DEDICATED_LABEL: self.tag}},
            "spec": {
                "mode": "Enforce",
                "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": self.run}},
                "backups": {
                    "schedule": schedule,
                    "pvcSelector": {"matchLabels": {"backup": "true"}},
                    "volumeSnapshotClassName": "csi-snapclass",
                    "retention": {"maxCount": max_count},
                    "startingDeadlineSeconds": deadline
                }
            }
        })
    }

    async fn apply(&self, profile: Value) -> Result<String> {
        rampart_e2e::apply_profile(&self.client, profile).await
    }

    async fn list(&self) -> Result<Vec<DynamicObject>> {
        Ok(self.snapshots().list(&ListParams::default()).await?.items)
    }

    /// Rampart's snapshots as (pvc, slot) pairs.
    async fn taken(&self) -> Result<Vec<(String, String, String)>> {
        let mut out: Vec<_> = self
            .list()
            .await?
            .into_iter()
            .filter(|s| s.labels().contains_key("rampart.dev/profile"))
            .map(|s| {
                (
                    s.data["spec"]["source"]["persistentVolumeClaimName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    s.annotations().get(SLOT).cloned().unwrap_or_default(),
                    s.name_any(),
                )
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Names of Rampart's snapshots that carry a deletionTimestamp.
    async fn being_deleted(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|s| {
                s.labels().contains_key("rampart.dev/profile")
                    && s.metadata.deletion_timestamp.is_some()
            })
            .map(|s| s.name_any())
            .collect())
    }

    async fn condition(&self, profile: &str, type_: &str) -> Result<Option<(String, String)>> {
        rampart_e2e::condition(&self.client, profile, type_).await
    }

    async fn delete_profile(&self, name: &str) -> Result<()> {
        delete_profile_and_wait(&self.client, name).await
    }
}

#[tokio::test]
async fn two_operators_take_exactly_one_snapshot_per_pvc_per_slot_and_retention_keeps_what_it_must(
) -> Result<()> {
    let f = Fixture::new("snap").await?;
    f.pvc("data-a", true, None).await?;
    f.pvc("data-b", true, None).await?;
    f.pvc("scratch", false, None).await?;
    // A user's own snapshot: never touched.
    let user: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "team-manual"},
        "spec": {"volumeSnapshotClassName": "csi-snapclass", "source": {"persistentVolumeClaimName": "data-a"}}
    }))?;
    f.snapshots().create(&PostParams::default(), &user).await?;
    // Real bytes in the volumes, so the snapshots and the restore below carry something.
    for pvc in ["data-a", "data-b"] {
        let dir = volume_dir(&f.client, &f.ns.name, pvc, TIMEOUT).await?;
        std::fs::write(dir.join("contents"), format!("the bytes of {pvc}"))?;
    }
    let first = OperatorProcess::start(&f.tag).await?;
    let second = OperatorProcess::start(&f.tag).await?;
    let name = f
        .apply(f.profile(&format!("snap-{}", unique_id()), "*/3 * * * * *", 30, 2))
        .await?;

    // After the first slots: protect one early snapshot with the keep label and another by
    // restoring a PVC from it.
    wait_until("two slots of snapshots of data-a", TIMEOUT, || async {
        let n = f
            .taken()
            .await
            .map(|t| t.iter().filter(|(p, _, _)| p == "data-a").count())
            .unwrap_or(0);
        (n >= 2, format!("{n}"))
    })
    .await?;
    let early: Vec<String> = f
        .taken()
        .await?
        .into_iter()
        .filter(|(p, _, _)| p == "data-a")
        .map(|(_, _, n)| n)
        .take(2)
        .collect();
    f.snapshots()
        .patch(
            &early[0],
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"rampart.dev/keep": "true"}}})),
        )
        .await?;
    f.pvc("restored", false, Some(&early[1])).await?;
    let restored = volume_dir(&f.client, &f.ns.name, "restored", TIMEOUT).await?;
    assert_eq!(
        std::fs::read_to_string(restored.join("contents"))?,
        "the bytes of data-a",
        "the driver restores the snapshot's bytes"
    );

    // Let several more slots pass with both operators running, remembering every snapshot
    // seen (retention prunes the old ones as it goes).
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    let until = std::time::Instant::now() + Duration::from_secs(12);
    while std::time::Instant::now() < until {
        seen.extend(f.taken().await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let taken = f.taken().await?;
    let mut per_slot: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (pvc, slot, _) in &seen {
        *per_slot.entry((pvc.clone(), slot.clone())).or_default() += 1;
    }
    assert!(
        per_slot.values().all(|n| *n == 1),
        "a slot was taken twice: {per_slot:?}"
    );
    let pvcs: BTreeSet<&str> = seen.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        pvcs,
        BTreeSet::from(["data-a", "data-b"]),
        "only selected PVCs are snapshotted"
    );
    let metrics = [
        rampart_e2e::scrape(&first.metrics_addr).await?,
        rampart_e2e::scrape(&second.metrics_addr).await?,
    ];
    let created: f64 = metrics
        .iter()
        .map(|m| metric_sum(m, "rampart_snapshots_created_total", &[("profile", &name)]))
        .sum();
    let data_b_slots = seen.iter().filter(|(p, _, _)| p == "data-b").count();
    assert!(
        data_b_slots >= 4,
        "a */3 schedule over 12 s must fire at least 4 times, fired {data_b_slots}"
    );

    // Retention: at most maxCount ready per PVC besides the protected ones; the protected
    // and the user's snapshot are still there.
    let names: BTreeSet<String> = f.list().await?.iter().map(|s| s.name_any()).collect();
    assert!(
        names.contains(&early[0]),
        "the keep-labelled snapshot was pruned"
    );
    assert!(
        names.contains(&early[1]),
        "the snapshot a PVC restores from was pruned"
    );
    assert!(
        names.contains("team-manual"),
        "the user's snapshot was touched"
    );
    // A pruned snapshot stays listed, with a deletionTimestamp, until snapshot-controller
    // and the driver have deleted its content; retention has done its part by then.
    let being_deleted = f.being_deleted().await?;
    let b_kept = taken
        .iter()
        .filter(|(p, _, n)| p == "data-b" && !being_deleted.contains(n))
        .count();
    assert!(
        b_kept <= 3,
        "retention keeps 2 ready (plus at most one not yet ready): {b_kept}"
    );
    let pruned: f64 = metrics
        .iter()
        .map(|m| metric_sum(m, "rampart_snapshots_pruned_total", &[("profile", &name)]))
        .sum();
    assert!(pruned >= 1.0, "nothing was pruned");
    assert!(created >= 4.0, "creations are counted: {created}");

    let p = Api::<HardeningProfile>::all(f.client.clone())
        .get(&name)
        .await?;
    let b = p.status.and_then(|s| s.backups).context("backups status")?;
    assert_eq!(b.pvcs, 2);
    assert!(b.last_schedule_time.is_some() && b.next_schedule_time.is_some());
    assert_eq!(
        f.condition(&name, "BackupsHealthy").await?.map(|c| c.0),
        Some("True".into())
    );

    // Deleting the profile (default deletionPolicy Retain) keeps the snapshots, unowned. The
    // schedule is first moved to once a year so that no slot (and no retention pruning, which
    // is correct but would race the list below) happens between the list and the delete.
    f.apply(f.profile(&name, "0 0 1 1 *", 30, 2)).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    wait_until(
        "pruned snapshots to be deleted by the CSI stack",
        TIMEOUT,
        || async {
            let d = f.being_deleted().await;
            (d.as_ref().is_ok_and(BTreeSet::is_empty), format!("{d:?}"))
        },
    )
    .await?;
    let before: BTreeSet<String> = f.taken().await?.into_iter().map(|(_, _, n)| n).collect();
    f.delete_profile(&name).await?;
    drop((first, second));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<DynamicObject> = f
        .list()
        .await?
        .into_iter()
        .filter(|s| s.labels().contains_key("rampart.dev/profile"))
        .collect();
    let after_names: BTreeSet<String> = after.iter().map(|s| s.name_any()).collect();
    assert!(
        before.is_subset(&after_names),
        "snapshots were deleted with the profile"
    );
    assert!(
        after.iter().all(|s| s.owner_references().is_empty()),
        "kept snapshots must lose their owner reference"
    );
    Ok(())
}

#[tokio::test]
async fn failed_snapshots_make_backups_unhealthy_without_a_create_delete_loop() -> Result<()> {
    let f = Fixture::new("snapfail").await?;
    f.pvc("data", true, None).await?;
    // The volume loses its directory (a disk gone from under the driver): the driver refuses
    // to cut it, csi-snapshotter records the error on the content and snapshot-controller on
    // the snapshot.
    let dir = volume_dir(&f.client, &f.ns.name, "data", TIMEOUT).await?;
    std::fs::remove_dir_all(&dir)?;
    let op = OperatorProcess::start(&f.tag).await?;
    let name = f
        .apply(f.profile(&format!("snapfail-{}", unique_id()), "*/3 * * * * *", 30, 1))
        .await?;
    wait_until("BackupsHealthy=False", TIMEOUT, || async {
        let c = f.condition(&name, "BackupsHealthy").await;
        (
            matches!(&c, Ok(Some((s, _))) if s == "False"),
            format!("{c:?}"),
        )
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let m = rampart_e2e::scrape(&op.metrics_addr).await?;
    let deletes = metric_sum(
        &m,
        "rampart_api_writes_total",
        &[
            ("profile", &name),
            ("kind", "VolumeSnapshot"),
            ("verb", "delete"),
        ],
    );
    let creates = metric_sum(
        &m,
        "rampart_api_writes_total",
        &[
            ("profile", &name),
            ("kind", "VolumeSnapshot"),
            ("verb", "create"),
        ],
    );
    // Failed snapshots are kept for inspection, but bounded: only those older than the newest
    // few are pruned, never one Rampart just made (that would be a create/delete loop).
    let kept = rampart::controls::backups::UNFINISHED_KEPT as f64;
    assert!(
        deletes <= (creates - kept).max(0.0),
        "failed snapshots are pruned only beyond the newest {kept}: {creates} made, {deletes} deleted"
    );
    let taken = f.taken().await?;
    let slots: BTreeSet<&str> = taken.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(
        taken.len(),
        slots.len(),
        "one snapshot per slot, no retries of a failed one: {taken:?}"
    );
    assert!(metric_sum(&m, "rampart_snapshots_failed", &[("profile", &name)]) >= 1.0);
    let p = Api::<HardeningProfile>::all(f.client.clone())
        .get(&name)
        .await?;
    let b = p.status.and_then(|s| s.backups).context("backups status")?;
    assert!(
        b.failed_snapshots >= 1,
        "status.backups.failedSnapshots counts them: {b:?}"
    );
    assert_eq!(b.ready_snapshots, 0, "nothing was cut: {b:?}");
    // Every snapshot is unready and each error is the driver's (one cut this very moment may
    // have no status yet).
    let snaps = f.list().await?;
    let errors: Vec<&str> = snaps
        .iter()
        .filter_map(|s| s.data["status"]["error"]["message"].as_str())
        .collect();
    assert!(
        !errors.is_empty() && errors.iter().all(|m| m.contains("no directory")),
        "the snapshots report the driver's error: {errors:?}"
    );
    assert!(
        snaps
            .iter()
            .all(|s| s.data["status"]["readyToUse"] != json!(true)),
        "a snapshot of a volume without its directory became ready"
    );
    f.delete_profile(&name).await?;
    drop(op);
    Ok(())
}

/// Waits for the operator to record a schedule slot, then stops it across the next slot.
async fn outage_across_a_slot(
    f: &Fixture,
    schedule: &str,
    deadline: i64,
) -> Result<(String, String, OperatorProcess)> {
    let mut op = OperatorProcess::start(&f.tag).await?;
    let name = f
        .apply(f.profile(&format!("outage-{}", unique_id()), schedule, deadline, 5))
        .await?;
    wait_until("a first slot to be recorded", TIMEOUT, || async {
        let p = Api::<HardeningProfile>::all(f.client.clone())
            .get(&name)
            .await;
        let last = p
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.backups)
            .and_then(|b| b.last_schedule_time);
        (last.is_some(), format!("{last:?}"))
    })
    .await?;
    let p = Api::<HardeningProfile>::all(f.client.clone())
        .get(&name)
        .await?;
    let next = p
        .status
        .and_then(|s| s.backups)
        .and_then(|b| b.next_schedule_time)
        .context("next slot")?;
    op.kill();
    let next_t = next;
    // Stay down until the slot is 4 s in the past.
    let wait = (next_t - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(4);
    tokio::time::sleep(wait).await;
    let op = OperatorProcess::start(&f.tag).await?;
    Ok((name, rampart::api::conditions::rfc3339(next), op))
}

#[tokio::test]
async fn a_slot_missed_within_the_deadline_is_taken_once() -> Result<()> {
    let f = Fixture::new("catchup").await?;
    f.pvc("data", true, None).await?;
    let (name, missed, op) = outage_across_a_slot(&f, "*/15 * * * * *", 10).await?;
    wait_until("the missed slot to be caught up", TIMEOUT, || async {
        let t = f.taken().await.unwrap_or_default();
        (t.iter().any(|(_, s, _)| *s == missed), format!("{t:?}"))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let count = f
        .taken()
        .await?
        .iter()
        .filter(|(_, s, _)| *s == missed)
        .count();
    assert_eq!(count, 1, "caught up exactly once");
    f.delete_profile(&name).await?;
    drop(op);
    Ok(())
}

#[tokio::test]
async fn a_slot_missed_past_the_deadline_is_reported_not_taken() -> Result<()> {
    let f = Fixture::new("missed").await?;
    f.pvc("data", true, None).await?;
    let (name, missed, op) = outage_across_a_slot(&f, "*/15 * * * * *", 2).await?;
    wait_until("the miss to be recorded", TIMEOUT, || async {
        let p = Api::<HardeningProfile>::all(f.client.clone())
            .get(&name)
            .await;
        let b = p.ok().and_then(|p| p.status).and_then(|s| s.backups);
        (
            b.as_ref().is_some_and(|b| b.missed_slots >= 1),
            format!("{b:?}"),
        )
    })
    .await?;
    assert!(
        !f.taken().await?.iter().any(|(_, s, _)| *s == missed),
        "a slot past its deadline must not be taken"
    );
    let m = rampart_e2e::scrape(&op.metrics_addr).await?;
    assert!(
        metric_sum(
            &m,
            "rampart_snapshot_slots_missed_total",
            &[("profile", &name)]
        ) >= 1.0
    );
    f.delete_profile(&name).await?;
    drop(op);
    Ok(())
}
