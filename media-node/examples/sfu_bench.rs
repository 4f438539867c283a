//! SFU measurements with real WebRTC peers against a separate `media-node` process:
//!
//! 1. forwarding cost: one publisher (audio + video) → N subscribers; reports packets
//!    forwarded per CPU-second of the media-node process (utime + stime from /proc);
//! 2. join time: WebSocket open → first media packet at a new subscriber, p50/p99.
//!
//! cargo build --release -p switchyard-media-node --bin media-node --example sfu_bench
//! target/release/examples/sfu_bench --media-node target/release/media-node --subscribers 10 --joins 100

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use common::*;
use switchyard_api::signal::TrackKind;

#[derive(Parser)]
struct Args {
    /// Path of the media-node binary to measure.
    #[arg(long)]
    media_node: String,
    /// Subscribers for the forwarding measurement.
    #[arg(long, default_value_t = 10)]
    subscribers: u8,
    /// Seconds of media for the forwarding measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Joins for the join-time measurement.
    #[arg(long, default_value_t = 100)]
    joins: usize,
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

async fn forwarded(http: std::net::SocketAddr) -> f64 {
    let body = reqwest_lite(http, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with("switchyard_media_rtp_packets_total{direction=\"out\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A tiny HTTP GET (the bench needs nothing more).
async fn reqwest_lite(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The node's signaling and admin (metrics) addresses.
fn spawn(bin: &str) -> (Child, std::net::SocketAddr, std::net::SocketAddr) {
    let http: std::net::SocketAddr = "127.0.0.1:17880".parse().unwrap();
    let admin: std::net::SocketAddr = "127.0.0.1:17890".parse().unwrap();
    let child = Command::new(bin)
        .args(["--http-addr", "127.0.0.1:17880", "--udp-addr", "127.0.0.1:17882", "--tcp-addr", "127.0.0.1:17881"])
        .args(["--admin-addr", "127.0.0.1:17890"])
        .args(["--api-key", &format!("{KEY}:{SECRET}"), "--shards", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("media-node starts");
    (child, http, admin)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (mut child, node, admin) = spawn(&args.media_node);
    let node = &node;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. Forwarding cost.
    let publisher = Peer::join(node, &token("stage", "bench", |_| {}), 1, &[TrackKind::Audio, TrackKind::Video]).await;
    let mut subs = vec![];
    for i in 0..args.subscribers {
        subs.push(Peer::join(node, &token(&format!("s{i}"), "bench", |g| g.can_publish = false), 10 + i, &[]).await);
    }
    let sending = publisher.start_media(Duration::from_secs(args.seconds + 3));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, fwd0, t0) = (cpu_seconds(child.id()), forwarded(admin).await, Instant::now());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (cpu1, fwd1, t1) = (cpu_seconds(child.id()), forwarded(admin).await, Instant::now());
    sending.abort();
    let packets = fwd1 - fwd0;
    let cpu = cpu1 - cpu0;
    println!("forwarding: 1 publisher -> {} subscribers for {:.1} s", args.subscribers, (t1 - t0).as_secs_f64());
    println!(
        "  packets forwarded {packets:.0} ({:.0}/s), media-node CPU {cpu:.2} s",
        packets / (t1 - t0).as_secs_f64()
    );
    println!("  packets forwarded per CPU-second: {:.0}", packets / cpu.max(0.001));
    for s in subs {
        s.close().await;
    }

    // 2. Join time, with the publisher still sending.
    let sending = publisher.start_media(Duration::from_secs(3600));
    let mut times = vec![];
    for i in 0..args.joins {
        let start = Instant::now();
        let mut p = Peer::join(node, &token(&format!("j{i}"), "bench", |g| g.can_publish = false), 200, &[]).await;
        let ok = eventually(Duration::from_secs(10), || p.valid_from(TrackKind::Audio, 1) > 0).await;
        if ok {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        } else {
            let mut seen = vec![];
            while let Ok(m) = p.events.try_recv() {
                seen.push(format!("{m:?}").chars().take(60).collect::<String>());
            }
            eprintln!(
                "join {i}: no media; video {}, invalid {}, state {:?}, events {seen:?}",
                p.valid_from(TrackKind::Video, 1),
                p.invalid(),
                p.pc.ice_connection_state()
            );
        }
        p.close().await;
    }
    sending.abort();
    times.sort_by(f64::total_cmp);
    println!("join → first media packet over {} joins ({} got media):", args.joins, times.len());
    if !times.is_empty() {
        println!(
            "  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1]
        );
    }
    let _ = child.kill();
}
