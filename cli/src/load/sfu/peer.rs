//! One participant: a signaling WebSocket, a `str0m::Rtc` in RTP mode and one UDP socket,
//! driven by one task. Publishers send [`media`](super::media) packets straight into
//! str0m's send streams (no packetizer, no encoder); every participant counts the RTP
//! packets str0m hands it (decrypted and authenticated), per SSRC.
//!
//! The signaling follows the browser SDK: `join`, `publish_track` for each track, the
//! client's offer (its tracks and a data channel), then answers to every server offer.
//! A server offer that arrives while the client's own offer waits for its answer is
//! ignored (glare: the server withdraws it and offers again).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use switchyard_api::signal::{
    ClientMessage, JoinRequest, ParticipantInfo, Ping, PublishTrackRequest, ServerMessage, SessionDescription,
    SimulcastLayer as ApiLayer, TrackKind, TrackSource, UpdateSubscription, VideoQuality,
};
use switchyard_udp::RecvBatch;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::media::{self, VideoSpec};
use super::stats::{Live, Outcome, RxStream};
use crate::load::pace::Pacer;

/// How long a join may wait for `joined`, and media for ICE and DTLS.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Datagrams drained per wake-up before other work gets a turn.
const RECV_BATCH: usize = 64;
/// Packets of each received stream that str0m decrypts and authenticates before the rest
/// are counted from their RTP header alone (SRTP leaves the header in the clear).
const VERIFIED_PACKETS: u64 = 50;

/// What one participant does.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The full `/rtc` URL with the access token.
    pub(crate) url: String,
    pub(crate) publish: bool,
    pub(crate) audio_bitrate: Option<u64>,
    pub(crate) video: Option<Arc<VideoSpec>>,
    /// The simulcast layer to ask for.
    pub(crate) quality: VideoQuality,
    pub(crate) expected_tracks: usize,
    /// Hand every received packet to str0m (decrypt all), not only each stream's first.
    pub(crate) decrypt_all: bool,
    pub(crate) local_ip: IpAddr,
    /// Set once any publisher of the room sends media: joins after that measure
    /// join → first media.
    pub(crate) room_flowing: Arc<AtomicBool>,
    pub(crate) live: Arc<Live>,
}

/// A track this participant sends.
#[derive(Debug)]
struct Sending {
    mid: Mid,
    kind: MediaKind,
    layers: Vec<LayerState>,
    pt: Option<Pt>,
}

#[derive(Debug)]
struct LayerState {
    rid: Option<Rid>,
    layer: Option<media::Layer>,
    pacer: Option<Pacer>,
    seq: u64,
    frame: u64,
}

/// Why a participant stopped before the end.
#[derive(Debug)]
struct Failure {
    code: String,
    message: String,
}

