//! Liveness and readiness probes, as the kubelet runs them.
//!
//! ```text
//!  container started ─► initialDelaySeconds ─► every periodSeconds: run the action
//!                                               (httpGet / tcpSocket from the host to the
//!                                                pod IP, exec inside the container),
//!                                               at most timeoutSeconds
//!                                                 │ ok / failed
//!                                                 ▼
//!                       Tracker: successThreshold successes in a row → success,
//!                                failureThreshold failures in a row  → failure
//!  readiness: starts as failure (not Ready until the first success)
//!  liveness:  starts as success; a failure kills the container (it restarts)
//! ```
//!
//! What a probe asks for and how its results add up are pure ([`ProbeSpec::from_probe`],
//! [`Tracker`]); [`run`] does the I/O.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Error;

/// Which of a container's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `readinessProbe`: the pod's Ready condition.
    Readiness,
    /// `livenessProbe`: a failure restarts the container.
    Liveness,
}

impl Kind {
    /// `Readiness` / `Liveness`, as the kubelet names them in events.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Readiness => "Readiness",
            Kind::Liveness => "Liveness",
        }
    }
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `httpGet`: a status in 200..400 succeeds.
    Http {
        /// Port (named ports resolved against the container's ports).
        port: u16,
        /// Request path.
        path: String,
        /// `host`, when set (the pod IP otherwise).
        host: Option<String>,
    },
    /// `tcpSocket`: a connection succeeds.
    Tcp {
        /// Port.
        port: u16,
    },
    /// `exec`: exit code 0 succeeds.
    Exec {
        /// The command (no shell).
        command: Vec<String>,
    },
}

/// A probe with the kubelet's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// What it does.
    pub action: Action,
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10).
    pub period: Duration,
    /// `timeoutSeconds` (1).
    pub timeout: Duration,
    /// `successThreshold` (1).
    pub success_threshold: u32,
    /// `failureThreshold` (3).
    pub failure_threshold: u32,
    /// `terminationGracePeriodSeconds` of the probe (liveness), overriding the pod's.
    pub termination_grace: Option<Duration>,
}

fn secs(v: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
}

fn port(p: &IntOrString, container: &Container) -> Result<u16, Error> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|n| *n > 0),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
    .ok_or_else(|| Error::Spec(format!("probe port {p:?}: not a port number or a named port of the container")))
}

impl ProbeSpec {
    /// The probe as the kubelet reads it; a probe the runner cannot run (gRPC, HTTPS,
    /// no action) is refused with the reason.
    pub fn from_probe(probe: &Probe, container: &Container, kind: Kind) -> Result<Self, Error> {
        let action = match (&probe.http_get, &probe.tcp_socket, &probe.exec, &probe.grpc) {
            (Some(h), None, None, None) => {
                if h.scheme.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("HTTP")) {
                    return Err(Error::Spec(format!("{} probe: scheme {:?} is not supported", kind.name(), h.scheme)));
                }
                Action::Http {
                    port: port(&h.port, container)?,
                    path: h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into()),
                    host: h.host.clone().filter(|h| !h.is_empty()),
                }
            }
            (None, Some(t), None, None) => Action::Tcp { port: port(&t.port, container)? },
            (None, None, Some(e), None) => {
                let command = e.command.clone().unwrap_or_default();
                if command.is_empty() {
                    return Err(Error::Spec(format!("{} probe: exec without a command", kind.name())));
                }
                Action::Exec { command }
            }
            (None, None, None, Some(_)) => {
                return Err(Error::Spec(format!("{} probe: grpc is not supported", kind.name())));
            }
            _ => return Err(Error::Spec(format!("{} probe: exactly one handler is required", kind.name()))),
        };
        let success_threshold = u32::try_from(probe.success_threshold.unwrap_or(1).max(1)).unwrap_or(1);
        if kind == Kind::Liveness && success_threshold != 1 {
            return Err(Error::Spec("liveness probe: successThreshold must be 1".into()));
        }
        Ok(Self {
            action,
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: u32::try_from(probe.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3),
            termination_grace: probe
                .termination_grace_period_seconds
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        })
    }
}

/// Consecutive results → the probe's result, with the kubelet's thresholds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    ok: bool,
}

