//! What the scenario tests (`tests/*.rs`) share: the cluster `e2e/run.sh` started, a
//! client for it, waiting with a clear error, pods and their IPs, a tiny HTTP client for
//! pod IPs, and the runner's per-pod logs for failure messages.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the operator runs in this cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorMode {
    /// Installed by `helm install` from `charts/switchyard`: pods the runner runs.
    Helm,
    /// A local process with the admin kubeconfig (no chart, or `E2E_OPERATOR=local`).
    Local,
}

/// The cluster `e2e/run.sh` started, from the environment it sets.
#[derive(Clone, Debug)]
pub struct Env {
    /// Admin kubeconfig (`E2E_KUBECONFIG`, else `KUBECONFIG`).
    pub kubeconfig: PathBuf,
    /// The cluster's state dir (`E2E_STATE_DIR`).
    pub state_dir: PathBuf,
    /// The pod-runner's state dir (`E2E_RUNNER_DIR`); pod logs are in its `logs/`.
    pub runner_dir: PathBuf,
    /// `E2E_OPERATOR_MODE`: `helm` or `local`.
    pub operator_mode: OperatorMode,
    /// Namespace of the operator and its Lease (`E2E_OPERATOR_NAMESPACE`).
    pub operator_namespace: String,
    /// The Kubernetes version the cluster runs (`E2E_K8S_VERSION`), if known.
    pub k8s_version: Option<String>,
}

impl Env {
    /// Read the environment `e2e/run.sh` sets; fails with a hint when it is not set.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let kubeconfig = var("E2E_KUBECONFIG")
            .or_else(|| var("KUBECONFIG"))
            .ok_or_else(|| anyhow!("E2E_KUBECONFIG is not set: run the e2e tests with e2e/run.sh"))?;
        let state_dir = PathBuf::from(
            var("E2E_STATE_DIR")
                .or_else(|| var("SWITCHYARD_E2E_DIR"))
                .ok_or_else(|| anyhow!("E2E_STATE_DIR is not set: run the e2e tests with e2e/run.sh"))?,
        );
        let runner_dir = var("E2E_RUNNER_DIR").map_or_else(|| state_dir.join("runner"), PathBuf::from);
        let operator_mode = match var("E2E_OPERATOR_MODE").as_deref() {
            Some("helm") => OperatorMode::Helm,
            _ => OperatorMode::Local,
        };
        Ok(Self {
            kubeconfig: PathBuf::from(kubeconfig),
            state_dir,
            runner_dir,
            operator_mode,
            operator_namespace: var("E2E_OPERATOR_NAMESPACE").unwrap_or_else(|| "switchyard-system".into()),
            k8s_version: var("E2E_K8S_VERSION"),
        })
    }

    /// A client with the admin kubeconfig.
    pub async fn client(&self) -> Result<Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig).with_context(|| format!("{}", self.kubeconfig.display()))?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// The runner's log of pod `namespace/name` (all its starts), or a note that there is none.
    pub fn pod_log(&self, namespace: &str, name: &str) -> String {
        let path = self.runner_dir.join("logs").join(format!("{namespace}_{name}.log"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| format!("(no pod log {}: {e})", path.display()))
    }

    /// The last `lines` lines of every pod log in `namespace`, for failure messages.
    pub fn pod_logs_tail(&self, namespace: &str, lines: usize) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.runner_dir.join("logs")) else { return out };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if !name.starts_with(&format!("{namespace}_")) {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("----- {name} (last {lines} lines)\n"));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Merge `b` into `a` as a JSON merge patch would, without deleting on null (objects are
/// merged key by key; anything else replaces).
pub fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Poll `check` every 200 ms until it returns `Ok(Some(v))`. `Ok(None)` and `Err` mean
/// "not yet"; on timeout the error names `what` and the last thing `check` said.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::from("not yet");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long a state-following wait may take: it fails when what it watches has not
/// changed for `stall` (nothing is happening), or after `limit` in all (something keeps
/// changing without getting there). A loaded machine makes each step slower, not
/// absent, so `stall` is what catches a stuck cluster.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// Longest time without any change of the observed state.
    pub stall: Duration,
    /// Longest time in all.
    pub limit: Duration,
}

impl Patience {
    /// Waits for pods the operator creates: 90 s without progress, 10 min in all.
    pub const PODS: Patience = Patience { stall: Duration::from_secs(90), limit: Duration::from_secs(600) };
}

