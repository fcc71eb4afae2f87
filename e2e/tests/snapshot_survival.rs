//! Backups that nothing can destroy: the ways a profile goes (the foreground deletion GitOps
//! tools use when they prune, a finalizer removed by hand while the operator is down), a user
//! removing Rampart's label from a snapshot, and a cluster that serves the snapshot API only
//! after the operator started. Each keeps every snapshot; the count is taken before and after.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart_e2e::csi::{snapshot_resource, IMMEDIATE_CLASS};
use rampart_e2e::second_plane::SecondPlane;
use rampart_e2e::{
    client, client_from, repo_root, unique_id, wait_for, wait_until, OperatorLaunch,
    OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(90);
const PROFILE_LABEL: &str = "rampart.dev/profile";

/// A namespace with PVCs selected for backup and a profile of its own for a test's operator.
struct Estate {
    client: Client,
    run: String,
    tag: String,
    namespace: String,
}

impl Estate {
    /// The namespace and `pvcs` backed-up PVCs; the namespace is created with `client` (a
    /// second plane's tests pass their own).
    async fn new(client: &Client, prefix: &str, pvcs: &[&str]) -> Result<Self> {
        let run = format!("{prefix}-{}", unique_id());
        let namespace = format!("e2e-{run}");
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": namespace, "labels": {"e2e.rampart.dev/run": run}}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {namespace}"))?;
        let estate = Self {
            client: client.clone(),
            tag: format!("{prefix}-{}", unique_id()),
            run,
            namespace,
        };
        for name in pvcs {
            // No pod mounts these: the class that binds at once.
            let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"backup": "true"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": IMMEDIATE_CLASS,
                         "resources": {"requests": {"storage": "1Gi"}}}
            }))?;
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), &estate.namespace)
                .create(&PostParams::default(), &pvc)
                .await?;
        }
        Ok(estate)
    }

    fn profile(&self, name: &str) -> Value {
        json!({
            "apiVersion": "rampart.dev/v1alpha1",
            "kind": "HardeningProfile",
            "metadata": {"name": name, "labels": {DEDICATED_LABEL: self.tag}},
            "spec": {
                "mode": "Enforce",
                "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": self.run}},
                "networkPolicies": {},
                "backups": {
                    "schedule": "*/4 * * * * *",
                    "pvcSelector": {"matchLabels": {"backup": "true"}},
                    "volumeSnapshotClassName": "csi-snapclass",
                    "retention": {"maxCount": 50},
                    "startingDeadlineSeconds": 30
                }
            }
        })
    }

    fn snapshots(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &snapshot_resource())
    }

    fn profiles(&self) -> Api<HardeningProfile> {
        Api::all(self.client.clone())
    }

    /// Every VolumeSnapshot in the namespace Rampart made (by name), with whether any is being
    /// deleted.
    async fn snapshot_names(&self) -> Result<(BTreeSet<String>, usize)> {
        let all = self.snapshots().list(&ListParams::default()).await?.items;
        let deleting = all
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_some())
            .count();
        Ok((all.iter().map(|s| s.name_any()).collect(), deleting))
    }

    /// Waits until the profile made at least `n` ready snapshots, then suspends its schedule
    /// and waits until the set stops changing: the count to compare after the deletion.
    async fn settled_snapshots(&self, profile: &str, n: usize) -> Result<BTreeSet<String>> {
        wait_until(&format!("{n} ready snapshots"), TIMEOUT, || async {
            let ready = self
                .snapshots()
                .list(&ListParams::default().labels(PROFILE_LABEL))
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|s| s.data["status"]["readyToUse"] == json!(true))
                        .count()
                })
                .unwrap_or(0);
            (ready >= n, format!("{ready} ready"))
        })
        .await?;
        self.profiles()
            .patch(
                profile,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"backups": {"suspend": true}}})),
            )
            .await?;
        // A slot's creations may be in flight when the suspension lands: two quiet slots.
        let mut last = self.snapshot_names().await?.0;
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(9) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.snapshot_names().await?.0;
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        Ok(last)
    }

    /// Fails unless every snapshot in `before` is still there, none being deleted, for a
    /// while after the profile went: garbage collection is asynchronous.
    async fn assert_all_kept(&self, before: &BTreeSet<String>, why: &str) -> Result<()> {
        let watch_until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < watch_until {
            let (now, deleting) = self.snapshot_names().await?;
            let lost: Vec<&String> = before.difference(&now).collect();
            if !lost.is_empty() || deleting > 0 {
                bail!(
                    "{why}: {} of {} snapshots lost ({lost:?}), {deleting} being deleted",
                    lost.len(),
                    before.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Waits until garbage collection removed the profile's NetworkPolicies: proof that it
    /// processed the profile's dependents, so the snapshots' fate is decided too.
    async fn wait_for_garbage_collection(&self) -> Result<()> {
        let policies = Api::<NetworkPolicy>::namespaced(self.client.clone(), &self.namespace);
        wait_until(
            "garbage collection of the profile's NetworkPolicies",
            TIMEOUT,
            || async {
                let n = policies
                    .list(&ListParams::default().labels(PROFILE_LABEL))
                    .await
                    .map(|l| l.items.len())
                    .unwrap_or(usize::MAX);
                (n == 0, format!("{n} left"))
            },
        )
        .await
    }

    async fn wait_profile_gone(&self, name: &str) -> Result<()> {
        wait_until(&format!("profile {name} to be gone"), TIMEOUT, || async {
            let got = self.profiles().get_opt(name).await;
            (
                matches!(got, Ok(None)),
                format!("{:?}", got.map(|p| p.is_some())),
            )
        })
        .await
    }
}

impl Drop for Estate {
    fn drop(&mut self) {
        let _ = TestNamespace {
            name: self.namespace.clone(),
        };
    }
}

#[tokio::test]
async fn foreground_deletion_of_a_profile_keeps_every_snapshot() -> Result<()> {
    let c = client().await?;
    let e = Estate::new(&c, "fg", &["data-a", "data-b"]).await?;
    let _op = OperatorProcess::start(&e.tag).await?;
    let name = rampart_e2e::apply_profile(&c, e.profile(&format!("fg-{}", unique_id()))).await?;
    let before = e.settled_snapshots(&name, 6).await?;

    // What `kubectl delete --cascade=foreground` and Argo CD's foreground prune send.
    e.profiles()
        .delete(&name, &DeleteParams::foreground())
        .await?;
    e.wait_profile_gone(&name).await?;
    e.wait_for_garbage_collection().await?;
    e.assert_all_kept(&before, "foreground deletion").await?;
    for s in e.snapshots().list(&ListParams::default()).await?.items {
        assert!(
            s.metadata
                .owner_references
                .as_ref()
                .is_none_or(|o| o.is_empty()),
            "{} keeps an owner reference: {:?}",
            s.name_any(),
            s.metadata.owner_references
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_finalizer_removed_by_hand_while_the_operator_is_down_keeps_every_snapshot() -> Result<()>
{
    let c = client().await?;
    let e = Estate::new(&c, "fin", &["data-a", "data-b"]).await?;
    let mut op = OperatorProcess::start(&e.tag).await?;
    let name = rampart_e2e::apply_profile(&c, e.profile(&format!("fin-{}", unique_id()))).await?;
    let before = e.settled_snapshots(&name, 6).await?;
    op.kill();

    // The runbook's way out of a profile stuck deleting while the operator is gone.
    e.profiles().delete(&name, &DeleteParams::default()).await?;
    e.profiles()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    e.wait_profile_gone(&name).await?;
    e.wait_for_garbage_collection().await?;
    e.assert_all_kept(&before, "finalizer removed by hand")
        .await
}

#[tokio::test]
async fn a_snapshot_whose_managed_by_label_was_removed_survives_the_profile() -> Result<()> {
    let c = client().await?;
    let e = Estate::new(&c, "unlabelled", &["data-a"]).await?;
    let op = OperatorProcess::start(&e.tag).await?;
    let name =
        rampart_e2e::apply_profile(&c, e.profile(&format!("unlabelled-{}", unique_id()))).await?;
    let before = e.settled_snapshots(&name, 3).await?;
    let victim = before.iter().next().context("a snapshot")?.clone();
    e.snapshots()
        .patch(
            &victim,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}})),
        )
        .await?;

    rampart_e2e::delete_profile_and_wait(&c, &name).await?;
    e.wait_for_garbage_collection().await?;
    e.assert_all_kept(&before, "a snapshot without Rampart's managed-by label")
        .await?;
    drop(op);
    Ok(())
}

#[tokio::test]
async fn snapshot_crds_installed_after_the_operator_started_get_backups_without_a_restart(
) -> Result<()> {
    let plane = SecondPlane::start_without_snapshot_api(&format!("late-{}", unique_id()))?;
    let c = client_from(&plane.kubeconfig()).await?;
    plane.install_rampart_crd()?;
    let e = Estate::new(&c, "late", &["data-a", "data-b"]).await?;
    let started = Instant::now();
    let op = OperatorProcess::launch(&OperatorLaunch {
        bin: repo_root().join("target/debug/rampart"),
        selector: format!("{DEDICATED_LABEL}={}", e.tag),
        extra: vec![],
        kubeconfig: plane.kubeconfig(),
        log_name: format!("operator-{}", e.tag),
        env: vec![],
    })
    .await?;
    let name = rampart_e2e::apply_profile(&c, e.profile(&format!("late-{}", unique_id()))).await?;
    let missing =
        rampart_e2e::wait_condition(&c, &name, "BackupsHealthy", "False", TIMEOUT).await?;
    assert_eq!(
        rampart_e2e::condition_of(&missing, "BackupsHealthy").map(|c| c.1),
        Some("SnapshotAPIMissing".to_string())
    );

    // The CRDs arrive a minute after the operator, as when a platform team installs the
    // snapshot controller's chart after Rampart's.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    plane.install_snapshot_api()?;
    let taken = wait_for("snapshots of both PVCs", TIMEOUT, || async {
        let names = e
            .snapshots()
            .list(&ListParams::default().labels(PROFILE_LABEL))
            .await
            .map_err(|err| err.to_string())?
            .items
            .iter()
            .filter_map(|s| {
                s.data["spec"]["source"]["persistentVolumeClaimName"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect::<BTreeSet<_>>();
        if names.len() == 2 {
            Ok(Some(names))
        } else {
            Err(format!("snapshots of {names:?}"))
        }
    })
    .await?;
    assert_eq!(
        taken,
        BTreeSet::from(["data-a".to_string(), "data-b".to_string()])
    );
    // The same process: no restart was needed.
    assert!(
        op.pid() > 0 && rampart_e2e::is_ready(&op.metrics_addr).await,
        "the operator that started before the CRDs is still serving"
    );
    Ok(())
}
