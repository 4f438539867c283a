//! `switchyard load sfu`: rooms of synthetic participants against an SFU, over the public
//! signaling protocol only, so it loads any media-node (and measures what a client sees).
//!
//! ```text
//!  controller ── ramp: one join every 1/--ramp s ──► participant task × N
//!      │  live line each second (sums of Live)          WebSocket  /rtc (signaling)
//!      │  stop at --duration, collect Outcomes          str0m Rtc (sans-IO, RTP mode)
//!      ▼                                                UDP socket (its own 5-tuple)
//!  summary: join → first media, tracks expected vs received, bit rates, loss, jitter
//! ```
//!
//! Each participant needs its own UDP socket: an SFU tells peers apart by 5-tuple. All of
//! them are driven by a few runtime threads in one process; a participant is a str0m
//! `Rtc` (no per-peer threads or timers), and media is pre-encoded synthetic VP8 and
//! Opus written as RTP, so the generator costs a fraction of what the SFU it loads spends
//! on the same packets.

mod media;
mod peer;
mod stats;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use switchyard_api::signal::VideoQuality;
use switchyard_api::token::{Claims, Grants, mint};
use tokio::sync::watch;

use self::media::VideoSpec;
use self::stats::{Live, Second, Summary, Totals, live_line};
use super::{parse_duration, parse_percent, parse_rate};

