//! Several profiles at once, from a cold start: every one of them is reconciled and reaches
//! its conditions, whatever order they arrive in. (The demo's Audit profile once never got a
//! status: two reconciles waited together for the caches at startup and only one was woken.)

use std::time::Duration;

use anyhow::Result;
use kube::Client;
use rampart_e2e::{
    client, delete_profile_and_wait, unique_id, OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

async fn apply_profile(c: &Client, name: &str, tag: &str, mode: &str, ns: &str) -> Result<()> {
    let profile = json!({
        "apiVersion": "rampart.dev/v1alpha1", "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: tag}},
        "spec": {"mode": mode, "namespaces": [ns], "networkPolicies": {}}
    });
    rampart_e2e::apply_profile(c, profile).await.map(|_| ())
}

async fn wait_condition(c: &Client, name: &str, type_: &str) -> Result<()> {
    rampart_e2e::wait_condition(c, name, type_, "True", TIMEOUT)
        .await
        .map(|_| ())
}

/// An Enforce and an Audit profile over namespaces of their own: the first Ready, the second
/// Drifted (its policies are missing and it may not create them).
async fn both_reach_their_conditions(
    c: &Client,
    enforce: &str,
    audit: &str,
    first_audit: bool,
    start_before: bool,
) -> Result<()> {
    let tag = format!("startup-{}", unique_id());
    let a = TestNamespace::create(c, "startup-enforce", &[]).await?;
    let b = TestNamespace::create(c, "startup-audit", &[]).await?;
    let mut op = None;
    if start_before {
        op = Some(OperatorProcess::start(&tag).await?);
    }
    if first_audit {
        apply_profile(c, audit, &tag, "Audit", &b.name).await?;
        apply_profile(c, enforce, &tag, "Enforce", &a.name).await?;
    } else {
        apply_profile(c, enforce, &tag, "Enforce", &a.name).await?;
        apply_profile(c, audit, &tag, "Audit", &b.name).await?;
    }
    if op.is_none() {
        op = Some(OperatorProcess::start(&tag).await?);
    }
    wait_condition(c, enforce, "Ready").await?;
    wait_condition(c, audit, "Drifted").await?;
    delete_profile_and_wait(c, enforce).await?;
    delete_profile_and_wait(c, audit).await?;
    drop(op);
    Ok(())
}

#[tokio::test]
async fn two_profiles_present_at_startup_are_both_reconciled() -> Result<()> {
    let c = client().await?;
    let id = unique_id();
    // Both exist before the operator starts, so both reconciles start while its caches fill.
    both_reach_their_conditions(
        &c,
        &format!("startup-enforce-{id}"),
        &format!("startup-audit-{id}"),
        false,
        false,
    )
    .await
}

#[tokio::test]
async fn two_profiles_applied_together_in_either_order_are_both_reconciled() -> Result<()> {
    let c = client().await?;
    for first_audit in [true, false] {
        let id = unique_id();
        both_reach_their_conditions(
            &c,
            &format!("together-enforce-{id}"),
            &format!("together-audit-{id}"),
            first_audit,
            true,
        )
        .await?;
    }
    Ok(())
}
