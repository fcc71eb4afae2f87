//! `make bench`: how fast Rampart converges, how little it writes and spends, idle and under
//! churn, and how small it stays, next to the floor the API server sets for the same objects.
//! `make bench-peers` (BENCH_PEERS=1): Rampart and Kyverno over the same estate. Each prints a
//! table and writes JSON.
//!
//! Environment: BENCH_N (namespaces, default 100), BENCH_RUNS (default 3), BENCH_IDLE_SECS
//! (default 120), BENCH_ROTATION (1; 0 skips the rotation figures), BENCH_CHURN (1; 0 skips
//! the churn phase), BENCH_PEERS (1: the Kyverno comparison instead of the scale bench),
//! BENCH_OPERATOR (the operator binary, default target/release/rampart), BENCH_OUT (JSON
//! path, default target/bench/bench-<N>-<unix time>.json or peers-<N>-…), BENCH_ESTATE
//! (reuse the estate with this id), BENCH_KEEP (1 leaves the estate in place), BENCH_RUNS=0
//! (only build the estate), BENCH_FLOOR (`create:64`: no floor sweep, only that method and
//! concurrency), BENCH_PRINT_KYVERNO_POLICIES (an estate id: print the Kyverno policies),
//! BENCH_PEERS_ONLY (`rampart` or `kyverno`: measure only that contender beside the floor),
//! BENCH_SETTLE_SECS (the longest wait for the first snapshots to turn ready, default 1800;
//! past it the run goes on and records how many were), BENCH_ADMISSION (1; 0 skips the
//! admission policy's cost after the scale bench), BENCH_ADMISSION_ONLY (1: only that, no
//! estate; `make bench-admission`), BENCH_ADMISSION_N (writes per mode, default 200).

mod admission;
mod churn;
mod common;
mod estate;
mod floor;
mod kyverno;
mod operator;
mod peers;

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart_e2e::{client, kubeconfig_path, repo_root};
use serde_json::{json, Value};

use common::{
    api_for, apiserver_writes, budget_ar, count_ready, delete_namespaces, drift_repair, env_num,
    load_average, network_policy_ar, pct, snapshot_ar, sort_f64, stats, wait_present, Expected,
};
use estate::{
    build_estate, estate_names, expected_budgets, expected_policies, expected_snapshots,
    profile_json, ESTATE_LABEL,
};
use floor::{Floor, FloorKinds, Trial};
use operator::{operator_binary, Operator};

