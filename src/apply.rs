//! The writer: the one place that writes what controls decide, and the one place that decides
//! whether to (Enforce) or only to report (Audit). Calls the API.
//!
//! Creation is a plain create, not an apply: an apply would silently take over an object of
//! the same name that a user made, and Rampart never overwrites what it did not create. Repairs
//! are a forced server-side apply with field manager `rampart`, which is safe because only
//! objects carrying our labels and the profile's uid (`ownership::belongs_to`) reach it. Deletes carry a
//! uid precondition, so an object recreated by someone else under the same name survives.

use std::sync::Arc;

use futures::{stream, Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::api::{
    HardeningProfile, HardeningProfileStatus, Mode, FIELD_MANAGER, PROFILE_UID_LABEL,
    ROTATION_ADOPTED_ANNOTATION, ROTATION_ID_ANNOTATION,
};
use crate::controls::rotation::hooks::HookEnd;
use crate::controls::rotation::stamp::{Entry, Mark, Stamp};
use crate::controls::rotation::{
    ConsumerKind, ConsumerRef, RESTARTED_AT_ANNOTATION, RESTARTED_UNREADY_ANNOTATION,
};
use crate::controls::{
    DesiredObject, ManagedKind, ObjectKey, ObservedObject, SecretRef, SecretRotation, Target,
    Write, WriteVerb,
};
use crate::metrics::Metrics;
use crate::observe::to_chrono;
use crate::ownership::{belongs_to, has_owner_reference, owner_reference};
use crate::reports::ReportWrite;
use crate::Error;

/// Writes in flight at once for one profile unless `--max-concurrent-writes` says otherwise:
/// enough to converge thousands of namespaces quickly while leaving most of a shared API
/// server's priority-and-fairness seats to other clients.
pub const WRITE_CONCURRENCY: usize = 32;

/// What became of one write.
#[derive(Debug)]
pub struct Applied {
    pub verb: WriteVerb,
    pub target: Target,
    pub effect: Result<Effect, Error>,
    /// The uid the API server gave an object this write created: the proof, kept where only
    /// Rampart writes, that a name-fixed object (the scratch namespace) is the one it made.
    pub created_uid: Option<String>,
}

/// What a write that did not fail did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The cluster changed as asked.
    Done,
    /// The cluster was already so (our cache had not caught up, or another pass got there).
    Unchanged,
    /// Someone else's object holds the name: nothing written, reported as drift.
    NameTaken,
    /// Audit mode: reported, not written.
    Audited,
    /// The API server will not take this write, and retrying cannot change that (an immutable
    /// Secret, an admission webhook's or the role's refusal): reported with why, not retried.
    Refused(&'static str),
}

/// Why a Secret cannot be rotated, for the status (never a value).
pub const REFUSED_IMMUTABLE: &str =
    "immutable: its values cannot change; replace it with a Secret that is not immutable, \
     or remove the rotation label";
pub const REFUSED_FORBIDDEN: &str =
    "the update was forbidden (an admission webhook or the operator's role): allow Rampart \
     to update it, or remove the rotation label";
pub const REFUSED_HOOK_JOB: &str =
    "the API server refused to create its beforeRestart hook Job (is the rampart-rotation-hooks \
     role bound? does an admission policy or webhook refuse it?); its previous values were put \
     back and its consumers were not restarted";
pub const REFUSED_INVALID: &str =
    "the update was refused (an admission webhook or a validating policy): allow the \
     update, or remove the rotation label";

/// Carries out controls' writes for one profile.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    metrics: Arc<Metrics>,
    owner: OwnerReference,
    mode: Mode,
    /// Writes in flight at once (at least one).
    concurrency: usize,
}

