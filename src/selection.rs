//! Which namespaces a profile holds, per control: selectors, exclusions, exceptions and
//! conflicts with older profiles. Pure: observed namespaces, other profiles and `now` are
//! arguments.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::api::{
    validate::exception_expired, ConflictEntry, ControlName, ExceptionState, ExceptionStatus,
    HardeningProfileSpec,
};
use crate::labels;

/// What selection needs to know of a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Being deleted: nothing new is created there.
    pub terminating: bool,
    /// Excluded by the operator (see [`ExcludedNamespaces`]): a profile selects it only by
    /// naming it in `namespaces`, never by label.
    pub excluded: bool,
}

/// Namespaces no profile selects by label: the control plane's and the operator's own, unless
/// the operator is told otherwise (`--excluded-namespaces`). A profile still selects one it
/// names in `namespaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExcludedNamespaces {
    /// Names, or prefixes ending in `*`.
    patterns: Vec<String>,
}

impl ExcludedNamespaces {
    /// Names, or prefixes ending in `*` (`kube-*`).
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        Self {
            patterns: patterns.into_iter().filter(|p| !p.is_empty()).collect(),
        }
    }

    /// The default: every `kube-*` namespace (kube-system, kube-public, kube-node-lease and any
    /// other the control plane or its add-ons make) and the operator's own, when known.
    pub fn default_for(operator_namespace: Option<&str>) -> Self {
        Self::new(
            std::iter::once("kube-*".to_string()).chain(operator_namespace.map(str::to_string)),
        )
    }

    pub fn excludes(&self, namespace: &str) -> bool {
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => namespace.starts_with(prefix),
            None => namespace == p,
        })
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl Default for ExcludedNamespaces {
    fn default() -> Self {
        Self::default_for(None)
    }
}

/// What selection needs to know of a profile.
#[derive(Clone, Debug)]
pub struct ProfileInfo<'a> {
    pub name: &'a str,
    pub created: Option<DateTime<Utc>>,
    pub spec: &'a HardeningProfileSpec,
}

impl ProfileInfo<'_> {
    /// Older profiles win conflicts; the name breaks ties so every replica agrees.
    fn precedes(&self, other: &ProfileInfo<'_>) -> bool {
        (self.created, self.name) < (other.created, other.name)
    }
}

/// Where a profile acts, and why it does not act elsewhere.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    /// Namespaces the profile selects, sorted.
    pub namespaces: BTreeSet<String>,
    /// Per enabled control, the namespaces where this profile acts.
    pub acting: BTreeMap<ControlName, BTreeSet<String>>,
    pub exceptions: Vec<ExceptionStatus>,
    pub conflicts: Vec<ConflictEntry>,
}

impl Selection {
    /// The namespaces where `control` acts (none when it is not enabled).
    pub fn acting_in(&self, control: ControlName) -> BTreeSet<String> {
        self.acting.get(&control).cloned().unwrap_or_default()
    }
}

/// When the next exception of `spec` expires, so selection is computed again then.
pub fn next_exception_expiry(
    spec: &HardeningProfileSpec,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    spec.exceptions
        .iter()
        .filter_map(|e| e.expires.as_deref())
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| *t > now)
        .min()
}

pub fn selects(spec: &HardeningProfileSpec, ns: &NamespaceInfo) -> bool {
    // Restore verification's scratch namespaces are Rampart's own jails: no control reaches
    // into one, even when it is named (its default-deny policy and quota are verification's,
    // and the network policy control would otherwise delete them as not its own).
    if ns
        .name
        .starts_with(crate::controls::verify::SCRATCH_NAMESPACE_PREFIX)
    {
        return false;
    }
    if spec.namespaces.iter().any(|n| n.as_str() == ns.name) {
        return true;
    }
    if ns.excluded {
        return false;
    }
    spec.namespace_selector
        .as_ref()
        .is_some_and(|sel| labels::matches(sel, &ns.labels))
}

