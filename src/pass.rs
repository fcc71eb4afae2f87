//! One profile's pass, which only sequences: observe ([`crate::observe`]) → plan each control
//! ([`crate::controls`], pure) → execute ([`crate::apply::Writer`]) → status
//! ([`crate::status`], pure, written only when it changed). Also the cleanup of a deleted
//! profile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use futures::stream::{self, StreamExt};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::info;

use crate::api::{ControlName, HardeningProfile, HardeningProfileSpec, HardeningProfileStatus};
use crate::apply::{Applied, Writer};
use crate::controller::Context;
use crate::controls::{self, backups, DriftReason, NamespaceObserved, Outcome};
use crate::events::{self, Event};
use crate::incremental::{Kept, NamespaceResult, Reach, Scope, FULL_PASS_EVERY};
use crate::observe::{to_chrono, Caches};
use crate::reports;
use crate::selection::{self, ProfileInfo, Selection};
use crate::status::{self, drift_outcomes, Findings};
use crate::Error;

/// Added to every due time so the pass runs just after it, never just before.
const DUE_PADDING: Duration = Duration::from_millis(50);
/// How long a name held by someone else waits before it is tried again.
const NAME_TAKEN_RETRY: Duration = Duration::from_secs(30);
/// A whole-profile control's outcome after the writer: the writes, the findings and events,
/// and when to look again.
struct Done<F> {
    applied: Vec<Applied>,
    findings: F,
    events: Vec<Event>,
    next_due: Option<DateTime<Utc>>,
}

async fn carry_out<F>(outcome: Outcome<F>, writer: &Writer) -> Done<F> {
    let applied = writer.execute(outcome.writes).await;
    Done {
        applied,
        findings: outcome.findings,
        events: outcome.events,
        next_due: outcome.next_due,
    }
}

