//! The `HardeningProfile` spec: what a platform engineer declares. Pure types, no API calls.
//!
//! Validation lives here too, as schema bounds and CEL rules, so the API server refuses most
//! bad profiles at admission with a message naming the field. What only the controller can
//! check (selector syntax the schema cannot express, expiry already past) is in
//! `crate::api::validate`.

use std::collections::BTreeMap;

use std::borrow::Cow;

use kube::{CustomResource, KubeSchema};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::status::HardeningProfileStatus;

/// A set of namespaces and the security posture they must hold.
///
/// Rampart creates default-deny NetworkPolicies with allow-lists, PodDisruptionBudgets for
/// replicated workloads, rotates selected Secrets when `secretRotation.rotationId` changes and
/// takes VolumeSnapshots of selected PVCs on a schedule. Anything that departs from the profile
/// is reported in the status and, in `Enforce` mode, repaired.
// kube's derive takes `type_` once per printer column, which clippy reads as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rampart.dev",
    version = "v1alpha1",
    kind = "HardeningProfile",
    plural = "hardeningprofiles",
    shortname = "hp",
    // `kubectl get rampart` lists the profiles, as `kubectl get all` does a namespace's
    // workloads.
    category = "rampart",
    status = "HardeningProfileStatus",
    derive = "PartialEq",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Namespaces",
        type_ = "integer",
        json_path = ".status.summary.namespaces"
    ),
    printcolumn(
        name = "Compliant",
        type_ = "integer",
        json_path = ".status.summary.compliant"
    ),
    printcolumn(
        name = "Drifted",
        type_ = "integer",
        json_path = ".status.summary.driftedObjects"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        description = "Why the Ready condition has its status",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        description = "The Ready condition's message",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    // The profile name becomes a label value (rampart.dev/profile) and part of the scratch
    // namespace's name (rampart-verify-<name>, hashed to fit 63), so it must be a DNS label:
    // metadata.name already allows only lowercase, digits, '-' and '.'.
    validation = Rule::new("size(self.metadata.name) <= 63 && !self.metadata.name.contains('.')")
        .message("metadata.name: at most 63 characters and no dots, since it becomes a label value and part of a namespace name"),
    doc = "HardeningProfile keeps the namespaces it selects hardened: default-deny NetworkPolicies with allow-lists, drain-friendly PodDisruptionBudgets, Secret rotation with bounded restarts and scheduled VolumeSnapshots with retention. Cluster-scoped. Drift from the profile is reported in status and, in Enforce mode, repaired."
)]
#[x_kube(
    validation = Rule::new("has(self.namespaceSelector) || (has(self.namespaces) && size(self.namespaces) > 0)")
        .message("spec: set namespaceSelector or a non-empty namespaces list"),
    validation = Rule::new("has(self.networkPolicies) || has(self.podDisruptionBudgets) || has(self.secretRotation) || has(self.backups)")
        .message("spec: enable at least one control (networkPolicies, podDisruptionBudgets, secretRotation or backups)"),
)]
#[serde(rename_all = "camelCase")]
pub struct HardeningProfileSpec {
    /// Enforce creates and repairs; Audit (the default) computes and reports drift but writes
    /// nothing except the profile's status and events. Apply a profile in Audit, read its
    /// drift, then set Enforce.
    #[serde(default)]
    pub mode: Mode,

    /// Selects namespaces by label. Combined with `namespaces` as a union. The namespaces the
    /// operator excludes (by default kube-* and its own) are left out unless listed by name in
    /// `namespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Namespaces selected by name, in addition to `namespaceSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "set"))]
    pub namespaces: Vec<NamespaceName>,

    /// Default-deny NetworkPolicies with allow-lists in every selected namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policies: Option<NetworkPolicyControl>,

    /// PodDisruptionBudgets for replicated Deployments and StatefulSets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budgets: Option<DisruptionBudgetControl>,

    /// Rotation of selected Secrets when `rotationId` changes, with restarts of their consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_rotation: Option<SecretRotationControl>,

    /// VolumeSnapshot schedules for selected PersistentVolumeClaims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<BackupControl>,

    /// Namespaces exempted from one control, with a reason and an optional expiry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["namespace", "control"]))]
    pub exceptions: Vec<Exception>,
}

/// Whether drift is repaired or only reported.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Create, repair and remove managed objects.
    Enforce,
    /// Report what would change; write nothing but status and events. The default, so a
    /// profile applied without thought changes nothing until someone asks it to.
    #[default]
    Audit,
}