impl Writer {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        profile: &HardeningProfile,
        concurrency: usize,
    ) -> Result<Self, Error> {
        Ok(Self {
            client,
            metrics,
            owner: owner_reference(profile)?,
            mode: profile.spec.mode,
            concurrency: concurrency.max(1),
        })
    }

    /// A writer that writes whatever the profile's mode (cleanup of a deleted profile).
    pub fn enforcing(mut self) -> Self {
        self.mode = Mode::Enforce;
        self
    }

    /// Carries out `writes` with bounded concurrency (every write is attempted, so one failing
    /// namespace never holds up the others), or, in Audit mode, reports each as [`Effect::Audited`].
    pub async fn execute(&self, writes: Vec<Write>) -> Vec<Applied> {
        self.execute_stream(stream::iter(writes)).await
    }

    /// Like [`Writer::execute`], taking the writes as they are planned: a new write starts as
    /// soon as one in flight ends, so a long plan keeps its concurrency's writes in flight
    /// throughout and holds only those in memory.
    pub async fn execute_stream(&self, writes: impl Stream<Item = Write> + Send) -> Vec<Applied> {
        if self.mode == Mode::Audit {
            return writes
                .map(|w| Applied {
                    verb: w.verb(),
                    target: w.target(),
                    effect: Ok(Effect::Audited),
                    created_uid: None,
                })
                .collect()
                .await;
        }
        writes
            .map(|w| {
                let this = self.clone();
                async move { this.write(w).await }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await
    }

    async fn write(self, w: Write) -> Applied {
        let (verb, target) = (w.verb(), w.target());
        let mut created_uid = None;
        let effect = match w {
            Write::Create(d) => self.create(&d).await.map(|(effect, uid)| {
                created_uid = uid;
                effect
            }),
            Write::Repair(d) => self.repair(&d).await,
            Write::Delete(o) => self.delete(&o).await,
            Write::Orphan(o) => self.orphan(&o).await,
            Write::RotateSecret(r) => self.rotate_secret(&r).await,
            Write::AdoptSecret {
                secret,
                rotation_id,
                expected,
            } => {
                self.adopt_secret(&secret, &rotation_id, expected.as_deref())
                    .await
            }
            Write::StampWorkload {
                consumer,
                rotation_id,
                at,
                created_before,
                gates,
            } => {
                self.stamp_workload(&consumer, &rotation_id, at, created_before, gates)
                    .await
            }
            Write::StartHook {
                job,
                secret,
                rotation_id,
                regenerate,
            } => {
                self.start_hook(&job, &secret, &rotation_id, &regenerate)
                    .await
            }
            Write::EndHook {
                secret,
                rotation_id,
                end,
                regenerate,
            } => self.end_hook(&secret, &rotation_id, end, &regenerate).await,
        };
        if effect.as_ref().is_ok_and(|e| *e == Effect::Done) {
            self.metrics.count_done(&self.owner.name, verb, &target);
        }
        Applied {
            verb,
            target,
            effect,
            created_uid,
        }
    }

    /// Writes the profile's status, as one server-side apply of the status subresource;
    /// returns the resource version the API server stored.
    pub async fn write_status(
        &self,
        status: &HardeningProfileStatus,
    ) -> Result<Option<String>, Error> {
        let name = self.owner.name.clone();
        let patch = json!({
            "apiVersion": "rampart.dev/v1alpha1",
            "kind": "HardeningProfile",
            "status": status,
        });
        self.metrics.write(&name, "HardeningProfile", "status");
        Api::<HardeningProfile>::all(self.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|p| p.metadata.resource_version)
            .map_err(|source| Error::StatusWrite {
                profile: name,
                source,
            })
    }
    /// Brings the profile's reports to what [`crate::reports::report_writes`] decided, in
    /// either mode: a report only describes, like the status. Every write is attempted; the
    /// failures are returned (a report is never worth failing the pass for).
    pub async fn write_reports(&self, writes: Vec<ReportWrite>) -> Vec<Error> {
        stream::iter(writes)
            .map(|w| {
                let this = self.clone();
                async move { this.write_report(w).await }
            })
            .buffer_unordered(self.concurrency)
            .filter_map(|r| futures::future::ready(r.err()))
            .collect()
            .await
    }

    async fn write_report(&self, w: ReportWrite) -> Result<(), Error> {
        let ar = crate::observe::reports::report_resource();
        let failed = |verb, namespace: &str, name: &str, source| Error::Write {
            verb,
            kind: crate::reports::REPORT_KIND,
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        };
        let profile = self.owner.name.as_str();
        match w {
            ReportWrite::Create {
                namespace,
                manifest,
            } => {
                let api =
                    Api::<DynamicObject>::namespaced_with(self.client.clone(), &namespace, &ar);
                let obj = with_owner(&manifest, &self.owner)?;
                let name = obj.metadata.name.clone().unwrap_or_default();
                self.metrics
                    .write(profile, crate::reports::REPORT_KIND, "create");
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                match api.create(&pp, &obj).await {
                    Ok(_) => Ok(()),
                    // Someone else's report holds the name (ours would be in the cache), or
                    // ours was made a moment ago and the cache has not seen it: either way
                    // nothing to take over.
                    Err(e) if status_code(&e) == Some(409) => {
                        tracing::debug!(
                            profile,
                            namespace,
                            name,
                            "a report of that name exists; not taken over"
                        );
                        Ok(())
                    }
                    Err(e) => Err(failed("create", &namespace, &name, e)),
                }
            }
            ReportWrite::Update {
                namespace,
                manifest,
            } => {
                let api =
                    Api::<DynamicObject>::namespaced_with(self.client.clone(), &namespace, &ar);
                let obj = with_owner(&manifest, &self.owner)?;
                let name = obj.metadata.name.clone().unwrap_or_default();
                self.metrics
                    .write(profile, crate::reports::REPORT_KIND, "apply");
                api.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&obj),
                )
                .await
                .map(|_| ())
                .map_err(|e| failed("apply", &namespace, &name, e))
            }
            ReportWrite::Delete {
                namespace,
                name,
                uid,
            } => {
                let api =
                    Api::<DynamicObject>::namespaced_with(self.client.clone(), &namespace, &ar);
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                self.metrics
                    .write(profile, crate::reports::REPORT_KIND, "delete");
                match api.delete(&name, &dp).await {
                    Ok(_) => Ok(()),
                    Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
                    Err(e) => Err(failed("delete", &namespace, &name, e)),
                }
            }
        }
    }

    /// Creates `desired`; with the new object's uid when this call made it.
    async fn create(&self, desired: &DesiredObject) -> Result<(Effect, Option<String>), Error> {
        let key = &desired.key;
        let api = api_for(&self.client, key.kind, &key.namespace);
        let obj = with_identity(&desired.manifest, key.kind, &self.owner)?;
        self.metrics
            .write(&self.owner.name, key.kind.kind(), "create");
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&pp, &obj).await {
            Ok(made) => Ok((Effect::Done, made.metadata.uid)),
            Err(e) if status_code(&e) == Some(409) => {
                let existing = api
                    .get_opt(&key.name)
                    .await
                    .map_err(|e| write_error("get", key, e))?;
                let effect = match existing {
                    Some(o) if belongs_to(&o.metadata, &self.owner.name, &self.owner.uid) => {
                        Effect::Unchanged
                    }
                    _ => Effect::NameTaken,
                };
                Ok((effect, None))
            }
            Err(e) => Err(write_error("create", key, e)),
        }
    }

    /// Re-applies a drifted object of ours, taking back every field Rampart sets.
    async fn repair(&self, desired: &DesiredObject) -> Result<Effect, Error> {
        let key = &desired.key;
        let api = api_for(&self.client, key.kind, &key.namespace);
        let obj = with_identity(&desired.manifest, key.kind, &self.owner)?;
        self.metrics
            .write(&self.owner.name, key.kind.kind(), "apply");
        api.patch(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .map(|_| Effect::Done)
        .map_err(|e| write_error("apply", key, e))
    }

    /// Deletes an object of ours, only if it is still the very object we observed.
    async fn delete(&self, observed: &ObservedObject) -> Result<Effect, Error> {
        let key = &observed.key;
        let api = api_for(&self.client, key.kind, &key.namespace);
        let dp = DeleteParams {
            preconditions: observed.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        self.metrics
            .write(&self.owner.name, key.kind.kind(), "delete");
        match api.delete(&key.name, &dp).await {
            Ok(_) => Ok(Effect::Done),
            // Gone already, or replaced by another object under the same name: nothing of
            // ours is left to delete.
            Err(e) if matches!(status_code(&e), Some(404) | Some(409)) => Ok(Effect::Unchanged),
            Err(e) => Err(write_error("delete", key, e)),
        }
    }

    /// Lets an object outlive its profile: drops the owner reference to the profile (others'
    /// stay) so garbage collection leaves it, and names the profile's uid in a label so it is
    /// still known as the profile's while the profile lives, and findable after. Guarded by
    /// the resourceVersion it read, so a concurrent change to the owner references is never
    /// overwritten.
    async fn orphan(&self, observed: &ObservedObject) -> Result<Effect, Error> {
        let key = &observed.key;
        let api = api_for(&self.client, key.kind, &key.namespace);
        let current = match api.get_opt(&key.name).await {
            Ok(Some(o)) if observed.uid.is_none() || o.metadata.uid == observed.uid => o,
            Ok(_) => return Ok(Effect::Unchanged),
            Err(e) => return Err(write_error("get", key, e)),
        };
        if !has_owner_reference(&current.metadata, &self.owner.uid) {
            return Ok(Effect::Unchanged);
        }
        let others: Vec<&OwnerReference> = current
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.uid != self.owner.uid)
            .collect();
        let patch = json!({"metadata": {
            "resourceVersion": current.metadata.resource_version,
            "ownerReferences": others,
            "labels": {PROFILE_UID_LABEL: self.owner.uid},
        }});
        self.metrics
            .write(&self.owner.name, key.kind.kind(), "patch");
        match api
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(Effect::Done),
            Err(e) if status_code(&e) == Some(404) => Ok(Effect::Unchanged),
            Err(e) => Err(write_error("patch", key, e)),
        }
    }

    /// This profile's id in a stamp: its own entry. An id in the old format counts only for a
    /// pod template (one stamp per template then, whichever profile wrote it); for a Secret
    /// the plan decided whose it is, and `expected` carries that.
    fn own_id<'a>(&self, stamp: &'a Stamp) -> Option<&'a str> {
        stamp.entry(&self.owner.uid).map(|e| e.rotation_id.as_str())
    }

    /// Gives a Secret new values for the `regenerate` keys and writes this profile's entry at
    /// the rotation id into its stamp, in one write guarded by the resourceVersion it read:
    /// either all of it lands or none, so a crash cannot leave new values without the stamp
    /// (which would regenerate them again). Nothing is written unless this profile's entry
    /// still holds what the plan saw. Values never reach a log or an error.
    async fn rotate_secret(&self, r: &SecretRotation) -> Result<Effect, Error> {
        use k8s_openapi::api::core::v1::Secret;
        use k8s_openapi::ByteString;
        let SecretRef { namespace, name } = &r.secret;
        let api = Api::<Secret>::namespaced(self.client.clone(), namespace);
        let mut secret = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(Effect::Unchanged),
            Err(e) => return Err(secret_error("get", &r.secret, e)),
        };
        let id = r.rotation_id.as_str();
        let stamp = Stamp::of(annotation(&secret.metadata, ROTATION_ID_ANNOTATION));
        let own = self.own_id(&stamp);
        if own == Some(id) || own != r.expected.as_deref() {
            return Ok(Effect::Unchanged);
        }
        if secret.immutable == Some(true) {
            return Ok(Effect::Refused(REFUSED_IMMUTABLE));
        }
        let data = secret.data.get_or_insert_with(Default::default);
        for key in &r.regenerate {
            if r.keep_previous {
                if let Some(old) = data.get(&key.key).cloned() {
                    data.insert(format!("{}.previous", key.key), old);
                }
            }
            let value = random_value(key.alphabet, key.length.max(1) as usize);
            data.insert(key.key.clone(), ByteString(value.into_bytes()));
        }
        // Keys the user wrote as stringData are already folded into data by the API server.
        secret.string_data = None;
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        annotations.insert(
            ROTATION_ID_ANNOTATION.to_string(),
            stamp
                .with(Entry::marked(&self.owner.uid, id, r.mark))
                .render(),
        );
        // The old-format adoption mark: the values are Rampart's from now on.
        annotations.remove(ROTATION_ADOPTED_ANNOTATION);
        self.replace_secret(&r.secret, secret).await
    }

    /// Writes a Secret read moments ago back whole, guarded by the resourceVersion it was read
    /// at (a conflict or a deletion leaves it to the next pass, which decides again from what is
    /// there). A refusal that will not change on retry (immutable, a webhook, the role) is
    /// returned as [`Effect::Refused`]. Values never reach a log or an error.
    async fn replace_secret(
        &self,
        secret_ref: &SecretRef,
        mut secret: k8s_openapi::api::core::v1::Secret,
    ) -> Result<Effect, Error> {
        use k8s_openapi::api::core::v1::Secret;
        let api = Api::<Secret>::namespaced(self.client.clone(), &secret_ref.namespace);
        secret.metadata.managed_fields = None;
        self.metrics.write(&self.owner.name, "Secret", "update");
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.replace(&secret_ref.name, &pp, &secret).await {
            Ok(_) => Ok(Effect::Done),
            Err(e) if matches!(status_code(&e), Some(409) | Some(404)) => Ok(Effect::Unchanged),
            Err(e) => match refusal(&e) {
                Some(why) => {
                    tracing::warn!(namespace = %secret_ref.namespace, secret = %secret_ref.name, error = %e, "the API server refused a write of a Secret; it is skipped for this rotation id");
                    Ok(Effect::Refused(why))
                }
                None => Err(secret_error("update", secret_ref, e)),
            },
        }
    }

    /// A metadata-only merge patch of a Secret (its stamp), the patch carrying the
    /// resourceVersion it was decided on.
    async fn patch_secret_metadata(
        &self,
        secret: &SecretRef,
        patch: &Value,
    ) -> Result<Effect, Error> {
        use k8s_openapi::api::core::v1::Secret;
        let api = Api::<Secret>::namespaced(self.client.clone(), &secret.namespace);
        self.metrics.write(&self.owner.name, "Secret", "patch");
        match api
            .patch_metadata(&secret.name, &field_manager(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(Effect::Done),
            Err(e) if matches!(status_code(&e), Some(409) | Some(404)) => Ok(Effect::Unchanged),
            Err(e) => Err(secret_error("patch", secret, e)),
        }
    }

    /// Adopts a Secret: writes this profile's entry at the current id, marked adopted, into
    /// its stamp, and nothing else; other profiles' entries stay. Its data is neither read nor
    /// written.
    async fn adopt_secret(
        &self,
        secret: &SecretRef,
        id: &str,
        expected: Option<&str>,
    ) -> Result<Effect, Error> {
        use k8s_openapi::api::core::v1::Secret;
        let api = Api::<Secret>::namespaced(self.client.clone(), &secret.namespace);
        let current = match api.get_metadata_opt(&secret.name).await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(Effect::Unchanged),
            Err(e) => return Err(secret_error("get", secret, e)),
        };
        let stamp = Stamp::of(annotation(&current.metadata, ROTATION_ID_ANNOTATION));
        let own = self.own_id(&stamp);
        if own == Some(id) || own != expected {
            return Ok(Effect::Unchanged);
        }
        // The resourceVersion just read makes the patch a compare-and-swap: had a rotation (or
        // anyone) written the Secret in between, the API server refuses it and the next pass
        // decides again from what is there.
        let patch = json!({"metadata": {
            "resourceVersion": current.metadata.resource_version,
            "annotations": {
                ROTATION_ID_ANNOTATION: stamp.with(Entry::adopted(&self.owner.uid, id)).render(),
                // The entry says it now; the old-format mark would only mislead.
                ROTATION_ADOPTED_ANNOTATION: null,
            },
        }});
        self.patch_secret_metadata(secret, &patch).await
    }

    /// Starts a Secret's hook: creates its Job (a Job of ours already under that name, made by
    /// a pass that crashed before the next step, counts as made), then moves the Secret's mark
    /// from `hook-due` to `hook-started`, guarded by the resourceVersion it read. From then on a
    /// missing Job is never made again. A name held by someone else's Job is left to the next
    /// pass, which reads it and fails the hook.
    async fn start_hook(
        &self,
        job: &DesiredObject,
        secret: &SecretRef,
        id: &str,
        regenerate: &[String],
    ) -> Result<Effect, Error> {
        use k8s_openapi::api::core::v1::Secret;
        let api = Api::<Secret>::namespaced(self.client.clone(), &secret.namespace);
        let current = match api.get_metadata_opt(&secret.name).await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(Effect::Unchanged),
            Err(e) => return Err(secret_error("get", secret, e)),
        };
        let stamp = Stamp::of(annotation(&current.metadata, ROTATION_ID_ANNOTATION));
        let due = stamp
            .entry(&self.owner.uid)
            .is_some_and(|e| e.rotation_id == id && e.mark == Mark::HookDue);
        if !due {
            return Ok(Effect::Unchanged);
        }
        let made = match self.create(job).await {
            Ok((made, _)) => made,
            // Refused for good (the hooks role not bound, the policy, a webhook): the hook
            // cannot run, so it fails now, the previous values go back and the consumers stay
            // as they are, rather than the rotation waiting on a Job that will never exist.
            Err(Error::Write { source, .. }) if refusal(&source).is_some() => {
                tracing::warn!(namespace = %secret.namespace, secret = %secret.name, job = %job.key.name, error = %source, "the API server refused a rotation hook Job; the Secret's previous values are put back");
                self.end_hook(secret, id, HookEnd::Failed, regenerate)
                    .await?;
                return Ok(Effect::Refused(REFUSED_HOOK_JOB));
            }
            Err(e) => return Err(e),
        };
        if made == Effect::NameTaken {
            return Ok(Effect::NameTaken);
        }
        self.mark_secret(secret, &current, stamp, id, Mark::HookStarted)
            .await
    }

    /// Records how a Secret's hook ended, if its entry still says the hook has not ended at
    /// this id. A failure gives each regenerated key back its `<key>.previous` value (what the
    /// consumers, not restarted, run with) in the same write as the mark, guarded by the
    /// resourceVersion read; values never reach a log or an error.
    async fn end_hook(
        &self,
        secret_ref: &SecretRef,
        id: &str,
        end: HookEnd,
        regenerate: &[String],
    ) -> Result<Effect, Error> {
        use k8s_openapi::api::core::v1::Secret;
        let api = Api::<Secret>::namespaced(self.client.clone(), &secret_ref.namespace);
        let mark = match end {
            HookEnd::Succeeded => Mark::Rotated,
            HookEnd::Failed => Mark::HookFailed,
            HookEnd::Lost => Mark::HookLost,
        };
        if end != HookEnd::Failed {
            let current = match api.get_metadata_opt(&secret_ref.name).await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(Effect::Unchanged),
                Err(e) => return Err(secret_error("get", secret_ref, e)),
            };
            let stamp = Stamp::of(annotation(&current.metadata, ROTATION_ID_ANNOTATION));
            if !hook_pending_at(&stamp, &self.owner.uid, id) {
                return Ok(Effect::Unchanged);
            }
            return self
                .mark_secret(secret_ref, &current, stamp, id, mark)
                .await;
        }
        let mut secret = match api.get_opt(&secret_ref.name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(Effect::Unchanged),
            Err(e) => return Err(secret_error("get", secret_ref, e)),
        };
        let stamp = Stamp::of(annotation(&secret.metadata, ROTATION_ID_ANNOTATION));
        if !hook_pending_at(&stamp, &self.owner.uid, id) {
            return Ok(Effect::Unchanged);
        }
        let data = secret.data.get_or_insert_with(Default::default);
        for key in regenerate {
            if let Some(previous) = data.get(&format!("{key}.previous")).cloned() {
                data.insert(key.clone(), previous);
            }
        }
        secret.string_data = None;
        secret
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                ROTATION_ID_ANNOTATION.to_string(),
                stamp
                    .with(Entry::marked(&self.owner.uid, id, mark))
                    .render(),
            );
        self.replace_secret(secret_ref, secret).await
    }

    /// Writes this profile's entry at `id` with `mark` into a Secret's stamp, as a metadata
    /// patch guarded by the resourceVersion `current` was read at.
    async fn mark_secret(
        &self,
        secret: &SecretRef,
        current: &kube::core::PartialObjectMeta<k8s_openapi::api::core::v1::Secret>,
        stamp: Stamp,
        id: &str,
        mark: Mark,
    ) -> Result<Effect, Error> {
        let patch = json!({"metadata": {
            "resourceVersion": current.metadata.resource_version,
            "annotations": {
                ROTATION_ID_ANNOTATION: stamp.with(Entry::marked(&self.owner.uid, id, mark)).render(),
            },
        }});
        self.patch_secret_metadata(secret, &patch).await
    }

    /// Restarts a workload by writing this profile's entry at the rotation id into its pod
    /// template's stamp, with the time, the way `kubectl rollout restart` does; only these two
    /// annotations are written.
    async fn stamp_workload(
        &self,
        consumer: &ConsumerRef,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        gates: bool,
    ) -> Result<Effect, Error> {
        use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
        let stamp = Restart {
            consumer,
            id,
            at,
            created_before,
            gates,
        };
        match consumer.kind {
            ConsumerKind::Deployment => {
                self.restart::<Deployment>(&stamp, |d| d.spec.template.metadata.as_ref())
                    .await
            }
            ConsumerKind::StatefulSet => {
                self.restart::<StatefulSet>(&stamp, |d| d.spec.template.metadata.as_ref())
                    .await
            }
            ConsumerKind::DaemonSet => {
                self.restart::<DaemonSet>(&stamp, |d| d.spec.template.metadata.as_ref())
                    .await
            }
        }
    }

    /// Exactly once: reads the workload fresh, leaves it alone when its template already
    /// carries the id (an earlier pass, or a plan made from a stale cache) or it was created
    /// after the Secrets held their new values, and writes with the resourceVersion it read as
    /// a precondition; on a conflict it reads and decides again.
    async fn restart<K>(
        &self,
        r: &Restart<'_>,
        template: fn(&K) -> Option<&kube::core::ObjectMeta>,
    ) -> Result<Effect, Error>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let (ns, name) = (&r.consumer.namespace, &r.consumer.name);
        let api = Api::<K>::namespaced(self.client.clone(), ns);
        let failed = |verb: &'static str, source: kube::Error| Error::Write {
            verb,
            kind: r.consumer.kind.as_str(),
            namespace: ns.clone(),
            name: name.clone(),
            source,
        };
        for _ in 0..RESTART_ATTEMPTS {
            let Some(current) = api.get_opt(name).await.map_err(|e| failed("get", e))? else {
                return Ok(Effect::Unchanged);
            };
            let meta = current.meta();
            let created = meta.creation_timestamp.as_ref().and_then(to_chrono);
            if r.created_before
                .is_some_and(|cut| created.is_some_and(|c| c > cut))
            {
                return Ok(Effect::Unchanged);
            }
            let stamp = Stamp::of(
                template(&current)
                    .and_then(|m| m.annotations.as_ref())
                    .and_then(|a| a.get(ROTATION_ID_ANNOTATION))
                    .map(String::as_str),
            );
            // A template stamp in the old format was written by the one profile that
            // restarted it then: it counts for this one.
            if self.own_id(&stamp).or(stamp.legacy.as_deref()) == Some(r.id) {
                return Ok(Effect::Unchanged);
            }
            let patch = json!({
                "metadata": {"resourceVersion": meta.resource_version},
                "spec": {"template": {"metadata": {"annotations": {
                    ROTATION_ID_ANNOTATION: stamp.with(Entry::rotated(&self.owner.uid, r.id)).render(),
                    // Milliseconds: every consumer of one batch carries the same instant, so a
                    // batch can be told from the next even within a second.
                    RESTARTED_AT_ANNOTATION: r.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    RESTARTED_UNREADY_ANNOTATION: (!r.gates).then_some("true"),
                }}}},
            });
            self.metrics
                .write(&self.owner.name, r.consumer.kind.as_str(), "patch");
            match api
                .patch(name, &field_manager(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(Effect::Done),
                Err(e) if status_code(&e) == Some(409) => continue,
                Err(e) if status_code(&e) == Some(404) => return Ok(Effect::Unchanged),
                Err(e) => return Err(failed("patch", e)),
            }
        }
        // Written by others each time: its next event brings a pass that decides again.
        Ok(Effect::Unchanged)
    }
}

