//! One participant: its `Rtc`, what it publishes, what it receives, and its SDP state.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::Rtc;
use str0m::change::{SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::CodecSpec;
use str0m::media::Pt;
use str0m::media::{Direction, MediaKind, Mid, Rid};
use str0m::net::Protocol;
use str0m::rtp::Ssrc;
use switchyard_api::signal::{
    ParticipantInfo, ParticipantPermission, ParticipantState, PublishTrackRequest, SimulcastLayer, TrackInfo,
    TrackKind, TrackSource, VideoQuality,
};
use switchyard_api::token::Grants;

use super::rewrite::Rewriter;
use super::{JoinArgs, Pid};

pub(super) struct Peer {
    pub(super) pid: Pid,
    pub(super) sid: String,
    pub(super) identity: String,
    pub(super) name: Option<String>,
    pub(super) metadata: Option<String>,
    pub(super) room: String,
    pub(super) grants: Grants,
    pub(super) joined_at_ms: u64,
    pub(super) ufrag: String,
    pub(super) rtc: Rtc,
    pub(super) state: ParticipantState,
    pub(super) auto_subscribe: bool,
    pub(super) published: Vec<Published>,
    pub(super) announced: VecDeque<PublishTrackRequest>,
    pub(super) subs: Vec<Sub>,
    /// Our offer awaiting the client's answer, with its id.
    pub(super) pending: Option<(u32, SdpPendingOffer)>,
    offer_seq: u32,
    /// The client's first offer has been applied: only then may the server offer.
    pub(super) remote_described: bool,
    /// SSRC → (mid, rid) of incoming streams, filled on first sight.
    ssrcs: Vec<(Ssrc, Mid, Option<Rid>)>,
    pub(super) channels: Vec<(ChannelId, String)>,
    pub(super) routes: Vec<(Protocol, SocketAddr)>,
    pub(super) next_timeout: Option<Instant>,
    pub(super) dirty: bool,
    /// Answers refused in a row.
    pub(super) failed_answers: u32,
}

impl Peer {
    pub(super) fn new(pid: Pid, sid: String, args: &JoinArgs, ufrag: String, rtc: Rtc, now_ms: u64) -> Self {
        Self {
            pid,
            sid,
            identity: args.claims.sub.clone(),
            name: args.claims.name.clone(),
            metadata: args.claims.metadata.clone(),
            room: args.room.clone(),
            grants: args.claims.grants.clone(),
            joined_at_ms: now_ms,
            ufrag,
            rtc,
            state: ParticipantState::Joining,
            auto_subscribe: args.auto_subscribe,
            published: vec![],
            announced: VecDeque::new(),
            subs: vec![],
            pending: None,
            offer_seq: 0,
            remote_described: false,
            ssrcs: vec![],
            channels: vec![],
            routes: vec![],
            next_timeout: None,
            dirty: false,
            failed_answers: 0,
        }
    }

    pub(super) fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            state: if self.published.is_empty() { self.state } else { ParticipantState::Active },
            tracks: self.published.iter().map(Published::info).collect(),
            permission: ParticipantPermission {
                can_publish: self.grants.can_publish,
                can_subscribe: self.grants.can_subscribe,
                can_publish_data: self.grants.can_publish_data,
                hidden: self.grants.hidden,
            },
            joined_at_ms: self.joined_at_ms,
        }
    }

    fn claims(&self) -> switchyard_api::token::Claims {
        let mut c = switchyard_api::token::Claims::new("", self.identity.clone(), 0, 0);
        c.grants = self.grants.clone();
        c
    }

    pub(super) fn claims_authorize_publish(&self, source: TrackSource) -> switchyard_api::Result<()> {
        self.claims().authorize_publish(source)
    }

    pub(super) fn claims_authorize_data(&self) -> switchyard_api::Result<()> {
        self.claims().authorize_publish_data()
    }

    /// The (mid, rid) of an incoming SSRC.
    pub(super) fn stream_of(&mut self, ssrc: Ssrc) -> Option<(Mid, Option<Rid>)> {
        if let Some(&(_, mid, rid)) = self.ssrcs.iter().find(|(s, _, _)| *s == ssrc) {
            return Some((mid, rid));
        }
        let rx = self.rtc.direct_api().stream_rx(&ssrc).map(|rx| (rx.mid(), rx.rid()))?;
        self.ssrcs.push((ssrc, rx.0, rx.1));
        Some(rx)
    }

    /// Stop receiving every track of `publisher`.
    pub(super) fn drop_publisher(&mut self, publisher: Pid) {
        let mids: Vec<Mid> = self.subs.iter().filter(|s| s.publisher == publisher).map(|s| s.pub_mid).collect();
        for mid in mids {
            self.drop_track(publisher, mid);
        }
    }

    /// Stop receiving one track.
    pub(super) fn drop_track(&mut self, publisher: Pid, pub_mid: Mid) {
        self.subs.retain_mut(|s| {
            if s.publisher != publisher || s.pub_mid != pub_mid {
                return true;
            }
            match s.state {
                SubState::ToOpen => false,
                SubState::Open(m) => {
                    s.state = SubState::ToStop(m);
                    true
                }
                SubState::Negotiating(_) => {
                    s.orphaned = true;
                    true
                }
                SubState::ToStop(_) | SubState::Stopping(_) => true,
            }
        });
    }

    /// Build an offer for pending subscription changes, if there are any and none is in
    /// flight.
    pub(super) fn create_offer(&mut self) -> Option<(SdpOffer, u32)> {
        if self.pending.is_some() || !self.remote_described {
            return None;
        }
        if !self.subs.iter().any(|s| matches!(s.state, SubState::ToOpen | SubState::ToStop(_))) {
            return None;
        }
        let mut api = self.rtc.sdp_api();
        for sub in &mut self.subs {
            match sub.state {
                SubState::ToOpen => {
                    let mid = api.add_media(
                        sub.kind,
                        Direction::SendOnly,
                        Some(sub.publisher_sid.clone()),
                        Some(sub.track_sid.clone()),
                        None,
                    );
                    sub.state = SubState::Negotiating(mid);
                }
                SubState::ToStop(mid) => {
                    api.stop_media(mid);
                    sub.state = SubState::Stopping(mid);
                }
                _ => {}
            }
        }
        let (offer, pending) = api.apply()?;
        self.offer_seq += 1;
        self.pending = Some((self.offer_seq, pending));
        Some((offer, self.offer_seq))
    }

    /// Our offer was withdrawn (glare, or the answer was bad): redo its changes later.
    pub(super) fn rollback_pending(&mut self) {
        for sub in &mut self.subs {
            match sub.state {
                SubState::Negotiating(_) => sub.state = SubState::ToOpen,
                SubState::Stopping(m) => sub.state = SubState::ToStop(m),
                _ => {}
            }
        }
        self.subs.retain(|s| !(s.orphaned && s.state == SubState::ToOpen));
    }

    /// Our offer was answered: returns the subscriptions that just opened.
    pub(super) fn commit_pending(&mut self) -> Vec<(Pid, Mid, String)> {
        let mut opened = vec![];
        for sub in &mut self.subs {
            match sub.state {
                SubState::Negotiating(m) if sub.orphaned => sub.state = SubState::ToStop(m),
                SubState::Negotiating(m) => {
                    sub.state = SubState::Open(m);
                    sub.waiting_keyframe = sub.kind == MediaKind::Video;
                    sub.rewriter.reset_source();
                    opened.push((sub.publisher, sub.pub_mid, sub.track_sid.clone()));
                }
                _ => {}
            }
        }
        self.subs.retain(|s| !matches!(s.state, SubState::Stopping(_)));
        opened
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
    pub(super) last_keyframe_request: Option<Instant>,
    /// RTP packets and payload bytes received on this track.
    pub(super) packets: u64,
    pub(super) bytes: u64,
    /// Keyframes asked of the publisher (PLI/FIR sent).
    pub(super) keyframe_requests: u64,
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
            last_keyframe_request: None,
            packets: 0,
            bytes: 0,
            keyframe_requests: 0,
        }
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
            mime_type: self.specs.first().map(|(_, s)| mime(s)),
            width: self.width,
            height: self.height,
            layers: self.layers.clone(),
        }
    }

    pub(super) fn rids(&self) -> Vec<Rid> {
        self.layers.iter().map(|l| Rid::from(l.rid.as_str())).collect()
    }

    /// The rid carrying `quality`, if the track is simulcast.
    pub(super) fn rid_for(&self, quality: Option<VideoQuality>) -> Option<Rid> {
        let q = quality?;
        self.layers.iter().find(|l| l.quality == q).map(|l| Rid::from(l.rid.as_str()))
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubState {
    /// Wanted; not yet in an offer.
    ToOpen,
    /// In our pending offer under this mid.
    Negotiating(Mid),
    /// Negotiated; media flows.
    Open(Mid),
    /// To be removed in the next offer.
    ToStop(Mid),
    /// Removal offered; gone once answered.
    Stopping(Mid),
}

/// A track a participant receives.
pub(super) struct Sub {
    pub(super) publisher: Pid,
    /// The publisher's participant sid: the stream id of the media line, so clients can
    /// tell whose track it is.
    pub(super) publisher_sid: String,
    pub(super) pub_mid: Mid,
    pub(super) kind: MediaKind,
    pub(super) track_sid: String,
    pub(super) state: SubState,
    /// The publisher left while our offer was in flight.
    pub(super) orphaned: bool,
    pub(super) rewriter: Rewriter,
    pub(super) target_rid: Option<Rid>,
    pub(super) current_rid: Option<Rid>,
    pub(super) waiting_keyframe: bool,
    /// Incoming payload type → outgoing one, for this subscriber's negotiated codecs.
    pts: Vec<(CodecSpec, Pt)>,
    /// RTP packets written to this subscriber for the track.
    pub(super) packets: u64,
}

impl Sub {
    pub(super) fn new(publisher: Pid, publisher_sid: String, pub_mid: Mid, kind: MediaKind, track_sid: String) -> Self {
        use rand::Rng;
        let step = if kind == MediaKind::Audio { 960 } else { 3000 };
        Self {
            publisher,
            publisher_sid,
            pub_mid,
            kind,
            track_sid,
            state: SubState::ToOpen,
            orphaned: false,
            rewriter: Rewriter::new(rand::rng().random_range(0..30_000), step),
            target_rid: None,
            current_rid: None,
            waiting_keyframe: kind == MediaKind::Video,
            pts: vec![],
            packets: 0,
        }
    }

    pub(super) fn out_mid(&self) -> Option<Mid> {
        match self.state {
            SubState::ToOpen => None,
            SubState::Negotiating(m) | SubState::Open(m) | SubState::ToStop(m) | SubState::Stopping(m) => Some(m),
        }
    }

    /// The payload type this subscriber negotiated for `spec` on `mid`.
    pub(super) fn pt_for(&mut self, spec: CodecSpec, mid: Mid, rtc: &Rtc) -> Option<Pt> {
        if let Some(&(_, pt)) = self.pts.iter().find(|(s, _)| *s == spec) {
            return Some(pt);
        }
        let accepted = rtc.media(mid)?.remote_pts();
        let params = rtc.codec_config();
        let exact = params.find(|p| p.spec() == spec && accepted.contains(&p.pt()));
        let same_codec = || params.find(|p| p.spec().codec == spec.codec && accepted.contains(&p.pt()));
        let pt = exact.or_else(same_codec)?.pt();
        self.pts.push((spec, pt));
        Some(pt)
    }
}
