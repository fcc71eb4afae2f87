//! The operator's Prometheus metrics, in a struct that owns its registry. Labels are bounded:
//! profile and control names, kinds, verbs and error categories, never object names or values.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::ControlName;

pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub triggers: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub api_writes: IntCounterVec,
    pub drifted_objects: IntGaugeVec,
    pub managed_objects: IntGaugeVec,
    pub repairs: IntCounterVec,
    pub exceptions: IntGaugeVec,
    pub drain_blocked: IntGaugeVec,
    pub profile_ready: IntGaugeVec,
    pub profile_condition: IntGaugeVec,
    pub profile_info: IntGaugeVec,
    pub objects_created: IntCounterVec,
    pub api_requests: IntCounterVec,
    pub secrets_rotated: IntCounterVec,
    pub secrets_adopted: IntCounterVec,
    pub workloads_restarted: IntCounterVec,
    pub rotation_stalled: IntGaugeVec,
    pub rotation_hooks: IntCounterVec,
    pub rotation_phase: IntGaugeVec,
    pub rotation_last_completed: prometheus::GaugeVec,
    pub snapshots_created: IntCounterVec,
    pub snapshots_pruned: IntCounterVec,
    pub snapshots_failed: IntGaugeVec,
    pub snapshots_orphaned: IntGaugeVec,
    pub snapshot_slots_missed: IntCounterVec,
    pub snapshot_last_success: prometheus::GaugeVec,
    pub backup_last_verified: prometheus::GaugeVec,
    pub backup_verifications_failed: IntCounterVec,
    pub leader: prometheus::IntGauge,
    pub build_info: IntGaugeVec,
}

