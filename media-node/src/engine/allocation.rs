//! Bandwidth allocation (what LiveKit's stream allocator does), as a pure decision:
//! given one subscriber's estimated downlink and each of its video subscriptions
//! (layers with their bitrates, priority, the size it is rendered at, hidden), pick the
//! layer each gets, or pause it. The engine feeds it (on a new estimate, on a
//! subscription or settings change, and every [`PERIOD`]) and applies the answer to the
//! [`LayerSelector`](super::subscription::LayerSelector)s; audio is never allocated here
//! and never paused.
//!
//! ```text
//!  estimate (TWCC, or REMB) ─┐
//!  per subscription: layers, ├─► allocate() ─► per subscription: Layer(i) | Paused(reason)
//!  priority, size, hidden ───┘
//! ```
//!
//! Rules, in order:
//! 1. Muted by its publisher: paused (`publisher_muted`); hidden or disabled: paused
//!    (`hidden`); whatever the bandwidth, and costing none of it.
//! 2. A subscription's cap is the smallest layer at least as large as it is rendered; with
//!    no size and no quality given, the medium layer (the default); a quality asked
//!    (`update_subscription` or `update_track_settings`) caps it too.
//! 3. In priority order (screen share, then the active speaker, then the rest; ties keep
//!    their order), each gets its lowest layer if that fits what is left; if not, it is
//!    paused (`bandwidth`) — lower priorities are never served before a higher one. A
//!    track without simulcast has no lower layer: it keeps its one stream (paced) and
//!    takes what is left.
//! 4. Then, in the same order, each moves up to the best layer up to its cap that fits
//!    what is left. A move above the layer it has now needs [`HEADROOM`] over that layer's
//!    bitrate, so a noisy estimate does not flap between two layers.

use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::media::{MediaKind, Mid, Rid};
use switchyard_api::signal::{
    ErrorCode, ServerMessage, StreamPauseReason, StreamState, StreamStateKind, SubscribedLayer, SubscribedLayers,
    TrackSource, UpdateTrackSettings, VideoQuality,
};

use super::quality::ESTIMATE_BUCKETS;
use super::subscription::SubState;
use super::{Engine, Pid, err};

/// How often the engine re-evaluates every subscriber even when nothing changed.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// A move up must fit with this much to spare (a fraction of the new layer's bitrate).
pub(crate) const HEADROOM: f64 = 0.15;

/// Bitrate priors by quality, for a layer neither measured nor announced.
pub(crate) fn prior_bps(quality: VideoQuality) -> u64 {
    match quality {
        VideoQuality::Low => 150_000,
        VideoQuality::Medium => 500_000,
        VideoQuality::High => 1_500_000,
    }
}

/// Who is served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Priority {
    /// A screen share.
    Screen,
    /// A camera of one of the room's active speakers.
    Speaker,
    /// Everything else.
    Other,
}

/// One simulcast layer as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Layer {
    /// Its quality (low, medium, high).
    pub(crate) quality: VideoQuality,
    /// What it costs to receive.
    pub(crate) bitrate_bps: u64,
    /// Its size, 0 when unknown.
    pub(crate) width: u32,
    /// Its size, 0 when unknown.
    pub(crate) height: u32,
}

/// One video subscription.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Want {
    /// Its layers, lowest first; one for a track without simulcast.
    pub(crate) layers: Vec<Layer>,
    /// Whose it is.
    pub(crate) priority: Priority,
    /// The size it is rendered at (`update_track_settings`), if told.
    pub(crate) size: Option<(u32, u32)>,
    /// The best quality asked for (`update_track_settings` or `update_subscription`).
    pub(crate) max_quality: Option<VideoQuality>,
    /// Not visible, or disabled by the subscriber.
    pub(crate) hidden: bool,
    /// Muted by its publisher (who sends nothing).
    pub(crate) muted: bool,
    /// The layer it gets now (index into `layers`), if any.
    pub(crate) current: Option<usize>,
}