/// A Kubernetes namespace name (RFC 1123 label).
#[derive(
    JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(transparent)]
pub struct NamespaceName(
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub String,
);

impl NamespaceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A label selector: `matchLabels` and `matchExpressions` are ANDed. An empty selector selects
/// everything.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values (keys are checked by the
    /// controller; an invalid key gives InvalidSpec).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = label_map_schema)]
    pub match_labels: BTreeMap<String, String>,

    /// Set-based requirements on labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// A selector that names something: one that selects everything is refused where it would
/// reach every Secret or PVC of the selected namespaces.
const NON_EMPTY_SELECTOR: &str = "(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)";

/// One set-based label requirement.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)")
        .message("matchExpressions: values must be non-empty for In and NotIn, and absent for Exists and DoesNotExist")
)]
pub struct LabelSelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: SelectorOperator,
    /// Values for In and NotIn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Vec<String>,
}

/// A label selector operator.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Default-deny plus allow-lists. Policies are additive, so each allowance is its own policy
/// with a stable name.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyControl {
    /// Which directions the default-deny policy covers.
    #[serde(default)]
    pub default_deny: DefaultDeny,

    /// Allow ingress from and egress to pods in the same namespace.
    #[serde(default = "default_true")]
    pub allow_same_namespace: bool,

    /// Allow egress to the cluster DNS pods on UDP and TCP 53.
    #[serde(default = "default_true", rename = "allowDNS")]
    pub allow_dns: bool,

    /// Where the cluster DNS pods run; defaults to kube-system pods labelled k8s-app=kube-dns.
    #[serde(default)]
    pub dns: DnsTarget,

    /// Namespaces whose pods may connect in (matched on `kubernetes.io/metadata.name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "set"))]
    pub allowed_namespaces: Vec<NamespaceName>,

    /// A monitoring namespace allowed to scrape the listed ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringAccess>,

    /// Extra egress destinations outside the cluster, as CIDRs (IPv4 or IPv6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("egressCIDRs: every entry must be a CIDR such as 10.0.0.0/8"))]
    #[serde(rename = "egressCIDRs")]
    pub egress_cidrs: Vec<String>,
}

/// Directions covered by the default-deny policy.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultDeny {
    /// Deny all ingress not allowed by another policy.
    #[serde(default = "default_true")]
    pub ingress: bool,
    /// Deny all egress not allowed by another policy.
    #[serde(default = "default_true")]
    pub egress: bool,
}

impl Default for DefaultDeny {
    fn default() -> Self {
        Self {
            ingress: true,
            egress: true,
        }
    }
}

/// The cluster DNS pods, as one peer: the namespace and the pod selector are ANDed.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DnsTarget {
    /// Namespace of the DNS pods.
    #[serde(default = "default_dns_namespace")]
    pub namespace: NamespaceName,
    /// Labels of the DNS pods.
    #[serde(default = "default_dns_pod_labels")]
    #[schemars(length(min = 1))]
    pub pod_labels: BTreeMap<String, String>,
}

impl Default for DnsTarget {
    fn default() -> Self {
        Self {
            namespace: default_dns_namespace(),
            pod_labels: default_dns_pod_labels(),
        }
    }
}

/// A monitoring namespace and the ports it may reach.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct MonitoringAccess {
    /// The namespace the scrapers run in.
    pub namespace: NamespaceName,
    /// TCP ports the scrapers may reach.
    #[schemars(length(min = 1, max = 64), extend("x-kubernetes-list-type" = "set"))]
    pub ports: Vec<Port>,
}

/// A TCP or UDP port number.
#[derive(
    JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(transparent)]
pub struct Port(#[schemars(range(min = 1, max = 65535))] pub i32);

/// PodDisruptionBudgets for replicated workloads, never ones that block node drains.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetControl {
    /// Workloads with fewer replicas get no budget (a budget on one replica blocks drains).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 2, max = 10000))]
    pub min_replicas: i32,

    /// Pods of a workload that may be down at once: a positive number or a percentage from 1%
    /// to 100%. Zero is refused because it blocks every drain.
    #[serde(default = "default_max_unavailable")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')").message("maxUnavailable: must be an integer of at least 1 or a percentage from 1% to 100%"))]
    pub max_unavailable: MaxUnavailable,
}

/// A positive count or a percentage, as in a PodDisruptionBudget.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum MaxUnavailable {
    Count(i32),
    Percent(String),
}

