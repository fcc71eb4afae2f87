//! The operator end to end, on the real control plane, against the operator process that
//! `make test` starts (e2e/run-tests.sh): network policies and disruption budgets appear,
//! drift is repaired or reported, ownership is respected, conflicts hand over, bad profiles are
//! refused, and a converged profile costs no writes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart_e2e::{
    client, delete_profile_and_wait, kubeconfig_path, metric_sum, repo_root, scrape_metrics,
    unique_id, wait_until, OperatorLaunch, OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(60);
const REPAIR: Duration = Duration::from_secs(5);
const NETWORK_POLICY_NAMES: [&str; 5] = [
    "rampart-default-deny",
    "rampart-allow-same-namespace",
    "rampart-allow-dns",
    "rampart-allow-namespaces",
    "rampart-allow-monitoring",
];

/// A test's own corner of the cluster: a label value no other test uses.
struct Estate {
    client: Client,
    run: String,
    namespaces: Vec<TestNamespace>,
}

impl Estate {
    async fn new(prefix: &str, count: usize) -> Result<Self> {
        let client = client().await?;
        let run = format!("{prefix}-{}", unique_id());
        let mut namespaces = Vec::new();
        for i in 0..count {
            namespaces.push(
                TestNamespace::create_named(
                    &client,
                    &format!("e2e-{run}-{i}"),
                    &[("e2e.rampart.dev/run", &run)],
                )
                .await?,
            );
        }
        Ok(Self {
            client,
            run,
            namespaces,
        })
    }

    fn ns(&self, i: usize) -> &str {
        &self.namespaces[i].name
    }

    /// A profile over this estate's namespaces with both controls on.
    fn profile_json(&self, name: &str, mode: &str) -> Value {
        json!({
            "apiVersion": "rampart.dev/v1alpha1",
            "kind": "HardeningProfile",
            "metadata": {"name": name},
            "spec": {
                "mode": mode,
                "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": self.run}},
                "networkPolicies": {
                    "allowedNamespaces": ["observability", "kafka"],
                    "monitoring": {"namespace": "observability", "ports": [9090]}
                },
                "podDisruptionBudgets": {"minReplicas": 2, "maxUnavailable": 1}
            }
        })
    }

    async fn apply_profile(&self, profile: Value) -> Result<String> {
        rampart_e2e::apply_profile(&self.client, profile).await
    }

    async fn deployment(&self, ns: &str, name: &str, replicas: i32) -> Result<()> {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "example.com/app:1"}]}}
            }
        }))?;
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &d)
            .await?;
        Ok(())
    }

    async fn statefulset(&self, ns: &str, name: &str, replicas: i32) -> Result<()> {
        let s: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "example.com/db:1"}]}}
            }
        }))?;
        Api::<StatefulSet>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &s)
            .await?;
        Ok(())
    }

    async fn user_pdb(
        &self,
        ns: &str,
        name: &str,
        app: &str,
        max_unavailable: i32,
    ) -> Result<PodDisruptionBudget> {
        let p: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": {"app": app}}}
        }))?;
        Ok(
            Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ns)
                .create(&PostParams::default(), &p)
                .await?,
        )
    }

    async fn user_network_policy(&self, ns: &str, name: &str) -> Result<NetworkPolicy> {
        let p: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {}}]}], "policyTypes": ["Ingress"]}
        }))?;
        Ok(Api::<NetworkPolicy>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &p)
            .await?)
    }

    async fn wait_condition(
        &self,
        profile: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<HardeningProfile> {
        rampart_e2e::wait_condition(&self.client, profile, type_, status, timeout).await
    }

    async fn delete_profile(&self, name: &str) -> Result<()> {
        delete_profile_and_wait(&self.client, name).await
    }

    async fn policy_names(&self, ns: &str) -> Result<Vec<String>> {
        let list = Api::<NetworkPolicy>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await?;
        let mut names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
        names.sort();
        Ok(names)
    }

    async fn pdb_names(&self, ns: &str) -> Result<Vec<String>> {
        let list = Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await?;
        let mut names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
        names.sort();
        Ok(names)
    }

    async fn wait_names<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        want: &[&str],
        get: F,
    ) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>>>,
    {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        wait_until(what, timeout, || {
            let fut = get();
            let want = want.clone();
            async move {
                match fut.await {
                    Ok(got) => (got == want, format!("{got:?}, want {want:?}")),
                    Err(e) => (false, e.to_string()),
                }
            }
        })
        .await
    }
}

fn condition(p: &HardeningProfile, type_: &str) -> Option<String> {
    rampart_e2e::condition_of(p, type_).map(|(status, _)| status)
}

fn describe_status(p: &HardeningProfile) -> String {
    match &p.status {
        None => "no status yet".into(),
        Some(s) => format!(
            "conditions {:?}; summary {:?}; drift {:?}",
            s.conditions
                .iter()
                .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
                .collect::<Vec<_>>(),
            s.summary,
            s.drift
                .iter()
                .map(|d| format!("{}/{} {} {}", d.namespace, d.name, d.kind, d.reason))
                .collect::<Vec<_>>()
        ),
    }
}

