//! Synthetic encoded media of realistic sizes: what a camera and a microphone would put
//! on the wire, without an encoder.
//!
//! Video is VP8 at a fixed frame rate; a keyframe every `keyframe_interval` is
//! [`KEY_RATIO`] times the size of a delta frame, and the delta size is chosen so a group
//! of pictures averages the layer's bitrate. A frame is split into equal packets of at
//! most [`MAX_PAYLOAD`] bytes, each with a VP8 payload descriptor (RFC 7741) carrying a
//! 15-bit PictureID; a frame's first packet starts with a VP8 frame header whose P bit
//! tells key from delta frames, which is what SFUs look at. Audio is Opus: one packet
//! per 20 ms of the requested bitrate. Everything is deterministic, so another load
//! generator can send byte-for-byte the same sizes (`bench/lkload` does).

use std::time::Duration;

/// Largest RTP payload (descriptor included).
pub(crate) const MAX_PAYLOAD: usize = 1000;
/// A keyframe is this many delta frames in size.
pub(crate) const KEY_RATIO: usize = 4;
/// VP8 payload descriptor with X=1, I=1 and a 15-bit PictureID.
const DESCRIPTOR: usize = 4;
/// Opus packet duration.
pub(crate) const AUDIO_PTIME: Duration = Duration::from_millis(20);

/// One encoding of a video track.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Layer {
    /// Simulcast stream id (`q`, `h`, `f`); none for a single-layer track.
    pub(crate) rid: Option<&'static str>,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) bitrate: u64,
}

/// What a publisher's camera sends.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VideoSpec {
    /// Lowest first.
    pub(crate) layers: Vec<Layer>,
    pub(crate) fps: u32,
    pub(crate) keyframe_interval: Duration,
}

impl VideoSpec {
    /// `width × height` at `bitrate`; with `simulcast`, two more layers below it at half
    /// and a quarter of the size and a quarter and a sixteenth of the bitrate.
    pub(crate) fn new(width: u32, height: u32, bitrate: u64, simulcast: bool, keyframe_interval: Duration) -> Self {
        let full = |rid| Layer { rid, width, height, bitrate };
        let layers = if simulcast {
            vec![
                Layer { rid: Some("q"), width: width / 4, height: height / 4, bitrate: bitrate / 16 },
                Layer { rid: Some("h"), width: width / 2, height: height / 2, bitrate: bitrate / 4 },
                full(Some("f")),
            ]
        } else {
            vec![full(None)]
        };
        VideoSpec { layers, fps: 30, keyframe_interval }
    }

    pub(crate) fn frame_interval(&self) -> Duration {
        Duration::from_secs(1) / self.fps
    }

    /// Frames in a group of pictures (keyframe to keyframe).
    pub(crate) fn gop_frames(&self) -> u64 {
        ((self.keyframe_interval.as_secs_f64() * f64::from(self.fps)).round() as u64).max(1)
    }

    /// (is keyframe, encoded size in bytes) of frame `n` of `layer`.
    pub(crate) fn frame(&self, layer: &Layer, n: u64) -> (bool, usize) {
        let gop = self.gop_frames();
        let gop_bytes = layer.bitrate as f64 / 8.0 * gop as f64 / f64::from(self.fps);
        let delta = (gop_bytes / (gop as f64 - 1.0 + KEY_RATIO as f64)).round().max(1.0) as usize;
        let key = n.is_multiple_of(gop);
        (key, if key { delta * KEY_RATIO } else { delta })
    }
}

/// Payload sizes of the packets carrying a frame of `size` bytes (descriptor included):
/// as few as fit in [`MAX_PAYLOAD`], all the same size but the last.
pub(crate) fn split(size: usize) -> impl Iterator<Item = usize> {
    let body = MAX_PAYLOAD - DESCRIPTOR;
    let packets = size.div_ceil(body).max(1);
    let each = size.div_ceil(packets);
    (0..packets).map(move |i| DESCRIPTOR + if i + 1 < packets { each } else { size - each * (packets - 1) })
}

/// The RTP payload of packet `index` of a frame: VP8 descriptor, then (first packet) the
/// frame header, then filler.
pub(crate) fn vp8_payload(picture_id: u16, key: bool, index: usize, len: usize, width: u32, height: u32) -> Vec<u8> {
    let start = if index == 0 { 0x10 } else { 0x00 };
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&[0x80 | start, 0x80, 0x80 | ((picture_id >> 8) as u8 & 0x7f), picture_id as u8]);
    if index == 0 {
        if key {
            // Frame tag (P=0, show_frame), start code, dimensions (little-endian, no scaling).
            p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
            p.extend_from_slice(&(width as u16).to_le_bytes());
            p.extend_from_slice(&(height as u16).to_le_bytes());
        } else {
            p.extend_from_slice(&[0x11, 0x02, 0x00]);
        }
    }
    let filler = picture_id as u8;
    p.resize(len.max(p.len()), filler);
    p
}

