//! The committed `crds/`, `charts/switchyard/crds/` and `schema/` must be exactly what
//! the code generates.

use std::path::Path;

#[test]
fn committed_generated_files_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stale = Vec::new();
    for artifact in switchyard_api::crd::artifacts().unwrap() {
        let committed = std::fs::read_to_string(root.join(artifact.path)).unwrap_or_default();
        if committed != artifact.contents {
            stale.push(artifact.path);
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run `cargo run -p switchyard-operator --bin crdgen` and commit the result"
    );
}

/// Helm installs the CRDs from the chart's `crds/` (crdgen writes it too): it must hold
/// every CRD of `crds/`, byte for byte, and nothing else.
#[test]
fn the_chart_carries_exactly_the_generated_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let chart_dir = root.join("charts/switchyard/crds");
    let mut expected = Vec::new();
    let mut stale = Vec::new();
    for artifact in switchyard_api::crd::artifacts().unwrap() {
        let Some(file) = artifact.path.strip_prefix("crds/") else { continue };
        expected.push(file.to_owned());
        if std::fs::read_to_string(chart_dir.join(file)).unwrap_or_default() != artifact.contents {
            stale.push(file);
        }
    }
    assert!(!expected.is_empty());
    assert!(
        stale.is_empty(),
        "stale charts/switchyard/crds/ files {stale:?}: run `cargo run -p switchyard-operator --bin crdgen` and commit the result"
    );
    let mut on_disk: Vec<String> = std::fs::read_dir(&chart_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", chart_dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    expected.sort();
    assert_eq!(on_disk, expected, "charts/switchyard/crds/ holds a file crdgen does not write");
}
