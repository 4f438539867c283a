//! One participant: its `Rtc` and its SDP state. The client offers first (its tracks and
//! a data channel); afterwards the server offers whenever subscriptions change, one offer
//! in flight at a time.
//!
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
use str0m::media::{Direction, KeyframeRequestKind, Mid, Rid};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Rtc};
use switchyard_api::signal::{
    ErrorCode, LeaveReason, ParticipantEvent, ParticipantInfo, ParticipantPermission, ParticipantState,
    PublishTrackRequest, ServerLeave, ServerMessage, SessionDescription, SubscriptionUpdated, TrackSource, Trickle,
    UpdateMetadata,
};
use switchyard_api::token::Grants;

use super::subscription::{Sub, SubState};
use super::track::Published;
use super::{Engine, JoinArgs, Output, Pid, Route, err};

/// How long a server offer waits for its answer before it is sent again (doubling).
pub(crate) const REOFFER_AFTER: Duration = Duration::from_secs(2);
/// How often an unanswered offer is sent again before it counts as failed.
pub(crate) const MAX_RESENDS: u32 = 3;
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
    /// The client's first offer has been applied: only then may the server offer.
    pub(super) remote_described: bool,
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
    /// The downlink estimate (str0m's BWE from TWCC, or the client's REMB).
    pub(super) estimate_bps: u64,
    /// What str0m's BWE was last told: (minimum, desired).
    pub(super) bwe_asked: Option<(u64, u64)>,
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
            next_timeout: None,
            renegotiate: false,
            undrained: false,
            failed_answers: 0,
            estimate_bps: super::allocation::INITIAL_ESTIMATE_BPS,
            bwe_asked: None,
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

    /// The earliest of the `Rtc`'s timeout, the pending offer's resend and a held-back
    /// keyframe request.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let offer = self.pending.as_ref().map(PendingOffer::deadline);
        let keyframes = self.published.iter().filter_map(|t| t.keyframes.deadline());
        self.next_timeout.into_iter().chain(offer).chain(keyframes).min()
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
    pub(super) fn create_offer(&mut self, now: Instant) -> Option<(SdpOffer, u32)> {
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
        let sdp = offer.to_sdp_string();
        self.pending = Some(PendingOffer { id: self.offer_seq, offer: pending, sdp, sent_at: now, resends: 0 });
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

impl Engine {
    /// Offer what changed in `pid`'s subscriptions, unless an offer is in flight.
    pub(super) fn negotiate(&mut self, now: Instant, pid: Pid) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let Some((offer, id)) = peer.create_offer(now) else { return };
        self.signal(pid, ServerMessage::Offer(SessionDescription { sdp: offer.to_sdp_string(), id }));
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
        // Glare: the server yields; its own pending offer is dropped and redone later.
        if peer.pending.take().is_some() {
            peer.rollback_pending();
        }
        let accepted = peer.rtc.sdp_api().accept_offer(offer);
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        match accepted {
            Ok(answer) => {
                peer.remote_described = true;
                let msg = ServerMessage::Answer(SessionDescription { sdp: answer.to_sdp_string(), id: sd.id });
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
        let opened = peer.commit_pending();
        for (publisher, pub_mid, track_sid, target) in opened {
            self.index.subscribe(publisher, pub_mid, pid);
            let publisher_sid = self.peers.get(&publisher).map(|p| p.sid.clone()).unwrap_or_default();
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

    /// Re-send offers whose answer is late; withdraw those that stay unanswered.
    pub(super) fn offer_timeouts(&mut self, now: Instant) {
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
