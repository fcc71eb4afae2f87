//! Observation: the watch-fed caches of everything a reconcile reads, and their translation
//! into the plain values the pure controls take. Calls the API (watches) but never writes.
//!
//! Workloads and budgets are watched whole (their selectors and replica counts matter),
//! namespaces as metadata only, and NetworkPolicies only where they carry Rampart's label.
//! Every object is trimmed before caching ([`crate::trim`]) to the fields a reconcile reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::{
    all_managed_selector, ControlName, CONTROL_LABEL, KEEP_LABEL, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE, PROFILE_LABEL,
};
use crate::controls::disruption_budgets::{BudgetHealth, BudgetInfo, WorkloadInfo, WorkloadKind};
use crate::controls::rotation::{ConsumerInfo, ConsumerKind, ConsumerRef};
use crate::controls::snapshots::{PvcInfo, SnapshotInfo, SLOT_ANNOTATION};
use crate::controls::{ManagedKind, ObjectKey, ObservedObject};
use crate::selection::NamespaceInfo;
use crate::trim::{Policy, Pvc, SecretMeta, Snapshot};
use crate::workloads::{Summarize, Workload};

/// The caches a reconcile reads.
#[derive(Clone)]
pub struct Caches {
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub deployments: Store<Workload<Deployment>>,
    pub statefulsets: Store<Workload<StatefulSet>>,
    pub budgets: Store<PodDisruptionBudget>,
    pub policies: Store<Policy>,
    /// Secrets as metadata only: rotation needs their labels and annotations, and a value
    /// that is never read into memory can never leak from it.
    pub secrets: Store<SecretMeta>,
    pub daemonsets: Store<Workload<DaemonSet>>,
    pub pvcs: Store<Pvc>,
    /// Rampart's VolumeSnapshots; `None` when the cluster does not serve the snapshot API.
    pub snapshots: Option<Store<Snapshot>>,
}

type Feed<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// The watch streams that feed [`Caches`]; the controller polls them and maps each change to
/// the profiles it affects.
pub struct Feeds {
    pub namespaces: Feed<PartialObjectMeta<Namespace>>,
    pub deployments: Feed<Workload<Deployment>>,
    pub statefulsets: Feed<Workload<StatefulSet>>,
    pub budgets: Feed<PodDisruptionBudget>,
    pub policies: Feed<Policy>,
    pub secrets: Feed<SecretMeta>,
    pub daemonsets: Feed<Workload<DaemonSet>>,
    pub pvcs: Feed<Pvc>,
    pub snapshots: Option<Feed<Snapshot>>,
}

/// The VolumeSnapshot API resource.
pub fn snapshot_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
        "volumesnapshots",
    )
}

/// A reflector on `api`, each object trimmed (see [`crate::trim`]) before it is cached.
fn feed<K>(api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> (Store<K>, Feed<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .touched_objects();
    (reader, Box::pin(stream))
}

/// A watch event with its object turned into the form the cache keeps.
fn map_event<A, B>(event: watcher::Event<A>, f: impl Fn(A) -> B) -> watcher::Event<B> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// A reflector on `api` that caches each object in the form `f` makes of it.
fn mapped_feed<K, C>(api: Api<K>, config: watcher::Config, f: fn(K) -> C) -> (Store<C>, Feed<C>)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    C: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .map_ok(move |event| map_event(event, f))
        .reflect(writer)
        .touched_objects();
    (reader, Box::pin(stream))
}

