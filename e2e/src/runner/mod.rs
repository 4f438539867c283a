//! `pod-runner`: the kubelet of the e2e cluster's kwok nodes, for our own images.
//!
//! kwok marks pods on its fake nodes Running and gives them an IP, but runs nothing. The
//! runner watches those pods and, for each whose image is one of ours, runs the real
//! binary the way a kubelet would run the container:
//!
//! ```text
//!  apiserver ──watch Pods, Nodes, ConfigMaps, Secrets──► Runner (this module)
//!                                                         │ decide(): Running, has IP, on a
//!                                                         │ kwok node, image → binary
//!                                                         ▼
//!                              one Worker per pod uid (pod.rs): netns with the pod IP
//!                              (net.rs), volumes (volumes.rs), env/args (env.rs,
//!                              expand.rs), mounts + argv (launch.rs), the image's
//!                              root and securityContext (oci.rs), probes (probe.rs),
//!                              pod status (status.rs), restarts, SIGTERM/SIGKILL on
//!                              deletion
//! ```
//!
//! Pure parts (decide, env, expand, image, launch, volumes' content) are unit-tested;
//! the e2e scenario tests exercise the whole.

pub mod decide;
pub mod env;
pub mod expand;
pub mod image;
pub mod launch;
pub mod net;
pub mod oci;
mod pod;
pub mod probe;
pub mod status;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Config};
use tokio::sync::mpsc;
use tokio::time::Instant;

use decide::{Decision, FAKE_NODE_ANNOTATION, decide, grace_period};
use image::BinaryMap;
use launch::Tools;
use pod::{Handle, Shared};

/// Why a pod cannot run, or the runner cannot work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod asks for something the runner cannot do, or refers to something missing.
    #[error("{0}")]
    Spec(String),
    /// A host-side step (network namespace, tools, kubeconfig) failed.
    #[error("{0}")]
    Setup(String),
    /// A call to the apiserver failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// How long children get on runner shutdown before SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Command line.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "pod-runner", about = "Runs Switchyard's binaries as the pods of kwok nodes")]
pub struct Args {
    /// The cluster's (admin) kubeconfig. Pods never see it: they get their own token.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Per-pod state (volumes, home) and `logs/<namespace>_<pod>.log`.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Directory of the default binaries (media-node, turn-node, switchyard-operator);
    /// default: the runner's own directory.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// `<image-name>=<path>`: run <path> for images whose last path segment (without tag
    /// or digest) is <image-name>. Repeatable; overrides the defaults.
    #[arg(long = "binary")]
    pub binaries: Vec<String>,
    /// A directory of OCI archives (`<image-name>.tar`, as `scripts/images` writes them):
    /// containers of those images run from the image's root filesystem, with its
    /// entrypoint, environment and user, under the pod's securityContext, instead of a
    /// binary on the host. Repeatable; a later directory's image of the same name wins.
    #[arg(long)]
    pub images: Vec<PathBuf>,
    /// KUBERNETES_SERVICE_HOST for pods; default: the kubeconfig server's host.
    #[arg(long)]
    pub api_host: Option<String>,
    /// KUBERNETES_SERVICE_PORT for pods; default: the kubeconfig server's port.
    #[arg(long)]
    pub api_port: Option<u16>,
}

impl Args {
    /// Parse the command line and run until SIGTERM/SIGINT.
    pub async fn parse_and_run() -> Result<(), Error> {
        <Self as clap::Parser>::parse().run().await
    }

    /// Run until SIGTERM/SIGINT; then stop every pod process.
    pub async fn run(self) -> Result<(), Error> {
        if !rustix::process::geteuid().is_root() {
            return Err(Error::Setup("pod-runner must run as root: it creates network and mount namespaces".into()));
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        let tools = Tools::find(&path)?;
        let bin_dir = match self.bin_dir.clone() {
            Some(d) => d,
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .ok_or_else(|| Error::Setup("--bin-dir: cannot find the runner's own directory".into()))?,
        };
        let mut binaries = BinaryMap::new(&bin_dir, &self.binaries).map_err(Error::Setup)?;
        let mut images = std::collections::BTreeMap::new();
        for dir in &self.images {
            images.extend(oci::unpack_dir(dir, &self.state_dir.join("images"))?);
        }
        for image in images.values() {
            tracing::info!("image {} {} unpacked at {}", image.name, image.digest, image.rootfs.display());
            binaries.set(&image.name, image.rootfs.clone());
        }
        let images = images.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        for (name, path) in binaries.entries() {
            if !path.is_file() && !path.is_dir() {
                tracing::warn!("binary for image {name}: {} does not exist (pods with it will fail)", path.display());
            }
        }

        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| Error::Setup(format!("kubeconfig {}: {e}", self.kubeconfig.display())))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Setup(format!("kubeconfig {}: {e}", self.kubeconfig.display())))?;
        let api_host = self.api_host.clone().or_else(|| config.cluster_url.host().map(str::to_owned));
        let api_port = self.api_port.or_else(|| config.cluster_url.port_u16()).unwrap_or(443);
        let api_host = api_host.ok_or_else(|| Error::Setup("--api-host: not in the kubeconfig".into()))?;
        let client = Client::try_from(config)?;

