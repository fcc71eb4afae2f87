//! The shipped RBAC and admission policy are sufficient and necessary: the operator,
//! impersonating a ServiceAccount bound to exactly config/rbac's ClusterRoles and held by
//! config/admission's policy, runs every control to Ready (restore verification with a check
//! Job included); with one verb taken away it cannot. The policy refuses, as that account,
//! what Rampart never does (a Job without its labels or with a privileged template in a
//! tenant namespace, a workload change beyond its pod-template annotations, a delete of an
//! unlabelled object, scratch objects outside `rampart-verify-*`), and without the
//! verification role the account cannot create a Job anywhere.

use std::time::Duration;

use anyhow::{bail, Result};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart::controls::rotation::stamp::Stamp;
use rampart_e2e::identity::{refused_by_policy, refused_by_rbac, Grants, ServiceAccountIdentity};
use rampart_e2e::{
    client, delete_profile_and_wait, unique_id, wait_until, OperatorProcess, TestNamespace,
    DEDICATED_LABEL,
};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(90);

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
                Some("StatefulSet") => {
                    ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "StatefulSet"))
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
    // One Secret rotated before (an older id: rotated, an update) and one that never was
    // (adopted, a metadata patch), so both writes are exercised under the role.
    apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "labels": {"rampart.dev/rotate": "true"}, "annotations": {"rampart.dev/rotation-id": "r0"}}, "stringData": {"password": "orig"}})).await?;
    apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "legacy", "labels": {"rampart.dev/rotate": "true"}}, "stringData": {"password": "orig"}})).await?;
    apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "example.com/web:1", "envFrom": [{"secretRef": {"name": "db"}}]}]}}}}))
    .await?;
    // A StatefulSet too, so the policy's rule for StatefulSets meets a real restart.
    apply(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {
        "replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "example.com/db:1", "envFrom": [{"secretRef": {"name": "db"}}]}]}}}}))
    .await?;
    // No pod mounts it, so it takes the Immediate class: on the default (WaitForFirstConsumer)
    // one it would never bind, and there would be nothing to snapshot.
    apply(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "labels": {"backup": "true"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "rampart-hostpath-immediate", "resources": {"requests": {"storage": "1Gi"}}}}))
    .await?;
    Ok(ns)
}

/// A pod template the restricted Pod Security rules allow: non-root, no privilege escalation,
/// every capability dropped, the runtime's seccomp profile.
fn restricted_template(container: &str) -> Value {
    json!({"spec": {
        "automountServiceAccountToken": false,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": container,
            "image": "registry.example/checker:1",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "restored", "mountPath": "/restored"}],
        }],
    }})
}

fn profile(name: &str, tag: &str, run: &str, rotation_id: &str) -> serde_json::Value {
    json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: tag}},
        "spec": {
            "mode": "Enforce",
            "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": run}},
            "networkPolicies": {},
            "podDisruptionBudgets": {"minReplicas": 2, "maxUnavailable": 1},
            "secretRotation": {"rotationId": rotation_id, "selector": {"matchLabels": {"rampart.dev/rotate": "true"}}, "regenerate": [{"key": "password"}]},
            "backups": {"schedule": "*/5 * * * * *", "pvcSelector": {"matchLabels": {"backup": "true"}}, "volumeSnapshotClassName": "csi-snapclass",
                "verify": {"schedule": "*/5 * * * * *", "timeoutSeconds": 60,
                    "job": {"template": restricted_template("check")}}}
        }
    })
}

async fn condition(c: &Client, name: &str, type_: &str) -> Option<(String, String)> {
    rampart_e2e::condition(c, name, type_).await.ok().flatten()
}

/// What the operator gets in a default install: both roles and the policy.
const SHIPPED: Grants<'static> = Grants {
    verification: true,
    rotation_hooks: true,
    policy: true,
    drop: None,
};

