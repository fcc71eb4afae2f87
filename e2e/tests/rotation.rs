//! Secret rotation end to end: values change once, consumers restart in bounded batches,
//! a crash at any point resumes from the cluster's state, a stuck rollout stalls the
//! rotation instead of barrelling on, and a Secret that never carried a rotation id is
//! adopted (stamped, values and consumers untouched) rather than rotated. One namespace's
//! stalled rollout holds back that namespace only; an immutable Secret is named and skipped; a
//! Secret an ExternalSecret controls is listed and never written.
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
use rampart::controls::rotation::stamp::Stamp;
use rampart_e2e::apps::{create_all, App, SecretUse};
use rampart_e2e::{
    client, delete_profile_and_wait, unique_id, wait_until, OperatorProcess, TestNamespace,
    DEDICATED_LABEL,
};
use serde_json::{json, Value};

const ROTATION_ID: &str = "rampart.dev/rotation-id";
/// The id the selected Secrets of most tests carry before the profile arrives, in the stamp
/// format before stamps named their profile (as an upgrade finds them). The profile adopts
/// them at this id first ([`Fixture::apply_adopted`]), so a new id rotates them.
const EARLIER_ID: &str = "r0";
const RESTARTED_AT: &str = "rampart.dev/restarted-at";
const TIMEOUT: Duration = Duration::from_secs(90);

/// The id a stamp holds for the profile that wrote it last (tests here have one profile per
/// Secret unless they say otherwise), or an old-format id.
fn last_id(value: Option<&str>) -> Option<String> {
    let stamp = Stamp::of(value);
    stamp
        .entries
        .last()
        .map(|e| e.rotation_id.clone())
        .or(stamp.legacy)
}

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

    /// Applies an Enforce profile at [`EARLIER_ID`] and waits until it has adopted every
    /// selected Secret there (values and consumers untouched): the estate as a profile that
    /// has run for a while leaves it, ready for a new id to rotate.
    async fn apply_adopted(
        &self,
        name: &str,
        max: i32,
        timeout: i32,
        dedicated: Option<&str>,
    ) -> Result<String> {
        let name = self
            .apply(self.profile(name, EARLIER_ID, max, timeout, "Enforce", dedicated))
            .await?;
        let api = Api::<HardeningProfile>::all(self.client.clone());
        wait_until("the earlier id adopted", TIMEOUT, || async {
            let r = api
                .get(&name)
                .await
                .ok()
                .and_then(|p| p.status.and_then(|s| s.rotation));
            let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
                .list(&ListParams::default().labels("rampart.dev/rotate=true"))
                .await;
            // An operator from before stamps named their profile (run to show these tests
            // fail there) leaves the old format at the id it already holds.
            let before_entries = r.as_ref().is_some_and(|r| r.used_rotation_ids.is_empty());
            let stamped = secrets.as_ref().is_ok_and(|l| {
                l.items.iter().all(|s| {
                    let stamp = Stamp::of(s.annotations().get(ROTATION_ID).map(String::as_str));
                    stamp
                        .entries
                        .iter()
                        .any(|e| e.rotation_id == EARLIER_ID && e.is_adopted())
                        || (before_entries && stamp.legacy.as_deref() == Some(EARLIER_ID))
                })
            });
            (
                stamped
                    && r.as_ref().is_some_and(|r| {
                        r.phase == rampart::api::RotationPhase::Complete
                            && r.observed_rotation_id.as_deref() == Some(EARLIER_ID)
                    }),
                format!("{r:?}"),
            )
        })
        .await?;
        Ok(name)
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
            last_id(
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ROTATION_ID))
                    .map(String::as_str),
            ),
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
                last_id(a.get(ROTATION_ID).map(String::as_str)),
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
                last_id(a.get(ROTATION_ID).map(String::as_str)),
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
                let stamp = last_id(
                    d.spec
                        .template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.annotations.as_ref())
                        .and_then(|a| a.get(ROTATION_ID))
                        .map(String::as_str),
                );
                let stamped = id.is_none() || stamp.as_deref() == id;
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

    /// The rotation's id and phase.
    async fn rotation_phase(&self, profile: &str) -> Result<(String, String)> {
        let p = Api::<HardeningProfile>::all(self.client.clone())
            .get(profile)
            .await?;
        Ok(p.status
            .and_then(|s| s.rotation)
            .map(|r| {
                (
                    r.observed_rotation_id.unwrap_or_default(),
                    r.phase.to_string(),
                )
            })
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
        .apply_adopted(&format!("rot-{}", unique_id()), 2, 60, None)
        .await?;
    f.apply(f.profile(&name, "r1", 2, 60, "Enforce", None))
        .await?;

    // Sample the rollouts in flight while the rotation runs: never more than the batch size.
    let mut max_rolling = 0;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while f.rotation_phase(&name).await? != ("r1".to_string(), "Complete".to_string()) {
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

    let p = f.wait_rotation(&name, Some("r1"), "Complete").await?;
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
        .apply_adopted(&format!("crash-{}", unique_id()), 2, 60, Some(&tag))
        .await?;
    f.apply(f.profile(&name, "r1", 2, 60, "Enforce", Some(&tag)))
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

    f.wait_rotation(&name, Some("r1"), "Complete").await?;
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
    use kube::api::{Patch, PatchParams};
    let f = Fixture::new("stall").await?;
    f.secret("db", true, &[("password", "orig")]).await?;
    // Its pods can never be scheduled, before the rotation as after: not Ready when its turn
    // comes, it is restarted but gates nothing.
    f.consumer(
        "aa0-unready",
        "db",
        "envFrom",
        json!({"nodeSelector": {"e2e.rampart.dev/no-such-node": "true"}}),
    )
    .await?;
    f.consumer("aaa-stuck", "db", "envFrom", json!({})).await?;
    f.consumer("bbb-next", "db", "envFrom", json!({})).await?;
    wait_until(
        "initial rollouts but the unschedulable one",
        TIMEOUT,
        || async {
            let n = f.rolling(None).await;
            (matches!(n, Ok(1)), format!("{n:?} rolling"))
        },
    )
    .await?;
    let name = f
        .apply_adopted(&format!("stall-{}", unique_id()), 1, 10, None)
        .await?;
    // Ready, then paused: its restart never rolls out.
    Api::<Deployment>::namespaced(f.client.clone(), &f.ns.name)
        .patch(
            "aaa-stuck",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await?;
    f.apply(f.profile(&name, "r1", 1, 10, "Enforce", None))
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
    let r = f.rotation_status(&name).await?;
    let stalled: Vec<&str> = r
        .stalled_consumers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        stalled,
        vec!["aaa-stuck"],
        "the unready consumer does not stall"
    );
    let stamps = f.stamps().await?;
    let id = |c: &str| {
        stamps
            .iter()
            .find(|(n, _, _)| n == c)
            .and_then(|(_, id, _)| id.clone())
    };
    assert_eq!(
        id("aa0-unready").as_deref(),
        Some("r1"),
        "a consumer not Ready before is restarted all the same"
    );
    assert_eq!(
        id("bbb-next"),
        None,
        "the rest of the stalled namespace waits"
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
        .apply_adopted(&format!("rotaudit-{}", unique_id()), 1, 60, None)
        .await?;
    f.apply(f.profile(&name, "r1", 1, 60, "Audit", None))
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

/// Whether the profile that stamped a Secret last adopted it (`<uid>/<id>/adopted`).
async fn adopted_mark(f: &Fixture, name: &str) -> Result<bool> {
    let s = Api::<Secret>::namespaced(f.client.clone(), &f.ns.name)
        .get(name)
        .await?;
    Ok(
        Stamp::of(s.annotations().get(ROTATION_ID).map(String::as_str))
            .entries
            .last()
            .is_some_and(|e| e.is_adopted()),
    )
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

impl Fixture {
    /// Moves the namespace out of the profiles' selector, or back in.
    async fn set_in_scope(&self, in_scope: bool) -> Result<()> {
        use k8s_openapi::api::core::v1::Namespace;
        use kube::api::{Patch, PatchParams};
        let value = if in_scope {
            self.run.clone()
        } else {
            format!("{}-out", self.run)
        };
        Api::<Namespace>::all(self.client.clone())
            .patch(
                &self.ns.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"e2e.rampart.dev/run": value}}})),
            )
            .await?;
        Ok(())
    }

    async fn secret_version(&self, name: &str) -> Result<String> {
        let s = Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .get(name)
            .await?;
        Ok(s.resource_version().unwrap_or_default())
    }

    async fn rotation_status(&self, profile: &str) -> Result<rampart::api::RotationStatus> {
        Api::<HardeningProfile>::all(self.client.clone())
            .get(profile)
            .await?
            .status
            .and_then(|s| s.rotation)
            .context("no rotation status")
    }

    /// Waits until the rotation status satisfies `ok`.
    async fn wait_status(
        &self,
        profile: &str,
        what: &str,
        ok: impl Fn(&rampart::api::RotationStatus) -> bool,
    ) -> Result<rampart::api::RotationStatus> {
        let ok = &ok;
        wait_until(what, TIMEOUT, || async move {
            match self.rotation_status(profile).await {
                Ok(r) => (ok(&r), format!("{r:?}")),
                Err(e) => (false, e.to_string()),
            }
        })
        .await?;
        self.rotation_status(profile).await
    }

    /// The ids of every entry in a Secret's stamp, by profile uid.
    async fn secret_entries(&self, name: &str) -> Result<BTreeMap<String, (String, bool)>> {
        let s = Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .get(name)
            .await?;
        Ok(
            Stamp::of(s.annotations().get(ROTATION_ID).map(String::as_str))
                .entries
                .into_iter()
                .map(|e| {
                    let adopted = e.is_adopted();
                    (e.profile_uid, (e.rotation_id, adopted))
                })
                .collect(),
        )
    }
}

