//! Desired NetworkPolicies for one namespace: a default-deny plus one allow policy per
//! allowance, each with a stable name. Pure.
//!
//! Policies are additive, so an allow policy only lists a direction the default-deny isolates:
//! declaring `Egress` in an allow policy would isolate egress on its own even when the profile
//! leaves egress open.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    namespace_outcome, DesiredObject, ManagedKind, NamespaceFindings, NamespaceObserved, ObjectKey,
    Outcome,
};
use crate::api::{ControlName, NetworkPolicyControl};
use crate::ownership::managed_labels;

pub const DEFAULT_DENY: &str = "rampart-default-deny";
pub const ALLOW_SAME_NAMESPACE: &str = "rampart-allow-same-namespace";
pub const ALLOW_DNS: &str = "rampart-allow-dns";
pub const ALLOW_NAMESPACES: &str = "rampart-allow-namespaces";
pub const ALLOW_MONITORING: &str = "rampart-allow-monitoring";
pub const ALLOW_EGRESS_CIDRS: &str = "rampart-allow-egress-cidrs";

/// The label the API server puts on every namespace with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The network policy control in one namespace: the policies `spec` asks for (none where the
/// profile does not act, `None`) against the profile's policies there.
pub fn plan(
    profile: &str,
    spec: Option<&NetworkPolicyControl>,
    observed: &NamespaceObserved,
) -> Outcome<NamespaceFindings> {
    let desired = spec
        .map(|s| desired_network_policies(profile, s, &observed.namespace))
        .unwrap_or_default();
    namespace_outcome(
        ControlName::NetworkPolicies,
        ManagedKind::NetworkPolicy,
        desired,
        observed,
    )
}

/// The NetworkPolicies `spec` asks for in `namespace`.
pub fn desired_network_policies(
    profile: &str,
    spec: &NetworkPolicyControl,
    namespace: &str,
) -> Vec<DesiredObject> {
    let deny_in = spec.default_deny.ingress;
    let deny_out = spec.default_deny.egress;
    let mut out = Vec::new();
    let mut push = |name: &str, policy: NetworkPolicySpec| {
        out.push(policy_object(profile, namespace, name, policy))
    };

    if deny_in || deny_out {
        push(
            DEFAULT_DENY,
            NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(policy_types(deny_in, deny_out)),
                ingress: deny_in.then(Vec::new),
                egress: deny_out.then(Vec::new),
            },
        );
    }
    if spec.allow_same_namespace && (deny_in || deny_out) {
        let same = || vec![pod_peer(LabelSelector::default())];
        push(
            ALLOW_SAME_NAMESPACE,
            NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(policy_types(deny_in, deny_out)),
                ingress: deny_in.then(|| {
                    vec![NetworkPolicyIngressRule {
                        from: Some(same()),
                        ports: None,
                    }]
                }),
                egress: deny_out.then(|| {
                    vec![NetworkPolicyEgressRule {
                        to: Some(same()),
                        ports: None,
                    }]
                }),
            },
        );
    }
    if spec.allow_dns && deny_out {
        let peer = NetworkPolicyPeer {
            namespace_selector: Some(namespace_named(spec.dns.namespace.as_str())),
            pod_selector: Some(LabelSelector {
                match_labels: Some(spec.dns.pod_labels.clone()),
                match_expressions: None,
            }),
            ip_block: None,
        };
        push(
            ALLOW_DNS,
            NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Egress".into()]),
                ingress: None,
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![peer]),
                    ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
                }]),
            },
        );
    }
    if !spec.allowed_namespaces.is_empty() && deny_in {
        let mut names: Vec<String> = spec
            .allowed_namespaces
            .iter()
            .map(|n| n.as_str().to_string())
            .collect();
        names.sort();
        let selector = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "In".into(),
                values: Some(names),
            }]),
        };
        push(
            ALLOW_NAMESPACES,
            ingress_only(vec![NetworkPolicyIngressRule {
                from: Some(vec![namespace_peer(selector)]),
                ports: None,
            }]),
        );
    }
    if let (Some(mon), true) = (&spec.monitoring, deny_in) {
        push(
            ALLOW_MONITORING,
            ingress_only(vec![NetworkPolicyIngressRule {
                from: Some(vec![namespace_peer(namespace_named(
                    mon.namespace.as_str(),
                ))]),
                ports: Some(mon.ports.iter().map(|p| port("TCP", p.0)).collect()),
            }]),
        );
    }
    if !spec.egress_cidrs.is_empty() && deny_out {
        push(
            ALLOW_EGRESS_CIDRS,
            NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Egress".into()]),
                ingress: None,
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(
                        spec.egress_cidrs
                            .iter()
                            .map(|c| NetworkPolicyPeer {
                                ip_block: Some(IPBlock {
                                    cidr: c.clone(),
                                    except: None,
                                }),
                                namespace_selector: None,
                                pod_selector: None,
                            })
                            .collect(),
                    ),
                    ports: None,
                }]),
            },
        );
    }
    out
}

