//! The one write layer every control uses: create what is missing, re-apply what drifted with
//! server-side apply, delete what is ours and no longer desired. Calls the API.
//!
//! Creation is a plain create, not an apply: an apply would silently take over an object of
//! the same name that a user made, and Rampart never overwrites what it did not create. Repairs
//! are a forced server-side apply with field manager `rampart`, which is safe because only
//! objects carrying our labels and an owner reference to the profile reach it. Deletes carry a
//! uid precondition, so an object recreated by someone else under the same name survives.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde_json::Value;

use crate::api::{HardeningProfile, FIELD_MANAGER};
use crate::controls::{DesiredObject, ManagedKind, ObjectKey, ObservedObject};
use crate::metrics::Metrics;
use crate::observe::belongs_to;
use crate::Error;

/// What a create found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// We made it.
    Created,
    /// It already existed and is ours (our cache had not caught up yet).
    AlreadyOurs,
    /// Someone else's object holds the name.
    NameTaken,
}

/// The owner reference every managed object carries, so garbage collection removes it with
/// the profile even if the operator is gone.
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

fn api_for(client: &Client, kind: ManagedKind, namespace: &str) -> Api<DynamicObject> {
    let (group, version) = match kind.api_version().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", kind.api_version()),
    };
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind.kind()),
        kind.plural(),
    );
    Api::namespaced_with(client.clone(), namespace, &ar)
}

fn with_owner(manifest: &Value, owner: &OwnerReference) -> Result<DynamicObject, Error> {
    let mut m = manifest.clone();
    m["metadata"]["ownerReferences"] =
        serde_json::to_value(vec![owner]).map_err(|source| Error::Encode {
            what: "owner reference".into(),
            source,
        })?;
    serde_json::from_value(m).map_err(|source| Error::Encode {
        what: "manifest".into(),
        source,
    })
}

