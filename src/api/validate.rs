//! Spec checks the schema cannot make, run by the controller before it acts. Pure: time is an
//! argument. A failure becomes an `InvalidSpec` condition naming the field, and the profile
//! waits for a change.

use chrono::{DateTime, Utc};

use super::{HardeningProfileSpec, LabelSelector, SelectorOperator};
use crate::schedule::{parse_duration, Schedule};

/// One field that is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for InvalidField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field: field.into(),
        message: message.into(),
    }
}

/// A Job template Rampart runs (restore verification's check, a rotation hook) must read as a
/// pod template with a container, must keep to the restricted rules (the CRD's CEL refuses the
/// same, this catches what CEL cannot see and profiles stored before the rules), and must not
/// already use the name Rampart adds its volume under. `at` is the field holding the template
/// and its volume name (`spec.backups.verify.job`); `added` says what that volume is.
fn check_job_template(
    template_value: &serde_json::Value,
    volume_name: &str,
    at: &str,
    added: &str,
    out: &mut Vec<InvalidField>,
) {
    let field = format!("{at}.template");
    let template: k8s_openapi::api::core::v1::PodTemplateSpec =
        match serde_json::from_value(template_value.clone()) {
            Ok(t) => t,
            Err(e) => {
                out.push(invalid(&field, format!("not a pod template: {e}")));
                return;
            }
        };
    if let Err(violations) = super::restricted::check_pod_template(template_value, &field) {
        out.extend(violations.into_iter().map(|v| invalid(v.field, v.message)));
    }
    let Some(pod) = template.spec else {
        out.push(invalid(&field, "spec: a pod template needs a spec"));
        return;
    };
    if pod.containers.is_empty() {
        out.push(invalid(&field, "spec.containers: at least one container"));
    }
    if pod.volumes.iter().flatten().any(|v| v.name == volume_name) {
        out.push(invalid(
            format!("{at}.volumeName"),
            format!(
                "the template already has a volume named {volume_name:?}; {added} is added under this name"
            ),
        ));
    }
    if pod.restart_policy.as_deref() == Some("Always") {
        out.push(invalid(
            &field,
            "spec.restartPolicy: a Job's pods restart Never or OnFailure",
        ));
    }
}

/// What the operator allows beyond the schema, set by its flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Accept schedules that fire more than once a minute. Off by default: a snapshot or a
    /// restore every few seconds is a load no real estate needs. The e2e suites turn it on to
    /// see several slots in seconds.
    pub sub_minute_schedules: bool,
}

/// Every problem the controller can find in a spec under the default limits; empty when the
/// spec is usable.
pub fn invalid_fields(spec: &HardeningProfileSpec) -> Vec<InvalidField> {
    invalid_fields_within(spec, Limits::default())
}

/// The profile's name must fit where Rampart puts it: a label value (at most 63 characters)
/// and a namespace name (no dots). The CRD refuses such names; this catches profiles stored
/// before it did.
pub fn invalid_profile_name(name: &str) -> Option<InvalidField> {
    (name.len() > 63 || name.contains('.')).then(|| {
        invalid(
            "metadata.name",
            format!("{name:?}: at most 63 characters and no dots, since it becomes a label value and part of a namespace name"),
        )
    })
}

