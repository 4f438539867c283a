//! The I/O driver: sockets, threads and timers around the sans-IO [`Engine`].
//!
//! One worker thread per core. Each worker binds its own copy of every
//! listener with `SO_REUSEPORT`, so the kernel spreads clients across workers
//! by 4-tuple hash and a client's packets always reach the same worker. A
//! worker owns one [`Engine`] shard and the relay sockets of the allocations
//! created in it; nothing on the relay path crosses threads or takes a lock
//! (the `RefCell` is uncontended: each worker is a single-threaded runtime).
//!
//! ```text
//!  worker thread i (current-thread tokio + LocalSet)
//!   ├─ UDP listener socket (REUSEPORT) ─► engine.handle_client ─► relay socket send_to(peer)
//!   ├─ TCP/TLS accept (REUSEPORT) ─► per-connection framing task ─► engine.handle_client
//!   ├─ relay socket task per allocation ─► engine.handle_peer ─► listener / stream writer
//!   └─ 1 s tick ─► engine.handle_timeout
//!  caller's runtime: admin HTTP, bandwidth sampler, secrets reload, drain supervisor
//! ```
//!
//! Receives use `recvmmsg` (`switchyard_udp::RecvBatch`) into one buffer per worker that every
//! socket of the worker shares between await points, so an allocation costs a
//! socket, a task and the engine's bookkeeping, not a receive buffer. Sends are
//! one `sendto` per packet: each client→peer packet leaves through its own
//! allocation's relay socket, so there is nothing to batch per socket.
//!
//! Timers: the worker ticks once a second instead of sleeping until
//! [`Engine::poll_timeout`]; every TURN lifetime is whole seconds and a sweep
//! over thousands of allocations costs microseconds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Socket, Type};
use switchyard_api::node::TurnNodeStatus;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Credentials, NonceMinter};
use crate::config::{Config, Protocol, TlsConfig, read_secrets_file};
use crate::engine::{AllocId, Engine, Family, FiveTuple, Forward, Limits, Output, Quotas, RelayIps, Shared, Transport};
use crate::error::{Error, Result};
use crate::filter::PeerFilter;
use crate::metrics::{BandwidthWindow, Metrics};
use crate::stun::{self, MAX_DATA_INDICATION_OVERHEAD};
use switchyard_udp::RecvBatch;

/// Largest framed message on a stream (STUN header + max length).
const MAX_FRAME: usize = stun::HEADER_LEN + 65_535;

/// Addresses the server actually bound (ports resolved when 0 was asked for).
#[derive(Clone, Debug)]
pub struct BoundAddrs {
    /// UDP listeners.
    pub udp: Vec<SocketAddr>,
    /// TCP listeners.
    pub tcp: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls: Vec<SocketAddr>,
    /// Admin HTTP.
    pub admin: SocketAddr,
}

/// Drain and shutdown state shared with the admin API.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    drain_deadline: Mutex<Option<Instant>>,
    /// Stop once drained (SIGTERM, [`TurnHandle::drain`]); a drain through the admin API
    /// leaves the node up, drained, until the pod is deleted: a process that exited would
    /// be restarted by the kubelet as a fresh node taking new allocations.
    exit_when_drained: std::sync::atomic::AtomicBool,
    grace: Duration,
}

impl Control {
    /// Start draining (idempotent): refuse new allocations, keep existing ones; with
    /// `exit`, stop once the last allocation ends or the grace period is over.
    pub(crate) fn drain(&self, exit: bool) {
        if exit {
            self.exit_when_drained.store(true, Ordering::SeqCst);
        }
        let mut deadline = self.drain_deadline.lock().unwrap_or_else(|e| e.into_inner());
        if deadline.is_none() {
            *deadline = Some(Instant::now() + self.grace);
            self.shared.draining.store(true, Ordering::SeqCst);
            self.shared.metrics.draining.set(1);
            tracing::info!(grace_seconds = self.grace.as_secs(), "draining");
        }
    }

