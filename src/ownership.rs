//! Ownership: what marks an object as Rampart's and as one profile's. Pure; never calls the API.
//!
//! An object is a profile's when it carries the managed-by and profile labels **and** names the
//! profile's uid: in an owner reference, or, for what must outlive the profile, in the
//! [`PROFILE_UID_LABEL`]. Labels alone are not enough: anyone can copy them, and an operator
//! that trusted labels alone once deleted another operator's objects (stackable operator-rs
//! issue 861). Every change or delete Rampart makes goes through [`belongs_to`].
//!
//! VolumeSnapshots never carry an owner reference ([`ManagedKind::outlives_profile`]): with one,
//! garbage collection deletes them with the profile whenever the finalizer's cleanup has not
//! run first (a foreground delete, as Argo CD prunes; a finalizer removed by hand while the
//! operator is down), and backups must survive every way a profile can go.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::ObjectMeta;

use crate::api::{
    ControlName, HardeningProfile, CONTROL_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    PROFILE_LABEL, PROFILE_UID_LABEL,
};
#[cfg(doc)]
use crate::controls::ManagedKind;
use crate::Error;

/// The labels every object a control creates carries.
pub fn managed_labels(profile: &str, control: ControlName) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (PROFILE_LABEL.to_string(), profile.to_string()),
        (CONTROL_LABEL.to_string(), control.label().to_string()),
    ])
}

/// The label selector string that finds everything Rampart made (the watches of its own
/// policies and snapshots use it).
pub fn all_managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
}

