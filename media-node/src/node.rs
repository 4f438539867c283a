//! The tokio driver around the engine: sockets, shards, sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use str0m::net::Protocol;
use switchyard_api::node::MediaNodeStatus;
use switchyard_api::signal::{IceServer, IceTransportPolicy, ServerMessage};
use switchyard_api::token::Verifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::{Command, Engine, EngineConfig, EngineStats, Output, Pid, RoomEvent, stun};
use crate::metrics::Metrics;
use crate::{Config, Error, Result};

/// What a shard tells a session.
#[derive(Debug)]
pub(crate) enum SessionOut {
    Msg(Box<ServerMessage>),
    Close,
}

pub(crate) enum ShardMsg {
    Command(Command),
    Register(Pid, crate::session::Outbox),
    Datagram { proto: Protocol, source: SocketAddr, destination: SocketAddr, buf: Vec<u8> },
    Status(oneshot::Sender<(EngineStats, Vec<String>)>),
    Rooms(oneshot::Sender<Vec<crate::engine::RoomReport>>),
}

pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) verifier: Verifier,
    pub(crate) metrics: Metrics,
    pub(crate) draining: AtomicBool,
    shards: Vec<mpsc::UnboundedSender<ShardMsg>>,
    room_shard: Mutex<HashMap<String, usize>>,
    ufrag_shard: RwLock<HashMap<String, usize>>,
    addr_shard: RwLock<HashMap<(Protocol, SocketAddr), usize>>,
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
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("shards", &self.shards.len()).finish()
    }
}

const DATAGRAM_BUF: usize = 2048;

impl Shared {
    pub(crate) fn next_pid(&self) -> Pid {
        self.next_pid.fetch_add(1, Ordering::Relaxed)
    }

    /// The shard hosting `room`, assigning the least loaded one on first use.
    pub(crate) fn shard_for(&self, room: &str) -> usize {
        let mut map = self.room_shard.lock().expect("room map");
        if let Some(&s) = map.get(room) {
            return s;
        }
        let mut load = vec![0usize; self.shards.len()];
        for &s in map.values() {
            load[s] += 1;
        }
        let s = (0..load.len()).min_by_key(|&i| load[i]).unwrap_or(0);
        map.insert(room.to_owned(), s);
        s
    }

    pub(crate) fn send(&self, shard: usize, msg: ShardMsg) {
        let _ = self.shards[shard].send(msg);
    }