fn with_user_objects(mut names: Vec<&str>, user: &[&'static str]) -> Vec<String> {
    names.extend_from_slice(user);
    names.into_iter().map(String::from).collect()
}

#[tokio::test]
async fn profile_creates_policies_and_budgets_and_leaves_user_objects_alone() -> Result<()> {
    let e = Estate::new("happy", 2).await?;
    let (a, b) = (e.ns(0).to_string(), e.ns(1).to_string());
    e.deployment(&a, "web", 3).await?;
    e.deployment(&a, "single", 1).await?;
    e.deployment(&a, "legacy", 3).await?;
    e.statefulset(&b, "db", 2).await?;
    let user_np = e.user_network_policy(&a, "team-allow-web").await?;
    let user_pdb = e.user_pdb(&a, "team-legacy", "legacy", 1).await?;

    let name = e
        .apply_profile(e.profile_json(&format!("happy-{}", unique_id()), "Enforce"))
        .await?;
    let p = e.wait_condition(&name, "Ready", "True", CONVERGE).await?;

    let mut want_np: Vec<&str> = NETWORK_POLICY_NAMES.to_vec();
    want_np.push("team-allow-web");
    e.wait_names(
        "policies in the first namespace",
        CONVERGE,
        &want_np,
        || e.policy_names(&a),
    )
    .await?;
    e.wait_names(
        "policies in the second namespace",
        CONVERGE,
        &NETWORK_POLICY_NAMES,
        || e.policy_names(&b),
    )
    .await?;
    e.wait_names(
        "budgets in the first namespace",
        CONVERGE,
        &["rampart-deploy-web", "team-legacy"],
        || e.pdb_names(&a),
    )
    .await?;
    e.wait_names(
        "budgets in the second namespace",
        CONVERGE,
        &["rampart-sts-db"],
        || e.pdb_names(&b),
    )
    .await?;

    let pdb = Api::<PodDisruptionBudget>::namespaced(e.client.clone(), &a)
        .get("rampart-deploy-web")
        .await?;
    let spec = serde_json::to_value(pdb.spec.as_ref())?;
    assert_eq!(spec["maxUnavailable"], json!(1));
    assert_eq!(spec["unhealthyPodEvictionPolicy"], json!("AlwaysAllow"));
    assert_eq!(spec["selector"]["matchLabels"]["app"], json!("web"));
    assert_eq!(pdb.labels().get("rampart.dev/profile"), Some(&name));
    assert_eq!(
        pdb.owner_references().first().map(|o| o.uid.clone()),
        p.metadata.uid.clone()
    );

    let dns = Api::<NetworkPolicy>::namespaced(e.client.clone(), &b)
        .get("rampart-allow-dns")
        .await?;
    let peer = serde_json::to_value(dns.spec.as_ref().and_then(|s| s.egress.clone()))?;
    assert_eq!(
        peer[0]["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        json!("kube-system")
    );
    assert_eq!(
        peer[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        json!("kube-dns")
    );

    let status = p.status.clone().context("status")?;
    assert_eq!(
        status.summary.as_ref().map(|s| (s.namespaces, s.compliant)),
        Some((2, 2)),
        "{}",
        describe_status(&p)
    );
    assert!(
        status
            .covered_by_user_budgets
            .iter()
            .any(|r| r.name == "legacy" && r.message.contains("team-legacy")),
        "the workload covered by the user's PDB must be reported: {:?}",
        status.covered_by_user_budgets
    );

    let np_now = Api::<NetworkPolicy>::namespaced(e.client.clone(), &a)
        .get("team-allow-web")
        .await?;
    let pdb_now = Api::<PodDisruptionBudget>::namespaced(e.client.clone(), &a)
        .get("team-legacy")
        .await?;
    assert_eq!(
        np_now.resource_version(),
        user_np.resource_version(),
        "the user's NetworkPolicy was written to"
    );
    assert_eq!(pdb_now.spec, user_pdb.spec, "the user's PDB spec changed");
    assert!(
        pdb_now.owner_references().is_empty()
            && !pdb_now.labels().contains_key("rampart.dev/profile")
    );

    e.delete_profile(&name).await?;
    e.wait_names(
        "only the user's policy after deletion",
        CONVERGE,
        &["team-allow-web"],
        || e.policy_names(&a),
    )
    .await?;
    e.wait_names(
        "only the user's budget after deletion",
        CONVERGE,
        &["team-legacy"],
        || e.pdb_names(&a),
    )
    .await?;
    e.wait_names(
        "nothing in the second namespace after deletion",
        CONVERGE,
        &[],
        || e.policy_names(&b),
    )
    .await?;
    let _ = with_user_objects;
    Ok(())
}

#[tokio::test]
async fn deleted_and_edited_policies_are_restored_within_seconds() -> Result<()> {
    let e = Estate::new("repair", 1).await?;
    let ns = e.ns(0).to_string();
    let name = e
        .apply_profile(e.profile_json(&format!("repair-{}", unique_id()), "Enforce"))
        .await?;
    e.wait_condition(&name, "Ready", "True", CONVERGE).await?;
    e.wait_names("all policies", CONVERGE, &NETWORK_POLICY_NAMES, || {
        e.policy_names(&ns)
    })
    .await?;

    let nps = Api::<NetworkPolicy>::namespaced(e.client.clone(), &ns);
    let deleted = nps.get("rampart-allow-dns").await?;
    nps.delete("rampart-allow-dns", &DeleteParams::default())
        .await?;
    nps.patch(
        "rampart-default-deny",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"podSelector": {"matchLabels": {"only": "these"}}}})),
    )
    .await?;

    wait_until(
        "the deleted policy to come back and the edit to be undone",
        REPAIR,
        || {
            let nps = nps.clone();
            let old_uid = deleted.uid();
            async move {
                let dns = nps.get_opt("rampart-allow-dns").await.ok().flatten();
                let deny = nps.get_opt("rampart-default-deny").await.ok().flatten();
                let back = dns.as_ref().is_some_and(|d| d.uid() != old_uid);
                let undone = deny
                    .as_ref()
                    .and_then(|d| d.spec.as_ref())
                    .and_then(|s| s.pod_selector.as_ref())
                    .is_some_and(|sel| sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty));
                (
                    back && undone,
                    format!("dns recreated: {back}; default-deny selector reset: {undone}"),
                )
            }
        },
    )
    .await?;

    let p = e.wait_condition(&name, "Ready", "True", CONVERGE).await?;
    assert!(
        p.status.as_ref().is_some_and(|s| s.drift.is_empty()),
        "drift must clear: {}",
        describe_status(&p)
    );
    let metrics = scrape_metrics().await?;
    assert!(
        metric_sum(
            &metrics,
            "rampart_repairs_total",
            &[("profile", &name), ("control", "networkpolicy")]
        ) >= 2.0,
        "both repairs must be counted"
    );
    e.delete_profile(&name).await
}

