//! `turn-node`: see the library docs.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config = switchyard_turn_node::Args::parse().into_config()?;
    switchyard_turn_node::run_until_signal(config).await?;
    Ok(())
}
