//! One participant: its `Rtc` and its SDP state. A client that publishes offers first
//! (its tracks and a data channel); afterwards the server offers whenever subscriptions
//! change, one offer in flight at a time.
//!
//! - **Subscribe-only clients need not offer**: a client that, [`FIRST_OFFER_GRACE`] after
//!   its `joined`, has neither offered nor announced a track (`publish_track`) gets the
//!   server's offer as soon as it has a subscription due. If its own offer crosses that
//!   offer, the glare rule below applies unchanged.
//! - **Glare** (both sides have an offer outstanding): the server yields. A client offer
//!   that arrives while a server offer is pending withdraws the server's offer (its answer
//!   will be ignored), is answered, and the withdrawn changes are offered again under a new
//!   id. A client therefore drops a server offer that arrives while its own offer awaits
//!   its answer: the server has withdrawn it and follows its answer with a new one.
//! - **Re-offer**: a server offer not answered within [`REOFFER_AFTER`] is sent again,
//!   unchanged and under the same id (so a client that did answer and one that never saw
//!   it both end up in the same state), at most [`MAX_RESENDS`] times with doubling waits;
//!   then it is withdrawn and counted as a failed negotiation.
//! - **Failures**: a refused answer (or an offer never answered) is reported as
//!   `negotiation_failed` and the changes are offered again; after [`MAX_FAILED`] in a row
//!   the participant is removed (it may join again).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, Mid, Pt, Rid};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Rtc};
use switchyard_api::signal::{
    ErrorCode, LeaveReason, ParticipantEvent, ParticipantInfo, ParticipantPermission, ParticipantState,
    PublishTrackRequest, ServerLeave, ServerMessage, SessionDescription, SubscriptionUpdated, TrackSource, Trickle,
    UpdateMetadata,
};
use switchyard_api::token::Grants;

use super::quality::PeerQuality;
use super::subscription::{Sub, SubState, restrict_codecs};
use super::track::Published;
use super::{Engine, JoinArgs, Output, Pid, Route, err};

/// How long a server offer waits for its answer before it is sent again (doubling).
pub(crate) const REOFFER_AFTER: Duration = Duration::from_secs(2);
/// How often an unanswered offer is sent again before it counts as failed.
pub(crate) const MAX_RESENDS: u32 = 3;
/// How long after `joined` the server waits for a client's first offer before it offers
/// first to a client that has announced nothing to publish.
pub(crate) const FIRST_OFFER_GRACE: Duration = Duration::from_millis(500);
/// Failed negotiations in a row after which the participant is removed.
pub(crate) const MAX_FAILED: u32 = 3;

/// Our offer awaiting the client's answer.
pub(super) struct PendingOffer {
    pub(super) id: u32,
    offer: SdpPendingOffer,
    sdp: String,
    sent_at: Instant,
    resends: u32,
}

impl PendingOffer {
    fn deadline(&self) -> Instant {
        self.sent_at + REOFFER_AFTER * 2u32.pow(self.resends)
    }
}

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
    /// Our offer awaiting the client's answer.
    pub(super) pending: Option<PendingOffer>,
    offer_seq: u32,
    /// A client offer or an answer to ours has been applied.
    pub(super) remote_described: bool,
    /// From when the server may offer first to a client that has not offered (set at
    /// join: `joined` + [`FIRST_OFFER_GRACE`]).
    pub(super) first_offer_at: Option<Instant>,
    /// SSRC → (mid, rid) of incoming streams, filled on first sight.
    ssrcs: Vec<(Ssrc, Mid, Option<Rid>)>,
    pub(super) channels: Vec<(ChannelId, String)>,
    /// When the `Rtc` wants its next timeout.
    pub(super) next_timeout: Option<Instant>,
    /// Queued for an offer check.
    pub(super) renegotiate: bool,
    /// The `Rtc` was mutated and not drained since (never true between inputs).
    pub(super) undrained: bool,
    /// Negotiations failed in a row (refused answers, offers never answered).
    pub(super) failed_answers: u32,
    /// The reconnect token and whether the session is held for a resume.
    pub(super) resume: super::resume::Resumable,
    /// Connection quality: the latest reports and the verdict sent.
    pub(super) quality: PeerQuality,
    /// The downlink estimate (str0m's BWE from TWCC, or the client's REMB).
    pub(super) estimate_bps: u64,
    /// What str0m's BWE was last told: (minimum, desired).
    pub(super) bwe_asked: Option<(u64, u64)>,
    /// This participant is a relay to another node, and which end.
    pub(super) relay: Option<super::relay::RelaySide>,
}