        let mut base_env = vec![("PATH".to_owned(), path)];
        for k in ["RUST_LOG", "RUST_BACKTRACE"] {
            if let Ok(v) = std::env::var(k) {
                base_env.push((k.to_owned(), v));
            }
        }
        let port = api_port.to_string();
        let service_env = vec![
            ("KUBERNETES_SERVICE_HOST".to_owned(), api_host.clone()),
            ("KUBERNETES_SERVICE_PORT".to_owned(), port.clone()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), port.clone()),
            ("KUBERNETES_PORT".to_owned(), format!("tcp://{api_host}:{port}")),
        ];

        let (config_maps, cm_task) = store_api(Api::<ConfigMap>::all(client.clone()));
        let (secrets, secret_task) = store_api(Api::<Secret>::all(client.clone()));
        let (nodes, node_task) = store_api(Api::<Node>::all(client.clone()));
        config_maps.wait_until_ready().await.map_err(|e| Error::Setup(format!("configmaps store: {e}")))?;
        secrets.wait_until_ready().await.map_err(|e| Error::Setup(format!("secrets store: {e}")))?;
        nodes.wait_until_ready().await.map_err(|e| Error::Setup(format!("nodes store: {e}")))?;

        for d in ["logs", "pods"] {
            std::fs::create_dir_all(self.state_dir.join(d))
                .map_err(|e| Error::Io { what: format!("state dir {}", self.state_dir.display()), source: e })?;
        }
        let shared = Arc::new(Shared {
            client: client.clone(),
            tools,
            state_dir: self.state_dir.clone(),
            base_env,
            service_env,
            config_maps,
            secrets,
            nodes,
            images,
        });
        pod::remove_stale_sandboxes(&shared).await;

        let mut runner = Runner::new(shared, binaries);
        let pods = watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
        let result = runner.run(pods, self.state_dir.join("ready")).await;
        cm_task.abort();
        secret_task.abort();
        node_task.abort();
        result
    }
}

/// A reflector store of every object of `api`, fed by a background task.
fn store_api<K>(api: Api<K>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!("watch {}: {e}", std::any::type_name::<K>());
            }
        }
    });
    (reader, task)
}

/// The pod bookkeeping: what the apiserver says, and which workers run.
struct Runner {
    shared: Arc<Shared>,
    binaries: BinaryMap,
    /// uid → pod, from the watch.
    pods: HashMap<String, Arc<Pod>>,
    /// uid → SIGKILL deadline, fixed when the deletion was first seen.
    deletions: HashMap<String, Instant>,
    workers: HashMap<String, Handle>,
    /// uids already reported as not runnable.
    ignored: HashSet<String>,
    done_tx: mpsc::UnboundedSender<String>,
    done_rx: mpsc::UnboundedReceiver<String>,
}

