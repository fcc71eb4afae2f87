//! The Helm chart on the real control plane: it installs hardened, `helm upgrade --wait`
//! rolls it out with one and with two replicas, it installs, upgrades and keeps the CRD, its
//! values schema refuses bad values with its own message and accepts a parent chart's
//! `global`, every alert has a `for:` and a runbook, and its ClusterRoles (the main one and
//! restore verification's, which `verification.enabled=false` leaves out) and admission policy
//! (left out by `admissionPolicy.enabled=false`) are exactly the ones in config/.
//!
//! Every test but the CRD one installs with `crds.install=false`: the CRD is cluster-wide and
//! only one release can own it, while the suites share the one `make test` applies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use rampart_e2e::{
    client, kubeconfig_path, repo_root, unique_id, wait_until, TestNamespace, DEDICATED_LABEL,
};

const CRD_NAME: &str = "hardeningprofiles.rampart.dev";

fn bin_dir() -> PathBuf {
    let cache = std::env::var_os("RAMPART_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/rampart")
        });
    cache.join("k8s-v1.37.2/bin")
}

fn helm_bin() -> PathBuf {
    bin_dir().join("helm")
}

/// Runs helm against the local control plane; (success, stdout + stderr).
fn helm(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(helm_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .current_dir(repo_root())
        .output()
        .with_context(|| {
            format!(
                "running {} (make controlplane builds it)",
                helm_bin().display()
            )
        })?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// A release that is uninstalled when dropped, so a failing test leaves no cluster-scoped
/// ClusterRole behind (its namespace goes with the test's `TestNamespace`).
struct Release {
    name: String,
    namespace: String,
}

impl Release {
    fn new(namespace: &str) -> Self {
        Self {
            // No "rampart" in it: the chart then names its objects `<release>-rampart`.
            name: format!("chart-{}", unique_id()),
            namespace: namespace.to_string(),
        }
    }

    /// What the chart names its objects.
    fn fullname(&self) -> String {
        format!("{}-rampart", self.name)
    }

    /// `helm <verb> <release> charts/rampart -n <namespace> <args>`.
    fn run(&self, verb: &str, args: &[&str]) -> Result<(bool, String)> {
        let mut all = vec![verb, &self.name, "charts/rampart", "-n", &self.namespace];
        all.extend_from_slice(args);
        helm(&all)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&[
            "uninstall",
            &self.name,
            "-n",
            &self.namespace,
            "--wait=false",
        ]);
    }
}

/// The chart's version, as its `helm.sh/chart` label carries it.
fn chart_label() -> Result<String> {
    let chart: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("charts/rampart/Chart.yaml"),
    )?)?;
    let version = chart["version"]
        .as_str()
        .context("Chart.yaml has no version")?;
    Ok(format!("rampart-{version}"))
}

#[tokio::test]
async fn chart_installs_hardened_on_the_control_plane() -> Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "chart", &[]).await?;
    let release = Release::new(&ns.name);
    let (ok, out) = release.run(
        "install",
        &[
            "--set",
            "crds.install=false",
            "--set",
            "replicaCount=2",
            "--wait=false",
        ],
    )?;
    assert!(ok, "helm install failed: {out}");
    let d = Api::<Deployment>::namespaced(c.clone(), &ns.name)
        .get(&release.fullname())
        .await?;
    let pod = d.spec.template.spec.context("pod spec")?;
    let sc = pod.security_context.context("pod securityContext")?;
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.seccomp_profile.map(|s| s.type_),
        Some("RuntimeDefault".to_string())
    );
    let container = &pod.containers[0];
    let csc = container
        .security_context
        .clone()
        .context("container securityContext")?;
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(
        csc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    assert!(
        container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some(),
        "limits are set"
    );
    assert!(
        container
            .args
            .iter()
            .flatten()
            .any(|a| a == "--leader-elect"),
        "two replicas need leader election"
    );
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let (ok, out) = helm(&["uninstall", &release.name, "-n", &ns.name])?;
    assert!(ok, "helm uninstall failed: {out}");
    Ok(())
}

/// `reports.enabled` runs the operator with `--reports`; off by default.
#[tokio::test]
async fn reports_value_sets_the_flag() -> Result<()> {
    let args = |sets: &[&str]| -> Result<Vec<String>> {
        let docs = render("templates/deployment.yaml", sets)?;
        let d: Deployment =
            serde_yaml::from_value(docs.into_iter().next().context("no Deployment")?)?;
        Ok(d.spec
            .template
            .spec
            .and_then(|p| p.containers.into_iter().next())
            .and_then(|c| c.args)
            .unwrap_or_default())
    };
    assert!(!args(&[])?.iter().any(|a| a == "--reports"));
    assert!(args(&["reports.enabled=true"])?
        .iter()
        .any(|a| a == "--reports"));
    Ok(())
}

