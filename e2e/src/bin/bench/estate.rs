//! The estate the bench measures (issue 6's scenario) and the profiles applied to it.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::common::create;

pub const ESTATE_LABEL: &str = "bench.rampart.dev/estate";

/// The label that sends a profile to the bench's own operator process.
pub use rampart_e2e::DEDICATED_LABEL as RUN_LABEL;

fn workload(kind: &str, name: &str, replicas: i32, secret: &str) -> Value {
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        // Stamped as already rotated to the first id, as an adopted estate would be, so the
        // convergence figure is about policies, budgets and snapshots; rotation is measured
        // on its own by bumping the id.
        "template": {"metadata": {"labels": {"app": name}, "annotations": {"rampart.dev/rotation-id": "bench-0"}},
                     "spec": {"containers": [{"name": "c", "image": "example.com/app:1", "envFrom": [{"secretRef": {"name": secret}}]}]}}
    });
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// One namespace of the estate: 2 Deployments (3 replicas), 1 StatefulSet (2), 2 PVCs for
/// backup, 3 Secrets for rotation; `user_objects` adds a user NetworkPolicy and a user PDB
/// covering web-0. `labels` are the namespace's.
pub async fn estate_namespace(
    c: &Client,
    ns: &str,
    labels: Value,
    user_objects: bool,
) -> Result<()> {
    create(c, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})).await?;
    let mut objs = vec![];
    for s in 0..3 {
        objs.push(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("secret-{s}"), "labels": {"rampart.dev/rotate": "true"}, "annotations": {"rampart.dev/rotation-id": "bench-0"}},
            "stringData": {"password": format!("initial-{s}")}}));
    }
    objs.push(workload("Deployment", "web-0", 3, "secret-0"));
    objs.push(workload("Deployment", "web-1", 3, "secret-1"));
    objs.push(workload("StatefulSet", "db", 2, "secret-2"));
    for p in 0..2 {
        objs.push(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": format!("data-{p}"), "labels": {"backup": "true"}},
            // Immediate: no pod mounts these, and the plane's default class waits for one.
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "rampart-hostpath-immediate",
                     "resources": {"requests": {"storage": "1Gi"}}}}));
    }
    if user_objects {
        objs.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "team-own"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}], "policyTypes": ["Ingress"]}}));
        objs.push(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "team-web-0"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web-0"}}}}));
    }
    for o in objs {
        create(c, Some(ns), o).await?;
    }
    Ok(())
}

/// The namespaces of estate `estate`.
pub fn estate_names(estate: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench-{estate}-{i}")).collect()
}

/// Creates the estate (idempotent, so a kept estate is reused) and waits for its 8 pods per
/// namespace to run.
pub async fn build_estate(c: &Client, estate: &str, n: usize) -> Result<()> {
    let setup = Instant::now();
    let names = estate_names(estate, n);
    stream::iter(names.iter().enumerate())
        .map(|(i, ns)| estate_namespace(c, ns, json!({ESTATE_LABEL: estate}), i.is_multiple_of(10)))
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!(
        "bench: estate created in {:.1}s; waiting for its pods",
        setup.elapsed().as_secs_f64()
    );
    let pods_wanted = n * 8;
    let prefix = format!("bench-{estate}-");
    loop {
        let ready = Api::<Pod>::all(c.clone())
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.namespace().is_some_and(|ns| ns.starts_with(&prefix)))
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if ready >= pods_wanted || setup.elapsed() > Duration::from_secs(3600) {
            eprintln!(
                "bench: {ready}/{pods_wanted} pods running after {:.1}s",
                setup.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Managed objects the bench profile asks for in an estate of `n` namespaces: 5 policies per
/// namespace, 3 budgets (2 where the user's PDB covers web-0, every tenth), 2 snapshots.
pub fn expected_policies(n: usize) -> usize {
    n * 5
}
pub fn expected_budgets(n: usize) -> usize {
    n * 3 - n.div_ceil(10)
}
pub fn expected_snapshots(n: usize) -> usize {
    n * 2
}

/// The bench profile: every control, an Enforce profile over the estate.
pub fn profile_json(
    name: &str,
    run: &str,
    estate: &str,
    rotation_id: &str,
    max_restarts: i32,
    schedule: &str,
) -> Value {
    let mut p = policies_and_budgets_profile(name, run, estate);
    p["spec"]["secretRotation"] = json!({"rotationId": rotation_id, "selector": {"matchLabels": {"rampart.dev/rotate": "true"}},
                           "regenerate": [{"key": "password"}], "maxConcurrentRestarts": max_restarts, "rolloutTimeoutSeconds": 600});
    p["spec"]["backups"] = json!({"schedule": schedule, "pvcSelector": {"matchLabels": {"backup": "true"}}, "volumeSnapshotClassName": "csi-snapclass",
                    "retention": {"maxCount": 3}, "snapshotOnCreate": true, "startingDeadlineSeconds": 30});
    p
}

/// The bench profile with only its NetworkPolicies and PodDisruptionBudgets: what the peer
/// comparison asks of Rampart and of Kyverno.
pub fn policies_and_budgets_profile(name: &str, run: &str, estate: &str) -> Value {
    json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
        "spec": {
            "mode": "Enforce",
            "namespaceSelector": {"matchLabels": {ESTATE_LABEL: estate}},
            "networkPolicies": {"allowedNamespaces": ["observability", "kafka"], "monitoring": {"namespace": "observability", "ports": [9090, 9187]}},
            "podDisruptionBudgets": {"minReplicas": 2, "maxUnavailable": 1}
        }
    })
}
