use clap::Parser;
use switchyard_media_node::{Config, Node};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let node = Node::start(Config::parse()).await?;
    tokio::signal::ctrl_c().await?;
    node.drain();
    node.shutdown().await;
    Ok(())
}
