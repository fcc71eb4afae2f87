//! Drains that really drain: `kubectl drain` of a kwok node goes through the eviction API, so
//! the disruption budgets are really consulted. With Rampart's budget the drain completes and
//! never has more than `maxUnavailable` of the workload down at once (watched pod by pod); with
//! a team's zero-disruption budget it blocks, and the profile's DrainBlocked names that budget.
//!
//! The workloads are shaped as their charts install them (`rampart_e2e::apps`): StatefulSets
//! whose pods each hold a claimed volume (the drain moves them, volume and all, to the other
//! node), init containers, ephemeral-storage requests, a Secret read three ways, the chart's
//! own NetworkPolicy and HPA, and, where a test needs the team's budget, the chart's PDB.
//!
//! Tests share the control plane, so each drains only fake nodes of its own: tainted, so no
//! other test's pods land there, and deleted at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart_e2e::apps::{self, App};
use rampart_e2e::{
    cleanup_from_drop, client, csi, delete_profile_and_wait, kubeconfig_path, unique_id, wait_for,
    OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(90);
const NODE_LABEL: &str = "e2e.rampart.dev/drain";

fn kubectl_bin() -> PathBuf {
    let cache = std::env::var_os("RAMPART_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/rampart")
        });
    cache.join("k8s-v1.37.2/bin/kubectl")
}

