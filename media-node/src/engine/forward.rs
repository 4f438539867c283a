//! The hot path: one incoming RTP packet to every subscriber of its track. The
//! subscribers come from the [`TrackIndex`](super::track::TrackIndex), not a scan of the
//! room; the payload is shared (`Arc<[u8]>`) by every subscriber and only sequence numbers
//! and timestamps are rewritten ([`Rewriter`](super::munger::Rewriter)), and VP8's
//! descriptor fields by a patch str0m applies as it builds the datagram
//! ([`Vp8Rewriter`](super::munger::Vp8Rewriter)). Each `write_rtp`
//! is followed by a drain of that subscriber's `Rtc` (str0m's run-loop rule), so a batch of
//! packets for one subscriber never piles up undrained writes. Nothing here allocates per
//! packet once the queues have grown to their working size: the heap allocations left
//! are str0m's (its decrypted packet, its send queue entry, the encrypted datagram),
//! counted apart by `probe` in `tests.rs`.

use std::time::Instant;

use str0m::media::KeyframeRequestKind;
use str0m::rtp::{ExtensionValues, RtpWrite};
use switchyard_api::signal::TrackKind;

use super::keyframe::is_keyframe;
use super::subscription::{SubState, Verdict};
use super::{Engine, Pid, drain_rtc, probe};

impl Engine {
    pub(super) fn forward(&mut self, now: Instant, from: Pid, pkt: str0m::rtp::RtpPacket) {
        let Some(publisher) = self.peers.get_mut(&from) else { return };
        let ssrc = pkt.header.ssrc;
        let Some((mid, rid)) = publisher.stream_of(ssrc) else { return };
        let Some(track) = publisher.published.iter_mut().find(|t| t.mid == mid) else { return };
        let Some(spec) = track.spec_for(pkt.header.payload_type, &publisher.rtc) else { return };
        let video = track.kind == TrackKind::Video;
        track.packets += 1;
        track.bytes += pkt.payload.len() as u64;
        track.count(rid, pkt.payload.len());
        self.stats.packets_in += 1;
        self.stats.bytes_in += pkt.payload.len() as u64;
        if !video {
            track.level.observe(pkt.header.ext_vals.audio_level);
        }
        if track.muted {
            return;
        }
        let keyframe = !video || is_keyframe(spec.codec, &pkt.payload);
        let vp8 = spec.codec == str0m::format::Codec::Vp8;
        let exts = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let mut want_keyframe = false;
        for &m in self.index.subscribers(from, mid) {
            let Some(sub_peer) = self.peers.get_mut(&m) else { continue };
            let Some(sub) = sub_peer.subs.iter_mut().find(|s| s.publisher == from && s.pub_mid == mid) else {
                continue;
            };
            let SubState::Open(out_mid) = sub.state else { continue };
            match sub.layers.select(now, rid, keyframe) {
                Verdict::Forward => {}
                Verdict::Drop => continue,
                Verdict::NeedKeyframe => {
                    want_keyframe = true;
                    continue;
                }
            }
            let Some(pt) = sub.pt_for(spec, out_mid, &sub_peer.rtc) else { continue };
            let Some((seq, ts)) = sub.rewriter.rewrite(*ssrc, *pkt.seq_no, pkt.header.timestamp) else { continue };
            let vp8_patch = if vp8 { sub.vp8.rewrite(*ssrc, &pkt.payload) } else { None };
            debug_assert!(!sub_peer.undrained, "a write to an Rtc that was not drained since its last mutation");
            let written = {
                let _str0m = probe::foreign();
                let mut api = sub_peer.rtc.direct_api();
                api.stream_tx_by_mid(out_mid, None).map(|tx| {
                    let mut write = RtpWrite::new(pt, seq.into(), ts, pkt.timestamp, pkt.payload.clone())
                        .marker(pkt.header.marker)
                        .ext_vals(exts.clone())
                        .nackable(video);
                    if let Some(patch) = vp8_patch {
                        write = write.vp8_patch(patch);
                    }
                    tx.write_rtp(write)
                })
            };
            if written.is_none() {
                continue;
            }
            sub_peer.undrained = true;
            sub.packets += 1;
            self.stats.packets_out += 1;
            self.stats.bytes_out += pkt.payload.len() as u64;
            drain_rtc(m, sub_peer, &mut self.out, &mut self.events, &mut self.failed);
        }
        if want_keyframe {
            self.request_keyframe(now, from, mid, rid, KeyframeRequestKind::Pli);
        }
    }
}
