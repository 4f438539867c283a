//! The tokio driver around the engine: sockets, shards, sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use str0m::net::Protocol;
use switchyard_api::node::MediaNodeStatus;
use switchyard_api::room_service::{ApiError, ApiErrorCode};
use switchyard_api::signal::{ErrorCode, ErrorMessage, IceServer, IceTransportPolicy, ServerMessage};
use switchyard_api::token::Verifier;
use switchyard_udp::{RecvBatch, SendBatch};
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::admin::{Admin, Answer, Reply};
use crate::engine::{Command, Engine, EngineConfig, EngineStats, Output, Pid, Route};
use crate::metrics::Metrics;
use crate::router::{Dest, Router};
use crate::{Config, Error, Result};

/// What a shard tells a session.
#[derive(Debug)]
pub(crate) enum SessionOut {
    Msg(Box<ServerMessage>),
    /// The session's resume succeeded: it speaks for this participant from now on.
    Adopt(Pid),
    Close,
}

/// What sessions and the control plane send a shard. These are never dropped: their queue
/// is unbounded, and bounded in practice by the sessions' message rate limits.
pub(crate) enum ShardMsg {
    Command(Command),
    Register(Pid, crate::session::Outbox),
    Status(oneshot::Sender<(EngineStats, Vec<String>)>),
    Rooms(oneshot::Sender<Vec<crate::engine::RoomReport>>),
    /// A Room service operation; answered once its outputs are applied.
    Admin(Admin, oneshot::Sender<Reply>),
}

/// One received datagram (or de-framed TCP packet), already routed to its participant.
pub(crate) struct Datagram {
    pid: Pid,
    proto: Protocol,
    source: SocketAddr,
    destination: SocketAddr,
    buf: Vec<u8>,
}

/// Datagrams cross to a shard in batches (one per receive burst), not one message each.
type Batch = Vec<Datagram>;

/// Batches a shard's media queue holds. Overflow policy: media is dropped and counted
/// (`shard_queue_dropped_datagrams_total`): a shard that cannot keep up sheds load rather
/// than growing its memory; commands go through their own queue and are never dropped.
const MEDIA_QUEUE_BATCHES: usize = 256;

/// Datagrams received in one burst before they are handed over.
const MAX_BATCH: usize = 64;

struct ShardQueues {
    commands: mpsc::UnboundedSender<ShardMsg>,
    media: mpsc::Sender<Batch>,
}

pub(crate) struct Shared {
    pub(crate) cfg: Config,
    /// The media UDP socket's address (a relay's edge end sends from its port).
    pub(crate) udp_addr: SocketAddr,
    pub(crate) verifier: Verifier,
    pub(crate) metrics: Metrics,
    pub(crate) draining: AtomicBool,
    shards: Vec<ShardQueues>,
    /// The one owner of routing state (room → shard, ufrag / 5-tuple → participant).
    pub(crate) router: Router,
    tcp_conns: RwLock<HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>>,
    next_pid: AtomicU64,
    /// Media bandwidth (payload in + out) over the last second, bits/s.
    bandwidth_bps: AtomicU64,
    /// TURN URIs and secret; re-read from the config file while running.
    turn: RwLock<(Vec<String>, Option<String>)>,
    /// Buffers handed back by shards for the receive loop to reuse.
    spare: Mutex<Vec<Vec<u8>>>,
    /// Delivers room events to the webhook receivers.
    pub(crate) webhooks: crate::webhook::Notifier,
    /// Kubernetes mode: the cluster's Rooms and pods, for signaling routing.
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The Room service's request budgets, per API key.
    pub(crate) budgets: crate::room_api::Budgets,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("shards", &self.shards.len()).finish()
    }
}

/// The retry hint of `node_full`: long enough for placement to move new rooms elsewhere.
const NODE_FULL_RETRY_MS: u64 = 2000;

impl Shared {
    pub(crate) fn next_pid(&self) -> Pid {
        self.next_pid.fetch_add(1, Ordering::Relaxed)
    }

    /// The shard hosting `room` for a join about to be sent there (the router assigns
    /// the least loaded one to a new room, and keeps it while the join is in flight), or
    /// `node_full` with a retry hint when the node's capacity refuses the join.
    pub(crate) fn shard_for(&self, room: &str) -> Result<usize, ErrorMessage> {
        let bandwidth = self.bandwidth_bps.load(Ordering::Relaxed);
        self.router.admit(room, &self.cfg.capacity, bandwidth).map_err(|full| {
            let mut e = ErrorMessage::new(ErrorCode::NodeFull, full.to_string());
            e.request_type = Some("join".into());
            e.retry_after_ms = Some(NODE_FULL_RETRY_MS);
            e
        })
    }

