//! Published tracks, and the index from a publisher's track to the participants that
//! receive it: the hot path looks a packet's subscribers up instead of scanning the room.

use std::collections::HashMap;
use std::time::Instant;

use str0m::Rtc;
use str0m::format::CodecSpec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use switchyard_api::signal::{
    ErrorCode, MuteTrack, ParticipantEvent, PublishTrackRequest, ServerMessage, SimulcastLayer, TrackInfo, TrackKind,
    TrackMuted, TrackPublished, TrackRef, TrackSource, VideoQuality,
};

use super::allocation::{Layer, LayerRate, prior_bps};
use super::keyframe::KeyframeThrottle;
use super::speakers::LevelMeter;
use super::subscription::Sub;
use super::{Engine, Output, Pid, RoomEvent, err, probe};

/// Publisher track (publisher, its mid) → the participants whose subscription to it is
/// open, in the order they opened.
#[derive(Debug, Default)]
pub(super) struct TrackIndex {
    subscribers: HashMap<(Pid, Mid), Vec<Pid>>,
}

impl TrackIndex {
    /// Who receives `(publisher, mid)` now.
    pub(super) fn subscribers(&self, publisher: Pid, mid: Mid) -> &[Pid] {
        self.subscribers.get(&(publisher, mid)).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(super) fn subscribe(&mut self, publisher: Pid, mid: Mid, subscriber: Pid) {
        let list = self.subscribers.entry((publisher, mid)).or_default();
        if !list.contains(&subscriber) {
            list.push(subscriber);
        }
    }

    pub(super) fn unsubscribe(&mut self, publisher: Pid, mid: Mid, subscriber: Pid) {
        if let Some(list) = self.subscribers.get_mut(&(publisher, mid)) {
            list.retain(|&s| s != subscriber);
            if list.is_empty() {
                self.subscribers.remove(&(publisher, mid));
            }
        }
    }

    pub(super) fn remove_publisher(&mut self, publisher: Pid, mids: impl Iterator<Item = Mid>) {
        for mid in mids {
            self.subscribers.remove(&(publisher, mid));
        }
    }

    /// Tracks with at least one subscriber.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.subscribers.len()
    }
}

/// A track a participant publishes.
pub(super) struct Published {
    pub(super) sid: String,
    pub(super) cid: String,
    pub(super) mid: Mid,
    pub(super) kind: TrackKind,
    source: TrackSource,
    name: String,
    pub(super) muted: bool,
    width: Option<u32>,
    height: Option<u32>,
    layers: Vec<SimulcastLayer>,
    /// Payload type → codec, learned from the first packets.
    specs: Vec<(Pt, CodecSpec)>,
    /// The codec the publisher's answered media line prefers (its first negotiated
    /// payload type that is not RTX): known once its offer is applied, before packets.
    pub(super) negotiated: Option<CodecSpec>,
    /// Keyframe requests to the publisher, throttled.
    pub(super) keyframes: KeyframeThrottle,
    /// Loudness of an audio track (RFC 6464 levels), for active speakers.
    pub(super) level: LevelMeter,
    /// RTP packets and payload bytes received on this track.
    pub(super) packets: u64,
    pub(super) bytes: u64,
    /// Bytes and measured rate per layer (rid), for the allocator.
    pub(super) rates: Vec<(Option<Rid>, LayerRate)>,
    /// The layers last told active with `subscribed_layers` (`None`: never told; all on).
    pub(super) dynacast: Option<Vec<bool>>,
}

impl Published {
    pub(super) fn new(sid: String, mid: Mid, kind: TrackKind, announced: Option<PublishTrackRequest>) -> Self {
        let a = announced.unwrap_or(PublishTrackRequest {
            cid: mid.to_string(),
            name: String::new(),
            kind,
            source: TrackSource::Unknown,
            muted: false,
            width: None,
            height: None,
            layers: vec![],
        });
        Self {
            sid,
            cid: a.cid,
            mid,
            kind,
            source: a.source,
            name: a.name,
            muted: a.muted,
            width: a.width,
            height: a.height,
            layers: a.layers,
            specs: vec![],
            negotiated: None,
            keyframes: KeyframeThrottle::default(),
            level: LevelMeter::default(),
            packets: 0,
            bytes: 0,
            rates: Vec::with_capacity(3),
            dynacast: None,
        }
    }

