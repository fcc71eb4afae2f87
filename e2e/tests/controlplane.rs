//! Smoke tests that prove the local control plane is a real one: version, CRD validation with
//! CEL, server-side apply, garbage collection, scheduling onto kwok nodes, namespace deletion
//! and the CSI stack (our hostpath driver, csi-provisioner, csi-snapshotter,
//! snapshot-controller): PVCs bind, snapshots are cut, restores hold the same bytes and a
//! corrupted archive is refused. And what makes it a managed cluster in miniature: the
//! default class waits for a PVC's first consumer, and a chart-shaped StatefulSet (claim
//! templates, ephemeral-storage requests) gets Running pods on Bound volumes.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, ResourceExt};
use rampart_e2e::apps::{create_all, secret, App};
use rampart_e2e::{client, csi, seen, unique_id, wait_for, wait_until, TestNamespace};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn version_is_the_pinned_kubernetes_release() -> Result<()> {
    let c = client().await?;
    let v = c.apiserver_version().await?;
    assert_eq!(v.git_version, "v1.37.2", "kube-apiserver reports {v:?}");
    Ok(())
}

#[tokio::test]
async fn crd_cel_rule_rejects_bad_object_with_the_servers_message() -> Result<()> {
    let c = client().await?;
    let id = unique_id();
    let plural = format!("gadgets{id}");
    let kind = format!("Gadget{id}");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.e2e.rampart.dev")},
        "spec": {
            "group": "e2e.rampart.dev",
            "names": {"plural": plural, "kind": kind, "singular": format!("gadget{id}")},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                        "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}]
                    }}
                }}
            }]
        }
    }))?;
    let crds = Api::<CustomResourceDefinition>::all(c.clone());
    crds.create(&PostParams::default(), &crd).await?;
    let name = crd.name_any();
    wait_until("the CRD to be Established", TIMEOUT, || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            let got = crds.get(&name).await;
            let established = got
                .as_ref()
                .ok()
                .and_then(|c| c.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            (established, format!("{:?}", got.map(|c| c.status)))
        }
    })
    .await?;

    let ns = TestNamespace::create(&c, "cel", &[]).await?;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("e2e.rampart.dev", "v1", &kind),
        &plural,
    );
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns.name, &ar);
    let obj = |min: i64, max: i64| -> Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "e2e.rampart.dev/v1", "kind": kind,
            "metadata": {"name": format!("g{min}{max}")},
            "spec": {"min": min, "max": max}
        }))?)
    };
    // The discovery of a new CRD can lag its Established condition by a moment.
    wait_for("the new resource to be served", TIMEOUT, || {
        let api = api.clone();
        let good = obj(1, 2);
        async move {
            let good = good.map_err(|e| e.to_string())?;
            match api.create(&PostParams::default(), &good).await {
                Ok(_) => Ok(Some(())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await?;
    let err = api
        .create(&PostParams::default(), &obj(5, 1)?)
        .await
        .expect_err("the API server must refuse min > max");
    let msg = err.to_string();
    assert!(
        msg.contains("min must not exceed max"),
        "unexpected refusal: {msg}"
    );
    crds.delete(&name, &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test]
async fn server_side_apply_tracks_field_managers_and_conflicts() -> Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "ssa", &[]).await?;
    let api = Api::<ConfigMap>::namespaced(c.clone(), &ns.name);
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"key": v}});
    api.patch(
        "shared",
        &PatchParams::apply("e2e-first"),
        &Patch::Apply(cm("one")),
    )
    .await?;
    let err = api
        .patch(
            "shared",
            &PatchParams::apply("e2e-second"),
            &Patch::Apply(cm("two")),
        )
        .await
        .expect_err("a second manager changing an owned field must conflict without force");
    assert!(
        err.to_string().contains("conflict"),
        "expected a conflict, got {err}"
    );
    let got = api
        .patch(
            "shared",
            &PatchParams::apply("e2e-second").force(),
            &Patch::Apply(cm("two")),
        )
        .await?;
    assert_eq!(
        got.data
            .as_ref()
            .and_then(|d| d.get("key"))
            .map(String::as_str),
        Some("two")
    );
    let managers: Vec<String> = got
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"e2e-second".to_string()),
        "managers: {managers:?}"
    );
    Ok(())
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() -> Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "gc", &[]).await?;
    let cms = Api::<ConfigMap>::namespaced(c.clone(), &ns.name);
    let secrets = Api::<Secret>::namespaced(c.clone(), &ns.name);
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}}))?,
        )
        .await?;
    let dependent: Secret = serde_json::from_value(json!({
        "metadata": {"name": "dependent", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid()
        }]},
        "stringData": {"k": "v"}
    }))?;
    secrets.create(&PostParams::default(), &dependent).await?;
    cms.delete("owner", &DeleteParams::background()).await?;
    wait_until(
        "the garbage collector to delete the dependent Secret",
        TIMEOUT,
        || {
            let secrets = secrets.clone();
            async move {
                let got = secrets.get_opt("dependent").await;
                (
                    matches!(got, Ok(None)),
                    format!("{:?}", got.map(|s| s.map(|s| s.name_any()))),
                )
            }
        },
    )
    .await
}

