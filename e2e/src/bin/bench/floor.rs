//! The floor: the fastest a plain client on this machine writes the objects a profile asks
//! for. The same objects (computed with the operator's own pure functions) are written by
//! create (POST) and by server-side apply at several concurrencies into namespaces of their
//! own; the best of those is the floor. Convergence / floor >= 1 then by construction.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::{stream, StreamExt, TryStreamExt};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use rampart::api::{DisruptionBudgetControl, NetworkPolicyControl};
use rampart::controls::disruption_budgets::{
    desired_disruption_budgets, WorkloadInfo, WorkloadKind,
};
use rampart::controls::network_policies::desired_network_policies;
use serde_json::{json, Value};

use crate::common::{
    api_for, budget_ar, create, delete_labelled, network_policy_ar, resource_of, snapshot_ar,
    CONCURRENCY,
};
use crate::estate::profile_json;

/// How a floor trial writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Create,
    ServerSideApply,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Create => "create",
            Method::ServerSideApply => "server-side apply",
        }
    }
}

/// Writes in flight tried by the sweep.
pub const SWEEP: [usize; 5] = [8, 16, 32, 64, 128];

/// One trial: a method at a concurrency, and how long the objects took.
#[derive(Clone, Copy, Debug)]
pub struct Trial {
    pub method: Method,
    pub concurrency: usize,
    pub seconds: f64,
}

impl Trial {
    pub fn json(&self) -> Value {
        json!({"method": self.method.name(), "in_flight": self.concurrency, "seconds": self.seconds})
    }
}

/// Which of the profile's objects the floor writes: the scale bench writes policies, budgets
/// and first snapshots; the peer comparison only policies and budgets (what Kyverno makes).
#[derive(Clone, Copy)]
pub struct FloorKinds {
    pub snapshots: bool,
}

/// The policies, budgets (and snapshots) the bench profile asks for in one namespace of the
/// estate, computed with the operator's own pure functions: the floor writes exactly these.
pub fn floor_objects(
    profile: &str,
    ns: &str,
    with_user_pdb: bool,
    kinds: FloorKinds,
) -> Result<Vec<Value>> {
    let p = profile_json(profile, "floor", "floor", "bench-0", 10, "0 0 1 1 *");
    let np: NetworkPolicyControl = serde_json::from_value(p["spec"]["networkPolicies"].clone())?;
    let pdb: DisruptionBudgetControl =
        serde_json::from_value(p["spec"]["podDisruptionBudgets"].clone())?;
    let mut out: Vec<Value> = desired_network_policies(profile, &np, &Default::default(), ns)
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
    if kinds.snapshots {
        for p in 0..2 {
            out.push(json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": format!("data-{p}-20260101-000000"), "namespace": ns,
                             "labels": {"app.kubernetes.io/managed-by": "rampart", "rampart.dev/profile": profile, "rampart.dev/control": "snapshot"}},
                "spec": {"volumeSnapshotClassName": "csi-snapclass", "source": {"persistentVolumeClaimName": format!("data-{p}")}}}));
        }
    }
    Ok(out)
}

/// Namespaces of the floor's own (so the operator never watches its objects: they are
/// deleted before the operator starts) and the objects to write into them.
pub struct Floor {
    pub profile: String,
    objects: Vec<(String, Value)>,
    kinds: FloorKinds,
}

