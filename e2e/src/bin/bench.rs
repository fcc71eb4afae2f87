//! `make bench`: how fast Rampart converges, how little it writes and how small it stays, next
//! to the floor the API server sets for the same objects. Prints a table and writes JSON.
//!
//! Environment: BENCH_N (namespaces, default 100), BENCH_RUNS (default 3), BENCH_IDLE_SECS
//! (default 120), BENCH_ROTATION (1; 0 skips the rotation figures), BENCH_OPERATOR (the
//! operator binary, default target/release/rampart),
//! BENCH_OUT (JSON path, default target/bench/bench-<unix time>.json), BENCH_ESTATE (reuse
//! the estate with this id), BENCH_KEEP (1 leaves the estate in place), BENCH_RUNS=0 (only
//! build the estate).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use rampart::api::{DisruptionBudgetControl, HardeningProfile, NetworkPolicyControl};
use rampart::controls::disruption_budgets::{
    desired_disruption_budgets, WorkloadInfo, WorkloadKind,
};
use rampart::controls::network_policies::desired_network_policies;
use rampart_e2e::{client, metric_sum, repo_root, scrape};
use serde_json::{json, Value};

const ESTATE_LABEL: &str = "bench.rampart.dev/estate";
const RUN_LABEL: &str = "bench.rampart.dev/run";
const CONCURRENCY: usize = 32;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn snapshot_ar() -> ApiResource {
    ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}

/// Creates (or leaves) an object given as JSON.
async fn create(c: &Client, ns: Option<&str>, obj: Value) -> Result<()> {
    let (group, version) = match obj["apiVersion"].as_str().unwrap_or("v1").split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), "v1".to_string()),
    };
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let plural = match kind.as_str() {
        "Namespace" => "namespaces",
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "PersistentVolumeClaim" => "persistentvolumeclaims",
        "Secret" => "secrets",
        "NetworkPolicy" => "networkpolicies",
        "PodDisruptionBudget" => "poddisruptionbudgets",
        _ => return Err(anyhow!("unknown kind {kind}")),
    };
    let r = ar(&group, &version, &kind, plural);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(c.clone(), ns, &r),
        None => Api::all_with(c.clone(), &r),
    };
    let o: DynamicObject = serde_json::from_value(obj)?;
    match api.create(&PostParams::default(), &o).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

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

/// The estate of issue 6 in namespace `ns`; `i` decides whether it also gets user objects.
async fn estate_namespace(c: &Client, estate: &str, ns: &str, i: usize) -> Result<()> {
    create(c, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {ESTATE_LABEL: estate}}})).await?;
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
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}));
    }
    if i.is_multiple_of(10) {
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

fn profile_json(
    name: &str,
    run: &str,
    estate: &str,
    rotation_id: &str,
    max_restarts: i32,
    schedule: &str,
) -> Value {
    json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
        "spec": {
            "mode": "Enforce",
            "namespaceSelector": {"matchLabels": {ESTATE_LABEL: estate}},
            "networkPolicies": {"allowedNamespaces": ["observability", "kafka"], "monitoring": {"namespace": "observability", "ports": [9090, 9187]}},
            "podDisruptionBudgets": {"minReplicas": 2, "maxUnavailable": 1},
            "secretRotation": {"rotationId": rotation_id, "selector": {"matchLabels": {"rampart.dev/rotate": "true"}},
                               "regenerate": [{"key": "password"}], "maxConcurrentRestarts": max_restarts, "rolloutTimeoutSeconds": 600},
            "backups": {"schedule": schedule, "pvcSelector": {"matchLabels": {"backup": "true"}}, "volumeSnapshotClassName": "csi-snapclass",
                        "retention": {"maxCount": 3}, "snapshotOnCreate": true, "startingDeadlineSeconds": 30}
        }
    })
}

