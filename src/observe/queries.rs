//! Observation, read: what each control observes, built from the caches. Calls nothing; the
//! caches are filled by the watches in [`super`]. The one exception is restore verification's
//! few scratch VolumeSnapshotContents, source contents and pending PVCs' events, which
//! [`read_verify_extras`] and [`read_source_contents`] read from the API (by label or by name,
//! never a cluster-wide list), because no watch is worth keeping for a handful of objects
//! that exist for minutes a day.
//!
//! Namespaced controls read one namespace at a time through a [`NamespaceIndex`] of the
//! caches' own shared pointers, so a pass over a thousand namespaces never holds the estate
//! as control inputs at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use super::summaries::{spec_fingerprint, Policy, Pvc};
use super::workloads::Workload;
use super::{to_chrono, Caches};
use crate::api::{BackupControl, BackupStatus, RotationStatus, SecretRotationControl, KEEP_LABEL};
use crate::controls::backups::{BackupObserved, PvcInfo, SnapshotInfo, SLOT_ANNOTATION};
use crate::controls::disruption_budgets::{BudgetHealth, BudgetInfo, WorkloadInfo, WorkloadKind};
use crate::controls::rotation::{
    ConsumerInfo, ConsumerKind, ConsumerRef, RotationObserved, SecretInfo,
};
use crate::controls::verify::{
    self, ContentInfo, ScratchNamespace, ScratchObject, SourceSnapshot, VerifyObserved, VerifyPvc,
};
use crate::controls::{Fingerprint, ManagedKind, NamespaceObserved, ObjectKey, ObservedObject};
use crate::ownership::{belongs_to, control_of, has_owner_reference, is_managed};
use crate::selection::NamespaceInfo;

impl Caches {
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

    /// The namespaced controls' view of the cluster for `profile`, limited to `namespaces`
    /// (every namespace when `None`).
    pub fn namespace_index(
        &self,
        profile: &str,
        uid: &str,
        namespaces: Option<&BTreeSet<String>>,
    ) -> NamespaceIndex {
        let wanted = |o: &kube::core::ObjectMeta| {
            namespaces.is_none_or(|set| o.namespace.as_ref().is_some_and(|n| set.contains(n)))
        };
        let owned = |o: &kube::core::ObjectMeta| wanted(o) && belongs_to(o, profile, uid);
        NamespaceIndex {
            deployments: ByNamespace::of(&self.deployments, wanted),
            statefulsets: ByNamespace::of(&self.statefulsets, wanted),
            budgets: ByNamespace::of(&self.budgets, wanted),
            owned_policies: ByNamespace::of(&self.policies, owned),
            owned_budgets: ByNamespace::of(&self.budgets, owned),
        }
    }

    /// What rotation observes in `namespaces`.
    pub fn rotation_observed(
        &self,
        spec: &SecretRotationControl,
        namespaces: &BTreeSet<String>,
        previous: Option<&RotationStatus>,
    ) -> RotationObserved {
        let namespaces = &NamespaceSet::of(namespaces);
        let mut secrets: Vec<SecretInfo> = self
            .secrets
            .state()
            .iter()
            .filter(|s| {
                in_any(&s.metadata, namespaces)
                    && crate::labels::matches(&spec.selector, s.labels())
            })
            .map(|s| SecretInfo {
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                name: s.name_any(),
                rotation_id: s.rotation_id.clone(),
                adopted: s.adopted,
            })
            .collect();
        secrets.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut consumers: Vec<ConsumerInfo> = Vec::new();
        consumers.extend(consumers_of(
            &self.deployments,
            ConsumerKind::Deployment,
            namespaces,
        ));
        consumers.extend(consumers_of(
            &self.statefulsets,
            ConsumerKind::StatefulSet,
            namespaces,
        ));
        consumers.extend(consumers_of(
            &self.daemonsets,
            ConsumerKind::DaemonSet,
            namespaces,
        ));
        consumers.sort_by(|a, b| a.id.cmp(&b.id));
        RotationObserved {
            secrets,
            consumers,
            previous: previous.cloned(),
        }
    }

