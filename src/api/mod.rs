//! The `HardeningProfile` API: spec and status types, the names shared with DESIGN.md, and the
//! checks only the controller can make. Pure: nothing here calls the API server.

pub mod conditions;
pub mod restricted;
mod spec;
mod status;
pub mod validate;

pub use spec::*;
pub use status::*;

/// Label on everything Rampart creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "rampart";
/// Label naming the profile an object belongs to.
pub const PROFILE_LABEL: &str = "rampart.dev/profile";
/// Label naming the uid of the profile an object belongs to, on objects that carry no owner
/// reference to it: VolumeSnapshots, which must outlive the profile whatever deletes it.
pub const PROFILE_UID_LABEL: &str = "rampart.dev/profile-uid";
/// Label naming the control that made an object.
pub const CONTROL_LABEL: &str = "rampart.dev/control";
/// Annotation on rotated Secrets and restarted pod templates: one entry
/// `<profile-uid>/<rotationId>[/adopted]` per profile (see `controls::rotation::stamp`).
pub const ROTATION_ID_ANNOTATION: &str = "rampart.dev/rotation-id";
/// The adoption mark of the old stamp format (the id alone): read beside an old-format id,
/// removed whenever a profile writes its entry, which now says `/adopted` itself.
pub const ROTATION_ADOPTED_ANNOTATION: &str = "rampart.dev/rotation-adopted";
/// Label a user puts on a snapshot that retention must never prune.
pub const KEEP_LABEL: &str = "rampart.dev/keep";
/// Server-side apply field manager.
pub const FIELD_MANAGER: &str = "rampart";
/// Finalizer on profiles.
pub const FINALIZER: &str = "rampart.dev/cleanup";
/// Longest drift list kept in the status, so the object stays small at any scale.
// The drift field's description (what `kubectl explain` shows) says 50: change both together.
pub const DRIFT_LIST_LIMIT: usize = 50;
/// Longest list of other per-object findings kept in the status.
pub const STATUS_LIST_LIMIT: usize = 50;

/// The CustomResourceDefinition as YAML, as `rampart crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&HardeningProfile::crd())
}

/// Fixture builders for the pure tests: a spec with one control on, the rest off.
#[cfg(test)]
pub mod fixtures {
    use super::*;

    /// Budgets for workloads of two replicas or more, one unavailable at a time.
    pub fn budgets_only(mode: Mode) -> HardeningProfileSpec {
        HardeningProfileSpec {
            mode,
            namespace_selector: None,
            namespaces: vec![],
            network_policies: None,
            pod_disruption_budgets: Some(DisruptionBudgetControl {
                min_replicas: 2,
                max_unavailable: MaxUnavailable::Count(1),
            }),
            secret_rotation: None,
            backups: None,
            exceptions: vec![],
        }
    }

    /// Rotation to `id` of every selected Secret, `max` restarts at once, 60 s per rollout.
    pub fn rotation(id: &str, max: i32) -> SecretRotationControl {
        SecretRotationControl {
            rotation_id: id.into(),
            selector: LabelSelector::default(),
            regenerate: vec![],
            keep_previous: false,
            max_concurrent_restarts: max,
            rollout_timeout_seconds: 60,
            hooks: None,
        }
    }
}
