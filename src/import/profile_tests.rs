//! Policies written for these tests in the shape of Kyverno's published samples
//! (`add-networkpolicy`, `add-networkpolicy-dns`, `create-default-pdb`, an allow-from-monitoring
//! rule set, a GeneratingPolicy), each mapped and its findings checked.

use super::*;
use crate::api::validate::invalid_fields;
use crate::api::{LabelSelectorRequirement, SelectorOperator};
use crate::import::kyverno::documents;

fn run(yaml: &str) -> Imported {
    import(
        &documents(yaml).expect("test YAML parses"),
        "imported",
        Mode::Enforce,
    )
}

fn spec(i: &Imported) -> &HardeningProfileSpec {
    let s = i.spec.as_ref().expect("something mapped");
    assert_eq!(invalid_fields(s), vec![], "the imported spec must be valid");
    s
}

fn network(i: &Imported) -> &NetworkPolicyControl {
    spec(i)
        .network_policies
        .as_ref()
        .expect("network policies mapped")
}

/// The findings as (rule, severity, a word of the reason) for compact assertions.
fn has_finding(i: &Imported, rule_part: &str, severity: Severity, word: &str) -> bool {
    i.findings.iter().any(|f| {
        f.origin.to_string().contains(rule_part)
            && f.severity == severity
            && f.reason.contains(word)
    })
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const ADD_NETWORKPOLICY: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: add-networkpolicy
  annotations:
    policies.kyverno.io/title: Add Network Policy
spec:
  rules:
  - name: default-deny
    match:
      any:
      - resources:
          kinds: [Namespace]
    exclude:
      any:
      - resources:
          names: [kube-system, kube-public, kyverno]
    generate:
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      name: default-deny
      namespace: "{{ request.object.metadata.name }}"
      synchronize: true
      data:
        spec:
          podSelector: {}
          policyTypes: [Ingress, Egress]
"#;

#[test]
fn add_networkpolicy_becomes_a_default_deny_over_every_namespace_but_the_excluded() {
    let i = run(ADD_NETWORKPOLICY);
    let np = network(&i);
    assert_eq!(
        np.default_deny,
        DefaultDeny {
            ingress: true,
            egress: true
        }
    );
    assert!(!np.allow_same_namespace, "the policy allowed nothing");
    assert!(
        !np.allow_dns,
        "the policy allowed no DNS: allowDNS must be off, not the default"
    );
    let s = spec(&i);
    assert_eq!(
        s.namespace_selector,
        Some(LabelSelector {
            match_labels: Default::default(),
            match_expressions: vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: SelectorOperator::NotIn,
                values: names(&["kube-public", "kube-system", "kyverno"]),
            }],
        })
    );
    assert_eq!(i.rules_mapped, 1);
    assert!(has_finding(
        &i,
        "default-deny",
        Severity::Differs,
        "generateExisting"
    ));
    assert!(!has_finding(
        &i,
        "default-deny",
        Severity::Differs,
        "synchronize"
    ));
}

const ADD_NETWORKPOLICY_DNS: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: add-networkpolicy-dns
spec:
  generateExisting: true
  rules:
  - name: deny-all
    match:
      any:
      - resources:
          kinds: [Namespace]
    generate:
      kind: NetworkPolicy
      apiVersion: networking.k8s.io/v1
      name: default-deny
      namespace: "{{request.object.metadata.name}}"
      synchronize: true
      data:
        spec:
          podSelector: {}
          policyTypes: [Ingress, Egress]
  - name: allow-dns
    match:
      any:
      - resources:
          kinds: [Namespace]
    generate:
      kind: NetworkPolicy
      apiVersion: networking.k8s.io/v1
      name: allow-dns
      namespace: "{{request.object.metadata.name}}"
      synchronize: true
      data:
        spec:
          podSelector: {}
          policyTypes: [Egress]
          egress:
          - to:
            - namespaceSelector:
                matchLabels:
                  kubernetes.io/metadata.name: kube-system
              podSelector:
                matchLabels:
                  k8s-app: kube-dns
            ports:
            - protocol: UDP
              port: 53
"#;