/// The profile's events with `reason`, as their messages.
async fn event_messages(client: &Client, profile: &str, reason: &str) -> Result<Vec<String>> {
    let events = Api::<k8s_openapi::api::core::v1::Event>::all(client.clone())
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=HardeningProfile,involvedObject.name={profile},reason={reason}"
        )))
        .await?;
    Ok(events.items.into_iter().filter_map(|e| e.message).collect())
}

/// A first apply is a creation, not a repair: the event says Created, the summary counts
/// `createdObjects` and `rampart_objects_created_total` the objects, and nothing counts as
/// repaired. A managed policy deleted afterwards is exactly one repair. The gauges of the
/// profile's conditions and mode and the API request counts are served too.
#[tokio::test]
async fn first_apply_creates_and_a_later_deletion_is_exactly_one_repair() -> Result<()> {
    let e = Estate::new("created", 1).await?;
    let ns = e.ns(0).to_string();
    e.deployment(&ns, "web", 3).await?;
    let name = e
        .apply_profile(e.profile_json(&format!("created-{}", unique_id()), "Enforce"))
        .await?;
    let p = e.wait_condition(&name, "Ready", "True", CONVERGE).await?;
    let counts = |p: &HardeningProfile| {
        p.status
            .as_ref()
            .and_then(|s| s.summary.as_ref())
            .map(|s| (s.created_objects, s.repaired_objects))
    };
    // Five policies and the budget of `web`.
    assert_eq!(counts(&p), Some((6, 0)), "{}", describe_status(&p));
    let metrics = scrape_metrics().await?;
    let of = |metric: &str, labels: &[(&str, &str)]| {
        let mut all = vec![("profile", name.as_str())];
        all.extend_from_slice(labels);
        metric_sum(&metrics, metric, &all)
    };
    assert_eq!(
        of(
            "rampart_objects_created_total",
            &[("control", "networkpolicy")]
        ),
        5.0
    );
    assert_eq!(
        of("rampart_objects_created_total", &[("control", "pdb")]),
        1.0
    );
    assert_eq!(
        of("rampart_repairs_total", &[]),
        0.0,
        "a first apply repairs nothing"
    );
    assert_eq!(
        of(
            "rampart_profile_condition",
            &[("type", "Ready"), ("status", "True")]
        ),
        1.0
    );
    assert_eq!(
        of(
            "rampart_profile_condition",
            &[("type", "Ready"), ("status", "False")]
        ),
        0.0
    );
    assert_eq!(of("rampart_profile_info", &[("mode", "Enforce")]), 1.0);
    assert!(
        metric_sum(
            &metrics,
            "rampart_api_requests_total",
            &[("verb", "create"), ("code", "201")]
        ) >= 6.0,
        "the creates are counted by verb and code"
    );
    wait_until("a Created event", CONVERGE, || async {
        let created = event_messages(&e.client, &name, "Created")
            .await
            .unwrap_or_default();
        let repaired = event_messages(&e.client, &name, "Repaired")
            .await
            .unwrap_or_default();
        (
            created.iter().any(|m| m.starts_with("Created 6 objects: ")) && repaired.is_empty(),
            format!("Created: {created:?}; Repaired: {repaired:?}"),
        )
    })
    .await?;

    let nps = Api::<NetworkPolicy>::namespaced(e.client.clone(), &ns);
    let deleted = nps.get("rampart-allow-dns").await?;
    nps.delete("rampart-allow-dns", &DeleteParams::default())
        .await?;
    wait_until("the deleted policy made again", REPAIR, || {
        let nps = nps.clone();
        let old_uid = deleted.uid();
        async move {
            let now = nps.get_opt("rampart-allow-dns").await.ok().flatten();
            let back = now.as_ref().is_some_and(|d| d.uid() != old_uid);
            (back, format!("back: {back}"))
        }
    })
    .await?;
    let client = e.client.clone();
    let p = rampart_e2e::wait_for("the repair counted in the summary", CONVERGE, || {
        let api = Api::<HardeningProfile>::all(client.clone());
        let name = name.clone();
        async move {
            match api.get(&name).await {
                Ok(p) if counts(&p).is_some_and(|(_, r)| r >= 1) => Ok(Some(p)),
                Ok(p) => Err(format!("created, repaired: {:?}", counts(&p))),
                Err(err) => Err(err.to_string()),
            }
        }
    })
    .await?;
    assert_eq!(counts(&p), Some((6, 1)), "{}", describe_status(&p));
    let metrics = scrape_metrics().await?;
    let of = |metric: &str, labels: &[(&str, &str)]| {
        let mut all = vec![("profile", name.as_str())];
        all.extend_from_slice(labels);
        metric_sum(&metrics, metric, &all)
    };
    assert_eq!(
        of("rampart_repairs_total", &[("control", "networkpolicy")]),
        1.0
    );
    assert_eq!(of("rampart_objects_created_total", &[]), 6.0);
    let repaired = event_messages(&e.client, &name, "Repaired").await?;
    assert_eq!(
        repaired,
        vec![format!(
            "Repaired 1 object: NetworkPolicy {ns}/rampart-allow-dns (Missing)"
        )]
    );
    e.delete_profile(&name).await
}

