//! What a pod that Rampart runs may ask for: the `restricted` Pod Security Standard plus
//! Rampart's own limits (no `nodeName`, no ServiceAccount but `default`, no token, only the
//! volumes a check needs). Pure: nothing here calls the API server.
//!
//! The rules are written once, in [`RULES`], and read three ways so the places that refuse a
//! pod template can never disagree:
//! - [`check_pod_template`] / [`check_pod_spec`]: the controller's check, naming the exact field
//!   (`...containers[0].securityContext.privileged`), used for `InvalidSpec`;
//! - [`pod_spec_cel_rules`]: the same rules as CEL, for the CRD (`self` is the pod spec) and for
//!   a ValidatingAdmissionPolicy on Jobs (`object.spec.template.spec`);
//! - [`pod_template_schema`]: an OpenAPI schema for a pod template that declares every field the
//!   CEL rules read (CEL cannot see fields a schema leaves undeclared) and keeps all others.
//!
//! A field left empty is allowed wherever [`fill_restricted_defaults`] fills it with the
//! restricted value when Rampart builds the pod; only explicitly dangerous values are refused.

use serde_json::{json, Map, Value};

/// One field of a pod template that breaks a rule, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The full path of the field, e.g.
    /// `spec.backups.verify.job.template.spec.containers[0].securityContext.privileged`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// One rule as CEL: true when the pod spec is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CelRule {
    /// The expression, reading the pod spec at the `spec_path` it was made for.
    pub rule: String,
    /// Names the field relative to the pod spec (`containers[*].securityContext.privileged`)
    /// and says what is allowed.
    pub message: String,
    /// A JSONPath relative to the pod spec for a CRD rule's `fieldPath` (`.hostNetwork`, or the
    /// list for rules on list items, since `fieldPath` takes no index). A
    /// ValidatingAdmissionPolicy has no such field and ignores it.
    pub field_path: Option<String>,
}

/// What a field must be. "Unset" means absent (the API server drops nulls before CEL sees
/// them, and the controller treats null as absent too).
#[derive(Clone, Copy, Debug)]
enum Must {
    /// A boolean that may be false or unset.
    NotBeTrue,
    /// A boolean that may be true or unset.
    NotBeFalse,
    /// Unset.
    BeUnset,
    /// A list that is unset or empty.
    BeEmpty,
    /// A string that is unset or this value.
    EqualOrBeUnset(&'static str),
    /// An integer that is unset or not this value.
    NotEqualInt(i64),
    /// An integer that is unset or this value.
    EqualIntOrBeUnset(i64),
    /// A string that is unset or one of these.
    BeOneOf(&'static [&'static str]),
    /// A list of strings, each one of these.
    AllBeIn(&'static [&'static str]),
    /// A list of strings that is unset or includes this one.
    Include(&'static str),
    /// An object (a volume, a projected source) whose keys other than `name` are all in
    /// `allowed`. CEL sees only declared fields, so it refuses the `known_others` by name; the
    /// controller refuses any key outside `allowed`, which also covers kinds added later.
    OnlyKeys {
        allowed: &'static [&'static str],
        known_others: &'static [&'static str],
    },
}

/// The JSON type a field the rules read is declared with.
#[derive(Clone, Copy, Debug)]
enum Leaf {
    Bool,
    Int,
    Str,
    StrList,
    ObjList,
    Object,
    /// The scope's item itself (for [`Must::OnlyKeys`]).
    Item,
}

/// A list the rules iterate, with the bound that keeps the CEL cost estimate within the API
/// server's budget.
#[derive(Clone, Copy, Debug)]
struct ListField {
    /// Dotted path from the enclosing object.
    path: &'static str,
    max_items: u32,
}

const CONTAINERS: ListField = ListField {
    path: "containers",
    max_items: 32,
};
const INIT_CONTAINERS: ListField = ListField {
    path: "initContainers",
    max_items: 32,
};
const PORTS: ListField = ListField {
    path: "ports",
    max_items: 64,
};
const VOLUMES: ListField = ListField {
    path: "volumes",
    max_items: 64,
};
const PROJECTED_SOURCES: ListField = ListField {
    path: "projected.sources",
    max_items: 32,
};