/// Snapshot lag's target: p99 within 1.2× the time the floor's create rate needs for one
/// slot's snapshots, plus 0.5 s.
fn snapshot_lag_target(snapshots_per_slot: usize, floor_objects_per_second: f64) -> f64 {
    1.2 * (snapshots_per_slot as f64 / floor_objects_per_second) + 0.5
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

async fn apply_profile(c: &Client, profile: &str, manifest: Value) -> Result<()> {
    Api::<HardeningProfile>::all(c.clone())
        .patch(
            profile,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(manifest),
        )
        .await?;
    Ok(())
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

/// The lag phase's schedule period: 15 s while a slot's snapshots take well under that to
/// write at the floor's rate, else 30 s, so that one slot's writes end before the next slot.
fn lag_period_seconds(snapshots_per_slot: usize, floor_objects_per_second: f64) -> u64 {
    if snapshot_lag_target(snapshots_per_slot, floor_objects_per_second) > 12.0 {
        30
    } else {
        15
    }
}

/// What the lag phase saw of the slots that had a whole period to be written.
struct Lags {
    /// Seconds from slot to the snapshot's appearance in a watch, sorted.
    seconds: Vec<f64>,
    slots: usize,
    /// Snapshots those slots should have made that never appeared.
    missing: usize,
}

/// Lag between each slot and the moment its snapshot appears in a watch, over `periods`
/// periods of the schedule. Only slots followed by a whole period inside the window count,
/// and their snapshots that never appeared are counted as missing rather than ignored.
async fn snapshot_lag(
    c: &Client,
    profile: &str,
    period: u64,
    periods: u64,
    per_slot: usize,
) -> Result<Lags> {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    use std::sync::{Arc, Mutex};
    let api = api_for(c, None, &snapshot_ar());
    let sel = format!("rampart.dev/profile={profile}");
    // (slot, lag in seconds) of each snapshot seen.
    type Seen = Vec<(chrono::DateTime<chrono::Utc>, f64)>;
    let lags: Arc<Mutex<Seen>> = Arc::default();
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
                .map(|t| t.with_timezone(&chrono::Utc))
            else {
                continue;
            };
            // Names repeat across namespaces (every namespace has data-0): key by both.
            if slot < start || !known.insert((o.namespace().unwrap_or_default(), o.name_any())) {
                continue;
            }
            let lag = (now - slot).num_milliseconds() as f64 / 1000.0;
            seen.lock().map(|mut v| v.push((slot, lag))).ok();
        }
    });
    tokio::time::sleep(Duration::from_secs(period * periods + 2)).await;
    watch.abort();
    let end = chrono::Utc::now();
    let all = lags.lock().map_err(|_| anyhow!("lock"))?.clone();
    let whole = |slot: &chrono::DateTime<chrono::Utc>| {
        *slot + chrono::Duration::seconds(period as i64) <= end
    };
    let slots: std::collections::BTreeSet<_> =
        all.iter().map(|(slot, _)| *slot).filter(whole).collect();
    let mut seconds: Vec<f64> = all
        .iter()
        .filter(|(slot, _)| whole(slot))
        .map(|(_, lag)| *lag)
        .collect();
    sort_f64(&mut seconds);
    let missing = (slots.len() * per_slot).saturating_sub(seconds.len());
    Ok(Lags {
        seconds,
        slots: slots.len(),
        missing,
    })
}

async fn delete_profile(c: &Client, name: &str) -> Result<()> {
    let api = Api::<HardeningProfile>::all(c.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    for _ in 0..1200 {
        if matches!(api.get_opt(name).await, Ok(None)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(anyhow!("profile {name} was not deleted"))
}

/// Every object the operator watches, counted from the API server: all namespaces, workloads,
/// budgets, Secrets and PVCs, and the NetworkPolicies and snapshots that carry Rampart's label.
async fn watched_objects(c: &Client) -> Result<usize> {
    use kube::core::{ApiResource, GroupVersionKind};
    let managed = format!(
        "{}={}",
        rampart::api::MANAGED_BY_LABEL,
        rampart::api::MANAGED_BY_VALUE
    );
    let core = |g: &str, k: &str, p: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, "v1", k), p)
    };
    let kinds = [
        (core("", "Namespace", "namespaces"), None),
        (core("apps", "Deployment", "deployments"), None),
        (core("apps", "StatefulSet", "statefulsets"), None),
        (core("apps", "DaemonSet", "daemonsets"), None),
        (budget_ar(), None),
        (core("", "Secret", "secrets"), None),
        (
            core("", "PersistentVolumeClaim", "persistentvolumeclaims"),
            None,
        ),
        (network_policy_ar(), Some(&managed)),
        (snapshot_ar(), Some(&managed)),
    ];
    let mut total = 0;
    for (r, selector) in kinds {
        let mut lp = ListParams::default();
        if let Some(s) = selector {
            lp = lp.labels(s.as_str());
        }
        total += api_for(c, None, &r).list_metadata(&lp).await?.items.len();
    }
    Ok(total)
}

/// The floor of one run (see `floor::measure`); its namespaces are deleted (and gone) before
/// the operator starts.
async fn measure_floor(
    c: &Client,
    run: &str,
    n: usize,
    trials: &mut Vec<Trial>,
) -> Result<(f64, usize)> {
    let fl = Floor::prepare(c, run, n, FloorKinds { snapshots: true }).await?;
    let seconds = floor::measure(&fl, c, trials).await?;
    let gone = delete_namespaces(c, &format!("bench.rampart.dev/floor-run={run}")).await?;
    eprintln!(
        "floor: {} objects in {seconds:.2}s; its namespaces deleted in {:.1}s",
        fl.len(),
        gone.as_secs_f64()
    );
    Ok((seconds, fl.len()))
}

