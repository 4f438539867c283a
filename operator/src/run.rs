//! The operator process: admin server, leader election, and the two controllers.
//!
//! Two replicas run; both serve `/healthz`, `/readyz` and `/metrics`, but only the one
//! holding the `switchyard-operator` Lease runs controllers. Losing the lease stops the
//! controllers at once (dropping their futures) and the replica goes back to waiting, so
//! two operators never reconcile the same cluster.
//!
//! # Permissions the operator needs (for the chart's ClusterRole)
//!
//! | API group | resources | verbs |
//! | --- | --- | --- |
//! | `switchyard.dev` | `mediaclusters` | get, list, watch |
//! | `switchyard.dev` | `mediaclusters/status` | get, patch |
//! | `switchyard.dev` | `rooms` | get, list, watch, create, patch, update, delete |
//! | `switchyard.dev` | `rooms/status` | get, patch |
//! | `""` | `pods` | get, list, watch, patch, delete |
//! | `""` | `services`, `configmaps`, `secrets`, `serviceaccounts` | get, list, watch, create, patch |
//! | `apps` | `statefulsets`, `deployments` | get, list, watch, create, patch |
//! | `policy` | `poddisruptionbudgets` | get, create, patch |
//! | `networking.k8s.io` | `networkpolicies`, `ingresses` | get, create, patch |
//! | `rbac.authorization.k8s.io` | `roles`, `rolebindings` | get, create, patch |
//! | `monitoring.coreos.com` | `servicemonitors` | get, create, patch |
//! | `apiextensions.k8s.io` | `customresourcedefinitions` | get |
//! | `events.k8s.io` | `events` | create, patch |
//! | `coordination.k8s.io` | `leases` | get, create, patch, update |
//!
//! The operator grants media-node's Role (`rooms` get/list/watch/create, `rooms/status`
//! get/patch), which Kubernetes allows only to a subject holding those permissions itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::events::Reporter;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use switchyard_api::{MediaCluster, Room};

use crate::controller::{Context, media_cluster, room};
use crate::metrics::Metrics;
use crate::nodes::HttpNodeApi;
use crate::render::{FIELD_MANAGER, Images};
use crate::{Error, Result};

fn runtime(what: &str) -> impl FnOnce(String) -> Error + '_ {
    move |e| Error::Runtime(format!("{what}: {e}"))
}

/// Command line (every flag also reads an environment variable).
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "switchyard-operator", version, about = "Reconciles Switchyard MediaClusters and Rooms")]
pub struct Args {
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, env = "SWITCHYARD_OPERATOR_ADMIN_ADDRESS", default_value = "0.0.0.0:8080")]
    pub admin_address: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SWITCHYARD_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// The namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// The Lease's name.
    #[arg(long, env = "SWITCHYARD_OPERATOR_LEASE", default_value = "switchyard-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a lease stays valid without renewal.
    #[arg(long, env = "SWITCHYARD_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// Default media-node image.
    #[arg(long, env = "SWITCHYARD_MEDIA_NODE_IMAGE")]
    pub media_node_image: Option<String>,
    /// Default turn-node image.
    #[arg(long, env = "SWITCHYARD_TURN_NODE_IMAGE")]
    pub turn_node_image: Option<String>,
    /// Timeout of each call to a node's admin endpoint, in milliseconds.
    #[arg(long, env = "SWITCHYARD_OPERATOR_NODE_TIMEOUT_MS", default_value_t = 2000)]
    pub node_timeout_ms: u64,
}

impl Args {
    /// Parse the command line and run until SIGTERM/SIGINT.
    pub async fn parse_and_run() -> Result<()> {
        <Self as clap::Parser>::parse().run().await
    }

