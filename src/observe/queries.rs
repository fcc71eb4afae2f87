//! Observation, read: what each control observes, built from the caches. Calls nothing; the
//! caches are filled by the watches in [`super`], and restore verification's few reads from
//! the API are in [`super::verification`].
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

use super::summaries::{spec_fingerprint, Policy, Pvc, SecretMeta};
use super::verification::{is_scratch_meta, scratch_object};
use super::workloads::Workload;
use super::{to_chrono, Caches};
use crate::api::{
    BackupControl, BackupStatus, HardeningProfileStatus, RotationStatus, SecretRotationControl,
    KEEP_LABEL,
};
use crate::controls::backups::{BackupObserved, PvcInfo, SnapshotInfo, SLOT_ANNOTATION};
use crate::controls::disruption_budgets::{BudgetHealth, BudgetInfo, WorkloadInfo, WorkloadKind};
use crate::controls::rotation::stamp::Stamp;
use crate::controls::rotation::{
    ConsumerInfo, ConsumerKind, ConsumerRef, RotationObserved, SecretInfo,
};
use crate::controls::verify::{self, ScratchNamespace, SourceSnapshot, VerifyObserved, VerifyPvc};
use crate::controls::{Fingerprint, ManagedKind, NamespaceObserved, ObjectKey, ObservedObject};
use crate::ownership::{belongs_to, control_of, has_owner_reference, is_managed};
use crate::selection::{ExcludedNamespaces, NamespaceInfo};

