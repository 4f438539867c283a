//! `prom-targets <dir>`: writes Prometheus file_sd targets for the ServiceMonitors of the
//! cluster in `KUBECONFIG` (see `switchyard_e2e::prom`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: prom-targets <dir>"))?;
    let client = kube::Client::try_default().await?;
    switchyard_e2e::prom::follow(client, std::path::Path::new(&dir)).await
}
