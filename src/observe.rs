//! Observation: the watch-fed caches of everything a reconcile reads, and their translation
//! into the plain values the pure controls take. Calls the API (watches) but never writes.
//!
//! Workloads and budgets are watched whole (their selectors and replica counts matter),
//! namespaces as metadata only, and NetworkPolicies only where they carry Rampart's label.
//! Every object is trimmed before caching ([`crate::trim`]) to the fields a reconcile reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::Stream;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, PodTemplateSpec, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::{
    all_managed_selector, ControlName, CONTROL_LABEL, KEEP_LABEL, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE, PROFILE_LABEL, ROTATION_ID_ANNOTATION,
};
use crate::controls::disruption_budgets::{BudgetHealth, BudgetInfo, WorkloadInfo, WorkloadKind};
use crate::controls::rotation::{
    secrets_used_by, ConsumerInfo, ConsumerKind, ConsumerRef, RESTARTED_AT_ANNOTATION,
};
use crate::controls::snapshots::{PvcInfo, SnapshotInfo, SLOT_ANNOTATION};
use crate::controls::{ManagedKind, ObjectKey, ObservedObject};
use crate::selection::NamespaceInfo;

/// The caches a reconcile reads.
#[derive(Clone)]
pub struct Caches {
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
    pub budgets: Store<PodDisruptionBudget>,
    pub policies: Store<NetworkPolicy>,
    /// Secrets as metadata only: rotation needs their labels and annotations, and a value
    /// that is never read into memory can never leak from it.
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub daemonsets: Store<DaemonSet>,
    pub pvcs: Store<PersistentVolumeClaim>,
    /// Rampart's VolumeSnapshots; `None` when the cluster does not serve the snapshot API.
    pub snapshots: Option<Store<DynamicObject>>,
}

