//! Connection quality per participant, and the RTCP-derived quality counters.
//!
//! Each `Rtc` reports its statistics every [`STATS_INTERVAL`] (str0m's `PeerStats` and
//! per-stream `MediaIngressStats` / `MediaEgressStats`, from the RTCP reports both ends
//! exchange). They feed the node's histograms (loss, round-trip time, jitter) and counters
//! (NACKs, PLIs, FIRs), and each participant's latest [`Measures`]. Every
//! [`EVAL_INTERVAL`] the room scores each participant ([`score`], an E-model-style mean
//! opinion score) and sends `connection_quality` with the verdicts that changed. A verdict
//! changes only when two evaluations in a row agree, so one bad second is not news.
//!
//! ```text
//!  R   = 93.2 − Id − Ie                      (ITU-T G.107, simplified)
//!  d   = rtt/2 + 2·jitter + 10 ms            effective one-way delay
//!  Id  = d/40 ms           for d < 160 ms
//!        (d − 120 ms)/10   above
//!  Ie  = 4 · loss %                          (worst direction)
//!  MOS = 1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R),  R clamped to 0..100
//! ```
//!
//! Excellent is MOS ≥ 4.0 (about 2 % loss on a short path), good ≥ 3.0 (about 8 %), poor
//! below; **lost** when nothing has come from the participant for [`LOST_AFTER`].

use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid, Rid};
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};
use switchyard_api::signal::{ConnectionQuality, ConnectionQualityInfo, ConnectionQualityUpdate, ServerMessage};

use super::{Engine, Output, Pid};

/// How often each `Rtc` reports statistics.
pub(crate) const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// How often a room scores its participants.
pub(crate) const EVAL_INTERVAL: Duration = Duration::from_secs(2);

/// Nothing received from a participant for this long: its connection is lost.
pub(crate) const LOST_AFTER: Duration = Duration::from_secs(5);

/// What the latest reports say about one participant's media, both directions.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Measures {
    /// Fraction of packets lost (0..1), the worse direction.
    pub(crate) loss: Option<f32>,
    /// Round-trip time.
    pub(crate) rtt: Option<Duration>,
    /// Interarrival jitter, the worst stream.
    pub(crate) jitter: Option<Duration>,
}

/// The mean opinion score (1.0 to about 4.4) of `m`; missing measures count as perfect.
pub(crate) fn score(m: &Measures) -> f32 {
    let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f32() * 1000.0);
    let delay = ms(m.rtt) / 2.0 + 2.0 * ms(m.jitter) + 10.0;
    let id = if delay < 160.0 { delay / 40.0 } else { (delay - 120.0) / 10.0 };
    let ie = 4.0 * 100.0 * m.loss.unwrap_or(0.0).clamp(0.0, 1.0);
    let r = (93.2 - id - ie).clamp(0.0, 100.0);
    1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
}

/// The verdict for a score.
pub(crate) fn verdict(score: f32) -> ConnectionQuality {
    if score >= 4.0 {
        ConnectionQuality::Excellent
    } else if score >= 3.0 {
        ConnectionQuality::Good
    } else {
        ConnectionQuality::Poor
    }
}

/// Upper bounds of the loss-fraction histogram.
pub const LOSS_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
/// Upper bounds of the round-trip-time histogram, seconds.
pub const RTT_BUCKETS: [f64; 9] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6];
/// Upper bounds of the downlink-estimate histogram, bits per second.
pub const ESTIMATE_BUCKETS: [f64; 9] = [1e5, 2.5e5, 5e5, 1e6, 2e6, 4e6, 8e6, 1.6e7, 5e7];
/// Upper bounds of the jitter histogram, seconds.
pub const JITTER_BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32];

/// A cumulative histogram with nine fixed bounds and +Inf; `Copy`, so engine stats stay
/// plain data the node can sum across shards.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Hist {
    /// Observations per bucket (not cumulative); the last is above every bound.
    pub counts: [u64; 10],
    /// Sum of the observations.
    pub sum: f64,
}

