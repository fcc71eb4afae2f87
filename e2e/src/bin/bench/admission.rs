//! What the admission policy costs Rampart's writes: the writes Rampart makes (create of a
//! labelled NetworkPolicy, a check Job dry run, the restart stamp's patch of a Deployment's
//! pod template, delete of a labelled NetworkPolicy), timed one at a time through a client
//! impersonating a ServiceAccount with the shipped roles, once with the shipped policy bound
//! to that account and once without. Rounds alternate between the two so load from anything
//! else on the machine falls on both alike. (The API server's
//! `apiserver_validating_admission_policy_check_duration_seconds` counts only refusals in
//! v1.37, so it cannot time allowed writes: the client's latency is the measure.)

use std::time::Instant;

use anyhow::{anyhow, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rampart_e2e::identity::{Grants, ServiceAccountIdentity};
use rampart_e2e::TestNamespace;
use serde_json::{json, Value};

use crate::common::{env_num, pct, sort_f64};

/// The operations timed, in the order of each iteration.
const OPS: [&str; 4] = ["create", "create Job (dry run)", "patch", "delete"];

fn labels() -> Value {
    json!({"app.kubernetes.io/managed-by": "rampart", "rampart.dev/profile": "bench", "rampart.dev/control": "networkpolicy"})
}

/// One account and where it writes.
struct Writer {
    client: Client,
    namespace: String,
}

impl Writer {
    /// One iteration: each operation's latency in milliseconds.
    async fn iteration(&self, i: usize) -> Result<[f64; 4]> {
        let policies = Api::<NetworkPolicy>::namespaced(self.client.clone(), &self.namespace);
        let name = format!("bench-{i}");
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels()},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }))?;
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels()},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "check", "image": "registry.example/checker:1",
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            }}},
        }))?;
        let stamp = json!({"spec": {"template": {"metadata": {"annotations": {
            "rampart.dev/rotation-id": format!("bench-{i}"),
        }}}}});
        let mut out = [0.0; 4];
        let t = Instant::now();
        policies.create(&PostParams::default(), &np).await?;
        out[0] = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        Api::<Job>::namespaced(self.client.clone(), &self.namespace)
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &job,
            )
            .await?;
        out[1] = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
            .patch("web", &PatchParams::default(), &Patch::Merge(&stamp))
            .await?;
        out[2] = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        policies.delete(&name, &DeleteParams::default()).await?;
        out[3] = t.elapsed().as_secs_f64() * 1000.0;
        Ok(out)
    }
}

/// A namespace with a Deployment of no replicas (a restart stamp makes a ReplicaSet, never a
/// pod) for one account.
async fn workspace(admin: &Client, prefix: &str) -> Result<TestNamespace> {
    let ns = TestNamespace::create(admin, prefix, &[]).await?;
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "example.com/web:1"}]}}},
    }))?;
    Api::<Deployment>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &d)
        .await?;
    Ok(ns)
}

/// Runs the comparison; BENCH_ADMISSION_N iterations (default 200) per mode.
pub async fn measure(admin: &Client) -> Result<Value> {
    let n = env_num("BENCH_ADMISSION_N", 200) as usize;
    let round = 20;
    let sa_off = TestNamespace::create(admin, "bench-adm-off", &[]).await?;
    let sa_on = TestNamespace::create(admin, "bench-adm-on", &[]).await?;
    let shipped = Grants {
        verification: true,
        rotation_hooks: true,
        policy: false,
        drop: None,
    };
    let off = ServiceAccountIdentity::new(admin, &sa_off.name, shipped).await?;
    let on = ServiceAccountIdentity::new(
        admin,
        &sa_on.name,
        Grants {
            policy: true,
            ..shipped
        },
    )
    .await?;
    let ws_off = workspace(admin, "bench-adm-off-ws").await?;
    let ws_on = workspace(admin, "bench-adm-on-ws").await?;
    let writers = [
        Writer {
            client: off.client().await?,
            namespace: ws_off.name.clone(),
        },
        Writer {
            client: on.client().await?,
            namespace: ws_on.name.clone(),
        },
    ];
    // Warm both paths (connections, the policy's compiled programs) before timing.
    for w in &writers {
        for i in 0..5 {
            w.iteration(1_000_000 + i).await?;
        }
    }
    // [mode][op] -> latencies (ms)
    let mut lat: [[Vec<f64>; 4]; 2] = Default::default();
    let mut i = 0;
    while i < n {
        for (mode, w) in writers.iter().enumerate() {
            for k in 0..round.min(n - i) {
                let ms = w.iteration(i + k).await?;
                for (op, v) in ms.iter().enumerate() {
                    lat[mode][op].push(*v);
                }
            }
        }
        i += round;
    }
    let mut ops = serde_json::Map::new();
    for (op, name) in OPS.iter().enumerate() {
        let mut row = serde_json::Map::new();
        for (mode, label) in ["off", "on"].iter().enumerate() {
            let mut v = lat[mode][op].clone();
            sort_f64(&mut v);
            row.insert(
                label.to_string(),
                json!({"p50_ms": pct(&v, 50.0), "p99_ms": pct(&v, 99.0), "n": v.len()}),
            );
        }
        ops.insert(name.to_string(), Value::Object(row));
    }
    if lat[0][0].is_empty() {
        return Err(anyhow!("no admission samples"));
    }
    Ok(json!({
        "iterations_per_mode": n,
        "ops": ops,
    }))
}

pub fn print_table(r: &Value) {
    println!(
        "\nAdmission cost of the policy: Rampart's writes as its ServiceAccount, {} per mode, one at a time",
        r["iterations_per_mode"]
    );
    println!(
        "| {:<22} | {:>12} | {:>12} | {:>12} | {:>12} |",
        "write", "p50 off (ms)", "p50 on (ms)", "p99 off (ms)", "p99 on (ms)"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(24),
        "-".repeat(14),
        "-".repeat(14),
        "-".repeat(14),
        "-".repeat(14)
    );
    for op in OPS {
        let o = &r["ops"][op];
        let f = |m: &str, p: &str| o[m][p].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {:<22} | {:>12.2} | {:>12.2} | {:>12.2} | {:>12.2} |",
            op,
            f("off", "p50_ms"),
            f("on", "p50_ms"),
            f("off", "p99_ms"),
            f("on", "p99_ms")
        );
    }
}