type Feed<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// The watch streams that feed [`Caches`]; the controller polls them and maps each change to
/// the profiles it affects.
pub struct Feeds {
    pub namespaces: Feed<PartialObjectMeta<Namespace>>,
    pub deployments: Feed<Deployment>,
    pub statefulsets: Feed<StatefulSet>,
    pub budgets: Feed<PodDisruptionBudget>,
    pub policies: Feed<NetworkPolicy>,
    pub secrets: Feed<PartialObjectMeta<Secret>>,
    pub daemonsets: Feed<DaemonSet>,
    pub pvcs: Feed<PersistentVolumeClaim>,
    pub snapshots: Option<Feed<DynamicObject>>,
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
    let (deployments, dep_stream) = feed(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
        crate::trim::deployment,
    );
    let (statefulsets, sts_stream) = feed(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
        crate::trim::statefulset,
    );
    let (budgets, pdb_stream) = feed(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
        crate::trim::budget,
    );
    let (policies, np_stream) = feed(
        Api::<NetworkPolicy>::all(client.clone()),
        watcher::Config::default().labels(&all_managed_selector()),
        crate::trim::network_policy,
    );
    let (secrets, secret_stream) = feed(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default(),
        crate::trim::secret,
    );
    let (daemonsets, ds_stream) = feed(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
        crate::trim::daemonset,
    );
    let (pvcs, pvc_stream) = feed(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        crate::trim::pvc,
    );
    let (snapshots, snap_stream) = if snapshot_api {
        let writer = reflector::store::Writer::new(snapshot_resource());
        let reader = writer.as_reader();
        let stream = watcher(
            Api::<DynamicObject>::all_with(client.clone(), &snapshot_resource()),
            watcher::Config::default().labels(&all_managed_selector()),
        )
        .default_backoff()
        .modify(crate::trim::snapshot)
        .reflect(writer)
        .touched_objects();
        (Some(reader), Some(Box::pin(stream) as Feed<DynamicObject>))
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
    /// empty cache for an empty cluster.
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
                rotation_id: s.annotations().get(ROTATION_ID_ANNOTATION).cloned(),
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// Deployments, StatefulSets and DaemonSets in `namespaces`, as rotation consumers.
    pub fn consumers_in(&self, namespaces: &BTreeSet<&str>) -> Vec<ConsumerInfo> {
        let mut out = Vec::new();
        for d in self.deployments.state() {
            if !in_any(&d.metadata, namespaces) {
                continue;
            }
            let st = d.status.clone().unwrap_or_default();
            let want = d.spec.replicas.unwrap_or(1);
            let complete = generation_observed(d.metadata.generation, st.observed_generation)
                && st.updated_replicas.unwrap_or(0) == want
                && st.available_replicas.unwrap_or(0) == want
                && st.replicas.unwrap_or(0) == want;
            out.push(consumer(
                ConsumerKind::Deployment,
                &d.metadata,
                &d.spec.template,
                complete,
            ));
        }
        for s in self.statefulsets.state() {
            if !in_any(&s.metadata, namespaces) {
                continue;
            }
            let st = s.status.clone().unwrap_or_default();
            let want = s.spec.replicas.unwrap_or(1);
            let complete = generation_observed(s.metadata.generation, st.observed_generation)
                && st.updated_replicas.unwrap_or(0) == want
                && st.ready_replicas.unwrap_or(0) == want
                && st.update_revision.is_some()
                && st.current_revision == st.update_revision;
            out.push(consumer(
                ConsumerKind::StatefulSet,
                &s.metadata,
                &s.spec.template,
                complete,
            ));
        }
        for d in self.daemonsets.state() {
            if !in_any(&d.metadata, namespaces) {
                continue;
            }
            let st = d.status.clone().unwrap_or_default();
            let complete = generation_observed(d.metadata.generation, st.observed_generation)
                && st.updated_number_scheduled.unwrap_or(0) == st.desired_number_scheduled
                && st.number_available.unwrap_or(0) == st.desired_number_scheduled;
            out.push(consumer(
                ConsumerKind::DaemonSet,
                &d.metadata,
                &d.spec.template,
                complete,
            ));
        }
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
                let status = &s.data["status"];
                let info = SnapshotInfo {
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    name: s.name_any(),
                    pvc: s.data["spec"]["source"]["persistentVolumeClaimName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    slot: s
                        .annotations()
                        .get(SLOT_ANNOTATION)
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&chrono::Utc)),
                    ready: status["readyToUse"].as_bool().unwrap_or(false),
                    failed: !status["error"].is_null(),
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
                    body: serde_json::json!({"metadata": {"uid": s.metadata.uid}}),
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

    /// Deployments and StatefulSets, by namespace.
    pub fn workloads_by_namespace(&self) -> BTreeMap<String, Vec<WorkloadInfo>> {
        let mut out: BTreeMap<String, Vec<WorkloadInfo>> = BTreeMap::new();
        for d in self.deployments.state() {
            let spec = &d.spec;
            out.entry(d.namespace().unwrap_or_default())
                .or_default()
                .push(WorkloadInfo {
                    kind: WorkloadKind::Deployment,
                    namespace: d.namespace().unwrap_or_default(),
                    name: d.name_any(),
                    replicas: spec.replicas.unwrap_or(1),
                    selector: Some(spec.selector.clone()),
                    pod_labels: spec
                        .template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.labels.clone())
                        .unwrap_or_default(),
                });
        }
        for s in self.statefulsets.state() {
            let spec = &s.spec;
            out.entry(s.namespace().unwrap_or_default())
                .or_default()
                .push(WorkloadInfo {
                    kind: WorkloadKind::StatefulSet,
                    namespace: s.namespace().unwrap_or_default(),
                    name: s.name_any(),
                    replicas: spec.replicas.unwrap_or(1),
                    selector: Some(spec.selector.clone()),
                    pod_labels: spec
                        .template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.labels.clone())
                        .unwrap_or_default(),
                });
        }
        for v in out.values_mut() {
            v.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        }
        out
    }