#[derive(Default)]
struct Series {
    conv: Vec<f64>,
    floors: Vec<f64>,
    writes_conv: Vec<f64>,
    apiserver_conv: Vec<f64>,
    writes_idle: Vec<f64>,
    settle_seconds: Vec<f64>,
    /// First snapshots ready when the settle ended (all of them unless BENCH_SETTLE_SECS cut it).
    settle_ready: Vec<f64>,
    settle_cpu: Vec<f64>,
    settle_writes: Vec<f64>,
    repair_p50: Vec<f64>,
    repair_p99: Vec<f64>,
    rss_peak: Vec<f64>,
    rss_idle: Vec<f64>,
    cpu_conv: Vec<f64>,
    cpu_idle: Vec<f64>,
    churn_cpu: Vec<f64>,
    churn_cpu_share: Vec<f64>,
    churn_writes_per_event: Vec<f64>,
    churn_repair_p99: Vec<f64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // BENCH_PRINT_KYVERNO_POLICIES=<estate>: print the ClusterPolicies the comparison applies
    // (as YAML-compatible JSON, for reading or applying by hand) and stop.
    if let Ok(estate) = std::env::var("BENCH_PRINT_KYVERNO_POLICIES") {
        for p in kyverno::cluster_policies("by-hand", &estate)? {
            println!("{}\n---", serde_json::to_string_pretty(&p)?);
        }
        return Ok(());
    }
    // BENCH_ADMISSION_ONLY=1 (make bench-admission): only the admission policy's cost, no
    // estate and no operator.
    if env_num("BENCH_ADMISSION_ONLY", 0) == 1 {
        let c = client().await?;
        let r = admission::measure(&c).await?;
        let path = std::env::var("BENCH_OUT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                repo_root().join(format!(
                    "target/bench/admission-{}.json",
                    chrono::Utc::now().timestamp()
                ))
            });
        write_json(&path, &r)?;
        admission::print_table(&r);
        println!("JSON: {}", path.display());
        return Ok(());
    }
    let n = env_num("BENCH_N", 100) as usize;
    let runs = env_num("BENCH_RUNS", 3) as usize;
    let idle = env_num("BENCH_IDLE_SECS", 120);
    let peers = env_num("BENCH_PEERS", 0) == 1;
    let stamp = chrono::Utc::now().timestamp();
    let kind = if peers { "peers" } else { "bench" };
    let out_path = std::env::var("BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(format!("target/bench/{kind}-{n}-{stamp}.json")));
    let c = client().await?;
    // BENCH_ESTATE reuses an estate a previous run left behind with BENCH_KEEP=1 (creation is
    // idempotent), so profiling the operator at N=1000 need not wait for 8,000 pods each time.
    let estate = std::env::var("BENCH_ESTATE").unwrap_or_else(|_| format!("e{stamp}"));
    let keep = env_num("BENCH_KEEP", 0) == 1;
    eprintln!(
        "{kind}: N={n} namespaces, {runs} runs, idle window {idle}s, operator {}, load {}",
        operator_binary().display(),
        load_average()
    );
    build_estate(&c, &estate, n).await?;
    if runs == 0 {
        eprintln!("bench: BENCH_RUNS=0, estate {estate} left in place");
        return Ok(());
    }
    let result = if peers {
        let r = peers::compare(&c, &estate, n, runs, idle).await?;
        write_json(&out_path, &r)?;
        peers::print_table(&r);
        r
    } else {
        let mut r = scale_bench(&c, &estate, n, runs, idle).await?;
        // BENCH_ADMISSION=0 skips the admission policy's cost.
        if env_num("BENCH_ADMISSION", 1) == 1 {
            r["admission"] = admission::measure(&c).await?;
        }
        write_json(&out_path, &r)?;
        print_scale_table(&r);
        if r["admission"].is_object() {
            admission::print_table(&r["admission"]);
        }
        r
    };
    let _ = result;
    println!("JSON: {}", out_path.display());
    // Leave the cluster as we found it (unless asked to keep the estate for the next run).
    if !keep {
        delete_namespaces(&c, &format!("{ESTATE_LABEL}={estate}")).await?;
    }
    Ok(())
}

