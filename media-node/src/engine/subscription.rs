//! What a participant receives: one [`Sub`] per publisher track, its negotiation state
//! (`ToOpen` → `Negotiating` → `Open` → `ToStop` → `Stopping` → gone), the layer selector
//! (which simulcast layer reaches the subscriber, switching only on a keyframe), and the
//! munger that keeps its numbering continuous.

use std::time::{Duration, Instant};

use rand::Rng;
use str0m::Rtc;
use str0m::format::{Codec, CodecSpec};
use str0m::media::{MediaKind, Mid, Pt, Rid};
use switchyard_api::signal::{ErrorCode, ServerMessage, SubscriptionUpdated, VideoQuality};

use super::allocation::{Told, TrackSettings};
use super::munger::{Rewriter, Vp8Rewriter};
use super::{Engine, Pid};

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

/// What the layer selector says about one incoming packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward it.
    Forward,
    /// Not the layer this subscriber gets.
    Drop,
    /// The layer the subscriber should switch to, but not a keyframe: drop it and ask the
    /// publisher for a keyframe of that layer.
    NeedKeyframe,
}

/// How long a subscriber waiting for a keyframe waits before it asks again: the first
/// packet of the layer it waits for asks once; a keyframe lost on the way or an encoder
/// slow to answer is asked again after this, never per packet.
pub(crate) const KEYFRAME_RETRY: Duration = Duration::from_secs(1);

/// Which layer (simulcast `rid`, `None` without simulcast) reaches one subscriber. A
/// subscriber starts, and switches layers, only on a keyframe; until the target layer's
/// keyframe arrives the current layer goes on, so a switch never freezes the picture.
/// The target is the allocator's ([`allocation`](super::allocation)); paused, nothing
/// is forwarded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LayerSelector {
    /// The layer to receive; `None` on a track without announced layers: whichever layer
    /// brings the first keyframe, kept from then on.
    pub(crate) target: Option<Rid>,
    /// The layer being forwarded, when `forwarding`.
    pub(crate) current: Option<Rid>,
    forwarding: bool,
    /// When the keyframe being waited for was last asked for.
    asked: Option<Instant>,
    /// The allocator paused this subscription (no bandwidth, or hidden).
    pub(crate) paused: bool,
    /// The subscriber asked for a keyframe of the layer it gets (PLI/FIR).
    pub(crate) repair: bool,
}

impl LayerSelector {
    pub(crate) fn select(&mut self, now: Instant, rid: Option<Rid>, keyframe: bool) -> Verdict {
        if self.paused {
            return Verdict::Drop;
        }
        if self.forwarding && self.current == rid {
            if keyframe {
                self.repair = false;
            }
            return Verdict::Forward;
        }
        let wanted = match self.target {
            Some(target) => rid == Some(target),
            None => !self.forwarding,
        };
        if !wanted {
            return Verdict::Drop;
        }
        if !keyframe {
            if self.asked.is_some_and(|t| now < t + KEYFRAME_RETRY) {
                return Verdict::Drop;
            }
            self.asked = Some(now);
            return Verdict::NeedKeyframe;
        }
        self.current = rid;
        self.forwarding = true;
        self.asked = None;
        Verdict::Forward
    }

    /// Aim at another layer; the switch happens on its keyframe.
    pub(crate) fn set_target(&mut self, rid: Option<Rid>) -> bool {
        if self.target == rid {
            return false;
        }
        self.target = rid;
        self.asked = None;
        true
    }

    /// Pause or resume; a resumed subscription starts again on a keyframe.
    pub(crate) fn set_paused(&mut self, paused: bool) -> bool {
        if self.paused == paused {
            return false;
        }
        self.paused = paused;
        if !paused {
            self.restart();
        }
        true
    }

    /// Does this subscriber still need a keyframe of `rid` (`None`: of any layer)? A
    /// held-back request nobody needs any more is not sent.
    pub(crate) fn waits_for(&self, rid: Option<Rid>) -> bool {
        if self.paused {
            return false;
        }
        let switching = !self.forwarding || self.current != self.target;
        let target = switching && (rid.is_none() || self.target.is_none() || self.target == rid);
        let repair = self.repair && (rid.is_none() || self.current == rid);
        target || repair
    }

    /// Start over: wait for a keyframe (a newly opened or re-opened subscription).
    pub(crate) fn restart(&mut self) {
        self.forwarding = false;
        self.asked = None;
    }

