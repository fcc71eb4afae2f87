//! Reports for dashboards, end to end: with `--reports` and the OpenReports CRDs installed
//! (from the Go module that ships them, `install_openreports_crds` in e2e/lib.sh), one Report
//! per profile and selected namespace appears, follows drift in Audit and its repair in
//! Enforce, is not rewritten while nothing changes, and goes with its namespace and its
//! profile (through Rampart's cleanup, and through garbage collection when the operator is
//! gone). On a cluster without the CRDs the operator runs as before, and reports start when
//! the CRDs arrive, without a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind, ObjectMeta};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart_e2e::second_plane::SecondPlane;
use rampart_e2e::{
    apply_profile, client, client_from, delete_profile_and_wait, is_ready, kubeconfig_path,
    metric_sum, repo_root, scrape, unique_id, wait_condition, wait_for, wait_until, OperatorLaunch,
    OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);

fn report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report"),
        "reports",
    )
}

fn reports_in(c: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(c.clone(), ns, &report_resource())
}

/// `install_openreports_crds` from e2e/lib.sh against the plane of `kubeconfig`.
fn install_openreports_crds(kubeconfig: &Path) -> Result<()> {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("source e2e/lib.sh && install_openreports_crds \"$1\"")
        .arg("install_openreports_crds")
        .arg(kubeconfig)
        .current_dir(repo_root())
        .output()?;
    if !out.status.success() {
        bail!(
            "install_openreports_crds: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The profile's report in `ns`, if there is one.
async fn report(c: &Client, ns: &str, profile: &str) -> Option<DynamicObject> {
    reports_in(c, ns)
        .get_opt(&format!("rampart-{profile}"))
        .await
        .ok()
        .flatten()
}

/// The result a report gives `policy` (a control), and the names of the resources it lists.
fn result_of(report: &DynamicObject, policy: &str) -> Option<(String, Vec<String>)> {
    let r = report.data["results"]
        .as_array()?
        .iter()
        .find(|r| r["policy"] == policy)?;
    let names = r["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["name"].as_str().map(str::to_string))
        .collect();
    Some((r["result"].as_str()?.to_string(), names))
}

/// Waits until the profile's report in `ns` gives `policy` the result `want` with `names`.
async fn wait_result(
    c: &Client,
    ns: &str,
    profile: &str,
    policy: &str,
    want: &str,
    names: &[&str],
) -> Result<DynamicObject> {
    wait_for(
        &format!("{policy} {want} {names:?} in the report in {ns}"),
        TIMEOUT,
        || async {
            let r = report(c, ns, profile).await.ok_or("no report")?;
            let got = result_of(&r, policy);
            if got
                .as_ref()
                .is_some_and(|(res, n)| res == want && n == names)
            {
                Ok(Some(r))
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await
}

fn profile(name: &str, tag: &str, run: &str, mode: &str) -> Value {
    json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: tag}},
        "spec": {
            "mode": mode,
            "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": run}},
            "networkPolicies": {},
        }
    })
}

async fn set_mode(c: &Client, name: &str, mode: &str) -> Result<()> {
    Api::<HardeningProfile>::all(c.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": mode}})),
        )
        .await?;
    Ok(())
}

/// Report writes the operator made for `profile`, from its metrics.
async fn report_writes(op: &OperatorProcess, profile: &str) -> Result<f64> {
    Ok(metric_sum(
        &scrape(&op.metrics_addr).await?,
        "rampart_api_writes_total",
        &[("profile", profile), ("kind", "Report")],
    ))
}

async fn reconciles(op: &OperatorProcess) -> Result<f64> {
    Ok(metric_sum(
        &scrape(&op.metrics_addr).await?,
        "rampart_reconciles_total",
        &[],
    ))
}

#[tokio::test]
async fn reports_follow_drift_and_repair_and_go_with_the_namespace_and_the_profile() -> Result<()> {
    install_openreports_crds(&kubeconfig_path())?;
    let c = client().await?;
    let id = unique_id();
    let run = format!("reports-{id}");
    let tag = format!("reports-{id}");
    let labels = [("e2e.rampart.dev/run", run.as_str())];
    let a = TestNamespace::create(&c, "reports-a", &labels).await?;
    let b = TestNamespace::create(&c, "reports-b", &labels).await?;
    let op = OperatorProcess::start_with(&tag, &["--reports"]).await?;
    let name = apply_profile(&c, profile(&format!("reports-{id}"), &tag, &run, "Enforce")).await?;
    wait_condition(&c, &name, "Ready", "True", TIMEOUT).await?;

    // One report per selected namespace, every enabled control passing.
    for ns in [&a.name, &b.name] {
        let r = wait_result(&c, ns, &name, "NetworkPolicies", "pass", &[]).await?;
        assert_eq!(r.data["source"], "rampart");
        assert_eq!(
            r.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("rampart")
        );
        assert_eq!(
            r.labels().get("rampart.dev/profile"),
            Some(&name),
            "{:?}",
            r.labels()
        );
        assert_eq!(
            r.data["summary"],
            json!({"pass": 1, "fail": 0, "warn": 0, "error": 0, "skip": 3})
        );
        assert!(
            r.owner_references()
                .iter()
                .any(|o| o.kind == "HardeningProfile" && o.name == name),
            "owned by the profile: {:?}",
            r.owner_references()
        );
    }

    // Audit: a deleted managed policy fails that namespace's NetworkPolicies result, by name.
    set_mode(&c, &name, "Audit").await?;
    wait_condition(&c, &name, "Ready", "True", TIMEOUT)
        .await
        .ok();
    Api::<NetworkPolicy>::namespaced(c.clone(), &a.name)
        .delete("rampart-default-deny", &DeleteParams::default())
        .await?;
    let failed = wait_result(
        &c,
        &a.name,
        &name,
        "NetworkPolicies",
        "fail",
        &["rampart-default-deny"],
    )
    .await?;
    assert_eq!(failed.data["summary"]["fail"], 1);
    let untouched = report(&c, &b.name, &name).await.context("report in b")?;
    assert_eq!(
        result_of(&untouched, "NetworkPolicies").map(|r| r.0),
        Some("pass".to_string())
    );

    // Enforce repairs, and the result passes again.
    set_mode(&c, &name, "Enforce").await?;
    wait_result(&c, &a.name, &name, "NetworkPolicies", "pass", &[]).await?;

    // Nothing changes: passes run (an unrelated label on a selected namespace triggers
    // them) and write no report.
    let settled = |c: Client, name: String, ns: Vec<String>| async move {
        let mut out = BTreeMap::new();
        for ns in ns {
            let r = report(&c, &ns, &name).await.context("report")?;
            out.insert(ns, r.resource_version().unwrap_or_default());
        }
        anyhow::Ok(out)
    };
    let namespaces = vec![a.name.clone(), b.name.clone()];
    // Let the repair's own events pass through first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let versions = settled(c.clone(), name.clone(), namespaces.clone()).await?;
    let writes = report_writes(&op, &name).await?;
    assert!(writes >= 2.0, "the reports were written: {writes}");
    for i in 0..3 {
        let before = reconciles(&op).await?;
        Api::<Namespace>::all(c.clone())
            .patch(
                &b.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"unrelated": format!("touch-{i}")}}})),
            )
            .await?;
        wait_until("a pass after the touch", TIMEOUT, || async {
            let now = reconciles(&op).await.unwrap_or_default();
            (now > before, format!("{now} reconciles, {before} before"))
        })
        .await?;
    }
    assert_eq!(
        settled(c.clone(), name.clone(), namespaces).await?,
        versions,
        "a report was rewritten although nothing changed"
    );
    assert_eq!(report_writes(&op, &name).await?, writes);

    // A report deleted by someone comes back.
    reports_in(&c, &b.name)
        .delete(&format!("rampart-{name}"), &DeleteParams::default())
        .await?;
    wait_result(&c, &b.name, &name, "NetworkPolicies", "pass", &[]).await?;

    // The namespace goes: its report with it, the other stays.
    Api::<Namespace>::all(c.clone())
        .delete(&b.name, &DeleteParams::background())
        .await?;
    wait_until("namespace b and its report gone", TIMEOUT, || async {
        let gone = Api::<Namespace>::all(c.clone())
            .get_opt(&b.name)
            .await
            .ok()
            .flatten()
            .is_none();
        (gone, format!("namespace gone: {gone}"))
    })
    .await?;
    assert!(report(&c, &a.name, &name).await.is_some());

    // The profile goes: every report of it with it.
    delete_profile_and_wait(&c, &name).await?;
    assert!(
        report(&c, &a.name, &name).await.is_none(),
        "the report outlived its profile"
    );
    drop(op);
    Ok(())
}