/// Longest string the declared fields take; bounds the cost of comparing them.
const MAX_STRING: u32 = 253;

/// Where a rule applies: the pod spec, or each item of the lists named from it.
type Scope = &'static [ListField];
const POD: Scope = &[];
const EACH_CONTAINER: Scope = &[CONTAINERS];
const EACH_INIT_CONTAINER: Scope = &[INIT_CONTAINERS];
const EACH_CONTAINER_PORT: Scope = &[CONTAINERS, PORTS];
const EACH_INIT_CONTAINER_PORT: Scope = &[INIT_CONTAINERS, PORTS];
const EACH_VOLUME: Scope = &[VOLUMES];
const EACH_PROJECTED_SOURCE: Scope = &[VOLUMES, PROJECTED_SOURCES];

/// Why a rule exists, said in its message.
const PSS: &str = "the restricted Pod Security Standard";
const RAMPART: &str = "Rampart runs this pod with no privileges beyond a check's";

struct Rule {
    scope: Scope,
    /// Dotted path from the scope's object; empty for the object itself.
    path: &'static str,
    leaf: Leaf,
    must: Must,
    why: &'static str,
}

const fn rule(scope: Scope, path: &'static str, leaf: Leaf, must: Must, why: &'static str) -> Rule {
    Rule {
        scope,
        path,
        leaf,
        must,
        why,
    }
}

/// seLinuxOptions.type values the restricted standard allows ("" is the runtime's default).
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];
const SECCOMP_TYPES: &[&str] = &["RuntimeDefault", "Localhost"];
const APPARMOR_TYPES: &[&str] = &["RuntimeDefault", "Localhost"];
const VOLUME_KINDS_ALLOWED: &[&str] = &["configMap", "emptyDir", "downwardAPI", "projected"];
/// Every other volume source the core API knows, declared so CEL can refuse it by name.
const VOLUME_KINDS_OTHER: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];
const PROJECTION_KINDS_ALLOWED: &[&str] = &["configMap", "downwardAPI"];
const PROJECTION_KINDS_OTHER: &[&str] = &[
    "clusterTrustBundle",
    "podCertificate",
    "secret",
    "serviceAccountToken",
];

/// Rules on a security context, at pod level and on each container alike.
macro_rules! security_context_rules {
    ($scope:expr) => {
        [
            rule(
                $scope,
                "securityContext.runAsNonRoot",
                Leaf::Bool,
                Must::NotBeFalse,
                PSS,
            ),
            rule(
                $scope,
                "securityContext.runAsUser",
                Leaf::Int,
                Must::NotEqualInt(0),
                PSS,
            ),
            rule(
                $scope,
                "securityContext.seccompProfile.type",
                Leaf::Str,
                Must::BeOneOf(SECCOMP_TYPES),
                PSS,
            ),
            rule(
                $scope,
                "securityContext.appArmorProfile.type",
                Leaf::Str,
                Must::BeOneOf(APPARMOR_TYPES),
                PSS,
            ),
            rule(
                $scope,
                "securityContext.seLinuxOptions.type",
                Leaf::Str,
                Must::BeOneOf(SELINUX_TYPES),
                PSS,
            ),
            rule(
                $scope,
                "securityContext.seLinuxOptions.user",
                Leaf::Str,
                Must::BeUnset,
                PSS,
            ),
            rule(
                $scope,
                "securityContext.seLinuxOptions.role",
                Leaf::Str,
                Must::BeUnset,
                PSS,
            ),
            rule(
                $scope,
                "securityContext.windowsOptions.hostProcess",
                Leaf::Bool,
                Must::NotBeTrue,
                PSS,
            ),
        ]
    };
}

/// Rules on each container of one list.
macro_rules! container_rules {
    ($scope:expr, $ports:expr) => {
        [
            rule(
                $scope,
                "securityContext.privileged",
                Leaf::Bool,
                Must::NotBeTrue,
                PSS,
            ),
            rule(
                $scope,
                "securityContext.allowPrivilegeEscalation",
                Leaf::Bool,
                Must::NotBeTrue,
                PSS,
            ),
            rule(
                $scope,
                "securityContext.capabilities.add",
                Leaf::StrList,
                Must::AllBeIn(&["NET_BIND_SERVICE"]),
                PSS,
            ),
            rule(
                $scope,
                "securityContext.capabilities.drop",
                Leaf::StrList,
                Must::Include("ALL"),
                PSS,
            ),
            rule(
                $scope,
                "securityContext.procMount",
                Leaf::Str,
                Must::BeOneOf(&["Default"]),
                PSS,
            ),
            rule(
                $ports,
                "hostPort",
                Leaf::Int,
                Must::EqualIntOrBeUnset(0),
                PSS,
            ),
        ]
    };
}

