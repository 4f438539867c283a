//! Scenario 6 of the e2e suite: the TURN fleet scales on relayed bandwidth. Real
//! turn-node processes (the pod runner starts them for the operator's Deployment), real
//! relayed traffic from `switchyard load turn` on the host, the operator's own
//! autoscaler and drain:
//!
//! ```text
//!  keeper: 2 allocations, held, probed every 1 s ─┐
//!  load:   8 allocations, 6 Mbit/s for 40 s ──────┴─► turn pod 1 ──► counting peers (host 127.0.0.1)
//!  operator: Σ bandwidthBps / 2M → 3 replicas (the maximum)
//!  load ends ─► 10 s stabilization ─► the emptiest pod gets the deletion cost and POST /drain
//!            ─► replicas − 1 once it has no allocation; one pod at a time, down to 1
//! ```
//!
//! A monitor records each turn pod's life (deletion-cost annotation, termination, the
//! allocations it last reported) and the Deployment's replicas, so the assertions are
//! about what happened on the way, not only where it ended.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::json;
use switchyard_api::MediaCluster;
use switchyard_api::node::TurnNodeStatus;
use switchyard_e2e::support::{
    Env, Patience, TestNamespace, describe_fleets, http_get, pod_ip, pod_ips, running_ips, secret_data, wait_for,
    wait_pods,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::task::JoinHandle;

const CLUSTER: &str = "relay";
const TURN_PORT: u16 = 3478;
const ADMIN_PORT: u16 = 9090;
/// The load against `turn.targetBandwidthPerPod: 2M`: ceil(6M / 2M) = 3 pods, the maximum.
const LOAD_RATE: &str = "6M";
const LOAD_ALLOCATIONS: u64 = 8;
const LOAD_FOR: Duration = Duration::from_secs(40);
const MAX_PODS: i32 = 3;
/// `autoscaling.scaleDownStabilizationSeconds`.
const STABILIZATION: Duration = Duration::from_secs(10);
const KEEPER_ALLOCATIONS: u64 = 2;
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn selector() -> String {
    format!("switchyard.dev/cluster={CLUSTER},app.kubernetes.io/component=turn")
}

/// Seconds from `from` to `to`, for the report.
fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

/// One turn pod's life as the monitor saw it.
#[derive(Clone, Debug, Default)]
struct PodLife {
    ip: Option<IpAddr>,
    /// When the deletion-cost annotation first showed, and its value.
    cost: Option<(Instant, String)>,
    terminating: Option<Instant>,
    gone: Option<Instant>,
    /// Live allocations at the last status poll before the pod began terminating.
    allocations: Option<u64>,
}

/// What the monitor recorded.
#[derive(Debug)]
struct Observed {
    start: Instant,
    pods: BTreeMap<String, PodLife>,
    /// The Deployment's `spec.replicas` at each change.
    replicas: Vec<(Instant, i32)>,
    /// The highest `status.turnBandwidthBps` of the MediaCluster.
    max_bandwidth: i64,
    timeline: Vec<String>,
}

impl Observed {
    fn note(&mut self, at: Instant, what: String) {
        self.timeline.push(format!("{:6.1}s {what}", secs(self.start, at)));
    }

    fn pod_changed(&mut self, p: &Pod, at: Instant) {
        let name = p.name_any();
        let cost = p.annotations().get(DELETION_COST).cloned();
        let ip = pod_ip(p);
        let life = self.pods.entry(name.clone()).or_default();
        let mut notes = Vec::new();
        if life.ip.is_none()
            && let Some(ip) = ip
        {
            life.ip = Some(ip);
            notes.push(format!("pod {name} has IP {ip}"));
        }
        if life.cost.is_none()
            && let Some(c) = cost
        {
            notes.push(format!("pod {name} annotated {DELETION_COST}={c} (allocations: {:?})", life.allocations));
            life.cost = Some((at, c));
        }
        if life.terminating.is_none() && p.metadata.deletion_timestamp.is_some() {
            life.terminating = Some(at);
            notes.push(format!("pod {name} terminating (last allocations reported: {:?})", life.allocations));
        }
        for n in notes {
            self.note(at, n);
        }
    }

    fn pod_deleted(&mut self, p: &Pod, at: Instant) {
        let name = p.name_any();
        self.pods.entry(name.clone()).or_default().gone = Some(at);
        self.note(at, format!("pod {name} gone"));
    }

    /// The last `spec.replicas` seen.
    fn replicas(&self) -> Option<i32> {
        self.replicas.last().map(|(_, r)| *r)
    }

    /// When replicas first satisfied `pred` after `since`.
    fn replicas_when(&self, since: Instant, pred: impl Fn(i32) -> bool) -> Option<Instant> {
        self.replicas.iter().find(|(t, r)| *t >= since && pred(*r)).map(|(t, _)| *t)
    }
}

/// Watches the turn pods, and polls the Deployment, the MediaCluster status and each
/// live turn pod's `/internal/status`, until dropped.
struct Monitor {
    observed: Arc<Mutex<Observed>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Monitor {
    fn start(client: &Client, ns: &str, start: Instant) -> Monitor {
        let observed = Arc::new(Mutex::new(Observed {
            start,
            pods: BTreeMap::new(),
            replicas: Vec::new(),
            max_bandwidth: 0,
            timeline: Vec::new(),
        }));
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let obs = observed.clone();
        let watch = tokio::spawn(async move {
            let mut events = watcher(pods, watcher::Config::default().labels(&selector())).default_backoff().boxed();
            while let Some(event) = events.next().await {
                let now = Instant::now();
                match event {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        obs.lock().unwrap().pod_changed(&p, now)
                    }
                    Ok(watcher::Event::Delete(p)) => obs.lock().unwrap().pod_deleted(&p, now),
                    _ => {}
                }
            }
        });
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let clusters: Api<MediaCluster> = Api::namespaced(client.clone(), ns);
        let obs = observed.clone();
        let poll = tokio::spawn(async move {
            loop {
                if let Ok(Some(d)) = deployments.get_opt(&format!("{CLUSTER}-turn")).await {
                    let r = d.spec.replicas.unwrap_or(0);
                    let mut o = obs.lock().unwrap();
                    if o.replicas() != Some(r) {
                        let now = Instant::now();
                        let from = o.replicas().map_or("none".into(), |x| x.to_string());
                        o.replicas.push((now, r));
                        o.note(now, format!("Deployment replicas {from} → {r}"));
                    }
                }
                if let Ok(mc) = clusters.get(CLUSTER).await {
                    let bw = mc.status.and_then(|s| s.turn_bandwidth_bps).unwrap_or(0);
                    let mut o = obs.lock().unwrap();
                    o.max_bandwidth = o.max_bandwidth.max(bw);
                }
                let live: Vec<(String, IpAddr)> = obs
                    .lock()
                    .unwrap()
                    .pods
                    .iter()
                    .filter(|(_, l)| l.terminating.is_none() && l.gone.is_none())
                    .filter_map(|(n, l)| Some((n.clone(), l.ip?)))
                    .collect();
                let statuses =
                    futures::future::join_all(live.iter().map(|(n, ip)| async move { (n, turn_status(*ip).await) }))
                        .await;
                {
                    let mut o = obs.lock().unwrap();
                    for (name, status) in statuses {
                        let Ok(s) = status else { continue };
                        if let Some(life) = o.pods.get_mut(name)
                            && life.terminating.is_none()
                        {
                            life.allocations = Some(s.allocations);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Monitor { observed, tasks: vec![watch, poll] }
    }

    fn get(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn turn_status(ip: IpAddr) -> Result<TurnNodeStatus> {
    let r = http_get(ip, ADMIN_PORT, "/internal/status").await?;
    ensure!(r.status == 200, "/internal/status on {ip}: HTTP {}", r.status);
    Ok(serde_json::from_str(&r.body)?)
}

/// Timestamped stderr lines of a tool.
type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A `switchyard load turn` process: its stderr lines as they come, its exit time and
/// stdout (the `--json` summary) once it ends.
struct Tool {
    name: &'static str,
    pid: Option<u32>,
    lines: Lines,
    done: JoinHandle<(Instant, std::io::Result<ExitStatus>, String)>,
}

impl Tool {
    /// `switchyard load turn <args>`. The binary sits next to the test binary's `deps/`
    /// directory (`e2e/run.sh` builds it).
    fn spawn(name: &'static str, args: &[&str]) -> Result<Tool> {
        let exe = std::env::current_exe()?;
        let bin = exe.parent().and_then(|d| d.parent()).context("the test binary's directory")?.join("switchyard");
        ensure!(bin.is_file(), "{} is not built (e2e/run.sh builds it)", bin.display());
        let mut child = Command::new(&bin)
            .args(["load", "turn"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let lines = Lines::default();
        let mut stderr = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let mut stdout = child.stdout.take().context("stdout")?;
        let sink = lines.clone();
        let pid = child.id();
        // The child moves into the task; dropping the task (the test's runtime ends) kills it.
        let done = tokio::spawn(async move {
            let read_err = async {
                while let Ok(Some(l)) = stderr.next_line().await {
                    sink.lock().unwrap().push((Instant::now(), l));
                }
            };
            let read_out = async {
                let mut s = String::new();
                let _ = stdout.read_to_string(&mut s).await;
                s
            };
            let exit = async {
                let status = child.wait().await;
                (Instant::now(), status)
            };
            let ((at, status), out, ()) = tokio::join!(exit, read_out, read_err);
            (at, status, out)
        });
        Ok(Tool { name, pid, lines, done })
    }

    fn said(&self, needle: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|(_, l)| l.contains(needle))
    }

    fn transcript(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let mut out = format!("----- {} stderr (last 40 lines of {})\n", self.name, lines.len());
        for (_, l) in &lines[lines.len().saturating_sub(40)..] {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    fn terminate(&self) -> Result<()> {
        let pid = self.pid.and_then(|p| Pid::from_raw(i32::try_from(p).ok()?)).context("no pid")?;
        kill_process(pid, Signal::TERM).with_context(|| format!("SIGTERM to {}", self.name))?;
        Ok(())
    }

    /// Wait for the exit: when, the status, and the parsed summary.
    async fn exit(&mut self, within: Duration) -> Result<(Instant, ExitStatus, serde_json::Value)> {
        let (at, status, out) = tokio::time::timeout(within, &mut self.done)
            .await
            .map_err(|_| anyhow!("{} still running after {within:?}\n{}", self.name, self.transcript()))??;
        let status = status?;
        let summary = serde_json::from_str(&out).with_context(|| {
            format!("{} ({status}) printed no JSON summary: {out:?}\n{}", self.name, self.transcript())
        })?;
        Ok((at, status, summary))
    }
}

/// A Direct-mode MediaCluster whose TURN fleet autoscales (1..=3 pods at 2 Mbit/s each),
/// and what the test needs to load it.
struct Fixture {
    env: Env,
    client: Client,
    ns: TestNamespace,
    start: Instant,
    /// The first turn pod: every allocation of the test is on it.
    turn: (String, IpAddr),
    secret: String,
    realm: String,
    monitor: Monitor,
    /// The tools' stderr, for a failure's context.
    tools: Mutex<Vec<(&'static str, Lines)>>,
}

impl Fixture {
    async fn new() -> Result<Fixture> {
        let start = Instant::now();
        let env = Env::from_env()?;
        let client = env.client().await?;
        let ns = TestNamespace::create(&client, "e2e-autoscale").await?;
        let n = &ns.name;
        let monitor = Monitor::start(&client, n, start);
        let mc = json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "MediaCluster",
            "metadata": { "name": CLUSTER },
            "spec": {
                "media": { "mode": "Direct" },
                "sfu": { "replicas": { "min": 1, "max": 1 }, "drainGracePeriodSeconds": 2 },
                "turn": {
                    "replicas": { "min": 1, "max": MAX_PODS },
                    "targetBandwidthPerPod": "2M",
                    // The counting peers are on the host's 127.0.0.1: loopback is a
                    // built-in deny, so the allow needs the loud field.
                    "peers": { "allow": ["127.0.0.0/8"], "unsafeLiftBuiltInDenies": true },
                    "service": { "type": "ClusterIP" },
                    // Long enough that a drain cut short by a dropped allocation would show.
                    "drainGracePeriodSeconds": 120
                },
                "autoscaling": {
                    "pollIntervalSeconds": 2,
                    "scaleDownStabilizationSeconds": STABILIZATION.as_secs()
                }
            }
        });
        let api: Api<MediaCluster> = Api::namespaced(client.clone(), n);
        api.patch(CLUSTER, &PatchParams::apply("e2e").force(), &Patch::Apply(&mc)).await?;
        let turn = wait_pods(
            &client,
            n,
            &selector(),
            "the turn pod",
            Patience::PODS,
            |p| running_ips(p).into_iter().next(),
            || describe_fleets(&client, n),
        )
        .await?;
        wait_for(&format!("{} ready on {}", turn.0, turn.1), Duration::from_secs(60), || async {
            Ok((http_get(turn.1, ADMIN_PORT, "/readyz").await?.status == 200).then_some(()))
        })
        .await
        .with_context(|| env.pod_logs_tail(n, 30))?;
        let secret = secret_data(&client, n, &format!("{CLUSTER}-turn-secret")).await?;
        let secret = String::from_utf8(secret.get("secret").context("no `secret` key")?.clone())?;
        let realm = api.get(CLUSTER).await?.spec.turn.realm;
        Ok(Fixture { env, client, ns, start, turn, secret, realm, monitor, tools: Mutex::default() })
    }

    /// `switchyard load turn` against the first turn pod as `user_id`, plus `args`.
    fn load(&self, name: &'static str, user_id: &str, args: &[&str]) -> Result<Tool> {
        let server = format!("{}:{TURN_PORT}", self.turn.1);
        let mut all = vec!["--server", &server, "--secret", &self.secret, "--realm", &self.realm];
        all.extend(["--user-id", user_id, "--json"]);
        all.extend(args);
        let tool = Tool::spawn(name, &all)?;
        self.tools.lock().unwrap().push((name, tool.lines.clone()));
        Ok(tool)
    }

    fn timeline(&self) -> String {
        self.monitor.get().timeline.join("\n")
    }

    async fn finish(self, result: Result<()>) -> Result<()> {
        match result {
            Ok(()) => self.ns.delete().await,
            Err(e) => {
                let mut context = format!("timeline:\n{}\n", self.timeline());
                for (name, lines) in self.tools.lock().unwrap().iter() {
                    let lines = lines.lock().unwrap();
                    context.push_str(&format!("----- {name} stderr (last 30 of {} lines)\n", lines.len()));
                    for (_, l) in &lines[lines.len().saturating_sub(30)..] {
                        context.push_str(l);
                        context.push('\n');
                    }
                }
                context.push_str(&self.env.pod_logs_tail(&self.ns.name, 40));
                Err(e.context(context))
            }
        }
    }
}

/// `held: N/M relaying` → (N, M).
fn held(line: &str) -> Option<(u64, u64)> {
    let (n, m) = line.strip_prefix("held: ")?.strip_suffix(" relaying")?.split_once('/')?;
    Some((n.parse().ok()?, m.parse().ok()?))
}

/// One Event about the MediaCluster: its reason, its note, and how many times it was
/// recorded (an Event series counts repeats of one reason in one object).
#[derive(Debug)]
struct Recorded {
    reason: String,
    note: String,
    count: i32,
}

/// The operator's Events about the MediaCluster.
async fn cluster_events(f: &Fixture) -> Result<Vec<Recorded>> {
    let events: Api<Event> = Api::namespaced(f.client.clone(), &f.ns.name);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            let r = e.regarding.as_ref();
            r.and_then(|r| r.kind.as_deref()) == Some("MediaCluster")
                && r.and_then(|r| r.name.as_deref()) == Some(CLUSTER)
        })
        .map(|e| Recorded {
            reason: e.reason.unwrap_or_default(),
            note: e.note.unwrap_or_default(),
            count: e.series.map_or(1, |s| s.count),
        })
        .collect())
}

/// Scenario 6: synthetic TURN load raises the measured bandwidth and the autoscaler adds
/// turn pods; when the load stops, pods are drained and removed one at a time, and the
/// allocation still open through it all keeps relaying.
#[tokio::test]
#[ignore = "needs the e2e cluster: e2e/run.sh"]
async fn e2e_turn_autoscales_on_relayed_bandwidth() -> Result<()> {
    let f = Fixture::new().await?;
    let result = autoscale(&f).await;
    f.finish(result).await
}

async fn autoscale(f: &Fixture) -> Result<()> {
    let n = &f.ns.name;
    let (keeper_pod, keeper_ip) = f.turn.clone();

    // The keeper: allocations that stay open across the scale-up and the scale-down,
    // each probed every second. Its 100k lasts 1 s; holding sends only the probes.
    let keepers = KEEPER_ALLOCATIONS.to_string();
    let held_args = ["--allocations", &keepers, "--rate", "100k", "--duration", "1s", "--hold", "--check-every", "1s"];
    let mut keeper = f.load("keeper", "keeper-{i}", &held_args)?;
    wait_for("the keeper to hold its allocations", Duration::from_secs(30), || async {
        Ok(keeper.said(&format!("holding {KEEPER_ALLOCATIONS} allocations")).then_some(()))
    })
    .await?;
    wait_for("the keeper's first relay check", Duration::from_secs(10), || async {
        Ok(keeper.said("held: ").then_some(()))
    })
    .await?;
    f.monitor.get().note(Instant::now(), format!("keeper holds {KEEPER_ALLOCATIONS} allocations, checked"));
    let load_start = Instant::now();
    f.monitor.get().note(load_start, format!("load starts: {LOAD_ALLOCATIONS} allocations, {LOAD_RATE}bit/s"));
    let allocations = LOAD_ALLOCATIONS.to_string();
    let duration = format!("{}s", LOAD_FOR.as_secs());
    let mut load =
        f.load("load", "load-{i}", &["--allocations", &allocations, "--rate", LOAD_RATE, "--duration", &duration])?;

    // Scale-up while the load runs.
    wait_for(&format!("the turn Deployment at {MAX_PODS} replicas"), Duration::from_secs(35), || async {
        Ok((f.monitor.get().replicas() == Some(MAX_PODS)).then_some(()))
    })
    .await?;
    let at_max = f.monitor.get().replicas_when(load_start, |r| r == MAX_PODS).context("the scale-up")?;
    let first_up = f.monitor.get().replicas_when(load_start, |r| r > 1).context("the scale-up")?;
    let pods = wait_for(&format!("{MAX_PODS} turn pods running"), Duration::from_secs(60), || async {
        let p = pod_ips(&f.client, n, &selector()).await?;
        Ok((p.len() == MAX_PODS as usize).then_some(p))
    })
    .await?;
    let all_running = Instant::now();
    let up = format!("allocations {LOAD_ALLOCATIONS}/{LOAD_ALLOCATIONS} up");
    ensure!(load.said(&up), "the load's allocations are not all up:\n{}", load.transcript());
    let clusters: Api<MediaCluster> = Api::namespaced(f.client.clone(), n);
    let bw = wait_for("MediaCluster status.turnBandwidthBps above 0", Duration::from_secs(15), || async {
        Ok(clusters.get(CLUSTER).await?.status.and_then(|s| s.turn_bandwidth_bps).filter(|b| *b > 0))
    })
    .await?;
    wait_for("a ScalingUp Event for the turn fleet", Duration::from_secs(15), || async {
        Ok(cluster_events(f)
            .await?
            .iter()
            .any(|e| e.reason == "ScalingUp" && e.note.starts_with("turn: "))
            .then_some(()))
    })
    .await?;
    println!(
        "e2e autoscale: status.turnBandwidthBps {} Mbit/s (highest seen so far {}); pods {:?}",
        bw as f64 / 1e6,
        f.monitor.get().max_bandwidth as f64 / 1e6,
        pods.iter().map(|(p, ip)| format!("{p} {ip}")).collect::<Vec<_>>()
    );
    ensure!(
        f.monitor.get().pods.values().all(|l| l.cost.is_none() && l.terminating.is_none()),
        "a turn pod was drained or removed while the load ran:\n{}",
        f.timeline()
    );

    // The load ends: every allocation came up and none was lost.
    let (load_end, status, summary) = load.exit(LOAD_FOR + Duration::from_secs(30)).await?;
    f.monitor.get().note(load_end, format!("load exits ({status})"));
    let a = &summary["allocations"];
    println!(
        "e2e autoscale: load {status}: allocations {a}, sent {} Mbit/s, received {} Mbit/s, loss {}",
        summary["sent"]["bps"].as_f64().unwrap_or(0.0) / 1e6,
        summary["received"]["bps"].as_f64().unwrap_or(0.0) / 1e6,
        summary["lossRatio"]
    );
    ensure!(
        a["ok"] == LOAD_ALLOCATIONS && a["failed"] == 0 && a["lost"] == 0,
        "load allocations: {a}\n{}",
        load.transcript()
    );

    // Scale-down: after the stabilization window, one emptiest pod at a time.
    wait_for("the turn fleet back to 1 pod (the keeper's)", Duration::from_secs(120), || async {
        let replicas = f.monitor.get().replicas();
        let left: Vec<String> = Api::<Pod>::namespaced(f.client.clone(), n)
            .list(&ListParams::default().labels(&selector()))
            .await?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        Ok((replicas == Some(1) && left == [keeper_pod.clone()]).then_some(()))
    })
    .await?;
    let back = f.monitor.get().replicas_when(load_end, |r| r == 1).context("the scale-down")?;
    let (removed, first_drain, last_gone) = {
        let o = f.monitor.get();
        let removed: Vec<(String, PodLife)> = o
            .pods
            .iter()
            .filter(|(_, l)| l.terminating.is_some() || l.gone.is_some())
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect();
        let first_drain = removed.iter().filter_map(|(_, l)| l.cost.as_ref().map(|(t, _)| *t)).min();
        let last_gone = removed.iter().filter_map(|(_, l)| l.gone).max();
        (removed, first_drain, last_gone)
    };
    ensure!(removed.len() == MAX_PODS as usize - 1, "removed pods: {removed:?}\n{}", f.timeline());
    for (name, life) in &removed {
        ensure!(*name != keeper_pod, "the keeper's pod {name} was removed: {life:?}\n{}", f.timeline());
        let (annotated, cost) =
            life.cost.as_ref().with_context(|| format!("{name} was removed without {DELETION_COST}"))?;
        let terminating = life.terminating.or(life.gone).context("removed")?;
        ensure!(annotated <= &terminating, "{name}: {DELETION_COST} only after it began terminating");
        ensure!(cost.parse::<i64>().is_ok_and(|c| c < 0), "{name}: {DELETION_COST}={cost}");
        ensure!(life.allocations == Some(0), "{name} was removed holding allocations: {life:?}\n{}", f.timeline());
        let log = f.env.pod_log(n, name);
        ensure!(log.contains("draining"), "{name} was never told to drain:\n{log}");
    }
    let first_drain = first_drain.context("no drain")?;
    ensure!(
        first_drain + Duration::from_secs(2) >= load_end + STABILIZATION,
        "the first drain began {:.1} s after the load ended, inside the {STABILIZATION:?} stabilization window\n{}",
        secs(load_end, first_drain),
        f.timeline()
    );
    // The keeper's pod still holds its allocations, which relayed at every check.
    let s = turn_status(keeper_ip).await?;
    ensure!(s.allocations == KEEPER_ALLOCATIONS && !s.draining, "the keeper's pod {keeper_pod}: {s:?}");
    wait_for("a keeper check after the scale-down", Duration::from_secs(5), || async {
        Ok(keeper.lines.lock().unwrap().iter().any(|(t, l)| *t > back && held(l).is_some()).then_some(()))
    })
    .await?;
    let checks: Vec<(Instant, (u64, u64))> =
        keeper.lines.lock().unwrap().iter().filter_map(|(t, l)| Some((*t, held(l)?))).collect();
    let bad: Vec<String> = checks
        .iter()
        .filter(|(_, (ok, of))| (*ok, *of) != (KEEPER_ALLOCATIONS, KEEPER_ALLOCATIONS))
        .map(|(t, (ok, of))| format!("{:.1}s: {ok}/{of}", secs(f.start, *t)))
        .collect();
    ensure!(bad.is_empty(), "the keeper's allocations stopped relaying: {bad:?}\n{}", keeper.transcript());
    let span = checks.first().zip(checks.last()).map(|((a, _), (b, _))| secs(*a, *b)).unwrap_or(0.0);
    ensure!(
        checks.iter().any(|(t, _)| *t < load_start) && checks.iter().any(|(t, _)| *t > back),
        "the keeper's checks ({} over {span:.0} s) do not span the load and the scale-down",
        checks.len()
    );

    // SIGTERM: the keeper deallocates everything and exits 0.
    keeper.terminate()?;
    let (_, status, summary) = keeper.exit(Duration::from_secs(15)).await?;
    ensure!(status.success(), "the keeper exited with {status}:\n{}", keeper.transcript());
    let a = &summary["allocations"];
    ensure!(a["ok"] == KEEPER_ALLOCATIONS && a["failed"] == 0 && a["lost"] == 0, "keeper allocations: {a}");
    ensure!(summary["hold"]["lastRelaying"] == KEEPER_ALLOCATIONS, "keeper hold: {}", summary["hold"]);
    ensure!(!keeper.said("did not confirm deallocation"), "{}", keeper.transcript());
    wait_for("the keeper's pod to have no allocation left", Duration::from_secs(10), || async {
        Ok((turn_status(keeper_ip).await?.allocations == 0).then_some(()))
    })
    .await?;

    println!("e2e autoscale timeline (seconds since the MediaCluster was created):\n{}", f.timeline());
    println!(
        "e2e autoscale: load start → first scale-up {:.1} s, → {MAX_PODS} replicas {:.1} s, → {MAX_PODS} pods running {:.1} s",
        secs(load_start, first_up),
        secs(load_start, at_max),
        secs(load_start, all_running)
    );
    println!(
        "e2e autoscale: load end → first drain {:.1} s, → replicas 1 {:.1} s, → last removed pod gone {:.1} s; \
         keeper: {} checks over {span:.0} s, all {KEEPER_ALLOCATIONS}/{KEEPER_ALLOCATIONS} relaying",
        secs(load_end, first_drain),
        secs(load_end, back),
        last_gone.map_or(f64::NAN, |g| secs(load_end, g)),
        checks.len()
    );

    // Each drain is on record: as many Draining and ScaledDown Events as pods removed,
    // each naming its pod (`kubectl events` is how an operator learns which pod went).
    let events = cluster_events(f).await?;
    println!("e2e autoscale: Events {events:?}");
    for reason in ["Draining", "ScaledDown"] {
        let count: i32 = events.iter().filter(|e| e.reason == reason).map(|e| e.count).sum();
        ensure!(count as usize >= removed.len(), "{count} {reason} Events for {} pods removed", removed.len());
        for (name, _) in &removed {
            ensure!(
                events.iter().any(|e| e.reason == reason && e.note.contains(name.as_str())),
                "no {reason} Event names {name} (a repeat of a reason on one object is folded into \
                 the first Event's series, keeping its note): {events:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn parses_held_lines() {
    assert_eq!(held("held: 2/2 relaying"), Some((2, 2)));
    assert_eq!(held("held: 1/2 relaying"), Some((1, 2)));
    assert_eq!(held("[  3s] allocations 2/2 up"), None);
}