    pub(super) fn layers(&self) -> &[SimulcastLayer] {
        &self.layers
    }

    pub(super) fn source(&self) -> TrackSource {
        self.source
    }

    /// Count a received packet's payload against its layer.
    pub(super) fn count(&mut self, rid: Option<Rid>, bytes: usize) {
        match self.rates.iter_mut().find(|(r, _)| *r == rid) {
            Some((_, rate)) => rate.bytes += bytes as u64,
            None => self.rates.push((rid, LayerRate { bytes: bytes as u64, bps: 0 })),
        }
    }

    /// The layers as the allocator sees them, lowest first, with their rids: the rate
    /// measured over the last period, or else the announced `maxBitrateBps`, or else a
    /// prior by quality. A track without announced layers is one layer.
    pub(super) fn allocation_layers(&self) -> (Vec<Layer>, Vec<Option<Rid>>) {
        let measured =
            |rid: Option<Rid>| self.rates.iter().find(|(r, _)| *r == rid).map(|(_, l)| l.bps).filter(|&b| b > 0);
        if self.layers.is_empty() {
            let bps = measured(None).unwrap_or(prior_bps(VideoQuality::Medium));
            let (width, height) = (self.width.unwrap_or(0), self.height.unwrap_or(0));
            return (vec![Layer { quality: VideoQuality::High, bitrate_bps: bps, width, height }], vec![None]);
        }
        let mut layers: Vec<(Layer, Option<Rid>)> = self
            .layers
            .iter()
            .map(|l| {
                let rid = Some(Rid::from(l.rid.as_str()));
                let bps = measured(rid).or(l.max_bitrate_bps.map(u64::from)).unwrap_or(prior_bps(l.quality));
                (Layer { quality: l.quality, bitrate_bps: bps, width: l.width, height: l.height }, rid)
            })
            .collect();
        layers.sort_by_key(|(l, _)| l.quality);
        layers.into_iter().unzip()
    }

    pub(super) fn media_kind(&self) -> MediaKind {
        if self.kind == TrackKind::Audio { MediaKind::Audio } else { MediaKind::Video }
    }

    pub(super) fn info(&self) -> TrackInfo {
        TrackInfo {
            sid: self.sid.clone(),
            name: self.name.clone(),
            kind: self.kind,
            source: self.source,
            muted: self.muted,
            mime_type: self.specs.first().map(|(_, s)| s).or(self.negotiated.as_ref()).map(mime),
            width: self.width,
            height: self.height,
            layers: self.layers.clone(),
        }
    }

    /// The rid carrying `quality`, if the track is simulcast.
    pub(super) fn rid_for(&self, quality: Option<VideoQuality>) -> Option<Rid> {
        let q = quality?;
        self.layers.iter().find(|l| l.quality == q).map(|l| Rid::from(l.rid.as_str()))
    }

    /// The layer a subscriber gets before it says what it wants (and before the
    /// allocator has measured anything): medium, or the top layer of a track with fewer.
    pub(super) fn default_rid(&self) -> Option<Rid> {
        let l = self.layers.iter().find(|l| l.quality == VideoQuality::Medium).or(self.layers.last())?;
        Some(Rid::from(l.rid.as_str()))
    }

    pub(super) fn spec_for(&mut self, pt: Pt, rtc: &Rtc) -> Option<CodecSpec> {
        if let Some(&(_, spec)) = self.specs.iter().find(|(p, _)| *p == pt) {
            return Some(spec);
        }
        let spec = rtc.codec_config().find(|p| p.pt() == pt)?.spec();
        self.specs.push((pt, spec));
        Some(spec)
    }
}

/// The codec `mid`'s remote side prefers among those negotiated (RTX skipped).
pub(super) fn negotiated_codec(rtc: &Rtc, mid: Mid) -> Option<CodecSpec> {
    let pts = rtc.media(mid)?.remote_pts();
    let params = rtc.codec_config();
    pts.iter().find_map(|&pt| {
        params.find(|p| p.pt() == pt).map(|p| p.spec()).filter(|s| s.codec != str0m::format::Codec::Rtx)
    })
}

