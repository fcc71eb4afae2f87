//! Apps shaped like the public charts platform teams install (a database, a broker, a cache):
//! the workload with an init container, resource requests and limits that include ephemeral
//! storage, Secrets read through `env`, `envFrom` and a volume, a StatefulSet's
//! `volumeClaimTemplates` on the default (WaitForFirstConsumer) class, and the objects such a
//! chart installs beside it: a headless Service, its own PodDisruptionBudget, NetworkPolicy
//! and HorizontalPodAutoscaler. A test that sets up workloads this way sees what users' estates
//! make Rampart do, not what a one-container Deployment does.
//!
//! Builders return manifests as `serde_json::Value`; [`create_all`] creates them in a namespace.

use anyhow::{Context as _, Result};
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{json, Value};

/// One way a pod reads a Secret. Rotation must find and restart a consumer whichever it is.
#[derive(Clone, Debug)]
pub enum SecretUse {
    /// One key as an environment variable (`env[].valueFrom.secretKeyRef`).
    Env { secret: String, key: String },
    /// Every key as an environment variable (`envFrom[].secretRef`).
    EnvFrom(String),
    /// Mounted as files (`volumes[].secret`).
    Volume(String),
    /// Mounted through a projected volume (`volumes[].projected.sources[].secret`).
    Projected(String),
}

/// The port the app serves on; its NetworkPolicy opens it.
pub const APP_PORT: i32 = 8080;

/// An app as its chart installs it. Pods carry `app: <name>` besides the chart's
/// `app.kubernetes.io/*` labels, so tests can list them by name.
#[derive(Clone, Debug)]
pub struct App {
    pub name: String,
    pub replicas: i32,
    pub secrets: Vec<SecretUse>,
    /// The size of a StatefulSet's `data` claim template.
    pub storage: String,
    /// The claim template's class; `None` takes the default one.
    pub storage_class: Option<String>,
    /// Labels on the claim template, so on every PVC made from it (for example
    /// `backup: "true"` for a profile's `pvcSelector`).
    pub pvc_labels: Value,
    /// Fields merged into the pod spec (a nodeSelector, tolerations, a grace period).
    pub pod_extra: Value,
}

impl App {
    /// `replicas` pods that read no Secret, with a 1Gi data volume when a StatefulSet.
    pub fn new(name: &str, replicas: i32) -> Self {
        Self {
            name: name.to_string(),
            replicas,
            secrets: Vec::new(),
            storage: "1Gi".to_string(),
            storage_class: None,
            pvc_labels: json!({}),
            pod_extra: json!({}),
        }
    }

    /// Reads `secret` every way charts do: `key` as one variable, all keys through
    /// `envFrom`, and the files of a volume.
    pub fn reading_secret(self, secret: &str, key: &str) -> Self {
        self.with_secret(SecretUse::Env {
            secret: secret.to_string(),
            key: key.to_string(),
        })
        .with_secret(SecretUse::EnvFrom(secret.to_string()))
        .with_secret(SecretUse::Volume(secret.to_string()))
    }

    pub fn with_secret(mut self, how: SecretUse) -> Self {
        self.secrets.push(how);
        self
    }

    pub fn with_pvc_labels(mut self, labels: Value) -> Self {
        self.pvc_labels = labels;
        self
    }

    pub fn with_storage_class(mut self, class: &str) -> Self {
        self.storage_class = Some(class.to_string());
        self
    }

    pub fn with_pod_extra(mut self, extra: Value) -> Self {
        self.pod_extra = extra;
        self
    }

    /// The selector a chart puts on its workload, PDB and NetworkPolicy.
    pub fn selector(&self) -> Value {
        json!({"app.kubernetes.io/name": self.name, "app.kubernetes.io/instance": self.name})
    }

    fn labels(&self) -> Value {
        let mut l = self.selector();
        l["app"] = json!(self.name);
        l["app.kubernetes.io/managed-by"] = json!("Helm");
        l
    }

