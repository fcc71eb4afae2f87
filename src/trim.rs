//! Observation, before caching: strips each watched object down to the fields a reconcile
//! reads. Pure; never calls the API.
//!
//! The caches hold every PVC, budget, namespace and Secret of the cluster, so what each cached
//! object carries decides the operator's memory (workloads are summarised instead, see
//! [`crate::workloads`]). Everything a control reads is kept exactly: budget specs and health,
//! PVC data sources, namespace labels, rotation stamps, snapshot sources and readiness.

use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec, Secret,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use std::borrow::Cow;

use kube::api::DynamicObject;
use kube::core::{NamespaceResourceScope, ObjectMeta, PartialObjectMeta};
use kube::Resource;
use serde::{Deserialize, Serialize};

use crate::api::ROTATION_ID_ANNOTATION;

/// Managed fields are often most of an object's size and nothing reads them.
fn meta(m: &mut ObjectMeta) {
    m.managed_fields = None;
}

/// Metadata of an object whose annotations nothing reads.
fn meta_without_annotations(m: &mut ObjectMeta) {
    meta(m);
    m.annotations = None;
}

/// Budgets keep their annotations: a managed budget's are compared for drift.
pub fn budget(b: &mut PodDisruptionBudget) {
    meta(&mut b.metadata);
    if let Some(st) = &mut b.status {
        st.conditions = None;
        st.disrupted_pods = None;
    }
}

pub fn network_policy(np: &mut NetworkPolicy) {
    meta(&mut np.metadata);
}

/// A PVC's identity, labels, creation time and data source: all that backups read.
pub fn pvc(p: &mut PersistentVolumeClaim) {
    meta_without_annotations(&mut p.metadata);
    p.status = None;
    p.spec = p.spec.take().map(|s| PersistentVolumeClaimSpec {
        data_source: s.data_source,
        data_source_ref: s.data_source_ref,
        ..Default::default()
    });
}

pub fn namespace(n: &mut PartialObjectMeta<Namespace>) {
    meta_without_annotations(&mut n.metadata);
}

/// Of a Secret's annotations only the rotation stamp is read. The others can be large and
/// one of them, kubectl's last-applied configuration, can hold the Secret's data: it must
/// never sit in the operator's memory.
pub fn secret(s: &mut PartialObjectMeta<Secret>) {
    meta(&mut s.metadata);
    if let Some(a) = &mut s.metadata.annotations {
        a.retain(|k, _| k == ROTATION_ID_ANNOTATION);
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
}

impl Resource for Snapshot {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "VolumeSnapshot".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "snapshot.storage.k8s.io".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "volumesnapshots".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A VolumeSnapshot as a [`Snapshot`].
pub fn snapshot(mut s: DynamicObject) -> Snapshot {
    meta(&mut s.metadata);
    Snapshot {
        pvc: s.data["spec"]["source"]["persistentVolumeClaimName"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ready: s.data["status"]["readyToUse"].as_bool().unwrap_or(false),
        failed: !s.data["status"]["error"].is_null(),
        metadata: s.metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_metadata_keeps_only_the_rotation_stamp() {
        let mut s: PartialObjectMeta<Secret> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "a", "labels": {"rotate": "true"},
                         "annotations": {
                             "rampart.dev/rotation-id": "r2",
                             "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"c2VjcmV0\"}}"
                         }}
        }))
        .expect("valid metadata");
        secret(&mut s);
        let a = s.metadata.annotations.expect("annotations");
        assert_eq!(a.len(), 1);
        assert_eq!(
            a.get(ROTATION_ID_ANNOTATION).map(String::as_str),
            Some("r2")
        );
        assert!(s.metadata.labels.is_some());
    }

    #[test]
    fn pvc_keeps_its_data_source() {
        let mut p: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "a", "labels": {"backup": "true"},
                         "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "dataSource": {"kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "snap-1"}},
            "status": {"phase": "Bound"}
        }))
        .expect("valid pvc");
        pvc(&mut p);
        let spec = p.spec.expect("spec");
        assert_eq!(spec.data_source.map(|d| d.name).as_deref(), Some("snap-1"));
        assert!(spec.access_modes.is_none() && p.status.is_none());
        assert!(p.metadata.annotations.is_none());
        assert_eq!(p.metadata.labels.map(|l| l.len()), Some(1));
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
        let s = snapshot(s);
        assert_eq!(s.pvc, "data");
        assert!(s.ready && !s.failed);
        assert!(s.metadata.annotations.is_some());
        let failed: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "f", "namespace": "a"},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
            "status": {"readyToUse": false, "error": {"message": "driver failed"}}
        }))
        .expect("valid snapshot");
        let f = snapshot(failed);
        assert!(!f.ready && f.failed);
        assert_eq!(Snapshot::api_version(&()), "snapshot.storage.k8s.io/v1");
    }
}