#[tokio::test]
async fn the_shipped_roles_and_policy_are_enough_for_every_control() -> Result<()> {
    let c = client().await?;
    let id = unique_id();
    let run = format!("rbac-{id}");
    let sa_ns = TestNamespace::create(&c, "rbac-sa", &[]).await?;
    let ns = estate(&c, &run).await?;
    let who = ServiceAccountIdentity::new(&c, &sa_ns.name, SHIPPED).await?;
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
                    .map(|e| (e.rotation_id.clone(), e.is_adopted())),
            );
        }
        anyhow::Ok(out)
    };
    // One Secret stamped in the old format and one never stamped: the profile adopts both at
    // r0 (metadata patches), then rotates both at r1 (updates), so both writes run under the
    // role and the policy.
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
    // Both workloads restarted under the policy (only their pod-template annotations).
    let uid = profiles.get(&name).await?.uid().unwrap_or_default();
    let stamped = |t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>| {
        let value = t
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("rampart.dev/rotation-id").cloned());
        Stamp::of(value.as_deref())
            .entry(&uid)
            .map(|e| e.rotation_id.clone())
    };
    wait_until("both consumers restarted", TIMEOUT, || async {
        let d = Api::<Deployment>::namespaced(c.clone(), &ns.name)
            .get("web")
            .await
            .ok();
        let s = Api::<StatefulSet>::namespaced(c.clone(), &ns.name)
            .get("db")
            .await
            .ok();
        let d = stamped(d.as_ref().map(|d| &d.spec).map(|s| &s.template));
        let s = stamped(s.as_ref().map(|s| &s.spec).map(|s| &s.template));
        (
            d.as_deref() == Some("r1") && s.as_deref() == Some("r1"),
            format!("{d:?} {s:?}"),
        )
    })
    .await?;
    // Restore verification: a scratch namespace, content, snapshot and PVC, a check Job and
    // the events of a pending restore, all as the ServiceAccount and under the policy.
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
    let who = ServiceAccountIdentity::new(
        &c,
        &sa_ns.name,
        Grants {
            drop: Some(("poddisruptionbudgets", "create")),
            ..SHIPPED
        },
    )
    .await?;
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

/// The labels every object Rampart makes carries.
fn rampart_labels() -> Value {
    json!({"app.kubernetes.io/managed-by": "rampart", "rampart.dev/profile": "p", "rampart.dev/control": "verify"})
}

fn job(name: &str, labels: Value, template: Value) -> Result<Job> {
    let mut template = template;
    template["spec"]["restartPolicy"] = json!("Never");
    // What Rampart adds to a check Job: the volume the template mounts (here an emptyDir).
    template["spec"]["volumes"] = json!([{"name": "restored", "emptyDir": {}}]);
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"backoffLimit": 0, "template": template},
    }))?)
}

/// Dry runs: admission (the policy included) runs as for a real write, and nothing is left.
fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..Default::default()
    }
}

/// `result` was refused by the admission policy with a message containing `says`.
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    result: kube::Result<T>,
    says: &str,
) -> Result<()> {
    match result {
        Err(e) => match refused_by_policy(&e) {
            Some(m) if m.contains(says) => Ok(()),
            Some(m) => bail!("{what}: refused, but not for `{says}`: {m}"),
            None => bail!("{what}: refused, but not by the admission policy: {e}"),
        },
        Ok(v) => bail!("{what}: allowed: {v:?}"),
    }
}

fn assert_allowed<T>(what: &str, result: kube::Result<T>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) => bail!("{what}: refused: {e}"),
    }
}