/// The commit the binary was built from, when the build passed `RAMPART_GIT_COMMIT` (the image
/// build does; a plain `cargo build` outside git need not).
const GIT_COMMIT: &str = match option_env!("RAMPART_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "rampart_reconciles_total",
                "Profile reconciles by result (success, error).",
            ),
            &["result"],
        )?;
        let triggers = IntCounterVec::new(
            Opts::new(
                "rampart_reconcile_triggers_total",
                "Watch events that asked for a pass, by the kind that changed (what the reconcile load comes from).",
            ),
            &["kind"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "rampart_reconcile_errors_total",
                "Failed reconciles by error category.",
            ),
            &["category"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "rampart_reconcile_duration_seconds",
                "Time one profile reconcile took, by result.",
            )
            .buckets(vec![
                // Up to 300 s: converging 3000 namespaces from nothing took 86 s
                // (BENCHMARKS.md), which a last bucket of 30 s would only call "more".
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                300.0,
            ]),
            &["result"],
        )?;
        let api_writes = IntCounterVec::new(
            Opts::new(
                "rampart_api_writes_total",
                "Writes the operator sent to the API server, by profile, kind and verb.",
            ),
            &["profile", "kind", "verb"],
        )?;
        let drifted_objects = IntGaugeVec::new(
            Opts::new(
                "rampart_drifted_objects",
                "Objects departing from the profile at the last reconcile, before repair.",
            ),
            &["profile", "control"],
        )?;
        let managed_objects = IntGaugeVec::new(
            Opts::new(
                "rampart_managed_objects",
                "Objects the operator manages for a profile.",
            ),
            &["profile", "control"],
        )?;
        let repairs = IntCounterVec::new(
            Opts::new(
                "rampart_repairs_total",
                "Objects of the profile repaired after they drifted: made again after they were \
                 deleted, re-applied after an edit, or deleted when no longer desired. A first \
                 creation counts in rampart_objects_created_total instead.",
            ),
            &["profile", "control"],
        )?;
        let objects_created = IntCounterVec::new(
            Opts::new(
                "rampart_objects_created_total",
                "Objects the profile wants that this operator had never seen exist, created \
                 (a first apply, a newly selected namespace, a new workload).",
            ),
            &["profile", "control"],
        )?;
        let exceptions = IntGaugeVec::new(
            Opts::new(
                "rampart_exceptions",
                "Exceptions in a profile, by state (Active, Expired).",
            ),
            &["profile", "state"],
        )?;
        let drain_blocked = IntGaugeVec::new(
            Opts::new("rampart_drain_blocking_budgets", "PodDisruptionBudgets in scope that allow no disruption while their pods are healthy."),
            &["profile"],
        )?;
        let profile_ready = IntGaugeVec::new(
            Opts::new(
                "rampart_profile_ready",
                "1 when the profile's Ready condition is True.",
            ),
            &["profile"],
        )?;
        let profile_condition = IntGaugeVec::new(
            Opts::new(
                "rampart_profile_condition",
                "1 for each condition's current status, 0 for its other statuses.",
            ),
            &["profile", "type", "status"],
        )?;
        let profile_info = IntGaugeVec::new(
            Opts::new(
                "rampart_profile_info",
                "Always 1; the mode label says whether the profile repairs (Enforce) or only \
                 reports (Audit). Alerts on drift and readiness join on it.",
            ),
            &["profile", "mode"],
        )?;
        let api_requests = IntCounterVec::new(
            Opts::new(
                "rampart_api_requests_total",
                "Requests the operator sent to the API server, by verb and HTTP status code \
                 (code \"none\" when no response came).",
            ),
            &["verb", "code"],
        )?;
        let secrets_rotated = IntCounterVec::new(
            Opts::new("rampart_secrets_rotated_total", "Secrets given new values."),
            &["profile"],
        )?;
        let secrets_adopted = IntCounterVec::new(
            Opts::new(
                "rampart_secrets_adopted_total",
                "Secrets that had never carried a rotation id, stamped with the current one and left unchanged.",
            ),
            &["profile"],
        )?;
        let workloads_restarted = IntCounterVec::new(
            Opts::new(
                "rampart_workloads_restarted_total",
                "Workloads restarted after a rotation.",
            ),
            &["profile"],
        )?;
        let rotation_stalled = IntGaugeVec::new(
            Opts::new(
                "rampart_rotation_stalled",
                "1 while a rotation waits on a rollout that overran its timeout.",
            ),
            &["profile"],
        )?;
        let snapshots_created = IntCounterVec::new(
            Opts::new(
                "rampart_snapshots_created_total",
                "VolumeSnapshots created.",
            ),
            &["profile"],
        )?;
        let snapshots_pruned = IntCounterVec::new(
            Opts::new(
                "rampart_snapshots_pruned_total",
                "VolumeSnapshots deleted by retention.",
            ),
            &["profile"],
        )?;
        let snapshots_failed = IntGaugeVec::new(
            Opts::new(
                "rampart_snapshots_failed",
                "Rampart's VolumeSnapshots that report an error.",
            ),
            &["profile"],
        )?;
        let snapshots_orphaned = IntGaugeVec::new(
            Opts::new(
                "rampart_snapshots_orphaned",
                "Rampart's VolumeSnapshots of PVCs that are gone or no longer selected, kept (never aged out).",
            ),
            &["profile"],
        )?;
        let snapshot_slots_missed = IntCounterVec::new(
            Opts::new(
                "rampart_snapshot_slots_missed_total",
                "Schedule slots neither taken nor caught up within the deadline.",
            ),
            &["profile"],
        )?;
        let snapshot_last_success = prometheus::GaugeVec::new(
            Opts::new(
                "rampart_snapshot_last_success_timestamp_seconds",
                "Time of the newest ready snapshot of each selected PVC.",
            ),
            &["profile", "namespace", "pvc"],
        )?;
        let backup_last_verified = prometheus::GaugeVec::new(
            Opts::new(
                "rampart_backup_last_verified_timestamp_seconds",
                "Time of the last successful restore verification of each selected PVC.",
            ),
            &["profile", "namespace", "pvc"],
        )?;
        let backup_verifications_failed = IntCounterVec::new(
            Opts::new(
                "rampart_backup_verifications_failed_total",
                "Restore verifications recorded as Failed.",
            ),
            &["profile"],
        )?;
        let leader = prometheus::IntGauge::new(
            "rampart_leader",
            "1 while this replica holds the leader lease (or runs without leader election).",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "rampart_build_info",
                "Always 1; the labels say which build of the operator is running.",
            ),
            &["version", "git_commit"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_COMMIT])
            .set(1);
        registry.register(Box::new(build_info.clone()))?;
        // CPU, resident memory, open file descriptors and start time of this process, under
        // the standard process_* names every Prometheus dashboard expects.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(secrets_rotated.clone()))?;
        registry.register(Box::new(secrets_adopted.clone()))?;
        registry.register(Box::new(workloads_restarted.clone()))?;
        registry.register(Box::new(rotation_stalled.clone()))?;
        let rotation_hooks = IntCounterVec::new(
            Opts::new(
                "rampart_rotation_hooks_total",
                "beforeRestart hook Jobs of rotated Secrets, by what became of them: started, succeeded, failed (previous values put back) or lost (the Job went away unseen).",
            ),
            &["profile", "outcome"],
        )?;
        let rotation_phase = IntGaugeVec::new(
            Opts::new(
                "rampart_rotation_phase",
                "1 for the phase the profile's rotation is in (Pending, Rotating, RunningHooks, Restarting, Complete, Stalled), 0 for the others.",
            ),
            &["profile", "phase"],
        )?;
        let rotation_last_completed = prometheus::GaugeVec::new(
            Opts::new(
                "rampart_rotation_last_completed_timestamp_seconds",
                "When the profile's latest rotation completed (Unix time).",
            ),
            &["profile"],
        )?;
        registry.register(Box::new(rotation_hooks.clone()))?;
        registry.register(Box::new(rotation_phase.clone()))?;
        registry.register(Box::new(rotation_last_completed.clone()))?;
        registry.register(Box::new(snapshots_created.clone()))?;
        registry.register(Box::new(snapshots_pruned.clone()))?;
        registry.register(Box::new(snapshots_failed.clone()))?;
        registry.register(Box::new(snapshots_orphaned.clone()))?;
        registry.register(Box::new(snapshot_slots_missed.clone()))?;
        registry.register(Box::new(snapshot_last_success.clone()))?;
        registry.register(Box::new(backup_last_verified.clone()))?;
        registry.register(Box::new(backup_verifications_failed.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(triggers.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(api_writes.clone()))?;
        registry.register(Box::new(drifted_objects.clone()))?;
        registry.register(Box::new(managed_objects.clone()))?;
        registry.register(Box::new(repairs.clone()))?;
        registry.register(Box::new(exceptions.clone()))?;
        registry.register(Box::new(drain_blocked.clone()))?;
        registry.register(Box::new(profile_ready.clone()))?;
        registry.register(Box::new(profile_condition.clone()))?;
        registry.register(Box::new(profile_info.clone()))?;
        registry.register(Box::new(objects_created.clone()))?;
        registry.register(Box::new(api_requests.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_errors,
            triggers,
            reconcile_duration,
            api_writes,
            drifted_objects,
            managed_objects,
            repairs,
            exceptions,
            drain_blocked,
            profile_ready,
            profile_condition,
            profile_info,
            objects_created,
            api_requests,
            secrets_rotated,
            secrets_adopted,
            workloads_restarted,
            rotation_stalled,
            rotation_hooks,
            rotation_phase,
            rotation_last_completed,
            snapshots_created,
            snapshots_pruned,
            snapshots_failed,
            snapshots_orphaned,
            snapshot_slots_missed,
            snapshot_last_success,
            backup_last_verified,
            backup_verifications_failed,
            leader,
            build_info,
        })
    }

    pub fn write(&self, profile: &str, kind: &str, verb: &str) {
        self.api_writes
            .with_label_values(&[profile, kind, verb])
            .inc();
    }

    /// Counts a write that changed the cluster under the metric that names what it did.
    pub fn count_done(
        &self,
        profile: &str,
        verb: crate::controls::WriteVerb,
        target: &crate::controls::Target,
    ) {
        use crate::controls::WriteVerb;
        let kind = target.kind;
        // Restore verification's scratch objects are neither snapshots taken nor pruned.
        if crate::controls::verify::is_scratch(kind, &target.namespace, &target.name) {
            return;
        }
        let counter = match (verb, kind) {
            (WriteVerb::Create, "VolumeSnapshot") => &self.snapshots_created,
            (WriteVerb::Delete, "VolumeSnapshot") => &self.snapshots_pruned,
            (WriteVerb::Rotate, _) => &self.secrets_rotated,
            (WriteVerb::Adopt, _) => &self.secrets_adopted,
            (WriteVerb::Restart, _) => &self.workloads_restarted,
            // Creations and repairs of policies and budgets are told apart by what the object's
            // drift was (`report`), which the write alone does not know.
            (WriteVerb::Create | WriteVerb::Repair | WriteVerb::Delete | WriteVerb::Orphan, _) => {
                return
            }
            (WriteVerb::StartHook, _) => {
                self.rotation_hooks
                    .with_label_values(&[profile, "started"])
                    .inc();
                return;
            }
            (WriteVerb::EndHook(end), _) => {
                let outcome = match end {
                    crate::controls::rotation::hooks::HookEnd::Succeeded => "succeeded",
                    crate::controls::rotation::hooks::HookEnd::Failed => "failed",
                    crate::controls::rotation::hooks::HookEnd::Lost => "lost",
                };
                self.rotation_hooks
                    .with_label_values(&[profile, outcome])
                    .inc();
                return;
            }
        };
        counter.with_label_values(&[profile]).inc();
    }

    /// The profile's mode and conditions as the status just computed them: `profile_info`,
    /// `profile_ready` and one `profile_condition` series per condition type and status.
    pub fn report_state(
        &self,
        profile: &str,
        mode: crate::api::Mode,
        conditions: &[crate::api::Condition],
    ) {
        use crate::api::{ConditionStatus, Mode};
        let (now, other) = match mode {
            Mode::Enforce => ("Enforce", "Audit"),
            Mode::Audit => ("Audit", "Enforce"),
        };
        // One series per profile: the alerts join on it, and a stale mode would keep them
        // firing (or silent) after the switch.
        let _ = self.profile_info.remove_label_values(&[profile, other]);
        self.profile_info.with_label_values(&[profile, now]).set(1);
        let ready = crate::api::conditions::is_true(conditions, crate::api::conditions::READY);
        self.profile_ready
            .with_label_values(&[profile])
            .set(i64::from(ready));
        // A condition the status no longer carries (a control switched off) loses its series.
        for labels in series_of(&self.profile_condition, profile) {
            let type_ = labels.get("type").map(String::as_str).unwrap_or_default();
            if !conditions.iter().any(|c| c.type_ == type_) {
                remove_series(&self.profile_condition, &labels);
            }
        }
        for c in conditions {
            for s in [
                ConditionStatus::True,
                ConditionStatus::False,
                ConditionStatus::Unknown,
            ] {
                self.profile_condition
                    .with_label_values(&[profile, c.type_.as_str(), s.as_str()])
                    .set(i64::from(c.status == s));
            }
        }
    }

    /// The gauges that describe one pass's findings.
    pub fn report(&self, profile: &str, findings: &crate::status::Findings) {
        use crate::status::DriftOutcome;
        // Present from the first pass at 0, so an alert on their increase sees the first one.
        for control in findings.namespaces.managed.keys() {
            for counter in [&self.objects_created, &self.repairs] {
                counter
                    .with_label_values(&[profile, control.label()])
                    .inc_by(0);
            }
        }
        for (outcome, counter) in [
            (DriftOutcome::Created, &self.objects_created),
            (DriftOutcome::Repaired, &self.repairs),
        ] {
            for (control, n) in findings.resolved_counts(outcome) {
                counter
                    .with_label_values(&[profile, control.label()])
                    .inc_by(n as u64);
            }
        }
        for control in ControlName::ALL {
            let drifted = findings
                .unresolved()
                .filter(|d| d.control == control)
                .count();
            self.drifted_objects
                .with_label_values(&[profile, control.label()])
                .set(drifted as i64);
            if let Some(n) = findings.namespaces.managed.get(&control) {
                self.managed_objects
                    .with_label_values(&[profile, control.label()])
                    .set(*n as i64);
            }
        }
        for state in crate::api::ExceptionState::ALL {
            let n = findings
                .selection
                .exceptions
                .iter()
                .filter(|e| e.state == state)
                .count();
            self.exceptions
                .with_label_values(&[profile, state.as_str()])
                .set(n as i64);
        }
        self.drain_blocked
            .with_label_values(&[profile])
            .set(findings.namespaces.drain_blocking.len() as i64);
        if let Some(r) = &findings.rotation {
            self.rotation_stalled
                .with_label_values(&[profile])
                .set(i64::from(!r.stalled.is_empty()));
        }

        if let Some(b) = &findings.backups {
            self.snapshots_failed
                .with_label_values(&[profile])
                .set(b.status.failed_snapshots);
            self.snapshots_orphaned
                .with_label_values(&[profile])
                .set(b.status.orphaned_snapshots);
            if b.missed_now > 0 {
                self.snapshot_slots_missed
                    .with_label_values(&[profile])
                    .inc_by(b.missed_now as u64);
            }
            if let Some(v) = &findings.verify {
                self.report_verification(profile, v);
            }
            for (ns, pvc, t) in &b.last_success_times {
                self.snapshot_last_success
                    .with_label_values(&[profile, ns.as_str(), pvc.as_str()])
                    .set(t.timestamp() as f64);
            }
        }
    }

    /// The rotation's phase and its last completion, from the status a pass computed.
    pub fn report_rotation(&self, profile: &str, status: &crate::api::RotationStatus) {
        for phase in crate::api::RotationPhase::ALL {
            self.rotation_phase
                .with_label_values(&[profile, phase.as_str()])
                .set(i64::from(status.phase == phase));
        }
        if let Some(done) = status.completed_at {
            self.rotation_last_completed
                .with_label_values(&[profile])
                .set(done.timestamp() as f64);
        }
    }

    /// Restore verification's metrics for one pass.
    pub fn report_verification(&self, profile: &str, v: &crate::controls::verify::VerifyFindings) {
        for (ns, pvc, t) in &v.verified_times {
            self.backup_last_verified
                .with_label_values(&[profile, ns.as_str(), pvc.as_str()])
                .set(t.timestamp() as f64);
        }
        if v.failed_now > 0 {
            self.backup_verifications_failed
                .with_label_values(&[profile])
                .inc_by(v.failed_now as u64);
        } else {
            // Present from the first pass, so an alert on its increase sees the first failure.
            self.backup_verifications_failed
                .with_label_values(&[profile])
                .inc_by(0);
        }
    }

    /// Removes every series of a deleted profile, so dashboards do not show ghosts.
    pub fn forget_profile(&self, profile: &str) {
        for c in ControlName::ALL {
            let _ = self
                .drifted_objects
                .remove_label_values(&[profile, c.label()]);
            let _ = self
                .managed_objects
                .remove_label_values(&[profile, c.label()]);
            let _ = self.repairs.remove_label_values(&[profile, c.label()]);
            let _ = self
                .objects_created
                .remove_label_values(&[profile, c.label()]);
        }
        for s in crate::api::ExceptionState::ALL {
            let _ = self.exceptions.remove_label_values(&[profile, s.as_str()]);
        }
        let _ = self.drain_blocked.remove_label_values(&[profile]);
        // Write counters stay: they are what a reader compares across the deletion.
        let _ = self.profile_ready.remove_label_values(&[profile]);
        let _ = self.rotation_stalled.remove_label_values(&[profile]);
        for phase in crate::api::RotationPhase::ALL {
            let _ = self
                .rotation_phase
                .remove_label_values(&[profile, phase.as_str()]);
        }
        let _ = self.rotation_last_completed.remove_label_values(&[profile]);
        for outcome in ["started", "succeeded", "failed", "lost"] {
            let _ = self.rotation_hooks.remove_label_values(&[profile, outcome]);
        }
        let _ = self.snapshots_failed.remove_label_values(&[profile]);
        let _ = self.snapshots_orphaned.remove_label_values(&[profile]);
        for m in [
            &self.secrets_rotated,
            &self.secrets_adopted,
            &self.workloads_restarted,
            &self.snapshots_created,
            &self.snapshots_pruned,
            &self.snapshot_slots_missed,
            &self.backup_verifications_failed,
        ] {
            let _ = m.remove_label_values(&[profile]);
        }
        for gauge in [&self.snapshot_last_success, &self.backup_last_verified] {
            for labels in series_of(gauge, profile) {
                remove_series(gauge, &labels);
            }
        }
        for gauge in [&self.profile_condition, &self.profile_info] {
            for labels in series_of(gauge, profile) {
                remove_series(gauge, &labels);
            }
        }
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// The label sets of a metric's series of one profile.
fn series_of(
    metric: &impl prometheus::core::Collector,
    profile: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    metric
        .collect()
        .iter()
        .flat_map(|f| f.get_metric().to_vec())
        .map(|m| {
            m.get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect::<std::collections::HashMap<_, _>>()
        })
        .filter(|l| l.get("profile").map(String::as_str) == Some(profile))
        .collect()
}

/// Removes one series by its labels (gone already is fine).
fn remove_series<B: prometheus::core::MetricVecBuilder>(
    metric: &prometheus::core::MetricVec<B>,
    labels: &std::collections::HashMap<String, String>,
) {
    let labels: std::collections::HashMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _ = metric.remove(&labels);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_the_crate_version() {
        let text = Metrics::new()
            .expect("metrics register")
            .render()
            .expect("render");
        let line = text
            .lines()
            .find(|l| l.starts_with("rampart_build_info{"))
            .unwrap_or_else(|| panic!("no rampart_build_info in:\n{text}"));
        assert!(
            line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
            "{line}"
        );
        assert!(line.contains("git_commit=\""), "{line}");
        assert!(line.ends_with(" 1"), "{line}");
    }

    fn condition(type_: &str, status: crate::api::ConditionStatus) -> crate::api::Condition {
        crate::api::Condition {
            type_: type_.into(),
            status,
            reason: "R".into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        let mut v: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
        v.sort();
        v
    }

    #[test]
    fn conditions_mode_and_readiness_follow_the_status_and_go_with_the_profile() {
        use crate::api::{ConditionStatus::*, Mode};
        let m = Metrics::new().expect("metrics register");
        m.report_state(
            "p",
            Mode::Audit,
            &[condition("Ready", False), condition("BackupsHealthy", True)],
        );
        m.report_state("q", Mode::Enforce, &[condition("Ready", True)]);
        let text = m.render().expect("render");
        assert_eq!(
            lines(&text, "rampart_profile_condition{profile=\"p\""),
            vec![
                r#"rampart_profile_condition{profile="p",status="False",type="BackupsHealthy"} 0"#,
                r#"rampart_profile_condition{profile="p",status="False",type="Ready"} 1"#,
                r#"rampart_profile_condition{profile="p",status="True",type="BackupsHealthy"} 1"#,
                r#"rampart_profile_condition{profile="p",status="True",type="Ready"} 0"#,
                r#"rampart_profile_condition{profile="p",status="Unknown",type="BackupsHealthy"} 0"#,
                r#"rampart_profile_condition{profile="p",status="Unknown",type="Ready"} 0"#,
            ]
        );
        assert_eq!(
            lines(&text, "rampart_profile_info{"),
            vec![
                r#"rampart_profile_info{mode="Audit",profile="p"} 1"#,
                r#"rampart_profile_info{mode="Enforce",profile="q"} 1"#,
            ]
        );
        assert_eq!(
            lines(&text, "rampart_profile_ready{"),
            vec![
                r#"rampart_profile_ready{profile="p"} 0"#,
                r#"rampart_profile_ready{profile="q"} 1"#,
            ]
        );

        // Switched to Enforce with backups turned off: one mode, no BackupsHealthy series.
        m.report_state("p", Mode::Enforce, &[condition("Ready", True)]);
        let text = m.render().expect("render");
        assert_eq!(
            lines(&text, "rampart_profile_info{profile=\"p\"")
                .into_iter()
                .chain(lines(&text, "rampart_profile_info{mode"))
                .filter(|l| l.contains("\"p\""))
                .collect::<Vec<_>>(),
            vec![r#"rampart_profile_info{mode="Enforce",profile="p"} 1"#]
        );
        assert!(!text.contains("BackupsHealthy"), "{text}");

        m.forget_profile("p");
        let text = m.render().expect("render");
        assert!(
            !text.lines().any(|l| l.contains("profile=\"p\"")),
            "series of a deleted profile remain:\n{text}"
        );
        assert!(text.contains(r#"rampart_profile_info{mode="Enforce",profile="q"} 1"#));
    }

    #[test]
    fn reconcile_durations_are_bucketed_up_to_five_minutes() {
        let m = Metrics::new().expect("metrics register");
        m.reconcile_duration
            .with_label_values(&["success"])
            .observe(86.0);
        let text = m.render().expect("render");
        assert!(
            text.contains(
                r#"rampart_reconcile_duration_seconds_bucket{result="success",le="60"} 0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"rampart_reconcile_duration_seconds_bucket{result="success",le="120"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"le="300"}"#), "{text}");
    }

    #[test]
    fn first_creations_and_repairs_are_counted_apart() {
        use crate::controls::{Drift, DriftReason, ManagedKind, ObjectKey};
        use crate::status::{DriftOutcome, Findings};
        let drift = |ns: &str| Drift {
            key: ObjectKey {
                kind: ManagedKind::NetworkPolicy,
                namespace: ns.into(),
                name: "rampart-default-deny".into(),
            },
            control: ControlName::NetworkPolicies,
            reason: DriftReason::Missing,
            fields: vec![],
        };
        let mut f = Findings::default();
        f.namespaces
            .managed
            .insert(ControlName::PodDisruptionBudgets, 0);
        f.drift = vec![
            (drift("a"), DriftOutcome::Created),
            (drift("b"), DriftOutcome::Created),
            (drift("c"), DriftOutcome::Repaired),
            (drift("d"), DriftOutcome::Reported),
        ];
        let m = Metrics::new().expect("metrics register");
        m.report("p", &f);
        let text = m.render().expect("render");
        for want in [
            r#"rampart_objects_created_total{control="networkpolicy",profile="p"} 2"#,
            r#"rampart_repairs_total{control="networkpolicy",profile="p"} 1"#,
            r#"rampart_repairs_total{control="pdb",profile="p"} 0"#,
        ] {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_exported() {
        let text = Metrics::new()
            .expect("metrics register")
            .render()
            .expect("render");
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing from:\n{text}"
            );
        }
    }
}
