//! Secret rotation end to end: values change once, consumers restart in bounded batches,
//! a crash at any point resumes from the cluster's state, a stuck rollout stalls the
//! rotation instead of barrelling on, and a Secret that never carried a rotation id is
//! adopted (stamped, values and consumers untouched) rather than rotated.
//!
//! The consumers are shaped as their charts install them (`rampart_e2e::apps`): init
//! containers, ephemeral-storage requests, and a StatefulSet with claimed volumes that reads
//! its Secret through `env`, `envFrom` and a volume at once, beside its own PDB,
//! NetworkPolicy and HPA.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart_e2e::apps::{create_all, App, SecretUse};
use rampart_e2e::{
    client, delete_profile_and_wait, unique_id, wait_until, OperatorProcess, TestNamespace,
    DEDICATED_LABEL,
};
use serde_json::{json, Value};

const ROTATION_ID: &str = "rampart.dev/rotation-id";
const ADOPTED: &str = "rampart.dev/rotation-adopted";
/// The id the selected Secrets of most tests carry before the profile arrives: they were
/// rotated before, so a new id rotates them (a Secret with no id would be adopted).
const EARLIER_ID: &str = "r0";
const RESTARTED_AT: &str = "rampart.dev/restarted-at";
const TIMEOUT: Duration = Duration::from_secs(90);

