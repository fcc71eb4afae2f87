//! `make bench-peers`: Rampart and Kyverno making the same NetworkPolicies and
//! PodDisruptionBudgets over the same estate, one after the other on the same API server,
//! next to the floor for those objects.
//!
//! One after the other rather than side by side: on two cores two controllers running at
//! once would share the CPU and the API server, and each would be measured partly by the
//! other's load. The order alternates between runs (Rampart first in even runs), so neither
//! always meets the warmer or the more loaded API server. Writes are counted for both from
//! the API server's audit log: each runs as a client identity of its own in
//! `rampart:audited`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::Client;
use rampart::api::HardeningProfile;
use rampart_e2e::AuditedIdentity;
use serde_json::{json, Value};

use crate::common::{
    budget_ar, delete_namespaces, drift_repair, load_average, network_policy_ar, stats,
    wait_present, Expected, ProcStats, Repair,
};
use crate::estate::{
    estate_namespace, expected_budgets, expected_policies, policies_and_budgets_profile,
    ESTATE_LABEL,
};
use crate::floor::{self, Floor, FloorKinds, Trial};
use crate::kyverno::{self, Kyverno, PEER_LABEL};
use crate::operator::{operator_binary, Operator};

/// Seconds between convergence and the idle window, so trailing status writes and events
/// count as convergence, not idle.
const SETTLE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    Rampart,
    Kyverno,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Rampart => "rampart",
            Contender::Kyverno => "kyverno",
        }
    }
}

/// One contender's figures in one run.
#[derive(Debug, Default)]
struct Figures {
    convergence: f64,
    writes: f64,
    writes_by_resource: BTreeMap<String, usize>,
    idle_writes: f64,
    idle_writes_without_leases: f64,
    repair: Option<Repair>,
    new_namespace_policies: Option<f64>,
    new_namespace_all: Option<f64>,
    peak_rss_mib: f64,
    idle_rss_mib: f64,
    cpu_convergence: f64,
    cpu_idle: f64,
    /// Why a figure is missing (a convergence that timed out).
    note: Option<String>,
}

impl Figures {
    fn json(&self, objects: usize) -> Value {
        json!({
            "convergence_seconds": self.convergence,
            "writes": self.writes,
            "writes_per_object": self.writes / objects as f64,
            "writes_by_resource": self.writes_by_resource,
            "idle_writes": self.idle_writes,
            "idle_writes_without_leases": self.idle_writes_without_leases,
            "drift_repair": self.repair.map(|r| r.json()),
            "new_namespace_policies_seconds": self.new_namespace_policies,
            "new_namespace_all_seconds": self.new_namespace_all,
            "peak_rss_mib": self.peak_rss_mib,
            "idle_rss_mib": self.idle_rss_mib,
            "cpu_seconds_convergence": self.cpu_convergence,
            "cpu_seconds_idle": self.cpu_idle,
            "note": self.note,
        })
    }
}

/// What a contender needs from the bench to be measured the same way as the other.
struct Measure<'a> {
    c: &'a Client,
    estate: &'a str,
    run: &'a str,
    n: usize,
    idle: Duration,
    identity: &'a AuditedIdentity,
}

