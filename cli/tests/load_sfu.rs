//! `switchyard load sfu` against an in-process media-node on loopback.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_media_node::{Config, Node, NodeHandle};

const KEY: &str = "loadkey";
const SECRET: &str = "load-secret-load-secret";

async fn media_node() -> NodeHandle {
    Node::start(Config::local(KEY, SECRET)).await.expect("media-node starts")
}

fn load(node: &NodeHandle, secret: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(["load", "sfu", "--url", &format!("ws://{}", node.http_addr), "--api-key", KEY, "--api-secret", secret])
        .args(["--json", "--threads", "1"])
        .args(extra)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Run the child without blocking the runtime the node lives on.
async fn run(cmd: &mut Command) -> Output {
    let child = cmd.spawn().expect("switchyard runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "load did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.wait_with_output().unwrap()
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}, stderr {}", out.stdout, String::from_utf8_lossy(&out.stderr)))
}

/// Two publishers (audio + video, each subscribing to the other) and two subscribers:
/// every participant connects and every expected track delivers media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_expected_track_delivers_media() {
    let node = media_node().await;
    // Half a second between joins: the subscribers join once the publishers send.
    let out = run(load(&node, SECRET, &["--publishers", "2", "--subscribers", "2", "--duration", "6s"]).args([
        "--ramp",
        "2",
        "--max-loss",
        "100",
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let s = summary(&out);
    assert!(out.status.success(), "{stderr}\n{s}");
    assert_eq!(s["participants"]["connected"], 4, "{s}");
    // Publishers see one publisher's two tracks, subscribers both publishers' four.
    assert_eq!(s["tracks"], serde_json::json!({ "expected": 12, "received": 12 }), "{s}");
    assert_eq!(s["errors"], serde_json::json!([]), "{s}");
    assert!(s["received"]["packets"].as_u64().unwrap() > 500, "{s}");
    assert!(s["received"]["bps"].as_f64().unwrap() > 1e6, "{s}");
    assert!(s["sent"]["bps"].as_f64().unwrap() > 2e6, "two publishers send ~2 Mbit/s each: {s}");
    assert!(s["firstMediaSeconds"]["count"].as_u64().unwrap() >= 1, "a subscriber joined flowing media: {s}");
    assert!(stderr.contains("participants 4/4 up"), "live line: {stderr}");
}

/// Simulcast: the subscriber asks for the top layer and receives one video stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_publishers_reach_subscribers() {
    let node = media_node().await;
    let out = run(load(&node, SECRET, &["--publishers", "1", "--subscribers", "1", "--duration", "5s"]).args([
        "--simulcast",
        "--max-loss",
        "100",
    ]))
    .await;
    let s = summary(&out);
    assert!(out.status.success(), "{}\n{s}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s["tracks"], serde_json::json!({ "expected": 2, "received": 2 }), "{s}");
    assert!(s["media"].as_str().unwrap().contains("3 simulcast layers"), "{s}");
}

/// A wrong secret: every join is refused, the run fails and the error is counted by code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_joins_are_reported_by_code() {
    let node = media_node().await;
    let out =
        run(&mut load(&node, "not-the-secret", &["--publishers", "1", "--subscribers", "1", "--duration", "2s"])).await;
    assert!(!out.status.success());
    let s = summary(&out);
    assert_eq!(s["participants"]["joined"], 0, "{s}");
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{s}");
    assert_eq!(errors[0]["count"], 2, "{s}");
    assert_eq!(errors[0]["code"], "bad_signature", "{s}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 of 2 participants never connected media: bad_signature"), "{stderr}");
}

#[test]
fn bad_arguments_get_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["load", "sfu", "--url", "ws://127.0.0.1:1", "--api-key", "k", "--api-secret", "s"])
        .args(["--subscribers", "400", "--ramp", "10", "--duration", "5s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ends before the last of 401 joins at --ramp 10/s"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["load", "sfu", "--url", "ws://127.0.0.1:1", "--token", "a,b", "--subscribers", "3"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 token(s) for 4 participants"));
}
