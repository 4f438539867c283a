//! Real peers over a shaped link: a subscriber in its own network namespace, behind `tc`
//! on the veth that carries the SFU's media to it, against an in-process media-node.
//! The publisher and the subscriber are `switchyard load sfu` processes (str0m clients:
//! TWCC feedback, NACKs), the subscriber started with `ip netns exec`.
//!
//! Needs root (network namespaces, `tc`), so the tests are `#[ignore]`d and
//! `scripts/test` runs them with `--ignored`. Every namespace and veth is removed on drop,
//! also when a test fails.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_media_node::{Config, Node, NodeHandle};

const KEY: &str = "shapekey";
const SECRET: &str = "shape-secret-shape-secret";

/// A network namespace joined to this one by a veth pair: `host` (here) ↔ `peer` (there).
struct Link {
    ns: String,
    host_if: String,
    host_ip: Ipv4Addr,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(out.status.success(), "{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Link {
    fn new() -> Link {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id() % 10_000 * 10 + n;
        let (ns, host_if, peer_if) = (format!("sy-shape-{id}"), format!("syh{id}"), format!("syp{id}"));
        // A /30 of 10.231.0.0/16 per link, from the id: distinct within this process.
        let base = (id % 16_000) * 4;
        let net = |host: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 231, 0, 0)) + base + host);
        let (host_ip, peer_ip) = (net(1), net(2));
        let link = Link { ns: ns.clone(), host_if: host_if.clone(), host_ip };
        sh(&["ip", "netns", "add", &ns]);
        sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if]);
        sh(&["ip", "link", "set", &peer_if, "netns", &ns]);
        sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&["ip", "-n", &ns, "addr", "add", &format!("{peer_ip}/30"), "dev", &peer_if]);
        sh(&["ip", "-n", &ns, "link", "set", &peer_if, "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        link
    }

    /// Replace the qdisc on what flows from here to the namespace (`tc` words after `root`).
    fn shape(&self, qdisc: &[&str]) {
        let mut args = vec!["tc", "qdisc", "replace", "dev", &self.host_if, "root"];
        args.extend_from_slice(qdisc);
        sh(&args);
    }

    /// Drop `percent` % of the UDP datagrams arriving in the namespace (nftables `numgen`:
    /// the kernel here has no netem), so media loses packets and signaling does not.
    fn lose_udp(&self, percent: u32) {
        let nft = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &self.ns, "nft"];
            all.extend_from_slice(args);
            sh(&all);
        };
        nft(&["add", "table", "inet", "sy_loss"]);
        nft(&["add", "chain", "inet", "sy_loss", "input", "{ type filter hook input priority 0; }"]);
        let below = percent.to_string();
        nft(&["add", "rule", "inet", "sy_loss", "input", "meta", "l4proto", "udp"]
            .into_iter()
            .chain(["numgen", "random", "mod", "100", "<", &below, "drop"])
            .collect::<Vec<_>>());
    }

    fn unshape(&self) {
        sh(&["tc", "qdisc", "del", "dev", &self.host_if, "root"]);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting one end of a veth deletes both.
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

async fn media_node(ip: Ipv4Addr) -> NodeHandle {
    let mut c = Config::local(KEY, SECRET);
    let at = SocketAddr::new(IpAddr::V4(ip), 0);
    (c.http_addr, c.udp_addr, c.tcp_addr) = (at, at, at);
    Node::start(c).await.expect("media-node starts")
}

/// `switchyard load sfu` against `node`, inside `ns` when given.
fn load(node: &NodeHandle, ns: Option<&str>, room: &str, extra: &[&str]) -> Child {
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin]);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["load", "sfu", "--url", &format!("ws://{}", node.http_addr), "--api-key", KEY, "--api-secret", SECRET])
        .args(["--room-prefix", room, "--json", "--threads", "1", "--max-loss", "100"])
        .args(extra)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("switchyard runs")
}

