//! The ClusterRole in config/rbac is sufficient and necessary: the operator, impersonating a
//! ServiceAccount bound to exactly those rules, runs every control to Ready; with one verb
//! taken away it cannot.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart::controls::rotation::stamp::Stamp;
use rampart_e2e::{
    cleanup_from_drop, client, delete_profile_and_wait, kubeconfig_path, repo_root, unique_id,
    wait_until, OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

/// A ServiceAccount bound to the config/ ClusterRole's rules (minus `drop`, if given), and
/// a kubeconfig that impersonates it.
struct Identity {
    role: String,
    kubeconfig: PathBuf,
}

impl Identity {
    async fn new(client: &Client, sa_namespace: &str, drop: Option<(&str, &str)>) -> Result<Self> {
        let role_name = format!("rampart-e2e-{}", unique_id());
        let text = std::fs::read_to_string(repo_root().join("config/rbac/cluster_role.yaml"))?;
        let mut role: ClusterRole = serde_yaml::from_str(&text)?;
        role.metadata.name = Some(role_name.clone());
        if let Some((resource, verb)) = drop {
            for rule in role.rules.iter_mut().flatten() {
                if rule.resources.iter().flatten().any(|r| r == resource) {
                    rule.verbs.retain(|v| v != verb);
                }
            }
        }
        Api::<ClusterRole>::all(client.clone())
            .create(&PostParams::default(), &role)
            .await?;
        Api::<ServiceAccount>::namespaced(client.clone(), sa_namespace)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "rampart"}}))?,
            )
            .await?;
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": role_name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": "rampart", "namespace": sa_namespace}]
        }))?;
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await?;

        let mut kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_path())?)?;
        let user = kc["users"][0]["user"]
            .as_mapping_mut()
            .context("kubeconfig user")?;
        user.insert(
            "as".into(),
            format!("system:serviceaccount:{sa_namespace}:rampart").into(),
        );
        let path = repo_root().join(format!(".local/kubeconfig-{role_name}"));
        std::fs::write(&path, serde_yaml::to_string(&kc)?)?;
        Ok(Self {
            role: role_name,
            kubeconfig: path,
        })
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let role = self.role.clone();
        cleanup_from_drop(move |c| async move {
            let _ = Api::<ClusterRoleBinding>::all(c.clone())
                .delete(&role, &DeleteParams::default())
                .await;
            let _ = Api::<ClusterRole>::all(c)
                .delete(&role, &DeleteParams::default())
                .await;
        });
    }
}

/// A namespace with a replicated workload using a rotated Secret and a PVC to back up.
async fn estate(c: &Client, run: &str) -> Result<TestNamespace> {
    let ns = TestNamespace::create_named(c, &format!("e2e-{run}"), &[("e2e.rampart.dev/run", run)])
        .await?;
    let apply = |obj: serde_json::Value| {
        let c = c.clone();
        let ns = ns.name.clone();
        async move {
            let ar = match obj["kind"].as_str() {
                Some("Deployment") => {
                    ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
                }
                Some("Secret") => ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Secret")),
                _ => {
                    ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "PersistentVolumeClaim"))
                }
            };
            let api: Api<DynamicObject> = Api::namespaced_with(c, &ns, &ar);
            let o: DynamicObject = serde_json::from_value(obj)?;
            api.create(&PostParams::default(), &o).await?;
            anyhow::Ok(())
        }
    };
    // One Secret stamped in the old format and one never stamped: the profile adopts both at
    // r0 (metadata patches), then rotates both at r1 (updates), so both writes are exercised
    // under the role.
    apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "labels": {"rampart.dev/rotate": "true"}, "annotations": {"rampart.dev/rotation-id": "r0"}}, "stringData": {"password": "orig"}})).await?;
    apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "legacy", "labels": {"rampart.dev/rotate": "true"}}, "stringData": {"password": "orig"}})).await?;
    apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "example.com/web:1", "envFrom": [{"secretRef": {"name": "db"}}]}]}}}}))
    .await?;
    // No pod mounts it, so it takes the Immediate class: on the default (WaitForFirstConsumer)
    // one it would never bind, and there would be nothing to snapshot.
    apply(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "labels": {"backup": "true"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "rampart-hostpath-immediate", "resources": {"requests": {"storage": "1Gi"}}}}))
    .await?;
    Ok(ns)
}

fn profile(name: &str, tag: &str, run: &str, rotation_id: &str) -> serde_json::Value {
    json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: tag}},
        "spec": {
            "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": run}},
            "networkPolicies": {},
            "podDisruptionBudgets": {"minReplicas": 2, "maxUnavailable": 1},
            "secretRotation": {"rotationId": rotation_id, "selector": {"matchLabels": {"rampart.dev/rotate": "true"}}, "regenerate": [{"key": "password"}]},
            "backups": {"schedule": "*/5 * * * * *", "pvcSelector": {"matchLabels": {"backup": "true"}}, "volumeSnapshotClassName": "csi-snapclass",
                "verify": {"schedule": "*/5 * * * * *", "timeoutSeconds": 60}}
        }
    })
}

