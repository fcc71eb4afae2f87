//! Mapping read generate rules ([`super::kyverno::GenerateRule`]) onto one HardeningProfile
//! spec, with a [`Finding`] for every rule (or part of one) that does not map exactly. Pure.
//!
//! NetworkPolicies add up: what a set of them allows is the union of their rules, and a
//! direction is isolated when any policy over all pods lists it. So each generated policy is
//! cut into those pieces (isolation per direction, and one allowance per rule) and the pieces
//! are matched to the profile's allowances, which add up the same way; it does not matter
//! which Kyverno policy carried which piece.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{
    NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

use super::kyverno::{
    names_not_in, read_all, GenerateRule, Read, Scope, Trigger, NAMESPACE_NAME_LABEL,
};
use super::{Finding, Origin, Severity};
use crate::api::{
    DefaultDeny, DisruptionBudgetControl, DnsTarget, HardeningProfileSpec, LabelSelector,
    MaxUnavailable, Mode, MonitoringAccess, NamespaceName, NetworkPolicyControl, Port,
};

/// The result of an import: the spec (none when nothing mapped) and what did not map exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    pub name: String,
    pub spec: Option<HardeningProfileSpec>,
    pub findings: Vec<Finding>,
    /// Rules read, and how many of them made it into the spec (wholly or in part).
    pub rules_read: usize,
    pub rules_mapped: usize,
    /// Documents that are no Kyverno policy.
    pub ignored: Vec<String>,
}

/// Imports every generate rule among `docs` into one profile named `name`.
pub fn import(docs: &[Value], name: &str, mode: Mode) -> Imported {
    let mut acc = Accumulator::default();
    let mut ignored = Vec::new();
    let mut rules_read = 0;
    for read in read_all(docs) {
        match read {
            Read::Ignored(what) => ignored.push(what),
            Read::NotMapped(origin, reason) => {
                rules_read += 1;
                acc.not_mapped(&origin, reason);
            }
            Read::Rule(rule) => {
                rules_read += 1;
                acc.rule(&rule);
            }
        }
    }
    acc.finish(name, mode, rules_read, ignored)
}

impl Imported {
    /// The findings as lines for stderr and the YAML header, with a summary first.
    pub fn report_lines(&self) -> Vec<String> {
        let not_mapped = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::NotMapped)
            .count();
        let mut lines = vec![format!(
            "{} generate rules read, {} mapped (wholly or in part); {} findings not mapped, {} mapped with a difference",
            self.rules_read,
            self.rules_mapped,
            not_mapped,
            self.findings.len() - not_mapped
        )];
        lines.extend(self.findings.iter().map(|f| format!("- {f}")));
        if !self.ignored.is_empty() {
            lines.push(format!(
                "ignored {} documents that are no Kyverno policy: {}",
                self.ignored.len(),
                self.ignored.join(", ")
            ));
        }
        lines
    }

    /// The profile as YAML, with the report as its comment header.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        let mut out = String::from("# Imported by `rampart import kyverno`.\n");
        out.push_str("# Rampart names its objects rampart-*; remove the Kyverno policies (and the objects they\n");
        out.push_str("# generated) once this profile is Ready in Enforce mode.\n");
        for line in self.report_lines() {
            out.push_str(&format!("# {line}\n"));
        }
        let profile = json!({
            "apiVersion": "rampart.dev/v1alpha1",
            "kind": "HardeningProfile",
            "metadata": {"name": self.name},
            "spec": self.spec,
        });
        out.push_str(&serde_yaml::to_string(&profile)?);
        Ok(out)
    }
}

/// The network allowances gathered so far, each a union over every rule.
#[derive(Default)]
struct NetworkPieces {
    deny_ingress: bool,
    deny_egress: bool,
    same_ingress: bool,
    same_egress: bool,
    dns: Option<DnsTarget>,
    allowed: BTreeSet<String>,
    monitoring: Option<(String, BTreeSet<i32>)>,
    cidrs: BTreeSet<String>,
}

#[derive(Default)]
struct Accumulator {
    scope: Option<(Scope, Origin)>,
    network: Option<NetworkPieces>,
    budgets: Option<(DisruptionBudgetControl, Origin)>,
    budget_kinds: BTreeSet<String>,
    findings: Vec<Finding>,
    rules_mapped: usize,
}

