//! Condition helpers after the Kubernetes conventions. Pure: time is an argument.

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Condition, ConditionStatus};

pub const READY: &str = "Ready";
pub const NETWORK_POLICIES_READY: &str = "NetworkPoliciesReady";
pub const DISRUPTION_BUDGETS_READY: &str = "DisruptionBudgetsReady";
pub const SECRETS_ROTATED: &str = "SecretsRotated";
pub const BACKUPS_HEALTHY: &str = "BackupsHealthy";
pub const BACKUPS_VERIFIED: &str = "BackupsVerified";
pub const DRIFTED: &str = "Drifted";
pub const INVALID_SPEC: &str = "InvalidSpec";
pub const CONFLICT: &str = "Conflict";
pub const DRAIN_BLOCKED: &str = "DrainBlocked";
/// kstatus' abnormal-true conditions (what Flux and `kubectl wait`-style tools read): True
/// while the profile converges, and True when it cannot without a person (an invalid spec,
/// namespaces held by another profile, a stalled rotation).
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// A condition as computed, before timestamps are settled against the previous status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Computed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Computed {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A time as RFC 3339 text to the second, for messages and annotations.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Turns computed conditions into status conditions, keeping each previous
/// `lastTransitionTime` unless the status flipped, so a reconcile that changes nothing writes
/// nothing.
pub fn settle(
    previous: &[Condition],
    computed: Vec<Computed>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    computed
        .into_iter()
        .map(|c| {
            let status = ConditionStatus::from(c.status);
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == status)
                .map(|p| p.last_transition_time)
                .unwrap_or(now);
            Condition {
                type_: c.type_.to_string(),
                status,
                reason: c.reason,
                message: c.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether a condition of this type is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn transition_time_kept_while_status_holds() {
        let first = settle(
            &[],
            vec![Computed::new(READY, true, "Converged", "")],
            Some(1),
            at(0),
        );
        let second = settle(
            &first,
            vec![Computed::new(READY, true, "Converged", "other message")],
            Some(2),
            at(60),
        );
        assert_eq!(second[0].last_transition_time, at(0));
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_when_status_flips() {
        let first = settle(
            &[],
            vec![Computed::new(READY, true, "Converged", "")],
            Some(1),
            at(0),
        );
        let second = settle(
            &first,
            vec![Computed::new(READY, false, "Drifted", "")],
            Some(1),
            at(60),
        );
        assert_eq!(second[0].last_transition_time, at(60));
        assert_eq!(second[0].status, ConditionStatus::False);
    }
}
