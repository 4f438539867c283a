//! What the participants measure: per received stream loss and jitter (RFC 3550 §6.4.1,
//! A.8), shared counters for the live line, and the run's summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::json;

/// One received RTP stream (one SSRC).
#[derive(Debug)]
pub(crate) struct RxStream {
    clock_rate: f64,
    base_seq: u64,
    max_seq: u64,
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
    /// (arrival, RTP timestamp) of the last packet, for the transit difference.
    last: Option<(Instant, u32)>,
    /// Interarrival jitter in RTP timestamp units.
    jitter: f64,
}

impl RxStream {
    pub(crate) fn new(clock_rate: u32) -> Self {
        RxStream {
            clock_rate: f64::from(clock_rate.max(1)),
            base_seq: 0,
            max_seq: 0,
            packets: 0,
            bytes: 0,
            last: None,
            jitter: 0.0,
        }
    }

    /// A packet with extended sequence number `seq` and RTP timestamp `ts` arrived at
    /// `at`; returns how many packets the highest sequence number now accounts for beyond
    /// before (what "expected" grows by).
    pub(crate) fn packet(&mut self, at: Instant, seq: u64, ts: u32, bytes: usize) -> u64 {
        self.packets += 1;
        self.bytes += bytes as u64;
        let grew = if self.packets == 1 {
            self.base_seq = seq;
            self.max_seq = seq;
            1
        } else if seq > self.max_seq {
            let g = seq - self.max_seq;
            self.max_seq = seq;
            g
        } else {
            0
        };
        if let Some((prev_at, prev_ts)) = self.last {
            let arrival = at.saturating_duration_since(prev_at).as_secs_f64() * self.clock_rate;
            let sent = f64::from(ts.wrapping_sub(prev_ts) as i32);
            let d = (arrival - sent).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last = Some((at, ts));
        grew
    }

    pub(crate) fn is_audio(&self) -> bool {
        self.clock_rate != 90_000.0
    }

    /// The extended sequence number of a 16-bit one: the nearest to the highest so far.
    pub(crate) fn extend(&self, seq: u16) -> u64 {
        let near = (self.max_seq & !0xffff) | u64::from(seq);
        if near + 0x8000 < self.max_seq {
            near + 0x1_0000
        } else if near > self.max_seq + 0x8000 && near >= 0x1_0000 {
            near - 0x1_0000
        } else {
            near
        }
    }

    /// Packets the sequence numbers say were sent.
    pub(crate) fn expected(&self) -> u64 {
        if self.packets == 0 { 0 } else { self.max_seq - self.base_seq + 1 }
    }

    pub(crate) fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    pub(crate) fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter / self.clock_rate)
    }
}

/// Counters one participant updates and the live line reads.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) up: AtomicBool,
    pub(crate) sent_packets: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) received_packets: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    /// Sum over received streams of what their sequence numbers account for.
    pub(crate) expected_packets: AtomicU64,
    /// Datagrams the socket refused to send (its buffer full).
    pub(crate) send_failures: AtomicU64,
}

/// Sums of [`Live`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) up: u64,
    pub(crate) sent_packets: u64,
    pub(crate) sent_bytes: u64,
    pub(crate) received_packets: u64,
    pub(crate) received_bytes: u64,
    pub(crate) expected_packets: u64,
    pub(crate) send_failures: u64,
}

impl Totals {
    pub(crate) fn sum<'a>(live: impl IntoIterator<Item = &'a Live>) -> Totals {
        let mut t = Totals::default();
        for l in live {
            t.up += u64::from(l.up.load(Relaxed));
            t.sent_packets += l.sent_packets.load(Relaxed);
            t.sent_bytes += l.sent_bytes.load(Relaxed);
            t.received_packets += l.received_packets.load(Relaxed);
            t.received_bytes += l.received_bytes.load(Relaxed);
            t.expected_packets += l.expected_packets.load(Relaxed);
            t.send_failures += l.send_failures.load(Relaxed);
        }
        t
    }

    /// Counter growth since `before` (`up` stays as now).
    pub(crate) fn since(&self, before: &Totals) -> Totals {
        Totals {
            up: self.up,
            sent_packets: self.sent_packets.saturating_sub(before.sent_packets),
            sent_bytes: self.sent_bytes.saturating_sub(before.sent_bytes),
            received_packets: self.received_packets.saturating_sub(before.received_packets),
            received_bytes: self.received_bytes.saturating_sub(before.received_bytes),
            expected_packets: self.expected_packets.saturating_sub(before.expected_packets),
            send_failures: self.send_failures.saturating_sub(before.send_failures),
        }
    }

    pub(crate) fn loss(&self) -> f64 {
        loss(self.expected_packets, self.received_packets)
    }
}