/// An exempted namespace's result is a skip carrying the exception's reason and expiry; a
/// namespace that leaves the profile's selection loses its report.
#[tokio::test]
async fn an_exception_is_named_and_a_namespace_that_leaves_loses_its_report() -> Result<()> {
    install_openreports_crds(&kubeconfig_path())?;
    let c = client().await?;
    let id = unique_id();
    let run = format!("reports-exc-{id}");
    let tag = format!("reports-exc-{id}");
    let labels = [("e2e.rampart.dev/run", run.as_str())];
    let kept = TestNamespace::create(&c, "reports-exc", &labels).await?;
    let exempt = TestNamespace::create(&c, "reports-exempt", &labels).await?;
    let _op = OperatorProcess::start_with(&tag, &["--reports"]).await?;
    let mut p = profile(&format!("reports-exc-{id}"), &tag, &run, "Enforce");
    p["spec"]["exceptions"] = json!([{
        "namespace": exempt.name, "control": "NetworkPolicies",
        "reason": "legacy ingress, ticket SEC-42", "expires": "2099-01-01T00:00:00Z"
    }]);
    let name = apply_profile(&c, p).await?;
    wait_result(&c, &kept.name, &name, "NetworkPolicies", "pass", &[]).await?;
    let r = wait_result(&c, &exempt.name, &name, "NetworkPolicies", "skip", &[]).await?;
    let np = r.data["results"]
        .as_array()
        .and_then(|rs| rs.iter().find(|x| x["policy"] == "NetworkPolicies"))
        .context("a NetworkPolicies result")?;
    assert_eq!(
        np["properties"]["exception"],
        "legacy ingress, ticket SEC-42"
    );
    assert_eq!(
        np["properties"]["exceptionExpires"],
        "2099-01-01T00:00:00+00:00"
    );

    Api::<Namespace>::all(c.clone())
        .patch(
            &exempt.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"e2e.rampart.dev/run": null}}})),
        )
        .await?;
    wait_until(
        "the report of the namespace that left gone",
        TIMEOUT,
        || async {
            let r = report(&c, &exempt.name, &name).await;
            (r.is_none(), "still there".into())
        },
    )
    .await?;
    assert!(report(&c, &kept.name, &name).await.is_some());
    delete_profile_and_wait(&c, &name).await?;
    Ok(())
}