impl Caches {
    pub fn namespace_infos(&self, excluded: &ExcludedNamespaces) -> Vec<NamespaceInfo> {
        self.namespaces
            .state()
            .iter()
            .map(|ns| NamespaceInfo {
                name: ns.name_any(),
                labels: ns.labels().clone(),
                terminating: ns.metadata.deletion_timestamp.is_some(),
                excluded: excluded.excludes(&ns.name_any()),
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
        // Restore verification's default-deny policy in its scratch namespace is the profile's
        // too, but not the network policy control's: that control would delete it as an object
        // left in a namespace it does not select.
        let owned_policy = |o: &kube::core::ObjectMeta| {
            owned(o) && !is_scratch_meta(ManagedKind::NetworkPolicy.kind(), o)
        };
        NamespaceIndex {
            deployments: ByNamespace::of(&self.deployments, wanted),
            statefulsets: ByNamespace::of(&self.statefulsets, wanted),
            budgets: ByNamespace::of(&self.budgets, wanted),
            owned_policies: ByNamespace::of(&self.policies, owned_policy),
            owned_budgets: ByNamespace::of(&self.budgets, owned),
        }
    }

    /// Every Secret whose stamp says this profile's hook has not ended, in any namespace (a
    /// profile being deleted settles them wherever they are).
    pub fn secrets_with_pending_hooks(&self, profile_uid: &str) -> Vec<SecretInfo> {
        self.secrets
            .state()
            .iter()
            .map(|s| secret_info(s, profile_uid))
            .filter(|s| s.mark.hook_pending())
            .collect()
    }

    /// What rotation observes in `namespaces`.
    pub fn rotation_observed(
        &self,
        profile_uid: &str,
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
            .map(|s| secret_info(s, profile_uid))
            .collect();
        secrets.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut consumers: Vec<ConsumerInfo> = Vec::new();
        consumers.extend(consumers_of(
            &self.deployments,
            ConsumerKind::Deployment,
            namespaces,
            profile_uid,
        ));
        consumers.extend(consumers_of(
            &self.statefulsets,
            ConsumerKind::StatefulSet,
            namespaces,
            profile_uid,
        ));
        consumers.extend(consumers_of(
            &self.daemonsets,
            ConsumerKind::DaemonSet,
            namespaces,
            profile_uid,
        ));
        consumers.sort_by(|a, b| a.id.cmp(&b.id));
        RotationObserved {
            secrets,
            consumers,
            previous: previous.cloned(),
            hooks: Default::default(),
            profile_uid: profile_uid.to_string(),
            profile_name: String::new(),
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
            .filter(|s| {
                belongs_to(&s.metadata, profile, uid)
                    && !is_scratch_meta("VolumeSnapshot", &s.metadata)
            })
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

    /// What restore verification observes from the caches: the selected PVCs and the profile's
    /// snapshots, with [`Caches::scratch_observed`]. What the caches do not hold is read by
    /// [`super::verification::read_verify_extras`].
    pub fn verify_observed(
        &self,
        profile: &str,
        uid: &str,
        spec: &BackupControl,
        namespaces: &BTreeSet<String>,
        previous: Option<&HardeningProfileStatus>,
    ) -> VerifyObserved {
        let namespaces = &NamespaceSet::of(namespaces);
        let mut pvcs: Vec<VerifyPvc> = self
            .pvcs
            .state()
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
        if let Some(store) = self.snapshots.served() {
            for s in store.state() {
                if !belongs_to(&s.metadata, profile, uid)
                    || is_scratch_meta("VolumeSnapshot", &s.metadata)
                {
                    continue;
                }
                snapshots.push(SourceSnapshot {
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    name: s.name_any(),
                    pvc: s.pvc.clone(),
                    // The API server's clock, as retention reads it; the slot is a name.
                    taken: s
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .and_then(to_chrono)
                        .or_else(|| {
                            s.annotations()
                                .get(SLOT_ANNOTATION)
                                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                                .map(|t| t.with_timezone(&Utc))
                        }),
                    ready: s.ready,
                    failed: s.failed,
                    content: s.content.clone(),
                    restore_size: s.restore_size.clone(),
                });
            }
        }
        let rounds = previous
            .and_then(|s| s.verification.clone())
            .unwrap_or_default();
        VerifyObserved {
            pvcs,
            snapshots,
            previous: previous
                .and_then(|s| s.backups.as_ref())
                .map(|b| b.last_verified.clone())
                .unwrap_or_default(),
            round: rounds.current,
            previous_round: rounds.previous,
            ..self.scratch_observed(profile, uid, previous)
        }
    }

    /// The profile's scratch namespace and the scratch snapshots and PVCs in it, from the
    /// caches: what both verifying and removing verification start from.
    ///
    /// The namespace is ours only when its uid is the one the status recorded when Rampart
    /// created it: labels and an owner reference can be copied onto a namespace made in
    /// advance, a uid cannot. Nothing in a namespace that is not ours is observed, so nothing
    /// there is ever written or deleted.
    pub fn scratch_observed(
        &self,
        profile: &str,
        uid: &str,
        status: Option<&HardeningProfileStatus>,
    ) -> VerifyObserved {
        let scratch_ns = verify::scratch_namespace(profile);
        let recorded = status
            .and_then(|s| s.verification.as_ref())
            .and_then(|v| v.scratch_namespace_uid.clone());
        let found = self
            .namespaces
            .state()
            .into_iter()
            .find(|n| n.name_any() == scratch_ns);
        let ours = |m: &kube::core::ObjectMeta| {
            recorded.is_some() && m.uid == recorded && belongs_to(m, profile, uid)
        };
        let namespace = match &found {
            None => ScratchNamespace::Missing,
            Some(n) if !ours(&n.metadata) => ScratchNamespace::Taken,
            Some(n) if n.metadata.deletion_timestamp.is_some() => ScratchNamespace::Terminating,
            Some(_) => ScratchNamespace::Ours,
        };
        // With its labels: the plan checks the Pod Security labels are still there.
        let namespace_object = found.filter(|n| ours(&n.metadata)).map(|n| ObservedObject {
            labels: n.metadata.labels.clone().unwrap_or_default(),
            ..observed(ManagedKind::Namespace, &n.metadata, None)
        });
        let mut scratch = Vec::new();
        // No namespace, no scratch snapshot or PVC: the common case of a profile that does
        // not verify costs no walk through the caches. Someone else's namespace: nothing in it
        // is ours to touch.
        match namespace {
            ScratchNamespace::Missing => return VerifyObserved::default(),
            ScratchNamespace::Taken => {
                return VerifyObserved {
                    namespace,
                    ..VerifyObserved::default()
                }
            }
            ScratchNamespace::Ours | ScratchNamespace::Terminating => {}
        }
        if let Some(store) = self.snapshots.served() {
            for s in store.state() {
                if s.metadata.namespace.as_deref() == Some(scratch_ns.as_str())
                    && belongs_to(&s.metadata, profile, uid)
                {
                    let mut o = scratch_object(ManagedKind::VolumeSnapshot, &s.metadata);
                    o.ready = s.ready;
                    o.error = s.error.clone();
                    scratch.push(o);
                }
            }
        }
        for p in self.pvcs.state().iter().filter(|p| {
            p.metadata.namespace.as_deref() == Some(scratch_ns.as_str())
                && belongs_to(&p.metadata, profile, uid)
        }) {
            let mut o = scratch_object(ManagedKind::PersistentVolumeClaim, &p.metadata);
            o.bound = p.bound;
            o.volume = p.volume.clone();
            scratch.push(o);
        }
        let deny_all = self.policies.state().iter().any(|p| {
            p.metadata.namespace.as_deref() == Some(scratch_ns.as_str())
                && p.metadata.name.as_deref() == Some(verify::DENY_ALL_POLICY)
                && belongs_to(&p.metadata, profile, uid)
        });
        VerifyObserved {
            namespace,
            namespace_object,
            scratch,
            deny_all,
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
pub(super) fn observed(
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

/// A Secret as rotation sees it from `profile_uid`: that profile's entry in the stamp, an id
/// in the old format (with the old adoption mark) and how many other profiles have entries.
fn secret_info(s: &SecretMeta, profile_uid: &str) -> SecretInfo {
    let stamp = Stamp::of(s.rotation_id.as_deref());
    let own = stamp.entry(profile_uid);
    SecretInfo {
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.name_any(),
        rotation_id: own.map(|e| e.rotation_id.clone()),
        adopted: match own {
            Some(e) => e.is_adopted(),
            None => s.adopted,
        },
        mark: own.map(|e| e.mark).unwrap_or_default(),
        legacy_id: stamp.legacy.clone(),
        other_profiles: stamp.others(profile_uid),
        controller: s
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| format!("{}/{}", o.kind, o.name)),
    }
}

/// The id on a pod template's stamp for `profile_uid`: its own entry, else an id in the old
/// format (one stamp per template then, written by the one profile that restarted it).
fn template_id(stamp: Option<&str>, profile_uid: &str) -> Option<String> {
    let stamp = Stamp::of(stamp);
    stamp
        .entry(profile_uid)
        .map(|e| e.rotation_id.clone())
        .or(stamp.legacy)
}

fn consumers_of<K: Resource<DynamicType = ()> + Clone + 'static>(
    store: &Store<Workload<K>>,
    kind: ConsumerKind,
    namespaces: &NamespaceSet<'_>,
    profile_uid: &str,
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
            stamped_id: template_id(w.stamped_id.as_deref(), profile_uid),
            stamped_at: w
                .stamped_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            rollout_complete: w.rollout_complete,
            created_at: w.metadata.creation_timestamp.as_ref().and_then(to_chrono),
            restarts_on_delete: w.restarts_on_delete,
            ready: w.ready,
            restarted_unready: w.restarted_unready,
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