impl Measure<'_> {
    fn objects(&self) -> usize {
        expected_policies(self.n) + expected_budgets(self.n)
    }

    fn expected(&self, selector: &str) -> Vec<Expected> {
        vec![
            Expected {
                resource: network_policy_ar(),
                selector: selector.to_string(),
                expected: expected_policies(self.n),
            },
            Expected {
                resource: budget_ar(),
                selector: selector.to_string(),
                expected: expected_budgets(self.n),
            },
        ]
    }

    /// Audited writes of the contender's identity between `from` and `to`, by resource.
    fn writes_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<String, usize>> {
        let mut by = BTreeMap::new();
        for w in self.identity.writes()? {
            if w.at >= from && w.at < to {
                *by.entry(w.resource).or_insert(0) += 1;
            }
        }
        Ok(by)
    }

    /// The common part: after `start` (the policies or profile just applied), wait for every
    /// object, settle, idle, then repair and a namespace labelled in. `stats` reads the
    /// contender's processes.
    async fn after_apply(
        &self,
        selector: &str,
        start: Instant,
        t0: DateTime<Utc>,
        s0: ProcStats,
        stats: impl Fn() -> ProcStats,
    ) -> Result<Figures> {
        let mut f = Figures::default();
        // A contender that does not converge in time is reported as such (NaN and what it
        // had made), not allowed to stop the comparison.
        let timeout = Duration::from_secs(crate::common::env_num("BENCH_PEERS_TIMEOUT", 1800));
        f.convergence =
            match wait_present(self.c, &self.expected(selector), start, timeout, || async {
                true
            })
            .await
            {
                Ok(d) => d.as_secs_f64(),
                Err(e) => {
                    eprintln!("  {e}");
                    f.note = Some(e.to_string());
                    f64::NAN
                }
            };
        let s1 = stats();
        f.peak_rss_mib = s1.peak_mib;
        f.cpu_convergence = s1.cpu_seconds - s0.cpu_seconds;
        tokio::time::sleep(SETTLE).await;
        let t1 = Utc::now();
        f.writes_by_resource = self.writes_between(t0, t1)?;
        f.writes = f.writes_by_resource.values().sum::<usize>() as f64;
        let s_idle0 = stats();
        tokio::time::sleep(self.idle).await;
        let t2 = Utc::now();
        let idle = self.writes_between(t1, t2)?;
        f.idle_writes = idle.values().sum::<usize>() as f64;
        f.idle_writes_without_leases =
            f.idle_writes - idle.get("leases").copied().unwrap_or(0) as f64;
        let s2 = stats();
        f.cpu_idle = s2.cpu_seconds - s_idle0.cpu_seconds;
        f.idle_rss_mib = s2.rss_mib;
        f.repair = Some(drift_repair(self.c, &network_policy_ar(), selector, 100).await?);
        (f.new_namespace_policies, f.new_namespace_all) = self.labelled_in(selector).await?;
        Ok(f)
    }

    /// A namespace like the estate's, created unlabelled, then labelled into the estate: the
    /// seconds until its 5 policies exist, and until its 3 budgets too (None where not within
    /// two minutes).
    async fn labelled_in(&self, selector: &str) -> Result<(Option<f64>, Option<f64>)> {
        let ns = format!("bench-{}-late-{}", self.run, Utc::now().timestamp());
        estate_namespace(
            self.c,
            &ns,
            json!({"bench.rampart.dev/late": self.run}),
            false,
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let nss = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.c.clone());
        let start = Instant::now();
        nss.patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {ESTATE_LABEL: self.estate}}})),
        )
        .await?;
        let count_in = |r: kube::core::ApiResource| {
            let api: Api<DynamicObject> = Api::namespaced_with(self.c.clone(), &ns, &r);
            let lp = ListParams::default().labels(selector);
            async move {
                api.list_metadata(&lp)
                    .await
                    .map(|l| l.items.len())
                    .unwrap_or(0)
            }
        };
        let (mut policies, mut all) = (None, None);
        while start.elapsed() < Duration::from_secs(120) && all.is_none() {
            if policies.is_none() && count_in(network_policy_ar()).await >= 5 {
                policies = Some(start.elapsed().as_secs_f64());
            }
            if policies.is_some() && count_in(budget_ar()).await >= 3 {
                all = Some(start.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        delete_namespaces(self.c, &format!("bench.rampart.dev/late={}", self.run)).await?;
        Ok((policies, all))
    }

    async fn rampart(&self, bin: &Path) -> Result<Figures> {
        let profile = format!("bench-{}", self.run);
        let op = Operator::start(
            bin,
            self.run,
            &format!("bench-peers-{}", self.run),
            &self.identity.kubeconfig,
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let s0 = op.stats();
        let t0 = Utc::now();
        let start = Instant::now();
        Api::<HardeningProfile>::all(self.c.clone())
            .patch(
                &profile,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(policies_and_budgets_profile(
                    &profile,
                    self.run,
                    self.estate,
                )),
            )
            .await?;
        let selector = format!("rampart.dev/profile={profile}");
        let f = self
            .after_apply(&selector, start, t0, s0, || op.stats())
            .await?;
        rampart_e2e::delete_profile_and_wait(self.c, &profile).await?;
        drop(op);
        Ok(f)
    }

    async fn kyverno(&self, peers_dir: &Path) -> Result<Figures> {
        let k = Kyverno::start(self.c, peers_dir, &self.identity.kubeconfig, self.run).await?;
        let s0 = k.stats();
        let t0 = Utc::now();
        let start = Instant::now();
        kyverno::apply_policies(self.c, &kyverno::cluster_policies(self.run, self.estate)?).await?;
        let selector = format!("{PEER_LABEL}={}", self.run);
        let f = self
            .after_apply(&selector, start, t0, s0, || k.stats())
            .await;
        k.stop().await?;
        kyverno::remove_policies(self.c, self.run).await?;
        f
    }
}

/// The whole comparison over the estate `estate` of `n` namespaces, `runs` times.
pub async fn compare(c: &Client, estate: &str, n: usize, runs: usize, idle: u64) -> Result<Value> {
    let bin = operator_binary();
    let peers_dir = kyverno::peers_dir()?;
    // A Kyverno killed by an earlier, interrupted bench leaves webhooks that would call a
    // dead URL.
    kyverno::remove_webhooks(c).await?;
    let rampart_id = AuditedIdentity::new("rampart-bench")?;
    let kyverno_id = AuditedIdentity::new(kyverno::USER)?;
    // The floor writes as an audited identity too: the local plane writes its audit log in
    // blocking mode, so an unaudited floor would be faster than either contender could be.
    let floor_client =
        rampart_e2e::client_from(&AuditedIdentity::new("floor-bench")?.kubeconfig).await?;
    let mut floors = vec![];
    let mut trials: Vec<Trial> = vec![];
    let mut per_run = vec![];
    let mut by: BTreeMap<&str, Vec<Figures>> = BTreeMap::new();
    let load_before = load_average();
    // BENCH_PEERS_ONLY=rampart (or kyverno) measures one contender against the floor: a
    // change to one is measured again without the other's hour.
    let only = std::env::var("BENCH_PEERS_ONLY").ok();
    for r in 0..runs {
        let run = format!("{estate}-p{r}");
        eprintln!("peers run {r}: load {}", load_average());
        let fl = Floor::prepare(c, &run, n, FloorKinds { snapshots: false }).await?;
        floors.push(floor::measure(&fl, &floor_client, &mut trials).await?);
        delete_namespaces(c, &format!("bench.rampart.dev/floor-run={run}")).await?;
        let order = if r % 2 == 0 {
            [Contender::Rampart, Contender::Kyverno]
        } else {
            [Contender::Kyverno, Contender::Rampart]
        };
        let mut this_run =
            json!({"order": order.map(Contender::name), "floor_seconds": floors.last()});
        for who in order
            .into_iter()
            .filter(|w| only.as_deref().is_none_or(|o| o == w.name()))
        {
            let m = Measure {
                c,
                estate,
                run: &format!("{run}-{}", who.name()),
                n,
                idle: Duration::from_secs(idle),
                identity: match who {
                    Contender::Rampart => &rampart_id,
                    Contender::Kyverno => &kyverno_id,
                },
            };
            let f = match who {
                Contender::Rampart => m.rampart(&bin).await?,
                Contender::Kyverno => m.kyverno(&peers_dir).await?,
            };
            eprintln!(
                "peers run {r}: {} converged in {:.2}s, {} writes, repair {:?}, new namespace {:?}",
                who.name(),
                f.convergence,
                f.writes,
                f.repair,
                f.new_namespace_all
            );
            this_run[who.name()] = f.json(m.objects());
            by.entry(who.name()).or_default().push(f);
        }
        per_run.push(this_run);
    }
    let objects = expected_policies(n) + expected_budgets(n);
    let figure = |who: &str, pick: &dyn Fn(&Figures) -> f64| -> Value {
        stats(
            &by.get(who)
                .map(|v| v.iter().map(pick).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
    };
    let mut summary = json!({});
    for who in ["rampart", "kyverno"] {
        summary[who] = json!({
            "convergence_seconds": figure(who, &|f| f.convergence),
            "writes_per_object": figure(who, &|f| f.writes / objects as f64),
            "idle_writes": figure(who, &|f| f.idle_writes),
            "idle_writes_without_leases": figure(who, &|f| f.idle_writes_without_leases),
            "drift_repair_p50_seconds": figure(who, &|f| f.repair.map_or(f64::NAN, |r| r.p50)),
            "drift_repair_p99_seconds": figure(who, &|f| f.repair.map_or(f64::NAN, |r| r.p99)),
            "drift_repaired_of_100": figure(who, &|f| f.repair.map_or(f64::NAN, |r| r.returned as f64)),
            "new_namespace_policies_seconds": figure(who, &|f| f.new_namespace_policies.unwrap_or(f64::NAN)),
            "new_namespace_all_seconds": figure(who, &|f| f.new_namespace_all.unwrap_or(f64::NAN)),
            "peak_rss_mib": figure(who, &|f| f.peak_rss_mib),
            "idle_rss_mib": figure(who, &|f| f.idle_rss_mib),
            "cpu_seconds_convergence": figure(who, &|f| f.cpu_convergence),
            "cpu_seconds_idle": figure(who, &|f| f.cpu_idle),
        });
    }
    Ok(json!({
        "n": n, "runs": runs, "idle_seconds": idle, "objects": objects,
        "load_average_before": load_before, "load_average_after": load_average(),
        "floor_seconds": stats(&floors),
        "floor_trials": trials.iter().map(Trial::json).collect::<Vec<_>>(),
        "floor_best": floor::best(&trials).map(|t| t.json()),
        "operator_max_concurrent_writes": crate::operator::max_concurrent_writes(),
        "summary": summary,
        "runs_detail": per_run,
    }))
}

/// The side-by-side table, medians, with ratios to the floor and Rampart over Kyverno.
pub fn print_table(result: &Value) {
    let s = &result["summary"];
    let med = |who: &str, key: &str| s[who][key]["median"].as_f64().unwrap_or(f64::NAN);
    let floor = result["floor_seconds"]["median"]
        .as_f64()
        .unwrap_or(f64::NAN);
    println!(
        "\nRampart and Kyverno, N={} namespaces ({} policies and budgets), {} runs, medians; load {} → {}",
        result["n"], result["objects"], result["runs"], result["load_average_before"].as_str().unwrap_or(""),
        result["load_average_after"].as_str().unwrap_or("")
    );
    if let Some(b) = result["floor_best"].as_object() {
        println!(
            "floor: {:.2}s ({} with {} in flight won the sweep)",
            floor,
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
        "| {:<46} | {:>10} | {:>10} | {:>16} |",
        "figure", "Rampart", "Kyverno", "Rampart/Kyverno"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(48),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(18)
    );
    let row = |name: &str, key: &str| {
        let (a, b) = (med("rampart", key), med("kyverno", key));
        println!("| {name:<46} | {a:>10.3} | {b:>10.3} | {:>16.2} |", a / b);
    };
    row(
        "convergence, all objects present (s)",
        "convergence_seconds",
    );
    let (a, b) = (
        med("rampart", "convergence_seconds"),
        med("kyverno", "convergence_seconds"),
    );
    println!(
        "| {:<46} | {:>10.2} | {:>10.2} | {:>16} |",
        "convergence / floor (medians)",
        a / floor,
        b / floor,
        ""
    );
    // Each run's convergence over the same run's floor, then the median: a run whose floor
    // was fast is not flattered by another run's slow one.
    let per_run = |who: &str| {
        let conv = s[who]["convergence_seconds"]["runs"].as_array();
        let floors = result["floor_seconds"]["runs"].as_array();
        let mut r: Vec<f64> = match (conv, floors) {
            (Some(c), Some(f)) => c
                .iter()
                .zip(f)
                .filter_map(|(c, f)| Some(c.as_f64()? / f.as_f64()?))
                .collect(),
            _ => vec![],
        };
        crate::common::sort_f64(&mut r);
        crate::common::pct(&r, 50.0)
    };
    println!(
        "| {:<46} | {:>10.2} | {:>10.2} | {:>16} |",
        "convergence / floor (median of each run's)",
        per_run("rampart"),
        per_run("kyverno"),
        ""
    );
    row("API writes per object (audit log)", "writes_per_object");
    row(
        &format!("writes in {} s idle (all)", result["idle_seconds"]),
        "idle_writes",
    );
    row(
        "writes in the idle window, leases excluded",
        "idle_writes_without_leases",
    );
    row(
        "drift repair p50 (s), 100 policies deleted",
        "drift_repair_p50_seconds",
    );
    row("drift repair p99 (s)", "drift_repair_p99_seconds");
    row(
        "deleted policies back within 120 s (of 100)",
        "drift_repaired_of_100",
    );
    row(
        "namespace labelled in → its 5 policies (s)",
        "new_namespace_policies_seconds",
    );
    row(
        "… and its 3 budgets (s; NaN: not within 120 s)",
        "new_namespace_all_seconds",
    );
    row("peak RSS to convergence (MiB)", "peak_rss_mib");
    row("RSS after idle (MiB)", "idle_rss_mib");
    row("CPU seconds, convergence", "cpu_seconds_convergence");
    row("CPU seconds, idle window", "cpu_seconds_idle");
    println!(
        "| {:<46} | {:>10} | {:>10} | {:>16} |",
        "drift reported in a status", "yes", "no", ""
    );
    println!(
        "| {:<46} | {:>10} | {:>10} | {:>16} |",
        "Audit mode for generated objects", "yes", "no", ""
    );
}