    pub(crate) fn status(&self) -> TurnNodeStatus {
        let deadline = *self.drain_deadline.lock().unwrap_or_else(|e| e.into_inner());
        let m = &self.shared.metrics;
        TurnNodeStatus {
            bandwidth_bps: m.bandwidth_bps.get().max(0) as u64,
            allocations: m.allocations.get().max(0) as u64,
            draining: deadline.is_some(),
            drain_remaining_seconds: deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs()),
        }
    }

    fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// The TURN server.
#[derive(Debug)]
pub struct TurnServer;

/// A running server: its addresses, and drain/shutdown controls.
#[derive(Debug)]
pub struct TurnHandle {
    addrs: BoundAddrs,
    control: Arc<Control>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl TurnHandle {
    /// Bound addresses.
    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    /// Metrics of this server.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.control.shared.metrics.clone()
    }

    /// Current status document.
    pub fn status(&self) -> TurnNodeStatus {
        self.control.status()
    }

    /// Start draining: new allocations are refused; the server stops when the
    /// last allocation ends or the grace period runs out.
    pub fn drain(&self) {
        self.control.drain(true);
    }

    /// Stop now, dropping every allocation.
    pub fn shutdown(&self) {
        self.control.shutdown();
    }

    /// Wait until the server has stopped (after a drain or a shutdown).
    pub async fn wait(mut self) -> Result<()> {
        let mut rx = self.control.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
        let threads = std::mem::take(&mut self.threads);
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await
        .map_err(|e| Error::Runtime(e.to_string()))
    }
}

/// Dropping the handle stops the server (an embedding process that forgets
/// to call [`TurnHandle::shutdown`] does not leak worker threads).
impl Drop for TurnHandle {
    fn drop(&mut self) {
        self.control.shutdown();
    }
}

/// Relay ports handed out round-robin from the configured range, shared by
/// every worker.
#[derive(Debug)]
struct Ports {
    min: u16,
    max: u16,
    next: AtomicU32,
}

