//! Leader election: of two replicas exactly one writes and both are ready; when the leader
//! dies the other takes over within the lease duration and finishes a pending repair; a
//! leader frozen past its lease writes nothing once it wakes (the API server's audit log is
//! the witness); SIGTERM hands the lease over at once.

use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use rampart::api::HardeningProfile;
use rampart_e2e::{
    client, delete_profile_and_wait, is_ready, metric_sum, scrape, unique_id, wait_until,
    AuditedIdentity, OperatorProcess, TestNamespace, DEDICATED_LABEL,
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
    let flags = leader_flags(&lease, lease_namespace());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();

    let mut first = OperatorProcess::start_with(&tag, &flags).await?;
    wait_until(
        "the first replica to lead",
        Duration::from_secs(30),
        || async { (is_leader(&first).await, String::new()) },
    )
    .await?;
    let second = OperatorProcess::start_with(&tag, &flags).await?;
    wait_until(
        "the standby to be ready (caches synced) while it does not lead",
        Duration::from_secs(30),
        || async {
            (
                is_ready(&second.metrics_addr).await && is_ready(&first.metrics_addr).await,
                String::new(),
            )
        },
    )
    .await?;

    let name = format!("leader-{id}");
    let profile = json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: tag}},
        "spec": {"mode": "Enforce", "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": run}}, "networkPolicies": {}}
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
    delete_and_await_repair(&nps, "rampart-allow-dns", &second).await?;
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

/// Deletes the policy `name` and waits until `standby` (once it leads) has re-created it: a
/// repair only a leader can make.
async fn delete_and_await_repair(
    nps: &Api<NetworkPolicy>,
    name: &str,
    standby: &OperatorProcess,
) -> Result<()> {
    let old_uid = nps.get(name).await?.uid();
    nps.delete(name, &DeleteParams::default()).await?;
    wait_until(
        "the standby to take over and repair",
        LEASE_DURATION + Duration::from_secs(15),
        || async {
            let back = nps
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .is_some_and(|p| p.uid() != old_uid);
            (back, format!("standby leads: {}", is_leader(standby).await))
        },
    )
    .await
}

/// Where operators started by [`OperatorProcess::start_with`] elect: `default`, or, when they
/// act as Rampart's ServiceAccount (`RAMPART_E2E_IDENTITY=serviceaccount`), its own namespace,
/// where the shipped Role grants it the Lease (and nowhere else).
fn lease_namespace() -> &'static str {
    if std::env::var_os("RAMPART_E2E_OPERATOR_KUBECONFIG").is_some() {
        "rampart-system"
    } else {
        "default"
    }
}

