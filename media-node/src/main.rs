use clap::Parser;
use switchyard_media_node::config::read_file;
use switchyard_media_node::{Config, Node};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let mut cfg = Config::parse();
    if let Some(path) = cfg.config.clone() {
        cfg.apply_file(&read_file(&path)?, |k| std::env::var(k).ok())?;
    }
    cfg.apply_bind_ip();
    Node::start(cfg).await?.run_until_signal().await;
    Ok(())
}