/// Runs kubectl against the local plane: (success, stdout and stderr).
fn kubectl(args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(kubectl_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .context("running kubectl (built by e2e/tools/build.sh)")?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Fake nodes of one test, managed by kwok, tainted for that test and deleted on drop.
struct OwnNodes {
    names: Vec<String>,
}

impl OwnNodes {
    /// Nodes `e2e-<run>-<suffix>`, labelled and tainted with `run`; those named in `cordoned`
    /// start unschedulable. Each reports ephemeral-storage and gets its CSINode, as a real
    /// node's kubelet does, so pods with claimed volumes and storage requests land there.
    async fn create(
        client: &Client,
        run: &str,
        suffixes: &[&str],
        cordoned: &[&str],
    ) -> Result<Self> {
        let api = Api::<Node>::all(client.clone());
        let mut nodes = Self { names: Vec::new() };
        for s in suffixes {
            let name = format!("e2e-{run}-{s}");
            let node: Node = serde_json::from_value(json!({
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", NODE_LABEL: run}
                },
                "spec": {
                    "unschedulable": cordoned.contains(s),
                    "taints": [{"key": NODE_LABEL, "value": run, "effect": "NoSchedule"}]
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "64Gi", "ephemeral-storage": "100Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "64Gi", "ephemeral-storage": "100Gi", "pods": "110"}
                }
            }))?;
            api.create(&PostParams::default(), &node)
                .await
                .with_context(|| format!("creating node {name}"))?;
            nodes.names.push(name.clone());
            csi::register_on_node(client, &name).await?;
        }
        for name in &nodes.names {
            wait_for(&format!("kwok to make node {name} Ready"), CONVERGE, || {
                let api = api.clone();
                async move {
                    let n = api.get(name).await.map_err(|e| e.to_string())?;
                    let ready = n
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    Ok(ready.then_some(()))
                }
            })
            .await?;
        }
        Ok(nodes)
    }

    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for OwnNodes {
    fn drop(&mut self) {
        let names = self.names.clone();
        cleanup_from_drop(move |client| async move {
            let api = Api::<Node>::all(client);
            for n in names {
                let _ = api.delete(&n, &DeleteParams::background()).await;
            }
        });
    }
}

/// One test's corner: a namespace selected by its own profile, its own operator and nodes.
struct Fixture {
    client: Client,
    run: String,
    tag: String,
    ns: TestNamespace,
}

impl Fixture {
    async fn new(prefix: &str) -> Result<Self> {
        let client = client().await?;
        let id = unique_id();
        let run = format!("{prefix}-{id}");
        let ns = TestNamespace::create_named(
            &client,
            &format!("e2e-{run}"),
            &[("e2e.rampart.dev/run", &run)],
        )
        .await?;
        Ok(Self {
            client,
            tag: format!("drain-{id}"),
            run,
            ns,
        })
    }

    fn profile(&self, name: &str) -> Value {
        json!({
            "apiVersion": "rampart.dev/v1alpha1",
            "kind": "HardeningProfile",
            "metadata": {"name": name, "labels": {DEDICATED_LABEL: self.tag}},
            "spec": {
                "mode": "Enforce",
                "namespaceSelector": {"matchLabels": {"e2e.rampart.dev/run": self.run}},
                "podDisruptionBudgets": {"minReplicas": 2, "maxUnavailable": 1}
            }
        })
    }

    async fn apply_profile(&self, name: &str) -> Result<()> {
        Api::<HardeningProfile>::all(self.client.clone())
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(self.profile(name)),
            )
            .await
            .with_context(|| format!("applying profile {name}"))?;
        Ok(())
    }

    /// Waits until condition `type_` has `status`; the profile as it was then.
    async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
    ) -> Result<HardeningProfile> {
        rampart_e2e::wait_condition(&self.client, name, type_, status, CONVERGE).await
    }

    /// An app as its chart shapes it, reading its Secret `<name>-credentials`, whose pods run
    /// only on this test's nodes.
    fn app(&self, name: &str, replicas: i32) -> App {
        App::new(name, replicas)
            .reading_secret(&format!("{name}-credentials"), "password")
            .with_pod_extra(json!({
                "nodeSelector": {NODE_LABEL: self.run},
                "tolerations": [{"key": NODE_LABEL, "operator": "Equal", "value": self.run, "effect": "NoSchedule"}],
                "terminationGracePeriodSeconds": 1
            }))
    }

    /// Installs `app`'s Secret and its release (`objs`, from [`App::stateful_release`] or
    /// [`App::deployment_release`]).
    async fn install(&self, app: &App, objs: Vec<Value>) -> Result<()> {
        let mut all = vec![apps::secret(
            &format!("{}-credentials", app.name),
            &[("password", "initial")],
        )];
        all.extend(objs);
        apps::create_all(&self.client, &self.ns.name, &all).await
    }

    /// Creates `budget` (an app's own PDB) in the test's namespace.
    async fn create_budget(&self, budget: Value) -> Result<()> {
        apps::create_all(&self.client, &self.ns.name, &[budget]).await
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    fn budgets(&self) -> Api<PodDisruptionBudget> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// Waits until `count` pods of `app` are Ready, none terminating, all on `node`.
    async fn wait_pods_on(&self, app: &str, count: usize, node: &str) -> Result<()> {
        let api = self.pods();
        let lp = ListParams::default().labels(&format!("app={app}"));
        wait_for(
            &format!("{count} ready pods of {app} on {node}"),
            CONVERGE,
            || {
                let (api, lp) = (api.clone(), lp.clone());
                async move {
                    let pods = api.list(&lp).await.map_err(|e| e.to_string())?.items;
                    let placed: Vec<(String, Option<String>, bool)> = pods
                        .iter()
                        .map(|p| {
                            (
                                p.name_any(),
                                p.spec.as_ref().and_then(|s| s.node_name.clone()),
                                available(p),
                            )
                        })
                        .collect();
                    let good = placed.len() == count
                        && placed
                            .iter()
                            .all(|(_, n, ok)| *ok && n.as_deref() == Some(node));
                    if good {
                        Ok(Some(()))
                    } else {
                        Err(format!("{placed:?}"))
                    }
                }
            },
        )
        .await
    }

    /// Waits until the disruption controller has looked at `name` and counts `healthy` pods.
    async fn wait_budget(&self, name: &str, healthy: i32, allowed: i32) -> Result<()> {
        let api = self.budgets();
        wait_for(
            &format!("budget {name} to see {healthy} healthy pods, {allowed} disruptions allowed"),
            CONVERGE,
            || {
                let api = api.clone();
                async move {
                    let b = api
                        .get_opt(name)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or("no such budget")?;
                    let generation = b.metadata.generation;
                    let s = b.status.ok_or("no status")?;
                    if s.observed_generation == generation
                        && s.current_healthy == Some(healthy)
                        && s.expected_pods == Some(healthy)
                        && s.disruptions_allowed == Some(allowed)
                    {
                        Ok(Some(()))
                    } else {
                        Err(format!("{s:?}"))
                    }
                }
            },
        )
        .await
    }

    async fn budget_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .budgets()
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|b| b.name_any())
            .collect();
        names.sort();
        Ok(names)
    }
}