    /// What the snapshot control observes in `namespaces`.
    pub fn backup_observed(
        &self,
        profile: &str,
        uid: &str,
        spec: &BackupControl,
        namespaces: &BTreeSet<String>,
        previous: Option<&BackupStatus>,
    ) -> BackupObserved {
        let namespaces = &NamespaceSet::of(namespaces);
        let pvcs = self.pvcs.state();
        let in_scope = || pvcs.iter().filter(|p| in_any(&p.metadata, namespaces));
        let mut selected: Vec<PvcInfo> = in_scope()
            .filter(|p| crate::labels::matches(&spec.pvc_selector, p.labels()))
            .map(|p| pvc_info(p))
            .collect();
        selected.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let restoring = in_scope()
            .map(|p| pvc_info(p))
            .filter(|p| p.restored_from.is_some())
            .collect();
        BackupObserved {
            api_served: self.snapshots.served().is_some(),
            pvcs: selected,
            restoring,
            snapshots: self.owned_snapshots(profile, uid),
            previous: previous.cloned(),
        }
    }

    /// The profile's VolumeSnapshots (its labels and its uid), with the
    /// observed objects the writer needs to delete or orphan them.
    pub fn owned_snapshots(&self, profile: &str, uid: &str) -> Vec<(SnapshotInfo, ObservedObject)> {
        let Some(store) = self.snapshots.served() else {
            return vec![];
        };
        store
            .state()
            .iter()
            .filter(|s| belongs_to(&s.metadata, profile, uid) && !is_scratch(&s.metadata))
            .map(|s| {
                let info = SnapshotInfo {
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    name: s.name_any(),
                    pvc: s.pvc.clone(),
                    slot: s
                        .annotations()
                        .get(SLOT_ANNOTATION)
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc)),
                    ready: s.ready,
                    failed: s.failed,
                    keep: s.labels().contains_key(KEEP_LABEL),
                    created: s.metadata.creation_timestamp.as_ref().and_then(to_chrono),
                    deleting: s.metadata.deletion_timestamp.is_some(),
                    owner_referenced: has_owner_reference(&s.metadata, uid),
                };
                let observed = observed(ManagedKind::VolumeSnapshot, &s.metadata, None);
                (info, observed)
            })
            .collect()
    }

    /// What restore verification observes from the caches: the selected PVCs, the profile's
    /// snapshots, the scratch namespace and the scratch snapshots and PVCs in it. The scratch
    /// contents, source contents and pending reasons are read by [`read_verify_extras`].
    pub fn verify_observed(
        &self,
        profile: &str,
        uid: &str,
        spec: &BackupControl,
        namespaces: &BTreeSet<String>,
        previous: Option<&BackupStatus>,
    ) -> VerifyObserved {
        let scratch_ns = verify::scratch_namespace(profile);
        let namespace = match self
            .namespaces
            .state()
            .iter()
            .find(|n| n.name_any() == scratch_ns)
        {
            None => ScratchNamespace::Missing,
            Some(n) if !belongs_to(&n.metadata, profile, uid) => ScratchNamespace::Taken,
            Some(n) if n.metadata.deletion_timestamp.is_some() => ScratchNamespace::Terminating,
            Some(_) => ScratchNamespace::Ours,
        };
        let namespaces = &NamespaceSet::of(namespaces);
        let all_pvcs = self.pvcs.state();
        let mut pvcs: Vec<VerifyPvc> = all_pvcs
            .iter()
            .filter(|p| {
                in_any(&p.metadata, namespaces)
                    && crate::labels::matches(&spec.pvc_selector, p.labels())
            })
            .map(|p| VerifyPvc {
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                name: p.name_any(),
                storage_class: p.storage_class.clone(),
                request: p.request.clone(),
            })
            .collect();
        pvcs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut snapshots = Vec::new();
        let mut scratch = Vec::new();
        if let Some(store) = self.snapshots.served() {
            for s in store.state() {
                if !belongs_to(&s.metadata, profile, uid) {
                    continue;
                }
                if is_scratch(&s.metadata) {
                    if s.metadata.namespace.as_deref() == Some(scratch_ns.as_str()) {
                        let mut o = scratch_object(ManagedKind::VolumeSnapshot, &s.metadata);
                        o.ready = s.ready;
                        o.error = s.error.clone();
                        scratch.push(o);
                    }
                    continue;
                }
                snapshots.push(SourceSnapshot {
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    name: s.name_any(),
                    pvc: s.pvc.clone(),
                    taken: s
                        .annotations()
                        .get(SLOT_ANNOTATION)
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc))
                        .or_else(|| s.metadata.creation_timestamp.as_ref().and_then(to_chrono)),
                    ready: s.ready,
                    failed: s.failed,
                    content: s.content.clone(),
                    restore_size: s.restore_size.clone(),
                });
            }
        }
        for p in all_pvcs.iter().filter(|p| {
            p.metadata.namespace.as_deref() == Some(scratch_ns.as_str())
                && belongs_to(&p.metadata, profile, uid)
                && is_scratch(&p.metadata)
        }) {
            let mut o = scratch_object(ManagedKind::PersistentVolumeClaim, &p.metadata);
            o.bound = p.bound;
            scratch.push(o);
        }
        VerifyObserved {
            namespace,
            pvcs,
            snapshots,
            scratch,
            previous: previous
                .map(|b| b.last_verified.clone())
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Every policy and budget of the profile, identity and uid only: what cleanup deletes.
    pub fn owned_for_deletion(&self, profile: &str, uid: &str) -> Vec<ObservedObject> {
        let policies = self.policies.state();
        let budgets = self.budgets.state();
        policies
            .iter()
            .filter(|p| belongs_to(&p.metadata, profile, uid))
            .map(|p| observed(ManagedKind::NetworkPolicy, &p.metadata, None))
            .chain(
                budgets
                    .iter()
                    .filter(|b| belongs_to(&b.metadata, profile, uid))
                    .map(|b| observed(ManagedKind::PodDisruptionBudget, &b.metadata, None)),
            )
            .collect()
    }
}