/// Why a subscription is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseReason {
    /// Even its lowest layer does not fit.
    Bandwidth,
    /// Hidden or disabled by the subscriber.
    Hidden,
    /// Muted by its publisher.
    PublisherMuted,
}

/// What a subscription gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// This layer (index into [`Want::layers`]).
    Layer(usize),
    /// Nothing.
    Paused(PauseReason),
}

/// The allocation for one subscriber: one decision per want, in the same order.
pub(crate) fn allocate(estimate_bps: u64, wants: &[Want]) -> Vec<Decision> {
    let mut out: Vec<Decision> = wants
        .iter()
        .map(|w| {
            if w.muted {
                Decision::Paused(PauseReason::PublisherMuted)
            } else if w.hidden || w.layers.is_empty() {
                Decision::Paused(PauseReason::Hidden)
            } else {
                Decision::Layer(0)
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..wants.len()).filter(|&i| out[i] == Decision::Layer(0)).collect();
    order.sort_by_key(|&i| wants[i].priority);
    let mut left = estimate_bps;
    // Lowest layers first, by priority.
    for &i in &order {
        let cost = wants[i].layers[0].bitrate_bps;
        if cost <= left {
            left -= cost;
        } else if wants[i].layers.len() == 1 {
            // A track without simulcast has nothing lower to fall back to: it keeps its
            // one stream (the pacer and the sender's congestion control slow it), since
            // pausing it would also stop the traffic the estimate grows from.
            left = 0;
        } else {
            out[i] = Decision::Paused(PauseReason::Bandwidth);
        }
    }
    // Then up, by priority.
    for &i in &order {
        let Decision::Layer(_) = out[i] else { continue };
        let w = &wants[i];
        let base = w.layers[0].bitrate_bps;
        let mut best = 0;
        for (j, l) in w.layers.iter().enumerate().take(cap(w) + 1).skip(1) {
            let extra = l.bitrate_bps.saturating_sub(base);
            let need =
                if w.current.is_some_and(|c| j > c) { extra + (l.bitrate_bps as f64 * HEADROOM) as u64 } else { extra };
            if need <= left {
                best = j;
            }
        }
        left -= w.layers[best].bitrate_bps.saturating_sub(base);
        out[i] = Decision::Layer(best);
    }
    out
}

/// The highest layer a want may get.
fn cap(w: &Want) -> usize {
    let top = w.layers.len() - 1;
    let by_size = match w.size {
        Some((width, height)) => w
            .layers
            .iter()
            .position(|l| (l.width >= width && l.height >= height) || (l.width == 0 && l.height == 0))
            .unwrap_or(top),
        // An explicit quality without a size is the cap by itself.
        None if w.max_quality.is_some() => top,
        None => w.layers.iter().position(|l| l.quality == VideoQuality::Medium).unwrap_or(top),
    };
    let by_quality = match w.max_quality {
        Some(q) => w.layers.iter().rposition(|l| l.quality <= q).unwrap_or(0),
        None => top,
    };
    by_size.min(by_quality)
}

/// Reserved per audio subscription out of the estimate: audio is never paused.
pub(super) const AUDIO_RESERVE_BPS: u64 = 40_000;

/// A subscriber's estimate before str0m's BWE has reported one.
pub(crate) const INITIAL_ESTIMATE_BPS: u64 = 1_000_000;

/// How the subscriber shows one video track (`update_track_settings`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrackSettings {
    pub(crate) size: Option<(u32, u32)>,
    pub(crate) hidden: bool,
    pub(crate) quality: Option<VideoQuality>,
}

/// A subscription's last allocation, as told to the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Told {
    pub(crate) paused: Option<StreamPauseReason>,
    pub(crate) quality: Option<VideoQuality>,
}

/// A published layer's measured rate: bytes since the last period, and the last rate.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LayerRate {
    pub(crate) bytes: u64,
    pub(crate) bps: u64,
}