/// Workloads a team runs, a PVC of theirs and one carrying Rampart's label, in a tenant
/// namespace, made by the admin.
async fn tenant(c: &Client) -> Result<TestNamespace> {
    let ns = TestNamespace::create(c, "rbac-tenant", &[]).await?;
    let pp = PostParams::default();
    let pod = |app: &str| json!({"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "example.com/app:1"}]}});
    let sel = |app: &str| json!({"matchLabels": {"app": app}});
    Api::<Deployment>::namespaced(c.clone(), &ns.name)
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": sel("web"), "template": pod("web")}}))?,
        )
        .await?;
    Api::<StatefulSet>::namespaced(c.clone(), &ns.name)
        .create(&pp, &serde_json::from_value(json!({"metadata": {"name": "db"},
            "spec": {"replicas": 1, "serviceName": "db", "selector": sel("db"), "template": pod("db")}}))?)
        .await?;
    Api::<DaemonSet>::namespaced(c.clone(), &ns.name)
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "agent"},
            "spec": {"selector": sel("agent"), "template": pod("agent")}}))?,
        )
        .await?;
    for (name, labels) in [("theirs", json!({})), ("labelled", rampart_labels())] {
        Api::<PersistentVolumeClaim>::namespaced(c.clone(), &ns.name)
            .create(&pp, &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))?)
            .await?;
    }
    Api::<Secret>::namespaced(c.clone(), &ns.name)
        .create(
            &pp,
            &serde_json::from_value(
                json!({"metadata": {"name": "app", "labels": {"rampart.dev/rotate": "true"}},
            "stringData": {"password": "orig"}}),
            )?,
        )
        .await?;
    Ok(ns)
}

