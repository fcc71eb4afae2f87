//! Observation: the summary of Deployments, StatefulSets and DaemonSets (see
//! [`super::summaries::Summarize`]). Pure; never calls the API.
//!
//! A cached `Deployment` is large even with its pod template stripped (its inline struct is
//! about 2.5 KB and each container another 2.3 KB), and every workload of the cluster is
//! cached. Rampart reads only a few facts from each: its selector, replica count and pod
//! labels (budgets), the Secrets it uses, its rotation stamps and whether its rollout is
//! complete (rotation). A [`Workload`] is those facts, computed once when the watch delivers
//! the object, and is a `Resource` of the original kind so it can feed a reflector and the
//! controller's triggers like the object itself.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};

use super::summaries::Summarize;
use crate::api::ROTATION_ID_ANNOTATION;
use crate::controls::rotation::{
    secrets_used_by, RESTARTED_AT_ANNOTATION, RESTARTED_UNREADY_ANNOTATION,
};

/// What Rampart keeps of a workload of kind `K`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Workload<K> {
    /// Identity and generation.
    pub metadata: ObjectMeta,
    /// `spec.replicas`, or 1 when unset; 0 for a DaemonSet (it has no replica count).
    pub replicas: i32,
    pub selector: LabelSelector,
    pub pod_labels: BTreeMap<String, String>,
    /// The pod template's `rampart.dev/rotation-id` annotation.
    pub stamped_id: Option<String>,
    /// The pod template's `rampart.dev/restarted-at` annotation.
    pub stamped_at: Option<String>,
    /// Every Secret the pod template names (env, envFrom, volumes, projected volumes).
    pub secrets: BTreeSet<String>,
    /// The controller has observed the current generation and every replica is updated and
    /// available.
    pub rollout_complete: bool,
    /// Its update strategy is `OnDelete`: a changed template restarts no pod.
    #[serde(default)]
    pub restarts_on_delete: bool,
    /// Every replica is available (ready, for a StatefulSet) now, whatever its template.
    #[serde(default)]
    pub ready: bool,
    /// The pod template carries `rampart.dev/restarted-unready`.
    #[serde(default)]
    pub restarted_unready: bool,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K> Workload<K> {
    /// A digest of what a settled rotation reads of the workload: the Secrets it names and its
    /// stamps (not replicas or rollout progress, which change on every scale).
    pub fn rotation_inputs(&self) -> u64 {
        super::hash64(&(
            &self.secrets,
            &self.stamped_id,
            &self.stamped_at,
            self.restarts_on_delete,
            self.restarted_unready,
        ))
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Workload<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A StatefulSet's or DaemonSet's `updateStrategy.type` is `OnDelete`.
fn on_delete(strategy: Option<String>) -> bool {
    strategy.as_deref() == Some("OnDelete")
}

fn generation_observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(g), Some(o)) => o >= g,
        _ => false,
    }
}

fn summary<K>(
    mut metadata: ObjectMeta,
    replicas: i32,
    selector: LabelSelector,
    template: &PodTemplateSpec,
    rollout_complete: bool,
    restarts_on_delete: bool,
    ready: bool,
) -> Workload<K> {
    // Identity and generation are all the metadata read; labels, annotations (the
    // last-applied configuration among them), owner references and managed fields are not.
    metadata.managed_fields = None;
    metadata.annotations = None;
    metadata.labels = None;
    metadata.owner_references = None;
    let template_meta = template.metadata.as_ref();
    let annotation = |key: &str| {
        template_meta
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(key))
            .cloned()
    };
    Workload {
        metadata,
        replicas,
        selector,
        pod_labels: template_meta
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        stamped_id: annotation(ROTATION_ID_ANNOTATION),
        stamped_at: annotation(RESTARTED_AT_ANNOTATION),
        secrets: template
            .spec
            .as_ref()
            .map(secrets_used_by)
            .unwrap_or_default(),
        rollout_complete,
        restarts_on_delete,
        ready,
        restarted_unready: annotation(RESTARTED_UNREADY_ANNOTATION).is_some(),
        kind: PhantomData,
    }
}

impl Summarize for Deployment {
    type Summary = Workload<Self>;
    fn summarize(self) -> Workload<Self> {
        let st = self.status.unwrap_or_default();
        let want = self.spec.replicas.unwrap_or(1);
        let complete = generation_observed(self.metadata.generation, st.observed_generation)
            && st.updated_replicas.unwrap_or(0) == want
            && st.available_replicas.unwrap_or(0) == want
            && st.replicas.unwrap_or(0) == want;
        let ready = st.available_replicas.unwrap_or(0) >= want;
        summary(
            self.metadata,
            want,
            self.spec.selector,
            &self.spec.template,
            complete,
            false,
            ready,
        )
    }
}

