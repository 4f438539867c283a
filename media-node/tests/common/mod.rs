//! Test peers: real WebRTC clients (webrtc-rs, an independent stack) that speak the
//! signaling protocol to a real media-node on loopback.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchyard_api::signal::{
    ClientMessage, DataKind, DataMessage, IceTransportPolicy, JoinRequest, PublishTrackRequest, ServerMessage,
    SessionDescription, TrackKind, TrackSource,
};
use switchyard_api::token::{Claims, Grants, mint};
use switchyard_media_node::{Config, Node, NodeHandle};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice_transport::ice_connection_state::RTCIceConnectionState;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::signaling_state::RTCSignalingState;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Tests that run many WebRTC peers take this, so a loaded machine runs one at a time:
/// starved client stacks (not the SFU) otherwise miss their handshake timers.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const KEY: &str = "testkey";
pub const SECRET: &str = "testsecret-testsecret";

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub async fn start_node() -> NodeHandle {
    start_node_with(|_| {}).await
}

/// With several crates of the workspace built together, rustls has two crypto providers
/// compiled in and cannot pick one itself; webrtc-rs needs one.
pub fn init_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Logs when RUST_LOG asks for them.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub async fn start_node_with(f: impl FnOnce(&mut Config)) -> NodeHandle {
    init_crypto();
    let mut cfg = Config::local(KEY, SECRET);
    f(&mut cfg);
    Node::start(cfg).await.expect("media-node starts")
}

pub fn token(identity: &str, room: &str, edit: impl FnOnce(&mut Grants)) -> String {
    let mut grants = Grants::join(room);
    edit(&mut grants);
    mint(&Claims::new(KEY, identity, now(), 600).with_grants(grants), SECRET).unwrap()
}

/// Where a media-node listens: an in-process node, or a separate process's address.
pub trait Target {
    fn http(&self) -> std::net::SocketAddr;
}

impl Target for NodeHandle {
    fn http(&self) -> std::net::SocketAddr {
        self.http_addr
    }
}

impl Target for std::net::SocketAddr {
    fn http(&self) -> std::net::SocketAddr {
        *self
    }
}

pub fn url(node: &impl Target, token: &str) -> String {
    format!("ws://{}/rtc?access_token={token}", node.http())
}

/// The byte pattern a peer sends, so a receiver can check a packet's origin and content.
pub fn sample_bytes(kind: TrackKind, sender: u8, n: u16) -> Vec<u8> {
    let mut v = match kind {
        // First byte: VP8 payload header with P=0 (every frame a keyframe: switchable).
        TrackKind::Video => vec![0x00, b'V', sender],
        TrackKind::Audio => vec![b'A', sender],
    };
    v.extend_from_slice(&n.to_be_bytes());
    v.extend((0..120u8).map(|i| i.wrapping_mul(sender).wrapping_add(n as u8)));
    v
}

/// Check a received RTP payload against [`sample_bytes`]; returns the sender id.
pub fn check_payload(kind: TrackKind, payload: &[u8]) -> Option<u8> {
    let body = if kind == TrackKind::Video { payload.get(vp8_descriptor_len(payload)?..)? } else { payload };
    let sender = *body.get(if kind == TrackKind::Video { 2 } else { 1 })?;
    let at = if kind == TrackKind::Video { 3 } else { 2 };
    let n = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
    (body == sample_bytes(kind, sender, n).as_slice()).then_some(sender)
}

/// Length of the VP8 payload descriptor (RFC 7741 §4.2) that the payloader prepends.
fn vp8_descriptor_len(p: &[u8]) -> Option<usize> {
    let b0 = *p.first()?;
    if b0 & 0x80 == 0 {
        return Some(1);
    }
    let x = *p.get(1)?;
    let mut len = 2;
    if x & 0x80 != 0 {
        len += if *p.get(len)? & 0x80 != 0 { 2 } else { 1 };
    }
    if x & 0x40 != 0 {
        len += 1;
    }
    if x & 0x30 != 0 {
        len += 1;
    }
    Some(len)
}

