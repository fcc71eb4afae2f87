//! Restore verification (`backups.verify`) end to end on the local CSI stack, with a dedicated
//! operator. Rampart takes the snapshot (snapshotOnCreate), then restores it into a scratch PVC
//! in its own namespace through a pre-provisioned VolumeSnapshotContent; the outcome is the
//! driver's, never patched by the test.
//!
//! What "succeeded" proves: the scratch PVC bound, which our hostpath driver allows only after
//! it has checked the snapshot archive's SHA-256 against the one it recorded when it cut the
//! snapshot and unpacked it into the new volume. The test does not read the restored volume's
//! directory (Rampart deletes the scratch PVC as soon as it binds, and catching it would race);
//! the bytes' integrity is inferred from the driver's checksum, and the corruption test shows
//! that check is what decides: flipping one byte of the same kind of archive makes the restore
//! fail, and the failure is recorded naming the PVC and the driver's reason.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodSpec};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use kube::{Api, Client};
use rampart::api::HardeningProfile;
use rampart_e2e::apps::{create_all, App};
use rampart_e2e::csi::{
    snapshot_content_resource, snapshot_resource, volume_dir, DEFAULT_CLASS, IMMEDIATE_CLASS,
};
use rampart_e2e::{
    client, delete_profile_and_wait, kubeconfig_path, metric_sum, repo_root, unique_id, wait_for,
    OperatorLaunch, OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(90);

struct Fixture {
    client: Client,
    run: String,
    ns: TestNamespace,
    tag: String,
    profile: String,
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
        Ok(Self {
            client,
            tag: format!("{prefix}-{}", unique_id()),
            profile: format!("{prefix}-{}", unique_id()),
            run,
            ns,
        })
    }

    /// A selected PVC holding `bytes` in its volume's directory.
    async fn pvc_with(&self, name: &str, bytes: &str) -> Result<()> {
        let p: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"backup": "true"}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                // A bare PVC has no pod to bind it on the default (WaitForFirstConsumer) class.
                "storageClassName": IMMEDIATE_CLASS
            }
        }))?;
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &p)
            .await?;
        let dir = volume_dir(&self.client, &self.ns.name, name, TIMEOUT).await?;
        std::fs::write(dir.join("contents"), bytes)?;
        Ok(())
    }

    /// A yearly snapshot schedule that takes each PVC's first snapshot at once; `verify` added
    /// when given.
    fn profile(&self, verify: Option<Value>) -> Value {
        let mut backups = json!({
            "schedule": "0 0 1 1 *",
            "snapshotOnCreate": true,
            "pvcSelector": {"matchLabels": {"backup": "true"}},
            "volumeSnapshotClassName": "csi-snapclass",
        });
        if let Some(v) = verify {
            backups["verify"] = v;
        }
        json!({
            "apiVersion": "rampart.dev/v1alpha1",
            "kind": "HardeningProfile",
            "metadata": {"name": self.profile, "labels": {DEDICATED_LABEL: self.tag}},
            "spec": {
                "mode": "Enforce",
                "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": self.run}},
                "backups": backups,
            }
        })
    }

    /// Waits for Rampart's snapshot of `pvc` to be ready and returns (its name, the driver's
    /// archive of it).
    async fn ready_snapshot(&self, pvc: &str) -> Result<(String, std::path::PathBuf)> {
        let snaps = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            &self.ns.name,
            &snapshot_resource(),
        );
        let name = wait_for("Rampart's snapshot to be ready", TIMEOUT, || {
            let snaps = snaps.clone();
            async move {
                let list = snaps
                    .list(&ListParams::default().labels("rampart.dev/control=snapshot"))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(list
                    .items
                    .into_iter()
                    .find(|s| {
                        s.data["spec"]["source"]["persistentVolumeClaimName"] == pvc
                            && s.data["status"]["readyToUse"] == Value::Bool(true)
                    })
                    .and_then(|s| s.metadata.name))
            }
        })
        .await?;
        let archive =
            rampart_e2e::csi::wait_snapshot_ready(&self.client, &self.ns.name, &name, TIMEOUT)
                .await?;
        Ok((name, archive))
    }

    /// The profile's `status.backups.lastVerified` entry for `pvc` once it has `result`.
    async fn verified(&self, pvc: &str, result: &str) -> Result<Value> {
        let api = Api::<HardeningProfile>::all(self.client.clone());
        let name = self.profile.clone();
        wait_for(
            &format!("a {result} verification of {pvc}"),
            TIMEOUT,
            || {
                let (api, name) = (api.clone(), name.clone());
                async move {
                    let p = api.get(&name).await.map_err(|e| e.to_string())?;
                    let status = serde_json::to_value(&p.status).map_err(|e| e.to_string())?;
                    let entries = status["backups"]["lastVerified"].clone();
                    let found = entries
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|e| e["pvc"] == pvc && e["result"] == result)
                        .cloned();
                    match found {
                        Some(e) => Ok(Some(e)),
                        None => Err(format!("lastVerified {entries}")),
                    }
                }
            },
        )
        .await
    }

    /// The condition's status and message.
    async fn condition(&self, type_: &str) -> Result<Option<(String, String)>> {
        let p = Api::<HardeningProfile>::all(self.client.clone())
            .get(&self.profile)
            .await?;
        Ok(p.status.and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.type_ == type_)
                .map(|c| (c.status.as_str().to_string(), c.message))
        }))
    }

    /// The profile's scratch objects still present (not being deleted): contents, snapshots
    /// and PVCs.
    async fn scratch_left(&self) -> Result<Vec<String>> {
        let selector = format!(
            "rampart.dev/profile={},rampart.dev/control=verify",
            self.profile
        );
        let lp = ListParams::default().labels(&selector);
        let mut out = Vec::new();
        let contents =
            Api::<DynamicObject>::all_with(self.client.clone(), &snapshot_content_resource());
        let snaps = Api::<DynamicObject>::all_with(self.client.clone(), &snapshot_resource());
        for o in contents
            .list(&lp)
            .await?
            .items
            .into_iter()
            .chain(snaps.list(&lp).await?.items)
        {
            if o.metadata.deletion_timestamp.is_none() {
                out.push(o.metadata.name.unwrap_or_default());
            }
        }
        for p in Api::<PersistentVolumeClaim>::all(self.client.clone())
            .list(&lp)
            .await?
            .items
        {
            if p.metadata.deletion_timestamp.is_none() {
                out.push(p.metadata.name.unwrap_or_default());
            }
        }
        for j in Api::<Job>::all(self.client.clone()).list(&lp).await?.items {
            if j.metadata.deletion_timestamp.is_none() {
                out.push(format!("job/{}", j.metadata.name.unwrap_or_default()));
            }
        }
        Ok(out)
    }

    /// Waits until this verification's Job and restored PVC are deleted (gone or on their
    /// way). Later slots make their own, so the test looks at these two only.
    async fn gone(&self, ns: &str, job: &str, claim: &str) -> Result<()> {
        let jobs = Api::<Job>::namespaced(self.client.clone(), ns);
        let pvcs = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns);
        wait_for(
            "the check Job and its restored PVC to be deleted",
            TIMEOUT,
            || {
                let (jobs, pvcs) = (jobs.clone(), pvcs.clone());
                async move {
                    let j = jobs.get_opt(job).await.map_err(|e| e.to_string())?;
                    let p = pvcs.get_opt(claim).await.map_err(|e| e.to_string())?;
                    let going = |m: Option<&kube::core::ObjectMeta>| {
                        m.is_none_or(|m| m.deletion_timestamp.is_some())
                    };
                    if going(j.as_ref().map(|j| &j.metadata))
                        && going(p.as_ref().map(|p| &p.metadata))
                    {
                        Ok(Some(()))
                    } else {
                        Err(format!(
                            "job {job} present: {}, pvc {claim} present: {}",
                            j.is_some(),
                            p.is_some()
                        ))
                    }
                }
            },
        )
        .await
    }

    /// The profile's check Job, once Rampart made it.
    async fn check_job(&self) -> Result<Job> {
        let selector = format!(
            "rampart.dev/profile={},rampart.dev/control=verify",
            self.profile
        );
        let jobs = Api::<Job>::all(self.client.clone());
        // The Job comes after the snapshot, the scratch content, snapshot and PVC: under a
        // loaded plane that chain takes longer than one step's timeout.
        wait_for("Rampart's check Job", 2 * TIMEOUT, || {
            let (jobs, selector) = (jobs.clone(), selector.clone());
            async move {
                let list = jobs
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(list.items.into_iter().next())
            }
        })
        .await
    }
}