impl Ports {
    fn bind(&self, ip: IpAddr, even: bool) -> std::io::Result<std::net::UdpSocket> {
        if self.min == 0 {
            for _ in 0..64 {
                let s = udp_socket(SocketAddr::new(ip, 0), false)?;
                if !even || s.local_addr()?.port() % 2 == 0 {
                    return Ok(s);
                }
            }
            return Err(std::io::ErrorKind::AddrInUse.into());
        }
        let span = u32::from(self.max - self.min) + 1;
        for _ in 0..span {
            let port = self.min + (self.next.fetch_add(1, Ordering::Relaxed) % span) as u16;
            if even && port % 2 == 1 {
                continue;
            }
            match udp_socket(SocketAddr::new(ip, port), false) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::ErrorKind::AddrInUse.into())
    }
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    // Bigger buffers absorb bursts; the kernel clamps to its maximum.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn tls_acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("tls.certFile {}: {e}", cfg.cert_file.display())))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| Error::Tls(format!("tls.keyFile {}: {e}", cfg.key_file.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Sockets one worker starts with.
struct WorkerSockets {
    udp: Vec<std::net::UdpSocket>,
    streams: Vec<(std::net::TcpListener, Transport)>,
}

impl TurnServer {
    /// Bind every listener, start the workers and the admin API, and return
    /// once everything is listening. Must be called inside a tokio runtime
    /// (the admin API and housekeeping run on it).
    pub async fn start(config: Config) -> Result<TurnHandle> {
        config.validate()?;
        let relay_ip = config.relay_address().expect("validated");
        let relay = RelayIps::new(relay_ip, config.relay.additional_address).expect("validated: families differ");
        // Where each family's relay sockets bind.
        let mut relay_bind = [None; 2];
        for (ip, bind) in [
            (Some(relay_ip), config.relay.bind_address),
            (config.relay.additional_address, config.relay.additional_bind_address),
        ] {
            if let Some(ip) = ip {
                relay_bind[Family::of(ip) as usize] = Some((bind.unwrap_or(ip), ip));
            }
        }
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;

        let mut secrets: Vec<Vec<u8>> = config.auth.secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
        if let Some(f) = &config.auth.secrets_file {
            secrets.extend(read_secrets_file(f)?);
        }
        let static_users: Vec<(String, String)> =
            config.auth.static_users.iter().map(|u| (u.username.clone(), u.password.clone())).collect();
        // Bind every listener once per worker. The first bind resolves port 0,
        // the others join it through SO_REUSEPORT.
        let mut addrs = BoundAddrs { udp: Vec::new(), tcp: Vec::new(), tls: Vec::new(), admin: config.admin_address };
        let mut per_worker: Vec<WorkerSockets> =
            (0..workers).map(|_| WorkerSockets { udp: Vec::new(), streams: Vec::new() }).collect();
        for l in &config.listeners {
            let mut addr = l.address;
            // SO_REUSEPORT would let us silently share a port with another
            // (e.g. stale) process of the same user: check it is free first.
            if addr.port() != 0 {
                let probe = match l.protocol {
                    Protocol::Udp => std::net::UdpSocket::bind(addr).map(drop),
                    Protocol::Tcp | Protocol::Tls => std::net::TcpListener::bind(addr).map(drop),
                };
                probe.map_err(|source| Error::Bind { what: "listener", addr, source })?;
            }
            for (w, sockets) in per_worker.iter_mut().enumerate() {
                let bind_err = |source| Error::Bind { what: "listener", addr, source };
                match l.protocol {
                    Protocol::Udp => {
                        let s = udp_socket(addr, true).map_err(bind_err)?;
                        addr = s.local_addr().map_err(bind_err)?;
                        sockets.udp.push(s);
                    }
                    Protocol::Tcp | Protocol::Tls => {
                        let s = tcp_listener(addr).map_err(bind_err)?;
                        addr = s.local_addr().map_err(bind_err)?;
                        let t = if l.protocol == Protocol::Tcp { Transport::Tcp } else { Transport::Tls };
                        sockets.streams.push((s, t));
                    }
                }
                if w == 0 {
                    match l.protocol {
                        Protocol::Udp => addrs.udp.push(addr),
                        Protocol::Tcp => addrs.tcp.push(addr),
                        Protocol::Tls => addrs.tls.push(addr),
                    }
                }
            }
        }
        // Our own UDP listeners are never a relay destination (no TURN loops),
        // whatever the allow list says; a wildcard listener is reached at the
        // relay address.
        let own_udp: Vec<SocketAddr> = addrs
            .udp
            .iter()
            .flat_map(|a| -> Vec<SocketAddr> {
                if a.ip().is_unspecified() {
                    relay.all().map(|ip| SocketAddr::new(ip, a.port())).collect()
                } else {
                    vec![*a]
                }
            })
            .collect();
        let metrics = Arc::new(Metrics::new());
        let shared = Arc::new(Shared {
            credentials: Credentials::new(&config.realm, secrets, &static_users),
            nonces: NonceMinter::new(rand::random(), config.auth.nonce_lifetime_seconds),
            filter: PeerFilter::new(config.peers.allow.clone(), config.peers.deny.clone(), relay.all().collect())
                .with_blocked(own_udp)
                .with_only(config.only_peers.iter().copied())
                .into(),
            limits: Limits {
                max_allocations_per_user: config.quotas.max_allocations_per_user,
                max_allocations: config.quotas.max_allocations,
                bandwidth_per_allocation: config.quotas.bandwidth_per_allocation_bps / 8,
                unauthenticated_rate: config.quotas.unauthenticated_requests_per_second,
                default_lifetime: config.default_lifetime(),
                max_lifetime: Duration::from_secs(config.lifetimes.max_seconds),
            },
            quotas: Quotas::default(),
            metrics: metrics.clone(),
            draining: false.into(),
            relay,
        });

        let admin_listener = std::net::TcpListener::bind(config.admin_address).map_err(|source| Error::Bind {
            what: "admin",
            addr: config.admin_address,
            source,
        })?;
        admin_listener.set_nonblocking(true).map_err(|e| Error::Runtime(e.to_string()))?;
        addrs.admin = admin_listener.local_addr().map_err(|e| Error::Runtime(e.to_string()))?;

        let (shutdown, _) = watch::channel(false);
        let control = Arc::new(Control {
            shared: shared.clone(),
            shutdown,
            drain_deadline: Mutex::new(None),
            exit_when_drained: false.into(),
            grace: Duration::from_secs(config.drain_grace_seconds),
        });
        let ports = Arc::new(Ports {
            min: config.relay.port_min,
            max: config.relay.port_max,
            next: AtomicU32::new(rand::random::<u32>() % 4096),
        });
        let base_instant = Instant::now();
        let base_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());

