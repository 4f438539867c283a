//! What the engine reports: counters for metrics and the status the operator polls, and
//! the admin API's per-room view (participants, tracks, subscriptions and their packets).

use super::Engine;
use super::subscription::SubState;
use switchyard_api::signal::{StreamPauseReason, TrackKind};

/// Counters the driver exposes as metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    /// Rooms open.
    pub rooms: u64,
    /// Participants connected.
    pub participants: u64,
    /// Tracks published.
    pub tracks: u64,
    /// RTP packets received from publishers.
    pub packets_in: u64,
    /// RTP packets written to subscribers.
    pub packets_out: u64,
    /// Payload bytes received from publishers.
    pub bytes_in: u64,
    /// Payload bytes written to subscribers.
    pub bytes_out: u64,
    /// Participants held for a resume (their socket dropped).
    pub held: u64,
    /// Resumes that succeeded.
    pub resumes: u64,
    /// Resumes that failed, indexed by [`super::ResumeFailure`].
    pub resume_failures: [u64; 3],
    /// RTCP-derived quality counters and histograms.
    pub quality: super::quality::QualityStats,
    /// Simulcast layer changes decided by the allocator.
    pub layer_switches: u64,
    /// Keyframe requests (PLI/FIR) sent to publishers.
    pub keyframe_requests: u64,
    /// Video subscriptions paused now, by reason ([`PAUSE_REASONS`] order).
    pub paused_streams: [u64; 3],
    /// The latest downlink estimate any subscriber reported, bits per second.
    pub last_estimate_bps: u64,
}

/// One room, for the admin API: who is in it and what flows.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomReport {
    /// The room name.
    pub name: String,
    /// Server-assigned room id.
    pub sid: String,
    /// Participants and their tracks.
    pub participants: Vec<ParticipantReport>,
}

/// One participant, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantReport {
    /// Participant sid.
    pub sid: String,
    /// Identity.
    pub identity: String,
    /// Published tracks with counters.
    pub tracks: Vec<TrackReport>,
    /// Tracks received, with packets written.
    pub subscriptions: Vec<SubscriptionReport>,
}

/// One published track's counters.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackReport {
    /// Track sid.
    pub sid: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// Muted by its publisher.
    pub muted: bool,
    /// RTP packets received.
    pub packets: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Keyframes requested from the publisher.
    pub keyframe_requests: u64,
}

/// One subscription's counters.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionReport {
    /// The track.
    pub track_sid: String,
    /// Negotiated and forwarding.
    pub open: bool,
    /// RTP packets written.
    pub packets: u64,
}

/// Why video subscriptions are paused, in the order of [`EngineStats::paused_streams`].
pub const PAUSE_REASONS: [StreamPauseReason; 3] =
    [StreamPauseReason::Bandwidth, StreamPauseReason::Hidden, StreamPauseReason::PublisherMuted];

impl Engine {
    fn paused_streams(&self) -> [u64; 3] {
        let mut n = [0; 3];
        for reason in self.peers.values().flat_map(|p| &p.subs).filter_map(|s| s.told.and_then(|t| t.paused)) {
            if let Some(i) = PAUSE_REASONS.iter().position(|r| *r == reason) {
                n[i] += 1;
            }
        }
        n
    }

    /// Current counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            rooms: self.rooms.len() as u64,
            participants: self.peers.values().filter(|p| p.relay.is_none()).count() as u64,
            tracks: self.peers.values().map(|p| p.published.len() as u64).sum(),
            held: self.held(),
            paused_streams: self.paused_streams(),
            ..self.stats
        }
    }

    /// Rooms, participants and per-track counters.
    pub fn report(&self) -> Vec<RoomReport> {
        self.rooms
            .iter()
            .map(|(name, r)| RoomReport {
                name: name.clone(),
                sid: r.sid.clone(),
                participants: r
                    .members
                    .iter()
                    .filter_map(|m| self.peers.get(m))
                    .filter(|p| p.relay.is_none())
                    .map(|p| ParticipantReport {
                        sid: p.sid.clone(),
                        identity: p.identity.clone(),
                        tracks: p
                            .published
                            .iter()
                            .map(|t| TrackReport {
                                sid: t.sid.clone(),
                                kind: t.kind,
                                muted: t.muted,
                                packets: t.packets,
                                bytes: t.bytes,
                                keyframe_requests: t.keyframes.requests,
                            })
                            .collect(),
                        subscriptions: p
                            .subs
                            .iter()
                            .map(|s| SubscriptionReport {
                                track_sid: s.track_sid.clone(),
                                open: matches!(s.state, SubState::Open(_)),
                                packets: s.packets,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }
}
