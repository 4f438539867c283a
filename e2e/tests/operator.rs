//! The operator is installed and leads: from the Helm chart (its pods run under the
//! runner with the chart's ServiceAccount and RBAC), or as a local process.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use switchyard_e2e::{Env, OperatorMode, http_get, pod_ips, wait_for};

const LEASE: &str = "switchyard-operator";

#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_operator_installed() -> Result<()> {
    let env = Env::from_env()?;
    let client = env.client().await?;
    let ns = env.operator_namespace.as_str();
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let holder = wait_for(&format!("a holder of Lease {ns}/{LEASE}"), Duration::from_secs(60), || async {
        Ok(leases.get_opt(LEASE).await?.and_then(|l| l.spec?.holder_identity).filter(|h| !h.is_empty()))
    })
    .await?;
    println!("Lease {ns}/{LEASE} held by {holder}");

    match env.operator_mode {
        OperatorMode::Helm => {
            let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let dep = wait_for("Deployment switchyard-operator available", Duration::from_secs(60), || async {
                let d = deps.get("switchyard-operator").await?;
                let want = d.spec.replicas.unwrap_or(1);
                let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
                Ok((available >= want).then_some(d))
            })
            .await?;
            let selector = dep
                .spec
                .selector
                .match_labels
                .context("the Deployment has no matchLabels")?
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let pods = pod_ips(&client, ns, &selector).await?;
            if !pods.iter().any(|(name, _)| *name == holder) {
                bail!("the Lease holder {holder} is not one of the operator's pods {pods:?}");
            }
            // each replica really runs: its admin port answers on its pod IP (the runner
            // runs them), and the leader says it leads
            for (name, ip) in &pods {
                let r = http_get(*ip, 8080, "/readyz").await?;
                assert_eq!(r.status, 200, "operator pod {name} /readyz: {}", r.body);
            }
            let log = env.pod_log(ns, &holder);
            assert!(log.contains("leading: starting controllers"), "leader's log:\n{log}");
        }
        OperatorMode::Local => {
            let want = std::env::var("E2E_OPERATOR_IDENTITY").unwrap_or_else(|_| "local-operator".into());
            assert_eq!(holder, want, "the local operator holds the Lease");
            if let Ok(addr) = std::env::var("E2E_OPERATOR_ADMIN") {
                let addr: std::net::SocketAddr = addr.parse()?;
                let r = http_get(addr.ip(), addr.port(), "/readyz").await?;
                assert_eq!(r.status, 200, "local operator /readyz: {}", r.body);
            }
        }
    }
    Ok(())
}
