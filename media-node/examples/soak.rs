//! Soak: participants join and leave a separate `media-node` process for a bounded time,
//! and its resident memory and open file descriptors are reported before, during and after
//! (they should return to the baseline once the rooms are empty). Each participant is a
//! real WebRTC peer publishing audio, staying a few seconds to half a minute.
//!
//! bench/soak.sh runs it (10 minutes of 50 participants by default; `--seconds` shortens).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use common::*;
use switchyard_api::signal::TrackKind;

#[derive(Parser)]
struct Args {
    /// Path of the media-node binary.
    #[arg(long)]
    media_node: String,
    /// Participants connected at once (each rejoins as soon as it has left).
    #[arg(long, default_value_t = 50)]
    participants: usize,
    /// Rooms they are spread over.
    #[arg(long, default_value_t = 5)]
    rooms: usize,
    /// How long participants keep joining, seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Shortest and longest stay of one participant, seconds.
    #[arg(long, default_value_t = 5)]
    stay_min: u64,
    #[arg(long, default_value_t = 30)]
    stay_max: u64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 30)]
    sample_every: u64,
    /// Seconds to wait after the last participant left before the final sample (the
    /// node's empty-room timeout is set to 1 s; it gives freed memory back within 10 s
    /// of its connections closing).
    #[arg(long, default_value_t = 15)]
    settle: u64,
}

const HTTP: &str = "127.0.0.1:17780";
const ADMIN: &str = "127.0.0.1:17790";

fn spawn(bin: &str) -> Child {
    Command::new(bin)
        .args(["--http-addr", HTTP, "--udp-addr", "127.0.0.1:17782", "--tcp-addr", "127.0.0.1:17781"])
        .args(["--admin-addr", ADMIN, "--api-key", &format!("{KEY}:{SECRET}"), "--empty-timeout-seconds", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("media-node starts")
}

/// Resident set (KiB) and open file descriptors of `pid`.
fn sample(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (rss, fds)
}

async fn participants(admin: std::net::SocketAddr) -> u64 {
    let (_, body) = http(admin, "GET", "/internal/status").await;
    serde_json::from_str::<switchyard_api::node::MediaNodeStatus>(&body).map(|s| s.participants).unwrap_or(0)
}

fn line(label: &str, pid: u32, present: u64, joins: u64, failed: u64) -> (u64, usize) {
    let (rss, fds) = sample(pid);
    println!(
        "{label:>10}  rss {:>7.1} MiB  fds {fds:>5}  participants {present:>4}  joins {joins:>6}  failed {failed:>4}",
        rss as f64 / 1024.0
    );
    (rss, fds)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut child = spawn(&args.media_node);
    let pid = child.id();
    let node: std::net::SocketAddr = HTTP.parse().unwrap();
    let admin: std::net::SocketAddr = ADMIN.parse().unwrap();
    let up = Instant::now();
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        assert!(child.try_wait().unwrap().is_none(), "media-node exited");
        assert!(up.elapsed() < Duration::from_secs(30), "media-node did not listen within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "soak: {} participants in {} rooms for {} s, stays {}-{} s",
        args.participants, args.rooms, args.seconds, args.stay_min, args.stay_max
    );
    let (rss0, fds0) = line("before", pid, participants(admin).await, 0, 0);

    let joins = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let span = args.stay_max.saturating_sub(args.stay_min) + 1;
    let mut workers = vec![];
    for i in 0..args.participants {
        let (joins, failed) = (joins.clone(), failed.clone());
        let room = format!("soak-{}", i % args.rooms.max(1));
        let stay_min = args.stay_min;
        workers.push(tokio::spawn(async move {
            // Spread the first joins over a couple of seconds.
            tokio::time::sleep(Duration::from_millis(40 * i as u64)).await;
            let mut round = 0u64;
            while Instant::now() < deadline {
                let identity = format!("p{i}-{round}");
                let stay = Duration::from_secs(stay_min + (i as u64 * 7 + round * 13) % span);
                let id = (i % 200) as u8 + 1;
                match Peer::try_join(&node, &token(&identity, &room, |_| {}), id, &[TrackKind::Audio]).await {
                    Ok(peer) => {
                        joins.fetch_add(1, Ordering::Relaxed);
                        let media = peer.start_media(stay);
                        tokio::time::sleep(stay.min(deadline.saturating_duration_since(Instant::now()))).await;
                        media.abort();
                        peer.close().await;
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                round += 1;
            }
        }));
    }
    let (mut peak_rss, mut peak_fds) = (rss0, fds0);
    let started = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_secs(args.sample_every).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        let label = format!("{} s", started.elapsed().as_secs());
        let present = participants(admin).await;
        let (rss, fds) = line(&label, pid, present, joins.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        peak_rss = peak_rss.max(rss);
        peak_fds = peak_fds.max(fds);
    }
    for w in workers {
        let _ = w.await;
    }
    let empty = Instant::now() + Duration::from_secs(30);
    while participants(admin).await > 0 && Instant::now() < empty {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let (joined, fails) = (joins.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let (rss1, fds1) = line("after", pid, participants(admin).await, joined, fails);
    println!(
        "summary: rss {:.1} → peak {:.1} → {:.1} MiB; fds {fds0} → peak {peak_fds} → {fds1}; {joined} joins, {fails} failed",
        rss0 as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        rss1 as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
}