/// Reads and writes of one restart before leaving the workload to the next pass.
const RESTART_ATTEMPTS: usize = 3;

/// One restart stamp to write.
struct Restart<'a> {
    consumer: &'a ConsumerRef,
    id: &'a str,
    at: chrono::DateTime<chrono::Utc>,
    created_before: Option<chrono::DateTime<chrono::Utc>>,
    gates: bool,
}

fn field_manager() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn annotation<'a>(meta: &'a kube::core::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
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
    if kind.cluster_scoped() {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), namespace, &ar)
    }
}

/// The manifest with the profile's identity: an owner reference, or for a kind that must
/// outlive the profile, the uid label.
fn with_identity(
    manifest: &Value,
    kind: ManagedKind,
    owner: &OwnerReference,
) -> Result<DynamicObject, Error> {
    let mut m = manifest.clone();
    if kind.outlives_profile() {
        m["metadata"]["labels"][PROFILE_UID_LABEL] = Value::String(owner.uid.clone());
    } else {
        m["metadata"]["ownerReferences"] =
            serde_json::to_value(vec![owner]).map_err(|source| Error::Encode {
                what: "owner reference".into(),
                source,
            })?;
    }
    serde_json::from_value(m).map_err(|source| Error::Encode {
        what: "manifest".into(),
        source,
    })
}

