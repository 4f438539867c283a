//! Writes the generated artefacts (CRDs, protocol schema) below the current directory.
fn main() -> anyhow::Result<()> {
    switchyard_operator::write_generated(std::path::Path::new("."))
}
