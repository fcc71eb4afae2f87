//! The `beforeRestart` hook: a Job run once per rotated Secret, in its namespace, between the
//! Secret taking its new values and its consumers restarting. Pure: the Job's manifest and
//! name, and what becomes of a Secret given what its hook Job is doing.
//!
//! Exactly once per rotation is kept by the Secret's stamp ([`super::stamp::Mark`]), written in
//! the same guarded writes as the values: `hook-due` with the new values, `hook-started` once
//! the Job exists (the Job is created first, under a name fixed by the profile, the Secret and
//! the id, so a crash between the two finds the Job and only moves the mark), then `Rotated`,
//! `hook-failed` or `hook-lost`. A Job that is missing while the mark says it started is never
//! made again: it ran, or was deleted, and Rampart cannot tell whether it changed the
//! credential.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::SecretInfo;
use crate::api::{ControlName, RotationHook};
use crate::controls::{DesiredObject, ManagedKind, ObjectKey};

/// Label on hook Jobs: which hook they run.
pub const HOOK_LABEL: &str = "rampart.dev/rotation-hook";
/// Annotation on hook Jobs: the Secret they run for (a label value cannot hold every Secret
/// name). The admission policy lets Rampart's account mount this Secret, and only this one.
pub const HOOK_SECRET_ANNOTATION: &str = "rampart.dev/hook-secret";
/// Annotation on hook Jobs: the rotation id they run for.
pub const HOOK_ROTATION_ID_ANNOTATION: &str = "rampart.dev/hook-rotation-id";
/// The hook's name in [`HOOK_LABEL`].
pub const BEFORE_RESTART: &str = "before-restart";
/// A finished hook Job is deleted by the API server a week after it finished: long enough for
/// Rampart to see how it ended (a Job gone before that is reported, never re-run), short enough
/// that a rotation a month leaves no pile of Jobs.
pub const FINISHED_JOB_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// The hook Job's name: fixed by the profile, the Secret and the id, so every pass (and every
/// replica, before or after a crash) names the same Job. Job names end up in a pod label, so at
/// most 63 characters.
pub fn job_name(profile_uid: &str, namespace: &str, secret: &str, rotation_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{profile_uid}/{namespace}/{secret}/{rotation_id}"));
    let readable: String = secret
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(30)
        .collect::<String>()
        .trim_matches('-')
        .to_ascii_lowercase();
    format!("rampart-hook-{readable}-{}", hex::encode(&digest[..5]))
}

/// How a hook Job stands, as observed by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookJobState {
    /// No Job of that name.
    Missing,
    /// Ours, not finished.
    Running,
    /// Ours, with the Complete condition.
    Succeeded,
    /// Ours, with the Failed condition: its reason and message.
    Failed(String),
    /// A Job of that name Rampart did not make.
    NotOurs,
    /// Not read this pass (the read failed): the plan waits.
    Unknown,
}

/// How a hook ended, as the writer records it on the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookEnd {
    /// The consumers may restart.
    Succeeded,
    /// The values the consumers run with are put back, and they are not restarted.
    Failed,
    /// The Job went away unseen: nothing more is done; a person must look.
    Lost,
}

/// What a Secret whose hook has not ended needs next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookStep {
    /// Create the Job (or find it made by an earlier pass) and mark the hook started.
    Start,
    /// The Job runs; consumers wait.
    Wait,
    /// Record how it ended, with why for a failure.
    End(HookEnd, Option<String>),
}

/// The next step for a Secret whose mark is `hook-due` (`started` false) or `hook-started`.
pub fn next_step(started: bool, job: &HookJobState, name: &str) -> HookStep {
    match (started, job) {
        (_, HookJobState::Succeeded) => HookStep::End(HookEnd::Succeeded, None),
        (_, HookJobState::Failed(why)) => HookStep::End(
            HookEnd::Failed,
            Some(format!("hook Job {name} failed: {why}")),
        ),
        (_, HookJobState::NotOurs) => HookStep::End(
            HookEnd::Failed,
            Some(format!(
                "a Job named {name} that Rampart did not create is in the way of the hook"
            )),
        ),
        (false, _) => HookStep::Start,
        (true, HookJobState::Running | HookJobState::Unknown) => HookStep::Wait,
        (true, HookJobState::Missing) => HookStep::End(
            HookEnd::Lost,
            Some(format!(
                "hook Job {name} was deleted before Rampart saw it finish; whether it changed \
                 the credential is unknown, so the Secret keeps its new values and its consumers \
                 were not restarted: check the service, then restart them (or set a new rotationId)"
            )),
        ),
    }
}

