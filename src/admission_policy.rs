//! The ValidatingAdmissionPolicy that holds Rampart's own ServiceAccount to what Rampart does,
//! built from the same names the controls write with (labels, annotations, the scratch
//! namespace prefix). Pure: calls nothing. `rampart admission-policy` prints it; `make crds`
//! writes it to `config/admission/` and to the chart, and `tests/admission_policy_fresh.rs` fails when
//! either copy is stale.
//!
//! RBAC says which verbs the account has on which kinds; it cannot say *which* objects. A
//! stolen token (or a bug) with RBAC alone could create a privileged Job in any namespace,
//! change a Deployment's image, or delete any PVC. The policy narrows every write to the
//! shape of Rampart's own writes:
//!
//! - deletes only of objects carrying `app.kubernetes.io/managed-by: rampart`;
//! - creates only of objects carrying that label;
//! - PVCs, pods and the quota only in `rampart-verify-*` namespaces, namespaces only named so,
//!   VolumeSnapshotContents only bound to a snapshot in one;
//! - Jobs only with Rampart's labels and a pod spec the restricted rules of
//!   [`crate::api::restricted`] allow (the reader pod too);
//! - on Deployments, StatefulSets and DaemonSets only pod-template annotations under
//!   `rampart.dev/` may change;
//! - a Secret's values change only when it already carried a rotation id, and every write
//!   leaves it carrying one, its labels untouched;
//! - a volume's spec changes only in its reclaim policy, and only for a scratch claim's volume;
//! - NetworkPolicies and PodDisruptionBudgets are changed only when they carry the label.
//!
//! It matches only requests whose user is Rampart's ServiceAccount (a `matchCondition`), so no
//! other user pays more than that one comparison.
//!
//! The "everything else unchanged" rules list the fields of each spec from the Kubernetes
//! types' own schema (k8s-openapi), so a field is never forgotten by hand; a field added in a
//! later Kubernetes version than k8s-openapi knows is not compared until k8s-openapi is
//! upgraded and `make crds` is run again.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::api::{CONTROL_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ROTATION_ID_ANNOTATION};
use crate::controls::verify::SCRATCH_NAMESPACE_PREFIX;

/// Where the operator runs and as whom: the policy matches requests from this account only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
}

impl Default for Identity {
    /// What `config/` installs.
    fn default() -> Self {
        Self {
            namespace: "rampart-system".into(),
            service_account: "rampart".into(),
        }
    }
}

impl Identity {
    /// The user name the API server gives a request authenticated by the account's token.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// The name of the policy and of its binding in `config/` (the chart uses its fullname).
pub const POLICY_NAME: &str = "rampart";

/// Prefix of the pod-template annotations Rampart may write on a workload (the rotation stamp
/// and restart time).
pub const ANNOTATION_PREFIX: &str = "rampart.dev/";

/// One validation: a CEL expression that must hold, and what a refused request is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    pub expression: String,
    pub message: String,
    /// CEL that makes the message of a refusal, where one validation holds several rules
    /// and the message should name the one broken.
    pub message_expression: Option<String>,
}

/// The restricted pod rules as CEL over the pod spec at `path`, from the one table of them
/// ([`crate::api::restricted::pod_spec_cel_rules`], which also makes the CRD's rules on a check
/// Job's template and the controller's check); the policy applies them to check Jobs'
/// templates and to the reader pod.
///
/// The table lets an unset field pass because Rampart fills it when it builds the pod; what it
/// fills is required here as well ([`crate::api::restricted::filled_pod_spec_cel_rules`]), so a
/// Job that leaves, say, `allowPrivilegeEscalation` unset was not built by Rampart and is
/// refused even though the table alone would let it through.
fn pod_spec_rules(path: &str) -> Vec<Validation> {
    crate::api::restricted::pod_spec_cel_rules(path)
        .into_iter()
        .chain(crate::api::restricted::filled_pod_spec_cel_rules(path))
        .map(|r| Validation {
            expression: allow_the_hooked_secret(&allow_the_restored_claim(&r.rule)),
            message: r.message,
            message_expression: None,
        })
        .collect()
}