/// Starts nothing by itself: the returned feeds must be polled (the controller does).
/// `snapshot_api` says whether the cluster serves `snapshot.storage.k8s.io/v1`.
pub fn caches(client: &Client, snapshot_api: bool) -> (Caches, Feeds) {
    // Namespaces and Secrets as metadata only: an `Api<PartialObjectMeta<_>>` watch asks the
    // API server for metadata alone.
    let (namespaces, ns_stream) = feed(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
        crate::trim::namespace,
    );
    let (deployments, dep_stream) = mapped_feed(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
        Deployment::summarize,
    );
    let (statefulsets, sts_stream) = mapped_feed(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
        StatefulSet::summarize,
    );
    let (budgets, pdb_stream) = feed(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
        crate::trim::budget,
    );
    let (policies, np_stream) = mapped_feed(
        Api::<NetworkPolicy>::all(client.clone()),
        watcher::Config::default().labels(&all_managed_selector()),
        crate::trim::network_policy,
    );
    let (secrets, secret_stream) = mapped_feed(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default(),
        crate::trim::secret,
    );
    let (daemonsets, ds_stream) = mapped_feed(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
        DaemonSet::summarize,
    );
    let (pvcs, pvc_stream) = mapped_feed(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        crate::trim::pvc,
    );
    let (snapshots, snap_stream) = if snapshot_api {
        let (store, feed) = mapped_feed(
            Api::<DynamicObject>::all_with(client.clone(), &snapshot_resource()),
            watcher::Config::default().labels(&all_managed_selector()),
            crate::trim::snapshot,
        );
        (Some(store), Some(feed))
    } else {
        (None, None)
    };
    (
        Caches {
            namespaces,
            deployments,
            statefulsets,
            budgets,
            policies,
            secrets,
            daemonsets,
            pvcs,
            snapshots,
        },
        Feeds {
            namespaces: ns_stream,
            deployments: dep_stream,
            statefulsets: sts_stream,
            budgets: pdb_stream,
            policies: np_stream,
            secrets: secret_stream,
            daemonsets: ds_stream,
            pvcs: pvc_stream,
            snapshots: snap_stream,
        },
    )
}