impl Accumulator {
    fn not_mapped(&mut self, origin: &Origin, reason: impl Into<String>) {
        self.push(origin, Severity::NotMapped, reason);
    }

    fn differs(&mut self, origin: &Origin, reason: impl Into<String>) {
        self.push(origin, Severity::Differs, reason);
    }

    fn push(&mut self, origin: &Origin, severity: Severity, reason: impl Into<String>) {
        self.findings.push(Finding {
            origin: origin.clone(),
            severity,
            reason: reason.into(),
        });
    }

    fn rule(&mut self, rule: &GenerateRule) {
        let origin = &rule.origin;
        // What a rule makes decides first: a rule Rampart has no equivalent for is reported as
        // such, whichever namespaces it acts in.
        let mappable = rule.objects.iter().any(|o| {
            matches!(
                (o["kind"].as_str(), &rule.trigger),
                (Some("NetworkPolicy"), Trigger::Namespaces)
                    | (Some("PodDisruptionBudget"), Trigger::Workloads(_))
            )
        });
        if !mappable {
            for object in &rule.objects {
                let reason = match (object["kind"].as_str().unwrap_or_default(), &rule.trigger) {
                    ("NetworkPolicy", _) => "a NetworkPolicy per workload; Rampart's policies cover whole namespaces".to_string(),
                    ("PodDisruptionBudget", _) => "a PodDisruptionBudget per namespace; Rampart makes one per replicated workload".to_string(),
                    (other, _) => format!("generates a {other}; Rampart makes NetworkPolicies and PodDisruptionBudgets only"),
                };
                self.not_mapped(origin, reason);
            }
            return;
        }
        // One profile selects one set of namespaces for all its controls.
        if let Some((scope, first)) = &self.scope {
            if *scope != rule.scope {
                let reason = format!(
                    "acts in {}, but the profile (from {first}) acts in {}; import these policies separately with another --name",
                    rule.scope.describe(),
                    scope.describe()
                );
                self.not_mapped(origin, reason);
                return;
            }
        }
        let mut mapped = false;
        for object in &rule.objects {
            let kind = object["kind"].as_str().unwrap_or_default();
            mapped |= match (kind, &rule.trigger) {
                ("NetworkPolicy", Trigger::Namespaces) => self.network_policy(origin, object),
                ("PodDisruptionBudget", Trigger::Workloads(kinds)) => {
                    self.budget(origin, object, rule.min_replicas, kinds)
                }
                (other, _) => {
                    self.not_mapped(
                        origin,
                        format!("generates a {other} beside what it maps; only NetworkPolicies and PodDisruptionBudgets are imported"),
                    );
                    false
                }
            };
        }
        if !mapped {
            return;
        }
        self.rules_mapped += 1;
        if self.scope.is_none() {
            self.scope = Some((rule.scope.clone(), origin.clone()));
        }
        for d in &rule.differences {
            self.differs(origin, d.clone());
        }
        if !rule.synchronize {
            self.differs(origin, "synchronize is off: Kyverno creates the object once and never repairs it; Rampart in Enforce repairs every drift");
        }
        if !rule.generate_existing {
            self.differs(origin, "generateExisting is off: Kyverno acts only on triggers created after the policy; Rampart acts on existing namespaces and workloads too");
        }
    }

    // ---- NetworkPolicies ---------------------------------------------------------------