async fn condition(c: &Client, name: &str, type_: &str) -> Option<(String, String)> {
    rampart_e2e::condition(c, name, type_).await.ok().flatten()
}

#[tokio::test]
async fn the_cluster_role_is_enough_for_every_control() -> Result<()> {
    let c = client().await?;
    let id = unique_id();
    let run = format!("rbac-{id}");
    let sa_ns = TestNamespace::create(&c, "rbac-sa", &[]).await?;
    let ns = estate(&c, &run).await?;
    let who = Identity::new(&c, &sa_ns.name, None).await?;
    let tag = format!("rbac-{id}");
    let _op = OperatorProcess::start_as(&tag, &[], &who.kubeconfig).await?;
    let name = format!("rbac-{id}");
    let profiles = Api::<HardeningProfile>::all(c.clone());
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(c.clone(), &ns.name);
    // The profile's own entry in each Secret's stamp: (id, adopted).
    let entries = || async {
        let uid = profiles.get(&name).await?.uid().unwrap_or_default();
        let mut out = Vec::new();
        for s in ["db", "legacy"] {
            let stamp = Stamp::of(
                secrets
                    .get(s)
                    .await?
                    .annotations()
                    .get("rampart.dev/rotation-id")
                    .map(String::as_str),
            );
            out.push(
                stamp
                    .entry(&uid)
                    .map(|e| (e.rotation_id.clone(), e.adopted)),
            );
        }
        anyhow::Ok(out)
    };
    for rotation_id in ["r0", "r1"] {
        profiles
            .patch(
                &name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(profile(&name, &tag, &run, rotation_id)),
            )
            .await?;
        wait_until("Ready=True as the ServiceAccount", TIMEOUT, || async {
            let ready = condition(&c, &name, "Ready").await;
            let at = profiles
                .get(&name)
                .await
                .ok()
                .and_then(|p| p.status?.rotation?.observed_rotation_id);
            (
                ready.as_ref().is_some_and(|r| r.0 == "True") && at.as_deref() == Some(rotation_id),
                format!("{ready:?} at {at:?}"),
            )
        })
        .await?;
        let want = Some((rotation_id.to_string(), rotation_id == "r0"));
        assert_eq!(
            entries().await?,
            vec![want.clone(), want],
            "adopted at r0 (patch), rotated at r1 (update)"
        );
    }
    assert!(!Api::<NetworkPolicy>::namespaced(c.clone(), &ns.name)
        .list(&ListParams::default())
        .await?
        .items
        .is_empty());
    assert_eq!(
        Api::<PodDisruptionBudget>::namespaced(c.clone(), &ns.name)
            .list(&ListParams::default())
            .await?
            .items
            .len(),
        1
    );
    let snaps: Api<DynamicObject> = Api::namespaced_with(
        c.clone(),
        &ns.name,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
            "volumesnapshots",
        ),
    );
    wait_until(
        "a snapshot taken as the ServiceAccount",
        TIMEOUT,
        || async {
            let n = snaps
                .list(&ListParams::default())
                .await
                .map(|l| l.items.len())
                .unwrap_or(0);
            (n >= 1, format!("{n}"))
        },
    )
    .await?;
    // Restore verification: a scratch namespace, content, snapshot and PVC, and the events
    // of a pending restore, all as the ServiceAccount.
    wait_until(
        "a restore verified as the ServiceAccount",
        TIMEOUT,
        || async {
            let v = condition(&c, &name, "BackupsVerified").await;
            (v.as_ref().is_some_and(|r| r.0 == "True"), format!("{v:?}"))
        },
    )
    .await?;
    delete_profile_and_wait(&c, &name).await?;
    drop(who);
    Ok(())
}

#[tokio::test]
async fn one_verb_less_and_the_operator_cannot_converge() -> Result<()> {
    let c = client().await?;
    let id = unique_id();
    let run = format!("rbacless-{id}");
    let sa_ns = TestNamespace::create(&c, "rbacless-sa", &[]).await?;
    let ns = estate(&c, &run).await?;
    let who = Identity::new(&c, &sa_ns.name, Some(("poddisruptionbudgets", "create"))).await?;
    let tag = format!("rbacless-{id}");
    let _op = OperatorProcess::start_as(&tag, &[], &who.kubeconfig).await?;
    let name = format!("rbacless-{id}");
    Api::<HardeningProfile>::all(c.clone())
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(profile(&name, &tag, &run, "r1")),
        )
        .await?;
    wait_until(
        "DisruptionBudgetsReady=False for want of a permission",
        TIMEOUT,
        || async {
            let cond = condition(&c, &name, "DisruptionBudgetsReady").await;
            (
                cond.as_ref().is_some_and(|r| r.0 == "False"),
                format!("{cond:?}"),
            )
        },
    )
    .await?;
    assert_ne!(
        condition(&c, &name, "Ready").await.map(|r| r.0),
        Some("True".to_string())
    );
    assert!(Api::<PodDisruptionBudget>::namespaced(c.clone(), &ns.name)
        .list(&ListParams::default())
        .await?
        .items
        .is_empty());
    delete_profile_and_wait(&c, &name).await?;
    drop(who);
    Ok(())
}