/// The policies, budgets and snapshots the profile asks for in one namespace, computed with
/// the operator's own pure functions: the floor writes exactly these.
fn floor_objects(profile: &str, ns: &str, with_user_pdb: bool) -> Result<Vec<Value>> {
    let p = profile_json(profile, "floor", "floor", "bench-0", 10, "0 0 1 1 *");
    let np: NetworkPolicyControl = serde_json::from_value(p["spec"]["networkPolicies"].clone())?;
    let pdb: DisruptionBudgetControl =
        serde_json::from_value(p["spec"]["podDisruptionBudgets"].clone())?;
    let mut out: Vec<Value> = desired_network_policies(profile, &np, ns)
        .into_iter()
        .map(|d| d.manifest)
        .collect();
    let w = |kind, name: &str, replicas| WorkloadInfo {
        kind,
        namespace: ns.into(),
        name: name.into(),
        replicas,
        selector: serde_json::from_value(json!({"matchLabels": {"app": name}})).ok(),
        pod_labels: BTreeMap::from([("app".to_string(), name.to_string())]),
    };
    let workloads = vec![
        w(WorkloadKind::Deployment, "web-0", 3),
        w(WorkloadKind::Deployment, "web-1", 3),
        w(WorkloadKind::StatefulSet, "db", 2),
    ];
    let mut budgets = desired_disruption_budgets(profile, &pdb, &workloads, &[]).desired;
    if with_user_pdb {
        budgets.retain(|b| b.key.name != "rampart-deploy-web-0");
    }
    out.extend(budgets.into_iter().map(|d| d.manifest));
    for p in 0..2 {
        out.push(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": format!("data-{p}-20260101-000000"), "namespace": ns,
                         "labels": {"app.kubernetes.io/managed-by": "rampart", "rampart.dev/profile": profile, "rampart.dev/control": "snapshot"}},
            "spec": {"volumeSnapshotClassName": "csi-snapclass", "source": {"persistentVolumeClaimName": format!("data-{p}")}}}));
    }
    Ok(out)
}

