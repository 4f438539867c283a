//! The tokio driver of `switchyard load turn`: one task per allocation (its
//! own client socket, its [`Client`], its [`Pacer`]), one peer socket that
//! counts arrivals, and the controller that moves every task through the
//! phases with a `watch` channel and prints what happens.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use switchyard_turn_node::stun;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::client::{Challenge, Client, Credentials, Event, Failure, State};
use super::pace::Pacer;
use super::report::{Counters, HoldReport, Summary, Tally, Totals, live_line};
use super::{parse_duration, parse_percent, parse_rate};

/// Every allocation binds this channel to the peer (channels are per allocation).
const CHANNEL: u16 = 0x4000;
/// After sending stops, how long packets still in flight may take to arrive.
const LINGER: Duration = Duration::from_millis(500);
/// A relay check resends its probe this often, this many times, before calling an allocation dead.
const PROBE_EVERY: Duration = Duration::from_millis(300);
const PROBES: u32 = 3;
/// How long deallocation may take at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub(crate) struct TurnArgs {
    /// The TURN server, host:port.
    #[arg(long)]
    server: String,
    /// Client transport to the server (relays are UDP either way).
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    transport: Transport,
    /// TURN REST API shared secret: each allocation gets an ephemeral username and password.
    #[arg(
        long,
        env = "SWITCHYARD_TURN_SECRET",
        hide_env_values = true,
        required_unless_present = "user",
        conflicts_with = "user"
    )]
    secret: Option<String>,
    /// User id in REST usernames (`<expiry>:<user-id>`); `{i}` becomes the allocation's
    /// number, e.g. `load-{i}` to stay under a per-user allocation quota.
    #[arg(long, default_value = "load")]
    user_id: String,
    /// Static long-term credentials instead of --secret.
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// Password for --user.
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// Realm for the credentials (default: the one the server announces).
    #[arg(long)]
    realm: Option<String>,
    /// Allocations to open, each from its own client socket.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    allocations: u32,
    /// Total ChannelData payload rate over all allocations, bits per second: 500k, 4M, 1G.
    #[arg(long, default_value = "1M", value_parser = parse_rate)]
    rate: u64,
    /// ChannelData payload bytes per packet.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=65_000))]
    packet_size: u16,
    /// How long to send: 500ms, 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Where the counting peer binds: an address the server may relay to. Port 0 binds one
    /// socket per core, each serving a share of the allocations.
    #[arg(long, default_value = "127.0.0.1:0")]
    peer: SocketAddr,
    /// After the load, keep the allocations alive (refreshing) until SIGINT or SIGTERM,
    /// then deallocate. SIGUSR1 checks that each still relays.
    #[arg(long)]
    hold: bool,
    /// Total rate to keep sending while holding.
    #[arg(long, default_value = "0", value_parser = parse_rate, requires = "hold")]
    hold_rate: u64,
    /// While holding, check this often that each allocation still relays a probe packet.
    #[arg(long, value_parser = parse_duration, requires = "hold")]
    check_every: Option<Duration>,
    /// Fail when more than this percentage of packets is lost.
    #[arg(long, default_value = "1", value_parser = parse_percent)]
    max_loss: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

pub(crate) fn run(args: TurnArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0, "--rate must be above 0");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let summary = runtime.block_on(drive(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary.json())?);
    } else {
        print!("{}", summary.text());
    }
    summary.verdict(args.max_loss)
}

/// What the allocations should be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Setting up, or between load and hold: allocations stay, nothing is sent.
    Quiet,
    Load {
        start: Instant,
        end: Instant,
    },
    Hold,
    /// Deallocate and end.
    Stop,
}

/// The realm and nonce the first allocation learns, for the others.
#[derive(Clone, Debug)]
enum Nonce {
    Waiting,
    Known(Challenge),
    /// The first allocation ended without one: everyone fetches their own.
    Unknown,
}

