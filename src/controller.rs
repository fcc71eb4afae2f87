//! Watches, mapping input changes to the profiles (and namespaces) they affect, and
//! `reconcile`, which only sequences: observe ([`crate::observe`]) → plan each control
//! ([`crate::controls`], pure) → execute ([`crate::apply::Writer`]) → status
//! ([`crate::status`], pure, written only when it changed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use futures::{Stream, StreamExt};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tracing::{info, info_span, warn, Instrument};

use crate::api::{ControlName, HardeningProfile, FINALIZER};
use crate::apply::{Applied, Writer};
use crate::controls::{self, snapshots, DriftReason, NamespaceObserved, Outcome};
use crate::events::{self, Event, Publisher};
use crate::fence::Fence;
use crate::incremental::{Ledger, NamespaceResult, Scope, FULL_PASS_EVERY};
use crate::metrics::Metrics;
use crate::observe::{self, to_chrono, Caches};
use crate::ownership::profile_of;
use crate::selection::{self, NamespaceInfo, ProfileInfo, Selection};
use crate::status::{self, drift_outcomes, DriftOutcome, Findings};
use crate::Error;

/// Pending writes that make a pass carry them out before planning further namespaces: enough
/// to keep the writer's requests in flight, few enough to hold little memory.
const WRITE_BATCH: usize = 512;
/// How long a name held by someone else waits before it is tried again.
const NAME_TAKEN_RETRY: Duration = Duration::from_secs(30);
/// Added to every due time so the pass runs just after it, never just before.
const DUE_PADDING: Duration = Duration::from_millis(50);

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub caches: Caches,
    pub profiles: Store<HardeningProfile>,
    pub metrics: Arc<Metrics>,
    events: Publisher,
    /// True once every cache holds its first list. A watch channel because any number of
    /// reconciles may wait at once (a store's own readiness future wakes only the last of
    /// several waiters, which left a second profile never reconciled).
    synced: tokio::sync::watch::Receiver<bool>,
    /// Open while this replica may write (always, without leader election).
    fence: Fence,
    ledger: Ledger,
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
    let (profiles, profile_writer) = reflector::store();

    // Ready means "caches synced, able to serve", on a leader and a standby alike, with or
    // without any profile. This task is the only one that waits on the caches (see
    // `synced`); kube's Controller waits on the profile store before its first reconcile.
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let waiting = caches.clone();
    tokio::spawn(async move {
        if waiting.wait_until_ready().await.is_ok() {
            ready.store(true, Ordering::Relaxed);
            info!("caches synced; ready");
            let _ = synced_tx.send(true);
        }
    });

    let ctx = Arc::new(Context {
        client: client.clone(),
        caches,
        profiles: profiles.clone(),
        metrics,
        events: Publisher::new(client.clone(), options.instance),
        synced,
        fence: leadership.fence,
        ledger: Ledger::default(),
        failures: Mutex::new(HashMap::new()),
    });

    // A profile that appears, changes its spec or goes can hand namespaces to, or take them
    // from, the others: they are re-planned in full. Its own status writes change nothing.
    let (others_tx, others_rx) = futures::channel::mpsc::unbounded();
    let trigger_ctx = ctx.clone();
    let profile_changes = spec_changes(
        watcher(profiles_api, profile_watch)
            .default_backoff()
            .reflect(profile_writer),
    )
    .inspect(move |p| {
        if let Ok(p) = p {
            let name = p.name_any();
            trigger_ctx.ledger.mark_full(&name);
            for other in trigger_ctx
                .profiles
                .state()
                .iter()
                .filter(|o| o.name_any() != name)
            {
                trigger_ctx.ledger.mark_full(&other.name_any());
                let _ = others_tx.unbounded_send(ObjectRef::from_obj(other.as_ref()));
            }
        }
    });
    let leader_ctx = ctx.clone();
    let became_leader = leadership
        .became_leader
        .map(move |()| leader_ctx.ledger.mark_all_full());

    let touched = |ctx: &Arc<Context>| {
        let ctx = ctx.clone();
        move |namespace: Option<String>| ctx.namespace_touched(namespace.as_deref())
    };
    let owner_or_namespace = |ctx: &Arc<Context>| {
        let ctx = ctx.clone();
        move |meta: &kube::core::ObjectMeta| match profile_of(meta) {
            Some(p) => {
                if let Some(ns) = &meta.namespace {
                    ctx.ledger.mark_namespace(&p, ns);
                }
                vec![ObjectRef::new(&p)]
            }
            None => ctx.namespace_touched(meta.namespace.as_deref()),
        }
    };
    let (deployments, statefulsets, budgets, policies) = (
        touched(&ctx),
        touched(&ctx),
        owner_or_namespace(&ctx),
        owner_or_namespace(&ctx),
    );
    let (secrets, daemonsets, pvcs) = (touched(&ctx), touched(&ctx), touched(&ctx));
    let namespaces_ctx = ctx.clone();
    let mut controller = Controller::for_stream(profile_changes, profiles)
        .watches_stream(feeds.secrets, move |s| secrets(s.namespace()))
        .watches_stream(feeds.daemonsets, move |d| daemonsets(d.namespace()))
        .watches_stream(feeds.pvcs, move |p| pvcs(p.namespace()))
        .watches_stream(feeds.deployments, move |d| deployments(d.namespace()))
        .watches_stream(feeds.statefulsets, move |s| statefulsets(s.namespace()))
        .watches_stream(feeds.budgets, move |b| budgets(&b.metadata))
        .watches_stream(feeds.policies, move |np| policies(&np.metadata))
        // A namespace's labels decide which profiles select it; selection is recomputed by
        // every pass, and the namespaces that entered or left a profile's scope are planned.
        .watches_stream(feeds.namespaces, move |_| namespaces_ctx.all_profiles());
    if let Some(snapshots) = feeds.snapshots {
        controller = controller.watches_stream(snapshots, |s| {
            profile_of(&s.metadata).map(|p| ObjectRef::new(&p))
        });
    }
    controller
        .reconcile_on(others_rx)
        .reconcile_all_on(became_leader)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "reconcile failed");
            }
        })
        .await;
}