/// What the rules refuse in a volume: a PVC among them. They judge the template a user
/// writes; the Job (or reader pod) Rampart builds from it has one volume more, the restored
/// scratch PVC, mounted read-only, in the scratch namespace. Admission sees the built object,
/// so there, and only there, a PVC volume passes: read-only, in a `rampart-verify-*`
/// namespace.
const REFUSED_CLAIM: &str = "!has(i0.persistentVolumeClaim)";

fn allow_the_restored_claim(rule: &str) -> String {
    rule.replace(
        REFUSED_CLAIM,
        &format!(
            "({REFUSED_CLAIM} || (i0.persistentVolumeClaim.?readOnly.orValue(false) && request.namespace.startsWith({})))",
            lit(SCRATCH_NAMESPACE_PREFIX)
        ),
    )
}

/// What the rules refuse in a volume: a Secret among them. A rotation hook's Job has one volume
/// more than its template, the rotated Secret, which it must read (new values and previous).
/// Admission sees the built Job, so there, and only there, a Secret volume passes: in a Job
/// labelled as a hook, naming the very Secret its annotation says it runs for, outside scratch
/// namespaces. A stolen token can then mount a Secret only into a restricted, token-less Job in
/// that Secret's own namespace, and could read it with its `get` on Secrets anyway.
const REFUSED_SECRET: &str = "!has(i0.secret)";

fn allow_the_hooked_secret(rule: &str) -> String {
    use crate::controls::rotation::hooks::{BEFORE_RESTART, HOOK_LABEL, HOOK_SECRET_ANNOTATION};
    rule.replace(
        REFUSED_SECRET,
        &format!(
            "({REFUSED_SECRET} || (variables.resource == 'batch/jobs' && \
             object.metadata.?labels[?{label}].orValue('') == {hook} && \
             i0.secret.?secretName.orValue('') != '' && \
             i0.secret.?secretName.orValue('') == object.metadata.?annotations[?{secret}].orValue('') && \
             !request.namespace.startsWith({scratch})))",
            label = lit(HOOK_LABEL),
            hook = lit(BEFORE_RESTART),
            secret = lit(HOOK_SECRET_ANNOTATION),
            scratch = lit(SCRATCH_NAMESPACE_PREFIX),
        ),
    )
}