    /// Send a command; commands are never dropped.
    pub(crate) fn send(&self, shard: usize, msg: ShardMsg) {
        let _ = self.shards[shard].commands.send(msg);
    }

    /// Hand a batch of datagrams to a shard, or drop and count it if the shard's media
    /// queue is full.
    fn send_media(&self, shard: usize, batch: Batch) {
        if let Err(e) = self.shards[shard].media.try_send(batch) {
            let batch = match e {
                mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
            };
            self.metrics.shard_queue_drops.inc_by(batch.len() as u64);
            self.recycle(batch);
        }
    }

    fn recycle(&self, batch: Batch) {
        let mut spare = self.spare.lock().expect("pool");
        for d in batch {
            if spare.len() < 4096 {
                spare.push(d.buf);
            }
        }
    }

    /// The room's shard, if the room is open.
    pub(crate) fn shard_of_open_room(&self, room: &str) -> Option<usize> {
        self.router.open_room(room)
    }

    pub(crate) fn ice_servers(&self, identity: &str) -> Vec<IceServer> {
        let cfg = &self.cfg;
        let (uris, secret) = self.turn.read().expect("turn settings").clone();
        if uris.is_empty() {
            return vec![];
        }
        let (username, credential) = match &secret {
            Some(secret) => {
                let expires = unix_now() + cfg.turn_ttl_seconds;
                let (u, p) = switchyard_api::turn_rest::mint(secret.as_bytes(), identity, expires);
                (Some(u), Some(p))
            }
            None => (None, None),
        };
        vec![IceServer { urls: uris, username, credential }]
    }

    pub(crate) async fn status(&self) -> MediaNodeStatus {
        let (stats, rooms) = self.collect().await;
        let bandwidth_bps = self.bandwidth_bps.load(Ordering::Relaxed);
        MediaNodeStatus {
            rooms: stats.rooms,
            participants: stats.participants,
            bandwidth_bps,
            draining: self.draining.load(Ordering::Relaxed),
            room_names: rooms,
            capacity: self.cfg.capacity.into(),
            full: self.router.full(&self.cfg.capacity, bandwidth_bps),
        }
    }

    /// Every room with its participants and per-track counters.
    pub(crate) async fn rooms(&self) -> Vec<crate::engine::RoomReport> {
        let mut all = vec![];
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            if shard.commands.send(ShardMsg::Rooms(tx)).is_ok()
                && let Ok(r) = rx.await
            {
                all.extend(r);
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Run a Room service operation on the shard that has (or gets) its room: the
    /// node's capacity decides whether a room may be opened, an operation on a room not
    /// open here is `room_not_found`, and listing asks every shard.
    pub(crate) async fn admin(&self, req: Admin) -> Reply {
        let Some(room) = req.room() else {
            let mut rooms = vec![];
            for shard in 0..self.shards.len() {
                if let Ok(Answer::Rooms(r)) = self.admin_on(shard, req.clone()).await {
                    rooms.extend(r);
                }
            }
            rooms.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(Answer::Rooms(rooms));
        };
        let shard = if let Admin::OpenRoom { .. } = req {
            let bandwidth = self.bandwidth_bps.load(Ordering::Relaxed);
            self.router.place(room, &self.cfg.capacity, bandwidth).map_err(|full| {
                ApiError::new(ApiErrorCode::Unavailable, full.to_string())
                    .with_reason("node_full")
                    .retry_after(NODE_FULL_RETRY_MS / 1000)
            })?
        } else {
            self.router.open_room(room).ok_or_else(|| ApiError::room_not_found(room))?
        };
        self.admin_on(shard, req).await
    }

    async fn admin_on(&self, shard: usize, req: Admin) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.send(shard, ShardMsg::Admin(req, tx));
        rx.await.unwrap_or_else(|_| Err(ApiError::new(ApiErrorCode::Internal, "the room's shard stopped")))
    }

    async fn collect(&self) -> (EngineStats, Vec<String>) {
        let mut total = EngineStats::default();
        let mut names = vec![];
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            if shard.commands.send(ShardMsg::Status(tx)).is_err() {
                continue;
            }
            if let Ok((s, r)) = rx.await {
                add(&mut total, &s);
                names.extend(r);
            }
        }
        names.sort();
        (total, names)
    }
}

