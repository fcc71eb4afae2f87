//! The Helm chart on the real control plane: it installs, its values schema refuses bad
//! values with its own message, and its ClusterRole is exactly the one in config/.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use rampart_e2e::{client, kubeconfig_path, repo_root, unique_id, TestNamespace};

fn helm_bin() -> PathBuf {
    let cache = std::env::var_os("RAMPART_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/rampart")
        });
    cache.join("k8s-v1.37.2/bin/helm")
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

#[tokio::test]
async fn chart_installs_hardened_on_the_control_plane() -> Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "chart", &[]).await?;
    let release = format!("chart-{}", unique_id());
    let (ok, out) = helm(&[
        "install",
        &release,
        "charts/rampart",
        "-n",
        &ns.name,
        "--set",
        "replicaCount=2",
        "--wait=false",
    ])?;
    assert!(ok, "helm install failed: {out}");
    let d = Api::<Deployment>::namespaced(c.clone(), &ns.name)
        .get(&release)
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
    let (ok, out) = helm(&["uninstall", &release, "-n", &ns.name])?;
    assert!(ok, "helm uninstall failed: {out}");
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

#[tokio::test]
async fn chart_cluster_role_is_the_one_in_config() -> Result<()> {
    let (ok, out) = helm(&[
        "template",
        "r",
        "charts/rampart",
        "--kube-version",
        "1.37.2",
        "--show-only",
        "templates/clusterrole.yaml",
    ])?;
    assert!(ok, "{out}");
    let chart: ClusterRole = serde_yaml::from_str(&out)?;
    let config: ClusterRole = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("config/rbac/cluster_role.yaml"),
    )?)?;
    assert_eq!(
        chart.rules, config.rules,
        "charts/rampart/templates/clusterrole.yaml and config/rbac/cluster_role.yaml differ"
    );
    for rule in config.rules.iter().flatten() {
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
    Ok(())
}