/// The profiles whose spec, labels, finalizers or deletion changed (and every deleted one):
/// a status write, the operator's own most frequent write, passes no further.
fn spec_changes<S>(events: S) -> impl Stream<Item = Result<HardeningProfile, watcher::Error>> + Send
where
    S: Stream<Item = Result<watcher::Event<HardeningProfile>, watcher::Error>> + Send,
{
    use std::hash::{Hash, Hasher};
    let mut seen: HashMap<String, u64> = HashMap::new();
    events.filter_map(move |event| {
        let out = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (p.metadata.uid.as_deref(), p.metadata.generation).hash(&mut h);
                (
                    p.metadata.deletion_timestamp.is_some(),
                    &p.metadata.finalizers,
                )
                    .hash(&mut h);
                p.metadata.labels.hash(&mut h);
                let changed = seen.insert(p.name_any(), h.finish()) != Some(h.finish());
                changed.then_some(Ok(p))
            }
            Ok(watcher::Event::Delete(p)) => {
                seen.remove(&p.name_any());
                Some(Ok(p))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    })
}

impl Context {
    fn all_profiles(&self) -> Vec<ObjectRef<HardeningProfile>> {
        self.profiles
            .state()
            .iter()
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }

    /// The profiles whose selectors take in `namespace`, each told the namespace changed; all
    /// of them when the namespace is not cached yet, since a missed trigger costs more than a
    /// spare pass.
    fn namespace_touched(&self, namespace: Option<&str>) -> Vec<ObjectRef<HardeningProfile>> {
        let Some(namespace) = namespace else {
            return vec![];
        };
        let ns = self
            .caches
            .namespaces
            .get(&ObjectRef::new(namespace))
            .map(|n| NamespaceInfo {
                name: namespace.to_string(),
                labels: n.labels().clone(),
                terminating: false,
            });
        self.profiles
            .state()
            .iter()
            .filter(|p| ns.as_ref().is_none_or(|ns| selection::selects(&p.spec, ns)))
            .map(|p| {
                self.ledger.mark_namespace(&p.name_any(), namespace);
                ObjectRef::from_obj(p.as_ref())
            })
            .collect()
    }
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
    let category = error.root_category();
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[category])
        .inc();
    // What failed is planned again in full: the retained results may not hold.
    ctx.ledger.mark_full(&profile.name_any());
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
    // The note names what failed on which object; errors never carry a secret's value.
    let event = Event::warning(category, "Reconcile", error.to_string());
    tokio::spawn(async move { ctx.events.publish(&ctx.metrics, &profile, &[event]).await });
    Action::requeue(delay)
}

