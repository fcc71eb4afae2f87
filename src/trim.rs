//! Observation, before caching: strips each watched object down to the fields a reconcile
//! reads. Pure; never calls the API.
//!
//! The caches hold every Deployment, StatefulSet, DaemonSet, PVC, budget, namespace and
//! Secret of the cluster, so what each cached object carries decides the operator's memory.
//! A pod template is mostly images, probes, resources and ports, none of which Rampart reads;
//! a workload's status conditions and annotations (the last-applied configuration among them)
//! are the same. Everything a control reads is kept exactly: selectors, replica counts,
//! template labels and annotations, every reference to a Secret, rollout counters, budget
//! specs and health, PVC data sources, snapshot sources and readiness.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EphemeralContainer, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, ProjectedVolumeSource, Secret, Volume,
    VolumeProjection,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use kube::core::{ObjectMeta, PartialObjectMeta};

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

/// Env entries and env sources that name a Secret; nothing else of a container is read.
fn env(env: &mut Option<Vec<EnvVar>>, env_from: &mut Option<Vec<EnvFromSource>>) {
    if let Some(list) = env {
        list.retain(|e| {
            e.value_from
                .as_ref()
                .is_some_and(|v| v.secret_key_ref.is_some())
        });
        for e in list.iter_mut() {
            e.value = None;
            if let Some(v) = &mut e.value_from {
                v.config_map_key_ref = None;
                v.field_ref = None;
                v.resource_field_ref = None;
            }
        }
    }
    if let Some(list) = env_from {
        list.retain(|f| f.secret_ref.is_some());
        for f in list.iter_mut() {
            f.config_map_ref = None;
        }
    }
}

fn container(c: &Container) -> Container {
    let mut out = Container {
        name: c.name.clone(),
        env: c.env.clone(),
        env_from: c.env_from.clone(),
        ..Default::default()
    };
    env(&mut out.env, &mut out.env_from);
    out
}

fn ephemeral_container(c: &EphemeralContainer) -> EphemeralContainer {
    let mut out = EphemeralContainer {
        name: c.name.clone(),
        env: c.env.clone(),
        env_from: c.env_from.clone(),
        ..Default::default()
    };
    env(&mut out.env, &mut out.env_from);
    out
}

