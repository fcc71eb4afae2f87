//! GitOps health on the local plane: profiles driven to converged, in-progress, invalid and
//! Audit-with-drift, each read by the real kstatus library (what Flux uses; the Go program in
//! e2e/tools/kstatus) and by the Argo CD health check in docs/argocd-health.lua, run by a Lua
//! 5.1 interpreter on the very object the API server returned (docs/gitops.md).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rampart::api::HardeningProfile;
use rampart_e2e::apps::{create_all, App, SecretUse};
use rampart_e2e::{
    client, delete_profile_and_wait, repo_root, unique_id, wait_condition, wait_until,
    OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The profile exactly as the API server serves it.
async fn raw_profile(c: &Client, name: &str) -> Result<Value> {
    let ar = ApiResource::erase::<HardeningProfile>(&());
    let obj = Api::<DynamicObject>::all_with(c.clone(), &ar)
        .get(name)
        .await
        .with_context(|| format!("reading profile {name}"))?;
    let v = serde_json::to_value(obj)?;
    // Kept for reading when a verdict surprises (and as the Lua check's real fixtures).
    let dir = repo_root().join(".local/logs");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("gitops-{name}.json")),
        serde_json::to_vec_pretty(&v)?,
    )?;
    Ok(v)
}

/// What cli-utils' kstatus says of `obj`: (status, message).
fn kstatus(obj: &Value) -> Result<(String, String)> {
    let script = repo_root().join("e2e/tools/build-kstatus.sh");
    let built = Command::new("bash").arg(&script).output()?;
    if !built.status.success() {
        bail!(
            "building kstatus: {}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
    let bin = String::from_utf8(built.stdout)?.trim().to_string();
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {bin}"))?;
    child
        .stdin
        .take()
        .context("kstatus stdin")?
        .write_all(&serde_json::to_vec(obj)?)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("kstatus failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        v["status"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    ))
}

/// What docs/argocd-health.lua returns for `obj`: (status, message).
fn argocd_health(obj: &Value) -> Result<(String, String)> {
    use mlua::serde::SerializeOptions;
    use mlua::{Lua, LuaSerdeExt, Table};
    let script = std::fs::read_to_string(repo_root().join("docs/argocd-health.lua"))?;
    let lua = Lua::new();
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua
        .to_value_with(obj, options)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    lua.globals()
        .set("obj", value)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hs: Table = lua
        .load(&script)
        .set_name("argocd-health.lua")
        .eval()
        .map_err(|e| anyhow::anyhow!("running the health check: {e}"))?;
    let get = |k: &str| -> Result<String> {
        hs.get::<Option<String>>(k)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .map(Option::unwrap_or_default)
    };
    Ok((get("status")?, get("message")?))
}

fn profile(name: &str, tag: &str, mode: &str, ns: &str, extra: Value) -> Value {
    let mut spec = json!({"mode": mode, "namespaces": [ns], "networkPolicies": {}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: tag}},
        "spec": spec,
    })
}

fn assert_reads(obj: &Value, state: &str, want_kstatus: &str, want_argocd: &str) -> Result<()> {
    let k = kstatus(obj)?;
    let a = argocd_health(obj)?;
    if k.0 != want_kstatus || a.0 != want_argocd {
        bail!(
            "{state}: kstatus {k:?} (want {want_kstatus}), Argo CD {a:?} (want {want_argocd}); conditions {}",
            obj["status"]["conditions"]
        );
    }
    assert!(
        !a.1.is_empty(),
        "{state}: the Argo CD check gives a message"
    );
    Ok(())
}

/// A profile that rotates the Secret `db` of `ns` at `id`, restarting its consumers.
fn rotating_profile(name: &str, tag: &str, ns: &str, id: &str) -> Value {
    json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: tag}},
        "spec": {
            "mode": "Enforce",
            "namespaces": [ns],
            "secretRotation": {
                "rotationId": id,
                "selector": {"matchLabels": {"rampart.dev/rotate": "true"}},
                "regenerate": [{"key": "password"}],
                "rolloutTimeoutSeconds": 3600
            }
        }
    })
}

