//! `rampart status [profile]`: a profile's status as a person reads it (conditions, drift,
//! rotation, backups, restore verification), after `cmctl status certificate`. [`render`] is
//! pure; [`read`] gets the profiles (reads only).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::api::{HardeningProfile, HardeningProfileStatus, Mode, ObjectRefStatus};

/// The named profile, or every profile by name when none is named.
pub async fn read(
    client: &Client,
    name: Option<&str>,
) -> Result<Vec<HardeningProfile>, kube::Error> {
    let api = Api::<HardeningProfile>::all(client.clone());
    match name {
        Some(n) => Ok(vec![api.get(n).await?]),
        None => {
            let mut all = api.list(&ListParams::default()).await?.items;
            all.sort_by_key(|p| p.name_any());
            Ok(all)
        }
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
}

fn refs(out: &mut String, title: &str, items: &[ObjectRefStatus]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {title}:");
    for r in items {
        let _ = write!(out, "    {} {}/{}", r.kind, r.namespace, r.name);
        if !r.message.is_empty() {
            let _ = write!(out, ": {}", r.message);
        }
        out.push('\n');
    }
}

/// One profile's status as text.
pub fn render(profile: &HardeningProfile) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Name:       {}", profile.name_any());
    let _ = writeln!(
        out,
        "Mode:       {}",
        match profile.spec.mode {
            Mode::Enforce => "Enforce (drift is repaired)",
            Mode::Audit => "Audit (drift is reported, nothing is written)",
        }
    );
    let Some(status) = &profile.status else {
        out.push_str("Status:     none yet (is the operator running?)\n");
        return out;
    };
    let generation = profile.metadata.generation.unwrap_or_default();
    let observed = status.observed_generation.unwrap_or_default();
    let _ = write!(out, "Generation: {generation}, observed {observed}");
    if observed < generation {
        out.push_str(" (the operator has not seen the latest spec yet)");
    }
    out.push('\n');
    conditions(&mut out, status);
    summary(&mut out, status);
    drift(&mut out, status);
    rotation(&mut out, status);
    backups(&mut out, status);
    verification(&mut out, status);
    out
}

fn conditions(out: &mut String, status: &HardeningProfileStatus) {
    out.push_str("Conditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  none\n");
    }
    for c in &status.conditions {
        let _ = writeln!(
            out,
            "  {:<24} {:<7} {}: {} (since {})",
            c.type_,
            c.status.as_str(),
            c.reason,
            c.message,
            c.last_transition_time.to_rfc3339()
        );
    }
}

fn summary(out: &mut String, status: &HardeningProfileStatus) {
    if let Some(s) = &status.summary {
        let _ = writeln!(
            out,
            "Namespaces: {} selected, {} compliant, {} drifted; {} managed objects, {} drifted, {} created, {} repaired",
            s.namespaces,
            s.compliant,
            s.drifted_namespaces,
            s.managed_objects,
            s.drifted_objects,
            s.created_objects,
            s.repaired_objects
        );
    }
    for c in &status.conflicts {
        let _ = writeln!(
            out,
            "Conflict:   {} in {} is held by profile {}",
            c.control, c.namespace, c.held_by
        );
    }
    for e in &status.exceptions {
        let _ = writeln!(
            out,
            "Exception:  {} in {} ({:?}, expires {}): {}",
            e.control,
            e.namespace,
            e.state,
            time(e.expires),
            e.reason
        );
    }
}

fn drift(out: &mut String, status: &HardeningProfileStatus) {
    let total = status
        .summary
        .as_ref()
        .map(|s| s.drifted_objects)
        .unwrap_or(status.drift.len() as i64);
    if status.drift.is_empty() {
        out.push_str("Drift:      none\n");
        return;
    }
    let _ = writeln!(out, "Drift:      {} listed of {total}", status.drift.len());
    for d in &status.drift {
        let _ = write!(
            out,
            "  {}/{} {} {:?}",
            d.namespace, d.kind, d.name, d.reason
        );
        if !d.fields.is_empty() {
            let _ = write!(out, " ({})", d.fields.join(", "));
        }
        let _ = writeln!(out, " since {}", d.since.to_rfc3339());
    }
}

fn rotation(out: &mut String, status: &HardeningProfileStatus) {
    let Some(r) = &status.rotation else {
        return;
    };
    out.push_str("Rotation:\n");
    let _ = writeln!(
        out,
        "  Rotation ID: {}  Phase: {:?}",
        r.observed_rotation_id.as_deref().unwrap_or("-"),
        r.phase
    );
    let _ = writeln!(
        out,
        "  Secrets:     {} selected, {} rotated, {} adopted",
        r.secrets_selected, r.secrets_rotated, r.secrets_adopted
    );
    let _ = writeln!(
        out,
        "  Workloads:   {}/{} restarted",
        r.workloads_restarted, r.workloads_total
    );
    let _ = writeln!(
        out,
        "  Started:     {}  Completed: {}",
        time(r.started_at),
        time(r.completed_at)
    );
    if let Some(m) = &r.message {
        let _ = writeln!(out, "  Message:     {m}");
    }
    if let Some(q) = &r.queued_rotation_id {
        let _ = writeln!(out, "  Queued:      {q}");
    }
    if r.hooks_pending + r.hooks_succeeded > 0 || !r.hook_failures.is_empty() {
        let _ = writeln!(
            out,
            "  Hooks:       {} running, {} succeeded, {} failed",
            r.hooks_pending,
            r.hooks_succeeded,
            r.hook_failures.len()
        );
    }
    for h in r.history.iter().skip(1) {
        let _ = writeln!(
            out,
            "  Earlier:     {} {} (completed {}), {} rotated, {} restarted",
            h.rotation_id,
            h.phase,
            time(h.completed_at),
            h.secrets_rotated,
            h.workloads_restarted
        );
    }
    for (title, items) in [
        ("Hook failed", &r.hook_failures),
        ("Stalled", &r.stalled_consumers),
        ("Unwritable", &r.unwritable_secrets),
        ("Foreign", &r.foreign_secrets),
        ("Skipped", &r.skipped_consumers),
    ] {
        for i in items {
            let _ = writeln!(
                out,
                "  {title}: {} {}/{}: {}",
                i.kind, i.namespace, i.name, i.reason
            );
        }
    }
}