    /// The room's shard, if the room is open.
    pub(crate) fn shard_of_open_room(&self, room: &str) -> Option<usize> {
        self.room_shard.lock().expect("room map").get(room).copied()
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
                let (u, p) = crate::turn_credentials::rest_credentials(secret, identity, expires);
                (Some(u), Some(p))
            }
            None => (None, None),
        };
        vec![IceServer { urls: uris, username, credential }]
    }

    pub(crate) async fn status(&self) -> MediaNodeStatus {
        let (stats, rooms) = self.collect().await;
        MediaNodeStatus {
            rooms: stats.rooms,
            participants: stats.participants,
            bandwidth_bps: self.bandwidth_bps.load(Ordering::Relaxed),
            draining: self.draining.load(Ordering::Relaxed),
            room_names: rooms,
        }
    }

    /// Every room with its participants and per-track counters.
    pub(crate) async fn rooms(&self) -> Vec<crate::engine::RoomReport> {
        let mut all = vec![];
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            if shard.send(ShardMsg::Rooms(tx)).is_ok()
                && let Ok(r) = rx.await
            {
                all.extend(r);
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    async fn collect(&self) -> (EngineStats, Vec<String>) {
        let mut total = EngineStats::default();
        let mut names = vec![];
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            if shard.send(ShardMsg::Status(tx)).is_err() {
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
    total.tracks += s.tracks;
    total.packets_in += s.packets_in;
    total.packets_out += s.packets_out;
    total.bytes_in += s.bytes_in;
    total.bytes_out += s.bytes_out;
    total.unrouted += s.unrouted;
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
        let Ok(file) = crate::config::FileConfig::read(&path) else { continue };
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
        };
        let n = if cfg.shards == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            cfg.shards
        };
        let mut senders = vec![];
        let mut receivers = vec![];
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
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
        let shared = Arc::new(Shared {
            cluster,
            verifier: Verifier::new(cfg.api_keys.clone(), cfg.token_leeway_seconds),
            turn: RwLock::new((cfg.turn_uris.clone(), cfg.turn_secret.clone())),
            bandwidth_bps: AtomicU64::new(0),
            cfg,
            metrics,
            webhooks,
            draining: AtomicBool::new(false),
            shards: senders,
            room_shard: Mutex::new(HashMap::new()),
            ufrag_shard: RwLock::new(HashMap::new()),
            addr_shard: RwLock::new(HashMap::new()),
            tcp_conns: RwLock::new(HashMap::new()),
            next_pid: AtomicU64::new(1),
            spare: Mutex::new(Vec::new()),
        });
        for (i, rx) in receivers.into_iter().enumerate() {
            let engine = Engine::new(engine_cfg.clone());
            tokio::spawn(run_shard(i, engine, rx, shared.clone(), udp.clone()));
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

fn route(shared: &Shared, proto: Protocol, source: SocketAddr, data: &[u8]) -> Option<usize> {
    if shared.shards.len() == 1 {
        return Some(0);
    }
    // A STUN request names its participant; it wins over a stale 5-tuple entry.
    if let Some(ufrag) = stun::local_ufrag(data) {
        let shard = *shared.ufrag_shard.read().expect("ufrag map").get(ufrag)?;
        shared.addr_shard.write().expect("addr map").insert((proto, source), shard);
        return Some(shard);
    }
    shared.addr_shard.read().expect("addr map").get(&(proto, source)).copied()
}

async fn recv_udp(udp: Arc<UdpSocket>, local: SocketAddr, shared: Arc<Shared>) {
    loop {
        let mut buf = shared.spare.lock().expect("pool").pop().unwrap_or_default();
        buf.resize(DATAGRAM_BUF, 0);
        let (n, source) = match udp.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive");
                continue;
            }
        };
        buf.truncate(n);
        match route(&shared, Protocol::Udp, source, &buf) {
            Some(shard) => {
                shared.send(shard, ShardMsg::Datagram { proto: Protocol::Udp, source, destination: local, buf })
            }
            None => {
                shared.metrics.unrouted.inc();
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
    let mut shard = None;
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
        if shard.is_none() {
            shard = route(&shared, Protocol::Tcp, peer, &buf);
        }
        match shard {
            Some(s) => {
                shared.send(s, ShardMsg::Datagram { proto: Protocol::Tcp, source: peer, destination: local, buf })
            }
            None => {
                shared.metrics.unrouted.inc();
                break;
            }
        }
    }
    shared.tcp_conns.write().expect("tcp map").remove(&peer);
    writer.abort();
}

async fn run_shard(
    index: usize,
    mut engine: Engine,
    mut rx: mpsc::UnboundedReceiver<ShardMsg>,
    shared: Arc<Shared>,
    udp: Arc<UdpSocket>,
) {
    let mut sessions: HashMap<Pid, crate::session::Outbox> = HashMap::new();
    loop {
        let deadline = engine.next_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                let now = Instant::now();
                match msg {
                    ShardMsg::Command(cmd) => {
                        let joining = if let Command::Join(args) = &cmd { Some(args.pid) } else { None };
                        engine.handle_command(now, cmd);
                        if let Some(pid) = joining && let Some(ufrag) = engine.ufrag_of(pid) {
                            shared.ufrag_shard.write().expect("ufrag map").insert(ufrag.to_owned(), index);
                        }
                    }
                    ShardMsg::Register(pid, tx) => { sessions.insert(pid, tx); }
                    ShardMsg::Datagram { proto, source, destination, buf } => {
                        engine.handle_receive(now, proto, source, destination, &buf);
                        let mut spare = shared.spare.lock().expect("pool");
                        if spare.len() < 4096 {
                            spare.push(buf);
                        }
                    }
                    ShardMsg::Status(reply) => { let _ = reply.send((engine.stats(), engine.room_names())); }
                    ShardMsg::Rooms(reply) => { let _ = reply.send(engine.report()); }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => engine.handle_timeout(Instant::now()),
        }
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Transmit(t) => match t.proto {
                    Protocol::Udp => {
                        let _ = udp.try_send_to(&t.contents, t.destination);
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
                Output::Closed { pid, ufrag, routes } => {
                    if let Some(s) = sessions.remove(&pid) {
                        let _ = s.send(SessionOut::Close);
                    }
                    shared.ufrag_shard.write().expect("ufrag map").remove(&ufrag);
                    let mut addrs = shared.addr_shard.write().expect("addr map");
                    for r in routes {
                        addrs.remove(&r);
                    }
                }
                Output::Event(e) => {
                    tracing::info!(shard = index, event = ?e, "room event");
                    shared.webhooks.notify(&e);
                    if let RoomEvent::RoomFinished { room } = &e {
                        shared.room_shard.lock().expect("room map").remove(room);
                    }
                }
            }
        }
    }
}
