//! Observation: the watch-fed caches of everything a reconcile reads ([`Caches`]), and the
//! plain values the pure controls take ([`queries`]). Calls the API (watches; or, for
//! `rampart plan`, the same caches filled once from lists: [`caches_listed`]) but never
//! writes.
//!
//! Workloads and budgets are watched whole (their selectors and replica counts matter),
//! namespaces and Secrets as metadata only, and NetworkPolicies and VolumeSnapshots only where
//! they carry Rampart's label. Every object is summarised before caching ([`summaries`]).

pub mod clock;
pub mod hooks;
pub mod queries;
pub mod reports;
pub mod summaries;
pub mod verification;
pub mod workloads;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};

use crate::ownership::all_managed_selector;
use summaries::{Policy, Pvc, SecretMeta, Snapshot, Summarize};
use workloads::Workload;

/// The caches a reconcile reads.
#[derive(Clone)]
pub struct Caches {
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub deployments: Store<Workload<Deployment>>,
    pub statefulsets: Store<Workload<StatefulSet>>,
    pub budgets: Store<PodDisruptionBudget>,
    pub policies: Store<Policy>,
    /// Secrets as metadata only: rotation needs their labels and annotations, and a value
    /// that is never read into memory can never leak from it.
    pub secrets: Store<SecretMeta>,
    pub daemonsets: Store<Workload<DaemonSet>>,
    pub pvcs: Store<Pvc>,
    /// Rampart's VolumeSnapshots, once the cluster serves the snapshot API.
    pub snapshots: SnapshotCache,
}

/// Rampart's VolumeSnapshots. The snapshot API may not be served when the operator starts (its
/// CRDs are often installed after, or with, the operator): the watch then starts once
/// discovery finds them, and until its first list the backups control reports the API missing.
#[derive(Clone)]
pub struct SnapshotCache {
    store: Store<Snapshot>,
    served: tokio::sync::watch::Receiver<bool>,
    /// Discovery found the API at startup: readiness waits for this cache too, so no pass
    /// reports the API missing while the cache is still listing.
    at_start: bool,
}

impl SnapshotCache {
    /// A cache filled once (see [`caches_listed`]); `served` says whether the API exists.
    fn listed(store: Store<Snapshot>, served: bool) -> Self {
        // The sender goes at once: a receiver keeps the last value it was given.
        let (_, receiver) = tokio::sync::watch::channel(served);
        Self {
            store,
            served: receiver,
            at_start: served,
        }
    }

    /// The cache, once the API is served and the cache holds its first full list.
    pub fn served(&self) -> Option<&Store<Snapshot>> {
        (*self.served.borrow()).then_some(&self.store)
    }

    /// Resolves once [`SnapshotCache::served`] is `Some`.
    pub async fn until_served(&self) {
        let mut served = self.served.clone();
        let _ = served.wait_for(|s| *s).await;
    }
}

/// How often discovery is asked again for the snapshot API while it is not served: a CRD
/// installed later is picked up within this, at the cost of one small request.
const SNAPSHOT_DISCOVERY_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the cluster serves `snapshot.storage.k8s.io/v1` VolumeSnapshots. An error (the API
/// server restarting, a timeout) is an unknown, not a no.
pub async fn snapshot_api_served(client: &Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources("snapshot.storage.k8s.io/v1")
        .await
    {
        Ok(l) => Ok(l.resources.iter().any(|r| r.name == "volumesnapshots")),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until discovery finds the snapshot API, asking again every
/// [`SNAPSHOT_DISCOVERY_RETRY`].
async fn until_snapshot_api(client: Client) {
    loop {
        match snapshot_api_served(&client).await {
            Ok(true) => {
                tracing::info!("the cluster serves snapshot.storage.k8s.io/v1: watching snapshots");
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "snapshot API discovery"),
        }
        tokio::time::sleep(SNAPSHOT_DISCOVERY_RETRY).await;
    }
}

type Feed<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// The watch streams that feed [`Caches`]; the controller polls them and maps each change to
/// the profiles it affects. Each yields an object only when its summary changed (or it was
/// deleted), so a Deployment's status churn that changes nothing Rampart reads triggers
/// nothing.
pub struct Feeds {
    pub namespaces: Feed<PartialObjectMeta<Namespace>>,
    pub deployments: Feed<Workload<Deployment>>,
    pub statefulsets: Feed<Workload<StatefulSet>>,
    pub budgets: Feed<PodDisruptionBudget>,
    pub policies: Feed<Policy>,
    pub secrets: Feed<SecretMeta>,
    pub daemonsets: Feed<Workload<DaemonSet>>,
    pub pvcs: Feed<Pvc>,
    /// Yields nothing until the snapshot API is discovered.
    pub snapshots: Feed<Snapshot>,
}

/// The VolumeSnapshot API resource.
pub fn snapshot_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
        "volumesnapshots",
    )
}

/// A watch event with its object summarised.
fn summarized<K: Summarize>(event: watcher::Event<K>) -> watcher::Event<K::Summary> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.summarize()),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.summarize()),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.summarize()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// A reflector on `api` that caches each object's summary, and the stream of summaries that
/// changed.
fn feed<K>(api: Api<K>, config: watcher::Config) -> (Store<K::Summary>, Feed<K::Summary>)
where
    K: Resource
        + Summarize
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .map(|r| r.map(summarized))
        .reflect(writer);
    (reader, Box::pin(changes_only(stream)))
}