#[tokio::test]
async fn bad_values_fail_with_the_schemas_message() -> Result<()> {
    for (set, field) in [
        ("replicaCount=-1", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        (
            "securityContext.readOnlyRootFilesystem=false",
            "readOnlyRootFilesystem",
        ),
        ("podSecurityContext.runAsUser=0", "runAsUser"),
        ("crds.install=maybe", "install"),
        ("reports.enabled=maybe", "enabled"),
        ("unknownValue=1", "unknownValue"),
    ] {
        let release = format!("chart-bad-{}", unique_id());
        let (ok, out) = helm(&[
            "install",
            &release,
            "charts/rampart",
            "-n",
            "default",
            "--dry-run=server",
            "--set",
            "crds.install=false",
            "--set",
            set,
        ])?;
        assert!(!ok, "helm accepted --set {set}");
        assert!(
            out.contains(field),
            "the refusal of {set} must name {field}: {out}"
        );
    }
    Ok(())
}

/// `helm template` of one of the chart's templates (release `r` in namespace `ops`), with
/// `--set` values, as the YAML documents it prints.
fn render(template: &str, sets: &[&str]) -> Result<Vec<serde_yaml::Value>> {
    let mut args = vec![
        "template",
        "r",
        "charts/rampart",
        "-n",
        "ops",
        "--kube-version",
        "1.37.2",
        "--show-only",
        template,
    ];
    for s in sets {
        args.extend_from_slice(&["--set", s]);
    }
    let (ok, out) = helm(&args)?;
    if !ok {
        // --show-only of a template that renders nothing is an error naming the template.
        if out.contains("could not find template") {
            return Ok(vec![]);
        }
        bail!("helm template {template}: {out}");
    }
    let mut docs = vec![];
    for doc in serde_yaml::Deserializer::from_str(&out) {
        let v = serde::Deserialize::deserialize(doc)?;
        if !matches!(v, serde_yaml::Value::Null) {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Every YAML document of a file in config/.
fn config_docs(path: &str) -> Result<Vec<serde_yaml::Value>> {
    let text = std::fs::read_to_string(repo_root().join(path))?;
    let mut docs = vec![];
    for doc in serde_yaml::Deserializer::from_str(&text) {
        docs.push(serde::Deserialize::deserialize(doc)?);
    }
    Ok(docs)
}

fn assert_least_privilege(role: &ClusterRole) {
    for rule in role.rules.iter().flatten() {
        assert!(
            !rule
                .verbs
                .iter()
                .any(|v| v == "*" || v == "escalate" || v == "bind" || v == "impersonate"),
            "{rule:?}"
        );
        assert!(
            !rule.resources.iter().flatten().any(|r| r == "*"),
            "{rule:?}"
        );
    }
}

/// config/ ships the role with the report verbs (`--reports` is a flag away); the chart
/// grants them only with `reports.enabled`.
#[tokio::test]
async fn chart_cluster_role_is_the_one_in_config() -> Result<()> {
    let role = |sets: &[&str]| -> Result<ClusterRole> {
        Ok(serde_yaml::from_value(
            render("templates/clusterrole.yaml", sets)?
                .pop()
                .context("no ClusterRole rendered")?,
        )?)
    };
    let chart = role(&["reports.enabled=true"])?;
    let grants_reports = |r: &ClusterRole| {
        r.rules.iter().flatten().any(|rule| {
            rule.api_groups
                .iter()
                .flatten()
                .any(|g| g == "openreports.io")
        })
    };
    assert!(
        !grants_reports(&role(&[])?),
        "the chart grants report verbs without reports.enabled"
    );
    let config: ClusterRole = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("config/rbac/cluster_role.yaml"),
    )?)?;
    assert_eq!(
        chart.rules, config.rules,
        "charts/rampart/templates/clusterrole.yaml and config/rbac/cluster_role.yaml differ"
    );
    assert_least_privilege(&config);
    Ok(())
}

/// An optional role of the chart (`template`, switched by `<value>.enabled`) is config/'s
/// (`config_role` and its binding), least privilege, bound to the release's account, and gone
/// with `<value>.enabled=false`.
fn optional_role_is_the_one_in_config(
    template: &str,
    config_role: &str,
    config_binding: &str,
    value: &str,
) -> Result<ClusterRole> {
    let docs = render(template, &[])?;
    assert_eq!(docs.len(), 2, "a ClusterRole and its binding: {docs:?}");
    let chart: ClusterRole = serde_yaml::from_value(docs[0].clone())?;
    let chart_binding: ClusterRoleBinding = serde_yaml::from_value(docs[1].clone())?;
    let config: ClusterRole = serde_yaml::from_value(config_docs(config_role)?.remove(0))?;
    let config_binding: ClusterRoleBinding =
        serde_yaml::from_value(config_docs(config_binding)?.remove(0))?;
    assert_eq!(
        chart.rules, config.rules,
        "{template} and {config_role} differ"
    );
    assert_least_privilege(&config);
    assert_eq!(
        chart_binding.role_ref.name,
        chart.metadata.name.clone().unwrap_or_default()
    );
    assert_eq!(
        config_binding.role_ref.name,
        config.metadata.name.clone().unwrap_or_default()
    );
    let subject = |b: &ClusterRoleBinding| {
        b.subjects
            .iter()
            .flatten()
            .map(|s| (s.kind.clone(), s.name.clone(), s.namespace.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        subject(&chart_binding),
        vec![(
            "ServiceAccount".to_string(),
            "r-rampart".to_string(),
            Some("ops".to_string())
        )]
    );
    assert_eq!(
        subject(&config_binding),
        vec![(
            "ServiceAccount".to_string(),
            "rampart".to_string(),
            Some("rampart-system".to_string())
        )]
    );
    assert!(
        render(template, &[&format!("{value}.enabled=false")])?.is_empty(),
        "{value}.enabled=false still renders {template}"
    );
    Ok(config)
}

/// Rotation hooks' verbs (a Job per rotated Secret, read back by name) are a role of their own,
/// the same in the chart and config/, and optional.
#[tokio::test]
async fn chart_rotation_hooks_role_is_the_one_in_config_and_optional() -> Result<()> {
    let role = optional_role_is_the_one_in_config(
        "templates/rotation-hooks-rbac.yaml",
        "config/rbac/rotation_hooks_cluster_role.yaml",
        "config/rbac/rotation_hooks_cluster_role_binding.yaml",
        "rotationHooks",
    )?;
    let rules = role.rules.unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules[0].verbs,
        vec!["get".to_string(), "create".to_string()]
    );
    Ok(())
}

/// Restore verification's verbs are a role of their own, the same in the chart and config/,
/// bound to the operator's account, and absent from the chart with `verification.enabled=false`.
#[tokio::test]
async fn chart_verification_role_is_the_one_in_config_and_optional() -> Result<()> {
    optional_role_is_the_one_in_config(
        "templates/verification-rbac.yaml",
        "config/rbac/verification_cluster_role.yaml",
        "config/rbac/verification_cluster_role_binding.yaml",
        "verification",
    )?;
    // The verbs only verification needs are in no other role.
    let core: ClusterRole =
        serde_yaml::from_value(config_docs("config/rbac/cluster_role.yaml")?.remove(0))?;
    for rule in core.rules.iter().flatten() {
        for r in rule.resources.iter().flatten() {
            assert!(
                ![
                    "jobs",
                    "pods",
                    "volumesnapshotcontents",
                    "resourcequotas",
                    "persistentvolumes",
                    "events"
                ]
                .contains(&r.as_str())
                    || rule
                        .api_groups
                        .iter()
                        .flatten()
                        .any(|g| g == "events.k8s.io"),
                "{r} in the main ClusterRole: {rule:?}"
            );
            if r == "persistentvolumeclaims" || r == "namespaces" {
                assert!(
                    !rule.verbs.iter().any(|v| v == "create" || v == "delete"),
                    "{rule:?}"
                );
            }
        }
    }
    Ok(())
}

/// The chart's admission policy is config/'s, matching the release's account instead of
/// rampart-system's, with the release's names; `admissionPolicy.enabled=false` leaves it out.
#[tokio::test]
async fn chart_admission_policy_is_the_one_in_config_and_optional() -> Result<()> {
    let chart = render("templates/admission-policy.yaml", &[])?;
    let config = config_docs("config/admission/admission_policy.yaml")?;
    assert_eq!(chart.len(), 2, "a policy and its binding: {chart:?}");
    assert_eq!(config.len(), 2);
    let text = |v: &serde_yaml::Value| serde_yaml::to_string(&v["spec"]).unwrap_or_default();
    assert_eq!(
        text(&chart[0]),
        text(&config[0]).replace(
            "system:serviceaccount:rampart-system:rampart",
            "system:serviceaccount:ops:r-rampart"
        ),
        "charts/rampart/templates/admission-policy.yaml and config/admission/ differ"
    );
    assert_eq!(chart[0]["metadata"]["name"], "r-rampart");
    assert_eq!(chart[1]["spec"]["policyName"], "r-rampart");
    assert_eq!(
        chart[1]["spec"]["validationActions"],
        config[1]["spec"]["validationActions"]
    );
    assert_eq!(
        config[1]["spec"]["policyName"],
        config[0]["metadata"]["name"]
    );
    assert!(render(
        "templates/admission-policy.yaml",
        &["admissionPolicy.enabled=false"]
    )?
    .is_empty());
    Ok(())
}

#[tokio::test]
async fn a_parent_charts_global_values_are_accepted() -> Result<()> {
    let release = format!("chart-global-{}", unique_id());
    let (ok, out) = helm(&[
        "install",
        &release,
        "charts/rampart",
        "-n",
        "default",
        "--dry-run=server",
        "--set",
        "crds.install=false",
        "--set",
        "global.foo=bar",
        "--set",
        "global.imageRegistry=registry.example.com",
    ])?;
    assert!(ok, "a subchart's global values were refused: {out}");
    Ok(())
}

/// `helm install --wait` then `helm upgrade --wait` with a change to the pod template, so the
/// upgrade is a real rollout. kwok runs the pods as fakes and marks them Ready, so this proves
/// the Deployment's rollout and the chart's objects, not the operator's probes.
async fn install_then_upgrade_rolls_out(replicas: i32) -> Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "chart-up", &[]).await?;
    let release = Release::new(&ns.name);
    let count = format!("replicaCount={replicas}");
    let (ok, out) = release.run(
        "install",
        &[
            "--set",
            "crds.install=false",
            "--set",
            &count,
            "--wait",
            "--timeout",
            "3m",
        ],
    )?;
    assert!(ok, "helm install --wait with {count} failed: {out}");
    let deployments = Api::<Deployment>::namespaced(c.clone(), &ns.name);
    let before = deployments.get(&release.fullname()).await?;

    let (ok, out) = release.run(
        "upgrade",
        &[
            "--set",
            "crds.install=false",
            "--set",
            &count,
            "--set-string",
            "podAnnotations.e2e\\.rampart\\.dev/rollout=2",
            "--wait",
            "--timeout",
            "3m",
        ],
    )?;
    assert!(ok, "helm upgrade --wait with {count} failed: {out}");
    // `--wait` returns once the new pods are ready; the old pod may still be terminating (and
    // counted ready) for a moment. The rollout is done when only the new pods are left.
    let name = release.fullname();
    let settled = |d: &Deployment| {
        d.status.as_ref().is_some_and(|s| {
            s.replicas == Some(replicas)
                && s.updated_replicas == Some(replicas)
                && s.ready_replicas == Some(replicas)
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut after = deployments.get(&name).await?;
    while !settled(&after) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        after = deployments.get(&name).await?;
    }
    assert!(
        after.metadata.generation > before.metadata.generation,
        "the upgrade changed the pod template"
    );
    let status = after.status.clone().context("Deployment status")?;
    assert_eq!(
        status.observed_generation, after.metadata.generation,
        "{status:?}"
    );
    assert_eq!(status.updated_replicas, Some(replicas), "{status:?}");
    assert_eq!(status.ready_replicas, Some(replicas), "{status:?}");
    let annotations = after
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    assert_eq!(
        annotations
            .get("e2e.rampart.dev/rollout")
            .map(String::as_str),
        Some("2")
    );

    let (ok, history) = helm(&["history", &release.name, "-n", &ns.name, "-o", "json"])?;
    assert!(ok, "{history}");
    let history: serde_json::Value = serde_json::from_str(history.trim())?;
    let statuses: Vec<&str> = history
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert_eq!(statuses, ["superseded", "deployed"], "{history}");
    let pdb_expected = replicas > 1;
    let (ok, manifest) = helm(&["get", "manifest", &release.name, "-n", &ns.name])?;
    assert!(ok, "{manifest}");
    assert_eq!(
        manifest.contains("kind: PodDisruptionBudget"),
        pdb_expected,
        "a PDB exactly when replicaCount > 1"
    );
    Ok(())
}

#[tokio::test]
async fn upgrade_with_one_replica_rolls_out() -> Result<()> {
    install_then_upgrade_rolls_out(1).await
}

#[tokio::test]
async fn upgrade_with_two_replicas_rolls_out() -> Result<()> {
    install_then_upgrade_rolls_out(2).await
}

/// The CRD is a template: the first install refuses a CRD it does not own (as the chart README
/// says an upgrade from 0.1.0 does), takes it once labelled and annotated as the README shows,
/// `helm upgrade` brings a stale served schema back to the chart's and adds new metadata, and
/// `helm uninstall` leaves it (crds.keep). The CRD is the one every suite uses: the test only
/// ever leaves it as crds/ defines it.
#[tokio::test]
async fn crd_is_upgraded_with_the_release_and_kept_on_uninstall() -> Result<()> {
    let c = client().await?;
    let crds = Api::<CustomResourceDefinition>::all(c.clone());
    let ns = TestNamespace::create(&c, "chart-crd", &[]).await?;
    let release = Release::new(&ns.name);

    if crds.get_opt(CRD_NAME).await?.is_some() {
        let (ok, out) = release.run("install", &["--wait=false"])?;
        assert!(
            !ok && out.contains("cannot be imported"),
            "a CRD the release does not own must be refused, not taken over: {out}"
        );
        let adopt = serde_json::json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": release.name,
                "meta.helm.sh/release-namespace": ns.name,
            },
        }});
        crds.patch(CRD_NAME, &PatchParams::default(), &Patch::Merge(&adopt))
            .await?;
    }
    let (ok, out) = release.run("install", &["--wait=false"])?;
    assert!(ok, "helm install with the CRD failed: {out}");
    let crd = crds.get(CRD_NAME).await?;
    let labels = crd.metadata.labels.clone().unwrap_or_default();
    let annotations = crd.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(labels.get("helm.sh/chart"), Some(&chart_label()?));
    assert_eq!(
        labels.get("app.kubernetes.io/instance"),
        Some(&release.name)
    );
    assert_eq!(
        annotations
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );

    // A cluster still serving an older schema: printer columns as chart 0.1.0 had them.
    let wide_columns = |crd: &CustomResourceDefinition| -> Vec<String> {
        crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority == Some(1))
            .map(|c| c.name.clone())
            .collect()
    };
    let mut stale = crds.get(CRD_NAME).await?;
    assert_eq!(wide_columns(&stale), ["Reason", "Message"]);
    if let Some(columns) = stale.spec.versions[0].additional_printer_columns.as_mut() {
        columns.retain(|c| c.priority != Some(1));
    }
    crds.replace(CRD_NAME, &PostParams::default(), &stale)
        .await?;
    assert!(wide_columns(&crds.get(CRD_NAME).await?).is_empty());

    let marker = unique_id();
    let set_marker = format!("crds.annotations.e2e\\.rampart\\.dev/upgraded={marker}");
    let (ok, out) = release.run("upgrade", &["--wait=false", "--set-string", &set_marker])?;
    assert!(ok, "helm upgrade failed: {out}");
    let upgraded = crds.get(CRD_NAME).await?;
    assert_eq!(
        wide_columns(&upgraded),
        ["Reason", "Message"],
        "helm upgrade restores the chart's schema"
    );
    let annotations = upgraded.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("e2e.rampart.dev/upgraded"), Some(&marker));
    let on_disk: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("crds/rampart.dev_hardeningprofiles.yaml"),
    )?)?;
    assert_eq!(
        upgraded.spec.versions[0].additional_printer_columns,
        on_disk.spec.versions[0].additional_printer_columns
    );
    assert_eq!(
        upgraded.spec.versions[0].schema, on_disk.spec.versions[0].schema,
        "the served schema is crds/'s"
    );

    let (ok, out) = helm(&["uninstall", &release.name, "-n", &ns.name, "--wait"])?;
    assert!(ok, "helm uninstall failed: {out}");
    assert!(
        out.contains("kept due to the resource policy") || out.contains(CRD_NAME),
        "helm says it kept the CRD: {out}"
    );
    // Give a deletion, if one were (wrongly) issued, time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = crds.get_opt(CRD_NAME).await?.context("the CRD is gone")?;
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the CRD is being deleted"
    );
    // Back to crds/'s metadata, so the release no longer looks like the CRD's owner.
    let release_metadata = serde_json::json!({"metadata": {
        "labels": {
            "app.kubernetes.io/managed-by": null, "app.kubernetes.io/instance": null,
            "app.kubernetes.io/name": null, "app.kubernetes.io/version": null,
            "helm.sh/chart": null,
        },
        "annotations": {
            "meta.helm.sh/release-name": null, "meta.helm.sh/release-namespace": null,
            "helm.sh/resource-policy": null, "e2e.rampart.dev/upgraded": null,
        },
    }});
    crds.patch(
        CRD_NAME,
        &PatchParams::default(),
        &Patch::Merge(&release_metadata),
    )
    .await?;
    Ok(())
}