impl Tracker {
    /// A fresh tracker for a started container: readiness starts failed, liveness
    /// succeeded.
    pub fn new(spec: &ProbeSpec, kind: Kind) -> Self {
        Self {
            success_threshold: spec.success_threshold,
            failure_threshold: spec.failure_threshold,
            successes: 0,
            failures: 0,
            ok: kind == Kind::Liveness,
        }
    }

    /// The current result.
    pub fn ok(&self) -> bool {
        self.ok
    }

    /// Count one result; returns the new result when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.ok && self.successes >= self.success_threshold {
                self.ok = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.ok && self.failures >= self.failure_threshold {
                self.ok = false;
                return Some(false);
            }
        }
        None
    }
}

/// Whether an HTTP status line means success (200 ≤ code < 400). Returns the code.
pub fn http_status(response: &[u8]) -> Result<u16, String> {
    let line = response.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP response: {:?}", line.trim())),
    }
}

/// Where an exec probe runs: the container's main process (its namespaces and root) and
/// its user.
#[derive(Clone, Debug)]
pub struct ExecTarget {
    /// The container's main pid.
    pub pid: u32,
    /// uid, gid to run as.
    pub user: Option<(u32, u32)>,
}

/// Run `action` once against the pod at `ip`; `Err` carries the failure, as the kubelet
/// reports it in the event.
pub async fn run(
    action: &Action,
    ip: IpAddr,
    timeout: Duration,
    nsenter: &Path,
    exec: &ExecTarget,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, run_once(action, ip, nsenter, exec)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

async fn run_once(action: &Action, ip: IpAddr, nsenter: &Path, exec: &ExecTarget) -> Result<(), String> {
    match action {
        Action::Http { port, path, host } => {
            let target = match host {
                Some(h) => h.parse::<IpAddr>().map_err(|_| format!("host {h:?}: only IP addresses are supported"))?,
                None => ip,
            };
            let addr = SocketAddr::new(target, *port);
            let mut s = TcpStream::connect(addr).await.map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/pod-runner\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            // The status line is all that counts; read until it is complete or EOF.
            while !buf.contains(&b'\n') {
                let n = s.read(&mut chunk).await.map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let code = http_status(&buf)?;
            if (200..400).contains(&code) { Ok(()) } else { Err(format!("HTTP probe failed with statuscode: {code}")) }
        }
        Action::Tcp { port } => {
            let addr = SocketAddr::new(ip, *port);
            TcpStream::connect(addr).await.map(drop).map_err(|e| format!("dial tcp {addr}: {e}"))
        }
        Action::Exec { command } => {
            let mut cmd = tokio::process::Command::new(nsenter);
            cmd.arg(format!("--target={}", exec.pid)).args(["--mount", "--net", "--uts", "--root", "--wd"]);
            if let Some((uid, gid)) = exec.user {
                cmd.arg(format!("--setuid={uid}")).arg(format!("--setgid={gid}"));
            }
            cmd.arg("--").args(command).kill_on_drop(true).stdin(std::process::Stdio::null());
            let out = cmd.output().await.map_err(|e| format!("exec {command:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                Err(format!("command {command:?} exited with {}: {}", out.status, text.trim()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(json!({
            "name": "c",
            "ports": [{"name": "admin", "containerPort": 9090}, {"name": "signal", "containerPort": 7880}]
        }))
        .unwrap()
    }

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_charts_probes_resolve_named_ports_and_keep_their_timings() {
        let p = probe(json!({
            "httpGet": {"path": "/readyz", "port": "admin"},
            "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3
        }));
        let s = ProbeSpec::from_probe(&p, &container(), Kind::Readiness).unwrap();
        assert_eq!(s.action, Action::Http { port: 9090, path: "/readyz".into(), host: None });
        assert_eq!((s.period, s.timeout, s.failure_threshold, s.success_threshold), (5.s(), 2.s(), 3, 1));
        assert_eq!(s.initial_delay, Duration::ZERO);
    }

    trait S {
        fn s(self) -> Duration;
    }
    impl S for u64 {
        fn s(self) -> Duration {
            Duration::from_secs(self)
        }
    }

    #[test]
    fn defaults_and_other_handlers() {
        let s =
            ProbeSpec::from_probe(&probe(json!({"tcpSocket": {"port": 7880}})), &container(), Kind::Liveness).unwrap();
        assert_eq!(s.action, Action::Tcp { port: 7880 });
        assert_eq!((s.period, s.timeout, s.failure_threshold), (10.s(), 1.s(), 3), "the kubelet's defaults");
        let s = ProbeSpec::from_probe(
            &probe(json!({"exec": {"command": ["/bin/check", "-q"]}, "terminationGracePeriodSeconds": 4})),
            &container(),
            Kind::Liveness,
        )
        .unwrap();
        assert_eq!(s.action, Action::Exec { command: vec!["/bin/check".into(), "-q".into()] });
        assert_eq!(s.termination_grace, Some(4.s()));
        let s = ProbeSpec::from_probe(&probe(json!({"httpGet": {"port": 80}})), &container(), Kind::Readiness).unwrap();
        assert_eq!(s.action, Action::Http { port: 80, path: "/".into(), host: None });
    }

    #[test]
    fn what_cannot_run_is_refused_with_the_reason() {
        let c = container();
        let err = |v| ProbeSpec::from_probe(&probe(v), &c, Kind::Readiness).unwrap_err().to_string();
        assert!(err(json!({"httpGet": {"port": "nope"}})).contains("named port"));
        assert!(err(json!({"httpGet": {"port": 80, "scheme": "HTTPS"}})).contains("HTTPS"));
        assert!(err(json!({"grpc": {"port": 80}})).contains("grpc"));
        assert!(err(json!({})).contains("exactly one handler"));
        assert!(err(json!({"exec": {"command": []}})).contains("without a command"));
        let live =
            ProbeSpec::from_probe(&probe(json!({"tcpSocket": {"port": 1}, "successThreshold": 2})), &c, Kind::Liveness);
        assert!(live.unwrap_err().to_string().contains("successThreshold must be 1"));
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let spec = ProbeSpec::from_probe(
            &probe(json!({"tcpSocket": {"port": 1}, "successThreshold": 2, "failureThreshold": 3})),
            &container(),
            Kind::Readiness,
        )
        .unwrap();
        let mut t = Tracker::new(&spec, Kind::Readiness);
        assert!(!t.ok(), "not ready before the first success");
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None, "a failure resets the successes");
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None, "a success resets the failures");
        assert_eq!([t.observe(false), t.observe(false), t.observe(false)], [None, None, Some(false)]);
        assert_eq!(t.observe(false), None, "reported once");

        let spec =
            ProbeSpec::from_probe(&probe(json!({"tcpSocket": {"port": 1}})), &container(), Kind::Liveness).unwrap();
        let mut t = Tracker::new(&spec, Kind::Liveness);
        assert!(t.ok(), "alive until proven otherwise");
        assert_eq!([t.observe(false), t.observe(false), t.observe(false)], [None, None, Some(false)]);
    }

    /// A loopback server answering every connection with `status`; returns its port.
    async fn server(status: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_and_tcp_probes_on_the_right_and_the_wrong_port() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let none = ExecTarget { pid: 0, user: None };
        let t = Duration::from_secs(5);
        let nsenter = Path::new("/usr/bin/nsenter");
        let ok = server("200 OK").await;
        let redirect = server("302 Found").await;
        let failing = server("503 Service Unavailable").await;
        let http = |port| Action::Http { port, path: "/readyz".into(), host: None };
        assert_eq!(run(&http(ok), ip, t, nsenter, &none).await, Ok(()));
        assert_eq!(run(&http(redirect), ip, t, nsenter, &none).await, Ok(()), "3xx succeeds, as for the kubelet");
        let err = run(&http(failing), ip, t, nsenter, &none).await.unwrap_err();
        assert_eq!(err, "HTTP probe failed with statuscode: 503");
        // a port nobody listens on: bind one, note it, close it
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = run(&http(closed), ip, t, nsenter, &none).await.unwrap_err();
        assert!(err.contains("refused"), "{err}");
        assert_eq!(run(&Action::Tcp { port: ok }, ip, t, nsenter, &none).await, Ok(()));
        let err = run(&Action::Tcp { port: closed }, ip, t, nsenter, &none).await.unwrap_err();
        assert!(err.starts_with("dial tcp 127.0.0.1:"), "{err}");
    }

    #[test]
    fn status_lines() {
        assert_eq!(http_status(b"HTTP/1.1 204 No Content\r\n"), Ok(204));
        assert_eq!(http_status(b"HTTP/1.0 503 Service Unavailable\r\n\r\n"), Ok(503));
        assert!(http_status(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(http_status(b"").is_err());
    }
}