/// The caches' workloads, budgets and the profile's own objects, by namespace.
pub struct NamespaceIndex {
    deployments: ByNamespace<Workload<Deployment>>,
    statefulsets: ByNamespace<Workload<StatefulSet>>,
    budgets: ByNamespace<PodDisruptionBudget>,
    owned_policies: ByNamespace<Policy>,
    owned_budgets: ByNamespace<PodDisruptionBudget>,
}

impl NamespaceIndex {
    /// Namespaces holding objects of the profile: where deletions may be due.
    pub fn owned_namespaces(&self) -> impl Iterator<Item = &String> {
        self.owned_policies
            .0
            .keys()
            .chain(self.owned_budgets.0.keys())
    }

    /// What the namespaced controls observe in `namespace`.
    pub fn observed(&self, namespace: &str) -> NamespaceObserved {
        let mut workloads: Vec<WorkloadInfo> = self
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
        workloads.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        let owned = self
            .owned_policies
            .get(namespace)
            .iter()
            .map(|p| {
                observed(
                    ManagedKind::NetworkPolicy,
                    &p.metadata,
                    Some(p.fingerprint.clone()),
                )
            })
            .chain(self.owned_budgets.get(namespace).iter().map(|b| {
                observed(
                    ManagedKind::PodDisruptionBudget,
                    &b.metadata,
                    Some(spec_fingerprint(&b.spec)),
                )
            }))
            .collect();
        NamespaceObserved {
            namespace: namespace.to_string(),
            workloads,
            budgets: self
                .budgets
                .get(namespace)
                .iter()
                .map(|b| budget_info(b))
                .collect(),
            owned,
        }
    }
}