/// Ready and not on its way out.
fn available(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What a watch of one workload's pods saw.
#[derive(Debug, Default)]
struct Observed {
    pods: BTreeMap<String, bool>,
    max_unavailable: usize,
    evicted: usize,
    /// Each pod name taken down, with how often: a StatefulSet's replacement keeps the name,
    /// and one placed back on the node before the scheduler saw the cordon is evicted again.
    evicted_names: BTreeMap<String, usize>,
}

/// Watches `app`'s pods from the current state on, recording after every event how many of
/// `replicas` are unavailable (missing, not Ready, or terminating).
async fn watch_unavailability(
    api: Api<Pod>,
    app: &str,
    replicas: usize,
) -> Result<(Arc<Mutex<Observed>>, tokio::task::JoinHandle<()>)> {
    let lp = ListParams::default().labels(&format!("app={app}"));
    let list = api.list(&lp).await?;
    let observed = Arc::new(Mutex::new(Observed::default()));
    {
        let mut o = observed.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for p in &list.items {
            o.pods.insert(p.name_any(), available(p));
        }
        let up = o.pods.values().filter(|a| **a).count();
        ensure!(
            up == replicas,
            "the drain must start from {replicas} available pods, saw {:?}",
            o.pods
        );
    }
    let rv = list.metadata.resource_version.unwrap_or_default();
    let wp = WatchParams::default()
        .labels(&format!("app={app}"))
        .timeout(290);
    let o = observed.clone();
    let handle = tokio::spawn(async move {
        let Ok(stream) = api.watch(&wp, &rv).await else {
            return;
        };
        let mut stream = stream.boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            let Ok(mut o) = o.lock() else { return };
            match event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    let was = o.pods.insert(p.name_any(), available(&p));
                    if was == Some(true) && p.metadata.deletion_timestamp.is_some() {
                        o.evicted += 1;
                        *o.evicted_names.entry(p.name_any()).or_default() += 1;
                    }
                }
                // Gone without being seen terminating: still one eviction.
                WatchEvent::Deleted(p) => {
                    let was = o.pods.remove(&p.name_any());
                    if was == Some(true) {
                        o.evicted += 1;
                        *o.evicted_names.entry(p.name_any()).or_default() += 1;
                    }
                }
                _ => {}
            }
            let up = o.pods.values().filter(|a| **a).count();
            o.max_unavailable = o.max_unavailable.max(replicas.saturating_sub(up));
        }
    });
    Ok((observed, handle))
}

