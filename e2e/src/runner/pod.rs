//! One pod's worker: its sandbox, volumes, process, restarts and termination.
//!
//! ```text
//! sandbox (netns) ─► prepare (tokens, volumes, env, argv) ─► spawn ─► supervise ─┐
//!        ▲ retried with backoff      ▲                                           │
//!        │                           └── exited (or killed by its liveness ◄────┤
//!        │                               probe): restart after backoff           │
//!        │                               (volumes re-synced every second,        │
//!        │                                probes run on their periods)           │
//!        └── stop requested at any point: SIGTERM, SIGKILL at the deadline ◄────┘
//! ```
//!
//! Every change of readiness, state or restart count goes to the pod's status (one
//! writer task per pod, newest report wins; see status.rs).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use rustix::process::{Pid, Signal, kill_process};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::Error;
use super::decide::{Backoff, restarts};
use super::env::{EnvContext, EnvList, Objects, resolve_args, resolve_env};
use super::launch::{
    ROOT_DIR, Tools, hostname, image_script, mount_plan, mount_script, quote, volume_dir, wrapper_argv,
};
use super::net::{self, Sandbox};
use super::oci::{Image, Security, container_argv, image_env, security};
use super::probe::{self, ExecTarget, Kind, ProbeSpec, Tracker};
use super::status::{self, Report, State, Terminated};
use super::volumes::{Content, Payload, TokenKey, tokens_needed, volume_content, write_atomic};

/// What every worker shares.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) tools: Tools,
    pub(crate) state_dir: PathBuf,
    /// PATH, RUST_LOG, RUST_BACKTRACE as the runner has them.
    pub(crate) base_env: Vec<(String, String)>,
    /// KUBERNETES_SERVICE_HOST and friends.
    pub(crate) service_env: Vec<(String, String)>,
    pub(crate) config_maps: Store<ConfigMap>,
    pub(crate) secrets: Store<Secret>,
    pub(crate) nodes: Store<Node>,
    /// Unpacked images by name: a container of one runs from its root filesystem.
    pub(crate) images: BTreeMap<String, Arc<Image>>,
}

impl Objects for Shared {
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self.config_maps.get(&ObjectRef::new(name).within(namespace))?;
        let mut data: BTreeMap<String, Vec<u8>> =
            cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
        data.extend(cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
        Some(data)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self.secrets.get(&ObjectRef::new(name).within(namespace))?;
        let mut data: BTreeMap<String, Vec<u8>> =
            s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        data.extend(s.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
        Some(data)
    }
}

impl Shared {
    fn node_allocatable(&self, node: &str) -> BTreeMap<String, Quantity> {
        self.nodes
            .get(&ObjectRef::new(node))
            .and_then(|n| n.status.as_ref().and_then(|s| s.allocatable.clone()))
            .unwrap_or_default()
    }

    /// Where sandboxes are recorded, so a runner that crashed can remove them next time.
    pub(crate) fn sandbox_dir(&self) -> PathBuf {
        self.state_dir.join("sandboxes")
    }
}

/// The runner's handle on a worker.
pub(crate) struct Handle {
    /// The pod as last seen.
    pub(crate) pod: watch::Sender<Arc<Pod>>,
    /// `Some(deadline)`: stop, SIGKILL at the deadline. Only ever moves earlier.
    pub(crate) stop: watch::Sender<Option<Instant>>,
}

impl Handle {
    /// Ask the worker to stop, with SIGKILL at `deadline` (or earlier, if asked before).
    pub(crate) fn stop(&self, deadline: Instant) {
        self.stop.send_if_modified(|cur| match cur {
            Some(d) if *d <= deadline => false,
            _ => {
                *cur = Some(deadline);
                true
            }
        });
    }
}

/// Start a worker for `pod`; it sends the pod's uid on `done` when it has finished.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    binary: PathBuf,
    done: mpsc::UnboundedSender<String>,
) -> Handle {
    let (pod_tx, pod_rx) = watch::channel(pod.clone());
    let (stop_tx, stop_rx) = watch::channel(None);
    let (status_tx, status_rx) = watch::channel(None);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ip: Ipv4Addr = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok()).unwrap_or(
        // decide() only runs pods with an IP; a non-IPv4 one fails the sandbox loudly
        Ipv4Addr::UNSPECIFIED,
    );
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .and_then(|i| shared.images.get(super::image::image_name(i)).cloned());
    tokio::spawn(write_status(shared.client.clone(), ns.clone(), name.clone(), status_rx));
    let worker = Worker {
        status_tx,
        probes: Vec::new(),
        ready: false,
        ready_since: now_rfc3339(),
        restart_count: 0,
        last_term: None,
        image,
        security: None,
        dir: shared.state_dir.join("pods").join(format!("{ns}_{name}_{uid}")),
        log_path: shared.state_dir.join("logs").join(format!("{ns}_{name}.log")),
        sandbox: Sandbox::new(&uid, ip),
        key: format!("{ns}/{name}"),
        shared,
        pod_rx,
        stop_rx,
        stop_sender_gone: false,
        binary,
        uid: uid.clone(),
        tokens: BTreeMap::new(),
        written: BTreeMap::new(),
        last_error: None,
    };
    tokio::spawn(async move {
        worker.run().await;
        let _ = done.send(uid);
    });
    Handle { pod: pod_tx, stop: stop_tx }
}

