//! Watches, mapping input changes to the profiles (and namespaces) they affect, `reconcile`
//! and `error_policy`. A reconcile runs one pass ([`crate::pass`]) inside kube's finalizer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tracing::{info, info_span, warn, Instrument};

use crate::api::{HardeningProfile, FINALIZER};
use crate::events::{Event, Publisher};
use crate::fence::Fence;
use crate::incremental::{
    objects, workloads, Affects, Ledger, RotationInputs, Whole, CLAIMS, SECRETS,
};
use crate::metrics::Metrics;
use crate::observe::{self, Caches};
use crate::ownership::profile_of;
use crate::selection::{self, NamespaceInfo};
use crate::written_status::WrittenStatus;
use crate::Error;

/// How long snapshot events for one profile are gathered before its backups are planned
/// again (see [`crate::coalesce`]): snapshots turning ready are news for the status and for
/// retention, never for a deadline, which the pass's own requeue keeps.
const SNAPSHOT_EVENTS_WINDOW: Duration = Duration::from_secs(2);

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub caches: Caches,
    pub profiles: Store<HardeningProfile>,
    pub metrics: Arc<Metrics>,
    pub(crate) events: Publisher,
    /// True once every cache holds its first list. A watch channel because any number of
    /// reconciles may wait at once (a store's own readiness future wakes only the last of
    /// several waiters, which left a second profile never reconciled).
    pub(crate) synced: tokio::sync::watch::Receiver<bool>,
    /// Open while this replica may write (always, without leader election).
    pub(crate) fence: Fence,
    pub(crate) ledger: Ledger,
    /// What rotation read of each workload, to tell which workload events concern it.
    pub(crate) rotation_inputs: RotationInputs,
    pub(crate) failures: Mutex<HashMap<String, u32>>,
    /// Each profile's last written status, for passes that read a copy from before it.
    pub(crate) written: WrittenStatus,
    /// Writes in flight at once for one profile.
    pub(crate) write_concurrency: usize,
    /// The API server's time, which snapshot ages are measured by.
    pub(crate) server_clock: observe::clock::ServerClock,
    /// Namespaces no profile selects by label.
    pub(crate) excluded_namespaces: selection::ExcludedNamespaces,
    /// What the operator accepts beyond the CRD's schema.
    pub(crate) limits: crate::api::validate::Limits,
    /// Rampart's OpenReports reports, with `--reports`.
    pub(crate) reports: Option<observe::reports::ReportCache>,
}