/// The check Job's `restored` volume: the PVC Rampart restored for it.
fn restored_volume(
    job: &Job,
) -> Option<k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource> {
    job.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "restored")?
        .persistent_volume_claim
        .clone()
}

/// Verification every 5 s (60 s timeout) with a check Job: one container reading the restored
/// volume at /restored, on a node matching `node_selector` when given.
fn verify_with_check(node_selector: Option<Value>) -> Value {
    let mut template = json!({"spec": {"containers": [{
        "name": "check",
        "image": "registry.example/checker:1",
        "command": ["sha256sum", "/restored/contents"],
        "volumeMounts": [{"name": "restored", "mountPath": "/restored"}],
    }]}});
    if let Some(n) = node_selector {
        template["spec"]["nodeSelector"] = n;
    }
    let mut verify = verify_spec(60);
    verify["job"] = json!({"template": template});
    verify
}

/// The check Job's pod spec runs under `restricted`: the restricted security context filled
/// where the template left it empty, no token, and a pod of that spec admitted (server-side
/// dry run) into a namespace whose PodSecurity admission enforces `restricted`. The user's
/// template as written (none of that filled in) is refused there, so the admission is a test.
async fn assert_runs_restricted(client: &Client, pod: &PodSpec) -> Result<()> {
    assert_eq!(pod.automount_service_account_token, Some(false), "no token");
    let sc = pod.security_context.clone().unwrap_or_default();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    for c in &pod.containers {
        let sc = c.security_context.clone().unwrap_or_default();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()]),
            "{}",
            c.name
        );
    }
    let restricted = TestNamespace::create(
        client,
        "restricted",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &restricted.name);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let as_pod = |spec: Value| -> Result<Pod> {
        Ok(serde_json::from_value(
            json!({"metadata": {"name": "check"}, "spec": spec}),
        )?)
    };
    let admitted = pods
        .create(&dry_run, &as_pod(serde_json::to_value(pod)?)?)
        .await;
    let mut unfilled = verify_with_check(None)["job"]["template"]["spec"].clone();
    unfilled["volumes"] = serde_json::to_value(&pod.volumes)?;
    let refused = pods.create(&dry_run, &as_pod(unfilled)?).await;
    drop(restricted);
    if let Err(e) = admitted {
        anyhow::bail!("the check Job's pod is refused under restricted: {e}");
    }
    match refused {
        Err(e) if e.to_string().contains("PodSecurity") => Ok(()),
        other => anyhow::bail!("the unfilled template should break restricted: {other:?}"),
    }
}

fn verify_spec(timeout: i64) -> Value {
    json!({"schedule": "*/5 * * * * *", "timeoutSeconds": timeout})
}