impl Engine {
    /// The periodic pass: measure every published layer's rate over the last period,
    /// then allocate every subscriber and tell publishers which layers are needed.
    pub(super) fn allocation_timeout(&mut self, now: Instant) {
        if now < self.next_allocation {
            return;
        }
        let elapsed = now.saturating_duration_since(self.last_measure).as_secs_f64().max(0.001);
        self.last_measure = now;
        self.next_allocation = now + PERIOD;
        for p in self.peers.values_mut() {
            for t in &mut p.published {
                for (_, r) in &mut t.rates {
                    r.bps = (r.bytes as f64 * 8.0 / elapsed) as u64;
                    r.bytes = 0;
                }
            }
        }
        let pids: Vec<Pid> = self.peers.keys().copied().collect();
        for pid in pids {
            self.allocate_for(pid);
        }
        for p in self.peers.values() {
            if p.subs.iter().any(|s| s.kind == MediaKind::Video && matches!(s.state, SubState::Open(_))) {
                self.stats.quality.estimate.observe(&ESTIMATE_BUCKETS, p.estimate_bps as f64);
            }
        }
        self.dynacast(true);
    }

    /// Allocate `pid`'s downlink over its open video subscriptions and apply it.
    pub(super) fn allocate_for(&mut self, pid: Pid) {
        let Some(peer) = self.peers.get(&pid) else { return };
        let mut wants = vec![];
        let mut rids: Vec<Vec<Option<Rid>>> = vec![];
        let mut at = vec![];
        let mut audio = 0;
        for (i, sub) in peer.subs.iter().enumerate() {
            if !matches!(sub.state, SubState::Open(_)) {
                continue;
            }
            if sub.kind == MediaKind::Audio {
                audio += 1;
                continue;
            }
            let Some(track) =
                self.peers.get(&sub.publisher).and_then(|p| p.published.iter().find(|t| t.mid == sub.pub_mid))
            else {
                continue;
            };
            let (layers, layer_rids) = track.allocation_layers();
            let current = sub.layers.target.and_then(|r| layer_rids.iter().position(|x| *x == Some(r)));
            wants.push(Want {
                layers,
                priority: if track.source() == TrackSource::ScreenShare {
                    Priority::Screen
                } else if self.is_speaking(sub.publisher) {
                    Priority::Speaker
                } else {
                    Priority::Other
                },
                size: sub.settings.size,
                max_quality: match (sub.settings.quality, sub.asked_quality) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                hidden: sub.settings.hidden,
                muted: track.muted,
                current: if sub.layers.paused { None } else { current.or(Some(0)) },
            });
            rids.push(layer_rids);
            at.push(i);
        }
        let budget = peer.estimate_bps.saturating_sub(audio * AUDIO_RESERVE_BPS);
        let decisions = allocate(budget, &wants);
        let (mut minimum, mut desired) = (0u64, 0u64);
        let mut told = vec![];
        let peer = self.peers.get_mut(&pid).expect("checked");
        for (k, d) in decisions.iter().enumerate() {
            let sub = &mut peer.subs[at[k]];
            let w = &wants[k];
            desired += w.layers[cap(w).min(w.layers.len() - 1)].bitrate_bps;
            let now_told = match *d {
                Decision::Layer(j) => {
                    minimum += w.layers[j].bitrate_bps;
                    if sub.layers.set_target(rids[k][j]) {
                        self.stats.layer_switches += 1;
                    }
                    sub.layers.set_paused(false);
                    Told { paused: None, quality: Some(w.layers[j].quality) }
                }
                Decision::Paused(reason) => {
                    sub.layers.set_paused(true);
                    let reason = match reason {
                        PauseReason::Bandwidth => StreamPauseReason::Bandwidth,
                        PauseReason::Hidden => StreamPauseReason::Hidden,
                        PauseReason::PublisherMuted => StreamPauseReason::PublisherMuted,
                    };
                    Told { paused: Some(reason), quality: None }
                }
            };
            // The first allocation of an active stream is what the subscriber expects:
            // only changes are told.
            let first_active = sub.told.is_none() && now_told.paused.is_none();
            if sub.told != Some(now_told) {
                if !first_active {
                    told.push(StreamState {
                        track_sid: sub.track_sid.clone(),
                        participant_sid: sub.publisher_sid.clone(),
                        state: if now_told.paused.is_some() {
                            StreamStateKind::Paused
                        } else {
                            StreamStateKind::Active
                        },
                        reason: now_told.paused,
                        quality: now_told.quality,
                    });
                }
                sub.told = Some(now_told);
            }
        }
        // Tell str0m's BWE what we would like to send, so it probes up to it.
        let rates = (minimum.min(desired), desired.max(minimum));
        if !wants.is_empty() && peer.bwe_asked != Some(rates) {
            peer.bwe_asked = Some(rates);
            peer.rtc.bwe().set_bitrate(Bitrate::bps(rates.0), Bitrate::bps(rates.1));
            self.drain(pid);
        }
        for s in told {
            self.signal(pid, ServerMessage::StreamState(s));
        }
        self.dynacast(false);
    }