struct Fixture {
    client: Client,
    run: String,
    ns: TestNamespace,
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
        Ok(Self { client, run, ns })
    }

    /// A Secret; a selected one (`rotate`) carries [`EARLIER_ID`].
    async fn secret(&self, name: &str, rotate: bool, data: &[(&str, &str)]) -> Result<()> {
        self.secret_with_id(name, rotate, rotate.then_some(EARLIER_ID), data)
            .await
    }

    async fn secret_with_id(
        &self,
        name: &str,
        rotate: bool,
        id: Option<&str>,
        data: &[(&str, &str)],
    ) -> Result<()> {
        let labels: BTreeMap<String, String> = if rotate {
            BTreeMap::from([("rampart.dev/rotate".into(), "true".into())])
        } else {
            BTreeMap::new()
        };
        let annotations: BTreeMap<String, String> = id
            .map(|id| (ROTATION_ID.to_string(), id.to_string()))
            .into_iter()
            .collect();
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "stringData": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
        }))?;
        Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &s)
            .await?;
        Ok(())
    }

    /// A chart-shaped Deployment (2 replicas) whose pods use `secret` only the way `how`
    /// says, so each way is shown to be found on its own; `extra` is merged into the pod spec.
    async fn consumer(&self, name: &str, secret: &str, how: &str, extra: Value) -> Result<()> {
        let secret = secret.to_string();
        let how = match how {
            "env" => SecretUse::Env {
                secret,
                key: "password".into(),
            },
            "envFrom" => SecretUse::EnvFrom(secret),
            "volume" => SecretUse::Volume(secret),
            "projected" => SecretUse::Projected(secret),
            other => anyhow::bail!("no such way to read a Secret: {other}"),
        };
        let app = App::new(name, 2).with_secret(how).with_pod_extra(extra);
        create_all(&self.client, &self.ns.name, &[app.deployment()]).await
    }

    /// A chart-shaped StatefulSet (2 replicas, a claimed volume each) reading `secret` through
    /// `env`, `envFrom` and a volume, with its headless Service, NetworkPolicy, HPA and own
    /// PDB: one consumer, restarted once however many ways it reads the Secret.
    async fn statefulset_consumer(&self, name: &str, secret: &str) -> Result<()> {
        let app = App::new(name, 2).reading_secret(secret, "password");
        let mut objs = app.stateful_release();
        objs.push(app.pdb(name, json!({"maxUnavailable": 1})));
        create_all(&self.client, &self.ns.name, &objs).await
    }

    fn profile(
        &self,
        name: &str,
        id: &str,
        max: i32,
        timeout: i32,
        mode: &str,
        dedicated: Option<&str>,
    ) -> Value {
        let mut labels = BTreeMap::new();
        if let Some(tag) = dedicated {
            labels.insert(DEDICATED_LABEL.to_string(), tag.to_string());
        }
        json!({
            "apiVersion": "rampart.dev/v1alpha1",
            "kind": "HardeningProfile",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "mode": mode,
                "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": self.run}},
                "secretRotation": {
                    "rotationId": id,
                    "selector": {"matchLabels": {"rampart.dev/rotate": "true"}},
                    "regenerate": [{"key": "password", "length": 24}],
                    "keepPrevious": true,
                    "maxConcurrentRestarts": max,
                    "rolloutTimeoutSeconds": timeout
                }
            }
        })
    }

    async fn apply(&self, profile: Value) -> Result<String> {
        rampart_e2e::apply_profile(&self.client, profile).await
    }

    async fn secret_data(&self, name: &str) -> Result<(BTreeMap<String, String>, Option<String>)> {
        let s = Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .get(name)
            .await?;
        let data = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        Ok((
            data,
            s.metadata
                .annotations
                .and_then(|a| a.get(ROTATION_ID).cloned()),
        ))
    }

    /// Template stamps of every Deployment and StatefulSet: (name, rotation id, restarted-at).
    async fn stamps(&self) -> Result<Vec<(String, Option<String>, Option<String>)>> {
        let mut out = Vec::new();
        for d in Api::<Deployment>::namespaced(self.client.clone(), &self.ns.name)
            .list(&ListParams::default())
            .await?
            .items
        {
            let a = d
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default();
            out.push((
                d.name_any(),
                a.get(ROTATION_ID).cloned(),
                a.get(RESTARTED_AT).cloned(),
            ));
        }
        for s in Api::<StatefulSet>::namespaced(self.client.clone(), &self.ns.name)
            .list(&ListParams::default())
            .await?
            .items
        {
            let a = s
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default();
            out.push((
                s.name_any(),
                a.get(ROTATION_ID).cloned(),
                a.get(RESTARTED_AT).cloned(),
            ));
        }
        out.sort();
        Ok(out)
    }

    /// Deployments stamped with `id` (any, when `None`) but not yet rolled out, right now.
    async fn rolling(&self, id: Option<&str>) -> Result<usize> {
        let list = Api::<Deployment>::namespaced(self.client.clone(), &self.ns.name)
            .list(&ListParams::default())
            .await?;
        Ok(list
            .items
            .iter()
            .filter(|d| {
                let stamp = d
                    .spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.annotations.as_ref())
                    .and_then(|a| a.get(ROTATION_ID))
                    .map(String::as_str);
                let stamped = id.is_none() || stamp == id;
                let want = d.spec.replicas.unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                let done = st.observed_generation >= d.metadata.generation
                    && st.updated_replicas == Some(want)
                    && st.available_replicas == Some(want)
                    && st.replicas == Some(want);
                stamped && !done
            })
            .count())
    }

    /// StatefulSets not yet running every replica Ready (each waits for its volumes first).
    async fn unready_statefulsets(&self) -> Result<Vec<String>> {
        let list = Api::<StatefulSet>::namespaced(self.client.clone(), &self.ns.name)
            .list(&ListParams::default())
            .await?;
        Ok(list
            .items
            .iter()
            .filter(|s| {
                let want = s.spec.replicas.unwrap_or(1);
                s.status.as_ref().and_then(|st| st.ready_replicas) != Some(want)
            })
            .map(|s| s.name_any())
            .collect())
    }

    async fn rotation_phase(&self, profile: &str) -> Result<String> {
        let p = Api::<HardeningProfile>::all(self.client.clone())
            .get(profile)
            .await?;
        Ok(p.status
            .and_then(|s| s.rotation)
            .map(|r| r.phase.to_string())
            .unwrap_or_default())
    }

    /// Waits for the rotation to reach `phase` (of the rotation to `id`, when given: a status
    /// left from an earlier id does not count) and returns the profile.
    async fn wait_rotation(
        &self,
        profile: &str,
        id: Option<&str>,
        phase: &str,
    ) -> Result<HardeningProfile> {
        let api = Api::<HardeningProfile>::all(self.client.clone());
        let what = match id {
            Some(id) => format!("rotation to {id} {phase}"),
            None => format!("rotation phase {phase}"),
        };
        wait_until(&what, TIMEOUT, || {
            let api = api.clone();
            async move {
                match api.get(profile).await {
                    Ok(p) => {
                        let r = p.status.as_ref().and_then(|s| s.rotation.clone());
                        (
                            r.as_ref().is_some_and(|r| {
                                r.phase.as_str() == phase
                                    && id.is_none_or(|id| {
                                        r.observed_rotation_id.as_deref() == Some(id)
                                    })
                            }),
                            format!("{r:?}"),
                        )
                    }
                    Err(e) => (false, e.to_string()),
                }
            }
        })
        .await?;
        Ok(api.get(profile).await?)
    }

    async fn wait_phase(&self, profile: &str, phase: &str) -> Result<HardeningProfile> {
        self.wait_rotation(profile, None, phase).await
    }

    async fn delete_profile(&self, name: &str) -> Result<()> {
        delete_profile_and_wait(&self.client, name).await
    }

    /// The Deployment revision: 1 after creation, one more per template change.
    async fn revision(&self, name: &str) -> Result<String> {
        let d = Api::<Deployment>::namespaced(self.client.clone(), &self.ns.name)
            .get(name)
            .await?;
        Ok(d.annotations()
            .get("deployment.kubernetes.io/revision")
            .cloned()
            .unwrap_or_default())
    }
}