        let mut threads = Vec::new();
        for (i, sockets) in per_worker.into_iter().enumerate() {
            let init = WorkerInit {
                engine: Engine::new(shared.clone(), i as u64, workers as u64, base_instant, base_unix),
                sockets,
                tls: tls.clone(),
                ports: ports.clone(),
                relay_bind,
                shutdown: control.shutdown.subscribe(),
            };
            let t = std::thread::Builder::new()
                .name(format!("turn-worker-{i}"))
                .spawn(move || run_worker(init))
                .map_err(|e| Error::Runtime(e.to_string()))?;
            threads.push(t);
        }

        let admin = TcpListener::from_std(admin_listener).map_err(|e| Error::Runtime(e.to_string()))?;
        tokio::spawn(crate::admin::serve(admin, control.clone()));
        tokio::spawn(housekeeping(control.clone(), config.clone()));
        tracing::info!(?addrs, workers, ?relay, "turn-node listening");
        Ok(TurnHandle { addrs, control, threads })
    }
}

/// Bandwidth gauge, secrets reload and the drain supervisor, once a second.
async fn housekeeping(control: Arc<Control>, config: Config) {
    let mut shutdown = control.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut window = BandwidthWindow::<5>::default();
    let mut last_sample = Instant::now();
    let secrets_file = config.auth.secrets_file.clone();
    let poll = Duration::from_secs(config.auth.secrets_poll_seconds);
    // mtime and size: a rewrite within a coarse mtime tick still changes one.
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| Ok((m.modified()?, m.len()))).ok();
    let mut seen_mtime = secrets_file.as_deref().and_then(mtime);
    let mut last_poll = Instant::now();
    // The config file's `peers` are re-read while running: in Gateway mode the operator
    // keeps the allow list equal to the SFU pods' IPs, which change as pods come and go.
    let mut seen_config = config.source.as_deref().and_then(mtime);
    let mut last_config_poll = Instant::now();
    let mut drained_logged = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let shared = &control.shared;
        if last_sample.elapsed() >= Duration::from_secs(1) {
            last_sample = Instant::now();
            let bps = window.sample(shared.metrics.total_relayed_bytes());
            shared.metrics.bandwidth_bps.set(i64::try_from(bps).unwrap_or(i64::MAX));
        }
        if let Some(path) = &secrets_file
            && last_poll.elapsed() >= poll
        {
            last_poll = Instant::now();
            let now = mtime(path);
            if now != seen_mtime {
                match read_secrets_file(path) {
                    Ok(mut s) => {
                        s.extend(config.auth.secrets.iter().map(|x| x.as_bytes().to_vec()));
                        tracing::info!(count = s.len(), "reloaded TURN secrets");
                        shared.credentials.set_secrets(s);
                        seen_mtime = now;
                    }
                    Err(e) => tracing::warn!(error = %e, "secrets file unreadable; keeping the old secrets"),
                }
            }
        }
        if let Some(path) = &config.source
            && last_config_poll.elapsed() >= Duration::from_secs(1)
            && {
                last_config_poll = Instant::now();
                mtime(path) != seen_config
            }
        {
            seen_config = mtime(path);
            match crate::config::read(path) {
                Ok(c) => {
                    if shared.filter.set_rules(c.peers.allow.clone(), c.peers.deny.clone()) {
                        tracing::info!(allow = ?c.peers.allow, deny = ?c.peers.deny, "reloaded peer rules");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "config file unreadable; keeping the old peer rules"),
            }
        }
        let deadline = *control.drain_deadline.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(deadline) = deadline {
            let live = shared.quotas.total();
            if live == 0 || Instant::now() >= deadline {
                if control.exit_when_drained.load(Ordering::SeqCst) {
                    tracing::info!(live, "drain finished; stopping");
                    control.shutdown();
                    return;
                }
                if !drained_logged {
                    drained_logged = true;
                    tracing::info!(live, "drain finished; staying up (drained) until told to stop");
                }
            }
        }
    }
}