fn loss(expected: u64, received: u64) -> f64 {
    if expected == 0 { 0.0 } else { (1.0 - received as f64 / expected as f64).max(0.0) }
}

fn mbit(bytes: u64, over: Duration) -> f64 {
    if over.is_zero() { 0.0 } else { bytes as f64 * 8.0 / over.as_secs_f64() / 1e6 }
}

/// The once-a-second line on stderr.
pub(crate) fn live_line(elapsed: Duration, total: usize, delta: &Totals, over: Duration) -> String {
    format!(
        "[{:>4.0}s] participants {}/{total} up  send {:.2} Mbit/s  receive {:.2} Mbit/s  loss {:.2}%",
        elapsed.as_secs_f64(),
        delta.up,
        mbit(delta.sent_bytes, over),
        mbit(delta.received_bytes, over),
        delta.loss() * 100.0
    )
}

/// How one participant's session went.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) joined: bool,
    pub(crate) connected: bool,
    /// Join → first media, when the room already had media flowing at the join.
    pub(crate) first_media: Option<Duration>,
    pub(crate) expected_tracks: usize,
    pub(crate) received_tracks: usize,
    /// (code, message) of each error this participant saw.
    pub(crate) errors: Vec<(String, String)>,
    pub(crate) streams: Vec<RxStream>,
}

/// Everything the run measured.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) url: String,
    pub(crate) rooms: usize,
    pub(crate) publishers: usize,
    pub(crate) subscribers: usize,
    pub(crate) media: String,
    pub(crate) elapsed: Duration,
    /// The part of the run after the last join (bit rates are over it).
    pub(crate) steady: Duration,
    pub(crate) steady_totals: Totals,
    pub(crate) totals: Totals,
    pub(crate) outcomes: Vec<Outcome>,
    pub(crate) cpu_seconds: f64,
    pub(crate) interrupted: bool,
    /// What each second of the run received, in order (the live line's figures).
    pub(crate) timeline: Vec<Second>,
}

/// One tick of the live line: counter growth over `over`, ending `at` after the start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Second {
    pub(crate) at: Duration,
    pub(crate) over: Duration,
    pub(crate) delta: Totals,
}

impl Second {
    fn json(&self) -> serde_json::Value {
        json!({
            "seconds": self.at.as_secs_f64(),
            "receivedBps": mbit(self.delta.received_bytes, self.over) * 1e6,
            "receivedPackets": self.delta.received_packets,
            "lossRatio": self.delta.loss(),
        })
    }
}

/// Quantile `q` of sorted values (nearest rank).
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