/// Rotation of selected Secrets on a new `rotationId`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.hooks) || !has(self.hooks.beforeRestart) || (has(self.keepPrevious) && self.keepPrevious)")
        .message("hooks.beforeRestart: needs keepPrevious: true, so the hook can read the value the service still holds")
)]
pub struct SecretRotationControl {
    /// Change this value to rotate. Secrets already stamped with it are never rotated again.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub rotation_id: String,

    /// Which Secrets in the selected namespaces rotate. Must not be empty: an empty selector
    /// would rotate every Secret of every selected namespace.
    #[x_kube(validation = Rule::new(NON_EMPTY_SELECTOR).message("selector: set matchLabels or matchExpressions; an empty selector would select every Secret of every selected namespace"))]
    pub selector: LabelSelector,

    /// Keys given new random values; other keys keep theirs. A missing key is created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["key"]))]
    pub regenerate: Vec<RegeneratedKey>,

    /// Keep the previous value of each regenerated key under `<key>.previous` so clients can roll
    /// over.
    #[serde(default)]
    pub keep_previous: bool,

    /// Workloads restarted at once; the next batch starts when these have rolled out.
    #[serde(default = "default_max_concurrent_restarts")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent_restarts: i32,

    /// How long one batch's rollouts may take before the rotation stops as stalled, in seconds.
    #[serde(default = "default_rollout_timeout_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub rollout_timeout_seconds: i32,

    /// Jobs run at points of the rotation, such as the one that sets a database's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<RotationHooks>,
}

/// Jobs a rotation runs.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RotationHooks {
    /// Run once for each rotated Secret, in its namespace, after the Secret holds its new values
    /// and before any of its consumers restarts: the place to set the new password where it is
    /// checked (`ALTER USER`, a Redis `ACL SETUSER`, an API call) while the old one still works.
    /// The Secret is mounted read-only with both the new values and `<key>.previous`. Its
    /// consumers restart only once the Job completes. If the Job fails or does not finish within
    /// `timeoutSeconds`, the Secret's keys are given back the values its consumers run with, the
    /// consumers are not restarted, and the status names the Secret and the Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_restart: Option<RotationHook>,
}

/// One hook: a Job made from a pod template.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RotationHook {
    /// A pod template (`metadata` and `spec`, as in a Job's `spec.template`) held to the same
    /// rules as restore verification's check Job: what the `restricted` Pod Security Standard
    /// refuses is refused, as are `nodeName`, a ServiceAccount other than `default`, a service
    /// account token, host ports and volumes other than configMap, emptyDir, downwardAPI and
    /// projected (configMap and downwardAPI sources). Security context fields left empty are
    /// filled with the restricted values and the token is never mounted. Rampart adds the
    /// rotated Secret as the read-only volume `volumeName` (mount it where the hook reads it),
    /// and to every container the variables `RAMPART_SECRET_NAMESPACE`, `RAMPART_SECRET_NAME`,
    /// `RAMPART_ROTATION_ID` and `RAMPART_ROTATED_KEYS` (comma-separated). `restartPolicy`
    /// defaults to Never.
    #[schemars(schema_with = "pod_template")]
    pub template: serde_json::Value,
    /// Name of the volume the rotated Secret is added as.
    #[serde(default = "default_hook_volume_name")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("volumeName: must be a DNS label"))]
    pub volume_name: String,
    /// How long the Job may run before it fails (its `activeDeadlineSeconds`), in seconds.
    #[serde(default = "default_hook_timeout_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub timeout_seconds: i64,
}

/// One key given a new random value on rotation.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegeneratedKey {
    /// The Secret data key.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
    /// Length of the generated value in characters.
    #[serde(default = "default_secret_length")]
    #[schemars(range(min = 16, max = 4096))]
    pub length: i32,
    /// Characters the value is drawn from.
    #[serde(default)]
    pub alphabet: Alphabet,
}

/// The characters a generated value is drawn from.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Alphabet {
    /// A-Z, a-z and 0-9.
    #[default]
    Alphanumeric,
    /// 0-9 and a-f.
    Hex,
    /// The URL-safe base64 alphabet.
    Base64Url,
}

