//! The `turn-node` binary end to end: YAML config + flags, the admin API, and
//! SIGTERM → drain → exit 0; and a bad config naming the offending field.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_config_admin_api_and_sigterm_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let tls = self_signed(dir.path());
    let admin_port = free_tcp_port();
    let config = dir.path().join("turn.yaml");
    std::fs::write(
        &config,
        format!(
            "realm: {REALM}\n\
             listeners:\n  - {{ protocol: udp, address: '127.0.0.1:0' }}\n  - {{ protocol: tls, address: '127.0.0.1:0' }}\n\
             tls: {{ certFile: '{}', keyFile: '{}' }}\n\
             relay: {{ address: 127.0.0.1, portMin: 0, portMax: 0 }}\n\
             auth: {{ secrets: [{SECRET}] }}\n\
             adminAddress: '127.0.0.1:{admin_port}'\n",
            tls.cert_file.display(),
            tls.key_file.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_turn-node"))
        .arg("--config")
        .arg(&config)
        .args(["--workers", "1", "--allow-peer", "127.0.0.0/8"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let admin = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        assert!(Instant::now() < deadline, "admin port never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http("GET", admin, "/healthz").await.0, 200);
    assert_eq!(http("GET", admin, "/readyz").await.0, 200);
    let (code, body) = http("GET", admin, "/internal/status").await;
    assert_eq!(code, 200);
    let status: switchyard_api::node::TurnNodeStatus = serde_json::from_str(&body).unwrap();
    assert!(!status.draining);
    let metrics = http("GET", admin, "/metrics").await.1;
    assert!(metrics.contains("switchyard_turn_allocations"), "{metrics}");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM with no allocations");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "drained exit is 0: {status}");
}

#[test]
fn invalid_config_fails_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "relay: { address: 127.0.0.1, portMin: 60000, portMax: 50000 }\nauth: { secrets: [x] }\n")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_turn-node")).arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("relay.portMin"), "{stderr}");
}