    fn network_policy(&mut self, origin: &Origin, object: &Value) -> bool {
        let name = object["metadata"]["name"].as_str().unwrap_or("<unnamed>");
        let at = |part: &str| Origin {
            policy: origin.policy.clone(),
            rule: format!("{} (NetworkPolicy {name}{part})", origin.rule),
        };
        if object["metadata"]["namespace"].as_str() != Some("{{object.metadata.name}}") {
            self.not_mapped(
                &at(""),
                format!(
                    "made in namespace {}, not in each triggering namespace",
                    object["metadata"]["namespace"]
                ),
            );
            return false;
        }
        if let Some(r) = first_reference(&object["spec"]) {
            self.not_mapped(&at(""), format!("its spec depends on the trigger ({r}); a profile's policies are the same in every namespace"));
            return false;
        }
        let spec: NetworkPolicySpec = match serde_json::from_value(object["spec"].clone()) {
            Ok(s) => s,
            Err(e) => {
                self.not_mapped(&at(""), format!("not a NetworkPolicy spec: {e}"));
                return false;
            }
        };
        if !selects_everything(spec.pod_selector.as_ref()) {
            self.not_mapped(
                &at(""),
                "selects some pods only; Rampart's policies cover every pod of a namespace",
            );
            return false;
        }
        let types = effective_policy_types(&spec);
        let mut pieces = self.network.take().unwrap_or_default();
        pieces.deny_ingress |= types.contains("Ingress");
        pieces.deny_egress |= types.contains("Egress");
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            if let Err(reason) = ingress_piece(rule, &mut pieces) {
                self.not_mapped(&at(&format!(", ingress[{i}]")), reason);
            }
        }
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            match egress_piece(rule, &mut pieces) {
                Ok(Some(difference)) => self.differs(&at(&format!(", egress[{i}]")), difference),
                Ok(None) => {}
                Err(reason) => self.not_mapped(&at(&format!(", egress[{i}]")), reason),
            }
        }
        self.network = Some(pieces);
        true
    }

    // ---- PodDisruptionBudgets ----------------------------------------------------------

    fn budget(
        &mut self,
        origin: &Origin,
        object: &Value,
        min_replicas: Option<i32>,
        kinds: &BTreeSet<String>,
    ) -> bool {
        if object["metadata"]["namespace"].as_str() != Some("{{object.metadata.namespace}}") {
            self.not_mapped(
                origin,
                format!(
                    "made in namespace {}, not beside each workload",
                    object["metadata"]["namespace"]
                ),
            );
            return false;
        }
        let spec = &object["spec"];
        match &spec["selector"] {
            Value::String(s) if s == "{{object.spec.selector}}" => {}
            Value::Object(m) if m.get("matchLabels").and_then(Value::as_str) == Some("{{object.spec.selector.matchLabels}}") => {}
            Value::Object(m) if m.get("matchLabels").is_some_and(labels_from_trigger) => self.differs(
                origin,
                "the budget selects pods by labels copied from the workload; Rampart's uses the workload's own selector",
            ),
            other => {
                self.not_mapped(origin, format!("the budget's selector {other} is not the workload's; Rampart's budgets select each workload's pods"));
                return false;
            }
        }
        let mut control = DisruptionBudgetControl {
            min_replicas: 2,
            max_unavailable: MaxUnavailable::Count(1),
        };
        match (&spec["maxUnavailable"], &spec["minAvailable"]) {
            (Value::Number(n), _) if n.as_i64().is_some_and(|n| n >= 1) => {
                control.max_unavailable = MaxUnavailable::Count(n.as_i64().unwrap_or(1) as i32)
            }
            (Value::String(p), _) if valid_percent(p) => {
                control.max_unavailable = MaxUnavailable::Percent(p.clone())
            }
            (Value::Null, Value::Null) => self.differs(origin, "the budget sets neither maxUnavailable nor minAvailable; Rampart's allow one pod down (maxUnavailable: 1)"),
            (Value::Null, min) => self.differs(
                origin,
                format!("minAvailable: {min} becomes maxUnavailable: 1: a budget by minAvailable blocks drains of workloads at their floor, so Rampart budgets by maxUnavailable only"),
            ),
            (max, _) => {
                self.not_mapped(origin, format!("maxUnavailable: {max} is not a count of at least 1 or a percentage from 1% to 100% (zero blocks every drain)"));
                return false;
            }
        }
        match spec["unhealthyPodEvictionPolicy"].as_str() {
            None | Some("AlwaysAllow") => {}
            Some(other) => self.differs(origin, format!("unhealthyPodEvictionPolicy {other} becomes AlwaysAllow, so unhealthy pods never block a drain")),
        }
        match min_replicas {
            Some(n) if n >= 2 => control.min_replicas = n,
            Some(n) => self.differs(origin, format!("budgets workloads from {n} replicas; Rampart gives none below 2, since a budget on one replica blocks drains")),
            None => self.differs(origin, "no replica precondition: Kyverno budgets single-replica workloads too; Rampart gives none below minReplicas (2), since such a budget blocks drains"),
        }
        self.budget_kinds.extend(kinds.iter().cloned());
        match &self.budgets {
            Some((existing, first)) if *existing != control => {
                let reason = format!("a second budget rule that differs from {first}'s (minReplicas {}, maxUnavailable {:?}); a profile has one budget rule", existing.min_replicas, existing.max_unavailable);
                self.not_mapped(origin, reason);
                false
            }
            Some(_) => true,
            None => {
                self.budgets = Some((control, origin.clone()));
                true
            }
        }
    }

    fn finish(
        mut self,
        name: &str,
        mode: Mode,
        rules_read: usize,
        ignored: Vec<String>,
    ) -> Imported {
        let network = self.network.take().map(|p| self.network_control(p));
        let budgets = self.budgets.take().map(|(b, first)| {
            let missing: Vec<&str> = ["Deployment", "StatefulSet"]
                .into_iter()
                .filter(|k| !self.budget_kinds.contains(*k))
                .collect();
            if !missing.is_empty() {
                self.differs(
                    &first,
                    format!(
                        "Rampart budgets Deployments and StatefulSets; the rules did not cover {}",
                        missing.join(", ")
                    ),
                );
            }
            b
        });
        let spec = (network.is_some() || budgets.is_some()).then(|| {
            let scope = self.scope.take().map(|(s, _)| s).unwrap_or_default();
            let mut spec = HardeningProfileSpec {
                mode,
                namespace_selector: None,
                namespaces: Vec::new(),
                network_policies: network,
                pod_disruption_budgets: budgets,
                secret_rotation: None,
                backups: None,
                exceptions: Vec::new(),
            };
            apply_scope(&mut spec, scope);
            spec
        });
        Imported {
            name: name.to_string(),
            spec,
            findings: self.findings,
            rules_read,
            rules_mapped: self.rules_mapped,
            ignored,
        }
    }

    fn network_control(&mut self, p: NetworkPieces) -> NetworkPolicyControl {
        if p.deny_ingress && p.deny_egress && p.same_ingress != p.same_egress {
            let origin = Origin {
                policy: "NetworkPolicies".into(),
                rule: String::new(),
            };
            self.differs(&origin, format!(
                "the policies allow same-namespace traffic only {}; Rampart's allowSameNamespace opens both directions",
                if p.same_ingress { "in" } else { "out" }
            ));
        }
        NetworkPolicyControl {
            default_deny: DefaultDeny {
                ingress: p.deny_ingress,
                egress: p.deny_egress,
            },
            allow_same_namespace: p.same_ingress || p.same_egress,
            allow_dns: p.dns.is_some(),
            dns: p.dns.unwrap_or_default(),
            allowed_namespaces: p.allowed.into_iter().map(NamespaceName).collect(),
            monitoring: p.monitoring.map(|(ns, ports)| MonitoringAccess {
                namespace: NamespaceName(ns),
                ports: ports.into_iter().map(Port).collect(),
            }),
            egress_cidrs: p.cidrs.into_iter().collect(),
        }
    }
}

