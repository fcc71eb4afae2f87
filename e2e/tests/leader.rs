//! Leader election: of two replicas exactly one writes; when it dies, the other takes over
//! within the lease duration and finishes a pending repair.

use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use rampart::api::HardeningProfile;
use rampart_e2e::{
    client, delete_profile_and_wait, metric_sum, scrape, unique_id, wait_until, OperatorProcess,
    TestNamespace, DEDICATED_LABEL,
};
use serde_json::json;

const LEASE_DURATION: Duration = Duration::from_secs(15);

async fn is_leader(op: &OperatorProcess) -> bool {
    scrape(&op.metrics_addr)
        .await
        .map(|m| metric_sum(&m, "rampart_leader", &[]) == 1.0)
        .unwrap_or(false)
}

async fn writes(op: &OperatorProcess) -> f64 {
    scrape(&op.metrics_addr)
        .await
        .map(|m| metric_sum(&m, "rampart_api_writes_total", &[]))
        .unwrap_or(f64::NAN)
}

#[tokio::test]
async fn one_replica_writes_and_the_other_takes_over_within_the_lease() -> Result<()> {
    let c = client().await?;
    let id = unique_id();
    let tag = format!("leader-{id}");
    let lease = format!("rampart-e2e-{id}");
    let run = format!("leader-{id}");
    let ns =
        TestNamespace::create_named(&c, &format!("e2e-{run}"), &[("e2e.rampart.dev/run", &run)])
            .await?;
    let flags = [
        "--leader-elect",
        "--leader-elect-namespace",
        "default",
        "--leader-elect-lease",
        lease.as_str(),
    ];

    let mut first = OperatorProcess::start_with(&tag, &flags).await?;
    wait_until(
        "the first replica to lead",
        Duration::from_secs(30),
        || async { (is_leader(&first).await, String::new()) },
    )
    .await?;
    let second = OperatorProcess::start_with(&tag, &flags).await?;

    let name = format!("leader-{id}");
    let profile = json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: tag}},
        "spec": {"namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": run}}, "networkPolicies": {}}
    });
    let profiles = Api::<HardeningProfile>::all(c.clone());
    profiles
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(profile),
        )
        .await?;
    let nps = Api::<NetworkPolicy>::namespaced(c.clone(), &ns.name);
    wait_until(
        "the leader to create the default-deny",
        Duration::from_secs(30),
        || async {
            (
                matches!(nps.get_opt("rampart-default-deny").await, Ok(Some(_))),
                String::new(),
            )
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !is_leader(&second).await,
        "the second replica must be standing by"
    );
    assert_eq!(
        writes(&second).await,
        0.0,
        "a standby replica wrote to the API server"
    );
    assert!(writes(&first).await > 0.0);

    // Kill the leader, then drift: only the standby can repair it, once it holds the lease.
    first.kill();
    let killed = Instant::now();
    let old_uid = nps.get("rampart-allow-dns").await?.uid();
    nps.delete("rampart-allow-dns", &DeleteParams::default())
        .await?;
    wait_until(
        "the standby to take over and repair",
        LEASE_DURATION + Duration::from_secs(15),
        || async {
            let back = nps
                .get_opt("rampart-allow-dns")
                .await
                .ok()
                .flatten()
                .is_some_and(|p| p.uid() != old_uid);
            (back, format!("leader: {}", is_leader(&second).await))
        },
    )
    .await?;
    let took = killed.elapsed();
    assert!(is_leader(&second).await);
    assert!(
        took <= LEASE_DURATION + Duration::from_secs(5),
        "takeover and repair took {took:?}, more than the lease duration and one retry"
    );
    eprintln!("takeover and repair took {took:?} (lease duration {LEASE_DURATION:?})");

    delete_profile_and_wait(&c, &name).await?;
    drop(second);
    Ok(())
}
