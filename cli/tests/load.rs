//! `switchyard load turn` against an in-process turn-node on loopback.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_turn_node::{Config, TurnHandle, TurnServer};

const SECRET: &str = "load-secret";

async fn turn_node(configure: impl FnOnce(&mut Config)) -> TurnHandle {
    // Config::dev: UDP and TCP on 127.0.0.1, relays on 127.0.0.1, peers in 127.0.0.0/8 allowed.
    let mut config = Config::dev(0, SECRET);
    configure(&mut config);
    TurnServer::start(config).await.expect("turn-node starts")
}

fn load(server: std::net::SocketAddr, extra: &[&str]) -> Command {
    load_with_secret(server, SECRET, extra)
}

fn load_with_secret(server: std::net::SocketAddr, secret: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(["load", "turn", "--server", &server.to_string(), "--secret", secret, "--json"])
        .args(extra)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Wait for the child without blocking the runtime, calling `each` every 100 ms meanwhile.
async fn wait(child: Child, mut each: impl FnMut()) -> Output {
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "load did not finish");
        each();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.wait_with_output().unwrap()
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}, stderr {}", out.stdout, String::from_utf8_lossy(&out.stderr)))
}

/// 4 allocations at 2 Mbit/s for 2 s: all up, paced to the rate, no loss, and the
/// server's bandwidth signal (what the autoscaler sums) moves.
async fn rate_is_reached(transport: &str) {
    let turn = turn_node(|_| {}).await;
    let server = if transport == "tcp" { turn.addrs().tcp[0] } else { turn.addrs().udp[0] };
    let child = load(server, &["--transport", transport, "--allocations", "4", "--rate", "2M"])
        .args(["--packet-size", "1000", "--duration", "2s"])
        .spawn()
        .unwrap();
    let mut max_bps = 0;
    let out = wait(child, || max_bps = max_bps.max(turn.status().bandwidth_bps)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let s = summary(&out);
    assert_eq!(s["allocations"]["ok"], 4, "{s}");
    assert_eq!(s["allocations"]["failed"], 0, "{s}");
    assert!(s["lossRatio"].as_f64().unwrap() < 0.01, "{s}");
    let target = 2_000_000.0 * 2.0 / 8.0;
    let received = s["received"]["bytes"].as_f64().unwrap();
    assert!((received - target).abs() / target < 0.25, "received {received} bytes, target {target}: {s}");
    assert!(max_bps > 0, "turn-node reported no bandwidth during the run");
    assert!(stderr.contains("allocations 4/4 up"), "live line: {stderr}");
    assert_eq!(turn.status().allocations, 0, "deallocated at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_load_reaches_the_rate_without_loss() {
    rate_is_reached("udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_load_reaches_the_rate_without_loss() {
    rate_is_reached("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_with_401() {
    let turn = turn_node(|_| {}).await;
    let args = ["--allocations", "2", "--duration", "1s"];
    let child = load_with_secret(turn.addrs().udp[0], "not-the-secret", &args).spawn().unwrap();
    let out = wait(child, || {}).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 of 2 allocations failed: 401 after credentials: check --secret"), "{stderr}");
    let s = summary(&out);
    assert_eq!(s["errors"][0]["code"], 401, "{s}");
    assert_eq!(s["errors"][0]["count"], 2, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_peer_fails_with_403() {
    // No allow rule: the loopback peer falls under the built-in deny list.
    let turn = turn_node(|c| c.peers.allow.clear()).await;
    let child = load(turn.addrs().udp[0], &["--allocations", "2", "--duration", "1s"]).spawn().unwrap();
    let out = wait(child, || {}).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("403: peer address denied by the server's peer policy"), "{stderr}");
    assert_eq!(summary(&out)["errors"][0]["code"], 403);
}

/// Lines of the child's stderr, as they come.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

async fn expect_line(lines: &mpsc::Receiver<String>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match lines.try_recv() {
            Ok(line) if line == want => return,
            Ok(line) => seen.push(line),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("no line {want:?} in {seen:#?}");
}

fn kill(child: &Child, signal: &str) {
    let ok = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {signal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_allocations_keep_relaying_after_the_load_until_sigterm() {
    let turn = turn_node(|_| {}).await;
    let mut child = load(turn.addrs().udp[0], &["--allocations", "4", "--rate", "1M", "--duration", "1s"])
        .args(["--hold", "--check-every", "300ms"])
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    expect_line(&lines, "held: 4/4 relaying").await;
    expect_line(&lines, "held: 4/4 relaying").await;
    assert_eq!(turn.status().allocations, 4);
    kill(&child, "-TERM");
    let out = wait(child, || {}).await;
    assert!(out.status.success());
    let s = summary(&out);
    assert!(s["hold"]["checks"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(s["hold"]["lastRelaying"], 4, "{s}");
    assert_eq!(turn.status().allocations, 0, "deallocated on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_checks_and_sees_a_server_that_went_away() {
    let turn = turn_node(|_| {}).await;
    let mut child = load(turn.addrs().udp[0], &["--allocations", "2", "--rate", "500k", "--duration", "500ms"])
        .arg("--hold")
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    expect_line(&lines, "holding 2 allocations: SIGINT or SIGTERM deallocates them, SIGUSR1 checks they relay").await;
    kill(&child, "-USR1");
    expect_line(&lines, "held: 2/2 relaying").await;
    turn.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(&child, "-USR1");
    expect_line(&lines, "held: 0/2 relaying").await;
    kill(&child, "-INT");
    let out = wait(child, || {}).await;
    assert!(!out.status.success(), "held allocations that stopped relaying fail the run");
    assert_eq!(summary(&out)["hold"]["checks"], 2);
}