/// The owner reference from a namespaced report to the cluster-scoped profile is one the
/// garbage collector honours: with the operator gone and the finalizer removed by hand,
/// deleting the profile still removes its reports.
#[tokio::test]
async fn garbage_collection_removes_the_reports_of_a_profile_deleted_without_the_operator(
) -> Result<()> {
    install_openreports_crds(&kubeconfig_path())?;
    let c = client().await?;
    let id = unique_id();
    let run = format!("reports-gc-{id}");
    let tag = format!("reports-gc-{id}");
    let a = TestNamespace::create(&c, "reports-gc", &[("e2e.rampart.dev/run", &run)]).await?;
    let op = OperatorProcess::start_with(&tag, &["--reports"]).await?;
    let name = apply_profile(
        &c,
        profile(&format!("reports-gc-{id}"), &tag, &run, "Enforce"),
    )
    .await?;
    wait_result(&c, &a.name, &name, "NetworkPolicies", "pass", &[]).await?;
    drop(op);
    let profiles = Api::<HardeningProfile>::all(c.clone());
    profiles
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    profiles.delete(&name, &DeleteParams::background()).await?;
    wait_until("the report collected with its profile", TIMEOUT, || async {
        let r = report(&c, &a.name, &name).await;
        (
            r.is_none(),
            format!("{:?}", r.map(|r| r.metadata.owner_references)),
        )
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn without_the_crds_the_operator_runs_as_before_and_reports_start_when_they_arrive(
) -> Result<()> {
    let plane = SecondPlane::start(&format!("reports-{}", unique_id()))?;
    let c = client_from(&plane.kubeconfig()).await?;
    plane.install_rampart_crd()?;
    let ns = format!("e2e-late-reports-{}", unique_id());
    Api::<Namespace>::all(c.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    labels: Some([("e2e.rampart.dev/run".to_string(), ns.clone())].into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let tag = format!("late-{}", unique_id());
    let op = OperatorProcess::launch(&OperatorLaunch {
        bin: rampart_e2e::operator_bin(),
        selector: format!("{DEDICATED_LABEL}={tag}"),
        extra: vec!["--reports".into()],
        kubeconfig: plane.kubeconfig(),
        log_name: format!("operator-{tag}"),
        env: vec![],
    })
    .await?;
    wait_until("the operator ready without the CRDs", TIMEOUT, || async {
        (is_ready(&op.metrics_addr).await, "not ready".into())
    })
    .await?;
    let name = apply_profile(
        &c,
        profile(&format!("late-{}", unique_id()), &tag, &ns, "Enforce"),
    )
    .await?;
    wait_condition(&c, &name, "Ready", "True", TIMEOUT).await?;
    let policies = Api::<NetworkPolicy>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    assert!(
        policies
            .items
            .iter()
            .any(|p| p.name_any() == "rampart-default-deny"),
        "the controls work as before"
    );
    // Past two discovery retries, and still nothing but the one notice.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let log = std::fs::read_to_string(&op.log)?;
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(
        noisy.is_empty(),
        "warnings or errors without the CRDs: {noisy:#?}"
    );
    assert_eq!(
        log.matches("openreports.io").count(),
        1,
        "one notice that the API is not served, no loop: {log}"
    );
    assert_eq!(
        metric_sum(
            &scrape(&op.metrics_addr).await?,
            "rampart_reconcile_errors_total",
            &[]
        ),
        0.0
    );

    install_openreports_crds(&plane.kubeconfig())?;
    wait_result(&c, &ns, &name, "NetworkPolicies", "pass", &[]).await?;
    assert!(
        is_ready(&op.metrics_addr).await,
        "the same process serves on"
    );
    delete_profile_and_wait(&c, &name).await?;
    drop(op);
    drop(plane);
    Ok(())
}
