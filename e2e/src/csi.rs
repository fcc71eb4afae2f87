//! The local CSI stack from the tests' side: `make up` runs our hostpath driver
//! (`e2e/tools/csi-hostpath`), csi-provisioner, csi-snapshotter and snapshot-controller. No
//! kubelet mounts anything here, so tests reach a volume's bytes through its directory under
//! the driver's state directory, found from the PV's volume handle, and a snapshot's archive
//! from its VolumeSnapshotContent's snapshot handle.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::CSINode;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::{repo_root, wait_for};

/// The driver's name, as the StorageClass and `csi-snapclass` name it.
pub const DRIVER: &str = "hostpath.csi.rampart.dev";

/// The default class: binds a PVC once a pod that mounts it is scheduled.
pub const DEFAULT_CLASS: &str = "rampart-hostpath";
/// The class that binds a PVC at once, for volumes no pod mounts (fixtures whose bytes a
/// test writes into the volume's directory itself).
pub const IMMEDIATE_CLASS: &str = "rampart-hostpath-immediate";

/// Registers the driver on a fake node the way a kubelet does when the driver's node plugin
/// starts: a CSINode owned by the node. Without it the scheduler places no pod that mounts a
/// CSI volume on that node. (`make up` does the same for its own two nodes.)
pub async fn register_on_node(client: &Client, node: &str) -> Result<()> {
    let n = Api::<Node>::all(client.clone())
        .get(node)
        .await
        .with_context(|| format!("reading node {node}"))?;
    let uid = n.uid().ok_or_else(|| anyhow!("node {node} has no uid"))?;
    let csi_node: CSINode = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": node,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]
        },
        "spec": {"drivers": [{"name": DRIVER, "nodeID": node}]}
    }))?;
    Api::<CSINode>::all(client.clone())
        .create(&PostParams::default(), &csi_node)
        .await
        .with_context(|| format!("creating the CSINode of {node}"))?;
    Ok(())
}

/// The driver's state directory: `$CSI_STATE_DIR`, else the one `make up` wrote to
/// `.local/env`.
pub fn state_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("CSI_STATE_DIR") {
        return Ok(PathBuf::from(d));
    }
    let env = repo_root().join(".local/env");
    let text = std::fs::read_to_string(&env).with_context(|| {
        format!(
            "reading {}: start the local control plane with `make up`",
            env.display()
        )
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("CSI_STATE_DIR="))
        .map(PathBuf::from)
        .ok_or_else(|| {
            anyhow!(
                "no CSI_STATE_DIR in {}: restart the plane (`make down && make up`)",
                env.display()
            )
        })
}

pub fn snapshot_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
        "volumesnapshots",
    )
}

pub fn snapshot_content_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
        "volumesnapshotcontents",
    )
}

/// Waits until PVC `ns/name` is Bound and returns its PV's volume handle.
pub async fn wait_bound(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<String> {
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let pvs = Api::<PersistentVolume>::all(client.clone());
    wait_for(&format!("PVC {ns}/{name} to be Bound"), timeout, || {
        let (pvcs, pvs) = (pvcs.clone(), pvs.clone());
        async move {
            let pvc = pvcs.get(name).await.map_err(|e| e.to_string())?;
            let phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
            let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
            let (Some("Bound"), Some(pv_name)) = (phase.as_deref(), pv_name) else {
                return Err(format!("phase {phase:?}"));
            };
            let pv = pvs.get(&pv_name).await.map_err(|e| e.to_string())?;
            let csi = pv
                .spec
                .and_then(|s| s.csi)
                .ok_or("the PV is not a CSI volume")?;
            if csi.driver != DRIVER {
                return Err(format!("the PV belongs to driver {}", csi.driver));
            }
            Ok(Some(csi.volume_handle))
        }
    })
    .await
}

/// The directory holding PVC `ns/name`'s bytes, once it is Bound.
pub async fn volume_dir(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<PathBuf> {
    let handle = wait_bound(client, ns, name, timeout).await?;
    let dir = state_dir()?.join("volumes").join(&handle);
    anyhow::ensure!(
        dir.is_dir(),
        "volume {handle} has no directory {}",
        dir.display()
    );
    Ok(dir)
}

/// Waits until VolumeSnapshot `ns/name` is readyToUse and returns the driver's archive of it.
pub async fn wait_snapshot_ready(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<PathBuf> {
    let snaps = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &snapshot_resource());
    let contents = Api::<DynamicObject>::all_with(client.clone(), &snapshot_content_resource());
    let handle = wait_for(
        &format!("VolumeSnapshot {ns}/{name} to be readyToUse"),
        timeout,
        || {
            let (snaps, contents) = (snaps.clone(), contents.clone());
            async move {
                let s = snaps.get(name).await.map_err(|e| e.to_string())?;
                let status = &s.data["status"];
                if status["readyToUse"] != Value::Bool(true) {
                    return Err(format!("status {status}"));
                }
                let content = status["boundVolumeSnapshotContentName"]
                    .as_str()
                    .ok_or("no content bound")?;
                let c = contents.get(content).await.map_err(|e| e.to_string())?;
                c.data["status"]["snapshotHandle"]
                    .as_str()
                    .map(|h| Some(h.to_string()))
                    .ok_or_else(|| format!("content {content} has no snapshotHandle"))
            }
        },
    )
    .await?;
    Ok(state_dir()?
        .join("snapshots")
        .join(format!("{handle}.tar.gz")))
}

/// The messages of the events about PVC `ns/name` with `reason`.
pub async fn pvc_events(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Result<Vec<String>> {
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name}"
        )))
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect())
}