/// One profile's pass: select, plan each control, write (Enforce), report.
pub(crate) async fn apply_profile(
    profile: &HardeningProfile,
    ctx: &Context,
) -> Result<Action, Error> {
    // The cache can still hold the copy from before this replica's last status write; the
    // controls read their past from the status, so they plan from what was written.
    let caught_up;
    let profile = match ctx.written.newer_than(profile) {
        Some(status) => {
            tracing::debug!(profile = %profile.name_any(), "the cache is behind this replica's last status write; planning from that write");
            caught_up = HardeningProfile {
                status: Some(status),
                ..profile.clone()
            };
            &caught_up
        }
        None => profile,
    };
    // Whole seconds: status times are compared to decide whether to write.
    let precise = Utc::now();
    let now = precise.trunc_subsecs(0);
    let name = profile.name_any();
    let uid = profile.metadata.uid.clone().ok_or(Error::MissingIdentity)?;
    let spec = &profile.spec;
    let writer = ctx.writer(profile)?;

    let mut invalid = crate::api::validate::invalid_fields_within(spec, ctx.limits);
    invalid.extend(crate::api::validate::invalid_profile_name(&name));
    if !invalid.is_empty() {
        let findings = Findings {
            invalid,
            ..Default::default()
        };
        report(profile, ctx, &writer, &findings, vec![], now).await?;
        return Ok(Action::await_change());
    }
    let selection = select(profile, ctx, now);
    let reach = reach_of(&selection);
    let version = (uid.clone(), profile.metadata.generation);
    let pass = ctx
        .ledger
        .begin(&name, &version, &reach, Instant::now(), precise);
    let (results, mut applied) =
        plan_namespaces(profile, &uid, &selection, &pass.namespaces, ctx, &writer).await;
    let mut findings = Findings::default();
    let mut events = Vec::new();
    let mut due: Vec<Option<DateTime<Utc>>> = vec![selection::next_exception_expiry(spec, now)];
    let rotation = match (&spec.secret_rotation, pass.rotation) {
        (None, _) => None,
        (Some(_), Some(kept)) => Some(kept),
        (Some(rot), None) => {
            // Restart stamps keep their milliseconds: they tell one batch from the next, and
            // two batches can start within one second.
            let planned = rotation_outcome(
                &ctx.caches,
                &ctx.client,
                (&name, &uid),
                rot,
                &selection,
                profile.status.as_ref(),
                precise,
            )
            .await;
            let mut done = carry_out(planned, &writer).await;
            let refused = crate::status::refused_secrets(&done.applied);
            if !refused.is_empty() {
                // The status names them and the next pass skips them; a status write brings
                // no pass of its own, so look again shortly.
                done.next_due = Some(now + chrono::Duration::seconds(1));
            }
            done.findings.unwritable.extend(refused);
            let refused_hooks = crate::status::refused_hooks(&done.applied);
            if !refused_hooks.is_empty() {
                done.next_due = Some(now + chrono::Duration::seconds(1));
            }
            done.findings.hook_failures.extend(refused_hooks);
            events.extend(done.events);
            applied.extend(done.applied);
            Some(Kept {
                findings: done.findings,
                next_due: done.next_due,
            })
        }
    };
    if let Some(kept) = &rotation {
        due.push(kept.next_due);
        findings.rotation = Some(kept.findings.clone());
    }
    let mut caught_up = false;
    let backups = match (&spec.backups, pass.backups) {
        (None, _) => None,
        (Some(_), Some(mut kept)) => {
            // What happened once was counted by the pass that saw it.
            kept.findings.0.missed_now = 0;
            kept.findings.0.catching_up = false;
            if let Some(v) = kept.findings.1.as_mut() {
                v.failed_now = 0;
            }
            Some(kept)
        }
        (Some(backups), None) => {
            let acting = selection.acting_in(ControlName::Backups);
            let clock = backups::Clock {
                local: now,
                server: ctx.server_clock.now(&ctx.client).await,
            };
            let planned = backups_outcome(
                &ctx.caches,
                (&name, &uid),
                backups,
                &acting,
                profile.status.as_ref(),
                clock,
            );
            let done = carry_out(planned, &writer).await;
            caught_up = done.findings.catching_up;
            events.extend(done.events);
            applied.extend(done.applied);
            let mut found = done.findings;
            let mut next_due = done.next_due;
            let verified = match &backups.verify {
                Some(v) => {
                    let planned = verify_outcome(
                        &ctx.client,
                        &ctx.caches,
                        (&name, &uid),
                        (backups, v),
                        &acting,
                        profile.status.as_ref(),
                        now,
                    )
                    .await?;
                    let done = carry_out(planned, &writer).await;
                    next_due = earliest(next_due, done.next_due);
                    found.status.last_verified = done.findings.entries.clone();
                    events.extend(done.events);
                    let mut findings = done.findings;
                    if let Some(made) = created_namespace_uid(&done.applied) {
                        findings.namespace_uid = Some(made);
                    }
                    applied.extend(done.applied);
                    Some(findings)
                }
                None => {
                    // Verification switched off: its last results no longer describe anything.
                    found.status.last_verified.clear();
                    None
                }
            };
            Some(Kept {
                findings: (found, verified),
                next_due,
            })
        }
    };
    if let Some(kept) = &backups {
        due.push(kept.next_due);
        findings.backups = Some(kept.findings.0.clone());
        findings.verify = kept.findings.1.clone();
        findings.scratch_namespace_uid = findings
            .verify
            .as_ref()
            .and_then(|v| v.namespace_uid.clone());
    }
    if spec
        .backups
        .as_ref()
        .and_then(|b| b.verify.as_ref())
        .is_none()
    {
        let done = remove_verification(profile, ctx, &writer, now).await?;
        due.push(done.next_due);
        applied.extend(done.applied);
        findings.scratch_namespace_uid = done.findings;
    }
    let namespaced = ctx.ledger.finish(
        &name,
        version,
        reach,
        &pass.namespaces,
        results,
        (rotation, backups),
        Instant::now(),
    );
    findings.drift = namespaced.drift;
    findings.namespaces = namespaced.findings;
    findings.selection = selection;
    events.extend(events::after_writes(&findings.drift, &applied, caught_up));
    report(profile, ctx, &writer, &findings, events, now).await?;
    publish_reports(profile, &uid, ctx, &writer, &findings).await;

    Error::if_any_failed(&name, &applied)?;
    let name_taken = findings
        .unresolved()
        .any(|d| d.reason == DriftReason::NameTaken);
    let mut delay = requeue_after(due.into_iter().flatten().min()).min(FULL_PASS_EVERY);
    if name_taken {
        delay = delay.min(NAME_TAKEN_RETRY);
    }
    Ok(Action::requeue(delay))
}