/// One line per pod: name, phase, IP, readiness, restarts, the container's waiting reason.
pub fn describe_pods(pods: &[std::sync::Arc<Pod>]) -> String {
    if pods.is_empty() {
        return "no pods".into();
    }
    let mut lines: Vec<String> = pods
        .iter()
        .map(|p| {
            let st = p.status.as_ref();
            let ready = st
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .map_or("-", |c| c.status.as_str());
            let cs = st.and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first());
            let waiting = cs
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone())
                .map(|r| format!(" waiting={r}"))
                .unwrap_or_default();
            format!(
                "{} {}{} ip={} ready={ready} restarts={}{waiting}{}",
                p.metadata.name.as_deref().unwrap_or("?"),
                st.and_then(|s| s.phase.as_deref()).unwrap_or("(no phase)"),
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() { " (unscheduled)" } else { "" },
                st.and_then(|s| s.pod_ip.as_deref()).unwrap_or("-"),
                cs.map_or(0, |c| c.restart_count),
                if p.metadata.deletion_timestamp.is_some() { " (terminating)" } else { "" },
            )
        })
        .collect();
    lines.sort();
    lines.join("; ")
}

/// Watch the pods matching `selector` in `namespace` until `check` over them returns a
/// value. Evaluated on every watch event (and every second, for time-based checks); on
/// failure the error names `what`, how it stopped (stalled or over the limit) and the
/// pods as last seen, plus `context()`'s text (such as the owning workloads' status).
pub async fn wait_pods<T, F, C, Fut>(
    client: &Client,
    namespace: &str,
    selector: &str,
    what: &str,
    patience: Patience,
    mut check: F,
    context: C,
) -> Result<T>
where
    F: FnMut(&[std::sync::Arc<Pod>]) -> Option<T>,
    C: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let (store, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default().labels(selector)).default_backoff());
    let mut stream = std::pin::pin!(stream);
    let start = Instant::now();
    let mut last = String::from("(no listing yet)");
    let mut changed = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = stream.next() => if ev.is_none() { bail!("the pod watch for {what} ended") },
            _ = tick.tick() => {}
        }
        if tokio::time::timeout(Duration::ZERO, store.wait_until_ready()).await.is_err() {
            continue; // before the first listing, no pods means nothing yet
        }
        let mut pods = store.state();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        if let Some(v) = check(&pods) {
            return Ok(v);
        }
        let now = describe_pods(&pods);
        if now != last {
            last = now;
            changed = Instant::now();
        }
        let stalled = changed.elapsed() >= patience.stall;
        if stalled || start.elapsed() >= patience.limit {
            let how = if stalled {
                format!("nothing changed for {:?}", patience.stall)
            } else {
                format!("still changing after {:?}", patience.limit)
            };
            bail!(
                "gave up waiting for {what} after {:.0?} ({how}); pods {selector}: {last}; {}",
                start.elapsed(),
                context().await
            );
        }
    }
}

/// What the fleets of the MediaCluster(s) in `namespace` look like: the workloads'
/// replica counts and the MediaClusters' conditions; the context of a failed pod wait.
pub async fn describe_fleets(client: &Client, namespace: &str) -> String {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let mut out = Vec::new();
    match Api::<Deployment>::namespaced(client.clone(), namespace).list(&ListParams::default()).await {
        Ok(list) => out.extend(list.items.iter().map(|d| {
            let st = d.status.clone().unwrap_or_default();
            format!(
                "Deployment {}: spec {} replicas {} ready {} available {}",
                d.metadata.name.as_deref().unwrap_or("?"),
                d.spec.replicas.unwrap_or(1),
                st.replicas.unwrap_or(0),
                st.ready_replicas.unwrap_or(0),
                st.available_replicas.unwrap_or(0)
            )
        })),
        Err(e) => out.push(format!("Deployments: {e}")),
    }
    match Api::<StatefulSet>::namespaced(client.clone(), namespace).list(&ListParams::default()).await {
        Ok(list) => out.extend(list.items.iter().map(|s| {
            let st = s.status.clone().unwrap_or_default();
            format!(
                "StatefulSet {}: spec {} replicas {} ready {}",
                s.metadata.name.as_deref().unwrap_or("?"),
                s.spec.replicas.unwrap_or(1),
                st.replicas,
                st.ready_replicas.unwrap_or(0)
            )
        })),
        Err(e) => out.push(format!("StatefulSets: {e}")),
    }
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("switchyard.dev", "v1alpha1", "MediaCluster"),
        "mediaclusters",
    );
    match Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &ar).list(&ListParams::default()).await {
        Ok(list) => out.extend(list.items.iter().map(|mc| {
            let conds: Vec<String> = mc.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{}={} ({}: {})", c["type"], c["status"], c["reason"], c["message"]).replace('"', ""))
                .collect();
            format!("MediaCluster {}: {}", mc.metadata.name.as_deref().unwrap_or("?"), conds.join(", "))
        })),
        Err(e) => out.push(format!("MediaClusters: {e}")),
    }
    out.join("; ")
}

