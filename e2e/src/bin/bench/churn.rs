//! Churn (issue 11): while 10 random Deployments of the estate are scaled up or down every
//! second, what the operator spends (CPU), writes (per churn event) and how fast it still
//! repairs drift (managed NetworkPolicies deleted during the churn).
//!
//! The Deployments move between 3 and 4 replicas: both are above the profile's `minReplicas`,
//! so no desired object changes and every write during the churn beyond the repairs is waste.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use rand::seq::IndexedRandom;
use serde_json::{json, Value};

use crate::common::{network_policy_ar, pick_victims, proc_stats, Repair, RepairTimer};
use crate::operator::Operator;

/// Scale events per second, seconds of churn, and the drift injected meanwhile.
pub struct ChurnPlan {
    pub events_per_second: usize,
    pub seconds: u64,
    /// Managed NetworkPolicies deleted every `delete_every` during the churn.
    pub deletes_per_batch: usize,
    pub delete_every: Duration,
}

impl Default for ChurnPlan {
    fn default() -> Self {
        Self {
            events_per_second: 10,
            seconds: 60,
            deletes_per_batch: 5,
            delete_every: Duration::from_secs(5),
        }
    }
}

/// What the operator did during the churn.
pub struct ChurnResult {
    pub events: usize,
    pub cpu_seconds: f64,
    pub writes: f64,
    pub repairs: usize,
    pub repair: Repair,
}

impl ChurnResult {
    /// Writes per scale event, the repairs (one create per deleted policy) taken out.
    pub fn writes_per_event(&self) -> f64 {
        (self.writes - self.repair.returned as f64).max(0.0) / self.events.max(1) as f64
    }

    pub fn cpu_share_of_one_core(&self, seconds: u64) -> f64 {
        self.cpu_seconds / seconds as f64
    }

    pub fn json(&self, seconds: u64) -> Value {
        json!({
            "scale_events": self.events,
            "cpu_seconds": self.cpu_seconds,
            "cpu_share_of_one_core": self.cpu_share_of_one_core(seconds),
            "operator_writes": self.writes,
            "policies_deleted": self.repairs,
            "writes_per_scale_event_excluding_repairs": self.writes_per_event(),
            "drift_repair_during_churn": self.repair.json(),
        })
    }
}

/// Runs the churn over the Deployments in `namespaces` while `op` manages `profile`.
pub async fn churn(
    c: &Client,
    op: &Operator,
    profile: &str,
    namespaces: &[String],
    plan: &ChurnPlan,
) -> Result<ChurnResult> {
    let deployments: Vec<(String, String)> = namespaces
        .iter()
        .flat_map(|ns| ["web-0", "web-1"].map(|d| (ns.clone(), d.to_string())))
        .collect();
    let mut replicas: HashMap<(String, String), i32> =
        deployments.iter().map(|k| (k.clone(), 3)).collect();
    let sel = format!("rampart.dev/profile={profile}");
    let np = network_policy_ar();
    let timer = RepairTimer::start(c, &np, &sel).await;
    let writes0 = op.writes(profile).await;
    let cpu0 = proc_stats(op.pid()).cpu_seconds;
    let start = Instant::now();
    let mut events = 0;
    let mut deleted = 0;
    let mut next_delete = start + plan.delete_every;
    for second in 0..plan.seconds {
        let tick = start + Duration::from_secs(second);
        tokio::time::sleep_until(tick.into()).await;
        let picked: Vec<(String, String)> = deployments
            .choose_multiple(&mut rand::rng(), plan.events_per_second)
            .cloned()
            .collect();
        let scaled: Vec<((String, String), i32)> = picked
            .into_iter()
            .map(|k| {
                let to = if replicas[&k] == 3 { 4 } else { 3 };
                (k, to)
            })
            .collect();
        scale(c, &scaled).await?;
        for (k, to) in scaled {
            replicas.insert(k, to);
            events += 1;
        }
        if Instant::now() >= next_delete {
            next_delete += plan.delete_every;
            // Fresh victims each time, none still awaiting its return.
            let victims: Vec<_> = pick_random_policies(c, &sel, plan.deletes_per_batch * 2)
                .await?
                .into_iter()
                .filter(|(ns, name, _)| !timer.is_pending(ns, name))
                .take(plan.deletes_per_batch)
                .collect();
            timer.delete(c, &np, &victims).await?;
            deleted += victims.len();
        }
    }
    let (times, missing) = timer.wait(Duration::from_secs(60)).await?;
    let cpu1 = proc_stats(op.pid()).cpu_seconds;
    let writes1 = op.writes(profile).await;
    // Leave the estate as the churn found it.
    let back: Vec<((String, String), i32)> = replicas
        .into_iter()
        .filter(|(_, r)| *r != 3)
        .map(|(k, _)| (k, 3))
        .collect();
    scale(c, &back).await?;
    Ok(ChurnResult {
        events,
        cpu_seconds: cpu1 - cpu0,
        writes: writes1 - writes0,
        repairs: deleted,
        repair: Repair::of(&times, missing),
    })
}

async fn scale(c: &Client, to: &[((String, String), i32)]) -> Result<()> {
    stream::iter(to.iter())
        .map(|((ns, name), r)| {
            let api = Api::<Deployment>::namespaced(c.clone(), ns);
            async move {
                api.patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": r}})),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn pick_random_policies(
    c: &Client,
    selector: &str,
    count: usize,
) -> Result<Vec<(String, String, String)>> {
    let all = pick_victims(c, &network_policy_ar(), selector, usize::MAX).await?;
    Ok(all
        .choose_multiple(&mut rand::rng(), count)
        .cloned()
        .collect())
}