async fn profile_uid(client: &Client, name: &str) -> Result<String> {
    Api::<HardeningProfile>::all(client.clone())
        .get(name)
        .await?
        .uid()
        .context("profile uid")
}

#[tokio::test]
async fn a_revert_to_an_earlier_id_rotates_nothing() -> Result<()> {
    let f = Fixture::new("revert").await?;
    f.secret("db", true, &[("password", "orig")]).await?;
    f.consumer("web", "db", "envFrom", json!({})).await?;
    let name = f
        .apply_adopted(&format!("revert-{}", unique_id()), 2, 60, None)
        .await?;
    f.apply(f.profile(&name, "r1", 2, 60, "Enforce", None))
        .await?;
    f.wait_rotation(&name, Some("r1"), "Complete").await?;
    let (rotated, _) = f.secret_data("db").await?;
    assert_ne!(rotated.get("password").map(String::as_str), Some("orig"));
    let version = f.secret_version("db").await?;
    let revision = f.revision("web").await?;

    // A GitOps revert sets the earlier id again.
    f.apply(f.profile(&name, EARLIER_ID, 2, 60, "Enforce", None))
        .await?;
    // Seen by a pass: reported as a revert, or (an operator without the rule) planned.
    f.wait_status(&name, "the revert seen", |r| {
        r.reverted_rotation_id.as_deref() == Some(EARLIER_ID)
            || r.observed_rotation_id.as_deref() == Some(EARLIER_ID)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        f.secret_version("db").await?,
        version,
        "a revert must not write the Secret"
    );
    assert!(f.secret_data("db").await?.0 == rotated, "values unchanged");
    assert_eq!(
        f.revision("web").await?,
        revision,
        "nor restart its consumers"
    );
    let r = f.rotation_status(&name).await?;
    assert_eq!(r.reverted_rotation_id.as_deref(), Some(EARLIER_ID));
    assert_eq!(r.observed_rotation_id.as_deref(), Some("r1"));
    assert_eq!(r.phase, rampart::api::RotationPhase::Complete);
    assert_eq!(r.used_rotation_ids, vec![EARLIER_ID, "r1"]);
    let p = Api::<HardeningProfile>::all(f.client.clone())
        .get(&name)
        .await?;
    let cond = rampart_e2e::condition_of(&p, "SecretsRotated").context("SecretsRotated")?;
    assert_eq!(cond.0, "True");

    // A new id after the revert rotates as usual.
    f.apply(f.profile(&name, "r2", 2, 60, "Enforce", None))
        .await?;
    f.wait_rotation(&name, Some("r2"), "Complete").await?;
    let (data, id) = f.secret_data("db").await?;
    assert_eq!(id.as_deref(), Some("r2"));
    assert!(
        data.get("password.previous") == rotated.get("password"),
        "r2 rotates from r1's value"
    );
    f.delete_profile(&name).await?;
    Ok(())
}

#[tokio::test]
async fn two_operators_with_different_selectors_stop_writing_after_convergence() -> Result<()> {
    let f = Fixture::new("twoops").await?;
    f.secret_with_id("db", true, None, &[("password", "orig")])
        .await?;
    f.consumer("web", "db", "envFrom", json!({})).await?;
    f.statefulset_consumer("store", "db").await?;
    wait_until("initial rollouts", TIMEOUT, || async {
        let n = f.rolling(None).await;
        let sts = f.unready_statefulsets().await;
        (
            matches!(n, Ok(0)) && sts.as_ref().is_ok_and(|s| s.is_empty()),
            format!("{n:?} rolling; {sts:?}"),
        )
    })
    .await?;
    let (tag_a, tag_b) = (
        format!("twoa-{}", unique_id()),
        format!("twob-{}", unique_id()),
    );
    let _op_a = OperatorProcess::start(&tag_a).await?;
    let _op_b = OperatorProcess::start(&tag_b).await?;
    let a = f
        .apply(f.profile(&tag_a, "a1", 2, 60, "Enforce", Some(&tag_a)))
        .await?;
    let b = f
        .apply(f.profile(&tag_b, "b1", 2, 60, "Enforce", Some(&tag_b)))
        .await?;
    let (uid_a, uid_b) = (
        profile_uid(&f.client, &a).await?,
        profile_uid(&f.client, &b).await?,
    );
    // Converged: each profile has planned its id over the namespace, and a few passes more.
    for (p, id) in [(&a, "a1"), (&b, "b1")] {
        f.wait_status(p, "a status at its id", |r| {
            r.observed_rotation_id.as_deref() == Some(id) && r.secrets_selected == 1
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let revisions = (f.revision("web").await?, f.stamps().await?);

    // Count the Secret's resourceVersion changes for 60 s.
    let mut last = f.secret_version("db").await?;
    let mut changes = 0;
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = f.secret_version("db").await?;
        if now != last {
            changes += 1;
            last = now;
        }
    }
    assert_eq!(
        changes, 0,
        "the Secret was written {changes} times after convergence"
    );
    for p in [&a, &b] {
        assert_eq!(
            f.rotation_status(p).await?.phase,
            rampart::api::RotationPhase::Complete
        );
    }
    let (data, _) = f.secret_data("db").await?;
    assert_eq!(
        data.get("password").map(String::as_str),
        Some("orig"),
        "both profiles adopted the Secret: its values are untouched"
    );
    assert_eq!(
        (f.revision("web").await?, f.stamps().await?),
        revisions,
        "no consumer was restarted"
    );
    assert_eq!(
        f.secret_entries("db").await?,
        BTreeMap::from([
            (uid_a.clone(), ("a1".to_string(), true)),
            (uid_b.clone(), ("b1".to_string(), true)),
        ])
    );

    // A bump by one profile rotates once; the other keeps its entry and writes nothing.
    f.apply(f.profile(&a, "a2", 2, 60, "Enforce", Some(&tag_a)))
        .await?;
    f.wait_rotation(&a, Some("a2"), "Complete").await?;
    let settled = f.secret_version("db").await?;
    let (rotated, _) = f.secret_data("db").await?;
    assert_eq!(
        rotated.get("password.previous").map(String::as_str),
        Some("orig")
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        f.secret_version("db").await?,
        settled,
        "no ping-pong after a bump"
    );
    assert_eq!(
        f.secret_entries("db").await?,
        BTreeMap::from([
            (uid_a.clone(), ("a2".to_string(), false)),
            (uid_b.clone(), ("b1".to_string(), true)),
        ])
    );
    assert_eq!(f.revision("web").await?, "2", "web restarted once, for a2");
    f.delete_profile(&a).await?;
    f.delete_profile(&b).await?;
    Ok(())
}

#[tokio::test]
async fn a_namespace_relabelled_out_and_back_in_is_adopted_not_rotated() -> Result<()> {
    let f = Fixture::new("rescope").await?;
    f.secret("db", true, &[("password", "orig")]).await?;
    f.consumer("web", "db", "env", json!({})).await?;
    f.statefulset_consumer("store", "db").await?;
    wait_until("initial rollouts", TIMEOUT, || async {
        let n = f.rolling(None).await;
        let sts = f.unready_statefulsets().await;
        (
            matches!(n, Ok(0)) && sts.as_ref().is_ok_and(|s| s.is_empty()),
            format!("{n:?} rolling; {sts:?}"),
        )
    })
    .await?;
    let name = f
        .apply_adopted(&format!("rescope-{}", unique_id()), 2, 60, None)
        .await?;
    let stamps = f.stamps().await?;

    // Out of scope while the profile moves on to r1, with nothing of it to rotate...
    f.set_in_scope(false).await?;
    f.wait_status(&name, "the namespace out of scope", |r| {
        r.secrets_selected == 0
    })
    .await?;
    f.apply(f.profile(&name, "r1", 2, 60, "Enforce", None))
        .await?;
    f.wait_rotation(&name, Some("r1"), "Complete").await?;
    // ...and back: the Secret and its consumers were never told of a new value.
    f.set_in_scope(true).await?;
    f.wait_status(&name, "the namespace back in scope at r1", |r| {
        r.secrets_selected == 1 && r.observed_rotation_id.as_deref() == Some("r1")
    })
    .await?;
    wait_until("the Secret at r1", TIMEOUT, || async {
        let id = f.secret_data("db").await.map(|(_, id)| id);
        (matches!(&id, Ok(Some(i)) if i == "r1"), format!("{id:?}"))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (data, _) = f.secret_data("db").await?;
    assert_eq!(
        data.get("password").map(String::as_str),
        Some("orig"),
        "the Secret was rotated on re-entering scope"
    );
    assert!(
        !data.contains_key("password.previous"),
        "nothing regenerated"
    );
    assert!(adopted_mark(&f, "db").await?);
    assert_eq!(f.stamps().await?, stamps, "no consumer restarted");
    let r = f.rotation_status(&name).await?;
    assert_eq!(r.phase, rampart::api::RotationPhase::Complete);
    assert_eq!(
        (r.secrets_rotated, r.secrets_adopted, r.workloads_total),
        (0, 1, 0)
    );
    f.delete_profile(&name).await?;
    Ok(())
}

#[tokio::test]
async fn a_bump_during_restarting_waits_and_previous_keeps_the_running_value() -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let f = Fixture::new("queue").await?;
    f.secret("db", true, &[("password", "orig")]).await?;
    for c in ["aaa-paused", "bbb", "ccc"] {
        f.consumer(c, "db", "envFrom", json!({})).await?;
    }
    wait_until("initial rollouts", TIMEOUT, || async {
        let n = f.rolling(None).await;
        (matches!(n, Ok(0)), format!("{n:?} rolling"))
    })
    .await?;
    // Paused, its restart is stamped but does not roll out: the rotation stays Restarting
    // with bbb and ccc not yet restarted, running on the original value.
    let deployments = Api::<Deployment>::namespaced(f.client.clone(), &f.ns.name);
    let pause = |paused: bool| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch(
                    "aaa-paused",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"paused": paused}})),
                )
                .await
        }
    };
    let name = f
        .apply_adopted(&format!("queue-{}", unique_id()), 1, 600, None)
        .await?;
    let mut revisions = BTreeMap::new();
    for c in ["aaa-paused", "bbb", "ccc"] {
        revisions.insert(c, f.revision(c).await?.parse::<u32>()?);
    }
    pause(true).await?;
    f.apply(f.profile(&name, "r1", 1, 600, "Enforce", None))
        .await?;
    f.wait_status(&name, "r1 restarting aaa-paused", |r| {
        r.observed_rotation_id.as_deref() == Some("r1")
            && r.phase == rampart::api::RotationPhase::Restarting
            && r.in_progress.iter().any(|c| c.contains("aaa-paused"))
    })
    .await?;
    let (first, _) = f.secret_data("db").await?;
    let v1 = first.get("password").cloned().context("password")?;
    assert_eq!(
        first.get("password.previous").map(String::as_str),
        Some("orig")
    );

    // The bump while bbb and ccc still run on "orig".
    f.apply(f.profile(&name, "r2", 1, 600, "Enforce", None))
        .await?;
    // Seen by a pass: queued, or (an operator without the rule) started at once.
    f.wait_status(&name, "r2 seen", |r| {
        r.queued_rotation_id.as_deref() == Some("r2")
            || r.observed_rotation_id.as_deref() == Some("r2")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (held, id) = f.secret_data("db").await?;
    // Compared, never printed: a failure message must not carry a value.
    assert!(
        held.get("password") == Some(&v1),
        "not regenerated during Restarting"
    );
    assert!(
        held.get("password.previous").map(String::as_str) == Some("orig"),
        ".previous keeps the value bbb and ccc were started with"
    );
    for c in ["bbb", "ccc"] {
        assert_eq!(
            f.revision(c).await?.parse::<u32>()?,
            revisions[c],
            "{c} not restarted yet"
        );
    }
    assert_eq!(id.as_deref(), Some("r1"), "r2 waits");
    let r = f.rotation_status(&name).await?;
    assert_eq!(
        (
            r.observed_rotation_id.as_deref(),
            r.queued_rotation_id.as_deref()
        ),
        (Some("r1"), Some("r2"))
    );

    // Let the first rotation finish: r2 starts only once every consumer runs on r1's value.
    pause(false).await?;
    wait_until(
        "the Secret rotated to r2",
        Duration::from_secs(180),
        || async {
            let now = f.secret_data("db").await;
            let stamps = f.stamps().await;
            let rotated = now
                .as_ref()
                .is_ok_and(|(d, _)| d.get("password") != Some(&v1));
            let seen = match &now {
                Ok((_, id)) => format!("stamp at {id:?}"),
                Err(e) => e.to_string(),
            };
            if rotated {
                // The first moment r2's value is seen, every consumer already carries r1 (or r2).
                let stamps = stamps.unwrap_or_default();
                assert!(
                    stamps.iter().all(|(n, id, _)| matches!(
                        id.as_deref(),
                        Some("r1") | Some("r2")
                    ) || n.is_empty()),
                    "r2 rotated before r1's restarts: {stamps:?}"
                );
            }
            (rotated, seen)
        },
    )
    .await?;
    f.wait_rotation(&name, Some("r2"), "Complete").await?;
    let (last, id) = f.secret_data("db").await?;
    assert_eq!(id.as_deref(), Some("r2"));
    assert!(
        last.get("password.previous") == Some(&v1),
        ".previous is r1's value"
    );
    for c in ["aaa-paused", "bbb", "ccc"] {
        assert_eq!(
            f.revision(c).await?.parse::<u32>()?,
            revisions[c] + 2,
            "{c} restarted once for r1 and once for r2"
        );
    }
    let r = f.rotation_status(&name).await?;
    assert_eq!(r.queued_rotation_id, None);
    assert_eq!(r.used_rotation_ids, vec![EARLIER_ID, "r1", "r2"]);
    f.delete_profile(&name).await?;
    Ok(())
}

#[tokio::test]
async fn a_workload_created_after_the_secrets_rotated_is_not_restarted() -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let f = Fixture::new("late").await?;
    f.secret("db", true, &[("password", "orig")]).await?;
    for c in ["aaa-paused", "bbb"] {
        f.consumer(c, "db", "envFrom", json!({})).await?;
    }
    wait_until("initial rollouts", TIMEOUT, || async {
        let n = f.rolling(None).await;
        (matches!(n, Ok(0)), format!("{n:?} rolling"))
    })
    .await?;
    let name = f
        .apply_adopted(&format!("late-{}", unique_id()), 1, 600, None)
        .await?;
    let deployments = Api::<Deployment>::namespaced(f.client.clone(), &f.ns.name);
    let pause = |paused: bool| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch(
                    "aaa-paused",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"paused": paused}})),
                )
                .await
        }
    };
    // The rotation holds in Restarting on the paused first consumer, bbb waiting its turn.
    pause(true).await?;
    f.apply(f.profile(&name, "r1", 1, 600, "Enforce", None))
        .await?;
    let r = f
        .wait_status(&name, "r1 restarting", |r| {
            r.observed_rotation_id.as_deref() == Some("r1")
                && r.phase == rampart::api::RotationPhase::Restarting
                && r.secrets_rotated_at.is_some()
        })
        .await?;
    // Created once every Secret held its new value (past the clock margin): its pods start
    // with the new value, so it has nothing to restart for.
    tokio::time::sleep(Duration::from_secs(7)).await;
    f.consumer("zzz-late", "db", "envFrom", json!({})).await?;
    pause(false).await?;
    f.wait_rotation(&name, Some("r1"), "Complete").await?;
    let stamps = f.stamps().await?;
    let late = stamps
        .iter()
        .find(|(n, _, _)| n == "zzz-late")
        .context("zzz-late")?;
    assert_eq!(
        late.1, None,
        "a workload created after the rotation is not stamped"
    );
    assert_eq!(f.revision("zzz-late").await?, "1");
    for c in ["aaa-paused", "bbb"] {
        assert!(
            stamps
                .iter()
                .any(|(n, id, _)| n == c && id.as_deref() == Some("r1")),
            "{c} restarted: {stamps:?}"
        );
    }
    let done = f.rotation_status(&name).await?;
    assert_eq!((done.workloads_total, done.workloads_restarted), (2, 2));
    assert_eq!(
        done.secrets_rotated_at, r.secrets_rotated_at,
        "kept once set"
    );
    f.delete_profile(&name).await?;
    Ok(())
}

