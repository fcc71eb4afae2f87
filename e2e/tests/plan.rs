//! `rampart plan` against a live estate: what it says an Enforce profile would create, adopt
//! and snapshot is what the operator then makes; what it says a bumped rotation and a
//! tampered policy would change, rotate and restart is what the operator then does; once the
//! operator has converged it says nothing would change (exit 2, then 0). The API server's
//! audit log shows the CLI's own identity (a client certificate in `system:masters`, so it
//! could write) made reads and not one write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart::controls::rotation::stamp::Stamp;
use rampart_e2e::apps::{create_all, secret, App, SecretUse};
use rampart_e2e::csi::IMMEDIATE_CLASS;
use rampart_e2e::identity::{Grants, ServiceAccountIdentity};
use rampart_e2e::{
    apply_profile, client, operator_bin, repo_root, unique_id, wait_condition, wait_for,
    wait_until, AuditedIdentity, OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(120);
const RUN_LABEL: &str = "e2e.rampart.dev/run";

/// `(namespace, change, kind, name)` of every item a plan lists.
type Items = BTreeSet<(String, String, String, String)>;

/// Two namespaces shaped like a chart install: a database StatefulSet with two backed-up
/// volumes and a Deployment reading its Secret, and an API Deployment reading another.
struct Estate {
    c: Client,
    run: String,
    tag: String,
    name: String,
    data: TestNamespace,
    api: TestNamespace,
}

impl Estate {
    async fn new() -> Result<Self> {
        let c = client().await?;
        let id = unique_id();
        let run = format!("plan-{id}");
        let labels = [(RUN_LABEL, run.as_str())];
        let data = TestNamespace::create(&c, "plan-data", &labels).await?;
        let api = TestNamespace::create(&c, "plan-api", &labels).await?;
        let rotated = |name: &str| {
            let mut s = secret(name, &[("password", "original")]);
            s["metadata"]["labels"] = json!({"rampart.dev/rotate": "true"});
            s
        };
        // The database reads no Secret (its consumers are Deployments only), so an operator
        // denied `patch` on Deployments can rotate but restart nothing.
        let db = App::new("db", 2)
            .with_storage_class(IMMEDIATE_CLASS)
            .with_pvc_labels(json!({"backup": "true"}));
        let worker = App::new("worker", 2).with_secret(SecretUse::EnvFrom("db-creds".into()));
        create_all(
            &c,
            &data.name,
            &[
                rotated("db-creds"),
                db.headless_service(),
                db.statefulset(),
                db.network_policy(),
                worker.deployment(),
            ],
        )
        .await?;
        let web = App::new("web", 3).with_secret(SecretUse::Env {
            secret: "api-creds".into(),
            key: "password".into(),
        });
        create_all(
            &c,
            &api.name,
            &[rotated("api-creds"), web.deployment(), web.network_policy()],
        )
        .await?;
        Ok(Self {
            c,
            tag: format!("plan-{id}"),
            name: format!("plan-{id}"),
            run,
            data,
            api,
        })
    }

    fn profile(&self, rotation_id: &str) -> Value {
        json!({
            "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
            "metadata": {"name": self.name, "labels": {DEDICATED_LABEL: self.tag}},
            "spec": {
                "mode": "Enforce",
                "namespaceSelector": {"matchLabels": {RUN_LABEL: self.run}},
                "networkPolicies": {},
                "podDisruptionBudgets": {"minReplicas": 2, "maxUnavailable": 1},
                "secretRotation": {"rotationId": rotation_id,
                    "selector": {"matchLabels": {"rampart.dev/rotate": "true"}},
                    "regenerate": [{"key": "password"}], "maxConcurrentRestarts": 5},
                // Once a year, and once on creation: the first apply snapshots, and no slot
                // comes during the test to make a later plan differ.
                "backups": {"schedule": "0 0 1 1 *", "snapshotOnCreate": true,
                    "pvcSelector": {"matchLabels": {"backup": "true"}},
                    "volumeSnapshotClassName": "csi-snapclass", "retention": {"maxCount": 3}}
            }
        })
    }

    /// Writes the profile to a file, as a person would before `rampart plan -f`.
    fn profile_file(&self, rotation_id: &str) -> Result<PathBuf> {
        let path = repo_root().join(format!(".local/{}-{rotation_id}.yaml", self.name));
        std::fs::write(&path, serde_yaml::to_string(&self.profile(rotation_id))?)?;
        Ok(path)
    }

    async fn uid(&self) -> Result<String> {
        Ok(Api::<HardeningProfile>::all(self.c.clone())
            .get(&self.name)
            .await?
            .uid()
            .unwrap_or_default())
    }

    /// Rampart's NetworkPolicies and budgets for this profile, as `(namespace, kind, name)`.
    async fn managed(&self) -> Result<BTreeSet<(String, String, String)>> {
        let lp = ListParams::default().labels(&format!("rampart.dev/profile={}", self.name));
        let mut out = BTreeSet::new();
        for ns in [&self.data.name, &self.api.name] {
            for p in Api::<NetworkPolicy>::namespaced(self.c.clone(), ns)
                .list(&lp)
                .await?
            {
                out.insert((ns.clone(), "NetworkPolicy".into(), p.name_any()));
            }
            for p in Api::<PodDisruptionBudget>::namespaced(self.c.clone(), ns)
                .list(&lp)
                .await?
            {
                out.insert((ns.clone(), "PodDisruptionBudget".into(), p.name_any()));
            }
        }
        Ok(out)
    }

    /// This profile's VolumeSnapshots per namespace.
    async fn snapshots(&self) -> Result<BTreeMap<String, usize>> {
        let lp = ListParams::default().labels(&format!("rampart.dev/profile={}", self.name));
        let api =
            Api::<DynamicObject>::all_with(self.c.clone(), &rampart::observe::snapshot_resource());
        let mut out = BTreeMap::new();
        for s in api.list(&lp).await? {
            *out.entry(s.namespace().unwrap_or_default()).or_default() += 1;
        }
        Ok(out)
    }

    /// The Secrets, as `(namespace, name)`, whose stamp holds this profile's entry at `id`,
    /// adopted or rotated as `adopted` says.
    async fn stamped_secrets(&self, id: &str, adopted: bool) -> Result<BTreeSet<(String, String)>> {
        let uid = self.uid().await?;
        let mut out = BTreeSet::new();
        for ns in [&self.data.name, &self.api.name] {
            for s in Api::<Secret>::namespaced(self.c.clone(), ns)
                .list(&ListParams::default().labels("rampart.dev/rotate=true"))
                .await?
            {
                let stamp = Stamp::of(
                    s.annotations()
                        .get("rampart.dev/rotation-id")
                        .map(String::as_str),
                );
                if stamp
                    .entry(&uid)
                    .is_some_and(|e| e.rotation_id == id && e.is_adopted() == adopted)
                {
                    out.insert((ns.clone(), s.name_any()));
                }
            }
        }
        Ok(out)
    }

    /// The Deployments, as `(namespace, name)`, whose pod template is stamped at `id`.
    async fn restarted(&self, id: &str) -> Result<BTreeSet<(String, String)>> {
        let uid = self.uid().await?;
        let mut out = BTreeSet::new();
        for ns in [&self.data.name, &self.api.name] {
            for d in Api::<Deployment>::namespaced(self.c.clone(), ns)
                .list(&ListParams::default())
                .await?
            {
                let stamp = Stamp::of(
                    d.spec
                        .template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.annotations.as_ref())
                        .and_then(|a| a.get("rampart.dev/rotation-id"))
                        .map(String::as_str),
                );
                if stamp.entry(&uid).is_some_and(|e| e.rotation_id == id) {
                    out.insert((ns.clone(), d.name_any()));
                }
            }
        }
        Ok(out)
    }
}

