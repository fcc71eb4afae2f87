//! Reconciles that cost what changed. Watch events mark the namespaces they touch; a pass
//! re-plans only those (and the namespaces that entered or left the profile's scope), and keeps
//! each namespace's last findings so the status still covers the whole profile. The controls
//! planned over the whole profile (rotation, backups) are planned again only when an input of
//! theirs changed, their scope moved or their next due time came; otherwise their last findings
//! stand. A full pass runs on the first reconcile, after a spec change, a failure or a
//! leadership change, and at least every [`FULL_PASS_EVERY`] as a safety net. Holds state but
//! never calls the API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::api::ControlName;
use crate::controls::backups::BackupFindings;
use crate::controls::rotation::RotationPlan;
use crate::controls::verify::VerifyFindings;
use crate::controls::{Drift, NamespaceFindings, ObjectKey};
use crate::status::DriftOutcome;

/// The longest a profile goes without a full pass.
pub const FULL_PASS_EVERY: Duration = Duration::from_secs(10 * 60);

/// Which namespaces a pass plans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Full,
    Namespaces(BTreeSet<String>),
}

/// Where a profile reaches: each control with the namespaces it acts in, and `None` with the
/// namespaces it selects (budgets judge drains there). Keyed per control so that a namespace
/// moving between controls (an exception expiring) is planned again even when the union of
/// namespaces stays the same.
pub type Reach = BTreeSet<(Option<ControlName>, String)>;

/// The controls planned over the whole profile, whose inputs events mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whole {
    /// Selected Secrets and the workloads that use them.
    Rotation,
    /// Selected PVCs and the profile's snapshots (restore verification's scratch objects too).
    Backups,
}

/// What an event on a watched kind can change, for the profiles selecting its namespace: the
/// namespace's network policies and budgets, and one of the whole-profile controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affects {
    /// The kind, for `rampart_reconcile_triggers_total`.
    pub kind: &'static str,
    pub namespace: bool,
    pub whole: Option<Whole>,
    /// The whole control is marked only for profiles where it is under way (a settled
    /// rotation does not read a workload's replicas or rollout progress).
    pub only_if_under_way: bool,
}

/// A workload's event: its namespace always; rotation when the event changed what rotation
/// reads of it (`rotation_inputs_changed`), else only where a rotation is under way.
pub const fn workloads(kind: &'static str, rotation_inputs_changed: bool) -> Affects {
    Affects {
        kind,
        namespace: true,
        whole: Some(Whole::Rotation),
        only_if_under_way: !rotation_inputs_changed,
    }
}
pub const SECRETS: Affects = Affects {
    kind: "Secret",
    namespace: false,
    whole: Some(Whole::Rotation),
    only_if_under_way: false,
};
pub const CLAIMS: Affects = Affects {
    kind: "PersistentVolumeClaim",
    namespace: false,
    whole: Some(Whole::Backups),
    only_if_under_way: false,
};
/// A user's budget or policy.
pub const fn objects(kind: &'static str) -> Affects {
    Affects {
        kind,
        namespace: true,
        whole: None,
        only_if_under_way: false,
    }
}

/// A digest of what rotation reads of each workload (the Secrets it names and its restart
/// stamps), so that an event that changed only replicas or rollout progress (a scale, a pod
/// turning ready) does not re-plan a settled rotation over the whole profile. Keys and values
/// are hashes: 16 bytes a workload.
#[derive(Default)]
pub struct RotationInputs {
    seen: Mutex<HashMap<u64, u64>>,
}

impl RotationInputs {
    /// Records a workload's event and says whether rotation's inputs changed: a workload seen
    /// for the first time, one gone (`digest` None), or one whose digest moved.
    pub fn changed(&self, kind: &str, namespace: &str, name: &str, digest: Option<u64>) -> bool {
        let key = crate::observe::hash64(&(kind, namespace, name));
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match digest {
            None => {
                seen.remove(&key);
                true
            }
            Some(d) => seen.insert(key, d) != Some(d),
        }
    }
}

/// No rotation to plan, or the one for the current id is recorded complete: a workload's
/// replicas and rollout progress no longer matter to it.
pub fn rotation_settled(p: &crate::api::HardeningProfile) -> bool {
    let Some(spec) = &p.spec.secret_rotation else {
        return true;
    };
    p.status
        .as_ref()
        .and_then(|s| s.rotation.as_ref())
        .is_some_and(|r| {
            // A revert leaves the rotation at the id applied last, complete.
            r.phase == crate::api::RotationPhase::Complete
                && (r.observed_rotation_id.as_deref() == Some(spec.rotation_id.as_str())
                    || r.reverted_rotation_id.as_deref() == Some(spec.rotation_id.as_str()))
        })
}