/// Every problem the controller can find in a spec under `limits`.
pub fn invalid_fields_within(spec: &HardeningProfileSpec, limits: Limits) -> Vec<InvalidField> {
    let mut out = Vec::new();
    if let Some(sel) = &spec.namespace_selector {
        check_selector("spec.namespaceSelector", sel, &mut out);
    }
    for (i, e) in spec.exceptions.iter().enumerate() {
        if let Some(exp) = &e.expires {
            if DateTime::parse_from_rfc3339(exp).is_err() {
                out.push(invalid(
                    format!("spec.exceptions[{i}].expires"),
                    format!("{exp:?} is not an RFC 3339 timestamp"),
                ));
            }
        }
        if !spec.enables(e.control) {
            out.push(invalid(
                format!("spec.exceptions[{i}].control"),
                format!("{} is not enabled in this profile", e.control.as_str()),
            ));
        }
    }
    if let Some(rot) = &spec.secret_rotation {
        check_selector("spec.secretRotation.selector", &rot.selector, &mut out);
        check_selects_something(
            "spec.secretRotation.selector",
            &rot.selector,
            "Secret",
            &mut out,
        );
        if let Some(hook) = rot.hooks.as_ref().and_then(|h| h.before_restart.as_ref()) {
            check_job_template(
                &hook.template,
                &hook.volume_name,
                "spec.secretRotation.hooks.beforeRestart",
                "the rotated Secret",
                &mut out,
            );
            if !rot.keep_previous {
                out.push(invalid(
                    "spec.secretRotation.keepPrevious",
                    "hooks.beforeRestart needs keepPrevious: true, so the hook can read the value the service still holds",
                ));
            }
        }
    }
    if let Some(b) = &spec.backups {
        check_selector("spec.backups.pvcSelector", &b.pvc_selector, &mut out);
        check_selects_something("spec.backups.pvcSelector", &b.pvc_selector, "PVC", &mut out);
        if let Err(e) = Schedule::parse(&b.schedule, b.time_zone.as_deref()) {
            out.push(invalid(e.field(), e.to_string()));
        }
        check_frequency("spec.backups.schedule", &b.schedule, limits, &mut out);
        if let Some(v) = &b.verify {
            check_frequency(
                "spec.backups.verify.schedule",
                &v.schedule,
                limits,
                &mut out,
            );
        }
        if let Some(v) = &b.verify {
            // A bad time zone is reported once, for spec.backups.timeZone, above.
            if let Err(e @ crate::schedule::ScheduleError::Cron { .. }) =
                Schedule::parse(&v.schedule, b.time_zone.as_deref())
            {
                out.push(invalid("spec.backups.verify.schedule", e.to_string()));
            }
            if let Some(job) = &v.job {
                check_job_template(
                    &job.template,
                    &job.volume_name,
                    "spec.backups.verify.job",
                    "the restored PVC",
                    &mut out,
                );
            }
        }
        if let Some(age) = &b.retention.max_age {
            if parse_duration(age).is_none() {
                out.push(invalid(
                    "spec.backups.retention.maxAge",
                    format!("{age:?} is not a duration such as 168h"),
                ));
            }
        }
    }
    out
}

/// An empty selector selects everything: every `what` of every selected namespace.
fn check_selects_something(
    field: &str,
    sel: &LabelSelector,
    what: &str,
    out: &mut Vec<InvalidField>,
) {
    if sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
        out.push(invalid(
            field,
            format!("set matchLabels or matchExpressions; an empty selector would select every {what} of every selected namespace"),
        ));
    }
}

fn check_frequency(field: &str, schedule: &str, limits: Limits, out: &mut Vec<InvalidField>) {
    if !limits.sub_minute_schedules && crate::schedule::fires_more_than_once_a_minute(schedule) {
        out.push(invalid(
            field,
            format!("{schedule:?} fires more than once a minute; a seconds field must be a single second"),
        ));
    }
}

fn check_selector(field: &str, sel: &LabelSelector, out: &mut Vec<InvalidField>) {
    for key in sel.match_labels.keys() {
        if !valid_label_key(key) {
            out.push(invalid(
                format!("{field}.matchLabels"),
                format!("{key:?} is not a valid label key"),
            ));
        }
    }
    for (i, req) in sel.match_expressions.iter().enumerate() {
        let wants_values = matches!(req.operator, SelectorOperator::In | SelectorOperator::NotIn);
        if wants_values == req.values.is_empty() {
            out.push(invalid(
                format!("{field}.matchExpressions[{i}].values"),
                "must be non-empty for In and NotIn and empty for Exists and DoesNotExist",
            ));
        }
    }
}

