//! Secret rotation: which Secrets to regenerate for the current `rotationId` and which
//! consumers to restart next, in batches. Pure: observed Secrets (metadata only), consumers,
//! the profile's own rotation status and `now` are arguments; the random values are made by
//! the write layer, never here.
//!
//! The cluster is the record. Each profile keeps its own entry `<profile-uid>/<id>` in a
//! Secret's `rampart.dev/rotation-id` ([`stamp`]): a Secret whose entry carries the current id
//! was rotated and is never regenerated again; a pod template whose entry carries it was
//! restarted and is never stamped again. So a crash at any point resumes where the cluster
//! says, with no value regenerated twice and no workload skipped or restarted twice.
//!
//! Ownership: a rotation belongs to its profile. A Secret rotates only when this profile's own
//! entry holds an older id and the Secret was in scope when the rotation began. Everything
//! else this profile meets is adopted (its entry written at the current id, values untouched,
//! consumers not restarted): a Secret that never carried an entry of this profile (a running
//! estate meeting Rampart, a Secret labelled in, one stamped by another profile or in the old
//! format), and one found at an older id after the rotation's Secret stage (a namespace that
//! entered or re-entered scope). Ids this profile applied before
//! (`status.rotation.usedRotationIds`) never rotate again: a revert is reported and rotates
//! nothing.
//!
//! One rotation at a time: a new id set while a rotation is under way waits
//! (`queuedRotationId`) until that one completes, so `<key>.previous` always holds the values
//! the consumers not yet restarted were started with.
//!
//! Blast radius of one namespace: a rollout that overruns its timeout holds back only the
//! consumers not yet restarted in its namespace ([`next_batch`]); a consumer not Ready before
//! its restart gates nothing. What the rotation must not write is left alone and listed: a
//! Secret with a controlling owner (its owner would write the values back), a Secret the API
//! server refused for this id (the pass reads the refusal from the writer's effects; the status
//! carries it to the next pass), and an `OnDelete` consumer, which a template stamp would not
//! restart.
//!
//! Hooks: with `hooks.beforeRestart`, each rotated Secret's consumers wait for a Job that puts
//! the new values where they are checked (a database's password); a Secret whose hook fails
//! gets back the values its consumers run with, and they are not restarted ([`hooks`]). A
//! consumer waits until every Secret it reads has its hook done, so it restarts once, on values
//! that all work.

pub mod hooks;
pub mod stamp;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::core::v1::PodSpec;

use super::{Outcome, SecretRef, SecretRotation, Write};
pub use crate::api::RotationPhase;
use crate::api::{RotationStatus, SecretRotationControl};
use crate::events::Event;
use hooks::{HookEnd, HookJobState, HookStep};
use stamp::Mark;

/// Annotation on a restarted pod template: when it was stamped, for the rollout timeout.
pub const RESTARTED_AT_ANNOTATION: &str = "rampart.dev/restarted-at";

/// Annotation on a restarted pod template whose workload was not Ready when it was stamped:
/// its rollout does not gate the next batch.
pub const RESTARTED_UNREADY_ANNOTATION: &str = "rampart.dev/restarted-unready";

/// Margin for the clocks of the operator and the API server: a workload created less than this
/// after the Secrets held their new values may have been created before, and is restarted.
pub const CREATED_AFTER_MARGIN_SECONDS: i64 = 5;

/// What rotation needs to know of a selected Secret.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SecretInfo {
    pub namespace: String,
    pub name: String,
    /// The id in this profile's own entry of the stamp.
    pub rotation_id: Option<String>,
    /// At its id by adoption (values untouched), not by rotation.
    pub adopted: bool,
    /// What this profile's entry says beyond the id: where the rotation's hook is.
    pub mark: Mark,
    /// An id in the old stamp format, which names no profile.
    pub legacy_id: Option<String>,
    /// Entries of other profiles in the stamp.
    pub other_profiles: usize,
    /// The controller named by its ownerReferences (`controller: true`), as `Kind/name`: an
    /// ExternalSecret or a SealedSecret writes its values back, so it is left alone.
    pub controller: Option<String>,
}

/// The workload kinds restarted after a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConsumerKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl ConsumerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerKind::Deployment => "Deployment",
            ConsumerKind::StatefulSet => "StatefulSet",
            ConsumerKind::DaemonSet => "DaemonSet",
        }
    }
}

/// Identity of a consumer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsumerRef {
    pub namespace: String,
    pub kind: ConsumerKind,
    pub name: String,
}

impl std::fmt::Display for ConsumerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What rotation needs to know of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub id: ConsumerRef,
    /// Secrets its pods use, in its namespace.
    pub secrets: BTreeSet<String>,
    /// The rotation id on its pod template, if any.
    pub stamped_id: Option<String>,
    pub stamped_at: Option<DateTime<Utc>>,
    /// The controller has rolled out the current template to every replica.
    pub rollout_complete: bool,
    /// Its `creationTimestamp`: a workload created after the Secrets held their new values
    /// started with them and is not restarted.
    pub created_at: Option<DateTime<Utc>>,
    /// Its update strategy is `OnDelete`: a new template restarts no pod, so Rampart does not
    /// stamp it and reports it instead.
    pub restarts_on_delete: bool,
    /// Every replica is available now.
    pub ready: bool,
    /// Its stamp says it was not Ready when restarted: its rollout gates no batch.
    pub restarted_unready: bool,
}

/// A selected Secret the API server refused to write for this rotation id, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwritableSecret {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// The decisions for one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct RotationPlan {
    /// The id this plan rotates to: the spec's, unless it is queued or a revert.
    pub rotation_id: String,
    /// The spec's id, waiting for the rotation to `rotation_id` to complete.
    pub queued: Option<String>,
    /// The spec's id, already applied by this profile before: nothing rotates for it.
    pub reverted: Option<String>,
    pub phase: RotationPhase,
    /// Secrets to regenerate now.
    pub rotate: Vec<SecretInfo>,
    /// Secrets that never carried a rotation id: to stamp with the current id, values and
    /// consumers left alone.
    pub adopt: Vec<SecretInfo>,
    /// Consumers to stamp now: the next batch.
    pub restart: Vec<ConsumerRef>,
    /// Stamped consumers whose rollout has not finished.
    pub in_progress: Vec<ConsumerRef>,
    /// Consumers whose rollout overran the timeout: each holds back the consumers not yet
    /// restarted in its namespace, and nothing else.
    pub stalled: Vec<ConsumerRef>,
    /// Selected Secrets controlled by another controller: neither rotated nor stamped.
    pub foreign: Vec<SecretInfo>,
    /// Selected Secrets refused by the API server for this id: skipped, consumers untouched.
    /// The pass adds the ones refused by its own writes.
    pub unwritable: Vec<UnwritableSecret>,
    /// Consumers of a changed Secret that a template stamp would not restart (`OnDelete`).
    pub skipped: Vec<ConsumerRef>,
    /// Secrets whose hook Job is to be created (or found) and marked started.
    pub hook_starts: Vec<SecretInfo>,
    /// Secrets whose hook ended, with how, to record on the Secret.
    pub hook_ends: Vec<(SecretInfo, HookEnd)>,
    /// Rotated Secrets whose hook has not ended: their consumers wait.
    pub hooks_pending: usize,
    /// Rotated Secrets whose hook completed.
    pub hooks_succeeded: usize,
    /// Secrets whose hook failed (values put back) or was lost, with why: their consumers are
    /// not restarted.
    pub hook_failures: Vec<UnwritableSecret>,
    /// Each Secret rotated to this id (namespace, name), with the consumers restarted for it so
    /// far: the evidence the completion event gives.
    pub restarted_for: Vec<(String, String, Vec<ConsumerRef>)>,
    pub secrets_selected: usize,
    /// Selected Secrets rotated to the current id.
    pub secrets_rotated: usize,
    /// Selected Secrets adopted at the current id by earlier passes.
    pub secrets_adopted_before: usize,
    pub consumers_total: usize,
    pub consumers_restarted: usize,
    /// When an in-progress rollout times out, so the reconcile can be scheduled for it.
    pub next_deadline: Option<DateTime<Utc>>,
    /// Workloads created after this are not restarted (they started with the new values).
    pub restart_cutoff: Option<DateTime<Utc>>,
}

/// The names of the Secrets a pod spec uses: env, envFrom, volumes and projected volumes, in
/// every kind of container.
pub fn secrets_used_by(spec: &PodSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let env_sources = spec
        .containers
        .iter()
        .map(|c| (&c.env, &c.env_from))
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| (&c.env, &c.env_from)),
        )
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| (&c.env, &c.env_from)),
        );
    for (env, env_from) in env_sources {
        for e in env.iter().flatten() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                out.insert(r.name.clone());
            }
        }
        for f in env_from.iter().flatten() {
            if let Some(r) = &f.secret_ref {
                out.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            out.insert(name);
        }
        for src in v
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(s) = &src.secret {
                out.insert(s.name.clone());
            }
        }
    }
    out
}

/// What rotation observes: the selected Secrets (metadata only), every workload in the
/// namespaces it acts in, and the rotation status the last pass wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RotationObserved {
    pub secrets: Vec<SecretInfo>,
    pub consumers: Vec<ConsumerInfo>,
    pub previous: Option<RotationStatus>,
    /// The hook Jobs of Secrets whose hook has not ended, by namespace and Secret name.
    pub hooks: BTreeMap<(String, String), HookJobState>,
    /// This profile's uid, which hook Jobs are named from.
    pub profile_uid: String,
    /// This profile's name, which hook Jobs are labelled with.
    pub profile_name: String,
}

/// Which id a pass rotates to, given the spec's and what the status says this profile did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationChoice {
    pub current: String,
    /// The spec's id, when it waits for the rotation to `current` to complete.
    pub queued: Option<String>,
    /// The spec's id, when this profile applied it before.
    pub reverted: Option<String>,
}