#[tokio::test]
async fn deployment_reaches_three_ready_pods_on_kwok_nodes() -> Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "deploy", &[]).await?;
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
            }
        }
    }))?;
    Api::<Deployment>::namespaced(c.clone(), &ns.name)
        .create(&PostParams::default(), &deploy)
        .await?;
    let pods = Api::<Pod>::namespaced(c.clone(), &ns.name);
    wait_until("3 Running, Ready pods", TIMEOUT, || {
        let pods = pods.clone();
        async move {
            let list = match pods.list(&ListParams::default().labels("app=web")).await {
                Ok(l) => l,
                Err(e) => return (false, e.to_string()),
            };
            let ready: Vec<_> = list
                .items
                .iter()
                .filter(|p| {
                    let st = p.status.as_ref();
                    st.and_then(|s| s.phase.as_deref()) == Some("Running")
                        && st.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                        && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                })
                .collect();
            (
                ready.len() == 3,
                seen(
                    &list
                        .items
                        .iter()
                        .map(|p| {
                            (
                                p.name_any(),
                                p.status.as_ref().and_then(|s| s.phase.clone()),
                            )
                        })
                        .collect::<Vec<_>>(),
                ),
            )
        }
    })
    .await
}

#[tokio::test]
async fn namespace_deletion_completes() -> Result<()> {
    let c = client().await?;
    let name = format!("e2e-nsdel-{}", unique_id());
    let ns = TestNamespace::create_named(&c, &name, &[]).await?;
    Api::<ConfigMap>::namespaced(c.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "content"}}))?,
        )
        .await?;
    let nss = Api::<Namespace>::all(c.clone());
    nss.delete(&name, &DeleteParams::default()).await?;
    wait_until("the namespace to be gone", TIMEOUT, || {
        let nss = nss.clone();
        let name = name.clone();
        async move {
            let got = nss.get_opt(&name).await;
            (
                matches!(got, Ok(None)),
                format!("{:?}", got.map(|n| n.and_then(|n| n.status))),
            )
        }
    })
    .await
}

/// A PVC in `ns`, optionally restored from a VolumeSnapshot. No pod mounts it, so it takes
/// the Immediate class: the test writes its bytes straight into the volume's directory.
async fn create_pvc(
    c: &kube::Client,
    ns: &str,
    name: &str,
    from_snapshot: Option<&str>,
) -> Result<()> {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"], "storageClassName": csi::IMMEDIATE_CLASS,
        "resources": {"requests": {"storage": "1Gi"}}});
    if let Some(snap) = from_snapshot {
        spec["dataSource"] =
            json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snap});
    }
    let pvc: PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?;
    Api::<PersistentVolumeClaim>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &pvc)
        .await?;
    Ok(())
}

async fn create_snapshot(c: &kube::Client, ns: &str, name: &str, pvc: &str) -> Result<()> {
    let snap: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {"volumeSnapshotClassName": "csi-snapclass", "source": {"persistentVolumeClaimName": pvc}}
    }))?;
    Api::<DynamicObject>::namespaced_with(c.clone(), ns, &csi::snapshot_resource())
        .create(&PostParams::default(), &snap)
        .await?;
    Ok(())
}