/// Whether an exception has expired at `now`. An unparseable expiry counts as expired: an
/// exemption nobody can read should not keep a control off.
pub fn exception_expired(expires: Option<&str>, now: DateTime<Utc>) -> bool {
    match expires {
        None => false,
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc) <= now)
            .unwrap_or(true),
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
pub fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    name_ok && prefix_ok
}

#[cfg(test)]
mod tests {
    use super::{invalid_fields, valid_label_key, LabelSelector};
    use serde_json::json;

    /// A budgets-only spec with backups verified on `schedule`, with `job` when given.
    fn with_verify(
        schedule: &str,
        job: Option<crate::api::VerifyJob>,
    ) -> crate::api::HardeningProfileSpec {
        let mut spec = crate::api::fixtures::budgets_only(crate::api::Mode::Enforce);
        spec.backups = Some(crate::api::BackupControl {
            schedule: "0 2 * * *".into(),
            time_zone: None,
            pvc_selector: LabelSelector {
                match_labels: [("backup".to_string(), "true".to_string())].into(),
                match_expressions: vec![],
            },
            volume_snapshot_class_name: "csi".into(),
            retention: Default::default(),
            suspend: false,
            starting_deadline_seconds: 60,
            snapshot_on_create: false,
            deletion_policy: Default::default(),
            verify: Some(crate::api::VerifyControl {
                schedule: schedule.into(),
                storage_class_name: None,
                timeout_seconds: 600,
                job,
                max_concurrent: 2,
            }),
        });
        spec
    }

    #[test]
    fn a_bad_verify_schedule_names_its_field() {
        let spec = with_verify("every tuesday", None);
        let fields: Vec<String> = invalid_fields(&spec).into_iter().map(|f| f.field).collect();
        assert_eq!(fields, vec!["spec.backups.verify.schedule".to_string()]);
    }

    fn with_job(template: serde_json::Value, volume: &str) -> crate::api::HardeningProfileSpec {
        with_verify(
            "0 3 * * *",
            Some(crate::api::VerifyJob {
                template,
                volume_name: volume.into(),
            }),
        )
    }