#[tokio::test]
async fn drain_with_rampart_budget_completes_one_pod_at_a_time() -> Result<()> {
    const REPLICAS: usize = 4;
    let f = Fixture::new("drn").await?;
    // b starts cordoned so every replica lands on a, then takes them in.
    let nodes = OwnNodes::create(&f.client, &f.run, &["a", "b"], &["b"]).await?;
    let (a, b) = (nodes.name(0).to_string(), nodes.name(1).to_string());
    let _op = OperatorProcess::start(&f.tag).await?;
    let web = f.app("web", REPLICAS as i32);
    f.install(&web, web.stateful_release()).await?;
    f.wait_pods_on("web", REPLICAS, &a).await?;
    let name = format!("drain-{}", unique_id());
    f.apply_profile(&name).await?;
    f.wait_condition(&name, "Ready", "True").await?;
    f.wait_condition(&name, "DrainBlocked", "False").await?;
    f.wait_budget("rampart-sts-web", REPLICAS as i32, 1).await?;
    let (ok, out) = kubectl(&["uncordon", &b])?;
    ensure!(ok, "uncordon {b}: {out}");

    let (observed, watch) = watch_unavailability(f.pods(), "web", REPLICAS).await?;
    let (ok, out) = kubectl(&[
        "drain",
        &a,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=180s",
    ])?;
    ensure!(ok, "kubectl drain {a} failed:\n{out}");
    f.wait_pods_on("web", REPLICAS, &b).await?;
    // The watch may trail the list just read; wait until it too has seen every pod back.
    let o = wait_for("the watch to see every pod back", CONVERGE, || {
        let o = observed.clone();
        async move {
            let o = o.lock().map_err(|_| "poisoned".to_string())?;
            let up = o.pods.values().filter(|a| **a).count();
            if up == REPLICAS && o.pods.len() == REPLICAS {
                Ok(Some((o.max_unavailable, o.evicted_names.clone())))
            } else {
                Err(format!("{o:?}"))
            }
        }
    })
    .await;
    watch.abort();
    let (max_unavailable, evicted) = o?;
    // Every pod that was on the node was taken down. (Seen on fresh planes: one name taken
    // down twice, its replacement having landed on the node before the cordon reached the
    // scheduler; the budget's promise below is what this test is about.)
    assert_eq!(
        evicted.len(),
        REPLICAS,
        "every pod on {a} was evicted: {evicted:?}; drain said:\n{out}"
    );
    assert_eq!(
        max_unavailable, 1,
        "at most maxUnavailable (1) down at once, and the drain did take pods down; drain said:\n{out}"
    );
    let on_a = f
        .pods()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(a.as_str()))
        .count();
    assert_eq!(on_a, 0, "nothing left on the drained node");
    delete_profile_and_wait(&f.client, &name).await?;
    delete_pods_then_nodes(&f, nodes).await
}

#[tokio::test]
async fn drain_blocked_by_a_zero_budget_and_drain_blocked_names_it() -> Result<()> {
    const REPLICAS: usize = 3;
    let f = Fixture::new("drnb").await?;
    let nodes = OwnNodes::create(&f.client, &f.run, &["a", "b"], &["b"]).await?;
    let (a, b) = (nodes.name(0).to_string(), nodes.name(1).to_string());
    let _op = OperatorProcess::start(&f.tag).await?;
    let ledger = f.app("ledger", REPLICAS as i32);
    f.install(&ledger, ledger.stateful_release()).await?;
    f.wait_pods_on("ledger", REPLICAS, &a).await?;
    f.create_budget(ledger.pdb("team-ledger-frozen", json!({"maxUnavailable": 0})))
        .await?;
    let name = format!("drainb-{}", unique_id());
    f.apply_profile(&name).await?;
    let (ok, out) = kubectl(&["uncordon", &b])?;
    ensure!(ok, "uncordon {b}: {out}");
    assert_drain_blocked_by(&f, &name, "team-ledger-frozen", "ledger", REPLICAS, &a).await?;

    // The team lifts its budget: Rampart's returns and drains are allowed again.
    f.budgets()
        .delete("team-ledger-frozen", &DeleteParams::default())
        .await?;
    f.wait_condition(&name, "DrainBlocked", "False").await?;
    f.wait_budget("rampart-sts-ledger", REPLICAS as i32, 1)
        .await?;
    let (ok, out) = kubectl(&[
        "drain",
        &a,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=180s",
    ])?;
    ensure!(
        ok,
        "once unblocked, kubectl drain {a} must complete:\n{out}"
    );
    f.wait_pods_on("ledger", REPLICAS, &b).await?;
    delete_profile_and_wait(&f.client, &name).await?;
    delete_pods_then_nodes(&f, nodes).await
}