impl Caches {
    /// Waits until every cache has its first full list, so a reconcile never mistakes an
    /// empty cache for an empty cluster. Call it from one task only: kube's store readiness
    /// wakes just the last of several concurrent waiters and leaves the others hanging.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.namespaces.wait_until_ready().await?;
        self.deployments.wait_until_ready().await?;
        self.statefulsets.wait_until_ready().await?;
        self.budgets.wait_until_ready().await?;
        self.policies.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.daemonsets.wait_until_ready().await?;
        self.pvcs.wait_until_ready().await?;
        if let Some(s) = &self.snapshots {
            s.wait_until_ready().await?;
        }
        Ok(())
    }

    /// Secrets in `namespaces` matching the rotation selector, by namespace then name. One
    /// pass over the cache, whatever the number of namespaces.
    pub fn secrets_in(
        &self,
        namespaces: &BTreeSet<&str>,
        selector: &crate::api::LabelSelector,
    ) -> Vec<crate::controls::rotation::SecretInfo> {
        let mut out: Vec<_> = self
            .secrets
            .state()
            .iter()
            .filter(|s| {
                in_any(&s.metadata, namespaces) && crate::labels::matches(selector, s.labels())
            })
            .map(|s| crate::controls::rotation::SecretInfo {
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                name: s.name_any(),
                rotation_id: s.rotation_id.clone(),
                adopted: s.adopted,
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// Deployments, StatefulSets and DaemonSets in `namespaces`, as rotation consumers.
    pub fn consumers_in(&self, namespaces: &BTreeSet<&str>) -> Vec<ConsumerInfo> {
        let mut out: Vec<ConsumerInfo> = Vec::new();
        out.extend(consumers(
            &self.deployments,
            ConsumerKind::Deployment,
            namespaces,
        ));
        out.extend(consumers(
            &self.statefulsets,
            ConsumerKind::StatefulSet,
            namespaces,
        ));
        out.extend(consumers(
            &self.daemonsets,
            ConsumerKind::DaemonSet,
            namespaces,
        ));
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// PVCs in `namespaces` matching the backup selector, by namespace then name.
    pub fn pvcs_in(
        &self,
        namespaces: &BTreeSet<&str>,
        selector: &crate::api::LabelSelector,
    ) -> Vec<PvcInfo> {
        let mut out: Vec<PvcInfo> = self
            .pvcs
            .state()
            .iter()
            .filter(|p| {
                in_any(&p.metadata, namespaces) && crate::labels::matches(selector, p.labels())
            })
            .map(|p| pvc_info(p))
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// Every PVC restored from a snapshot, in `namespaces`: retention must never prune those.
    pub fn restoring_pvcs_in(&self, namespaces: &BTreeSet<&str>) -> Vec<PvcInfo> {
        self.pvcs
            .state()
            .iter()
            .filter(|p| in_any(&p.metadata, namespaces))
            .map(|p| pvc_info(p))
            .filter(|p| p.restored_from.is_some())
            .collect()
    }

    /// The profile's VolumeSnapshots (its labels and an owner reference to it), with the
    /// observed objects the write layer needs to delete them.
    pub fn owned_snapshots(&self, profile: &str, uid: &str) -> Vec<(SnapshotInfo, ObservedObject)> {
        let Some(store) = &self.snapshots else {
            return vec![];
        };
        store
            .state()
            .iter()
            .filter(|s| belongs_to(&s.metadata, profile, uid))
            .map(|s| {
                let info = SnapshotInfo {
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    name: s.name_any(),
                    pvc: s.pvc.clone(),
                    slot: s
                        .annotations()
                        .get(SLOT_ANNOTATION)
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&chrono::Utc)),
                    ready: s.ready,
                    failed: s.failed,
                    keep: s.labels().contains_key(KEEP_LABEL),
                    created: s.metadata.creation_timestamp.as_ref().and_then(to_chrono),
                };
                let observed = ObservedObject {
                    key: ObjectKey {
                        kind: ManagedKind::VolumeSnapshot,
                        namespace: info.namespace.clone(),
                        name: info.name.clone(),
                    },
                    control: Some(ControlName::Backups),
                    uid: s.metadata.uid.clone(),
                    labels: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                    fingerprint: None,
                };
                (info, observed)
            })
            .collect()
    }

    pub fn namespace_infos(&self) -> Vec<NamespaceInfo> {
        self.namespaces
            .state()
            .iter()
            .map(|ns| NamespaceInfo {
                name: ns.name_any(),
                labels: ns.labels().clone(),
                terminating: ns.metadata.deletion_timestamp.is_some(),
            })
            .collect()
    }

    /// Deployments, StatefulSets and every PodDisruptionBudget (Rampart's and users'), by
    /// namespace.
    pub fn budget_index(&self) -> BudgetIndex {
        BudgetIndex {
            deployments: ByNamespace::of(&self.deployments),
            statefulsets: ByNamespace::of(&self.statefulsets),
            budgets: ByNamespace::of(&self.budgets),
        }
    }

    /// The NetworkPolicies and PodDisruptionBudgets that belong to the profile (its labels and
    /// an owner reference to its uid), by namespace. Nothing else is ever changed or deleted.
    pub fn owned(&self, profile: &str, profile_uid: &str) -> Owned {
        let mut by_namespace: BTreeMap<String, Vec<OwnedRef>> = BTreeMap::new();
        for p in self.policies.state() {
            if belongs_to(&p.metadata, profile, profile_uid) {
                by_namespace
                    .entry(p.namespace().unwrap_or_default())
                    .or_default()
                    .push(OwnedRef::Policy(p));
            }
        }
        for b in self.budgets.state() {
            if belongs_to(&b.metadata, profile, profile_uid) {
                by_namespace
                    .entry(b.namespace().unwrap_or_default())
                    .or_default()
                    .push(OwnedRef::Budget(b));
            }
        }
        Owned { by_namespace }
    }
}

/// A profile's policies and budgets as cached, by namespace. They become [`ObservedObject`]s
/// (JSON, what drift is judged on) one namespace at a time, so a reconcile never holds the
/// whole estate as JSON.
pub struct Owned {
    by_namespace: BTreeMap<String, Vec<OwnedRef>>,
}

enum OwnedRef {
    Policy(Arc<Policy>),
    Budget(Arc<PodDisruptionBudget>),
}

impl Owned {
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.by_namespace.keys().map(String::as_str)
    }

    /// The profile's objects in `namespace`.
    pub fn observed_in(&self, namespace: &str) -> Vec<ObservedObject> {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|o| match o {
                OwnedRef::Policy(p) => observed(
                    ManagedKind::NetworkPolicy,
                    &p.metadata,
                    Some(p.fingerprint.clone()),
                ),
                OwnedRef::Budget(b) => observed(
                    ManagedKind::PodDisruptionBudget,
                    &b.metadata,
                    Some(crate::trim::spec_fingerprint(&b.spec)),
                ),
            })
            .collect()
    }

    /// All of them, for deletion: identity and uid only, no spec.
    pub fn for_deletion(&self) -> Vec<ObservedObject> {
        self.by_namespace
            .values()
            .flatten()
            .map(|o| match o {
                OwnedRef::Policy(p) => observed(ManagedKind::NetworkPolicy, &p.metadata, None),
                OwnedRef::Budget(b) => {
                    observed(ManagedKind::PodDisruptionBudget, &b.metadata, None)
                }
            })
            .collect()
    }
}

