//! Watches, mapping input changes to the profiles they affect, and `reconcile`, which only
//! sequences: observe (caches) → desired and drift (pure controls) → apply (API) → status
//! (pure compute, one API write when it changed).

use std::collections::{BTreeSet, HashMap};
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
use crate::controls::{self, DesiredObject, DriftReason, ManagedKind};
use crate::fence::Fence;
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
    /// True once every cache holds its first list; a reconcile waits for it. A watch channel
    /// because any number of reconciles may wait at once (a store's own readiness future
    /// wakes only the last of several waiters, which left a second profile never reconciled).
    synced: tokio::sync::watch::Receiver<bool>,
    /// Open while this replica may write (always, without leader election).
    fence: Fence,
    failures: Mutex<HashMap<String, u32>>,
}

/// How this operator process runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// This replica's name in events.
    pub instance: String,
    /// Only profiles matching this label selector are reconciled.
    pub profile_selector: Option<String>,
}

/// What leadership means to the controller: a fence every reconcile checks first (a standby
/// keeps its caches warm and does nothing else), and a signal to reconcile every profile the
/// moment this replica becomes the leader.
pub struct Leadership {
    pub fence: Fence,
    pub became_leader: futures::stream::BoxStream<'static, ()>,
}

/// Runs the controller until the process is asked to stop.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    options: Options,
    leadership: Leadership,
) {
    let instance = options.instance;
    let profiles_api = Api::<HardeningProfile>::all(client.clone());
    let profile_watch = match &options.profile_selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    let snapshot_api = client
        .list_api_group_resources("snapshot.storage.k8s.io/v1")
        .await
        .map(|l| l.resources.iter().any(|r| r.name == "volumesnapshots"))
        .unwrap_or(false);
    if !snapshot_api {
        warn!("the cluster does not serve snapshot.storage.k8s.io/v1: backups will report SnapshotAPIMissing");
    }
    let (caches, feeds) = observe::caches(&client, snapshot_api);
    let controller = Controller::new(profiles_api.clone(), profile_watch.clone());
    let profiles = controller.store();

    // Ready means "caches synced, able to serve", on a leader and a standby alike, with or
    // without any profile: one task waits for the stores and tells everyone else. A store's
    // readiness future wakes only the last of several waiters, so this task is the only one
    // that ever waits on the caches; the profile store is left alone, since kube's Controller
    // waits on it before its first reconcile.
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    {
        let (caches, ready) = (caches.clone(), ready.clone());
        tokio::spawn(async move {
            if caches.wait_until_ready().await.is_ok() {
                ready.store(true, Ordering::Relaxed);
                info!("caches synced; ready");
                let _ = synced_tx.send(true);
            }
        });
    }

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
        synced,
        fence: leadership.fence,
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
    let secrets = by_ns(profiles.clone(), caches.clone());
    let daemonsets = by_ns(profiles.clone(), caches.clone());
    let pvcs = by_ns(profiles.clone(), caches.clone());
    let all_for_ns = profiles.clone();
    let others = profiles.clone();

    let mut controller = controller
        .watches_stream(feeds.secrets, move |s| {
            secrets(s.metadata.namespace.clone())
        })
        .watches_stream(feeds.daemonsets, move |d| daemonsets(d.namespace()))
        .watches_stream(feeds.pvcs, move |p| pvcs(p.namespace()));
    if let Some(snapshots) = feeds.snapshots {
        controller = controller.watches_stream(snapshots, |s| {
            profile_of(&s.metadata).map(|p| ObjectRef::new(&p))
        });
    }
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
        .watches(profiles_api, profile_watch, move |p| {
            let name = p.name_any();
            all_profiles(&others)
                .into_iter()
                .filter(move |r| r.name != name)
        })
        .reconcile_all_on(leadership.became_leader)
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
        .get(&ObjectRef::new(namespace))
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
        // A standby (or a leader past its fence) does nothing; becoming the leader
        // reconciles every profile.
        if !ctx.fence.may_write() {
            return Ok(Action::await_change());
        }
        let mut synced = ctx.synced.clone();
        if synced.wait_for(|s| *s).await.is_err() {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
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
    // The event names the category and what failed on which object; errors never carry a
    // secret's value, only names.
    let note = error.to_string();
    tokio::spawn(async move {
        publish(
            &ctx,
            &profile,
            EventType::Warning,
            category,
            "Reconcile",
            note,
        )
        .await;
    });
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

    let (outcomes, failures, planned_writes, mut findings) =
        enforce_profile(profile, &uid, &selection, ctx).await?;
    findings.drift = outcomes;
    let mut failures = failures;
    let mut due = next_due(profile, now, false);
    if let Some(rot) = &spec.secret_rotation {
        let (f, errors, deadline) = reconcile_rotation(profile, rot, &selection, ctx, now).await;
        findings.rotation = Some(f);
        failures.extend(errors);
        if let Some(d) = deadline {
            due = due.min(d);
        }
    }
    if let Some(backups) = &spec.backups {
        let (f, errors, next) = reconcile_backups(profile, backups, &selection, ctx, now).await?;
        findings.backups = Some(f);
        failures.extend(errors);
        if let Some(d) = next {
            due = due.min(d);
        }
    }
    findings.selection = selection;

    report(profile, ctx, &findings).await;
    write_status(profile, ctx, &findings, now).await?;

    if let Some(first) = failures.first() {
        return Err(Error::PartialApply {
            profile: name,
            count: failures.len(),
            total: planned_writes,
            first: first.to_string(),
        });
    }
    let name_taken = findings
        .drift
        .iter()
        .any(|(d, _)| d.reason == DriftReason::NameTaken);
    Ok(Action::requeue(due.min(next_due(profile, now, name_taken))))
}

/// Rotation: regenerate the Secrets not yet at the id, then restart consumers batch by
/// batch. Returns the findings, the writes that failed, and when to look again (a rollout
/// timeout).
async fn reconcile_rotation(
    profile: &HardeningProfile,
    spec: &crate::api::SecretRotationControl,
    selection: &Selection,
    ctx: &Context,
    now: DateTime<Utc>,
) -> (status::RotationFindings, Vec<Error>, Option<Duration>) {
    use crate::controls::rotation::plan_rotation;
    let name = profile.name_any();
    let audit = profile.spec.mode == Mode::Audit;
    let namespaces: BTreeSet<&str> = selection
        .acting
        .get(&ControlName::SecretRotation)
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let secrets = ctx.caches.secrets_in(&namespaces, &spec.selector);
    let consumers = ctx.caches.consumers_in(&namespaces);
    let plan = plan_rotation(spec, &secrets, &consumers, audit, now);
    let mut errors = Vec::new();
    if !audit {
        let mut rotated = 0;
        for s in &plan.rotate {
            match apply::rotate_secret(
                &ctx.client,
                &ctx.metrics,
                &name,
                &s.namespace,
                &s.name,
                spec,
            )
            .await
            {
                Ok(true) => rotated += 1,
                Ok(false) => {}
                Err(e) => errors.push(e),
            }
        }
        if rotated > 0 {
            ctx.metrics
                .secrets_rotated
                .with_label_values(&[name.as_str()])
                .inc_by(rotated);
            publish(
                ctx,
                profile,
                EventType::Normal,
                "SecretsRotated",
                "Rotate",
                format!(
                    "Rotated {rotated} Secrets to rotation id {}",
                    spec.rotation_id
                ),
            )
            .await;
        }
        let mut adopted = 0;
        for s in &plan.adopt {
            match apply::adopt_secret(
                &ctx.client,
                &ctx.metrics,
                &name,
                &s.namespace,
                &s.name,
                &spec.rotation_id,
            )
            .await
            {
                Ok(true) => adopted += 1,
                Ok(false) => {}
                Err(e) => errors.push(e),
            }
        }
        if adopted > 0 {
            ctx.metrics
                .secrets_adopted
                .with_label_values(&[name.as_str()])
                .inc_by(adopted);
            publish(
                ctx,
                profile,
                EventType::Normal,
                "SecretsAdopted",
                "Adopt",
                format!(
                    "Adopted {adopted} Secrets at rotation id {} without changing their values; they rotate when the id next changes",
                    spec.rotation_id
                ),
            )
            .await;
        }
        let mut restarted = Vec::new();
        for c in &plan.restart {
            match apply::stamp_workload(&ctx.client, &ctx.metrics, &name, c, &spec.rotation_id, now)
                .await
            {
                Ok(()) => restarted.push(c.to_string()),
                Err(e) => errors.push(e),
            }
        }
        if !restarted.is_empty() {
            ctx.metrics
                .workloads_restarted
                .with_label_values(&[name.as_str()])
                .inc_by(restarted.len() as u64);
            publish(
                ctx,
                profile,
                EventType::Normal,
                "RestartBatch",
                "Restart",
                summarize("Restarting", &restarted),
            )
            .await;
        }
    }
    ctx.metrics
        .rotation_stalled
        .with_label_values(&[name.as_str()])
        .set(i64::from(plan.stalled.is_some()));
    let previous = profile.status.as_ref().and_then(|s| s.rotation.as_ref());
    let was_stalled = previous.is_some_and(|p| p.phase == "Stalled");
    if let (Some(c), false) = (&plan.stalled, was_stalled) {
        publish(
            ctx,
            profile,
            EventType::Warning,
            "RotationStalled",
            "Restart",
            format!(
                "The rollout of {c} did not complete within {}s; the rotation waits",
                spec.rollout_timeout_seconds
            ),
        )
        .await;
    }
    let deadline = plan
        .next_deadline
        .and_then(|d| (d - now).to_std().ok())
        .map(|d| d + Duration::from_millis(500));
    let findings = status::RotationFindings {
        status: status::rotation_status(&plan, &spec.rotation_id, previous, now),
        phase: plan.phase,
    };
    (findings, errors, deadline)
}

/// Snapshots: take the current slot's snapshots, prune by retention, report misses, and say
/// when the next slot is due.
async fn reconcile_backups(
    profile: &HardeningProfile,
    spec: &crate::api::BackupControl,
    selection: &Selection,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<(status::BackupFindings, Vec<Error>, Option<Duration>), Error> {
    use crate::controls::snapshots::plan_snapshots;
    use crate::schedule::Schedule;
    let name = profile.name_any();
    let uid = profile.metadata.uid.clone().ok_or(Error::MissingIdentity)?;
    if ctx.caches.snapshots.is_none() {
        let f = status::BackupFindings {
            api_missing: true,
            ..Default::default()
        };
        return Ok((f, vec![], None));
    }
    // The spec was validated before we got here; a schedule that still fails to parse is
    // reported as missing rather than guessed at.
    let Ok(schedule) = Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) else {
        return Ok((status::BackupFindings::default(), vec![], None));
    };
    let namespaces: BTreeSet<&str> = selection
        .acting
        .get(&ControlName::Backups)
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let mut pvcs = ctx.caches.pvcs_in(&namespaces, &spec.pvc_selector);
    let selected_count = pvcs.len();
    // PVCs restored from a snapshot protect it from pruning even when they are not selected.
    let selected_keys: BTreeSet<(String, String)> = pvcs
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    for p in ctx.caches.restoring_pvcs_in(&namespaces) {
        if !selected_keys.contains(&(p.namespace.clone(), p.name.clone())) {
            pvcs.push(p);
        }
    }
    let owned = ctx.caches.owned_snapshots(&name, &uid);
    let infos: Vec<_> = owned.iter().map(|(i, _)| i.clone()).collect();
    let previous = profile.status.as_ref().and_then(|s| s.backups.as_ref());
    let last = previous
        .and_then(|b| b.last_schedule_time.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let selected: Vec<_> = pvcs[..selected_count].to_vec();
    let mut plan = plan_snapshots(&name, spec, &schedule, &selected, &infos, last, now);
    // Retention must see the restoring PVCs too.
    let protected: std::collections::BTreeSet<(String, String)> = pvcs
        .iter()
        .filter_map(|p| p.restored_from.clone().map(|s| (p.namespace.clone(), s)))
        .collect();
    plan.prune
        .retain(|s| !protected.contains(&(s.namespace.clone(), s.name.clone())));

    let mut errors = Vec::new();
    if profile.spec.mode == Mode::Enforce {
        let owner = apply::owner_reference(profile)?;
        let mut created = 0u64;
        // All of a slot's snapshots go out together: the slot's lag is the slowest one's.
        let (client, metrics, create_owner) =
            (ctx.client.clone(), ctx.metrics.clone(), owner.clone());
        let results: Vec<Result<Created, Error>> = stream::iter(std::mem::take(&mut plan.create))
            .map(move |d| {
                let (client, metrics, owner) =
                    (client.clone(), metrics.clone(), create_owner.clone());
                async move { apply::create(&client, &metrics, &d, &owner).await }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(Created::Created) => created += 1,
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        ctx.metrics
            .snapshots_created
            .with_label_values(&[name.as_str()])
            .inc_by(created);
        // Pruned after the slot's snapshots are out, and concurrently: at a thousand
        // namespaces a slot prunes as many as it creates.
        let mut by_key: HashMap<(String, String), controls::ObservedObject> = owned
            .into_iter()
            .map(|(i, o)| ((i.namespace, i.name), o))
            .collect();
        let prunes: Vec<Write> = plan
            .prune
            .iter()
            .filter_map(|s| by_key.remove(&(s.namespace.clone(), s.name.clone())))
            .map(Write::Delete)
            .collect();
        let mut pruned = 0u64;
        for (_, r) in run_writes(prunes, ctx, &owner).await {
            match r {
                Ok(_) => pruned += 1,
                Err(e) => errors.push(e),
            }
        }
        ctx.metrics
            .snapshots_pruned
            .with_label_values(&[name.as_str()])
            .inc_by(pruned);
        if created > 0 || pruned > 0 {
            publish(
                ctx,
                profile,
                EventType::Normal,
                "Snapshots",
                "Snapshot",
                format!("Created {created} and pruned {pruned} VolumeSnapshots"),
            )
            .await;
        }
    }
    if !plan.missed_slots.is_empty() {
        ctx.metrics
            .snapshot_slots_missed
            .with_label_values(&[name.as_str()])
            .inc_by(plan.missed_slots.len() as u64);
        let when: Vec<String> = plan
            .missed_slots
            .iter()
            .map(|t| crate::api::conditions::rfc3339(*t))
            .collect();
        publish(
            ctx,
            profile,
            EventType::Warning,
            "SlotMissed",
            "Snapshot",
            summarize("Missed", &when),
        )
        .await;
    }
    if plan.catching_up && !plan.create.is_empty() {
        publish(
            ctx,
            profile,
            EventType::Normal,
            "SlotCaughtUp",
            "Snapshot",
            format!(
                "Took the {} slot late, within the starting deadline",
                plan.slot
                    .map(crate::api::conditions::rfc3339)
                    .unwrap_or_default()
            ),
        )
        .await;
    }
    ctx.metrics
        .snapshots_failed
        .with_label_values(&[name.as_str()])
        .set(plan.failed.len() as i64);
    for (ns, pvc, t) in &plan.last_success_times {
        ctx.metrics
            .snapshot_last_success
            .with_label_values(&[name.as_str(), ns.as_str(), pvc.as_str()])
            .set(t.timestamp() as f64);
    }
    // Wake just after the next slot so it is the latest one at that moment.
    // Measured from the end of this pass, not its start, so a slow pass does not make the
    // next slot late.
    let next = plan
        .next_slot
        .and_then(|t| (t - Utc::now()).to_std().ok())
        .map(|d| d + Duration::from_millis(50));
    let f = status::BackupFindings {
        status: status::backup_status(&plan, selected_count, previous),
        unhealthy: plan.unhealthy.clone(),
        api_missing: false,
    };
    Ok((f, errors, next))
}

/// Desired objects for every control and namespace the profile acts in, with the findings
/// that do not come from the plan (budgets left to users, drain blockers, managed counts).
/// The profile's policies and budgets, planned one namespace at a time: desired objects, the
/// drift from what is observed and, in Enforce mode, the writes that repair it, carried out
/// whenever a few hundred are pending. A reconcile thus holds a few namespaces' manifests at
/// a time, never the estate's (ten thousand at a thousand namespaces). Returns each drift with
/// its outcome, the failed writes, how many writes were attempted, and the findings.
async fn enforce_profile(
    profile: &HardeningProfile,
    uid: &str,
    selection: &Selection,
    ctx: &Context,
) -> Result<
    (
        Vec<(controls::Drift, DriftOutcome)>,
        Vec<Error>,
        usize,
        Findings,
    ),
    Error,
> {
    let name = profile.name_any();
    let spec = &profile.spec;
    let enforce = spec.mode == Mode::Enforce;
    let mut findings = Findings::default();
    let (mut drift, mut writes) = (Vec::new(), Vec::new());
    let (mut outcomes, mut failures, mut attempted) = (Vec::new(), Vec::new(), 0);
    let acting = |c: ControlName| -> BTreeSet<&str> {
        selection
            .acting
            .get(&c)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    };
    let policy_namespaces = acting(ControlName::NetworkPolicies);
    let budget_namespaces = acting(ControlName::PodDisruptionBudgets);
    let index = ctx.caches.budget_index();
    let owned = ctx.caches.owned(&name, uid);
    // Namespaces with objects of ours that are no longer desired are planned too: that is
    // where deletions come from.
    let namespaces: BTreeSet<&str> = policy_namespaces
        .iter()
        .chain(&budget_namespaces)
        .copied()
        .chain(owned.namespaces())
        .collect();
    for ns in namespaces {
        let mut desired = Vec::new();
        if let Some(np) = spec.network_policies.as_ref() {
            if policy_namespaces.contains(ns) {
                desired.extend(desired_network_policies(&name, np, ns));
            }
        }
        if let Some(pdb) = spec.pod_disruption_budgets.as_ref() {
            if budget_namespaces.contains(ns) {
                let outcome = desired_disruption_budgets(
                    &name,
                    pdb,
                    &index.workloads_in(ns),
                    &index.budgets_in(ns),
                );
                desired.extend(outcome.desired);
                findings.covered_by_user.extend(outcome.covered_by_user);
            }
        }
        for d in &desired {
            *findings.managed.entry(d.control).or_insert(0) += 1;
        }
        let plan = controls::plan(
            desired,
            &owned.observed_in(ns),
            &[ManagedKind::NetworkPolicy, ManagedKind::PodDisruptionBudget],
        );
        for d in &plan.drift {
            findings.managed.entry(d.control).or_insert(0);
        }
        drift.extend(plan.drift);
        if enforce {
            writes.extend(plan.create.into_iter().map(Write::create));
            writes.extend(plan.repair.into_iter().map(Write::repair));
            writes.extend(plan.delete.into_iter().map(Write::Delete));
            if writes.len() >= WRITE_BATCH {
                attempted += writes.len();
                let (o, f) = execute(
                    std::mem::take(&mut drift),
                    std::mem::take(&mut writes),
                    profile,
                    ctx,
                )
                .await?;
                outcomes.extend(o);
                failures.extend(f);
            }
        }
    }
    if enforce {
        attempted += writes.len();
        let (o, f) = execute(drift, writes, profile, ctx).await?;
        outcomes.extend(o);
        failures.extend(f);
    } else {
        outcomes.extend(drift.into_iter().map(|d| (d, DriftOutcome::Reported)));
    }
    if spec.pod_disruption_budgets.is_some() {
        findings.drain_blocking = selection
            .namespaces
            .iter()
            .flat_map(|ns| drain_blocking_budgets(&index.budgets_in(ns)))
            .collect();
        findings.drain_blocking.sort();
    }
    Ok((outcomes, failures, attempted, findings))
}

/// Pending writes that make a reconcile carry them out before planning further namespaces:
/// enough to keep [`WRITE_CONCURRENCY`] requests in flight, few enough to hold little memory.
const WRITE_BATCH: usize = 512;

/// One write of a plan, with the object it is about and, on success, a drift reason that
/// still stands (a name held by someone else).
type PendingWrite =
    futures::future::BoxFuture<'static, (controls::ObjectKey, Result<Option<DriftReason>, Error>)>;

/// A write a plan asks for. Desired manifests wait as compact JSON text: a first reconcile
/// at a thousand namespaces queues ten thousand of them, and as `serde_json::Value` maps each
/// would take several times its size.
enum Write {
    Create(PendingObject),
    Repair(PendingObject),
    Delete(controls::ObservedObject),
}

struct PendingObject {
    key: controls::ObjectKey,
    control: ControlName,
    manifest: String,
}

impl PendingObject {
    fn new(d: DesiredObject) -> Self {
        Self {
            // `Value`'s Display is its compact JSON and cannot fail.
            manifest: d.manifest.to_string(),
            key: d.key,
            control: d.control,
        }
    }

    fn desired(self) -> Result<DesiredObject, Error> {
        let manifest = serde_json::from_str(&self.manifest).map_err(|source| Error::Encode {
            what: format!("manifest of {}", self.key.name),
            source,
        })?;
        Ok(DesiredObject {
            key: self.key,
            control: self.control,
            manifest,
        })
    }
}

impl Write {
    fn create(d: DesiredObject) -> Self {
        Write::Create(PendingObject::new(d))
    }

    fn repair(d: DesiredObject) -> Self {
        Write::Repair(PendingObject::new(d))
    }

    fn key(&self) -> &controls::ObjectKey {
        match self {
            Write::Create(p) | Write::Repair(p) => &p.key,
            Write::Delete(o) => &o.key,
        }
    }

    /// The write as an owned future (borrowing closures inside a buffered stream trip the
    /// compiler's lifetime inference in the spawned reconcile).
    fn run(
        self,
        client: Client,
        metrics: Arc<Metrics>,
        owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> PendingWrite {
        let key = self.key().clone();
        Box::pin(async move {
            let r = match self {
                Write::Create(p) => match p.desired() {
                    Ok(d) => apply::create(&client, &metrics, &d, &owner)
                        .await
                        .map(|c| match c {
                            Created::NameTaken => Some(DriftReason::NameTaken),
                            Created::Created | Created::AlreadyOurs => None,
                        }),
                    Err(e) => Err(e),
                },
                Write::Repair(p) => match p.desired() {
                    Ok(d) => apply::repair(&client, &metrics, &d, &owner)
                        .await
                        .map(|_| None),
                    Err(e) => Err(e),
                },
                Write::Delete(o) => apply::delete(&client, &metrics, &owner.name, &o)
                    .await
                    .map(|_| None),
            };
            (key, r)
        })
    }
}

/// Runs writes with bounded concurrency, making each future only when the buffer pulls it
/// (a boxed write future is a few kilobytes). Every write is attempted, so one failing
/// namespace never holds up the others.
async fn run_writes(
    writes: Vec<Write>,
    ctx: &Context,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Vec<(controls::ObjectKey, Result<Option<DriftReason>, Error>)> {
    let (client, metrics, owner) = (ctx.client.clone(), ctx.metrics.clone(), owner.clone());
    stream::iter(writes)
        .map(move |w| w.run(client.clone(), metrics.clone(), owner.clone()))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await
}

/// Carries out the writes of a plan and says, for each drift, whether it was repaired.
/// Failures are returned for the status and the retry.
async fn execute(
    drift: Vec<controls::Drift>,
    writes: Vec<Write>,
    profile: &HardeningProfile,
    ctx: &Context,
) -> Result<(Vec<(controls::Drift, DriftOutcome)>, Vec<Error>), Error> {
    let owner = apply::owner_reference(profile)?;
    let results = run_writes(writes, ctx, &owner).await;
    let by_key: HashMap<controls::ObjectKey, &Result<Option<DriftReason>, Error>> =
        results.iter().map(|(k, r)| (k.clone(), r)).collect();
    let mut outcomes = Vec::new();
    for d in &drift {
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
    // The API server refuses notes over 1 kB.
    let note: String = if note.len() > 1000 {
        format!("{}…", note.chars().take(990).collect::<String>())
    } else {
        note
    };
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
    let owned: Vec<Write> = ctx
        .caches
        .owned(&name, &uid)
        .for_deletion()
        .into_iter()
        .map(Write::Delete)
        .collect();
    let total = owned.len();
    let owner = apply::owner_reference(profile)?;
    let results = run_writes(owned, ctx, &owner).await;
    let failures: Vec<Error> = results.into_iter().filter_map(|(_, r)| r.err()).collect();
    if let Some(first) = failures.first() {
        return Err(Error::PartialApply {
            profile: name,
            count: failures.len(),
            total,
            first: first.to_string(),
        });
    }
    // Snapshots are data: kept (orphaned, so garbage collection leaves them) unless the
    // profile says Delete.
    let delete_snapshots = profile
        .spec
        .backups
        .as_ref()
        .is_some_and(|b| b.deletion_policy == crate::api::SnapshotDeletionPolicy::Delete);
    for (_, o) in ctx.caches.owned_snapshots(&name, &uid) {
        let r = if delete_snapshots {
            apply::delete(&ctx.client, &ctx.metrics, &name, &o).await
        } else {
            apply::orphan(&ctx.client, &ctx.metrics, &name, &o).await
        };
        r?;
    }
    info!(profile = %name, deleted = total, "profile deleted; removed what it made");
    ctx.metrics.forget_profile(&name);
    Ok(Action::await_change())
}
