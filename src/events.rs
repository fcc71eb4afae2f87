//! Kubernetes Events about a profile: what a person running `kubectl describe hp` should see.
//! Building them is pure ([`Event`], [`condition_flips`], [`summarize`]); [`Publisher`] is the
//! one place that sends them to the API.
//!
//! Notes name objects and counts, never a Secret's value, and stay under the API server's
//! 1 kB limit.

use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tracing::warn;

use crate::api::{conditions, Condition, ConditionStatus, HardeningProfile};
use crate::apply::{Applied, Effect};
use crate::controls::{Drift, Target, WriteVerb};
use crate::metrics::Metrics;
use crate::status::DriftOutcome;

/// How many objects a note names before it says "and N more".
const SHOWN: usize = 5;
/// The API server refuses notes over 1 kB.
const NOTE_LIMIT: usize = 1000;

/// One event about a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    /// CamelCase, a word from a fixed set (never free text: it is a metric-like key).
    pub reason: String,
    pub action: &'static str,
    pub note: String,
}

impl Event {
    pub fn normal(reason: &str, action: &'static str, note: String) -> Self {
        Self {
            warning: false,
            reason: reason.to_string(),
            action,
            note,
        }
    }

    pub fn warning(reason: &str, action: &'static str, note: String) -> Self {
        Self {
            warning: true,
            reason: reason.to_string(),
            action,
            note,
        }
    }
}

/// One line naming the first few items and how many more, so events stay small.
pub fn summarize(verb: &str, items: &[String]) -> String {
    let head = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let objects = if items.len() == 1 {
        "object"
    } else {
        "objects"
    };
    if items.len() > SHOWN {
        format!(
            "{verb} {} {objects}: {head} and {} more",
            items.len(),
            items.len() - SHOWN
        )
    } else {
        format!("{verb} {} {objects}: {head}", items.len())
    }
}

/// Events for the condition flips a person watching the profile should see: Ready either way,
/// and the conditions that mean trouble turning true.
pub fn condition_flips(previous: &[Condition], next: &[Condition]) -> Vec<Event> {
    let mut out = Vec::new();
    for c in next {
        let was = previous
            .iter()
            .find(|p| p.type_ == c.type_)
            .map(|p| p.status);
        if was == Some(c.status) {
            continue;
        }
        let trouble = c.status == ConditionStatus::True
            && matches!(
                c.type_.as_str(),
                conditions::INVALID_SPEC
                    | conditions::CONFLICT
                    | conditions::DRAIN_BLOCKED
                    | conditions::DRIFTED
            );
        if !trouble && c.type_ != conditions::READY {
            continue;
        }
        let note = format!("{} is {}: {}", c.type_, c.status.as_str(), c.message);
        // The condition's own CamelCase reason, one of a fixed set per type.
        out.push(if trouble {
            Event::warning(&c.reason, "Reconcile", note)
        } else {
            Event::normal(&c.reason, "Reconcile", note)
        });
    }
    out
}

/// Events about what a pass wrote: first creations, repairs (with the drift they fixed) and
/// failed repairs,
/// Secrets rotated or adopted, restarts, snapshots created and pruned, a slot caught up late.
pub fn after_writes(
    outcomes: &[(Drift, DriftOutcome)],
    applied: &[Applied],
    caught_up_slot: bool,
) -> Vec<Event> {
    let mut out = Vec::new();
    let created: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| *o == DriftOutcome::Created)
        .map(|(d, _)| Target::from(&d.key).to_string())
        .collect();
    if !created.is_empty() {
        out.push(Event::normal(
            "Created",
            "Create",
            summarize("Created", &created),
        ));
    }
    let repaired: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| *o == DriftOutcome::Repaired)
        .map(|(d, _)| format!("{} ({})", Target::from(&d.key), d.reason.as_str()))
        .collect();
    if !repaired.is_empty() {
        out.push(Event::normal(
            "Repaired",
            "Repair",
            summarize("Repaired", &repaired),
        ));
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| *o == DriftOutcome::Failed)
        .map(|(d, _)| Target::from(&d.key).to_string())
        .collect();
    if !failed.is_empty() {
        out.push(Event::warning(
            "RepairFailed",
            "Repair",
            summarize("Could not repair", &failed),
        ));
    }
    let done = |verb: WriteVerb, kind: Option<&str>| -> Vec<String> {
        applied
            .iter()
            .filter(|a| a.verb == verb && kind.is_none_or(|k| a.target.kind == k))
            // Restore verification's scratch objects are neither taken nor pruned backups.
            .filter(|a| {
                let t = &a.target;
                !crate::controls::verify::is_scratch(t.kind, &t.namespace, &t.name)
            })
            .filter(|a| matches!(a.effect, Ok(Effect::Done)))
            .map(|a| a.target.to_string())
            .collect()
    };
    let rotated = done(WriteVerb::Rotate, None);
    if !rotated.is_empty() {
        out.push(Event::normal(
            "SecretsRotated",
            "Rotate",
            summarize("Rotated", &rotated),
        ));
    }
    let adopted = done(WriteVerb::Adopt, None);
    if !adopted.is_empty() {
        out.push(Event::normal(
            "SecretsAdopted",
            "Adopt",
            summarize(
                "Adopted, values unchanged until the rotation id next changes,",
                &adopted,
            ),
        ));
    }
    let restarted = done(WriteVerb::Restart, None);
    if !restarted.is_empty() {
        out.push(Event::normal(
            "RestartBatch",
            "Restart",
            summarize("Restarting", &restarted),
        ));
    }
    let created = done(WriteVerb::Create, Some("VolumeSnapshot")).len();
    let pruned = done(WriteVerb::Delete, Some("VolumeSnapshot")).len();
    if created > 0 || pruned > 0 {
        out.push(Event::normal(
            "Snapshots",
            "Snapshot",
            format!("Created {created} and pruned {pruned} VolumeSnapshots"),
        ));
    }
    if caught_up_slot && created > 0 {
        out.push(Event::normal(
            "SlotCaughtUp",
            "Snapshot",
            "Took a slot late, within the starting deadline".into(),
        ));
    }
    out
}

