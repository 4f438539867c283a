//! The RTP munger: per-subscriber continuity. Sequence numbers and timestamps are
//! rewritten so that a subscriber sees one unbroken stream even when the SFU switches
//! simulcast layers or the subscription is torn down and set up again; for VP8 the payload
//! descriptor's PictureID, TL0PICIDX and KEYIDX are rewritten too ([`Vp8Rewriter`]).
//!
//! Invariants a receiver depends on across a switch:
//! - sequence numbers, timestamps and PictureIDs only move forward: each encoder starts
//!   its PictureIDs at a random value, so the new layer's raw ids are as likely to lie
//!   behind the old layer's as ahead; a receiver takes a frame "behind" the last one it
//!   decoded for a stale one and drops it and every frame after it, with no loss to NACK,
//!   until its own keyframe request (seconds later). That was the stall after a switch.
//! - a packet of the new layer from before the keyframe the switch started on (late, or
//!   a retransmission) is dropped: rewritten, it would land on numbers the old layer
//!   already used.

/// Where the next forwarded packet of one outgoing stream lands.
use str0m::rtp::{Vp8Descriptor, Vp8Patch};

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
    /// The input sequence number the current segment started at.
    segment_start: u64,
}

impl Rewriter {
    /// A rewriter whose first packet will carry `first_seq`.
    pub(crate) fn new(first_seq: u16, switch_step: u32) -> Self {
        Self {
            source: None,
            seq_offset: 0,
            ts_offset: 0,
            next_seq: u64::from(first_seq),
            last_ts: None,
            switch_step,
            segment_start: 0,
        }
    }

    /// Rewrite one packet of input stream `source` with extended sequence number `seq`
    /// and RTP timestamp `ts`. A new source (first packet, layer switch, resubscribe)
    /// continues right after the last packet written. `None`: a packet of the current
    /// source from before the one that started its segment; it is not to be sent.
    pub(crate) fn rewrite(&mut self, source: u32, seq: u64, ts: u32) -> Option<(u64, u32)> {
        if self.source != Some(source) {
            self.source = Some(source);
            self.segment_start = seq;
            self.seq_offset = self.next_seq as i64 - seq as i64;
            let target_ts = match self.last_ts {
                None => ts,
                Some(last) => last.wrapping_add(self.switch_step),
            };
            self.ts_offset = target_ts.wrapping_sub(ts);
        }
        if seq < self.segment_start {
            return None;
        }
        let out_seq = (seq as i64 + self.seq_offset).max(0) as u64;
        let out_ts = ts.wrapping_add(self.ts_offset);
        // Reordered (older) packets keep their rewritten numbers but don't move the tail.
        if out_seq >= self.next_seq {
            self.next_seq = out_seq + 1;
            self.last_ts = Some(out_ts);
        }
        Some((out_seq, out_ts))
    }

    /// Forget the current source: the next packet starts a new segment.
    pub(crate) fn reset_source(&mut self) {
        self.source = None;
    }
}

/// PictureID is 15 bits (or 7 in the short form); TL0PICIDX 8; KEYIDX 5.
const PICTURE_ID_MOD: u16 = 0x8000;
const KEY_IDX_MOD: u8 = 0x20;

/// The VP8 payload descriptor fields of one outgoing stream, kept continuous across
/// sources like [`Rewriter`] keeps sequence numbers. The first source passes unchanged
/// (no patch, nothing copied); after a switch the fields continue one past the last ones
/// written. The rewrite is a [`Vp8Patch`] str0m applies as it copies the payload into
/// the datagram, so the shared payload is never copied per subscriber.
#[derive(Debug, Clone, Default)]
pub(crate) struct Vp8Rewriter {
    source: Option<u32>,
    picture_offset: u16,
    tl0_offset: u8,
    key_offset: u8,
    /// The newest fields written, once a packet has carried them.
    last_picture: Option<u16>,
    last_tl0: Option<u8>,
    last_key: Option<u8>,
}