/// The objects of a reflected event stream whose summary changed, and every deleted one. The
/// store has seen every event already; this only decides what triggers a reconcile.
fn changes_only<S, K>(events: S) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: Resource + serde::Serialize + Send,
{
    // Keyed by a hash of namespace and name: 16 bytes an object where the two strings cost
    // about 130 (3 MiB over the 27,000 objects an N=1000 estate has watched). Two objects
    // would have to collide in both key and digest for an event to be missed.
    let mut seen: HashMap<u64, u64> = HashMap::new();
    events.filter_map(move |event| {
        let out = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let digest = content_digest(&o);
                (seen.insert(object_key(&o), digest) != Some(digest)).then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&object_key(&o));
                Some(Ok(o))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    })
}

/// A 64-bit hash of `value`, for the in-process "did this change?" memos (never stored or
/// compared across processes, so the hasher's lack of a stable output does not matter).
pub fn hash64<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A hash of an object's namespace and name.
fn object_key<K: Resource>(o: &K) -> u64 {
    hash64(&(o.meta().namespace.as_deref(), o.meta().name.as_deref()))
}

/// A digest of a summary without its resourceVersion, which changes on every write.
fn content_digest<K: Resource + serde::Serialize>(o: &K) -> u64 {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.remove("resourceVersion");
    }
    hash64(&v.to_string())
}

/// Starts nothing by itself: the returned feeds must be polled (the controller does).
/// `snapshot_api` says whether discovery found `snapshot.storage.k8s.io/v1` at startup; when
/// it did not, the snapshot feed asks again until it does.
pub fn caches(client: &Client, snapshot_api: bool) -> (Caches, Feeds) {
    let all = watcher::Config::default;
    let ours = || watcher::Config::default().labels(&all_managed_selector());
    // Namespaces and Secrets as metadata only: an `Api<PartialObjectMeta<_>>` watch asks the
    // API server for metadata alone.
    let (namespaces, ns_feed) = feed(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        all(),
    );
    let (deployments, dep_feed) = feed(Api::<Deployment>::all(client.clone()), all());
    let (statefulsets, sts_feed) = feed(Api::<StatefulSet>::all(client.clone()), all());
    let (budgets, pdb_feed) = feed(Api::<PodDisruptionBudget>::all(client.clone()), all());
    let (policies, np_feed) = feed(Api::<NetworkPolicy>::all(client.clone()), ours());
    let (secrets, secret_feed) = feed(Api::<PartialObjectMeta<Secret>>::all(client.clone()), all());
    let (daemonsets, ds_feed) = feed(Api::<DaemonSet>::all(client.clone()), all());
    let (pvcs, pvc_feed) = feed(Api::<PersistentVolumeClaim>::all(client.clone()), all());
    let (snapshots, snap_feed) = snapshot_feed(client, snapshot_api, ours());
    (
        Caches {
            namespaces,
            deployments,
            statefulsets,
            budgets,
            policies,
            secrets,
            daemonsets,
            pvcs,
            snapshots,
        },
        Feeds {
            namespaces: ns_feed,
            deployments: dep_feed,
            statefulsets: sts_feed,
            budgets: pdb_feed,
            policies: np_feed,
            secrets: secret_feed,
            daemonsets: ds_feed,
            pvcs: pvc_feed,
            snapshots: snap_feed,
        },
    )
}