fn fail(code: &str, message: impl Into<String>) -> Failure {
    Failure { code: code.into(), message: message.into() }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Run one participant until `stop` turns true; report how it went.
pub(crate) async fn run(plan: Plan, mut stop: watch::Receiver<bool>) -> Outcome {
    let mut p = Participant::new(&plan);
    let result = tokio::select! {
        r = p.session(&plan) => r,
        _ = stop.wait_for(|s| *s) => Ok(()),
    };
    // A participant that ended early says so; one still running leaves politely.
    if let Err(f) = result {
        p.outcome.errors.push((f.code, f.message));
    } else if let Some(ws) = p.ws.as_mut() {
        let leave = ClientMessage::Leave(Default::default());
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(text(&leave))).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    plan.live.up.store(false, Relaxed);
    let mut outcome = p.outcome;
    outcome.received_tracks = p.received_mids.len();
    outcome.streams = p.rx.into_values().map(|r| r.stream).collect();
    outcome
}

fn text(m: &ClientMessage) -> Message {
    Message::text(serde_json::to_string(m).expect("messages serialize"))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A received stream: its media line, counters, and the SRTP overhead per packet (learnt
/// from the packets str0m decrypted) once known.
#[derive(Debug)]
struct Rx {
    mid: Mid,
    stream: RxStream,
    overhead: Option<usize>,
}

/// SSRC, sequence number, timestamp and header length of an RTP (not RTCP) datagram.
fn rtp_header(d: &[u8]) -> Option<(Ssrc, u16, u32, usize)> {
    if d.len() < 12 || d[0] >> 6 != 2 || (64..96).contains(&(d[1] & 0x7f)) {
        return None;
    }
    let mut len = 12 + 4 * usize::from(d[0] & 0x0f);
    if d[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([*d.get(len + 2)?, *d.get(len + 3)?]);
        len += 4 + 4 * usize::from(words);
    }
    if len > d.len() {
        return None;
    }
    let seq = u16::from_be_bytes([d[2], d[3]]);
    let ts = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    Some((ssrc.into(), seq, ts, len))
}

struct Participant {
    outcome: Outcome,
    ws: Option<Ws>,
    rx: HashMap<Ssrc, Rx>,
    /// (SSRC, bytes after the RTP header) of the datagram str0m is handling now.
    in_str0m: Option<(Ssrc, usize)>,
    received_mids: HashSet<Mid>,
    sending: Vec<Sending>,
    pending: Option<SdpPendingOffer>,
    /// Simulcast video tracks of others (sid → asked for the quality yet).
    simulcast_tracks: HashMap<String, bool>,
    media_started: bool,
    started: Instant,
    measure_first_media: bool,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant").field("outcome", &self.outcome).finish_non_exhaustive()
    }
}

impl Participant {
    fn new(plan: &Plan) -> Self {
        Participant {
            outcome: Outcome { expected_tracks: plan.expected_tracks, ..Outcome::default() },
            ws: None,
            rx: HashMap::new(),
            in_str0m: None,
            received_mids: HashSet::new(),
            sending: vec![],
            pending: None,
            simulcast_tracks: HashMap::new(),
            media_started: false,
            started: Instant::now(),
            measure_first_media: plan.room_flowing.load(Relaxed),
        }
    }

    async fn session(&mut self, plan: &Plan) -> Result<(), Failure> {
        self.started = Instant::now();
        let ws = match tokio::time::timeout(SIGNAL_TIMEOUT, tokio_tungstenite::connect_async(&plan.url)).await {
            Err(_) => return Err(fail("connect_timeout", "no WebSocket upgrade within 10 s")),
            Ok(Ok((ws, _))) => ws,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let body = resp.body().as_deref().unwrap_or_default();
                let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                let code = v["code"].as_str().map_or_else(|| format!("http_{}", resp.status().as_u16()), str::to_owned);
                let message = v["message"].as_str().unwrap_or("").to_owned();
                return Err(fail(&code, format!("WebSocket upgrade refused: {} {message}", resp.status())));
            }
            Ok(Err(e)) => return Err(fail("connect", format!("WebSocket connect failed: {e}"))),
        };
        let ws = self.ws.insert(ws);
        let join = ClientMessage::Join(JoinRequest {
            sdk: Some(switchyard_api::signal::SdkInfo {
                name: "load".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
            ..JoinRequest::default()
        });
        ws.send(text(&join)).await.map_err(|e| fail("signaling", e.to_string()))?;
        let joined = match tokio::time::timeout(SIGNAL_TIMEOUT, next_message(ws)).await {
            Err(_) => return Err(fail("join_timeout", "no answer to join within 10 s")),
            Ok(Err(f)) => return Err(f),
            Ok(Ok(ServerMessage::Joined(j))) => j,
            Ok(Ok(ServerMessage::Error(e))) => return Err(fail(e.code.as_str(), e.message)),
            Ok(Ok(other)) => return Err(fail("protocol", format!("expected joined, got {other:?}"))),
        };
        self.outcome.joined = true;
        let ping_every = Duration::from_secs(u64::from(joined.ping_interval_seconds.max(1)));
        for p in &joined.other_participants {
            learn(&mut self.simulcast_tracks, p);
        }

        let socket = UdpSocket::bind(SocketAddr::new(plan.local_ip, 0))
            .await
            .map_err(|e| fail("socket", format!("binding a UDP socket on {}: {e}", plan.local_ip)))?;
        let local = socket.local_addr().map_err(|e| fail("socket", e.to_string()))?;
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| fail("socket", e.to_string()))?;
        rtc.add_local_candidate(candidate);

        let mut offer_changes = rtc.sdp_api();
        let mut announce = vec![];
        if plan.publish {
            if plan.audio_bitrate.is_some() {
                let mid = offer_changes.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                announce.push(publish_request("audio", TrackKind::Audio, None));
                let layer = LayerState { rid: None, layer: None, pacer: None, seq: 0, frame: 0 };
                self.sending.push(Sending { mid, kind: MediaKind::Audio, layers: vec![layer], pt: None });
            }
            if let Some(video) = &plan.video {
                let simulcast = video.layers.len() > 1;
                let sim = simulcast.then(|| {
                    let mut s = Simulcast::new();
                    for l in &video.layers {
                        s.add_send_layer(SimulcastLayer::new(l.rid.expect("simulcast layers have rids")));
                    }
                    s
                });
                let mid = offer_changes.add_media(MediaKind::Video, Direction::SendOnly, None, None, sim);
                announce.push(publish_request("video", TrackKind::Video, Some(video)));
                let layers = video
                    .layers
                    .iter()
                    .map(|l| LayerState {
                        rid: l.rid.map(Rid::from),
                        layer: Some(l.clone()),
                        pacer: None,
                        seq: 0,
                        frame: 0,
                    })
                    .collect();
                self.sending.push(Sending { mid, kind: MediaKind::Video, layers, pt: None });
            }
        }
        offer_changes.add_channel("reliable".into());
        let (offer, pending) = offer_changes.apply().expect("a data channel is a change");
        self.pending = Some(pending);
        for m in &announce {
            ws.send(text(m)).await.map_err(|e| fail("signaling", e.to_string()))?;
        }
        let offer = ClientMessage::Offer(SessionDescription { sdp: offer.to_sdp_string(), id: 1 });
        ws.send(text(&offer)).await.map_err(|e| fail("signaling", e.to_string()))?;

        let mut batch = RecvBatch::with_max_datagram(0, 2048);
        let fd = socket.as_raw_fd();
        let mut next_ping = Instant::now() + ping_every;
        let connect_by = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let rtc_deadline = self.drain(&mut rtc, &socket, plan)?;
            let now = Instant::now();
            if !self.outcome.connected && now > connect_by {
                return Err(fail("ice_timeout", "ICE and DTLS did not connect within 10 s"));
            }
            let mut deadline = rtc_deadline.min(next_ping);
            if !self.outcome.connected {
                deadline = deadline.min(connect_by);
            }
            if let Some(t) = self.next_send() {
                deadline = deadline.min(t);
            }
            let ws = self.ws.as_mut().expect("connected");
            tokio::select! {
                r = socket.readable() => {
                    r.map_err(|e| fail("socket", e.to_string()))?;
                    // Up to RECV_BATCH datagrams, BATCH per recvmmsg; a short batch means
                    // the socket is drained.
                    let mut taken = 0;
                    while taken < RECV_BATCH {
                        let mut got = 0;
                        let r = socket.try_io(Interest::READABLE, || {
                            got = batch.recv(fd)?;
                            if got < switchyard_udp::BATCH { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(()) }
                        });
                        for i in 0..got {
                            let Some((slot, len, from)) = batch.get(i) else { continue };
                            // str0m's run-loop rule: every input is followed by a full drain
                            // (in RTP mode it holds one received packet until the next poll).
                            if self.receive(&mut rtc, local, from, &slot[..len], plan) {
                                self.drain(&mut rtc, &socket, plan)?;
                            }
                        }
                        taken += got;
                        match r {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(fail("socket", e.to_string())),
                        }
                    }
                }
                m = next_message(ws) => {
                    let m = m?;
                    self.signal(&mut rtc, m, plan).await?;
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            if now >= rtc_deadline && rtc.handle_input(Input::Timeout(now)).is_err() {
                return Err(fail("rtc", "the WebRTC session failed"));
            }
            if now >= next_ping {
                next_ping = now + ping_every;
                let ping = ClientMessage::Ping(Ping { timestamp_ms: unix_ms(), rtt_ms: None });
                let ws = self.ws.as_mut().expect("connected");
                ws.send(text(&ping)).await.map_err(|e| fail("signaling", e.to_string()))?;
            }
            self.send_media(&mut rtc, now, plan);
        }
    }

    /// Count or hand over one datagram; true when str0m got it (and must be drained).
    fn receive(&mut self, rtc: &mut Rtc, local: SocketAddr, from: SocketAddr, data: &[u8], plan: &Plan) -> bool {
        let now = Instant::now();
        self.in_str0m = None;
        if let Some((ssrc, seq, ts, header)) = rtp_header(data) {
            if let Some(rx) = self.rx.get_mut(&ssrc)
                && let Some(overhead) = rx.overhead
                && !plan.decrypt_all
                && rx.stream.packets >= VERIFIED_PACKETS
            {
                let len = (data.len() - header).saturating_sub(overhead);
                let seq = rx.stream.extend(seq);
                let grew = rx.stream.packet(now, seq, ts, len);
                plan.live.received_packets.fetch_add(1, Relaxed);
                plan.live.received_bytes.fetch_add(len as u64, Relaxed);
                plan.live.expected_packets.fetch_add(grew, Relaxed);
                return false;
            }
            self.in_str0m = Some((ssrc, data.len() - header));
        }
        let Ok(contents) = data.try_into() else { return false };
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source: from, destination: local, contents });
        rtc.accepts(&input) && rtc.handle_input(input).is_ok()
    }

    /// Poll str0m until it wants time to pass; send what it transmits.
    fn drain(&mut self, rtc: &mut Rtc, socket: &UdpSocket, plan: &Plan) -> Result<Instant, Failure> {
        loop {
            if !rtc.is_alive() {
                return Err(fail("disconnected", "the WebRTC session ended (ICE or DTLS timed out)"));
            }
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => {
                    if socket.try_send_to(&t.contents, t.destination).is_err() {
                        plan.live.send_failures.fetch_add(1, Relaxed);
                    }
                }
                Ok(Output::Event(e)) => self.event(rtc, e, plan),
                Err(e) => return Err(fail("rtc", format!("WebRTC error: {e}"))),
            }
        }
    }

    fn event(&mut self, rtc: &mut Rtc, e: Event, plan: &Plan) {
        match e {
            Event::Connected => {
                self.outcome.connected = true;
                plan.live.up.store(true, Relaxed);
            }
            Event::RtpPacket(pkt) => {
                let ssrc = pkt.header.ssrc;
                let len = pkt.payload.len();
                let entry = match self.rx.get_mut(&ssrc) {
                    Some(e) => e,
                    None => {
                        let mid = rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                        let Some(mid) = mid else { return };
                        let clock = rtc
                            .codec_config()
                            .find(|p| p.pt() == pkt.header.payload_type)
                            .map_or(90_000, |p| p.spec().clock_rate.get());
                        self.rx.entry(ssrc).or_insert(Rx { mid, stream: RxStream::new(clock), overhead: None })
                    }
                };
                if let Some((s, after_header)) = self.in_str0m.take()
                    && s == ssrc
                {
                    entry.overhead = Some(after_header.saturating_sub(len));
                }
                let grew = entry.stream.packet(pkt.timestamp, *pkt.seq_no, pkt.header.timestamp, len);
                if self.received_mids.insert(entry.mid) && self.received_mids.len() == 1 && self.measure_first_media {
                    self.outcome.first_media = Some(self.started.elapsed());
                }
                plan.live.received_packets.fetch_add(1, Relaxed);
                plan.live.received_bytes.fetch_add(len as u64, Relaxed);
                plan.live.expected_packets.fetch_add(grew, Relaxed);
            }
            _ => {}
        }
    }

    async fn signal(&mut self, rtc: &mut Rtc, m: ServerMessage, plan: &Plan) -> Result<(), Failure> {
        let ws = self.ws.as_mut().expect("connected");
        match m {
            ServerMessage::Answer(a) => {
                let Some(pending) = self.pending.take() else { return Ok(()) };
                let answer =
                    SdpAnswer::from_sdp_string(&a.sdp).map_err(|e| fail("negotiation", format!("bad answer: {e}")))?;
                rtc.sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| fail("negotiation", format!("answer refused: {e}")))?;
                for s in &mut self.sending {
                    let codec = if s.kind == MediaKind::Audio { Codec::Opus } else { Codec::Vp8 };
                    let accepted = rtc.media(s.mid).map(|m| m.remote_pts().to_vec()).unwrap_or_default();
                    s.pt = rtc
                        .codec_config()
                        .find(|p| p.spec().codec == codec && accepted.contains(&p.pt()))
                        .map(|p| p.pt());
                }
            }
            ServerMessage::Offer(o) if self.pending.is_some() => {
                // Glare: the server yields and offers again after our answer.
                let _ = o;
            }
            ServerMessage::Offer(o) => {
                let offer =
                    SdpOffer::from_sdp_string(&o.sdp).map_err(|e| fail("negotiation", format!("bad offer: {e}")))?;
                let answer = rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| fail("negotiation", format!("offer refused: {e}")))?;
                let msg = ClientMessage::Answer(SessionDescription { sdp: answer.to_sdp_string(), id: o.id });
                ws.send(text(&msg)).await.map_err(|e| fail("signaling", e.to_string()))?;
            }
            ServerMessage::Trickle(t) => {
                if let Some(c) = t.candidate.and_then(|c| Candidate::from_sdp_string(&c.candidate).ok()) {
                    rtc.add_remote_candidate(c);
                }
            }
            ServerMessage::ParticipantJoined(e) | ServerMessage::ParticipantUpdated(e) => {
                learn(&mut self.simulcast_tracks, &e.participant)
            }
            ServerMessage::SubscriptionUpdated(s) if s.subscribed => {
                let asked = self.simulcast_tracks.get_mut(&s.track_sid);
                if let Some(asked @ false) = asked {
                    *asked = true;
                    let msg = ClientMessage::UpdateSubscription(UpdateSubscription {
                        track_sids: vec![s.track_sid],
                        subscribe: true,
                        quality: Some(plan.quality),
                    });
                    ws.send(text(&msg)).await.map_err(|e| fail("signaling", e.to_string()))?;
                }
            }
            ServerMessage::Ping(p) => {
                ws.send(text(&ClientMessage::Pong(p))).await.map_err(|e| fail("signaling", e.to_string()))?;
            }
            ServerMessage::Error(e) if e.code.is_fatal() => return Err(fail(e.code.as_str(), e.message)),
            // The session goes on; the error is counted.
            ServerMessage::Error(e) => self.outcome.errors.push((e.code.as_str().into(), e.message)),
            ServerMessage::Leave(l) => {
                let reason = serde_json::to_value(l.reason).ok().and_then(|v| v.as_str().map(str::to_owned));
                return Err(fail(&format!("leave_{}", reason.unwrap_or_default()), l.message));
            }
            _ => {}
        }
        Ok(())
    }

    /// When the next media packet is due.
    fn next_send(&self) -> Option<Instant> {
        self.sending.iter().flat_map(|s| &s.layers).filter_map(|l| l.pacer.as_ref().map(Pacer::next)).min()
    }

    fn send_media(&mut self, rtc: &mut Rtc, now: Instant, plan: &Plan) {
        if self.sending.is_empty() || !self.outcome.connected || self.pending.is_some() {
            return;
        }
        if !self.media_started {
            self.media_started = true;
            plan.room_flowing.store(true, Relaxed);
            for s in &mut self.sending {
                let every = if s.kind == MediaKind::Audio {
                    media::AUDIO_PTIME
                } else {
                    plan.video.as_ref().expect("video is sent").frame_interval()
                };
                for l in &mut s.layers {
                    l.pacer = Some(Pacer::new(now, every));
                }
            }
        }
        let (mut packets, mut bytes) = (0u64, 0u64);
        for s in &mut self.sending {
            let Some(pt) = s.pt else { continue };
            for l in &mut s.layers {
                let due = l.pacer.as_mut().map_or(0, |p| p.due(now));
                let mut api = rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(s.mid, l.rid) else { continue };
                for _ in 0..due {
                    match (&l.layer, plan.video.as_ref()) {
                        (Some(layer), Some(spec)) => {
                            let (key, size) = spec.frame(layer, l.frame);
                            let ts = (l.frame * 3000) as u32;
                            let picture_id = (l.frame & 0x7fff) as u16;
                            let sizes: Vec<usize> = media::split(size).collect();
                            let last = sizes.len() - 1;
                            for (i, len) in sizes.into_iter().enumerate() {
                                let payload = media::vp8_payload(picture_id, key, i, len, layer.width, layer.height);
                                tx.write_rtp(
                                    RtpWrite::new(pt, l.seq.into(), ts, now, payload).marker(i == last).nackable(true),
                                );
                                l.seq += 1;
                                packets += 1;
                                bytes += len as u64;
                            }
                        }
                        _ => {
                            let len = media::opus_size(plan.audio_bitrate.unwrap_or(32_000));
                            let ts = (l.frame * 960) as u32;
                            tx.write_rtp(RtpWrite::new(pt, l.seq.into(), ts, now, media::opus_payload(l.frame, len)));
                            l.seq += 1;
                            packets += 1;
                            bytes += len as u64;
                        }
                    }
                    l.frame += 1;
                }
            }
        }
        plan.live.sent_packets.fetch_add(packets, Relaxed);
        plan.live.sent_bytes.fetch_add(bytes, Relaxed);
    }
}

