//! Helpers every bench phase shares: API resources by kind, creating objects from JSON,
//! counting and deleting, `/proc` figures, percentiles, and timing the repair of deleted
//! objects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use rampart_e2e::metric_sum;
use serde_json::{json, Value};

/// Writes in flight for the bench's own bulk work (estate, deletions); the floor sweeps its own.
pub const CONCURRENCY: usize = 32;

pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn network_policy_ar() -> ApiResource {
    ar(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    )
}

pub fn budget_ar() -> ApiResource {
    ar(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    )
}

pub fn snapshot_ar() -> ApiResource {
    ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}

/// The API resource of an object given as JSON, for the kinds the bench writes.
pub fn resource_of(obj: &Value) -> Result<ApiResource> {
    let (group, version) = match obj["apiVersion"].as_str().unwrap_or("v1").split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), "v1".to_string()),
    };
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let plural = match kind.as_str() {
        "Namespace" => "namespaces",
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        "PersistentVolumeClaim" => "persistentvolumeclaims",
        "Secret" => "secrets",
        "ConfigMap" => "configmaps",
        "NetworkPolicy" => "networkpolicies",
        "PodDisruptionBudget" => "poddisruptionbudgets",
        "VolumeSnapshot" => "volumesnapshots",
        "ClusterPolicy" => "clusterpolicies",
        _ => return Err(anyhow!("the bench does not know the kind {kind}")),
    };
    Ok(ar(&group, &version, &kind, plural))
}

/// An `Api` for `r` in namespace `ns`, or cluster-wide.
pub fn api_for(c: &Client, ns: Option<&str>, r: &ApiResource) -> Api<DynamicObject> {
    match ns {
        Some(ns) => Api::namespaced_with(c.clone(), ns, r),
        None => Api::all_with(c.clone(), r),
    }
}

/// Creates an object given as JSON; one that already exists is left as it is.
pub async fn create(c: &Client, ns: Option<&str>, obj: Value) -> Result<()> {
    let api = api_for(c, ns, &resource_of(&obj)?);
    let o: DynamicObject = serde_json::from_value(obj)?;
    match api.create(&PostParams::default(), &o).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Objects of `r` matching `selector`, in all namespaces.
pub async fn count(c: &Client, r: &ApiResource, selector: &str) -> usize {
    Api::<DynamicObject>::all_with(c.clone(), r)
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// VolumeSnapshots of `r` matching `selector` whose `status.readyToUse` is true.
pub async fn count_ready(c: &Client, r: &ApiResource, selector: &str) -> usize {
    Api::<DynamicObject>::all_with(c.clone(), r)
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|o| o.data["status"]["readyToUse"].as_bool() == Some(true))
                .count()
        })
        .unwrap_or(0)
}

/// What a convergence waits for: at least `expected` objects of `resource` with `selector`.
pub struct Expected {
    pub resource: ApiResource,
    pub selector: String,
    pub expected: usize,
}

/// Whether every `Expected` count is reached; polled by the convergence loops.
pub async fn all_present(c: &Client, wanted: &[Expected]) -> bool {
    for w in wanted {
        if count(c, &w.resource, &w.selector).await < w.expected {
            return false;
        }
    }
    true
}