/// A report's manifest with the owner reference to the profile: garbage collection removes
/// it with the profile (a namespaced dependent may have a cluster-scoped owner), and the
/// namespace's deletion removes it with the namespace it lives in.
fn with_owner(manifest: &Value, owner: &OwnerReference) -> Result<DynamicObject, Error> {
    let mut m = manifest.clone();
    m["metadata"]["ownerReferences"] =
        serde_json::to_value(vec![owner]).map_err(|source| Error::Encode {
            what: "owner reference".into(),
            source,
        })?;
    serde_json::from_value(m).map_err(|source| Error::Encode {
        what: "report".into(),
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

/// A failed read or write of a Secret during rotation or adoption: its name, never a value.
fn secret_error(verb: &'static str, secret: &SecretRef, source: kube::Error) -> Error {
    Error::Write {
        verb,
        kind: "Secret",
        namespace: secret.namespace.clone(),
        name: secret.name.clone(),
        source,
    }
}

/// A refusal that a retry cannot change: a webhook's or the role's `403`, or `400`/`422` from
/// validation (an immutable Secret whose flag our read missed, a validating policy).
fn refusal(e: &kube::Error) -> Option<&'static str> {
    match status_code(e)? {
        403 => Some(REFUSED_FORBIDDEN),
        422 if e.to_string().contains("immutable") => Some(REFUSED_IMMUTABLE),
        400 | 422 => Some(REFUSED_INVALID),
        _ => None,
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A random value of `length` characters from `alphabet`, from the operating system's
/// generator. Called by the write layer only; the value never leaves the Secret it goes to.
pub fn random_value(alphabet: crate::api::Alphabet, length: usize) -> String {
    use rand::Rng;
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const HEX: &[u8] = b"0123456789abcdef";
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let chars = match alphabet {
        crate::api::Alphabet::Alphanumeric => ALNUM,
        crate::api::Alphabet::Hex => HEX,
        crate::api::Alphabet::Base64Url => B64URL,
    };
    // ThreadRng is a CSPRNG (ChaCha) seeded and periodically reseeded from the OS.
    let mut rng = rand::rng();
    (0..length)
        .map(|_| chars[rng.random_range(0..chars.len())] as char)
        .collect()
}

/// This profile's entry in `stamp` is at `id` with its hook not ended.
fn hook_pending_at(stamp: &Stamp, profile_uid: &str, id: &str) -> bool {
    stamp
        .entry(profile_uid)
        .is_some_and(|e| e.rotation_id == id && e.mark.hook_pending())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_have_the_asked_length_and_alphabet() {
        let v = random_value(crate::api::Alphabet::Hex, 40);
        assert_eq!(v.len(), 40);
        assert!(v.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(v, random_value(crate::api::Alphabet::Hex, 40));
    }
}