/// How this operator process runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// This replica's name in events.
    pub instance: String,
    /// Only profiles matching this label selector are reconciled.
    pub profile_selector: Option<String>,
    /// Writes in flight at once for one profile.
    pub max_concurrent_writes: usize,
    /// Namespaces no profile selects by label.
    pub excluded_namespaces: selection::ExcludedNamespaces,
    /// What the operator accepts beyond the CRD's schema.
    pub limits: crate::api::validate::Limits,
    /// Write an OpenReports `Report` per profile and selected namespace, once the cluster
    /// serves `openreports.io/v1alpha1`.
    pub reports: bool,
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
    // Not served yet is not "never": the snapshot feed asks discovery again until it is (CRDs
    // are often installed after the operator), and an error here is an unknown, retried too.
    let snapshot_api = match observe::snapshot_api_served(&client).await {
        Ok(served) => served,
        Err(e) => {
            warn!(error = %e, "snapshot API discovery failed; asking again in the background");
            false
        }
    };
    if !snapshot_api {
        warn!("the cluster does not serve snapshot.storage.k8s.io/v1 yet: backups report SnapshotAPIMissing until it does");
    }
    let (caches, feeds) = observe::caches(&client, snapshot_api);
    let (reports, deleted_reports) = if options.reports {
        // Like the snapshot API: not served yet is asked again in the background, quietly,
        // since a cluster without OpenReports is a normal one.
        let served = match observe::reports::report_api_served(&client).await {
            Ok(served) => served,
            Err(e) => {
                tracing::debug!(error = %e, "report API discovery failed; asking again in the background");
                false
            }
        };
        if !served {
            info!("the cluster does not serve openreports.io/v1alpha1: reports start when it does");
        }
        let (cache, deleted) = observe::reports::report_feed(&client, served);
        (Some(cache), Some(deleted))
    } else {
        (None, None)
    };
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
        rotation_inputs: RotationInputs::default(),
        failures: Mutex::new(HashMap::new()),
        written: WrittenStatus::default(),
        write_concurrency: options.max_concurrent_writes,
        server_clock: Default::default(),
        excluded_namespaces: options.excluded_namespaces.clone(),
        limits: options.limits,
        reports,
    });

    // A profile that appears, changes its spec or goes can hand namespaces to, or take them
    // from, the others: they are re-planned in full. Its own status writes change nothing.
    let (others_tx, others_rx) = futures::channel::mpsc::unbounded();
    let trigger_ctx = ctx.clone();
    let profile_changes = observe::spec_changes(
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
    // The snapshot API served after startup: every profile's backups start now, not at the
    // next resync (no snapshot of ours exists yet to trigger them).
    let api_ctx = ctx.clone();
    let snapshot_api_appeared = futures::stream::once(async move {
        if !snapshot_api {
            api_ctx.caches.snapshots.until_served().await;
            info!("snapshot API served; planning every profile's backups");
            api_ctx.ledger.mark_all_full();
            Some(())
        } else {
            None
        }
    })
    .filter_map(futures::future::ready);
    let became_leader = futures::stream::select(became_leader, snapshot_api_appeared);
    // The report API's first list: every profile writes its reports now.
    let reports_ctx = ctx.clone();
    let report_api_appeared = futures::stream::once(async move {
        let cache = reports_ctx.reports.as_ref()?;
        cache.until_served().await;
        info!("report API listed; writing every profile's reports");
        Some(())
    })
    .filter_map(futures::future::ready);
    let became_leader = futures::stream::select(became_leader, report_api_appeared);

    let touched = |ctx: &Arc<Context>, affects: Affects| {
        let ctx = ctx.clone();
        move |namespace: Option<String>| ctx.namespace_touched(namespace.as_deref(), affects)
    };
    // A workload still in its cache after the event is there; one that is not was deleted.
    fn workload<K: kube::Resource<DynamicType = ()> + Clone + 'static>(
        ctx: &Arc<Context>,
        kind: &'static str,
        store: Store<observe::workloads::Workload<K>>,
    ) -> impl Fn(observe::workloads::Workload<K>) -> Vec<ObjectRef<HardeningProfile>> {
        let ctx = ctx.clone();
        move |w| {
            let (ns, name) = (w.namespace().unwrap_or_default(), w.name_any());
            let present = store.get(&ObjectRef::from_obj(&w)).is_some();
            let digest = present.then(|| w.rotation_inputs());
            let changed = ctx.rotation_inputs.changed(kind, &ns, &name, digest);
            ctx.namespace_touched(Some(&ns), workloads(kind, changed))
        }
    }
    // Our own budgets and policies name their profile; a user's matter to every profile
    // selecting their namespace.
    let owner_or_namespace = |ctx: &Arc<Context>, kind: &'static str| {
        let ctx = ctx.clone();
        move |meta: &kube::core::ObjectMeta| match profile_of(meta) {
            Some(p) => {
                let here = ctx.reconciled_here(&p);
                if let (Some(ns), Some(_)) = (&meta.namespace, &here) {
                    ctx.ledger.mark_namespace(&p, ns);
                }
                ctx.triggered(kind, here.into_iter().collect())
            }
            None => ctx.namespace_touched(meta.namespace.as_deref(), objects(kind)),
        }
    };
    let (deployments, statefulsets, daemonsets) = (
        workload(&ctx, "Deployment", ctx.caches.deployments.clone()),
        workload(&ctx, "StatefulSet", ctx.caches.statefulsets.clone()),
        workload(&ctx, "DaemonSet", ctx.caches.daemonsets.clone()),
    );
    let (budgets, policies) = (
        owner_or_namespace(&ctx, "PodDisruptionBudget"),
        owner_or_namespace(&ctx, "NetworkPolicy"),
    );
    let (secrets, pvcs) = (touched(&ctx, SECRETS), touched(&ctx, CLAIMS));
    let pvc_ctx = ctx.clone();
    let namespaces_ctx = ctx.clone();
    let mut controller = Controller::for_stream(profile_changes, profiles)
        .watches_stream(feeds.secrets, move |s| secrets(s.namespace()))
        .watches_stream(feeds.daemonsets, daemonsets)
        // A restore verification's scratch PVC names its profile; any other PVC matters to the
        // profiles selecting its namespace.
        .watches_stream(feeds.pvcs, move |p| match profile_of(&p.metadata) {
            Some(profile) => {
                let here = pvc_ctx.reconciled_here(&profile);
                if here.is_some() {
                    pvc_ctx.ledger.mark_whole(&profile, Whole::Backups);
                }
                pvc_ctx.triggered(CLAIMS.kind, here.into_iter().collect())
            }
            None => pvcs(p.namespace()),
        })
        .watches_stream(feeds.deployments, deployments)
        .watches_stream(feeds.statefulsets, statefulsets)
        .watches_stream(feeds.budgets, move |b| budgets(&b.metadata))
        .watches_stream(feeds.policies, move |np| policies(&np.metadata))
        // A namespace's labels decide which profiles select it; selection is recomputed by
        // every pass, and the namespaces that entered or left a profile's scope are planned.
        .watches_stream(feeds.namespaces, move |_| {
            namespaces_ctx.triggered("Namespace", namespaces_ctx.all_profiles())
        });
    {
        // Snapshots name their profile. Their events mark its backups at once (a pass that
        // runs for another reason plans them too) and trigger a pass once per window.
        let snapshot_ctx = ctx.clone();
        let marked = feeds.snapshots.filter_map(move |s| {
            let profile = match s {
                Ok(s) => profile_of(&s.metadata),
                Err(e) => {
                    warn!(error = %e, "snapshot watch");
                    None
                }
            };
            let target = profile.and_then(|p| snapshot_ctx.reconciled_here(&p));
            if let Some(p) = &target {
                snapshot_ctx.ledger.mark_whole(&p.name, Whole::Backups);
                snapshot_ctx
                    .metrics
                    .triggers
                    .with_label_values(&["VolumeSnapshot"])
                    .inc();
            }
            futures::future::ready(target)
        });
        controller =
            controller.reconcile_on(crate::coalesce::coalesce(marked, SNAPSHOT_EVENTS_WINDOW));
    }
    if let Some(deleted) = deleted_reports {
        // A report of ours deleted by someone: its profile writes it again (one deleted
        // with its namespace or profile is simply not desired any more).
        let report_ctx = ctx.clone();
        let profiles = deleted.filter_map(move |r| {
            let target = profile_of(&r.metadata).and_then(|p| report_ctx.reconciled_here(&p));
            futures::future::ready(target)
        });
        controller = controller.reconcile_on(profiles);
    }
    controller
        .reconcile_on(others_rx)
        .reconcile_all_on(became_leader)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) => {}
                // A pass queued for a profile that has since gone (its deletion finished
                // while a requeue or an event for it was pending): nothing left to do.
                Err(kube::runtime::controller::Error::ObjectNotFound(r)) => {
                    tracing::debug!(profile = %r.name, "profile gone before its queued pass");
                }
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