#[tokio::test]
async fn a_snapshot_restores_into_a_scratch_pvc_and_the_status_and_metric_say_so() -> Result<()> {
    let f = Fixture::new("verok").await?;
    f.pvc_with("data", "the bytes of data").await?;
    let op = OperatorProcess::start(&f.tag).await?;
    rampart_e2e::apply_profile(&f.client, f.profile(Some(verify_spec(60)))).await?;
    let (snapshot, archive) = f.ready_snapshot("data").await?;

    let entry = f.verified("data", "Succeeded").await?;
    assert_eq!(entry["namespace"], f.ns.name.as_str());
    assert_eq!(entry["snapshot"], snapshot.as_str(), "{entry}");
    let message = entry["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("{}/data", f.ns.name)),
        "the message names the PVC: {message}"
    );
    let (status, reason) = f.condition("BackupsVerified").await?.unwrap_or_default();
    assert_eq!(status, "True", "BackupsVerified: {reason}");

    let metrics = rampart_e2e::scrape(&op.metrics_addr).await?;
    let t = metric_sum(
        &metrics,
        "rampart_backup_last_verified_timestamp_seconds",
        &[
            ("profile", &f.profile),
            ("namespace", &f.ns.name),
            ("pvc", "data"),
        ],
    );
    assert!(t > 1.7e9, "last verified timestamp {t}");
    // Scratch snapshots and PVCs are not real snapshots: nothing counted as taken but the one.
    let created = metric_sum(
        &metrics,
        "rampart_snapshots_created_total",
        &[("profile", &f.profile)],
    );
    assert_eq!(created, 1.0, "only the source snapshot counts as created");

    // The scratch objects go; the source snapshot and its archive stay (Retain).
    wait_for("the scratch objects to be deleted", TIMEOUT, || async {
        let left = f.scratch_left().await.map_err(|e| e.to_string())?;
        if left.is_empty() {
            Ok(Some(()))
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await?;
    assert!(
        archive.is_file(),
        "the source snapshot's archive must survive the scratch content's deletion"
    );
    let snaps =
        Api::<DynamicObject>::namespaced_with(f.client.clone(), &f.ns.name, &snapshot_resource());
    assert!(snaps.get_opt(&snapshot).await?.is_some());

    // A later slot verifies again, from the same snapshot, and still succeeds.
    let first_time = entry["time"].as_str().unwrap_or_default().to_string();
    wait_for("a second verification", TIMEOUT, || async {
        let e = f
            .verified("data", "Succeeded")
            .await
            .map_err(|e| e.to_string())?;
        if e["time"].as_str() != Some(first_time.as_str()) {
            Ok(Some(()))
        } else {
            Err(format!("{e}"))
        }
    })
    .await?;

    delete_profile_and_wait(&f.client, &f.profile).await?;
    let metrics = rampart_e2e::scrape(&op.metrics_addr).await?;
    assert!(
        !metrics.lines().any(
            |l| l.starts_with("rampart_backup_last_verified_timestamp_seconds{")
                && l.contains(&f.profile)
        ),
        "series of a deleted profile are removed"
    );
    Ok(())
}

#[tokio::test]
async fn a_corrupted_archive_fails_verification_naming_the_pvc() -> Result<()> {
    let f = Fixture::new("verbad").await?;
    f.pvc_with("ledger", "precious").await?;
    let _op = OperatorProcess::start(&f.tag).await?;
    // Snapshots first, verification only once the archive is corrupted.
    rampart_e2e::apply_profile(&f.client, f.profile(None)).await?;
    let (_, archive) = f.ready_snapshot("ledger").await?;
    let mut b = std::fs::read(&archive)?;
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&archive, b)?;
    Api::<HardeningProfile>::all(f.client.clone())
        .patch(
            &f.profile,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"backups": {"verify": verify_spec(15)}}})),
        )
        .await?;

    let entry = f.verified("ledger", "Failed").await?;
    let message = entry["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("{}/ledger", f.ns.name)),
        "the message names the PVC: {message}"
    );
    assert!(
        message.contains("did not bind") && message.contains("checksum"),
        "the message says why, from the driver: {message}"
    );
    let (status, reason) = f.condition("BackupsVerified").await?.unwrap_or_default();
    assert_eq!(status, "False");
    assert!(
        reason.contains(&format!("{}/ledger", f.ns.name)),
        "the condition names the PVC: {reason}"
    );
    delete_profile_and_wait(&f.client, &f.profile).await?;
    Ok(())
}

/// With `verify.job`, a bound restore is not the end: Rampart runs the user's check as a Job
/// with the restored PVC mounted, and the Job's completion (kwok completes the pods of Jobs on
/// its nodes; no container really runs here) is what makes the verification Succeeded.
#[tokio::test]
async fn a_check_job_runs_against_the_restored_volume_and_decides_the_result() -> Result<()> {
    let f = Fixture::new("verjob").await?;
    f.pvc_with("orders", "the orders").await?;
    let _op = OperatorProcess::start(&f.tag).await?;
    rampart_e2e::apply_profile(&f.client, f.profile(Some(verify_with_check(None)))).await?;
    let (snapshot, _) = f.ready_snapshot("orders").await?;

    let job = f.check_job().await?;
    let scratch_ns = job.namespace().unwrap_or_default();
    assert!(scratch_ns.starts_with("rampart-verify-"), "{scratch_ns}");
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let volume = restored_volume(&job);
    let claim = volume
        .as_ref()
        .map(|c| c.claim_name.clone())
        .unwrap_or_default();
    assert_eq!(
        volume.and_then(|c| c.read_only),
        Some(true),
        "mounted read-only"
    );
    let restored = Api::<PersistentVolumeClaim>::namespaced(f.client.clone(), &scratch_ns)
        .get_opt(&claim)
        .await?;
    let source = restored
        .as_ref()
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.data_source.as_ref())
        .map(|d| d.kind.clone());
    assert_eq!(
        source.as_deref(),
        Some("VolumeSnapshot"),
        "the Job mounts the PVC restored from the snapshot ({claim})"
    );
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        pod.containers[0].name, "check",
        "the user's container is kept"
    );
    assert_runs_restricted(&f.client, &pod).await?;

    let entry = f.verified("orders", "Succeeded").await?;
    assert_eq!(entry["snapshot"], snapshot.as_str(), "{entry}");
    let message = entry["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("{}/orders", f.ns.name)) && message.contains("completed"),
        "the message names the PVC and the Job's completion: {message}"
    );
    f.gone(&scratch_ns, &job.name_any(), &claim).await?;
    delete_profile_and_wait(&f.client, &f.profile).await?;
    Ok(())
}