/// An object of ours as the plan sees it: with its labels, annotations and `fingerprint` when
/// it is to be judged for drift, with identity and uid only (`None`) when it is to be deleted.
fn observed(
    kind: ManagedKind,
    m: &kube::core::ObjectMeta,
    fingerprint: Option<String>,
) -> ObservedObject {
    let judged = fingerprint.is_some();
    ObservedObject {
        key: ObjectKey {
            kind,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        },
        control: control_of(m),
        uid: m.uid.clone(),
        labels: judged
            .then(|| m.labels.clone())
            .flatten()
            .unwrap_or_default(),
        annotations: judged
            .then(|| m.annotations.clone())
            .flatten()
            .unwrap_or_default(),
        fingerprint,
    }
}

/// Carries Rampart's managed-by label.
pub fn is_managed(meta: &kube::core::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

/// Carries the profile's labels and an owner reference to it.
pub fn belongs_to(meta: &kube::core::ObjectMeta, profile: &str, uid: &str) -> bool {
    is_managed(meta)
        && meta
            .labels
            .as_ref()
            .and_then(|l| l.get(PROFILE_LABEL))
            .is_some_and(|p| p == profile)
        && meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// The profile named in an object's labels, when Rampart made it.
pub fn profile_of(meta: &kube::core::ObjectMeta) -> Option<String> {
    if !is_managed(meta) {
        return None;
    }
    meta.labels
        .as_ref()
        .and_then(|l| l.get(PROFILE_LABEL))
        .cloned()
}

fn control_of(meta: &kube::core::ObjectMeta) -> Option<ControlName> {
    let label = meta.labels.as_ref()?.get(CONTROL_LABEL)?;
    ControlName::ALL.into_iter().find(|c| c.label() == label)
}

/// A Kubernetes timestamp as a chrono time.
pub fn to_chrono(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(
        t.0.as_second(),
        t.0.subsec_nanosecond().try_into().unwrap_or(0),
    )
}

fn in_any(meta: &kube::core::ObjectMeta, namespaces: &BTreeSet<&str>) -> bool {
    meta.namespace
        .as_deref()
        .is_some_and(|ns| namespaces.contains(ns))
}

fn consumers<K: Resource<DynamicType = ()> + Clone + 'static>(
    store: &Store<Workload<K>>,
    kind: ConsumerKind,
    namespaces: &BTreeSet<&str>,
) -> Vec<ConsumerInfo> {
    store
        .state()
        .iter()
        .filter(|w| in_any(&w.metadata, namespaces))
        .map(|w| ConsumerInfo {
            id: ConsumerRef {
                namespace: w.metadata.namespace.clone().unwrap_or_default(),
                kind,
                name: w.metadata.name.clone().unwrap_or_default(),
            },
            secrets: w.secrets.clone(),
            stamped_id: w.stamped_id.clone(),
            stamped_at: w
                .stamped_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
            rollout_complete: w.rollout_complete,
        })
        .collect()
}

/// A cache's objects by namespace, as the cache's own shared pointers (a pointer each), so a
/// reconcile turns one namespace at a time into the values the controls take.
struct ByNamespace<K>(HashMap<String, Vec<Arc<K>>>);

impl<K: Resource<DynamicType = ()> + Clone + 'static> ByNamespace<K> {
    fn of(store: &Store<K>) -> Self {
        let mut map: HashMap<String, Vec<Arc<K>>> = HashMap::new();
        for o in store.state() {
            map.entry(o.meta().namespace.clone().unwrap_or_default())
                .or_default()
                .push(o);
        }
        Self(map)
    }

    fn get(&self, namespace: &str) -> &[Arc<K>] {
        self.0.get(namespace).map(Vec::as_slice).unwrap_or_default()
    }
}