/// Bytes of one Opus packet at `bitrate` (at least the TOC byte and one more).
pub(crate) fn opus_size(bitrate: u64) -> usize {
    ((bitrate as f64 * AUDIO_PTIME.as_secs_f64() / 8.0).round() as usize).max(2)
}

/// An Opus packet: a CELT fullband 20 ms mono TOC byte, then filler.
pub(crate) fn opus_payload(n: u64, len: usize) -> Vec<u8> {
    let mut p = vec![n as u8; len];
    p[0] = 0xf8;
    p
}

/// Whether a VP8 payload starts a keyframe (the check SFUs make before switching).
#[cfg(test)]
fn is_vp8_keyframe(p: &[u8]) -> bool {
    p.len() > DESCRIPTOR && p[0] & 0x10 != 0 && p[DESCRIPTOR] & 0x01 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(simulcast: bool) -> VideoSpec {
        VideoSpec::new(1280, 720, 2_000_000, simulcast, Duration::from_millis(2500))
    }

    /// Bytes and packets per second of one layer over whole groups of pictures.
    fn rate(spec: &VideoSpec, layer: &Layer) -> (f64, f64) {
        let frames = spec.gop_frames() * 4;
        let (mut bytes, mut packets) = (0, 0);
        for n in 0..frames {
            let (_, size) = spec.frame(layer, n);
            bytes += size;
            packets += split(size).count();
        }
        let secs = frames as f64 / f64::from(spec.fps);
        (bytes as f64 * 8.0 / secs, packets as f64 / secs)
    }

    #[test]
    fn two_megabit_video_is_about_290_packets_a_second() {
        let s = spec(false);
        assert_eq!(s.gop_frames(), 75);
        let (bps, pps) = rate(&s, &s.layers[0]);
        assert!((bps - 2e6).abs() / 2e6 < 0.01, "{bps}");
        assert!((270.0..300.0).contains(&pps), "{pps}");
        let (key, key_size) = s.frame(&s.layers[0], 0);
        let (delta, delta_size) = s.frame(&s.layers[0], 1);
        assert!(key && !delta);
        assert_eq!(key_size, delta_size * KEY_RATIO);
        assert!(s.frame(&s.layers[0], 75).0, "the next group starts with a keyframe");
    }

    #[test]
    fn simulcast_layers_are_lowest_first_at_falling_rates() {
        let s = spec(true);
        let rids: Vec<_> = s.layers.iter().map(|l| l.rid.unwrap()).collect();
        assert_eq!(rids, ["q", "h", "f"]);
        assert_eq!((s.layers[0].width, s.layers[0].height, s.layers[0].bitrate), (320, 180, 125_000));
        let (q, _) = rate(&s, &s.layers[0]);
        assert!((q - 125_000.0).abs() / 125_000.0 < 0.02, "{q}");
    }

    #[test]
    fn frames_split_into_equal_packets_under_the_limit() {
        let sizes: Vec<usize> = split(2500).collect();
        assert_eq!(sizes, [838, 838, 836]);
        assert_eq!(sizes.iter().sum::<usize>(), 2500 + 3 * DESCRIPTOR);
        assert_eq!(split(10).collect::<Vec<_>>(), [14]);
        assert!(split(100_000).all(|s| s <= MAX_PAYLOAD));
    }

    #[test]
    fn payloads_carry_the_descriptor_and_the_keyframe_bit() {
        let key = vp8_payload(0x1234, true, 0, 500, 1280, 720);
        assert_eq!(key.len(), 500);
        assert_eq!(&key[..4], &[0x90, 0x80, 0x92, 0x34]);
        assert_eq!(&key[7..10], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([key[10], key[11]]), 1280);
        assert!(is_vp8_keyframe(&key));
        assert!(!is_vp8_keyframe(&vp8_payload(7, false, 0, 500, 1280, 720)));
        let rest = vp8_payload(7, true, 1, 500, 1280, 720);
        assert_eq!(rest[0], 0x80, "only a frame's first packet starts a partition");
        assert!(!is_vp8_keyframe(&rest));
    }

    #[test]
    fn opus_packets_match_the_bitrate() {
        assert_eq!(opus_size(32_000), 80);
        assert_eq!(opus_size(0), 2);
        let p = opus_payload(3, 80);
        assert_eq!((p.len(), p[0], p[1]), (80, 0xf8, 3));
    }
}