#[tokio::test]
async fn audit_mode_reports_drift_and_writes_nothing() -> Result<()> {
    let e = Estate::new("audit", 1).await?;
    let ns = e.ns(0).to_string();
    e.deployment(&ns, "web", 3).await?;
    let name = e
        .apply_profile(e.profile_json(&format!("audit-{}", unique_id()), "Audit"))
        .await?;
    let p = e.wait_condition(&name, "Drifted", "True", CONVERGE).await?;
    let status = p.status.clone().context("status")?;
    // Audit's drift is its report, not work in progress: Ready (docs/gitops.md).
    assert_eq!(condition(&p, "Ready").as_deref(), Some("True"));
    let listed: Vec<(String, String)> = status
        .drift
        .iter()
        .map(|d| (d.name.clone(), d.reason.to_string()))
        .collect();
    for np in NETWORK_POLICY_NAMES {
        assert!(
            listed.contains(&(np.to_string(), "Missing".to_string())),
            "{np} must be listed as Missing: {listed:?}"
        );
    }
    assert!(
        listed.contains(&("rampart-deploy-web".to_string(), "Missing".to_string())),
        "{listed:?}"
    );
    assert_eq!(status.summary.as_ref().map(|s| s.drifted_objects), Some(6));

    // Give the operator time to (wrongly) act, then check it did not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        e.policy_names(&ns).await?.is_empty(),
        "Audit mode created policies"
    );
    assert!(
        e.pdb_names(&ns).await?.is_empty(),
        "Audit mode created budgets"
    );
    let metrics = scrape_metrics().await?;
    for verb in ["create", "apply", "delete"] {
        for kind in ["NetworkPolicy", "PodDisruptionBudget"] {
            assert_eq!(
                metric_sum(
                    &metrics,
                    "rampart_api_writes_total",
                    &[("profile", &name), ("kind", kind), ("verb", verb)]
                ),
                0.0,
                "{verb} {kind}"
            );
        }
    }

    // Switching to Enforce repairs what Audit reported.
    e.apply_profile(e.profile_json(&name, "Enforce")).await?;
    e.wait_condition(&name, "Ready", "True", CONVERGE).await?;
    e.wait_names(
        "policies after switching to Enforce",
        CONVERGE,
        &NETWORK_POLICY_NAMES,
        || e.policy_names(&ns),
    )
    .await?;
    e.delete_profile(&name).await
}

#[tokio::test]
async fn budgets_follow_scaling_user_budgets_and_drain_blockers() -> Result<()> {
    let e = Estate::new("scale", 1).await?;
    let ns = e.ns(0).to_string();
    e.deployment(&ns, "api", 3).await?;
    e.deployment(&ns, "worker", 2).await?;
    let name = e
        .apply_profile(e.profile_json(&format!("scale-{}", unique_id()), "Enforce"))
        .await?;
    e.wait_condition(&name, "Ready", "True", CONVERGE).await?;
    e.wait_names(
        "budgets for both workloads",
        CONVERGE,
        &["rampart-deploy-api", "rampart-deploy-worker"],
        || e.pdb_names(&ns),
    )
    .await?;

    let deployments = Api::<Deployment>::namespaced(e.client.clone(), &ns);
    let scale = |n: i32| json!({"spec": {"replicas": n}});
    deployments
        .patch("api", &PatchParams::default(), &Patch::Merge(scale(1)))
        .await?;
    e.wait_names(
        "the budget of a workload scaled to 1 to go",
        CONVERGE,
        &["rampart-deploy-worker"],
        || e.pdb_names(&ns),
    )
    .await?;
    deployments
        .patch("api", &PatchParams::default(), &Patch::Merge(scale(3)))
        .await?;
    e.wait_names(
        "the budget to return at 3 replicas",
        CONVERGE,
        &["rampart-deploy-api", "rampart-deploy-worker"],
        || e.pdb_names(&ns),
    )
    .await?;

    // A user's budget over the worker's pods: ours goes (two budgets on a pod break eviction)
    // and the status says why. With maxUnavailable 0 it also blocks drains.
    e.user_pdb(&ns, "team-worker", "worker", 0).await?;
    e.wait_names(
        "ours to step aside for the user's budget",
        CONVERGE,
        &["rampart-deploy-api", "team-worker"],
        || e.pdb_names(&ns),
    )
    .await?;
    let p = e
        .wait_condition(&name, "DrainBlocked", "True", CONVERGE)
        .await?;
    let status = p.status.clone().context("status")?;
    assert!(
        status
            .covered_by_user_budgets
            .iter()
            .any(|r| r.name == "worker"),
        "{:?}",
        status.covered_by_user_budgets
    );
    assert!(
        status
            .drain_blocking_budgets
            .iter()
            .any(|r| r.name == "team-worker"),
        "{:?}",
        status.drain_blocking_budgets
    );
    let metrics = scrape_metrics().await?;
    assert_eq!(
        metric_sum(
            &metrics,
            "rampart_drain_blocking_budgets",
            &[("profile", &name)]
        ),
        1.0
    );
    assert!(
        e.pdb_names(&ns).await?.contains(&"team-worker".to_string()),
        "the user's budget must stay"
    );
    e.delete_profile(&name).await
}