#[test]
fn add_networkpolicy_dns_allows_dns_and_says_tcp_opens_too() {
    let i = run(ADD_NETWORKPOLICY_DNS);
    let np = network(&i);
    assert!(np.allow_dns);
    assert_eq!(np.dns, DnsTarget::default());
    assert_eq!(
        np.default_deny,
        DefaultDeny {
            ingress: true,
            egress: true
        }
    );
    assert_eq!(spec(&i).namespace_selector, Some(LabelSelector::default()));
    assert_eq!(i.rules_mapped, 2);
    assert!(has_finding(
        &i,
        "allow-dns",
        Severity::Differs,
        "UDP 53 only"
    ));
    // Policy-level generateExisting counts for every rule.
    assert!(!has_finding(&i, "", Severity::Differs, "generateExisting"));
}

const CREATE_DEFAULT_PDB: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: create-default-pdb
spec:
  rules:
  - name: create-default-pdb
    match:
      any:
      - resources:
          kinds: [Deployment]
    exclude:
      resources:
        namespaces: [local-path-storage]
    generate:
      apiVersion: policy/v1
      kind: PodDisruptionBudget
      name: "{{request.object.metadata.name}}-default-pdb"
      namespace: "{{request.object.metadata.namespace}}"
      data:
        spec:
          minAvailable: 1
          selector:
            matchLabels:
              app: "{{request.object.metadata.labels.app}}"
"#;

#[test]
fn create_default_pdb_maps_to_budgets_and_names_every_difference() {
    let i = run(CREATE_DEFAULT_PDB);
    let s = spec(&i);
    assert_eq!(
        s.pod_disruption_budgets,
        Some(DisruptionBudgetControl {
            min_replicas: 2,
            max_unavailable: MaxUnavailable::Count(1)
        })
    );
    assert!(s.network_policies.is_none());
    let excluded = &s
        .namespace_selector
        .as_ref()
        .expect("selector")
        .match_expressions[0];
    assert_eq!(excluded.values, names(&["local-path-storage"]));
    for word in [
        "minAvailable",
        "labels copied from the workload",
        "no replica precondition",
        "synchronize is off",
        "StatefulSet",
    ] {
        assert!(
            has_finding(&i, "create-default-pdb", Severity::Differs, word),
            "{word}: {:#?}",
            i.findings
        );
    }
}

const ALLOW_FROM_MONITORING: &str = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: production-network
spec:
  rules:
  - name: deny-and-same-namespace
    match:
      any:
      - resources:
          kinds: [Namespace]
          selector:
            matchLabels: {tier: production}
    generate:
      generateExisting: true
      synchronize: true
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      name: same-namespace
      namespace: "{{request.object.metadata.name}}"
      data:
        spec:
          podSelector: {}
          ingress:
          - from:
            - podSelector: {}
          - from:
            - ipBlock: {cidr: 10.0.0.0/8}
          egress:
          - to:
            - podSelector: {}
          - to:
            - ipBlock: {cidr: 192.168.0.0/16}
  - name: allow-from-monitoring
    match:
      any:
      - resources:
          kinds: [Namespace]
          selector:
            matchLabels: {tier: production}
    generate:
      generateExisting: true
      synchronize: true
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      name: allow-monitoring
      namespace: "{{request.object.metadata.name}}"
      data:
        spec:
          podSelector: {}
          policyTypes: [Ingress]
          ingress:
          - from:
            - namespaceSelector:
                matchLabels: {kubernetes.io/metadata.name: observability}
            ports:
            - {protocol: TCP, port: 9090}
            - {port: 9187}
          - from:
            - namespaceSelector:
                matchExpressions:
                - {key: kubernetes.io/metadata.name, operator: In, values: [kafka, countly]}
  - name: team-config
    match:
      any:
      - resources:
          kinds: [Namespace]
          selector:
            matchLabels: {tier: production}
    generate:
      apiVersion: v1
      kind: ConfigMap
      name: team-config
      namespace: "{{request.object.metadata.name}}"
      data:
        data: {owner: platform}
  - name: staging-deny
    match:
      any:
      - resources:
          kinds: [Namespace]
          selector:
            matchLabels: {tier: staging}
    generate:
      generateExisting: true
      synchronize: true
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      name: deny
      namespace: "{{request.object.metadata.name}}"
      data:
        spec: {podSelector: {}, policyTypes: [Ingress]}
  - name: require-labels
    match:
      any:
      - resources: {kinds: [Pod]}
    validate:
      message: labels
      pattern: {metadata: {labels: {app: "?*"}}}
"#;