/// VolumeSnapshot schedules for selected PVCs.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupControl {
    /// Cron schedule: 5 fields, 6 with a leading seconds field, or a macro such as @daily. At
    /// most once a minute: a seconds field must be a single second (`30 0 2 * * *`).
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// IANA time zone the schedule is read in; UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// Which PVCs in the selected namespaces are snapshotted. Must not be empty: an empty
    /// selector would snapshot every PVC of every selected namespace.
    #[x_kube(validation = Rule::new(NON_EMPTY_SELECTOR).message("pvcSelector: set matchLabels or matchExpressions; an empty selector would select every PVC of every selected namespace"))]
    pub pvc_selector: LabelSelector,
    /// The VolumeSnapshotClass each snapshot names.
    #[schemars(length(min = 1, max = 253))]
    pub volume_snapshot_class_name: String,
    /// How many ready snapshots to keep and for how long.
    #[serde(default)]
    pub retention: Retention,
    /// Stop taking new snapshots; retention still applies.
    #[serde(default)]
    pub suspend: bool,
    /// A slot missed (operator down) is still taken if no later than this many seconds after
    /// its time; otherwise it is recorded as missed.
    #[serde(default = "default_starting_deadline_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub starting_deadline_seconds: i64,
    /// Take one snapshot of each PVC when it is first selected, before the first slot.
    #[serde(default)]
    pub snapshot_on_create: bool,
    /// What happens to the snapshots when the profile is deleted.
    #[serde(default)]
    pub deletion_policy: SnapshotDeletionPolicy,
    /// Restore verification: on its own schedule, restore the newest ready snapshot of each
    /// selected PVC into a scratch PVC in a namespace Rampart owns, wait until it binds, record
    /// the result in `status.backups.lastVerified`, and delete the scratch objects. Not run in
    /// Audit mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyControl>,
}

/// When and how snapshots are restored to prove they restore.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyControl {
    /// Cron schedule of verifications (read in `spec.backups.timeZone`): 5 fields, 6 with a
    /// leading seconds field, or a macro such as @weekly. At most once a minute: a seconds
    /// field must be a single second.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("schedule: must not be blank"))]
    pub schedule: String,
    /// StorageClass of the scratch PVC; the source PVC's class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// How long one verification may take, from the first scratch object to a bound PVC,
    /// before it is recorded as Failed.
    #[serde(default = "default_verify_timeout_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub timeout_seconds: i64,
    /// A check run against the restored volume: a Job made from this pod template in the
    /// scratch namespace as soon as the scratch PVC exists, with the PVC added read-only as the
    /// volume `volumeName` (mount it in the containers that check it). It is the restore's first
    /// consumer, so classes with `WaitForFirstConsumer` binding provision for it. The
    /// verification succeeds when the PVC binds and the Job completes, and fails, naming the PVC
    /// and the Job's reason, when it fails or does not finish within `timeoutSeconds`. Without
    /// it, Rampart gives the restore a minimal reader pod (no service account token, restricted
    /// security context, the volume mounted read-only) as its first consumer, and a restored
    /// volume that binds is the proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<VerifyJob>,
    /// How many PVCs are restored at a time. Each restore is a full copy of a volume, so this
    /// bounds the storage verification takes; a ResourceQuota on the scratch namespace holds
    /// its PVC count to the same number.
    #[serde(default = "default_verify_max_concurrent")]
    #[schemars(range(min = 1, max = 50))]
    pub max_concurrent: i32,
}

/// The Job restore verification runs against a restored volume.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyJob {
    /// A pod template (`metadata` and `spec`, as in a Job's `spec.template`) that cannot
    /// escalate: what the `restricted` Pod Security Standard refuses is refused here too, as are
    /// `nodeName`, a ServiceAccount other than `default`, a service account token, host ports and
    /// volumes other than configMap, emptyDir, downwardAPI and projected (configMap and
    /// downwardAPI sources). Security context fields left empty are filled with the restricted
    /// values (runAsNonRoot, seccompProfile RuntimeDefault, allowPrivilegeEscalation false,
    /// capabilities drop ALL) and the token is never mounted. The controller also reports an
    /// `InvalidSpec` naming this field when it is not a pod template with at least one
    /// container; `restartPolicy` defaults to Never.
    #[schemars(schema_with = "pod_template")]
    pub template: serde_json::Value,
    /// Name of the volume the restored PVC is added as.
    #[serde(default = "default_verify_volume_name")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("volumeName: must be a DNS label"))]
    pub volume_name: String,
}

/// A pod template kept as given, except that the fields the restricted rules read are declared
/// so their CEL can refuse a template that could escalate (see `crate::api::restricted`); the
/// API server validates the rest when the Job is made, the controller before that.
fn pod_template(_: &mut SchemaGenerator) -> Schema {
    Schema::from(super::restricted::pod_template_schema())
}

/// Retention of ready snapshots.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Ready snapshots kept per PVC.
    #[serde(default = "default_max_count")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_count: i32,
    /// Ready snapshots older than this are pruned (Go duration such as 168h), never the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(s|m|h))+$"))]
    pub max_age: Option<String>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_count: default_max_count(),
            max_age: None,
        }
    }
}

