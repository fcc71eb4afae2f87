//! Observation, before caching: every watched kind is summarised the one way, by
//! [`Summarize`], into the fields a reconcile reads. Pure; never calls the API.
//!
//! The caches hold every PVC, budget, namespace, Secret and workload of the cluster, so what
//! each cached object carries decides the operator's memory. Everything a control reads is
//! kept exactly: budget specs and health, PVC data sources, namespace labels, rotation stamps,
//! snapshot sources and readiness, workloads' selectors and Secrets (see [`super::workloads`]).

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use std::borrow::Cow;

use kube::api::DynamicObject;
use kube::core::{NamespaceResourceScope, ObjectMeta, PartialObjectMeta};
use kube::Resource;
use serde::{Deserialize, Serialize};

use crate::api::{ROTATION_ADOPTED_ANNOTATION, ROTATION_ID_ANNOTATION};
use crate::controls::Fingerprint;

/// A watched kind and the form its cache keeps. The summary is a `Resource` of the same kind,
/// so it feeds a reflector and the controller's triggers like the object itself.
pub trait Summarize: Sized {
    type Summary: Resource<DynamicType = ()> + Clone + Serialize + Send + Sync + 'static;
    fn summarize(self) -> Self::Summary;
}

/// A summary type is a namespaced `Resource` of the kind it summarises, so it feeds a
/// reflector and the controller's triggers like the object itself.
macro_rules! summary_resource {
    ($type:ty, $kind:literal, $group:literal, $version:literal, $plural:literal) => {
        impl Resource for $type {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }

            fn group(_: &()) -> Cow<'_, str> {
                $group.into()
            }

            fn version(_: &()) -> Cow<'_, str> {
                $version.into()
            }

            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// Managed fields are often most of an object's size and nothing reads them.
fn meta(m: &mut ObjectMeta) {
    m.managed_fields = None;
}

/// Metadata of an object whose annotations nothing reads.
fn meta_without_annotations(m: &mut ObjectMeta) {
    meta(m);
    m.annotations = None;
}

/// Finalizers of PVCs and snapshots come and go with every snapshot the snapshot controller
/// cuts (`pvc-as-source-protection`, `volumesnapshot-bound-protection`); nothing here reads
/// them, and kept they made each cut two more events, each a backups pass.
fn without_finalizers(m: &mut ObjectMeta) {
    m.finalizers = None;
}

/// Budgets keep their annotations: a managed budget's are compared for drift.
impl Summarize for PodDisruptionBudget {
    type Summary = PodDisruptionBudget;
    fn summarize(mut self) -> Self {
        meta(&mut self.metadata);
        if let Some(st) = &mut self.status {
            st.conditions = None;
            st.disrupted_pods = None;
        }
        self
    }
}

/// What Rampart keeps of one of its own NetworkPolicies: its metadata and the
/// [`fingerprint`](crate::controls::fingerprint) of its spec, all that drift is judged on.
/// Kept whole, five policies per namespace were the largest cache at a thousand namespaces.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Policy {
    pub metadata: ObjectMeta,
    pub fingerprint: Fingerprint,
}

summary_resource!(
    Policy,
    "NetworkPolicy",
    "networking.k8s.io",
    "v1",
    "networkpolicies"
);

impl Summarize for NetworkPolicy {
    type Summary = Policy;
    fn summarize(mut self) -> Policy {
        meta(&mut self.metadata);
        Policy {
            fingerprint: spec_fingerprint(&self.spec),
            metadata: self.metadata,
        }
    }
}

/// The fingerprint of a typed spec, as [`Fingerprint::of`] computes it for a desired manifest.
pub fn spec_fingerprint<S: Serialize>(spec: &S) -> Fingerprint {
    let mut object = serde_json::Map::new();
    // A spec that does not serialise cannot match any desired one; its fingerprint says so.
    object.insert(
        "spec".into(),
        serde_json::to_value(spec).unwrap_or(serde_json::Value::Null),
    );
    Fingerprint::of(&object)
}