#[derive(Debug)]
struct Ctx {
    server: SocketAddr,
    transport: Transport,
    /// The counting peer sockets; allocation i sends to `peers[i % len]`.
    peers: Vec<SocketAddr>,
    packet_size: usize,
    allocations: usize,
    load_interval: Duration,
    hold_interval: Option<Duration>,
    counters: Vec<Counters>,
    relayed: RwLock<HashMap<SocketAddr, usize>>,
    stray: AtomicU64,
    nonce: watch::Sender<Nonce>,
    phase: watch::Sender<Phase>,
    /// Bumped to ask every ready allocation for one probe packet.
    probe: watch::Sender<u64>,
}

#[derive(Debug)]
enum Report {
    Ready(usize, Duration),
    Failed(usize, Failure),
    Closed(usize),
}

/// Seconds between packets of one allocation carrying `total_bps / n`.
fn interval(packet_size: usize, total_bps: u64, n: usize) -> Option<Duration> {
    (total_bps > 0).then(|| Duration::from_secs_f64(packet_size as f64 * 8.0 * n as f64 / total_bps as f64))
}

async fn drive(args: &TurnArgs) -> anyhow::Result<Summary> {
    let server = resolve(&args.server).await?;
    anyhow::ensure!(
        !args.peer.ip().is_unspecified(),
        "--peer {}: give the address the server relays to, not a wildcard",
        args.peer
    );
    let n = args.allocations as usize;
    // One socket per core, so receiving is not the bottleneck (a fixed --peer port gets one).
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let sinks = (0..if args.peer.port() == 0 { cores.min(n) } else { 1 })
        .map(|_| peer_socket(args.peer).with_context(|| format!("binding the peer socket on {}", args.peer)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let peers = sinks.iter().map(UdpSocket::local_addr).collect::<io::Result<Vec<_>>>()?;
    let mut signals = Signals::new()?;
    let packet_size = usize::from(args.packet_size);
    let ctx = Arc::new(Ctx {
        server,
        transport: args.transport,
        peers,
        packet_size,
        allocations: n,
        load_interval: interval(packet_size, args.rate, n).expect("rate checked above 0"),
        hold_interval: interval(packet_size, args.hold_rate, n),
        counters: (0..n).map(|_| Counters::default()).collect(),
        relayed: RwLock::new(HashMap::new()),
        stray: AtomicU64::new(0),
        nonce: watch::Sender::new(Nonce::Waiting),
        phase: watch::Sender::new(Phase::Quiet),
        probe: watch::Sender::new(0),
    });
    let sink_tasks: Vec<_> = sinks.into_iter().map(|s| tokio::spawn(count_arrivals(s, ctx.clone()))).collect();
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for idx in 0..n {
        tasks.spawn(allocation(idx, ctx.clone(), credentials(args, idx)?, report_tx.clone()));
    }
    drop(report_tx);
    let mut tally = Tally::new(n);
    let apply = |tally: &mut Tally, r: Report| match r {
        Report::Ready(i, setup) => tally.ready(i, setup),
        Report::Failed(i, f) => {
            if tally.failed(i, f.clone()) {
                eprintln!("allocation {i} lost: {}", f.message);
            }
        }
        Report::Closed(i) => tally.closed(i),
    };

    // Setup: every allocation up or failed.
    let mut interrupted = false;
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    while tally.pending() > 0 {
        tokio::select! {
            Some(r) = reports.recv() => apply(&mut tally, r),
            _ = tick.tick() => eprintln!(
                "setting up: {} up, {} failed, {} pending", tally.up(), tally.failed_count(), tally.pending()
            ),
            sig = signals.recv() => if sig == Sig::Stop { interrupted = true; break },
        }
    }

    // Load.
    let start = Instant::now();
    let mut stopped = start;
    if !interrupted && tally.up() > 0 {
        let end = start + args.duration;
        ctx.phase.send_replace(Phase::Load { start, end });
        let mut tick = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
        let (mut last, mut last_at) = (Totals::default(), start);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end.into()) => break,
                _ = tick.tick() => {
                    let (now, totals) = (Instant::now(), Totals::sum(&ctx.counters));
                    eprintln!("{}", live_line(now - start, tally.up(), n, totals - last, now - last_at));
                    (last, last_at) = (totals, now);
                }
                Some(r) = reports.recv() => apply(&mut tally, r),
                sig = signals.recv() => if sig == Sig::Stop { interrupted = true; break },
            }
        }
        stopped = Instant::now().min(end);
        ctx.phase.send_replace(Phase::Quiet);
        tokio::time::sleep(LINGER).await;
    }
    let load = Totals::sum(&ctx.counters);

    // Hold.
    let mut hold = None;
    if args.hold && !interrupted && tally.up() > 0 {
        ctx.phase.send_replace(Phase::Hold);
        let held = tally.up_indices();
        let mut report = HoldReport { held: held.len(), ..HoldReport::default() };
        eprintln!("holding {} allocations: SIGINT or SIGTERM deallocates them, SIGUSR1 checks they relay", held.len());
        let mut tick = args.check_every.map(|every| tokio::time::interval_at((Instant::now() + every).into(), every));
        loop {
            let next_check = async {
                match &mut tick {
                    Some(t) => drop(t.tick().await),
                    None => std::future::pending().await,
                }
            };
            let check = tokio::select! {
                _ = next_check => true,
                sig = signals.recv() => match sig { Sig::Check => true, Sig::Stop => break },
                Some(r) = reports.recv() => { apply(&mut tally, r); false }
            };
            if check {
                let relaying = check_relaying(&ctx, &held).await;
                eprintln!("held: {relaying}/{} relaying", held.len());
                report.checks += 1;
                report.last_relaying = Some(relaying);
            }
        }
        hold = Some(report);
    }

    // Deallocate.
    ctx.phase.send_replace(Phase::Stop);
    let closing = async {
        while let Some(r) = reports.recv().await {
            apply(&mut tally, r);
        }
    };
    if tokio::time::timeout(CLOSE_WAIT, closing).await.is_err() {
        eprintln!("some allocations did not confirm deallocation within {} s", CLOSE_WAIT.as_secs());
    }
    tasks.abort_all();
    sink_tasks.iter().for_each(|t| t.abort());
    Ok(Summary {
        server,
        transport: args.transport.name(),
        requested_allocations: n,
        requested_bps: args.rate,
        packet_size,
        elapsed: stopped - start,
        load,
        stray_packets: ctx.stray.load(Relaxed),
        tally,
        hold,
        interrupted,
    })
}

async fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    let with_port = if server.contains(':') { server.to_owned() } else { format!("{server}:3478") };
    tokio::net::lookup_host(&with_port)
        .await
        .with_context(|| format!("--server {server}: cannot resolve"))?
        .next()
        .with_context(|| format!("--server {server}: no address"))
}

fn credentials(args: &TurnArgs, idx: usize) -> anyhow::Result<Credentials> {
    let realm = args.realm.clone();
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        return Ok(Credentials {
            username: user.clone(),
            password: password.clone(),
            realm,
            on_401: "check --user and --password",
        });
    }
    let secret = args.secret.as_deref().context("--secret or --user/--password is required")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock is before 1970")?;
    // Valid for the run and a week of holding; the server checks it at every refresh.
    let expiry = (now + args.duration + Duration::from_secs(7 * 86_400)).as_secs();
    let user_id = args.user_id.replace("{i}", &idx.to_string());
    let (username, password) = switchyard_api::turn_rest::mint(secret.as_bytes(), &user_id, expiry);
    Ok(Credentials { username, password, realm, on_401: "check --secret" })
}

/// A peer socket with a receive buffer deep enough for bursts at hundreds of Mbit/s.
fn peer_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// The peer: count each datagram against the allocation it was relayed from. Echoes nothing.
async fn count_arrivals(socket: UdpSocket, ctx: Arc<Ctx>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let idx = ctx.relayed.read().unwrap_or_else(|e| e.into_inner()).get(&from).copied();
        match idx {
            Some(i) => ctx.counters[i].received(len),
            None => {
                ctx.stray.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Probe every held allocation; how many got a packet through to the peer.
async fn check_relaying(ctx: &Ctx, held: &[usize]) -> usize {
    let received = |i: usize| ctx.counters[i].received_packets.load(Relaxed);
    let before: Vec<u64> = held.iter().map(|&i| received(i)).collect();
    let relaying = || held.iter().zip(&before).filter(|&(&i, &b)| received(i) > b).count();
    for _ in 0..PROBES {
        ctx.probe.send_modify(|n| *n += 1);
        let until = Instant::now() + PROBE_EVERY;
        while relaying() < held.len() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if relaying() == held.len() {
            break;
        }
    }
    relaying()
}

async fn allocation(idx: usize, ctx: Arc<Ctx>, creds: Credentials, reports: mpsc::UnboundedSender<Report>) {
    let result = run_allocation(idx, &ctx, creds, &reports).await;
    if idx == 0 {
        // Unblock the others if the first allocation ended before learning a nonce.
        ctx.nonce.send_if_modified(|n| {
            let waiting = matches!(n, Nonce::Waiting);
            if waiting {
                *n = Nonce::Unknown;
            }
            waiting
        });
    }
    let _ = reports.send(match result {
        Ok(()) => Report::Closed(idx),
        Err(f) => Report::Failed(idx, f),
    });
}

async fn run_allocation(
    idx: usize,
    ctx: &Ctx,
    creds: Credentials,
    reports: &mpsc::UnboundedSender<Report>,
) -> Result<(), Failure> {
    let started = Instant::now();
    let mut phase_rx = ctx.phase.subscribe();
    // The others wait for the first allocation's nonce rather than all being challenged at once.
    let challenge = if idx == 0 {
        None
    } else {
        let mut nonce_rx = ctx.nonce.subscribe();
        tokio::select! {
            n = nonce_rx.wait_for(|n| !matches!(n, Nonce::Waiting)) => match n.as_deref() {
                Ok(Nonce::Known(c)) => Some(c.clone()),
                _ => None,
            },
            _ = phase_rx.wait_for(|p| *p == Phase::Stop) => return Ok(()),
        }
    };
    let mut conn = Conn::connect(ctx.server, ctx.transport).await.map_err(|e| io_failure(ctx, e))?;
    let reliable = ctx.transport == Transport::Tcp;
    let peer = ctx.peers[idx % ctx.peers.len()];
    let mut client = Client::new(Instant::now(), creds, peer, CHANNEL, reliable, challenge);
    let mut probe_rx = ctx.probe.subscribe();
    let frame = DataFrame::new(ctx.packet_size, client.channel(), reliable);
    let mut rbuf = vec![0u8; 65_536];
    let mut pacer: Option<(Phase, Pacer)> = None;
    let mut probe = false;
    // Spread the allocations' packets over the interval instead of sending all at once.
    let offset = ctx.load_interval.mul_f64(idx as f64 / ctx.allocations as f64);
    loop {
        let now = Instant::now();
        let phase = *phase_rx.borrow_and_update();
        if phase == Phase::Stop {
            client.close(now);
        }
        client.handle_timeout(now);
        while let Some(msg) = client.poll_transmit() {
            conn.send(&msg).await.map_err(|e| io_failure(ctx, e))?;
        }
        while let Some(event) = client.poll_event() {
            match event {
                Event::Challenge(c) => {
                    ctx.nonce.send_replace(Nonce::Known(c));
                }
                Event::Ready { relayed } => {
                    ctx.relayed.write().unwrap_or_else(|e| e.into_inner()).insert(relayed, idx);
                    let _ = reports.send(Report::Ready(idx, started.elapsed()));
                }
                Event::Failed(f) => return Err(f),
                Event::Closed => return Ok(()),
            }
        }

        // Data: paced in the load phase and the hold trickle, plus probes.
        let ready = client.state() == State::Ready;
        let sending = match phase {
            Phase::Load { start, end } if ready && now < end => Some((start + offset, ctx.load_interval, end)),
            Phase::Hold if ready => ctx.hold_interval.map(|i| (now + offset, i, now + Duration::from_secs(3600))),
            _ => None,
        };
        let mut due = u32::from(std::mem::take(&mut probe) && ready);
        match sending {
            Some((first, interval, end)) => {
                let p = match &mut pacer {
                    Some((p_phase, p)) if *p_phase == phase => p,
                    _ => &mut pacer.insert((phase, Pacer::new(first, interval))).1,
                };
                due += p.due(now.min(end));
            }
            None => pacer = None,
        }
        for _ in 0..due {
            conn.send(frame.bytes()).await.map_err(|e| io_failure(ctx, e))?;
            ctx.counters[idx].sent(ctx.packet_size);
        }

        let mut deadline = client.poll_timeout();
        if let Some((_, p)) = &pacer {
            deadline = Some(deadline.map_or(p.next(), |d| d.min(p.next())));
        }
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = conn.read(&mut rbuf) => {
                let len = read.map_err(|e| io_failure(ctx, e))?;
                let now = Instant::now();
                conn.frames(&rbuf[..len], |msg| client.handle_input(now, msg));
            }
            _ = sleep => {}
            _ = phase_rx.changed() => {}
            Ok(()) = probe_rx.changed() => probe = true,
        }
    }
}

fn io_failure(ctx: &Ctx, e: io::Error) -> Failure {
    let (server, transport) = (ctx.server, ctx.transport.name());
    let message = match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("connection refused by {server} ({transport}): is a TURN server listening there?")
        }
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            format!("{server} ({transport}) closed the connection")
        }
        _ => format!("{server} ({transport}): {e}"),
    };
    Failure { code: None, message }
}