    /// Dynacast: tell each simulcast publisher which of its layers somebody receives or
    /// is switching to. A layer turns on at once; it turns off only on the periodic pass
    /// (`allow_off`), so a layer is not toggled more than once a period.
    pub(super) fn dynacast(&mut self, allow_off: bool) {
        let mut needed: Vec<(Pid, Mid, Rid)> = vec![];
        for p in self.peers.values() {
            for s in &p.subs {
                if s.kind != MediaKind::Video || s.layers.paused || !matches!(s.state, SubState::Open(_)) {
                    continue;
                }
                for r in [s.layers.target, s.layers.current].into_iter().flatten() {
                    needed.push((s.publisher, s.pub_mid, r));
                }
            }
        }
        let mut msgs = vec![];
        for (&pid, p) in &mut self.peers {
            for t in &mut p.published {
                if t.layers().is_empty() {
                    continue;
                }
                let active: Vec<bool> = t
                    .layers()
                    .iter()
                    .map(|l| needed.iter().any(|&(pp, m, r)| pp == pid && m == t.mid && *r == *l.rid.as_str()))
                    .collect();
                let sent = t.dynacast.clone().unwrap_or_else(|| vec![true; active.len()]);
                let next: Vec<bool> =
                    sent.iter().zip(&active).map(|(&was, &now)| if allow_off { now } else { was || now }).collect();
                if next != sent {
                    t.dynacast = Some(next.clone());
                    let layers = t
                        .layers()
                        .iter()
                        .zip(next)
                        .map(|(l, active)| SubscribedLayer { rid: l.rid.clone(), quality: l.quality, active })
                        .collect();
                    msgs.push((pid, SubscribedLayers { track_sid: t.sid.clone(), layers }));
                }
            }
        }
        for (pid, m) in msgs {
            self.signal(pid, ServerMessage::SubscribedLayers(m));
        }
    }

    /// str0m's BWE (TWCC), or the client's REMB, has a new estimate for `pid`'s downlink.
    pub(super) fn estimate(&mut self, pid: Pid, kind: BweKind) {
        let bps = match kind {
            BweKind::Twcc { estimate, .. } => estimate.as_u64(),
            BweKind::Remb { estimate, .. } => estimate.as_u64(),
            _ => return,
        };
        let Some(p) = self.peers.get_mut(&pid) else { return };
        p.estimate_bps = bps;
        self.stats.last_estimate_bps = bps;
        self.allocate_for(pid);
    }