struct WorkerInit {
    engine: Engine,
    sockets: WorkerSockets,
    tls: Option<TlsAcceptor>,
    ports: Arc<Ports>,
    relay_bind: RelayBind,
    shutdown: watch::Receiver<bool>,
}

/// One worker's state, shared by its local tasks.
struct Worker {
    engine: RefCell<Engine>,
    scratch: RefCell<RecvBatch>,
    udp: Vec<(SocketAddr, Rc<UdpSocket>)>,
    relays: RefCell<HashMap<(AllocId, Family), RelaySocket>>,
    streams: RefCell<HashMap<FiveTuple, Rc<StreamOut>>>,
    ports: Arc<Ports>,
    relay_bind: RelayBind,
}

/// A relay socket and its receive task.
type RelaySocket = (Rc<UdpSocket>, AbortHandle);

/// Per family (by `Family as usize`): where relay sockets bind and the
/// address clients are told.
type RelayBind = [Option<(IpAddr, IpAddr)>; 2];

fn run_worker(init: WorkerInit) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "worker runtime failed to start");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    let WorkerInit { engine, sockets, tls, ports, relay_bind, mut shutdown } = init;
    local.block_on(&rt, async move {
        let mut udp = Vec::new();
        for s in sockets.udp {
            match (s.local_addr(), UdpSocket::from_std(s)) {
                (Ok(a), Ok(s)) => udp.push((a, Rc::new(s))),
                (_, Err(e)) | (Err(e), _) => tracing::error!(error = %e, "udp listener"),
            }
        }
        let worker = Rc::new(Worker {
            engine: RefCell::new(engine),
            scratch: RefCell::new(RecvBatch::new(MAX_DATA_INDICATION_OVERHEAD)),
            udp,
            relays: RefCell::new(HashMap::new()),
            streams: RefCell::new(HashMap::new()),
            ports,
            relay_bind,
        });
        for i in 0..worker.udp.len() {
            tokio::task::spawn_local(udp_listener_loop(worker.clone(), i));
        }
        for (l, transport) in sockets.streams {
            match TcpListener::from_std(l) {
                Ok(l) => {
                    let tls = if transport == Transport::Tls { tls.clone() } else { None };
                    tokio::task::spawn_local(accept_loop(worker.clone(), l, transport, tls));
                }
                Err(e) => tracing::error!(error = %e, "tcp listener"),
            }
        }
        tokio::task::spawn_local(timer_loop(worker.clone()));
        let _ = shutdown.wait_for(|s| *s).await;
    });
}

impl Worker {
    /// Send a framed message to a client. UDP: from the listener socket the
    /// client talks to; streams: through the connection's writer queue.
    fn send_to_client(&self, to: &FiveTuple, data: &[u8]) {
        match to.transport {
            Transport::Udp => {
                if let Some((_, s)) = self.udp.iter().find(|(a, _)| *a == to.server) {
                    // A full socket buffer drops, like the network would.
                    let _ = s.try_send_to(data, to.client);
                }
            }
            Transport::Tcp | Transport::Tls => {
                if let Some(out) = self.streams.borrow().get(to) {
                    out.push(data);
                }
            }
        }
    }

