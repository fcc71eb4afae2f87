//! Reconciles that cost what changed. Watch events mark the namespaces they touch; a pass
//! re-plans only those (and the namespaces that entered or left the profile's scope), and keeps
//! each namespace's last findings so the status still covers the whole profile. A full pass
//! runs on the first reconcile, after a spec change, a failure or a leadership change, and at
//! least every [`FULL_PASS_EVERY`] as a safety net. Holds state but never calls the API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::controls::{Drift, NamespaceFindings};
use crate::status::DriftOutcome;

/// The longest a profile goes without a full pass.
pub const FULL_PASS_EVERY: Duration = Duration::from_secs(10 * 60);

/// Which namespaces a pass plans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Full,
    Namespaces(BTreeSet<String>),
}

/// What a pass found in one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceResult {
    pub drift: Vec<(Drift, DriftOutcome)>,
    pub findings: NamespaceFindings,
}

/// One profile's pending marks and retained results.
#[derive(Default)]
struct Entry {
    dirty: BTreeSet<String>,
    full: bool,
    retained: Option<Retained>,
}

struct Retained {
    /// The profile's identity and spec generation the results were computed for.
    version: (String, Option<i64>),
    /// The namespaces in scope at that pass.
    scope: BTreeSet<String>,
    /// Unresolved drift and findings, per namespace.
    namespaces: BTreeMap<String, NamespaceResult>,
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

    /// Decides this pass's scope and takes the marks. `version` is the profile's uid and
    /// generation; `scope` the namespaces it now acts in or selects.
    pub fn begin(
        &self,
        profile: &str,
        version: &(String, Option<i64>),
        scope: &BTreeSet<String>,
        now: Instant,
    ) -> Scope {
        self.with(|m| {
            let e = m.entry(profile.to_string()).or_default();
            let dirty = std::mem::take(&mut e.dirty);
            let full = std::mem::take(&mut e.full);
            match &e.retained {
                Some(r)
                    if !full
                        && &r.version == version
                        && now.duration_since(r.full_at) < FULL_PASS_EVERY =>
                {
                    let moved = r.scope.symmetric_difference(scope).cloned();
                    Scope::Namespaces(dirty.into_iter().chain(moved).collect())
                }
                _ => Scope::Full,
            }
        })
    }

    /// Records this pass's results and returns the whole profile's: every namespace's
    /// unresolved drift plus this pass's repairs, and the findings summed.
    pub fn finish(
        &self,
        profile: &str,
        version: (String, Option<i64>),
        scope: BTreeSet<String>,
        planned: &Scope,
        results: BTreeMap<String, NamespaceResult>,
        now: Instant,
    ) -> NamespaceResult {
        self.with(|m| {
            let e = m.entry(profile.to_string()).or_default();
            let mut repaired = Vec::new();
            let mut keep = |r: NamespaceResult| {
                let (done, open): (Vec<_>, Vec<_>) = r
                    .drift
                    .into_iter()
                    .partition(|(_, o)| *o == DriftOutcome::Repaired);
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
                    r.namespaces
                        .retain(|ns, res| scope.contains(ns) || !res.drift.is_empty());
                    r.version = version;
                    r.scope = scope;
                    r
                }
                _ => Retained {
                    version,
                    scope,
                    namespaces: results.into_iter().map(|(ns, r)| (ns, keep(r))).collect(),
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
    use crate::api::ControlName;
    use crate::controls::{DriftReason, ManagedKind, ObjectKey};

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn version(g: i64) -> (String, Option<i64>) {
        ("uid".into(), Some(g))
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

    fn full_pass(l: &Ledger, scope: &BTreeSet<String>, t: Instant) {
        assert_eq!(l.begin("p", &version(1), scope, t), Scope::Full);
        let results = scope
            .iter()
            .map(|ns| (ns.clone(), result(ns, None, 5)))
            .collect();
        l.finish("p", version(1), scope.clone(), &Scope::Full, results, t);
    }

    #[test]
    fn the_first_pass_is_full_and_an_event_replans_only_its_namespace() {
        let l = Ledger::default();
        let (scope, t) = (set(&["a", "b", "c"]), Instant::now());
        full_pass(&l, &scope, t);
        l.mark_namespace("p", "b");
        assert_eq!(
            l.begin("p", &version(1), &scope, t),
            Scope::Namespaces(set(&["b"]))
        );
        // With nothing marked, nothing is re-planned.
        assert_eq!(
            l.begin("p", &version(1), &scope, t),
            Scope::Namespaces(set(&[]))
        );
    }

    #[test]
    fn results_of_untouched_namespaces_still_count() {
        let l = Ledger::default();
        let (scope, t) = (set(&["a", "b"]), Instant::now());
        full_pass(&l, &scope, t);
        let planned = Scope::Namespaces(set(&["b"]));
        let all = l.finish(
            "p",
            version(1),
            scope.clone(),
            &planned,
            BTreeMap::from([(
                "b".to_string(),
                result("b", Some(DriftOutcome::Reported), 5),
            )]),
            t,
        );
        assert_eq!(all.findings.managed[&ControlName::NetworkPolicies], 10);
        assert_eq!(all.drift.len(), 1);
        // A repair is reported once, then forgotten; unresolved drift stays until replanned.
        let again = l.finish(
            "p",
            version(1),
            scope,
            &Scope::Namespaces(set(&[])),
            BTreeMap::new(),
            t,
        );
        assert_eq!(again.drift.len(), 1);
    }

    #[test]
    fn repairs_are_reported_by_the_pass_that_made_them_only() {
        let l = Ledger::default();
        let (scope, t) = (set(&["a"]), Instant::now());
        full_pass(&l, &scope, t);
        let planned = Scope::Namespaces(set(&["a"]));
        let now = l.finish(
            "p",
            version(1),
            scope.clone(),
            &planned,
            BTreeMap::from([(
                "a".to_string(),
                result("a", Some(DriftOutcome::Repaired), 5),
            )]),
            t,
        );
        assert_eq!(now.drift.len(), 1);
        let later = l.finish(
            "p",
            version(1),
            scope,
            &Scope::Namespaces(set(&[])),
            BTreeMap::new(),
            t,
        );
        assert!(later.drift.is_empty());
    }

    #[test]
    fn namespaces_entering_or_leaving_scope_are_replanned() {
        let l = Ledger::default();
        let t = Instant::now();
        full_pass(&l, &set(&["a", "b"]), t);
        assert_eq!(
            l.begin("p", &version(1), &set(&["b", "c"]), t),
            Scope::Namespaces(set(&["a", "c"]))
        );
    }

    #[test]
    fn a_spec_change_a_mark_or_time_makes_the_pass_full() {
        let l = Ledger::default();
        let (scope, t) = (set(&["a"]), Instant::now());
        full_pass(&l, &scope, t);
        assert_eq!(l.begin("p", &version(2), &scope, t), Scope::Full);
        l.mark_all_full();
        assert_eq!(l.begin("p", &version(1), &scope, t), Scope::Full);
        l.mark_full("p");
        full_pass(&l, &scope, t);
        assert_eq!(
            l.begin("p", &version(1), &scope, t + FULL_PASS_EVERY),
            Scope::Full
        );
    }
}