/// A reusable ChannelData message: header and zero payload (padded on TCP).
#[derive(Debug)]
struct DataFrame(Vec<u8>);

impl DataFrame {
    fn new(payload: usize, channel: u16, stream: bool) -> Self {
        let head = stun::CHANNEL_HEADER_LEN;
        let mut buf = vec![0u8; head + payload.next_multiple_of(4)];
        let (_, len) = stun::write_channel_data_in_place(&mut buf, head, payload, channel, stream);
        buf.truncate(len);
        DataFrame(buf)
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The client's connection to the server.
#[derive(Debug)]
enum Conn {
    Udp(UdpSocket),
    Tcp { stream: TcpStream, pending: Vec<u8> },
}

impl Conn {
    async fn connect(server: SocketAddr, transport: Transport) -> io::Result<Conn> {
        match transport {
            Transport::Udp => {
                let any: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
                let socket = UdpSocket::bind(any).await?;
                // Connected: an ICMP port-unreachable comes back as ConnectionRefused.
                socket.connect(server).await?;
                Ok(Conn::Udp(socket))
            }
            Transport::Tcp => {
                let stream = TcpStream::connect(server).await?;
                stream.set_nodelay(true)?;
                Ok(Conn::Tcp { stream, pending: Vec::new() })
            }
        }
    }

    async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Udp(s) => s.send(data).await.map(drop),
            Conn::Tcp { stream, .. } => stream.write_all(data).await,
        }
    }