#[derive(Debug, clap::Args)]
pub(crate) struct SfuArgs {
    /// The signaling URL: ws://host:port (http:// works too); `/rtc` is appended.
    #[arg(long)]
    url: String,
    /// API key to mint one access token per participant.
    #[arg(long, env = "SWITCHYARD_API_KEY", required_unless_present = "token", requires = "api_secret")]
    api_key: Option<String>,
    /// Secret of --api-key.
    #[arg(long, env = "SWITCHYARD_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
    /// Ready-made access tokens instead of --api-key: one per participant (comma-separated
    /// or repeated), publishers first; each needs its own identity.
    #[arg(long, value_delimiter = ',', conflicts_with = "api_key")]
    token: Vec<String>,
    /// Rooms to load.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rooms: u32,
    /// Room names are `<prefix>-<n>`.
    #[arg(long, default_value = "load")]
    room_prefix: String,
    /// Participants per room that publish (and subscribe to the other publishers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1000))]
    publishers: u32,
    /// Participants per room that only subscribe.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    subscribers: u32,
    /// Publishers per room that joined from elsewhere (another run of this command, in
    /// another network namespace say), sending what --video and --audio say: every
    /// participant here expects their tracks too.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    remote_publishers: u32,
    /// Publishers' camera: `none`, a preset (`180p`, `360p`, `720p`, `1080p`), or
    /// `WIDTHxHEIGHT`, optionally with `@BITRATE` (`720p@2.5M`, `640x480@800k`).
    #[arg(long, default_value = "720p", value_parser = parse_video)]
    video: VideoArg,
    /// Send the camera as three simulcast layers (full, half and quarter size).
    #[arg(long)]
    simulcast: bool,
    /// The simulcast layer subscribers ask for.
    #[arg(long, value_enum, default_value_t = Quality::High)]
    quality: Quality,
    /// Time between video keyframes.
    #[arg(long, default_value = "2.5s", value_parser = parse_duration)]
    keyframe_interval: Duration,
    /// Publishers' microphone: Opus at this bit rate in 20 ms packets, or `none`.
    #[arg(long, default_value = "32k", value_parser = parse_audio)]
    audio: AudioArg,
    /// How long the whole run lasts, joins included.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Joins per second.
    #[arg(long, default_value = "10", value_parser = parse_ramp)]
    ramp: f64,
    /// Let str0m decrypt every received packet; by default each stream's first 50 are
    /// decrypted and authenticated, later ones counted from their (clear) RTP header.
    #[arg(long)]
    decrypt_all: bool,
    /// Local address of the participants' UDP sockets (default: the one that routes to the server).
    #[arg(long)]
    local_ip: Option<IpAddr>,
    /// Runtime threads driving the participants (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Fail when more than this percentage of packets is lost.
    #[arg(long, default_value = "1", value_parser = parse_percent)]
    max_loss: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `--video`.
#[derive(Clone, Debug, PartialEq)]
enum VideoArg {
    None,
    Camera { width: u32, height: u32, bitrate: u64 },
}

fn parse_video(s: &str) -> Result<VideoArg, String> {
    let err = || format!("{s:?} is not a video such as none, 720p, 1080p@3M or 640x360@600k");
    if s == "none" {
        return Ok(VideoArg::None);
    }
    let (size, rate) = s.split_once('@').map_or((s, None), |(a, b)| (a, Some(b)));
    let (width, height, default_rate) = match size {
        "180p" => (320, 180, 150_000),
        "360p" => (640, 360, 600_000),
        "720p" => (1280, 720, 2_000_000),
        "1080p" => (1920, 1080, 3_000_000),
        wxh => {
            let (w, h) = wxh.split_once('x').ok_or_else(err)?;
            let (w, h): (u32, u32) = (w.parse().map_err(|_| err())?, h.parse().map_err(|_| err())?);
            if !(16..=7680).contains(&w) || !(16..=4320).contains(&h) {
                return Err(format!("{s:?}: width and height must be 16–7680 × 16–4320"));
            }
            // About 0.07 bits per pixel at 30 fps, what browsers pick for a camera.
            (w, h, u64::from(w * h) * 2)
        }
    };
    let bitrate = rate.map(parse_rate).transpose()?.unwrap_or(default_rate);
    if !(10_000..=50_000_000).contains(&bitrate) {
        return Err(format!("{s:?}: the video bit rate must be between 10k and 50M"));
    }
    Ok(VideoArg::Camera { width, height, bitrate })
}

/// `--audio`: the Opus bit rate, if any.
#[derive(Clone, Copy, Debug, PartialEq)]
struct AudioArg(Option<u64>);

fn parse_audio(s: &str) -> Result<AudioArg, String> {
    if s == "none" {
        return Ok(AudioArg(None));
    }
    let rate = parse_rate(s)?;
    if !(6_000..=510_000).contains(&rate) {
        return Err(format!("{s:?}: Opus runs at 6k to 510k bits per second, or give none"));
    }
    Ok(AudioArg(Some(rate)))
}

fn parse_ramp(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0 && *r <= 10_000.0)
        .ok_or_else(|| format!("{s:?} is not a join rate between 0 and 10000 per second"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Quality {
    Low,
    Medium,
    High,
}

impl From<Quality> for VideoQuality {
    fn from(q: Quality) -> Self {
        match q {
            Quality::Low => VideoQuality::Low,
            Quality::Medium => VideoQuality::Medium,
            Quality::High => VideoQuality::High,
        }
    }
}

/// One participant to start: (room index, publishes).
fn join_order(rooms: u32, publishers: u32, subscribers: u32) -> Vec<(u32, bool)> {
    // Publishers first, so subscribers join rooms where media already flows.
    let mut order: Vec<(u32, bool)> = (0..rooms).flat_map(|r| (0..publishers).map(move |_| (r, true))).collect();
    for _ in 0..subscribers {
        order.extend((0..rooms).map(|r| (r, false)));
    }
    order
}

/// The signaling endpoint with its token.
pub(crate) fn rtc_url(base: &str, token: &str) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if base.starts_with("ws://") {
        base.to_owned()
    } else if base.starts_with("wss://") || base.starts_with("https://") {
        anyhow::bail!(
            "--url {base}: TLS (wss://, https://) is not supported by this build; use ws:// on a reachable port"
        )
    } else {
        anyhow::bail!("--url {base}: expected ws://host:port")
    };
    let path = if base.ends_with("/rtc") { "" } else { "/rtc" };
    Ok(format!("{base}{path}?access_token={token}"))
}

/// The local address that routes to the signaling host (connecting a UDP socket sends nothing).
fn local_ip_for(url: &str) -> anyhow::Result<IpAddr> {
    let hostport = url.split("://").nth(1).unwrap_or(url).split(['/', '?']).next().unwrap_or_default();
    let server: SocketAddr = hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} has no address"))?;
    if server.ip().is_loopback() {
        return Ok(server.ip());
    }
    let probe = std::net::UdpSocket::bind((if server.is_ipv4() { "0.0.0.0" } else { "::" }, 0))?;
    probe.connect(server).with_context(|| format!("no route to {server}"))?;
    Ok(probe.local_addr()?.ip())
}

/// CPU seconds (user + system) this process has used.
fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

pub(crate) fn run(args: SfuArgs) -> anyhow::Result<()> {
    let order = join_order(args.rooms, args.publishers, args.subscribers);
    anyhow::ensure!(!order.is_empty(), "no participants: give --publishers or --subscribers above 0");
    anyhow::ensure!(
        args.publishers > 0 || args.remote_publishers > 0 || args.subscribers == 0,
        "subscribers need a publisher: give --publishers (or --remote-publishers) 1 or more"
    );
    let video = match args.video {
        VideoArg::None => None,
        VideoArg::Camera { width, height, bitrate } => {
            Some(Arc::new(VideoSpec::new(width, height, bitrate, args.simulcast, args.keyframe_interval)))
        }
    };
    anyhow::ensure!(
        video.is_some() || args.audio.0.is_some() || args.publishers == 0,
        "--video none and --audio none: publishers would send nothing"
    );
    anyhow::ensure!(!(args.simulcast && video.is_none()), "--simulcast needs video");
    let ramp_time = Duration::from_secs_f64(order.len().saturating_sub(1) as f64 / args.ramp);
    anyhow::ensure!(
        ramp_time < args.duration,
        "--duration {:?} ends before the last of {} joins at --ramp {}/s ({:.1} s): raise --duration or --ramp",
        args.duration,
        order.len(),
        args.ramp,
        ramp_time.as_secs_f64()
    );
    let urls = tokens(&args, &order)?.iter().map(|t| rtc_url(&args.url, t)).collect::<anyhow::Result<Vec<_>>>()?;
    let local_ip = match args.local_ip {
        Some(ip) => ip,
        None => local_ip_for(&args.url)?,
    };
    let threads = args.threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let tracks_per_publisher = usize::from(video.is_some()) + usize::from(args.audio.0.is_some());
    let media = describe_media(video.as_deref(), args.audio.0);
    let plans: Vec<peer::Plan> = {
        let remote = args.remote_publishers > 0;
        let flowing: Vec<Arc<AtomicBool>> = (0..args.rooms).map(|_| Arc::new(AtomicBool::new(remote))).collect();
        order
            .iter()
            .zip(urls)
            .map(|(&(room, publish), url)| peer::Plan {
                url,
                publish,
                audio_bitrate: args.audio.0,
                video: video.clone(),
                quality: args.quality.into(),
                expected_tracks: (args.publishers as usize - usize::from(publish) + args.remote_publishers as usize)
                    * tracks_per_publisher,
                decrypt_all: args.decrypt_all,
                local_ip,
                room_flowing: flowing[room as usize].clone(),
                live: Arc::new(Live::default()),
            })
            .collect()
    };
    let cpu0 = own_cpu_seconds();
    let mut summary = runtime.block_on(drive(plans, args.ramp, args.duration))?;
    summary.cpu_seconds = own_cpu_seconds() - cpu0;
    summary.url = args.url.clone();
    summary.rooms = args.rooms as usize;
    summary.publishers = args.publishers as usize;
    summary.subscribers = args.subscribers as usize;
    summary.media = media;
    runtime.shutdown_timeout(Duration::from_secs(1));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary.json())?);
    } else {
        print!("{}", summary.text());
    }
    summary.verdict(args.max_loss)
}