    /// Run until SIGTERM/SIGINT.
    pub async fn run(self) -> Result<()> {
        let metrics = Arc::new(Metrics::new());
        let ready = Arc::new(AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind(self.admin_address)
            .await
            .map_err(|e| runtime("admin address")(e.to_string()))?;
        tracing::info!(address = %self.admin_address, "admin server listening");
        let admin = tokio::spawn(axum::serve(listener, admin_router(metrics.clone(), ready.clone())).into_future());

        let client = Client::try_default().await?;
        let identity = self.identity.clone().unwrap_or_else(|| format!("switchyard-operator-{}", std::process::id()));
        let manager = LeaseManagerBuilder::new(client.clone(), &self.lease_name)
            .with_namespace(&self.lease_namespace)
            .with_identity(&identity)
            .with_duration(self.lease_seconds)
            .with_grace(self.lease_seconds.div_ceil(3).max(1))
            .with_field_manager(lease_field_manager(&identity))
            .build()
            .await
            .map_err(|e| runtime("lease")(e.to_string()))?;
        let (mut leading, lease_task) = manager.watch().await;
        // Reaching the apiserver and the lease is what "ready" means for a standby too:
        // a rollout must be able to proceed while the other replica leads.
        ready.store(true, Ordering::Relaxed);

        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            // Wait for leadership (or shutdown).
            while !*leading.borrow_and_update() {
                tokio::select! {
                    changed = leading.changed() => changed.map_err(|e| runtime("lease watch")(e.to_string()))?,
                    () = &mut shutdown => return finish(leading, lease_task, admin).await,
                }
            }
            tracing::info!(%identity, "leading: starting controllers");
            metrics.set_leader(true);
            let controllers = self.controllers(client.clone(), metrics.clone(), &identity);
            tokio::pin!(controllers);
            let stop = loop {
                tokio::select! {
                    () = &mut controllers => break false,
                    changed = leading.changed() => {
                        changed.map_err(|e| runtime("lease watch")(e.to_string()))?;
                        if !*leading.borrow_and_update() { break false; }
                    }
                    () = &mut shutdown => break true,
                }
            };
            metrics.set_leader(false);
            tracing::warn!("leadership lost or controllers ended: controllers stopped");
            if stop {
                return finish(leading, lease_task, admin).await;
            }
        }
    }

    async fn controllers(&self, client: Client, metrics: Arc<Metrics>, identity: &str) {
        let (clusters, rooms): (Api<MediaCluster>, Api<Room>) = match &self.watch_namespace {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let owned = |c: Client| -> (Api<StatefulSet>, Api<Deployment>, Api<Service>, Api<ConfigMap>) {
            match &self.watch_namespace {
                Some(ns) => (
                    Api::namespaced(c.clone(), ns),
                    Api::namespaced(c.clone(), ns),
                    Api::namespaced(c.clone(), ns),
                    Api::namespaced(c, ns),
                ),
                None => (Api::all(c.clone()), Api::all(c.clone()), Api::all(c.clone()), Api::all(c)),
            }
        };
        let (sts, deps, svcs, cms) = owned(client.clone());
        let wc = || watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
        let mc_controller = Controller::new(clusters, watcher::Config::default())
            .owns(sts, wc())
            .owns(deps, wc())
            .owns(svcs, wc())
            .owns(cms, wc())
            .trigger_backoff(TriggerBackoff::default());
        let room_controller =
            Controller::new(rooms, watcher::Config::default()).trigger_backoff(TriggerBackoff::default());

        let mut images = Images::default();
        if let Some(i) = &self.media_node_image {
            images.media_node = i.clone();
        }
        if let Some(i) = &self.turn_node_image {
            images.turn_node = i.clone();
        }
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(identity.to_owned()) };
        let service_monitor_crd = detect_service_monitor_crd(client.clone()).await;
        let ctx = Arc::new(Context::new(
            client,
            reporter,
            metrics,
            Arc::new(HttpNodeApi::new(Duration::from_millis(self.node_timeout_ms))),
            images,
            service_monitor_crd,
            room_controller.store(),
            mc_controller.store(),
            rand::random(),
        ));

        let mcs = mc_controller.run(media_cluster::reconcile, media_cluster::error_policy, ctx.clone()).for_each(
            |r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "mediacluster controller");
                }
            },
        );
        // Rooms are only reconciled once the MediaCluster cache is filled: before that
        // every Room would look like it names a missing cluster.
        let clusters_ready = ctx.media_clusters.clone();
        let rooms = async move {
            if clusters_ready.wait_until_ready().await.is_err() {
                return;
            }
            room_controller
                .run(room::reconcile, room::error_policy, ctx)
                .for_each(|r| async move {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "room controller");
                    }
                })
                .await;
        };
        futures::join!(mcs, rooms);
    }
}

