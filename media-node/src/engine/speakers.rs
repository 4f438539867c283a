//! Audio levels and active speakers.
//!
//! Every audio packet a publisher sends carries its loudness in the RFC 6464 header
//! extension (`-dBov`: 0 is full scale, 127 silence); [`LevelMeter`] folds those into one
//! verdict per [`INTERVAL`]. Each room ticks every [`INTERVAL`] while it has audio, and
//! sends `active_speakers` to everyone in it when the list of who speaks (and in which
//! order) changed; a level that merely moves is not news.
//!
//! ```text
//!  packet ── audio_level ──► LevelMeter::observe        (per published audio track)
//!  room tick (300 ms) ─────► LevelMeter::close → speaking? level
//!                            sort loudest first ── changed? ──► active_speakers
//!                                                           └──► re-allocate the room's
//!                                                                subscribers (speakers first)
//! ```
//!
//! A packet counts as voiced when it is louder than [`VOICED_DBOV`]; an interval is
//! speech when at least [`VOICED_SHARE`] of its packets were. A speaker stays on the list
//! through [`HANG_INTERVALS`] silent intervals, so the gaps between words do not make the
//! list flap. The reported level is the mean amplitude of the voiced packets, smoothed.

use std::time::{Duration, Instant};

use switchyard_api::signal::{ActiveSpeakers, ServerMessage, SpeakerInfo, TrackKind};

use super::{Engine, Output, Pid};

/// How often a room's speakers are evaluated, and the most often `active_speakers` is sent.
pub(crate) const INTERVAL: Duration = Duration::from_millis(300);

/// Louder than this (in -dBov) is voiced: speech is typically -20 to -40 dBov, room noise
/// below -50.
pub(crate) const VOICED_DBOV: u8 = 45;

/// The share of an interval's packets that must be voiced for it to be speech.
pub(crate) const VOICED_SHARE: f32 = 0.3;

/// Silent intervals a speaker stays listed for.
pub(crate) const HANG_INTERVALS: u8 = 2;

/// Weight of the newest interval in the smoothed level.
const SMOOTHING: f32 = 0.4;

/// One audio track's loudness.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct LevelMeter {
    packets: u32,
    voiced: u32,
    /// Sum of the voiced packets' amplitudes (0..1) in this interval.
    amplitude: f32,
    /// The smoothed level, 0..1.
    level: f32,
    /// Silent intervals left before the track stops counting as speaking; 0: not speaking.
    hang: u8,
}

/// Amplitude (0..1) of a level in -dBov.
fn amplitude(dbov: u8) -> f32 {
    10f32.powf(-f32::from(dbov.min(127)) / 20.0)
}

impl LevelMeter {
    /// A packet with its RFC 6464 level (str0m gives it as `-dBov`, 0 to -127), or none
    /// (the publisher did not negotiate the extension: the packet counts as silent).
    pub(crate) fn observe(&mut self, audio_level: Option<i8>) {
        self.packets += 1;
        let Some(level) = audio_level else { return };
        let dbov = level.unsigned_abs();
        if dbov < VOICED_DBOV {
            self.voiced += 1;
            self.amplitude += amplitude(dbov);
        }
    }

    /// End the interval: the smoothed level, if the track counts as speaking now.
    pub(crate) fn close(&mut self) -> Option<f32> {
        let speech = self.packets > 0 && self.voiced as f32 >= VOICED_SHARE * self.packets as f32;
        if speech {
            let mean = self.amplitude / self.voiced as f32;
            self.level = if self.hang == 0 { mean } else { self.level + SMOOTHING * (mean - self.level) };
            self.hang = HANG_INTERVALS + 1;
        } else {
            self.hang = self.hang.saturating_sub(1);
            if self.hang == 0 {
                self.level = 0.0;
            }
        }
        self.packets = 0;
        self.voiced = 0;
        self.amplitude = 0.0;
        (self.hang > 0).then_some(self.level)
    }
}

/// A room's speaker state.
#[derive(Debug, Default)]
pub(crate) struct Speakers {
    /// When the room next evaluates its speakers; `None` while it has no audio.
    pub(crate) next_tick: Option<Instant>,
    /// Who was speaking at the last tick, loudest first.
    pub(crate) current: Vec<Pid>,
    /// This tick's speakers and levels (kept to reuse its memory).
    scratch: Vec<(Pid, f32)>,
}