    /// The pod template. `data` is the claim template's volume in a StatefulSet and an
    /// emptyDir in a Deployment; the init container prepares it, as charts' volume-permissions
    /// containers do.
    fn pod_template(&self, data_from_claim: bool) -> Value {
        let mut env = Vec::new();
        let mut env_from = Vec::new();
        let mut volumes = vec![json!({"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}})];
        let mut mounts = vec![
            json!({"name": "data", "mountPath": "/data"}),
            json!({"name": "tmp", "mountPath": "/tmp"}),
        ];
        if !data_from_claim {
            volumes.push(json!({"name": "data", "emptyDir": {}}));
        }
        for (i, how) in self.secrets.iter().enumerate() {
            match how {
                SecretUse::Env { secret, key } => env.push(json!({
                    "name": format!("SECRET_{i}"),
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}
                })),
                SecretUse::EnvFrom(secret) => env_from.push(json!({"secretRef": {"name": secret}})),
                SecretUse::Volume(secret) => {
                    volumes.push(
                        json!({"name": format!("secret-{i}"), "secret": {"secretName": secret}}),
                    );
                    mounts.push(json!({"name": format!("secret-{i}"), "mountPath": format!("/etc/secrets/{i}"), "readOnly": true}));
                }
                SecretUse::Projected(secret) => {
                    volumes.push(json!({"name": format!("secret-{i}"), "projected": {"sources": [{"secret": {"name": secret}}]}}));
                    mounts.push(json!({"name": format!("secret-{i}"), "mountPath": format!("/etc/secrets/{i}"), "readOnly": true}));
                }
            }
        }
        let mut spec = json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1001, "fsGroup": 1001},
            "initContainers": [{
                "name": "volume-permissions",
                "image": "example.com/os-shell:12",
                "command": ["sh", "-c", "chown -R 1001:1001 /data"],
                "securityContext": {"runAsUser": 0, "runAsNonRoot": false},
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi", "ephemeral-storage": "10Mi"},
                    "limits": {"memory": "32Mi", "ephemeral-storage": "50Mi"}
                },
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "containers": [{
                "name": self.name,
                "image": format!("example.com/{}:1", self.name),
                "ports": [{"name": "app", "containerPort": APP_PORT}],
                "env": env,
                "envFrom": env_from,
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "100Mi"},
                    "limits": {"memory": "256Mi", "ephemeral-storage": "1Gi"}
                },
                "readinessProbe": {"tcpSocket": {"port": "app"}, "periodSeconds": 10},
                "volumeMounts": mounts
            }],
            "volumes": volumes
        });
        if let Some(extra) = self.pod_extra.as_object() {
            for (k, v) in extra {
                spec[k] = v.clone();
            }
        }
        json!({"metadata": {"labels": self.labels()}, "spec": spec})
    }

    /// The StatefulSet, with a `data` claim template and the headless Service it names.
    pub fn statefulset(&self) -> Value {
        let mut claim_spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": self.storage}}
        });
        if let Some(class) = &self.storage_class {
            claim_spec["storageClassName"] = json!(class);
        }
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": self.name, "labels": self.labels()},
            "spec": {
                "replicas": self.replicas,
                "serviceName": self.headless_service_name(),
                "selector": {"matchLabels": self.selector()},
                "template": self.pod_template(true),
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data", "labels": self.pvc_labels},
                    "spec": claim_spec
                }]
            }
        })
    }

    pub fn deployment(&self) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": self.name, "labels": self.labels()},
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": self.selector()},
                "template": self.pod_template(false)
            }
        })
    }

    fn headless_service_name(&self) -> String {
        format!("{}-headless", self.name)
    }

    /// The headless Service a StatefulSet's pods get their DNS names from.
    pub fn headless_service(&self) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": self.headless_service_name(), "labels": self.labels()},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": self.selector(),
                "ports": [{"name": "app", "port": APP_PORT, "targetPort": "app"}]
            }
        })
    }

    /// The chart's own budget, named `name` (charts call it after the release), with `spec`
    /// (`{"maxUnavailable": 1}`, `{"minAvailable": 2}`) and the chart's selector.
    pub fn pdb(&self, name: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": self.selector()});
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "labels": self.labels()},
            "spec": spec
        })
    }

    /// The chart's own NetworkPolicy: the app's port open to any client, every egress
    /// allowed (what charts that ship one default to).
    pub fn network_policy(&self) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": self.name, "labels": self.labels()},
            "spec": {
                "podSelector": {"matchLabels": self.selector()},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"ports": [{"port": APP_PORT, "protocol": "TCP"}]}],
                "egress": [{}]
            }
        })
    }

    /// An HPA on CPU for the workload of `kind`. Its floor is the replica count, and the
    /// local plane has no metrics API, so it never changes the replicas a test expects; it is
    /// there because a restart or a budget must not trip over one.
    pub fn hpa(&self, kind: &str) -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": self.name, "labels": self.labels()},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": self.name},
                "minReplicas": self.replicas,
                "maxReplicas": self.replicas * 2,
                "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 75}
                }}]
            }
        })
    }

    /// What the chart installs around a StatefulSet: the headless Service, the StatefulSet,
    /// its NetworkPolicy and HPA (not its PDB: whether there is one is the test's choice).
    pub fn stateful_release(&self) -> Vec<Value> {
        vec![
            self.headless_service(),
            self.statefulset(),
            self.network_policy(),
            self.hpa("StatefulSet"),
        ]
    }

    /// The same for a Deployment: the Deployment, its NetworkPolicy and HPA.
    pub fn deployment_release(&self) -> Vec<Value> {
        vec![
            self.deployment(),
            self.network_policy(),
            self.hpa("Deployment"),
        ]
    }
}