/// Namespaces: names as `namespaces`, a selector as `namespaceSelector`, exclusions as a
/// `NotIn` on the name label; every namespace as the empty selector.
fn apply_scope(spec: &mut HardeningProfileSpec, scope: Scope) {
    let names: Vec<NamespaceName> = scope
        .names
        .iter()
        .filter(|n| !scope.excluded.contains(*n))
        .cloned()
        .map(NamespaceName)
        .collect();
    let mut selector = scope.selector.clone();
    if selector.is_none() && names.is_empty() {
        selector = Some(LabelSelector::default());
    }
    if let Some(sel) = &mut selector {
        if !scope.excluded.is_empty() {
            sel.match_expressions.push(names_not_in(&scope.excluded));
        }
    }
    spec.namespace_selector = selector;
    spec.namespaces = names;
}

fn selects_everything(s: Option<&metav1::LabelSelector>) -> bool {
    s.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    })
}

/// `policyTypes` as the API server defaults it: Ingress always, Egress when egress rules exist.
fn effective_policy_types(spec: &NetworkPolicySpec) -> BTreeSet<String> {
    match &spec.policy_types {
        Some(t) if !t.is_empty() => t.iter().cloned().collect(),
        _ => {
            let mut t = BTreeSet::from(["Ingress".to_string()]);
            if spec.egress.is_some() {
                t.insert("Egress".into());
            }
            t
        }
    }
}