/// The one table. Order is the order violations are reported in.
#[rustfmt::skip]
static RULES: std::sync::LazyLock<Vec<Rule>> = std::sync::LazyLock::new(|| {
    let mut rules = vec![
        rule(POD, "hostNetwork", Leaf::Bool, Must::NotBeTrue, PSS),
        rule(POD, "hostPID", Leaf::Bool, Must::NotBeTrue, PSS),
        rule(POD, "hostIPC", Leaf::Bool, Must::NotBeTrue, PSS),
        rule(POD, "nodeName", Leaf::Str, Must::BeUnset, RAMPART),
        rule(POD, "serviceAccountName", Leaf::Str, Must::EqualOrBeUnset("default"), RAMPART),
        rule(POD, "serviceAccount", Leaf::Str, Must::EqualOrBeUnset("default"), RAMPART),
        rule(POD, "automountServiceAccountToken", Leaf::Bool, Must::NotBeTrue, RAMPART),
        rule(POD, "ephemeralContainers", Leaf::ObjList, Must::BeEmpty, RAMPART),
        rule(POD, "securityContext.sysctls", Leaf::ObjList, Must::BeEmpty, RAMPART),
    ];
    rules.extend(security_context_rules!(POD));
    rules.extend(container_rules!(EACH_CONTAINER, EACH_CONTAINER_PORT));
    rules.extend(security_context_rules!(EACH_CONTAINER));
    rules.extend(container_rules!(EACH_INIT_CONTAINER, EACH_INIT_CONTAINER_PORT));
    rules.extend(security_context_rules!(EACH_INIT_CONTAINER));
    rules.extend([
        rule(EACH_VOLUME, "hostPath", Leaf::Object, Must::BeUnset, PSS),
        rule(EACH_VOLUME, "", Leaf::Item, Must::OnlyKeys { allowed: VOLUME_KINDS_ALLOWED, known_others: VOLUME_KINDS_OTHER }, RAMPART),
        rule(EACH_PROJECTED_SOURCE, "", Leaf::Item, Must::OnlyKeys { allowed: PROJECTION_KINDS_ALLOWED, known_others: PROJECTION_KINDS_OTHER }, RAMPART),
    ]);
    rules
});

impl Rule {
    /// The field as a message names it, relative to the pod spec:
    /// `containers[*].securityContext.privileged`, `volumes[*]`.
    fn display_field(&self) -> String {
        let mut parts: Vec<String> = self
            .scope
            .iter()
            .map(|l| format!("{}[*]", l.path))
            .collect();
        if !self.path.is_empty() {
            parts.push(self.path.to_string());
        }
        parts.join(".")
    }

    fn requirement(&self) -> String {
        match self.must {
            Must::NotBeTrue => "must be false or unset".into(),
            Must::NotBeFalse => "must be true or unset (Rampart sets it true)".into(),
            Must::BeUnset => "must be unset".into(),
            Must::BeEmpty => "must be empty".into(),
            Must::EqualOrBeUnset(v) => format!("must be {v:?} or unset"),
            Must::NotEqualInt(v) => format!("must not be {v}"),
            Must::EqualIntOrBeUnset(v) => format!("must be {v} or unset"),
            Must::BeOneOf(vs) => format!("must be one of {} or unset", quoted(vs)),
            Must::AllBeIn(vs) => format!("may hold only {}", quoted(vs)),
            Must::Include(v) => format!("must include {v:?} or be unset (Rampart sets it)"),
            Must::OnlyKeys { allowed, .. } => format!("only {} are allowed", allowed.join(", ")),
        }
    }

    fn message(&self) -> String {
        format!(
            "{}: {} ({})",
            self.display_field(),
            self.requirement(),
            self.why
        )
    }
}