/// An Opaque Secret with `data` (as `stringData`).
pub fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": data
    })
}

/// The API resource of a manifest, from its `apiVersion` and `kind`.
fn resource_of(obj: &Value) -> Result<ApiResource> {
    let api_version = obj["apiVersion"]
        .as_str()
        .context("a manifest without apiVersion")?;
    let kind = obj["kind"].as_str().context("a manifest without kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Ok(ApiResource::from_gvk(&GroupVersionKind::gvk(
        group, version, kind,
    )))
}

/// Creates every manifest in namespace `ns`, in order.
pub async fn create_all(client: &Client, ns: &str, objs: &[Value]) -> Result<()> {
    for obj in objs {
        let ar = resource_of(obj)?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let o: DynamicObject = serde_json::from_value(obj.clone())?;
        api.create(&PostParams::default(), &o)
            .await
            .with_context(|| {
                format!(
                    "creating {} {ns}/{}",
                    ar.kind,
                    o.metadata.name.as_deref().unwrap_or("?")
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statefulset_reads_the_secret_three_ways_and_claims_storage() {
        let s = App::new("db", 2)
            .reading_secret("db-creds", "password")
            .with_pvc_labels(json!({"backup": "true"}))
            .statefulset();
        let pod = &s["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            c["env"][0]["valueFrom"]["secretKeyRef"],
            json!({"name": "db-creds", "key": "password"})
        );
        assert_eq!(c["envFrom"][0]["secretRef"]["name"], "db-creds");
        assert!(pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "db-creds"));
        assert_eq!(
            c["resources"]["requests"]["ephemeral-storage"], "100Mi",
            "pods request ephemeral storage"
        );
        assert_eq!(pod["initContainers"][0]["name"], "volume-permissions");
        let claim = &s["spec"]["volumeClaimTemplates"][0];
        assert_eq!(claim["metadata"]["labels"]["backup"], "true");
        assert!(
            claim["spec"].get("storageClassName").is_none(),
            "the default class unless one is named"
        );
        assert!(
            !pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == "data"),
            "a StatefulSet's data comes from its claim template"
        );
    }

    #[test]
    fn pdb_and_policy_select_the_chart_labels_the_pods_carry() {
        let app = App::new("cache", 3);
        let pod_labels = app.deployment()["spec"]["template"]["metadata"]["labels"].clone();
        for selector in [
            app.pdb("cache", json!({"maxUnavailable": 1}))["spec"]["selector"]["matchLabels"]
                .clone(),
            app.network_policy()["spec"]["podSelector"]["matchLabels"].clone(),
        ] {
            for (k, v) in selector.as_object().unwrap() {
                assert_eq!(&pod_labels[k], v, "{k}");
            }
        }
        assert_eq!(pod_labels["app"], "cache");
    }

    #[test]
    fn hpa_floor_is_the_replica_count() {
        let h = App::new("web", 4).hpa("Deployment");
        assert_eq!(h["spec"]["minReplicas"], 4);
        assert_eq!(h["spec"]["scaleTargetRef"]["kind"], "Deployment");
    }

    #[test]
    fn resource_of_splits_core_and_grouped_api_versions() {
        let core = resource_of(&secret("s", &[])).unwrap();
        assert_eq!((core.group.as_str(), core.plural.as_str()), ("", "secrets"));
        let np = resource_of(&App::new("a", 1).network_policy()).unwrap();
        assert_eq!(
            (np.group.as_str(), np.plural.as_str()),
            ("networking.k8s.io", "networkpolicies")
        );
    }
}