    /// Every PodDisruptionBudget, Rampart's and users', by namespace.
    pub fn budgets_by_namespace(&self) -> BTreeMap<String, Vec<BudgetInfo>> {
        let mut out: BTreeMap<String, Vec<BudgetInfo>> = BTreeMap::new();
        for b in self.budgets.state() {
            let spec = b.spec.clone().unwrap_or_default();
            let health = b.status.as_ref().and_then(|s| {
                let current = s.observed_generation.is_some()
                    && s.observed_generation == b.metadata.generation;
                current.then_some(BudgetHealth {
                    disruptions_allowed: s.disruptions_allowed.unwrap_or(0),
                    current_healthy: s.current_healthy.unwrap_or(0),
                    expected_pods: s.expected_pods.unwrap_or(0),
                })
            });
            let ns = b.namespace().unwrap_or_default();
            out.entry(ns.clone()).or_default().push(BudgetInfo {
                namespace: ns,
                name: b.name_any(),
                ours: is_managed(b.meta()),
                selector: spec.selector,
                max_unavailable: spec.max_unavailable,
                min_available: spec.min_available,
                health,
            });
        }
        out
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
    Policy(Arc<NetworkPolicy>),
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
            .filter_map(|o| match o {
                OwnedRef::Policy(p) => observed(ManagedKind::NetworkPolicy, p.as_ref()),
                OwnedRef::Budget(b) => observed(ManagedKind::PodDisruptionBudget, b.as_ref()),
            })
            .collect()
    }

    /// All of them, for deletion: identity and uid only, no spec.
    pub fn for_deletion(&self) -> Vec<ObservedObject> {
        self.by_namespace
            .values()
            .flatten()
            .map(|o| {
                let (kind, m) = match o {
                    OwnedRef::Policy(p) => (ManagedKind::NetworkPolicy, &p.metadata),
                    OwnedRef::Budget(b) => (ManagedKind::PodDisruptionBudget, &b.metadata),
                };
                ObservedObject {
                    key: ObjectKey {
                        kind,
                        namespace: m.namespace.clone().unwrap_or_default(),
                        name: m.name.clone().unwrap_or_default(),
                    },
                    control: control_of(m),
                    body: serde_json::json!({"metadata": {"uid": m.uid}}),
                }
            })
            .collect()
    }
}

/// Only what drift is judged on (labels, annotations, spec) and the uid a delete is
/// preconditioned on.
fn observed<K: Resource + HasSpec>(kind: ManagedKind, o: &K) -> Option<ObservedObject> {
    let spec = o.spec_json().ok()?;
    let m = o.meta();
    Some(ObservedObject {
        key: ObjectKey {
            kind,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        },
        control: control_of(m),
        body: serde_json::json!({
            "metadata": {"uid": m.uid, "labels": m.labels, "annotations": m.annotations},
            "spec": spec,
        }),
    })
}

/// The kinds whose spec drift is judged on.
trait HasSpec {
    fn spec_json(&self) -> serde_json::Result<serde_json::Value>;
}

impl HasSpec for NetworkPolicy {
    fn spec_json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(&self.spec)
    }
}

impl HasSpec for PodDisruptionBudget {
    fn spec_json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(&self.spec)
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

fn generation_observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(g), Some(o)) => o >= g,
        _ => false,
    }
}

fn in_any(meta: &kube::core::ObjectMeta, namespaces: &BTreeSet<&str>) -> bool {
    meta.namespace
        .as_deref()
        .is_some_and(|ns| namespaces.contains(ns))
}

fn consumer(
    kind: ConsumerKind,
    meta: &kube::core::ObjectMeta,
    template: &PodTemplateSpec,
    rollout_complete: bool,
) -> ConsumerInfo {
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    ConsumerInfo {
        id: ConsumerRef {
            namespace: meta.namespace.clone().unwrap_or_default(),
            kind,
            name: meta.name.clone().unwrap_or_default(),
        },
        secrets: template
            .spec
            .as_ref()
            .map(secrets_used_by)
            .unwrap_or_default(),
        stamped_id: annotations.get(ROTATION_ID_ANNOTATION).cloned(),
        stamped_at: annotations
            .get(RESTARTED_AT_ANNOTATION)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
        rollout_complete,
    }
}

fn pvc_info(p: &PersistentVolumeClaim) -> PvcInfo {
    let restored_from = p.spec.as_ref().and_then(|s| {
        let a = s
            .data_source
            .as_ref()
            .filter(|d| d.kind == "VolumeSnapshot")
            .map(|d| d.name.clone());
        let b = s
            .data_source_ref
            .as_ref()
            .filter(|d| d.kind == "VolumeSnapshot")
            .map(|d| d.name.clone());
        a.or(b)
    });
    PvcInfo {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.name_any(),
        created: p.metadata.creation_timestamp.as_ref().and_then(to_chrono),
        restored_from,
    }
}