impl Peer {
    pub(super) fn new(
        pid: Pid,
        sid: String,
        args: &JoinArgs,
        ufrag: String,
        rtc: Rtc,
        now: Instant,
        now_ms: u64,
    ) -> Self {
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
            first_offer_at: None,
            ssrcs: vec![],
            channels: vec![],
            next_timeout: None,
            renegotiate: false,
            undrained: false,
            failed_answers: 0,
            resume: super::resume::Resumable::new(pid, args.reconnect_token.clone()),
            quality: PeerQuality::new(now),
            estimate_bps: super::allocation::INITIAL_ESTIMATE_BPS,
            bwe_asked: None,
            relay: None,
        }
    }

    /// Our unanswered offer, sent again unchanged after a resume (the client missed it
    /// while its socket was down); its resend schedule starts over.
    pub(super) fn replay_pending(&mut self, now: Instant) -> Option<ServerMessage> {
        let pending = self.pending.as_mut()?;
        pending.sent_at = now;
        pending.resends = 0;
        Some(ServerMessage::Offer(SessionDescription { sdp: pending.sdp.clone(), id: pending.id }))
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

    /// The earliest of the `Rtc`'s timeout, the pending offer's resend and a held-back
    /// keyframe request.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let offer = self.pending.as_ref().map(PendingOffer::deadline);
        let keyframes = self.published.iter().filter_map(|t| t.keyframes.deadline());
        let held = self.resume.held_until;
        let first = self.first_offer_due();
        self.next_timeout.into_iter().chain(offer).chain(keyframes).chain(held).chain(first).min()
    }

    /// When the server offers first to this client, if it is waiting to.
    pub(super) fn first_offer_due(&self) -> Option<Instant> {
        let waiting = !self.remote_described
            && self.pending.is_none()
            && self.announced.is_empty()
            && self.published.is_empty()
            && self.subs.iter().any(|s| s.state == SubState::ToOpen);
        self.first_offer_at.filter(|_| waiting)
    }

    fn may_offer(&self, now: Instant) -> bool {
        self.remote_described || self.first_offer_due().is_some_and(|t| t <= now)
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

    /// The server sends only on the media lines it adds for subscriptions. A line the
    /// client offered `sendrecv` is answered `recvonly` (and stays so in our later
    /// offers): echoing `sendrecv` would make the client expect a track from us there, a
    /// phantom with its own track's ids.
    fn no_echo(&mut self, answer: String) -> String {
        let ours: Vec<Mid> = self.subs.iter().filter_map(Sub::out_mid).collect();
        let mut out = String::with_capacity(answer.len());
        for (i, section) in answer.split("\r\nm=").enumerate() {
            if i > 0 {
                out.push_str("\r\nm=");
            }
            let mid = section.split("\r\n").find_map(|l| l.strip_prefix("a=mid:")).map(Mid::from);
            match mid {
                Some(mid) if !ours.contains(&mid) && section.contains("\r\na=sendrecv") => {
                    self.rtc.sdp_api().set_direction(mid, Direction::RecvOnly);
                    out.push_str(&section.replace("\r\na=sendrecv", "\r\na=recvonly"));
                }
                _ => out.push_str(section),
            }
        }
        out
    }

    /// Build an offer for pending subscription changes, if there are any and none is in
    /// flight.
    pub(super) fn create_offer(&mut self, now: Instant) -> Option<(String, u32)> {
        if self.pending.is_some() || !self.may_offer(now) {
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
        let mut sdp = offer.to_sdp_string();
        for sub in &self.subs {
            if let (SubState::Negotiating(mid), Some(codec)) = (sub.state, sub.codec) {
                let keep: Vec<Pt> = self
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .filter(|p| p.spec().codec == codec)
                    .flat_map(|p| std::iter::once(p.pt()).chain(p.resend()))
                    .collect();
                sdp = restrict_codecs(&sdp, mid, &keep);
            }
        }
        self.offer_seq += 1;
        self.pending =
            Some(PendingOffer { id: self.offer_seq, offer: pending, sdp: sdp.clone(), sent_at: now, resends: 0 });
        Some((sdp, self.offer_seq))
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

    /// The publisher's codec, if this open subscription's answered line has no payload
    /// type for it.
    fn unsupported_codec(&self, publisher: Pid, pub_mid: Mid) -> Option<Codec> {
        let sub = self.subs.iter().find(|s| s.publisher == publisher && s.pub_mid == pub_mid)?;
        let codec = sub.codec?;
        let SubState::Open(mid) = sub.state else { return None };
        let accepted = self.rtc.media(mid).map(|m| m.remote_pts()).unwrap_or(&[]);
        let params = self.rtc.codec_config();
        let ok = accepted.iter().any(|&pt| params.find(|p| p.pt() == pt).is_some_and(|p| p.spec().codec == codec));
        (!ok).then_some(codec)
    }

    /// Our offer was answered: returns the subscriptions that just opened.
    pub(super) fn commit_pending(&mut self) -> Vec<(Pid, Mid, String, Option<Rid>)> {
        let mut opened = vec![];
        for sub in &mut self.subs {
            match sub.state {
                SubState::Negotiating(m) if sub.orphaned => sub.state = SubState::ToStop(m),
                SubState::Negotiating(m) => {
                    sub.state = SubState::Open(m);
                    sub.layers.restart();
                    sub.rewriter.reset_source();
                    sub.vp8.reset_source();
                    opened.push((sub.publisher, sub.pub_mid, sub.track_sid.clone(), sub.layers.target));
                }
                _ => {}
            }
        }
        self.subs.retain(|s| !matches!(s.state, SubState::Stopping(_)));
        opened
    }
}

/// Each media line of `answer` with its codecs in the order its `offer` listed them. The
/// offerer sends with the first codec of the answer, and str0m answers in its own order:
/// without this a publisher preferring VP9 (`setCodecPreferences`) sent VP8, while the
/// track was announced, and offered to subscribers, as VP9 (the line's
/// [`negotiated_codec`](super::track::negotiated_codec) is the offer's first), and no
/// subscriber could decode it.
pub(super) fn in_offer_order(answer: &str, offer: &str) -> String {
    let mid_of = |section: &str| section.split("\r\n").find_map(|l| l.strip_prefix("a=mid:")).map(str::to_owned);
    let offered: Vec<(String, Vec<String>)> = offer
        .split("\r\nm=")
        .skip(1)
        .filter_map(|s| {
            let pts = s.split("\r\n").next()?.split(' ').skip(3).map(str::to_owned).collect();
            Some((mid_of(s)?, pts))
        })
        .collect();
    let mut sections: Vec<String> = answer.split("\r\nm=").map(str::to_owned).collect();
    for section in sections.iter_mut().skip(1) {
        let Some(order) = mid_of(section).and_then(|m| offered.iter().find(|(o, _)| *o == m).map(|(_, p)| p)) else {
            continue;
        };
        let (first, rest) = section.split_once("\r\n").unwrap_or((section.as_str(), ""));
        let mut fields: Vec<&str> = first.split(' ').collect();
        if fields.len() > 3 {
            let rank = |pt: &str| order.iter().position(|o| o == pt).unwrap_or(usize::MAX);
            fields[3..].sort_by_key(|pt| rank(pt));
        }
        *section = if rest.is_empty() { fields.join(" ") } else { format!("{}\r\n{rest}", fields.join(" ")) };
    }
    sections.join("\r\nm=")
}

impl Engine {
    /// Offer what changed in `pid`'s subscriptions, unless an offer is in flight.
    pub(super) fn negotiate(&mut self, now: Instant, pid: Pid) {
        let Some(peer) = self.peers.get(&pid) else { return };
        // Each new line offers the codec its publisher sends; unknown (no codec negotiated
        // on the publisher's line), it offers every codec the room allows.
        let codecs: Vec<Option<Codec>> = peer
            .subs
            .iter()
            .map(|s| {
                let publisher = self.peers.get(&s.publisher)?;
                let track = publisher.published.iter().find(|t| t.mid == s.pub_mid)?;
                track.negotiated.map(|spec| spec.codec)
            })
            .collect();
        let peer = self.peers.get_mut(&pid).expect("checked");
        for (sub, codec) in peer.subs.iter_mut().zip(codecs) {
            if sub.state == SubState::ToOpen {
                sub.codec = codec;
            }
        }
        let Some((sdp, id)) = peer.create_offer(now) else { return };
        self.signal(pid, ServerMessage::Offer(SessionDescription { sdp, id }));
        self.drain(pid);
    }

    pub(super) fn client_offer(&mut self, pid: Pid, sd: SessionDescription) {
        let peer = self.peers.get_mut(&pid).expect("checked");
        let offer = match SdpOffer::from_sdp_string(&sd.sdp) {
            Ok(o) => o,
            Err(e) => {
                return self.signal(pid, err(ErrorCode::NegotiationFailed, format!("bad SDP offer: {e}"), "offer"));
            }
        };
        if peer.pending.is_some() && peer.keeps_offer_on_glare() {
            return;
        }
        // Glare: the server yields; its own pending offer is dropped and redone later.
        if peer.pending.take().is_some() {
            peer.rollback_pending();
        }
        let accepted = peer.rtc.sdp_api().accept_offer(offer);
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        match accepted {
            Ok(answer) => {
                peer.remote_described = true;
                let sdp = in_offer_order(&peer.no_echo(answer.to_sdp_string()), &sd.sdp);
                let msg = ServerMessage::Answer(SessionDescription { sdp, id: sd.id });
                if ufrag != peer.ufrag {
                    // The client restarted ICE: str0m answered with new credentials.
                    peer.ufrag = ufrag.clone();
                    self.out.push_back(Output::Route(Route::IceRestart { pid, ufrag }));
                }
                self.signal(pid, msg);
            }
            Err(e) => self.signal(pid, err(ErrorCode::NegotiationFailed, format!("offer refused: {e}"), "offer")),
        }
        self.drain(pid);
        self.mark_renegotiate(pid);
    }

    pub(super) fn client_answer(&mut self, now: Instant, pid: Pid, sd: SessionDescription) {
        let peer = self.peers.get_mut(&pid).expect("checked");
        if peer.pending.as_ref().is_none_or(|p| p.id != sd.id) {
            // An answer to an offer we withdrew, or a second answer to a re-sent offer.
            return;
        }
        let pending = peer.pending.take().expect("checked");
        let answer = match SdpAnswer::from_sdp_string(&sd.sdp) {
            Ok(a) => a,
            Err(e) => {
                peer.rollback_pending();
                return self.negotiation_failed(now, pid, format!("bad SDP answer: {e}"));
            }
        };
        let accepted = peer.rtc.sdp_api().accept_answer(pending.offer, answer);
        self.drain(pid);
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        if let Err(e) = accepted {
            peer.rollback_pending();
            return self.negotiation_failed(now, pid, format!("answer refused: {e}"));
        }
        peer.failed_answers = 0;
        peer.remote_described = true;
        let opened = peer.commit_pending();
        for (publisher, pub_mid, track_sid, target) in opened {
            let publisher_sid = self.peers.get(&publisher).map(|p| p.sid.clone()).unwrap_or_default();
            let peer = self.peers.get_mut(&pid).expect("checked");
            if let Some(codec) = peer.unsupported_codec(publisher, pub_mid) {
                // The subscriber's answer has no payload type for the publisher's codec:
                // nothing it could decode would flow. Close the line and say why.
                peer.drop_track(publisher, pub_mid);
                let message = format!("track {track_sid} is {codec}, which this client's answer does not accept");
                self.signal(pid, err(ErrorCode::CodecNotSupported, message, "answer"));
                self.signal(
                    pid,
                    ServerMessage::SubscriptionUpdated(SubscriptionUpdated {
                        track_sid,
                        participant_sid: publisher_sid,
                        subscribed: false,
                        error: Some(ErrorCode::CodecNotSupported),
                    }),
                );
                continue;
            }
            self.index.subscribe(publisher, pub_mid, pid);
            self.signal(
                pid,
                ServerMessage::SubscriptionUpdated(SubscriptionUpdated {
                    track_sid,
                    participant_sid: publisher_sid,
                    subscribed: true,
                    error: None,
                }),
            );
            // The layer this subscriber starts on (every layer when it has none).
            self.request_keyframe(now, publisher, pub_mid, target, KeyframeRequestKind::Pli);
        }
        self.allocate_for(pid);
        // What changed while the offer was out goes in the next one.
        self.mark_renegotiate(pid);
    }

    /// Re-send offers whose answer is late; withdraw those that stay unanswered. Offer
    /// first to subscribe-only clients whose grace has passed.
    pub(super) fn offer_timeouts(&mut self, now: Instant) {
        let first: Vec<Pid> =
            self.peers.values().filter(|p| p.first_offer_due().is_some_and(|t| t <= now)).map(|p| p.pid).collect();
        for pid in first {
            self.mark_renegotiate(pid);
        }
        let late: Vec<Pid> = self
            .peers
            .values()
            .filter(|p| p.pending.as_ref().is_some_and(|o| o.deadline() <= now))
            .map(|p| p.pid)
            .collect();
        for pid in late {
            let peer = self.peers.get_mut(&pid).expect("listed");
            let pending = peer.pending.as_mut().expect("listed");
            if pending.resends < MAX_RESENDS {
                pending.resends += 1;
                pending.sent_at = now;
                let msg = ServerMessage::Offer(SessionDescription { sdp: pending.sdp.clone(), id: pending.id });
                tracing::debug!(pid, id = pending.id, resends = pending.resends, "offer not answered: sent again");
                self.signal(pid, msg);
            } else {
                let id = pending.id;
                peer.pending = None;
                peer.rollback_pending();
                self.negotiation_failed(now, pid, format!("offer {id} was not answered"));
                self.mark_renegotiate(pid);
            }
        }
    }

    /// A failed negotiation is retried with a fresh offer; a client whose negotiations
    /// keep failing is told so and removed (it may join again), rather than re-offered
    /// forever.
    fn negotiation_failed(&mut self, now: Instant, pid: Pid, message: String) {
        self.signal(pid, err(ErrorCode::NegotiationFailed, message, "answer"));
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        peer.failed_answers += 1;
        if peer.failed_answers >= MAX_FAILED {
            self.signal(
                pid,
                ServerMessage::Leave(ServerLeave {
                    reason: LeaveReason::ServerShutdown,
                    can_reconnect: true,
                    retry_after_ms: Some(500),
                    reconnect: Some(switchyard_api::signal::Reconnect::Rejoin),
                    message: format!("{MAX_FAILED} negotiations in a row failed; join again"),
                }),
            );
            self.leave(now, pid, LeaveReason::ServerShutdown);
        } else {
            self.mark_renegotiate(pid);
        }
    }

    pub(super) fn trickle(&mut self, pid: Pid, t: Trickle) {
        if let Some(c) = t.candidate
            && let Ok(candidate) = Candidate::from_sdp_string(&c.candidate)
            && let Some(p) = self.peers.get_mut(&pid)
        {
            p.rtc.add_remote_candidate(candidate);
            self.drain(pid);
        }
    }

    pub(super) fn update_metadata(&mut self, pid: Pid, u: UpdateMetadata) {
        let peer = self.peers.get_mut(&pid).expect("checked");
        if u.name.is_some() {
            peer.name = u.name;
        }
        if u.metadata.is_some() {
            peer.metadata = u.metadata;
        }
        let info = peer.info();
        self.broadcast(pid, ServerMessage::ParticipantUpdated(ParticipantEvent { participant: info }));
    }
}

#[cfg(test)]
mod tests {
    use super::in_offer_order;

    #[test]
    fn answer_lines_take_the_offers_codec_order_and_keep_everything_else() {
        let offer = "v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 RTP/SAVPF 98 99 96 97\r\na=mid:1\r\n";
        let answer = "v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 RTP/SAVPF 96 97 98 99\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\nm=video 9 RTP/SAVPF 96 98\r\na=mid:2\r\n";
        assert_eq!(
            in_offer_order(answer, offer),
            "v=0\r\nm=audio 9 RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 RTP/SAVPF 98 99 96 97\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\nm=video 9 RTP/SAVPF 96 98\r\na=mid:2\r\n",
            "mid 1 reordered; mid 2 (not in the offer) and the rest unchanged"
        );
    }
}