/// A string literal in CEL (single-quoted; our names hold no quote or backslash, but escape
/// them anyway so a future name cannot break the expression).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The names of the properties the Kubernetes schema gives type `T`.
fn fields_of<T: schemars::JsonSchema>() -> BTreeSet<String> {
    let schema = schemars::schema_for!(T);
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// `new.?f == old.?f` for every field of `T` but `except`: present in both and equal, or
/// absent from both.
fn unchanged_except<T: schemars::JsonSchema>(new: &str, old: &str, except: &[&str]) -> String {
    fields_of::<T>()
        .iter()
        .filter(|f| !except.contains(&f.as_str()))
        .map(|f| format!("{new}.?{f} == {old}.?{f}"))
        .collect::<Vec<_>>()
        .join(" && ")
}

/// The one change Rampart makes to a workload: pod-template annotations under
/// [`ANNOTATION_PREFIX`]. Everything else in the spec, the template's spec and metadata, and
/// the workload's own labels and annotations (but the one the API server bumps) must be as
/// they were.
fn workload_unchanged<T: schemars::JsonSchema>() -> String {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let prefix = lit(ANNOTATION_PREFIX);
    let spec = unchanged_except::<T>("object.spec", "oldObject.spec", &["template"]);
    let template_meta = unchanged_except::<ObjectMeta>(
        "object.spec.template.metadata",
        "oldObject.spec.template.metadata",
        &["annotations"],
    );
    let template_annotations = same_annotations(
        "variables.newTemplateAnnotations",
        "variables.oldTemplateAnnotations",
        &format!("k.startsWith({prefix})"),
    );
    // The API server itself bumps this one on a DaemonSet whose template changed (after
    // Rampart's patch, before admission), so it differs in every restart.
    let annotations = same_annotations(
        "variables.newAnnotations",
        "variables.oldAnnotations",
        &format!("k == {}", lit(DAEMONSET_GENERATION_ANNOTATION)),
    );
    format!(
        "{spec} && object.spec.template.?spec == oldObject.spec.template.?spec && {template_meta} && {template_annotations} && \
         object.metadata.?labels == oldObject.metadata.?labels && {annotations}"
    )
}

/// Annotations the API server sets on a DaemonSet when its template changes.
const DAEMONSET_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// The maps `new` and `old` hold the same keys with the same values, leaving out keys for
/// which `skip` (CEL over `k`) holds.
fn same_annotations(new: &str, old: &str, skip: &str) -> String {
    format!(
        "{new}.all(k, {skip} || (k in {old} && {old}[k] == {new}[k])) && \
         {old}.all(k, {skip} || (k in {new} && {new}[k] == {old}[k]))"
    )
}

/// Every validation of the policy, in the order the API server evaluates them.
pub fn validations() -> Vec<Validation> {
    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DeploymentSpec, StatefulSetSpec};
    use k8s_openapi::api::core::v1::PersistentVolumeSpec;
    let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    let scratch = lit(SCRATCH_NAMESPACE_PREFIX);
    let mut out = vec![
        Validation {
            expression: "request.operation != 'DELETE' || variables.managedByRampart".into(),
            message: format!("Rampart's account deletes only objects labelled {managed}"),
            message_expression: None,
        },
        Validation {
            expression: "request.operation != 'CREATE' || variables.managedByRampart".into(),
            message: format!("Rampart's account creates only objects labelled {managed}"),
            message_expression: None,
        },
        Validation {
            expression: format!(
                "!(variables.resource in ['/persistentvolumeclaims', '/pods', '/resourcequotas']) || \
                 request.namespace.startsWith({scratch})"
            ),
            message: format!(
                "Rampart's account writes PVCs, pods and quotas only in {SCRATCH_NAMESPACE_PREFIX}* namespaces"
            ),
            message_expression: None,
        },
        Validation {
            expression: format!(
                "variables.resource != '/namespaces' || variables.subject.metadata.name.startsWith({scratch})"
            ),
            message: format!(
                "Rampart's account creates and deletes only namespaces named {SCRATCH_NAMESPACE_PREFIX}*"
            ),
            message_expression: None,
        },
        Validation {
            expression: format!(
                "variables.resource != 'snapshot.storage.k8s.io/volumesnapshotcontents' || \
                 variables.subject.spec.?volumeSnapshotRef.?namespace.orValue('').startsWith({scratch})"
            ),
            message: format!(
                "Rampart's account writes only VolumeSnapshotContents bound to a snapshot in a {SCRATCH_NAMESPACE_PREFIX}* namespace"
            ),
            message_expression: None,
        },
        Validation {
            expression: format!(
                "variables.resource != 'batch/jobs' || request.operation == 'DELETE' || \
                 (variables.managedByRampart && object.metadata.?labels[?{control}].hasValue())",
                control = lit(CONTROL_LABEL)
            ),
            message: format!(
                "Rampart's account creates only Jobs labelled {managed} and {CONTROL_LABEL}"
            ),
            message_expression: None,
        },
        Validation {
            expression: format!(
                "variables.resource != 'apps/deployments' || request.operation != 'UPDATE' || ({})",
                workload_unchanged::<DeploymentSpec>()
            ),
            message: format!(
                "Rampart's account changes only pod-template annotations under {ANNOTATION_PREFIX} on a Deployment"
            ),
            message_expression: None,
        },
        Validation {
            expression: format!(
                "variables.resource != 'apps/statefulsets' || request.operation != 'UPDATE' || ({})",
                workload_unchanged::<StatefulSetSpec>()
            ),
            message: format!(
                "Rampart's account changes only pod-template annotations under {ANNOTATION_PREFIX} on a StatefulSet"
            ),
            message_expression: None,
        },
        Validation {
            expression: format!(
                "variables.resource != 'apps/daemonsets' || request.operation != 'UPDATE' || ({})",
                workload_unchanged::<DaemonSetSpec>()
            ),
            message: format!(
                "Rampart's account changes only pod-template annotations under {ANNOTATION_PREFIX} on a DaemonSet"
            ),
            message_expression: None,
        },
        Validation {
            expression: format!(
                "variables.resource != '/secrets' || request.operation != 'UPDATE' || \
                 (object.metadata.?annotations[?{id}].hasValue() && \
                  (oldObject.metadata.?annotations[?{id}].hasValue() || object.?data == oldObject.?data) && \
                  object.metadata.?labels == oldObject.metadata.?labels)",
                id = lit(ROTATION_ID_ANNOTATION)
            ),
            message: format!(
                "Rampart's account changes a Secret's values only when it already carries {ROTATION_ID_ANNOTATION}, \
                 leaves it carrying one and never changes its labels"
            ),
            message_expression: None,
        },
        Validation {
            expression: format!(
                "variables.resource != '/persistentvolumes' || request.operation != 'UPDATE' || \
                 (object.spec.?claimRef.?namespace.orValue('').startsWith({scratch}) && {})",
                unchanged_except::<PersistentVolumeSpec>(
                    "object.spec",
                    "oldObject.spec",
                    &["persistentVolumeReclaimPolicy"]
                )
            ),
            message: format!(
                "Rampart's account changes only the reclaim policy of a volume bound to a claim in a {SCRATCH_NAMESPACE_PREFIX}* namespace"
            ),
            message_expression: None,
        },
        Validation {
            expression: "!(variables.resource in ['networking.k8s.io/networkpolicies', 'policy/poddisruptionbudgets']) || \
                 request.operation != 'UPDATE' || variables.oldManagedByRampart"
                .into(),
            message: format!(
                "Rampart's account changes only NetworkPolicies and PodDisruptionBudgets labelled {managed}"
            ),
            message_expression: None,
        },
    ];
    // Check Jobs' pod templates, and the reader pod, meet the restricted rules: the same
    // rules, once, over two paths.
    out.push(restricted_validation(
        "batch/jobs",
        "object.spec.template.spec",
        "a Job's pod template",
    ));
    out.push(restricted_validation("/pods", "object.spec", "a pod"));
    out
}