struct Worker {
    /// Reports for the pod's status writer.
    status_tx: watch::Sender<Option<Report>>,
    /// The container's probes (decided in `prepare`).
    probes: Vec<(Kind, ProbeSpec)>,
    /// Ready as last reported, and since when.
    ready: bool,
    ready_since: String,
    /// Restarts so far (a start after the first is one).
    restart_count: u32,
    /// How the previous run ended.
    last_term: Option<Terminated>,
    /// The image the container runs from; `None`: the binary runs on the host's root.
    image: Option<Arc<Image>>,
    /// How the image container runs (decided in `prepare`).
    security: Option<Security>,
    shared: Arc<Shared>,
    pod_rx: watch::Receiver<Arc<Pod>>,
    stop_rx: watch::Receiver<Option<Instant>>,
    stop_sender_gone: bool,
    binary: PathBuf,
    uid: String,
    /// `namespace/name`, for logs.
    key: String,
    dir: PathBuf,
    log_path: PathBuf,
    sandbox: Sandbox,
    tokens: BTreeMap<TokenKey, CachedToken>,
    /// Volume name → what was last written.
    written: BTreeMap<String, Payload>,
    /// The last error logged, so a retry loop does not repeat it every second.
    last_error: Option<String>,
}

struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// What `prepare` produced.
struct Launch {
    argv: Vec<String>,
    env: EnvList,
    /// The container's own argv (binary or entrypoint, then arguments), for the log.
    shown: Vec<String>,
}

enum Exit {
    /// The process ended on its own (or its liveness probe had it killed).
    Exited(ExitStatus),
    /// The runner stopped it.
    Stopped(ExitStatus),
}