    /// `update_track_settings`.
    pub(super) fn track_settings(&mut self, pid: Pid, u: UpdateTrackSettings) {
        let Some(p) = self.peers.get_mut(&pid) else { return };
        for sid in &u.track_sids {
            let Some(sub) = p.subs.iter_mut().find(|s| &s.track_sid == sid) else {
                return self.signal(
                    pid,
                    err(ErrorCode::TrackNotFound, format!("not subscribed to {sid:?}"), "update_track_settings"),
                );
            };
            if let Some(d) = u.disabled {
                sub.settings.hidden = d;
            }
            match (u.width, u.height) {
                (Some(w), Some(h)) => sub.settings.size = Some((w, h)),
                (None, None) => {}
                _ => {
                    return self.signal(
                        pid,
                        err(ErrorCode::BadRequest, "width and height go together", "update_track_settings"),
                    );
                }
            }
            if u.quality.is_some() {
                sub.settings.quality = u.quality;
            }
        }
        self.allocate_for(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PauseReason::*;
    use Priority::*;

    fn three() -> Vec<Layer> {
        [(VideoQuality::Low, 150_000, 320), (VideoQuality::Medium, 500_000, 640), (VideoQuality::High, 1_500_000, 1280)]
            .into_iter()
            .map(|(quality, bitrate_bps, width)| Layer { quality, bitrate_bps, width, height: width * 9 / 16 })
            .collect()
    }

    fn want(priority: Priority) -> Want {
        Want { layers: three(), priority, size: None, max_quality: None, hidden: false, muted: false, current: None }
    }

    fn sized(priority: Priority, w: u32, h: u32) -> Want {
        Want { size: Some((w, h)), ..want(priority) }
    }

    #[test]
    fn without_a_size_the_default_is_medium_when_it_fits() {
        assert_eq!(allocate(10_000_000, &[want(Other)]), [Decision::Layer(1)]);
        assert_eq!(allocate(400_000, &[want(Other)]), [Decision::Layer(0)], "medium does not fit");
    }

    #[test]
    fn the_best_layer_that_fits_up_to_the_rendered_size() {
        let big = sized(Other, 1280, 720);
        assert_eq!(allocate(10_000_000, std::slice::from_ref(&big)), [Decision::Layer(2)]);
        assert_eq!(allocate(1_000_000, std::slice::from_ref(&big)), [Decision::Layer(1)]);
        assert_eq!(allocate(200_000, std::slice::from_ref(&big)), [Decision::Layer(0)]);
        assert_eq!(allocate(10_000_000, &[sized(Other, 300, 160)]), [Decision::Layer(0)], "a thumbnail");
        assert_eq!(allocate(10_000_000, &[sized(Other, 641, 200)]), [Decision::Layer(2)], "wider than medium");
        assert_eq!(allocate(10_000_000, &[sized(Other, 4000, 3000)]), [Decision::Layer(2)], "larger than all");
    }

    #[test]
    fn a_quality_asked_caps_the_layer() {
        let w = Want { max_quality: Some(VideoQuality::Low), ..sized(Other, 1280, 720) };
        assert_eq!(allocate(10_000_000, &[w]), [Decision::Layer(0)]);
        let w = Want { max_quality: Some(VideoQuality::High), ..want(Other) };
        assert_eq!(allocate(10_000_000, &[w]), [Decision::Layer(2)], "asked for high without a size: high");
    }

    #[test]
    fn when_even_the_lowest_layer_does_not_fit_the_video_is_paused() {
        assert_eq!(allocate(100_000, &[want(Other)]), [Decision::Paused(Bandwidth)]);
        assert_eq!(allocate(0, &[want(Other)]), [Decision::Paused(Bandwidth)]);
        assert_eq!(allocate(150_000, &[want(Other)]), [Decision::Layer(0)], "exactly fits");
    }

    #[test]
    fn hidden_is_paused_whatever_the_bandwidth() {
        let w = Want { hidden: true, ..want(Screen) };
        assert_eq!(allocate(u64::MAX, &[w]), [Decision::Paused(Hidden)]);
    }

    #[test]
    fn a_muted_track_is_paused_and_leaves_its_share_to_the_others() {
        let muted = Want { muted: true, ..want(Screen) };
        // Room for one medium layer: the muted screen share takes none of it.
        assert_eq!(allocate(600_000, &[muted, want(Other)]), [Decision::Paused(PublisherMuted), Decision::Layer(1)]);
    }

    #[test]
    fn a_screen_share_is_served_before_cameras() {
        let wants = [sized(Other, 1280, 720), sized(Screen, 1280, 720)];
        // Room for the screen's top layer and the camera's lowest.
        assert_eq!(allocate(1_700_000, &wants), [Decision::Layer(0), Decision::Layer(2)]);
        // Room for one lowest layer: the screen's; the camera is paused.
        assert_eq!(allocate(200_000, &wants), [Decision::Paused(Bandwidth), Decision::Layer(0)]);
    }

    #[test]
    fn the_active_speaker_comes_before_the_rest_and_after_a_screen() {
        let wants = [sized(Other, 1280, 720), sized(Speaker, 1280, 720), sized(Screen, 1280, 720)];
        let got = allocate(1_500_000 + 500_000 + 150_000, &wants);
        assert_eq!(got, [Decision::Layer(0), Decision::Layer(1), Decision::Layer(2)]);
    }

    #[test]
    fn every_subscription_keeps_its_lowest_layer_before_any_moves_up() {
        let wants = [sized(Other, 1280, 720), sized(Other, 1280, 720), sized(Other, 1280, 720)];
        assert_eq!(allocate(450_000, &wants), [Decision::Layer(0); 3]);
        assert_eq!(
            allocate(300_000, &wants),
            [Decision::Layer(0), Decision::Layer(0), Decision::Paused(Bandwidth)],
            "in order"
        );
    }

    #[test]
    fn moving_up_needs_headroom_staying_does_not() {
        let mut w = sized(Other, 1280, 720);
        // 1.5 Mbit/s exactly fits high from nothing...
        assert_eq!(allocate(1_500_000, std::slice::from_ref(&w)), [Decision::Layer(2)]);
        // ...but from medium, a move up needs 15% over it.
        w.current = Some(1);
        assert_eq!(allocate(1_500_000, std::slice::from_ref(&w)), [Decision::Layer(1)]);
        assert_eq!(allocate(1_725_000, std::slice::from_ref(&w)), [Decision::Layer(2)]);
        // On high already, it stays at the same estimate.
        w.current = Some(2);
        assert_eq!(allocate(1_500_000, std::slice::from_ref(&w)), [Decision::Layer(2)]);
    }

    #[test]
    fn a_track_without_simulcast_keeps_its_one_layer_unless_hidden() {
        let one = Want { layers: three()[1..2].to_vec(), ..want(Other) };
        assert_eq!(allocate(10_000_000, std::slice::from_ref(&one)), [Decision::Layer(0)]);
        assert_eq!(
            allocate(100_000, std::slice::from_ref(&one)),
            [Decision::Layer(0)],
            "no lower layer to fall back to: never paused for bandwidth"
        );
        let hidden = Want { hidden: true, ..one.clone() };
        assert_eq!(allocate(10_000_000, &[hidden]), [Decision::Paused(Hidden)]);
        // It takes what is left: a simulcast track after it gets only its lowest layer
        // if that still fits, else it is paused.
        assert_eq!(allocate(100_000, &[one, want(Other)])[1], Decision::Paused(Bandwidth));
    }

    #[test]
    fn layers_of_unknown_size_satisfy_any_size() {
        let mut w = sized(Other, 1280, 720);
        for l in &mut w.layers {
            l.width = 0;
            l.height = 0;
        }
        assert_eq!(allocate(10_000_000, &[w]), [Decision::Layer(0)], "the smallest is taken as large enough");
    }
}