/// Secret rotation's plan from what the caches show and what the status remembers.
pub(crate) async fn rotation_outcome(
    caches: &Caches,
    client: &kube::Client,
    (name, uid): (&str, &str),
    spec: &crate::api::SecretRotationControl,
    selection: &Selection,
    status: Option<&HardeningProfileStatus>,
    now: DateTime<Utc>,
) -> Outcome<controls::rotation::RotationPlan> {
    let acting = selection.acting_in(ControlName::SecretRotation);
    let previous = status.and_then(|s| s.rotation.as_ref());
    let mut observed = caches.rotation_observed(uid, spec, &acting, previous);
    observed.profile_name = name.to_string();
    // Hook Jobs are read by name (reads only, so `rampart plan` may call this too).
    observed.hooks = crate::observe::hooks::hook_jobs(client, name, uid, &observed.secrets).await;
    controls::rotation::plan(spec, &observed, now)
}

/// Snapshots' plan (slots, retention) for the profile `(name, uid)`, from what the caches show
/// and what the status remembers.
pub(crate) fn backups_outcome(
    caches: &Caches,
    (name, uid): (&str, &str),
    spec: &crate::api::BackupControl,
    acting: &BTreeSet<String>,
    status: Option<&HardeningProfileStatus>,
    clock: backups::Clock,
) -> Outcome<backups::BackupFindings> {
    let previous = status.and_then(|s| s.backups.as_ref());
    let observed = caches.backup_observed(name, uid, spec, acting, previous);
    backups::plan(name, spec, &observed, clock)
}

/// Restore verification's plan: observe (the caches, then the few scratch objects and, when the
/// plan asks, the source snapshots' contents, from the API; reads only) and plan, twice when
/// contents were needed.
pub(crate) async fn verify_outcome(
    client: &kube::Client,
    caches: &Caches,
    (name, uid): (&str, &str),
    (backups, spec): (&crate::api::BackupControl, &crate::api::VerifyControl),
    acting: &BTreeSet<String>,
    status: Option<&HardeningProfileStatus>,
    now: DateTime<Utc>,
) -> Result<Outcome<controls::verify::VerifyFindings>, Error> {
    use crate::observe::verification::{read_source_contents, read_verify_extras};
    let mut observed = caches.verify_observed(name, uid, backups, acting, status);
    read_verify_extras(client, name, uid, &mut observed).await?;
    let out = controls::verify::plan(name, backups, spec, &observed, now);
    tracing::debug!(
        profile = name,
        scratch = ?observed
            .scratch
            .iter()
            .map(|o| (o.object.key.kind, o.slot, o.ready, o.bound))
            .collect::<Vec<_>>(),
        writes = ?out.writes.iter().map(|w| (w.verb(), w.target().kind)).collect::<Vec<_>>(),
        "restore verification planned"
    );
    if out.findings.needs_contents.is_empty() {
        return Ok(out);
    }
    observed.contents = read_source_contents(client, &out.findings.needs_contents).await?;
    observed.contents_read = true;
    Ok(controls::verify::plan(name, backups, spec, &observed, now))
}

/// The uid the API server gave a scratch namespace this pass created.
fn created_namespace_uid(applied: &[Applied]) -> Option<String> {
    applied
        .iter()
        .filter(|a| {
            a.verb == controls::WriteVerb::Create
                && a.target.kind == controls::ManagedKind::Namespace.kind()
        })
        .find_map(|a| a.created_uid.clone())
}