/// Speaking participants, loudest first (ties by participant id, so the order is stable).
pub(crate) fn rank(speaking: &mut [(Pid, f32)]) {
    speaking.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

impl Engine {
    /// A room with audio ticks every [`INTERVAL`] from the first audio track on.
    pub(super) fn start_speaker_ticks(&mut self, now: Instant, pid: Pid) {
        if let Some(room) = self.peers.get(&pid).and_then(|p| self.rooms.get_mut(&p.room))
            && room.speakers.next_tick.is_none()
        {
            room.speakers.next_tick = Some(now + INTERVAL);
        }
    }

    /// Evaluate the speakers of every room whose tick is due. Allocates nothing unless the
    /// list changed (the scratch lists are the room's own).
    pub(super) fn speaker_ticks(&mut self, now: Instant) {
        let (rooms, peers, out) = (&mut self.rooms, &mut self.peers, &mut self.out);
        // Subscribers to re-allocate: a speaker's camera is served before the others.
        let mut changed: Vec<Pid> = Vec::new();
        for room in rooms.values_mut().filter(|r| r.speakers.next_tick.is_some_and(|t| t <= now)) {
            let s = &mut room.speakers;
            s.scratch.clear();
            let mut audio = false;
            for &m in &room.members {
                let Some(peer) = peers.get_mut(&m) else { continue };
                let mut loudest: Option<f32> = None;
                for t in peer.published.iter_mut().filter(|t| t.kind == TrackKind::Audio) {
                    audio = true;
                    if let Some(level) = t.level.close().filter(|_| !t.muted) {
                        loudest = Some(loudest.map_or(level, |l| l.max(level)));
                    }
                }
                if let Some(level) = loudest {
                    s.scratch.push((m, level));
                }
            }
            rank(&mut s.scratch);
            s.next_tick = (audio || !s.current.is_empty()).then_some(now + INTERVAL);
            if s.scratch.iter().map(|(p, _)| p).eq(s.current.iter()) {
                continue;
            }
            s.current.clear();
            s.current.extend(s.scratch.iter().map(|(p, _)| *p));
            let speakers = s
                .scratch
                .iter()
                .filter_map(|(p, level)| {
                    let sid = peers.get(p)?.sid.clone();
                    Some(SpeakerInfo { participant_sid: sid, level: (level * 1000.0).round() / 1000.0 })
                })
                .collect();
            let msg = ServerMessage::ActiveSpeakers(ActiveSpeakers { speakers });
            for &m in room.members.iter().filter(|m| peers.contains_key(m)) {
                out.push_back(Output::Signal(m, Box::new(msg.clone())));
                changed.push(m);
            }
        }
        for pid in changed {
            self.allocate_for(pid);
        }
    }

    /// Whether `pid` is among its room's active speakers (for allocation priority).
    pub(crate) fn is_speaking(&self, pid: Pid) -> bool {
        self.peers.get(&pid).and_then(|p| self.rooms.get(&p.room)).is_some_and(|r| r.speakers.current.contains(&pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(m: &mut LevelMeter, voiced: u32, silent: u32, dbov: i8) -> Option<f32> {
        for _ in 0..voiced {
            m.observe(Some(-dbov));
        }
        for _ in 0..silent {
            m.observe(Some(-127));
        }
        m.close()
    }

    #[test]
    fn speech_is_an_interval_with_enough_voiced_packets() {
        let mut m = LevelMeter::default();
        assert_eq!(interval(&mut m, 0, 15, 0), None, "silence");
        assert_eq!(interval(&mut m, 4, 11, 20), None, "4 of 15 voiced is below the share");
        let level = interval(&mut m, 5, 10, 20).expect("5 of 15 is speech");
        assert!((level - 0.1).abs() < 1e-4, "-20 dBov is amplitude 0.1: {level}");
        let mut quiet = LevelMeter::default();
        assert_eq!(interval(&mut quiet, 15, 0, 50), None, "noise at -50 dBov is not voiced");
        let mut none = LevelMeter::default();
        for _ in 0..15 {
            none.observe(None);
        }
        assert_eq!(none.close(), None, "packets without the extension are silent");
    }

    #[test]
    fn a_speaker_hangs_over_short_pauses_then_drops() {
        let mut m = LevelMeter::default();
        assert!(interval(&mut m, 15, 0, 10).is_some());
        for i in 0..HANG_INTERVALS {
            assert!(interval(&mut m, 0, 15, 0).is_some(), "pause {i} keeps the speaker");
        }
        assert_eq!(interval(&mut m, 0, 15, 0), None, "then it drops");
        assert!(interval(&mut m, 15, 0, 30).is_some(), "and comes back");
    }

    #[test]
    fn the_level_is_smoothed_while_speaking() {
        let mut m = LevelMeter::default();
        let first = interval(&mut m, 15, 0, 6).unwrap();
        let second = interval(&mut m, 15, 0, 40).unwrap();
        assert!(second < first && second > amplitude(40), "moves toward the new level: {first} → {second}");
    }

    #[test]
    fn loudest_first_and_stable() {
        let mut v = vec![(3, 0.1), (1, 0.5), (2, 0.1)];
        rank(&mut v);
        assert_eq!(v, vec![(1, 0.5), (2, 0.1), (3, 0.1)]);
    }
}