/// What a profile being deleted does with the hooks it has not seen end: a hook whose Job was
/// never made fails (the values its consumers run with go back: nothing changed the
/// credential); one whose Job ended is recorded as it ended; one whose Job still runs is waited
/// for, so the profile goes only once every credential change it started has settled (the Job
/// itself outlives the profile: nothing kills it halfway). Returns the ends to record and the
/// names of the Jobs to wait for.
pub fn settle_on_deletion(
    profile_uid: &str,
    secrets: &[SecretInfo],
    jobs: &BTreeMap<(String, String), HookJobState>,
) -> (Vec<(SecretInfo, HookEnd)>, Vec<String>) {
    let mut ends = Vec::new();
    let mut waiting = Vec::new();
    for s in secrets.iter().filter(|s| s.mark.hook_pending()) {
        let Some(id) = s.rotation_id.as_deref() else {
            continue;
        };
        let name = job_name(profile_uid, &s.namespace, &s.name, id);
        if s.mark == super::stamp::Mark::HookDue {
            ends.push((s.clone(), HookEnd::Failed));
            continue;
        }
        let job = jobs
            .get(&(s.namespace.clone(), s.name.clone()))
            .cloned()
            .unwrap_or(HookJobState::Unknown);
        match next_step(true, &job, &name) {
            HookStep::End(end, _) => ends.push((s.clone(), end)),
            HookStep::Wait | HookStep::Start => waiting.push(format!("{}/{name}", s.namespace)),
        }
    }
    (ends, waiting)
}

/// The hook Job for one rotated Secret: the template with the restricted defaults filled and no
/// token, the Secret added read-only as `volumeName`, the variables that say what rotated, run
/// once (no retries), stopped by the API server at `timeoutSeconds`.
pub fn job_object(
    hook: &RotationHook,
    (profile, profile_uid): (&str, &str),
    secret: &SecretInfo,
    rotation_id: &str,
    rotated_keys: &[String],
) -> DesiredObject {
    let name = job_name(profile_uid, &secret.namespace, &secret.name, rotation_id);
    let mut template = hook.template.clone();
    if !template.is_object() {
        template = json!({});
    }
    if !template["spec"].is_object() {
        template["spec"] = json!({});
    }
    let pod = &mut template["spec"];
    if pod.get("restartPolicy").is_none() {
        pod["restartPolicy"] = json!("Never");
    }
    crate::api::restricted::fill_restricted_defaults(pod);
    let volume = json!({
        "name": hook.volume_name,
        "secret": {"secretName": secret.name},
    });
    match pod.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(volumes) => volumes.push(volume),
        None => pod["volumes"] = json!([volume]),
    }
    let vars = BTreeMap::from([
        ("RAMPART_SECRET_NAMESPACE", secret.namespace.clone()),
        ("RAMPART_SECRET_NAME", secret.name.clone()),
        ("RAMPART_ROTATION_ID", rotation_id.to_string()),
        ("RAMPART_ROTATED_KEYS", rotated_keys.join(",")),
    ]);
    for list in ["initContainers", "containers"] {
        for container in pod
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            add_env(container, &vars);
        }
    }
    let mut labels = crate::ownership::managed_labels(profile, ControlName::SecretRotation);
    labels.insert(HOOK_LABEL.to_string(), BEFORE_RESTART.to_string());
    DesiredObject {
        key: ObjectKey {
            kind: ManagedKind::HookJob,
            namespace: secret.namespace.clone(),
            name: name.clone(),
        },
        control: ControlName::SecretRotation,
        manifest: json!({
            "apiVersion": ManagedKind::HookJob.api_version(),
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": secret.namespace,
                "labels": labels,
                "annotations": {
                    HOOK_SECRET_ANNOTATION: secret.name,
                    HOOK_ROTATION_ID_ANNOTATION: rotation_id,
                },
            },
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": hook.timeout_seconds,
                "ttlSecondsAfterFinished": FINISHED_JOB_TTL_SECONDS,
                "template": template,
            },
        }),
    }
}