impl Summary {
    fn join_times(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.outcomes.iter().filter_map(|o| o.first_media).collect();
        v.sort_unstable();
        v
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(o)).count()
    }

    fn tracks(&self) -> (usize, usize) {
        let expected = self.outcomes.iter().map(|o| o.expected_tracks).sum();
        let received = self.outcomes.iter().map(|o| o.received_tracks.min(o.expected_tracks)).sum();
        (expected, received)
    }

    /// code → (count, first message).
    fn errors(&self) -> BTreeMap<&str, (usize, &str)> {
        let mut m: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
        for (code, message) in self.outcomes.iter().flat_map(|o| &o.errors) {
            m.entry(code).or_insert((0, message)).0 += 1;
        }
        m
    }

    fn streams(&self) -> impl Iterator<Item = &RxStream> {
        self.outcomes.iter().flat_map(|o| &o.streams)
    }

    /// (lost, expected) over every received stream.
    fn loss_counts(&self) -> (u64, u64) {
        self.streams().fold((0, 0), |(l, e), s| (l + s.lost(), e + s.expected()))
    }

    /// (lost, expected) over the received audio (`true`) or video streams.
    fn loss_of(&self, audio: bool) -> (u64, u64) {
        self.streams().filter(|s| s.is_audio() == audio).fold((0, 0), |(l, e), s| (l + s.lost(), e + s.expected()))
    }

    /// Mean and largest interarrival jitter over the received streams.
    fn jitter(&self) -> (Option<Duration>, Option<Duration>) {
        let j: Vec<Duration> = self.streams().filter(|s| s.packets > 1).map(RxStream::jitter).collect();
        if j.is_empty() {
            return (None, None);
        }
        (Some(j.iter().sum::<Duration>() / j.len() as u32), j.iter().max().copied())
    }

    fn window(&self) -> (Duration, Totals) {
        if self.steady >= Duration::from_secs(1) {
            (self.steady, self.steady_totals)
        } else {
            (self.elapsed, self.totals)
        }
    }

    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
        let n = self.outcomes.len();
        let _ = writeln!(
            out,
            "SFU load: {}, {} room(s) × ({} publishers + {} subscribers), {}, ran {:.1} s{}",
            self.url,
            self.rooms,
            self.publishers,
            self.subscribers,
            self.media,
            self.elapsed.as_secs_f64(),
            if self.interrupted { " (interrupted)" } else { "" }
        );
        let _ = writeln!(
            out,
            "participants {} joined, {} connected media, of {n}",
            self.count(|o| o.joined),
            self.count(|o| o.connected)
        );
        let t = self.join_times();
        let _ = writeln!(
            out,
            "first media  join → first packet p50 {} p95 {} p99 {} max {} ({} joins into flowing media)",
            ms(quantile(&t, 0.5)),
            ms(quantile(&t, 0.95)),
            ms(quantile(&t, 0.99)),
            ms(t.last().copied()),
            t.len()
        );
        let (expected, received) = self.tracks();
        let _ = writeln!(out, "tracks       {received} of {expected} expected received");
        let (over, w) = self.window();
        let _ = writeln!(
            out,
            "bit rate     send {:.2} Mbit/s, receive {:.2} Mbit/s (over the last {:.1} s)",
            mbit(w.sent_bytes, over),
            mbit(w.received_bytes, over),
            over.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "packets      sent {}, received {} ({:.0}/s received)",
            self.totals.sent_packets,
            self.totals.received_packets,
            w.received_packets as f64 / over.as_secs_f64().max(1e-9)
        );
        let (lost, exp) = self.loss_counts();
        let (mean, max) = self.jitter();
        let (al, ae) = self.loss_of(true);
        let (vl, ve) = self.loss_of(false);
        let _ = writeln!(
            out,
            "loss         {:.3}% ({lost} of {exp} packets; audio {:.3}%, video {:.3}%)",
            loss(exp, exp - lost) * 100.0,
            loss(ae, ae - al) * 100.0,
            loss(ve, ve - vl) * 100.0
        );
        let _ = writeln!(out, "jitter       mean {} max {}", ms_f(mean), ms_f(max));
        let _ = writeln!(out, "load CPU     {:.2} s (this process)", self.cpu_seconds);
        if self.totals.send_failures > 0 {
            let _ =
                writeln!(out, "send errors  {} datagrams refused by a full socket buffer", self.totals.send_failures);
        }
        for (code, (count, message)) in self.errors() {
            let _ = writeln!(out, "error        {count} × {code}: {message}");
        }
        out
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        let t = self.join_times();
        let (expected, received) = self.tracks();
        let (over, w) = self.window();
        let (lost, exp) = self.loss_counts();
        let (mean, max) = self.jitter();
        let kind_loss = |audio| {
            let (l, e) = self.loss_of(audio);
            loss(e, e - l)
        };
        json!({
            "url": self.url,
            "rooms": self.rooms,
            "publishersPerRoom": self.publishers,
            "subscribersPerRoom": self.subscribers,
            "media": self.media,
            "durationSeconds": self.elapsed.as_secs_f64(),
            "interrupted": self.interrupted,
            "participants": {
                "total": self.outcomes.len(),
                "joined": self.count(|o| o.joined),
                "connected": self.count(|o| o.connected),
            },
            "firstMediaSeconds": {
                "count": t.len(),
                "p50": secs(quantile(&t, 0.5)),
                "p95": secs(quantile(&t, 0.95)),
                "p99": secs(quantile(&t, 0.99)),
                "max": secs(t.last().copied()),
            },
            "tracks": { "expected": expected, "received": received },
            "steadySeconds": over.as_secs_f64(),
            "sent": { "packets": self.totals.sent_packets, "bytes": self.totals.sent_bytes, "bps": mbit(w.sent_bytes, over) * 1e6 },
            "received": {
                "packets": self.totals.received_packets,
                "bytes": self.totals.received_bytes,
                "bps": mbit(w.received_bytes, over) * 1e6,
                "packetsPerSecond": w.received_packets as f64 / over.as_secs_f64().max(1e-9),
            },
            "lossRatio": loss(exp, exp - lost),
            "lostPackets": lost,
            "lossRatioByKind": { "audio": kind_loss(true), "video": kind_loss(false) },
            "jitterSeconds": { "mean": secs(mean), "max": secs(max) },
            "cpuSeconds": self.cpu_seconds,
            "timeline": self.timeline.iter().map(Second::json).collect::<Vec<_>>(),
            "sendFailures": self.totals.send_failures,
            "errors": self.errors().into_iter().map(|(code, (count, message))| json!({
                "code": code, "count": count, "message": message,
            })).collect::<Vec<_>>(),
        })
    }

    /// Ok, or why the run counts as failed.
    pub(crate) fn verdict(&self, max_loss_percent: f64) -> anyhow::Result<()> {
        let n = self.outcomes.len();
        let failed = n - self.count(|o| o.connected);
        if failed > 0 {
            let why: Vec<String> = self.errors().keys().take(3).map(|c| c.to_string()).collect();
            anyhow::bail!("{failed} of {n} participants never connected media: {}", why.join(", "));
        }
        let (expected, received) = self.tracks();
        if received < expected {
            anyhow::bail!("{received} of {expected} expected tracks received media");
        }
        let (lost, exp) = self.loss_counts();
        let l = loss(exp, exp - lost) * 100.0;
        if l > max_loss_percent {
            anyhow::bail!("loss {l:.2}% is above --max-loss {max_loss_percent}%");
        }
        Ok(())
    }
}