    #[inline]
    fn forward(&self, fwd: Forward<'_>) {
        if let Forward::ToPeer { alloc, peer, payload } = fwd {
            // The peer's family picks the socket; an IPv4-mapped peer is sent
            // to as the IPv4 address it is.
            let ip = crate::filter::canonical(peer.ip());
            if let Some((s, _)) = self.relays.borrow().get(&(alloc, Family::of(ip))) {
                let _ = s.try_send_to(payload, SocketAddr::new(ip, peer.port()));
            }
        }
    }

    /// Carry out everything the engine queued.
    fn flush(self: &Rc<Self>) {
        loop {
            let out = self.engine.borrow_mut().poll_output();
            match out {
                None => return,
                Some(Output::Transmit { to, data }) => self.send_to_client(&to, &data),
                Some(Output::BindRelay { id, even_port, family }) => {
                    // The engine asks only for families it was given addresses for.
                    let Some((bind, advertised)) = self.relay_bind[family as usize] else {
                        self.engine.borrow_mut().relay_bind_failed(id);
                        continue;
                    };
                    let bound = self
                        .ports
                        .bind(bind, even_port)
                        .and_then(UdpSocket::from_std)
                        .and_then(|s| Ok((s.local_addr()?, s)));
                    match bound {
                        Ok((local, sock)) => {
                            let sock = Rc::new(sock);
                            let task = tokio::task::spawn_local(relay_loop(self.clone(), id, sock.clone()));
                            self.relays.borrow_mut().insert((id, family), (sock, task.abort_handle()));
                            let relay = SocketAddr::new(advertised, local.port());
                            self.engine.borrow_mut().relay_bound(Instant::now(), id, Some(relay));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                            tracing::warn!(error = %e, "no relay port free in the configured range");
                            self.engine.borrow_mut().relay_bound(Instant::now(), id, None);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "binding a relay socket failed");
                            self.engine.borrow_mut().relay_bind_failed(id);
                        }
                    }
                }
                Some(Output::Release { id }) => {
                    for family in [Family::V4, Family::V6] {
                        if let Some((_, task)) = self.relays.borrow_mut().remove(&(id, family)) {
                            task.abort();
                        }
                    }
                }
            }
        }
    }
}

/// One `recvmmsg` on a readable socket. A short batch means the socket is
/// drained, so readiness is cleared right away (reported as `WouldBlock` to
/// tokio) instead of costing a second, empty syscall before the next wait.
fn recv_batch(sock: &UdpSocket, fd: std::os::fd::RawFd, batch: &mut RecvBatch) -> Option<usize> {
    let mut got = 0;
    let result = sock.try_io(Interest::READABLE, || {
        got = batch.recv(fd)?;
        if got < switchyard_udp::BATCH { Err(std::io::ErrorKind::WouldBlock.into()) } else { Ok(got) }
    });
    match result {
        Ok(n) => Some(n),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(got),
        Err(_) => None, // e.g. an ICMP error surfaced on the socket
    }
}

async fn udp_listener_loop(worker: Rc<Worker>, index: usize) {
    let (local, sock) = worker.udp[index].clone();
    let fd = sock.as_raw_fd();
    loop {
        if sock.readable().await.is_err() {
            continue;
        }
        // Borrowed only until the next await: every socket of this worker
        // shares the one batch buffer.
        let mut batch = worker.scratch.borrow_mut();
        let Some(n) = recv_batch(&sock, fd, &mut batch) else {
            continue;
        };
        let now = Instant::now();
        let head = batch.head();
        for i in 0..n {
            let Some((slot, len, from)) = batch.get(i) else {
                continue;
            };
            let five = FiveTuple { client: from, server: local, transport: Transport::Udp };
            let fwd = worker.engine.borrow_mut().handle_client(now, &five, &slot[head..head + len]);
            let control = fwd == Forward::None;
            worker.forward(fwd);
            if control {
                worker.flush();
            }
        }
    }
}