impl Hist {
    /// Count `v` against `bounds`.
    pub fn observe(&mut self, bounds: &[f64; 9], v: f64) {
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += v;
    }

    /// Add another histogram of the same bounds.
    pub fn add(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The node-wide quality counters (cumulative), part of [`super::EngineStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct QualityStats {
    /// Loss fraction per participant and report, worse direction.
    pub loss: Hist,
    /// Round-trip time per participant and report, seconds.
    pub rtt: Hist,
    /// Worst stream jitter per participant and report, seconds.
    pub jitter: Hist,
    /// Downlink estimate of each subscriber receiving video, once per allocation period,
    /// bits per second.
    pub estimate: Hist,
    /// NACKs received from subscribers (they lost a packet we sent).
    pub nacks_in: u64,
    /// NACKs sent to publishers (we lost a packet they sent).
    pub nacks_out: u64,
    /// PLIs received from subscribers.
    pub plis_in: u64,
    /// FIRs received from subscribers.
    pub firs_in: u64,
    /// Participants by their current verdict: lost, poor, good, excellent.
    pub participants: [u64; 4],
}

/// One participant's quality state.
#[derive(Debug)]
pub(crate) struct PeerQuality {
    /// The latest measures, folded from this evaluation interval's reports.
    latest: Measures,
    /// When something last arrived from the participant.
    pub(crate) last_input: Instant,
    /// The verdict last sent.
    pub(crate) reported: Option<ConnectionQuality>,
    /// A different verdict seen at the last evaluation, not yet confirmed.
    candidate: Option<ConnectionQuality>,
    /// The last cumulative NACK, PLI and FIR counts per stream (ingress `true`).
    seen: Vec<(Mid, Option<Rid>, bool, [u64; 3])>,
}

impl PeerQuality {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            latest: Measures::default(),
            last_input: now,
            reported: None,
            candidate: None,
            seen: Vec::with_capacity(8),
        }
    }

    /// The counts' growth since the stream's last report.
    fn delta(&mut self, mid: Mid, rid: Option<Rid>, ingress: bool, now: [u64; 3]) -> [u64; 3] {
        let i = match self.seen.iter().position(|s| s.0 == mid && s.1 == rid && s.2 == ingress) {
            Some(i) => i,
            None => {
                self.seen.push((mid, rid, ingress, [0; 3]));
                self.seen.len() - 1
            }
        };
        let before = std::mem::replace(&mut self.seen[i].3, now);
        [0, 1, 2].map(|k| now[k].saturating_sub(before[k]))
    }

    /// Evaluate at `now`: the verdict to send, if it changed (and was seen twice).
    pub(crate) fn evaluate(&mut self, now: Instant) -> Option<(ConnectionQuality, f32)> {
        let lost = now.saturating_duration_since(self.last_input) >= LOST_AFTER;
        let s = if lost { 1.0 } else { score(&self.latest) };
        let v = if lost { ConnectionQuality::Lost } else { verdict(s) };
        if Some(v) == self.reported {
            self.candidate = None;
            return None;
        }
        if self.candidate != Some(v) {
            self.candidate = Some(v);
            return None;
        }
        self.candidate = None;
        self.reported = Some(v);
        Some((v, (s * 100.0).round() / 100.0))
    }
}

/// A jitter in RTP timestamp units as a duration, at the clock rate of `kind`.
fn jitter(units: u32, kind: MediaKind) -> Duration {
    let rate = if kind == MediaKind::Audio { 48_000.0 } else { 90_000.0 };
    Duration::from_secs_f64(f64::from(units) / rate)
}

fn max_opt<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b > a { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl Engine {
    /// A participant's transport-level report (once per [`STATS_INTERVAL`]).
    pub(super) fn peer_stats(&mut self, pid: Pid, s: PeerStats) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let loss = max_opt(s.egress_loss_fraction, s.ingress_loss_fraction);
        let q = &mut peer.quality;
        q.latest.loss = loss.or(q.latest.loss);
        q.latest.rtt = s.rtt.or(q.latest.rtt);
        let stats = &mut self.stats.quality;
        if let Some(loss) = loss {
            stats.loss.observe(&LOSS_BUCKETS, f64::from(loss));
        }
        if let Some(rtt) = s.rtt {
            stats.rtt.observe(&RTT_BUCKETS, rtt.as_secs_f64());
        }
        if let Some(j) = q.latest.jitter {
            stats.jitter.observe(&JITTER_BUCKETS, j.as_secs_f64());
        }
    }

    /// A publisher's stream as we receive it.
    pub(super) fn ingress_stats(&mut self, pid: Pid, s: MediaIngressStats) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let kind = peer.rtc.media(s.mid).map_or(MediaKind::Video, |m| m.kind());
        let [nacks, _, _] = peer.quality.delta(s.mid, s.rid, true, [s.nacks, s.plis, s.firs]);
        self.stats.quality.nacks_out += nacks;
        let q = &mut peer.quality.latest;
        q.jitter = max_opt(q.jitter, Some(jitter(s.jitter, kind)));
        q.loss = max_opt(q.loss, s.loss);
        q.rtt = max_opt(q.rtt, s.rtt);
    }

    /// A subscriber's stream as it reports receiving it.
    pub(super) fn egress_stats(&mut self, pid: Pid, s: MediaEgressStats) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let kind = peer.rtc.media(s.mid).map_or(MediaKind::Video, |m| m.kind());
        let [nacks, plis, firs] = peer.quality.delta(s.mid, s.rid, false, [s.nacks, s.plis, s.firs]);
        let stats = &mut self.stats.quality;
        stats.nacks_in += nacks;
        stats.plis_in += plis;
        stats.firs_in += firs;
        let q = &mut peer.quality.latest;
        if let Some(r) = &s.remote {
            q.jitter = max_opt(q.jitter, Some(jitter(r.jitter, kind)));
        }
        q.loss = max_opt(q.loss, s.loss);
        q.rtt = max_opt(q.rtt, s.rtt);
    }

    /// Score every participant of the rooms whose evaluation is due, and tell each room
    /// what changed.
    pub(super) fn quality_ticks(&mut self, now: Instant) {
        let (rooms, peers, out) = (&mut self.rooms, &mut self.peers, &mut self.out);
        for room in rooms.values_mut().filter(|r| r.quality_tick.is_some_and(|t| t <= now)) {
            room.quality_tick = (!room.members.is_empty()).then_some(now + EVAL_INTERVAL);
            // A hidden participant's verdict goes to itself only.
            let mut visible = Vec::new();
            let mut own = Vec::new();
            for &m in &room.members {
                let Some(peer) = peers.get_mut(&m) else { continue };
                if let Some((quality, score)) = peer.quality.evaluate(now) {
                    let info = ConnectionQualityInfo { participant_sid: peer.sid.clone(), quality, score };
                    if peer.grants.hidden { own.push((m, info)) } else { visible.push(info) }
                }
                // The next interval starts from fresh reports.
                peer.quality.latest = Measures::default();
            }
            for &m in room.members.iter().filter(|m| peers.contains_key(m)) {
                let mut updates = visible.clone();
                updates.extend(own.iter().filter(|(p, _)| *p == m).map(|(_, i)| i.clone()));
                if !updates.is_empty() {
                    let msg = ServerMessage::ConnectionQuality(ConnectionQualityUpdate { updates });
                    out.push_back(Output::Signal(m, Box::new(msg)));
                }
            }
        }
        let mut by = [0u64; 4];
        for p in self.peers.values() {
            if let Some(q) = p.quality.reported {
                by[q as usize] += 1;
            }
        }
        self.stats.quality.participants = by;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(loss: f32, rtt_ms: u64, jitter_ms: u64) -> Measures {
        Measures {
            loss: Some(loss),
            rtt: Some(Duration::from_millis(rtt_ms)),
            jitter: Some(Duration::from_millis(jitter_ms)),
        }
    }

    #[test]
    fn scores_follow_loss_delay_and_jitter() {
        assert_eq!(verdict(score(&Measures::default())), ConnectionQuality::Excellent, "nothing known: no penalty");
        assert_eq!(verdict(score(&m(0.0, 40, 5))), ConnectionQuality::Excellent);
        assert_eq!(verdict(score(&m(0.01, 80, 10))), ConnectionQuality::Excellent);
        assert_eq!(verdict(score(&m(0.05, 80, 10))), ConnectionQuality::Good, "5 % loss");
        assert_eq!(verdict(score(&m(0.0, 600, 20))), ConnectionQuality::Good, "long path, no loss");
        assert_eq!(verdict(score(&m(0.12, 80, 10))), ConnectionQuality::Poor, "12 % loss");
        assert_eq!(verdict(score(&m(0.02, 900, 80))), ConnectionQuality::Poor, "satellite-like delay and jitter");
        let mut last = 5.0;
        for loss in [0.0, 0.01, 0.02, 0.05, 0.1, 0.2] {
            let s = score(&m(loss, 50, 5));
            assert!(s < last, "more loss, lower score: {loss} → {s}");
            last = s;
        }
        assert!(score(&m(1.0, 5000, 1000)) >= 1.0, "never below 1");
    }

    #[test]
    fn a_verdict_changes_only_when_seen_twice() {
        let t0 = Instant::now();
        let mut q = PeerQuality::new(t0);
        q.latest = m(0.0, 40, 5);
        assert_eq!(q.evaluate(t0), None, "first sight is a candidate");
        q.latest = m(0.0, 40, 5);
        assert_eq!(q.evaluate(t0).map(|v| v.0), Some(ConnectionQuality::Excellent));
        q.latest = m(0.2, 40, 5);
        assert_eq!(q.evaluate(t0), None, "one bad report is not news");
        q.latest = m(0.0, 40, 5);
        assert_eq!(q.evaluate(t0), None, "and it passed");
        q.latest = m(0.2, 40, 5);
        assert_eq!(q.evaluate(t0), None);
        q.latest = m(0.2, 40, 5);
        assert_eq!(q.evaluate(t0).map(|v| v.0), Some(ConnectionQuality::Poor), "twice in a row is");
        let later = t0 + LOST_AFTER;
        assert_eq!(q.evaluate(later), None);
        assert_eq!(q.evaluate(later), Some((ConnectionQuality::Lost, 1.0)), "nothing received for 5 s");
    }

    #[test]
    fn histograms_bucket_and_sum() {
        let mut h = Hist::default();
        for v in [0.0, 0.001, 0.0011, 0.3, 2.0] {
            h.observe(&LOSS_BUCKETS, v);
        }
        assert_eq!(h.counts, [2, 1, 0, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(h.count(), 5);
        let mut total = h;
        total.add(&h);
        assert_eq!(total.count(), 10);
        assert!((total.sum - 2.0 * 2.3021).abs() < 1e-9);
    }

    #[test]
    fn deltas_per_stream() {
        let mut q = PeerQuality::new(Instant::now());
        let mid = Mid::from("0");
        assert_eq!(q.delta(mid, None, false, [3, 1, 0]), [3, 1, 0]);
        assert_eq!(q.delta(mid, None, false, [5, 1, 1]), [2, 0, 1]);
        assert_eq!(q.delta(mid, None, true, [1, 0, 0]), [1, 0, 0], "ingress apart from egress");
        assert_eq!(q.delta(mid, Some(Rid::from("h")), false, [1, 0, 0]), [1, 0, 0], "each layer apart");
    }
}
