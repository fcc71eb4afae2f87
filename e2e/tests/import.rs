//! `rampart import kyverno` on the bench's own Kyverno setup (e2e/peers/kyverno-setup.yaml and
//! the ClusterPolicies the bench applies, printed by `bench` with BENCH_PRINT_KYVERNO_POLICIES):
//! the imported profile, applied in Enforce on an estate, converges to the objects those
//! Kyverno rules would generate there. Kyverno itself does not run: what it would make is
//! derived from each rule's `data` for the namespace and its workloads, and compared with what
//! Rampart made, semantically (pod selector, policy types, peers, ports; budget selector,
//! maxUnavailable, eviction policy), since the names differ (kyverno-* against rampart-*).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::{Api, Client};
use rampart_e2e::apps::{create_all, App};
use rampart_e2e::{
    client, delete_profile_and_wait, repo_root, unique_id, wait_condition, wait_until,
    OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(90);
/// The label the bench's ClusterPolicies select namespaces by (e2e/src/bin/bench/estate.rs).
const ESTATE_LABEL: &str = "bench.rampart.dev/estate";

/// The bench's ClusterPolicies for `estate`, as the bench prints them (JSON documents between
/// `---` lines, which YAML reads as they are).
fn bench_policies(estate: &str) -> Result<String> {
    let bench = repo_root().join("target/debug/bench");
    let out = Command::new(&bench)
        .env("BENCH_PRINT_KYVERNO_POLICIES", estate)
        .output()
        .with_context(|| {
            format!(
                "running {} (cargo build -p rampart-e2e --bin bench)",
                bench.display()
            )
        })?;
    if !out.status.success() {
        bail!("bench: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs `rampart import kyverno` on the files; returns (profile YAML, report on stderr).
fn import(files: &[&std::path::Path], name: &str) -> Result<(String, String)> {
    let mut cmd = Command::new(rampart_e2e::operator_bin());
    cmd.args(["import", "kyverno", "--name", name, "--mode", "enforce"]);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd.output().context("running rampart import kyverno")?;
    let stderr = String::from_utf8(out.stderr)?;
    if !out.status.success() {
        bail!("rampart import kyverno failed: {stderr}");
    }
    Ok((String::from_utf8(out.stdout)?, stderr))
}

/// A NetworkPolicy spec in a canonical form: defaults the API server fills made explicit, and
/// every list whose order carries no meaning sorted.
fn canonical_policy(spec: &Value) -> Result<String> {
    let s: NetworkPolicySpec = serde_json::from_value(spec.clone())?;
    let sort = |v: &mut Vec<Value>| v.sort_by_key(|x| x.to_string());
    let mut out = serde_json::to_value(s)?;
    if let Some(types) = out["policyTypes"].as_array_mut() {
        sort(types);
    }
    for dir in ["ingress", "egress"] {
        let peers_key = if dir == "ingress" { "from" } else { "to" };
        if let Some(rules) = out[dir].as_array_mut() {
            for r in rules.iter_mut() {
                if let Some(ports) = r["ports"].as_array_mut() {
                    for p in ports.iter_mut() {
                        if p.get("protocol").is_none() {
                            p["protocol"] = json!("TCP");
                        }
                    }
                    sort(ports);
                }
                if let Some(peers) = r[peers_key].as_array_mut() {
                    sort(peers);
                }
            }
            sort(rules);
        }
    }
    // An empty rule list and none mean the same (no traffic allowed in a listed direction);
    // the API server stores the second.
    for dir in ["ingress", "egress"] {
        if out[dir] == json!([]) {
            out[dir] = Value::Null;
        }
    }
    if out["podSelector"] == json!({"matchLabels": {}}) {
        out["podSelector"] = json!({});
    }
    Ok(out.to_string())
}

/// The budget fields a generate rule sets, for comparison.
fn budget_fields(spec: &Value) -> Value {
    json!({
        "maxUnavailable": spec["maxUnavailable"],
        "selector": spec["selector"],
        "unhealthyPodEvictionPolicy": spec["unhealthyPodEvictionPolicy"],
    })
}

/// What the bench's Kyverno rules would generate in `ns` holding `workloads` (kind, manifest):
/// NetworkPolicy specs, and budget fields keyed by workload.
fn kyverno_would_make(
    policies: &[Value],
    workloads: &[(&str, Value)],
) -> Result<(Vec<String>, BTreeMap<String, Value>)> {
    let mut policies_out = Vec::new();
    let mut budgets = BTreeMap::new();
    for p in policies {
        for rule in p["spec"]["rules"].as_array().into_iter().flatten() {
            let g = &rule["generate"];
            match g["kind"].as_str() {
                Some("NetworkPolicy") => policies_out.push(canonical_policy(&g["data"]["spec"])?),
                Some("PodDisruptionBudget") => {
                    let kinds = &rule["match"]["any"][0]["resources"]["kinds"];
                    let floor = rule["preconditions"]["all"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|c| c["key"] == "{{request.object.spec.replicas}}")
                        .and_then(|c| c["value"].as_i64())
                        .context("the budget rule's replica precondition")?;
                    for (kind, w) in workloads {
                        let replicas = w["spec"]["replicas"].as_i64().unwrap_or(1);
                        if kinds.as_array().is_some_and(|k| k.contains(&json!(kind)))
                            && replicas >= floor
                        {
                            let mut spec = g["data"]["spec"].clone();
                            spec["selector"] = w["spec"]["selector"].clone();
                            budgets.insert(
                                format!(
                                    "{kind}/{}",
                                    w["metadata"]["name"].as_str().unwrap_or_default()
                                ),
                                budget_fields(&spec),
                            );
                        }
                    }
                }
                other => bail!("the bench's policies generate {other:?}"),
            }
        }
    }
    policies_out.sort();
    Ok((policies_out, budgets))
}

/// What Rampart made in `ns`: NetworkPolicy specs, and budget fields keyed by the workload
/// named in the budget (rampart-deploy-<name>, rampart-sts-<name>).
async fn rampart_made(c: &Client, ns: &str) -> Result<(Vec<String>, BTreeMap<String, Value>)> {
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=rampart");
    let mut policies = Vec::new();
    for np in Api::<NetworkPolicy>::namespaced(c.clone(), ns)
        .list(&lp)
        .await?
    {
        policies.push(canonical_policy(&serde_json::to_value(np.spec)?)?);
    }
    policies.sort();
    let mut budgets = BTreeMap::new();
    for b in Api::<PodDisruptionBudget>::namespaced(c.clone(), ns)
        .list(&lp)
        .await?
    {
        let name = b.metadata.name.clone().unwrap_or_default();
        let key = if let Some(w) = name.strip_prefix("rampart-deploy-") {
            format!("Deployment/{w}")
        } else if let Some(w) = name.strip_prefix("rampart-sts-") {
            format!("StatefulSet/{w}")
        } else {
            name
        };
        budgets.insert(key, budget_fields(&serde_json::to_value(b.spec)?));
    }
    Ok((policies, budgets))
}

#[tokio::test]
async fn imported_bench_setup_converges_to_what_kyverno_would_make() -> Result<()> {
    let c = client().await?;
    let id = unique_id();
    let estate = format!("import-{id}");
    let tag = format!("import-{id}");

    let dir = repo_root().join(format!(".local/import-{id}"));
    std::fs::create_dir_all(&dir)?;
    let policies_text = bench_policies(&estate)?;
    let policies_file = dir.join("bench-policies.yaml");
    std::fs::write(&policies_file, &policies_text)?;
    let setup = repo_root().join("e2e/peers/kyverno-setup.yaml");
    let name = format!("imported-{id}");
    let (yaml, report) = import(&[&setup, &policies_file], &name)?;
    std::fs::write(dir.join("profile.yaml"), &yaml)?;
    // Every rule of the bench maps, and nothing maps with a difference: the bench's Kyverno
    // setup makes what a profile makes.
    let policies: Vec<Value> = rampart::import::kyverno::documents(&policies_text)?;
    let rules: usize = policies
        .iter()
        .map(|p| p["spec"]["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        report.lines().next().unwrap_or_default(),
        format!("{rules} generate rules read, {rules} mapped (wholly or in part); 0 findings not mapped, 0 mapped with a difference"),
        "{report}"
    );
    assert!(
        report.contains("ignored"),
        "the setup's objects are listed as ignored: {report}"
    );

    let mut profile: Value = serde_yaml::from_str(&yaml)?;
    profile["metadata"]["labels"] = json!({DEDICATED_LABEL: tag});

    let selected = TestNamespace::create(&c, "import", &[(ESTATE_LABEL, &estate)]).await?;
    let other = TestNamespace::create(&c, "import-other", &[]).await?;
    let web = App::new("web", 3).deployment();
    let solo = App::new("solo", 1).deployment();
    let db = App::new("db", 2).statefulset();
    create_all(&c, &selected.name, &[web.clone(), solo.clone(), db.clone()]).await?;
    let workloads = [
        ("Deployment", web),
        ("Deployment", solo),
        ("StatefulSet", db),
    ];
    let (want_policies, want_budgets) = kyverno_would_make(&policies, &workloads)?;
    assert_eq!(
        want_budgets.len(),
        2,
        "web and db, not the single replica: {want_budgets:?}"
    );

    let op = OperatorProcess::start(&tag).await?;
    rampart_e2e::apply_profile(&c, profile).await?;
    wait_condition(&c, &name, "Ready", "True", TIMEOUT).await?;
    let want = (want_policies, want_budgets);
    wait_until(
        "Rampart's objects to match what Kyverno's rules would make",
        TIMEOUT,
        || {
            let c = c.clone();
            let ns = selected.name.clone();
            let want = want.clone();
            async move {
                match rampart_made(&c, &ns).await {
                    Ok(made) => (
                        made == want,
                        format!("Kyverno would make {want:#?}\nRampart made {made:#?}"),
                    ),
                    Err(e) => (false, e.to_string()),
                }
            }
        },
    )
    .await?;
    let (in_other, budgets_in_other) = rampart_made(&c, &other.name).await?;
    assert!(
        in_other.is_empty() && budgets_in_other.is_empty(),
        "the unlabelled namespace is left alone"
    );

    delete_profile_and_wait(&c, &name).await?;
    drop(op);
    Ok(())
}