/// Restore verification switched off: its scratch objects and namespace go. Costs nothing
/// (no API call) once the caches show none of them. Its findings are the scratch namespace's
/// uid while that namespace is still there, so the passes that finish the cleanup know it.
async fn remove_verification(
    profile: &HardeningProfile,
    ctx: &Context,
    writer: &Writer,
    now: DateTime<Utc>,
) -> Result<Done<Option<String>>, Error> {
    let name = profile.name_any();
    let uid = profile.metadata.uid.clone().ok_or(Error::MissingIdentity)?;
    let (namespace_uid, planned) = removal_outcome(
        &ctx.client,
        &ctx.caches,
        (&name, &uid),
        profile.status.as_ref(),
        now,
    )
    .await?;
    let Some(planned) = planned else {
        return Ok(Done {
            applied: vec![],
            findings: namespace_uid,
            events: vec![],
            next_due: None,
        });
    };
    let done = carry_out(planned, writer).await;
    Ok(Done {
        applied: done.applied,
        findings: namespace_uid,
        events: done.events,
        next_due: done.next_due,
    })
}

/// Removing restore verification's leftovers: the scratch namespace's uid while it is there,
/// and the plan, or none when the caches show nothing left (then no API call is made).
pub(crate) async fn removal_outcome(
    client: &kube::Client,
    caches: &Caches,
    (name, uid): (&str, &str),
    status: Option<&HardeningProfileStatus>,
    now: DateTime<Utc>,
) -> Result<(Option<String>, Option<Outcome<()>>), Error> {
    let mut observed = caches.scratch_observed(name, uid, status);
    let namespace_uid = observed
        .namespace_object
        .as_ref()
        .and_then(|n| n.uid.clone());
    if observed.namespace_object.is_none() && observed.scratch.is_empty() {
        return Ok((namespace_uid, None));
    }
    crate::observe::verification::read_verify_extras(client, name, uid, &mut observed).await?;
    Ok((
        namespace_uid,
        Some(controls::verify::remove(name, &observed, now)),
    ))
}

/// Which namespaces the profile holds, per control, among every profile in the cache.
fn select(profile: &HardeningProfile, ctx: &Context, now: DateTime<Utc>) -> Selection {
    let all = ctx.profiles.state();
    select_among(
        profile,
        all.iter().map(|p| p.as_ref()),
        &ctx.caches,
        &ctx.excluded_namespaces,
        now,
    )
}

/// Which namespaces `profile` holds, per control, among `all` profiles (it may be among them).
pub(crate) fn select_among<'a>(
    profile: &HardeningProfile,
    all: impl Iterator<Item = &'a HardeningProfile>,
    caches: &Caches,
    excluded: &selection::ExcludedNamespaces,
    now: DateTime<Utc>,
) -> Selection {
    fn info(p: &HardeningProfile) -> ProfileInfo<'_> {
        ProfileInfo {
            name: p.metadata.name.as_deref().unwrap_or_default(),
            created: p.metadata.creation_timestamp.as_ref().and_then(to_chrono),
            spec: &p.spec,
        }
    }
    let others: Vec<ProfileInfo<'_>> = all.map(info).collect();
    selection::select(
        &info(profile),
        &others,
        &caches.namespace_infos(excluded),
        now,
    )
}

/// Where the profile reaches: each control's namespaces, and the selected ones.
fn reach_of(selection: &Selection) -> Reach {
    let acting = selection
        .acting
        .iter()
        .flat_map(|(c, set)| set.iter().map(move |ns| (Some(*c), ns.clone())));
    let selected = selection.namespaces.iter().map(|ns| (None, ns.clone()));
    acting.chain(selected).collect()
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.into_iter().chain(b).min()
}