async fn relay_loop(worker: Rc<Worker>, id: AllocId, sock: Rc<UdpSocket>) {
    let fd = sock.as_raw_fd();
    loop {
        if sock.readable().await.is_err() {
            continue;
        }
        let mut batch = worker.scratch.borrow_mut();
        let Some(n) = recv_batch(&sock, fd, &mut batch) else {
            continue;
        };
        let now = Instant::now();
        let head = batch.head();
        for i in 0..n {
            let Some((slot, len, from)) = batch.get(i) else {
                continue;
            };
            // The engine frames the payload in place (header in the slot's
            // head room), so the relay path copies nothing.
            let framed = worker.engine.borrow_mut().handle_peer(now, id, from, slot, head, len);
            if let Some((five, range)) = framed {
                worker.send_to_client(&five, &slot[range]);
            }
        }
    }
}

async fn timer_loop(worker: Rc<Worker>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        worker.engine.borrow_mut().handle_timeout(Instant::now());
        worker.flush();
    }
}

async fn accept_loop(worker: Rc<Worker>, listener: TcpListener, transport: Transport, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        let five = FiveTuple { client, server, transport };
        let worker = worker.clone();
        match &tls {
            None => {
                tokio::task::spawn_local(stream_conn(worker, stream, five));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::task::spawn_local(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(s)) => stream_conn(worker, s, five).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, %client, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// One TCP/TLS client: split the byte stream into STUN and ChannelData
/// frames (RFC 8656 §12.5), and end its allocation when the connection ends.
/// Bytes waiting to be written to one TCP/TLS client.
#[derive(Default)]
struct StreamOut {
    pending: RefCell<Vec<u8>>,
    ready: tokio::sync::Notify,
}

impl StreamOut {
    /// Past this much unsent data the client is not keeping up: drop, as a
    /// congested UDP path would, instead of buffering without bound.
    const LIMIT: usize = 1 << 20;

    fn push(&self, data: &[u8]) {
        let mut pending = self.pending.borrow_mut();
        if pending.len() + data.len() <= Self::LIMIT {
            pending.extend_from_slice(data);
            // Stores a permit when the writer is busy, so no wake-up is lost.
            self.ready.notify_one();
        }
    }
}

async fn stream_conn<S>(worker: Rc<Worker>, stream: S, five: FiveTuple)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let out = Rc::new(StreamOut::default());
    worker.streams.borrow_mut().insert(five, out.clone());
    let writer = tokio::task::spawn_local(async move {
        // Swap the pending bytes out and write them in one go; both buffers
        // are reused, so steady-state relaying allocates nothing.
        let mut spare = Vec::with_capacity(16 * 1024);
        loop {
            out.ready.notified().await;
            std::mem::swap(&mut *out.pending.borrow_mut(), &mut spare);
            if !spare.is_empty() && wr.write_all(&spare).await.is_err() {
                break;
            }
            spare.clear();
        }
    });
    let mut buf = vec![0u8; MAX_FRAME + 4];
    let mut filled = 0;
    'conn: loop {
        match rd.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
        let mut start = 0;
        while let Some(need) = stun::stream_frame_len(&buf[start..filled]) {
            if need > MAX_FRAME + 4 {
                break 'conn; // not STUN/ChannelData: the stream is unusable
            }
            if filled - start < need {
                break;
            }
            let fwd = worker.engine.borrow_mut().handle_client(Instant::now(), &five, &buf[start..start + need]);
            let control = fwd == Forward::None;
            worker.forward(fwd);
            if control {
                worker.flush();
            }
            start += need;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
    worker.streams.borrow_mut().remove(&five);
    worker.engine.borrow_mut().client_closed(&five);
    worker.flush();
    writer.abort();
}

/// Start, run until SIGTERM/SIGINT, drain, and return when drained.
pub async fn run_until_signal(config: Config) -> Result<()> {
    let handle = TurnServer::start(config).await?;
    let control = handle.control.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        control.drain(true);
    });
    handle.wait().await
}