fn write_json(path: &std::path::Path, v: &Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(v)?)?;
    Ok(())
}

async fn scale_bench(c: &Client, estate: &str, n: usize, runs: usize, idle: u64) -> Result<Value> {
    let bin = operator_binary();
    let kubeconfig = kubeconfig_path();
    let with_churn = env_num("BENCH_CHURN", 1) == 1;
    let (expected_np, expected_pdb, expected_snap) = (
        expected_policies(n),
        expected_budgets(n),
        expected_snapshots(n),
    );
    let mut s = Series::default();
    let mut trials: Vec<Trial> = vec![];
    let mut floor_rate = f64::NAN;
    let mut extra = json!({});
    let load_before = load_average();

    for r in 0..runs {
        let run = format!("{estate}-r{r}");
        let profile = format!("bench-{run}");
        eprintln!("run {r}: load {}", load_average());
        let (floor_seconds, floor_objects) = measure_floor(c, &run, n, &mut trials).await?;
        s.floors.push(floor_seconds);
        floor_rate = floor_objects as f64 / floor_seconds;

        let op = Operator::start(&bin, &run, &format!("bench-{run}"), &kubeconfig).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu0 = op.stats().cpu_seconds;
        let api_before = apiserver_writes(c).await;
        let start = Instant::now();
        apply_profile(
            c,
            &profile,
            profile_json(&profile, &run, estate, "bench-0", 10, "0 0 1 1 *"),
        )
        .await?;
        let sel = format!("rampart.dev/profile={profile}");
        let expected = [
            (network_policy_ar(), expected_np),
            (budget_ar(), expected_pdb),
            (snapshot_ar(), expected_snap),
        ]
        .map(|(resource, expected)| Expected {
            resource,
            selector: sel.clone(),
            expected,
        });
        let t = wait_present(c, &expected, start, Duration::from_secs(1800), || {
            ready(c, &profile)
        })
        .await?
        .as_secs_f64();
        s.conv.push(t);
        let w = op.writes(&profile).await;
        s.writes_conv
            .push(w / (expected_np + expected_pdb + expected_snap) as f64);
        s.apiserver_conv
            .push(apiserver_writes(c).await - api_before);
        let st = op.stats();
        s.rss_peak.push(st.peak_mib);
        s.cpu_conv.push(st.cpu_seconds - cpu0);
        eprintln!(
            "run {r}: converged in {t:.2}s with {w} writes (ratio to floor {:.2})",
            t / floor_seconds
        );

        // Convergence counts snapshots created; the snapshot controller and the CSI driver
        // then cut them and turn them ready over minutes, every one an event for the
        // operator. That is work, not idleness: measured on its own, and the idle window
        // starts once every first snapshot is ready.
        // BENCH_SETTLE_SECS bounds the wait (default 1800): past it the run goes on and
        // records how many were ready, since at N=3000 the CSI stack on two cores, not the
        // operator, sets the pace.
        let settle_start = Instant::now();
        let settle_limit = Duration::from_secs(env_num("BENCH_SETTLE_SECS", 1800));
        let ready_at_end = loop {
            let ready = count_ready(c, &snapshot_ar(), &sel).await;
            if ready >= expected_snap || settle_start.elapsed() > settle_limit {
                break ready;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        s.settle_ready.push(ready_at_end as f64);
        if ready_at_end < expected_snap {
            eprintln!(
                "run {r}: {ready_at_end} of {expected_snap} first snapshots ready after {:.0}s (BENCH_SETTLE_SECS); going on",
                settle_start.elapsed().as_secs_f64()
            );
        }
        // A pass after the last snapshot turned ready (the operator gathers snapshot
        // events for 2 s) writes the final counts; that belongs to settling too.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (w, st) = {
            let settled = op.stats();
            let ws = op.writes(&profile).await;
            s.settle_seconds.push(settle_start.elapsed().as_secs_f64());
            s.settle_cpu.push(settled.cpu_seconds - st.cpu_seconds);
            s.settle_writes.push(ws - w);
            eprintln!(
                "run {r}: every first snapshot ready {:.1}s after convergence; operator {:.2} CPU seconds, {} writes meanwhile",
                settle_start.elapsed().as_secs_f64(),
                settled.cpu_seconds - st.cpu_seconds,
                ws - w
            );
            (ws, settled)
        };

        tokio::time::sleep(Duration::from_secs(idle)).await;
        let w2 = op.writes(&profile).await;
        s.writes_idle.push(w2 - w);
        let st2 = op.stats();
        s.rss_idle.push(st2.rss_mib);
        s.cpu_idle.push(st2.cpu_seconds - st.cpu_seconds);
        eprintln!(
            "run {r}: {} writes and {:.2} CPU seconds in the {idle}s idle window; RSS {:.1} MiB",
            w2 - w,
            st2.cpu_seconds - st.cpu_seconds,
            st2.rss_mib
        );

        let rep = drift_repair(c, &network_policy_ar(), &sel, 100).await?;
        s.repair_p50.push(rep.p50);
        s.repair_p99.push(rep.p99);
        eprintln!(
            "run {r}: drift repair p50 {:.3}s p99 {:.3}s",
            rep.p50, rep.p99
        );

        if with_churn {
            let plan = churn::ChurnPlan::default();
            let ch = churn::churn(c, &op, &profile, &estate_names(estate, n), &plan).await?;
            eprintln!(
                "run {r}: churn of {} scale events in {}s: {:.2} CPU seconds ({:.0}% of a core), {} writes ({:.3} per event without repairs), repair p99 {:.3}s ({} deleted, {} not back)",
                ch.events,
                plan.seconds,
                ch.cpu_seconds,
                100.0 * ch.cpu_share_of_one_core(plan.seconds),
                ch.writes,
                ch.writes_per_event(),
                ch.repair.p99,
                ch.repairs,
                ch.repair.missing
            );
            s.churn_cpu.push(ch.cpu_seconds);
            s.churn_cpu_share
                .push(ch.cpu_share_of_one_core(plan.seconds));
            s.churn_writes_per_event.push(ch.writes_per_event());
            s.churn_repair_p99.push(ch.repair.p99);
            extra[format!("churn_run_{r}")] = ch.json(plan.seconds);
        }

        if r + 1 == runs {
            last_run_figures(
                c, &bin, estate, &run, &profile, op, n, floor_rate, &mut extra,
            )
            .await?;
        } else {
            delete_profile(c, &profile).await?;
            drop(op);
        }
        // Retained snapshots are data: the bench removes its own between runs. Each run's
        // profile has its own label, so snapshots the CSI stack is still deleting after the
        // wait cannot be counted by the next run: that is a warning, not a lost run (at
        // N=3000 the stack deletes tens of thousands more slowly than the wait allows).
        if let Err(e) = common::delete_labelled(c, &snapshot_ar(), &sel).await {
            eprintln!("run {r}: warning: {e}");
        }
    }

    let ratio: Vec<f64> = s.conv.iter().zip(&s.floors).map(|(a, b)| a / b).collect();
    Ok(json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "memory": std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().next().map(str::to_string))},
        "versions": {"kubernetes": c.apiserver_version().await.map(|v| v.git_version).unwrap_or_default(), "rampart": env!("CARGO_PKG_VERSION")},
        "load_average_before": load_before, "load_average_after": load_average(),
        "n": n, "runs": runs, "idle_seconds": idle,
        "objects": {"network_policies": expected_np, "budgets": expected_pdb, "snapshots": expected_snap},
        "convergence_seconds": stats(&s.conv),
        "floor_seconds": stats(&s.floors),
        "floor_trials": trials.iter().map(Trial::json).collect::<Vec<_>>(),
        "floor_best": floor::best(&trials).map(|t| t.json()),
        "operator_max_concurrent_writes": crate::operator::max_concurrent_writes(),
        "floor_objects_per_second_last_run": floor_rate,
        "convergence_over_floor": stats(&ratio),
        "writes_per_managed_object": stats(&s.writes_conv),
        "apiserver_write_requests_during_convergence": stats(&s.apiserver_conv),
        "first_snapshots_ready_seconds_after_convergence": stats(&s.settle_seconds),
        "first_snapshots_ready_at_settle_end": stats(&s.settle_ready),
        "cpu_seconds_while_snapshots_turn_ready": stats(&s.settle_cpu),
        "writes_while_snapshots_turn_ready": stats(&s.settle_writes),
        "writes_after_convergence": stats(&s.writes_idle),
        "drift_repair_p50_seconds": stats(&s.repair_p50),
        "drift_repair_p99_seconds": stats(&s.repair_p99),
        "peak_rss_mib": stats(&s.rss_peak),
        "idle_rss_mib": stats(&s.rss_idle),
        "cpu_seconds_convergence": stats(&s.cpu_conv),
        "cpu_seconds_idle": stats(&s.cpu_idle),
        "churn_cpu_seconds": stats(&s.churn_cpu),
        "churn_cpu_share_of_one_core": stats(&s.churn_cpu_share),
        "churn_writes_per_scale_event": stats(&s.churn_writes_per_event),
        "churn_drift_repair_p99_seconds": stats(&s.churn_repair_p99),
        "once": extra,
    }))
}