#[tokio::test]
async fn the_policy_refuses_what_rampart_never_does() -> Result<()> {
    let c = client().await?;
    let sa_ns = TestNamespace::create(&c, "rbac-policy-sa", &[]).await?;
    let ns = tenant(&c).await?;
    let who = ServiceAccountIdentity::new(&c, &sa_ns.name, SHIPPED).await?;
    let me = who.client().await?;
    let jobs = Api::<Job>::namespaced(me.clone(), &ns.name);

    // Jobs in a tenant namespace: without Rampart's labels, or with a privileged template,
    // refused; labelled and restricted (a rotation hook's shape), allowed.
    let privileged = json!({"spec": {"containers": [{"name": "c", "image": "example.com/x:1",
        "securityContext": {"privileged": true}}]}});
    assert_refused(
        "a Job without Rampart's labels",
        jobs.create(
            &dry_post(),
            &job("unlabelled", json!({}), restricted_template("c"))?,
        )
        .await,
        "creates only objects labelled app.kubernetes.io/managed-by=rampart",
    )?;
    assert_refused(
        "a labelled Job with a privileged template",
        jobs.create(
            &dry_post(),
            &job("privileged", rampart_labels(), privileged)?,
        )
        .await,
        "a Job's pod template",
    )?;
    // A template the restricted rules allow only because Rampart would fill it: labelled, but
    // not built by Rampart (no token setting, no security context), so refused.
    let unfilled = json!({"spec": {"containers": [{"name": "c", "image": "example.com/x:1"}]}});
    assert_refused(
        "a labelled Job whose template leaves what Rampart fills unset",
        jobs.create(&dry_post(), &job("unfilled", rampart_labels(), unfilled)?)
            .await,
        "as Rampart sets it",
    )?;
    let mut host = restricted_template("c");
    host["spec"]["hostNetwork"] = json!(true);
    assert_refused(
        "a labelled Job on the host's network",
        jobs.create(&dry_post(), &job("host", rampart_labels(), host)?)
            .await,
        "a Job's pod template",
    )?;
    assert_allowed(
        "a labelled Job with a restricted template",
        jobs.create(
            &dry_post(),
            &job("hook", rampart_labels(), restricted_template("c"))?,
        )
        .await,
    )?;

    // A rotation hook's Job mounts the Secret it runs for, named by its annotation, and no other;
    // a Job that is not a hook mounts no Secret at all.
    let hook_job = |name: &str, annotated: &str, mounted: &str| -> Result<Job> {
        let mut j = job(name, rampart_labels(), restricted_template("c"))?;
        let mut labels = j.metadata.labels.clone().unwrap_or_default();
        labels.insert("rampart.dev/rotation-hook".into(), "before-restart".into());
        j.metadata.labels = Some(labels);
        j.metadata.annotations = Some(
            [("rampart.dev/hook-secret".to_string(), annotated.to_string())]
                .into_iter()
                .collect(),
        );
        if let Some(spec) = j.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            spec.volumes = Some(vec![serde_json::from_value(
                json!({"name": "restored", "secret": {"secretName": mounted}}),
            )?]);
        }
        Ok(j)
    };
    assert_allowed(
        "a hook Job mounting the Secret it runs for",
        jobs.create(&dry_post(), &hook_job("hook-own", "app", "app")?)
            .await,
    )?;
    assert_refused(
        "a hook Job mounting another Secret than the one it runs for",
        jobs.create(&dry_post(), &hook_job("hook-other", "app", "payments")?)
            .await,
        "a Job's pod template",
    )?;
    let mut not_a_hook = hook_job("not-a-hook", "app", "app")?;
    if let Some(labels) = not_a_hook.metadata.labels.as_mut() {
        labels.remove("rampart.dev/rotation-hook");
    }
    assert_refused(
        "a Job that is not a hook mounting a Secret",
        jobs.create(&dry_post(), &not_a_hook).await,
        "a Job's pod template",
    )?;

    // Workloads: Rampart's restart stamp may change, nothing else.
    let stamp = json!({"spec": {"template": {"metadata": {"annotations": {
        "rampart.dev/rotation-id": "r9", "rampart.dev/restarted-at": "2026-12-06T20:00:00.000Z"}}}}});
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "evil.example/x:1"}]}}}});
    let other_annotation =
        json!({"spec": {"template": {"metadata": {"annotations": {"team.example/x": "y"}}}}});
    let scale = json!({"spec": {"replicas": 5}});
    let deployments = Api::<Deployment>::namespaced(me.clone(), &ns.name);
    let statefulsets = Api::<StatefulSet>::namespaced(me.clone(), &ns.name);
    let daemonsets = Api::<DaemonSet>::namespaced(me.clone(), &ns.name);
    let says = "changes only pod-template annotations under rampart.dev/";
    assert_refused(
        "a Deployment's image changed",
        deployments
            .patch("web", &dry_patch(), &Patch::Merge(&image))
            .await,
        says,
    )?;
    assert_refused(
        "a Deployment scaled",
        deployments
            .patch("web", &dry_patch(), &Patch::Merge(&scale))
            .await,
        says,
    )?;
    assert_refused(
        "a Deployment's template annotation of a team's",
        deployments
            .patch("web", &dry_patch(), &Patch::Merge(&other_annotation))
            .await,
        says,
    )?;
    assert_allowed(
        "a Deployment restarted",
        deployments
            .patch("web", &dry_patch(), &Patch::Merge(&stamp))
            .await,
    )?;
    assert_refused(
        "a StatefulSet's image changed",
        statefulsets
            .patch("db", &dry_patch(), &Patch::Merge(&image))
            .await,
        says,
    )?;
    assert_allowed(
        "a StatefulSet restarted",
        statefulsets
            .patch("db", &dry_patch(), &Patch::Merge(&stamp))
            .await,
    )?;
    assert_refused(
        "a DaemonSet's image changed",
        daemonsets
            .patch("agent", &dry_patch(), &Patch::Merge(&image))
            .await,
        says,
    )?;
    assert_allowed(
        "a DaemonSet restarted",
        daemonsets
            .patch("agent", &dry_patch(), &Patch::Merge(&stamp))
            .await,
    )?;

    // Deletes only of what carries Rampart's label; PVCs only in scratch namespaces.
    let dry_delete = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(me.clone(), &ns.name);
    assert_refused(
        "an unlabelled PVC deleted",
        pvcs.delete("theirs", &dry_delete).await,
        "deletes only objects labelled app.kubernetes.io/managed-by=rampart",
    )?;
    assert_refused(
        "a labelled PVC deleted outside the scratch namespaces",
        pvcs.delete("labelled", &dry_delete).await,
        "only in rampart-verify-* namespaces",
    )?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "scratch", "labels": rampart_labels()},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))?;
    assert_refused(
        "a labelled PVC created in a tenant namespace",
        pvcs.create(&dry_post(), &pvc).await,
        "only in rampart-verify-* namespaces",
    )?;
    let namespace: Namespace = serde_json::from_value(
        json!({"metadata": {"name": format!("not-scratch-{}", unique_id()), "labels": rampart_labels()}}),
    )?;
    assert_refused(
        "a namespace not named rampart-verify-*",
        Api::<Namespace>::all(me.clone())
            .create(&dry_post(), &namespace)
            .await,
        "only namespaces named rampart-verify-*",
    )?;

    // A Secret that never carried a rotation id: stamping it is adoption, changing its
    // values is not.
    let secrets = Api::<Secret>::namespaced(me.clone(), &ns.name);
    let mut s = secrets.get("app").await?;
    s.metadata.managed_fields = None;
    let mut changed = s.clone();
    changed
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("rampart.dev/rotation-id".into(), "r1".into());
    changed
        .data
        .get_or_insert_with(Default::default)
        .insert("password".into(), k8s_openapi::ByteString(b"new".to_vec()));
    assert_refused(
        "new values in a Secret never stamped",
        secrets.replace("app", &dry_post(), &changed).await,
        "changes a Secret's values only when it already carries",
    )?;
    let adopt = json!({"metadata": {"annotations": {"rampart.dev/rotation-id": "r1", "rampart.dev/rotation-adopted": "true"}}});
    assert_allowed(
        "a Secret adopted",
        secrets
            .patch("app", &dry_patch(), &Patch::Merge(&adopt))
            .await,
    )?;

    // Everyone else is untouched: the admin may do all of the above.
    assert_allowed(
        "the admin's unlabelled Job",
        Api::<Job>::namespaced(c.clone(), &ns.name)
            .create(
                &dry_post(),
                &job("admin", json!({}), restricted_template("c"))?,
            )
            .await,
    )?;
    assert_allowed(
        "the admin's image change",
        Api::<Deployment>::namespaced(c.clone(), &ns.name)
            .patch("web", &dry_patch(), &Patch::Merge(&image))
            .await,
    )?;
    drop(who);
    Ok(())
}