impl Runner {
    fn new(shared: Arc<Shared>, binaries: BinaryMap) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            shared,
            binaries,
            pods: HashMap::new(),
            deletions: HashMap::new(),
            workers: HashMap::new(),
            ignored: HashSet::new(),
            done_tx,
            done_rx,
        }
    }

    async fn run(
        &mut self,
        pods: impl Stream<Item = Result<Event<Pod>, watcher::Error>>,
        ready_file: PathBuf,
    ) -> Result<(), Error> {
        let mut pods = std::pin::pin!(pods);
        let mut init: Option<HashMap<String, Arc<Pod>>> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::Io { what: "SIGTERM handler".into(), source: e })?;
        let mut ready = false;
        loop {
            tokio::select! {
                ev = pods.next() => match ev {
                    Some(Ok(ev)) => {
                        if let Some(done) = self.apply(ev, &mut init)
                            && done && !ready
                        {
                            ready = true;
                            let _ = std::fs::write(&ready_file, "");
                            tracing::info!("watching pods on kwok nodes; binaries: {}",
                                self.binaries.entries().map(|(n, p)| format!("{n}={}", p.display())).collect::<Vec<_>>().join(" "));
                        }
                    }
                    Some(Err(e)) => tracing::warn!("watch pods: {e}"),
                    None => return Err(Error::Setup("the pod watch ended".into())),
                },
                Some(uid) = self.done_rx.recv() => {
                    self.workers.remove(&uid);
                    if !self.pods.contains_key(&uid) {
                        self.deletions.remove(&uid);
                    }
                }
                _ = tick.tick() => {}
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
            }
            if ready {
                self.reconcile();
            }
        }
        tracing::info!("shutting down: stopping {} pod processes", self.workers.len());
        pod::stop_all(self.workers.values(), SHUTDOWN_GRACE);
        let end = Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(5);
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(end, self.done_rx.recv()).await {
                Ok(Some(uid)) => {
                    self.workers.remove(&uid);
                }
                _ => break,
            }
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Apply a watch event. Returns `Some(true)` when an initial listing completed.
    fn apply(&mut self, ev: Event<Pod>, init: &mut Option<HashMap<String, Arc<Pod>>>) -> Option<bool> {
        match ev {
            Event::Init => *init = Some(HashMap::new()),
            Event::InitApply(p) => {
                if let (Some(m), Some(uid)) = (init.as_mut(), p.metadata.uid.clone()) {
                    self.note_deletion(&uid, &p, false);
                    m.insert(uid, Arc::new(p));
                }
            }
            Event::InitDone => {
                let fresh = init.take().unwrap_or_default();
                let gone: Vec<(String, Arc<Pod>)> = self
                    .pods
                    .iter()
                    .filter(|(uid, _)| !fresh.contains_key(*uid))
                    .map(|(u, p)| (u.clone(), p.clone()))
                    .collect();
                for (uid, p) in gone {
                    self.note_deletion(&uid, &p, true);
                }
                self.pods = fresh;
                return Some(true);
            }
            Event::Apply(p) => {
                if let Some(uid) = p.metadata.uid.clone() {
                    self.note_deletion(&uid, &p, false);
                    self.pods.insert(uid, Arc::new(p));
                }
            }
            Event::Delete(p) => {
                if let Some(uid) = p.metadata.uid.clone() {
                    self.note_deletion(&uid, &p, true);
                    self.pods.remove(&uid);
                    self.ignored.remove(&uid);
                }
            }
        }
        Some(false)
    }

    /// Fix the SIGKILL deadline of a pod the first time its deletion is seen: a
    /// `deletionTimestamp`, or the pod vanishing. kwok removes a pod (grace 0) right after
    /// its graceful deletion starts, so only the first sighting counts; a pod that
    /// vanishes without one was force-deleted and gets its final grace (0 → SIGKILL now).
    fn note_deletion(&mut self, uid: &str, pod: &Pod, vanished: bool) {
        if !self.workers.contains_key(uid) || self.deletions.contains_key(uid) {
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() || vanished {
            self.deletions.insert(uid.to_owned(), Instant::now() + grace_period(pod));
        }
    }

    fn is_fake_node(&self, name: &str) -> bool {
        self.shared.nodes.get(&ObjectRef::new(name)).is_some_and(|n| {
            n.metadata.annotations.as_ref().and_then(|a| a.get(FAKE_NODE_ANNOTATION.0)).map(String::as_str)
                == Some(FAKE_NODE_ANNOTATION.1)
        })
    }

    fn reconcile(&mut self) {
        for (uid, pod) in &self.pods {
            if let Some(w) = self.workers.get(uid) {
                w.pod.send_if_modified(|cur| {
                    let changed = cur.metadata.resource_version != pod.metadata.resource_version;
                    if changed {
                        *cur = pod.clone();
                    }
                    changed
                });
                continue;
            }
            if self.deletions.contains_key(uid) {
                continue;
            }
            let key = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            match decide(pod, |n| self.is_fake_node(n), &self.binaries) {
                Decision::Run(binary) => {
                    let handle = pod::spawn(self.shared.clone(), pod.clone(), binary, self.done_tx.clone());
                    self.workers.insert(uid.clone(), handle);
                }
                Decision::Ignore(reason) => {
                    if self.ignored.insert(uid.clone()) {
                        tracing::info!("ignore {key}: {reason}");
                    }
                }
                Decision::Skip => {}
            }
        }
        for (uid, w) in &self.workers {
            if let Some(deadline) = self.deletions.get(uid) {
                w.stop(*deadline);
            } else if !self.pods.contains_key(uid) {
                // gone without a trace (should not happen): its own grace period
                w.stop(Instant::now() + grace_period(&w.pod.borrow()));
            }
        }
    }
}