impl Context {
    /// `profile` when this process reconciles it: objects name their profile whichever
    /// operator (another `--profile-selector`, say) it belongs to, and a pass asked for a
    /// profile outside the cache would only fail.
    /// The writer for `profile`'s pass, at this process's write concurrency.
    pub(crate) fn writer(
        &self,
        profile: &HardeningProfile,
    ) -> Result<crate::apply::Writer, crate::Error> {
        crate::apply::Writer::new(
            self.client.clone(),
            self.metrics.clone(),
            profile,
            self.write_concurrency,
        )
    }

    fn reconciled_here(&self, profile: &str) -> Option<ObjectRef<HardeningProfile>> {
        let target = ObjectRef::new(profile);
        self.profiles.get(&target).map(|_| target)
    }

    fn all_profiles(&self) -> Vec<ObjectRef<HardeningProfile>> {
        self.profiles
            .state()
            .iter()
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }

    /// The profiles whose selectors take in `namespace`, each told what the event there can
    /// have changed; all of them when the namespace is not cached yet, since a missed trigger
    /// costs more than a spare pass.
    fn namespace_touched(
        &self,
        namespace: Option<&str>,
        affects: Affects,
    ) -> Vec<ObjectRef<HardeningProfile>> {
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
                excluded: self.excluded_namespaces.excludes(namespace),
            });
        let refs = self
            .profiles
            .state()
            .iter()
            .filter(|p| ns.as_ref().is_none_or(|ns| selection::selects(&p.spec, ns)))
            .map(|p| {
                let name = p.name_any();
                if affects.namespace {
                    self.ledger.mark_namespace(&name, namespace);
                }
                if let Some(control) = affects.whole {
                    if !(affects.only_if_under_way && crate::incremental::rotation_settled(p)) {
                        self.ledger.mark_whole(&name, control);
                    }
                }
                ObjectRef::from_obj(p.as_ref())
            })
            .collect();
        self.triggered(affects.kind, refs)
    }

    /// Counts an event that asks for passes, by kind.
    fn triggered(
        &self,
        kind: &str,
        refs: Vec<ObjectRef<HardeningProfile>>,
    ) -> Vec<ObjectRef<HardeningProfile>> {
        if !refs.is_empty() {
            self.metrics.triggers.with_label_values(&[kind]).inc();
        }
        refs
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
                Finalizer::Apply(p) => crate::pass::apply_profile(&p, &ctx).await,
                Finalizer::Cleanup(p) => crate::pass::cleanup_profile(&p, &ctx).await,
            }
        })
        .await;
        let result = match result {
            // A second cleanup queued before the first removed the finalizer: the profile is
            // already gone, which is what the cleanup was for.
            Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(e)))
                if e.code == 404 =>
            {
                Ok(Action::await_change())
            }
            other => other.map_err(|e| Error::Finalizer {
                profile: name.clone(),
                source: Box::new(e),
            }),
        };
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