impl Vp8Rewriter {
    /// The patch for one packet of `source` (already accepted by the [`Rewriter`]),
    /// `None` when the payload goes out as it came.
    pub(crate) fn rewrite(&mut self, source: u32, payload: &[u8]) -> Option<Vp8Patch> {
        let d = Vp8Descriptor::parse(payload).ok()?;
        if self.source != Some(source) {
            self.source = Some(source);
            self.picture_offset = match (self.last_picture, d.picture_id()) {
                (Some(last), Some(p)) => (last + 1).wrapping_sub(p) % PICTURE_ID_MOD,
                _ => 0,
            };
            self.tl0_offset = match (self.last_tl0, d.tl0_pic_idx()) {
                (Some(last), Some(t)) => last.wrapping_add(1).wrapping_sub(t),
                _ => 0,
            };
            self.key_offset = match (self.last_key, d.key_idx()) {
                (Some(last), Some(k)) => (last + 1).wrapping_sub(k) % KEY_IDX_MOD,
                _ => 0,
            };
        }
        let picture = d.picture_id().map(|p| p.wrapping_add(self.picture_offset) % PICTURE_ID_MOD);
        let tl0 = d.tl0_pic_idx().map(|t| t.wrapping_add(self.tl0_offset));
        let key = d.key_idx().map(|k| k.wrapping_add(self.key_offset) % KEY_IDX_MOD);
        // Reordered packets keep their rewritten fields but don't move the newest.
        if let Some(p) = picture
            && self.last_picture.is_none_or(|last| ahead(p, last, PICTURE_ID_MOD))
        {
            self.last_picture = Some(p);
        }
        if let Some(t) = tl0
            && self.last_tl0.is_none_or(|last| ahead(u16::from(t), u16::from(last), 0x100))
        {
            self.last_tl0 = Some(t);
        }
        if let Some(k) = key {
            self.last_key = Some(k);
        }
        if self.picture_offset == 0 && self.tl0_offset == 0 && self.key_offset == 0 {
            return None;
        }
        let mut b = d.patch();
        if let Some(p) = picture {
            // The short form holds 7 bits: the rewrite keeps it short.
            let short = payload.get(2).is_some_and(|b| b & 0x80 == 0);
            b = b.picture_id(if short { p & 0x7f } else { p });
        }
        if let Some(t) = tl0 {
            b = b.tl0_pic_idx(t);
        }
        if let Some(k) = key {
            b = b.key_idx(k);
        }
        b.build().ok()
    }

    /// Forget the current source: the next packet starts a new segment.
    pub(crate) fn reset_source(&mut self) {
        self.source = None;
    }
}