    /// Forwarding has started (a keyframe came).
    #[cfg(test)]
    pub(crate) fn forwarding(&self) -> bool {
        self.forwarding
    }
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
    pub(super) vp8: Vp8Rewriter,
    pub(super) layers: LayerSelector,
    /// Incoming payload type → outgoing one, for this subscriber's negotiated codecs.
    pts: Vec<(CodecSpec, Pt)>,
    /// RTP packets written to this subscriber for the track.
    pub(super) packets: u64,
    /// The publisher's negotiated codec, looked up when the line is offered: the only
    /// codec (with its RTX) our offer lists for this line.
    pub(super) codec: Option<Codec>,
    /// How the subscriber shows it (`update_track_settings`).
    pub(super) settings: TrackSettings,
    /// The quality asked with `update_subscription`.
    pub(super) asked_quality: Option<VideoQuality>,
    /// The allocation last told with `stream_state`.
    pub(super) told: Option<Told>,
}

impl Sub {
    pub(super) fn new(
        publisher: Pid,
        publisher_sid: String,
        pub_mid: Mid,
        kind: MediaKind,
        track_sid: String,
        rng: &mut impl Rng,
    ) -> Self {
        let step = if kind == MediaKind::Audio { 960 } else { 3000 };
        Self {
            publisher,
            publisher_sid,
            pub_mid,
            kind,
            track_sid,
            state: SubState::ToOpen,
            orphaned: false,
            rewriter: Rewriter::new(rng.random_range(0..30_000), step),
            vp8: Vp8Rewriter::default(),
            layers: LayerSelector::default(),
            pts: vec![],
            packets: 0,
            codec: None,
            settings: TrackSettings::default(),
            asked_quality: None,
            told: None,
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

/// `sdp` with the media section `mid` listing only the payload types in `keep`: the
/// other codecs' numbers leave its `m=` line, and their `rtpmap`, `fmtp` and `rtcp-fb`
/// lines go.
pub(super) fn restrict_codecs(sdp: &str, mid: Mid, keep: &[Pt]) -> String {
    let tag = format!("a=mid:{mid}");
    let kept = |pt: &str| pt.parse::<u8>().is_ok_and(|n| keep.iter().any(|k| **k == n));
    let mut out = Vec::new();
    for (i, section) in sdp.split("\r\nm=").enumerate() {
        if i == 0 || !section.split("\r\n").any(|l| l == tag) {
            out.push(section.to_owned());
            continue;
        }
        let mut lines = vec![];
        for (j, line) in section.split("\r\n").enumerate() {
            if j == 0 {
                // `video 9 UDP/TLS/RTP/SAVPF 96 97 …`: the first three fields stay.
                let mut f = line.split(' ');
                let head: Vec<&str> = f.by_ref().take(3).collect();
                let pts: Vec<&str> = f.filter(|pt| kept(pt)).collect();
                lines.push([head, pts].concat().join(" "));
                continue;
            }
            let pt = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
                .iter()
                .find_map(|p| line.strip_prefix(p))
                .and_then(|rest| rest.split(' ').next());
            if pt.is_none_or(kept) {
                lines.push(line.to_owned());
            }
        }
        out.push(lines.join("\r\n"));
    }
    out.join("\r\nm=")
}

impl Engine {
    /// `update_subscription` for one track: subscribe, unsubscribe, or change the layer.
    pub(super) fn update_subscription(
        &mut self,
        _now: Instant,
        pid: Pid,
        track_sid: &str,
        subscribe: bool,
        quality: Option<VideoQuality>,
    ) {
        let found = self.room_members(pid).into_iter().filter(|&m| m != pid).find_map(|m| {
            let p = self.peers.get(&m)?;
            let t = p.published.iter().find(|t| t.sid == track_sid)?;
            Some((m, p.sid.clone(), t.mid, t.media_kind(), t.rid_for(quality).or_else(|| t.default_rid())))
        });
        let Some((publisher, publisher_sid, pub_mid, kind, rid)) = found else {
            return self.signal(
                pid,
                ServerMessage::SubscriptionUpdated(SubscriptionUpdated {
                    track_sid: track_sid.into(),
                    participant_sid: String::new(),
                    subscribed: false,
                    error: Some(ErrorCode::TrackNotFound),
                }),
            );
        };
        let peer = self.peers.get_mut(&pid).expect("checked");
        if subscribe && !peer.grants.can_subscribe {
            return self.signal(
                pid,
                ServerMessage::SubscriptionUpdated(SubscriptionUpdated {
                    track_sid: track_sid.into(),
                    participant_sid: publisher_sid,
                    subscribed: false,
                    error: Some(ErrorCode::PermissionDenied),
                }),
            );
        }
        let existing = peer.subs.iter_mut().find(|s| s.publisher == publisher && s.pub_mid == pub_mid);
        match (subscribe, existing) {
            (true, Some(sub)) => {
                // The next packet of the new layer asks for its keyframe.
                if quality.is_some() {
                    sub.asked_quality = quality;
                }
                self.allocate_for(pid);
            }
            (true, None) => {
                let mut sub =
                    Sub::new(publisher, publisher_sid.clone(), pub_mid, kind, track_sid.to_owned(), &mut self.rng);
                sub.layers.target = rid;
                sub.asked_quality = quality;
                peer.subs.push(sub);
                self.mark_renegotiate(pid);
            }
            (false, Some(_)) => {
                peer.drop_track(publisher, pub_mid);
                self.index.unsubscribe(publisher, pub_mid, pid);
                self.signal(
                    pid,
                    ServerMessage::SubscriptionUpdated(SubscriptionUpdated {
                        track_sid: track_sid.into(),
                        participant_sid: publisher_sid,
                        subscribed: false,
                        error: None,
                    }),
                );
                self.mark_renegotiate(pid);
            }
            (false, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_starts_on_a_keyframe_of_any_layer_and_keeps_it() {
        let t0 = Instant::now();
        let mut s = LayerSelector::default();
        let (q, h) = (Some(Rid::from("q")), Some(Rid::from("h")));
        assert_eq!(s.select(t0, h, false), Verdict::NeedKeyframe);
        assert_eq!(s.select(t0, q, true), Verdict::Forward, "the first keyframe starts forwarding");
        assert_eq!(s.select(t0, q, false), Verdict::Forward);
        assert_eq!(s.select(t0, h, true), Verdict::Drop, "no target: the layer stays");
        s.restart();
        assert!(!s.forwarding());
        assert_eq!(s.select(t0, q, false), Verdict::NeedKeyframe, "a re-opened subscription waits for a keyframe");
        assert_eq!(s.select(t0, q, false), Verdict::Drop, "and asks once, not per packet");
    }

    #[test]
    fn a_layer_switch_keeps_the_old_layer_until_the_new_one_has_a_keyframe() {
        let t0 = Instant::now();
        let (q, h, f) = (Some(Rid::from("q")), Some(Rid::from("h")), Some(Rid::from("f")));
        let mut s = LayerSelector { target: q, ..LayerSelector::default() };
        assert_eq!(s.select(t0, h, true), Verdict::Drop, "not the target");
        assert_eq!(s.select(t0, q, true), Verdict::Forward);
        s.target = h;
        assert_eq!(s.select(t0, q, false), Verdict::Forward, "the old layer goes on");
        assert_eq!(s.select(t0, h, false), Verdict::NeedKeyframe);
        assert_eq!(s.select(t0, h, false), Verdict::Drop, "asked once");
        assert_eq!(s.select(t0 + KEYFRAME_RETRY, h, false), Verdict::NeedKeyframe, "and again after the retry");
        assert_eq!(s.select(t0, f, true), Verdict::Drop);
        assert_eq!(s.select(t0, h, true), Verdict::Forward, "switched");
        assert_eq!(s.current, h);
        assert_eq!(s.select(t0, q, true), Verdict::Drop, "the old layer stops");
        assert_eq!(s.select(t0, h, false), Verdict::Forward);
    }

    #[test]
    fn without_simulcast_the_only_layer_waits_for_its_keyframe() {
        let t0 = Instant::now();
        let mut s = LayerSelector::default();
        assert_eq!(s.select(t0, None, false), Verdict::NeedKeyframe);
        assert_eq!(s.select(t0, None, true), Verdict::Forward);
        assert_eq!(s.select(t0, None, false), Verdict::Forward);
    }

    #[test]
    fn a_paused_subscription_forwards_nothing_and_resumes_on_a_keyframe() {
        let t0 = Instant::now();
        let q = Some(Rid::from("q"));
        let mut s = LayerSelector { target: q, ..LayerSelector::default() };
        assert_eq!(s.select(t0, q, true), Verdict::Forward);
        assert!(s.set_paused(true));
        assert_eq!(s.select(t0, q, true), Verdict::Drop, "paused: not even a keyframe");
        assert!(!s.set_paused(true), "no change");
        assert!(s.set_paused(false));
        assert_eq!(s.select(t0, q, false), Verdict::NeedKeyframe, "resumed: waits for a keyframe");
        assert_eq!(s.select(t0, q, true), Verdict::Forward);
    }
}