/// Sends events about profiles, counting each as an API write.
#[derive(Clone)]
pub struct Publisher {
    recorder: Recorder,
}

impl Publisher {
    pub fn new(client: Client, instance: String) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "rampart".into(),
                    instance: Some(instance),
                },
            ),
        }
    }

    /// Publishes each event; a failure is logged, never fatal (events are advice).
    pub async fn publish(&self, metrics: &Metrics, profile: &HardeningProfile, events: &[Event]) {
        let name = profile.meta().name.clone().unwrap_or_default();
        for e in events {
            let note = if e.note.len() > NOTE_LIMIT {
                format!(
                    "{}…",
                    e.note.chars().take(NOTE_LIMIT - 10).collect::<String>()
                )
            } else {
                e.note.clone()
            };
            let ev = KubeEvent {
                type_: if e.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: e.reason.clone(),
                note: Some(note),
                action: e.action.into(),
                secondary: None,
            };
            metrics.write(&name, "Event", "create");
            if let Err(err) = self.recorder.publish(&ev, &profile.object_ref(&())).await {
                warn!(error = %err, "could not publish event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn cond(type_: &str, status: ConditionStatus, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: Utc.timestamp_opt(0, 0).single().expect("valid"),
        }
    }

    #[test]
    fn summaries_name_five_and_count_the_rest() {
        let items: Vec<String> = (0..7).map(|i| format!("o{i}")).collect();
        assert_eq!(
            summarize("Repaired", &items),
            "Repaired 7 objects: o0, o1, o2, o3, o4 and 2 more"
        );
        assert_eq!(summarize("Repaired", &items[..1]), "Repaired 1 object: o0");
    }

    #[test]
    fn first_creations_and_repairs_are_told_apart() {
        use crate::controls::{DriftReason, ManagedKind, ObjectKey};
        let drift = |name: &str, reason: DriftReason| crate::controls::Drift {
            key: ObjectKey {
                kind: ManagedKind::NetworkPolicy,
                namespace: "a".into(),
                name: name.into(),
            },
            control: crate::api::ControlName::NetworkPolicies,
            reason,
            fields: vec![],
        };
        let outcomes = vec![
            (drift("deny", DriftReason::Missing), DriftOutcome::Created),
            (drift("dns", DriftReason::Missing), DriftOutcome::Created),
            (drift("same", DriftReason::Missing), DriftOutcome::Repaired),
        ];
        let events = after_writes(&outcomes, &[], false);
        let notes: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.reason.as_str(), e.note.as_str()))
            .collect();
        assert_eq!(
            notes,
            vec![
                (
                    "Created",
                    "Created 2 objects: NetworkPolicy a/deny, NetworkPolicy a/dns"
                ),
                (
                    "Repaired",
                    "Repaired 1 object: NetworkPolicy a/same (Missing)"
                ),
            ]
        );
    }

    #[test]
    fn only_flips_that_matter_make_events() {
        let prev = vec![
            cond("Ready", ConditionStatus::True, "Converged"),
            cond("Drifted", ConditionStatus::False, "NoDrift"),
            cond("NetworkPoliciesReady", ConditionStatus::True, "Converged"),
        ];
        let next = vec![
            cond("Ready", ConditionStatus::False, "DriftReported"),
            cond("Drifted", ConditionStatus::True, "DriftReported"),
            cond(
                "NetworkPoliciesReady",
                ConditionStatus::False,
                "DriftReported",
            ),
        ];
        let events = condition_flips(&prev, &next);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(!events[0].warning && events[0].note.starts_with("Ready is False"));
        assert!(events[1].warning && events[1].reason == "DriftReported");
        assert!(condition_flips(&next, &next).is_empty());
    }
}