/// What the budget control reads, by namespace.
pub struct BudgetIndex {
    deployments: ByNamespace<Workload<Deployment>>,
    statefulsets: ByNamespace<Workload<StatefulSet>>,
    budgets: ByNamespace<PodDisruptionBudget>,
}

impl BudgetIndex {
    /// Deployments and StatefulSets in `namespace`, by kind then name.
    pub fn workloads_in(&self, namespace: &str) -> Vec<WorkloadInfo> {
        let mut out: Vec<WorkloadInfo> = self
            .deployments
            .get(namespace)
            .iter()
            .map(|w| workload_info(w, WorkloadKind::Deployment))
            .chain(
                self.statefulsets
                    .get(namespace)
                    .iter()
                    .map(|w| workload_info(w, WorkloadKind::StatefulSet)),
            )
            .collect();
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        out
    }

    /// Every PodDisruptionBudget in `namespace`, Rampart's and users'.
    pub fn budgets_in(&self, namespace: &str) -> Vec<BudgetInfo> {
        self.budgets
            .get(namespace)
            .iter()
            .map(|b| budget_info(b))
            .collect()
    }
}

fn workload_info<K>(w: &Workload<K>, kind: WorkloadKind) -> WorkloadInfo {
    WorkloadInfo {
        kind,
        namespace: w.metadata.namespace.clone().unwrap_or_default(),
        name: w.metadata.name.clone().unwrap_or_default(),
        replicas: w.replicas,
        selector: Some(w.selector.clone()),
        pod_labels: w.pod_labels.clone(),
    }
}

fn budget_info(b: &PodDisruptionBudget) -> BudgetInfo {
    let spec = b.spec.clone().unwrap_or_default();
    let health = b.status.as_ref().and_then(|s| {
        let current =
            s.observed_generation.is_some() && s.observed_generation == b.metadata.generation;
        current.then_some(BudgetHealth {
            disruptions_allowed: s.disruptions_allowed.unwrap_or(0),
            current_healthy: s.current_healthy.unwrap_or(0),
            expected_pods: s.expected_pods.unwrap_or(0),
        })
    });
    BudgetInfo {
        namespace: b.metadata.namespace.clone().unwrap_or_default(),
        name: b.metadata.name.clone().unwrap_or_default(),
        ours: is_managed(&b.metadata),
        selector: spec.selector,
        max_unavailable: spec.max_unavailable,
        min_available: spec.min_available,
        health,
    }
}

fn pvc_info(p: &Pvc) -> PvcInfo {
    PvcInfo {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.name_any(),
        created: p.metadata.creation_timestamp.as_ref().and_then(to_chrono),
        restored_from: p.restored_from.clone(),
    }
}