/// A check that fails fails the verification. The check's pod is pinned to a node no kwok
/// node matches, so nothing moves it; the test then ends it as a kubelet would end a container
/// that exited 1 (the bytes did not match), and the real Job controller turns that into the
/// Job's Failed condition, which Rampart records naming the PVC.
#[tokio::test]
async fn a_failing_check_job_fails_verification_naming_the_pvc() -> Result<()> {
    let f = Fixture::new("verjobbad").await?;
    f.pvc_with("invoices", "the invoices").await?;
    let _op = OperatorProcess::start(&f.tag).await?;
    let nowhere = json!({"e2e.rampart.dev/no-such-node": "true"});
    rampart_e2e::apply_profile(&f.client, f.profile(Some(verify_with_check(Some(nowhere)))))
        .await?;
    f.ready_snapshot("invoices").await?;

    let job = f.check_job().await?;
    let scratch_ns = job.namespace().unwrap_or_default();
    let job_name = job.name_any();
    let pods = Api::<Pod>::namespaced(f.client.clone(), &scratch_ns);
    let pod = wait_for("the check Job's pod", TIMEOUT, || {
        let (pods, job_name) = (pods.clone(), job_name.clone());
        async move {
            let list = pods
                .list(&ListParams::default().labels(&format!("job-name={job_name}")))
                .await
                .map_err(|e| e.to_string())?;
            Ok(list.items.into_iter().next().map(|p| p.name_any()))
        }
    })
    .await?;
    // The pod the Job made holds no token: none asked for, none mounted.
    let made = pods.get(&pod).await?;
    let spec = made.spec.unwrap_or_default();
    assert_eq!(spec.automount_service_account_token, Some(false));
    let volumes: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    assert!(
        !volumes.iter().any(|v| v.starts_with("kube-api-access")),
        "no token volume: {volumes:?}"
    );
    let mounts: Vec<String> = spec
        .containers
        .iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .map(|m| m.mount_path.clone())
        .collect();
    assert!(
        !mounts.iter().any(|m| m.contains("serviceaccount")),
        "no token mounted: {mounts:?}"
    );
    pods.patch_status(
        &pod,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": "Failed",
            "containerStatuses": [{
                "name": "check", "image": "registry.example/checker:1", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error",
                    "message": "checksum of /restored/contents differs"}},
            }],
        }})),
    )
    .await?;

    let entry = f.verified("invoices", "Failed").await?;
    let message = entry["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("{}/invoices", f.ns.name)),
        "the message names the PVC: {message}"
    );
    assert!(
        message.contains(&job_name) && message.contains("failed"),
        "the message names the Job and its failure: {message}"
    );
    let (status, reason) = f.condition("BackupsVerified").await?.unwrap_or_default();
    assert_eq!(status, "False");
    assert!(
        reason.contains("invoices"),
        "the condition names the PVC: {reason}"
    );
    let claim = restored_volume(&job)
        .map(|c| c.claim_name)
        .unwrap_or_default();
    f.gone(&scratch_ns, &job_name, &claim).await?;
    delete_profile_and_wait(&f.client, &f.profile).await?;
    Ok(())
}

/// Out of the e2e suites, which turn them on, schedules that fire more than once a minute are
/// refused: the operator reports `InvalidSpec` naming the field and restores nothing.
#[tokio::test]
async fn a_schedule_more_often_than_once_a_minute_is_an_invalid_spec() -> Result<()> {
    let f = Fixture::new("versubmin").await?;
    f.pvc_with("ledger", "the ledger").await?;
    let _op = OperatorProcess::launch(&OperatorLaunch {
        bin: repo_root().join("target/debug/rampart"),
        selector: format!("{DEDICATED_LABEL}={}", f.tag),
        extra: vec![],
        kubeconfig: kubeconfig_path(),
        log_name: format!("operator-{}", f.tag),
        env: vec![(
            "RAMPART_ALLOW_SUB_MINUTE_SCHEDULES".to_string(),
            "false".to_string(),
        )],
    })
    .await?;
    rampart_e2e::apply_profile(&f.client, f.profile(Some(verify_spec(60)))).await?;
    let (status, message) = wait_for("InvalidSpec", TIMEOUT, || async {
        Ok(f.condition("InvalidSpec")
            .await
            .map_err(|e| e.to_string())?
            .filter(|(status, _)| status == "True"))
    })
    .await?;
    assert_eq!(status, "True");
    assert!(
        message.contains("spec.backups.verify.schedule") && message.contains("once a minute"),
        "{message}"
    );
    assert!(f.scratch_left().await?.is_empty(), "nothing restored");
    delete_profile_and_wait(&f.client, &f.profile).await?;
    Ok(())
}

// --- Real storage: WaitForFirstConsumer and Retain classes, many PVCs, deselection ---------

/// The `WaitForFirstConsumer` classes these tests restore into, on the local driver.
/// The plane's default class: `WaitForFirstConsumer`, as on the managed clouds.
const WFFC_CLASS: &str = DEFAULT_CLASS;
/// A class that keeps volumes: `Immediate`, so the test pins the reclaim policy alone.
const RETAIN_CLASS: &str = "rampart-hostpath-retain";

/// The class that keeps volumes, made idempotently (server-side apply); the plane itself serves
/// the `WaitForFirstConsumer` default class.
async fn real_storage(client: &Client) -> Result<()> {
    use k8s_openapi::api::storage::v1::StorageClass;
    let apply = PatchParams::apply("rampart-e2e-verify").force();
    let classes = Api::<StorageClass>::all(client.clone());
    for (name, reclaim, binding) in [(RETAIN_CLASS, "Retain", "Immediate")] {
        classes
            .patch(
                name,
                &apply,
                &Patch::Apply(json!({
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": name},
                    "provisioner": "hostpath.csi.rampart.dev",
                    "reclaimPolicy": reclaim,
                    "volumeBindingMode": binding,
                })),
            )
            .await?;
    }
    Ok(())
}