/// The running pods (with an IP, not terminating) among `pods`, as `(name, IP)`.
pub fn running_ips(pods: &[std::sync::Arc<Pod>]) -> Vec<(String, IpAddr)> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| Some((p.metadata.name.clone()?, pod_ip(p)?)))
        .collect()
}

/// A namespace for one test, deleted by [`TestNamespace::delete`] (a failed test leaves it
/// for inspection; `run.sh` tears the cluster down anyway).
#[derive(Clone)]
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    client: Client,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace").field("name", &self.name).finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// Create `<prefix>-<random suffix>`.
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let suffix = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
        let name = format!("{prefix}-{}", &suffix[suffix.len() - 6..]);
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
        // pods need the namespace's default ServiceAccount (the controller-manager adds it)
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(&format!("ServiceAccount {name}/default"), Duration::from_secs(30), || async {
            Ok(sa.get_opt("default").await?.map(|_| ()))
        })
        .await?;
        Ok(Self { name, client: client.clone() })
    }

    /// Delete it (its pods are stopped by the runner).
    pub async fn delete(self) -> Result<()> {
        Api::<Namespace>::all(self.client).delete(&self.name, &DeleteParams::default()).await?;
        Ok(())
    }
}

/// Running pods with an IP matching `selector` in `namespace`, sorted by name.
pub async fn running_pods(client: &Client, namespace: &str, selector: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut list: Vec<Pod> = pods
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter(|p| pod_ip(p).is_some())
        .collect();
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(list)
}

/// A pod's IP.
pub fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// `(pod name, pod IP)` of the running pods matching `selector`.
pub async fn pod_ips(client: &Client, namespace: &str, selector: &str) -> Result<Vec<(String, IpAddr)>> {
    Ok(running_pods(client, namespace, selector)
        .await?
        .iter()
        .filter_map(|p| Some((p.metadata.name.clone()?, pod_ip(p)?)))
        .collect())
}

/// A Secret's data.
pub async fn secret_data(client: &Client, namespace: &str, name: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    let s = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("Secret {namespace}/{name}"))?;
    Ok(s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// An HTTP response: status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// `GET http://<ip>:<port><path>` with HTTP/1.0 (so the body ends with the connection),
/// 3 s in all.
pub async fn http_get(ip: IpAddr, port: u16, path: &str) -> Result<Response> {
    let addr = SocketAddr::new(ip, port);
    let work = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: switchyard-e2e\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        parse_response(&buf)
    };
    tokio::time::timeout(Duration::from_secs(3), work)
        .await
        .map_err(|_| anyhow!("GET http://{addr}{path}: timed out"))?
        .with_context(|| format!("GET http://{addr}{path}"))
}

/// Parse a close-delimited HTTP/1.x response.
pub fn parse_response(buf: &[u8]) -> Result<Response> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("no end of headers in {text:?}"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    Ok(Response { status, body: body.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nready").unwrap();
        assert_eq!(r, Response { status: 200, body: "ready".into() });
        assert!(parse_response(b"garbage").is_err());
    }

    #[tokio::test]
    async fn wait_for_names_what_it_waited_for() {
        let err = wait_for("the moon", Duration::from_millis(300), || async { Ok::<Option<()>, _>(None) })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("waiting for the moon") && err.contains("last: not yet"), "{err}");
        let err = wait_for("x", Duration::from_millis(300), || async { Err::<Option<()>, _>(anyhow!("boom")) })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("last: boom"), "{err}");
        let v = wait_for("y", Duration::from_secs(1), || async { Ok(Some(7)) }).await.unwrap();
        assert_eq!(v, 7);
    }
}