impl Worker {
    async fn run(mut self) {
        // kwok marked the pod Ready when it made it Running; say at once that it is not,
        // before the sandbox and the volumes (the probes decide from the first start on).
        self.report(State::Waiting { reason: "ContainerCreating".into(), message: String::new() }, false);
        let mut backoff = Backoff::default();
        loop {
            if self.stopping() {
                return self.cleanup().await;
            }
            match self.create_sandbox().await {
                Ok(()) => break,
                Err(e) => {
                    self.error("sandbox", &e);
                    if self.sleep_or_stop(backoff.delay(Duration::ZERO)).await {
                        return self.cleanup().await;
                    }
                }
            }
        }
        let mut backoff = Backoff::default();
        let mut starts = 0u32;
        loop {
            let launch = match self.prepare().await {
                Ok(l) => l,
                Err(e) => {
                    self.report(
                        State::Waiting { reason: "CreateContainerConfigError".into(), message: e.to_string() },
                        false,
                    );
                    self.error("cannot start", &e);
                    if self.sleep_or_stop(backoff.delay(Duration::ZERO)).await {
                        break;
                    }
                    continue;
                }
            };
            starts += 1;
            self.restart_count = starts - 1;
            let mut child = match self.start(&launch, starts) {
                Ok(c) => c,
                Err(e) => {
                    self.report(
                        State::Waiting { reason: "CreateContainerError".into(), message: e.to_string() },
                        false,
                    );
                    self.error("spawn", &e);
                    if self.sleep_or_stop(backoff.delay(Duration::ZERO)).await {
                        break;
                    }
                    continue;
                }
            };
            let started = Instant::now();
            let started_at = now_rfc3339();
            let status = match self.supervise(&mut child, &started_at).await {
                Exit::Stopped(status) => {
                    let msg = format!("stopped: {} after {:.1?}", describe(status), started.elapsed());
                    self.note(&msg);
                    break;
                }
                Exit::Exited(status) => status,
            };
            let ran = started.elapsed();
            let pod = self.pod_rx.borrow().clone();
            let term = {
                use std::os::unix::process::ExitStatusExt;
                status::terminated(status.code(), status.signal(), started_at, now_rfc3339())
            };
            if !restarts(&pod, status.success()) {
                self.note(&format!("exited: {} after {ran:.1?}; restartPolicy: no restart", describe(status)));
                self.report(State::Terminated(term), false);
                self.sleep_or_stop(Duration::MAX).await;
                break;
            }
            self.last_term = Some(term);
            let delay = backoff.delay(ran);
            self.report(
                State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!("back-off {delay:?} restarting failed container"),
                },
                false,
            );
            self.note(&format!("exited: {} after {ran:.1?}; restart #{starts} in {delay:?}", describe(status)));
            if self.sleep_or_stop(delay).await {
                break;
            }
        }
        self.cleanup().await;
    }

    /// Send the pod's status as it stands, with `state` and readiness `ready`.
    fn report(&mut self, state: State, ready: bool) {
        if ready != self.ready {
            self.ready = ready;
            self.ready_since = now_rfc3339();
        }
        let pod = self.pod_rx.borrow().clone();
        let container = pod.spec.as_ref().and_then(|s| s.containers.first());
        let report = Report {
            container: container.map(|c| c.name.clone()).unwrap_or_default(),
            image: container.and_then(|c| c.image.clone()).unwrap_or_default(),
            image_id: self.image.as_ref().map(|i| format!("{}@{}", i.name, i.digest)).unwrap_or_default(),
            state,
            ready,
            ready_since: self.ready_since.clone(),
            restart_count: self.restart_count,
            last: self.last_term.clone(),
        };
        self.status_tx.send_replace(Some(report));
    }

    fn error(&mut self, what: &str, e: &Error) {
        let msg = format!("{what}: {e}");
        if self.last_error.as_deref() != Some(msg.as_str()) {
            tracing::error!("pod {}: {msg}", self.key);
            self.append_log(&format!("==== {} runner: {msg}\n", jiff::Timestamp::now()));
            self.last_error = Some(msg);
        }
    }

    /// A lifecycle event: one line in the runner's log and in the pod's log.
    fn note(&self, msg: &str) {
        tracing::info!("{} {msg}", self.key);
        self.append_log(&format!("==== {} runner: {msg}\n", jiff::Timestamp::now()));
    }

    fn append_log(&self, line: &str) {
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&self.log_path) {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn stopping(&self) -> bool {
        self.stop_sender_gone || self.stop_rx.borrow().is_some()
    }

    /// Sleep for `d` unless a stop comes first; true if stopping.
    async fn sleep_or_stop(&mut self, d: Duration) -> bool {
        if self.stopping() {
            return true;
        }
        let deadline =
            Instant::now().checked_add(d).unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365));
        tokio::select! {
            () = sleep_until(deadline) => self.stopping(),
            r = self.stop_rx.changed() => {
                if r.is_err() { self.stop_sender_gone = true; }
                true
            }
        }
    }

    async fn create_sandbox(&mut self) -> Result<(), Error> {
        if self.sandbox.ip.is_unspecified() {
            return Err(Error::Spec("the pod IP is not an IPv4 address".into()));
        }
        let marker_dir = self.shared.sandbox_dir();
        std::fs::create_dir_all(&marker_dir).map_err(|e| io("sandbox dir", e))?;
        std::fs::write(marker_dir.join(&self.sandbox.name), &self.key).map_err(|e| io("sandbox marker", e))?;
        net::create(&self.sandbox, &self.shared.tools.ip, &self.shared.tools.nsenter).await
    }

    async fn cleanup(&mut self) {
        net::delete(&self.sandbox, &self.shared.tools.ip).await;
        let _ = std::fs::remove_file(self.shared.sandbox_dir().join(&self.sandbox.name));
    }

    /// Tokens, volumes, environment, argv.
    async fn prepare(&mut self) -> Result<Launch, Error> {
        let pod = self.pod_rx.borrow().clone();
        let spec = pod.spec.as_ref().ok_or_else(|| Error::Spec("no spec".into()))?;
        let container = spec.containers.first().ok_or_else(|| Error::Spec("no containers".into()))?;
        // The kubelet refuses a container it cannot run as asked before it touches volumes.
        let image_security = match &self.image {
            Some(image) => {
                let passwd = std::fs::read_to_string(image.rootfs.join("etc/passwd")).unwrap_or_default();
                let wd =
                    container.working_dir.as_deref().filter(|w| !w.is_empty()).unwrap_or(&image.config.working_dir);
                if !matches!(wd, "" | "/") {
                    return Err(Error::Spec(format!("working directory {wd:?}: only / is supported")));
                }
                Some(security(
                    spec.security_context.as_ref(),
                    container.security_context.as_ref(),
                    &image.config,
                    &passwd,
                )?)
            }
            None => None,
        };
        self.security = image_security.clone();
        let mut probes = Vec::new();
        for (kind, p) in [(Kind::Readiness, &container.readiness_probe), (Kind::Liveness, &container.liveness_probe)] {
            if let Some(p) = p {
                probes.push((kind, ProbeSpec::from_probe(p, container, kind)?));
            }
        }
        self.probes = probes;
        let contents = self.sync_volumes(&pod).await?;
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let host = hostname(name, spec.hostname.as_deref());
        let mut base = match &self.image {
            // the image's ENV, and the runner's RUST_LOG / RUST_BACKTRACE (never its PATH)
            Some(image) => {
                let mut env = image_env(&image.config);
                env.extend(self.shared.base_env.iter().filter(|(k, _)| k != "PATH").cloned());
                env
            }
            None => self.shared.base_env.clone(),
        };
        // as a runtime does for a user without a home in the image; never the runner's
        // HOME, whose ~/.kube/config kube-rs would prefer to the in-cluster config
        base.push(("HOME".into(), "/".into()));
        base.push(("HOSTNAME".into(), host.clone()));
        let ctx = EnvContext {
            base,
            service: self.shared.service_env.clone(),
            node_allocatable: self.shared.node_allocatable(spec.node_name.as_deref().unwrap_or_default()),
        };
        let env = resolve_env(&pod, container, &*self.shared, &ctx)?;
        let args = resolve_args(container, &env)?;
        let mounts = mount_plan(container, &contents, &env)?;
        let (argv, shown) = match (&self.image, &image_security) {
            (Some(image), Some(sec)) => {
                self.fresh_root()?;
                let argv = container_argv(container, &image.config, &args)?;
                let script = image_script(&self.dir, &image.rootfs, sec, &mounts, &host, &self.shared.tools, &env);
                (wrapper_argv(&self.shared.tools, &self.sandbox.name, script, Path::new(&argv[0]), &argv[1..]), argv)
            }
            _ => {
                let script = mount_script(&self.dir, &mounts, &host, &self.shared.tools, &env);
                let shown = std::iter::once(self.binary.display().to_string()).chain(args.iter().cloned()).collect();
                (wrapper_argv(&self.shared.tools, &self.sandbox.name, script, &self.binary, &args), shown)
            }
        };
        if spec.containers.len() > 1 {
            self.error(
                "containers",
                &Error::Spec(format!("only the first of {} containers runs", spec.containers.len())),
            );
        }
        Ok(Launch { argv, env, shown })
    }

    /// A fresh writable layer for an image container's overlay (a restarted container
    /// starts from the image again, as with a runtime).
    fn fresh_root(&self) -> Result<(), Error> {
        let dir = self.dir.join(ROOT_DIR);
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["root", "upper", "work"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| io("container root", e))?;
        }
        Ok(())
    }

    /// Volume ownership as the kubelet sets it for a non-root container: with `fsGroup`,
    /// every volume file is group-owned by it and group-readable, and emptyDirs are
    /// group-writable; without it, a projected service account token is owned by the
    /// container's user. emptyDirs are 0777 either way.
    fn own_volumes(&self, pod: &Pod, sec: &Security) -> Result<(), Error> {
        use std::os::unix::fs::{PermissionsExt, chown};
        let fs_group = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|c| c.fs_group);
        let fs_group = fs_group.and_then(|g| u32::try_from(g).ok());
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let dir = self.dir.join(volume_dir(&v.name));
            if v.empty_dir.is_some() {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| io("emptyDir mode", e))?;
                continue;
            }
            let tokens: Vec<&str> = v
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(|s| s.service_account_token.as_ref().map(|t| t.path.as_str()))
                .collect();
            let Ok(data) = std::fs::canonicalize(dir.join("..data")) else { continue };
            let mut stack = vec![data];
            while let Some(d) = stack.pop() {
                for entry in std::fs::read_dir(&d).map_err(|e| io("volume", e))?.flatten() {
                    let path = entry.path();
                    let meta = entry.metadata().map_err(|e| io("volume", e))?;
                    if meta.is_dir() {
                        stack.push(path.clone());
                    }
                    if let Some(g) = fs_group {
                        chown(&path, None, Some(g)).map_err(|e| io("volume fsGroup", e))?;
                        let mode = meta.permissions().mode() | if meta.is_dir() { 0o050 } else { 0o040 };
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                            .map_err(|e| io("volume mode", e))?;
                    } else if tokens.iter().any(|t| path.ends_with(t)) {
                        chown(&path, Some(sec.uid), Some(sec.gid)).map_err(|e| io("token owner", e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Bring tokens and the volumes' files up to date; returns every volume's content.
    async fn sync_volumes(&mut self, pod: &Pod) -> Result<BTreeMap<String, Content>, Error> {
        self.refresh_tokens(pod).await?;
        let tokens: BTreeMap<TokenKey, String> =
            self.tokens.iter().map(|(k, v)| (k.clone(), v.token.clone())).collect();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let alloc = self.shared.node_allocatable(&node);
        let mut contents = BTreeMap::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let content = volume_content(pod, v, &*self.shared, &tokens, &alloc)?;
            let dir = self.dir.join(volume_dir(&v.name));
            match &content {
                Content::Files(payload) => {
                    if self.written.get(&v.name) != Some(payload) {
                        write_atomic(&dir, payload).map_err(|e| io(&format!("volume {}", v.name), e))?;
                        if self.written.insert(v.name.clone(), payload.clone()).is_some() {
                            tracing::info!("volume {} of {} updated", v.name, self.key);
                        }
                    }
                }
                Content::EmptyDir { memory: false } => {
                    std::fs::create_dir_all(&dir).map_err(|e| io(&format!("volume {}", v.name), e))?;
                }
                Content::EmptyDir { memory: true } | Content::HostPath(_) => {}
            }
            contents.insert(v.name.clone(), content);
        }
        if let Some(sec) = &self.security {
            self.own_volumes(pod, sec)?;
        }
        Ok(contents)
    }

    async fn refresh_tokens(&mut self, pod: &Pod) -> Result<(), Error> {
        let now = Instant::now();
        for key in tokens_needed(pod) {
            if self.tokens.get(&key).is_some_and(|t| t.refresh_at > now) {
                continue;
            }
            let token = self.request_token(pod, &key).await?;
            // the kubelet refreshes at 80% of the lifetime
            let ttl = Duration::from_secs(u64::try_from(key.expiration_seconds).unwrap_or(600));
            self.tokens.insert(key, CachedToken { token, refresh_at: now + ttl.mul_f64(0.8) });
        }
        Ok(())
    }

    /// A token bound to this pod (TokenRequest), as the kubelet asks for it.
    async fn request_token(&self, pod: &Pod, key: &TokenKey) -> Result<String, Error> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<ServiceAccount> = Api::namespaced(self.shared.client.clone(), ns);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: (!key.audience.is_empty()).then(|| vec![key.audience.clone()]),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let resp = api
            .create_token_request(&key.service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| Error::Setup(format!("TokenRequest for serviceaccount {ns}/{}: {e}", key.service_account)))?;
        resp.status.and_then(|s| s.token).ok_or_else(|| Error::Setup("TokenRequest: no token in the answer".into()))
    }

    fn start(&mut self, launch: &Launch, n: u32) -> Result<Child, Error> {
        std::fs::create_dir_all(self.log_path.parent().unwrap_or(Path::new("/"))).map_err(|e| io("log dir", e))?;
        let log = OpenOptions::new().create(true).append(true).open(&self.log_path).map_err(|e| io("pod log", e))?;
        let argv_shown: Vec<String> = launch.shown.iter().map(|a| quote(a)).collect();
        let header = format!(
            "==== {} start #{n} {} uid {} ip {} sandbox {}: {}\n",
            jiff::Timestamp::now(),
            self.key,
            self.uid,
            self.sandbox.ip,
            self.sandbox.name,
            argv_shown.join(" ")
        );
        (&log).write_all(header.as_bytes()).map_err(|e| io("pod log", e))?;
        let stderr = log.try_clone().map_err(|e| io("pod log", e))?;
        let child = Command::new(&launch.argv[0])
            .args(&launch.argv[1..])
            .env_clear()
            .envs(launch.env.iter())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| io("spawn", e))?;
        tracing::info!(
            "start {} #{n} pid {} ip {} on {}: {}",
            self.key,
            child.id().unwrap_or_default(),
            self.sandbox.ip,
            self.pod_rx.borrow().spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
            argv_shown.join(" ")
        );
        self.last_error = None;
        Ok(child)
    }

    /// Status and probes of a running container (see probe.rs), for `supervise`.
    fn probe_plan(&mut self, started_at: &str) -> Vec<(Kind, ProbeSpec, Tracker, Instant)> {
        let now = Instant::now();
        let plan: Vec<_> = self
            .probes
            .iter()
            .map(|(kind, spec)| (*kind, spec.clone(), Tracker::new(spec, *kind), now + spec.initial_delay))
            .collect();
        let ready = !plan.iter().any(|(k, ..)| *k == Kind::Readiness);
        self.report(State::Running { started_at: started_at.to_owned() }, ready);
        plan
    }

    async fn supervise(&mut self, child: &mut Child, started_at: &str) -> Exit {
        let mut sync = tokio::time::interval(Duration::from_secs(1));
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sync.tick().await;
        let mut probes = self.probe_plan(started_at);
        let (result_tx, mut results) = mpsc::unbounded_channel::<(usize, Result<(), String>)>();
        let mut in_flight = vec![false; probes.len()];
        // a run of failures is logged once, at its first failure
        let mut quiet = vec![false; probes.len()];
        let target =
            ExecTarget { pid: child.id().unwrap_or_default(), user: self.security.as_ref().map(|s| (s.uid, s.gid)) };
        let far = Instant::now() + Duration::from_secs(86400);
        loop {
            if let Some(deadline) = self.stop_deadline() {
                return Exit::Stopped(self.terminate(child, deadline).await);
            }
            let next =
                probes.iter().zip(&in_flight).filter(|(_, busy)| !**busy).map(|((.., at), _)| *at).min().unwrap_or(far);
            tokio::select! {
                status = child.wait() => return Exit::Exited(status.unwrap_or_else(|_| failed_status())),
                () = sleep_until(next) => {
                    let now = Instant::now();
                    for (i, (_, spec, _, at)) in probes.iter_mut().enumerate() {
                        if in_flight[i] || *at > now {
                            continue;
                        }
                        in_flight[i] = true;
                        *at = now + spec.period;
                        let (action, timeout, tx) = (spec.action.clone(), spec.timeout, result_tx.clone());
                        let (ip, nsenter, target) = (self.sandbox.ip.into(), self.shared.tools.nsenter.clone(), target.clone());
                        tokio::spawn(async move {
                            let r = probe::run(&action, ip, timeout, &nsenter, &target).await;
                            let _ = tx.send((i, r));
                        });
                    }
                }
                Some((i, result)) = results.recv() => {
                    in_flight[i] = false;
                    let (kind, spec, tracker, _) = &mut probes[i];
                    let kind = *kind;
                    let changed = tracker.observe(result.is_ok());
                    match &result {
                        Err(e) if !quiet[i] => {
                            quiet[i] = true;
                            self.note(&format!("{} probe failed: {e}", kind.name()));
                        }
                        Err(_) => {}
                        Ok(()) => quiet[i] = false,
                    }
                    match (kind, changed) {
                        (Kind::Readiness, Some(ready)) => {
                            self.note(if ready { "ready: readiness probe succeeded" } else { "not ready: readiness probe failed" });
                            self.report(State::Running { started_at: started_at.to_owned() }, ready);
                        }
                        (Kind::Liveness, Some(false)) => {
                            let grace = spec.termination_grace.unwrap_or_else(|| grace_of(&self.pod_rx.borrow()));
                            self.note(&format!("liveness probe failed {} times: killing the container (grace {grace:?})", spec.failure_threshold));
                            self.report(State::Running { started_at: started_at.to_owned() }, false);
                            let status = self.terminate(child, Instant::now() + grace).await;
                            return Exit::Exited(status);
                        }
                        _ => {}
                    }
                }
                _ = sync.tick() => {
                    let pod = self.pod_rx.borrow().clone();
                    if let Err(e) = self.sync_volumes(&pod).await {
                        self.error("volume sync", &e);
                    }
                }
                r = self.stop_rx.changed(), if !self.stop_sender_gone => {
                    if r.is_err() { self.stop_sender_gone = true; }
                }
            }
        }
    }

    fn stop_deadline(&self) -> Option<Instant> {
        if self.stop_sender_gone { Some(Instant::now()) } else { *self.stop_rx.borrow() }
    }

    /// SIGTERM, then SIGKILL at `deadline` (which a later stop may move earlier).
    async fn terminate(&mut self, child: &mut Child, mut deadline: Instant) -> ExitStatus {
        let pid = child.id().and_then(|id| Pid::from_raw(id as i32));
        let now = Instant::now();
        if deadline > now {
            tracing::info!("stop {}: SIGTERM, SIGKILL in {:.1?}", self.key, deadline - now);
            signal(pid, Signal::TERM);
        }
        loop {
            tokio::select! {
                status = child.wait() => return status.unwrap_or_else(|_| failed_status()),
                () = sleep_until(deadline) => {
                    tracing::info!("stop {}: SIGKILL", self.key);
                    signal(pid, Signal::KILL);
                    return child.wait().await.unwrap_or_else(|_| failed_status());
                }
                r = self.stop_rx.changed(), if !self.stop_sender_gone => {
                    if r.is_err() { self.stop_sender_gone = true; }
                    if let Some(d) = self.stop_deadline() { deadline = deadline.min(d); }
                }
            }
        }
    }
}

/// The pod's `terminationGracePeriodSeconds` (30 s by default), what a liveness kill gets.
fn grace_of(pod: &Pod) -> Duration {
    let secs = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now()).to_string()
}

