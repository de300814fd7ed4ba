//! The checked-in CRD YAML and `docs/crds.md` are what the Rust types
//! generate today.

use std::path::Path;

#[test]
fn checked_in_crds_and_reference_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crds/ lives in the workspace root");
    let files = skiff_crds::generate().expect("the CRDs generate");
    let mut stale = Vec::new();
    for f in &files {
        let on_disk = std::fs::read_to_string(root.join(&f.path)).unwrap_or_default();
        if on_disk != f.contents {
            stale.push(f.path.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "{} differ from what crds/src/ generates; run `make crds` and commit the result",
        stale.join(", ")
    );
}

#[test]
fn every_crd_has_status_short_name_and_printer_columns() {
    for (kind, crd) in skiff_crds::crds() {
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind} has a status subresource"
        );
        assert_eq!(
            crd.spec.names.short_names.as_ref().map(Vec::len),
            Some(1),
            "{kind}"
        );
        assert!(
            v.additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3),
            "{kind}"
        );
    }
}

#[test]
fn kafka_cluster_has_a_scale_subresource_an_hpa_can_drive() {
    let crd = skiff_crds::crds().remove(0).1;
    let scale = crd.spec.versions[0]
        .subresources
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
}