fn backups(out: &mut String, status: &HardeningProfileStatus) {
    let Some(b) = &status.backups else {
        return;
    };
    out.push_str("Backups:\n");
    let _ = writeln!(
        out,
        "  Last schedule: {}  Next: {}",
        time(b.last_schedule_time),
        time(b.next_schedule_time)
    );
    let _ = writeln!(
        out,
        "  PVCs: {}, ready snapshots: {}, failed: {}, missed slots: {}, orphaned: {}",
        b.pvcs, b.ready_snapshots, b.failed_snapshots, b.missed_slots, b.orphaned_snapshots
    );
    refs(out, "Last successful", &b.last_successful);
    refs(out, "Problems", &b.problems);
    refs(out, "Orphaned", &b.orphaned);
}

fn verification(out: &mut String, status: &HardeningProfileStatus) {
    let last = status
        .backups
        .as_ref()
        .map(|b| b.last_verified.as_slice())
        .unwrap_or_default();
    let rounds = status.verification.as_ref();
    if last.is_empty() && rounds.is_none() {
        return;
    }
    out.push_str("Verification:\n");
    for (title, round) in [
        ("Current round", rounds.and_then(|r| r.current.as_ref())),
        ("Previous round", rounds.and_then(|r| r.previous.as_ref())),
    ] {
        if let Some(r) = round {
            let _ = writeln!(
                out,
                "  {title}: slot {}, {} PVCs, {} succeeded, {} failed",
                r.slot.to_rfc3339(),
                r.pvcs,
                r.succeeded,
                r.failed
            );
        }
    }
    for v in last {
        let _ = write!(
            out,
            "  {}/{} from {}: {:?} at {}",
            v.namespace,
            v.pvc,
            v.snapshot,
            v.result,
            v.time.to_rfc3339()
        );
        if !v.message.is_empty() {
            let _ = write!(out, ": {}", v.message);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::budgets_only;
    use crate::api::{
        Condition, ConditionStatus, DriftEntry, DriftReason, RotationStatus, Summary,
    };

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn a_profile_without_status_says_so() {
        let p = HardeningProfile::new("regulated", budgets_only(Mode::Audit));
        let text = render(&p);
        assert!(text.contains("Audit (drift is reported"), "{text}");
        assert!(text.contains("none yet"), "{text}");
    }

    #[test]
    fn conditions_drift_and_rotation_read_as_lines() {
        let mut p = HardeningProfile::new("regulated", budgets_only(Mode::Enforce));
        p.metadata.generation = Some(3);
        p.status = Some(HardeningProfileStatus {
            observed_generation: Some(2),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::False,
                reason: "Drifted".into(),
                message: "1 object departs from the profile".into(),
                observed_generation: Some(2),
                last_transition_time: at(0),
            }],
            summary: Some(Summary {
                namespaces: 5,
                compliant: 4,
                drifted_namespaces: 1,
                drifted_objects: 1,
                managed_objects: 24,
                created_objects: 24,
                repaired_objects: 0,
            }),
            drift: vec![DriftEntry {
                namespace: "countly".into(),
                kind: "NetworkPolicy".into(),
                name: "rampart-default-deny".into(),
                reason: DriftReason::Modified,
                fields: vec!["spec.podSelector".into()],
                since: at(10),
            }],
            rotation: Some(
                serde_json::from_value::<RotationStatus>(serde_json::json!({
                    "observedRotationId": "2026-11-22",
                    "phase": "Restarting",
                    "secretsSelected": 2,
                    "secretsRotated": 2,
                    "workloadsTotal": 4,
                    "workloadsRestarted": 1
                }))
                .expect("a rotation status"),
            ),
            ..Default::default()
        });
        let text = render(&p);
        for line in [
            "Generation: 3, observed 2 (the operator has not seen the latest spec yet)",
            "  Ready                    False   Drifted: 1 object departs from the profile",
            "Namespaces: 5 selected, 4 compliant, 1 drifted; 24 managed objects, 1 drifted, 24 created, 0 repaired",
            "Drift:      1 listed of 1",
            "  countly/NetworkPolicy rampart-default-deny Modified (spec.podSelector) since",
            "  Rotation ID: 2026-11-22  Phase: Restarting",
            "  Workloads:   1/4 restarted",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("Backups:"), "{text}");
    }
}
