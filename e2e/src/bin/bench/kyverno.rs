//! Kyverno beside Rampart: its admission controller and background controller run out of
//! cluster against the local plane (built by `e2e/tools/build-peers.sh`; the namespace,
//! ConfigMaps and RBAC they expect come from `e2e/peers/kyverno-setup.yaml`, applied by
//! `e2e/bench-peers.sh`), and ClusterPolicies that generate the same NetworkPolicies and
//! PodDisruptionBudgets as the bench profile.
//!
//! Out of cluster: the webhook is a URL on loopback (`--serverIP 127.0.0.1:<port>`), served
//! with the certificates Kyverno makes itself (its CA and pair Secrets in `kyverno`, with the
//! loopback IP in the SANs; the webhook configurations carry that CA). Both processes use one
//! client identity in `rampart:audited`, so the API server's audit log counts their writes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use rampart::api::{DisruptionBudgetControl, NetworkPolicyControl};
use rampart::controls::network_policies::desired_network_policies;
use serde_json::{json, Value};

use crate::common::{
    api_for, budget_ar, delete_labelled, network_policy_ar, proc_stats, ProcStats,
};
use crate::estate::{policies_and_budgets_profile, ESTATE_LABEL};

/// The namespace the setup creates; Kyverno keeps its certificates, leases and update
/// requests there.
pub const NAMESPACE: &str = "kyverno";
/// The client identity both processes use (its certificate is in `rampart:audited`). Kyverno
/// checks with a SubjectAccessReview that its background "service account" may write what a
/// generate rule makes; the setup binds this name to cluster-admin for that check.
pub const USER: &str = "kyverno-local";
/// The label on every object the Kyverno policies generate (in the rule's data), by run.
pub const PEER_LABEL: &str = "bench.rampart.dev/peer";
const CA_SECRET: &str = "kyverno-svc.kyverno.svc.kyverno-tls-ca";
const TLS_SECRET: &str = "kyverno-svc.kyverno.svc.kyverno-tls-pair";

/// The admission controller and the background controller, running; killed on drop, and
/// their webhook configurations removed (the API server would otherwise call a dead URL).
pub struct Kyverno {
    admission: Child,
    background: Child,
    client: Client,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(bin: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {} (make bench-peers builds it)", bin.display()))
}

impl Kyverno {
    /// Starts both from `peers_dir/bin` as the identity of `kubeconfig` and waits until the
    /// admission controller has registered its policy webhook and both hold their leases.
    pub async fn start(c: &Client, peers_dir: &Path, kubeconfig: &Path, tag: &str) -> Result<Self> {
        let logs = rampart_e2e::repo_root().join(".local/logs");
        std::fs::create_dir_all(&logs)?;
        let kc = format!("--kubeconfig={}", kubeconfig.display());
        let webhook_port = free_port()?;
        let common_env = [
            ("KYVERNO_NAMESPACE", NAMESPACE),
            ("KYVERNO_DEPLOYMENT", "kyverno-admission-controller"),
            ("INIT_CONFIG", "kyverno"),
            ("METRICS_CONFIG", "kyverno-metrics"),
        ];
        let env = |sa: &'static str, pod: &'static str| {
            let mut e = common_env.to_vec();
            e.push(("KYVERNO_SERVICEACCOUNT_NAME", sa));
            e.push(("KYVERNO_POD_NAME", pod));
            e
        };
        let admission = spawn(
            &peers_dir.join("bin/kyverno"),
            &[
                kc.clone(),
                format!("--serverIP=127.0.0.1:{webhook_port}"),
                "--webhookServerHost=127.0.0.1".into(),
                format!("--webhookServerPort={webhook_port}"),
                format!("--caSecretName={CA_SECRET}"),
                format!("--tlsSecretName={TLS_SECRET}"),
                format!("--backgroundServiceAccountName={USER}"),
                format!("--reportsServiceAccountName={USER}"),
                "--metricsHost=127.0.0.1".into(),
                format!("--metricsPort={}", free_port()?),
                "--controllerRuntimeMetricsAddress=0".into(),
            ],
            &env("kyverno-admission-controller", "kyverno-local-admission"),
            &logs.join(format!("kyverno-admission-{tag}.log")),
        )?;
        let background = spawn(
            &peers_dir.join("bin/background-controller"),
            &[
                kc,
                "--metricsHost=127.0.0.1".into(),
                format!("--metricsPort={}", free_port()?),
                "--controllerRuntimeMetricsAddress=0".into(),
            ],
            &env("kyverno-background-controller", "kyverno-local-background"),
            &logs.join(format!("kyverno-background-{tag}.log")),
        )?;
        let k = Self {
            admission,
            background,
            client: c.clone(),
        };
        k.wait_started(c, Duration::from_secs(300)).await?;
        Ok(k)
    }

