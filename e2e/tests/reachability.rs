//! What Rampart's NetworkPolicies mean, checked by an independent engine. cyclonus
//! (`analyze --mode parse,probe`) reads the policies from the API server and simulates a probe
//! between the estate's pods on each port and protocol; kwok has no pod network, so no traffic
//! is sent. Its table must equal what the profile says, computed here from the profile's fields
//! by a small pure function (`Intent::allows`), and must follow profile changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use rampart::api::HardeningProfile;
use rampart_e2e::{
    client, delete_profile_and_wait, kubeconfig_path, repo_root, unique_id, wait_for,
    OperatorProcess, TestNamespace, DEDICATED_LABEL,
};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(90);
const RUN_LABEL: &str = "e2e.rampart.dev/run";

// ---------------------------------------------------------------------------------------------
// The expectation: a pure function of the profile's fields and the estate's labels.
// ---------------------------------------------------------------------------------------------

/// One probe: a destination port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Probe {
    port: i32,
    protocol: &'static str,
}

const APP_PORT: i32 = 8080;
const MONITORING_PORTS: [i32; 2] = [9090, 9187];
/// Every pod serves all of these, so every cell of every table is a real verdict.
const PROBES: [Probe; 6] = [
    Probe {
        port: APP_PORT,
        protocol: "TCP",
    },
    Probe {
        port: MONITORING_PORTS[0],
        protocol: "TCP",
    },
    Probe {
        port: MONITORING_PORTS[1],
        protocol: "TCP",
    },
    Probe {
        port: MONITORING_PORTS[0],
        protocol: "UDP",
    },
    Probe {
        port: 53,
        protocol: "TCP",
    },
    Probe {
        port: 53,
        protocol: "UDP",
    },
];

/// A pod as both sides see it: its namespace (with that namespace's labels) and its labels.
#[derive(Clone, Debug)]
struct Endpoint {
    namespace: String,
    namespace_labels: BTreeMap<String, String>,
    name: String,
    labels: BTreeMap<String, String>,
}

impl Endpoint {
    /// cyclonus's key for a pod.
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

/// A team's own allow policy: pods labelled `app=<pod_app>` in `namespace` may receive from
/// (Ingress) or send to (Egress) any pod in `peer_namespace` on one port.
#[derive(Clone, Debug)]
struct UserAllow {
    name: &'static str,
    namespace: String,
    pod_app: &'static str,
    direction: Direction,
    peer_namespace: String,
    probe: Probe,
}

impl UserAllow {
    fn manifest(&self) -> Value {
        let peer = json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.peer_namespace}}}]);
        let ports = json!([{"port": self.probe.port, "protocol": self.probe.protocol}]);
        let selector = json!({"matchLabels": {"app": self.pod_app}});
        let spec = match self.direction {
            Direction::Ingress => json!({"podSelector": selector, "policyTypes": ["Ingress"],
                "ingress": [{"from": peer, "ports": ports}]}),
            Direction::Egress => json!({"podSelector": selector, "policyTypes": ["Egress"],
                "egress": [{"to": peer, "ports": ports}]}),
        };
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec
        })
    }

    /// Whether this policy selects `pod` for `direction`.
    fn isolates(&self, pod: &Endpoint, direction: Direction) -> bool {
        self.direction == direction
            && pod.namespace == self.namespace
            && pod.labels.get("app").map(String::as_str) == Some(self.pod_app)
    }

    /// Whether it lets `pod` talk with `peer` in its direction on `probe`.
    fn allows(&self, pod: &Endpoint, peer: &Endpoint, direction: Direction, probe: Probe) -> bool {
        self.isolates(pod, direction)
            && peer.namespace == self.peer_namespace
            && probe == self.probe
    }
}