/// What a watch saw of a scratch namespace's PVCs: the uids made for each source PVC and the
/// most that existed at any one time (being deleted included).
#[derive(Default, Debug)]
struct ScratchPvcs {
    made: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    live: std::collections::BTreeSet<String>,
    most: usize,
}

/// Watches the PVCs of scratch namespace `ns` from now on. A watch, not a poll: it sees every
/// PVC that ever exists, however briefly.
fn watch_scratch_pvcs(
    client: &Client,
    ns: &str,
) -> (
    std::sync::Arc<std::sync::Mutex<ScratchPvcs>>,
    tokio::task::JoinHandle<()>,
) {
    use futures::StreamExt;
    use kube::runtime::watcher::{self, Event};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(ScratchPvcs::default()));
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let into = seen.clone();
    let task = tokio::spawn(async move {
        let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            let Ok(mut s) = into.lock() else { return };
            match event {
                Event::Init => s.live.clear(),
                Event::Apply(p) | Event::InitApply(p) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    let source = p
                        .labels()
                        .get("rampart.dev/pvc")
                        .cloned()
                        .unwrap_or_default();
                    s.made.entry(source).or_default().insert(uid.clone());
                    s.live.insert(uid);
                    s.most = s.most.max(s.live.len());
                }
                Event::Delete(p) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    s.live.remove(&uid);
                }
                Event::InitDone => {}
            }
        }
    });
    (seen, task)
}

impl Fixture {
    /// `n` selected PVCs `d00`.., bound, with nothing written in them.
    async fn many_pvcs(&self, n: usize) -> Result<Vec<String>> {
        let api = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.ns.name);
        let names: Vec<String> = (0..n).map(|i| format!("d{i:02}")).collect();
        for name in &names {
            let p: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"backup": "true"}},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                    "storageClassName": IMMEDIATE_CLASS
                }
            }))?;
            api.create(&PostParams::default(), &p).await?;
        }
        for name in &names {
            rampart_e2e::csi::wait_bound(&self.client, &self.ns.name, name, TIMEOUT).await?;
        }
        Ok(names)
    }

    /// Waits until `n` of Rampart's snapshots in the test namespace are ready.
    async fn ready_snapshots(&self, n: usize, timeout: Duration) -> Result<()> {
        let snaps = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            &self.ns.name,
            &snapshot_resource(),
        );
        wait_for(&format!("{n} ready snapshots"), timeout, || {
            let snaps = snaps.clone();
            async move {
                let list = snaps
                    .list(&ListParams::default().labels("rampart.dev/control=snapshot"))
                    .await
                    .map_err(|e| e.to_string())?;
                let ready = list
                    .items
                    .iter()
                    .filter(|s| s.data["status"]["readyToUse"] == Value::Bool(true))
                    .count();
                if ready >= n {
                    Ok(Some(()))
                } else {
                    Err(format!("{ready} ready"))
                }
            }
        })
        .await
    }

    /// Adds `verify` to the profile.
    async fn start_verifying(&self, verify: Value) -> Result<()> {
        Api::<HardeningProfile>::all(self.client.clone())
            .patch(
                &self.profile,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"backups": {"verify": verify}}})),
            )
            .await?;
        Ok(())
    }

    /// The scratch namespace enforces the `restricted` Pod Security level (the API server
    /// refuses a privileged pod there), denies all traffic, and bounds PVCs, Jobs, pods and
    /// storage; its uid is the one the status recorded.
    async fn scratch_namespace_is_a_jail(&self) -> Result<()> {
        use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        let ns = self.scratch_namespace();
        let namespace = Api::<Namespace>::all(self.client.clone()).get(&ns).await?;
        assert_eq!(
            namespace
                .labels()
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("restricted")
        );
        let recorded = Api::<HardeningProfile>::all(self.client.clone())
            .get(&self.profile)
            .await?
            .status
            .and_then(|s| s.verification)
            .and_then(|v| v.scratch_namespace_uid);
        assert_eq!(
            recorded,
            namespace.uid(),
            "the status records the namespace's uid"
        );
        let privileged: Pod = serde_json::from_value(json!({
            "metadata": {"name": "escalate"},
            "spec": {"containers": [{
                "name": "c", "image": "busybox",
                "securityContext": {"privileged": true}
            }]}
        }))?;
        let refused = Api::<Pod>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &privileged)
            .await;
        match refused {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 403, "{}", e.message);
                assert!(e.message.contains("restricted"), "{}", e.message);
            }
            other => panic!("a privileged pod in {ns} was not refused: {other:?}"),
        }
        let policy = Api::<NetworkPolicy>::namespaced(self.client.clone(), &ns)
            .get("rampart-verify-deny-all")
            .await?;
        let spec = serde_json::to_value(policy.spec)?;
        assert_eq!(
            spec,
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            "no ingress or egress rule"
        );
        let quota = Api::<ResourceQuota>::namespaced(self.client.clone(), &ns)
            .get("rampart-verify")
            .await?;
        let hard = quota.spec.and_then(|s| s.hard).unwrap_or_default();
        for key in [
            "persistentvolumeclaims",
            "requests.storage",
            "pods",
            "count/jobs.batch",
        ] {
            assert!(hard.contains_key(key), "the quota bounds {key}: {hard:?}");
        }
        Ok(())
    }

    fn scratch_namespace(&self) -> String {
        rampart::controls::verify::scratch_namespace(&self.profile)
    }

    /// Waits until none of the profile's scratch objects exists any more (being deleted
    /// counts as existing): contents, snapshots, PVCs, Jobs and reader pods.
    async fn nothing_left(&self) -> Result<()> {
        let selector = format!(
            "rampart.dev/profile={},rampart.dev/control=verify",
            self.profile
        );
        let client = self.client.clone();
        wait_for("every scratch object to be gone", TIMEOUT, || {
            let (client, selector) = (client.clone(), selector.clone());
            async move {
                let lp = ListParams::default().labels(&selector);
                let names = |items: Vec<kube::core::ObjectMeta>| -> Vec<String> {
                    items.into_iter().filter_map(|m| m.name).collect()
                };
                let err = |e: kube::Error| e.to_string();
                let mut left = Vec::new();
                let contents =
                    Api::<DynamicObject>::all_with(client.clone(), &snapshot_content_resource());
                let snaps = Api::<DynamicObject>::all_with(client.clone(), &snapshot_resource());
                left.extend(names(
                    contents
                        .list(&lp)
                        .await
                        .map_err(err)?
                        .items
                        .into_iter()
                        .map(|o| o.metadata)
                        .collect(),
                ));
                left.extend(names(
                    snaps
                        .list(&lp)
                        .await
                        .map_err(err)?
                        .items
                        .into_iter()
                        .map(|o| o.metadata)
                        .collect(),
                ));
                left.extend(names(
                    Api::<PersistentVolumeClaim>::all(client.clone())
                        .list(&lp)
                        .await
                        .map_err(err)?
                        .items
                        .into_iter()
                        .map(|o| o.metadata)
                        .collect(),
                ));
                left.extend(names(
                    Api::<Job>::all(client.clone())
                        .list(&lp)
                        .await
                        .map_err(err)?
                        .items
                        .into_iter()
                        .map(|o| o.metadata)
                        .collect(),
                ));
                left.extend(names(
                    Api::<Pod>::all(client.clone())
                        .list(&lp)
                        .await
                        .map_err(err)?
                        .items
                        .into_iter()
                        .map(|o| o.metadata)
                        .collect(),
                ));
                if left.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(format!("{left:?}"))
                }
            }
        })
        .await
    }

    /// Waits until no PersistentVolume is bound (or was, Released) to a claim in the scratch
    /// namespace: no copy of the data is left behind.
    async fn no_volume_left(&self) -> Result<()> {
        use k8s_openapi::api::core::v1::PersistentVolume;
        let pvs = Api::<PersistentVolume>::all(self.client.clone());
        let ns = self.scratch_namespace();
        wait_for("no volume of a scratch PVC to be left", TIMEOUT, || {
            let (pvs, ns) = (pvs.clone(), ns.clone());
            async move {
                let left: Vec<String> = pvs
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .into_iter()
                    .filter(|pv| {
                        pv.spec
                            .as_ref()
                            .and_then(|s| s.claim_ref.as_ref())
                            .and_then(|c| c.namespace.as_deref())
                            == Some(ns.as_str())
                    })
                    .map(|pv| {
                        let phase = pv.status.and_then(|s| s.phase).unwrap_or_default();
                        format!("{} ({phase})", pv.metadata.name.unwrap_or_default())
                    })
                    .collect();
                if left.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(format!("{left:?}"))
                }
            }
        })
        .await
    }
}