fn describe_media(video: Option<&VideoSpec>, audio: Option<u64>) -> String {
    let mut parts = vec![];
    if let Some(v) = video {
        let top = v.layers.last().expect("a layer");
        let layers =
            if v.layers.len() > 1 { format!(" in {} simulcast layers", v.layers.len()) } else { String::new() };
        parts.push(format!(
            "VP8 {}x{} {:.2} Mbit/s{layers}, keyframe every {:.1} s",
            top.width,
            top.height,
            v.layers.iter().map(|l| l.bitrate).sum::<u64>() as f64 / 1e6,
            v.keyframe_interval.as_secs_f64()
        ));
    }
    if let Some(a) = audio {
        parts.push(format!("Opus {} kbit/s", a / 1000));
    }
    if parts.is_empty() { "no media".into() } else { parts.join(" + ") }
}

/// One token per participant, in join order.
fn tokens(args: &SfuArgs, order: &[(u32, bool)]) -> anyhow::Result<Vec<String>> {
    if !args.token.is_empty() {
        anyhow::ensure!(
            args.token.len() >= order.len(),
            "--token: {} token(s) for {} participants; give one per participant (each its own identity) or use --api-key and --api-secret",
            args.token.len(),
            order.len()
        );
        return Ok(args.token[..order.len()].to_vec());
    }
    let key = args.api_key.as_deref().context("--api-key or --token is needed")?;
    let secret = args.api_secret.as_deref().context("--api-secret is needed with --api-key")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let ttl = args.duration.as_secs() + 3600;
    let mut seen = vec![0u32; args.rooms as usize * 2];
    order
        .iter()
        .map(|&(room, publish)| {
            let n = &mut seen[room as usize * 2 + usize::from(publish)];
            let identity = format!("{}-{}-{room}-{n}", if publish { "pub" } else { "sub" }, args.room_prefix);
            *n += 1;
            let mut grants = Grants::join(format!("{}-{room}", args.room_prefix));
            grants.can_publish = publish;
            Ok(mint(&Claims::new(key, identity, now, ttl).with_grants(grants), secret)?)
        })
        .collect()
}

