//! Watches, mapping input changes to the profiles they affect, and `reconcile`, which only
//! sequences: observe (caches) → desired and drift (pure controls) → apply (API) → status
//! (pure compute, one API write when it changed).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{stream, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, info_span, warn, Instrument};

use crate::api::validate::{exception_expired, invalid_fields};
use crate::api::{
    conditions, ControlName, HardeningProfile, HardeningProfileStatus, Mode, FIELD_MANAGER,
    FINALIZER,
};
use crate::apply::{self, Created};
use crate::controls::disruption_budgets::{desired_disruption_budgets, drain_blocking_budgets};
use crate::controls::network_policies::desired_network_policies;
use crate::controls::{self, DesiredObject, DriftReason, ManagedKind, Plan};
use crate::metrics::Metrics;
use crate::observe::{self, profile_of, Caches};
use crate::selection::{self, NamespaceInfo, ProfileInfo, Selection};
use crate::status::{self, DriftOutcome, Findings};
use crate::Error;

/// Writes in flight at once for one profile: enough to converge thousands of namespaces
/// quickly without flooding the API server's priority-and-fairness queues.
const WRITE_CONCURRENCY: usize = 32;
/// The longest a converged profile waits before it is looked at again without any event.
const RESYNC: Duration = Duration::from_secs(30 * 60);
/// How long an invalid or conflicting name waits before it is tried again.
const NAME_TAKEN_RETRY: Duration = Duration::from_secs(30);

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub caches: Caches,
    pub profiles: Store<HardeningProfile>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub ready: Arc<AtomicBool>,
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs the controller until the process is asked to stop.
pub async fn run(client: Client, metrics: Arc<Metrics>, ready: Arc<AtomicBool>, instance: String) {
    let profiles_api = Api::<HardeningProfile>::all(client.clone());
    let (caches, feeds) = observe::caches(&client);
    let controller = Controller::new(profiles_api.clone(), watcher::Config::default());
    let profiles = controller.store();

    let ctx = Arc::new(Context {
        client: client.clone(),
        caches: caches.clone(),
        profiles: profiles.clone(),
        metrics,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "rampart".into(),
                instance: Some(instance),
            },
        ),
        ready,
        failures: Mutex::new(HashMap::new()),
    });

    let by_ns = |profiles: Store<HardeningProfile>, caches: Caches| {
        move |namespace: Option<String>| {
            profiles_selecting(&profiles, &caches, namespace.as_deref())
        }
    };
    let deployments = by_ns(profiles.clone(), caches.clone());
    let statefulsets = by_ns(profiles.clone(), caches.clone());
    let budgets = by_ns(profiles.clone(), caches.clone());
    let all_for_ns = profiles.clone();
    let others = profiles.clone();

    controller
        .watches_stream(feeds.namespaces, move |_ns| all_profiles(&all_for_ns))
        .watches_stream(feeds.deployments, move |d| deployments(d.namespace()))
        .watches_stream(feeds.statefulsets, move |s| statefulsets(s.namespace()))
        .watches_stream(feeds.budgets, move |b| match profile_of(&b.metadata) {
            Some(p) => vec![ObjectRef::new(&p)],
            None => budgets(b.namespace()),
        })
        .watches_stream(feeds.policies, |np| {
            profile_of(&np.metadata).map(|p| ObjectRef::new(&p))
        })
        // A profile that appears, changes or goes can hand namespaces to, or take them from,
        // the others.
        .watches(profiles_api, watcher::Config::default(), move |p| {
            let name = p.name_any();
            all_profiles(&others)
                .into_iter()
                .filter(move |r| r.name != name)
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "reconcile failed");
            }
        })
        .await;
}