/// Network policies and budgets, namespace by namespace over what changed (see
/// [`crate::incremental`]), writing as they are planned. Returns what each planned
/// namespace found, and the writes made.
async fn plan_namespaces(
    profile: &HardeningProfile,
    uid: &str,
    selection: &Selection,
    planned: &Scope,
    ctx: &Context,
    writer: &Writer,
) -> (BTreeMap<String, NamespaceResult>, Vec<Applied>) {
    let name = profile.name_any();
    let planner = NamespacePlanner::new(&name, &profile.spec, selection);
    let index = ctx.caches.namespace_index(
        &name,
        uid,
        match planned {
            Scope::Full => None,
            Scope::Namespaces(set) => Some(set),
        },
    );
    let namespaces: BTreeSet<String> = match planned {
        Scope::Full => planner.full_scope(&index),
        Scope::Namespaces(set) => set.clone(),
    };
    // Planned as the writer asks for more: a pass over thousands of namespaces keeps the
    // writer's requests in flight with no pause between namespaces, and holds only the
    // writes in flight. Each namespace's findings and drift are filed as it is planned.
    let found: Mutex<(BTreeMap<String, NamespaceResult>, Vec<controls::Drift>)> = Mutex::default();
    let file = |ns: &String, out: Outcome<_>| {
        let mut f = found.lock().unwrap_or_else(PoisonError::into_inner);
        f.0.insert(
            ns.clone(),
            NamespaceResult {
                drift: vec![],
                findings: out.findings,
            },
        );
        f.1.extend(out.drift);
        out.writes
    };
    // Boxed: the compiler cannot otherwise prove the closures' borrows Send for the
    // reconcile future.
    let writes: stream::BoxStream<'_, controls::Write> = stream::iter(&namespaces)
        .flat_map(|ns| {
            let observed = index.observed(ns);
            // What exists now was made before: should it go missing, making it again is a
            // repair, not a creation.
            ctx.ledger
                .note_objects(&name, uid, observed.owned.iter().map(|o| &o.key), true);
            stream::iter(file(ns, planner.plan(&observed)))
        })
        .boxed();
    let applied = writer.execute_stream(writes).await;
    let (mut results, drift) = found.into_inner().unwrap_or_else(PoisonError::into_inner);
    let outcomes = drift_outcomes(drift, &applied, |k| ctx.ledger.seen_before(&name, uid, k));
    let made = [DriftReason::Missing, DriftReason::Modified];
    ctx.ledger
        .note_objects(&name, uid, resolved_keys(&outcomes, &made), true);
    let deleted = [DriftReason::Unexpected];
    ctx.ledger
        .note_objects(&name, uid, resolved_keys(&outcomes, &deleted), false);
    for (d, o) in outcomes {
        results
            .entry(d.key.namespace.clone())
            .or_default()
            .drift
            .push((d, o));
    }
    (results, applied)
}

/// The objects whose drift of one of `reasons` this pass resolved.
fn resolved_keys<'a>(
    outcomes: &'a [(controls::Drift, status::DriftOutcome)],
    reasons: &'a [DriftReason],
) -> impl Iterator<Item = &'a controls::ObjectKey> + 'a {
    outcomes
        .iter()
        .filter(|(d, o)| o.resolved() && reasons.contains(&d.reason))
        .map(|(d, _)| &d.key)
}

/// The namespaced controls (network policies, budgets) of one profile, ready to plan one
/// namespace at a time: where each control acts is worked out once per pass.
pub(crate) struct NamespacePlanner<'a> {
    profile: &'a str,
    spec: &'a HardeningProfileSpec,
    selected: &'a BTreeSet<String>,
    policy_ns: BTreeSet<String>,
    budget_ns: BTreeSet<String>,
    held: controls::network_policies::HeldNamespaces,
}

impl<'a> NamespacePlanner<'a> {
    pub(crate) fn new(
        profile: &'a str,
        spec: &'a HardeningProfileSpec,
        selection: &'a Selection,
    ) -> Self {
        Self {
            profile,
            spec,
            selected: &selection.namespaces,
            policy_ns: selection.acting_in(ControlName::NetworkPolicies),
            budget_ns: selection.acting_in(ControlName::PodDisruptionBudgets),
            held: controls::network_policies::HeldNamespaces::of(spec),
        }
    }