/// A team's budget that allows no disruption of `app`: DrainBlocked names it, Rampart's own
/// budget steps aside (two budgets on a pod break eviction), and `kubectl drain` of `node`
/// fails on eviction without taking a single pod.
async fn assert_drain_blocked_by(
    f: &Fixture,
    profile: &str,
    budget: &str,
    app: &str,
    replicas: usize,
    node: &str,
) -> Result<()> {
    let p = f.wait_condition(profile, "DrainBlocked", "True").await?;
    let cond = p
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "DrainBlocked")
                .cloned()
        })
        .context("DrainBlocked")?;
    let qualified = format!("{}/{budget}", f.ns.name);
    assert!(
        cond.message.contains(&qualified),
        "DrainBlocked must name {qualified}: {cond:?}"
    );
    assert_eq!(cond.reason, "BudgetAllowsNoDisruption");
    let listed = p
        .status
        .as_ref()
        .map(|s| s.drain_blocking_budgets.clone())
        .unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|r| r.namespace == f.ns.name && r.name == budget),
        "status.drainBlockingBudgets must list {qualified}: {listed:?}"
    );
    wait_for("only the team's budget", CONVERGE, || async {
        let names = f.budget_names().await.map_err(|e| e.to_string())?;
        if names == [budget] {
            Ok(Some(()))
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await?;
    f.wait_budget(budget, replicas as i32, 0).await?;

    let (observed, watch) = watch_unavailability(f.pods(), app, replicas).await?;
    let (ok, out) = kubectl(&[
        "drain",
        node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=20s",
    ])?;
    watch.abort();
    assert!(!ok, "the drain must not complete past {qualified}:\n{out}");
    assert!(
        out.contains("disruption budget"),
        "the drain must fail on eviction:\n{out}"
    );
    {
        let o = observed.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        assert_eq!(
            (o.evicted, o.max_unavailable),
            (0, 0),
            "no pod may go: {o:?}"
        );
    }
    f.wait_pods_on(app, replicas, node).await
}

/// The budget most teams get wrong: `minAvailable` equal to the replica count. Only the
/// disruption controller's status shows it allows nothing, and DrainBlocked must still name it.
#[tokio::test]
async fn drain_blocked_by_min_available_equal_to_replicas_is_named_too() -> Result<()> {
    const REPLICAS: usize = 2;
    let f = Fixture::new("drnm").await?;
    let nodes = OwnNodes::create(&f.client, &f.run, &["a"], &[]).await?;
    let a = nodes.name(0).to_string();
    let _op = OperatorProcess::start(&f.tag).await?;
    let cache = f.app("cache", REPLICAS as i32);
    f.install(&cache, cache.deployment_release()).await?;
    f.wait_pods_on("cache", REPLICAS, &a).await?;
    f.create_budget(cache.pdb("team-cache-all", json!({"minAvailable": REPLICAS})))
        .await?;
    let name = format!("drainm-{}", unique_id());
    f.apply_profile(&name).await?;
    assert_drain_blocked_by(&f, &name, "team-cache-all", "cache", REPLICAS, &a).await?;
    delete_profile_and_wait(&f.client, &name).await?;
    delete_pods_then_nodes(&f, nodes).await
}

/// Pods on a deleted fake node would wait for the pod garbage collector, so the workloads go
/// first, then the nodes (their CSINodes go with them, owned as they are).
async fn delete_pods_then_nodes(f: &Fixture, nodes: OwnNodes) -> Result<()> {
    let deployments = Api::<Deployment>::namespaced(f.client.clone(), &f.ns.name);
    for d in deployments.list(&ListParams::default()).await?.items {
        deployments
            .delete(&d.name_any(), &DeleteParams::foreground())
            .await?;
    }
    let statefulsets = Api::<StatefulSet>::namespaced(f.client.clone(), &f.ns.name);
    for s in statefulsets.list(&ListParams::default()).await?.items {
        statefulsets
            .delete(&s.name_any(), &DeleteParams::foreground())
            .await?;
    }
    let pods = f.pods();
    wait_for("the test's pods to be gone", CONVERGE, || {
        let pods = pods.clone();
        async move {
            let left = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if left == 0 {
                Ok(Some(()))
            } else {
                Err(format!("{left} pods left"))
            }
        }
    })
    .await?;
    drop(nodes);
    Ok(())
}
