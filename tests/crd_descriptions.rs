//! What `kubectl explain hardeningprofile...` shows is the CRD's descriptions, which are the
//! Rust doc comments: they must read as the API, never as our source code.

/// Every `description` in the generated CRD, with the schema path it sits at.
fn descriptions() -> Vec<(String, String)> {
    let yaml = rampart::api::crd_yaml().expect("the CRD serializes");
    let crd: serde_json::Value = serde_yaml::from_str(&yaml).expect("the CRD parses");
    let mut found = Vec::new();
    collect(&crd, String::new(), &mut found);
    found
}

fn collect(node: &serde_json::Value, path: String, found: &mut Vec<(String, String)>) {
    match node {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("description", serde_json::Value::String(text)) => {
                        found.push((path.clone(), text.clone()))
                    }
                    _ => collect(value, format!("{path}.{key}"), found),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect(item, path.clone(), found);
            }
        }
        _ => {}
    }
}

/// The Rust names a doc comment can leak: a constant (`DRIFT_LIST_LIMIT`), an intra-doc link
/// (`` [`Foo`] ``), a generic type (`Option<...>`, `Vec<...>`), a path (`crate::api`), or a
/// snake_case field name where the API spells it in camelCase.
fn rust_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        // `RAMPART_*` are the environment variables a hook's containers get: part of the API.
        let screaming = word.contains('_')
            && !word.starts_with("RAMPART_")
            && word
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        let snake = word.contains('_')
            && word.chars().any(|c| c.is_ascii_lowercase())
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if screaming || snake {
            names.push(word.to_string());
        }
    }
    for marker in ["[`", "Option<", "Vec<", "::", "Self", "crate"] {
        if text.contains(marker) {
            names.push(marker.to_string());
        }
    }
    names
}

#[test]
fn rust_names_are_recognised() {
    assert_eq!(
        rust_names("at most `DRIFT_LIST_LIMIT` of them"),
        ["DRIFT_LIST_LIMIT"]
    );
    assert_eq!(rust_names("see [`Summary`]"), ["[`"]);
    assert_eq!(
        rust_names("an Option<String> or crate::api"),
        ["Option<", "::", "crate"]
    );
    assert_eq!(rust_names("the rotation_id field"), ["rotation_id"]);
    assert!(rust_names("the variable `RAMPART_SECRET_NAME`").is_empty());
    assert!(
        rust_names("Objects that depart from the profile, at most 50 (kube-system).").is_empty()
    );
}

#[test]
fn explain_shows_no_rust_names() {
    let leaks: Vec<String> = descriptions()
        .into_iter()
        .filter_map(|(path, text)| {
            let names = rust_names(&text);
            (!names.is_empty()).then(|| format!("{path}: {names:?}"))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "CRD descriptions (what `kubectl explain` prints) name Rust items; rewrite these doc \
         comments:\n{}",
        leaks.join("\n")
    );
}

#[test]
fn profiles_are_listed_by_kubectl_get_rampart() {
    let yaml = rampart::api::crd_yaml().expect("the CRD serializes");
    let crd: serde_json::Value = serde_yaml::from_str(&yaml).expect("the CRD parses");
    let categories = &crd["spec"]["names"]["categories"];
    assert!(
        categories
            .as_array()
            .is_some_and(|c| c.iter().any(|v| v == "rampart")),
        "the CRD has no `rampart` category: {categories}"
    );
}