#[test]
fn allow_from_monitoring_and_named_namespaces_map_and_the_rest_is_reported() {
    let i = run(ALLOW_FROM_MONITORING);
    let np = network(&i);
    assert_eq!(
        np.default_deny,
        DefaultDeny {
            ingress: true,
            egress: true
        }
    );
    assert!(np.allow_same_namespace);
    assert!(!np.allow_dns);
    assert_eq!(
        np.monitoring,
        Some(MonitoringAccess {
            namespace: NamespaceName("observability".into()),
            ports: vec![Port(9090), Port(9187)],
        })
    );
    let allowed: Vec<&str> = np.allowed_namespaces.iter().map(|n| n.as_str()).collect();
    assert_eq!(allowed, ["countly", "kafka"]);
    assert_eq!(np.egress_cidrs, names(&["192.168.0.0/16"]));
    let s = spec(&i);
    assert_eq!(
        s.namespace_selector
            .as_ref()
            .map(|s| s.match_labels.clone()),
        Some(BTreeMap::from([(
            "tier".to_string(),
            "production".to_string()
        )]))
    );
    assert!(has_finding(
        &i,
        "same-namespace, ingress[1]",
        Severity::NotMapped,
        "ipBlock"
    ));
    assert!(has_finding(
        &i,
        "team-config",
        Severity::NotMapped,
        "generates a ConfigMap"
    ));
    assert!(has_finding(
        &i,
        "staging-deny",
        Severity::NotMapped,
        "tier=staging"
    ));
    assert!(has_finding(
        &i,
        "require-labels",
        Severity::NotMapped,
        "validate rule"
    ));
    assert_eq!((i.rules_read, i.rules_mapped), (5, 2));
}

const GENERATING_POLICY: &str = r#"
apiVersion: policies.kyverno.io/v1alpha1
kind: GeneratingPolicy
metadata:
  name: namespace-network-baseline
spec:
  evaluation:
    synchronize:
      enabled: true
    generateExisting:
      enabled: true
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [namespaces]
  matchConditions:
  - name: not-system
    expression: "!(object.metadata.name in ['kube-system', 'kube-public'])"
  variables:
  - name: nsName
    expression: object.metadata.name
  - name: policies
    expression: >-
      [
        {
          "apiVersion": dyn("networking.k8s.io/v1"),
          "kind": dyn("NetworkPolicy"),
          "metadata": dyn({"name": "deny-all", "namespace": string(variables.nsName)}),
          "spec": dyn({"podSelector": dyn({}), "policyTypes": dyn(["Ingress", "Egress"])})
        },
        {
          "apiVersion": dyn("networking.k8s.io/v1"),
          "kind": dyn("NetworkPolicy"),
          "metadata": dyn({"name": "dns", "namespace": string(variables.nsName)}),
          "spec": dyn({
            "podSelector": dyn({}),
            "policyTypes": dyn(["Egress"]),
            "egress": dyn([{
              "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                      "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
              "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
            }])
          })
        }
      ]
  generate:
  - expression: generator.Apply(variables.nsName, variables.policies)
"#;

#[test]
fn a_generating_policy_maps_exactly() {
    let i = run(GENERATING_POLICY);
    assert_eq!(i.findings, vec![], "nothing differs");
    let np = network(&i);
    assert_eq!(
        np.default_deny,
        DefaultDeny {
            ingress: true,
            egress: true
        }
    );
    assert!(np.allow_dns);
    assert!(!np.allow_same_namespace);
    let excluded = &spec(&i)
        .namespace_selector
        .as_ref()
        .expect("selector")
        .match_expressions;
    assert_eq!(excluded.len(), 1);
    assert_eq!(excluded[0].values, names(&["kube-public", "kube-system"]));
}

const GENERATING_PDB: &str = r#"
apiVersion: policies.kyverno.io/v1beta1
kind: GeneratingPolicy
metadata:
  name: budgets
spec:
  evaluation:
    synchronize: {enabled: true}
    generateExisting: {enabled: true}
  matchConstraints:
    namespaceSelector:
      matchLabels: {tier: production}
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments, statefulsets]
  matchConditions:
  - name: replicated
    expression: object.spec.replicas >= 3
  variables:
  - name: budget
    expression: >-
      {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
       "metadata": {"name": "pdb-" + object.metadata.name},
       "spec": {"maxUnavailable": "25%", "selector": object.spec.selector}}
  generate:
  - expression: generator.Apply(object.metadata.namespace, [variables.budget])
"#;

#[test]
fn a_generating_policy_with_a_computed_name_is_reported_not_guessed() {
    // `"pdb-" + object.metadata.name` is CEL arithmetic: the reader refuses it.
    let i = run(GENERATING_PDB);
    assert!(i.spec.is_none());
    assert!(has_finding(&i, "generate[0]", Severity::NotMapped, "CEL"));
}