fn quoted(vs: &[&str]) -> String {
    vs.iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// The controller's check.

/// Checks a pod template (`metadata` and `spec`) found at `field_path`; each violation names
/// its field below it (`<field_path>.spec.hostNetwork`). A template that is not an object, or
/// has no `spec`, breaks no rule here: whether it is a usable template is the caller's check.
pub fn check_pod_template(template: &Value, field_path: &str) -> Result<(), Vec<Violation>> {
    match template.get("spec") {
        Some(spec) => check_pod_spec(spec, &format!("{field_path}.spec")),
        None => Ok(()),
    }
}

/// Checks a pod spec found at `field_path`.
pub fn check_pod_spec(spec: &Value, field_path: &str) -> Result<(), Vec<Violation>> {
    let mut out: Vec<Violation> = Vec::new();
    for rule in RULES.iter() {
        for (object, at) in scope_items(spec, rule.scope, field_path) {
            for v in check_rule(rule, object, &at) {
                if !out.iter().any(|o| o.field == v.field) {
                    out.push(v);
                }
            }
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}

/// Each object a scope names, with its path: the pod spec itself, or each item of the lists.
fn scope_items<'a>(spec: &'a Value, scope: Scope, field_path: &str) -> Vec<(&'a Value, String)> {
    let mut items = vec![(spec, field_path.to_string())];
    for list in scope {
        items = items
            .into_iter()
            .flat_map(|(object, at)| {
                let entries = get_path(object, list.path)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().enumerate().collect::<Vec<_>>())
                    .unwrap_or_default();
                entries
                    .into_iter()
                    .map(move |(i, item)| (item, format!("{at}.{}[{i}]", list.path)))
            })
            .collect();
    }
    items
}

/// The value at a dotted path, absent when any step is missing or null.
fn get_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(object);
    }
    path.split('.')
        .try_fold(object, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

fn check_rule(rule: &Rule, object: &Value, at: &str) -> Vec<Violation> {
    let Some(value) = get_path(object, rule.path) else {
        return vec![];
    };
    let field = if rule.path.is_empty() {
        at.to_string()
    } else {
        format!("{at}.{}", rule.path)
    };
    let violation = |field: String| Violation {
        field,
        message: format!("{} ({})", rule.requirement(), rule.why),
    };
    let strings = || -> Vec<&str> {
        value
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let broken = match rule.must {
        Must::NotBeTrue => value.as_bool() == Some(true),
        Must::NotBeFalse => value.as_bool() == Some(false),
        Must::BeUnset => true,
        Must::BeEmpty => value.as_array().is_none_or(|a| !a.is_empty()),
        Must::EqualOrBeUnset(want) => value.as_str() != Some(want),
        Must::NotEqualInt(bad) => value.as_i64() == Some(bad),
        Must::EqualIntOrBeUnset(want) => value.as_i64() != Some(want),
        Must::BeOneOf(allowed) => value.as_str().is_none_or(|s| !allowed.contains(&s)),
        Must::AllBeIn(allowed) => {
            !value.is_array() || strings().iter().any(|s| !allowed.contains(s))
        }
        Must::Include(want) => !strings().contains(&want),
        Must::OnlyKeys { allowed, .. } => {
            // Each key outside the allowed ones is its own violation, so the kind is named.
            return value
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, v)| {
                            k.as_str() != "name" && !v.is_null() && !allowed.contains(&k.as_str())
                        })
                        .map(|(k, _)| violation(format!("{field}.{k}")))
                        .collect()
                })
                .unwrap_or_default();
        }
    };
    if broken {
        vec![violation(field)]
    } else {
        vec![]
    }
}

// ---------------------------------------------------------------------------------------------
// What every pod Rampart builds carries.