/// A whole-profile control's last findings and when it asked to be looked at again.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept<F> {
    pub findings: F,
    pub next_due: Option<DateTime<Utc>>,
}

/// What backups and restore verification found, kept together: they share their inputs.
pub type BackupsKept = (BackupFindings, Option<VerifyFindings>);

/// What a pass plans: its namespaces, and for each whole-profile control either `None`, plan
/// it, or the findings to keep.
#[derive(Debug)]
pub struct Pass {
    pub namespaces: Scope,
    pub rotation: Option<Kept<RotationPlan>>,
    pub backups: Option<Kept<BackupsKept>>,
}

/// What a pass found in one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceResult {
    pub drift: Vec<(Drift, DriftOutcome)>,
    pub findings: NamespaceFindings,
}

/// The profile's objects this process has seen exist (observed as ours, or created), as
/// hashes of their keys, for the profile with this uid. What tells a first creation from the
/// repair of a deletion: nothing in the cluster records an object that is gone, so an object
/// deleted while no operator watched is made again as a creation.
#[derive(Default)]
struct Seen {
    uid: String,
    keys: std::collections::HashSet<u64>,
}

/// One profile's pending marks and retained results.
#[derive(Default)]
struct Entry {
    seen: Seen,
    dirty: BTreeSet<String>,
    rotation_inputs: bool,
    backup_inputs: bool,
    full: bool,
    retained: Option<Retained>,
}

struct Retained {
    /// The profile's identity and spec generation the results were computed for.
    version: (String, Option<i64>),
    /// Where the profile reached at that pass.
    reach: Reach,
    /// Unresolved drift and findings, per namespace.
    namespaces: BTreeMap<String, NamespaceResult>,
    rotation: Option<Kept<RotationPlan>>,
    backups: Option<Kept<BackupsKept>>,
    full_at: Instant,
}

