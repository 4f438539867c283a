//! `pod-runner`: see `switchyard_e2e::runner`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POD_RUNNER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    Ok(switchyard_e2e::runner::Args::parse_and_run().await?)
}