/// Write the newest report into the pod's status until the worker ends (or the pod is
/// gone); a failed write is retried after a second, or sooner by a newer report.
async fn write_status(client: Client, ns: String, name: String, mut rx: watch::Receiver<Option<Report>>) {
    let api: Api<Pod> = Api::namespaced(client, &ns);
    loop {
        let report = rx.borrow_and_update().clone();
        if let Some(report) = report {
            let patch = report.patch();
            loop {
                match api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(e)) if e.code == 404 => return,
                    Err(e) => {
                        tracing::warn!("status of {ns}/{name}: {e}");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            r = rx.changed() => if r.is_err() { return } else { break },
                        }
                    }
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn signal(pid: Option<Pid>, sig: Signal) {
    if let Some(pid) = pid {
        let _ = kill_process(pid, sig);
    }
}

fn failed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(255 << 8)
}

/// `exit code 1`, `signal 15 (SIGTERM)`.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(15)) => "signal 15 (SIGTERM)".into(),
        (None, Some(9)) => "signal 9 (SIGKILL)".into(),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::Io { what: what.to_owned(), source: e }
}

/// Remove the sandboxes a previous runner left behind (it was killed).
pub(crate) async fn remove_stale_sandboxes(shared: &Shared) {
    let Ok(entries) = std::fs::read_dir(shared.sandbox_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let sb = Sandbox { name: name.clone(), ip: Ipv4Addr::UNSPECIFIED };
        net::delete(&sb, &shared.tools.ip).await;
        let _ = std::fs::remove_file(e.path());
        tracing::info!("removed stale sandbox {name}");
    }
}

/// Stop every worker: SIGTERM now, SIGKILL after `grace`.
pub(crate) fn stop_all<'a>(handles: impl Iterator<Item = &'a Handle>, grace: Duration) {
    let deadline = Instant::now() + grace;
    for h in handles {
        h.stop(deadline);
    }
}