/// `kubectl get hp -o wide` shows the Ready condition's reason and message, and the API server
/// refuses a status timestamp that is not RFC 3339 (`format: date-time`).
#[tokio::test]
async fn crd_shows_ready_reason_wide_and_refuses_bad_timestamps() -> Result<()> {
    use rampart::api::HardeningProfile;
    let c = client().await?;
    let name = format!("e2e-chart-wide-{}", unique_id());
    let profiles = Api::<HardeningProfile>::all(c.clone());
    // Labelled so the shared operator leaves it alone: the test writes the status itself.
    let profile: HardeningProfile = serde_json::from_value(serde_json::json!({
        "apiVersion": "rampart.dev/v1alpha1",
        "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: "chart-wide"}},
        "spec": {"mode": "Audit", "namespaces": ["e2e-none"], "networkPolicies": {}},
    }))?;
    profiles.create(&PostParams::default(), &profile).await?;
    let cleanup = ProfileCleanup(name.clone());

    let status = |time: &str| {
        serde_json::json!({"status": {"conditions": [{
            "type": "Ready", "status": "False", "reason": "ControlsPending",
            "message": "secret rotation is Restarting", "lastTransitionTime": time,
        }]}})
    };
    let refused = profiles
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&status("yesterday")),
        )
        .await;
    match refused {
        Err(kube::Error::Api(e)) => assert!(
            e.message.contains("lastTransitionTime") && e.message.contains("date-time"),
            "{e:?}"
        ),
        other => bail!("a non-RFC 3339 lastTransitionTime was accepted: {other:?}"),
    }
    profiles
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&status("2026-01-01T00:00:00Z")),
        )
        .await?;

    let kubectl = bin_dir().join("kubectl");
    wait_until("kubectl get hp -o wide", Duration::from_secs(30), || {
        let out = Command::new(&kubectl)
            .args(["get", "hp", &name, "-o", "wide", "--no-headers=false"])
            .env("KUBECONFIG", kubeconfig_path())
            .output();
        async move {
            match out {
                Ok(o) => {
                    let text = String::from_utf8_lossy(&o.stdout).to_string();
                    let header: Vec<&str> = text
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .split_whitespace()
                        .collect();
                    let ok = header.ends_with(&["REASON", "MESSAGE"])
                        && text.contains("ControlsPending")
                        && text.contains("secret rotation is Restarting");
                    (ok, text)
                }
                Err(e) => (false, e.to_string()),
            }
        }
    })
    .await?;
    drop(cleanup);
    Ok(())
}