/// What Rampart keeps of a PersistentVolumeClaim: identity, labels and creation time (backups
/// select and order by them) and the snapshot it was restored from, if any (retention never
/// prunes that one). A typed PVC is over a kilobyte before any of its strings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pvc {
    pub metadata: ObjectMeta,
    pub restored_from: Option<String>,
    /// `status.phase` is Bound (restore verification waits for it).
    #[serde(default)]
    pub bound: bool,
    /// `spec.storageClassName` and `spec.resources.requests.storage`: what a restore of it asks for.
    #[serde(default)]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub request: Option<String>,
    /// `spec.volumeName`: the volume a restore verification's scratch PVC bound to, whose
    /// reclaim policy is set to Delete before the PVC goes.
    #[serde(default)]
    pub volume: Option<String>,
}

summary_resource!(
    Pvc,
    "PersistentVolumeClaim",
    "",
    "v1",
    "persistentvolumeclaims"
);

/// A PVC as a [`Pvc`]: `dataSource`, or else `dataSourceRef`, when it names a VolumeSnapshot.
impl Summarize for PersistentVolumeClaim {
    type Summary = Pvc;
    fn summarize(mut self) -> Pvc {
        meta_without_annotations(&mut self.metadata);
        without_finalizers(&mut self.metadata);
        let bound = self
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Bound");
        let storage_class = self
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone());
        let request = self.spec.as_ref().and_then(|s| {
            s.resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")
                .map(|q| q.0.clone())
        });
        let volume = self.spec.as_ref().and_then(|s| s.volume_name.clone());
        let restored_from = self.spec.and_then(|s| {
            let snapshot = |kind: &str, name: String| (kind == "VolumeSnapshot").then_some(name);
            s.data_source
                .and_then(|d| snapshot(&d.kind, d.name))
                .or_else(|| s.data_source_ref.and_then(|d| snapshot(&d.kind, d.name)))
        });
        Pvc {
            metadata: self.metadata,
            restored_from,
            bound,
            storage_class,
            request,
            volume,
        }
    }
}

/// Namespaces are watched as metadata; selection reads their labels.
impl Summarize for PartialObjectMeta<Namespace> {
    type Summary = Self;
    fn summarize(mut self) -> Self {
        meta_without_annotations(&mut self.metadata);
        self
    }
}

/// What Rampart keeps of a Secret: identity, labels (the rotation selector) and the rotation
/// stamp, from a metadata-only watch. Its other annotations can be large, and one of them,
/// kubectl's last-applied configuration, can hold the Secret's data: it must never sit in the
/// operator's memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretMeta {
    pub metadata: ObjectMeta,
    pub rotation_id: Option<String>,
    /// Carries [`ROTATION_ADOPTED_ANNOTATION`]: at its id by adoption, not by rotation.
    pub adopted: bool,
}

summary_resource!(SecretMeta, "Secret", "", "v1", "secrets");

/// A Secret's metadata as a [`SecretMeta`].
impl Summarize for PartialObjectMeta<Secret> {
    type Summary = SecretMeta;
    fn summarize(mut self) -> SecretMeta {
        meta(&mut self.metadata);
        let mut annotations = self.metadata.annotations.take().unwrap_or_default();
        let rotation_id = annotations.remove(ROTATION_ID_ANNOTATION);
        let adopted = annotations.contains_key(ROTATION_ADOPTED_ANNOTATION);
        SecretMeta {
            metadata: self.metadata,
            rotation_id,
            adopted,
        }
    }
}

/// What Rampart keeps of a VolumeSnapshot: its metadata (labels, slot annotation, owner,
/// creation time), its source PVC and whether it is ready or failed. A `DynamicObject` holds
/// its spec and status as JSON maps, several kilobytes each; retention keeps a few per PVC.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub metadata: ObjectMeta,
    pub pvc: String,
    pub ready: bool,
    pub failed: bool,
    /// `status.error.message`, when it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// `status.boundVolumeSnapshotContentName` and `status.restoreSize`: what a restore of it
    /// needs.
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub restore_size: Option<String>,
}

summary_resource!(
    Snapshot,
    "VolumeSnapshot",
    "snapshot.storage.k8s.io",
    "v1",
    "volumesnapshots"
);