/// All the restricted rules over the pod spec at `path` of `resource`'s creates and updates, as
/// one validation: the API server runs each validation as a program of its own for every
/// request the policy matches, so seventy rules as seventy validations would cost every
/// delete and patch Rampart makes seventy evaluations (measured in BENCHMARKS.md). The message
/// still names the first rule broken (`messageExpression` runs only on a refusal).
fn restricted_validation(resource: &str, path: &str, what: &str) -> Validation {
    let rules = pod_spec_rules(path);
    let all = rules
        .iter()
        .map(|r| format!("({})", r.expression))
        .collect::<Vec<_>>()
        .join(" && ");
    let first_broken = rules.iter().rev().fold(
        lit(&format!("{what} breaks the restricted rules")),
        |otherwise, r| {
            format!(
                "!({}) ? {} : {otherwise}",
                r.expression,
                lit(&format!("{what}: {}", r.message))
            )
        },
    );
    Validation {
        expression: format!(
            "variables.resource != {} || request.operation == 'DELETE' || ({all})",
            lit(resource)
        ),
        message: format!("{what} breaks the restricted rules"),
        message_expression: Some(first_broken),
    }
}

/// The named expressions the validations share; the API server evaluates each lazily, so a
/// request that needs none of the template's annotations never reads them.
fn variables() -> Value {
    let managed = |obj: &str| {
        format!(
            "{obj}.metadata.?labels[?{}].orValue('') == {}",
            lit(MANAGED_BY_LABEL),
            lit(MANAGED_BY_VALUE)
        )
    };
    json!([
        {"name": "resource", "expression": "request.resource.group + '/' + request.resource.resource"},
        // The object a request is about: the one being deleted, else the one being written.
        {"name": "subject", "expression": "request.operation == 'DELETE' ? oldObject : object"},
        {"name": "managedByRampart", "expression": managed("variables.subject")},
        {"name": "oldManagedByRampart", "expression": managed("oldObject")},
        {"name": "newTemplateAnnotations", "expression": "object.spec.template.?metadata.?annotations.orValue({})"},
        {"name": "oldTemplateAnnotations", "expression": "oldObject.spec.template.?metadata.?annotations.orValue({})"},
        {"name": "newAnnotations", "expression": "object.metadata.?annotations.orValue({})"},
        {"name": "oldAnnotations", "expression": "oldObject.metadata.?annotations.orValue({})"},
    ])
}

