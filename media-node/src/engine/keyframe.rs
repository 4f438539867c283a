//! Keyframes: a payload peek that tells keyframes apart without depacketizing (layer
//! switches and new subscribers start on one), and the throttle on asking a publisher for
//! one (PLI/FIR): at most one request per track per [`THROTTLE`]; a request inside the
//! window is not lost but sent when the window ends, merged with any others.

use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{KeyframeRequest, KeyframeRequestKind, Rid};

use super::subscription::SubState;
use super::{Engine, Pid};

/// How often a keyframe may be asked of one layer of a publisher track.
pub(crate) const THROTTLE: Duration = Duration::from_millis(500);

/// One layer's requests: `rid` `None` is the request for every layer at once.
#[derive(Debug)]
struct LayerRequests {
    rid: Option<Rid>,
    last: Option<Instant>,
    /// Held back by the throttle: its kind and when it is due.
    deferred: Option<(KeyframeRequestKind, Instant)>,
}

/// One published track's keyframe requests, throttled per layer: a request for one layer
/// never holds back, nor is merged into, a request for another, and a held-back request
/// is sent later for the layer it was for, never widened to every layer (a request for
/// every layer makes a simulcast encoder produce a keyframe on each).
#[derive(Debug, Default)]
pub(crate) struct KeyframeThrottle {
    layers: Vec<LayerRequests>,
    /// Requests sent to the publisher.
    pub(crate) requests: u64,
}

impl KeyframeThrottle {
    /// May a request go to the publisher now? If not, it is remembered for later.
    pub(crate) fn ask(&mut self, now: Instant, rid: Option<Rid>, kind: KeyframeRequestKind) -> bool {
        // A request for every layer also answers one for a single layer.
        let all = self.layers.iter().find(|l| l.rid.is_none()).and_then(|l| l.last);
        let i = match self.layers.iter().position(|l| l.rid == rid) {
            Some(i) => i,
            None => {
                self.layers.push(LayerRequests { rid, last: None, deferred: None });
                self.layers.len() - 1
            }
        };
        let layer = &mut self.layers[i];
        let last = if rid.is_some() { layer.last.max(all) } else { layer.last };
        if last.is_none_or(|t| now >= t + THROTTLE) {
            layer.last = Some(now);
            layer.deferred = None;
            self.requests += 1;
            return true;
        }
        let kind = match layer.deferred {
            Some((KeyframeRequestKind::Fir, _)) => KeyframeRequestKind::Fir,
            _ => kind,
        };
        layer.deferred = Some((kind, last.expect("throttled") + THROTTLE));
        false
    }

    /// When the earliest held-back request is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.layers.iter().filter_map(|l| l.deferred.map(|(_, due)| due)).min()
    }

    /// A held-back request whose window has ended; call until `None`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<(Option<Rid>, KeyframeRequestKind)> {
        let layer = self.layers.iter_mut().find(|l| l.deferred.is_some_and(|(_, due)| now >= due))?;
        let (kind, _) = layer.deferred.take()?;
        Some((layer.rid, kind))
    }
}

impl Engine {
    /// A subscriber's `Rtc` asks for a keyframe (the receiver sent PLI/FIR): ask the
    /// publisher of that track, for the layer the subscriber gets.
    pub(super) fn subscriber_wants_keyframe(&mut self, now: Instant, pid: Pid, req: KeyframeRequest) {
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        let Some(sub) = peer.subs.iter_mut().find(|s| s.state == SubState::Open(req.mid)) else { return };
        sub.layers.repair = true;
        let (publisher, pub_mid, rid) = (sub.publisher, sub.pub_mid, sub.layers.current.or(sub.layers.target));
        self.request_keyframe(now, publisher, pub_mid, rid, req.kind);
    }
}

/// True when an RTP payload of `codec` starts a keyframe (intra frame). Looks at the
/// payload descriptor and the first codec header bytes only.
pub(crate) fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_keyframe(payload),
        Codec::Vp9 => vp9_keyframe(payload),
        Codec::H264 => h264_keyframe(payload),
        Codec::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
        _ => true,
    }
}

fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: one byte, or two when its M bit is set.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    // VP8 payload header: P bit (bit 0) is 0 for a key frame.
    p.get(i).is_some_and(|h| h & 0x01 == 0)
}

