//! `switchyard-operator`: see the library docs.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    Ok(switchyard_operator::run::Args::parse_and_run().await?)
}