/// What the profile says about the network, read from its JSON with the documented defaults.
#[derive(Clone, Debug)]
struct Intent {
    select_labels: BTreeMap<String, String>,
    select_names: BTreeSet<String>,
    deny_ingress: bool,
    deny_egress: bool,
    same_namespace: bool,
    dns: bool,
    dns_namespace: String,
    dns_pod_labels: BTreeMap<String, String>,
    allowed_namespaces: BTreeSet<String>,
    monitoring: Option<(String, BTreeSet<i32>)>,
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn string_set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Intent {
    fn from_profile(profile: &Value) -> Result<Self> {
        let spec = &profile["spec"];
        ensure!(
            spec["namespaceSelector"]["matchExpressions"].is_null(),
            "this expectation reads matchLabels and namespaces only"
        );
        let np = &spec["networkPolicies"];
        ensure!(np.is_object(), "the profile has no networkPolicies");
        let flag = |v: &Value, default: bool| v.as_bool().unwrap_or(default);
        let dns_labels = match string_map(&np["dns"]["podLabels"]) {
            m if m.is_empty() => BTreeMap::from([("k8s-app".into(), "kube-dns".into())]),
            m => m,
        };
        let monitoring = np["monitoring"].as_object().map(|m| {
            let ports = m["ports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_i64())
                        .map(|p| p as i32)
                        .collect()
                })
                .unwrap_or_default();
            (
                m["namespace"].as_str().unwrap_or_default().to_string(),
                ports,
            )
        });
        Ok(Self {
            select_labels: string_map(&spec["namespaceSelector"]["matchLabels"]),
            select_names: string_set(&spec["namespaces"]),
            deny_ingress: flag(&np["defaultDeny"]["ingress"], true),
            deny_egress: flag(&np["defaultDeny"]["egress"], true),
            same_namespace: flag(&np["allowSameNamespace"], true),
            dns: flag(&np["allowDNS"], true),
            dns_namespace: np["dns"]["namespace"]
                .as_str()
                .unwrap_or("kube-system")
                .to_string(),
            dns_pod_labels: dns_labels,
            allowed_namespaces: string_set(&np["allowedNamespaces"]),
            monitoring,
        })
    }

    fn selects(&self, ep: &Endpoint) -> bool {
        let by_labels = !self.select_labels.is_empty()
            && self
                .select_labels
                .iter()
                .all(|(k, v)| ep.namespace_labels.get(k) == Some(v));
        let excluded =
            ep.namespace.starts_with("kube-") && !self.select_names.contains(&ep.namespace);
        (by_labels && !excluded) || self.select_names.contains(&ep.namespace)
    }

    /// Whether `from` may open a connection to `to` on `probe`: the source's egress and the
    /// destination's ingress must both allow it. Policies are additive: a direction is open
    /// unless some policy isolates it, and then open to what any policy allows.
    fn allows(&self, users: &[UserAllow], from: &Endpoint, to: &Endpoint, probe: Probe) -> bool {
        let egress_by_profile = self.selects(from) && self.deny_egress;
        let egress_isolated =
            egress_by_profile || users.iter().any(|u| u.isolates(from, Direction::Egress));
        let egress = !egress_isolated
            || users
                .iter()
                .any(|u| u.allows(from, to, Direction::Egress, probe))
            || (egress_by_profile && self.profile_egress(from, to, probe));

        let ingress_by_profile = self.selects(to) && self.deny_ingress;
        let ingress_isolated =
            ingress_by_profile || users.iter().any(|u| u.isolates(to, Direction::Ingress));
        let ingress = !ingress_isolated
            || users
                .iter()
                .any(|u| u.allows(to, from, Direction::Ingress, probe))
            || (ingress_by_profile && self.profile_ingress(from, to, probe));
        egress && ingress
    }

    /// What the profile lets a pod it hardens send.
    fn profile_egress(&self, from: &Endpoint, to: &Endpoint, probe: Probe) -> bool {
        let same = self.same_namespace && from.namespace == to.namespace;
        let dns = self.dns
            && probe.port == 53
            && matches!(probe.protocol, "UDP" | "TCP")
            && to.namespace == self.dns_namespace
            && self
                .dns_pod_labels
                .iter()
                .all(|(k, v)| to.labels.get(k) == Some(v));
        // `allowedNamespaces` says whose pods may connect in; when the sender is itself
        // hardened, that connection is still one the profile grants.
        let admitted = self.selects(to) && self.allowed_namespaces.contains(&from.namespace);
        same || dns || admitted
    }

    /// What the profile lets a pod it hardens receive.
    fn profile_ingress(&self, from: &Endpoint, to: &Endpoint, probe: Probe) -> bool {
        let same = self.same_namespace && from.namespace == to.namespace;
        let named = self.allowed_namespaces.contains(&from.namespace);
        let monitoring = self.monitoring.as_ref().is_some_and(|(ns, ports)| {
            &from.namespace == ns && probe.protocol == "TCP" && ports.contains(&probe.port)
        });
        same || named || monitoring
    }
}

// ---------------------------------------------------------------------------------------------
// cyclonus: the probe file we give it and the tables it prints.
// ---------------------------------------------------------------------------------------------

/// One simulated probe's verdicts, keyed by (from, to) pod key; `true` is allowed.
#[derive(Debug, Default)]
struct Verdicts {
    pods: Vec<String>,
    cells: BTreeMap<(String, String), bool>,
}

/// What one `cyclonus analyze --mode parse,probe` run printed.
#[derive(Debug)]
struct CyclonusRun {
    /// `namespace/name` of every policy it read.
    policies: BTreeSet<String>,
    /// The Combined table of each probe in the probe file, in order.
    combined: Vec<Verdicts>,
}

