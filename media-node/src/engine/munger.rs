//! The RTP munger: per-subscriber continuity. Sequence numbers and timestamps are
//! rewritten so that a subscriber sees one unbroken stream even when the SFU switches
//! simulcast layers or the subscription is torn down and set up again.

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
}