/// Verification every 5 s (60 s timeout) restoring into a `WaitForFirstConsumer` class.
fn verify_on(class: &str) -> Value {
    let mut v = verify_spec(60);
    v["storageClassName"] = json!(class);
    v
}

/// On a `WaitForFirstConsumer` class a scratch PVC binds only once a pod uses it: Rampart's
/// reader pod is that pod, and the restore succeeds. (Before, it waited for a consumer that
/// never came and failed at its timeout.)
#[tokio::test]
async fn a_restore_into_a_wait_for_first_consumer_class_gets_a_reader_and_succeeds() -> Result<()> {
    let f = Fixture::new("verwffc").await?;
    real_storage(&f.client).await?;
    f.pvc_with("data", "the bytes of data").await?;
    let _op = OperatorProcess::start(&f.tag).await?;
    rampart_e2e::apply_profile(&f.client, f.profile(Some(verify_on(WFFC_CLASS)))).await?;
    f.ready_snapshot("data").await?;

    let entry = f.verified("data", "Succeeded").await?;
    let message = entry["message"].as_str().unwrap_or_default();
    assert!(message.contains("bound"), "{message}");
    let (status, reason) = f.condition("BackupsVerified").await?.unwrap_or_default();
    assert_eq!(status, "True", "BackupsVerified: {reason}");
    delete_profile_and_wait(&f.client, &f.profile).await?;
    Ok(())
}