/// The namespaces a peer names, when it names namespaces and nothing else (all their pods).
fn named_namespaces(peer: &NetworkPolicyPeer) -> Option<Vec<String>> {
    if peer.ip_block.is_some() || !selects_everything(peer.pod_selector.as_ref()) {
        return None;
    }
    let sel = peer.namespace_selector.as_ref()?;
    let labels = sel.match_labels.clone().unwrap_or_default();
    let exprs = sel.match_expressions.clone().unwrap_or_default();
    match (labels.len(), exprs.as_slice()) {
        (1, []) => labels.get(NAMESPACE_NAME_LABEL).map(|n| vec![n.clone()]),
        (0, [e]) if e.key == NAMESPACE_NAME_LABEL && e.operator == "In" => e.values.clone(),
        _ => None,
    }
}

fn is_same_namespace(peer: &NetworkPolicyPeer) -> bool {
    peer.namespace_selector.is_none()
        && peer.ip_block.is_none()
        && peer.pod_selector.is_some()
        && selects_everything(peer.pod_selector.as_ref())
}

fn tcp_port(p: &NetworkPolicyPort) -> Option<i32> {
    let tcp = p.protocol.as_deref().is_none_or(|x| x == "TCP");
    match (&p.port, p.end_port, tcp) {
        (Some(IntOrString::Int(n)), None, true) => Some(*n),
        _ => None,
    }
}

fn describe_peers(peers: &[NetworkPolicyPeer]) -> String {
    serde_json::to_string(peers).unwrap_or_default()
}

fn ingress_piece(rule: &NetworkPolicyIngressRule, p: &mut NetworkPieces) -> Result<(), String> {
    let peers = rule.from.clone().unwrap_or_default();
    let ports = rule.ports.clone().unwrap_or_default();
    if peers.is_empty() {
        return Err("admits every source; a profile has no allow-all".into());
    }
    if ports.is_empty() {
        if peers.iter().all(is_same_namespace) {
            p.same_ingress = true;
            return Ok(());
        }
        let named: Option<Vec<Vec<String>>> = peers.iter().map(named_namespaces).collect();
        if let Some(named) = named {
            p.allowed.extend(named.into_iter().flatten());
            return Ok(());
        }
        return Err(format!(
            "admits {}; a profile admits its own namespace and namespaces by name (allowedNamespaces)",
            describe_peers(&peers)
        ));
    }
    // Ports from one named namespace: the monitoring allowance.
    let tcp: Option<BTreeSet<i32>> = ports.iter().map(tcp_port).collect();
    let named = match peers.as_slice() {
        [one] => named_namespaces(one).filter(|n| n.len() == 1),
        _ => None,
    };
    match (tcp, named) {
        (Some(tcp), Some(ns)) => {
            let ns = ns.into_iter().next().unwrap_or_default();
            match &mut p.monitoring {
                None => p.monitoring = Some((ns, tcp)),
                Some((m, ports)) if *m == ns => ports.extend(tcp),
                Some((m, _)) => {
                    return Err(format!(
                        "admits {ns} on ports {tcp:?}, but {m} is already the monitoring namespace; a profile admits one namespace on chosen ports"
                    ))
                }
            }
            Ok(())
        }
        (None, _) => Err(format!(
            "ports {} are not plain TCP port numbers; a profile opens TCP port numbers to its monitoring namespace only",
            serde_json::to_string(&ports).unwrap_or_default()
        )),
        (_, None) => Err(format!(
            "admits {} on chosen ports; a profile opens ports to one named monitoring namespace only",
            describe_peers(&peers)
        )),
    }
}