fn add(total: &mut EngineStats, s: &EngineStats) {
    total.rooms += s.rooms;
    total.participants += s.participants;
    total.held += s.held;
    total.resumes += s.resumes;
    for (t, n) in total.resume_failures.iter_mut().zip(s.resume_failures) {
        *t += n;
    }
    total.tracks += s.tracks;
    total.packets_in += s.packets_in;
    total.packets_out += s.packets_out;
    total.bytes_in += s.bytes_in;
    total.bytes_out += s.bytes_out;
    let (t, q) = (&mut total.quality, &s.quality);
    t.loss.add(&q.loss);
    t.rtt.add(&q.rtt);
    t.jitter.add(&q.jitter);
    t.estimate.add(&q.estimate);
    t.nacks_in += q.nacks_in;
    t.nacks_out += q.nacks_out;
    t.plis_in += q.plis_in;
    t.firs_in += q.firs_in;
    for (a, b) in t.participants.iter_mut().zip(q.participants) {
        *a += b;
    }
    total.layer_switches += s.layer_switches;
    total.keyframe_requests += s.keyframe_requests;
    for (a, b) in total.paused_streams.iter_mut().zip(s.paused_streams) {
        *a += b;
    }
    total.last_estimate_bps = total.last_estimate_bps.max(s.last_estimate_bps);
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A running media-node.
#[derive(Debug)]
pub struct Node;

/// Addresses and control of a running media-node.
#[derive(Debug)]
pub struct NodeHandle {
    /// Where `/rtc` and the HTTP API listen.
    pub http_addr: SocketAddr,
    /// The media UDP port.
    pub udp_addr: SocketAddr,
    /// The ICE-TCP port, if enabled.
    pub tcp_addr: Option<SocketAddr>,
    /// The admin port (status, drain, room close).
    pub admin_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl NodeHandle {
    /// Refuse new sessions; sessions already here go on.
    pub fn drain(&self) {
        drain(&self.shared);
    }

    /// Tell every connected client to reconnect elsewhere (the end of a drain).
    pub fn evacuate(&self) {
        for i in 0..self.shared.shards.len() {
            self.shared.send(i, ShardMsg::Command(Command::Drain));
        }
    }

    /// On SIGTERM or Ctrl-C (or once drained through the admin API and empty): stop taking
    /// sessions, wait for participants to leave or the grace period to end, then move the
    /// rest elsewhere and stop.
    pub async fn run_until_signal(self) {
        let grace = Duration::from_secs(self.shared.cfg.drain_grace_seconds);
        wait_for_signal().await;
        self.drain();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let participants = self.status().await.participants;
            if participants == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(participants, "drain grace over: asking the rest to reconnect elsewhere");
                self.evacuate();
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.shutdown().await;
    }

    /// Rooms and participants right now.
    pub async fn status(&self) -> MediaNodeStatus {
        self.shared.status().await
    }

    /// Stop serving; give pending webhooks up to 2 s to be delivered.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        self.shared.webhooks.flush(Duration::from_secs(2)).await;
    }

    /// Wait until the HTTP server stops (after SIGTERM handling or [`NodeHandle::shutdown`]).
    pub async fn wait(self) {
        let _ = self.server.await;
    }
}

pub(crate) fn drain(shared: &Shared) {
    if !shared.draining.swap(true, Ordering::SeqCst) {
        shared.metrics.draining.set(1);
        tracing::info!("draining: new sessions are refused");
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Re-read the TURN servers and secret when the config file (or the secret file) changes:
/// the operator edits them while pods run.
async fn watch_config(shared: Arc<Shared>, path: std::path::PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last = None;
    loop {
        tick.tick().await;
        let Ok(file) = crate::config::read_file(&path) else { continue };
        let Ok(secret) = crate::config::read_secret(&file.turn.secret_file) else { continue };
        let next = (file.turn.uris.clone(), Some(secret));
        if last.as_ref() != Some(&next) {
            if last.is_some() {
                tracing::info!(uris = ?next.0, "TURN settings reloaded");
            }
            *shared.turn.write().expect("turn settings") = next.clone();
            last = Some(next);
        }
    }
}

impl Node {
    /// Bind every socket and start serving.
    pub async fn start(cfg: Config) -> Result<NodeHandle> {
        cfg.validate()?;
        let udp =
            Arc::new(UdpSocket::bind(cfg.udp_addr).await.map_err(Error::io(format!("bind UDP {}", cfg.udp_addr)))?);
        let udp_addr = udp.local_addr().map_err(Error::io("UDP local address"))?;
        let tcp = match cfg.ice_tcp_addr() {
            Some(a) => Some(TcpListener::bind(a).await.map_err(Error::io(format!("bind ICE-TCP {a}")))?),
            None => None,
        };
        let tcp_addr = tcp.as_ref().map(|l| l.local_addr()).transpose().map_err(Error::io("TCP local address"))?;
        let http = TcpListener::bind(cfg.http_addr).await.map_err(Error::io(format!("bind HTTP {}", cfg.http_addr)))?;
        let http_addr = http.local_addr().map_err(Error::io("HTTP local address"))?;
        let admin =
            TcpListener::bind(cfg.admin_addr).await.map_err(Error::io(format!("bind admin {}", cfg.admin_addr)))?;
        let admin_addr = admin.local_addr().map_err(Error::io("admin local address"))?;

        let engine_cfg = EngineConfig {
            node: cfg.node_name.clone(),
            udp_candidates: if cfg.ice_tcp_only {
                vec![]
            } else {
                cfg.candidate_ips(udp_addr.ip()).into_iter().map(|ip| SocketAddr::new(ip, udp_addr.port())).collect()
            },
            tcp_candidates: tcp_addr
                .map(|t| cfg.candidate_ips(t.ip()).into_iter().map(|ip| SocketAddr::new(ip, t.port())).collect())
                .unwrap_or_default(),
            ice_transport_policy: if cfg.relay_only { IceTransportPolicy::Relay } else { IceTransportPolicy::All },
            ping_interval_seconds: cfg.ping_interval_seconds,
            ping_timeout_seconds: cfg.ping_timeout_seconds,
            resume_window: cfg.resume_window(),
        };
        let n = if cfg.shards == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            cfg.shards
        };
        let mut senders = vec![];
        let mut receivers = vec![];
        for _ in 0..n {
            let (commands, commands_rx) = mpsc::unbounded_channel();
            let (media, media_rx) = mpsc::channel(MEDIA_QUEUE_BATCHES);
            senders.push(ShardQueues { commands, media });
            receivers.push((commands_rx, media_rx));
        }
        let cluster = match &cfg.kubernetes {
            Some(mode) => {
                let c = crate::cluster::Cluster::start(mode.clone(), cfg.node_name.clone()).await?;
                crate::cluster::check_access(&c).await?;
                Some(c)
            }
            None => None,
        };
        let metrics = Metrics::new();
        let webhooks = crate::webhook::Notifier::start(
            crate::webhook::receivers(&cfg.webhooks, &cfg.api_keys)?,
            cfg.node_name.clone(),
            cfg.cluster.clone(),
            &metrics,
        );
        let router = Router::new(n, metrics.unrouted.clone());
        let shared = Arc::new(Shared {
            router,
            cluster,
            verifier: Verifier::new(cfg.api_keys.clone(), cfg.token_leeway_seconds),
            turn: RwLock::new((cfg.turn_uris.clone(), cfg.turn_secret.clone())),
            bandwidth_bps: AtomicU64::new(0),
            udp_addr,
            cfg,
            metrics,
            webhooks,
            draining: AtomicBool::new(false),
            shards: senders,
            tcp_conns: RwLock::new(HashMap::new()),
            next_pid: AtomicU64::new(1),
            spare: Mutex::new(Vec::new()),
            budgets: crate::room_api::Budgets::default(),
        });
        for (i, (commands, media)) in receivers.into_iter().enumerate() {
            let seed = rand::random::<u64>();
            let engine = Engine::new(engine_cfg.clone(), seed, Instant::now(), std::time::SystemTime::now());
            tokio::spawn(run_shard(i, engine, commands, media, shared.clone(), udp.clone()));
        }
        tokio::spawn(recv_udp(udp, udp_addr, shared.clone()));
        if let (Some(listener), Some(local)) = (tcp, tcp_addr) {
            tokio::spawn(accept_tcp(listener, local, shared.clone()));
        }
        tokio::spawn(metrics_loop(shared.clone()));
        if let Some(path) = shared.cfg.config.clone() {
            tokio::spawn(watch_config(shared.clone(), path));
        }
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(crate::http::serve_admin(admin, shared.clone(), rx.clone()));
        if let Some(cluster) = shared.cluster.clone() {
            tokio::spawn(crate::cluster::report_status(cluster, shared.clone(), rx.clone()));
        }
        let server = tokio::spawn(crate::http::serve(http, shared.clone(), rx));
        tracing::info!(%http_addr, %admin_addr, %udp_addr, ?tcp_addr, shards = n, "media-node listening");
        Ok(NodeHandle { http_addr, udp_addr, tcp_addr, admin_addr, shared, shutdown, server })
    }
}

async fn metrics_loop(shared: Arc<Shared>) {
    let mut before = EngineStats::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let (now, _) = shared.collect().await;
        shared.metrics.observe(&now, &before);
        let bytes = (now.bytes_in + now.bytes_out).saturating_sub(before.bytes_in + before.bytes_out);
        shared.bandwidth_bps.store(bytes * 8, Ordering::Relaxed);
        before = now;
    }
}

async fn recv_udp(udp: Arc<UdpSocket>, local: SocketAddr, shared: Arc<Shared>) {
    let mut batches: Vec<Batch> = (0..shared.shards.len()).map(|_| Vec::new()).collect();
    let mut scratch = RecvBatch::new(0);
    let fd = udp.as_raw_fd();
    loop {
        if udp.readable().await.is_err() {
            continue;
        }
        // Drain the socket (one recvmmsg per BATCH datagrams, up to MAX_BATCH), then hand
        // each shard its part of the burst in one queue message.
        let mut taken = 0;
        while taken < MAX_BATCH {
            let mut got = 0;
            // A short batch means the socket is drained: readiness is cleared right away
            // instead of costing a second, empty syscall before the next wait.
            let r = udp.try_io(Interest::READABLE, || {
                got = scratch.recv(fd)?;
                if got < switchyard_udp::BATCH { Err(std::io::ErrorKind::WouldBlock.into()) } else { Ok(()) }
            });
            if let Err(e) = &r
                && e.kind() != std::io::ErrorKind::WouldBlock
            {
                tracing::debug!(error = %e, "UDP receive");
            }
            for i in 0..got {
                let Some((slot, len, source)) = scratch.get(i) else { continue };
                let packet = &slot[..len];
                let Some(Dest { shard, pid }) = shared.router.route(Protocol::Udp, source, packet) else { continue };
                let mut buf = shared.spare.lock().expect("pool").pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(packet);
                batches[shard].push(Datagram { pid, proto: Protocol::Udp, source, destination: local, buf });
            }
            taken += got;
            if r.is_err() {
                break;
            }
        }
        for (shard, batch) in batches.iter_mut().enumerate() {
            if !batch.is_empty() {
                shared.send_media(shard, std::mem::take(batch));
            }
        }
    }
}

async fn accept_tcp(listener: TcpListener, local: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_tcp(stream, peer, local, shared.clone()));
    }
}