/// Restart stamps (id, restarted-at) of the Deployments in `ns`, by name.
async fn stamps_in(
    client: &Client,
    ns: &str,
) -> Result<BTreeMap<String, (Option<String>, Option<String>)>> {
    Ok(Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|d| {
            let a = d
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default();
            (
                d.name_any(),
                (
                    last_id(a.get(ROTATION_ID).map(String::as_str)),
                    a.get(RESTARTED_AT).cloned(),
                ),
            )
        })
        .collect())
}

fn restarted_at(
    stamp: Option<&(Option<String>, Option<String>)>,
) -> Result<chrono::DateTime<chrono::Utc>> {
    let at = stamp
        .and_then(|(_, at)| at.as_deref())
        .context("no restarted-at stamp")?;
    Ok(chrono::DateTime::parse_from_rfc3339(at)?.with_timezone(&chrono::Utc))
}

#[tokio::test]
async fn a_paused_deployment_stalls_its_own_namespace_only() -> Result<()> {
    use kube::api::{Patch, PatchParams};
    let f = Fixture::new("blast").await?;
    // A second namespace of the same run, named to sort after the first: its consumers come
    // after the stalled one in restart order, so they reach a batch only if the stall lets them.
    let b = Fixture {
        client: f.client.clone(),
        run: f.run.clone(),
        ns: TestNamespace::create_named(
            &f.client,
            &format!("{}-b", f.ns.name),
            &[("e2e.rampart.dev/run", &f.run)],
        )
        .await?,
    };
    for side in [&f, &b] {
        side.secret("db", true, &[("password", "orig")]).await?;
    }
    for c in ["aaa-paused", "aab-web", "aac-waits"] {
        f.consumer(c, "db", "envFrom", json!({})).await?;
    }
    for c in ["api", "worker"] {
        b.consumer(c, "db", "envFrom", json!({})).await?;
    }
    wait_until("initial rollouts", TIMEOUT, || async {
        let (x, y) = (f.rolling(None).await, b.rolling(None).await);
        (
            matches!((&x, &y), (Ok(0), Ok(0))),
            format!("{x:?} {y:?} rolling"),
        )
    })
    .await?;
    let tag = format!("blast-{}", unique_id());
    let _op = OperatorProcess::start(&tag).await?;
    let timeout = 15;
    let name = f.apply_adopted(&tag, 2, timeout, Some(&tag)).await?;
    Api::<Deployment>::namespaced(f.client.clone(), &f.ns.name)
        .patch(
            "aaa-paused",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await?;
    f.apply(f.profile(&name, "r1", 2, timeout, "Enforce", Some(&tag)))
        .await?;

    // The first batch is aaa-paused and aab-web; aaa-paused cannot roll out. Once it overruns
    // its timeout, namespace b's consumers go in the next batch.
    let window = Duration::from_secs(timeout as u64 + 30);
    wait_until(
        "namespace b's consumers restarted",
        window + Duration::from_secs(20),
        || async {
            let s = stamps_in(&b.client, &b.ns.name).await;
            (
                s.as_ref().is_ok_and(|s| {
                    ["api", "worker"]
                        .iter()
                        .all(|c| s.get(*c).is_some_and(|(id, _)| id.as_deref() == Some("r1")))
                }),
                format!("{s:?}"),
            )
        },
    )
    .await?;
    let a = stamps_in(&f.client, &f.ns.name).await?;
    let bs = stamps_in(&b.client, &b.ns.name).await?;
    let stalled_at = restarted_at(a.get("aaa-paused"))?;
    for c in ["api", "worker"] {
        let gap = (restarted_at(bs.get(c))? - stalled_at).num_seconds();
        assert!(
            gap <= i64::from(timeout) + 15,
            "{c} restarted {gap}s after the stalled batch began, beyond its timeout window"
        );
    }
    assert_eq!(
        a.get("aac-waits").and_then(|(id, _)| id.clone()),
        None,
        "a consumer in the stalled namespace waits: {a:?}"
    );
    let r = f
        .wait_status(&name, "stalled on aaa-paused only", |r| {
            r.phase == rampart::api::RotationPhase::Stalled && r.workloads_restarted == 3
        })
        .await?;
    let stalled: Vec<(&str, &str)> = r
        .stalled_consumers
        .iter()
        .map(|c| (c.namespace.as_str(), c.name.as_str()))
        .collect();
    assert_eq!(stalled, vec![(f.ns.name.as_str(), "aaa-paused")]);
    assert!(r
        .message
        .as_deref()
        .is_some_and(|m| m.contains("aaa-paused")));
    f.delete_profile(&name).await?;
    Ok(())
}

/// Installs a minimal `ExternalSecret` kind (external-secrets.io), if absent, so a Secret can
/// name a real ExternalSecret as its controller, as the External Secrets Operator does.
async fn external_secret(client: &Client, ns: &str, name: &str) -> Result<String> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "externalsecrets.external-secrets.io"},
        "spec": {
            "group": "external-secrets.io",
            "names": {"kind": "ExternalSecret", "plural": "externalsecrets", "singular": "externalsecret", "listKind": "ExternalSecretList"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))?;
    match Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("external-secrets.io", "v1", "ExternalSecret"),
        "externalsecrets",
    );
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": name},
        "spec": {"target": {"name": name}}
    }))?;
    let made = rampart_e2e::wait_for("the ExternalSecret kind served", TIMEOUT, || {
        let (api, obj) = (api.clone(), obj.clone());
        async move {
            match api.create(&PostParams::default(), &obj).await {
                Ok(o) => Ok(Some(o.metadata.uid)),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await?;
    made.context("no uid on the ExternalSecret")
}

#[tokio::test]
async fn an_immutable_secret_is_named_and_skipped_and_an_external_secret_is_left_alone(
) -> Result<()> {
    use kube::api::{Patch, PatchParams};
    let f = Fixture::new("unwritable").await?;
    f.secret("db", true, &[("password", "orig-db")]).await?;
    f.secret("frozen", true, &[("password", "orig-frozen")])
        .await?;
    let secrets = Api::<Secret>::namespaced(f.client.clone(), &f.ns.name);
    secrets
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"immutable": true})),
        )
        .await?;
    for (c, s) in [("web", "db"), ("frozen-user", "frozen")] {
        f.consumer(c, s, "envFrom", json!({})).await?;
    }
    let tag = format!("unwritable-{}", unique_id());
    let _op = OperatorProcess::start(&tag).await?;
    let name = f.apply_adopted(&tag, 2, 60, Some(&tag)).await?;
    // An ExternalSecret's Secret, as the External Secrets Operator writes it: no stamp, the
    // ExternalSecret its controller, labelled for rotation like its neighbours.
    let owner = external_secret(&f.client, &f.ns.name, "synced").await?;
    let synced: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "synced",
            "labels": {"rampart.dev/rotate": "true"},
            "ownerReferences": [{
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "name": "synced", "uid": owner, "controller": true, "blockOwnerDeletion": true
            }]
        },
        "stringData": {"password": "orig-synced"}
    }))?;
    secrets.create(&PostParams::default(), &synced).await?;
    f.consumer("synced-user", "synced", "envFrom", json!({}))
        .await?;
    let synced_before = secrets.get("synced").await?;
    f.apply(f.profile(&name, "r1", 2, 60, "Enforce", Some(&tag)))
        .await?;
    let r = f
        .wait_status(&name, "r1 complete, the immutable Secret named", |r| {
            r.observed_rotation_id.as_deref() == Some("r1")
                && r.phase == rampart::api::RotationPhase::Complete
                && !r.unwritable_secrets.is_empty()
        })
        .await?;
    let named = |items: &[rampart::api::RotationItem]| -> Vec<String> {
        items.iter().map(|i| i.name.clone()).collect()
    };
    assert_eq!(named(&r.unwritable_secrets), vec!["frozen"]);
    assert!(r.unwritable_secrets[0].reason.contains("immutable"));
    assert_eq!(named(&r.foreign_secrets), vec!["synced"]);
    assert!(r.foreign_secrets[0]
        .reason
        .contains("ExternalSecret/synced"));
    assert_eq!((r.workloads_total, r.workloads_restarted), (1, 1));

    let (db, _) = f.secret_data("db").await?;
    assert_ne!(
        db.get("password").map(String::as_str),
        Some("orig-db"),
        "db rotated"
    );
    let (frozen, _) = f.secret_data("frozen").await?;
    assert_eq!(
        frozen.get("password").map(String::as_str),
        Some("orig-frozen")
    );
    let synced = secrets.get("synced").await?;
    assert_eq!(
        synced.resource_version(),
        synced_before.resource_version(),
        "the ExternalSecret's Secret is neither rotated nor stamped"
    );
    let stamps = stamps_in(&f.client, &f.ns.name).await?;
    let id = |c: &str| stamps.get(c).and_then(|(id, _)| id.clone());
    assert_eq!(id("web").as_deref(), Some("r1"));
    assert_eq!((id("frozen-user"), id("synced-user")), (None, None));
    f.delete_profile(&name).await?;
    Ok(())
}

