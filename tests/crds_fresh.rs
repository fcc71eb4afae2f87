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

#[test]
fn helm_chart_carries_the_same_crd() {
    let chart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/rampart/crds/rampart.dev_hardeningprofiles.yaml"
    );
    let Ok(in_chart) = std::fs::read_to_string(chart) else {
        panic!("the chart has no CRD at {chart}: run `make crds`");
    };
    let generated = rampart::api::crd_yaml().expect("the CRD serializes");
    assert!(
        in_chart == generated,
        "charts/rampart/crds/ is stale: run `make crds` and commit the result"
    );
}
