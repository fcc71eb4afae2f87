//! Observation: the watch-fed caches of everything a reconcile reads, and their translation
//! into the plain values the pure controls take. Calls the API (watches) but never writes.
//!
//! Workloads and budgets are watched whole (their selectors and replica counts matter),
//! namespaces as metadata only, and NetworkPolicies only where they carry Rampart's label.
//! Managed fields are dropped before caching: they are most of an object's size and nothing
//! here reads them.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::Stream;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;

use crate::api::{
    all_managed_selector, ControlName, CONTROL_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    PROFILE_LABEL,
};
use crate::controls::disruption_budgets::{BudgetHealth, BudgetInfo, WorkloadInfo, WorkloadKind};
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
}

/// The watch streams that feed [`Caches`]; the controller polls them and maps each change to
/// the profiles it affects.
pub struct Feeds {
    pub namespaces: std::pin::Pin<
        Box<dyn Stream<Item = Result<PartialObjectMeta<Namespace>, watcher::Error>> + Send>,
    >,
    pub deployments:
        std::pin::Pin<Box<dyn Stream<Item = Result<Deployment, watcher::Error>> + Send>>,
    pub statefulsets:
        std::pin::Pin<Box<dyn Stream<Item = Result<StatefulSet, watcher::Error>> + Send>>,
    pub budgets:
        std::pin::Pin<Box<dyn Stream<Item = Result<PodDisruptionBudget, watcher::Error>> + Send>>,
    pub policies:
        std::pin::Pin<Box<dyn Stream<Item = Result<NetworkPolicy, watcher::Error>> + Send>>,
}

fn feed<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>,
)
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
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .reflect(writer)
        .touched_objects();
    (reader, Box::pin(stream))
}

/// Starts nothing by itself: the returned feeds must be polled (the controller does).
pub fn caches(client: &Client) -> (Caches, Feeds) {
    let (namespaces, ns_writer) = reflector::store();
    let ns_stream = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|o: &mut PartialObjectMeta<Namespace>| o.metadata.managed_fields = None)
    .reflect(ns_writer)
    .touched_objects();
    let (deployments, dep_stream) = feed(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let (statefulsets, sts_stream) = feed(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let (budgets, pdb_stream) = feed(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    );
    let (policies, np_stream) = feed(
        Api::<NetworkPolicy>::all(client.clone()),
        watcher::Config::default().labels(&all_managed_selector()),
    );
    (
        Caches {
            namespaces,
            deployments,
            statefulsets,
            budgets,
            policies,
        },
        Feeds {
            namespaces: Box::pin(ns_stream),
            deployments: dep_stream,
            statefulsets: sts_stream,
            budgets: pdb_stream,
            policies: np_stream,
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
        self.policies.wait_until_ready().await
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

    /// The NetworkPolicies and PodDisruptionBudgets that belong to the profile: its labels and
    /// an owner reference to its uid. Nothing else is ever changed or deleted.
    pub fn owned_objects(&self, profile: &str, profile_uid: &str) -> Vec<ObservedObject> {
        let mut out = Vec::new();
        collect_owned(
            &self.policies.state(),
            ManagedKind::NetworkPolicy,
            profile,
            profile_uid,
            &mut out,
        );
        collect_owned(
            &self.budgets.state(),
            ManagedKind::PodDisruptionBudget,
            profile,
            profile_uid,
            &mut out,
        );
        out
    }
}

fn collect_owned<K: Resource + Serialize>(
    objs: &[Arc<K>],
    kind: ManagedKind,
    profile: &str,
    uid: &str,
    out: &mut Vec<ObservedObject>,
) {
    for o in objs {
        if !belongs_to(o.meta(), profile, uid) {
            continue;
        }
        let Ok(body) = serde_json::to_value(o.as_ref()) else {
            continue;
        };
        out.push(ObservedObject {
            key: ObjectKey {
                kind,
                namespace: o.meta().namespace.clone().unwrap_or_default(),
                name: o.meta().name.clone().unwrap_or_default(),
            },
            control: control_of(o.meta()),
            body,
        });
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