#[tokio::test]
async fn an_on_delete_statefulset_is_reported_not_restarted() -> Result<()> {
    let f = Fixture::new("ondelete").await?;
    f.secret("db", true, &[("password", "orig")]).await?;
    f.consumer("web", "db", "envFrom", json!({})).await?;
    let app = App::new("db-manual", 1).reading_secret("db", "password");
    let mut objs = app.stateful_release();
    for o in objs.iter_mut().filter(|o| o["kind"] == "StatefulSet") {
        o["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    }
    create_all(&f.client, &f.ns.name, &objs).await?;
    let tag = format!("ondelete-{}", unique_id());
    let _op = OperatorProcess::start(&tag).await?;
    let name = f.apply_adopted(&tag, 2, 30, Some(&tag)).await?;
    f.apply(f.profile(&name, "r1", 2, 30, "Enforce", Some(&tag)))
        .await?;
    let r = f
        .wait_status(&name, "r1 complete, the OnDelete StatefulSet listed", |r| {
            r.observed_rotation_id.as_deref() == Some("r1")
                && r.phase == rampart::api::RotationPhase::Complete
                && !r.skipped_consumers.is_empty()
        })
        .await?;
    let skipped: Vec<(&str, &str)> = r
        .skipped_consumers
        .iter()
        .map(|c| (c.kind.as_str(), c.name.as_str()))
        .collect();
    assert_eq!(skipped, vec![("StatefulSet", "db-manual")]);
    assert!(r.skipped_consumers[0].reason.contains("delete its pods"));
    assert_eq!((r.workloads_total, r.workloads_restarted), (1, 1));
    let stamps = f.stamps().await?;
    let id = |c: &str| {
        stamps
            .iter()
            .find(|(n, _, _)| n == c)
            .and_then(|(_, id, _)| id.clone())
    };
    assert_eq!(id("web").as_deref(), Some("r1"));
    assert_eq!(id("db-manual"), None, "an OnDelete template is not stamped");
    f.delete_profile(&name).await?;
    Ok(())
}

/// The hook's template: a client that would set the new password (its image never runs on the
/// local plane), pinned to a node no kwok node matches so the pod waits until the test ends it
/// as a kubelet would, with the exit the test wants.
fn hook_template() -> Value {
    json!({"spec": {
        "nodeSelector": {"e2e.rampart.dev/no-such-node": "true"},
        "containers": [{"name": "alter-user", "image": "registry.example/psql:16",
            "command": ["sh", "-c", "psql -c \"ALTER USER app PASSWORD '$(cat /rotated/password)'\""],
            "volumeMounts": [{"name": "rotated-secret", "mountPath": "/rotated", "readOnly": true}]}]
    }})
}

impl Fixture {
    /// A profile rotating to `id` with a `beforeRestart` hook.
    fn hooked_profile(&self, name: &str, id: &str, dedicated: &str) -> Value {
        let mut p = self.profile(name, id, 2, 60, "Enforce", Some(dedicated));
        p["spec"]["secretRotation"]["hooks"] =
            json!({"beforeRestart": {"template": hook_template(), "timeoutSeconds": 300}});
        p
    }

    /// The hook Jobs in the namespace: (name, uid).
    async fn hook_jobs(&self) -> Result<Vec<(String, String)>> {
        use k8s_openapi::api::batch::v1::Job;
        Ok(Api::<Job>::namespaced(self.client.clone(), &self.ns.name)
            .list(&ListParams::default().labels("rampart.dev/rotation-hook=before-restart"))
            .await?
            .items
            .iter()
            .map(|j| (j.name_any(), j.uid().unwrap_or_default()))
            .collect())
    }

    /// Waits for exactly one hook Job and its pod; returns (job, uid, pod).
    async fn one_hook_pod(&self) -> Result<(String, String, String)> {
        use k8s_openapi::api::core::v1::Pod;
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns.name);
        rampart_e2e::wait_for("the hook Job's pod", TIMEOUT, || async {
            let jobs = self.hook_jobs().await.map_err(|e| e.to_string())?;
            let [(job, uid)] = jobs.as_slice() else {
                return Ok(None);
            };
            let list = pods
                .list(&ListParams::default().labels(&format!("job-name={job}")))
                .await
                .map_err(|e| e.to_string())?;
            Ok(list
                .items
                .first()
                .map(|p| (job.clone(), uid.clone(), p.name_any())))
        })
        .await
    }

    /// Ends a hook pod as a kubelet ends a container that exited with `code`.
    async fn end_pod(&self, pod: &str, code: i32) -> Result<()> {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::{Patch, PatchParams};
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        Api::<Pod>::namespaced(self.client.clone(), &self.ns.name)
            .patch_status(
                pod,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "phase": phase,
                    "containerStatuses": [{
                        "name": "alter-user", "image": "registry.example/psql:16", "imageID": "",
                        "ready": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": code,
                            "reason": if code == 0 { "Completed" } else { "Error" }}},
                    }],
                }})),
            )
            .await?;
        Ok(())
    }

    /// Consumers whose template carries `id`.
    async fn stamped_with(&self, id: &str) -> Result<Vec<String>> {
        Ok(self
            .stamps()
            .await?
            .into_iter()
            .filter(|(_, stamp, _)| stamp.as_deref() == Some(id))
            .map(|(n, _, _)| n)
            .collect())
    }

    /// Notes of the profile's events with `reason`.
    async fn events(&self, profile: &str, reason: &str) -> Result<Vec<String>> {
        use k8s_openapi::api::core::v1::Event;
        Ok(Api::<Event>::all(self.client.clone())
            .list(
                &ListParams::default()
                    .fields(&format!("involvedObject.name={profile},reason={reason}")),
            )
            .await?
            .items
            .into_iter()
            .filter_map(|e| e.message)
            .collect())
    }
}