fn policy_object(
    profile: &str,
    namespace: &str,
    name: &str,
    spec: NetworkPolicySpec,
) -> DesiredObject {
    let policy = NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(managed_labels(profile, ControlName::NetworkPolicies)),
            ..Default::default()
        },
        spec: Some(spec),
    };
    let mut manifest = serde_json::to_value(&policy).unwrap_or_default();
    manifest["apiVersion"] = ManagedKind::NetworkPolicy.api_version().into();
    manifest["kind"] = ManagedKind::NetworkPolicy.kind().into();
    DesiredObject {
        key: ObjectKey {
            kind: ManagedKind::NetworkPolicy,
            namespace: namespace.into(),
            name: name.into(),
        },
        control: ControlName::NetworkPolicies,
        manifest,
    }
}

fn policy_types(ingress: bool, egress: bool) -> Vec<String> {
    let mut t = Vec::new();
    if ingress {
        t.push("Ingress".to_string());
    }
    if egress {
        t.push("Egress".to_string());
    }
    t
}

fn ingress_only(rules: Vec<NetworkPolicyIngressRule>) -> NetworkPolicySpec {
    NetworkPolicySpec {
        pod_selector: Some(LabelSelector::default()),
        policy_types: Some(vec!["Ingress".into()]),
        ingress: Some(rules),
        egress: None,
    }
}

fn namespace_named(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_string(),
            name.to_string(),
        )])),
        match_expressions: None,
    }
}

fn namespace_peer(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(selector),
        pod_selector: None,
        ip_block: None,
    }
}

fn pod_peer(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector),
        namespace_selector: None,
        ip_block: None,
    }
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(number)),
        end_port: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DefaultDeny, DnsTarget, MonitoringAccess, NamespaceName, Port};
    use serde_json::json;

    fn control() -> NetworkPolicyControl {
        NetworkPolicyControl {
            default_deny: DefaultDeny::default(),
            allow_same_namespace: true,
            allow_dns: true,
            dns: DnsTarget::default(),
            allowed_namespaces: vec![
                NamespaceName("kafka".into()),
                NamespaceName("countly".into()),
            ],
            monitoring: Some(MonitoringAccess {
                namespace: NamespaceName("observability".into()),
                ports: vec![Port(9090), Port(9187)],
            }),
            egress_cidrs: vec!["10.0.0.0/8".into()],
        }
    }

    fn names(objs: &[DesiredObject]) -> Vec<&str> {
        objs.iter().map(|o| o.key.name.as_str()).collect()
    }

    fn find<'a>(objs: &'a [DesiredObject], name: &str) -> &'a serde_json::Value {
        &objs
            .iter()
            .find(|o| o.key.name == name)
            .expect("policy present")
            .manifest
    }

    #[test]
    fn full_profile_gives_six_stable_policies() {
        let objs = desired_network_policies("regulated", &control(), "countly");
        assert_eq!(
            names(&objs),
            vec![
                DEFAULT_DENY,
                ALLOW_SAME_NAMESPACE,
                ALLOW_DNS,
                ALLOW_NAMESPACES,
                ALLOW_MONITORING,
                ALLOW_EGRESS_CIDRS
            ]
        );
        let deny = find(&objs, DEFAULT_DENY);
        assert_eq!(deny["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            deny["metadata"]["labels"]["rampart.dev/profile"],
            "regulated"
        );
        assert_eq!(
            deny["metadata"]["labels"]["rampart.dev/control"],
            "networkpolicy"
        );
    }

    #[test]
    fn dns_peer_ands_namespace_and_pods_on_both_protocols() {
        let objs = desired_network_policies("p", &control(), "countly");
        let rule = &find(&objs, ALLOW_DNS)["spec"]["egress"][0];
        assert_eq!(
            rule["to"].as_array().map(Vec::len),
            Some(1),
            "one peer, so the selectors AND"
        );
        assert_eq!(
            rule["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "kube-system"
        );
        assert_eq!(
            rule["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
            "kube-dns"
        );
        assert_eq!(
            rule["ports"],
            json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}])
        );
    }

    #[test]
    fn allowed_namespaces_are_matched_by_name_sorted() {
        let objs = desired_network_policies("p", &control(), "countly");
        let expr = &find(&objs, ALLOW_NAMESPACES)["spec"]["ingress"][0]["from"][0]
            ["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(expr["key"], "kubernetes.io/metadata.name");
        assert_eq!(expr["values"], json!(["countly", "kafka"]));
    }

    #[test]
    fn monitoring_gets_only_its_ports() {
        let objs = desired_network_policies("p", &control(), "countly");
        let rule = &find(&objs, ALLOW_MONITORING)["spec"]["ingress"][0];
        assert_eq!(
            rule["ports"],
            json!([{"port": 9090, "protocol": "TCP"}, {"port": 9187, "protocol": "TCP"}])
        );
    }

    #[test]
    fn open_egress_means_no_egress_allow_policies() {
        let mut c = control();
        c.default_deny.egress = false;
        let objs = desired_network_policies("p", &c, "countly");
        assert_eq!(
            names(&objs),
            vec![
                DEFAULT_DENY,
                ALLOW_SAME_NAMESPACE,
                ALLOW_NAMESPACES,
                ALLOW_MONITORING
            ]
        );
        for o in &objs {
            assert_eq!(
                o.manifest["spec"]["policyTypes"],
                json!(["Ingress"]),
                "{} must not isolate egress",
                o.key.name
            );
        }
    }

    #[test]
    fn no_default_deny_means_no_policies() {
        let mut c = control();
        c.default_deny = DefaultDeny {
            ingress: false,
            egress: false,
        };
        assert!(desired_network_policies("p", &c, "countly").is_empty());
    }
}