/// Three rotated Secrets (one lacking the regenerated key), one left alone; six consumers
/// using them every way a pod can, and one using only the unselected Secret.
async fn estate(f: &Fixture) -> Result<()> {
    f.secret("db", true, &[("username", "app"), ("password", "orig-db")])
        .await?;
    f.secret(
        "api",
        true,
        &[("username", "svc"), ("password", "orig-api")],
    )
    .await?;
    f.secret("fresh", true, &[("username", "new")]).await?;
    f.secret("other", false, &[("password", "orig-other")])
        .await?;
    f.consumer("c1-env", "db", "env", json!({})).await?;
    f.consumer("c2-envfrom", "db", "envFrom", json!({})).await?;
    f.consumer("c3-volume", "api", "volume", json!({})).await?;
    f.consumer("c4-projected", "api", "projected", json!({}))
        .await?;
    f.consumer("c5-fresh", "fresh", "envFrom", json!({}))
        .await?;
    f.statefulset_consumer("c6-sts", "db").await?;
    f.consumer("untouched", "other", "envFrom", json!({}))
        .await?;
    // Let the initial rollouts finish so "restarted" means restarted by us.
    wait_until("initial rollouts", TIMEOUT, || async {
        let n = f.rolling(None).await;
        let sts = f.unready_statefulsets().await;
        (
            matches!(n, Ok(0)) && sts.as_ref().is_ok_and(|s| s.is_empty()),
            format!("{n:?} Deployments still rolling out; StatefulSets not ready: {sts:?}"),
        )
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

async fn assert_rotated_once(f: &Fixture) -> Result<()> {
    for (name, orig) in [("db", "orig-db"), ("api", "orig-api")] {
        let (data, id) = f.secret_data(name).await?;
        assert_eq!(id.as_deref(), Some("r1"), "{name} carries the rotation id");
        assert_ne!(
            data.get("password").map(String::as_str),
            Some(orig),
            "{name}: password must change"
        );
        assert_eq!(data.get("password").map(String::len), Some(24));
        assert_eq!(
            data.get("password.previous").map(String::as_str),
            Some(orig),
            "{name}: regenerated more than once (previous is not the original)"
        );
        assert!(
            data.contains_key("username"),
            "{name}: other keys keep their values"
        );
    }
    let (fresh, _) = f.secret_data("fresh").await?;
    assert_eq!(fresh.get("username").map(String::as_str), Some("new"));
    assert_eq!(
        fresh.get("password").map(String::len),
        Some(24),
        "a missing regenerate key is created"
    );
    assert!(
        !fresh.contains_key("password.previous"),
        "a created key has no previous value"
    );
    let (other, other_id) = f.secret_data("other").await?;
    assert_eq!(
        other.get("password").map(String::as_str),
        Some("orig-other")
    );
    assert!(other_id.is_none(), "an unselected Secret is never touched");
    for d in [
        "c1-env",
        "c2-envfrom",
        "c3-volume",
        "c4-projected",
        "c5-fresh",
    ] {
        assert_eq!(
            f.revision(d).await?,
            "2",
            "{d} must be restarted exactly once"
        );
    }
    assert_eq!(
        f.revision("untouched").await?,
        "1",
        "a workload using no rotated Secret must not restart"
    );
    Ok(())
}

#[tokio::test]
async fn rotation_changes_values_once_and_restarts_consumers_in_batches() -> Result<()> {
    let f = Fixture::new("rot").await?;
    estate(&f).await?;
    let name = f
        .apply(f.profile(
            &format!("rot-{}", unique_id()),
            "r1",
            2,
            60,
            "Enforce",
            None,
        ))
        .await?;

    // Sample the rollouts in flight while the rotation runs: never more than the batch size.
    let mut max_rolling = 0;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while f.rotation_phase(&name).await? != "Complete" {
        max_rolling = max_rolling.max(f.rolling(Some("r1")).await?);
        assert!(
            std::time::Instant::now() < deadline,
            "rotation did not complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        max_rolling <= 2,
        "{max_rolling} rollouts ran at once with maxConcurrentRestarts 2"
    );

    let stamps = f.stamps().await?;
    let mut batches: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, id, at) in &stamps {
        if n == "untouched" {
            assert!(id.is_none(), "untouched was stamped");
            continue;
        }
        assert_eq!(id.as_deref(), Some("r1"), "{n} not stamped");
        batches
            .entry(at.clone().unwrap_or_default())
            .or_default()
            .push(n.clone());
    }
    assert_eq!(
        batches.len(),
        3,
        "six consumers in batches of two: {batches:?}"
    );
    assert!(batches.values().all(|b| b.len() <= 2), "{batches:?}");
    assert_rotated_once(&f).await?;

    let p = f.wait_phase(&name, "Complete").await?;
    let r = p
        .status
        .as_ref()
        .and_then(|s| s.rotation.clone())
        .context("rotation status")?;
    assert_eq!(
        (
            r.secrets_selected,
            r.secrets_rotated,
            r.workloads_total,
            r.workloads_restarted
        ),
        (3, 3, 6, 6)
    );
    assert!(r.started_at.is_some() && r.completed_at.is_some());
    // The status never carries a value.
    let text = serde_json::to_string(&p.status)?;
    for (_, v) in f.secret_data("db").await?.0 {
        assert!(!text.contains(&v), "a secret value leaked into the status");
    }
    f.delete_profile(&name).await?;
    Ok(())
}

#[tokio::test]
async fn rotation_survives_sigkill_at_three_points() -> Result<()> {
    let f = Fixture::new("crash").await?;
    estate(&f).await?;
    let tag = format!("crash-{}", unique_id());
    let mut op = OperatorProcess::start(&tag).await?;
    let name = f
        .apply(f.profile(
            &format!("crash-{}", unique_id()),
            "r1",
            2,
            60,
            "Enforce",
            Some(&tag),
        ))
        .await?;

    // 1: as soon as the new rotation id is seen, before or while Secrets rotate.
    tokio::time::sleep(Duration::from_millis(150)).await;
    op.kill();
    let mut op = OperatorProcess::start(&tag).await?;

    // 2: once the first batch is stamped.
    wait_until("a first batch stamped", TIMEOUT, || async {
        let n = f
            .stamps()
            .await
            .map(|s| {
                s.iter()
                    .filter(|(_, id, _)| id.as_deref() == Some("r1"))
                    .count()
            })
            .unwrap_or(0);
        (n >= 1, format!("{n} stamped"))
    })
    .await?;
    op.kill();
    let mut op = OperatorProcess::start(&tag).await?;

    // 3: in the middle of the later batches.
    wait_until("three or more stamped", TIMEOUT, || async {
        let n = f
            .stamps()
            .await
            .map(|s| {
                s.iter()
                    .filter(|(_, id, _)| id.as_deref() == Some("r1"))
                    .count()
            })
            .unwrap_or(0);
        (n >= 3, format!("{n} stamped"))
    })
    .await?;
    op.kill();
    let _op = OperatorProcess::start(&tag).await?;

    f.wait_phase(&name, "Complete").await?;
    assert_rotated_once(&f).await?;
    let stamped: BTreeSet<String> = f
        .stamps()
        .await?
        .into_iter()
        .filter(|(_, id, _)| id.as_deref() == Some("r1"))
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(stamped.len(), 6, "every consumer restarted: {stamped:?}");
    f.delete_profile(&name).await?;
    Ok(())
}

#[tokio::test]
async fn stuck_rollout_stalls_the_rotation_and_the_rest_wait() -> Result<()> {
    let f = Fixture::new("stall").await?;
    f.secret("db", true, &[("password", "orig")]).await?;
    // Its new pods can never be scheduled, so its rollout never completes.
    f.consumer(
        "aaa-stuck",
        "db",
        "envFrom",
        json!({"nodeSelector": {"e2e.rampart.dev/no-such-node": "true"}}),
    )
    .await?;
    f.consumer("bbb-next", "db", "envFrom", json!({})).await?;
    let name = f
        .apply(f.profile(
            &format!("stall-{}", unique_id()),
            "r1",
            1,
            10,
            "Enforce",
            None,
        ))
        .await?;
    let p = f.wait_phase(&name, "Stalled").await?;
    let cond = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "SecretsRotated"))
        .cloned()
        .context("SecretsRotated")?;
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "RotationStalled")
    );
    assert!(
        cond.message.contains("aaa-stuck"),
        "the stall must name the workload: {}",
        cond.message
    );
    let next = f
        .stamps()
        .await?
        .into_iter()
        .find(|(n, _, _)| n == "bbb-next")
        .context("bbb-next")?;
    assert!(
        next.1.is_none(),
        "the next batch must wait while the rotation is stalled"
    );
    f.delete_profile(&name).await?;
    Ok(())
}