/// The snapshot cache and its feed: the watch starts once the API is discovered, and the cache
/// counts as served from its first full list.
fn snapshot_feed(
    client: &Client,
    discovered: bool,
    config: watcher::Config,
) -> (SnapshotCache, Feed<Snapshot>) {
    let (store, watched) = feed(
        Api::<DynamicObject>::all_with(client.clone(), &snapshot_resource()),
        config,
    );
    let (served_tx, served) = tokio::sync::watch::channel(false);
    let ready = store.clone();
    let discovery = client.clone();
    let started = futures::stream::once(async move {
        if !discovered {
            until_snapshot_api(discovery).await;
        }
        // The one waiter on this store's readiness (see `Caches::wait_until_ready`).
        tokio::spawn(async move {
            if ready.wait_until_ready().await.is_ok() {
                let _ = served_tx.send(true);
            }
        });
        watched
    })
    .flatten();
    let cache = SnapshotCache {
        store,
        served,
        at_start: discovered,
    };
    (cache, Box::pin(started))
}

/// The same caches filled once from lists instead of kept by watches: what `rampart plan`
/// reads, so it plans from the very queries the controller runs. Lists only (namespaces and
/// Secrets as metadata, never a Secret's values); writes nothing.
pub async fn caches_listed(client: &Client) -> Result<Caches, kube::Error> {
    let all = ListParams::default;
    let ours = || ListParams::default().labels(&all_managed_selector());
    let snapshots = if snapshot_api_served(client).await? {
        let api = Api::<DynamicObject>::all_with(client.clone(), &snapshot_resource());
        let (store, writer) = reflector::store();
        let store = filled(
            store,
            writer,
            list_pages(
                |lp| {
                    let api = api.clone();
                    async move { api.list(&lp).await }
                },
                ours(),
            )
            .await?,
        );
        SnapshotCache::listed(store, true)
    } else {
        let (store, writer) = reflector::store();
        SnapshotCache::listed(filled::<DynamicObject>(store, writer, vec![]), false)
    };
    Ok(Caches {
        namespaces: listed_metadata::<Namespace>(client, all()).await?,
        deployments: listed(Api::<Deployment>::all(client.clone()), all()).await?,
        statefulsets: listed(Api::<StatefulSet>::all(client.clone()), all()).await?,
        budgets: listed(Api::<PodDisruptionBudget>::all(client.clone()), all()).await?,
        policies: listed(Api::<NetworkPolicy>::all(client.clone()), ours()).await?,
        secrets: listed_metadata::<Secret>(client, all()).await?,
        daemonsets: listed(Api::<DaemonSet>::all(client.clone()), all()).await?,
        pvcs: listed(Api::<PersistentVolumeClaim>::all(client.clone()), all()).await?,
        snapshots,
    })
}