/// The estate every hook test starts from: Secret `db` (password `orig-db`) read by the
/// Deployment `web` (and the StatefulSet `ledger`, with `ledger`), a dedicated operator
/// (acting as `identity` when given), and a profile that adopted `db` at [`EARLIER_ID`].
struct HookedRun {
    f: Fixture,
    tag: String,
    op: OperatorProcess,
    name: String,
}

impl HookedRun {
    async fn start(prefix: &str, ledger: bool, identity: Option<&std::path::Path>) -> Result<Self> {
        let f = Fixture::new(prefix).await?;
        f.secret("db", true, &[("username", "app"), ("password", "orig-db")])
            .await?;
        f.consumer("web", "db", "envFrom", json!({})).await?;
        if ledger {
            f.statefulset_consumer("ledger", "db").await?;
        }
        let tag = format!("{prefix}-{}", unique_id());
        let op = match identity {
            Some(kubeconfig) => OperatorProcess::start_as(&tag, &[], kubeconfig).await?,
            None => OperatorProcess::start(&tag).await?,
        };
        let name = f
            .apply_adopted(&format!("{prefix}-{}", unique_id()), 2, 60, Some(&tag))
            .await?;
        Ok(Self { f, tag, op, name })
    }

    /// Bumps the profile to `r1` with the hook.
    async fn bump(&self) -> Result<()> {
        self.f
            .apply(self.f.hooked_profile(&self.name, "r1", &self.tag))
            .await?;
        Ok(())
    }
}