/// Converging, as a live operator reports it: a rotation whose restart cannot roll out (the
/// consumer is paused) stays Restarting, so the profile is Reconciling, neither Ready nor
/// stalled, until the rollout timeout.
#[tokio::test]
async fn a_profile_still_converging_reads_in_progress() -> Result<()> {
    let c = client().await?;
    let tag = format!("gitops-conv-{}", unique_id());
    let ns = TestNamespace::create(&c, "gitops-rotate", &[]).await?;
    // Stamped with an earlier id, as a profile that has run for a while leaves it; the new id
    // then rotates it and restarts its consumer.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db", "labels": {"rampart.dev/rotate": "true"},
                     "annotations": {"rampart.dev/rotation-id": "r0"}},
        "stringData": {"password": "before"}
    }))?;
    Api::<Secret>::namespaced(c.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await?;
    let web = App::new("web", 1).with_secret(SecretUse::EnvFrom("db".into()));
    create_all(&c, &ns.name, &[web.deployment()]).await?;
    let deployments = Api::<Deployment>::namespaced(c.clone(), &ns.name);
    wait_until("web to roll out", TIMEOUT, || async {
        let d = deployments.get("web").await;
        let ready = d
            .as_ref()
            .ok()
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas);
        (ready == Some(1), format!("{ready:?}"))
    })
    .await?;

    let _op = OperatorProcess::start(&tag).await?;
    let name = format!("{tag}-rotate");
    rampart_e2e::apply_profile(&c, rotating_profile(&name, &tag, &ns.name, "r0")).await?;
    wait_condition(&c, &name, "SecretsRotated", "True", TIMEOUT).await?;
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await?;
    rampart_e2e::apply_profile(&c, rotating_profile(&name, &tag, &ns.name, "r1")).await?;
    let p = wait_condition(&c, &name, "Reconciling", "True", TIMEOUT).await?;
    assert_eq!(
        rampart_e2e::condition_of(&p, "Ready")
            .map(|c| c.0)
            .as_deref(),
        Some("False")
    );
    assert_reads(
        &raw_profile(&c, &name).await?,
        "converging",
        "InProgress",
        "Progressing",
    )?;
    delete_profile_and_wait(&c, &name).await?;
    Ok(())
}

#[tokio::test]
async fn kstatus_and_argocd_read_each_state_of_a_profile() -> Result<()> {
    let c = client().await?;
    let tag = format!("gitops-{}", unique_id());
    let enforced = TestNamespace::create(&c, "gitops-enforce", &[]).await?;
    let audited = TestNamespace::create(&c, "gitops-audit", &[]).await?;
    let mut op = OperatorProcess::start(&tag).await?;

    // Converged.
    let ready = format!("{tag}-ready");
    rampart_e2e::apply_profile(
        &c,
        profile(&ready, &tag, "Enforce", &enforced.name, json!({})),
    )
    .await?;
    wait_condition(&c, &ready, "Ready", "True", TIMEOUT).await?;
    assert_reads(
        &raw_profile(&c, &ready).await?,
        "converged",
        "Current",
        "Healthy",
    )?;

    // Invalid: an exception for a control the profile does not enable (admission lets it
    // through; the controller refuses it and waits for a fix).
    let invalid = format!("{tag}-invalid");
    let exception = json!({"exceptions": [{"namespace": enforced.name, "control": "Backups", "reason": "e2e"}]});
    rampart_e2e::apply_profile(
        &c,
        profile(&invalid, &tag, "Enforce", &audited.name, exception),
    )
    .await?;
    wait_condition(&c, &invalid, "InvalidSpec", "True", TIMEOUT).await?;
    let obj = raw_profile(&c, &invalid).await?;
    assert_reads(&obj, "invalid", "Failed", "Degraded")?;
    assert!(
        kstatus(&obj)?.1.contains("spec.exceptions[0].control"),
        "kstatus' message names the field"
    );
    delete_profile_and_wait(&c, &invalid).await?;

    // A name Rampart needs, taken by a team's own NetworkPolicy: never overwritten, so the
    // profile waits for a person.
    let held_ns = TestNamespace::create(&c, "gitops-held", &[]).await?;
    let user_policy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "rampart-default-deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    }))?;
    Api::<NetworkPolicy>::namespaced(c.clone(), &held_ns.name)
        .create(&PostParams::default(), &user_policy)
        .await?;
    let held = format!("{tag}-held");
    rampart_e2e::apply_profile(
        &c,
        profile(&held, &tag, "Enforce", &held_ns.name, json!({})),
    )
    .await?;
    let p = wait_condition(&c, &held, "Stalled", "True", TIMEOUT).await?;
    assert_eq!(
        rampart_e2e::condition_of(&p, "Stalled")
            .map(|c| c.1)
            .as_deref(),
        Some("NameHeld")
    );
    assert_reads(
        &raw_profile(&c, &held).await?,
        "name held",
        "Failed",
        "Degraded",
    )?;
    delete_profile_and_wait(&c, &held).await?;

    // Audit with drift: the policies are missing and Audit may not create them.
    let audit = format!("{tag}-audit");
    rampart_e2e::apply_profile(&c, profile(&audit, &tag, "Audit", &audited.name, json!({})))
        .await?;
    wait_condition(&c, &audit, "Drifted", "True", TIMEOUT).await?;
    assert_reads(
        &raw_profile(&c, &audit).await?,
        "Audit with drift",
        "Current",
        "Suspended",
    )?;

    // In progress: an edit the operator has not acted on yet (it is stopped).
    op.kill();
    Api::<HardeningProfile>::all(c.clone())
        .patch(
            &ready,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(profile(
                &ready,
                &tag,
                "Enforce",
                &enforced.name,
                json!({"networkPolicies": {"allowDNS": false}}),
            )),
        )
        .await?;
    assert_reads(
        &raw_profile(&c, &ready).await?,
        "edited, not yet observed",
        "InProgress",
        "Progressing",
    )?;

    let mut op = OperatorProcess::start(&tag).await?;
    wait_condition(&c, &ready, "Ready", "True", TIMEOUT).await?;
    delete_profile_and_wait(&c, &ready).await?;
    delete_profile_and_wait(&c, &audit).await?;
    op.kill();
    Ok(())
}
