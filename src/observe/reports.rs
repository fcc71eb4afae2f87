//! Rampart's OpenReports `Report`s, watched once the cluster serves `openreports.io/v1alpha1`
//! (the CRDs are often installed after the operator, or never): discovery is asked at start
//! and again every [`REPORT_DISCOVERY_RETRY`] until they appear, quietly, so a cluster without
//! them runs as before. Calls the API (discovery and a watch) but never writes.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

use crate::ownership::all_managed_selector;
use crate::reports::{ObservedReport, REPORT_GROUP, REPORT_KIND, REPORT_PLURAL, REPORT_VERSION};

/// How often discovery is asked again for the Report API while it is not served.
const REPORT_DISCOVERY_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The Report API resource.
pub fn report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(REPORT_GROUP, REPORT_VERSION, REPORT_KIND),
        REPORT_PLURAL,
    )
}

/// Whether the cluster serves `openreports.io/v1alpha1` Reports. An error is an unknown, not
/// a no.
pub async fn report_api_served(client: &Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources(&format!("{REPORT_GROUP}/{REPORT_VERSION}"))
        .await
    {
        Ok(l) => Ok(l.resources.iter().any(|r| r.name == REPORT_PLURAL)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Rampart's reports, once the API is served and the cache holds its first full list.
#[derive(Clone)]
pub struct ReportCache {
    store: Store<DynamicObject>,
    served: tokio::sync::watch::Receiver<bool>,
}

impl ReportCache {
    /// Whether reports can be written and compared: the API is served and listed.
    pub fn served(&self) -> bool {
        *self.served.borrow()
    }

    /// Resolves once [`ReportCache::served`] is true.
    pub async fn until_served(&self) {
        let mut served = self.served.clone();
        let _ = served.wait_for(|s| *s).await;
    }

    /// Every report of ours in the cache, reduced to what the comparison reads.
    pub fn observed(&self, profile: &str) -> Vec<ObservedReport> {
        self.store
            .state()
            .iter()
            .filter(|r| crate::ownership::profile_of(&r.metadata).as_deref() == Some(profile))
            .map(|r| observed_report(r))
            .collect()
    }
}

fn observed_report(r: &DynamicObject) -> ObservedReport {
    ObservedReport {
        namespace: r.namespace().unwrap_or_default(),
        name: r.name_any(),
        uid: r.uid().unwrap_or_default(),
        labels: r.labels().clone(),
        owner_uids: r.owner_references().iter().map(|o| o.uid.clone()).collect(),
        source: r.data["source"].clone(),
        summary: r.data["summary"].clone(),
        results: r.data["results"].clone(),
    }
}

/// Reports deleted by someone else: the profile they name re-plans (and so rewrites them).
pub type DeletedReports = Pin<Box<dyn Stream<Item = DynamicObject> + Send>>;

/// The report cache and the stream of deleted reports. The watch starts once discovery finds
/// the API (at once when `discovered`).
pub fn report_feed(client: &Client, discovered: bool) -> (ReportCache, DeletedReports) {
    let resource = report_resource();
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let config = watcher::Config::default().labels(&all_managed_selector());
    let (served_tx, served) = tokio::sync::watch::channel(false);
    let ready = store.clone();
    let discovery = client.clone();
    let deleted = futures::stream::once(async move {
        if !discovered {
            until_report_api(discovery).await;
        }
        tokio::spawn(async move {
            if ready.wait_until_ready().await.is_ok() {
                let _ = served_tx.send(true);
            }
        });
        watcher(api, config)
            .default_backoff()
            // Managed fields are most of a report's size and nothing here reads them.
            .modify(|r| r.managed_fields_mut().clear())
            .reflect(writer)
            .filter_map(|event| {
                futures::future::ready(match event {
                    Ok(watcher::Event::Delete(r)) => Some(r),
                    Ok(_) => None,
                    // Once the API is served, a failing watch is a misconfiguration (the
                    // role lacks the report verbs, the CRDs were removed): said at every
                    // backoff, or reports would silently stop.
                    Err(e) => {
                        tracing::warn!(error = %e, "report watch failed; no reports are written until it lists");
                        None
                    }
                })
            })
    })
    .flatten();
    (ReportCache { store, served }, Box::pin(deleted))
}

/// Waits until discovery finds the Report API, asking again every
/// [`REPORT_DISCOVERY_RETRY`]; a miss is the normal case on clusters without OpenReports and
/// logs nothing.
async fn until_report_api(client: Client) {
    loop {
        match report_api_served(&client).await {
            Ok(true) => {
                tracing::info!("the cluster serves openreports.io/v1alpha1: writing reports");
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "report API discovery"),
        }
        tokio::time::sleep(REPORT_DISCOVERY_RETRY).await;
    }
}