/// A hook holds the consumers until its Job completes, and runs once: the operator killed
/// (SIGKILL) while it runs comes back to the same Job and makes no other; when it completes the
/// consumers restart, once.
#[tokio::test]
async fn a_hook_that_completes_lets_restarts_proceed_and_a_sigkill_runs_it_once() -> Result<()> {
    let run = HookedRun::start("hookok", true, None).await?;
    run.bump().await?;
    let HookedRun {
        f,
        tag,
        mut op,
        name,
    } = run;

    let (job, uid, pod) = f.one_hook_pod().await?;
    let (data, _) = f.secret_data("db").await?;
    assert_ne!(data.get("password").map(String::as_str), Some("orig-db"));
    assert_eq!(
        data.get("password.previous").map(String::as_str),
        Some("orig-db"),
        "the hook reads the old value beside the new"
    );
    let r = f
        .wait_status(&name, "hooks running", |r| {
            r.phase == rampart::api::RotationPhase::RunningHooks && r.hooks_pending == 1
        })
        .await?;
    assert_eq!(r.workloads_restarted, 0);
    assert!(
        f.stamped_with("r1").await?.is_empty(),
        "no consumer restarts before the hook"
    );

    // Killed while the hook runs: the next operator finds the same Job and waits for it.
    op.kill();
    let _op = OperatorProcess::start(&tag).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        f.hook_jobs().await?,
        vec![(job.clone(), uid.clone())],
        "one Job, never remade"
    );
    assert!(
        f.stamped_with("r1").await?.is_empty(),
        "consumers still wait"
    );

    f.end_pod(&pod, 0).await?;
    let p = f.wait_rotation(&name, Some("r1"), "Complete").await?;
    let r = p
        .status
        .and_then(|s| s.rotation)
        .context("rotation status")?;
    assert_eq!((r.hooks_succeeded, r.hooks_pending), (1, 0));
    assert!(r.hook_failures.is_empty(), "{:?}", r.hook_failures);
    let record = r.history.first().context("a history record")?;
    assert_eq!(
        (
            record.rotation_id.as_str(),
            record.hooks_succeeded,
            record.workloads_restarted
        ),
        ("r1", 1, 2)
    );
    let stamped: BTreeSet<String> = f.stamped_with("r1").await?.into_iter().collect();
    assert_eq!(
        stamped,
        BTreeSet::from(["ledger".to_string(), "web".to_string()])
    );
    assert_eq!(f.hook_jobs().await?, vec![(job, uid)], "still the one Job");
    let notes = f.events(&name, "SecretRotated").await?;
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("{}/db", f.ns.name))
                && n.contains("web")
                && n.contains("ledger")
                && !n.contains(data.get("password").map(String::as_str).unwrap_or("-"))),
        "an event names the Secret and its restarted consumers, never a value: {notes:?}"
    );
    f.delete_profile(&name).await?;
    Ok(())
}