fn mime(spec: &CodecSpec) -> String {
    use str0m::format::Codec;
    let (kind, name) = match spec.codec {
        Codec::Opus => ("audio", "opus"),
        Codec::Vp8 => ("video", "VP8"),
        Codec::Vp9 => ("video", "VP9"),
        Codec::H264 => ("video", "H264"),
        Codec::Av1 => ("video", "AV1"),
        _ => ("application", "unknown"),
    };
    format!("{kind}/{name}")
}

impl Engine {
    /// `publish_track`: metadata for the next media line of that kind.
    pub(super) fn announce(&mut self, pid: Pid, req: PublishTrackRequest) {
        let peer = self.peers.get_mut(&pid).expect("checked");
        if let Err(e) = peer.claims_authorize_publish(req.source) {
            return self.signal(pid, err(ErrorCode::PermissionDenied, e.to_string(), "publish_track"));
        }
        peer.announced.push_back(req);
    }

    /// A media line the client sends on appeared: a published track, offered to everyone
    /// auto-subscribed.
    pub(super) fn publication(&mut self, now: Instant, pid: Pid, mid: Mid, media: MediaKind) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        if peer.published.iter().any(|t| t.mid == mid) || peer.subs.iter().any(|s| s.out_mid() == Some(mid)) {
            return;
        }
        let kind = if media == MediaKind::Audio { TrackKind::Audio } else { TrackKind::Video };
        // The announcement whose `cid` is the line's `a=msid` track id; else the first of
        // the line's kind (a client that sends no msid).
        let msid = peer.rtc.media(mid).map(|m| m.track_id().to_owned()).unwrap_or_default();
        let announced = (peer.announced.iter().position(|r| r.kind == kind && r.cid == msid))
            .or_else(|| peer.announced.iter().position(|r| r.kind == kind))
            .and_then(|i| peer.announced.remove(i));
        let source = announced.as_ref().map(|r| r.source).unwrap_or(TrackSource::Unknown);
        if let Err(e) = peer.claims_authorize_publish(source) {
            // The media line stays, but nothing it carries is forwarded.
            return self.signal(pid, err(ErrorCode::PermissionDenied, e.to_string(), "offer"));
        }
        let Some(negotiated) = negotiated_codec(&peer.rtc, mid) else {
            // Nothing the client offered on this line is a codec the room allows: the
            // line is answered without a codec and is not published.
            let allowed = match self.rooms.get(&peer.room).map(|r| r.settings.allowed_codecs.as_slice()) {
                Some(list) if !list.is_empty() => list.to_vec(),
                _ => switchyard_api::room::Codec::ALL.to_vec(),
            };
            let allowed = allowed.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
            let message = format!("media line {mid} offers no codec this room allows (allowed: {allowed})");
            return self.signal(pid, err(ErrorCode::CodecNotAllowed, message, "offer"));
        };
        let sid = self.new_sid("TR");
        let peer = self.peers.get_mut(&pid).expect("checked");
        let mut track = Published::new(sid.clone(), mid, kind, announced);
        track.negotiated = Some(negotiated);
        let info = track.info();
        let default = track.default_rid();
        let cid = track.cid.clone();
        peer.published.push(track);
        let participant = peer.info();
        let publisher_sid = peer.sid.clone();
        self.signal(pid, ServerMessage::TrackPublished(TrackPublished { cid, track: info }));
        if kind == TrackKind::Audio {
            self.start_speaker_ticks(now, pid);
        }
        if let Some((room, room_sid, participant)) = self.who(pid).filter(|_| self.announces(pid)) {
            let track_sid = sid.clone();
            self.out.push_back(Output::Event(RoomEvent::TrackPublished { room, room_sid, participant, track_sid }));
        }
        for m in self.room_members(pid) {
            if m == pid {
                continue;
            }
            self.signal(m, ServerMessage::ParticipantUpdated(ParticipantEvent { participant: participant.clone() }));
            if let Some(p) = self.peers.get_mut(&m)
                && p.auto_subscribe
                && p.grants.can_subscribe
            {
                let mut sub = Sub::new(pid, publisher_sid.clone(), mid, media, sid.clone(), &mut self.rng);
                sub.layers.set_target(default);
                p.subs.push(sub);
                self.mark_renegotiate(m);
            }
        }
    }

    pub(super) fn unpublish(&mut self, pid: Pid, track_sid: &str) {
        let peer = self.peers.get_mut(&pid).expect("checked");
        let Some(i) = peer.published.iter().position(|t| t.sid == track_sid) else {
            return self.signal(pid, err(ErrorCode::TrackNotFound, "no such track of yours", "unpublish_track"));
        };
        let track = peer.published.remove(i);
        let info = peer.info();
        self.index.remove_publisher(pid, std::iter::once(track.mid));
        for m in self.room_members(pid) {
            if let Some(p) = self.peers.get_mut(&m) {
                p.drop_track(pid, track.mid);
            }
            self.mark_renegotiate(m);
        }
        if let Some((room, room_sid, participant)) = self.who(pid).filter(|_| self.announces(pid)) {
            let track_sid = track.sid.clone();
            self.out.push_back(Output::Event(RoomEvent::TrackUnpublished { room, room_sid, participant, track_sid }));
        }
        self.signal(pid, ServerMessage::TrackUnpublished(TrackRef { track_sid: track.sid }));
        self.broadcast(pid, ServerMessage::ParticipantUpdated(ParticipantEvent { participant: info }));
    }

    pub(super) fn mute(&mut self, pid: Pid, m: MuteTrack) {
        let peer = self.peers.get_mut(&pid).expect("checked");
        let Some(track) = peer.published.iter_mut().find(|t| t.sid == m.track_sid) else {
            return self.signal(pid, err(ErrorCode::TrackNotFound, "no such track of yours", "mute_track"));
        };
        track.muted = m.muted;
        let (kind, mid) = (track.kind, track.mid);
        let event = TrackMuted { participant_sid: peer.sid.clone(), track_sid: m.track_sid.clone(), muted: m.muted };
        self.broadcast(pid, ServerMessage::TrackMuted(event));
        // A muted camera sends nothing: its subscribers hear `stream_state` paused
        // (`publisher_muted`) and their bandwidth goes to the other tracks.
        if kind == TrackKind::Video {
            for sub in self.index.subscribers(pid, mid).to_vec() {
                self.allocate_for(sub);
            }
        }
    }

    /// Ask a publisher's track for a keyframe, unless the throttle holds it back (then it
    /// is sent when the throttle window ends).
    pub(super) fn request_keyframe(
        &mut self,
        now: Instant,
        publisher: Pid,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) {
        let Some(p) = self.peers.get_mut(&publisher) else { return };
        let Some(track) = p.published.iter_mut().find(|t| t.mid == mid) else { return };
        if track.kind != TrackKind::Video || !track.keyframes.ask(now, rid, kind) {
            return;
        }
        self.stats.keyframe_requests += 1;
        {
            let _str0m = probe::foreign();
            let mut api = p.rtc.direct_api();
            let mut ask = |rid: Option<Rid>| {
                if let Some(rx) = api.stream_rx_by_mid(mid, rid) {
                    rx.request_keyframe(kind);
                }
            };
            match rid {
                Some(_) => ask(rid),
                // No rid: every layer and the stream without one, so a subscriber whose layer
                // is not known yet gets its keyframe.
                None => {
                    for layer in &track.layers {
                        ask(Some(Rid::from(layer.rid.as_str())));
                    }
                    ask(None);
                }
            }
        }
        self.drain(publisher);
    }

    /// Send the keyframe requests the throttle held back, once their window ends.
    pub(super) fn keyframe_timeouts(&mut self, now: Instant) {
        // The list is reused: this runs on every timeout.
        let mut due = std::mem::take(&mut self.due_keyframes);
        due.clear();
        for p in self.peers.values_mut() {
            for t in &mut p.published {
                while let Some((rid, k)) = t.keyframes.take_due(now) {
                    due.push((p.pid, t.mid, rid, k));
                }
            }
        }
        for &(pid, mid, rid, kind) in &due {
            // Sent only if someone still waits: a subscriber that started or switched
            // meanwhile must not cause a keyframe on a layer nobody needs.
            let waits = self.index.subscribers(pid, mid).iter().any(|m| {
                self.peers.get(m).is_some_and(|p| {
                    p.subs.iter().any(|s| s.publisher == pid && s.pub_mid == mid && s.layers.waits_for(rid))
                })
            });
            if waits {
                self.request_keyframe(now, pid, mid, rid, kind);
            }
        }
        self.due_keyframes = due;
    }
}