    /// Read what is there (cancel safe); hand it to [`Conn::frames`].
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Udp(s) => s.recv(buf).await,
            Conn::Tcp { stream, .. } => match stream.read(buf).await? {
                0 => Err(io::ErrorKind::UnexpectedEof.into()),
                n => Ok(n),
            },
        }
    }

    /// Each whole message in what [`Conn::read`] returned (a datagram, or the
    /// stream's next bytes reassembled).
    fn frames(&mut self, data: &[u8], mut each: impl FnMut(&[u8])) {
        match self {
            Conn::Udp(_) => each(data),
            Conn::Tcp { pending, .. } => {
                pending.extend_from_slice(data);
                while let Some(len) = stun::stream_frame_len(pending) {
                    if len == usize::MAX {
                        // Not STUN or ChannelData: the stream is out of step; drop what we have.
                        pending.clear();
                    }
                    if len > pending.len() {
                        break;
                    }
                    each(&pending[..len]);
                    pending.drain(..len);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sig {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGUSR1.
    Check,
}

/// Installed before anything runs, so SIGUSR1's default action (exit) never applies.
#[derive(Debug)]
struct Signals {
    int: Signal,
    term: Signal,
    usr1: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        let listen = |kind| signal(kind).context("installing signal handlers");
        Ok(Signals {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
            usr1: listen(SignalKind::user_defined1())?,
        })
    }

    async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.int.recv() => Sig::Stop,
            _ = self.term.recv() => Sig::Stop,
            _ = self.usr1.recv() => Sig::Check,
        }
    }
}