/// The ids this profile applied, by its status: the list, or the observed id of a status
/// written before the list existed, unless that was only reported (Audit).
fn used_ids(previous: &RotationStatus) -> BTreeSet<&str> {
    let mut used: BTreeSet<&str> = previous
        .used_rotation_ids
        .iter()
        .map(String::as_str)
        .collect();
    if used.is_empty() && previous.phase != RotationPhase::Pending {
        used.extend(previous.observed_rotation_id.as_deref());
    }
    used
}

/// One rotation at a time, and never one to an id already applied: the spec's id unless the
/// status shows it applied before (a revert: the last id stays) or another rotation under way
/// (the spec's waits).
pub fn choose_rotation_id(spec_id: &str, previous: Option<&RotationStatus>) -> RotationChoice {
    let fresh = RotationChoice {
        current: spec_id.to_string(),
        queued: None,
        reverted: None,
    };
    let Some((p, last)) = previous.and_then(|p| p.observed_rotation_id.as_deref().map(|l| (p, l)))
    else {
        return fresh;
    };
    if last == spec_id {
        return fresh;
    }
    if used_ids(p).contains(spec_id) {
        return RotationChoice {
            current: last.to_string(),
            queued: None,
            reverted: Some(spec_id.to_string()),
        };
    }
    let under_way = matches!(
        p.phase,
        RotationPhase::Rotating
            | RotationPhase::RunningHooks
            | RotationPhase::Restarting
            | RotationPhase::Stalled
    );
    if under_way {
        return RotationChoice {
            current: last.to_string(),
            queued: Some(spec_id.to_string()),
            reverted: None,
        };
    }
    fresh
}

/// What the profile's own status says of the rotation being planned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Past {
    /// Ids this profile applied: an old-format stamp carrying one of them is this profile's.
    pub known_ids: BTreeSet<String>,
    /// When a pass first saw every Secret at this id. A Secret found at an older id after it
    /// was not in scope when the rotation began, and is adopted; a workload created after it
    /// started with the new values and is not restarted.
    pub secrets_rotated_at: Option<DateTime<Utc>>,
    /// Secrets refused by the API server for this id, with why: skipped, not tried again.
    pub unwritable: Vec<UnwritableSecret>,
    /// Why the hooks that failed for this id failed, as the status recorded it.
    pub hook_failures: Vec<UnwritableSecret>,
    /// The hook Jobs of Secrets whose hook has not ended.
    pub hooks: BTreeMap<(String, String), HookJobState>,
    /// This profile's uid, which hook Jobs are named from.
    pub profile_uid: String,
}

/// The rotation control: rotate, adopt and restart as [`plan_rotation`] decides for the id
/// [`choose_rotation_id`] picks (and for a queued id in the same pass, once the rotation
/// before it completes), a warning when a rollout first overruns its timeout, and a look again
/// at the next rollout deadline.
pub fn plan(
    spec: &SecretRotationControl,
    observed: &RotationObserved,
    now: DateTime<Utc>,
) -> Outcome<RotationPlan> {
    let choice = choose_rotation_id(&spec.rotation_id, observed.previous.as_ref());
    let mut plan = plan_for(spec, &choice.current, observed, now);
    if let Some(next) = choice.queued {
        if plan.phase == RotationPhase::Complete {
            plan = plan_for(spec, &next, observed, now);
        } else {
            plan.queued = Some(next);
        }
    }
    plan.reverted = choice.reverted;
    let id = &plan.rotation_id;
    let mut writes: Vec<Write> = Vec::new();
    let hook = spec.hooks.as_ref().and_then(|h| h.before_restart.as_ref());
    writes.extend(plan.rotate.iter().map(|s| {
        Write::RotateSecret(SecretRotation {
            secret: s.secret_ref(),
            rotation_id: id.clone(),
            expected: s.rotation_id.clone(),
            regenerate: spec.regenerate.clone(),
            keep_previous: spec.keep_previous,
            mark: if hook.is_some() {
                Mark::HookDue
            } else {
                Mark::Rotated
            },
        })
    }));
    if let Some(hook) = hook {
        let keys: Vec<String> = spec.regenerate.iter().map(|k| k.key.clone()).collect();
        writes.extend(plan.hook_starts.iter().map(|s| Write::StartHook {
            job: hooks::job_object(
                hook,
                (&observed.profile_name, &observed.profile_uid),
                s,
                id,
                &keys,
            ),
            secret: s.secret_ref(),
            rotation_id: id.clone(),
            regenerate: keys.clone(),
        }));
    }
    writes.extend(plan.hook_ends.iter().map(|(s, end)| Write::EndHook {
        secret: s.secret_ref(),
        rotation_id: id.clone(),
        end: *end,
        regenerate: spec.regenerate.iter().map(|k| k.key.clone()).collect(),
    }));
    writes.extend(plan.adopt.iter().map(|s| Write::AdoptSecret {
        secret: s.secret_ref(),
        rotation_id: id.clone(),
        expected: s.rotation_id.clone(),
    }));
    let created_before = plan.restart_cutoff;
    let ready = |c: &ConsumerRef| observed.consumers.iter().any(|o| &o.id == c && o.ready);
    writes.extend(plan.restart.iter().map(|c| Write::StampWorkload {
        consumer: c.clone(),
        rotation_id: id.clone(),
        at: now,
        created_before,
        gates: ready(c),
    }));
    let mut events = news_of_stalls(&plan, spec, observed.previous.as_ref());
    events.extend(news_of_completion(&plan, observed.previous.as_ref()));
    events.extend(news_of_hook_failures(&plan, observed.previous.as_ref()));
    events.extend(news_of_the_spec_id(&plan, observed.previous.as_ref()));
    Outcome {
        writes,
        drift: vec![],
        events,
        next_due: plan.next_deadline,
        findings: plan,
    }
}

/// A warning the first time a consumer's rollout is seen past its timeout: the status did not
/// list it yet.
fn news_of_stalls(
    plan: &RotationPlan,
    spec: &SecretRotationControl,
    previous: Option<&RotationStatus>,
) -> Vec<Event> {
    let known = |c: &ConsumerRef| {
        previous.is_some_and(|p| {
            p.stalled_consumers.iter().any(|s| {
                s.namespace == c.namespace && s.name == c.name && s.kind == c.kind.as_str()
            })
        })
    };
    plan.stalled
        .iter()
        .filter(|c| !known(c))
        .map(|c| {
            Event::warning(
                "RotationStalled",
                "Restart",
                format!(
                    "The rollout of {c} did not complete within {}s; consumers in namespace {} \
                     not yet restarted wait for it, the others proceed",
                    spec.rollout_timeout_seconds, c.namespace
                ),
            )
        })
        .collect()
}

/// Most Secrets a completion names in events of their own; the rest are counted in one more.
pub const COMPLETION_EVENTS_LIMIT: usize = 50;
/// Most consumers one Secret's event names.
const CONSUMERS_NAMED: usize = 10;

/// When a rotation first completes: an event per rotated Secret naming the consumers restarted
/// for it (never a value), the evidence an auditor asks for.
fn news_of_completion(plan: &RotationPlan, previous: Option<&RotationStatus>) -> Vec<Event> {
    let id = &plan.rotation_id;
    let was_complete = previous.is_some_and(|p| {
        p.observed_rotation_id.as_deref() == Some(id) && p.phase == RotationPhase::Complete
    });
    if plan.phase != RotationPhase::Complete || was_complete || plan.reverted.is_some() {
        return vec![];
    }
    let mut events: Vec<Event> = plan
        .restarted_for
        .iter()
        .take(COMPLETION_EVENTS_LIMIT)
        .map(|(ns, name, consumers)| {
            let named: Vec<String> = consumers
                .iter()
                .take(CONSUMERS_NAMED)
                .map(|c| c.to_string())
                .collect();
            let restarted = match consumers.len() {
                0 => "no consumer to restart".to_string(),
                n if n > CONSUMERS_NAMED => format!(
                    "restarted {} and {} more",
                    named.join(", "),
                    n - CONSUMERS_NAMED
                ),
                _ => format!("restarted {}", named.join(", ")),
            };
            Event::normal(
                "SecretRotated",
                "Rotate",
                format!("Secret {ns}/{name} rotated to {id}: {restarted}"),
            )
        })
        .collect();
    let more = plan
        .restarted_for
        .len()
        .saturating_sub(COMPLETION_EVENTS_LIMIT);
    if more > 0 {
        events.push(Event::normal(
            "SecretRotated",
            "Rotate",
            format!("{more} more Secrets rotated to {id} (see status.rotation)"),
        ));
    }
    events
}

/// A warning the first time a hook is seen failed or lost, naming the Secret and the Job.
fn news_of_hook_failures(plan: &RotationPlan, previous: Option<&RotationStatus>) -> Vec<Event> {
    let id = &plan.rotation_id;
    let known = |u: &UnwritableSecret| {
        previous.is_some_and(|p| {
            p.observed_rotation_id.as_deref() == Some(id)
                && p.hook_failures
                    .iter()
                    .any(|f| f.namespace == u.namespace && f.name == u.name)
        })
    };
    plan.hook_failures
        .iter()
        .filter(|u| !known(u))
        .map(|u| {
            Event::warning(
                "RotationHookFailed",
                "Rotate",
                format!(
                    "Secret {}/{}: {}; its consumers were not restarted",
                    u.namespace, u.name, u.reason
                ),
            )
        })
        .collect()
}