/// A VolumeSnapshot as a [`Snapshot`].
impl Summarize for DynamicObject {
    type Summary = Snapshot;
    fn summarize(mut self) -> Snapshot {
        meta(&mut self.metadata);
        without_finalizers(&mut self.metadata);
        Snapshot {
            pvc: self.data["spec"]["source"]["persistentVolumeClaimName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            ready: self.data["status"]["readyToUse"].as_bool().unwrap_or(false),
            failed: !self.data["status"]["error"].is_null(),
            error: self.data["status"]["error"]
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .or_else(|| {
                    (!self.data["status"]["error"].is_null()).then(|| "unknown error".to_string())
                }),
            content: self.data["status"]["boundVolumeSnapshotContentName"]
                .as_str()
                .map(str::to_string),
            restore_size: self.data["status"]["restoreSize"]
                .as_str()
                .map(str::to_string),
            metadata: self.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summaries_are_resources_of_their_kinds() {
        assert_eq!(Policy::api_version(&()), "networking.k8s.io/v1");
        assert_eq!(Policy::plural(&()), "networkpolicies");
        assert_eq!(SecretMeta::kind(&()), "Secret");
        assert_eq!(Pvc::plural(&()), "persistentvolumeclaims");
        assert_eq!(Snapshot::group(&()), "snapshot.storage.k8s.io");
    }

    #[test]
    fn secret_metadata_keeps_only_the_rotation_stamp() {
        let s: PartialObjectMeta<Secret> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "a", "labels": {"rotate": "true"},
                         "annotations": {
                             "rampart.dev/rotation-id": "r2",
                             "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"c2VjcmV0\"}}"
                         }}
        }))
        .expect("valid metadata");
        let s = s.summarize();
        assert!(s.metadata.annotations.is_none());
        assert_eq!(s.rotation_id.as_deref(), Some("r2"));
        assert!(s.metadata.labels.is_some());
        assert!(!format!("{s:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn pvc_keeps_its_data_source() {
        let p: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "a", "labels": {"backup": "true"},
                         "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "dataSource": {"kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "snap-1"}},
            "status": {"phase": "Bound"}
        }))
        .expect("valid pvc");
        let p = p.summarize();
        assert_eq!(p.restored_from.as_deref(), Some("snap-1"));
        assert!(p.bound, "restore verification waits for Bound");
        assert_eq!(p.request.as_deref(), Some("1Gi"));
        assert!(p.metadata.annotations.is_none());
        assert_eq!(p.metadata.labels.map(|l| l.len()), Some(1));
        let plain: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "fresh", "namespace": "a"},
            "spec": {"dataSourceRef": {"kind": "PersistentVolumeClaim", "name": "other"}}
        }))
        .expect("valid pvc");
        assert_eq!(plain.summarize().restored_from, None);
        assert_eq!(Pvc::api_version(&()), "v1");
    }

    #[test]
    fn snapshot_keeps_source_and_readiness() {
        let s: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s", "namespace": "a", "annotations": {"rampart.dev/slot": "2026-01-01T00:00:00Z"}},
            "spec": {"source": {"persistentVolumeClaimName": "data"}, "volumeSnapshotClassName": "csi"},
            "status": {"readyToUse": true, "boundVolumeSnapshotContentName": "c", "restoreSize": "1Gi"}
        }))
        .expect("valid snapshot");
        let s = s.summarize();
        assert_eq!(s.pvc, "data");
        assert!(s.ready && !s.failed);
        assert_eq!(
            s.content.as_deref(),
            Some("c"),
            "a restore needs its content"
        );
        assert_eq!(s.restore_size.as_deref(), Some("1Gi"));
        assert!(s.metadata.annotations.is_some());
        let failed: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "f", "namespace": "a"},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
            "status": {"readyToUse": false, "error": {"message": "driver failed"}}
        }))
        .expect("valid snapshot");
        let f = failed.summarize();
        assert!(!f.ready && f.failed);
        assert_eq!(f.error.as_deref(), Some("driver failed"));
        assert_eq!(Snapshot::api_version(&()), "snapshot.storage.k8s.io/v1");
    }
}