/// Runs `rampart plan -f <file> -o json` as the identity of `kubeconfig`: its exit code and
/// the plan.
fn run_plan(kubeconfig: &Path, file: &Path) -> Result<(i32, Value)> {
    let out = std::process::Command::new(operator_bin())
        .args(["plan", "-o", "json", "-f"])
        .arg(file)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .context("running rampart plan")?;
    let code = out.status.code().unwrap_or(-1);
    anyhow::ensure!(
        code == 0 || code == 2,
        "rampart plan exited {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "rampart plan printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok((code, plan))
}

fn items(plan: &Value) -> Items {
    let mut out = Items::new();
    for (ns, p) in plan["namespaces"].as_object().into_iter().flatten() {
        for i in p["changes"].as_array().into_iter().flatten() {
            let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            out.insert((ns.clone(), s("change"), s("kind"), s("name")));
        }
    }
    out
}

fn of_change(items: &Items, change: &str) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .filter(|i| i.1 == change)
        .map(|(ns, _, kind, name)| (ns.clone(), kind.clone(), name.clone()))
        .collect()
}

fn names(set: &BTreeSet<(String, String, String)>) -> BTreeSet<(String, String)> {
    set.iter()
        .map(|(ns, _, n)| (ns.clone(), n.clone()))
        .collect()
}