#[tokio::test]
async fn deselected_namespace_loses_rampart_objects_but_keeps_users() -> Result<()> {
    let e = Estate::new("desel", 2).await?;
    let (a, b) = (e.ns(0).to_string(), e.ns(1).to_string());
    e.user_network_policy(&a, "team-own").await?;
    let name = e
        .apply_profile(e.profile_json(&format!("desel-{}", unique_id()), "Enforce"))
        .await?;
    e.wait_condition(&name, "Ready", "True", CONVERGE).await?;
    let mut with_user: Vec<&str> = NETWORK_POLICY_NAMES.to_vec();
    with_user.push("team-own");
    e.wait_names("policies in a", CONVERGE, &with_user, || e.policy_names(&a))
        .await?;

    Api::<Namespace>::all(e.client.clone())
        .patch(
            &a,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"e2e.rampart.dev/run": "elsewhere"}}})),
        )
        .await?;
    e.wait_names(
        "only the user's policy once deselected",
        CONVERGE,
        &["team-own"],
        || e.policy_names(&a),
    )
    .await?;
    e.wait_names(
        "the other namespace untouched",
        CONVERGE,
        &NETWORK_POLICY_NAMES,
        || e.policy_names(&b),
    )
    .await?;
    e.wait_condition(&name, "Ready", "True", CONVERGE).await?;
    // Ready was True before the deselection too, and the status that counts one namespace is
    // written just after the deletes: wait for it rather than read the first one.
    let api = Api::<HardeningProfile>::all(e.client.clone());
    rampart_e2e::wait_for("the summary to count one namespace", CONVERGE, || {
        let (api, name) = (api.clone(), name.clone());
        async move {
            let p = api.get(&name).await.map_err(|e| e.to_string())?;
            match p.status.and_then(|s| s.summary).map(|s| s.namespaces) {
                Some(1) => Ok(Some(())),
                other => Err(format!("summary.namespaces {other:?}")),
            }
        }
    })
    .await?;
    e.delete_profile(&name).await
}

#[tokio::test]
async fn newer_overlapping_profile_reports_conflict_until_the_older_goes() -> Result<()> {
    let e = Estate::new("conflict", 1).await?;
    let ns = e.ns(0).to_string();
    let older = e
        .apply_profile(e.profile_json(&format!("older-{}", unique_id()), "Enforce"))
        .await?;
    let older_p = e.wait_condition(&older, "Ready", "True", CONVERGE).await?;
    // Creation timestamps have one-second resolution; make the order unambiguous.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newer = e
        .apply_profile(e.profile_json(&format!("newer-{}", unique_id()), "Enforce"))
        .await?;
    let p = e
        .wait_condition(&newer, "Conflict", "True", CONVERGE)
        .await?;
    let status = p.status.clone().context("status")?;
    assert!(
        status.conflicts.iter().all(|c| c.held_by == older),
        "{:?}",
        status.conflicts
    );
    let msg = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Conflict"))
        .map(|c| c.message.clone());
    assert!(
        msg.as_deref().is_some_and(|m| m.contains(&older)),
        "the Conflict message must name the older profile: {msg:?}"
    );
    let deny = Api::<NetworkPolicy>::namespaced(e.client.clone(), &ns)
        .get("rampart-default-deny")
        .await?;
    assert_eq!(
        deny.owner_references().first().map(|o| o.uid.clone()),
        older_p.metadata.uid.clone()
    );

    e.delete_profile(&older).await?;
    let newer_p = e.wait_condition(&newer, "Ready", "True", CONVERGE).await?;
    assert_eq!(condition(&newer_p, "Conflict").as_deref(), Some("False"));
    let np_api = Api::<NetworkPolicy>::namespaced(e.client.clone(), &ns);
    wait_until("the newer profile to own the policies", CONVERGE, || {
        let np_api = np_api.clone();
        let uid = newer_p.metadata.uid.clone();
        async move {
            let got = np_api.get_opt("rampart-default-deny").await.ok().flatten();
            let owner = got
                .as_ref()
                .and_then(|d| d.owner_references().first().map(|o| o.uid.clone()));
            (owner == uid, format!("owner uid {owner:?}"))
        }
    })
    .await?;
    e.delete_profile(&newer).await
}

#[tokio::test]
async fn converged_profile_makes_no_writes_for_a_minute() -> Result<()> {
    let e = Estate::new("quiet", 2).await?;
    e.deployment(e.ns(0), "web", 3).await?;
    e.statefulset(e.ns(1), "db", 2).await?;
    let name = e
        .apply_profile(e.profile_json(&format!("quiet-{}", unique_id()), "Enforce"))
        .await?;
    e.wait_condition(&name, "Ready", "True", CONVERGE).await?;
    // Let the last watch events of convergence settle before the quiet window starts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = metric_sum(
        &scrape_metrics().await?,
        "rampart_api_writes_total",
        &[("profile", &name)],
    );
    assert!(
        before > 0.0,
        "the profile's convergence writes must be counted"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = metric_sum(
        &scrape_metrics().await?,
        "rampart_api_writes_total",
        &[("profile", &name)],
    );
    assert_eq!(
        after,
        before,
        "a converged profile wrote {} times in 60 s",
        after - before
    );
    e.delete_profile(&name).await
}