/// A volume with `bytes` in file `data.bin` and a ready snapshot `<pvc>-snap` of it; returns
/// the snapshot's archive.
async fn volume_with_ready_snapshot(
    c: &kube::Client,
    ns: &str,
    pvc: &str,
    bytes: &[u8],
) -> Result<std::path::PathBuf> {
    create_pvc(c, ns, pvc, None).await?;
    let dir = csi::volume_dir(c, ns, pvc, TIMEOUT).await?;
    std::fs::write(dir.join("data.bin"), bytes)?;
    let snap = format!("{pvc}-snap");
    create_snapshot(c, ns, &snap, pvc).await?;
    csi::wait_snapshot_ready(c, ns, &snap, TIMEOUT).await
}

#[tokio::test]
async fn csi_stack_binds_a_pvc_snapshots_it_and_restores_the_same_bytes() -> Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "csi", &[]).await?;
    let bytes: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let archive = volume_with_ready_snapshot(&c, &ns.name, "data", &bytes).await?;
    assert!(
        archive.is_file(),
        "the driver's archive {} exists",
        archive.display()
    );
    // Later writes to the source do not reach the snapshot.
    let source = csi::volume_dir(&c, &ns.name, "data", TIMEOUT).await?;
    std::fs::write(source.join("data.bin"), b"overwritten after the snapshot")?;

    create_pvc(&c, &ns.name, "restored", Some("data-snap")).await?;
    let restored = csi::volume_dir(&c, &ns.name, "restored", TIMEOUT).await?;
    assert_ne!(restored, source, "a restore is a volume of its own");
    assert_eq!(
        std::fs::read(restored.join("data.bin"))?,
        bytes,
        "the restored volume holds the snapshot's bytes"
    );
    Ok(())
}

#[tokio::test]
async fn csi_restore_from_a_corrupted_archive_fails_and_the_pvc_stays_pending() -> Result<()> {
    let c = client().await?;
    let ns = TestNamespace::create(&c, "csibad", &[]).await?;
    let archive = volume_with_ready_snapshot(&c, &ns.name, "data", b"precious").await?;
    let mut b = std::fs::read(&archive)?;
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&archive, b)?;

    create_pvc(&c, &ns.name, "restored", Some("data-snap")).await?;
    let events = wait_for(
        "a ProvisioningFailed event naming the checksum",
        TIMEOUT,
        || {
            let c = c.clone();
            let ns = ns.name.clone();
            async move {
                let ev = csi::pvc_events(&c, &ns, "restored", "ProvisioningFailed")
                    .await
                    .map_err(|e| e.to_string())?;
                if ev.iter().any(|m| m.contains("checksum mismatch")) {
                    Ok(Some(ev))
                } else {
                    Err(seen(&ev))
                }
            }
        },
    )
    .await?;
    let pvc = Api::<PersistentVolumeClaim>::namespaced(c.clone(), &ns.name)
        .get("restored")
        .await?;
    assert_eq!(
        pvc.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "a restore from a corrupted archive must not bind; events: {events:?}"
    );
    assert!(
        pvc.spec.and_then(|s| s.volume_name).is_none(),
        "no volume was bound"
    );
    Ok(())
}

#[tokio::test]
async fn default_class_waits_for_a_first_consumer_like_the_clouds_and_an_immediate_one_exists(
) -> Result<()> {
    let c = client().await?;
    let classes = Api::<StorageClass>::all(c.clone());
    let defaults: Vec<(String, Option<String>)> = classes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|sc| {
            sc.annotations()
                .get("storageclass.kubernetes.io/is-default-class")
                .map(String::as_str)
                == Some("true")
        })
        .map(|sc| (sc.name_any(), sc.volume_binding_mode))
        .collect();
    assert_eq!(
        defaults,
        [(
            csi::DEFAULT_CLASS.to_string(),
            Some("WaitForFirstConsumer".to_string())
        )],
        "one default class, binding on first consumer"
    );
    let immediate = classes.get(csi::IMMEDIATE_CLASS).await?;
    assert_eq!(
        (
            immediate.provisioner.as_str(),
            immediate.volume_binding_mode.as_deref()
        ),
        (csi::DRIVER, Some("Immediate"))
    );

    // A PVC of the default class that no pod mounts: the PV controller says it waits, and it
    // has no volume, exactly as on a managed cluster.
    let ns = TestNamespace::create(&c, "wffc", &[]).await?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "alone"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))?;
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(c.clone(), &ns.name);
    pvcs.create(&PostParams::default(), &pvc).await?;
    let events = wait_for("a WaitForFirstConsumer event on the PVC", TIMEOUT, || {
        let c = c.clone();
        let ns = ns.name.clone();
        async move {
            let ev = csi::pvc_events(&c, &ns, "alone", "WaitForFirstConsumer")
                .await
                .map_err(|e| e.to_string())?;
            Ok((!ev.is_empty()).then_some(ev))
        }
    })
    .await?;
    let got = pvcs.get("alone").await?;
    assert_eq!(
        got.spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some(csi::DEFAULT_CLASS)
    );
    assert_eq!(
        got.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "no consumer, no volume; events: {events:?}"
    );
    assert!(got.spec.and_then(|s| s.volume_name).is_none());
    Ok(())
}