impl Summarize for StatefulSet {
    type Summary = Workload<Self>;
    fn summarize(self) -> Workload<Self> {
        let st = self.status.unwrap_or_default();
        let want = self.spec.replicas.unwrap_or(1);
        let complete = generation_observed(self.metadata.generation, st.observed_generation)
            && st.updated_replicas.unwrap_or(0) == want
            && st.ready_replicas.unwrap_or(0) == want
            && st.update_revision.is_some()
            && st.current_revision == st.update_revision;
        let on_delete = on_delete(self.spec.update_strategy.and_then(|u| u.type_));
        let ready = st.ready_replicas.unwrap_or(0) >= want;
        summary(
            self.metadata,
            want,
            self.spec.selector,
            &self.spec.template,
            complete,
            on_delete,
            ready,
        )
    }
}

impl Summarize for DaemonSet {
    type Summary = Workload<Self>;
    fn summarize(self) -> Workload<Self> {
        let st = self.status.unwrap_or_default();
        let complete = generation_observed(self.metadata.generation, st.observed_generation)
            && st.updated_number_scheduled.unwrap_or(0) == st.desired_number_scheduled
            && st.number_available.unwrap_or(0) == st.desired_number_scheduled;
        let on_delete = on_delete(self.spec.update_strategy.and_then(|u| u.type_));
        let ready = st.number_available.unwrap_or(0) >= st.desired_number_scheduled;
        summary(
            self.metadata,
            0,
            self.spec.selector,
            &self.spec.template,
            complete,
            on_delete,
            ready,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "a", "generation": 2,
                         "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"},
                                 "annotations": {"rampart.dev/rotation-id": "r1", "rampart.dev/restarted-at": "2026-01-01T00:00:00.000Z"}},
                    "spec": {
                        "containers": [{"name": "app", "image": "example.com/app:1",
                                        "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                                        "envFrom": [{"secretRef": {"name": "api"}}]}],
                        "initContainers": [{"name": "init", "image": "i", "envFrom": [{"secretRef": {"name": "init-secret"}}]}],
                        "volumes": [{"name": "tls", "secret": {"secretName": "tls"}},
                                    {"name": "p", "projected": {"sources": [{"secret": {"name": "projected"}}]}}]
                    }
                }
            },
            "status": status
        }))
        .expect("valid deployment")
    }

    #[test]
    fn summary_keeps_what_rotation_and_budgets_read() {
        let w = deployment(json!({})).summarize();
        assert_eq!(w.replicas, 3);
        assert_eq!(
            w.secrets.iter().map(String::as_str).collect::<Vec<_>>(),
            ["api", "db", "init-secret", "projected", "tls"]
        );
        assert_eq!(w.stamped_id.as_deref(), Some("r1"));
        assert_eq!(w.stamped_at.as_deref(), Some("2026-01-01T00:00:00.000Z"));
        assert_eq!(w.pod_labels.get("app").map(String::as_str), Some("web"));
        assert!(w.selector.match_labels.is_some());
        assert!(w.metadata.annotations.is_none());
        assert_eq!(w.metadata.namespace.as_deref(), Some("a"));
    }

    #[test]
    fn rollout_is_complete_only_when_the_current_generation_is_fully_available() {
        let done = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert!(deployment(done).summarize().rollout_complete);
        let stale = json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert!(!deployment(stale).summarize().rollout_complete);
        let rolling = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3});
        assert!(!deployment(rolling).summarize().rollout_complete);
    }

    #[test]
    fn ready_is_availability_now_whatever_the_template() {
        // A rollout under way with every replica still available: ready, not complete.
        let rolling = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3});
        let w = deployment(rolling).summarize();
        assert!(w.ready && !w.rollout_complete);
        let short = json!({"observedGeneration": 2, "replicas": 3, "availableReplicas": 0});
        assert!(!deployment(short).summarize().ready);
    }

    #[test]
    fn an_on_delete_statefulset_is_marked() {
        let sts = |strategy: &str| -> StatefulSet {
            serde_json::from_value(json!({
                "metadata": {"name": "db", "namespace": "a"},
                "spec": {
                    "selector": {"matchLabels": {"app": "db"}},
                    "serviceName": "db",
                    "updateStrategy": {"type": strategy},
                    "template": {"spec": {"containers": [{"name": "db"}]}}
                }
            }))
            .expect("a StatefulSet")
        };
        assert!(sts("OnDelete").summarize().restarts_on_delete);
        assert!(!sts("RollingUpdate").summarize().restarts_on_delete);
    }

    #[test]
    fn a_summary_is_a_resource_of_the_original_kind() {
        assert_eq!(Workload::<Deployment>::kind(&()), "Deployment");
        assert_eq!(Workload::<StatefulSet>::plural(&()), "statefulsets");
        assert_eq!(Workload::<DaemonSet>::api_version(&()), "apps/v1");
    }
}