/// What [`fill_restricted_defaults`] makes true of every pod spec Rampart builds, as CEL over
/// the pod spec at `spec_path` (with the optional-field syntax an admission policy has). The
/// rules above let an unset field pass, because Rampart fills it; a Job or pod that reaches the
/// API server from Rampart's account without the filled values was not built by Rampart (a
/// stolen token), so the admission policy requires them too.
pub fn filled_pod_spec_cel_rules(spec_path: &str) -> Vec<CelRule> {
    let container = "c.?securityContext.?allowPrivilegeEscalation.orValue(true) == false && \
                     c.?securityContext.?capabilities.?drop.orValue([]).exists(d, d == 'ALL')";
    let rule = |rule: String, message: &str| CelRule {
        rule,
        message: message.to_string(),
        field_path: None,
    };
    vec![
        rule(
            format!("{spec_path}.?automountServiceAccountToken.orValue(true) == false"),
            "automountServiceAccountToken must be false, as Rampart sets it",
        ),
        rule(
            format!("{spec_path}.?securityContext.?runAsNonRoot.orValue(false) == true"),
            "securityContext.runAsNonRoot must be true, as Rampart sets it",
        ),
        rule(
            format!("{spec_path}.?securityContext.?seccompProfile.hasValue()"),
            "securityContext.seccompProfile must be set, as Rampart sets it",
        ),
        rule(
            format!("{spec_path}.containers.all(c, {container})"),
            "every container must set allowPrivilegeEscalation false and drop ALL capabilities, as Rampart sets them",
        ),
        rule(
            format!("{spec_path}.?initContainers.orValue([]).all(c, {container})"),
            "every init container must set allowPrivilegeEscalation false and drop ALL capabilities, as Rampart sets them",
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The same rules as CEL.

/// The rules as CEL expressions over the pod spec at `spec_path`: `self` for a CRD rule placed
/// on the pod spec's schema, `object.spec.template.spec` for a ValidatingAdmissionPolicy on
/// Jobs. Each is true when the pod spec is allowed.
pub fn pod_spec_cel_rules(spec_path: &str) -> Vec<CelRule> {
    RULES
        .iter()
        .map(|rule| CelRule {
            rule: cel_rule(rule, spec_path),
            message: rule.message(),
            field_path: Some(match rule.scope.first() {
                Some(list) => format!(".{}", list.path),
                None => format!(".{}", rule.path),
            }),
        })
        .collect()
}

/// `!has(a.b) || !has(a.b.c) || <inner>`: the guard that makes a missing step allowed.
fn unless_absent(base: &str, path: &str, inner: &str) -> String {
    let mut guards = Vec::new();
    let mut at = base.to_string();
    for key in path.split('.') {
        at = format!("{at}.{key}");
        guards.push(format!("!has({at})"));
    }
    guards.push(format!("({inner})"));
    guards.join(" || ")
}

fn cel_rule(rule: &Rule, spec_path: &str) -> String {
    cel_in_scope(rule, spec_path, rule.scope, 0)
}

/// The rule inside each enclosing list: `!has(s.containers) || s.containers.all(c0, ...)`.
fn cel_in_scope(rule: &Rule, base: &str, scope: Scope, depth: usize) -> String {
    match scope.split_first() {
        Some((list, rest)) => {
            let var = format!("i{depth}");
            let inner = cel_in_scope(rule, &var, rest, depth + 1);
            unless_absent(
                base,
                list.path,
                &format!("{base}.{}.all({var}, {inner})", list.path),
            )
        }
        None => cel_condition(rule, base),
    }
}

fn cel_list(vs: &[&str]) -> String {
    let items: Vec<String> = vs.iter().map(|v| format!("'{v}'")).collect();
    format!("[{}]", items.join(", "))
}

fn cel_condition(rule: &Rule, base: &str) -> String {
    let f = if rule.path.is_empty() {
        base.to_string()
    } else {
        format!("{base}.{}", rule.path)
    };
    let unless_absent_then = |cond: String| unless_absent(base, rule.path, &cond);
    match rule.must {
        Must::NotBeTrue => unless_absent_then(format!("{f} == false")),
        Must::NotBeFalse => unless_absent_then(format!("{f} == true")),
        Must::BeUnset => unless_absent_then("false".into()),
        Must::BeEmpty => unless_absent_then(format!("size({f}) == 0")),
        Must::EqualOrBeUnset(v) => unless_absent_then(format!("{f} == '{v}'")),
        Must::NotEqualInt(v) => unless_absent_then(format!("{f} != {v}")),
        Must::EqualIntOrBeUnset(v) => unless_absent_then(format!("{f} == {v}")),
        Must::BeOneOf(vs) => unless_absent_then(format!("{f} in {}", cel_list(vs))),
        Must::AllBeIn(vs) => unless_absent_then(format!("{f}.all(x, x in {})", cel_list(vs))),
        Must::Include(v) => unless_absent_then(format!("'{v}' in {f}")),
        Must::OnlyKeys { known_others, .. } => known_others
            .iter()
            .map(|k| format!("!has({f}.{k})"))
            .collect::<Vec<_>>()
            .join(" && "),
    }
}

// ---------------------------------------------------------------------------------------------
// The schema that lets CEL see the fields.

/// The OpenAPI schema of a pod template (`metadata`, `spec`) for a CRD: every field the rules
/// read is declared with its type and a bound, every other field is kept as given, and the
/// rules sit on `spec` (so `self` is the pod spec).
pub fn pod_template_schema() -> Map<String, Value> {
    let mut spec = open_object();
    for rule in RULES.iter() {
        declare(&mut spec, rule);
    }
    let validations: Vec<Value> = pod_spec_cel_rules("self")
        .into_iter()
        .map(|r| {
            let mut v = json!({"rule": r.rule, "message": r.message});
            if let Some(p) = r.field_path {
                v["fieldPath"] = json!(p);
            }
            v
        })
        .collect();
    spec["x-kubernetes-validations"] = Value::Array(validations);
    let mut template = Map::new();
    template.insert("type".into(), json!("object"));
    template.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    template.insert(
        "properties".into(),
        json!({"metadata": open_object(), "spec": spec}),
    );
    template
}

fn open_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Declares in `object` (an open object schema) the lists of the rule's scope, then its field.
fn declare(object: &mut Value, rule: &Rule) {
    let mut node = object;
    for list in rule.scope {
        let list_schema = ensure_path(
            node,
            list.path,
            || json!({"type": "array", "maxItems": list.max_items, "items": open_object()}),
        );
        node = &mut list_schema["items"];
    }
    match rule.must {
        Must::OnlyKeys { known_others, .. } => {
            for kind in known_others {
                ensure_path(node, kind, open_object);
            }
        }
        _ => {
            let leaf = leaf_schema(rule.leaf);
            ensure_path(node, rule.path, || leaf);
        }
    }
}

fn leaf_schema(leaf: Leaf) -> Value {
    match leaf {
        Leaf::Bool => json!({"type": "boolean"}),
        Leaf::Int => json!({"type": "integer", "format": "int64"}),
        Leaf::Str => json!({"type": "string", "maxLength": MAX_STRING}),
        Leaf::StrList => json!({"type": "array", "maxItems": 64,
            "items": {"type": "string", "maxLength": MAX_STRING}}),
        Leaf::ObjList => json!({"type": "array", "maxItems": 64, "items": open_object()}),
        Leaf::Object | Leaf::Item => open_object(),
    }
}

/// The schema node at a dotted path below `node`, made (open objects on the way, `last` at the
/// end) where missing.
fn ensure_path<'a>(node: &'a mut Value, path: &str, last: impl FnOnce() -> Value) -> &'a mut Value {
    let keys: Vec<&str> = path.split('.').collect();
    let mut node = node;
    let mut last = Some(last);
    for (i, key) in keys.iter().enumerate() {
        let properties = node
            .as_object_mut()
            .map(|o| {
                o.entry("properties")
                    .or_insert_with(|| Value::Object(Map::new()))
            })
            .and_then(Value::as_object_mut);
        let Some(properties) = properties else {
            unreachable!("schema nodes made here are objects")
        };
        let make = if i + 1 == keys.len() {
            last.take().map_or_else(open_object, |f| f())
        } else {
            open_object()
        };
        node = properties.entry(key.to_string()).or_insert(make);
    }
    node
}

// ---------------------------------------------------------------------------------------------
// What Rampart fills in.

/// Fills what the template leaves empty with the restricted values, so the pod passes the
/// restricted standard without the user spelling it out: no token, non-root, the runtime's
/// seccomp profile, no privilege escalation, every capability dropped. Explicit values are kept
/// (the rules above refuse the dangerous ones).
pub fn fill_restricted_defaults(spec: &mut Value) {
    let Some(pod) = spec.as_object_mut() else {
        return;
    };
    pod.insert("automountServiceAccountToken".into(), json!(false));
    let sc = object_at(pod, "securityContext");
    sc.entry("runAsNonRoot").or_insert(json!(true));
    sc.entry("seccompProfile")
        .or_insert(json!({"type": "RuntimeDefault"}));
    for list in [CONTAINERS.path, INIT_CONTAINERS.path] {
        let Some(containers) = pod.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let sc = object_at(container, "securityContext");
            sc.entry("allowPrivilegeEscalation").or_insert(json!(false));
            let caps = object_at(sc, "capabilities");
            caps.entry("drop").or_insert(json!(["ALL"]));
        }
    }
}