fn vp9_keyframe(p: &[u8]) -> bool {
    // I|P|L|F|B|E|V|Z: not inter-predicted (P=0) and the start of a frame (B=1).
    p.first().is_some_and(|b| b & 0x40 == 0 && b & 0x08 != 0)
}

fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        5 | 7 => true,
        // STAP-A: a list of (16-bit size, NAL unit).
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                if matches!(p[i + 2] & 0x1f, 5 | 7) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        // FU-A: the start fragment of an IDR.
        28 => p.get(1).is_some_and(|h| h & 0x80 != 0 && h & 0x1f == 5),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_sends_one_request_per_window_and_keeps_the_rest() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::default();
        assert!(k.ask(t0, None, KeyframeRequestKind::Pli));
        assert_eq!(k.deadline(), None, "nothing held back");
        assert!(!k.ask(t0 + Duration::from_millis(100), Some(Rid::from("h")), KeyframeRequestKind::Pli));
        assert!(!k.ask(t0 + Duration::from_millis(200), Some(Rid::from("h")), KeyframeRequestKind::Fir));
        assert_eq!(k.deadline(), Some(t0 + THROTTLE));
        assert_eq!(k.take_due(t0 + Duration::from_millis(499)), None, "not before the window ends");
        assert_eq!(
            k.take_due(t0 + THROTTLE),
            Some((Some(Rid::from("h")), KeyframeRequestKind::Fir)),
            "merged: FIR wins"
        );
        assert_eq!(k.take_due(t0 + THROTTLE), None, "taken once");
        assert!(k.ask(t0 + THROTTLE, Some(Rid::from("h")), KeyframeRequestKind::Fir));
        assert!(k.ask(t0 + THROTTLE, Some(Rid::from("q")), KeyframeRequestKind::Pli), "another layer is not held back");
        assert!(!k.ask(t0 + THROTTLE, Some(Rid::from("h")), KeyframeRequestKind::Pli));
        assert_eq!(
            k.take_due(t0 + THROTTLE * 2),
            Some((Some(Rid::from("h")), KeyframeRequestKind::Pli)),
            "held back for its layer, not widened to every layer"
        );
        assert_eq!(k.take_due(t0 + THROTTLE * 2), None);
        assert_eq!(k.requests, 3);
    }

    #[test]
    fn vp8_keyframes() {
        // S=1, PID=0, no extension; payload header P=0.
        assert!(is_keyframe(Codec::Vp8, &[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Inter frame: P=1.
        assert!(!is_keyframe(Codec::Vp8, &[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!is_keyframe(Codec::Vp8, &[0x00, 0x00]));
        // Extended: X=1, I=1 with 15-bit picture id, L=1, T=1; then P=0.
        assert!(is_keyframe(Codec::Vp8, &[0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x00]));
        assert!(!is_keyframe(Codec::Vp8, &[0x90, 0xe0, 0x81, 0x23, 0x05, 0x20, 0x01]));
        assert!(!is_keyframe(Codec::Vp8, &[]));
        assert!(!is_keyframe(Codec::Vp8, &[0x90]), "truncated descriptor");
    }

    #[test]
    fn vp9_h264_av1_keyframes() {
        assert!(is_keyframe(Codec::Vp9, &[0x08]));
        assert!(!is_keyframe(Codec::Vp9, &[0x48]), "inter-predicted");
        assert!(!is_keyframe(Codec::Vp9, &[0x00]), "not the start of a frame");

        assert!(is_keyframe(Codec::H264, &[0x65]), "IDR");
        assert!(is_keyframe(Codec::H264, &[0x67]), "SPS");
        assert!(!is_keyframe(Codec::H264, &[0x41]), "non-IDR slice");
        assert!(is_keyframe(Codec::H264, &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68]), "STAP-A with SPS");
        assert!(!is_keyframe(Codec::H264, &[0x78, 0x00, 0x01, 0x41]), "STAP-A without");
        assert!(is_keyframe(Codec::H264, &[0x7c, 0x85]), "FU-A start of IDR");
        assert!(!is_keyframe(Codec::H264, &[0x7c, 0x05]), "FU-A middle of IDR");

        assert!(is_keyframe(Codec::Av1, &[0x18]));
        assert!(!is_keyframe(Codec::Av1, &[0x10]));

        assert!(is_keyframe(Codec::Opus, &[0x00]), "audio is always decodable");
    }
}