/// A cache's objects by namespace, as the cache's own shared pointers (a pointer each).
struct ByNamespace<K>(HashMap<String, Vec<Arc<K>>>);

impl<K: Resource<DynamicType = ()> + Clone + 'static> ByNamespace<K> {
    fn of(store: &Store<K>, keep: impl Fn(&kube::core::ObjectMeta) -> bool) -> Self {
        let mut map: HashMap<String, Vec<Arc<K>>> = HashMap::new();
        for o in store.state() {
            if keep(o.meta()) {
                map.entry(o.meta().namespace.clone().unwrap_or_default())
                    .or_default()
                    .push(o);
            }
        }
        Self(map)
    }

    fn get(&self, namespace: &str) -> &[Arc<K>] {
        self.0.get(namespace).map(Vec::as_slice).unwrap_or_default()
    }
}

/// An object of ours as a control sees it: with its labels, annotations and fingerprint when
/// it is to be judged for drift, with identity and uid only (`None`) when it is to be deleted.
fn observed(
    kind: ManagedKind,
    m: &kube::core::ObjectMeta,
    fingerprint: Option<Fingerprint>,
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

/// Namespaces looked up once per cached object, thousands of times a pass: hashed, not a
/// search through sorted strings.
struct NamespaceSet<'a>(HashSet<&'a str>);

impl<'a> NamespaceSet<'a> {
    fn of(namespaces: &'a BTreeSet<String>) -> Self {
        Self(namespaces.iter().map(String::as_str).collect())
    }
}

fn in_any(meta: &kube::core::ObjectMeta, namespaces: &NamespaceSet<'_>) -> bool {
    meta.namespace
        .as_deref()
        .is_some_and(|ns| namespaces.0.contains(ns))
}

fn consumers_of<K: Resource<DynamicType = ()> + Clone + 'static>(
    store: &Store<Workload<K>>,
    kind: ConsumerKind,
    namespaces: &NamespaceSet<'_>,
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
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            rollout_complete: w.rollout_complete,
        })
        .collect()
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

/// Carries the scratch control label: a restore verification's object, not a real snapshot.
fn is_scratch(meta: &kube::core::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(crate::api::CONTROL_LABEL))
        .is_some_and(|c| c == verify::SCRATCH_CONTROL)
}

fn scratch_object(kind: ManagedKind, m: &kube::core::ObjectMeta) -> ScratchObject {
    let label = |k: &str| {
        m.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .cloned()
            .unwrap_or_default()
    };
    ScratchObject {
        object: observed(kind, m, None),
        source_namespace: label(verify::SOURCE_NAMESPACE_LABEL),
        source_pvc: label(crate::controls::backups::PVC_LABEL),
        slot: verify::parse_slot_label(&label(verify::SLOT_LABEL)),
        created: m.creation_timestamp.as_ref().and_then(to_chrono),
        snapshot: m
            .annotations
            .as_ref()
            .and_then(|a| a.get(verify::SOURCE_SNAPSHOT_ANNOTATION))
            .cloned(),
        ready: false,
        error: None,
        bound: false,
        deleting: m.deletion_timestamp.is_some(),
        job: verify::JobState::Running,
    }
}

/// A check Job's state from its conditions (`Complete` or `Failed` true), else Running.
fn job_state(job: &k8s_openapi::api::batch::v1::Job) -> verify::JobState {
    let conditions = job
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten());
    for c in conditions.filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" => return verify::JobState::Complete,
            "Failed" => {
                let reason = c.reason.clone().unwrap_or_default();
                let message = c.message.clone().unwrap_or_default();
                let text: String = format!("{reason}: {message}").chars().take(512).collect();
                return verify::JobState::Failed(text);
            }
            _ => {}
        }
    }
    verify::JobState::Running
}