/// What a chart like Bitnami's PostgreSQL installs: a StatefulSet whose pods each claim a
/// volume of the default class, request ephemeral storage, and read a Secret. On a managed
/// cluster the scheduler picks a node, csi-provisioner makes the volume for it, and the pods
/// run; before the fake nodes had a CSINode and ephemeral-storage capacity they stayed
/// Pending here.
#[tokio::test]
async fn statefulset_with_claim_templates_and_ephemeral_storage_runs_on_bound_volumes() -> Result<()>
{
    const REPLICAS: usize = 2;
    let c = client().await?;
    let ns = TestNamespace::create(&c, "sts", &[]).await?;
    let app = App::new("db", REPLICAS as i32).reading_secret("db-credentials", "password");
    let mut objs = vec![secret("db-credentials", &[("password", "s3cret")])];
    objs.extend(app.stateful_release());
    create_all(&c, &ns.name, &objs).await?;

    let pods = Api::<Pod>::namespaced(c.clone(), &ns.name);
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(c.clone(), &ns.name);
    // (pod, node, PVC phase, class, the node the PVC was provisioned for)
    type Placed = (String, String, String, String, String);
    let placed: Vec<Placed> = wait_for(
        "every pod Running and Ready on a Bound claim",
        Duration::from_secs(180),
        || {
            let (pods, pvcs) = (pods.clone(), pvcs.clone());
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=db"))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                let mut seen_so_far = Vec::new();
                for p in &list.items {
                    let st = p.status.as_ref();
                    let phase = st.and_then(|s| s.phase.clone()).unwrap_or_default();
                    let ready = st.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                        cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                    let why = st
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
                        .and_then(|c| c.message.clone())
                        .unwrap_or_default();
                    let node = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default();
                    let claim = format!("data-{}", p.name_any());
                    let pvc = pvcs.get_opt(&claim).await.map_err(|e| e.to_string())?;
                    let pvc_phase = pvc
                        .as_ref()
                        .and_then(|v| v.status.as_ref())
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default();
                    seen_so_far.push(format!(
                        "{} {phase} ready={ready} node={node:?} {why} pvc {claim}: {pvc_phase:?}",
                        p.name_any()
                    ));
                    if phase == "Running" && ready && !node.is_empty() && pvc_phase == "Bound" {
                        let pvc = pvc.as_ref();
                        out.push((
                            p.name_any(),
                            node,
                            pvc_phase,
                            pvc.and_then(|v| v.spec.as_ref())
                                .and_then(|s| s.storage_class_name.clone())
                                .unwrap_or_default(),
                            pvc.and_then(|v| {
                                v.annotations()
                                    .get("volume.kubernetes.io/selected-node")
                                    .cloned()
                            })
                            .unwrap_or_default(),
                        ));
                    }
                }
                if out.len() == REPLICAS {
                    Ok(Some(out))
                } else {
                    Err(seen(&seen_so_far))
                }
            }
        },
    )
    .await?;
    for (pod, node, _, class, selected) in &placed {
        assert_eq!(
            class,
            csi::DEFAULT_CLASS,
            "{pod}'s claim took the default class"
        );
        assert_eq!(
            selected, node,
            "{pod}'s volume was provisioned for the node the scheduler picked"
        );
    }
    // Each claim is a volume of the driver's own.
    for (pod, ..) in &placed {
        csi::volume_dir(&c, &ns.name, &format!("data-{pod}"), TIMEOUT).await?;
    }
    Ok(())
}
