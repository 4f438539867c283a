//! The committed `crds/` and `schema/` must be exactly what the code generates.

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