fn all_profiles(profiles: &Store<HardeningProfile>) -> Vec<ObjectRef<HardeningProfile>> {
    profiles
        .state()
        .iter()
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The profiles whose selectors take in `namespace`; all of them when the namespace is not
/// in the cache yet, since a missed trigger costs more than a spare reconcile.
fn profiles_selecting(
    profiles: &Store<HardeningProfile>,
    caches: &Caches,
    namespace: Option<&str>,
) -> Vec<ObjectRef<HardeningProfile>> {
    let Some(namespace) = namespace else {
        return vec![];
    };
    let ns = caches
        .namespaces
        .state()
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(namespace))
        .map(|n| NamespaceInfo {
            name: namespace.to_string(),
            labels: n.labels().clone(),
            terminating: false,
        });
    profiles
        .state()
        .iter()
        .filter(|p| ns.as_ref().is_none_or(|ns| selection::selects(&p.spec, ns)))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

async fn reconcile(profile: Arc<HardeningProfile>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = profile.name_any();
    let span = info_span!("reconcile", profile = %name);
    async move {
        if ctx.caches.wait_until_ready().await.is_err() {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        ctx.ready.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let api = Api::<HardeningProfile>::all(ctx.client.clone());
        let result = finalizer(&api, FINALIZER, profile, |event| async {
            match event {
                Finalizer::Apply(p) => apply_profile(&p, &ctx).await,
                Finalizer::Cleanup(p) => cleanup_profile(&p, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer {
            profile: name.clone(),
            source: Box::new(e),
        });
        let label = if result.is_ok() { "success" } else { "error" };
        ctx.metrics.reconciles.with_label_values(&[label]).inc();
        ctx.metrics
            .reconcile_duration
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            ctx.failures.lock().map(|mut f| f.remove(&name)).ok();
        }
        result
    }
    .instrument(span)
    .await
}

fn error_policy(profile: Arc<HardeningProfile>, error: &Error, ctx: Arc<Context>) -> Action {
    let category = match error {
        Error::Finalizer { source, .. } => match source.as_ref() {
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
            _ => error.category(),
        },
        _ => error.category(),
    };
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[category])
        .inc();
    let attempts = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(profile.name_any()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    // Transient failures back off quickly and level out, so a flapping API server is not
    // hammered and a recovered one is caught within minutes.
    let delay = Duration::from_millis(250u64.saturating_mul(1 << attempts.min(10)))
        .min(Duration::from_secs(300));
    warn!(profile = %profile.name_any(), %category, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// One profile's pass: select, compute, repair (Enforce), report.
async fn apply_profile(profile: &HardeningProfile, ctx: &Context) -> Result<Action, Error> {
    let now = Utc::now();
    let name = profile.name_any();
    let uid = profile.metadata.uid.clone().ok_or(Error::MissingIdentity)?;
    let spec = &profile.spec;

    let invalid = invalid_fields(spec);
    if !invalid.is_empty() {
        let findings = Findings {
            invalid,
            ..Default::default()
        };
        write_status(profile, ctx, &findings, now).await?;
        return Ok(Action::await_change());
    }

    let all = ctx.profiles.state();
    let infos: Vec<ProfileInfo<'_>> = all
        .iter()
        .map(|p| ProfileInfo {
            name: p.metadata.name.as_deref().unwrap_or_default(),
            created: p
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(observe::to_chrono),
            spec: &p.spec,
        })
        .collect();
    let me = ProfileInfo {
        name: &name,
        created: profile
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(observe::to_chrono),
        spec,
    };
    let selection = selection::select(&me, &infos, &ctx.caches.namespace_infos(), now);

    let (desired, mut findings) = desired_state(&name, profile, &selection, ctx);
    let observed = ctx.caches.owned_objects(&name, &uid);
    let plan = controls::plan(
        desired,
        &observed,
        &[ManagedKind::NetworkPolicy, ManagedKind::PodDisruptionBudget],
    );
    for d in &plan.drift {
        findings.managed.entry(d.control).or_insert(0);
    }

    let (outcomes, failures) = match spec.mode {
        Mode::Audit => (
            plan.drift
                .iter()
                .map(|d| (d.clone(), DriftOutcome::Reported))
                .collect(),
            vec![],
        ),
        Mode::Enforce => execute(&plan, profile, ctx).await?,
    };
    findings.drift = outcomes;
    findings.selection = selection;

    report(profile, ctx, &findings).await;
    write_status(profile, ctx, &findings, now).await?;

    if let Some(first) = failures.first() {
        return Err(Error::PartialApply {
            profile: name,
            count: failures.len(),
            total: plan.create.len() + plan.repair.len() + plan.delete.len(),
            first: first.to_string(),
        });
    }
    let name_taken = findings
        .drift
        .iter()
        .any(|(d, _)| d.reason == DriftReason::NameTaken);
    Ok(Action::requeue(next_due(profile, now, name_taken)))
}

/// Desired objects for every control and namespace the profile acts in, with the findings
/// that do not come from the plan (budgets left to users, drain blockers, managed counts).
fn desired_state(
    name: &str,
    profile: &HardeningProfile,
    selection: &Selection,
    ctx: &Context,
) -> (Vec<DesiredObject>, Findings) {
    let spec = &profile.spec;
    let mut desired = Vec::new();
    let mut findings = Findings::default();
    if let Some(np) = &spec.network_policies {
        for ns in selection
            .acting
            .get(&ControlName::NetworkPolicies)
            .into_iter()
            .flatten()
        {
            desired.extend(desired_network_policies(name, np, ns));
        }
    }
    if let Some(pdb) = &spec.pod_disruption_budgets {
        let workloads = ctx.caches.workloads_by_namespace();
        let budgets = ctx.caches.budgets_by_namespace();
        for ns in selection
            .acting
            .get(&ControlName::PodDisruptionBudgets)
            .into_iter()
            .flatten()
        {
            let w = workloads.get(ns).map(Vec::as_slice).unwrap_or_default();
            let b = budgets.get(ns).map(Vec::as_slice).unwrap_or_default();
            let outcome = desired_disruption_budgets(name, pdb, w, b);
            desired.extend(outcome.desired);
            findings.covered_by_user.extend(outcome.covered_by_user);
        }
        let in_scope: Vec<_> = selection
            .namespaces
            .iter()
            .flat_map(|ns| budgets.get(ns).cloned().unwrap_or_default())
            .collect();
        findings.drain_blocking = drain_blocking_budgets(&in_scope);
    }
    let mut managed: BTreeMap<ControlName, usize> = BTreeMap::new();
    for d in &desired {
        *managed.entry(d.control).or_insert(0) += 1;
    }
    findings.managed = managed;
    (desired, findings)
}

/// Carries out a plan with bounded concurrency. Every write is attempted, so one failing
/// namespace never holds up the others; failures are returned for the status and the retry.
async fn execute(
    plan: &Plan,
    profile: &HardeningProfile,
    ctx: &Context,
) -> Result<(Vec<(controls::Drift, DriftOutcome)>, Vec<Error>), Error> {
    let owner = apply::owner_reference(profile)?;
    let client = &ctx.client;

    // Each write is its own owned future: borrowed closures in a buffered stream trip the
    // compiler's lifetime inference inside the spawned reconcile.
    let mut writes: Vec<
        futures::future::BoxFuture<
            'static,
            (controls::ObjectKey, Result<Option<DriftReason>, Error>),
        >,
    > = Vec::new();
    for d in &plan.create {
        let (client, metrics, owner, d) = (
            client.clone(),
            ctx.metrics.clone(),
            owner.clone(),
            d.clone(),
        );
        writes.push(Box::pin(async move {
            let r = apply::create(&client, &metrics, &d, &owner)
                .await
                .map(|c| match c {
                    Created::NameTaken => Some(DriftReason::NameTaken),
                    Created::Created | Created::AlreadyOurs => None,
                });
            (d.key, r)
        }));
    }
    for d in &plan.repair {
        let (client, metrics, owner, d) = (
            client.clone(),
            ctx.metrics.clone(),
            owner.clone(),
            d.clone(),
        );
        writes.push(Box::pin(async move {
            let r = apply::repair(&client, &metrics, &d, &owner)
                .await
                .map(|_| None);
            (d.key, r)
        }));
    }
    for o in &plan.delete {
        let (client, metrics, o, profile) = (
            client.clone(),
            ctx.metrics.clone(),
            o.clone(),
            owner.name.clone(),
        );
        writes.push(Box::pin(async move {
            let r = apply::delete(&client, &metrics, &profile, &o)
                .await
                .map(|_| None);
            (o.key, r)
        }));
    }
    let results: Vec<(controls::ObjectKey, Result<Option<DriftReason>, Error>)> =
        stream::iter(writes)
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;

    let by_key: HashMap<controls::ObjectKey, &Result<Option<DriftReason>, Error>> =
        results.iter().map(|(k, r)| (k.clone(), r)).collect();
    let mut outcomes = Vec::new();
    for d in &plan.drift {
        let outcome = match by_key.get(&d.key) {
            Some(Ok(None)) => {
                ctx.metrics
                    .repairs
                    .with_label_values(&[profile.name_any().as_str(), d.control.label()])
                    .inc();
                (d.clone(), DriftOutcome::Repaired)
            }
            Some(Ok(Some(reason))) => (
                controls::Drift {
                    reason: *reason,
                    ..d.clone()
                },
                DriftOutcome::Reported,
            ),
            Some(Err(_)) | None => (d.clone(), DriftOutcome::Failed),
        };
        outcomes.push(outcome);
    }
    let failures = results.into_iter().filter_map(|(_, r)| r.err()).collect();
    Ok((outcomes, failures))
}

/// Metrics and events for one reconcile's findings.
async fn report(profile: &HardeningProfile, ctx: &Context, findings: &Findings) {
    let name = profile.name_any();
    let m = &ctx.metrics;
    for control in ControlName::ALL {
        let drifted = findings
            .drift
            .iter()
            .filter(|(d, _)| d.control == control)
            .count();
        m.drifted_objects
            .with_label_values(&[name.as_str(), control.label()])
            .set(drifted as i64);
        if let Some(n) = findings.managed.get(&control) {
            m.managed_objects
                .with_label_values(&[name.as_str(), control.label()])
                .set(*n as i64);
        }
    }
    for state in ["Active", "Expired"] {
        let n = findings
            .selection
            .exceptions
            .iter()
            .filter(|e| e.state == state)
            .count();
        m.exceptions
            .with_label_values(&[name.as_str(), state])
            .set(n as i64);
    }
    m.drain_blocked
        .with_label_values(&[name.as_str()])
        .set(findings.drain_blocking.len() as i64);

    let repaired: Vec<String> = findings
        .drift
        .iter()
        .filter(|(_, o)| *o == DriftOutcome::Repaired)
        .map(|(d, _)| format!("{} ({})", status::describe(&d.key), d.reason.as_str()))
        .collect();
    if !repaired.is_empty() {
        let note = summarize("Repaired", &repaired);
        info!(count = repaired.len(), "{note}");
        publish(ctx, profile, EventType::Normal, "Repaired", "Repair", note).await;
    }
    let failed: Vec<String> = findings
        .drift
        .iter()
        .filter(|(_, o)| *o == DriftOutcome::Failed)
        .map(|(d, _)| status::describe(&d.key))
        .collect();
    if !failed.is_empty() {
        publish(
            ctx,
            profile,
            EventType::Warning,
            "RepairFailed",
            "Repair",
            summarize("Could not repair", &failed),
        )
        .await;
    }
}

/// One line naming the first few objects and how many more, so events stay small.
fn summarize(verb: &str, items: &[String]) -> String {
    const SHOWN: usize = 5;
    let head = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        format!(
            "{verb} {} objects: {head} and {} more",
            items.len(),
            items.len() - SHOWN
        )
    } else {
        format!("{verb} {} objects: {head}", items.len())
    }
}

async fn publish(
    ctx: &Context,
    profile: &HardeningProfile,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    ctx.metrics.write(&profile.name_any(), "Event", "create");
    if let Err(e) = ctx.recorder.publish(&ev, &profile.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

/// Writes the status when it changed, and only then.
async fn write_status(
    profile: &HardeningProfile,
    ctx: &Context,
    findings: &Findings,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let name = profile.name_any();
    let next = status::compute(
        &profile.spec,
        profile.metadata.generation,
        findings,
        profile.status.as_ref(),
        now,
    );
    ctx.metrics
        .profile_ready
        .with_label_values(&[name.as_str()])
        .set(i64::from(conditions::is_true(
            &next.conditions,
            conditions::READY,
        )));
    if !status::changed(profile.status.as_ref(), &next) {
        return Ok(());
    }
    publish_transitions(profile, ctx, &next).await;
    let patch = json!({
        "apiVersion": "rampart.dev/v1alpha1",
        "kind": "HardeningProfile",
        "status": next,
    });
    ctx.metrics.write(&name, "HardeningProfile", "status");
    Api::<HardeningProfile>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
        .map_err(|source| Error::StatusWrite {
            profile: name,
            source,
        })
}

/// Events for condition flips that a person watching the profile should see.
async fn publish_transitions(
    profile: &HardeningProfile,
    ctx: &Context,
    next: &HardeningProfileStatus,
) {
    let prev = profile
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for c in &next.conditions {
        let was = prev
            .iter()
            .find(|p| p.type_ == c.type_)
            .map(|p| p.status.as_str());
        if was == Some(c.status.as_str()) {
            continue;
        }
        let warning = matches!(
            (c.type_.as_str(), c.status.as_str()),
            (conditions::INVALID_SPEC, "True")
                | (conditions::CONFLICT, "True")
                | (conditions::DRAIN_BLOCKED, "True")
                | (conditions::DRIFTED, "True")
        );
        if !warning && c.type_ != conditions::READY {
            continue;
        }
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            profile,
            type_,
            &c.reason,
            "Reconcile",
            format!("{} is {}: {}", c.type_, c.status, c.message),
        )
        .await;
    }
}

/// When this profile must next be looked at without an event: an exception expiring, a
/// name held by someone else, or the long resync.
fn next_due(profile: &HardeningProfile, now: DateTime<Utc>, name_taken: bool) -> Duration {
    let mut due = RESYNC;
    if name_taken {
        due = due.min(NAME_TAKEN_RETRY);
    }
    for e in &profile.spec.exceptions {
        let Some(exp) = e.expires.as_deref() else {
            continue;
        };
        if exception_expired(Some(exp), now) {
            continue;
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(exp) {
            if let Ok(d) = (t.with_timezone(&Utc) - now).to_std() {
                due = due.min(d + Duration::from_secs(1));
            }
        }
    }
    due
}

/// Removes everything the profile made. Garbage collection would too, through the owner
/// references, but doing it here lets a failure hold the finalizer and be retried and seen.
async fn cleanup_profile(profile: &HardeningProfile, ctx: &Context) -> Result<Action, Error> {
    let name = profile.name_any();
    let uid = profile.metadata.uid.clone().ok_or(Error::MissingIdentity)?;
    let owned = ctx.caches.owned_objects(&name, &uid);
    let deletes: Vec<futures::future::BoxFuture<'static, Result<(), Error>>> = owned
        .iter()
        .map(|o| {
            let (client, metrics, o, profile) = (
                ctx.client.clone(),
                ctx.metrics.clone(),
                o.clone(),
                name.clone(),
            );
            Box::pin(async move { apply::delete(&client, &metrics, &profile, &o).await })
                as futures::future::BoxFuture<'static, _>
        })
        .collect();
    let results: Vec<Result<(), Error>> = stream::iter(deletes)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let failures: Vec<Error> = results.into_iter().filter_map(Result::err).collect();
    if let Some(first) = failures.first() {
        return Err(Error::PartialApply {
            profile: name,
            count: failures.len(),
            total: owned.len(),
            first: first.to_string(),
        });
    }
    info!(profile = %name, deleted = owned.len(), "profile deleted; removed what it made");
    ctx.metrics.forget_profile(&name);
    Ok(Action::await_change())
}