fn leader_flags(lease: &str, namespace: &str) -> Vec<String> {
    [
        "--leader-elect",
        "--leader-elect-namespace",
        namespace,
        "--leader-elect-lease",
        lease,
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test]
async fn a_frozen_leader_writes_nothing_after_its_lease_and_the_standby_takes_over() -> Result<()> {
    let c = client().await?;
    let id = unique_id();
    let tag = format!("frozen-{id}");
    let lease = format!("rampart-e2e-{id}");
    let run = format!("frozen-{id}");
    let ns =
        TestNamespace::create_named(&c, &format!("e2e-{run}"), &[("e2e.rampart.dev/run", &run)])
            .await?;
    // Its replicas act with certificates of their own, which may elect in `default`.
    let flags = leader_flags(&lease, "default");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // Each replica has its own certificate, so the API server's audit log says who wrote.
    let a = AuditedIdentity::new(&format!("e2e-frozen-a-{id}"))?;
    let b = AuditedIdentity::new(&format!("e2e-frozen-b-{id}"))?;
    let mut first = OperatorProcess::start_as(&tag, &flags, &a.kubeconfig).await?;
    wait_until(
        "the first replica to lead",
        Duration::from_secs(30),
        || async { (is_leader(&first).await, String::new()) },
    )
    .await?;
    let second = OperatorProcess::start_as(&tag, &flags, &b.kubeconfig).await?;

    let name = format!("frozen-{id}");
    let profile = json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: tag}},
        "spec": {"mode": "Enforce", "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": run}}, "networkPolicies": {}}
    });
    Api::<HardeningProfile>::all(c.clone())
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(profile),
        )
        .await?;
    let nps = Api::<NetworkPolicy>::namespaced(c.clone(), &ns.name);
    wait_until(
        "the leader to create the policies",
        Duration::from_secs(30),
        || async {
            (
                matches!(
                    nps.get_opt("rampart-allow-same-namespace").await,
                    Ok(Some(_))
                ),
                String::new(),
            )
        },
    )
    .await?;
    // Let at least one renewal land after the profile's writes.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Freeze the leader: its connections stay open, nothing it has queued can run.
    first.signal("STOP")?;
    let frozen_at = chrono::Utc::now();
    let frozen = Instant::now();
    let last_renewal = a
        .writes()?
        .into_iter()
        .filter(|w| w.resource == "leases" && w.succeeded() && w.at <= frozen_at)
        .map(|w| w.at)
        .max()
        .ok_or_else(|| anyhow::anyhow!("the leader's lease writes are not in the audit log"))?;
    let lease_ran_out = last_renewal + chrono::Duration::from_std(LEASE_DURATION)?;

    // Drift that only a leader can repair.
    delete_and_await_repair(&nps, "rampart-allow-dns", &second).await?;
    let takeover = frozen.elapsed();
    assert!(is_leader(&second).await);

    // Wake the old leader with work waiting for it: a deletion its watch will deliver.
    nps.delete("rampart-allow-same-namespace", &DeleteParams::default())
        .await?;
    first.signal("CONT")?;
    let exit = first.wait_exit(Duration::from_secs(20)).await;
    assert!(
        exit.is_some(),
        "the woken leader must notice it lost the lease and exit"
    );
    // The new leader repairs the second deletion; the old one must not have.
    wait_until(
        "the standby to repair again",
        Duration::from_secs(20),
        || async {
            (
                matches!(
                    nps.get_opt("rampart-allow-same-namespace").await,
                    Ok(Some(_))
                ),
                String::new(),
            )
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let a_writes = a.writes()?;
    let before = a_writes.iter().filter(|w| w.at <= frozen_at).count();
    let after_lease: Vec<_> = a_writes
        .iter()
        .filter(|w| w.at > lease_ran_out && w.succeeded())
        .collect();
    let attempted_after_freeze = a_writes.iter().filter(|w| w.at > frozen_at).count();
    let b_writes = b
        .writes()?
        .into_iter()
        .filter(|w| w.succeeded() && w.resource != "leases")
        .count();
    eprintln!(
        "frozen leader: {before} writes before the freeze, {} after its lease ran out, {attempted_after_freeze} requests of any kind after the freeze; standby took over and repaired in {takeover:?} (lease {LEASE_DURATION:?}) and made {b_writes} writes",
        after_lease.len()
    );
    assert!(
        before > 0,
        "the audit log must show the leader's own writes"
    );
    assert!(
        after_lease.is_empty(),
        "the frozen leader wrote after its lease ran out: {after_lease:?}"
    );
    assert!(
        b_writes > 0,
        "the new leader's repairs are in the audit log"
    );
    assert!(
        takeover <= LEASE_DURATION + Duration::from_secs(5),
        "takeover took {takeover:?}"
    );

    delete_profile_and_wait(&c, &name).await?;
    drop(second);
    Ok(())
}

#[tokio::test]
async fn sigterm_hands_the_lease_over_at_once() -> Result<()> {
    let id = unique_id();
    let tag = format!("handover-{id}");
    let lease = format!("rampart-e2e-{id}");
    let flags = leader_flags(&lease, lease_namespace());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut first = OperatorProcess::start_with(&tag, &flags).await?;
    wait_until(
        "the first replica to lead",
        Duration::from_secs(30),
        || async { (is_leader(&first).await, String::new()) },
    )
    .await?;
    let second = OperatorProcess::start_with(&tag, &flags).await?;
    wait_until(
        "the standby to be ready",
        Duration::from_secs(30),
        || async { (is_ready(&second.metrics_addr).await, String::new()) },
    )
    .await?;
    assert!(!is_leader(&second).await);

    first.signal("TERM")?;
    let sent = Instant::now();
    while !is_leader(&second).await {
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "the standby did not take over within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let handover = sent.elapsed();
    eprintln!("SIGTERM to the leader until the standby led: {handover:?}");
    assert!(
        handover < Duration::from_secs(2),
        "handover took {handover:?}; a released lease must be taken at once"
    );
    let exit = first.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "a SIGTERM is a clean, prompt exit"
    );
    drop(second);
    Ok(())
}

#[tokio::test]
async fn an_operator_with_no_profile_is_ready() -> Result<()> {
    // The profile selector matches nothing: an install before any profile is applied.
    let op = OperatorProcess::start(&format!("empty-{}", unique_id())).await?;
    wait_until("/readyz to answer 200", Duration::from_secs(30), || async {
        (is_ready(&op.metrics_addr).await, String::new())
    })
    .await?;
    Ok(())
}