/// The owner reference every managed object but a snapshot carries, so garbage collection
/// removes it with the profile even if the operator is gone.
pub fn owner_reference(profile: &HardeningProfile) -> Result<OwnerReference, Error> {
    let name = profile
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingIdentity)?;
    let uid = profile.metadata.uid.clone().ok_or(Error::MissingIdentity)?;
    Ok(OwnerReference {
        api_version: "rampart.dev/v1alpha1".into(),
        kind: "HardeningProfile".into(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Carries Rampart's managed-by label.
pub fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

/// Carries the profile's labels and names its uid, in an owner reference or the uid label.
pub fn belongs_to(meta: &ObjectMeta, profile: &str, uid: &str) -> bool {
    let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key));
    is_managed(meta)
        && label(PROFILE_LABEL).is_some_and(|p| p == profile)
        && (label(PROFILE_UID_LABEL).is_some_and(|u| u == uid) || has_owner_reference(meta, uid))
}

/// Carries an owner reference to `uid`: garbage collection deletes it when that owner goes.
pub fn has_owner_reference(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// The profile named in an object's labels, when Rampart made it. Used only to route watch
/// events to a profile, never to decide a write.
pub fn profile_of(meta: &ObjectMeta) -> Option<String> {
    if !is_managed(meta) {
        return None;
    }
    meta.labels
        .as_ref()
        .and_then(|l| l.get(PROFILE_LABEL))
        .cloned()
}

/// The control named in an object's labels.
pub fn control_of(meta: &ObjectMeta) -> Option<ControlName> {
    let label = meta.labels.as_ref()?.get(CONTROL_LABEL)?;
    ControlName::ALL.into_iter().find(|c| c.label() == label)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Argo CD prunes objects that carry its instance label (or tracking annotation) but are not
    /// in its Application: generated objects must never inherit the profile's labels or
    /// annotations, only Rampart's own labels. The controls take the profile's name, not its
    /// metadata; this pins that.
    #[test]
    fn generated_objects_never_carry_the_profiles_tracking_labels() {
        use crate::controls::disruption_budgets::WorkloadKind;
        use crate::controls::disruption_budgets::{desired_disruption_budgets, WorkloadInfo};
        use crate::controls::network_policies::{desired_network_policies, HeldNamespaces};
        use kube::ResourceExt;

        let mut spec = crate::api::fixtures::budgets_only(crate::api::Mode::Enforce);
        spec.network_policies = Some(
            serde_json::from_value(serde_json::json!({"allowedNamespaces": ["kafka"], "monitoring": {"namespace": "observability", "ports": [9090]}}))
                .expect("network policy control"),
        );
        let mut profile = HardeningProfile::new("regulated", spec);
        profile.metadata.labels = Some(BTreeMap::from([
            (
                "app.kubernetes.io/instance".to_string(),
                "platform".to_string(),
            ),
            (
                "argocd.argoproj.io/instance".to_string(),
                "platform".to_string(),
            ),
        ]));
        profile.metadata.annotations = Some(BTreeMap::from([(
            "argocd.argoproj.io/tracking-id".to_string(),
            "platform:rampart.dev/HardeningProfile:/regulated".to_string(),
        )]));
        let name = profile.name_any();
        let np = profile.spec.network_policies.as_ref().expect("set above");
        let held = HeldNamespaces::of(&profile.spec);
        let selector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            match_expressions: None,
        };
        let web = WorkloadInfo {
            kind: WorkloadKind::Deployment,
            namespace: "kafka".into(),
            name: "web".into(),
            replicas: 3,
            selector: Some(selector),
            pod_labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
        };
        let budgets = profile
            .spec
            .pod_disruption_budgets
            .as_ref()
            .expect("budgets_only");
        let mut objects = desired_network_policies(&name, np, &held, "kafka");
        objects.extend(desired_disruption_budgets(&name, budgets, &[web], &[]).desired);
        assert!(
            objects.len() >= 5,
            "policies and a budget: {}",
            objects.len()
        );
        for o in &objects {
            let meta = &o.manifest["metadata"];
            let labels: BTreeMap<String, String> =
                serde_json::from_value(meta["labels"].clone()).expect("labels");
            assert_eq!(labels, managed_labels(&name, o.control), "{:?}", o.key);
            assert!(
                meta.get("annotations")
                    .is_none_or(|a| a.get("argocd.argoproj.io/tracking-id").is_none()),
                "{:?}",
                o.key
            );
        }
    }

    fn meta(labels: &[(&str, &str)], owner_uid: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: owner_uid.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    const OURS: [(&str, &str); 2] = [(MANAGED_BY_LABEL, MANAGED_BY_VALUE), (PROFILE_LABEL, "p")];

    #[test]
    fn labels_and_owner_reference_together_make_an_object_ours() {
        assert!(belongs_to(&meta(&OURS, Some("u1")), "p", "u1"));
    }

    #[test]
    fn copied_labels_without_our_owner_reference_are_not_ours() {
        assert!(!belongs_to(&meta(&OURS, None), "p", "u1"));
        assert!(!belongs_to(&meta(&OURS, Some("other")), "p", "u1"));
    }

    #[test]
    fn the_uid_label_stands_in_for_the_owner_reference() {
        let uid_label = [OURS[0], OURS[1], (PROFILE_UID_LABEL, "u1")];
        assert!(belongs_to(&meta(&uid_label, None), "p", "u1"));
        // Another profile of the same name (deleted and made again) does not inherit them.
        assert!(!belongs_to(&meta(&uid_label, None), "p", "u2"));
        // Without the managed-by label (a user took it off) it is the user's.
        assert!(!belongs_to(&meta(&uid_label[1..], None), "p", "u1"));
    }

    #[test]
    fn another_profiles_object_is_not_ours() {
        assert!(!belongs_to(&meta(&OURS, Some("u1")), "q", "u1"));
        assert_eq!(profile_of(&meta(&OURS, None)), Some("p".into()));
        assert_eq!(profile_of(&meta(&[(PROFILE_LABEL, "p")], None)), None);
    }

    #[test]
    fn managed_labels_name_the_control() {
        let l = managed_labels("p", ControlName::NetworkPolicies);
        let m = meta(
            &l.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            None,
        );
        assert_eq!(control_of(&m), Some(ControlName::NetworkPolicies));
    }
}