    fn messages(spec: &crate::api::HardeningProfileSpec) -> Vec<String> {
        invalid_fields(spec).iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_usable_verify_job_template_passes() {
        let template = serde_json::json!({"spec": {"containers": [
            {"name": "check", "image": "busybox", "volumeMounts": [{"name": "restored", "mountPath": "/data"}]}
        ]}});
        assert!(messages(&with_job(template, "restored")).is_empty());
    }

    #[test]
    fn a_bad_verify_job_template_names_its_field() {
        let cases = [
            (
                serde_json::json!({"spec": {"containers": "busybox"}}),
                "restored",
                "spec.backups.verify.job.template: not a pod template",
            ),
            (
                serde_json::json!({"metadata": {"labels": {"a": "b"}}}),
                "restored",
                "spec.backups.verify.job.template: spec: a pod template needs a spec",
            ),
            (
                serde_json::json!({"spec": {"containers": []}}),
                "restored",
                "spec.backups.verify.job.template: spec.containers: at least one container",
            ),
            (
                serde_json::json!({"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}),
                "restored",
                "spec.backups.verify.job.template: spec.restartPolicy",
            ),
            (
                serde_json::json!({"spec": {"containers": [{"name": "c", "image": "i"}],
                    "volumes": [{"name": "data", "emptyDir": {}}]}}),
                "data",
                "spec.backups.verify.job.volumeName: the template already has a volume named \"data\"",
            ),
        ];
        for (template, volume, want) in cases {
            let got = messages(&with_job(template.clone(), volume));
            assert_eq!(got.len(), 1, "{template}: {got:?}");
            assert!(
                got[0].starts_with(want),
                "{template}: {got:?} does not start with {want}"
            );
        }
    }

    #[test]
    fn an_escalating_verify_job_template_is_invalid_naming_the_field() {
        let container = |sc| json!([{"name": "c", "image": "i", "securityContext": sc}]);
        for (pod, want) in [
            (
                json!({"containers": container(json!({"privileged": true}))}),
                "containers[0].securityContext.privileged",
            ),
            (
                json!({"containers": container(json!({"runAsUser": 0}))}),
                "containers[0].securityContext.runAsUser",
            ),
            (
                json!({"containers": container(json!({"capabilities": {"add": ["NET_ADMIN"]}}))}),
                "containers[0].securityContext.capabilities.add",
            ),
            (json!({"hostNetwork": true}), "hostNetwork"),
            (json!({"hostPID": true}), "hostPID"),
            (json!({"nodeName": "node-1"}), "nodeName"),
            (
                json!({"serviceAccountName": "operator"}),
                "serviceAccountName",
            ),
            (
                json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
                "volumes[0].hostPath",
            ),
        ] {
            let mut spec = pod;
            if spec.get("containers").is_none() {
                spec["containers"] = json!([{"name": "c", "image": "i"}]);
            }
            let got = invalid_fields(&with_job(json!({"spec": spec}), "restored"));
            let fields: Vec<&str> = got.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(
                fields,
                vec![format!("spec.backups.verify.job.template.spec.{want}")]
            );
            assert!(
                got[0].message.contains("Pod Security Standard")
                    || got[0].message.contains("Rampart"),
                "{}",
                got[0]
            );
        }
    }

    #[test]
    fn an_empty_secret_or_pvc_selector_is_invalid() {
        let mut spec = with_verify("0 3 * * *", None);
        if let Some(b) = spec.backups.as_mut() {
            b.pvc_selector = LabelSelector::default();
        }
        spec.secret_rotation = Some(crate::api::fixtures::rotation("r1", 1));
        let fields: Vec<String> = invalid_fields(&spec).into_iter().map(|f| f.field).collect();
        assert_eq!(
            fields,
            vec![
                "spec.secretRotation.selector".to_string(),
                "spec.backups.pvcSelector".to_string()
            ]
        );
    }

    #[test]
    fn schedules_more_often_than_once_a_minute_are_invalid_unless_allowed() {
        let mut spec = with_verify("*/5 * * * * *", None);
        if let Some(b) = spec.backups.as_mut() {
            b.schedule = "* * * * * *".into();
        }
        let fields: Vec<String> = invalid_fields(&spec).into_iter().map(|f| f.field).collect();
        assert_eq!(
            fields,
            vec![
                "spec.backups.schedule".to_string(),
                "spec.backups.verify.schedule".to_string()
            ]
        );
        let allowed = super::Limits {
            sub_minute_schedules: true,
        };
        assert!(super::invalid_fields_within(&spec, allowed).is_empty());
        let once_a_minute = with_verify("30 * * * * *", None);
        assert!(invalid_fields(&once_a_minute).is_empty());
    }

    #[test]
    fn profile_names_that_cannot_be_labels_or_namespaces_are_invalid() {
        assert_eq!(super::invalid_profile_name(&"p".repeat(63)), None);
        assert_eq!(super::invalid_profile_name("prod"), None);
        for bad in ["prod.eu", &"p".repeat(64)] {
            assert_eq!(
                super::invalid_profile_name(bad).map(|f| f.field),
                Some("metadata.name".to_string()),
                "{bad}"
            );
        }
    }

    #[test]
    fn label_keys() {
        for ok in [
            "tier",
            "app.kubernetes.io/name",
            "rampart.dev/rotate",
            "a_b.c-d",
        ] {
            assert!(valid_label_key(ok), "{ok}");
        }
        for bad in [
            "",
            "bad key!",
            "-x",
            "x-",
            "Upper.Case/name",
            "a/",
            &"x".repeat(64),
        ] {
            assert!(!valid_label_key(bad), "{bad}");
        }
    }
}