    /// Every namespace a full pass plans: where a control acts, the selected ones, and those
    /// holding objects of ours outside them (where deletions come from).
    pub(crate) fn full_scope(
        &self,
        index: &crate::observe::queries::NamespaceIndex,
    ) -> BTreeSet<String> {
        self.policy_ns
            .iter()
            .chain(&self.budget_ns)
            .chain(self.selected)
            .chain(index.owned_namespaces())
            .cloned()
            .collect()
    }

    /// Both controls' plan for one namespace.
    pub(crate) fn plan(
        &self,
        observed: &NamespaceObserved,
    ) -> Outcome<controls::NamespaceFindings> {
        let ns = observed.namespace.as_str();
        let np = self
            .spec
            .network_policies
            .as_ref()
            .filter(|_| self.policy_ns.contains(ns));
        let pdb = self
            .spec
            .pod_disruption_budgets
            .as_ref()
            .filter(|_| self.budget_ns.contains(ns));
        let judge_drains = self.spec.pod_disruption_budgets.is_some() && self.selected.contains(ns);
        let a = controls::network_policies::plan(self.profile, np, &self.held, observed);
        let b = controls::disruption_budgets::plan(self.profile, pdb, judge_drains, observed);
        Outcome {
            writes: [a.writes, b.writes].concat(),
            drift: [a.drift, b.drift].concat(),
            findings: a.findings.merge(b.findings),
            events: vec![],
            next_due: None,
        }
    }
}

/// Metrics, events and the status (written only when it changed) for one pass.
async fn report(
    profile: &HardeningProfile,
    ctx: &Context,
    writer: &Writer,
    findings: &Findings,
    mut events: Vec<Event>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let name = profile.name_any();
    ctx.metrics.report(&name, findings);
    let next = status::compute(
        &profile.spec,
        profile.metadata.generation,
        findings,
        profile.status.as_ref(),
        now,
    );
    if let Some(rotation) = &next.rotation {
        ctx.metrics.report_rotation(&name, rotation);
    }
    ctx.metrics
        .report_state(&name, profile.spec.mode, &next.conditions);
    let changed = status::changed(profile.status.as_ref(), &next);
    if changed {
        let previous = profile
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        events.extend(events::condition_flips(previous, &next.conditions));
    }
    ctx.events.publish(&ctx.metrics, profile, &events).await;
    if changed {
        let wrote = writer.write_status(&next).await?;
        ctx.written.remember(profile, &next, wrote);
    }
    Ok(())
}

/// The profile's OpenReports reports, when `--reports` is on and the cluster serves them:
/// computed from the findings, written only where they differ from the cached ones. A
/// failed write is logged and retried by the next pass, never failing this one: the
/// hardening itself is done.
async fn publish_reports(
    profile: &HardeningProfile,
    uid: &str,
    ctx: &Context,
    writer: &Writer,
    findings: &Findings,
) {
    let Some(cache) = ctx.reports.as_ref().filter(|c| c.served()) else {
        return;
    };
    let name = profile.name_any();
    let terminating: BTreeSet<String> = ctx
        .caches
        .namespaces
        .state()
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_some())
        .map(|n| n.name_any())
        .collect();
    let desired = reports::desired_reports(&name, &profile.spec, findings, &terminating);
    let writes = reports::report_writes(&name, uid, desired, &cache.observed(&name), &terminating);
    if writes.is_empty() {
        return;
    }
    for e in writer.write_reports(writes).await {
        tracing::warn!(profile = %name, error = %e, "report not written; the next pass tries again");
    }
}

/// The one way a due time becomes a requeue: from now, just after it, within the resync.
fn requeue_after(due: Option<DateTime<Utc>>) -> Duration {
    due.and_then(|t| (t - Utc::now()).to_std().ok())
        .map(|d| d + DUE_PADDING)
        .unwrap_or(FULL_PASS_EVERY)
}