/// Ok(Some(difference)) when it maps with a difference.
fn egress_piece(
    rule: &NetworkPolicyEgressRule,
    p: &mut NetworkPieces,
) -> Result<Option<String>, String> {
    let peers = rule.to.clone().unwrap_or_default();
    let ports = rule.ports.clone().unwrap_or_default();
    let dns_ports: Option<BTreeSet<&str>> = (!ports.is_empty())
        .then(|| {
            ports
                .iter()
                .map(|x| match (&x.port, x.end_port) {
                    (Some(IntOrString::Int(53)), None) => {
                        Some(x.protocol.as_deref().unwrap_or("TCP"))
                    }
                    _ => None,
                })
                .collect()
        })
        .flatten();
    if let Some(protocols) = dns_ports {
        let mut differences = Vec::new();
        if protocols.len() < 2 {
            differences.push(format!(
                "DNS is opened on {} 53 only; Rampart's allowDNS opens UDP and TCP 53",
                protocols.iter().next().copied().unwrap_or("TCP")
            ));
        }
        let target = match peers.as_slice() {
            [] => {
                differences.push("port 53 was open to any destination; Rampart opens it to the cluster DNS pods only (kube-system, k8s-app=kube-dns)".into());
                DnsTarget::default()
            }
            [peer] if peer.ip_block.is_none() => {
                let ns = peer
                    .namespace_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref())
                    .and_then(|l| {
                        (l.len() == 1)
                            .then(|| l.get(NAMESPACE_NAME_LABEL))
                            .flatten()
                    })
                    .ok_or_else(|| {
                        format!(
                            "DNS to {}, not to a namespace by name",
                            describe_peers(&peers)
                        )
                    })?;
                let pods = peer
                    .pod_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.clone())
                    .filter(|l| !l.is_empty());
                if peer
                    .pod_selector
                    .as_ref()
                    .is_some_and(|s| s.match_expressions.is_some())
                {
                    return Err(
                        "DNS pods chosen by label expressions; a profile names them by labels"
                            .into(),
                    );
                }
                let default = DnsTarget::default();
                let pod_labels = pods.unwrap_or_else(|| {
                    differences.push(format!(
                        "port 53 was open to every pod of {ns}; Rampart opens it to the DNS pods there ({:?})",
                        default.pod_labels
                    ));
                    default.pod_labels.clone()
                });
                DnsTarget {
                    namespace: NamespaceName(ns.clone()),
                    pod_labels,
                }
            }
            _ => {
                return Err(format!(
                    "DNS to several or non-namespace peers {}; a profile names one DNS target",
                    describe_peers(&peers)
                ))
            }
        };
        if let Some(existing) = &p.dns {
            if *existing != target {
                return Err("a second DNS target; a profile has one".into());
            }
        }
        p.dns = Some(target);
        return Ok((!differences.is_empty()).then(|| differences.join("; ")));
    }
    if !ports.is_empty() {
        return Err(format!(
            "egress on ports {}; a profile opens egress by port for DNS only",
            serde_json::to_string(&ports).unwrap_or_default()
        ));
    }
    if peers.is_empty() {
        return Err("allows all egress; a profile has no allow-all (leave egress out of defaultDeny instead)".into());
    }
    if peers.iter().all(is_same_namespace) {
        p.same_egress = true;
        return Ok(None);
    }
    let cidrs: Option<Vec<String>> = peers
        .iter()
        .map(
            |peer| match (&peer.ip_block, &peer.namespace_selector, &peer.pod_selector) {
                (Some(b), None, None) if b.except.as_ref().is_none_or(Vec::is_empty) => {
                    Some(b.cidr.clone())
                }
                _ => None,
            },
        )
        .collect();
    if let Some(cidrs) = cidrs {
        p.cidrs.extend(cidrs);
        return Ok(None);
    }
    Err(format!(
        "egress to {}; a profile allows egress to its own namespace, DNS and CIDRs without exceptions",
        describe_peers(&peers)
    ))
}

/// The first `{{...}}` reference inside a value.
fn first_reference(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.contains("{{") => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(first_reference),
        Value::Object(m) => m.values().find_map(first_reference),
        _ => None,
    }
}

/// matchLabels made of the workload's labels: `{{object.metadata.labels}}` whole, or values
/// each taken from the workload's (or its template's) labels.
fn labels_from_trigger(l: &Value) -> bool {
    let from_trigger = |s: &str| {
        s.starts_with("{{object.metadata.labels")
            || s.starts_with("{{object.spec.template.metadata.labels")
    };
    match l {
        Value::String(s) => from_trigger(s),
        Value::Object(m) => {
            !m.is_empty() && m.values().all(|v| v.as_str().is_some_and(from_trigger))
        }
        _ => false,
    }
}

fn valid_percent(p: &str) -> bool {
    p.strip_suffix('%')
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| (1..=100).contains(&n))
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