/// Every page of a list, 500 objects a request, so a large estate is never one huge response.
async fn list_pages<K, F, Fut>(list: F, params: ListParams) -> Result<Vec<K>, kube::Error>
where
    F: Fn(ListParams) -> Fut,
    Fut: std::future::Future<Output = Result<kube::api::ObjectList<K>, kube::Error>>,
    K: Clone,
{
    let mut out = Vec::new();
    let mut params = params.limit(500);
    loop {
        let page = list(params.clone()).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        out.extend(page.items);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// A store holding exactly `objects`, summarised as the watches summarise them.
fn filled<K: Summarize>(
    store: Store<K::Summary>,
    mut writer: reflector::store::Writer<K::Summary>,
    objects: Vec<K>,
) -> Store<K::Summary> {
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o.summarize()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

async fn listed<K>(api: Api<K>, params: ListParams) -> Result<Store<K::Summary>, kube::Error>
where
    K: Resource + Summarize + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let (store, writer) = reflector::store();
    Ok(filled(
        store,
        writer,
        list_pages(
            |lp| {
                let api = api.clone();
                async move { api.list(&lp).await }
            },
            params,
        )
        .await?,
    ))
}

/// A metadata-only list, as the namespace and Secret watches are.
async fn listed_metadata<K>(
    client: &Client,
    params: ListParams,
) -> Result<Store<<PartialObjectMeta<K> as Summarize>::Summary>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    PartialObjectMeta<K>: Summarize,
{
    let api = Api::<K>::all(client.clone());
    let (store, writer) = reflector::store();
    Ok(filled(
        store,
        writer,
        list_pages(
            |lp| {
                let api = api.clone();
                async move { api.list_metadata(&lp).await }
            },
            params,
        )
        .await?,
    ))
}

impl Caches {
    /// Waits until every cache has its first full list, so a reconcile never mistakes an
    /// empty cache for an empty cluster. Call it from one task only: kube's store readiness
    /// wakes just the last of several concurrent waiters and leaves the others hanging.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.namespaces.wait_until_ready().await?;
        self.deployments.wait_until_ready().await?;
        self.statefulsets.wait_until_ready().await?;
        self.budgets.wait_until_ready().await?;
        self.policies.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.daemonsets.wait_until_ready().await?;
        self.pvcs.wait_until_ready().await?;
        if self.snapshots.at_start {
            self.snapshots.until_served().await;
        }
        Ok(())
    }
}

/// The profiles whose spec, labels, finalizers or deletion changed (and every deleted one):
/// a status write, the operator's own most frequent write, passes no further.
pub fn spec_changes<S>(
    events: S,
) -> impl Stream<Item = Result<crate::api::HardeningProfile, watcher::Error>> + Send
where
    S: Stream<Item = Result<watcher::Event<crate::api::HardeningProfile>, watcher::Error>> + Send,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    events.filter_map(move |event| {
        let out = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                let m = &p.metadata;
                let digest = hash64(&(
                    m.uid.as_deref(),
                    m.generation,
                    m.deletion_timestamp.is_some(),
                    &m.finalizers,
                    &m.labels,
                ));
                let changed = seen.insert(kube::ResourceExt::name_any(&p), digest) != Some(digest);
                changed.then_some(Ok(p))
            }
            Ok(watcher::Event::Delete(p)) => {
                seen.remove(&kube::ResourceExt::name_any(&p));
                Some(Ok(p))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    })
}

/// A Kubernetes timestamp as a chrono time.
pub fn to_chrono(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(
        t.0.as_second(),
        t.0.subsec_nanosecond().try_into().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(ns: &str, name: &str, value: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            data: Some([("k".to_string(), value.to_string())].into()),
            ..Default::default()
        }
    }

    fn passed(events: Vec<watcher::Event<ConfigMap>>) -> Vec<(String, String, String)> {
        let stream = futures::stream::iter(events.into_iter().map(Ok));
        futures::executor::block_on(changes_only(stream).collect::<Vec<_>>())
            .into_iter()
            .filter_map(Result::ok)
            .map(|o| {
                let v = o.data.and_then(|d| d.get("k").cloned()).unwrap_or_default();
                (
                    o.metadata.namespace.unwrap_or_default(),
                    o.metadata.name.unwrap_or_default(),
                    v,
                )
            })
            .collect()
    }

    #[test]
    fn only_changed_summaries_and_deletions_trigger() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let got = passed(vec![
            Init,
            InitApply(cm("a", "x", "1", "10")),
            InitApply(cm("b", "x", "1", "11")),
            InitDone,
            // A new resourceVersion with the same content: nothing Rampart reads changed.
            Apply(cm("a", "x", "1", "12")),
            Apply(cm("a", "x", "2", "13")),
            Delete(cm("a", "x", "2", "14")),
            // After a deletion the same content is news again.
            Apply(cm("a", "x", "2", "15")),
            // Same name in another namespace is another object.
            Apply(cm("b", "x", "1", "16")),
            Apply(cm("b", "x", "3", "17")),
        ]);
        let s = |ns: &str, v: &str| (ns.to_string(), "x".to_string(), v.to_string());
        assert_eq!(
            got,
            vec![
                s("a", "1"),
                s("b", "1"),
                s("a", "2"),
                s("a", "2"),
                s("a", "2"),
                s("b", "3")
            ]
        );
    }
}