/// A valid profile to break one field at a time.
fn base_profile(name: &str) -> Value {
    json!({
        "apiVersion": "rampart.dev/v1alpha1",
        "kind": "HardeningProfile",
        "metadata": {"name": name},
        "spec": {
            "mode": "Enforce",
            "namespaces": ["e2e-never-exists"],
            "networkPolicies": {"allowedNamespaces": ["kafka"], "monitoring": {"namespace": "observability", "ports": [9090]}},
            "podDisruptionBudgets": {"minReplicas": 2, "maxUnavailable": 1},
            "backups": {"schedule": "0 2 * * *", "pvcSelector": {"matchLabels": {"backup": "true"}}, "volumeSnapshotClassName": "csi-snapclass"}
        }
    })
}

fn set(mut v: Value, path: &[&str], value: Value) -> Value {
    let mut cur = &mut v;
    for p in &path[..path.len() - 1] {
        cur = &mut cur[*p];
    }
    cur[path[path.len() - 1]] = value;
    v
}

#[tokio::test]
async fn bad_profiles_are_refused_at_admission_naming_the_field() -> Result<()> {
    let c = client().await?;
    let api = Api::<HardeningProfile>::all(c.clone());
    let id = unique_id();
    let n = |i: usize| format!("bad-{id}-{i}");
    // (what is wrong, the profile, a piece of the API server's message that names the field)
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown mode",
            set(base_profile(&n(0)), &["spec", "mode"], json!("Sometimes")),
            "spec.mode",
        ),
        (
            "zero minReplicas",
            set(
                base_profile(&n(1)),
                &["spec", "podDisruptionBudgets", "minReplicas"],
                json!(0),
            ),
            "minReplicas",
        ),
        (
            "maxUnavailable 0",
            set(
                base_profile(&n(2)),
                &["spec", "podDisruptionBudgets", "maxUnavailable"],
                json!(0),
            ),
            "maxUnavailable",
        ),
        (
            "maxUnavailable 0%",
            set(
                base_profile(&n(3)),
                &["spec", "podDisruptionBudgets", "maxUnavailable"],
                json!("0%"),
            ),
            "maxUnavailable",
        ),
        (
            "port out of range",
            set(
                base_profile(&n(4)),
                &["spec", "networkPolicies", "monitoring", "ports"],
                json!([70000]),
            ),
            "ports",
        ),
        (
            "port zero",
            set(
                base_profile(&n(5)),
                &["spec", "networkPolicies", "monitoring", "ports"],
                json!([0]),
            ),
            "ports",
        ),
        (
            "bad CIDR",
            set(
                base_profile(&n(6)),
                &["spec", "networkPolicies", "egressCIDRs"],
                json!(["10.0.0.0/33"]),
            ),
            "egressCIDRs",
        ),
        (
            "duplicate namespaces",
            set(
                base_profile(&n(7)),
                &["spec", "namespaces"],
                json!(["a", "a"]),
            ),
            "namespaces",
        ),
        (
            "duplicate allowedNamespaces",
            set(
                base_profile(&n(8)),
                &["spec", "networkPolicies", "allowedNamespaces"],
                json!(["kafka", "kafka"]),
            ),
            "allowedNamespaces",
        ),
        (
            "bad namespace name",
            set(
                base_profile(&n(9)),
                &["spec", "namespaces"],
                json!(["Not_A_Name"]),
            ),
            "namespaces",
        ),
        (
            "In selector without values",
            set(
                base_profile(&n(10)),
                &["spec", "namespaceSelector"],
                json!({"matchExpressions": [{"key": "tier", "operator": "In"}]}),
            ),
            "matchExpressions",
        ),
        (
            "unknown selector operator",
            set(
                base_profile(&n(11)),
                &["spec", "namespaceSelector"],
                json!({"matchExpressions": [{"key": "tier", "operator": "Near", "values": ["a"]}]}),
            ),
            "operator",
        ),
        (
            "regenerated value too short",
            set(
                base_profile(&n(12)),
                &["spec", "secretRotation"],
                json!({"rotationId": "r1", "selector": {"matchLabels": {"a": "b"}}, "regenerate": [{"key": "password", "length": 4}]}),
            ),
            "length",
        ),
        (
            "exception expiry not a timestamp",
            set(
                base_profile(&n(13)),
                &["spec", "exceptions"],
                json!([{"namespace": "a", "control": "NetworkPolicies", "reason": "r", "expires": "next tuesday"}]),
            ),
            "expires",
        ),
        (
            "duplicate exception",
            set(
                base_profile(&n(14)),
                &["spec", "exceptions"],
                json!([{"namespace": "a", "control": "NetworkPolicies", "reason": "r"}, {"namespace": "a", "control": "NetworkPolicies", "reason": "s"}]),
            ),
            "exceptions",
        ),
        (
            "no namespaces at all",
            set(base_profile(&n(15)), &["spec", "namespaces"], json!([])),
            "namespaceSelector",
        ),
        (
            "no control enabled",
            json!({"apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile", "metadata": {"name": n(16)}, "spec": {"namespaces": ["a"]}}),
            "at least one control",
        ),
        (
            "negative retention",
            set(
                base_profile(&n(17)),
                &["spec", "backups", "retention"],
                json!({"maxCount": -1}),
            ),
            "maxCount",
        ),
        (
            "bad maxAge",
            set(
                base_profile(&n(18)),
                &["spec", "backups", "retention"],
                json!({"maxCount": 3, "maxAge": "7 days"}),
            ),
            "maxAge",
        ),
        (
            "unknown exception control",
            set(
                base_profile(&n(19)),
                &["spec", "exceptions"],
                json!([{"namespace": "a", "control": "Firewalls", "reason": "r"}]),
            ),
            "control",
        ),
        (
            "empty pvcSelector",
            set(
                base_profile(&n(20)),
                &["spec", "backups", "pvcSelector"],
                json!({}),
            ),
            "spec.backups.pvcSelector",
        ),
        (
            "empty secretRotation selector",
            set(
                base_profile(&n(21)),
                &["spec", "secretRotation"],
                json!({"rotationId": "r1", "selector": {"matchLabels": {}, "matchExpressions": []}}),
            ),
            "spec.secretRotation.selector",
        ),
        (
            "a name with dots",
            set(
                base_profile(&n(22)),
                &["metadata", "name"],
                json!(format!("bad.{id}.dots")),
            ),
            "metadata.name",
        ),
        (
            "a name over 63 characters",
            set(
                base_profile(&n(23)),
                &["metadata", "name"],
                json!(format!("bad-{id}-{}", "x".repeat(63))),
            ),
            "metadata.name",
        ),
    ];
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (what, profile, field) in &cases {
        let obj: HardeningProfile = match serde_json::from_value(profile.clone()) {
            Ok(o) => o,
            // Some bad values cannot even be typed in Rust; send them raw.
            Err(_) => {
                let raw = api
                    .patch(
                        profile["metadata"]["name"].as_str().unwrap_or("x"),
                        &PatchParams::apply("e2e"),
                        &Patch::Apply(profile),
                    )
                    .await;
                match raw {
                    Ok(_) => failures.push(format!("{what}: accepted")),
                    Err(e) if e.to_string().contains(field) => {}
                    Err(e) => failures.push(format!("{what}: refused without naming {field}: {e}")),
                }
                continue;
            }
        };
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(e) if e.to_string().contains(field) => {}
            Err(e) => failures.push(format!("{what}: refused without naming {field}: {e}")),
        }
    }
    for (_, profile, _) in &cases {
        if let Some(name) = profile["metadata"]["name"].as_str() {
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}

/// A profile whose check Job runs `spec` (one harmless container added when it has none).
fn with_check_job(name: &str, mut spec: Value) -> Value {
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "check", "image": "registry.example/checker:1"}]);
    }
    set(
        base_profile(name),
        &["spec", "backups", "verify"],
        json!({"schedule": "0 3 * * *", "job": {"template": {"spec": spec}}}),
    )
}