#[tokio::test]
async fn audit_rotation_reports_and_writes_nothing() -> Result<()> {
    let f = Fixture::new("rotaudit").await?;
    f.secret("db", true, &[("password", "orig")]).await?;
    f.consumer("web", "db", "envFrom", json!({})).await?;
    let name = f
        .apply(f.profile(
            &format!("rotaudit-{}", unique_id()),
            "r1",
            1,
            60,
            "Audit",
            None,
        ))
        .await?;
    let p = f.wait_phase(&name, "Pending").await?;
    let r = p.status.and_then(|s| s.rotation).context("rotation")?;
    assert_eq!(
        (
            r.secrets_selected,
            r.secrets_rotated,
            r.workloads_total,
            r.workloads_restarted
        ),
        (1, 0, 1, 0)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (data, id) = f.secret_data("db").await?;
    assert_eq!(
        (data.get("password").map(String::as_str), id.as_deref()),
        (Some("orig"), Some(EARLIER_ID))
    );
    assert_eq!(f.revision("web").await?, "1");
    f.delete_profile(&name).await?;
    Ok(())
}

/// Whether a Secret carries the adoption mark.
async fn adopted_mark(f: &Fixture, name: &str) -> Result<bool> {
    let s = Api::<Secret>::namespaced(f.client.clone(), &f.ns.name)
        .get(name)
        .await?;
    Ok(s.annotations().contains_key(ADOPTED))
}

#[tokio::test]
async fn secrets_that_never_carried_an_id_are_adopted_then_rotated_at_the_next_id() -> Result<()> {
    let f = Fixture::new("adopt").await?;
    // A running estate before Rampart: Secrets with no rotation id, in use.
    f.secret_with_id("db", true, None, &[("password", "prod-db")])
        .await?;
    f.secret_with_id("cache", true, None, &[("password", "prod-cache")])
        .await?;
    f.consumer("web", "db", "envFrom", json!({})).await?;
    f.consumer("worker", "cache", "env", json!({})).await?;
    wait_until("initial rollouts", TIMEOUT, || async {
        let n = f.rolling(None).await;
        (matches!(n, Ok(0)), format!("{n:?} still rolling out"))
    })
    .await?;

    let name = f
        .apply(f.profile(
            &format!("adopt-{}", unique_id()),
            "r1",
            2,
            60,
            "Enforce",
            None,
        ))
        .await?;
    let api = Api::<HardeningProfile>::all(f.client.clone());
    wait_until("both Secrets adopted", TIMEOUT, || async {
        let r = api
            .get(&name)
            .await
            .ok()
            .and_then(|p| p.status.and_then(|s| s.rotation));
        (
            r.as_ref().is_some_and(|r| {
                r.phase == rampart::api::RotationPhase::Complete && r.secrets_adopted == 2
            }),
            format!("{r:?}"),
        )
    })
    .await?;
    // Watch a while: adoption must not turn into a rotation or a restart on a later pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (secret, value) in [("db", "prod-db"), ("cache", "prod-cache")] {
        let (data, id) = f.secret_data(secret).await?;
        assert_eq!(
            data.get("password").map(String::as_str),
            Some(value),
            "{secret}: an adopted Secret keeps its values"
        );
        assert!(
            !data.contains_key("password.previous"),
            "{secret}: nothing was regenerated"
        );
        assert_eq!(id.as_deref(), Some("r1"), "{secret} carries the current id");
        assert!(
            adopted_mark(&f, secret).await?,
            "{secret} is marked adopted"
        );
    }
    for d in ["web", "worker"] {
        assert_eq!(
            f.revision(d).await?,
            "1",
            "{d} must not restart on adoption"
        );
    }
    let r = api
        .get(&name)
        .await?
        .status
        .and_then(|s| s.rotation)
        .context("rotation")?;
    assert_eq!(
        (
            r.secrets_selected,
            r.secrets_rotated,
            r.secrets_adopted,
            r.workloads_total
        ),
        (2, 0, 2, 0)
    );

    // The next id rotates them like any other Secret and restarts their consumers once.
    f.apply(f.profile(&name, "r2", 2, 60, "Enforce", None))
        .await?;
    f.wait_rotation(&name, Some("r2"), "Complete").await?;
    for (secret, value) in [("db", "prod-db"), ("cache", "prod-cache")] {
        let (data, id) = f.secret_data(secret).await?;
        assert_ne!(data.get("password").map(String::as_str), Some(value));
        assert_eq!(
            data.get("password.previous").map(String::as_str),
            Some(value)
        );
        assert_eq!(id.as_deref(), Some("r2"));
        assert!(
            !adopted_mark(&f, secret).await?,
            "{secret}: a rotation removes the adoption mark"
        );
    }
    for d in ["web", "worker"] {
        assert_eq!(f.revision(d).await?, "2", "{d} restarts once, at r2");
    }
    f.delete_profile(&name).await?;
    Ok(())
}
