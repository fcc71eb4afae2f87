//! Where the hook Jobs of a rotation stand. Hook Jobs are few and short-lived, and a watch on
//! every Job in the cluster would cost far more than it saves, so each Secret whose hook has not
//! ended has its Job read by name once per pass (the rotation plan asks for the next pass while
//! any hook runs).

use std::collections::BTreeMap;

use futures::{stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::{Api, Client};

use crate::controls::rotation::hooks::{job_name, HookJobState};
use crate::controls::rotation::SecretInfo;
use crate::ownership::belongs_to;

/// Reads at once at most this many hook Jobs.
const CONCURRENT_READS: usize = 8;

/// The state of each hook Job not yet ended, by the Secret's namespace and name. A Job that
/// could not be read is left out, so the plan waits rather than taking an error for a Job that
/// went away.
pub async fn hook_jobs(
    client: &Client,
    profile: &str,
    profile_uid: &str,
    secrets: &[SecretInfo],
) -> BTreeMap<(String, String), HookJobState> {
    // Owned from here on: the reads run as one stream inside the reconcile's future, which
    // must be Send for every lifetime the borrows would otherwise carry.
    let pending: Vec<(String, String, String)> = secrets
        .iter()
        .filter(|s| s.mark.hook_pending())
        .filter_map(|s| {
            let id = s.rotation_id.as_deref()?;
            let job = job_name(profile_uid, &s.namespace, &s.name, id);
            Some((s.namespace.clone(), s.name.clone(), job))
        })
        .collect();
    let (profile, profile_uid) = (profile.to_string(), profile_uid.to_string());
    stream::iter(pending)
        .map(|(namespace, secret, job)| {
            let api = Api::<Job>::namespaced(client.clone(), &namespace);
            let (profile, profile_uid) = (profile.clone(), profile_uid.clone());
            async move {
                match api.get_opt(&job).await {
                    Ok(found) => {
                        let state = state_of(found.as_ref(), &profile, &profile_uid);
                        Some(((namespace, secret), state))
                    }
                    Err(e) => {
                        tracing::warn!(namespace = %namespace, job = %job, error = %e, "could not read a rotation hook Job; its Secret's consumers wait");
                        None
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENT_READS)
        .filter_map(futures::future::ready)
        .collect()
        .await
}

/// A Job's state as a hook: its Complete or Failed condition, or running.
pub fn state_of(job: Option<&Job>, profile: &str, profile_uid: &str) -> HookJobState {
    let Some(job) = job else {
        return HookJobState::Missing;
    };
    if !belongs_to(&job.metadata, profile, profile_uid) {
        return HookJobState::NotOurs;
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let holds = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if holds("Complete").is_some() {
        return HookJobState::Succeeded;
    }
    match holds("Failed") {
        Some(c) => HookJobState::Failed(
            [c.reason.as_deref(), c.message.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": "),
        ),
        None => HookJobState::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use kube::api::ObjectMeta;

    fn job(labels: &[(&str, &str)], conditions: &[(&str, &str, &str)]) -> Job {
        Job {
            metadata: ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            status: Some(JobStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s, r)| JobCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            reason: Some(r.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_job_reads_as_its_conditions_say_and_a_stranger_is_not_ours() {
        use crate::api::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, PROFILE_LABEL, PROFILE_UID_LABEL};
        let ours = [
            (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
            (PROFILE_LABEL, "p"),
            (PROFILE_UID_LABEL, "uid"),
        ];
        assert_eq!(state_of(None, "p", "uid"), HookJobState::Missing);
        assert_eq!(
            state_of(Some(&job(&ours, &[])), "p", "uid"),
            HookJobState::Running
        );
        assert_eq!(
            state_of(
                Some(&job(&ours, &[("Complete", "True", "Done")])),
                "p",
                "uid"
            ),
            HookJobState::Succeeded
        );
        assert_eq!(
            state_of(
                Some(&job(&ours, &[("Failed", "True", "DeadlineExceeded")])),
                "p",
                "uid"
            ),
            HookJobState::Failed("DeadlineExceeded".into())
        );
        assert_eq!(
            state_of(Some(&job(&ours, &[("Failed", "False", "x")])), "p", "uid"),
            HookJobState::Running
        );
        assert_eq!(
            state_of(Some(&job(&[], &[("Complete", "True", "Done")])), "p", "uid"),
            HookJobState::NotOurs
        );
    }
}