/// Marks and results for every profile.
#[derive(Default)]
pub struct Ledger {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Ledger {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        // A poisoned lock means a panic mid-update; the data is marks and caches of results,
        // and the worst a stale copy does is cost a full pass, which the flag below forces.
        let mut guard = match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                g.values_mut().for_each(|e| e.full = true);
                g
            }
        };
        f(&mut guard)
    }

    /// An event touched `namespace` for `profile`.
    pub fn mark_namespace(&self, profile: &str, namespace: &str) {
        self.with(|m| {
            m.entry(profile.to_string())
                .or_default()
                .dirty
                .insert(namespace.to_string());
        });
    }

    /// An event changed an input of `control` for `profile`.
    pub fn mark_whole(&self, profile: &str, control: Whole) {
        self.with(|m| {
            let e = m.entry(profile.to_string()).or_default();
            match control {
                Whole::Rotation => e.rotation_inputs = true,
                Whole::Backups => e.backup_inputs = true,
            }
        });
    }

    /// The next pass of `profile` plans everything.
    pub fn mark_full(&self, profile: &str) {
        self.with(|m| m.entry(profile.to_string()).or_default().full = true);
    }

    /// The next pass of every profile plans everything (this replica just became the leader).
    pub fn mark_all_full(&self) {
        self.with(|m| m.values_mut().for_each(|e| e.full = true));
    }

    pub fn forget(&self, profile: &str) {
        self.with(|m| m.remove(profile));
    }

    /// Records objects of the profile (with `uid`) seen to exist; `present` false forgets them
    /// (the profile deleted them: made again later, they are created anew).
    pub fn note_objects<'a>(
        &self,
        profile: &str,
        uid: &str,
        keys: impl IntoIterator<Item = &'a ObjectKey>,
        present: bool,
    ) {
        self.with(|m| {
            let seen = &mut m.entry(profile.to_string()).or_default().seen;
            if seen.uid != uid {
                // A profile made again under the same name starts with nothing of its own.
                *seen = Seen {
                    uid: uid.to_string(),
                    keys: Default::default(),
                };
            }
            for k in keys {
                if present {
                    seen.keys.insert(crate::observe::hash64(k));
                } else {
                    seen.keys.remove(&crate::observe::hash64(k));
                }
            }
        });
    }

    /// Whether this process saw the object of the profile (with `uid`) exist before.
    pub fn seen_before(&self, profile: &str, uid: &str, key: &ObjectKey) -> bool {
        self.with(|m| {
            m.get(profile).is_some_and(|e| {
                e.seen.uid == uid && e.seen.keys.contains(&crate::observe::hash64(key))
            })
        })
    }

    /// Decides what this pass plans and takes the marks. `version` is the profile's uid and
    /// generation; `reach` where it now acts and selects; `wall` the time due times are
    /// compared with. Kept findings are handed over, and come back through
    /// [`Ledger::finish`].
    pub fn begin(
        &self,
        profile: &str,
        version: &(String, Option<i64>),
        reach: &Reach,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Pass {
        self.with(|m| {
            let e = m.entry(profile.to_string()).or_default();
            let dirty = std::mem::take(&mut e.dirty);
            let full = std::mem::take(&mut e.full);
            let rotation_inputs = std::mem::take(&mut e.rotation_inputs);
            let backup_inputs = std::mem::take(&mut e.backup_inputs);
            let full_pass = Pass {
                namespaces: Scope::Full,
                rotation: None,
                backups: None,
            };
            let Some(r) = e.retained.as_mut() else {
                return full_pass;
            };
            if full || &r.version != version || now.duration_since(r.full_at) >= FULL_PASS_EVERY {
                return full_pass;
            }
            let moved: Vec<&(Option<ControlName>, String)> =
                r.reach.symmetric_difference(reach).collect();
            let moved_in = |c: ControlName| moved.iter().any(|(k, _)| *k == Some(c));
            fn keep<F>(
                kept: &mut Option<Kept<F>>,
                marked: bool,
                wall: DateTime<Utc>,
            ) -> Option<Kept<F>> {
                let k = kept.take()?;
                let due = k.next_due.is_some_and(|d| d <= wall);
                (!marked && !due).then_some(k)
            }
            Pass {
                namespaces: Scope::Namespaces(
                    dirty
                        .into_iter()
                        .chain(moved.iter().map(|(_, ns)| ns.clone()))
                        .collect(),
                ),
                rotation: keep(
                    &mut r.rotation,
                    rotation_inputs || moved_in(ControlName::SecretRotation),
                    wall,
                ),
                backups: keep(
                    &mut r.backups,
                    backup_inputs || moved_in(ControlName::Backups),
                    wall,
                ),
            }
        })
    }

    /// Records this pass's results and returns the whole profile's: every namespace's
    /// unresolved drift plus this pass's repairs, and the findings summed.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &self,
        profile: &str,
        version: (String, Option<i64>),
        reach: Reach,
        planned: &Scope,
        results: BTreeMap<String, NamespaceResult>,
        whole: (Option<Kept<RotationPlan>>, Option<Kept<BackupsKept>>),
        now: Instant,
    ) -> NamespaceResult {
        self.with(|m| {
            let e = m.entry(profile.to_string()).or_default();
            let mut repaired = Vec::new();
            let mut keep = |r: NamespaceResult| {
                let (done, open): (Vec<_>, Vec<_>) =
                    r.drift.into_iter().partition(|(_, o)| o.resolved());
                repaired.extend(done);
                NamespaceResult {
                    drift: open,
                    findings: r.findings,
                }
            };
            let retained = match (planned, e.retained.take()) {
                (Scope::Namespaces(_), Some(mut r)) => {
                    for (ns, result) in results {
                        r.namespaces.insert(ns, keep(result));
                    }
                    let held: BTreeSet<&String> = reach.iter().map(|(_, ns)| ns).collect();
                    r.namespaces
                        .retain(|ns, res| held.contains(ns) || !res.drift.is_empty());
                    r.version = version;
                    r.reach = reach;
                    (r.rotation, r.backups) = whole;
                    r
                }
                _ => Retained {
                    version,
                    reach,
                    namespaces: results.into_iter().map(|(ns, r)| (ns, keep(r))).collect(),
                    rotation: whole.0,
                    backups: whole.1,
                    full_at: now,
                },
            };
            let mut all = NamespaceResult {
                drift: repaired,
                findings: NamespaceFindings::default(),
            };
            for r in retained.namespaces.values() {
                all.drift.extend(r.drift.iter().cloned());
                all.findings = std::mem::take(&mut all.findings).merge(r.findings.clone());
            }
            e.retained = Some(retained);
            all
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controls::{DriftReason, ManagedKind, ObjectKey};

    /// Every namespace reached by network policies and selected.
    fn reach(names: &[&str]) -> Reach {
        names
            .iter()
            .flat_map(|ns| {
                [
                    (Some(ControlName::NetworkPolicies), ns.to_string()),
                    (None, ns.to_string()),
                ]
            })
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn objects_seen_are_remembered_per_profile_until_deleted_or_the_profile_is_made_again() {
        let ledger = Ledger::default();
        let key = |ns: &str| ObjectKey {
            kind: ManagedKind::NetworkPolicy,
            namespace: ns.into(),
            name: "rampart-default-deny".into(),
        };
        assert!(
            !ledger.seen_before("p", "u1", &key("a")),
            "nothing seen yet"
        );
        ledger.note_objects("p", "u1", [&key("a"), &key("b")], true);
        assert!(ledger.seen_before("p", "u1", &key("a")));
        assert!(!ledger.seen_before("q", "u1", &key("a")), "another profile");
        assert!(!ledger.seen_before("p", "u1", &key("c")));
        ledger.note_objects("p", "u1", [&key("b")], false);
        assert!(!ledger.seen_before("p", "u1", &key("b")), "deleted by us");
        assert!(
            !ledger.seen_before("p", "u2", &key("a")),
            "the profile was deleted and made again"
        );
        ledger.note_objects("p", "u2", [&key("c")], true);
        assert!(!ledger.seen_before("p", "u2", &key("a")));
        assert!(ledger.seen_before("p", "u2", &key("c")));
    }

    #[test]
    fn rotation_inputs_change_on_new_changed_and_gone_workloads_only() {
        let seen = RotationInputs::default();
        assert!(
            seen.changed("Deployment", "a", "web", Some(1)),
            "first sight"
        );
        assert!(!seen.changed("Deployment", "a", "web", Some(1)), "a scale");
        assert!(
            seen.changed("StatefulSet", "a", "web", Some(1)),
            "another kind, same name"
        );
        assert!(
            seen.changed("Deployment", "a", "web", Some(2)),
            "new Secrets"
        );
        assert!(seen.changed("Deployment", "a", "web", None), "deleted");
        assert!(
            seen.changed("Deployment", "a", "web", Some(2)),
            "made again after the delete"
        );
    }

    #[test]
    fn a_rotation_is_settled_once_complete_for_the_current_id_only() {
        use crate::api::{
            fixtures, HardeningProfile, HardeningProfileStatus, Mode, RotationPhase, RotationStatus,
        };
        let mut spec = fixtures::budgets_only(Mode::Enforce);
        let mut p = HardeningProfile::new("p", spec.clone());
        assert!(rotation_settled(&p), "no rotation to plan");
        spec.secret_rotation = Some(fixtures::rotation("r2", 5));
        p.spec = spec;
        assert!(!rotation_settled(&p), "no status yet");
        let status = |id: &str, phase: RotationPhase| HardeningProfileStatus {
            rotation: Some(RotationStatus {
                observed_rotation_id: Some(id.into()),
                phase,
                secrets_selected: 1,
                secrets_rotated: 1,
                secrets_adopted: 0,
                workloads_total: 1,
                workloads_restarted: 1,
                in_progress: vec![],
                message: None,
                ..crate::status::empty_rotation_status()
            }),
            ..Default::default()
        };
        p.status = Some(status("r2", RotationPhase::Restarting));
        assert!(!rotation_settled(&p), "under way");
        p.status = Some(status("r1", RotationPhase::Complete));
        assert!(!rotation_settled(&p), "complete, but for the previous id");
        p.status = Some(status("r2", RotationPhase::Complete));
        assert!(rotation_settled(&p));
    }

    fn version(g: i64) -> (String, Option<i64>) {
        ("uid".into(), Some(g))
    }

    fn wall() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn result(ns: &str, outcome: Option<DriftOutcome>, managed: usize) -> NamespaceResult {
        NamespaceResult {
            drift: outcome
                .map(|o| {
                    vec![(
                        Drift {
                            key: ObjectKey {
                                kind: ManagedKind::NetworkPolicy,
                                namespace: ns.into(),
                                name: "p".into(),
                            },
                            control: ControlName::NetworkPolicies,
                            reason: DriftReason::Missing,
                            fields: vec![],
                        },
                        o,
                    )]
                })
                .unwrap_or_default(),
            findings: NamespaceFindings {
                managed: BTreeMap::from([(ControlName::NetworkPolicies, managed)]),
                ..Default::default()
            },
        }
    }

    fn rotation(next_due: Option<DateTime<Utc>>) -> Kept<RotationPlan> {
        Kept {
            findings: RotationPlan {
                rotation_id: "r1".into(),
                queued: None,
                reverted: None,
                restart_cutoff: None,
                phase: crate::api::RotationPhase::Complete,
                rotate: vec![],
                adopt: vec![],
                restart: vec![],
                in_progress: vec![],
                stalled: vec![],
                foreign: vec![],
                unwritable: vec![],
                skipped: vec![],
                hook_starts: vec![],
                hook_ends: vec![],
                hooks_pending: 0,
                hooks_succeeded: 0,
                hook_failures: vec![],
                restarted_for: vec![],
                secrets_selected: 3,
                secrets_rotated: 3,
                secrets_adopted_before: 0,
                consumers_total: 1,
                consumers_restarted: 1,
                next_deadline: None,
            },
            next_due,
        }
    }

    fn backups(next_due: Option<DateTime<Utc>>) -> Kept<BackupsKept> {
        Kept {
            findings: (BackupFindings::default(), None),
            next_due,
        }
    }

    fn begin(l: &Ledger, g: i64, r: &Reach, t: Instant) -> Pass {
        l.begin("p", &version(g), r, t, wall())
    }

    fn finish(
        l: &Ledger,
        r: &Reach,
        planned: &Scope,
        results: BTreeMap<String, NamespaceResult>,
        whole: (Option<Kept<RotationPlan>>, Option<Kept<BackupsKept>>),
        t: Instant,
    ) -> NamespaceResult {
        l.finish("p", version(1), r.clone(), planned, results, whole, t)
    }

    /// A full pass whose rotation and backups ask to be looked at again at `due`.
    fn full_pass_due(l: &Ledger, r: &Reach, t: Instant, due: Option<DateTime<Utc>>) {
        let pass = begin(l, 1, r, t);
        assert_eq!(pass.namespaces, Scope::Full);
        assert!(pass.rotation.is_none() && pass.backups.is_none());
        let results = r
            .iter()
            .map(|(_, ns)| (ns.clone(), result(ns, None, 5)))
            .collect();
        finish(
            l,
            r,
            &Scope::Full,
            results,
            (Some(rotation(due)), Some(backups(due))),
            t,
        );
    }

    fn full_pass(l: &Ledger, r: &Reach, t: Instant) {
        full_pass_due(l, r, t, None)
    }

    #[test]
    fn the_first_pass_is_full_and_an_event_replans_only_its_namespace() {
        let l = Ledger::default();
        let (r, t) = (reach(&["a", "b", "c"]), Instant::now());
        full_pass(&l, &r, t);
        l.mark_namespace("p", "b");
        let pass = begin(&l, 1, &r, t);
        assert_eq!(pass.namespaces, Scope::Namespaces(set(&["b"])));
        // A namespace event is no input of rotation or backups: their findings are kept.
        assert_eq!(pass.rotation, Some(rotation(None)));
        assert_eq!(pass.backups, Some(backups(None)));
        finish(
            &l,
            &r,
            &pass.namespaces,
            BTreeMap::new(),
            (pass.rotation, pass.backups),
            t,
        );
        // With nothing marked, nothing is re-planned.
        let pass = begin(&l, 1, &r, t);
        assert_eq!(pass.namespaces, Scope::Namespaces(set(&[])));
        assert!(pass.rotation.is_some() && pass.backups.is_some());
    }

    #[test]
    fn a_marked_input_replans_its_control_only() {
        let l = Ledger::default();
        let (r, t) = (reach(&["a"]), Instant::now());
        full_pass(&l, &r, t);
        l.mark_whole("p", Whole::Backups);
        let pass = begin(&l, 1, &r, t);
        assert_eq!(pass.backups, None, "backups are planned again");
        assert!(pass.rotation.is_some(), "rotation keeps its findings");
        assert_eq!(pass.namespaces, Scope::Namespaces(set(&[])));
        finish(
            &l,
            &r,
            &pass.namespaces,
            BTreeMap::new(),
            (pass.rotation, Some(backups(None))),
            t,
        );
        l.mark_whole("p", Whole::Rotation);
        let pass = begin(&l, 1, &r, t);
        assert_eq!(pass.rotation, None);
        assert!(pass.backups.is_some());
    }

    #[test]
    fn a_due_time_that_came_replans_the_control() {
        let l = Ledger::default();
        let (r, t) = (reach(&["a"]), Instant::now());
        full_pass_due(&l, &r, t, Some(wall()));
        let pass = begin(&l, 1, &r, t);
        assert!(pass.rotation.is_none() && pass.backups.is_none());
        // Not yet due: kept.
        let later = wall() + chrono::Duration::seconds(1);
        full_pass_due(&l, &r, t + FULL_PASS_EVERY, Some(later));
        let pass = begin(&l, 1, &r, t + FULL_PASS_EVERY);
        assert!(pass.rotation.is_some() && pass.backups.is_some());
    }

    #[test]
    fn a_namespace_moving_between_controls_is_replanned_with_them() {
        let l = Ledger::default();
        let t = Instant::now();
        full_pass(&l, &reach(&["a", "b"]), t);
        // `b` stays selected and under network policies, and an expired exception lets
        // backups act there: the union of namespaces is unchanged, yet `b` and backups are
        // planned again.
        let mut r = reach(&["a", "b"]);
        r.insert((Some(ControlName::Backups), "b".into()));
        let pass = begin(&l, 1, &r, t);
        assert_eq!(pass.namespaces, Scope::Namespaces(set(&["b"])));
        assert!(pass.backups.is_none());
        assert!(pass.rotation.is_some());
    }

    #[test]
    fn results_of_untouched_namespaces_still_count() {
        let l = Ledger::default();
        let (r, t) = (reach(&["a", "b"]), Instant::now());
        full_pass(&l, &r, t);
        let planned = Scope::Namespaces(set(&["b"]));
        let all = finish(
            &l,
            &r,
            &planned,
            BTreeMap::from([(
                "b".to_string(),
                result("b", Some(DriftOutcome::Reported), 5),
            )]),
            (None, None),
            t,
        );
        assert_eq!(all.findings.managed[&ControlName::NetworkPolicies], 10);
        assert_eq!(all.drift.len(), 1);
        // A repair is reported once, then forgotten; unresolved drift stays until replanned.
        let again = finish(
            &l,
            &r,
            &Scope::Namespaces(set(&[])),
            BTreeMap::new(),
            (None, None),
            t,
        );
        assert_eq!(again.drift.len(), 1);
    }

    #[test]
    fn repairs_are_reported_by_the_pass_that_made_them_only() {
        let l = Ledger::default();
        let (r, t) = (reach(&["a"]), Instant::now());
        full_pass(&l, &r, t);
        let planned = Scope::Namespaces(set(&["a"]));
        let now = finish(
            &l,
            &r,
            &planned,
            BTreeMap::from([(
                "a".to_string(),
                result("a", Some(DriftOutcome::Repaired), 5),
            )]),
            (None, None),
            t,
        );
        assert_eq!(now.drift.len(), 1);
        let later = finish(
            &l,
            &r,
            &Scope::Namespaces(set(&[])),
            BTreeMap::new(),
            (None, None),
            t,
        );
        assert!(later.drift.is_empty());
    }

    #[test]
    fn namespaces_entering_or_leaving_scope_are_replanned() {
        let l = Ledger::default();
        let t = Instant::now();
        full_pass(&l, &reach(&["a", "b"]), t);
        assert_eq!(
            begin(&l, 1, &reach(&["b", "c"]), t).namespaces,
            Scope::Namespaces(set(&["a", "c"]))
        );
    }

    #[test]
    fn a_spec_change_a_mark_or_time_makes_the_pass_full() {
        let l = Ledger::default();
        let (r, t) = (reach(&["a"]), Instant::now());
        full_pass(&l, &r, t);
        assert_eq!(begin(&l, 2, &r, t).namespaces, Scope::Full);
        l.mark_all_full();
        assert_eq!(begin(&l, 1, &r, t).namespaces, Scope::Full);
        l.mark_full("p");
        let pass = begin(&l, 1, &r, t);
        assert_eq!(pass.namespaces, Scope::Full);
        assert!(pass.rotation.is_none() && pass.backups.is_none());
        l.mark_full("p");
        full_pass(&l, &r, t);
        assert_eq!(
            begin(&l, 1, &r, t + FULL_PASS_EVERY).namespaces,
            Scope::Full
        );
    }
}