#[tokio::test]
async fn without_verification_the_account_cannot_create_a_job_anywhere() -> Result<()> {
    let c = client().await?;
    let sa_ns = TestNamespace::create(&c, "rbac-noverify-sa", &[]).await?;
    let ns = tenant(&c).await?;
    let scratch = TestNamespace::create_named(
        &c,
        &format!("rampart-verify-e2e-{}", unique_id()),
        &[("app.kubernetes.io/managed-by", "rampart")],
    )
    .await?;
    let who = ServiceAccountIdentity::new(
        &c,
        &sa_ns.name,
        Grants {
            verification: false,
            rotation_hooks: false,
            ..SHIPPED
        },
    )
    .await?;
    let me = who.client().await?;
    for namespace in [&ns.name, &scratch.name, &sa_ns.name] {
        let r = Api::<Job>::namespaced(me.clone(), namespace)
            .create(
                &dry_post(),
                &job("check", rampart_labels(), restricted_template("c"))?,
            )
            .await;
        match r {
            Err(e) if refused_by_rbac(&e) => {}
            other => bail!("a Job in {namespace} without the verification role: {other:?}"),
        }
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "scratch", "labels": rampart_labels()},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))?;
        match Api::<PersistentVolumeClaim>::namespaced(me.clone(), namespace)
            .create(&dry_post(), &pvc)
            .await
        {
            Err(e) if refused_by_rbac(&e) => {}
            other => bail!("a PVC in {namespace} without the verification role: {other:?}"),
        }
    }
    // The main role still works (the policy's probe in ServiceAccountIdentity::new used it);
    // what the verification role adds is all that is missing.
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {
        "name": format!("rampart-verify-{}", unique_id()), "labels": rampart_labels()}}))?;
    match Api::<Namespace>::all(me.clone())
        .create(&dry_post(), &namespace)
        .await
    {
        Err(e) if refused_by_rbac(&e) => {}
        other => bail!("a scratch namespace without the verification role: {other:?}"),
    }
    drop(who);
    Ok(())
}