fn content_resource() -> kube::core::ApiResource {
    kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshotContent",
        ),
        "volumesnapshotcontents",
    )
}

/// What restore verification reads from the API beyond the caches: the profile's scratch
/// VolumeSnapshotContents (by label) and, for each scratch PVC still pending, the newest
/// warning event about it (why it does not bind).
pub async fn read_verify_extras(
    client: &kube::Client,
    profile: &str,
    uid: &str,
    observed: &mut VerifyObserved,
) -> Result<(), crate::Error> {
    use kube::api::{DynamicObject, ListParams};
    let selector = format!(
        "{}={},{}={}",
        crate::api::PROFILE_LABEL,
        profile,
        crate::api::CONTROL_LABEL,
        verify::SCRATCH_CONTROL
    );
    let contents = kube::Api::<DynamicObject>::all_with(client.clone(), &content_resource())
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| crate::Error::Read {
            what: "scratch VolumeSnapshotContents".into(),
            source,
        })?;
    for c in contents.items {
        if belongs_to(&c.metadata, profile, uid) {
            observed.scratch.push(scratch_object(
                ManagedKind::VolumeSnapshotContent,
                &c.metadata,
            ));
        }
    }
    let ns = verify::scratch_namespace(profile);
    // Check Jobs exist only once a restored PVC bound; no list before that.
    if observed
        .scratch
        .iter()
        .any(|o| o.object.key.kind == ManagedKind::PersistentVolumeClaim && o.bound)
    {
        let jobs = kube::Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| crate::Error::Read {
                what: format!("check Jobs in {ns}"),
                source,
            })?;
        for j in jobs.items {
            if belongs_to(&j.metadata, profile, uid) {
                let mut o = scratch_object(ManagedKind::Job, &j.metadata);
                o.job = job_state(&j);
                observed.scratch.push(o);
            }
        }
    }
    let pending: Vec<String> = observed
        .scratch
        .iter()
        .filter(|o| o.object.key.kind == ManagedKind::PersistentVolumeClaim && !o.bound)
        .map(|o| o.object.key.name.clone())
        .collect();
    let events = kube::Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns);
    for name in pending {
        let list = events
            .list(&ListParams::default().fields(&format!(
                "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name}"
            )))
            .await
            .map_err(|source| crate::Error::Read {
                what: format!("events of PersistentVolumeClaim {ns}/{name}"),
                source,
            })?;
        let newest = list
            .items
            .iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .max_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
            });
        if let Some(e) = newest {
            let reason = e.reason.clone().unwrap_or_default();
            let message = e.message.clone().unwrap_or_default();
            // Events can be long; the status keeps the gist.
            let text: String = format!("{reason}: {message}").chars().take(512).collect();
            observed.pending_reasons.insert(name, text);
        }
    }
    Ok(())
}

/// The snapshot handle and driver of each named VolumeSnapshotContent that exists.
pub async fn read_source_contents(
    client: &kube::Client,
    names: &[String],
) -> Result<std::collections::BTreeMap<String, ContentInfo>, crate::Error> {
    let api = kube::Api::<kube::api::DynamicObject>::all_with(client.clone(), &content_resource());
    let mut out = std::collections::BTreeMap::new();
    for name in names {
        let c = api
            .get_opt(name)
            .await
            .map_err(|source| crate::Error::Read {
                what: format!("VolumeSnapshotContent {name}"),
                source,
            })?;
        let Some(c) = c else { continue };
        let handle = c.data["status"]["snapshotHandle"]
            .as_str()
            .or(c.data["spec"]["source"]["snapshotHandle"].as_str());
        let driver = c.data["spec"]["driver"].as_str();
        if let (Some(h), Some(d)) = (handle, driver) {
            out.insert(
                name.clone(),
                ContentInfo {
                    snapshot_handle: h.to_string(),
                    driver: d.to_string(),
                },
            );
        }
    }
    Ok(out)
}
