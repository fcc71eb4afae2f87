//! Observation, read from the API: what restore verification needs beyond the caches. Its
//! scratch VolumeSnapshotContents, check Jobs and reader pods (by label, in its own namespace),
//! the volumes its scratch PVCs bound to and its namespace's quota (by name), the source
//! snapshots' contents (by name) and pending PVCs' warning events. No watch is worth keeping
//! for a handful of objects that exist for minutes a day, and none of these reads is a
//! cluster-wide list of someone else's objects. The conversions from object metadata are pure.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, Pod, ResourceQuota};
use kube::api::{DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind, ObjectMeta};
use kube::{Api, Client};

use super::queries::observed;
use super::to_chrono;
use crate::api::{CONTROL_LABEL, PROFILE_LABEL};
use crate::controls::backups::PVC_LABEL;
use crate::controls::verify::{
    self, ContentInfo, JobState, ScratchObject, ScratchVolume, VerifyObserved,
};
use crate::controls::ManagedKind;
use crate::ownership::belongs_to;
use crate::Error;

/// [`verify::is_scratch`] for an object's metadata.
pub fn is_scratch_meta(kind: &str, m: &ObjectMeta) -> bool {
    verify::is_scratch(
        kind,
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
    )
}

/// A scratch object as the plan sees it, from its metadata (kind-specific state is filled in
/// by the caller).
pub fn scratch_object(kind: ManagedKind, m: &ObjectMeta) -> ScratchObject {
    let label = |k: &str| {
        m.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .cloned()
            .unwrap_or_default()
    };
    ScratchObject {
        object: observed(kind, m, None),
        source_namespace: label(verify::SOURCE_NAMESPACE_LABEL),
        source_pvc: label(PVC_LABEL),
        slot: verify::parse_slot_label(&label(verify::SLOT_LABEL)),
        created: m.creation_timestamp.as_ref().and_then(to_chrono),
        snapshot: m
            .annotations
            .as_ref()
            .and_then(|a| a.get(verify::SOURCE_SNAPSHOT_ANNOTATION))
            .cloned(),
        ready: false,
        error: None,
        bound: false,
        volume: None,
        deleting: m.deletion_timestamp.is_some(),
        job: JobState::Running,
    }
}

/// A check Job's state from its conditions (`Complete` or `Failed` true), else Running.
fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten());
    for c in conditions.filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" => return JobState::Complete,
            "Failed" => {
                let reason = c.reason.clone().unwrap_or_default();
                let message = c.message.clone().unwrap_or_default();
                let text: String = format!("{reason}: {message}").chars().take(512).collect();
                return JobState::Failed(text);
            }
            _ => {}
        }
    }
    JobState::Running
}

/// What verification keeps of a volume: its reclaim policy and the claim it is bound to.
fn scratch_volume(pv: &PersistentVolume) -> ScratchVolume {
    let spec = pv.spec.as_ref();
    ScratchVolume {
        reclaim_delete: spec
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .is_some_and(|p| p == "Delete"),
        claim: spec
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|c| Some((c.namespace.clone()?, c.name.clone()?))),
    }
}

fn content_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
        "volumesnapshotcontents",
    )
}

fn read_error(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Read { what, source }
}