#[derive(Debug, Default)]
pub struct Received {
    /// (kind, sender id) → packets with a valid payload.
    pub valid: HashMap<(TrackKind, u8), u64>,
    pub invalid: u64,
    pub first_invalid: Option<Vec<u8>>,
    pub data_channel: Vec<String>,
    /// (kind, sender id) → (last valid packet, longest gap between two valid packets).
    pub gaps: HashMap<(TrackKind, u8), (std::time::Instant, Duration)>,
}

pub struct Peer {
    pub pc: Arc<RTCPeerConnection>,
    pub received: Arc<Mutex<Received>>,
    pub events: mpsc::UnboundedReceiver<ServerMessage>,
    pub out: mpsc::UnboundedSender<ClientMessage>,
    pub channel: Arc<RTCDataChannel>,
    tracks: Vec<(TrackKind, Arc<TrackLocalStaticSample>)>,
    pub id: u8,
    /// The signaling socket's reader and writer.
    socket: Vec<tokio::task::JoinHandle<()>>,
}

/// A peer connection configured as the server's `joined` says (ICE servers, relay-only).
async fn new_pc(joined: &ServerMessage) -> Arc<RTCPeerConnection> {
    init_crypto();
    let mut m = MediaEngine::default();
    m.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut m).unwrap();
    let mut s = SettingEngine::default();
    // Loopback only: no traffic leaves this machine.
    s.set_include_loopback_candidate(true);
    s.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    s.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    let api = APIBuilder::new().with_media_engine(m).with_interceptor_registry(registry).with_setting_engine(s).build();
    let mut config = RTCConfiguration::default();
    if let ServerMessage::Joined(j) = joined {
        config.ice_servers = j
            .ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        if j.ice_transport_policy == IceTransportPolicy::Relay {
            config.ice_transport_policy = RTCIceTransportPolicy::Relay;
        }
    }
    Arc::new(api.new_peer_connection(config).await.unwrap())
}

/// Waits (bounded) until the ICE agent has taken the remote credentials of the first
/// answer. webrtc-rs starts its transports from a queue after `set_remote_description`
/// returns; a remote offer applied before that finds no remote credentials yet, takes
/// the server's unchanged ones for an ICE restart and answers with fresh local ones,
/// which the server must refuse (three refusals end in `negotiation_failed` and a
/// leave). On a loaded machine that race was won about one join in ten. A browser does
/// not have it: its operations chain in order.
async fn ice_started(pc: &RTCPeerConnection) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pc.ice_connection_state() == RTCIceConnectionState::New && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn local_description(pc: &RTCPeerConnection) -> String {
    let mut gathered = pc.gathering_complete_promise().await;
    let _ = gathered.recv().await;
    pc.local_description().await.unwrap().sdp
}

#[derive(Debug)]
pub enum ConnectError {
    Http(u16, serde_json::Value),
    /// The server answered the join with an error.
    Refused(switchyard_api::signal::ErrorMessage),
    Other(String),
}

impl Peer {
    /// Connect, join, publish `publish` tracks, and finish the first negotiation.
    pub async fn join(node: &impl Target, token: &str, id: u8, publish: &[TrackKind]) -> Peer {
        match Self::try_join(node, token, id, publish).await {
            Ok(p) => p,
            Err(ConnectError::Http(s, b)) => panic!("join refused: {s} {b}"),
            Err(ConnectError::Refused(e)) => panic!("join refused: {e:?}"),
            Err(ConnectError::Other(e)) => panic!("join failed: {e}"),
        }
    }

    pub async fn try_join(
        node: &impl Target,
        token: &str,
        id: u8,
        publish: &[TrackKind],
    ) -> Result<Peer, ConnectError> {
        Self::try_join_url(&url(node, token), id, publish).await
    }