/// Deletes a test's profile when dropped.
struct ProfileCleanup(String);

impl Drop for ProfileCleanup {
    fn drop(&mut self) {
        let name = self.0.clone();
        rampart_e2e::cleanup_from_drop(move |client| async move {
            let _ = Api::<rampart::api::HardeningProfile>::all(client)
                .delete(&name, &Default::default())
                .await;
        });
    }
}

/// Every alert waits (`for:`) before firing and links to its own section of docs/runbooks.md,
/// and every section there is an alert; the operator-down alert selects the chart's scrape
/// job. Rendering only: no cluster needed.
#[test]
fn every_alert_has_a_for_and_a_runbook_section() -> Result<()> {
    let base = "https://runbooks.example/rampart.md";
    let set_base = format!("prometheusRule.runbookBaseURL={base}");
    let (ok, out) = helm(&[
        "template",
        "ops",
        "charts/rampart",
        "--kube-version",
        "1.37.2",
        "-n",
        "rampart-system",
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        &set_base,
        "--show-only",
        "templates/prometheusrule.yaml",
    ])?;
    assert!(ok, "{out}");
    let rule: serde_yaml::Value = serde_yaml::from_str(&out)?;
    let runbooks = std::fs::read_to_string(repo_root().join("docs/runbooks.md"))?;
    let sections: Vec<&str> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .collect();
    let mut alerts = Vec::new();
    let mut exprs = BTreeMap::new();
    for group in rule["spec"]["groups"].as_sequence().into_iter().flatten() {
        for r in group["rules"].as_sequence().into_iter().flatten() {
            let alert = r["alert"].as_str().context("a rule without alert")?;
            assert!(r["for"].as_str().is_some(), "{alert} has no for:");
            assert_eq!(
                r["annotations"]["runbook_url"].as_str(),
                Some(format!("{base}#{}", alert.to_lowercase()).as_str()),
                "{alert}'s runbook_url"
            );
            assert!(
                sections.contains(&alert),
                "docs/runbooks.md has no `## {alert}` section"
            );
            exprs.insert(alert.to_string(), r["expr"].as_str().unwrap_or_default());
            alerts.push(alert.to_string());
        }
    }
    for s in &sections {
        assert!(
            alerts.iter().any(|a| a == s),
            "docs/runbooks.md has a section for {s}, which is no alert"
        );
    }
    assert_eq!(
        exprs.get("RampartOperatorDown").copied(),
        Some(r#"absent(up{job="ops-rampart-metrics",namespace="rampart-system"} == 1)"#)
    );
    Ok(())
}

/// The PrometheusRule's `spec` (Prometheus's own rule-file shape) rendered with `values`.
fn rendered_rules(values: Option<&std::path::Path>) -> Result<serde_yaml::Value> {
    let mut args = vec![
        "template",
        "ops",
        "charts/rampart",
        "--kube-version",
        "1.37.2",
        "-n",
        "rampart-system",
        "--set",
        "prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
    ];
    let path;
    if let Some(v) = values {
        path = v.display().to_string();
        args.extend(["-f", path.as_str()]);
    }
    let (ok, out) = helm(&args)?;
    assert!(ok, "{out}");
    let rule: serde_yaml::Value = serde_yaml::from_str(&out)?;
    Ok(rule["spec"].clone())
}

fn alert_names(rules: &serde_yaml::Value) -> Vec<String> {
    rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

/// Runs `promtool test rules` on `tests` (files in e2e/alerts/) against `rules`.
fn promtool_test(rules: &serde_yaml::Value, tests: &[&str]) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("rampart-alerts-{}", unique_id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("rules.yaml"), serde_yaml::to_string(rules)?)?;
    for t in tests {
        std::fs::copy(repo_root().join("e2e/alerts").join(t), dir.join(t))?;
    }
    let out = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .args(tests)
        .current_dir(&dir)
        .output()
        .context("running promtool (Debian's prometheus package; .ci/run installs it)")?;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "promtool test rules {tests:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Every alert the chart renders has a `promtool test rules` case that fires it
/// (e2e/alerts/default.test.yaml and stale.test.yaml, which also show an Audit profile with
/// drift, not Ready and with old snapshots fires nothing), and the values override
/// severity, `for:`, labels, maxAge and the selector and switch an alert off
/// (overrides.test.yaml). Rendering and promtool only: no cluster needed.
#[test]
fn promtool_tests_fire_every_alert_spare_audit_profiles_and_follow_the_values() -> Result<()> {
    let defaults = rendered_rules(None)?;
    let names = alert_names(&defaults);
    assert!(names.len() >= 11, "{names:?}");
    let cases = ["default.test.yaml", "stale.test.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(repo_root().join("e2e/alerts").join(f)))
        .collect::<std::io::Result<Vec<_>>>()?
        .join("\n");
    for name in &names {
        // A case that expects it to fire names it beside a non-empty exp_alerts.
        let fires = cases.split("alertname: ").skip(1).any(|c| {
            c.starts_with(&format!("{name}\n"))
                && c.split("\n")
                    .nth(1)
                    .is_some_and(|l| l.trim() == "exp_alerts:")
        });
        assert!(fires, "no promtool case in e2e/alerts fires {name}");
    }
    promtool_test(&defaults, &["default.test.yaml", "stale.test.yaml"])?;

    let overridden = rendered_rules(Some(&repo_root().join("e2e/alerts/overrides.values.yaml")))?;
    let names = alert_names(&overridden);
    assert!(
        !names.iter().any(|n| n == "RampartDrainBlocked"),
        "a disabled alert is rendered: {names:?}"
    );
    assert!(names.iter().any(|n| n == "RampartDriftPersists"));
    promtool_test(&overridden, &["overrides.test.yaml"])
}

/// The Grafana dashboard: `$datasource` and `$profile` variables, every panel and query on
/// `$datasource`, the profile panels filtered by `$profile`, panels for rotation,
/// verification and errors (API requests by code), and every query valid PromQL (checked by
/// `promtool check rules` with each as a recording rule). Rendering only: no cluster needed.
#[test]
fn dashboard_has_datasource_and_profile_variables_and_valid_queries() -> Result<()> {
    let (ok, out) = helm(&[
        "template",
        "ops",
        "charts/rampart",
        "--kube-version",
        "1.37.2",
        "--set",
        "grafanaDashboard.enabled=true",
        "--show-only",
        "templates/grafana-dashboard.yaml",
    ])?;
    assert!(ok, "{out}");
    let cm: serde_yaml::Value = serde_yaml::from_str(&out)?;
    let json = cm["data"]["rampart.json"]
        .as_str()
        .context("no rampart.json")?;
    let dash: serde_json::Value = serde_json::from_str(json)?;
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, vec!["datasource", "profile"]);
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().context("no panels")? {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {title}");
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {title}");
            let e = t["expr"].as_str().context("a target without expr")?;
            if e.contains("profile") && !e.contains("profile=~\"$profile\"") {
                panic!("panel {title} groups by profile but does not filter by $profile: {e}");
            }
            exprs.push(e.to_string());
        }
    }
    let all = exprs.join("\n");
    for metric in [
        "rampart_secrets_rotated_total",
        "rampart_workloads_restarted_total",
        "rampart_rotation_stalled",
        "rampart_backup_last_verified_timestamp_seconds",
        "rampart_backup_verifications_failed_total",
        "rampart_api_requests_total{code!~",
        "rampart_reconcile_errors_total",
        "rampart_profile_condition",
        "rampart_objects_created_total",
    ] {
        assert!(all.contains(metric), "no panel reads {metric}");
    }
    // Each query as a recording rule: promtool parses it ($profile stands for a regex).
    let rules = serde_json::json!({"groups": [{"name": "dashboard", "rules": exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:q{i}"), "expr": e.replace("$profile", ".*")}))
        .collect::<Vec<_>>()}]});
    let file = std::env::temp_dir().join(format!("rampart-dashboard-{}.json", unique_id()));
    std::fs::write(&file, serde_json::to_string(&rules)?)?;
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .context("running promtool")?;
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "dashboard queries that do not parse:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The roles for people are the same in the chart and config/: reading profiles is aggregated
/// into view, edit and admin; writing them into nothing; neither reaches the status or the
/// finalizers, and the chart leaves both out with `profileRoles.enabled=false`.
#[tokio::test]
async fn profile_roles_are_the_ones_in_config_and_writing_is_granted_by_name_only() -> Result<()> {
    let chart: Vec<ClusterRole> = render("templates/profile-roles.yaml", &[])?
        .into_iter()
        .map(serde_yaml::from_value)
        .collect::<Result<_, _>>()?;
    let config: Vec<ClusterRole> = config_docs("config/rbac/profile_roles.yaml")?
        .into_iter()
        .map(serde_yaml::from_value)
        .collect::<Result<_, _>>()?;
    assert_eq!(chart.len(), 2);
    assert_eq!(config.len(), 2);
    let aggregated = |r: &ClusterRole| -> Vec<String> {
        let mut to: Vec<String> = r
            .metadata
            .labels
            .iter()
            .flatten()
            .filter(|(k, v)| {
                k.starts_with("rbac.authorization.k8s.io/aggregate-to-") && v.as_str() == "true"
            })
            .map(|(k, _)| {
                k.trim_start_matches("rbac.authorization.k8s.io/aggregate-to-")
                    .to_string()
            })
            .collect();
        to.sort();
        to
    };
    for (c, k) in chart.iter().zip(&config) {
        assert_eq!(
            c.rules, k.rules,
            "the chart's and config/'s profile roles differ"
        );
        assert_eq!(aggregated(c), aggregated(k));
    }
    let writes = |r: &ClusterRole| {
        r.rules.iter().flatten().any(|rule| {
            rule.verbs
                .iter()
                .any(|v| ["create", "update", "patch", "delete"].contains(&v.as_str()))
        })
    };
    for role in &config {
        let name = role.metadata.name.clone().unwrap_or_default();
        let resources: Vec<&String> = role
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.resources.iter().flatten())
            .collect();
        assert_eq!(
            resources,
            vec!["hardeningprofiles"],
            "{name}: no status, no finalizers"
        );
        if writes(role) {
            assert!(
                aggregated(role).is_empty(),
                "{name} writes and is aggregated"
            );
        } else {
            assert_eq!(aggregated(role), vec!["admin", "edit", "view"], "{name}");
        }
    }
    assert!(render(
        "templates/profile-roles.yaml",
        &["profileRoles.enabled=false"]
    )?
    .is_empty());
    Ok(())
}