/// Waits until `rampart plan` says nothing would change (the operator converged and wrote
/// its status), returning that plan.
async fn until_nothing_to_do(kubeconfig: &Path, file: &Path) -> Result<Value> {
    wait_for("rampart plan to exit 0", TIMEOUT, || async {
        match run_plan(kubeconfig, file) {
            Ok((0, plan)) => Ok(Some(plan)),
            Ok((code, plan)) => Err(format!("exit {code}: {}", plan["namespaces"])),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

#[tokio::test]
async fn plan_says_what_the_operator_then_does_and_writes_nothing() -> Result<()> {
    let e = Estate::new().await?;
    let cli = AuditedIdentity::with_reads(&format!("rampart-plan-cli-{}", unique_id()))?;
    // The volumes bound and the workloads counted before planning, as they will be when the
    // operator acts.
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(e.c.clone(), &e.data.name);
    wait_until("the database's two PVCs to bind", TIMEOUT, || async {
        let bound = pvcs
            .list(&ListParams::default().labels("backup=true"))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                    .count()
            })
            .unwrap_or(0);
        (bound == 2, format!("{bound} bound"))
    })
    .await?;

    // 1. A first apply: creates, adoptions, snapshots.
    let first = e.profile_file("r1")?;
    let (code, plan) = run_plan(&cli.kubeconfig, &first)?;
    assert_eq!(code, 2, "a first apply writes: {plan}");
    assert_eq!(plan["exists"], false);
    let planned = items(&plan);
    let creates = of_change(&planned, "create");
    for ns in [&e.data.name, &e.api.name] {
        assert!(
            creates.contains(&(
                ns.clone(),
                "NetworkPolicy".into(),
                "rampart-default-deny".into()
            )),
            "no default-deny planned in {ns}: {creates:?}"
        );
    }
    assert!(
        creates
            .iter()
            .any(|(ns, k, _)| ns == &e.api.name && k == "PodDisruptionBudget"),
        "no budget planned for the API: {creates:?}"
    );
    let adopts = names(&of_change(&planned, "adopt"));
    assert_eq!(
        adopts,
        BTreeSet::from([
            (e.data.name.clone(), "db-creds".to_string()),
            (e.api.name.clone(), "api-creds".to_string())
        ])
    );
    let snapshots = of_change(&planned, "snapshot");
    assert_eq!(snapshots.len(), 2, "one snapshot per PVC: {snapshots:?}");
    assert!(
        of_change(&planned, "restart").is_empty(),
        "adoption restarts nothing"
    );

    apply_profile(&e.c, e.profile("r1")).await?;
    let op = OperatorProcess::start(&e.tag).await?;
    wait_condition(&e.c, &e.name, "Ready", "True", TIMEOUT).await?;
    let planned_snapshots: BTreeMap<String, usize> =
        snapshots.iter().fold(BTreeMap::new(), |mut m, (ns, _, _)| {
            *m.entry(ns.clone()).or_default() += 1;
            m
        });
    wait_until("the planned snapshots to exist", TIMEOUT, || async {
        let made = e.snapshots().await.unwrap_or_default();
        (made == planned_snapshots, format!("{made:?}"))
    })
    .await?;
    assert_eq!(
        e.managed().await?,
        creates,
        "the operator made exactly the policies and budgets the plan listed"
    );
    assert_eq!(e.stamped_secrets("r1", true).await?, adopts);
    let settled = until_nothing_to_do(&cli.kubeconfig, &first).await?;
    assert_eq!(settled["exists"], true);
    assert!(items(&settled).is_empty(), "{settled}");
    // `rampart status` reads the same profile back for a person.
    let shown = std::process::Command::new(operator_bin())
        .args(["status", &e.name])
        .env("KUBECONFIG", &cli.kubeconfig)
        .output()?;
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8_lossy(&shown.stdout);
    let ready = text
        .lines()
        .find(|l| l.trim_start().starts_with("Ready "))
        .unwrap_or_default();
    assert!(ready.contains(" True "), "{text}");
    for part in [
        "Mode:       Enforce",
        "Rotation ID: r1",
        "Secrets:     2 selected",
        "PVCs: 2,",
    ] {
        assert!(text.contains(part), "missing {part:?} in\n{text}");
    }
    drop(op);

    // 2. With the operator gone, a policy is edited and the rotation bumped in the file.
    Api::<NetworkPolicy>::namespaced(e.c.clone(), &e.api.name)
        .patch(
            "rampart-default-deny",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podSelector": {"matchLabels": {"tampered": "yes"}}}})),
        )
        .await?;
    let bumped = e.profile_file("r2")?;
    let (code, plan) = run_plan(&cli.kubeconfig, &bumped)?;
    assert_eq!(code, 2, "{plan}");
    let planned = items(&plan);
    assert_eq!(
        of_change(&planned, "change"),
        BTreeSet::from([(
            e.api.name.clone(),
            "NetworkPolicy".into(),
            "rampart-default-deny".into()
        )]),
        "{plan}"
    );
    let change = &plan["namespaces"][e.api.name.as_str()]["changes"];
    assert!(
        change.to_string().contains("spec.podSelector"),
        "the change names the field: {change}"
    );
    let rotates = names(&of_change(&planned, "rotate"));
    assert_eq!(rotates, adopts, "both adopted Secrets rotate at r2");
    // Secrets first: no consumer restarts before its Secret holds the new value.
    assert!(of_change(&planned, "restart").is_empty(), "{plan}");

    // An operator that may not patch Deployments carries out that plan (the repair and the
    // rotation) but can restart nothing.
    let sa_ns = TestNamespace::create(&e.c, "plan-sa", &[]).await?;
    let unable = ServiceAccountIdentity::new(
        &e.c,
        &sa_ns.name,
        Grants {
            verification: false,
            rotation_hooks: false,
            policy: false,
            drop: Some(("deployments", "patch")),
        },
    )
    .await?;
    apply_profile(&e.c, e.profile("r2")).await?;
    let op = OperatorProcess::start_as(&e.tag, &[], &unable.kubeconfig).await?;
    wait_until("the planned rotations and repair", TIMEOUT, || async {
        let rotated = e.stamped_secrets("r2", false).await.unwrap_or_default();
        let repaired = Api::<NetworkPolicy>::namespaced(e.c.clone(), &e.api.name)
            .get("rampart-default-deny")
            .await
            .map(|p| {
                p.spec
                    .and_then(|s| s.pod_selector)
                    .is_some_and(|sel| sel.match_labels.unwrap_or_default().is_empty())
            })
            .unwrap_or(false);
        (
            rotated == rotates && repaired,
            format!("rotated {rotated:?}, repaired {repaired}"),
        )
    })
    .await?;
    drop(op);

    // 3. The Secrets hold r2; their consumers were not restarted: the plan says restart.
    let (code, plan) = run_plan(&cli.kubeconfig, &bumped)?;
    assert_eq!(code, 2, "{plan}");
    let planned = items(&plan);
    let restarts = names(&of_change(&planned, "restart"));
    assert_eq!(
        restarts,
        BTreeSet::from([
            (e.data.name.clone(), "worker".to_string()),
            (e.api.name.clone(), "web".to_string())
        ]),
        "{plan}"
    );
    assert!(e.restarted("r2").await?.is_empty());
    let op = OperatorProcess::start(&e.tag).await?;
    wait_until("the planned restarts", TIMEOUT, || async {
        let done = e.restarted("r2").await.unwrap_or_default();
        (done == restarts, format!("{done:?}"))
    })
    .await?;
    let settled = until_nothing_to_do(&cli.kubeconfig, &bumped).await?;
    assert!(items(&settled).is_empty(), "{settled}");
    // Its finalizer needs the operator still running.
    rampart_e2e::delete_profile_and_wait(&e.c, &e.name).await?;
    drop(op);

    // The CLI's identity read (lists, gets) and never wrote.
    let requests = cli.writes()?;
    let writes: Vec<_> = requests
        .iter()
        .filter(|r| {
            ["create", "update", "patch", "delete", "deletecollection"].contains(&r.verb.as_str())
        })
        .collect();
    let reads = requests
        .iter()
        .filter(|r| ["get", "list", "watch"].contains(&r.verb.as_str()))
        .count();
    assert!(writes.is_empty(), "rampart plan wrote: {writes:?}");
    assert!(
        reads > 0,
        "the audit log holds no read by {} (is e2e/controlplane/audit-policy.yaml current? restart the plane)",
        cli.user
    );
    Ok(())
}