    /// Join through a full `/rtc` URL (a Service or another node's address).
    pub async fn try_join_url(url: &str, id: u8, publish: &[TrackKind]) -> Result<Peer, ConnectError> {
        let (ws, _) = match tokio_tungstenite::connect_async(url).await {
            Ok(ws) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body =
                    resp.body().as_ref().map(|b| serde_json::from_slice(b).unwrap_or_default()).unwrap_or_default();
                return Err(ConnectError::Http(resp.status().as_u16(), body));
            }
            Err(e) => return Err(ConnectError::Other(e.to_string())),
        };
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
        let (ev_tx, events) = mpsc::unbounded_channel::<ServerMessage>();
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(Message::text(serde_json::to_string(&m).unwrap())).await.is_err() {
                    break;
                }
            }
        });
        out_tx.send(ClientMessage::Join(JoinRequest::default())).unwrap();

        // Wait for joined before offering.
        let first = stream.next().await;
        let joined: ServerMessage = match first {
            Some(Ok(Message::Text(t))) => serde_json::from_str(&t).unwrap(),
            other => return Err(ConnectError::Other(format!("expected joined, got {other:?}"))),
        };
        if let ServerMessage::Error(e) = joined {
            return Err(ConnectError::Refused(e));
        }
        if !matches!(joined, ServerMessage::Joined(_)) {
            return Err(ConnectError::Other(format!("expected joined, got {joined:?}")));
        }
        let pc = new_pc(&joined).await;
        let received = Arc::new(Mutex::new(Received::default()));
        let r = received.clone();
        pc.on_track(Box::new(move |track, _, _| {
            let r = r.clone();
            Box::pin(async move {
                let kind = if track.kind().to_string() == "audio" { TrackKind::Audio } else { TrackKind::Video };
                tokio::spawn(async move {
                    while let Ok((pkt, _)) = track.read_rtp().await {
                        let mut r = r.lock().unwrap();
                        match check_payload(kind, &pkt.payload) {
                            Some(sender) => {
                                *r.valid.entry((kind, sender)).or_default() += 1;
                                let at = std::time::Instant::now();
                                let gap = r.gaps.entry((kind, sender)).or_insert((at, Duration::ZERO));
                                gap.1 = gap.1.max(at - gap.0);
                                gap.0 = at;
                            }
                            None => {
                                r.invalid += 1;
                                if r.first_invalid.is_none() {
                                    r.first_invalid = Some(pkt.payload.to_vec());
                                }
                            }
                        }
                    }
                });
            })
        }));
        let channel = pc.create_data_channel("reliable", None).await.unwrap();
        let r = received.clone();
        channel.on_message(Box::new(move |msg| {
            r.lock().unwrap().data_channel.push(String::from_utf8_lossy(&msg.data).into_owned());
            Box::pin(async {})
        }));
        let mut tracks = vec![];
        for (i, &kind) in publish.iter().enumerate() {
            let mime = if kind == TrackKind::Audio { MIME_TYPE_OPUS } else { MIME_TYPE_VP8 };
            let codec = RTCRtpCodecCapability { mime_type: mime.to_owned(), ..Default::default() };
            let track = Arc::new(TrackLocalStaticSample::new(codec, format!("t{i}"), format!("peer{id}")));
            let init =
                RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, send_encodings: vec![] };
            pc.add_transceiver_from_track(track.clone(), Some(init)).await.unwrap();
            let source = if kind == TrackKind::Audio { TrackSource::Microphone } else { TrackSource::Camera };
            out_tx
                .send(ClientMessage::PublishTrack(PublishTrackRequest {
                    cid: format!("t{i}"),
                    name: format!("{kind:?}"),
                    kind,
                    source,
                    muted: false,
                    width: None,
                    height: None,
                    layers: vec![],
                }))
                .unwrap();
            tracks.push((kind, track));
        }

        let _ = ev_tx.send(joined);
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let sdp = local_description(&pc).await;
        out_tx.send(ClientMessage::Offer(SessionDescription { sdp, id: 1 })).unwrap();

        // The signaling loop: apply answers and answer server offers; pass the rest on.
        let pc2 = pc.clone();
        let out2 = out_tx.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(t) = frame else { continue };
                let msg: ServerMessage = serde_json::from_str(&t).unwrap();
                match &msg {
                    ServerMessage::Answer(a) => {
                        let answer = RTCSessionDescription::answer(a.sdp.clone()).unwrap();
                        if let Err(e) = pc2.set_remote_description(answer).await {
                            // A closed peer (the test is over) stops here; a refused answer
                            // shows as media that never flows.
                            tracing::debug!(error = %e, state = ?pc2.connection_state(), "answer not applied");
                            break;
                        }
                    }
                    // Glare: while our own offer waits for its answer, the server's offer
                    // is ignored (as the browser SDK does): the server sees our offer,
                    // withdraws its own, answers, and offers again. Applying it here
                    // would roll our offer back and answer with fresh ICE credentials,
                    // which the server must refuse.
                    ServerMessage::Offer(_) if pc2.signaling_state() == RTCSignalingState::HaveLocalOffer => {}
                    ServerMessage::Offer(o) => {
                        ice_started(&pc2).await;
                        let offer = RTCSessionDescription::offer(o.sdp.clone()).unwrap();
                        let applied = async {
                            pc2.set_remote_description(offer).await?;
                            let answer = pc2.create_answer(None).await?;
                            pc2.set_local_description(answer).await
                        };
                        if let Err(e) = applied.await {
                            tracing::debug!(error = %e, state = ?pc2.connection_state(), "offer not applied");
                            break;
                        }
                        let sdp = local_description(&pc2).await;
                        let _ = out2.send(ClientMessage::Answer(SessionDescription { sdp, id: o.id }));
                    }
                    _ => {}
                }
                if ev_tx.send(msg).is_err() {
                    break;
                }
            }
        });
        Ok(Peer { pc, received, events, out: out_tx, channel, tracks, id, socket: vec![writer, reader] })
    }

    /// Send media on every published track for `duration` (20 ms audio, 33 ms video).
    pub fn start_media(&self, duration: Duration) -> tokio::task::JoinHandle<u64> {
        let tracks = self.tracks.clone();
        let id = self.id;
        tokio::spawn(async move {
            let mut sent = 0u64;
            let start = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut n: u16 = 0;
            while start.elapsed() < duration {
                tick.tick().await;
                n = n.wrapping_add(1);
                for (kind, track) in &tracks {
                    if *kind == TrackKind::Video && n % 2 == 1 {
                        continue;
                    }
                    let data = Bytes::from(sample_bytes(*kind, id, n));
                    let sample = Sample { data, duration: Duration::from_millis(20), ..Default::default() };
                    if track.write_sample(&sample).await.is_ok() {
                        sent += 1;
                    }
                }
            }
            sent
        })
    }

    /// The next message matching `f`, within `within`.
    pub async fn wait_for<T>(&mut self, within: Duration, mut f: impl FnMut(&ServerMessage) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.events.recv()).await.ok()??;
            if let Some(t) = f(&msg) {
                return Some(t);
            }
        }
    }

    pub fn send_data(&self, payload: &str, to: Vec<String>) {
        use base64::Engine;
        let payload = base64::engine::general_purpose::STANDARD.encode(payload);
        self.out
            .send(ClientMessage::Data(DataMessage {
                kind: DataKind::Reliable,
                topic: Some("chat".into()),
                payload,
                destination_identities: to,
            }))
            .unwrap();
    }

    /// Drop the signaling socket without a close frame (a lost connection); the peer
    /// connection stays.
    pub async fn drop_socket(&mut self) {
        for t in self.socket.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }

    /// The longest gap between two valid packets of `kind` from `sender` since the last
    /// [`Peer::reset_gap`] (or the first packet).
    pub fn max_gap(&self, kind: TrackKind, sender: u8) -> Duration {
        self.received.lock().unwrap().gaps.get(&(kind, sender)).map(|g| g.1).unwrap_or_default()
    }

    pub fn reset_gap(&self, kind: TrackKind, sender: u8) {
        if let Some(g) = self.received.lock().unwrap().gaps.get_mut(&(kind, sender)) {
            g.1 = Duration::ZERO;
        }
    }

    pub fn valid_from(&self, kind: TrackKind, sender: u8) -> u64 {
        self.received.lock().unwrap().valid.get(&(kind, sender)).copied().unwrap_or(0)
    }

    pub fn invalid(&self) -> u64 {
        self.received.lock().unwrap().invalid
    }

    pub fn first_invalid(&self) -> Option<Vec<u8>> {
        self.received.lock().unwrap().first_invalid.clone()
    }

    pub async fn close(self) {
        let _ = self.out.send(ClientMessage::Leave(Default::default()));
        let _ = self.pc.close().await;
    }
}

/// A minimal HTTP/1.0 request; returns (status, body).
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_with(addr, method, path, &[], "").await;
    (status, body)
}

/// A minimal HTTP/1.0 request with headers and a body; returns (status, response
/// headers as one lowercase string, body).
pub async fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Poll `f` until it holds or `within` passes.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}