#[test]
fn a_generating_policy_budget_maps_with_its_replica_floor() {
    let i = run(&GENERATING_PDB.replace(r#""pdb-" + object.metadata.name"#, "\"pdb\""));
    assert_eq!(i.findings, vec![]);
    let s = spec(&i);
    assert_eq!(
        s.pod_disruption_budgets,
        Some(DisruptionBudgetControl {
            min_replicas: 3,
            max_unavailable: MaxUnavailable::Percent("25%".into())
        })
    );
    assert_eq!(
        s.namespace_selector
            .as_ref()
            .map(|s| s.match_labels.clone()),
        Some(BTreeMap::from([(
            "tier".to_string(),
            "production".to_string()
        )]))
    );
}

#[test]
fn a_clone_rule_reads_its_source_from_the_input_files_or_says_where_to_get_it() {
    let policy = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: clone-deny}
spec:
  generateExisting: true
  rules:
  - name: clone
    match: {any: [{resources: {kinds: [Namespace], names: [countly, kafka]}}]}
    generate:
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      name: deny
      namespace: "{{request.object.metadata.name}}"
      synchronize: true
      clone: {namespace: templates, name: deny-ingress}
"#;
    let missing = run(policy);
    assert!(missing.spec.is_none());
    assert!(has_finding(
        &missing,
        "clone",
        Severity::NotMapped,
        "kubectl get networkpolicy -n templates deny-ingress"
    ));

    let source = r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: templates}
spec: {podSelector: {}, policyTypes: [Ingress]}
"#;
    let found = run(&format!("{policy}{source}"));
    let np = network(&found);
    assert_eq!(
        np.default_deny,
        DefaultDeny {
            ingress: true,
            egress: false
        }
    );
    let s = spec(&found);
    assert_eq!(s.namespace_selector, None);
    let listed: Vec<&str> = s.namespaces.iter().map(|n| n.as_str()).collect();
    assert_eq!(listed, ["countly", "kafka"]);
    assert_eq!(
        found.ignored,
        vec!["NetworkPolicy templates/deny-ingress".to_string()]
    );
}

#[test]
fn pod_scoped_policies_and_namespace_preconditions_are_not_mapped() {
    let policy = r#"
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata: {name: odd}
spec:
  rules:
  - name: web-only
    match: {any: [{resources: {kinds: [Namespace]}}]}
    generate:
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      name: web
      namespace: "{{request.object.metadata.name}}"
      data: {spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress]}}
  - name: if-labelled
    match: {any: [{resources: {kinds: [Namespace]}}]}
    preconditions:
      all:
      - {key: "{{request.object.metadata.labels.team}}", operator: Equals, value: a}
    generate:
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      name: deny
      namespace: "{{request.object.metadata.name}}"
      data: {spec: {podSelector: {}, policyTypes: [Ingress]}}
"#;
    let i = run(policy);
    assert!(i.spec.is_none());
    assert!(has_finding(
        &i,
        "web-only",
        Severity::NotMapped,
        "some pods only"
    ));
    assert!(has_finding(
        &i,
        "if-labelled",
        Severity::NotMapped,
        "precondition"
    ));
}

#[test]
fn the_yaml_carries_the_findings_as_comments_and_reads_back_as_a_profile() {
    let i = run(CREATE_DEFAULT_PDB);
    let text = i.to_yaml().expect("encodes");
    assert!(text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .any(|l| l.contains("minAvailable")));
    let back: crate::api::HardeningProfile = serde_yaml::from_str(&text).expect("reads back");
    assert_eq!(Some(back.spec), i.spec);
    assert_eq!(back.metadata.name.as_deref(), Some("imported"));
}

#[test]
fn a_rule_generating_something_else_says_so_whatever_its_namespaces() {
    let policy = format!(
        "{ADD_NETWORKPOLICY}{}",
        r#"
  - name: quota
    match: {any: [{resources: {kinds: [Namespace]}}]}
    generate:
      apiVersion: v1
      kind: ResourceQuota
      name: quota
      namespace: "{{request.object.metadata.name}}"
      data: {spec: {hard: {pods: "10"}}}
"#
    );
    let i = run(&policy);
    assert!(
        has_finding(
            &i,
            "quota",
            Severity::NotMapped,
            "generates a ResourceQuota"
        ),
        "{:#?}",
        i.findings
    );
}