/// Computes the selection of `profile` among `namespaces`, given every profile in the cluster
/// (it may include `profile` itself).
pub fn select(
    profile: &ProfileInfo<'_>,
    others: &[ProfileInfo<'_>],
    namespaces: &[NamespaceInfo],
    now: DateTime<Utc>,
) -> Selection {
    let spec = profile.spec;
    let selected: Vec<&NamespaceInfo> = namespaces.iter().filter(|ns| selects(spec, ns)).collect();

    let exceptions: Vec<ExceptionStatus> = spec
        .exceptions
        .iter()
        .map(|e| ExceptionStatus {
            namespace: e.namespace.as_str().to_string(),
            control: e.control.as_str().to_string(),
            reason: e.reason.clone(),
            state: if exception_expired(e.expires.as_deref(), now) {
                ExceptionState::Expired
            } else {
                ExceptionState::Active
            },
            expires: e
                .expires
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
        })
        .collect();
    let exempt: BTreeSet<(ControlName, &str)> = spec
        .exceptions
        .iter()
        .filter(|e| !exception_expired(e.expires.as_deref(), now))
        .map(|e| (e.control, e.namespace.as_str()))
        .collect();

    let older: Vec<&ProfileInfo<'_>> = others
        .iter()
        .filter(|o| o.name != profile.name && o.precedes(profile))
        .collect();

    let mut acting: BTreeMap<ControlName, BTreeSet<String>> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for control in ControlName::ALL.into_iter().filter(|c| spec.enables(*c)) {
        let set = acting.entry(control).or_default();
        for ns in &selected {
            if ns.terminating || exempt.contains(&(control, ns.name.as_str())) {
                continue;
            }
            match older
                .iter()
                .find(|o| o.spec.enables(control) && selects(o.spec, ns))
            {
                Some(holder) => conflicts.push(ConflictEntry {
                    namespace: ns.name.clone(),
                    control: control.as_str().to_string(),
                    held_by: holder.name.to_string(),
                }),
                None => {
                    set.insert(ns.name.clone());
                }
            }
        }
    }
    conflicts.sort();

    Selection {
        namespaces: selected.iter().map(|ns| ns.name.clone()).collect(),
        acting,
        exceptions,
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Exception, LabelSelector, NamespaceName};
    use chrono::TimeZone;

    fn ns(name: &str, pairs: &[(&str, &str)]) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminating: false,
            excluded: ExcludedNamespaces::default_for(Some("rampart-system")).excludes(name),
        }
    }

    fn pdb_spec_selecting(label: (&str, &str)) -> HardeningProfileSpec {
        HardeningProfileSpec {
            namespace_selector: Some(LabelSelector {
                match_labels: BTreeMap::from([(label.0.to_string(), label.1.to_string())]),
                match_expressions: vec![],
            }),
            ..crate::api::fixtures::budgets_only(Default::default())
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn scratch_namespaces_are_never_selected_even_when_named() {
        let mut spec = pdb_spec_selecting(("tier", "prod"));
        spec.namespaces = vec![NamespaceName("rampart-verify-p".into())];
        let namespaces = vec![ns("rampart-verify-p", &[("tier", "prod")])];
        let p = ProfileInfo {
            name: "p",
            created: None,
            spec: &spec,
        };
        let sel = select(&p, &[], &namespaces, now());
        assert!(sel.namespaces.is_empty(), "{:?}", sel.namespaces);
    }

    #[test]
    fn system_namespaces_excluded_unless_named() {
        let mut spec = pdb_spec_selecting(("tier", "prod"));
        let namespaces = vec![
            ns("kube-system", &[("tier", "prod")]),
            ns("app", &[("tier", "prod")]),
            ns("dev", &[]),
        ];
        let p = ProfileInfo {
            name: "p",
            created: None,
            spec: &spec,
        };
        let sel = select(&p, &[], &namespaces, now());
        assert_eq!(sel.namespaces.iter().collect::<Vec<_>>(), vec!["app"]);

        spec.namespaces = vec![NamespaceName("kube-system".into())];
        let p = ProfileInfo {
            name: "p",
            created: None,
            spec: &spec,
        };
        let sel = select(&p, &[], &namespaces, now());
        assert!(sel.namespaces.contains("kube-system"));
    }

    #[test]
    fn the_operators_own_namespace_and_the_control_planes_are_excluded_by_default() {
        let spec = pdb_spec_selecting(("tier", "prod"));
        let namespaces: Vec<NamespaceInfo> = [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "rampart-system",
            "app",
        ]
        .into_iter()
        .map(|n| ns(n, &[("tier", "prod")]))
        .collect();
        let p = ProfileInfo {
            name: "p",
            created: None,
            spec: &spec,
        };
        let sel = select(&p, &[], &namespaces, now());
        assert_eq!(sel.namespaces.iter().collect::<Vec<_>>(), vec!["app"]);
    }

    #[test]
    fn exclusions_are_names_or_prefixes() {
        let ex = ExcludedNamespaces::new(["kube-*".to_string(), "ops".to_string()]);
        assert!(ex.excludes("kube-system") && ex.excludes("ops"));
        assert!(!ex.excludes("ops-2") && !ex.excludes("app"));
        assert!(!ExcludedNamespaces::new([]).excludes("kube-system"));
        assert!(!ExcludedNamespaces::default_for(None).excludes("default"));
    }

    #[test]
    fn active_exception_exempts_and_expired_one_does_not() {
        let mut spec = pdb_spec_selecting(("tier", "prod"));
        spec.exceptions = vec![
            Exception {
                namespace: NamespaceName("a".into()),
                control: ControlName::PodDisruptionBudgets,
                reason: "legacy".into(),
                expires: Some("2027-01-01T00:00:00Z".into()),
            },
            Exception {
                namespace: NamespaceName("b".into()),
                control: ControlName::PodDisruptionBudgets,
                reason: "was legacy".into(),
                expires: Some("2026-01-01T00:00:00Z".into()),
            },
        ];
        let namespaces = vec![ns("a", &[("tier", "prod")]), ns("b", &[("tier", "prod")])];
        let p = ProfileInfo {
            name: "p",
            created: None,
            spec: &spec,
        };
        let sel = select(&p, &[], &namespaces, now());
        assert!(!sel
            .acting_in(ControlName::PodDisruptionBudgets)
            .contains("a"));
        assert!(sel
            .acting_in(ControlName::PodDisruptionBudgets)
            .contains("b"));
        assert_eq!(sel.exceptions[1].state, ExceptionState::Expired);
    }

    #[test]
    fn older_profile_keeps_a_contested_namespace() {
        let spec = pdb_spec_selecting(("tier", "prod"));
        let namespaces = vec![ns("shared", &[("tier", "prod")])];
        let old = ProfileInfo {
            name: "zeta",
            created: Some(now() - chrono::Duration::hours(1)),
            spec: &spec,
        };
        let new = ProfileInfo {
            name: "alpha",
            created: Some(now()),
            spec: &spec,
        };
        let all = vec![old.clone(), new.clone()];
        assert!(select(&old, &all, &namespaces, now())
            .acting_in(ControlName::PodDisruptionBudgets)
            .contains("shared"));
        let sel_new = select(&new, &all, &namespaces, now());
        assert!(!sel_new
            .acting_in(ControlName::PodDisruptionBudgets)
            .contains("shared"));
        assert_eq!(sel_new.conflicts[0].held_by, "zeta");
    }

    #[test]
    fn terminating_namespace_is_selected_but_not_acted_in() {
        let spec = pdb_spec_selecting(("tier", "prod"));
        let mut gone = ns("gone", &[("tier", "prod")]);
        gone.terminating = true;
        let p = ProfileInfo {
            name: "p",
            created: None,
            spec: &spec,
        };
        let sel = select(&p, &[], &[gone], now());
        assert!(sel.namespaces.contains("gone"));
        assert!(!sel
            .acting_in(ControlName::PodDisruptionBudgets)
            .contains("gone"));
    }
}