/// Polls every 100 ms until `all_present` (and `also`, when given, holds); the time it took
/// from `start`. Fails after `timeout`, naming the counts last seen.
pub async fn wait_present<F, Fut>(
    c: &Client,
    wanted: &[Expected],
    start: Instant,
    timeout: Duration,
    mut also: F,
) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if all_present(c, wanted).await && also().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            let mut seen = vec![];
            for w in wanted {
                seen.push(format!(
                    "{} {}/{}",
                    w.resource.plural,
                    count(c, &w.resource, &w.selector).await,
                    w.expected
                ));
            }
            return Err(anyhow!(
                "not converged after {timeout:?}: {}",
                seen.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes every object of `r` with `selector` (listed, then deleted `CONCURRENCY` at a
/// time) and waits until none is left.
pub async fn delete_labelled(c: &Client, r: &ApiResource, selector: &str) -> Result<()> {
    let all = Api::<DynamicObject>::all_with(c.clone(), r);
    let start = Instant::now();
    loop {
        let items = all
            .list_metadata(&ListParams::default().labels(selector))
            .await?
            .items;
        if items.is_empty() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err(anyhow!(
                "{} {} {selector} left after 10 minutes",
                items.len(),
                r.plural
            ));
        }
        stream::iter(items)
            .map(|o| {
                let api = api_for(c, o.metadata.namespace.as_deref(), r);
                let name = o.name_any();
                async move {
                    match api.delete(&name, &DeleteParams::background()).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
    }
}

/// Deletes the namespaces matching `label` and waits until they are gone; returns how long
/// that took.
pub async fn delete_namespaces(c: &Client, label: &str) -> Result<Duration> {
    let start = Instant::now();
    let nss = Api::<Namespace>::all(c.clone());
    for ns in nss
        .list_metadata(&ListParams::default().labels(label))
        .await?
        .items
    {
        let _ = nss
            .delete(&ns.name_any(), &DeleteParams::background())
            .await;
    }
    while !nss
        .list_metadata(&ListParams::default().labels(label).limit(1))
        .await?
        .items
        .is_empty()
    {
        if start.elapsed() > Duration::from_secs(1800) {
            return Err(anyhow!("namespaces {label} not gone after 30 minutes"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(start.elapsed())
}

/// Peak RSS, current RSS (MiB) and CPU seconds (user + system) of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub peak_mib: f64,
    pub rss_mib: f64,
    pub cpu_seconds: f64,
}

impl std::ops::Add for ProcStats {
    type Output = ProcStats;
    fn add(self, o: ProcStats) -> ProcStats {
        ProcStats {
            peak_mib: self.peak_mib + o.peak_mib,
            rss_mib: self.rss_mib + o.rss_mib,
            cpu_seconds: self.cpu_seconds + o.cpu_seconds,
        }
    }
}

pub fn proc_stats(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
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
    ProcStats {
        peak_mib: mib("VmHWM:"),
        rss_mib: mib("VmRSS:"),
        cpu_seconds: (ticks(11) + ticks(12)) / 100.0,
    }
}

/// The API server's own count of writes to the kinds Rampart manages.
pub async fn apiserver_writes(c: &Client) -> f64 {
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

pub fn sort_f64(v: &mut [f64]) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
}

/// The `p`th percentile of sorted values (nearest rank); NaN when empty.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Median, min, max and every run's value.
pub fn stats(v: &[f64]) -> Value {
    let mut s = v.to_vec();
    sort_f64(&mut s);
    json!({"median": pct(&s, 50.0), "min": s.first().copied().unwrap_or(f64::NAN), "max": s.last().copied().unwrap_or(f64::NAN), "runs": v})
}

/// Times the return of deleted objects: `delete` them, then `wait`. A watch on `r` with
/// `selector` takes, for each deleted (namespace, name), the first object of that name with
/// another uid as its return. An object may be deleted again once it has returned.
pub struct RepairTimer {
    state: Arc<Mutex<RepairState>>,
    watch: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct RepairState {
    /// Deleted and not yet back: the uid it had and when it was deleted.
    pending: HashMap<(String, String), (String, Instant)>,
    /// Seconds from deletion to return, of every object that came back.
    times: Vec<f64>,
}

impl RepairTimer {
    /// Starts the watch and waits until it has listed (2 s), so no return is missed.
    pub async fn start(c: &Client, r: &ApiResource, selector: &str) -> Self {
        let state: Arc<Mutex<RepairState>> = Arc::default();
        let seen = state.clone();
        let api = Api::<DynamicObject>::all_with(c.clone(), r);
        let sel = selector.to_string();
        let watch = tokio::spawn(async move {
            let s = watcher(api, watcher::Config::default().labels(&sel))
                .default_backoff()
                .applied_objects();
            futures::pin_mut!(s);
            // A watch error is retried by the backoff; the loop must outlive it.
            while let Some(ev) = s.next().await {
                let Ok(o) = ev else { continue };
                let key = (o.namespace().unwrap_or_default(), o.name_any());
                let Ok(mut st) = seen.lock() else { continue };
                let returned = st
                    .pending
                    .get(&key)
                    .is_some_and(|(uid, _)| Some(uid) != o.uid().as_ref());
                if returned {
                    if let Some((_, at)) = st.pending.remove(&key) {
                        st.times.push(at.elapsed().as_secs_f64());
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        Self { state, watch }
    }

    /// Deletes `victims` (namespace, name, uid) `CONCURRENCY` at a time, recording when.
    pub async fn delete(
        &self,
        c: &Client,
        r: &ApiResource,
        victims: &[(String, String, String)],
    ) -> Result<()> {
        let now = Instant::now();
        if let Ok(mut st) = self.state.lock() {
            for (ns, name, uid) in victims {
                st.pending
                    .insert((ns.clone(), name.clone()), (uid.clone(), now));
            }
        }
        stream::iter(victims.to_vec())
            .map(|(ns, name, _)| {
                let api = api_for(c, Some(&ns), r);
                async move {
                    match api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => Ok(()),
                        // Already gone (deleted by its owner meanwhile): still timed.
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Whether (namespace, name) was deleted and has not come back yet.
    pub fn is_pending(&self, ns: &str, name: &str) -> bool {
        self.state
            .lock()
            .is_ok_and(|st| st.pending.contains_key(&(ns.to_string(), name.to_string())))
    }

    /// Waits up to `timeout` for every deleted object to return; the sorted repair times and
    /// how many did not come back.
    pub async fn wait(self, timeout: Duration) -> Result<(Vec<f64>, usize)> {
        let deadline = Instant::now() + timeout;
        while self
            .state
            .lock()
            .map(|st| !st.pending.is_empty())
            .unwrap_or(false)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.watch.abort();
        let st = self.state.lock().map_err(|_| anyhow!("lock"))?;
        let mut times = st.times.clone();
        sort_f64(&mut times);
        Ok((times, st.pending.len()))
    }
}

/// `count` objects of `r` with `selector`, spread evenly over the list: (namespace, name, uid).
pub async fn pick_victims(
    c: &Client,
    r: &ApiResource,
    selector: &str,
    count: usize,
) -> Result<Vec<(String, String, String)>> {
    let all = Api::<DynamicObject>::all_with(c.clone(), r)
        .list_metadata(&ListParams::default().labels(selector))
        .await?
        .items;
    let step = (all.len() / count.max(1)).max(1);
    Ok(all
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
        .collect())
}

/// Deletes `count` objects of `r` with `selector` at once and times each one's return
/// (p50, p99 and how many did not return within two minutes).
pub async fn drift_repair(
    c: &Client,
    r: &ApiResource,
    selector: &str,
    count: usize,
) -> Result<Repair> {
    let victims = pick_victims(c, r, selector, count).await?;
    let timer = RepairTimer::start(c, r, selector).await;
    timer.delete(c, r, &victims).await?;
    let (times, missing) = timer.wait(Duration::from_secs(120)).await?;
    Ok(Repair::of(&times, missing))
}

/// Repair times of a set of deleted objects.
#[derive(Clone, Copy, Debug)]
pub struct Repair {
    pub p50: f64,
    pub p99: f64,
    pub returned: usize,
    pub missing: usize,
}

impl Repair {
    pub fn of(sorted: &[f64], missing: usize) -> Self {
        if missing > 0 {
            eprintln!(
                "  {missing} of {} deleted objects did not come back in time",
                sorted.len() + missing
            );
        }
        Self {
            p50: pct(sorted, 50.0),
            p99: pct(sorted, 99.0),
            returned: sorted.len(),
            missing,
        }
    }

    pub fn json(&self) -> Value {
        json!({"p50": self.p50, "p99": self.p99, "returned": self.returned, "missing": self.missing})
    }
}

/// The machine's load averages (1, 5, 15 min), read from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