/// One control's outcome after the writer: drift with what became of it, the writes, the
/// findings and events, and when to look again.
struct Done<F> {
    drift: Vec<(controls::Drift, DriftOutcome)>,
    applied: Vec<Applied>,
    findings: F,
    events: Vec<Event>,
    next_due: Option<DateTime<Utc>>,
}

async fn carry_out<F>(outcome: Outcome<F>, writer: &Writer) -> Done<F> {
    let applied = writer.execute(outcome.writes).await;
    Done {
        drift: drift_outcomes(outcome.drift, &applied),
        applied,
        findings: outcome.findings,
        events: outcome.events,
        next_due: outcome.next_due,
    }
}

/// One profile's pass: select, plan each control, write (Enforce), report.
async fn apply_profile(profile: &HardeningProfile, ctx: &Context) -> Result<Action, Error> {
    // Whole seconds: status times are compared to decide whether to write.
    let now = Utc::now().trunc_subsecs(0);
    let name = profile.name_any();
    let uid = profile.metadata.uid.clone().ok_or(Error::MissingIdentity)?;
    let spec = &profile.spec;
    let writer = Writer::new(ctx.client.clone(), ctx.metrics.clone(), profile)?;

    let invalid = crate::api::validate::invalid_fields(spec);
    if !invalid.is_empty() {
        let findings = Findings {
            invalid,
            ..Default::default()
        };
        report(profile, ctx, &writer, &findings, vec![], now).await?;
        return Ok(Action::await_change());
    }
    let selection = select(profile, ctx, now);
    let (namespaced, mut applied) = plan_namespaces(profile, &uid, &selection, ctx, &writer).await;
    let mut findings = Findings {
        drift: namespaced.drift,
        namespaces: namespaced.findings,
        ..Default::default()
    };
    let mut events = Vec::new();
    let mut due: Vec<Option<DateTime<Utc>>> = vec![selection::next_exception_expiry(spec, now)];
    if let Some(rot) = &spec.secret_rotation {
        let acting = selection.acting_in(ControlName::SecretRotation);
        let previous = profile.status.as_ref().and_then(|s| s.rotation.as_ref());
        let observed = ctx.caches.rotation_observed(rot, &acting, previous);
        let done = carry_out(controls::rotation::plan(rot, &observed, now), &writer).await;
        due.push(done.next_due);
        findings.rotation = Some(done.findings);
        events.extend(done.events);
        applied.extend(done.applied);
    }
    let mut caught_up = false;
    if let Some(backups) = &spec.backups {
        let acting = selection.acting_in(ControlName::Backups);
        let previous = profile.status.as_ref().and_then(|s| s.backups.as_ref());
        let observed = ctx
            .caches
            .backup_observed(&name, &uid, backups, &acting, previous);
        let done = carry_out(snapshots::plan(&name, backups, &observed, now), &writer).await;
        caught_up = done.findings.catching_up;
        due.push(done.next_due);
        findings.backups = Some(done.findings);
        events.extend(done.events);
        applied.extend(done.applied);
    }
    findings.selection = selection;
    events.extend(events::after_writes(&findings.drift, &applied, caught_up));
    report(profile, ctx, &writer, &findings, events, now).await?;

    let failures: Vec<&Error> = applied
        .iter()
        .filter_map(|a| a.effect.as_ref().err())
        .collect();
    if let Some(first) = failures.first() {
        return Err(Error::PartialApply {
            profile: name,
            count: failures.len(),
            total: applied.len(),
            first: first.to_string(),
        });
    }
    let name_taken = findings
        .unresolved()
        .any(|d| d.reason == DriftReason::NameTaken);
    let mut delay = requeue_after(due.into_iter().flatten().min()).min(FULL_PASS_EVERY);
    if name_taken {
        delay = delay.min(NAME_TAKEN_RETRY);
    }
    Ok(Action::requeue(delay))
}