/// What restore verification reads from the API beyond the caches, into `observed` (which
/// holds the cache's view from [`super::Caches::scratch_observed`]): the scratch contents;
/// while a scratch PVC exists, the check Jobs and reader pods; the volumes of bound scratch
/// PVCs; the quota; and, for each scratch PVC still pending, the newest warning event about it
/// (why it does not bind).
pub async fn read_verify_extras(
    client: &Client,
    profile: &str,
    uid: &str,
    observed: &mut VerifyObserved,
) -> Result<(), Error> {
    // A namespace that is not Rampart's: nothing is read, so nothing is planned, there.
    if observed.namespace == verify::ScratchNamespace::Taken {
        return Ok(());
    }
    let selector = format!(
        "{PROFILE_LABEL}={profile},{CONTROL_LABEL}={}",
        verify::SCRATCH_CONTROL
    );
    let by_label = ListParams::default().labels(&selector);
    let contents = Api::<DynamicObject>::all_with(client.clone(), &content_resource())
        .list(&by_label)
        .await
        .map_err(read_error("scratch VolumeSnapshotContents".into()))?;
    for c in contents.items {
        // Rampart makes its scratch contents with `deletionPolicy: Retain`, so deleting one
        // never deletes the snapshot it points at. A labelled content that would (Delete) is
        // not one it made, and is left alone.
        let retain = c.data["spec"]["deletionPolicy"].as_str() == Some("Retain");
        if retain && belongs_to(&c.metadata, profile, uid) {
            observed.scratch.push(scratch_object(
                ManagedKind::VolumeSnapshotContent,
                &c.metadata,
            ));
        }
    }
    let ns = verify::scratch_namespace(profile);
    let claims: Vec<(String, bool, Option<String>)> = observed
        .scratch
        .iter()
        .filter(|o| o.object.key.kind == ManagedKind::PersistentVolumeClaim)
        .map(|o| (o.object.key.name.clone(), o.bound, o.volume.clone()))
        .collect();
    // Consumers exist only once a scratch PVC does; no list before that.
    if !claims.is_empty() {
        let jobs = Api::<Job>::namespaced(client.clone(), &ns)
            .list(&by_label)
            .await
            .map_err(read_error(format!("check Jobs in {ns}")))?;
        for j in jobs.items {
            if belongs_to(&j.metadata, profile, uid) {
                let mut o = scratch_object(ManagedKind::Job, &j.metadata);
                o.job = job_state(&j);
                observed.scratch.push(o);
            }
        }
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&by_label)
            .await
            .map_err(read_error(format!("reader pods in {ns}")))?;
        for p in pods.items {
            if belongs_to(&p.metadata, profile, uid) {
                observed
                    .scratch
                    .push(scratch_object(ManagedKind::Pod, &p.metadata));
            }
        }
    }
    let volumes = Api::<PersistentVolume>::all(client.clone());
    for volume in claims.iter().filter_map(|(_, _, v)| v.as_ref()) {
        if let Some(pv) = volumes
            .get_opt(volume)
            .await
            .map_err(read_error(format!("PersistentVolume {volume}")))?
        {
            observed.volumes.insert(volume.clone(), scratch_volume(&pv));
        }
    }
    if observed.namespace == verify::ScratchNamespace::Ours {
        let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns)
            .get_opt(verify::QUOTA_NAME)
            .await
            .map_err(read_error(format!(
                "ResourceQuota {ns}/{}",
                verify::QUOTA_NAME
            )))?;
        observed.quota = quota.map(|q| {
            q.spec
                .and_then(|s| s.hard)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        });
    }
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    for (name, _, _) in claims.iter().filter(|(_, bound, _)| !bound) {
        let list = events
            .list(&ListParams::default().fields(&format!(
                "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name}"
            )))
            .await
            .map_err(read_error(format!(
                "events of PersistentVolumeClaim {ns}/{name}"
            )))?;
        let newest = list
            .items
            .iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .max_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
            });
        if let Some(e) = newest {
            let reason = e.reason.clone().unwrap_or_default();
            let message = e.message.clone().unwrap_or_default();
            // Events can be long; the status keeps the gist.
            let text: String = format!("{reason}: {message}").chars().take(512).collect();
            observed.pending_reasons.insert(name.clone(), text);
        }
    }
    Ok(())
}

/// The snapshot handle and driver of each named VolumeSnapshotContent that exists.
pub async fn read_source_contents(
    client: &Client,
    names: &[String],
) -> Result<BTreeMap<String, ContentInfo>, Error> {
    let api = Api::<DynamicObject>::all_with(client.clone(), &content_resource());
    let mut out = BTreeMap::new();
    for name in names {
        let c = api
            .get_opt(name)
            .await
            .map_err(read_error(format!("VolumeSnapshotContent {name}")))?;
        let Some(c) = c else { continue };
        let handle = c.data["status"]["snapshotHandle"]
            .as_str()
            .or(c.data["spec"]["source"]["snapshotHandle"].as_str());
        let driver = c.data["spec"]["driver"].as_str();
        if let (Some(h), Some(d)) = (handle, driver) {
            out.insert(
                name.clone(),
                ContentInfo {
                    snapshot_handle: h.to_string(),
                    driver: d.to_string(),
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_volume_bound_to_a_claim_is_described_with_it() {
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv-1"},
            "spec": {"persistentVolumeReclaimPolicy": "Retain",
                     "claimRef": {"namespace": "rampart-verify-p", "name": "c"}},
        }))
        .expect("a PV");
        assert_eq!(
            scratch_volume(&pv),
            ScratchVolume {
                reclaim_delete: false,
                claim: Some(("rampart-verify-p".into(), "c".into())),
            }
        );
    }
}