/// A check Job cannot escalate: each template the restricted Pod Security Standard refuses,
/// and each way out Rampart closes besides (a node, another ServiceAccount, a token, host
/// volumes), is refused by the API server with a message naming the field. A harmless one
/// is accepted, so the refusals are the rules' and not the schema's.
#[tokio::test]
async fn check_job_templates_that_could_escalate_are_refused_at_admission_naming_the_field(
) -> Result<()> {
    let c = client().await?;
    let api = Api::<HardeningProfile>::all(c.clone());
    let id = unique_id();
    let n = |i: usize| format!("escalate-{id}-{i}");
    let container = |sc: Value| json!([{"name": "check", "image": "registry.example/checker:1", "securityContext": sc}]);
    // (what, the pod spec, pieces of the API server's message that name the field)
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "privileged",
            json!({"containers": container(json!({"privileged": true}))}),
            &["spec.containers", "securityContext.privileged"],
        ),
        (
            "hostPath",
            json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
            &["spec.volumes", "hostPath"],
        ),
        (
            "hostNetwork",
            json!({"hostNetwork": true}),
            &["spec.hostNetwork"],
        ),
        ("hostPID", json!({"hostPID": true}), &["spec.hostPID"]),
        ("hostIPC", json!({"hostIPC": true}), &["spec.hostIPC"]),
        (
            "nodeName",
            json!({"nodeName": "kwok-node-0"}),
            &["spec.nodeName"],
        ),
        (
            "another ServiceAccount",
            json!({"serviceAccountName": "rampart"}),
            &["spec.serviceAccountName"],
        ),
        (
            "a token",
            json!({"automountServiceAccountToken": true}),
            &["spec.automountServiceAccountToken"],
        ),
        (
            "added capabilities",
            json!({"containers": container(json!({"capabilities": {"add": ["SYS_ADMIN"]}}))}),
            &["spec.containers", "capabilities.add"],
        ),
        (
            "runAsUser 0 in a container",
            json!({"containers": container(json!({"runAsUser": 0}))}),
            &["spec.containers", "securityContext.runAsUser"],
        ),
        (
            "runAsUser 0 for the pod",
            json!({"securityContext": {"runAsUser": 0}}),
            &["spec.securityContext.runAsUser"],
        ),
        (
            "privilege escalation",
            json!({"containers": container(json!({"allowPrivilegeEscalation": true}))}),
            &["spec.containers", "allowPrivilegeEscalation"],
        ),
        (
            "unconfined seccomp",
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            &["spec.securityContext.seccompProfile.type"],
        ),
        (
            "a host port",
            json!({"containers": [{"name": "check", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
            &["spec.containers", "hostPort"],
        ),
        (
            "a Secret volume",
            json!({"volumes": [{"name": "s", "secret": {"secretName": "db"}}]}),
            &["spec.volumes", "configMap, emptyDir"],
        ),
        (
            "a projected token",
            json!({"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]}),
            &["spec.volumes", "projected.sources"],
        ),
        (
            "a privileged init container",
            json!({"initContainers": container(json!({"privileged": true}))}),
            &["spec.initContainers", "securityContext.privileged"],
        ),
    ];
    assert!(cases.len() >= 8);
    let mut failures = Vec::new();
    for (i, (what, spec, fields)) in cases.iter().enumerate() {
        let profile: HardeningProfile =
            serde_json::from_value(with_check_job(&n(i), spec.clone()))?;
        match api.create(&PostParams::default(), &profile).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(e) => {
                let message = e.to_string();
                let prefixed = format!("spec.backups.verify.job.template.{}", fields[0]);
                if !message.contains(&prefixed) || !fields.iter().all(|f| message.contains(f)) {
                    failures.push(format!(
                        "{what}: refused without naming {fields:?}: {message}"
                    ));
                }
            }
        }
    }
    let harmless = with_check_job(
        &n(cases.len()),
        json!({
            "securityContext": {"runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": container(json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}})),
            "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "info", "projected": {"sources": [{"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}}],
        }),
    );
    let accepted = api
        .create(&PostParams::default(), &serde_json::from_value(harmless)?)
        .await;
    for i in 0..=cases.len() {
        let _ = api.delete(&n(i), &DeleteParams::default()).await;
    }
    if let Err(e) = accepted {
        failures.push(format!("a harmless template was refused: {e}"));
    }
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}

