//! `config/admission/` and the chart's copy must hold exactly the policy the Rust code
//! generates (`rampart admission-policy`); `make crds` refreshes both.

use rampart::admission_policy::{admission_policy_yaml, Identity};

fn generated() -> String {
    admission_policy_yaml(&Identity::default()).expect("the policy serializes")
}

#[test]
fn config_admission_policy_is_the_generated_one() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/admission/admission_policy.yaml"
    );
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == generated(),
        "{path} is stale: run `make crds` and commit the result"
    );
}

/// The chart's template prints this file with its own names and the release's account.
#[test]
fn helm_chart_carries_the_same_admission_policy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/rampart/admission/admission_policy.yaml"
    );
    let in_chart = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        in_chart == generated(),
        "{path} is stale: run `make crds` and commit the result"
    );
}