/// One ICE-TCP connection: RFC 4571 framing (16-bit length, then the packet).
async fn serve_tcp(stream: TcpStream, peer: SocketAddr, local: SocketAddr, shared: Arc<Shared>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    shared.tcp_conns.write().expect("tcp map").insert(peer, tx);
    // Packets arrive unframed (the shard hands over str0m's buffer without copying); the
    // writer frames everything queued into one reused buffer and sends it in one write.
    let writer = tokio::spawn(async move {
        let mut out = Vec::with_capacity(16 * 1024);
        while let Some(packet) = rx.recv().await {
            out.clear();
            let mut next = Some(packet);
            while let Some(p) = next {
                out.extend_from_slice(&(p.len() as u16).to_be_bytes());
                out.extend_from_slice(&p);
                next = if out.len() < 64 * 1024 { rx.try_recv().ok() } else { None };
            }
            if wr.write_all(&out).await.is_err() {
                break;
            }
        }
    });
    let mut dest = None;
    loop {
        let mut len = [0u8; 2];
        if rd.read_exact(&mut len).await.is_err() {
            break;
        }
        let len = usize::from(u16::from_be_bytes(len));
        let mut buf = vec![0u8; len];
        if rd.read_exact(&mut buf).await.is_err() {
            break;
        }
        if dest.is_none() {
            dest = shared.router.route(Protocol::Tcp, peer, &buf);
        }
        let Some(Dest { shard, pid }) = dest else { break };
        let d = Datagram { pid, proto: Protocol::Tcp, source: peer, destination: local, buf };
        // TCP is its own flow control: wait for room in the queue instead of dropping.
        if shared.shards[shard].media.send(vec![d]).await.is_err() {
            break;
        }
    }
    shared.tcp_conns.write().expect("tcp map").remove(&peer);
    writer.abort();
}

