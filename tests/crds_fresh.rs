//! `crds/` must hold exactly what the Rust types generate; `make crds` refreshes it.

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/rampart.dev_hardeningprofiles.yaml"
    );
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    let generated = rampart::api::crd_yaml().expect("the CRD serializes");
    assert!(
        on_disk == generated,
        "crds/ is stale: run `make crds` and commit the result"
    );
}

/// The chart prints this file from `templates/crds.yaml` (a template, so `helm upgrade`
/// updates the CRD; Helm never upgrades files in a chart's `crds/`).
#[test]
fn helm_chart_carries_the_same_crd() {
    let chart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/rampart/crd/rampart.dev_hardeningprofiles.yaml"
    );
    let Ok(in_chart) = std::fs::read_to_string(chart) else {
        panic!("the chart has no CRD at {chart}: run `make crds`");
    };
    let generated = rampart::api::crd_yaml().expect("the CRD serializes");
    assert!(
        in_chart == generated,
        "charts/rampart/crd/ is stale: run `make crds` and commit the result"
    );
}

/// A file left in the chart's `crds/` would be installed once and never upgraded, beside the
/// template that is.
#[test]
fn helm_chart_has_no_crds_directory() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/rampart/crds");
    assert!(
        !std::path::Path::new(dir).exists(),
        "{dir} exists: the CRD belongs in charts/rampart/crd/ (templates/crds.yaml prints it)"
    );
}