/// Wait for the child without blocking the runtime the node lives on.
async fn finish(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("load did not finish within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.wait_with_output().unwrap()
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {:?}, stderr {}", out.stdout, String::from_utf8_lossy(&out.stderr)))
}

/// (seconds since the subscriber started, received bit/s) of each live second.
fn timeline(s: &Value) -> Vec<(f64, f64)> {
    s["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|p| (p["seconds"].as_f64().unwrap(), p["receivedBps"].as_f64().unwrap()))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The publisher sends 720p as three layers (q 125 kbit/s, h 500 kbit/s, f 2 Mbit/s) and
/// Opus at 32 kbit/s; the subscriber asks for the top layer. Behind a 300 kbit/s token
/// bucket the server's estimate falls and the subscriber receives the low layer; when the
/// limit is lifted the estimate grows and the subscriber moves up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network namespaces and tc"]
async fn a_subscriber_behind_300_kbits_gets_the_low_layer_and_moves_up_when_the_limit_lifts() {
    const LIFT_AT: f64 = 24.0;
    let link = Link::new();
    let node = media_node(link.host_ip).await;
    let mut publisher =
        load(&node, None, "shaped", &["--publishers", "1", "--subscribers", "0", "--simulcast", "--duration", "64s"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    link.shape(&["tbf", "rate", "300kbit", "burst", "8kb", "latency", "200ms"]);
    let subscriber = load(
        &node,
        Some(&link.ns),
        "shaped",
        &[
            "--publishers",
            "0",
            "--remote-publishers",
            "1",
            "--simulcast",
            "--subscribers",
            "1",
            "--quality",
            "high",
            "--decrypt-all",
            "--duration",
            "54s",
        ],
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(LIFT_AT)).await;
    link.unshape();
    let lifted = started.elapsed().as_secs_f64();
    let out = finish(subscriber, Duration::from_secs(80)).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
    let s = summary(&out);
    let t = timeline(&s);
    let kbits: Vec<String> = t.iter().map(|(at, bps)| format!("{at:.0}s:{:.0}", bps / 1e3)).collect();
    println!("shaped link: kbit/s each second (limit lifted at {lifted:.1} s): {}", kbits.join(" "));
    // The last 8 s before the lift: the estimate has come down from its initial 1 Mbit/s
    // (which starts the subscriber on the middle layer, of which the bucket passes
    // ~240 kbit/s).
    let shaped: Vec<f64> = t.iter().filter(|(at, _)| (LIFT_AT - 8.0..LIFT_AT).contains(at)).map(|p| p.1).collect();
    let shaped_median = median(shaped);
    // The low layer and audio (~160 kbit/s of payload) fit; the middle layer (500) does not.
    assert!(
        (100_000.0..210_000.0).contains(&shaped_median),
        "behind 300 kbit/s the subscriber should receive the low layer: median {shaped_median} bit/s; {t:?}"
    );
    let up = |above: f64| t.iter().find(|(at, bps)| *at > lifted && *bps > above).map(|(at, _)| at - lifted);
    let to_middle = up(450_000.0);
    let to_top = up(1_500_000.0);
    println!(
        "shaped link: median {:.0} kbit/s behind 300 kbit/s; after the lift: middle layer after {to_middle:?} s, top layer after {to_top:?} s",
        shaped_median / 1e3
    );
    assert!(to_middle.is_some(), "the subscriber never moved up after the limit lifted: {t:?}");
}

/// 5 % loss on the SFU → subscriber link: NACKs from the subscriber and retransmissions
/// from the SFU's cache (RTX) repair most of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network namespaces and tc"]
async fn five_percent_loss_is_repaired_by_nack_and_rtx() {
    let link = Link::new();
    let node = media_node(link.host_ip).await;
    let mut publisher = load(
        &node,
        None,
        "lossy",
        &["--publishers", "1", "--subscribers", "0", "--video", "360p", "--duration", "30s"],
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    link.lose_udp(5);
    let subscriber = load(
        &node,
        Some(&link.ns),
        "lossy",
        &[
            "--publishers",
            "0",
            "--remote-publishers",
            "1",
            "--video",
            "360p",
            "--subscribers",
            "1",
            "--decrypt-all",
            "--duration",
            "20s",
        ],
    );
    let out = finish(subscriber, Duration::from_secs(60)).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
    let s = summary(&out);
    let video = s["lossRatioByKind"]["video"].as_f64().expect("video loss");
    let audio = s["lossRatioByKind"]["audio"].as_f64().expect("audio loss");
    println!("5 % loss link: residual video loss {:.3} %, audio {:.3} %", video * 100.0, audio * 100.0);
    assert!(s["received"]["packets"].as_u64().unwrap() > 500, "{s}");
    // Video is retransmitted; audio (Opus, no RTX) is not.
    assert!(video < 0.01, "NACK/RTX should leave under 1 % of 5 % loss: {video}; {s}");
    assert!(audio > 0.02, "audio is not retransmitted, so its loss shows the link's: {audio}; {s}");
}