/// An event the first time a pass leaves the spec's id aside: queued behind the rotation under
/// way, or a revert to an id applied before.
fn news_of_the_spec_id(plan: &RotationPlan, previous: Option<&RotationStatus>) -> Vec<Event> {
    let id = &plan.rotation_id;
    let mut events = Vec::new();
    if let Some(q) = &plan.queued {
        if previous.and_then(|p| p.queued_rotation_id.as_ref()) != Some(q) {
            events.push(Event::normal(
                "RotationQueued",
                "Rotate",
                format!("rotationId {q} waits until the rotation to {id} completes"),
            ));
        }
    }
    if let Some(r) = &plan.reverted {
        if previous.and_then(|p| p.reverted_rotation_id.as_ref()) != Some(r) {
            events.push(Event::normal(
                "RotationRevertIgnored",
                "Rotate",
                format!("rotationId {r} was applied before by this profile; nothing rotates"),
            ));
        }
    }
    events
}

/// The plan for the rotation to `id`, with what the status recorded of it.
fn plan_for(
    spec: &SecretRotationControl,
    id: &str,
    observed: &RotationObserved,
    now: DateTime<Utc>,
) -> RotationPlan {
    let spec = SecretRotationControl {
        rotation_id: id.to_string(),
        ..spec.clone()
    };
    let previous = observed.previous.as_ref();
    let same = previous.filter(|p| p.observed_rotation_id.as_deref() == Some(id));
    let items = |list: fn(&RotationStatus) -> &Vec<crate::api::RotationItem>| {
        same.map(|p| {
            list(p)
                .iter()
                .map(|u| UnwritableSecret {
                    namespace: u.namespace.clone(),
                    name: u.name.clone(),
                    reason: u.reason.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let past = Past {
        known_ids: previous
            .map(|p| used_ids(p).into_iter().map(String::from).collect())
            .unwrap_or_default(),
        secrets_rotated_at: same.and_then(|p| p.secrets_rotated_at),
        unwritable: items(|p| &p.unwritable_secrets),
        hook_failures: items(|p| &p.hook_failures),
        hooks: observed.hooks.clone(),
        profile_uid: observed.profile_uid.clone(),
    };
    // A rotation the status already records as complete stays complete: a consumer that
    // scales, or whose pods fail, long after its restart is not rolling out this rotation,
    // and must not turn it back to Restarting (nor to Stalled once the timeout passes).
    let settled = same.is_some_and(|p| p.phase == RotationPhase::Complete);
    if settled {
        let consumers: Vec<ConsumerInfo> = observed
            .consumers
            .iter()
            .map(|c| ConsumerInfo {
                rollout_complete: c.rollout_complete || c.stamped_id.as_deref() == Some(id),
                ..c.clone()
            })
            .collect();
        plan_rotation(&spec, &observed.secrets, &consumers, &past, now)
    } else {
        plan_rotation(&spec, &observed.secrets, &observed.consumers, &past, now)
    }
}

impl SecretInfo {
    fn secret_ref(&self) -> SecretRef {
        SecretRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// The id this profile's stamp holds: its own entry, or an old-format id it applied.
    fn own_id<'a>(&'a self, past: &Past) -> Option<&'a str> {
        self.rotation_id.as_deref().or(self
            .legacy_id
            .as_deref()
            .filter(|id| past.known_ids.contains(*id)))
    }
}

/// What becomes of one selected Secret in the rotation to `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SecretStage {
    /// New to this profile, or found at an older id after the Secret stage: stamp, no change.
    Adopt,
    /// This profile's, at an older id, in scope since before the rotation began.
    Rotate,
    /// At the id by adoption: values unchanged, consumers left alone.
    AdoptedAtId,
    /// At the id by rotation (its hook, if any, done): its consumers restart.
    RotatedAtId,
    /// At the id by rotation, its hook not ended: its consumers wait for it.
    HookPending,
    /// At the id, its hook failed (values put back) or lost: consumers left alone.
    HookEnded,
    /// Controlled by another controller, which would write its values back: left alone.
    Foreign,
    /// Refused by the API server earlier in this rotation: skipped, consumers left alone.
    Unwritable,
}

fn secret_stage(s: &SecretInfo, id: &str, past: &Past) -> SecretStage {
    if s.controller.is_some() {
        return SecretStage::Foreign;
    }
    let refused = past
        .unwritable
        .iter()
        .any(|u| u.namespace == s.namespace && u.name == s.name);
    match s.own_id(past) {
        Some(own) if refused && own != id => SecretStage::Unwritable,
        None => SecretStage::Adopt,
        Some(own) if own == id => match s.mark {
            _ if s.adopted => SecretStage::AdoptedAtId,
            Mark::HookDue | Mark::HookStarted => SecretStage::HookPending,
            Mark::HookFailed | Mark::HookLost => SecretStage::HookEnded,
            Mark::Rotated | Mark::Adopted => SecretStage::RotatedAtId,
        },
        // Every Secret in scope was at this id when a pass last looked: this one entered
        // scope since (a namespace relabelled in, a Secret labelled in). Its consumers were
        // never told of a new value and run on the one it holds; adopt it.
        Some(_) if past.secrets_rotated_at.is_some() => SecretStage::Adopt,
        Some(_) => SecretStage::Rotate,
    }
}

/// Decides the rotation to `spec.rotationId` over the selected Secrets and every consumer in
/// their namespaces, as Enforce mode would carry it out now (Audit reports the same plan).
pub fn plan_rotation(
    spec: &SecretRotationControl,
    secrets: &[SecretInfo],
    consumers: &[ConsumerInfo],
    past: &Past,
    now: DateTime<Utc>,
) -> RotationPlan {
    let id = spec.rotation_id.as_str();
    let staged: Vec<(&SecretInfo, SecretStage)> = secrets
        .iter()
        .map(|s| (s, secret_stage(s, id, past)))
        .collect();
    let of_stage = |want: SecretStage| -> Vec<SecretInfo> {
        staged
            .iter()
            .filter(|(_, st)| *st == want)
            .map(|(s, _)| (*s).clone())
            .collect()
    };
    let adopt = of_stage(SecretStage::Adopt);
    let rotate = of_stage(SecretStage::Rotate);
    let adopted_at_id = of_stage(SecretStage::AdoptedAtId).len();
    let rotated_at_id = of_stage(SecretStage::RotatedAtId).len();
    let foreign = of_stage(SecretStage::Foreign);
    let unwritable: Vec<UnwritableSecret> = past
        .unwritable
        .iter()
        .filter(|u| {
            of_stage(SecretStage::Unwritable)
                .iter()
                .any(|s| s.namespace == u.namespace && s.name == u.name)
        })
        .cloned()
        .collect();
    // Consumers restart only for Secrets whose values change (or changed) for this id;
    // an adopted Secret kept its values, so its consumers have nothing new to read, and one
    // whose hook failed has its old values back.
    let changing: BTreeSet<(&str, &str)> = staged
        .iter()
        .filter(|(_, st)| {
            matches!(
                st,
                SecretStage::Rotate | SecretStage::RotatedAtId | SecretStage::HookPending
            )
        })
        .map(|(s, _)| (s.namespace.as_str(), s.name.as_str()))
        .collect();
    let has_hook = spec
        .hooks
        .as_ref()
        .is_some_and(|h| h.before_restart.is_some());
    let (hook_starts, hook_ends, hook_failures) = hook_steps(&staged, id, past, has_hook);
    let ended_well = |s: &SecretInfo| {
        hook_ends.iter().any(|(e, end)| {
            e.namespace == s.namespace && e.name == s.name && *end == HookEnd::Succeeded
        })
    };
    // A consumer restarts once per rotation, so it waits until every Secret it reads has its
    // hook done: restarted earlier, it would keep a value its service no longer accepts.
    let awaiting_hook: BTreeSet<(&str, &str)> = staged
        .iter()
        .filter(|(s, st)| *st == SecretStage::HookPending && !ended_well(s))
        .map(|(s, _)| (s.namespace.as_str(), s.name.as_str()))
        .collect();
    let hooks_succeeded = if has_hook {
        staged
            .iter()
            .filter(|(s, st)| *st == SecretStage::RotatedAtId || ended_well(s))
            .count()
    } else {
        0
    };
    // A workload created after every Secret held its new value started with it.
    let restart_cutoff = past
        .secrets_rotated_at
        .map(|t| t + Duration::seconds(CREATED_AFTER_MARGIN_SECONDS));
    let created_since = |c: &ConsumerInfo| {
        restart_cutoff.is_some_and(|cut| c.created_at.is_some_and(|made| made > cut))
    };

    let (mut users, mut skipped): (Vec<&ConsumerInfo>, Vec<&ConsumerInfo>) = consumers
        .iter()
        .filter(|c| {
            c.secrets
                .iter()
                .any(|s| changing.contains(&(c.id.namespace.as_str(), s.as_str())))
        })
        .filter(|c| !created_since(c))
        .partition(|c| !c.restarts_on_delete);
    users.sort_by(|a, b| a.id.cmp(&b.id));
    skipped.sort_by(|a, b| a.id.cmp(&b.id));
    let stamped = |c: &&ConsumerInfo| c.stamped_id.as_deref() == Some(id);
    // A consumer that was not Ready before its restart is restarted, but whether its rollout
    // completes says nothing of the new values: it neither gates a batch nor stalls.
    let restarted = users
        .iter()
        .filter(|c| stamped(c) && (c.rollout_complete || c.restarted_unready))
        .count();
    let in_progress: Vec<&ConsumerInfo> = users
        .iter()
        .copied()
        .filter(|c| stamped(c) && !c.rollout_complete && !c.restarted_unready)
        .collect();

    let mut plan = RotationPlan {
        rotation_id: id.to_string(),
        queued: None,
        reverted: None,
        phase: RotationPhase::Complete,
        rotate: vec![],
        adopt: vec![],
        restart: vec![],
        in_progress: in_progress.iter().map(|c| c.id.clone()).collect(),
        stalled: vec![],
        foreign,
        unwritable,
        skipped: skipped.iter().map(|c| c.id.clone()).collect(),
        hook_starts,
        hook_ends,
        hooks_pending: awaiting_hook.len(),
        hooks_succeeded,
        hook_failures,
        restarted_for: restarted_for(&staged, &users, id),
        secrets_selected: secrets.len(),
        secrets_rotated: rotated_at_id,
        secrets_adopted_before: adopted_at_id,
        consumers_total: users.len(),
        consumers_restarted: restarted,
        next_deadline: None,
        restart_cutoff,
    };

    // Adoption is a stamp, not a change: it goes out whatever phase the rotation is in.
    plan.adopt = adopt;
    if !rotate.is_empty() {
        // Secrets first, all of them: restarting a consumer before its Secret holds the new
        // value would need a second restart.
        plan.phase = RotationPhase::Rotating;
        plan.rotate = rotate;
        return plan;
    }

    let timeout = Duration::seconds(i64::from(spec.rollout_timeout_seconds));
    let (overdue, waiting): (Vec<&ConsumerInfo>, Vec<&ConsumerInfo>) = in_progress
        .iter()
        .partition(|c| c.stamped_at.is_some_and(|t| now - t > timeout));
    plan.stalled = overdue.iter().map(|c| c.id.clone()).collect();
    if !waiting.is_empty() {
        // The batch under way gates the next one; a rollout that overran no longer does.
        plan.phase = RotationPhase::Restarting;
        plan.next_deadline = waiting
            .iter()
            .filter_map(|c| c.stamped_at.map(|t| t + timeout))
            .filter(|d| *d > now)
            .min();
        return plan;
    }
    let waits_for_hook = |c: &ConsumerInfo| {
        c.secrets
            .iter()
            .any(|s| awaiting_hook.contains(&(c.id.namespace.as_str(), s.as_str())))
    };
    let ready_to_restart: Vec<&ConsumerInfo> = users
        .iter()
        .copied()
        .filter(|c| !waits_for_hook(c))
        .collect();
    let batch = next_batch(
        &ready_to_restart,
        &overdue,
        id,
        spec.max_concurrent_restarts,
    );
    if !batch.is_empty() {
        plan.phase = RotationPhase::Restarting;
        plan.next_deadline = Some(now + timeout);
        plan.in_progress.extend(batch.iter().cloned());
        plan.restart = batch;
    } else if plan.hooks_pending > 0 {
        plan.phase = RotationPhase::RunningHooks;
        // A Job's end brings no event here (hook Jobs are read by name, not watched).
        plan.next_deadline = Some(now + Duration::seconds(HOOK_POLL_SECONDS));
    } else if !overdue.is_empty() {
        plan.phase = RotationPhase::Stalled;
    }
    plan
}

/// Each Secret rotated to `id`, with its consumers already restarted for it (one pass over the
/// consumers, not one per Secret).
fn restarted_for(
    staged: &[(&SecretInfo, SecretStage)],
    users: &[&ConsumerInfo],
    id: &str,
) -> Vec<(String, String, Vec<ConsumerRef>)> {
    let mut by_secret: BTreeMap<(&str, &str), Vec<ConsumerRef>> = staged
        .iter()
        .filter(|(_, st)| *st == SecretStage::RotatedAtId)
        .map(|(s, _)| ((s.namespace.as_str(), s.name.as_str()), Vec::new()))
        .collect();
    for c in users.iter().filter(|c| c.stamped_id.as_deref() == Some(id)) {
        for s in &c.secrets {
            if let Some(list) = by_secret.get_mut(&(c.id.namespace.as_str(), s.as_str())) {
                list.push(c.id.clone());
            }
        }
    }
    by_secret
        .into_iter()
        .map(|((ns, name), consumers)| (ns.to_string(), name.to_string(), consumers))
        .collect()
}

/// How often a pass looks again at hook Jobs that have not ended.
pub const HOOK_POLL_SECONDS: i64 = 3;

/// The hook steps of the Secrets whose hook has not ended: Jobs to start, ends to record, and
/// the failures to report (those recorded before, with their reasons, and those ending now).
#[allow(clippy::type_complexity)]
fn hook_steps(
    staged: &[(&SecretInfo, SecretStage)],
    id: &str,
    past: &Past,
    has_hook: bool,
) -> (
    Vec<SecretInfo>,
    Vec<(SecretInfo, HookEnd)>,
    Vec<UnwritableSecret>,
) {
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut failures = Vec::new();
    for (s, stage) in staged {
        let name = hooks::job_name(&past.profile_uid, &s.namespace, &s.name, id);
        match stage {
            SecretStage::HookEnded => {
                let recorded = past
                    .hook_failures
                    .iter()
                    .find(|f| f.namespace == s.namespace && f.name == s.name)
                    .map(|f| f.reason.clone());
                failures.push(UnwritableSecret {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    reason: recorded.unwrap_or_else(|| match s.mark {
                        Mark::HookLost => format!(
                            "hook Job {name} went away before Rampart saw it finish; check the \
                             service, then restart the Secret's consumers"
                        ),
                        _ => format!("hook Job {name} failed; the previous values were put back"),
                    }),
                });
            }
            SecretStage::HookPending => {
                let job = past
                    .hooks
                    .get(&(s.namespace.clone(), s.name.clone()))
                    .cloned()
                    .unwrap_or(HookJobState::Unknown);
                let started = s.mark == Mark::HookStarted;
                // The hook was taken out of the spec before its Job was made: nothing changed
                // the credential, so the values the consumers run with go back.
                let step = if !has_hook && !started {
                    HookStep::End(
                        HookEnd::Failed,
                        Some(
                            "hooks.beforeRestart was removed before its Job was created; the \
                             previous values were put back"
                                .to_string(),
                        ),
                    )
                } else {
                    hooks::next_step(started, &job, &name)
                };
                match step {
                    HookStep::Start => starts.push((*s).clone()),
                    HookStep::Wait => {}
                    HookStep::End(end, why) => {
                        if end != HookEnd::Succeeded {
                            failures.push(UnwritableSecret {
                                namespace: s.namespace.clone(),
                                name: s.name.clone(),
                                reason: why.unwrap_or_default(),
                            });
                        }
                        ends.push(((*s).clone(), end));
                    }
                }
            }
            _ => {}
        }
    }
    (starts, ends, failures)
}

/// The next consumers to restart: those not yet stamped, in order, up to `max`, leaving out
/// the namespaces of `stalled` rollouts. A rollout that cannot complete (a paused Deployment,
/// unschedulable pods) holds back only its own namespace, where its Secrets are, so one
/// tenant cannot stall the others.
fn next_batch(
    users: &[&ConsumerInfo],
    stalled: &[&ConsumerInfo],
    id: &str,
    max: i32,
) -> Vec<ConsumerRef> {
    let held: BTreeSet<&str> = stalled.iter().map(|c| c.id.namespace.as_str()).collect();
    users
        .iter()
        .filter(|c| c.stamped_id.as_deref() != Some(id))
        .filter(|c| !held.contains(c.id.namespace.as_str()))
        .take(max.max(1) as usize)
        .map(|c| c.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::TimeZone;
    use k8s_openapi::api::core::v1::{
        Container, EnvFromSource, EnvVar, EnvVarSource, SecretEnvSource, SecretKeySelector,
    };

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid")
    }

    fn spec(max: i32) -> SecretRotationControl {
        crate::api::fixtures::rotation("r2", max)
    }

    fn secret(name: &str, id: Option<&str>) -> SecretInfo {
        SecretInfo {
            namespace: "app".into(),
            name: name.into(),
            rotation_id: id.map(String::from),
            ..Default::default()
        }
    }

    fn adopted(name: &str, id: &str) -> SecretInfo {
        SecretInfo {
            adopted: true,
            ..secret(name, Some(id))
        }
    }

    fn consumer(name: &str, uses: &str, stamped: Option<&str>, complete: bool) -> ConsumerInfo {
        ConsumerInfo {
            id: ConsumerRef {
                namespace: "app".into(),
                kind: ConsumerKind::Deployment,
                name: name.into(),
            },
            secrets: BTreeSet::from([uses.to_string()]),
            stamped_id: stamped.map(String::from),
            stamped_at: stamped.map(|_| now() - Duration::seconds(10)),
            rollout_complete: complete,
            created_at: Some(now() - Duration::days(30)),
            restarts_on_delete: false,
            ready: true,
            restarted_unready: false,
        }
    }

    fn names(refs: &[ConsumerRef]) -> Vec<&str> {
        refs.iter().map(|r| r.name.as_str()).collect()
    }

    fn with_hook() -> SecretRotationControl {
        SecretRotationControl {
            keep_previous: true,
            regenerate: vec![crate::api::RegeneratedKey {
                key: "password".into(),
                length: 24,
                alphabet: Default::default(),
            }],
            hooks: Some(crate::api::RotationHooks {
                before_restart: Some(crate::api::RotationHook {
                    template: serde_json::json!({"spec": {"containers": [
                        {"name": "alter-user", "image": "registry.example/psql:16"}]}}),
                    volume_name: "rotated-secret".into(),
                    timeout_seconds: 60,
                }),
            }),
            ..spec(2)
        }
    }

    fn marked(name: &str, ns: &str, mark: Mark) -> SecretInfo {
        SecretInfo {
            namespace: ns.into(),
            mark,
            ..secret(name, Some("r2"))
        }
    }

    fn in_ns(mut c: ConsumerInfo, ns: &str) -> ConsumerInfo {
        c.id.namespace = ns.into();
        c
    }

    fn with_jobs(
        observed: RotationObserved,
        jobs: &[(&str, &str, HookJobState)],
    ) -> RotationObserved {
        RotationObserved {
            hooks: jobs
                .iter()
                .map(|(ns, s, st)| ((ns.to_string(), s.to_string()), st.clone()))
                .collect(),
            profile_uid: "uid-1".into(),
            profile_name: "p".into(),
            ..observed
        }
    }

    #[test]
    fn with_a_hook_the_secret_is_marked_hook_due_and_its_job_started_next() {
        let out = plan(
            &with_hook(),
            &observed(
                vec![secret("db", Some("r1"))],
                vec![consumer("web", "db", None, true)],
            ),
            now(),
        );
        assert!(matches!(
            out.writes.as_slice(),
            [Write::RotateSecret(SecretRotation {
                mark: Mark::HookDue,
                ..
            })]
        ));
        let due = with_jobs(
            observed(
                vec![marked("db", "app", Mark::HookDue)],
                vec![consumer("web", "db", None, true)],
            ),
            &[("app", "db", HookJobState::Missing)],
        );
        let out = plan(&with_hook(), &due, now());
        assert_eq!(out.findings.phase, RotationPhase::RunningHooks);
        match out.writes.as_slice() {
            [Write::StartHook { job, secret, .. }] => {
                assert_eq!(secret.name, "db");
                assert_eq!(job.key.name, hooks::job_name("uid-1", "app", "db", "r2"));
                assert_eq!(
                    job.manifest["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
                    "db"
                );
            }
            other => panic!("one hook to start, no restart: {other:?}"),
        }
        assert!(out.next_due.is_some(), "the Job is looked at again");
    }

    #[test]
    fn consumers_wait_for_the_hook_and_restart_once_it_completes() {
        let users = vec![consumer("web", "db", None, true)];
        let running = with_jobs(
            observed(vec![marked("db", "app", Mark::HookStarted)], users.clone()),
            &[("app", "db", HookJobState::Running)],
        );
        let out = plan(&with_hook(), &running, now());
        assert!(out.writes.is_empty(), "{:?}", out.writes);
        assert_eq!(out.findings.phase, RotationPhase::RunningHooks);
        assert_eq!(out.findings.hooks_pending, 1);

        let done = with_jobs(
            observed(vec![marked("db", "app", Mark::HookStarted)], users),
            &[("app", "db", HookJobState::Succeeded)],
        );
        let out = plan(&with_hook(), &done, now());
        let kinds: Vec<_> = out.writes.iter().map(|w| w.verb()).collect();
        assert_eq!(
            kinds,
            vec![
                super::super::WriteVerb::EndHook(HookEnd::Succeeded),
                super::super::WriteVerb::Restart
            ]
        );
    }

    #[test]
    fn a_failed_hook_puts_values_back_restarts_nothing_and_names_secret_and_job() {
        let out = plan(
            &with_hook(),
            &with_jobs(
                observed(
                    vec![marked("db", "app", Mark::HookStarted)],
                    vec![consumer("web", "db", None, true)],
                ),
                &[(
                    "app",
                    "db",
                    HookJobState::Failed("BackoffLimitExceeded".into()),
                )],
            ),
            now(),
        );
        match out.writes.as_slice() {
            [Write::EndHook {
                end: HookEnd::Failed,
                regenerate,
                ..
            }] => {
                assert_eq!(regenerate, &vec!["password".to_string()]);
            }
            other => panic!("the values go back and nothing restarts: {other:?}"),
        }
        let failure = &out.findings.hook_failures[0];
        assert_eq!(failure.name, "db");
        assert!(failure
            .reason
            .contains(&hooks::job_name("uid-1", "app", "db", "r2")));
        assert!(out.events.iter().any(|e| e.reason == "RotationHookFailed"));

        // Once recorded, the Secret is left alone and the rotation completes without it.
        let after = plan(
            &with_hook(),
            &with_jobs(
                observed(
                    vec![marked("db", "app", Mark::HookFailed)],
                    vec![consumer("web", "db", None, true)],
                ),
                &[],
            ),
            now(),
        );
        assert!(after.writes.is_empty(), "{:?}", after.writes);
        assert_eq!(after.findings.phase, RotationPhase::Complete);
        assert_eq!(after.findings.consumers_total, 0);
        assert_eq!(after.findings.hook_failures.len(), 1);
    }

    #[test]
    fn a_started_hook_whose_job_vanished_is_never_run_again() {
        let out = plan(
            &with_hook(),
            &with_jobs(
                observed(vec![marked("db", "app", Mark::HookStarted)], vec![]),
                &[("app", "db", HookJobState::Missing)],
            ),
            now(),
        );
        assert!(matches!(
            out.writes.as_slice(),
            [Write::EndHook {
                end: HookEnd::Lost,
                ..
            }]
        ));
        // A Job that could not be read is waited for, not taken for gone.
        let out = plan(
            &with_hook(),
            &with_jobs(
                observed(vec![marked("db", "app", Mark::HookStarted)], vec![]),
                &[],
            ),
            now(),
        );
        assert!(out.writes.is_empty());
    }

    #[test]
    fn a_hook_removed_before_its_job_was_made_puts_the_values_back() {
        let out = plan(
            &spec(2),
            &with_jobs(
                observed(
                    vec![marked("db", "app", Mark::HookDue)],
                    vec![consumer("web", "db", None, true)],
                ),
                &[("app", "db", HookJobState::Missing)],
            ),
            now(),
        );
        assert!(
            matches!(
                out.writes.as_slice(),
                [Write::EndHook {
                    end: HookEnd::Failed,
                    ..
                }]
            ),
            "{:?}",
            out.writes
        );
        assert!(out.findings.restart.is_empty());
    }

    #[test]
    fn a_hook_pending_in_one_namespace_holds_back_only_its_own_consumers() {
        let out = plan(
            &with_hook(),
            &with_jobs(
                observed(
                    vec![
                        marked("db", "a", Mark::HookStarted),
                        marked("db", "b", Mark::Rotated),
                    ],
                    vec![
                        in_ns(consumer("web", "db", None, true), "a"),
                        in_ns(consumer("web", "db", None, true), "b"),
                    ],
                ),
                &[("a", "db", HookJobState::Running)],
            ),
            now(),
        );
        assert_eq!(
            out.findings.restart,
            vec![ConsumerRef {
                namespace: "b".into(),
                kind: ConsumerKind::Deployment,
                name: "web".into()
            }]
        );
    }

    #[test]
    fn a_consumer_of_two_secrets_waits_for_both_hooks() {
        let mut both = consumer("web", "db", None, true);
        both.secrets.insert("cache".into());
        let out = plan(
            &with_hook(),
            &with_jobs(
                observed(
                    vec![
                        marked("db", "app", Mark::Rotated),
                        marked("cache", "app", Mark::HookStarted),
                    ],
                    vec![both],
                ),
                &[("app", "cache", HookJobState::Running)],
            ),
            now(),
        );
        assert!(out.findings.restart.is_empty());
        assert_eq!(out.findings.phase, RotationPhase::RunningHooks);
    }

    #[test]
    fn completion_names_each_rotated_secret_and_its_restarted_consumers_once() {
        let done = observed(
            vec![secret("db", Some("r2"))],
            vec![consumer("web", "db", Some("r2"), true)],
        );
        let out = plan(&spec(2), &done, now());
        assert_eq!(out.findings.phase, RotationPhase::Complete);
        let notes: Vec<&str> = out
            .events
            .iter()
            .filter(|e| e.reason == "SecretRotated")
            .map(|e| e.note.as_str())
            .collect();
        assert_eq!(
            notes,
            vec!["Secret app/db rotated to r2: restarted Deployment app/web"]
        );
        let again = RotationObserved {
            previous: Some(RotationStatus {
                observed_rotation_id: Some("r2".into()),
                phase: RotationPhase::Complete,
                ..crate::status::empty_rotation_status()
            }),
            ..done
        };
        assert!(plan(&spec(2), &again, now())
            .events
            .iter()
            .all(|e| e.reason != "SecretRotated"));
    }

    #[test]
    fn secrets_rotate_first_and_only_once() {
        let p = plan_rotation(
            &spec(2),
            &[secret("db", Some("r1")), secret("api", Some("r2"))],
            &[consumer("web", "db", None, true)],
            &Past::default(),
            now(),
        );
        assert_eq!(p.phase, RotationPhase::Rotating);
        assert_eq!(
            p.rotate.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["db"],
            "a Secret at the current id is never regenerated"
        );
        assert!(
            p.restart.is_empty(),
            "no restart before every Secret holds its new value"
        );
    }

    #[test]
    fn secret_that_never_carried_an_id_is_adopted_not_rotated() {
        let p = plan_rotation(
            &spec(2),
            &[secret("db", None)],
            &[consumer("web", "db", None, true)],
            &Past::default(),
            now(),
        );
        assert_eq!(
            p.adopt.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["db"]
        );
        assert!(p.rotate.is_empty(), "an adopted Secret keeps its values");
        assert!(p.restart.is_empty(), "its consumers are not restarted");
        assert_eq!(p.phase, RotationPhase::Complete);
        assert_eq!(
            (p.adopt.len(), p.secrets_rotated, p.consumers_total),
            (1, 0, 0)
        );
    }

    #[test]
    fn adopted_secret_stays_put_until_the_id_changes_then_rotates() {
        let consumers = [consumer("web", "db", None, true)];
        let settled = plan_rotation(
            &spec(2),
            &[adopted("db", "r2")],
            &consumers,
            &Past::default(),
            now(),
        );
        assert!(settled.adopt.is_empty() && settled.rotate.is_empty());
        assert!(settled.restart.is_empty());
        assert_eq!(settled.phase, RotationPhase::Complete);
        assert_eq!(settled.secrets_adopted_before, 1);

        let mut bumped = spec(2);
        bumped.rotation_id = "r3".into();
        let p = plan_rotation(
            &bumped,
            &[adopted("db", "r2")],
            &consumers,
            &Past::default(),
            now(),
        );
        assert_eq!(p.rotate.len(), 1, "an older id rotates, adopted or not");
        assert_eq!(p.phase, RotationPhase::Rotating);
        assert_eq!(p.consumers_total, 1, "and then its consumers restart");
    }

    #[test]
    fn only_consumers_of_rotated_secrets_restart_beside_adopted_ones() {
        let p = plan_rotation(
            &spec(5),
            &[adopted("legacy", "r2"), secret("api", Some("r2"))],
            &[
                consumer("uses-legacy", "legacy", None, true),
                consumer("uses-api", "api", None, true),
            ],
            &Past::default(),
            now(),
        );
        assert_eq!(names(&p.restart), vec!["uses-api"]);
        assert_eq!((p.secrets_rotated, p.secrets_adopted_before), (1, 1));
    }

    #[test]
    fn audit_neither_adopts_nor_counts_pending_adoptions() {
        let p = plan_rotation(
            &spec(2),
            &[secret("db", None)],
            &[consumer("web", "db", None, true)],
            &Past::default(),
            now(),
        );
        assert_eq!(p.adopt.len(), 1, "reported as what would be adopted");
        let audit = crate::status::rotation_status(&p, crate::api::Mode::Audit, None, now());
        assert_eq!(audit.secrets_adopted, 0, "nothing was stamped");
        assert_eq!(
            audit.phase,
            RotationPhase::Complete,
            "adoption changes no value"
        );
        let enforce = crate::status::rotation_status(&p, crate::api::Mode::Enforce, None, now());
        assert_eq!(enforce.secrets_adopted, 1);
        assert!(p.restart.is_empty());
    }

    #[test]
    fn audit_reports_a_rotation_with_work_left_as_pending() {
        let p = plan_rotation(
            &spec(1),
            &[secret("db", Some("r1"))],
            &[
                consumer("a", "db", None, true),
                consumer("b", "db", None, true),
            ],
            &Past::default(),
            now(),
        );
        assert_eq!(p.rotate.len(), 1);
        let audit = crate::status::rotation_status(&p, crate::api::Mode::Audit, None, now());
        assert_eq!(audit.phase, RotationPhase::Pending);
        assert!(audit.in_progress.is_empty());
    }

    #[test]
    fn restarts_go_in_batches_of_max_concurrent() {
        let consumers: Vec<ConsumerInfo> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| consumer(n, "db", None, true))
            .collect();
        let p = plan_rotation(
            &spec(2),
            &[secret("db", Some("r2"))],
            &consumers,
            &Past::default(),
            now(),
        );
        assert_eq!(p.phase, RotationPhase::Restarting);
        assert_eq!(names(&p.restart), vec!["a", "b"]);
    }

    #[test]
    fn next_batch_waits_for_the_previous_rollouts() {
        let consumers = vec![
            consumer("a", "db", Some("r2"), true),
            consumer("b", "db", Some("r2"), false),
            consumer("c", "db", None, true),
        ];
        let p = plan_rotation(
            &spec(2),
            &[secret("db", Some("r2"))],
            &consumers,
            &Past::default(),
            now(),
        );
        assert!(p.restart.is_empty());
        assert_eq!(names(&p.in_progress), vec!["b"]);
        assert_eq!(p.next_deadline, Some(now() + Duration::seconds(50)));

        let done = vec![
            consumer("a", "db", Some("r2"), true),
            consumer("b", "db", Some("r2"), true),
            consumer("c", "db", None, true),
        ];
        let p = plan_rotation(
            &spec(2),
            &[secret("db", Some("r2"))],
            &done,
            &Past::default(),
            now(),
        );
        assert_eq!(
            names(&p.restart),
            vec!["c"],
            "a stamped consumer is never stamped again"
        );
    }

    #[test]
    fn overdue_rollout_stalls_the_rotation_and_names_the_workload() {
        let mut slow = consumer("slow", "db", Some("r2"), false);
        slow.stamped_at = Some(now() - Duration::seconds(61));
        let p = plan_rotation(
            &spec(2),
            &[secret("db", Some("r2"))],
            &[slow, consumer("next", "db", None, true)],
            &Past::default(),
            now(),
        );
        assert_eq!(p.phase, RotationPhase::Stalled);
        assert_eq!(names(&p.stalled), vec!["slow"]);
        assert!(
            p.restart.is_empty(),
            "a stalled rotation does not barrel on"
        );
    }

    #[test]
    fn complete_when_every_consumer_rolled_out() {
        let p = plan_rotation(
            &spec(2),
            &[secret("db", Some("r2"))],
            &[
                consumer("a", "db", Some("r2"), true),
                consumer("other", "unrelated", None, true),
            ],
            &Past::default(),
            now(),
        );
        assert_eq!(p.phase, RotationPhase::Complete);
        assert_eq!(
            (p.consumers_total, p.consumers_restarted),
            (1, 1),
            "only consumers of selected Secrets count"
        );
    }

    fn observed(secrets: Vec<SecretInfo>, consumers: Vec<ConsumerInfo>) -> RotationObserved {
        RotationObserved {
            secrets,
            consumers,
            ..Default::default()
        }
    }

    fn verbs(out: &Outcome<RotationPlan>) -> Vec<(super::super::WriteVerb, String)> {
        out.writes
            .iter()
            .map(|w| (w.verb(), w.target().name))
            .collect()
    }

    #[test]
    fn outcome_rotates_every_stale_secret_before_any_restart() {
        use super::super::WriteVerb::*;
        let out = plan(
            &spec(1),
            &observed(
                vec![secret("db", Some("r1")), secret("api", Some("r1"))],
                vec![
                    consumer("a", "db", None, true),
                    consumer("b", "api", None, true),
                ],
            ),
            now(),
        );
        assert_eq!(out.findings.phase, RotationPhase::Rotating);
        assert_eq!(
            verbs(&out),
            vec![(Rotate, "db".into()), (Rotate, "api".into())]
        );
    }

    #[test]
    fn outcome_restarts_one_batch_and_waits_for_its_rollouts() {
        use super::super::WriteVerb::*;
        let rotated = vec![secret("db", Some("r2"))];
        let first = plan(
            &spec(2),
            &observed(
                rotated.clone(),
                vec![
                    consumer("a", "db", None, true),
                    consumer("b", "db", None, true),
                    consumer("c", "db", None, true),
                ],
            ),
            now(),
        );
        assert_eq!(
            verbs(&first),
            vec![(Restart, "a".into()), (Restart, "b".into())]
        );
        assert_eq!(first.next_due, Some(now() + Duration::seconds(60)));
        // The batch is stamped but still rolling out: nothing more until it completes.
        let waiting = plan(
            &spec(2),
            &observed(
                rotated,
                vec![
                    consumer("a", "db", Some("r2"), true),
                    consumer("b", "db", Some("r2"), false),
                    consumer("c", "db", None, true),
                ],
            ),
            now(),
        );
        assert!(waiting.writes.is_empty());
        assert_eq!(waiting.findings.phase, RotationPhase::Restarting);
        assert_eq!(waiting.next_due, Some(now() + Duration::seconds(50)));
    }

    #[test]
    fn outcome_adopts_unstamped_secrets_without_restarts() {
        use super::super::WriteVerb::*;
        let out = plan(
            &spec(5),
            &observed(
                vec![secret("legacy", None)],
                vec![consumer("a", "legacy", None, true)],
            ),
            now(),
        );
        assert_eq!(verbs(&out), vec![(Adopt, "legacy".into())]);
        assert_eq!(out.findings.phase, RotationPhase::Complete);
    }

    #[test]
    fn a_stall_is_announced_once() {
        let stalled = consumer("a", "db", Some("r2"), false);
        let mut late = stalled.clone();
        late.stamped_at = Some(now() - Duration::seconds(120));
        let mut o = observed(vec![secret("db", Some("r2"))], vec![late]);
        let first = plan(&spec(1), &o, now());
        assert_eq!(first.findings.phase, RotationPhase::Stalled);
        assert_eq!(first.events.len(), 1);
        assert!(first.events[0].warning);
        o.previous = Some(crate::status::rotation_status(
            &first.findings,
            crate::api::Mode::Enforce,
            None,
            now(),
        ));
        assert!(plan(&spec(1), &o, now()).events.is_empty());
    }

    #[test]
    fn a_completed_rotation_stays_complete_when_a_consumer_scales_or_fails_later() {
        // Stamped at the id long ago, its pods now short of ready (a scale-up, a crash).
        let mut scaling = consumer("a", "db", Some("r2"), false);
        scaling.stamped_at = Some(now() - Duration::seconds(3600));
        let mut o = observed(vec![secret("db", Some("r2"))], vec![scaling]);
        // Without a record of completion it is a rollout that overran its timeout...
        assert_eq!(
            plan(&spec(1), &o, now()).findings.phase,
            RotationPhase::Stalled
        );
        // ...but the status says this id completed: nothing is in progress, no event.
        o.previous = Some(RotationStatus {
            phase: RotationPhase::Complete,
            observed_rotation_id: Some("r2".into()),
            ..crate::status::empty_rotation_status()
        });
        let out = plan(&spec(1), &o, now());
        assert_eq!(out.findings.phase, RotationPhase::Complete);
        assert!(out.findings.in_progress.is_empty() && out.events.is_empty());
        assert!(out.writes.is_empty());
        // Completion of an earlier id does not carry over to a new one.
        o.previous = Some(RotationStatus {
            phase: RotationPhase::Complete,
            observed_rotation_id: Some("r1".into()),
            ..crate::status::empty_rotation_status()
        });
        assert_eq!(
            plan(&spec(1), &o, now()).findings.phase,
            RotationPhase::Stalled
        );
    }

    fn status_at(id: &str, phase: RotationPhase, used: &[&str]) -> RotationStatus {
        RotationStatus {
            observed_rotation_id: Some(id.into()),
            phase,
            used_rotation_ids: used.iter().map(|u| u.to_string()).collect(),
            secrets_rotated_at: (phase != RotationPhase::Rotating)
                .then(|| now() - Duration::minutes(10)),
            ..crate::status::empty_rotation_status()
        }
    }

    fn with_previous(
        secrets: Vec<SecretInfo>,
        consumers: Vec<ConsumerInfo>,
        previous: RotationStatus,
    ) -> RotationObserved {
        RotationObserved {
            secrets,
            consumers,
            previous: Some(previous),
            ..Default::default()
        }
    }

    fn spec_at(id: &str, max: i32) -> SecretRotationControl {
        crate::api::fixtures::rotation(id, max)
    }

    #[test]
    fn a_revert_to_an_id_applied_before_rotates_nothing_and_is_reported() {
        let out = plan(
            &spec_at("r1", 2),
            &with_previous(
                vec![secret("db", Some("r2"))],
                vec![consumer("web", "db", Some("r2"), true)],
                status_at("r2", RotationPhase::Complete, &["r1", "r2"]),
            ),
            now(),
        );
        assert!(out.writes.is_empty(), "{:?}", out.writes);
        assert_eq!(out.findings.rotation_id, "r2", "the Secrets stay at r2");
        assert_eq!(out.findings.reverted.as_deref(), Some("r1"));
        assert_eq!(out.findings.phase, RotationPhase::Complete);
        assert_eq!(
            out.events
                .iter()
                .map(|e| e.reason.as_str())
                .collect::<Vec<_>>(),
            vec!["RotationRevertIgnored"]
        );
        let mut told = status_at("r2", RotationPhase::Complete, &["r1", "r2"]);
        told.reverted_rotation_id = Some("r1".into());
        let again = plan(
            &spec_at("r1", 2),
            &with_previous(vec![secret("db", Some("r2"))], vec![], told),
            now(),
        );
        assert!(again.events.is_empty(), "reported once");
    }

    #[test]
    fn a_status_from_before_the_used_list_still_stops_a_revert_to_its_id() {
        // r2 was applied (and recorded only as observedRotationId); going back to r2 after a
        // bump to r3 is a revert too.
        let mut previous = status_at("r3", RotationPhase::Complete, &[]);
        previous.used_rotation_ids = vec!["r2".into()];
        let choice = choose_rotation_id("r2", Some(&previous));
        assert_eq!(choice.reverted.as_deref(), Some("r2"));
        assert_eq!(choice.current, "r3");
        let upgraded = status_at("r3", RotationPhase::Complete, &[]);
        assert_eq!(choose_rotation_id("r3", Some(&upgraded)).reverted, None);
        assert_eq!(
            choose_rotation_id("r4", Some(&upgraded)).current,
            "r4",
            "a new id after a completed rotation starts at once"
        );
    }

    #[test]
    fn audit_records_no_id_so_a_later_enforce_may_use_it() {
        let audit = status_at("r1", RotationPhase::Pending, &[]);
        let choice = choose_rotation_id("r2", Some(&audit));
        assert_eq!((choice.current.as_str(), choice.queued), ("r2", None));
        let back = choose_rotation_id("r0", Some(&audit));
        assert_eq!((back.current.as_str(), back.reverted), ("r0", None));
    }

    #[test]
    fn a_secret_stamped_only_by_another_profile_is_adopted_not_rotated() {
        let foreign = SecretInfo {
            other_profiles: 1,
            ..secret("db", None)
        };
        let out = plan(
            &spec(2),
            &observed(vec![foreign], vec![consumer("web", "db", None, true)]),
            now(),
        );
        use super::super::WriteVerb::*;
        assert_eq!(verbs(&out), vec![(Adopt, "db".into())]);
        // Once both entries are there, neither profile has anything to write.
        let both = SecretInfo {
            other_profiles: 1,
            ..adopted("db", "r2")
        };
        let settled = plan(
            &spec(2),
            &observed(vec![both], vec![consumer("web", "db", None, true)]),
            now(),
        );
        assert!(settled.writes.is_empty());
        assert_eq!(settled.findings.phase, RotationPhase::Complete);
    }

    #[test]
    fn an_old_format_stamp_is_this_profiles_only_when_it_applied_that_id() {
        let legacy = |id: &str| SecretInfo {
            legacy_id: Some(id.into()),
            ..secret("db", None)
        };
        let unknown = plan_rotation(&spec(2), &[legacy("r0")], &[], &Past::default(), now());
        assert_eq!(
            unknown.adopt.len(),
            1,
            "an upgrade adopts, it does not rotate"
        );
        assert!(unknown.rotate.is_empty());
        let known = Past {
            known_ids: BTreeSet::from(["r1".to_string()]),
            secrets_rotated_at: None,
            unwritable: vec![],
            ..Default::default()
        };
        let mine = plan_rotation(&spec(2), &[legacy("r1")], &[], &known, now());
        assert_eq!(mine.rotate.len(), 1, "its own earlier id rotates");
        let current = plan_rotation(&spec_at("r1", 2), &[legacy("r1")], &[], &known, now());
        assert!(current.rotate.is_empty() && current.adopt.is_empty());
        assert_eq!(
            current.secrets_rotated, 1,
            "at the current id: nothing to write"
        );
    }

    #[test]
    fn a_secret_met_at_an_older_id_after_the_secret_stage_is_adopted() {
        // The namespace left scope at r1 and came back once the rotation to r2 had every
        // Secret in scope rotated: its consumers still run on the value it holds.
        let out = plan(
            &spec(2),
            &with_previous(
                vec![secret("db", Some("r2")), secret("returned", Some("r1"))],
                vec![
                    consumer("a", "db", Some("r2"), true),
                    consumer("b", "returned", Some("r1"), true),
                ],
                status_at("r2", RotationPhase::Complete, &["r1", "r2"]),
            ),
            now(),
        );
        use super::super::WriteVerb::*;
        assert_eq!(verbs(&out), vec![(Adopt, "returned".into())]);
        assert_eq!(out.findings.consumers_total, 1, "b is not restarted");
        // While the Secret stage is under way, an older id in scope is part of the rotation.
        let rotating = plan(
            &spec(2),
            &with_previous(
                vec![secret("db", Some("r1"))],
                vec![],
                status_at("r2", RotationPhase::Rotating, &["r1", "r2"]),
            ),
            now(),
        );
        assert_eq!(verbs(&rotating), vec![(Rotate, "db".into())]);
    }

    /// A bump while hooks run waits too: rotating again then would put the value the hook is
    /// setting into `.previous` and lose the one the consumers run with.
    #[test]
    fn a_bump_while_hooks_run_waits_for_the_rotation_to_complete() {
        let previous = status_at("r1", RotationPhase::RunningHooks, &["r0", "r1"]);
        let bumped = SecretRotationControl {
            rotation_id: "r2".into(),
            ..with_hook()
        };
        let out = plan(
            &bumped,
            &with_jobs(
                with_previous(
                    vec![SecretInfo {
                        mark: Mark::HookStarted,
                        ..secret("db", Some("r1"))
                    }],
                    vec![consumer("web", "db", None, true)],
                    previous,
                ),
                &[("app", "db", HookJobState::Running)],
            ),
            now(),
        );
        assert!(
            out.writes.is_empty(),
            "nothing regenerated: {:?}",
            out.writes
        );
        assert_eq!(out.findings.rotation_id, "r1");
        assert_eq!(out.findings.queued.as_deref(), Some("r2"));
        assert_eq!(out.findings.phase, RotationPhase::RunningHooks);
    }

    #[test]
    fn a_bump_during_restarting_waits_for_the_rotation_to_complete() {
        use super::super::WriteVerb::*;
        let previous = status_at("r1", RotationPhase::Restarting, &["r0", "r1"]);
        let restarting = vec![
            consumer("a", "db", Some("r1"), true),
            consumer("b", "db", None, true),
        ];
        let out = plan(
            &spec_at("r2", 1),
            &with_previous(vec![secret("db", Some("r1"))], restarting, previous.clone()),
            now(),
        );
        assert_eq!(
            verbs(&out),
            vec![(Restart, "b".into())],
            "no Secret is regenerated while b still runs on the value before r1"
        );
        assert_eq!(out.findings.rotation_id, "r1");
        assert_eq!(out.findings.queued.as_deref(), Some("r2"));
        assert_eq!(
            out.events
                .iter()
                .map(|e| e.reason.as_str())
                .collect::<Vec<_>>(),
            vec!["RotationQueued"]
        );
        assert!(out.writes.iter().all(|w| match w {
            Write::StampWorkload { rotation_id, .. } => rotation_id == "r1",
            _ => false,
        }));
        // b rolled out: r1 is complete, and r2 starts in the same pass.
        let done = plan(
            &spec_at("r2", 1),
            &with_previous(
                vec![secret("db", Some("r1"))],
                vec![
                    consumer("a", "db", Some("r1"), true),
                    consumer("b", "db", Some("r1"), true),
                ],
                previous,
            ),
            now(),
        );
        assert_eq!(verbs(&done), vec![(Rotate, "db".into())]);
        assert_eq!(done.findings.rotation_id, "r2");
        assert_eq!(done.findings.queued, None);
        match &done.writes[0] {
            Write::RotateSecret(r) => {
                assert_eq!(r.rotation_id, "r2");
                assert_eq!(r.expected.as_deref(), Some("r1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stalled_rotation_holds_the_queue() {
        let mut stuck = consumer("a", "db", Some("r1"), false);
        stuck.stamped_at = Some(now() - Duration::seconds(600));
        let out = plan(
            &spec_at("r2", 1),
            &with_previous(
                vec![secret("db", Some("r1"))],
                vec![stuck],
                status_at("r1", RotationPhase::Stalled, &["r1"]),
            ),
            now(),
        );
        assert!(out.writes.is_empty());
        assert_eq!(out.findings.phase, RotationPhase::Stalled);
        assert_eq!(out.findings.queued.as_deref(), Some("r2"));
    }

    #[test]
    fn a_workload_created_after_the_secrets_held_their_values_is_not_restarted() {
        let rotated_at = now() - Duration::minutes(10);
        let past = Past {
            known_ids: BTreeSet::new(),
            secrets_rotated_at: Some(rotated_at),
            unwritable: vec![],
            ..Default::default()
        };
        let mut late = consumer("late", "db", None, true);
        late.created_at = Some(rotated_at + Duration::minutes(1));
        let mut racing = consumer("racing", "db", None, true);
        // Within the clock margin: it may have started before; restarted to be sure.
        racing.created_at = Some(rotated_at + Duration::seconds(2));
        let p = plan_rotation(
            &spec(5),
            &[secret("db", Some("r2"))],
            &[consumer("early", "db", None, true), late, racing],
            &past,
            now(),
        );
        assert_eq!(names(&p.restart), vec!["early", "racing"]);
        assert_eq!(p.consumers_total, 2);
        assert_eq!(
            p.restart_cutoff,
            Some(rotated_at + Duration::seconds(CREATED_AFTER_MARGIN_SECONDS)),
            "the writer checks the same cutoff on a fresh read"
        );
    }

    fn in_namespace<T>(ns: &str, mut items: Vec<T>, set: impl Fn(&mut T, &str)) -> Vec<T> {
        items.iter_mut().for_each(|i| set(i, ns));
        items
    }

    fn consumers_in(ns: &str, items: Vec<ConsumerInfo>) -> Vec<ConsumerInfo> {
        in_namespace(ns, items, |c, ns| c.id.namespace = ns.into())
    }

    fn secrets_in(ns: &str, items: Vec<SecretInfo>) -> Vec<SecretInfo> {
        in_namespace(ns, items, |s, ns| s.namespace = ns.into())
    }

    fn overdue(name: &str, uses: &str) -> ConsumerInfo {
        let mut c = consumer(name, uses, Some("r2"), false);
        c.stamped_at = Some(now() - Duration::seconds(61));
        c
    }

    #[test]
    fn a_stalled_rollout_holds_back_only_its_own_namespace() {
        let secrets = [
            secrets_in("a", vec![secret("db", Some("r2"))]),
            secrets_in("b", vec![secret("db", Some("r2"))]),
        ]
        .concat();
        let consumers = [
            consumers_in(
                "a",
                vec![overdue("paused", "db"), consumer("web", "db", None, true)],
            ),
            consumers_in(
                "b",
                vec![
                    consumer("api", "db", None, true),
                    consumer("worker", "db", None, true),
                ],
            ),
        ]
        .concat();
        let p = plan_rotation(&spec(2), &secrets, &consumers, &Past::default(), now());
        assert_eq!(names(&p.stalled), vec!["paused"]);
        assert_eq!(
            names(&p.restart),
            vec!["api", "worker"],
            "namespace b proceeds; a's consumer waits for a's stalled rollout"
        );
        assert_eq!(p.phase, RotationPhase::Restarting);
        assert!(
            p.next_deadline.is_some(),
            "the new batch has its own timeout"
        );
    }

    #[test]
    fn a_stall_waits_for_the_batch_under_way_then_stalls_when_only_its_namespace_is_left() {
        let secrets = [
            secrets_in("a", vec![secret("db", Some("r2"))]),
            secrets_in("b", vec![secret("db", Some("r2"))]),
        ]
        .concat();
        let mut consumers = [
            consumers_in(
                "a",
                vec![overdue("paused", "db"), consumer("web", "db", None, true)],
            ),
            consumers_in("b", vec![consumer("api", "db", Some("r2"), false)]),
        ]
        .concat();
        let p = plan_rotation(&spec(2), &secrets, &consumers, &Past::default(), now());
        assert!(
            p.restart.is_empty(),
            "b's rollout under way gates the batch"
        );
        assert_eq!(p.phase, RotationPhase::Restarting);
        assert_eq!(
            p.next_deadline,
            Some(now() - Duration::seconds(10) + Duration::seconds(60)),
            "the next look is at the timeout of the rollout under way, not the overdue one"
        );

        consumers[2].rollout_complete = true;
        let p = plan_rotation(&spec(2), &secrets, &consumers, &Past::default(), now());
        assert!(p.restart.is_empty());
        assert_eq!(p.phase, RotationPhase::Stalled);
        assert_eq!(p.consumers_restarted, 1);
    }

    #[test]
    fn a_secret_controlled_by_another_controller_is_neither_rotated_nor_adopted() {
        let owned = |id: Option<&str>| SecretInfo {
            controller: Some("ExternalSecret/db".into()),
            ..secret("db", id)
        };
        let consumers = [consumer("web", "db", None, true)];
        for s in [owned(None), owned(Some("r1"))] {
            let p = plan_rotation(&spec(2), &[s], &consumers, &Past::default(), now());
            assert!(p.rotate.is_empty() && p.adopt.is_empty() && p.restart.is_empty());
            assert_eq!(p.foreign.len(), 1);
            assert_eq!((p.secrets_rotated, p.consumers_total), (0, 0));
            assert_eq!(p.phase, RotationPhase::Complete);
        }
    }

    #[test]
    fn a_secret_refused_for_this_id_is_skipped_and_the_rest_proceed() {
        let past = Past {
            unwritable: vec![UnwritableSecret {
                namespace: "app".into(),
                name: "frozen".into(),
                reason: "immutable".into(),
            }],
            ..Past::default()
        };
        let secrets = [secret("frozen", Some("r1")), secret("db", Some("r2"))];
        let consumers = [
            consumer("old", "frozen", None, true),
            consumer("web", "db", None, true),
        ];
        let p = plan_rotation(&spec(2), &secrets, &consumers, &past, now());
        assert!(p.rotate.is_empty(), "a refused Secret is not tried again");
        assert_eq!(
            names(&p.restart),
            vec!["web"],
            "its consumers are left alone"
        );
        assert_eq!(p.unwritable, past.unwritable);
        assert_eq!(p.secrets_rotated, 1);

        // The status keeps the refusal for its id only: a new id tries again.
        let mut o = observed(secrets.to_vec(), consumers.to_vec());
        o.previous = Some(RotationStatus {
            observed_rotation_id: Some("r2".into()),
            phase: RotationPhase::Restarting,
            used_rotation_ids: vec!["r1".into(), "r2".into()],
            unwritable_secrets: vec![crate::api::RotationItem {
                namespace: "app".into(),
                kind: "Secret".into(),
                name: "frozen".into(),
                reason: "immutable".into(),
            }],
            ..crate::status::empty_rotation_status()
        });
        assert!(plan(&spec(2), &o, now()).findings.rotate.is_empty());
        if let Some(p) = o.previous.as_mut() {
            p.phase = RotationPhase::Complete;
        }
        let next = plan(&spec_at("r3", 2), &o, now());
        assert_eq!(next.findings.rotate.len(), 2, "a new id tries it again");
    }

    #[test]
    fn a_consumer_not_ready_before_its_restart_is_restarted_but_gates_no_batch() {
        let mut broken = consumer("aaa-broken", "db", None, false);
        broken.ready = false;
        let consumers = vec![broken, consumer("bbb-web", "db", None, true)];
        let o = observed(vec![secret("db", Some("r2"))], consumers.clone());
        let out = plan(&spec(1), &o, now());
        assert!(matches!(
            out.writes.as_slice(),
            [Write::StampWorkload { consumer, gates: false, .. }] if consumer.name == "aaa-broken"
        ));

        // Stamped, marked, its rollout going nowhere long past the timeout.
        let mut stamped = consumers;
        stamped[0].stamped_id = Some("r2".into());
        stamped[0].stamped_at = Some(now() - Duration::seconds(600));
        stamped[0].restarted_unready = true;
        let p = plan_rotation(
            &spec(1),
            &[secret("db", Some("r2"))],
            &stamped,
            &Past::default(),
            now(),
        );
        assert_eq!(
            names(&p.restart),
            vec!["bbb-web"],
            "it does not gate the batch"
        );
        assert!(p.stalled.is_empty(), "nor does it stall");
        assert_eq!(p.consumers_restarted, 1);
    }

    #[test]
    fn an_on_delete_consumer_is_reported_not_stamped() {
        let mut manual = consumer("db-0", "db", None, true);
        manual.id.kind = ConsumerKind::StatefulSet;
        manual.restarts_on_delete = true;
        let p = plan_rotation(
            &spec(2),
            &[secret("db", Some("r2"))],
            &[manual, consumer("web", "db", None, true)],
            &Past::default(),
            now(),
        );
        assert_eq!(names(&p.restart), vec!["web"]);
        assert_eq!(names(&p.skipped), vec!["db-0"]);
        assert_eq!(p.consumers_total, 1);
    }

    #[test]
    fn secret_references_are_found_everywhere() {
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "c".into(),
                env: Some(vec![EnvVar {
                    name: "P".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "from-env".into(),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                }]),
                env_from: Some(vec![EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "from-envfrom".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        };
        spec.volumes = Some(vec![
            serde_json::from_value(serde_json::json!({"name": "v", "secret": {"secretName": "from-volume"}})).expect("volume"),
            serde_json::from_value(serde_json::json!({"name": "p", "projected": {"sources": [{"secret": {"name": "from-projected"}}]}})).expect("volume"),
        ]);
        let got: Vec<String> = secrets_used_by(&spec).into_iter().collect();
        assert_eq!(
            got,
            vec!["from-env", "from-envfrom", "from-projected", "from-volume"]
        );
    }
}