/// Rows of the text tables (`| a | b |`) in `lines`, as trimmed cells.
fn table_rows<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<Vec<String>> {
    lines
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            let inner = l.trim().trim_start_matches('|').trim_end_matches('|');
            inner.split('|').map(|c| c.trim().to_string()).collect()
        })
        .collect()
}

/// Reads a run's stdout: the parse table's policy column, then, after `probe:`, each probe's
/// Ingress, Egress and Combined tables. cyclonus prints one more probe set after those of the
/// probe file (the pods it read itself, without their namespaces' labels); it is ignored.
fn parse_cyclonus(stdout: &str, probes: usize) -> Result<CyclonusRun> {
    let (parsed, probed) = stdout
        .split_once("\nprobe:\n")
        .ok_or_else(|| anyhow!("no probe section in cyclonus output:\n{stdout}"))?;
    let policies = table_rows(parsed.lines())
        .into_iter()
        .filter_map(|row| row.into_iter().next())
        .filter(|first| !first.is_empty() && first != "POLICY")
        .collect();

    let mut combined = Vec::new();
    let mut lines = probed.lines().peekable();
    while let Some(line) = lines.next() {
        if line != "Combined:" {
            continue;
        }
        let mut table = Vec::new();
        while let Some(l) = lines.next_if(|l| l.starts_with('|') || l.starts_with('+')) {
            table.push(l);
        }
        let rows = table_rows(table.into_iter());
        let Some((header, body)) = rows.split_first() else {
            bail!("an empty Combined table in:\n{probed}");
        };
        let pods: Vec<String> = body.iter().map(|r| r[0].clone()).collect();
        let columns: Vec<&String> = header.iter().skip(1).collect();
        ensure!(
            columns.len() == pods.len()
                && columns
                    .iter()
                    .zip(&pods)
                    .all(|(c, p)| c.eq_ignore_ascii_case(p)),
            "columns {columns:?} are not the rows {pods:?}"
        );
        let mut cells = BTreeMap::new();
        for row in body {
            ensure!(row.len() == pods.len() + 1, "a ragged row {row:?}");
            for (to, cell) in pods.iter().zip(&row[1..]) {
                let allowed = match cell.as_str() {
                    "." => true,
                    "X" => false,
                    other => bail!("cell {}->{to} is {other:?}, not a verdict", row[0]),
                };
                cells.insert((row[0].clone(), to.clone()), allowed);
            }
        }
        combined.push(Verdicts { pods, cells });
    }
    ensure!(
        combined.len() == probes + 1,
        "expected {} Combined tables (one per probe, then cyclonus's own), found {}",
        probes + 1,
        combined.len()
    );
    combined.truncate(probes);
    Ok(CyclonusRun { policies, combined })
}

fn cyclonus_bin() -> PathBuf {
    let cache = std::env::var_os("RAMPART_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/rampart")
        });
    cache.join("k8s-v1.37.2/bin/cyclonus")
}

/// A pod as the probe file describes it: where it is, its IP, and the ports it declares as
/// (number, name, protocol).
struct ProbedPod {
    endpoint: Endpoint,
    ip: String,
    ports: Vec<(i32, String, String)>,
}

/// The probe file: the estate's namespaces with their labels and its pods with their labels,
/// IPs and declared ports, all as the API server holds them.
fn probe_file(endpoints: &[ProbedPod]) -> Value {
    let namespaces: BTreeMap<&str, &BTreeMap<String, String>> = endpoints
        .iter()
        .map(|p| (p.endpoint.namespace.as_str(), &p.endpoint.namespace_labels))
        .collect();
    let pods: Vec<Value> = endpoints
        .iter()
        .map(|ProbedPod { endpoint: e, ip, ports }| {
            let containers: Vec<Value> = ports
                .iter()
                .map(|(port, name, protocol)| {
                    json!({"Name": format!("serve-{name}"), "Port": port, "PortName": name, "Protocol": protocol})
                })
                .collect();
            json!({"Namespace": e.namespace, "Name": e.name, "Labels": e.labels, "IP": ip, "Containers": containers})
        })
        .collect();
    let probes: Vec<Value> = PROBES
        .iter()
        .map(|p| json!({"Port": p.port, "Protocol": p.protocol}))
        .collect();
    json!({"Probes": probes, "Resources": {"Namespaces": namespaces, "Pods": pods}})
}

// ---------------------------------------------------------------------------------------------
// The estate on the control plane.
// ---------------------------------------------------------------------------------------------

/// Namespaces by role, each with pods `(name, labels)`.
struct Estate {
    client: Client,
    run: String,
    tag: String,
    namespaces: Vec<TestNamespace>,
    users: Vec<UserAllow>,
}