/// Whether a deleted profile's snapshots are kept.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SnapshotDeletionPolicy {
    /// Keep the snapshots.
    #[default]
    Retain,
    /// Delete the snapshots Rampart made.
    Delete,
}

/// An exemption of one namespace from one control.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Exception {
    /// The exempted namespace.
    pub namespace: NamespaceName,
    /// The control it is exempted from.
    pub control: ControlName,
    /// Why; shown in the status.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// When the exemption stops applying (RFC 3339). An expired exception is flagged in the
    /// status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$')").message("expires: must be an RFC 3339 timestamp such as 2026-12-31T00:00:00Z"))]
    pub expires: Option<String>,
}

/// A control a profile can enable.
#[derive(
    JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum ControlName {
    NetworkPolicies,
    PodDisruptionBudgets,
    SecretRotation,
    Backups,
}

impl ControlName {
    pub const ALL: [ControlName; 4] = [
        ControlName::NetworkPolicies,
        ControlName::PodDisruptionBudgets,
        ControlName::SecretRotation,
        ControlName::Backups,
    ];

    /// The value of the `rampart.dev/control` label on objects this control creates.
    pub fn label(self) -> &'static str {
        match self {
            ControlName::NetworkPolicies => "networkpolicy",
            ControlName::PodDisruptionBudgets => "pdb",
            ControlName::SecretRotation => "rotation",
            ControlName::Backups => "snapshot",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ControlName::NetworkPolicies => "NetworkPolicies",
            ControlName::PodDisruptionBudgets => "PodDisruptionBudgets",
            ControlName::SecretRotation => "SecretRotation",
            ControlName::Backups => "Backups",
        }
    }
}

impl HardeningProfileSpec {
    /// Whether the profile enables a control.
    pub fn enables(&self, control: ControlName) -> bool {
        match control {
            ControlName::NetworkPolicies => self.network_policies.is_some(),
            ControlName::PodDisruptionBudgets => self.pod_disruption_budgets.is_some(),
            ControlName::SecretRotation => self.secret_rotation.is_some(),
            ControlName::Backups => self.backups.is_some(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_dns_namespace() -> NamespaceName {
    NamespaceName("kube-system".into())
}
fn default_dns_pod_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())])
}
fn default_min_replicas() -> i32 {
    2
}
fn default_max_unavailable() -> MaxUnavailable {
    MaxUnavailable::Count(1)
}
fn default_max_concurrent_restarts() -> i32 {
    5
}
fn default_rollout_timeout_seconds() -> i32 {
    600
}
fn default_secret_length() -> i32 {
    32
}
fn default_starting_deadline_seconds() -> i64 {
    3600
}
fn default_verify_timeout_seconds() -> i64 {
    600
}
fn default_verify_max_concurrent() -> i32 {
    2
}
fn default_hook_volume_name() -> String {
    "rotated-secret".to_string()
}
fn default_hook_timeout_seconds() -> i64 {
    300
}
fn default_verify_volume_name() -> String {
    "restored".to_string()
}
fn default_max_count() -> i32 {
    7
}

impl JsonSchema for MaxUnavailable {
    fn schema_name() -> Cow<'static, str> {
        "MaxUnavailable".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "Pods of a workload that may be down at once: an integer of at least 1 or a percentage from 1% to 100%."
        })
    }
}

/// Label maps: bounded in size, values checked by the schema. Bounds also keep the CEL cost
/// estimate of the rules around them within the API server's budget.
fn label_map_schema(schema: &mut Schema) {
    schema.insert("maxProperties".into(), 64.into());
    schema.insert(
        "additionalProperties".into(),
        serde_json::json!({"type": "string", "maxLength": 63, "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile that does not say how to act only reports: the first apply shows the drift,
    /// and writing starts when someone sets `mode: Enforce`.
    #[test]
    fn profile_without_mode_starts_in_audit() {
        let spec: HardeningProfileSpec = serde_json::from_value(serde_json::json!({
            "namespaces": ["countly"],
            "networkPolicies": {"defaultDeny": {"ingress": true, "egress": true}}
        }))
        .expect("a minimal spec parses");
        assert_eq!(spec.mode, Mode::Audit);
    }

    /// The API server fills the default from the schema, so it must say Audit too.
    #[test]
    fn schema_default_mode_is_audit() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(HardeningProfile::crd()).expect("the CRD serializes");
        let mode = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["mode"]["default"];
        assert_eq!(mode, "Audit");
    }
}