/// The object under `key`, made (replacing a null) when missing.
fn object_at<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    match entry.as_object_mut() {
        Some(o) => o,
        None => unreachable!("just made an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &str = "spec.backups.verify.job.template";

    fn template(spec: Value) -> Value {
        json!({ "spec": spec })
    }

    fn check_container(sc: Value) -> Vec<String> {
        fields(template(json!({"containers": [
            {"name": "ok", "image": "i"},
            {"name": "c", "image": "i", "securityContext": sc},
        ]})))
    }

    fn fields(t: Value) -> Vec<String> {
        match check_pod_template(&t, AT) {
            Ok(()) => vec![],
            Err(v) => v.into_iter().map(|v| v.field).collect(),
        }
    }

    #[test]
    fn a_plain_check_passes() {
        let t = template(json!({
            "containers": [{"name": "c", "image": "i",
                "volumeMounts": [{"name": "restored", "mountPath": "/data"}],
                "securityContext": {"runAsUser": 1000, "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}}],
            "serviceAccountName": "default",
            "automountServiceAccountToken": false,
            "volumes": [
                {"name": "cfg", "configMap": {"name": "x"}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "info", "projected": {"sources": [{"downwardAPI": {"items": []}}, {"configMap": {"name": "y"}}]}},
                {"name": "labels", "downwardAPI": {"items": []}},
            ],
        }));
        assert_eq!(fields(t), Vec::<String>::new());
    }

    #[test]
    fn dangerous_pod_fields_are_named() {
        let cases = [
            (json!({"hostNetwork": true}), "spec.hostNetwork"),
            (json!({"hostPID": true}), "spec.hostPID"),
            (json!({"hostIPC": true}), "spec.hostIPC"),
            (json!({"nodeName": "n1"}), "spec.nodeName"),
            (
                json!({"serviceAccountName": "admin"}),
                "spec.serviceAccountName",
            ),
            (
                json!({"automountServiceAccountToken": true}),
                "spec.automountServiceAccountToken",
            ),
            (
                json!({"securityContext": {"runAsUser": 0}}),
                "spec.securityContext.runAsUser",
            ),
            (
                json!({"securityContext": {"runAsNonRoot": false}}),
                "spec.securityContext.runAsNonRoot",
            ),
            (
                json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
                "spec.securityContext.seccompProfile.type",
            ),
            (
                json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}),
                "spec.securityContext.sysctls",
            ),
            (
                json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}),
                "spec.securityContext.seLinuxOptions.type",
            ),
            (
                json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
                "spec.volumes[0].hostPath",
            ),
            (
                json!({"volumes": [{"name": "ok", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "x"}}]}),
                "spec.volumes[1].secret",
            ),
            (
                json!({"volumes": [{"name": "p", "persistentVolumeClaim": {"claimName": "x"}}]}),
                "spec.volumes[0].persistentVolumeClaim",
            ),
            (
                json!({"volumes": [{"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}),
                "spec.volumes[0].projected.sources[0].serviceAccountToken",
            ),
        ];
        for (spec, want) in cases {
            let mut spec = spec;
            spec["containers"] = json!([{"name": "c", "image": "i"}]);
            assert_eq!(
                fields(template(spec.clone())),
                vec![format!("{AT}.{want}")],
                "{spec}"
            );
        }
    }

    #[test]
    fn dangerous_container_fields_are_named() {
        let cases = [
            (json!({"privileged": true}), "privileged"),
            (
                json!({"allowPrivilegeEscalation": true}),
                "allowPrivilegeEscalation",
            ),
            (json!({"runAsUser": 0}), "runAsUser"),
            (
                json!({"capabilities": {"add": ["SYS_ADMIN"]}}),
                "capabilities.add",
            ),
            (
                json!({"capabilities": {"drop": ["NET_RAW"]}}),
                "capabilities.drop",
            ),
            (json!({"procMount": "Unmasked"}), "procMount"),
            (
                json!({"appArmorProfile": {"type": "Unconfined"}}),
                "appArmorProfile.type",
            ),
            (
                json!({"windowsOptions": {"hostProcess": true}}),
                "windowsOptions.hostProcess",
            ),
        ];
        for (sc, want) in cases {
            assert_eq!(
                check_container(sc.clone()),
                vec![format!("{AT}.spec.containers[1].securityContext.{want}")],
                "{sc}"
            );
        }
        let t = template(json!({"containers": [{"name": "c", "image": "i"}],
            "initContainers": [{"name": "i", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}]}]}));
        assert_eq!(
            fields(t),
            vec![format!("{AT}.spec.initContainers[0].ports[0].hostPort")]
        );
    }

    #[test]
    fn an_unknown_volume_kind_is_refused_by_the_controller() {
        let t = template(json!({"containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "v", "someFutureKind": {}}]}));
        assert_eq!(
            fields(t),
            vec![format!("{AT}.spec.volumes[0].someFutureKind")]
        );
    }

    #[test]
    fn filled_defaults_pass_and_keep_explicit_values() {
        let mut spec = json!({"containers": [
            {"name": "a", "image": "i"},
            {"name": "b", "image": "i", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}},
        ], "securityContext": {"runAsUser": 1000}});
        fill_restricted_defaults(&mut spec);
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["securityContext"]["runAsUser"], 1000);
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        for c in 0..2 {
            let sc = &spec["containers"][c]["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        }
        assert_eq!(
            spec["containers"][1]["securityContext"]["capabilities"]["add"],
            json!(["NET_BIND_SERVICE"])
        );
        assert!(check_pod_spec(&spec, "spec").is_ok());
    }

    #[test]
    fn cel_rules_read_the_given_path_and_name_their_field() {
        let rules = pod_spec_cel_rules("object.spec.template.spec");
        assert_eq!(rules.len(), RULES.len());
        let host_network = rules
            .iter()
            .find(|r| r.message.starts_with("hostNetwork:"))
            .expect("a hostNetwork rule");
        assert_eq!(
            host_network.rule,
            "!has(object.spec.template.spec.hostNetwork) || (object.spec.template.spec.hostNetwork == false)"
        );
        assert_eq!(host_network.field_path.as_deref(), Some(".hostNetwork"));
        let privileged = rules
            .iter()
            .find(|r| {
                r.message
                    .starts_with("containers[*].securityContext.privileged:")
            })
            .expect("a privileged rule");
        assert!(
            privileged
                .rule
                .contains("object.spec.template.spec.containers.all(i0, "),
            "{}",
            privileged.rule
        );
        assert_eq!(privileged.field_path.as_deref(), Some(".containers"));
        for r in &rules {
            assert!(!r.rule.contains("self"), "{}", r.rule);
        }
    }

    #[test]
    fn the_schema_declares_every_field_a_rule_reads() {
        let schema = Value::Object(pod_template_schema());
        let spec = &schema["properties"]["spec"];
        let sc = &spec["properties"]["containers"]["items"]["properties"]["securityContext"]
            ["properties"];
        assert_eq!(sc["privileged"]["type"], "boolean");
        assert_eq!(sc["capabilities"]["properties"]["add"]["type"], "array");
        assert_eq!(spec["properties"]["containers"]["maxItems"], 32);
        let volume = &spec["properties"]["volumes"]["items"]["properties"];
        assert!(volume["hostPath"].is_object());
        assert!(volume["secret"].is_object());
        assert!(
            volume["projected"]["properties"]["sources"]["items"]["properties"]["secret"]
                .is_object()
        );
        assert_eq!(spec["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(
            spec["x-kubernetes-validations"].as_array().map(Vec::len),
            Some(RULES.len())
        );
    }
}