/// Last run only, so every convergence before starts from the same estate: rotation twice,
/// then snapshot lag on a seconds schedule, then a restart over the converged estate.
#[allow(clippy::too_many_arguments)]
async fn last_run_figures(
    c: &Client,
    bin: &std::path::Path,
    estate: &str,
    run: &str,
    profile: &str,
    op: Operator,
    n: usize,
    floor_rate: f64,
    extra: &mut Value,
) -> Result<()> {
    // BENCH_ROTATION=0 skips the rotations (3,000 rollouts at N=1000 take a long time on two
    // cores). Without them the Secrets stay at the first id; a later id in the profile would
    // start a rotation during the lag and restart figures.
    let rotate = env_num("BENCH_ROTATION", 1) == 1;
    let last_id = if rotate { "bench-2" } else { "bench-0" };
    for (k, max) in [(1, 10), (2, 50)].into_iter().filter(|_| rotate) {
        let id = format!("bench-{k}");
        apply_profile(
            c,
            profile,
            profile_json(profile, run, estate, &id, max, "0 0 1 1 *"),
        )
        .await?;
        let d = wait_rotation(c, profile, &id).await?;
        extra[format!("rotation_seconds_max_concurrent_{max}")] = json!(d.as_secs_f64());
        eprintln!(
            "rotation with maxConcurrentRestarts {max}: {:.1}s",
            d.as_secs_f64()
        );
    }
    let per_slot = expected_snapshots(n);
    let period = lag_period_seconds(per_slot, floor_rate);
    apply_profile(
        c,
        profile,
        profile_json(
            profile,
            run,
            estate,
            last_id,
            50,
            &format!("*/{period} * * * * *"),
        ),
    )
    .await?;
    let lags = snapshot_lag(c, profile, period, 3, per_slot).await?;
    let target = snapshot_lag_target(per_slot, floor_rate);
    let p99 = pct(&lags.seconds, 99.0);
    extra["snapshot_lag_seconds"] = json!({"p50": pct(&lags.seconds, 50.0), "p99": p99, "snapshots": lags.seconds.len(),
        "slots": lags.slots, "missing": lags.missing, "schedule_period_seconds": period,
        "target_p99": target, "floor_objects_per_second": floor_rate,
        "met": lags.slots > 0 && lags.missing == 0 && p99 <= target});
    eprintln!(
        "snapshot lag every {period}s: p50 {:.3}s p99 {p99:.3}s over {} snapshots of {} whole slots, {} missing (target p99 {target:.2}s)",
        pct(&lags.seconds, 50.0),
        lags.seconds.len(),
        lags.slots,
        lags.missing
    );
    apply_profile(
        c,
        profile,
        profile_json(profile, run, estate, last_id, 50, "0 0 1 1 *"),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(op);
    let t = Instant::now();
    let op = Operator::start(
        bin,
        run,
        &format!("bench-{run}-restart"),
        &kubeconfig_path(),
    )
    .await?;
    op.wait_ready_metric(profile, Duration::from_secs(600))
        .await;
    let to_ready = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let w = op.writes(profile).await;
    extra["startup"] = json!({"seconds_to_ready": to_ready, "writes_in_30s": w});
    eprintln!("restart over the converged estate: ready in {to_ready:.2}s, {w} writes");
    let watched = watched_objects(c).await?;
    let rss = op.stats().rss_mib;
    extra["memory_per_1000_watched_objects_mib"] = json!(rss / (watched as f64 / 1000.0));
    extra["watched_objects"] = json!(watched);
    delete_profile(c, profile).await?;
    Ok(())
}

fn print_scale_table(result: &Value) {
    let idle = &result["idle_seconds"];
    let row = |name: &str, key: &str| {
        let v = &result[key];
        println!(
            "| {name:<46} | {:>10.3} | {:>10.3} | {:>10.3} |",
            v["median"].as_f64().unwrap_or(f64::NAN),
            v["min"].as_f64().unwrap_or(f64::NAN),
            v["max"].as_f64().unwrap_or(f64::NAN)
        );
    };
    println!(
        "\nRampart bench, N={} namespaces, {} runs ({} cores; {}); load {} → {}",
        result["n"],
        result["runs"],
        result["machine"]["cores"],
        result["versions"]["kubernetes"],
        result["load_average_before"].as_str().unwrap_or(""),
        result["load_average_after"].as_str().unwrap_or("")
    );
    if let Some(b) = result["floor_best"].as_object() {
        println!(
            "floor: the best of create and server-side apply at 8/16/32/64/128 in flight: {} with {} won",
            b["method"].as_str().unwrap_or(""),
            b["in_flight"]
        );
    }
    println!(
        "Rampart writes {} in flight per profile",
        result["operator_max_concurrent_writes"]
            .as_str()
            .unwrap_or("")
    );
    println!(
        "| {:<46} | {:>10} | {:>10} | {:>10} |",
        "figure", "median", "min", "max"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(48),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(12)
    );
    for (name, key) in [
        ("convergence (s)", "convergence_seconds"),
        (
            "floor: fastest plain client, same objects (s)",
            "floor_seconds",
        ),
        ("convergence / floor", "convergence_over_floor"),
        (
            "operator writes per managed object",
            "writes_per_managed_object",
        ),
        (
            "API server write requests during convergence",
            "apiserver_write_requests_during_convergence",
        ),
        (
            "first snapshots all ready, after convergence (s)",
            "first_snapshots_ready_seconds_after_convergence",
        ),
        (
            "first snapshots ready when the settle ended",
            "first_snapshots_ready_at_settle_end",
        ),
        (
            "CPU seconds while they turn ready",
            "cpu_seconds_while_snapshots_turn_ready",
        ),
        (
            "writes while they turn ready",
            "writes_while_snapshots_turn_ready",
        ),
        (
            &format!("writes in the {idle} s idle window"),
            "writes_after_convergence",
        ),
        (
            "drift repair p50 (s), 100 deleted at once",
            "drift_repair_p50_seconds",
        ),
        ("drift repair p99 (s)", "drift_repair_p99_seconds"),
        ("peak RSS during convergence (MiB)", "peak_rss_mib"),
        ("RSS at idle (MiB)", "idle_rss_mib"),
        ("CPU seconds, convergence", "cpu_seconds_convergence"),
        (
            &format!("CPU seconds, {idle} s idle window"),
            "cpu_seconds_idle",
        ),
        ("churn: CPU seconds in 60 s", "churn_cpu_seconds"),
        ("churn: share of one core", "churn_cpu_share_of_one_core"),
        (
            "churn: writes per scale event",
            "churn_writes_per_scale_event",
        ),
        (
            "churn: drift repair p99 (s)",
            "churn_drift_repair_p99_seconds",
        ),
    ] {
        row(name, key);
    }
    println!("once: {}", result["once"]);
}