/// The floor: a plain client applying the same objects with server-side apply, in parallel.
async fn floor(c: &Client, namespaces: &[String], profile: &str) -> Result<(Duration, usize)> {
    let mut all = vec![];
    for (i, ns) in namespaces.iter().enumerate() {
        for o in floor_objects(profile, ns, i % 10 == 0)? {
            all.push((ns.clone(), o));
        }
    }
    let n = all.len();
    let start = Instant::now();
    stream::iter(all)
        .map(|(ns, o)| {
            let c = c.clone();
            async move {
                let kind = o["kind"].as_str().unwrap_or_default().to_string();
                let r = match kind.as_str() {
                    "NetworkPolicy" => ar(
                        "networking.k8s.io",
                        "v1",
                        "NetworkPolicy",
                        "networkpolicies",
                    ),
                    "PodDisruptionBudget" => ar(
                        "policy",
                        "v1",
                        "PodDisruptionBudget",
                        "poddisruptionbudgets",
                    ),
                    _ => snapshot_ar(),
                };
                let api: Api<DynamicObject> = Api::namespaced_with(c, &ns, &r);
                let name = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(
                    &name,
                    &PatchParams::apply("bench-floor").force(),
                    &Patch::Apply(&o),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok((start.elapsed(), n))
}

/// Peak RSS, current RSS (bytes) and CPU seconds of a process.
fn proc_stats(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/pid/stat; after the ')' they are 11 and 12.
    (kb("VmHWM:"), kb("VmRSS:"), (ticks(11) + ticks(12)) / 100.0)
}

struct Operator {
    child: std::process::Child,
    addr: String,
}

impl Operator {
    async fn start(bin: &std::path::Path, run: &str, log: &str) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let out = std::fs::File::create(repo_root().join(format!(".local/logs/{log}")))?;
        let child = std::process::Command::new(bin)
            .args([
                "run",
                "--metrics-addr",
                &addr,
                "--profile-selector",
                &format!("{RUN_LABEL}={run}"),
            ])
            .env("KUBECONFIG", rampart_e2e::kubeconfig_path())
            .env("RUST_LOG", "warn")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { child, addr })
    }

    async fn writes(&self, profile: &str) -> f64 {
        scrape(&self.addr)
            .await
            // `+ 0.0` turns the empty sum's -0 (no series yet) into 0 for the report.
            .map(|m| metric_sum(&m, "rampart_api_writes_total", &[("profile", profile)]) + 0.0)
            .unwrap_or(f64::NAN)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ready(c: &Client, profile: &str) -> bool {
    Api::<HardeningProfile>::all(c.clone())
        .get(profile)
        .await
        .ok()
        .and_then(|p| p.status)
        .is_some_and(|s| {
            s.conditions
                .iter()
                .any(|x| x.type_ == "Ready" && x.status == rampart::api::ConditionStatus::True)
        })
}

async fn count(c: &Client, r: &ApiResource, selector: &str) -> usize {
    Api::<DynamicObject>::all_with(c.clone(), r)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// The API server's own count of writes to the kinds Rampart manages.
async fn apiserver_writes(c: &Client) -> f64 {
    let req = http::Request::get("/metrics").body(Vec::new());
    let Ok(req) = req else { return f64::NAN };
    let Ok(text) = c.request_text(req).await else {
        return f64::NAN;
    };
    let mut total = 0.0;
    for verb in ["POST", "PATCH", "PUT", "DELETE", "APPLY"] {
        for res in [
            "networkpolicies",
            "poddisruptionbudgets",
            "volumesnapshots",
            "secrets",
            "deployments",
            "statefulsets",
            "hardeningprofiles",
        ] {
            total += metric_sum(
                &text,
                "apiserver_request_total",
                &[("verb", verb), ("resource", res)],
            );
        }
    }
    total
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn stats(v: &[f64]) -> Value {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    json!({"median": pct(&s, 50.0), "min": s.first().copied().unwrap_or(f64::NAN), "max": s.last().copied().unwrap_or(f64::NAN), "runs": v})
}

/// Deletes `count` random managed NetworkPolicies at once and times each one's return.
async fn drift_repair(c: &Client, profile: &str, count: usize) -> Result<Vec<f64>> {
    let api = Api::<NetworkPolicy>::all(c.clone());
    let sel = format!("rampart.dev/profile={profile}");
    let all = api.list(&ListParams::default().labels(&sel)).await?.items;
    let step = (all.len() / count.max(1)).max(1);
    let victims: Vec<(String, String, String)> = all
        .iter()
        .step_by(step)
        .take(count)
        .map(|p| {
            (
                p.namespace().unwrap_or_default(),
                p.name_any(),
                p.uid().unwrap_or_default(),
            )
        })
        .collect();
    let back: Arc<Mutex<HashMap<(String, String), Instant>>> = Arc::default();
    let watch_back = back.clone();
    let old_uids: HashMap<(String, String), String> = victims
        .iter()
        .map(|(n, p, u)| ((n.clone(), p.clone()), u.clone()))
        .collect();
    let watch = tokio::spawn(async move {
        let s = watcher(api, watcher::Config::default().labels(&sel))
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(s);
        // A watch error is retried by the backoff; the loop must outlive it.
        while let Some(ev) = s.next().await {
            let Ok(p) = ev else { continue };
            let key = (p.namespace().unwrap_or_default(), p.name_any());
            if old_uids
                .get(&key)
                .is_some_and(|u| Some(u) != p.uid().as_ref())
            {
                if let Ok(mut m) = watch_back.lock() {
                    m.entry(key).or_insert_with(Instant::now);
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = Instant::now();
    stream::iter(victims.clone())
        .map(|(ns, name, _)| {
            let api = Api::<NetworkPolicy>::namespaced(c.clone(), &ns);
            async move {
                api.delete(&name, &DeleteParams::default())
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while back.lock().map(|m| m.len()).unwrap_or(0) < victims.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();
    let m = back.lock().map_err(|_| anyhow!("lock"))?;
    let mut times: Vec<f64> = m
        .values()
        .map(|t| t.duration_since(start).as_secs_f64())
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if times.len() < victims.len() {
        eprintln!(
            "  {} of {} deleted policies did not come back within 120 s",
            victims.len() - times.len(),
            victims.len()
        );
    }
    Ok(times)
}

async fn wait_rotation(c: &Client, profile: &str, id: &str) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let p = Api::<HardeningProfile>::all(c.clone()).get(profile).await?;
        if p.status.and_then(|s| s.rotation).is_some_and(|r| {
            r.observed_rotation_id.as_deref() == Some(id)
                && r.phase == rampart::api::RotationPhase::Complete
        }) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(1800) {
            return Err(anyhow!("rotation {id} did not complete in 30 minutes"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Lag between each slot and the moment its snapshot appears in a watch.
async fn snapshot_lag(c: &Client, profile: &str, seconds: u64) -> Result<Vec<f64>> {
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &snapshot_ar());
    let sel = format!("rampart.dev/profile={profile}");
    let lags: Arc<Mutex<Vec<f64>>> = Arc::default();
    let seen = lags.clone();
    let start = chrono::Utc::now();
    let watch = tokio::spawn(async move {
        let s = watcher(api, watcher::Config::default().labels(&sel))
            .default_backoff()
            .touched_objects();
        futures::pin_mut!(s);
        let mut known = std::collections::HashSet::new();
        while let Some(ev) = s.next().await {
            let Ok(o) = ev else { continue };
            let now = chrono::Utc::now();
            let Some(slot) = o
                .annotations()
                .get("rampart.dev/slot")
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            else {
                continue;
            };
            // Names repeat across namespaces (every namespace has data-0): key by both.
            if slot.with_timezone(&chrono::Utc) < start
                || !known.insert((o.namespace().unwrap_or_default(), o.name_any()))
            {
                continue;
            }
            let lag = (now - slot.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0;
            seen.lock().map(|mut v| v.push(lag)).ok();
        }
    });
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    watch.abort();
    let mut v = lags.lock().map_err(|_| anyhow!("lock"))?.clone();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Ok(v)
}

async fn delete_profile(c: &Client, name: &str) -> Result<()> {
    let api = Api::<HardeningProfile>::all(c.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    for _ in 0..600 {
        if matches!(api.get_opt(name).await, Ok(None)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(anyhow!("profile {name} was not deleted"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n = env_num("BENCH_N", 100) as usize;
    let runs = env_num("BENCH_RUNS", 3) as usize;
    let idle = env_num("BENCH_IDLE_SECS", 120);
    let bin = std::env::var("BENCH_OPERATOR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/release/rampart"));
    let stamp = chrono::Utc::now().timestamp();
    let out_path = std::env::var("BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(format!("target/bench/bench-{stamp}.json")));
    let c = client().await?;
    // BENCH_ESTATE reuses an estate a previous run left behind with BENCH_KEEP=1 (creation is
    // idempotent), so profiling the operator at N=1000 need not wait for 8,000 pods each time.
    let estate = std::env::var("BENCH_ESTATE").unwrap_or_else(|_| format!("e{stamp}"));
    let keep = env_num("BENCH_KEEP", 0) == 1;
    eprintln!(
        "bench: N={n} namespaces, {runs} runs, idle window {idle}s, operator {}",
        bin.display()
    );

    let setup = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("bench-{estate}-{i}")).collect();
    stream::iter(names.iter().enumerate())
        .map(|(i, ns)| estate_namespace(&c, &estate, ns, i))
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!(
        "bench: estate created in {:.1}s; waiting for its pods",
        setup.elapsed().as_secs_f64()
    );
    let pods_wanted = n * 8;
    loop {
        let ready = Api::<k8s_openapi::api::core::v1::Pod>::all(c.clone())
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| {
                p.namespace()
                    .is_some_and(|ns| ns.starts_with(&format!("bench-{estate}-")))
            })
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if ready >= pods_wanted || setup.elapsed() > Duration::from_secs(1800) {
            eprintln!(
                "bench: {ready}/{pods_wanted} pods running after {:.1}s",
                setup.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if runs == 0 {
        eprintln!("bench: BENCH_RUNS=0, estate {estate} left in place");
        return Ok(());
    }
    let expected_np = n * 5;
    let expected_pdb = n * 3 - n.div_ceil(10);
    let expected_snap = n * 2;

    let mut conv = vec![];
    let mut floors = vec![];
    let mut writes_conv = vec![];
    let mut apiserver_conv = vec![];
    let mut writes_idle = vec![];
    let mut repair_p50 = vec![];
    let mut repair_p99 = vec![];
    let mut rss_peak = vec![];
    let mut rss_idle = vec![];
    let mut cpu_conv = vec![];
    let mut cpu_idle = vec![];
    let mut extra = json!({});

    for r in 0..runs {
        let run = format!("{estate}-r{r}");
        let profile = format!("bench-{run}");
        // The floor first, into fresh namespaces of its own.
        let floor_ns: Vec<String> = (0..n).map(|i| format!("bench-floor-{run}-{i}")).collect();
        stream::iter(floor_ns.iter())
            .map(|ns| create(&c, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"bench.rampart.dev/floor": estate, "bench.rampart.dev/floor-run": run}}})))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let (floor_time, floor_count) = floor(&c, &floor_ns, &format!("floor-{run}")).await?;
        floors.push(floor_time.as_secs_f64());
        eprintln!(
            "run {r}: floor {floor_count} objects in {:.2}s",
            floor_time.as_secs_f64()
        );
        // The floor's objects carry Rampart's labels; left in place, the operator would watch
        // them too and every later footprint figure would include them.
        let gone = delete_namespaces(&c, &format!("bench.rampart.dev/floor-run={run}")).await?;
        eprintln!(
            "run {r}: floor namespaces deleted in {:.1}s",
            gone.as_secs_f64()
        );

        let op = Operator::start(&bin, &run, &format!("bench-{run}.log")).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (_, _, cpu0) = proc_stats(op.pid());
        let api_before = apiserver_writes(&c).await;
        let start = Instant::now();
        Api::<HardeningProfile>::all(c.clone())
            .patch(
                &profile,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(profile_json(
                    &profile,
                    &run,
                    &estate,
                    "bench-0",
                    10,
                    "0 0 1 1 *",
                )),
            )
            .await?;
        let sel = format!("rampart.dev/profile={profile}");
        loop {
            if ready(&c, &profile).await
                && count(
                    &c,
                    &ar(
                        "networking.k8s.io",
                        "v1",
                        "NetworkPolicy",
                        "networkpolicies",
                    ),
                    &sel,
                )
                .await
                    >= expected_np
                && count(
                    &c,
                    &ar(
                        "policy",
                        "v1",
                        "PodDisruptionBudget",
                        "poddisruptionbudgets",
                    ),
                    &sel,
                )
                .await
                    >= expected_pdb
                && count(&c, &snapshot_ar(), &sel).await >= expected_snap
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(1800) {
                return Err(anyhow!("run {r}: no convergence in 30 minutes"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t = start.elapsed().as_secs_f64();
        conv.push(t);
        let w = op.writes(&profile).await;
        writes_conv.push(w / (expected_np + expected_pdb + expected_snap) as f64);
        apiserver_conv.push(apiserver_writes(&c).await - api_before);
        let (peak, _, cpu1) = proc_stats(op.pid());
        rss_peak.push(peak as f64 / 1048576.0);
        cpu_conv.push(cpu1 - cpu0);
        eprintln!(
            "run {r}: converged in {t:.2}s with {w} writes (ratio to floor {:.2})",
            t / floor_time.as_secs_f64()
        );

        tokio::time::sleep(Duration::from_secs(idle)).await;
        let w2 = op.writes(&profile).await;
        writes_idle.push(w2 - w);
        let (_, rss, cpu2) = proc_stats(op.pid());
        rss_idle.push(rss as f64 / 1048576.0);
        cpu_idle.push(cpu2 - cpu1);
        eprintln!(
            "run {r}: {} writes in the {idle}s after convergence; RSS {:.1} MiB",
            w2 - w,
            rss as f64 / 1048576.0
        );

        let times = drift_repair(&c, &profile, 100).await?;
        repair_p50.push(pct(&times, 50.0));
        repair_p99.push(pct(&times, 99.0));
        eprintln!(
            "run {r}: drift repair p50 {:.3}s p99 {:.3}s",
            pct(&times, 50.0),
            pct(&times, 99.0)
        );

        if r + 1 == runs {
            // Last run only, so every convergence above starts from the same estate: rotation
            // twice, then snapshot lag on a seconds schedule, then a restart.
            // BENCH_ROTATION=0 skips the rotations (3,000 rollouts at N=1000 take a long time
            // on two cores).
            let rotate = env_num("BENCH_ROTATION", 1) == 1;
            // Without the rotations the Secrets stay at the first id; a later id in the
            // profile would start a rotation during the lag and restart figures.
            let last_id = if rotate { "bench-2" } else { "bench-0" };
            for (k, max) in [(1, 10), (2, 50)].into_iter().filter(|_| rotate) {
                let id = format!("bench-{k}");
                Api::<HardeningProfile>::all(c.clone())
                    .patch(
                        &profile,
                        &PatchParams::apply("bench").force(),
                        &Patch::Apply(profile_json(&profile, &run, &estate, &id, max, "0 0 1 1 *")),
                    )
                    .await?;
                let d = wait_rotation(&c, &profile, &id).await?;
                extra[format!("rotation_seconds_max_concurrent_{max}")] = json!(d.as_secs_f64());
                eprintln!(
                    "run {r}: rotation with maxConcurrentRestarts {max}: {:.1}s",
                    d.as_secs_f64()
                );
            }
            Api::<HardeningProfile>::all(c.clone())
                .patch(
                    &profile,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(profile_json(
                        &profile,
                        &run,
                        &estate,
                        last_id,
                        50,
                        "*/15 * * * * *",
                    )),
                )
                .await?;
            let lags = snapshot_lag(&c, &profile, 47).await?;
            extra["snapshot_lag_seconds"] =
                json!({"p50": pct(&lags, 50.0), "p99": pct(&lags, 99.0), "snapshots": lags.len()});
            eprintln!(
                "run {r}: snapshot lag p50 {:.3}s p99 {:.3}s over {} snapshots",
                pct(&lags, 50.0),
                pct(&lags, 99.0),
                lags.len()
            );
            Api::<HardeningProfile>::all(c.clone())
                .patch(
                    &profile,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(profile_json(
                        &profile,
                        &run,
                        &estate,
                        last_id,
                        50,
                        "0 0 1 1 *",
                    )),
                )
                .await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(op);
            let t = Instant::now();
            let op = Operator::start(&bin, &run, &format!("bench-{run}-restart.log")).await?;
            loop {
                let m = scrape(&op.addr).await.unwrap_or_default();
                if metric_sum(&m, "rampart_profile_ready", &[("profile", &profile)]) == 1.0
                    || t.elapsed() > Duration::from_secs(600)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let to_ready = t.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(30)).await;
            let w = op.writes(&profile).await;
            extra["startup"] = json!({"seconds_to_ready": to_ready, "writes_in_30s": w});
            eprintln!(
                "run {r}: restart over the converged estate: ready in {to_ready:.2}s, {w} writes"
            );
            let watched = watched_objects(&c).await?;
            let (_, rss, _) = proc_stats(op.pid());
            extra["memory_per_1000_watched_objects_mib"] =
                json!(rss as f64 / 1048576.0 / (watched as f64 / 1000.0));
            extra["watched_objects"] = json!(watched);
            delete_profile(&c, &profile).await?;
        } else {
            delete_profile(&c, &profile).await?;
            drop(op);
        }
        // Retained snapshots are data: the bench removes its own between runs.
        let snaps: Api<DynamicObject> = Api::all_with(c.clone(), &snapshot_ar());
        for s in snaps.list(&ListParams::default().labels(&sel)).await?.items {
            let ns = s.namespace().unwrap_or_default();
            let _ = Api::<DynamicObject>::namespaced_with(c.clone(), &ns, &snapshot_ar())
                .delete(&s.name_any(), &DeleteParams::default())
                .await;
        }
    }

    let ratio: Vec<f64> = conv.iter().zip(&floors).map(|(a, b)| a / b).collect();
    let result = json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "memory": std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().next().map(str::to_string))},
        "versions": {"kubernetes": c.apiserver_version().await.map(|v| v.git_version).unwrap_or_default(), "rampart": env!("CARGO_PKG_VERSION")},
        "n": n, "runs": runs, "idle_seconds": idle,
        "objects": {"network_policies": expected_np, "budgets": expected_pdb, "snapshots": expected_snap},
        "convergence_seconds": stats(&conv),
        "floor_seconds": stats(&floors),
        "convergence_over_floor": stats(&ratio),
        "writes_per_managed_object": stats(&writes_conv),
        "apiserver_write_requests_during_convergence": stats(&apiserver_conv),
        "writes_after_convergence": stats(&writes_idle),
        "drift_repair_p50_seconds": stats(&repair_p50),
        "drift_repair_p99_seconds": stats(&repair_p99),
        "peak_rss_mib": stats(&rss_peak),
        "idle_rss_mib": stats(&rss_idle),
        "cpu_seconds_convergence": stats(&cpu_conv),
        "cpu_seconds_idle": stats(&cpu_idle),
        "once": extra,
    });
    if let Some(dir) = out_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out_path, serde_json::to_string_pretty(&result)?)?;

    let row = |name: &str, v: &Value| {
        println!(
            "| {name:<44} | {:>10.3} | {:>10.3} | {:>10.3} |",
            v["median"].as_f64().unwrap_or(f64::NAN),
            v["min"].as_f64().unwrap_or(f64::NAN),
            v["max"].as_f64().unwrap_or(f64::NAN)
        );
    };
    println!(
        "\nRampart bench, N={n} namespaces, {runs} runs ({} cores; {})",
        result["machine"]["cores"], result["versions"]["kubernetes"]
    );
    println!(
        "| {:<44} | {:>10} | {:>10} | {:>10} |",
        "figure", "median", "min", "max"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(46),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(12)
    );
    row("convergence (s)", &result["convergence_seconds"]);
    row(
        "floor: bulk SSA of the same objects (s)",
        &result["floor_seconds"],
    );
    row("convergence / floor", &result["convergence_over_floor"]);
    row(
        "operator writes per managed object",
        &result["writes_per_managed_object"],
    );
    row(
        "API server write requests during convergence",
        &result["apiserver_write_requests_during_convergence"],
    );
    row(
        &format!("writes in the {idle} s after convergence"),
        &result["writes_after_convergence"],
    );
    row(
        "drift repair p50 (s), 100 deleted at once",
        &result["drift_repair_p50_seconds"],
    );
    row("drift repair p99 (s)", &result["drift_repair_p99_seconds"]);
    row("peak RSS during convergence (MiB)", &result["peak_rss_mib"]);
    row("RSS at idle (MiB)", &result["idle_rss_mib"]);
    row(
        "CPU seconds, convergence",
        &result["cpu_seconds_convergence"],
    );
    row("CPU seconds, idle window", &result["cpu_seconds_idle"]);
    println!("once: {}", serde_json::to_string(&result["once"])?);
    println!("JSON: {}", out_path.display());

    // Leave the cluster as we found it (unless asked to keep the estate for the next run).
    if !keep {
        delete_namespaces(&c, &format!("{ESTATE_LABEL}={estate}")).await?;
    }
    Ok(())
}

/// Every object the operator watches, counted from the API server: all namespaces, workloads,
/// budgets, Secrets and PVCs, and the NetworkPolicies and snapshots that carry Rampart's label.
async fn watched_objects(c: &Client) -> Result<usize> {
    let managed = format!(
        "{}={}",
        rampart::api::MANAGED_BY_LABEL,
        rampart::api::MANAGED_BY_VALUE
    );
    let kinds = [
        (ar("", "v1", "Namespace", "namespaces"), None),
        (ar("apps", "v1", "Deployment", "deployments"), None),
        (ar("apps", "v1", "StatefulSet", "statefulsets"), None),
        (ar("apps", "v1", "DaemonSet", "daemonsets"), None),
        (
            ar(
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
            ),
            None,
        ),
        (ar("", "v1", "Secret", "secrets"), None),
        (
            ar("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
            None,
        ),
        (
            ar(
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
            ),
            Some(&managed),
        ),
        (snapshot_ar(), Some(&managed)),
    ];
    let mut total = 0;
    for (r, selector) in kinds {
        let mut lp = ListParams::default();
        if let Some(s) = selector {
            lp = lp.labels(s.as_str());
        }
        total += Api::<DynamicObject>::all_with(c.clone(), &r)
            .list_metadata(&lp)
            .await?
            .items
            .len();
    }
    Ok(total)
}

/// Deletes the namespaces matching `label` and waits until they are gone; returns how long
/// that took.
async fn delete_namespaces(c: &Client, label: &str) -> Result<Duration> {
    let start = Instant::now();
    let nss = Api::<Namespace>::all(c.clone());
    for ns in nss.list(&ListParams::default().labels(label)).await?.items {
        let _ = nss
            .delete(&ns.name_any(), &DeleteParams::background())
            .await;
    }
    while !nss
        .list(&ListParams::default().labels(label).limit(1))
        .await?
        .items
        .is_empty()
    {
        if start.elapsed() > Duration::from_secs(900) {
            return Err(anyhow!("namespaces {label} not gone after 15 minutes"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(start.elapsed())
}