/// Which namespaces the profile holds, per control, among every profile in the cache.
fn select(profile: &HardeningProfile, ctx: &Context, now: DateTime<Utc>) -> Selection {
    fn info(p: &HardeningProfile) -> ProfileInfo<'_> {
        ProfileInfo {
            name: p.metadata.name.as_deref().unwrap_or_default(),
            created: p.metadata.creation_timestamp.as_ref().and_then(to_chrono),
            spec: &p.spec,
        }
    }
    let all = ctx.profiles.state();
    let others: Vec<ProfileInfo<'_>> = all.iter().map(|p| info(p)).collect();
    selection::select(&info(profile), &others, &ctx.caches.namespace_infos(), now)
}

/// Network policies and budgets, namespace by namespace over what changed (see
/// [`crate::incremental`]), writing whenever a batch is pending. Returns the whole profile's
/// drift and findings, and the writes made.
async fn plan_namespaces(
    profile: &HardeningProfile,
    uid: &str,
    selection: &Selection,
    ctx: &Context,
    writer: &Writer,
) -> (NamespaceResult, Vec<Applied>) {
    let name = profile.name_any();
    let spec = &profile.spec;
    let policy_ns = selection.acting_in(ControlName::NetworkPolicies);
    let budget_ns = selection.acting_in(ControlName::PodDisruptionBudgets);
    let scope: BTreeSet<String> = policy_ns
        .iter()
        .chain(&budget_ns)
        .chain(&selection.namespaces)
        .cloned()
        .collect();
    let version = (uid.to_string(), profile.metadata.generation);
    let planned = ctx.ledger.begin(&name, &version, &scope, Instant::now());
    let index = ctx.caches.namespace_index(
        &name,
        uid,
        match &planned {
            Scope::Full => None,
            Scope::Namespaces(set) => Some(set),
        },
    );
    let namespaces: BTreeSet<String> = match &planned {
        // Namespaces holding objects of ours outside the scope are where deletions come from.
        Scope::Full => scope
            .iter()
            .chain(index.owned_namespaces())
            .cloned()
            .collect(),
        Scope::Namespaces(set) => set.clone(),
    };
    let plan_one = |observed: &NamespaceObserved| {
        let ns = observed.namespace.as_str();
        let np = spec
            .network_policies
            .as_ref()
            .filter(|_| policy_ns.contains(ns));
        let pdb = spec
            .pod_disruption_budgets
            .as_ref()
            .filter(|_| budget_ns.contains(ns));
        let judge_drains =
            spec.pod_disruption_budgets.is_some() && selection.namespaces.contains(ns);
        let a = controls::network_policies::plan(&name, np, observed);
        let b = controls::disruption_budgets::plan(&name, pdb, judge_drains, observed);
        Outcome {
            writes: [a.writes, b.writes].concat(),
            drift: [a.drift, b.drift].concat(),
            findings: a.findings.merge(b.findings),
            events: vec![],
            next_due: None,
        }
    };
    let mut results: BTreeMap<String, NamespaceResult> = BTreeMap::new();
    let (mut pending, mut applied) = (Outcome::<()>::default(), Vec::new());
    for ns in &namespaces {
        let out = plan_one(&index.observed(ns));
        results.insert(
            ns.clone(),
            NamespaceResult {
                drift: vec![],
                findings: out.findings,
            },
        );
        pending.writes.extend(out.writes);
        pending.drift.extend(out.drift);
        if pending.writes.len() >= WRITE_BATCH {
            flush(
                std::mem::take(&mut pending),
                writer,
                &mut results,
                &mut applied,
            )
            .await;
        }
    }
    flush(pending, writer, &mut results, &mut applied).await;
    let all = ctx
        .ledger
        .finish(&name, version, scope, &planned, results, Instant::now());
    (all, applied)
}