    async fn wait_started(&self, c: &Client, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let webhooks = Api::<ValidatingWebhookConfiguration>::all(c.clone());
        let leases =
            Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c.clone(), NAMESPACE);
        loop {
            let hook = webhooks
                .get_opt("kyverno-policy-validating-webhook-cfg")
                .await?
                .is_some();
            let mut held = 0;
            for name in ["kyverno", "kyverno-background-controller"] {
                if leases
                    .get_opt(name)
                    .await?
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .is_some_and(|h| !h.is_empty())
                {
                    held += 1;
                }
            }
            if hook && held == 2 {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(anyhow!(
                    "Kyverno not started after {timeout:?} (policy webhook registered: {hook}, leases held: {held}/2); see .local/logs/kyverno-*.log"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Both processes' peak RSS, RSS and CPU, summed.
    pub fn stats(&self) -> ProcStats {
        proc_stats(self.admission.id()) + proc_stats(self.background.id())
    }

    fn kill(&mut self) {
        for child in [&mut self.admission, &mut self.background] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops both and removes the webhook configurations they registered.
    pub async fn stop(mut self) -> Result<()> {
        self.kill();
        remove_webhooks(&self.client).await
    }
}

impl Drop for Kyverno {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes every webhook configuration Kyverno registers (names start with `kyverno-`).
pub async fn remove_webhooks(c: &Client) -> Result<()> {
    let v = Api::<ValidatingWebhookConfiguration>::all(c.clone());
    for w in v.list_metadata(&ListParams::default()).await?.items {
        if w.name_any().starts_with("kyverno-") {
            let _ = v.delete(&w.name_any(), &DeleteParams::default()).await;
        }
    }
    let m = Api::<MutatingWebhookConfiguration>::all(c.clone());
    for w in m.list_metadata(&ListParams::default()).await?.items {
        if w.name_any().starts_with("kyverno-") {
            let _ = m.delete(&w.name_any(), &DeleteParams::default()).await;
        }
    }
    Ok(())
}

/// The ClusterPolicies for estate `estate` in run `run`: one with a generate rule per
/// NetworkPolicy the bench profile makes (triggered by the estate's Namespaces), one with a
/// generate rule per workload kind for the budgets (triggered by Deployments and
/// StatefulSets with at least `minReplicas`, unless a user's budget already selects the
/// workload's pods). All with `synchronize` and `generateExisting`. The objects' specs come
/// from Rampart's own pure functions, so both make the same objects (named `kyverno-…`
/// rather than `rampart-…`).
pub fn cluster_policies(run: &str, estate: &str) -> Result<Vec<Value>> {
    let profile = policies_and_budgets_profile("template", run, estate);
    let np: NetworkPolicyControl =
        serde_json::from_value(profile["spec"]["networkPolicies"].clone())?;
    let pdb: DisruptionBudgetControl =
        serde_json::from_value(profile["spec"]["podDisruptionBudgets"].clone())?;
    let peer_labels = json!({PEER_LABEL: run});
    let namespace_match = json!({"any": [{"resources": {"kinds": ["Namespace"], "selector": {"matchLabels": {ESTATE_LABEL: estate}}}}]});
    let policy_rules: Vec<Value> =
        desired_network_policies("template", &np, &Default::default(), "template")
            .into_iter()
            .map(|d| {
                let name = d.key.name.replacen("rampart-", "kyverno-", 1);
                json!({
                    "name": name,
                    "match": namespace_match,
                    "generate": {
                        "generateExisting": true, "synchronize": true,
                        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                        "name": name, "namespace": "{{request.object.metadata.name}}",
                        "data": {"metadata": {"labels": peer_labels}, "spec": d.manifest["spec"]}
                    }
                })
            })
            .collect();
    let max_unavailable = serde_json::to_value(&pdb.max_unavailable)?;
    let budget_rule = |kind: &str, prefix: &str| {
        json!({
            "name": format!("budget-{}", kind.to_lowercase()),
            "match": {"any": [{"resources": {"kinds": [kind], "namespaceSelector": {"matchLabels": {ESTATE_LABEL: estate}}}}]},
            // A user's budget selecting the same pods wins (two budgets on a pod break
            // eviction); judged like Rampart for the estate's selectors (matchLabels on app).
            "context": [{"name": "userBudgets", "apiCall": {
                "urlPath": "/apis/policy/v1/namespaces/{{request.object.metadata.namespace}}/poddisruptionbudgets",
                "jmesPath": format!("items[?!(metadata.labels.\"{PEER_LABEL}\") && spec.selector.matchLabels.app == '{{{{request.object.spec.template.metadata.labels.app}}}}'] | length(@)")}}],
            "preconditions": {"all": [
                {"key": "{{request.object.spec.replicas}}", "operator": "GreaterThanOrEquals", "value": pdb.min_replicas},
                {"key": "{{userBudgets}}", "operator": "Equals", "value": 0}
            ]},
            "generate": {
                "generateExisting": true, "synchronize": true,
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "name": format!("kyverno-{prefix}-{{{{request.object.metadata.name}}}}"),
                "namespace": "{{request.object.metadata.namespace}}",
                "data": {"metadata": {"labels": peer_labels}, "spec": {
                    "maxUnavailable": max_unavailable,
                    "selector": "{{request.object.spec.selector}}",
                    "unhealthyPodEvictionPolicy": "AlwaysAllow"}}
            }
        })
    };
    let meta = |name: String| json!({"name": name, "labels": {PEER_LABEL: run}});
    Ok(vec![
        json!({"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy",
               "metadata": meta(format!("bench-{run}-networkpolicies")),
               "spec": {"background": true, "rules": policy_rules}}),
        json!({"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy",
               "metadata": meta(format!("bench-{run}-budgets")),
               "spec": {"background": true, "rules": [budget_rule("Deployment", "deploy"), budget_rule("StatefulSet", "sts")]}}),
    ])
}

/// Applies the policies, retrying while Kyverno's policy webhook refuses (it can take a
/// moment after registration to serve).
pub async fn apply_policies(c: &Client, policies: &[Value]) -> Result<()> {
    let r = crate::common::resource_of(&policies[0])?;
    let api = api_for(c, None, &r);
    let start = Instant::now();
    for p in policies {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        loop {
            match api
                .patch(name, &PatchParams::apply("bench").force(), &Patch::Apply(p))
                .await
            {
                Ok(_) => break,
                Err(e) if start.elapsed() < Duration::from_secs(60) => {
                    eprintln!("  kyverno: policy {name} not accepted yet: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e).context(format!("applying ClusterPolicy {name}")),
            }
        }
    }
    Ok(())
}

/// Deletes the run's policies and whatever they generated.
pub async fn remove_policies(c: &Client, run: &str) -> Result<()> {
    let sel = format!("{PEER_LABEL}={run}");
    let r = crate::common::resource_of(
        &json!({"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy"}),
    )?;
    delete_labelled(c, &r, &sel).await?;
    delete_labelled(c, &network_policy_ar(), &sel).await?;
    delete_labelled(c, &budget_ar(), &sel).await?;
    Ok(())
}

/// Where `make bench-peers` put Kyverno: `BENCH_PEERS_DIR`, else the build script's answer.
pub fn peers_dir() -> Result<PathBuf> {
    if let Ok(d) = std::env::var("BENCH_PEERS_DIR") {
        return Ok(PathBuf::from(d));
    }
    let out = Command::new("bash")
        .arg(rampart_e2e::repo_root().join("e2e/tools/build-peers.sh"))
        .arg("--print")
        .output()?;
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}