/// What the policy is asked about: every write Rampart's RBAC allows on these kinds, and every
/// delete of anything.
fn resource_rules() -> Value {
    let ops = json!(["CREATE", "UPDATE", "DELETE"]);
    json!([
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ops,
         "resources": ["namespaces", "persistentvolumeclaims", "pods", "resourcequotas", "secrets", "persistentvolumes"]},
        {"apiGroups": ["batch"], "apiVersions": ["*"], "operations": ops, "resources": ["jobs"]},
        {"apiGroups": ["apps"], "apiVersions": ["*"], "operations": ops,
         "resources": ["deployments", "statefulsets", "daemonsets"]},
        {"apiGroups": ["snapshot.storage.k8s.io"], "apiVersions": ["*"], "operations": ops,
         "resources": ["volumesnapshots", "volumesnapshotcontents"]},
        {"apiGroups": ["networking.k8s.io"], "apiVersions": ["*"], "operations": ops, "resources": ["networkpolicies"]},
        {"apiGroups": ["policy"], "apiVersions": ["*"], "operations": ops, "resources": ["poddisruptionbudgets"]},
        {"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["DELETE"], "resources": ["*"]},
    ])
}

/// The policy (first) and its binding, as Kubernetes objects.
pub fn admission_policy(identity: &Identity) -> [Value; 2] {
    let validations: Vec<Value> = validations()
        .into_iter()
        .map(|v| {
            let mut out =
                json!({"expression": v.expression, "message": v.message, "reason": "Forbidden"});
            if let Some(m) = v.message_expression {
                out["messageExpression"] = json!(m);
            }
            out
        })
        .collect();
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            // A request the policy cannot judge (an error, a cost overrun) is refused: the
            // policy is there for the day the account is misused.
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": resource_rules()},
            "matchConditions": [{
                "name": "rampart-service-account",
                "expression": format!("request.userInfo.username == {}", lit(&identity.username())),
            }],
            "variables": variables(),
            "validations": validations,
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME},
        "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
    });
    [policy, binding]
}