const POD_PORTS: [(i32, &str, &str); 6] = [
    (APP_PORT, "http", "TCP"),
    (MONITORING_PORTS[0], "metrics", "TCP"),
    (MONITORING_PORTS[1], "exporter", "TCP"),
    (MONITORING_PORTS[0], "metrics-udp", "UDP"),
    (53, "dns-tcp", "TCP"),
    (53, "dns", "UDP"),
];

/// A pod to create: its name and its one label (key, value).
type PodDef = (&'static str, &'static str, &'static str);
/// A namespace by role: the role, whether the profile selects it, its pods.
type Role<'a> = (&'a str, bool, &'a [PodDef]);

impl Estate {
    async fn create(prefix: &str, roles: &[Role<'_>]) -> Result<Self> {
        let client = client().await?;
        let id = unique_id();
        let run = format!("{prefix}-{id}");
        let mut namespaces = Vec::new();
        for (role, selected, pods) in roles {
            let name = format!("e2e-{run}-{role}");
            let labels: Vec<(&str, &str)> = if *selected {
                vec![(RUN_LABEL, run.as_str())]
            } else {
                vec![]
            };
            namespaces.push(TestNamespace::create_named(&client, &name, &labels).await?);
            let api = Api::<Pod>::namespaced(client.clone(), &name);
            for (pod, key, value) in pods.iter() {
                let ports: Vec<Value> = POD_PORTS
                    .iter()
                    .map(|(p, n, proto)| json!({"containerPort": p, "name": n, "protocol": proto}))
                    .collect();
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": pod, "labels": {*key: value}},
                    "spec": {"containers": [{"name": "app", "image": "example.com/app:1", "ports": ports}]}
                }))?;
                api.create(&PostParams::default(), &p)
                    .await
                    .with_context(|| format!("creating pod {name}/{pod}"))?;
            }
        }
        Ok(Self {
            client,
            run,
            tag: format!("reach-{id}"),
            namespaces,
            users: Vec::new(),
        })
    }

    fn ns(&self, role: &str) -> String {
        format!("e2e-{}-{role}", self.run)
    }

    async fn add_user_policy(&mut self, u: UserAllow) -> Result<()> {
        let p: NetworkPolicy = serde_json::from_value(u.manifest())?;
        Api::<NetworkPolicy>::namespaced(self.client.clone(), &u.namespace)
            .create(&PostParams::default(), &p)
            .await
            .with_context(|| format!("creating the user's policy {}", u.name))?;
        self.users.push(u);
        Ok(())
    }

    fn profiles(&self) -> Api<HardeningProfile> {
        Api::all(self.client.clone())
    }

    /// Applies `profile` and waits until it is Ready for that generation.
    async fn apply_and_converge(&self, profile: &Value) -> Result<()> {
        let name = profile["metadata"]["name"]
            .as_str()
            .context("profile name")?;
        let applied = self
            .profiles()
            .patch(
                name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(profile),
            )
            .await
            .with_context(|| format!("applying profile {name}"))?;
        let generation = applied.metadata.generation.context("generation")?;
        let api = self.profiles();
        wait_for(
            &format!("profile {name} to be Ready at generation {generation}"),
            CONVERGE,
            || {
                let api = api.clone();
                async move {
                    let p = api.get(name).await.map_err(|e| e.to_string())?;
                    let conds = p.status.map(|s| s.conditions).unwrap_or_default();
                    let ready = conds.iter().find(|c| c.type_ == "Ready");
                    match ready {
                        Some(c)
                            if c.status == rampart::api::ConditionStatus::True
                                && c.observed_generation == Some(generation) =>
                        {
                            Ok(Some(()))
                        }
                        _ => Err(format!(
                            "{:?}",
                            conds
                                .iter()
                                .map(|c| format!(
                                    "{}={} ({}) gen {:?}",
                                    c.type_, c.status, c.message, c.observed_generation
                                ))
                                .collect::<Vec<_>>()
                        )),
                    }
                }
            },
        )
        .await
    }

    /// Every pod of the estate, once each is scheduled and has an IP, with its declared ports.
    async fn endpoints(&self) -> Result<Vec<ProbedPod>> {
        let mut out = Vec::new();
        for ns in &self.namespaces {
            let labels = Api::<Namespace>::all(self.client.clone())
                .get(&ns.name)
                .await?
                .metadata
                .labels
                .unwrap_or_default();
            let api = Api::<Pod>::namespaced(self.client.clone(), &ns.name);
            let pods = wait_for(
                &format!("pods in {} to have IPs", ns.name),
                CONVERGE,
                || {
                    let api = api.clone();
                    async move {
                        let pods = api
                            .list(&ListParams::default())
                            .await
                            .map_err(|e| e.to_string())?;
                        let missing: Vec<String> = pods
                            .items
                            .iter()
                            .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_none())
                            .map(|p| p.name_any())
                            .collect();
                        if missing.is_empty() {
                            Ok(Some(pods.items))
                        } else {
                            Err(format!("no IP yet: {missing:?}"))
                        }
                    }
                },
            )
            .await?;
            for p in pods {
                let ip = p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default();
                let ports = p
                    .spec
                    .as_ref()
                    .map(|s| {
                        s.containers
                            .iter()
                            .flat_map(|c| c.ports.clone().unwrap_or_default())
                            .map(|cp| {
                                (
                                    cp.container_port,
                                    cp.name.unwrap_or_default(),
                                    cp.protocol.unwrap_or_else(|| "TCP".into()),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ProbedPod {
                    endpoint: Endpoint {
                        namespace: ns.name.clone(),
                        namespace_labels: labels.clone(),
                        name: p.name_any(),
                        labels: p.metadata.labels.clone().unwrap_or_default(),
                    },
                    ip,
                    ports,
                });
            }
        }
        Ok(out)
    }

    /// The policies the API server holds in the estate, as `namespace/name`.
    async fn policies(&self) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for ns in &self.namespaces {
            for p in Api::<NetworkPolicy>::namespaced(self.client.clone(), &ns.name)
                .list(&ListParams::default())
                .await?
            {
                out.insert(format!("{}/{}", ns.name, p.name_any()));
            }
        }
        Ok(out)
    }

    /// Runs cyclonus over the estate: it reads the policies from the API server itself.
    async fn cyclonus(&self) -> Result<(Vec<Endpoint>, CyclonusRun)> {
        let endpoints = self.endpoints().await?;
        let dir = repo_root().join(".local");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join(format!("probe-{}.json", self.run));
        std::fs::write(
            &file,
            serde_json::to_string_pretty(&probe_file(&endpoints))?,
        )?;
        let namespaces: Vec<&str> = self.namespaces.iter().map(|n| n.name.as_str()).collect();
        let bin = cyclonus_bin();
        let out = Command::new(&bin)
            .args(["analyze", "--mode", "parse,probe", "--probe-path"])
            .arg(&file)
            .args(["--namespace", &namespaces.join(",")])
            .env("KUBECONFIG", kubeconfig_path())
            .output()
            .with_context(|| format!("running {} (built by e2e/tools/build.sh)", bin.display()))?;
        let _ = std::fs::remove_file(&file);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // cyclonus logs a failed read of policies or pods and carries on with none: that would
        // make an empty table, so any error it logs fails the test.
        ensure!(
            out.status.success()
                && !stderr.contains("level=error")
                && !stderr.contains("level=fatal"),
            "cyclonus failed ({}):\n{stderr}",
            out.status
        );
        let run = parse_cyclonus(&stdout, PROBES.len())?;
        let want: BTreeSet<String> = endpoints.iter().map(|p| p.endpoint.key()).collect();
        for (t, probe) in run.combined.iter().zip(PROBES) {
            let got: BTreeSet<String> = t.pods.iter().cloned().collect();
            ensure!(
                got == want,
                "{probe:?}: table over {got:?}, estate is {want:?}"
            );
        }
        Ok((endpoints.into_iter().map(|p| p.endpoint).collect(), run))
    }
}

/// Cells where the table and the expectation differ, as readable lines.
fn mismatches(
    intent: &Intent,
    users: &[UserAllow],
    endpoints: &[Endpoint],
    run: &CyclonusRun,
) -> Vec<String> {
    let mut out = Vec::new();
    for (table, probe) in run.combined.iter().zip(PROBES) {
        for from in endpoints {
            for to in endpoints {
                let want = intent.allows(users, from, to, probe);
                let got = table.cells.get(&(from.key(), to.key())).copied();
                if got != Some(want) {
                    out.push(format!(
                        "{} -> {} on {}/{}: cyclonus says {}, the profile says {}",
                        from.key(),
                        to.key(),
                        probe.port,
                        probe.protocol,
                        match got {
                            Some(true) => "allowed",
                            Some(false) => "denied",
                            None => "nothing",
                        },
                        if want { "allowed" } else { "denied" }
                    ));
                }
            }
        }
    }
    out
}

fn verdict(run: &CyclonusRun, from: &str, to: &str, probe: Probe) -> Option<bool> {
    let i = PROBES.iter().position(|p| *p == probe)?;
    run.combined[i]
        .cells
        .get(&(from.to_string(), to.to_string()))
        .copied()
}

/// Runs cyclonus and checks its table against the profile, with the policies it read being
/// exactly those the API server holds.
async fn check(e: &Estate, profile: &Value) -> Result<(Vec<Endpoint>, CyclonusRun)> {
    let intent = Intent::from_profile(profile)?;
    let (endpoints, run) = e.cyclonus().await?;
    let held = e.policies().await?;
    ensure!(
        run.policies == held,
        "cyclonus read {:?}, the API server holds {held:?}",
        run.policies
    );
    let wrong = mismatches(&intent, &e.users, &endpoints, &run);
    ensure!(
        wrong.is_empty(),
        "{} cells differ from the profile:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    Ok((endpoints, run))
}

const WEB: PodDef = ("web", "app", "web");

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

/// Three hardened namespaces, two named ones, a monitoring namespace, a DNS namespace with a
/// DNS pod and an ordinary one, and an outsider with a pod that only looks like DNS.
async fn full_estate() -> Result<Estate> {
    let mut e = Estate::create(
        "rch",
        &[
            ("app0", true, &[WEB, ("db", "app", "db")]),
            ("app1", true, &[WEB]),
            ("app2", true, &[WEB]),
            ("peer1", false, &[WEB]),
            ("peer2", false, &[WEB]),
            ("mon", false, &[("prom", "app", "prometheus")]),
            ("dns", false, &[("coredns", "k8s-app", "kube-dns"), WEB]),
            ("out", false, &[WEB, ("fake-dns", "k8s-app", "kube-dns")]),
        ],
    )
    .await?;
    let (app0, app1, out) = (e.ns("app0"), e.ns("app1"), e.ns("out"));
    e.add_user_policy(UserAllow {
        name: "team-outsider-in",
        namespace: app0,
        pod_app: "web",
        direction: Direction::Ingress,
        peer_namespace: out.clone(),
        probe: PROBES[0],
    })
    .await?;
    e.add_user_policy(UserAllow {
        name: "team-outsider-out",
        namespace: app1,
        pod_app: "web",
        direction: Direction::Egress,
        peer_namespace: out,
        probe: PROBES[0],
    })
    .await?;
    Ok(e)
}

fn full_profile(e: &Estate, name: &str) -> Value {
    json!({
        "apiVersion": "rampart.dev/v1alpha1",
        "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: e.tag}},
        "spec": {
            "mode": "Enforce",
            "namespaceSelector": {"matchLabels": {RUN_LABEL: e.run}},
            "networkPolicies": {
                "defaultDeny": {"ingress": true, "egress": true},
                "allowSameNamespace": true,
                "allowDNS": true,
                "dns": {"namespace": e.ns("dns"), "podLabels": {"k8s-app": "kube-dns"}},
                "allowedNamespaces": [e.ns("peer1"), e.ns("peer2")],
                "monitoring": {"namespace": e.ns("mon"), "ports": MONITORING_PORTS}
            }
        }
    })
}

#[tokio::test]
async fn cyclonus_table_is_what_the_profile_says_and_follows_changes() -> Result<()> {
    let e = full_estate().await?;
    let _op = OperatorProcess::start(&e.tag).await?;
    let name = format!("reach-{}", unique_id());
    let mut profile = full_profile(&e, &name);
    e.apply_and_converge(&profile).await?;
    let (_, run) = check(&e, &profile).await?;

    // A few cells by hand, so a shared mistake in the expectation and the operator shows.
    let (app0, app1, app2) = (e.ns("app0"), e.ns("app1"), e.ns("app2"));
    let (dns, out, mon) = (e.ns("dns"), e.ns("out"), e.ns("mon"));
    let key = |ns: &str, pod: &str| format!("{ns}/{pod}");
    let cases = [
        (key(&app0, "web"), key(&app0, "db"), PROBES[0], true),
        (key(&app0, "web"), key(&app1, "web"), PROBES[0], false),
        (
            key(&e.ns("peer2"), "web"),
            key(&app2, "web"),
            PROBES[0],
            true,
        ),
        (key(&mon, "prom"), key(&app2, "web"), PROBES[2], true),
        (key(&mon, "prom"), key(&app2, "web"), PROBES[0], false),
        (key(&mon, "prom"), key(&app2, "web"), PROBES[3], false),
        (key(&app1, "web"), key(&dns, "coredns"), PROBES[5], true),
        (key(&app1, "web"), key(&dns, "coredns"), PROBES[4], true),
        (key(&app1, "web"), key(&dns, "coredns"), PROBES[0], false),
        (key(&app1, "web"), key(&dns, "web"), PROBES[5], false),
        (key(&app1, "web"), key(&out, "fake-dns"), PROBES[5], false),
        (key(&out, "web"), key(&app0, "web"), PROBES[0], true),
        (key(&out, "web"), key(&app0, "db"), PROBES[0], false),
        (key(&out, "web"), key(&app0, "web"), PROBES[1], false),
        (key(&app1, "web"), key(&out, "web"), PROBES[0], true),
        (key(&app2, "web"), key(&out, "web"), PROBES[0], false),
    ];
    for (from, to, probe, want) in &cases {
        assert_eq!(
            verdict(&run, from, to, *probe),
            Some(*want),
            "{from} -> {to} on {probe:?}"
        );
    }

    // Remove a namespace from the allow list: its pods lose their way in, the other keeps it.
    profile["spec"]["networkPolicies"]["allowedNamespaces"] = json!([e.ns("peer1")]);
    e.apply_and_converge(&profile).await?;
    let (_, run) = check(&e, &profile).await?;
    assert_eq!(
        verdict(
            &run,
            &key(&e.ns("peer2"), "web"),
            &key(&app2, "web"),
            PROBES[0]
        ),
        Some(false)
    );
    assert_eq!(
        verdict(
            &run,
            &key(&e.ns("peer1"), "web"),
            &key(&app2, "web"),
            PROBES[0]
        ),
        Some(true)
    );

    // DNS off: the table must deny DNS, and the expectation of the DNS-on profile must fail on
    // exactly the DNS cells, so the comparison tells the two apart.
    let dns_on = profile.clone();
    profile["spec"]["networkPolicies"]["allowDNS"] = json!(false);
    e.apply_and_converge(&profile).await?;
    let (endpoints, run) = check(&e, &profile).await?;
    for probe in [PROBES[4], PROBES[5]] {
        assert_eq!(
            verdict(&run, &key(&app1, "web"), &key(&dns, "coredns"), probe),
            Some(false),
            "DNS on {probe:?} with allowDNS false"
        );
    }
    let wrong = mismatches(&Intent::from_profile(&dns_on)?, &e.users, &endpoints, &run);
    let hardened_pods = endpoints
        .iter()
        .filter(|p| [&app0, &app1, &app2].contains(&&p.namespace))
        .count();
    assert_eq!(
        wrong.len(),
        hardened_pods * 2,
        "the DNS-on expectation must fail on each hardened pod's UDP and TCP 53 to the DNS pod, and only there: {wrong:#?}"
    );
    assert!(
        wrong
            .iter()
            .all(|w| w.contains(&key(&dns, "coredns")) && w.contains(" on 53/")),
        "{wrong:#?}"
    );

    delete_profile_and_wait(&e.client, &name).await?;
    // With the profile gone only the teams' own policies are left, and they still mean what
    // they say: the same expectation over a profile that selects nothing.
    let users: BTreeSet<String> = e
        .users
        .iter()
        .map(|u| format!("{}/{}", u.namespace, u.name))
        .collect();
    wait_for("only the teams' policies to be left", CONVERGE, || async {
        let held = e.policies().await.map_err(|err| err.to_string())?;
        if held == users {
            Ok(Some(()))
        } else {
            Err(format!("{held:?}"))
        }
    })
    .await?;
    let nothing = json!({"spec": {"namespaces": [], "networkPolicies": {}}});
    check(&e, &nothing).await?;
    Ok(())
}

/// Two hardened namespaces, one naming the other in `allowedNamespaces`: the profile says the
/// named namespace's pods may connect in, so the connection must go through even though the
/// sender is hardened too (as in the sample profile, where countly, kafka, clickhouse and
/// mongodb are all selected and all name each other).
#[tokio::test]
async fn a_hardened_namespace_named_by_another_can_connect_to_it() -> Result<()> {
    let e = Estate::create("rchn", &[("a", true, &[WEB]), ("b", true, &[WEB])]).await?;
    let _op = OperatorProcess::start(&e.tag).await?;
    let name = format!("reachn-{}", unique_id());
    let profile = json!({
        "apiVersion": "rampart.dev/v1alpha1",
        "kind": "HardeningProfile",
        "metadata": {"name": name, "labels": {DEDICATED_LABEL: e.tag}},
        "spec": {
            "mode": "Enforce",
            "namespaceSelector": {"matchLabels": {RUN_LABEL: e.run}},
            "networkPolicies": {"allowDNS": false, "allowedNamespaces": [e.ns("a")]}
        }
    });
    e.apply_and_converge(&profile).await?;
    let result = check(&e, &profile).await;
    delete_profile_and_wait(&e.client, &name).await?;
    result.map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// The pure parts, without a cluster.
// ---------------------------------------------------------------------------------------------

fn ep(ns: &str, name: &str, labels: &[(&str, &str)], ns_labels: &[(&str, &str)]) -> Endpoint {
    let map = |l: &[(&str, &str)]| {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Endpoint {
        namespace: ns.into(),
        namespace_labels: map(ns_labels),
        name: name.into(),
        labels: map(labels),
    }
}

#[test]
fn cyclonus_output_is_read_by_position() {
    let out = "parsed policies:\n\
+---------+----------+\n\
| POLICY  |  TARGET  |\n\
+---------+----------+\n\
| ta/deny | all pods |\n\
|         |          |\n\
+---------+----------+\n\
\n\
probe:\n\
Ingress:\n\
+-----+-----+-----+\n\
|     | A/P | B/Q |\n\
+-----+-----+-----+\n\
| a/p | X   | X   |\n\
| b/q | X   | .   |\n\
+-----+-----+-----+\n\
\n\
Combined:\n\
+-----+-----+-----+\n\
|     | A/P | B/Q |\n\
+-----+-----+-----+\n\
| a/p | .   | X   |\n\
| b/q | X   | .   |\n\
+-----+-----+-----+\n\
\n\
Combined:\n\
+--+\n\
|  |\n\
+--+\n\
+--+\n";
    let run = parse_cyclonus(out, 1).expect("parses");
    assert_eq!(run.policies, BTreeSet::from(["ta/deny".to_string()]));
    assert_eq!(run.combined.len(), 1);
    let t = &run.combined[0];
    let cell = |from: &str, to: &str| t.cells[&(from.to_string(), to.to_string())];
    assert!(cell("a/p", "a/p"));
    assert!(!cell("a/p", "b/q"));
    assert!(!cell("b/q", "a/p"));
    assert!(cell("b/q", "b/q"));
    assert!(parse_cyclonus(
        &out.replace("| b/q | X   | .   |", "| b/q | X   | N   |"),
        1
    )
    .is_err());
    assert!(
        parse_cyclonus(out, 2).is_err(),
        "a missing table is an error"
    );
}

#[test]
fn expectation_follows_the_profile_fields() {
    let profile = json!({"spec": {
        "namespaceSelector": {"matchLabels": {"tier": "prod"}},
        "networkPolicies": {
            "dns": {"namespace": "dns", "podLabels": {"k8s-app": "kube-dns"}},
            "allowedNamespaces": ["partner"],
            "monitoring": {"namespace": "mon", "ports": [9090]}
        }
    }});
    let i = Intent::from_profile(&profile).expect("reads");
    let prod = [("tier", "prod")];
    let a = ep("a", "web", &[("app", "web")], &prod);
    let a2 = ep("a", "db", &[("app", "db")], &prod);
    let b = ep("b", "web", &[("app", "web")], &prod);
    let partner = ep("partner", "web", &[("app", "web")], &[]);
    let mon = ep("mon", "prom", &[("app", "prom")], &[]);
    let dns = ep("dns", "coredns", &[("k8s-app", "kube-dns")], &[]);
    let dns_web = ep("dns", "web", &[("app", "web")], &[]);
    let tcp = |port| Probe {
        port,
        protocol: "TCP",
    };
    let udp = |port| Probe {
        port,
        protocol: "UDP",
    };
    assert!(i.allows(&[], &a, &a2, tcp(8080)));
    assert!(!i.allows(&[], &a, &b, tcp(8080)));
    assert!(i.allows(&[], &partner, &a, tcp(8080)));
    assert!(!i.allows(&[], &a, &partner, tcp(8080)), "egress is denied");
    assert!(i.allows(&[], &mon, &a, tcp(9090)));
    assert!(!i.allows(&[], &mon, &a, udp(9090)));
    assert!(!i.allows(&[], &mon, &a, tcp(8080)));
    assert!(i.allows(&[], &a, &dns, udp(53)) && i.allows(&[], &a, &dns, tcp(53)));
    assert!(!i.allows(&[], &a, &dns_web, udp(53)));
    assert!(!i.allows(&[], &a, &dns, tcp(8080)));
    assert!(
        i.allows(&[], &dns, &dns_web, tcp(1)),
        "unselected namespaces are open"
    );

    let mut off = profile.clone();
    off["spec"]["networkPolicies"]["allowDNS"] = json!(false);
    assert!(!Intent::from_profile(&off)
        .expect("reads")
        .allows(&[], &a, &dns, udp(53)));

    let user = UserAllow {
        name: "u",
        namespace: "dns".into(),
        pod_app: "web",
        direction: Direction::Ingress,
        peer_namespace: "mon".into(),
        probe: tcp(80),
    };
    let users = [user];
    assert!(i.allows(&users, &mon, &dns_web, tcp(80)));
    assert!(
        !i.allows(&users, &partner, &dns_web, tcp(80)),
        "a user's policy isolates what it selects"
    );
    assert!(
        i.allows(&users, &a, &a2, tcp(8080)),
        "and adds to the profile"
    );
}