impl Floor {
    /// Creates `n` namespaces labelled `bench.rampart.dev/floor-run=<run>`.
    pub async fn prepare(c: &Client, run: &str, n: usize, kinds: FloorKinds) -> Result<Self> {
        let profile = format!("floor-{run}");
        let namespaces: Vec<String> = (0..n).map(|i| format!("bench-floor-{run}-{i}")).collect();
        stream::iter(namespaces.iter())
            .map(|ns| create(c, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"bench.rampart.dev/floor-run": run}}})))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let mut objects = vec![];
        for (i, ns) in namespaces.iter().enumerate() {
            for o in floor_objects(&profile, ns, i % 10 == 0, kinds)? {
                objects.push((ns.clone(), o));
            }
        }
        Ok(Self {
            profile,
            objects,
            kinds,
        })
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Writes every object by `method`, `concurrency` in flight; how long it took.
    pub async fn write(&self, c: &Client, method: Method, concurrency: usize) -> Result<Duration> {
        let start = Instant::now();
        stream::iter(self.objects.iter())
            .map(|(ns, o)| write_one(c, ns, o, method))
            .buffer_unordered(concurrency)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(start.elapsed())
    }

    /// Deletes what a trial wrote, so the next trial creates rather than updates.
    pub async fn clear(&self, c: &Client) -> Result<()> {
        let sel = format!("rampart.dev/profile={}", self.profile);
        delete_labelled(c, &network_policy_ar(), &sel).await?;
        delete_labelled(c, &budget_ar(), &sel).await?;
        if self.kinds.snapshots {
            delete_labelled(c, &snapshot_ar(), &sel).await?;
        }
        Ok(())
    }

    /// Every method at every concurrency of `SWEEP`, clearing between trials; all trials
    /// in the order run.
    pub async fn sweep(&self, c: &Client) -> Result<Vec<Trial>> {
        let mut trials = vec![];
        for method in [Method::Create, Method::ServerSideApply] {
            for concurrency in SWEEP {
                let t = self.write(c, method, concurrency).await?;
                let trial = Trial {
                    method,
                    concurrency,
                    seconds: t.as_secs_f64(),
                };
                eprintln!(
                    "  floor: {} objects by {} with {concurrency} in flight: {:.2}s",
                    self.len(),
                    method.name(),
                    trial.seconds
                );
                trials.push(trial);
                self.clear(c).await?;
            }
        }
        Ok(trials)
    }
}

/// `BENCH_FLOOR=create:64` (or `apply:32`) skips the sweep and writes the floor that way only
/// (for N=3000, where ten trials of 30,000 objects would take longer than the rest of the
/// bench; use the winner of a smaller N).
pub fn fixed_from_env() -> Option<(Method, usize)> {
    let v = std::env::var("BENCH_FLOOR").ok()?;
    let (m, k) = v.split_once(':')?;
    let method = match m {
        "create" => Method::Create,
        "apply" => Method::ServerSideApply,
        _ => return None,
    };
    Some((method, k.parse().ok()?))
}

/// The floor of one run: the whole sweep when `trials` is empty (the first run), then the
/// trial that won it; or only the `BENCH_FLOOR` choice. Records what it ran in `trials`.
pub async fn measure(fl: &Floor, c: &Client, trials: &mut Vec<Trial>) -> Result<f64> {
    let chosen = fixed_from_env().or_else(|| best(trials).map(|t| (t.method, t.concurrency)));
    match chosen {
        None => {
            *trials = fl.sweep(c).await?;
            Ok(best(trials).map_or(f64::NAN, |t| t.seconds))
        }
        Some((method, concurrency)) => {
            let seconds = fl.write(c, method, concurrency).await?.as_secs_f64();
            if trials.is_empty() {
                trials.push(Trial {
                    method,
                    concurrency,
                    seconds,
                });
            }
            Ok(seconds)
        }
    }
}

/// The fastest trial.
pub fn best(trials: &[Trial]) -> Option<Trial> {
    trials
        .iter()
        .copied()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
}

async fn write_one(c: &Client, ns: &str, o: &Value, method: Method) -> Result<()> {
    let api = api_for(c, Some(ns), &resource_of(o)?);
    match method {
        Method::Create => {
            let obj: DynamicObject = serde_json::from_value(o.clone())?;
            api.create(&PostParams::default(), &obj).await?;
        }
        Method::ServerSideApply => {
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            api.patch(
                name,
                &PatchParams::apply("bench-floor").force(),
                &Patch::Apply(o),
            )
            .await?;
        }
    }
    Ok(())
}
