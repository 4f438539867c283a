//! Interop with coturn's own test client: `turnutils_uclient` allocates on our
//! server over UDP, TCP and TLS with TURN REST API credentials (`-W`), binds
//! channels and relays to coturn's `turnutils_peer` echo on 127.0.0.1. Every
//! message must come back. These tests fail (not skip) when coturn is missing.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_peer() -> (Peer, u16) {
    let port = free_udp_port();
    let child = Command::new(coturn_tool("turnutils_peer"))
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn turnutils_peer");
    std::thread::sleep(std::time::Duration::from_millis(200));
    (Peer(child), port)
}

struct Report {
    sent: u64,
    received: u64,
    lost: u64,
    output: String,
}

fn field(output: &str, key: &str) -> Option<u64> {
    output
        .lines()
        .rev()
        .find_map(|l| l.split_once(key).map(|(_, rest)| rest))
        .and_then(|rest| rest.trim_start_matches(['=', ' ']).split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}

/// Run uclient to completion (blocking; called from spawn_blocking).
fn uclient(extra: &[&str], port: u16, peer_port: u16, messages: u32, clients: u32) -> Report {
    let mut cmd = Command::new(coturn_tool("turnutils_uclient"));
    cmd.args(extra).args([
        "-c", // no RTCP allocations
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-n",
        &messages.to_string(),
        "-l",
        "120",
        "-m",
        &clients.to_string(),
        "-W",
        SECRET,
        "-u",
        "uclient",
        "-p",
        &port.to_string(),
        "127.0.0.1",
    ]);
    let out = cmd.output().expect("run turnutils_uclient");
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let sent = field(&output, "tot_send_msgs").unwrap_or(0);
    let received = field(&output, "tot_recv_msgs").unwrap_or(0);
    let lost = field(&output, "Total lost packets").unwrap_or(u64::MAX);
    Report { sent, received, lost, output }
}

async fn run(transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(loopback_config(dir.path())).await;
    let (_peer, peer_port) = start_peer();
    let (port, extra): (u16, Vec<&str>) = match transport {
        "udp" => (server.addrs().udp[0].port(), vec![]),
        "tcp" => (server.addrs().tcp[0].port(), vec!["-t"]),
        _ => (server.addrs().tls[0].port(), vec!["-t", "-S"]),
    };
    let (messages, clients) = (50, 4);
    let report =
        tokio::task::spawn_blocking(move || uclient(&extra, port, peer_port, messages, clients)).await.unwrap();
    // uclient counts per direction of its client-to-peer sessions.
    let expected = u64::from(messages * clients);
    assert_eq!(report.sent, expected, "uclient over {transport} sent everything:\n{}", report.output);
    assert_eq!(report.received, expected, "every message came back over {transport}:\n{}", report.output);
    assert_eq!(report.lost, 0, "no loss over {transport}:\n{}", report.output);
    assert!(!report.output.contains("error 4"), "no TURN error over {transport}:\n{}", report.output);
    let metrics = http("GET", server.addrs().admin, "/metrics").await.1;
    let series =
        format!("switchyard_turn_relayed_packets_total{{direction=\"peer_to_client\",transport=\"{transport}\"}}");
    assert!(metric(&metrics, &series).unwrap_or(0.0) >= expected as f64, "{series} counted live:\n{metrics}");
    // The bandwidth gauge the operator autoscales on is live: it shows the
    // traffic within its window, before any allocation has ended.
    let (_, body) = http("GET", server.addrs().admin, "/internal/status").await;
    let status: switchyard_api::node::TurnNodeStatus = serde_json::from_str(&body).unwrap();
    assert!(status.bandwidth_bps > 0, "live bandwidth in /internal/status: {body}");
    server.shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_udp() {
    run("udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_tcp() {
    run("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_tls() {
    run("tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_with_wrong_secret_gets_nothing_relayed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(loopback_config(dir.path())).await;
    let (_peer, peer_port) = start_peer();
    let port = server.addrs().udp[0].port();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(coturn_tool("turnutils_uclient"))
            .args(["-c", "-e", "127.0.0.1", "-r", &peer_port.to_string(), "-n", "5", "-W", "not-the-secret"])
            .args(["-u", "mallory", "-p", &port.to_string(), "127.0.0.1"])
            .output()
            .expect("run uclient")
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("Cannot complete Allocation") || text.contains("401"),
        "forged REST credentials must not allocate:\n{text}"
    );
    assert_eq!(server.status().allocations, 0);
    let metrics = server.metrics();
    use switchyard_turn_node::metrics::AllocResult;
    assert!(metrics.alloc_result_count(AllocResult::Unauthorized) >= 1);
    server.shutdown();
}