/// Secret volumes as they are; projected volumes with their Secret sources only; every other
/// volume dropped.
fn volume(v: &Volume) -> Option<Volume> {
    if v.secret.is_some() {
        return Some(Volume {
            name: v.name.clone(),
            secret: v.secret.clone(),
            ..Default::default()
        });
    }
    let sources: Vec<VolumeProjection> = v
        .projected
        .as_ref()?
        .sources
        .iter()
        .flatten()
        .filter(|s| s.secret.is_some())
        .map(|s| VolumeProjection {
            secret: s.secret.clone(),
            ..Default::default()
        })
        .collect();
    (!sources.is_empty()).then(|| Volume {
        name: v.name.clone(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A pod template keeps its labels and annotations (rotation stamps and budget selectors
/// read them) and, of its spec, only what names a Secret.
pub fn pod_template(t: &mut PodTemplateSpec) {
    if let Some(m) = &mut t.metadata {
        meta(m);
    }
    let Some(spec) = &t.spec else {
        return;
    };
    let volumes: Vec<Volume> = spec.volumes.iter().flatten().filter_map(volume).collect();
    t.spec = Some(PodSpec {
        containers: spec.containers.iter().map(container).collect(),
        init_containers: spec
            .init_containers
            .as_ref()
            .map(|cs| cs.iter().map(container).collect()),
        ephemeral_containers: spec
            .ephemeral_containers
            .as_ref()
            .map(|cs| cs.iter().map(ephemeral_container).collect()),
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..Default::default()
    });
}

pub fn deployment(d: &mut Deployment) {
    meta_without_annotations(&mut d.metadata);
    pod_template(&mut d.spec.template);
    if let Some(st) = &mut d.status {
        st.conditions = None;
    }
}

pub fn statefulset(s: &mut StatefulSet) {
    meta_without_annotations(&mut s.metadata);
    pod_template(&mut s.spec.template);
    // PVC templates are whole PVC specs; Rampart selects the PVCs themselves.
    s.spec.volume_claim_templates = None;
    if let Some(st) = &mut s.status {
        st.conditions = None;
    }
}

pub fn daemonset(d: &mut DaemonSet) {
    meta_without_annotations(&mut d.metadata);
    pod_template(&mut d.spec.template);
    if let Some(st) = &mut d.status {
        st.conditions = None;
    }
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

/// A VolumeSnapshot keeps its metadata, its source PVC and whether it is ready or failed.
pub fn snapshot(s: &mut DynamicObject) {
    meta(&mut s.metadata);
    let pvc = s.data["spec"]["source"]["persistentVolumeClaimName"].take();
    let ready = s.data["status"]["readyToUse"].take();
    let error = s.data["status"]["error"].take();
    s.data = serde_json::json!({
        "spec": {"source": {"persistentVolumeClaimName": pvc}},
        "status": {"readyToUse": ready, "error": error},
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controls::rotation::secrets_used_by;
    use serde_json::json;

    fn template() -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}, "annotations": {"rampart.dev/rotation-id": "r1"}},
            "spec": {
                "containers": [{
                    "name": "app", "image": "example.com/app:1",
                    "args": ["--serve"],
                    "ports": [{"containerPort": 8080}],
                    "resources": {"limits": {"memory": "64Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}},
                    "env": [
                        {"name": "PLAIN", "value": "x"},
                        {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
                    ],
                    "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "api"}}]
                }],
                "initContainers": [{"name": "init", "image": "i", "envFrom": [{"secretRef": {"name": "init-secret"}}]}],
                "ephemeralContainers": [{"name": "debug", "image": "d", "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "debug-token", "key": "t"}}}]}],
                "volumes": [
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "tls", "secret": {"secretName": "tls"}},
                    {"name": "mixed", "projected": {"sources": [
                        {"configMap": {"name": "cm"}},
                        {"secret": {"name": "projected"}}
                    ]}},
                    {"name": "cm-only", "projected": {"sources": [{"configMap": {"name": "cm"}}]}}
                ],
                "nodeSelector": {"disk": "ssd"},
                "serviceAccountName": "app"
            }
        }))
        .expect("valid template")
    }

    #[test]
    fn trimmed_template_names_the_same_secrets() {
        let full = template();
        let mut trimmed = full.clone();
        pod_template(&mut trimmed);
        let used = |t: &PodTemplateSpec| secrets_used_by(t.spec.as_ref().expect("spec"));
        assert_eq!(used(&trimmed), used(&full));
        assert_eq!(
            used(&trimmed).into_iter().collect::<Vec<_>>(),
            [
                "api",
                "db",
                "debug-token",
                "init-secret",
                "projected",
                "tls"
            ]
        );
        assert_eq!(trimmed.metadata, full.metadata);
    }

    #[test]
    fn trimmed_template_drops_what_is_never_read() {
        let mut t = template();
        pod_template(&mut t);
        let v = serde_json::to_value(&t).expect("serialises");
        let c = &v["spec"]["containers"][0];
        assert_eq!(c["name"], "app");
        assert!(c.get("image").is_none() && c.get("readinessProbe").is_none());
        assert_eq!(c["env"].as_array().map(Vec::len), Some(1));
        assert_eq!(c["envFrom"], json!([{"secretRef": {"name": "api"}}]));
        let volumes: Vec<&str> = v["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(volumes, ["tls", "mixed"]);
        assert!(v["spec"].get("nodeSelector").is_none());
    }

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
        let mut s: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "s", "namespace": "a", "annotations": {"rampart.dev/slot": "2026-01-01T00:00:00Z"}},
            "spec": {"source": {"persistentVolumeClaimName": "data"}, "volumeSnapshotClassName": "csi"},
            "status": {"readyToUse": true, "boundVolumeSnapshotContentName": "c", "restoreSize": "1Gi"}
        }))
        .expect("valid snapshot");
        snapshot(&mut s);
        assert_eq!(
            s.data["spec"]["source"]["persistentVolumeClaimName"],
            "data"
        );
        assert_eq!(s.data["status"]["readyToUse"], true);
        assert!(s.data["status"]["error"].is_null());
        assert!(s.data["spec"].get("volumeSnapshotClassName").is_none());
        assert!(s.metadata.annotations.is_some());
    }
}