/// Remember the simulcast video tracks of `p`, to ask for a quality.
fn learn(simulcast_tracks: &mut HashMap<String, bool>, p: &ParticipantInfo) {
    for t in &p.tracks {
        if t.kind == TrackKind::Video && !t.layers.is_empty() {
            simulcast_tracks.entry(t.sid.clone()).or_insert(false);
        }
    }
}

fn publish_request(cid: &str, kind: TrackKind, video: Option<&Arc<VideoSpec>>) -> ClientMessage {
    let top = video.and_then(|v| v.layers.last());
    let layers = match video {
        Some(v) if v.layers.len() > 1 => v
            .layers
            .iter()
            .zip([VideoQuality::Low, VideoQuality::Medium, VideoQuality::High])
            .map(|(l, quality)| ApiLayer {
                rid: l.rid.unwrap_or_default().into(),
                quality,
                width: l.width,
                height: l.height,
                max_bitrate_bps: Some(l.bitrate as u32),
            })
            .collect(),
        _ => vec![],
    };
    ClientMessage::PublishTrack(PublishTrackRequest {
        cid: cid.into(),
        name: cid.into(),
        kind,
        source: if kind == TrackKind::Audio { TrackSource::Microphone } else { TrackSource::Camera },
        muted: false,
        width: top.map(|l| l.width),
        height: top.map(|l| l.height),
        layers,
    })
}

/// The next server message; pings from the WebSocket layer are answered by tungstenite.
async fn next_message(ws: &mut Ws) -> Result<ServerMessage, Failure> {
    loop {
        match ws.next().await {
            None => return Err(fail("signaling_closed", "the server closed the signaling socket")),
            Some(Err(e)) => return Err(fail("signaling_closed", format!("signaling socket failed: {e}"))),
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t)
                    .map_err(|e| fail("protocol", format!("unreadable server message: {e}")));
            }
            Some(Ok(Message::Close(c))) => {
                let why = c.map(|c| format!("{} {}", u16::from(c.code), c.reason)).unwrap_or_default();
                return Err(fail("signaling_closed", format!("the server closed the signaling socket {why}")));
            }
            Some(Ok(_)) => {}
        }
    }
}