/// Adds the variables a container does not set itself: the template's own win.
fn add_env(container: &mut Value, vars: &BTreeMap<&str, String>) {
    if !container["env"].is_array() {
        container["env"] = json!([]);
    }
    let Some(env) = container["env"].as_array_mut() else {
        return;
    };
    for (name, value) in vars {
        if !env.iter().any(|e| e["name"] == *name) {
            env.push(json!({"name": name, "value": value}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> RotationHook {
        RotationHook {
            template: json!({"spec": {"containers": [
                {"name": "set-password", "image": "registry.example/psql:16",
                 "env": [{"name": "RAMPART_SECRET_NAME", "value": "mine"}]}
            ]}}),
            volume_name: "rotated-secret".into(),
            timeout_seconds: 120,
        }
    }

    fn secret() -> SecretInfo {
        SecretInfo {
            namespace: "shop".into(),
            name: "db.credentials".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_name_is_fixed_by_profile_secret_and_id_and_fits_a_label() {
        let a = job_name("uid-1", "shop", "db.credentials", "r2");
        assert_eq!(a, job_name("uid-1", "shop", "db.credentials", "r2"));
        assert_ne!(a, job_name("uid-1", "shop", "db.credentials", "r3"));
        assert_ne!(a, job_name("uid-2", "shop", "db.credentials", "r2"));
        assert_ne!(a, job_name("uid-1", "other", "db.credentials", "r2"));
        assert!(a.starts_with("rampart-hook-db-credentials-"), "{a}");
        let long = job_name("u", "n", &"x".repeat(253), "r");
        assert!(long.len() <= 63, "{long}");
    }

    #[test]
    fn the_job_mounts_the_secret_runs_once_without_a_token_and_says_what_rotated() {
        let job = job_object(
            &hook(),
            ("p", "uid-1"),
            &secret(),
            "r2",
            &["password".into()],
        );
        assert_eq!(
            job.manifest["metadata"]["labels"][HOOK_LABEL],
            BEFORE_RESTART
        );
        assert_eq!(
            job.manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "rampart"
        );
        let m = &job.manifest;
        assert_eq!(job.key.namespace, "shop");
        assert_eq!(m["spec"]["backoffLimit"], 0);
        assert_eq!(m["spec"]["activeDeadlineSeconds"], 120);
        let pod = &m["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(
            pod["volumes"][0],
            json!({"name": "rotated-secret", "secret": {"secretName": "db.credentials"}})
        );
        let env = pod["containers"][0]["env"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let value = |n: &str| {
            env.iter()
                .find(|e| e["name"] == n)
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            value("RAMPART_SECRET_NAME"),
            Some(json!("mine")),
            "the template's own wins"
        );
        assert_eq!(value("RAMPART_ROTATION_ID"), Some(json!("r2")));
        assert_eq!(value("RAMPART_ROTATED_KEYS"), Some(json!("password")));
        assert_eq!(
            m["metadata"]["annotations"][HOOK_SECRET_ANNOTATION],
            "db.credentials"
        );
        // What Rampart fills keeps the restricted rules, secret volume aside (the policy allows
        // exactly this one).
        let c = &pod["containers"][0]["securityContext"];
        assert_eq!(c["allowPrivilegeEscalation"], false);
        assert_eq!(c["capabilities"]["drop"], json!(["ALL"]));
    }

    #[test]
    fn a_deleted_profile_fails_unstarted_hooks_records_ended_ones_and_waits_for_running_ones() {
        use super::super::stamp::Mark;
        let at = |name: &str, mark: Mark| SecretInfo {
            namespace: "shop".into(),
            name: name.into(),
            rotation_id: Some("r2".into()),
            mark,
            ..Default::default()
        };
        let secrets = [
            at("due", Mark::HookDue),
            at("running", Mark::HookStarted),
            at("done", Mark::HookStarted),
            at("settled", Mark::Rotated),
        ];
        let jobs = BTreeMap::from([
            (
                ("shop".to_string(), "running".to_string()),
                HookJobState::Running,
            ),
            (
                ("shop".to_string(), "done".to_string()),
                HookJobState::Succeeded,
            ),
        ]);
        let (ends, waiting) = settle_on_deletion("uid-1", &secrets, &jobs);
        let ends: Vec<(&str, HookEnd)> = ends.iter().map(|(s, e)| (s.name.as_str(), *e)).collect();
        assert_eq!(
            ends,
            vec![("due", HookEnd::Failed), ("done", HookEnd::Succeeded)]
        );
        assert_eq!(
            waiting,
            vec![format!(
                "shop/{}",
                job_name("uid-1", "shop", "running", "r2")
            )]
        );
    }

    #[test]
    fn each_job_state_gives_one_step_and_a_started_hook_is_never_started_again() {
        let n = "rampart-hook-x";
        assert_eq!(next_step(false, &HookJobState::Missing, n), HookStep::Start);
        assert_eq!(next_step(false, &HookJobState::Running, n), HookStep::Start);
        assert_eq!(next_step(true, &HookJobState::Running, n), HookStep::Wait);
        assert_eq!(
            next_step(true, &HookJobState::Succeeded, n),
            HookStep::End(HookEnd::Succeeded, None)
        );
        assert!(matches!(
            next_step(true, &HookJobState::Failed("BackoffLimitExceeded".into()), n),
            HookStep::End(HookEnd::Failed, Some(why)) if why.contains(n) && why.contains("BackoffLimitExceeded")
        ));
        assert!(matches!(
            next_step(true, &HookJobState::Missing, n),
            HookStep::End(HookEnd::Lost, Some(_))
        ));
        assert!(matches!(
            next_step(false, &HookJobState::NotOurs, n),
            HookStep::End(HookEnd::Failed, Some(_))
        ));
    }
}