#[tokio::test]
async fn what_only_the_controller_can_check_gives_invalid_spec_naming_the_field() -> Result<()> {
    let e = Estate::new("invalid", 1).await?;
    let ns = e.ns(0).to_string();
    let mut profile = e.profile_json(&format!("invalid-{}", unique_id()), "Enforce");
    profile["spec"]["backups"] = json!({
        "schedule": "0 2 * * *",
        "timeZone": "Mars/Olympus_Mons",
        "pvcSelector": {"matchLabels": {"backup": "true"}},
        "volumeSnapshotClassName": "csi-snapclass"
    });
    profile["spec"]["exceptions"] = json!([{"namespace": ns, "control": "NetworkPolicies", "reason": "r", "expires": "2026-13-45T00:00:00Z"}]);
    profile["spec"]["namespaceSelector"]["matchLabels"]["bad key!"] = json!("x");
    let name = e.apply_profile(profile).await?;
    let p = e
        .wait_condition(&name, "InvalidSpec", "True", CONVERGE)
        .await?;
    let msg = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "InvalidSpec"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("spec.backups.timeZone"), "{msg}");
    assert!(msg.contains("spec.exceptions[0].expires"), "{msg}");
    assert!(msg.contains("spec.namespaceSelector.matchLabels"), "{msg}");
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        e.policy_names(&ns).await?.is_empty(),
        "an invalid profile must not act"
    );
    e.delete_profile(&name).await
}

/// The operator's own namespace is excluded from selection by label, as the control plane's
/// are: a profile whose selector matches it leaves it alone, and acts there only once it names
/// it in `namespaces`. The operator learns its namespace from `POD_NAMESPACE`, as the
/// manifests and the chart set it.
#[tokio::test]
async fn the_operators_own_namespace_is_selected_only_by_name() -> Result<()> {
    let e = Estate::new("ownns", 2).await?;
    let (own, other) = (e.ns(0).to_string(), e.ns(1).to_string());
    let tag = format!("ownns-{}", unique_id());
    let _op = OperatorProcess::launch(&OperatorLaunch {
        bin: repo_root().join("target/debug/rampart"),
        selector: format!("{DEDICATED_LABEL}={tag}"),
        extra: vec![],
        kubeconfig: kubeconfig_path(),
        log_name: format!("operator-{tag}"),
        env: vec![("POD_NAMESPACE".to_string(), own.clone())],
    })
    .await?;
    let name = format!("ownns-{}", unique_id());
    let mut profile = e.profile_json(&name, "Enforce");
    profile["metadata"]["labels"] = json!({DEDICATED_LABEL: tag});
    e.apply_profile(profile.clone()).await?;
    e.wait_names(
        "policies in the other namespace",
        CONVERGE,
        &NETWORK_POLICY_NAMES,
        || e.policy_names(&other),
    )
    .await?;
    let p = e.wait_condition(&name, "Ready", "True", CONVERGE).await?;
    assert_eq!(
        p.status
            .as_ref()
            .and_then(|s| s.summary.as_ref())
            .map(|s| s.namespaces),
        Some(1),
        "only the other namespace is selected: {}",
        describe_status(&p)
    );
    assert!(
        e.policy_names(&own).await?.is_empty(),
        "the operator's namespace is left alone"
    );

    profile["spec"]["namespaces"] = json!([own]);
    e.apply_profile(profile).await?;
    e.wait_names(
        "policies in the operator's namespace, named",
        CONVERGE,
        &NETWORK_POLICY_NAMES,
        || e.policy_names(&own),
    )
    .await?;
    delete_profile_and_wait(&e.client, &name).await
}