async fn run_shard(
    index: usize,
    mut engine: Engine,
    mut commands: mpsc::UnboundedReceiver<ShardMsg>,
    mut media: mpsc::Receiver<Batch>,
    shared: Arc<Shared>,
    udp: Arc<UdpSocket>,
) {
    let mut sessions: HashMap<Pid, crate::session::Outbox> = HashMap::new();
    let mut sends: SendBatch<Vec<u8>> = SendBatch::new();
    let fd = udp.as_raw_fd();
    let flush = |sends: &mut SendBatch<Vec<u8>>| {
        let done = sends.flush(fd);
        if done.dropped > 0 {
            shared.metrics.udp_send_drops.inc_by(done.dropped as u64);
        }
    };
    loop {
        // The answer to a Room service operation leaves after its outputs are applied.
        let mut answer: Option<oneshot::Sender<Reply>> = None;
        let deadline = engine.next_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            // Commands first: a join or a leave never waits behind media.
            biased;
            msg = commands.recv() => {
                let Some(msg) = msg else { return };
                let now = Instant::now();
                match msg {
                    ShardMsg::Command(cmd) => engine.handle_command(now, cmd),
                    ShardMsg::Register(pid, tx) => { sessions.insert(pid, tx); }
                    ShardMsg::Status(reply) => { let _ = reply.send((engine.stats(), engine.room_names())); }
                    ShardMsg::Rooms(reply) => { let _ = reply.send(engine.report()); }
                    ShardMsg::Admin(req, reply) => {
                        engine.handle_command(now, Command::Admin(req));
                        answer = Some(reply);
                    }
                }
            }
            batch = media.recv() => {
                let Some(batch) = batch else { return };
                let now = Instant::now();
                for d in &batch {
                    engine.handle_receive(now, d.pid, d.proto, d.source, d.destination, &d.buf);
                }
                shared.recycle(batch);
            }
            _ = tokio::time::sleep_until(deadline.into()) => engine.handle_timeout(Instant::now()),
        }
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Transmit(t) => match t.proto {
                    Protocol::Udp => {
                        // Sent in batches: one sendmmsg for a packet's whole fan-out.
                        sends.push(t.destination, t.contents.into());
                        if sends.is_full() {
                            flush(&mut sends);
                        }
                    }
                    _ => {
                        let conns = shared.tcp_conns.read().expect("tcp map");
                        if let Some(conn) = conns.get(&t.destination) {
                            let _ = conn.send(t.contents.into());
                        }
                    }
                },
                Output::Signal(pid, msg) => {
                    if let ServerMessage::Error(e) = &*msg {
                        shared
                            .metrics
                            .signal_errors
                            .get_or_create(&crate::metrics::Code { code: e.code.as_str() })
                            .inc();
                    }
                    if let Some(s) = sessions.get(&pid) {
                        let _ = s.send(SessionOut::Msg(msg));
                    }
                }
                Output::Route(Route::Resumed { session, pid }) => {
                    // The new socket takes the participant's outbox; an old socket still
                    // open closes without leaving.
                    if let Some(s) = sessions.remove(&session) {
                        let _ = s.send(SessionOut::Adopt(pid));
                        if let Some(old) = sessions.insert(pid, s) {
                            let _ = old.send(SessionOut::Close);
                        }
                    }
                }
                Output::Route(route) => {
                    shared.router.apply(index, &route);
                    if let Route::Closed { pid } | Route::Refused { pid, .. } = route
                        && let Some(s) = sessions.remove(&pid)
                    {
                        let _ = s.send(SessionOut::Close);
                    }
                }
                Output::Event(e) => {
                    tracing::info!(shard = index, event = ?e, "room event");
                    shared.router.event(index, &e);
                    shared.webhooks.notify(&e);
                }
            }
        }
        if !sends.is_empty() {
            flush(&mut sends);
        }
        if let (Some(tx), Some(reply)) = (answer, engine.take_reply()) {
            let _ = tx.send(reply);
        }
    }
}