fn ms_f(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_counts_gaps_in_sequence_numbers() {
        let t0 = Instant::now();
        let mut s = RxStream::new(48_000);
        assert_eq!(s.packet(t0, 100, 0, 80), 1);
        assert_eq!(s.packet(t0, 101, 960, 80), 1);
        assert_eq!(s.packet(t0, 104, 3840, 80), 3, "102 and 103 missing");
        assert_eq!(s.packet(t0, 102, 1920, 80), 0, "late, not new");
        assert_eq!((s.expected(), s.packets, s.lost()), (5, 4, 1));
        assert_eq!(s.bytes, 320);
        assert_eq!(s.extend(105), 105);
        assert_eq!(s.extend(65_535), 65_535, "no cycle before the first: it stays in this one");
    }

    #[test]
    fn sequence_numbers_extend_across_the_wrap() {
        let t0 = Instant::now();
        let mut s = RxStream::new(90_000);
        s.packet(t0, 65_534, 0, 1000);
        assert_eq!(s.extend(65_535), 65_535);
        s.packet(t0, 65_535, 0, 1000);
        assert_eq!(s.extend(0), 65_536);
        s.packet(t0, s.extend(1), 3000, 1000);
        assert_eq!(s.extend(65_535), 65_535, "reordered from before the wrap");
        assert_eq!((s.expected(), s.lost()), (4, 1));
    }

    #[test]
    fn jitter_is_zero_when_arrivals_follow_timestamps_and_grows_when_they_do_not() {
        let t0 = Instant::now();
        let mut s = RxStream::new(48_000);
        for i in 0..50u32 {
            s.packet(t0 + Duration::from_millis(20 * u64::from(i)), u64::from(i), i * 960, 80);
        }
        assert!(s.jitter() < Duration::from_micros(1), "{:?}", s.jitter());
        // Every other packet 10 ms late.
        for i in 50..500u32 {
            let late = if i % 2 == 0 { 10 } else { 0 };
            s.packet(t0 + Duration::from_millis(20 * u64::from(i) + late), u64::from(i), i * 960, 80);
        }
        let j = s.jitter().as_secs_f64() * 1e3;
        assert!((9.0..=10.5).contains(&j), "{j} ms");
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&v[..1], 0.99), Some(Duration::from_millis(1)));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn live_line_shows_rates_and_loss() {
        let d = Totals {
            up: 3,
            sent_bytes: 250_000,
            received_bytes: 500_000,
            received_packets: 99,
            expected_packets: 100,
            ..Totals::default()
        };
        assert_eq!(
            live_line(Duration::from_secs(7), 4, &d, Duration::from_secs(1)),
            "[   7s] participants 3/4 up  send 2.00 Mbit/s  receive 4.00 Mbit/s  loss 1.00%"
        );
    }

    fn outcome(connected: bool, tracks: (usize, usize), error: Option<&str>) -> Outcome {
        Outcome {
            joined: true,
            connected,
            first_media: connected.then(|| Duration::from_millis(120)),
            expected_tracks: tracks.0,
            received_tracks: tracks.1,
            errors: error.map(|c| (c.to_owned(), format!("{c} happened"))).into_iter().collect(),
            streams: vec![],
        }
    }

    fn summary(outcomes: Vec<Outcome>) -> Summary {
        Summary {
            url: "ws://127.0.0.1:7880".into(),
            rooms: 1,
            publishers: 1,
            subscribers: 2,
            media: "video".into(),
            elapsed: Duration::from_secs(5),
            steady: Duration::from_secs(4),
            steady_totals: Totals::default(),
            totals: Totals::default(),
            outcomes,
            cpu_seconds: 0.5,
            interrupted: false,
            timeline: vec![Second {
                at: Duration::from_secs(1),
                over: Duration::from_millis(500),
                delta: Totals {
                    received_bytes: 12_500,
                    received_packets: 10,
                    expected_packets: 20,
                    ..Totals::default()
                },
            }],
        }
    }

    #[test]
    fn missing_tracks_and_errors_fail_the_run_and_are_grouped_by_code() {
        let s = summary(vec![outcome(true, (0, 0), None), outcome(true, (2, 2), None), outcome(true, (2, 1), None)]);
        assert_eq!(s.json()["tracks"], json!({ "expected": 4, "received": 3 }));
        assert_eq!(s.verdict(1.0).unwrap_err().to_string(), "3 of 4 expected tracks received media");

        let s = summary(vec![
            outcome(true, (2, 2), None),
            outcome(false, (2, 0), Some("room_full")),
            outcome(false, (2, 0), Some("room_full")),
        ]);
        assert_eq!(s.json()["errors"], json!([{ "code": "room_full", "count": 2, "message": "room_full happened" }]));
        assert!(s.text().contains("error        2 × room_full: room_full happened"), "{}", s.text());
        assert_eq!(s.verdict(1.0).unwrap_err().to_string(), "2 of 3 participants never connected media: room_full");
        assert_eq!(s.json()["firstMediaSeconds"]["count"], 1);
    }

    #[test]
    fn the_json_timeline_has_each_live_second() {
        let s = summary(vec![outcome(true, (2, 2), None)]);
        // 12,500 bytes in half a second; 10 of 20 packets.
        assert_eq!(
            s.json()["timeline"],
            json!([{ "seconds": 1.0, "receivedBps": 200_000.0, "receivedPackets": 10, "lossRatio": 0.5 }])
        );
    }
}