async fn drive(plans: Vec<peer::Plan>, ramp: f64, duration: Duration) -> anyhow::Result<Summary> {
    let start = Instant::now();
    let end = start + duration;
    let n = plans.len();
    let live: Vec<Arc<Live>> = plans.iter().map(|p| p.live.clone()).collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let every = Duration::from_secs_f64(1.0 / ramp);
    let spawner = tokio::spawn(async move {
        let mut handles = Vec::with_capacity(plans.len());
        for (i, plan) in plans.into_iter().enumerate() {
            tokio::time::sleep_until((start + every * i as u32).into()).await;
            handles.push(tokio::spawn(peer::run(plan, stop_rx.clone())));
        }
        handles
    });
    let last_join = start + every * n.saturating_sub(1) as u32;
    let steady_from = last_join + Duration::from_secs(1);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut interrupted = false;
    let mut tick = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
    let mut prev = Totals::default();
    let mut prev_at = start;
    let mut steady_start: Option<(Instant, Totals)> = None;
    let mut timeline = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => { interrupted = true; break; }
        }
        let now = Instant::now();
        let t = Totals::sum(live.iter().map(Arc::as_ref));
        let second = Second { at: now - start, over: now - prev_at, delta: t.since(&prev) };
        eprintln!("{}", live_line(second.at, n, &second.delta, second.over));
        timeline.push(second);
        if steady_start.is_none() && now >= steady_from {
            steady_start = Some((now, t));
        }
        (prev, prev_at) = (t, now);
        if now + Duration::from_millis(500) >= end {
            break;
        }
    }
    let stopped = Instant::now();
    let totals = Totals::sum(live.iter().map(Arc::as_ref));
    let _ = stop_tx.send(true);
    let handles = spawner.await.context("the join ramp failed")?;
    let mut outcomes = Vec::with_capacity(n);
    for h in handles {
        outcomes.push(h.await.context("a participant task failed")?);
    }
    let (steady, steady_totals) = match steady_start {
        Some((at, before)) => (stopped - at, totals.since(&before)),
        None => (Duration::ZERO, Totals::default()),
    };
    Ok(Summary {
        url: String::new(),
        rooms: 0,
        publishers: 0,
        subscribers: 0,
        media: String::new(),
        elapsed: stopped - start,
        steady,
        steady_totals,
        totals,
        outcomes,
        cpu_seconds: 0.0,
        interrupted,
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_arguments() {
        assert_eq!(parse_video("none"), Ok(VideoArg::None));
        assert_eq!(parse_video("720p"), Ok(VideoArg::Camera { width: 1280, height: 720, bitrate: 2_000_000 }));
        assert_eq!(parse_video("1080p@4M"), Ok(VideoArg::Camera { width: 1920, height: 1080, bitrate: 4_000_000 }));
        assert_eq!(parse_video("640x480@800k"), Ok(VideoArg::Camera { width: 640, height: 480, bitrate: 800_000 }));
        assert!(parse_video("720").is_err());
        assert!(parse_video("9000x10").unwrap_err().contains("width and height"));
        assert!(parse_video("720p@1").unwrap_err().contains("between 10k and 50M"));
        assert_eq!(parse_audio("none"), Ok(AudioArg(None)));
        assert_eq!(parse_audio("32k"), Ok(AudioArg(Some(32_000))));
        assert!(parse_audio("1M").is_err());
        assert!(parse_ramp("0").is_err());
    }

    #[test]
    fn publishers_join_first_and_subscribers_spread_over_rooms() {
        assert_eq!(join_order(2, 1, 2), [(0, true), (1, true), (0, false), (1, false), (0, false), (1, false)]);
        assert_eq!(join_order(1, 0, 0), []);
    }

    #[test]
    fn urls() {
        assert_eq!(rtc_url("ws://h:7880", "T").unwrap(), "ws://h:7880/rtc?access_token=T");
        assert_eq!(rtc_url("http://h:7880/", "T").unwrap(), "ws://h:7880/rtc?access_token=T");
        assert_eq!(rtc_url("ws://h:7880/rtc", "T").unwrap(), "ws://h:7880/rtc?access_token=T");
        assert!(rtc_url("wss://h", "T").unwrap_err().to_string().contains("TLS"));
        assert!(rtc_url("h:7880", "T").is_err());
    }
}