fn write_error(verb: &'static str, key: &ObjectKey, source: kube::Error) -> Error {
    Error::Write {
        verb,
        kind: key.kind.kind(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        source,
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Creates a desired object that the cache says is missing.
pub async fn create(
    client: &Client,
    metrics: &Metrics,
    desired: &DesiredObject,
    owner: &OwnerReference,
) -> Result<Created, Error> {
    let key = &desired.key;
    let api = api_for(client, key.kind, &key.namespace);
    let obj = with_owner(&desired.manifest, owner)?;
    metrics.write(&owner.name, key.kind.kind(), "create");
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&pp, &obj).await {
        Ok(_) => Ok(Created::Created),
        Err(e) if status_code(&e) == Some(409) => {
            let existing = api
                .get_opt(&key.name)
                .await
                .map_err(|e| write_error("get", key, e))?;
            Ok(match existing {
                Some(o) if belongs_to(&o.metadata, &owner.name, &owner.uid) => Created::AlreadyOurs,
                _ => Created::NameTaken,
            })
        }
        Err(e) => Err(write_error("create", key, e)),
    }
}

/// Re-applies a drifted object of ours, taking back every field Rampart sets.
pub async fn repair(
    client: &Client,
    metrics: &Metrics,
    desired: &DesiredObject,
    owner: &OwnerReference,
) -> Result<(), Error> {
    let key = &desired.key;
    let api = api_for(client, key.kind, &key.namespace);
    let obj = with_owner(&desired.manifest, owner)?;
    metrics.write(&owner.name, key.kind.kind(), "apply");
    api.patch(
        &key.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .map(|_| ())
    .map_err(|e| write_error("apply", key, e))
}

/// Deletes an object of ours, only if it is still the very object we observed.
pub async fn delete(
    client: &Client,
    metrics: &Metrics,
    profile: &str,
    observed: &ObservedObject,
) -> Result<(), Error> {
    let key = &observed.key;
    let api = api_for(client, key.kind, &key.namespace);
    let dp = DeleteParams {
        preconditions: observed.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    metrics.write(profile, key.kind.kind(), "delete");
    match api.delete(&key.name, &dp).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by another object under the same name: nothing of ours
        // is left to delete.
        Err(e) if matches!(status_code(&e), Some(404) | Some(409)) => Ok(()),
        Err(e) => Err(write_error("delete", key, e)),
    }
}

/// Gives a Secret new values for the `regenerate` keys and stamps it with the rotation id, in
/// one write guarded by the resourceVersion it read: either all of it lands or none, so a
/// crash cannot leave new values without the stamp (which would regenerate them again).
/// Returns false when the Secret already carries the id. Values never reach a log or an error.
pub async fn rotate_secret(
    client: &Client,
    metrics: &Metrics,
    profile: &str,
    namespace: &str,
    name: &str,
    spec: &crate::api::SecretRotationControl,
) -> Result<bool, Error> {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::ByteString;
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret_error = |verb, source| secret_write_error(verb, namespace, name, source);
    let mut secret = api.get(name).await.map_err(|e| secret_error("get", e))?;
    let id = spec.rotation_id.as_str();
    if secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::api::ROTATION_ID_ANNOTATION))
        .map(String::as_str)
        == Some(id)
    {
        return Ok(false);
    }
    let data = secret.data.get_or_insert_with(Default::default);
    for key in &spec.regenerate {
        if spec.keep_previous {
            if let Some(old) = data.get(&key.key).cloned() {
                data.insert(format!("{}.previous", key.key), old);
            }
        }
        let value =
            crate::controls::rotation::random_value(key.alphabet, key.length.max(1) as usize);
        data.insert(key.key.clone(), ByteString(value.into_bytes()));
    }
    // Keys the user wrote as stringData are already folded into data by the API server.
    secret.string_data = None;
    let annotations = secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(
        crate::api::ROTATION_ID_ANNOTATION.to_string(),
        id.to_string(),
    );
    // Its values are Rampart's from now on, no longer the ones it was adopted with.
    annotations.remove(crate::api::ROTATION_ADOPTED_ANNOTATION);
    secret.metadata.managed_fields = None;
    metrics.write(profile, "Secret", "update");
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.replace(name, &pp, &secret)
        .await
        .map_err(|e| secret_error("update", e))?;
    Ok(true)
}

/// A failed read or write of the Secret `namespace/name` during rotation or adoption.
fn secret_write_error(
    verb: &'static str,
    namespace: &str,
    name: &str,
    source: kube::Error,
) -> Error {
    Error::Write {
        verb,
        kind: "Secret",
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    }
}

/// Adopts a Secret that never carried a rotation id: stamps it with the current id and the
/// adoption mark, and nothing else. Its data is neither read nor written. Ok(false) when it
/// already carries an id (another pass got there first).
pub async fn adopt_secret(
    client: &Client,
    metrics: &Metrics,
    profile: &str,
    namespace: &str,
    name: &str,
    id: &str,
) -> Result<bool, Error> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::PartialObjectMeta;
    let api = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), namespace);
    let secret_error = |verb, source| secret_write_error(verb, namespace, name, source);
    let current = api
        .get_metadata(name)
        .await
        .map_err(|e| secret_error("get", e))?;
    if current
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(crate::api::ROTATION_ID_ANNOTATION))
    {
        return Ok(false);
    }
    // The resourceVersion just read makes the patch a compare-and-swap: had a rotation (or
    // anyone) written the Secret in between, the API server refuses it and the next pass
    // decides again from what is there.
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": current.metadata.resource_version,
        "annotations": {
            crate::api::ROTATION_ID_ANNOTATION: id,
            crate::api::ROTATION_ADOPTED_ANNOTATION: "true",
        },
    }});
    metrics.write(profile, "Secret", "patch");
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch_metadata(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| secret_error("patch", e))?;
    Ok(true)
}

/// Restarts a workload by stamping its pod template with the rotation id and the time, the
/// way `kubectl rollout restart` does; only these two annotations are written.
pub async fn stamp_workload(
    client: &Client,
    metrics: &Metrics,
    profile: &str,
    consumer: &crate::controls::rotation::ConsumerRef,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), Error> {
    use crate::controls::rotation::ConsumerKind;
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        crate::api::ROTATION_ID_ANNOTATION: id,
        // Milliseconds: every consumer of one batch carries the same instant, so a batch can
        // be told from the next even within a second.
        crate::controls::rotation::RESTARTED_AT_ANNOTATION: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }}}}});
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let ns = consumer.namespace.as_str();
    metrics.write(profile, consumer.kind.as_str(), "patch");
    let result = match consumer.kind {
        ConsumerKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(&consumer.name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        ConsumerKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(&consumer.name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        ConsumerKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .patch(&consumer.name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    result.map_err(|source| Error::Write {
        verb: "patch",
        kind: consumer.kind.as_str(),
        namespace: consumer.namespace.clone(),
        name: consumer.name.clone(),
        source,
    })
}

/// Lets a snapshot outlive its profile: drops the owner reference so garbage collection
/// leaves it, keeping the labels so people can still find it.
pub async fn orphan(
    client: &Client,
    metrics: &Metrics,
    profile: &str,
    observed: &ObservedObject,
) -> Result<(), Error> {
    let key = &observed.key;
    let api = api_for(client, key.kind, &key.namespace);
    metrics.write(profile, key.kind.kind(), "patch");
    match api
        .patch(
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"ownerReferences": null}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(write_error("patch", key, e)),
    }
}
