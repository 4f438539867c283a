//! Per-subscriber RTP continuity: sequence numbers and timestamps are rewritten so that a
//! subscriber sees one unbroken stream even when the SFU switches simulcast layers or the
//! subscription is torn down and set up again. Also a payload peek that tells keyframes
//! apart without depacketizing, so layer switches happen only on a keyframe.

use str0m::format::Codec;

/// Where the next forwarded packet of one outgoing stream lands.
#[derive(Debug, Clone)]
pub(crate) struct Rewriter {
    /// The input stream (SSRC) the offsets were computed for.
    source: Option<u32>,
    seq_offset: i64,
    ts_offset: u32,
    /// The sequence number the first packet of a new source gets.
    next_seq: u64,
    /// The last timestamp written; `None` before the first packet.
    last_ts: Option<u32>,
    /// Timestamp step inserted at a switch, one frame's worth in the codec's clock.
    switch_step: u32,
}

impl Rewriter {
    /// A rewriter whose first packet will carry `first_seq`.
    pub(crate) fn new(first_seq: u16, switch_step: u32) -> Self {
        Self { source: None, seq_offset: 0, ts_offset: 0, next_seq: u64::from(first_seq), last_ts: None, switch_step }
    }

    /// Rewrite one packet of input stream `source` with extended sequence number `seq`
    /// and RTP timestamp `ts`. A new source (first packet, layer switch, resubscribe)
    /// continues right after the last packet written.
    pub(crate) fn rewrite(&mut self, source: u32, seq: u64, ts: u32) -> (u64, u32) {
        if self.source != Some(source) {
            self.source = Some(source);
            self.seq_offset = self.next_seq as i64 - seq as i64;
            let target_ts = match self.last_ts {
                None => ts,
                Some(last) => last.wrapping_add(self.switch_step),
            };
            self.ts_offset = target_ts.wrapping_sub(ts);
        }
        let out_seq = (seq as i64 + self.seq_offset).max(0) as u64;
        let out_ts = ts.wrapping_add(self.ts_offset);
        // Reordered (older) packets keep their rewritten numbers but don't move the tail.
        if out_seq >= self.next_seq {
            self.next_seq = out_seq + 1;
            self.last_ts = Some(out_ts);
        }
        (out_seq, out_ts)
    }

    /// Forget the current source: the next packet starts a new segment.
    pub(crate) fn reset_source(&mut self) {
        self.source = None;
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
    fn continuous_stream_keeps_its_spacing() {
        let mut r = Rewriter::new(100, 3000);
        assert_eq!(r.rewrite(1, 5000, 90_000), (100, 90_000));
        assert_eq!(r.rewrite(1, 5001, 93_000), (101, 93_000));
        assert_eq!(r.rewrite(1, 5003, 96_000), (103, 96_000), "a gap stays a gap (the receiver NACKs it)");
        assert_eq!(r.rewrite(1, 5002, 93_000), (102, 93_000), "reordered packet fills the gap");
        assert_eq!(r.rewrite(1, 5004, 99_000), (104, 99_000));
    }

    #[test]
    fn switching_source_continues_without_a_jump() {
        let mut r = Rewriter::new(10, 3000);
        r.rewrite(1, 70_000, 1_000_000);
        r.rewrite(1, 70_001, 1_003_000);
        // A different layer with unrelated numbering.
        assert_eq!(r.rewrite(2, 12, 555), (12, 1_006_000));
        assert_eq!(r.rewrite(2, 13, 3555), (13, 1_009_000));
        // Back to the first layer.
        assert_eq!(r.rewrite(1, 70_100, 1_300_000), (14, 1_012_000));
    }

    #[test]
    fn resubscribe_continues_after_the_last_packet() {
        let mut r = Rewriter::new(0, 960);
        assert_eq!(r.rewrite(7, 1, 4_294_966_000), (0, 4_294_966_000));
        assert_eq!(r.rewrite(7, 2, 4_294_966_960), (1, 4_294_966_960));
        assert_eq!(r.rewrite(7, 3, 624), (2, 624), "timestamps wrap like RTP's");
        r.reset_source();
        let (seq, ts) = r.rewrite(7, 900, 123);
        assert_eq!(seq, 3);
        assert_eq!(ts, 624 + 960);
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