/// Removes everything the profile made. Garbage collection would too, through the owner
/// references, but doing it here lets a failure hold the finalizer and be retried and seen.
/// Snapshots are data: orphaned unless the profile says Delete.
/// Before a profile goes, every rotation hook it started settles (see
/// [`controls::rotation::hooks::settle_on_deletion`]): a GitOps tool deleting the profile in
/// the middle of a rotation must not leave a Secret whose values its service does not accept.
/// While a hook Job still runs, the deletion waits (an error, retried with backoff; the Job's
/// `activeDeadlineSeconds` bounds the wait).
async fn settle_hooks(
    profile: &HardeningProfile,
    ctx: &Context,
    writer: &Writer,
    (name, uid): (&str, &str),
) -> Result<(), Error> {
    let pending = ctx.caches.secrets_with_pending_hooks(uid);
    if pending.is_empty() {
        return Ok(());
    }
    let jobs = crate::observe::hooks::hook_jobs(&ctx.client, name, uid, &pending).await;
    let (ends, waiting) = controls::rotation::hooks::settle_on_deletion(uid, &pending, &jobs);
    let regenerate: Vec<String> = profile
        .spec
        .secret_rotation
        .iter()
        .flat_map(|r| r.regenerate.iter().map(|k| k.key.clone()))
        .collect();
    let writes = ends
        .into_iter()
        .filter_map(|(s, end)| {
            Some(controls::Write::EndHook {
                secret: controls::SecretRef {
                    namespace: s.namespace,
                    name: s.name,
                },
                rotation_id: s.rotation_id?,
                end,
                regenerate: regenerate.clone(),
            })
        })
        .collect();
    let applied = writer.execute(writes).await;
    Error::if_any_failed(name, &applied)?;
    match waiting.first() {
        None => Ok(()),
        Some(first) => Err(Error::HooksRunning {
            profile: name.to_string(),
            count: waiting.len(),
            first: first.clone(),
        }),
    }
}

pub(crate) async fn cleanup_profile(
    profile: &HardeningProfile,
    ctx: &Context,
) -> Result<Action, Error> {
    let name = profile.name_any();
    let uid = profile.metadata.uid.clone().ok_or(Error::MissingIdentity)?;
    let writer = ctx.writer(profile)?.enforcing();
    settle_hooks(profile, ctx, &writer, (&name, &uid)).await?;
    let mut writes: Vec<controls::Write> = ctx
        .caches
        .owned_for_deletion(&name, &uid)
        .into_iter()
        .map(controls::Write::Delete)
        .collect();
    writes.extend(backups::on_profile_deletion(
        profile.spec.backups.as_ref(),
        ctx.caches.owned_snapshots(&name, &uid),
    ));
    let total = writes.len();
    let applied = writer.execute(writes).await;
    Error::if_any_failed(&name, &applied)?;
    // Garbage collection would remove the reports too (they carry an owner reference); here
    // they go before the profile, as everything else it made.
    if let Some(cache) = ctx.reports.as_ref().filter(|c| c.served()) {
        let gone = reports::report_writes(
            &name,
            &uid,
            Default::default(),
            &cache.observed(&name),
            &Default::default(),
        );
        if let Some(e) = writer.write_reports(gone).await.into_iter().next() {
            return Err(e);
        }
    }
    // Restore verification's volumes are set to be deleted with their scratch PVCs before the
    // garbage collector deletes those, so a Retain class keeps no copy of the data.
    let released = remove_verification(profile, ctx, &writer, Utc::now()).await?;
    Error::if_any_failed(&name, &released.applied)?;
    info!(profile = %name, written = total, "profile deleted; removed what it made");
    ctx.metrics.forget_profile(&name);
    ctx.ledger.forget(&name);
    ctx.written.forget(&name);
    Ok(Action::await_change())
}
