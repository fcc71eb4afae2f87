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
    let uid = observed.body["metadata"]["uid"]
        .as_str()
        .map(str::to_string);
    let dp = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
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