/// Carries out pending writes and files each drift, with its outcome, under its namespace.
async fn flush(
    pending: Outcome<()>,
    writer: &Writer,
    results: &mut BTreeMap<String, NamespaceResult>,
    applied: &mut Vec<Applied>,
) {
    let done = carry_out(pending, writer).await;
    for (d, o) in done.drift {
        results
            .entry(d.key.namespace.clone())
            .or_default()
            .drift
            .push((d, o));
    }
    applied.extend(done.applied);
}

/// Metrics, events and the status (written only when it changed) for one pass.
async fn report(
    profile: &HardeningProfile,
    ctx: &Context,
    writer: &Writer,
    findings: &Findings,
    mut events: Vec<Event>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let name = profile.name_any();
    ctx.metrics.report(&name, findings);
    let next = status::compute(
        &profile.spec,
        profile.metadata.generation,
        findings,
        profile.status.as_ref(),
        now,
    );
    let ready = crate::api::conditions::is_true(&next.conditions, crate::api::conditions::READY);
    ctx.metrics
        .profile_ready
        .with_label_values(&[name.as_str()])
        .set(i64::from(ready));
    let changed = status::changed(profile.status.as_ref(), &next);
    if changed {
        let previous = profile
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        events.extend(events::condition_flips(previous, &next.conditions));
    }
    ctx.events.publish(&ctx.metrics, profile, &events).await;
    if changed {
        writer.write_status(&next).await?;
    }
    Ok(())
}

/// The one way a due time becomes a requeue: from now, just after it, within the resync.
fn requeue_after(due: Option<DateTime<Utc>>) -> Duration {
    due.and_then(|t| (t - Utc::now()).to_std().ok())
        .map(|d| d + DUE_PADDING)
        .unwrap_or(FULL_PASS_EVERY)
}

/// Removes everything the profile made. Garbage collection would too, through the owner
/// references, but doing it here lets a failure hold the finalizer and be retried and seen.
/// Snapshots are data: orphaned unless the profile says Delete.
async fn cleanup_profile(profile: &HardeningProfile, ctx: &Context) -> Result<Action, Error> {
    let name = profile.name_any();
    let uid = profile.metadata.uid.clone().ok_or(Error::MissingIdentity)?;
    let writer = Writer::new(ctx.client.clone(), ctx.metrics.clone(), profile)?.enforcing();
    let mut writes: Vec<controls::Write> = ctx
        .caches
        .owned_for_deletion(&name, &uid)
        .into_iter()
        .map(controls::Write::Delete)
        .collect();
    let snapshots = ctx
        .caches
        .owned_snapshots(&name, &uid)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    writes.extend(snapshots::on_profile_deletion(
        profile.spec.backups.as_ref(),
        snapshots,
    ));
    let total = writes.len();
    let applied = writer.execute(writes).await;
    let failures: Vec<&Error> = applied
        .iter()
        .filter_map(|a| a.effect.as_ref().err())
        .collect();
    if let Some(first) = failures.first() {
        return Err(Error::PartialApply {
            profile: name,
            count: failures.len(),
            total,
            first: first.to_string(),
        });
    }
    info!(profile = %name, written = total, "profile deleted; removed what it made");
    ctx.metrics.forget_profile(&name);
    ctx.ledger.forget(&name);
    Ok(Action::await_change())
}