/// A hook that fails: the Secret gets back the values its consumers run with, none of them
/// restarts, and the status and condition name the Secret and the Job.
#[tokio::test]
async fn a_failing_hook_puts_the_values_back_and_restarts_nothing() -> Result<()> {
    let run = HookedRun::start("hookbad", false, None).await?;
    let revision = run.f.revision("web").await?;
    run.bump().await?;
    let HookedRun { f, name, .. } = &run;
    let (job, _, pod) = f.one_hook_pod().await?;
    f.end_pod(&pod, 1).await?;

    let r = f
        .wait_status(name, "the hook failure recorded", |r| {
            !r.hook_failures.is_empty()
        })
        .await?;
    let failure = &r.hook_failures[0];
    assert_eq!(failure.name, "db");
    assert!(failure.reason.contains(&job), "names the Job: {failure:?}");
    let (data, _) = f.secret_data("db").await?;
    assert_eq!(
        data.get("password").map(String::as_str),
        Some("orig-db"),
        "the value the consumers run with is back"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(f.stamped_with("r1").await?.is_empty(), "nothing restarted");
    assert_eq!(f.revision("web").await?, revision);
    let p = Api::<HardeningProfile>::all(f.client.clone())
        .get(name)
        .await?;
    let (status, _) = rampart_e2e::condition_of(&p, "SecretsRotated").context("SecretsRotated")?;
    assert_eq!(status, "False");
    let warnings = f.events(name, "RotationHookFailed").await?;
    assert!(
        warnings
            .iter()
            .any(|n| n.contains("db") && n.contains(&job)),
        "{warnings:?}"
    );
    f.delete_profile(name).await?;
    Ok(())
}

/// A hook whose Job went away before Rampart saw it end (deleted by a person, or a TTL a
/// mutating policy set) is never run again: whether it changed the credential is unknown, so
/// the Secret keeps its new values, nothing restarts, and the status says a person must look.
#[tokio::test]
async fn a_hook_job_deleted_while_it_runs_is_reported_lost_never_run_again() -> Result<()> {
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::DeleteParams;
    let run = HookedRun::start("hooklost", false, None).await?;
    run.bump().await?;
    let HookedRun { f, name, .. } = &run;
    let (job, _, _) = f.one_hook_pod().await?;
    f.wait_status(name, "the hook started", |r| {
        r.phase == rampart::api::RotationPhase::RunningHooks
    })
    .await?;
    let (rotated, _) = f.secret_data("db").await?;
    Api::<Job>::namespaced(f.client.clone(), &f.ns.name)
        .delete(&job, &DeleteParams::foreground())
        .await?;

    let r = f
        .wait_status(name, "the lost hook recorded", |r| {
            !r.hook_failures.is_empty()
        })
        .await?;
    assert!(
        r.hook_failures[0].reason.contains(&job) && r.hook_failures[0].reason.contains("deleted"),
        "{:?}",
        r.hook_failures
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(f.hook_jobs().await?.is_empty(), "never made again");
    assert!(f.stamped_with("r1").await?.is_empty(), "nothing restarted");
    assert_eq!(
        f.secret_data("db").await?.0,
        rotated,
        "the new values stay: the service may hold them"
    );
    f.delete_profile(name).await?;
    Ok(())
}

/// Without the rotation hooks role (the chart's `rotationHooks.enabled=false`, with
/// `verification.enabled=false`, whose role grants Jobs too) the hook Job is refused: the hook fails at once, the previous values go back, nothing restarts, and the
/// status says why, instead of the rotation waiting on a Job that can never exist.
#[tokio::test]
async fn a_hook_job_the_api_server_refuses_fails_the_hook_and_puts_the_values_back() -> Result<()> {
    use rampart_e2e::identity::{Grants, ServiceAccountIdentity};
    let admin = client().await?;
    let sa_ns = TestNamespace::create(&admin, "hooknorole-sa", &[]).await?;
    let who = ServiceAccountIdentity::new(
        &admin,
        &sa_ns.name,
        // Neither role that grants Jobs: the verification role's Jobs would serve a hook too.
        Grants {
            verification: false,
            rotation_hooks: false,
            policy: true,
            drop: None,
        },
    )
    .await?;
    let run = HookedRun::start("hooknorole", false, Some(&who.kubeconfig)).await?;
    run.bump().await?;
    let HookedRun { f, name, .. } = &run;
    let r = f
        .wait_status(name, "the refused hook recorded", |r| {
            !r.hook_failures.is_empty()
        })
        .await?;
    assert!(
        r.hook_failures[0].reason.contains("refused"),
        "{:?}",
        r.hook_failures
    );
    let (data, _) = f.secret_data("db").await?;
    assert_eq!(data.get("password").map(String::as_str), Some("orig-db"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(f.stamped_with("r1").await?.is_empty(), "nothing restarted");
    assert!(f.hook_jobs().await?.is_empty());
    f.delete_profile(name).await?;
    drop(who);
    Ok(())
}

/// A GitOps tool deletes the profile (foreground) while a hook changes a password: the Job is
/// not killed halfway (it outlives the profile, so garbage collection leaves it), the profile
/// waits for it, and once it completes the Secret is settled and the profile goes.
#[tokio::test]
async fn a_profile_deleted_in_the_foreground_while_a_hook_runs_waits_for_it() -> Result<()> {
    use kube::api::DeleteParams;
    let run = HookedRun::start("hookdel", false, None).await?;
    run.bump().await?;
    let HookedRun { f, name, .. } = &run;
    let (job, uid, pod) = f.one_hook_pod().await?;
    f.wait_status(name, "the hook started", |r| {
        r.phase == rampart::api::RotationPhase::RunningHooks
    })
    .await?;
    let (rotated, _) = f.secret_data("db").await?;

    let profiles = Api::<HardeningProfile>::all(f.client.clone());
    profiles.delete(name, &DeleteParams::foreground()).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        f.hook_jobs().await?,
        vec![(job.clone(), uid.clone())],
        "the running hook is neither killed nor remade"
    );
    assert!(
        profiles.get_opt(name).await?.is_some(),
        "the profile waits for its hook"
    );

    f.end_pod(&pod, 0).await?;
    wait_until("the profile gone", TIMEOUT, || async {
        let gone = matches!(profiles.get_opt(name).await, Ok(None));
        (gone, format!("gone: {gone}"))
    })
    .await?;
    assert_eq!(
        f.secret_data("db").await?.0,
        rotated,
        "the values the hook set in the service stay"
    );
    let entries = f.secret_entries("db").await?;
    assert!(
        entries.values().any(|(id, adopted)| id == "r1" && !adopted),
        "the hook's end is recorded: {entries:?}"
    );
    let stamp = Api::<Secret>::namespaced(f.client.clone(), &f.ns.name)
        .get("db")
        .await?
        .annotations()
        .get(ROTATION_ID)
        .cloned()
        .unwrap_or_default();
    assert!(!stamp.contains("hook-"), "no hook left pending: {stamp}");
    assert_eq!(
        f.hook_jobs().await?,
        vec![(job, uid)],
        "the Job stays for its TTL"
    );
    Ok(())
}