/// `a` is newer than `b` in a sequence space of `modulo` values.
fn ahead(a: u16, b: u16, modulo: u16) -> bool {
    let d = a.wrapping_sub(b) % modulo;
    d != 0 && d < modulo / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_stream_keeps_its_spacing() {
        let mut r = Rewriter::new(100, 3000);
        assert_eq!(r.rewrite(1, 5000, 90_000), Some((100, 90_000)));
        assert_eq!(r.rewrite(1, 5001, 93_000), Some((101, 93_000)));
        assert_eq!(r.rewrite(1, 5003, 96_000), Some((103, 96_000)), "a gap stays a gap (the receiver NACKs it)");
        assert_eq!(r.rewrite(1, 5002, 93_000), Some((102, 93_000)), "reordered packet fills the gap");
        assert_eq!(r.rewrite(1, 5004, 99_000), Some((104, 99_000)));
    }

    #[test]
    fn switching_source_continues_without_a_jump() {
        let mut r = Rewriter::new(10, 3000);
        r.rewrite(1, 70_000, 1_000_000);
        r.rewrite(1, 70_001, 1_003_000);
        // A different layer with unrelated numbering.
        assert_eq!(r.rewrite(2, 12, 555), Some((12, 1_006_000)));
        assert_eq!(r.rewrite(2, 13, 3555), Some((13, 1_009_000)));
        // Back to the first layer.
        assert_eq!(r.rewrite(1, 70_100, 1_300_000), Some((14, 1_012_000)));
    }

    #[test]
    fn resubscribe_continues_after_the_last_packet() {
        let mut r = Rewriter::new(0, 960);
        assert_eq!(r.rewrite(7, 1, 4_294_966_000), Some((0, 4_294_966_000)));
        assert_eq!(r.rewrite(7, 2, 4_294_966_960), Some((1, 4_294_966_960)));
        assert_eq!(r.rewrite(7, 3, 624), Some((2, 624)), "timestamps wrap like RTP's");
        r.reset_source();
        let (seq, ts) = r.rewrite(7, 900, 123).unwrap();
        assert_eq!(seq, 3);
        assert_eq!(ts, 624 + 960);
    }

    #[test]
    fn a_late_packet_of_the_new_layer_from_before_the_switch_is_dropped() {
        let mut r = Rewriter::new(10, 3000);
        r.rewrite(1, 500, 90_000);
        r.rewrite(1, 501, 93_000);
        // The switch to source 2 starts on its keyframe, seq 7000.
        assert_eq!(r.rewrite(2, 7000, 4_000), Some((12, 96_000)));
        // Source 2's packet 6999 (late, or a retransmission of a packet from before the
        // keyframe) would get 11, the old layer's last number: not sent.
        assert_eq!(r.rewrite(2, 6999, 1_000), None);
        assert_eq!(r.rewrite(2, 7001, 7_000), Some((13, 99_000)));
    }

    /// A VP8 payload: descriptor with a 15-bit PictureID, TL0PICIDX and KEYIDX, then a
    /// payload header byte.
    fn vp8(picture: u16, tl0: u8, key: u8) -> Vec<u8> {
        vec![0x90, 0xf0, 0x80 | (picture >> 8) as u8, picture as u8, tl0, 0x20 | key, 0x00, 0xaa]
    }

    /// The patch that rewrites `payload`'s fields to these values.
    fn to(payload: &[u8], picture: u16, tl0: u8, key: u8) -> Option<Vp8Patch> {
        let d = Vp8Descriptor::parse(payload).unwrap();
        Some(d.patch().picture_id(picture).tl0_pic_idx(tl0).key_idx(key).build().unwrap())
    }

    #[test]
    fn vp8_picture_ids_move_forward_across_a_switch_to_a_layer_whose_ids_are_behind() {
        let mut r = Vp8Rewriter::default();
        // The first layer passes unchanged.
        assert_eq!(r.rewrite(1, &vp8(20_000, 100, 3)), None, "first source: no patch");
        assert_eq!(r.rewrite(1, &vp8(20_001, 101, 3)), None);
        // The new layer's encoder numbers its pictures from 5: behind the old layer's.
        // Unpatched, the receiver drops these frames as stale (the stall after a switch).
        let p = vp8(5, 9, 0);
        assert_eq!(r.rewrite(2, &p), to(&p, 20_002, 102, 4));
        let p = vp8(6, 10, 0);
        assert_eq!(r.rewrite(2, &p), to(&p, 20_003, 103, 4));
        // And back, across the wrap of the 15-bit space on the input side.
        let p = vp8(32_767, 255, 31);
        assert_eq!(r.rewrite(1, &p), to(&p, 20_004, 104, 5));
        let p = vp8(0, 0, 31);
        assert_eq!(r.rewrite(1, &p), to(&p, 20_005, 105, 5));
        // A reordered packet keeps its place without moving the newest.
        let p = vp8(32_767, 255, 31);
        assert_eq!(r.rewrite(1, &p), to(&p, 20_004, 104, 5));
        let p = vp8(1, 1, 31);
        assert_eq!(r.rewrite(1, &p), to(&p, 20_006, 106, 5));
    }

    #[test]
    fn vp8_picture_ids_wrap_within_fifteen_bits() {
        let mut r = Vp8Rewriter::default();
        r.rewrite(1, &vp8(32_767, 0, 0));
        let p = vp8(100, 7, 0);
        assert_eq!(r.rewrite(2, &p), to(&p, 0, 1, 1), "one past 32767 is 0");
        let p = vp8(101, 7, 0);
        assert_eq!(r.rewrite(2, &p), to(&p, 1, 1, 1));
    }

    #[test]
    fn a_descriptor_without_picture_ids_passes_unchanged() {
        let mut r = Vp8Rewriter::default();
        assert!(r.rewrite(1, &[0x10, 0x00, 0xaa]).is_none());
        assert!(r.rewrite(2, &[0x10, 0x00, 0xaa]).is_none());
        assert!(r.rewrite(2, &[]).is_none(), "an empty (padding) payload");
    }
}