/// The shape a database chart installs: a StatefulSet whose `volumeClaimTemplates` make its
/// PVCs on the default (`WaitForFirstConsumer`) class, with its own Service, NetworkPolicy and
/// HPA. Each replica's PVC is snapshotted and restored into the same class, and each restore
/// succeeds.
#[tokio::test]
async fn a_statefulsets_claims_on_the_default_class_are_each_verified() -> Result<()> {
    let f = Fixture::new("versts").await?;
    let app = App::new("db", 2).with_pvc_labels(json!({"backup": "true"}));
    create_all(&f.client, &f.ns.name, &app.stateful_release()).await?;
    for pvc in ["data-db-0", "data-db-1"] {
        let dir = volume_dir(&f.client, &f.ns.name, pvc, TIMEOUT).await?;
        std::fs::write(dir.join("contents"), format!("rows of {pvc}"))?;
    }
    let _op = OperatorProcess::start(&f.tag).await?;
    rampart_e2e::apply_profile(&f.client, f.profile(Some(verify_spec(60)))).await?;

    for pvc in ["data-db-0", "data-db-1"] {
        f.ready_snapshot(pvc).await?;
        let entry = f.verified(pvc, "Succeeded").await?;
        let message = entry["message"].as_str().unwrap_or_default();
        assert!(message.contains("bound"), "{pvc}: {message}");
    }
    // Slots are 5 s apart here: the condition reads whole rounds, so it may take the next
    // round (or the one after) to find both PVCs verified in one.
    wait_for("BackupsVerified True", TIMEOUT, || {
        let f = &f;
        async move {
            match f
                .condition("BackupsVerified")
                .await
                .map_err(|e| e.to_string())?
            {
                Some((s, _)) if s == "True" => Ok(Some(())),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await?;
    f.scratch_namespace_is_a_jail().await?;
    delete_profile_and_wait(&f.client, &f.profile).await?;
    Ok(())
}

/// With a check Job the Job is the first consumer: made as soon as the scratch PVC exists, not
/// after it binds (which on this class it never would without a consumer).
#[tokio::test]
async fn a_check_job_is_the_first_consumer_on_a_wait_for_first_consumer_class() -> Result<()> {
    let f = Fixture::new("verwffcjob").await?;
    real_storage(&f.client).await?;
    f.pvc_with("orders", "the orders").await?;
    let _op = OperatorProcess::start(&f.tag).await?;
    let mut verify = verify_with_check(None);
    verify["storageClassName"] = json!(WFFC_CLASS);
    rampart_e2e::apply_profile(&f.client, f.profile(Some(verify))).await?;
    f.ready_snapshot("orders").await?;

    let entry = f.verified("orders", "Succeeded").await?;
    let message = entry["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("bound") && message.contains("completed"),
        "the restore bound and the check completed: {message}"
    );
    let (status, reason) = f.condition("BackupsVerified").await?.unwrap_or_default();
    assert_eq!(status, "True", "BackupsVerified: {reason}");
    delete_profile_and_wait(&f.client, &f.profile).await?;
    Ok(())
}

/// A class that retains volumes must not keep a full copy of the data as a Released volume
/// after each verification: Rampart sets the scratch volume's reclaim policy to Delete before
/// it deletes the scratch PVC.
#[tokio::test]
async fn a_retain_class_leaves_no_volume_behind() -> Result<()> {
    let f = Fixture::new("verretain").await?;
    real_storage(&f.client).await?;
    f.pvc_with("ledger", "the ledger").await?;
    let _op = OperatorProcess::start(&f.tag).await?;
    rampart_e2e::apply_profile(&f.client, f.profile(None)).await?;
    f.ready_snapshot("ledger").await?;
    // One slot a year: one verification, then nothing made again.
    let mut verify = verify_on(RETAIN_CLASS);
    verify["schedule"] = json!("0 0 1 1 *");
    f.start_verifying(verify).await?;

    f.verified("ledger", "Succeeded").await?;
    f.nothing_left().await?;
    f.no_volume_left().await?;
    delete_profile_and_wait(&f.client, &f.profile).await?;
    Ok(())
}

/// Sixty PVCs, more than the status list holds: each is restored exactly once in the slot,
/// never more than `maxConcurrent` scratch PVCs exist at once (a watch sees every one), and
/// `BackupsVerified` turns True.
#[tokio::test]
async fn sixty_pvcs_are_each_verified_once_never_more_than_max_concurrent_at_once() -> Result<()> {
    const MAX: usize = 3;
    let f = Fixture::new("vermany").await?;
    real_storage(&f.client).await?;
    let names = f.many_pvcs(60).await?;
    let _op = OperatorProcess::start(&f.tag).await?;
    rampart_e2e::apply_profile(&f.client, f.profile(None)).await?;
    f.ready_snapshots(60, Duration::from_secs(300)).await?;

    let (seen, watch) = watch_scratch_pvcs(&f.client, &f.scratch_namespace());
    let mut verify = verify_on(WFFC_CLASS);
    verify["schedule"] = json!("0 0 1 1 *");
    verify["timeoutSeconds"] = json!(300);
    verify["maxConcurrent"] = json!(MAX);
    f.start_verifying(verify).await?;

    let api = Api::<HardeningProfile>::all(f.client.clone());
    // Ends early, with what broke, as soon as the watch sees the bound or "once" broken.
    let status = wait_for("BackupsVerified True", Duration::from_secs(900), || {
        let (api, name, seen) = (api.clone(), f.profile.clone(), seen.clone());
        async move {
            if let Ok(s) = seen.lock() {
                let twice: Vec<_> = s.made.iter().filter(|(_, u)| u.len() > 1).collect();
                if s.most > MAX || !twice.is_empty() {
                    return Ok(Some(Err(format!(
                        "{} scratch PVCs at once (maxConcurrent {MAX}); restored again: {twice:?}",
                        s.most
                    ))));
                }
            }
            let p = api.get(&name).await.map_err(|e| e.to_string())?;
            match rampart_e2e::condition_of(&p, "BackupsVerified") {
                Some((s, _)) if s == "True" => Ok(Some(Ok(p.status))),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await?
    .map_err(anyhow::Error::msg)?;
    f.nothing_left().await?;
    watch.abort();
    let (made, most) = {
        let s = seen
            .lock()
            .map_err(|_| anyhow::anyhow!("the watch's record was poisoned"))?;
        (s.made.clone(), s.most)
    };
    let mut sources: Vec<&String> = made.keys().collect();
    sources.sort();
    assert_eq!(
        sources,
        names.iter().collect::<Vec<_>>(),
        "every PVC was restored"
    );
    let again: Vec<_> = made.iter().filter(|(_, uids)| uids.len() != 1).collect();
    assert!(
        again.is_empty(),
        "restored more than once in the slot: {again:?}"
    );
    assert!(
        most <= MAX,
        "{most} scratch PVCs existed at once, maxConcurrent is {MAX}"
    );
    let status = serde_json::to_value(&status)?;
    assert_eq!(
        status["verification"]["current"]["succeeded"], 60,
        "{}",
        status["verification"]
    );
    assert!(
        status["backups"]["lastVerified"]
            .as_array()
            .is_some_and(|l| l.len() <= 50),
        "the per-PVC list stays bounded"
    );
    delete_profile_and_wait(&f.client, &f.profile).await?;
    Ok(())
}

/// A PVC deselected while its verification runs leaves nothing behind. The verification is
/// held mid-way (the restore bound, its check pinned to a node that does not exist) until the
/// label is removed.
#[tokio::test]
async fn a_pvc_deselected_mid_verification_leaves_nothing_behind() -> Result<()> {
    let f = Fixture::new("verdesel").await?;
    real_storage(&f.client).await?;
    f.pvc_with("cache", "the cache").await?;
    let _op = OperatorProcess::start(&f.tag).await?;
    let nowhere = json!({"e2e.rampart.dev/no-such-node": "true"});
    let mut verify = verify_with_check(Some(nowhere));
    verify["timeoutSeconds"] = json!(600);
    rampart_e2e::apply_profile(&f.client, f.profile(Some(verify))).await?;
    f.ready_snapshot("cache").await?;
    // Mid-verification: the scratch PVC and the check Job exist.
    let job = f.check_job().await?;
    let claim = restored_volume(&job)
        .map(|c| c.claim_name)
        .unwrap_or_default();
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(f.client.clone(), &f.scratch_namespace());
    wait_for("the scratch PVC", TIMEOUT, || {
        let (pvcs, claim) = (pvcs.clone(), claim.clone());
        async move { pvcs.get_opt(&claim).await.map_err(|e| e.to_string()) }
    })
    .await?;

    Api::<PersistentVolumeClaim>::namespaced(f.client.clone(), &f.ns.name)
        .patch(
            "cache",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"backup": null}}})),
        )
        .await?;
    f.nothing_left().await?;
    f.no_volume_left().await?;
    delete_profile_and_wait(&f.client, &f.profile).await?;
    Ok(())
}

/// Someone who may create namespaces makes `rampart-verify-<profile>` first, copying Rampart's
/// labels and an owner reference to the profile: everything the old ownership check read.
/// Rampart did not create it (its uid is not the one the status recorded), so it restores
/// nothing there, reports it, and leaves the namespace alone.
#[tokio::test]
async fn a_forged_scratch_namespace_is_refused_and_reported_and_nothing_is_restored_there(
) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let f = Fixture::new("verforged").await?;
    f.pvc_with("data", "the bytes of data").await?;
    let _op = OperatorProcess::start(&f.tag).await?;
    rampart_e2e::apply_profile(&f.client, f.profile(None)).await?;
    f.ready_snapshot("data").await?;

    let profiles = Api::<HardeningProfile>::all(f.client.clone());
    let uid = profiles.get(&f.profile).await?.uid().unwrap_or_default();
    let scratch = f.scratch_namespace();
    let namespaces = Api::<Namespace>::all(f.client.clone());
    let forged: Namespace = serde_json::from_value(json!({
        "metadata": {
            "name": scratch,
            "labels": {
                "app.kubernetes.io/managed-by": "rampart",
                "rampart.dev/profile": f.profile,
                "rampart.dev/profile-uid": uid,
                "rampart.dev/control": "verify",
            },
            "ownerReferences": [{
                "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
                "name": f.profile, "uid": uid, "controller": true,
            }],
        }
    }))?;
    namespaces.create(&PostParams::default(), &forged).await?;
    // What the forger copied is everything Rampart's labels say.
    let copied = namespaces.get(&scratch).await?;
    let ours = Api::<Namespace>::all(f.client.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=rampart"))
        .await?;
    assert!(ours.items.iter().any(|n| n.name_any() == scratch));

    f.start_verifying(verify_spec(60)).await?;
    let (status, reason) = wait_for(
        "BackupsVerified to name the forged namespace",
        TIMEOUT,
        || {
            let f = &f;
            async move {
                match f
                    .condition("BackupsVerified")
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some((s, r)) if s == "False" && r.contains(&f.scratch_namespace()) => {
                        Ok(Some((s, r)))
                    }
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await?;
    assert_eq!(status, "False");
    let p = profiles.get(&f.profile).await?;
    let condition = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "BackupsVerified"))
        .map(|c| c.reason.clone());
    assert_eq!(
        condition.as_deref(),
        Some("ScratchNamespaceTaken"),
        "{reason}"
    );
    // Give the operator several passes' time (it verifies every 5 s), then nothing of a
    // restore exists, in the namespace or cluster-wide.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(f.client.clone(), &scratch)
        .list(&ListParams::default())
        .await?;
    assert!(
        claims.items.is_empty(),
        "a restore was made in the forged namespace"
    );
    let selector = format!(
        "rampart.dev/profile={},rampart.dev/control=verify",
        f.profile
    );
    let contents = Api::<DynamicObject>::all_with(f.client.clone(), &snapshot_content_resource())
        .list(&ListParams::default().labels(&selector))
        .await?;
    assert!(contents.items.is_empty(), "a scratch content was made");
    let snaps =
        Api::<DynamicObject>::namespaced_with(f.client.clone(), &scratch, &snapshot_resource())
            .list(&ListParams::default())
            .await?;
    assert!(snaps.items.is_empty(), "a scratch snapshot was made");
    // Rampart neither took the namespace over nor deleted it.
    let after = namespaces.get(&scratch).await?;
    assert_eq!(after.uid(), copied.uid());
    assert!(after.metadata.deletion_timestamp.is_none());
    assert_eq!(
        after.labels(),
        copied.labels(),
        "the namespace was not relabelled"
    );
    let recorded = p
        .status
        .as_ref()
        .and_then(|s| s.verification.as_ref())
        .and_then(|v| v.scratch_namespace_uid.clone());
    assert_eq!(
        recorded, None,
        "the forged namespace's uid was recorded as Rampart's"
    );
    delete_profile_and_wait(&f.client, &f.profile).await?;
    namespaces.delete(&scratch, &Default::default()).await.ok();
    Ok(())
}