/// The field manager this replica writes the Lease with. It must differ between replicas:
/// a replica takes a free Lease with a server-side apply, and only another manager's
/// ownership of `holderIdentity` makes a second, concurrent apply fail. With one manager
/// for every replica both applies succeeded, and two standbys that found the Lease expired
/// at the same moment both led until the next renewal (12 s, seen in the e2e restarts
/// scenario). Field managers are at most 128 bytes.
fn lease_field_manager(identity: &str) -> String {
    let name = format!("{FIELD_MANAGER}/{identity}");
    if name.len() <= 128 {
        return name;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    identity.hash(&mut h);
    format!("{FIELD_MANAGER}/{:016x}", h.finish())
}

/// Backoff of a controller's watches, after a watch error.
///
/// kube-runtime applies one backoff to the merged stream of all of a controller's watches:
/// every error pauses all of them. When the apiserver restarts, each watch fails once
/// more after it is back (its connection to the old process ends), and those failures
/// come out one at a time, each after the pause the previous one earned. With kube's
/// default (0.8 s doubling to 30 s, plus jitter) the MediaCluster controller's five
/// watches stood still for 2.5 minutes after an apiserver restart, seeing neither new
/// nor deleted MediaClusters. Capped at [`TriggerBackoff::MAX`], that is a few seconds,
/// and a dead apiserver is still asked at most every `MAX`.
#[derive(Debug, Clone, Copy)]
struct TriggerBackoff {
    next: Duration,
}

impl TriggerBackoff {
    const MIN: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(2);
}

impl Default for TriggerBackoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Iterator for TriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for TriggerBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

async fn finish(
    leading: tokio::sync::watch::Receiver<bool>,
    lease_task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    admin: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<()> {
    // Closing the channel makes the lease task release the Lease, so the standby takes
    // over at once instead of after the lease expires.
    drop(leading);
    if let Err(e) = lease_task.await.map_err(|e| runtime("lease task")(e.to_string()))? {
        tracing::warn!(error = %e, "releasing the lease failed");
    }
    admin.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Whether the Prometheus Operator's ServiceMonitor CRD exists; without the permission
/// to look, assume not (ServiceMonitors are optional).
async fn detect_service_monitor_crd(client: Client) -> bool {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    match crds.get_opt("servicemonitors.monitoring.coreos.com").await {
        Ok(found) => found.is_some_and(|c| c.name_any() == "servicemonitors.monitoring.coreos.com"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check for the ServiceMonitor CRD; not creating ServiceMonitors");
            false
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

/// `/healthz` (the process runs), `/readyz` (it reached the apiserver and the lease),
/// `/metrics` (Prometheus text format).
pub fn admin_router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                if s.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                (
                    [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    s.metrics.encode(),
                )
                    .into_response()
            }),
        )
        .with_state(AdminState { metrics, ready })
}

#[cfg(test)]
mod tests {
    use kube::runtime::utils::Backoff as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn each_replica_writes_the_lease_as_its_own_field_manager() {
        let (a, b) = (lease_field_manager("op-7f9c-abcde"), lease_field_manager("op-7f9c-fghij"));
        assert_ne!(a, b);
        assert_eq!(a, format!("{FIELD_MANAGER}/op-7f9c-abcde"));
        let long = |c| format!("switchyard-operator-{}", String::from(c).repeat(120));
        let (x, y) = (lease_field_manager(&long('x')), lease_field_manager(&long('y')));
        assert!(x.len() <= 128 && y.len() <= 128 && x != y, "{x} {y}");
    }

    #[test]
    fn watch_errors_pause_the_watches_at_most_two_seconds_and_success_resets_the_pause() {
        let ms = Duration::from_millis;
        let mut b = TriggerBackoff::default();
        let waits: Vec<Duration> = b.by_ref().take(6).collect();
        assert_eq!(waits, [ms(250), ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]);
        b.reset();
        assert_eq!(b.next(), Some(ms(250)));
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn admin_endpoints() {
        let metrics = Arc::new(Metrics::new());
        metrics.reconciled("room", "ok");
        let ready = Arc::new(AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(axum::serve(listener, admin_router(metrics, ready.clone())).into_future());

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains(r#"switchyard_operator_reconciles_total{controller="room",result="ok"} 1"#), "{m}");
        assert!(m.contains("content-type: application/openmetrics-text"), "{m}");
        server.abort();
    }
}