/// The policy and its binding as one YAML stream, what `config/admission/` holds.
pub fn admission_policy_yaml(identity: &Identity) -> Result<String, serde_yaml::Error> {
    let [policy, binding] = admission_policy(identity);
    Ok(format!(
        "{}---\n{}",
        serde_yaml::to_string(&policy)?,
        serde_yaml::to_string(&binding)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_named_account() {
        let [policy, _] = admission_policy(&Identity {
            namespace: "ops".into(),
            service_account: "guard".into(),
        });
        assert_eq!(
            policy["spec"]["matchConditions"][0]["expression"],
            "request.userInfo.username == 'system:serviceaccount:ops:guard'"
        );
    }

    #[test]
    fn refuses_what_it_cannot_judge() {
        let [policy, binding] = admission_policy(&Identity::default());
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    }

    #[test]
    fn spec_fields_come_from_the_kubernetes_schema() {
        use k8s_openapi::api::apps::v1::DeploymentSpec;
        let fields = fields_of::<DeploymentSpec>();
        for f in ["replicas", "selector", "template", "strategy", "paused"] {
            assert!(fields.contains(f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn workload_rule_compares_every_spec_field_but_the_template() {
        use k8s_openapi::api::apps::v1::StatefulSetSpec;
        let rule = workload_unchanged::<StatefulSetSpec>();
        for f in fields_of::<StatefulSetSpec>() {
            let compared = rule.contains(&format!("object.spec.?{f} == oldObject.spec.?{f}"));
            assert_eq!(compared, f != "template", "{f}");
        }
        assert!(rule.contains("object.spec.template.?spec == oldObject.spec.template.?spec"));
        assert!(!rule.contains("metadata.?annotations == oldObject.spec.template"));
    }

    #[test]
    fn job_templates_and_the_reader_pod_are_held_to_the_restricted_rules() {
        let all = validations();
        let jobs = crate::api::restricted::pod_spec_cel_rules("object.spec.template.spec");
        let pods = crate::api::restricted::pod_spec_cel_rules("object.spec");
        assert!(!jobs.is_empty());
        // Each rule of the one table is in the policy, for Jobs' templates and for pods,
        // exactly as the table makes it (but the restored claim's and the hooked Secret's
        // allowances).
        for (rules, guard) in [
            (jobs, "variables.resource != 'batch/jobs'"),
            (pods, "variables.resource != '/pods'"),
        ] {
            for r in rules {
                let expected = allow_the_hooked_secret(&allow_the_restored_claim(&r.rule));
                assert!(
                    all.iter().any(
                        |v| v.expression.starts_with(guard) && v.expression.contains(&expected)
                    ),
                    "{guard}: {}",
                    r.message
                );
            }
        }
    }

    #[test]
    fn what_rampart_fills_is_required_of_jobs_and_pods_its_account_creates() {
        let all = validations();
        for (path, guard) in [
            (
                "object.spec.template.spec",
                "variables.resource != 'batch/jobs'",
            ),
            ("object.spec", "variables.resource != '/pods'"),
        ] {
            let filled = crate::api::restricted::filled_pod_spec_cel_rules(path);
            assert_eq!(filled.len(), 5);
            for r in filled {
                assert!(
                    all.iter()
                        .any(|v| v.expression.starts_with(guard) && v.expression.contains(&r.rule)),
                    "{guard}: {}",
                    r.message
                );
            }
        }
    }

    /// The restricted rules refuse PVC volumes in the template a user writes; the policy sees
    /// the object Rampart built, with the restored PVC added. If the rules stop naming the
    /// PVC the way [`allow_the_restored_claim`] expects, this fails rather than the policy
    /// silently refusing every check Job.
    #[test]
    fn the_restored_claim_is_allowed_read_only_in_scratch_namespaces_only() {
        for path in ["object.spec.template.spec", "object.spec"] {
            let raw = crate::api::restricted::pod_spec_cel_rules(path);
            let naming: Vec<_> = raw
                .iter()
                .filter(|r| r.rule.contains(REFUSED_CLAIM))
                .collect();
            assert_eq!(naming.len(), 1, "{path}: one rule refuses PVC volumes");
            let adapted = allow_the_restored_claim(&naming[0].rule);
            assert!(adapted.contains("i0.persistentVolumeClaim.?readOnly.orValue(false) && request.namespace.startsWith('rampart-verify-')"));
        }
    }

    /// The restricted rules refuse Secret volumes in the template a user writes; a hook Job
    /// adds one, the rotated Secret. The policy lets exactly that one pass: in a hook Job, named
    /// by the Job's own annotation, outside scratch namespaces.
    #[test]
    fn the_hooked_secret_is_allowed_only_in_a_hook_job_naming_it() {
        let raw = crate::api::restricted::pod_spec_cel_rules("object.spec.template.spec");
        let naming: Vec<_> = raw
            .iter()
            .filter(|r| r.rule.contains(REFUSED_SECRET))
            .collect();
        assert_eq!(naming.len(), 1, "one rule refuses Secret volumes");
        let adapted = allow_the_hooked_secret(&naming[0].rule);
        for part in [
            "variables.resource == 'batch/jobs'",
            "object.metadata.?labels[?'rampart.dev/rotation-hook'].orValue('') == 'before-restart'",
            "i0.secret.?secretName.orValue('') == object.metadata.?annotations[?'rampart.dev/hook-secret'].orValue('')",
            "!request.namespace.startsWith('rampart-verify-')",
        ] {
            assert!(adapted.contains(part), "{part} in {adapted}");
        }
    }

    #[test]
    fn yaml_holds_the_policy_then_its_binding() {
        let text = admission_policy_yaml(&Identity::default()).expect("serializes");
        let docs: Vec<&str> = text.split("\n---\n").collect();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].contains("kind: ValidatingAdmissionPolicy\n"));
        assert!(docs[1].contains("kind: ValidatingAdmissionPolicyBinding\n"));
    }
}
