//! Counters, the live line and the end-of-run summary of `switchyard load turn`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Sub;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde_json::json;

use super::client::Failure;

/// Per-allocation counters: the allocation's task writes `sent_*`, the peer socket `received_*`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent_packets: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) received_packets: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn sent(&self, bytes: usize) {
        self.sent_packets.fetch_add(1, Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.received_packets.fetch_add(1, Relaxed);
        self.received_bytes.fetch_add(bytes as u64, Relaxed);
    }

    fn snapshot(&self) -> Totals {
        Totals {
            sent_packets: self.sent_packets.load(Relaxed),
            sent_bytes: self.sent_bytes.load(Relaxed),
            received_packets: self.received_packets.load(Relaxed),
            received_bytes: self.received_bytes.load(Relaxed),
        }
    }
}

/// Counters summed over allocations at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) sent_packets: u64,
    pub(crate) sent_bytes: u64,
    pub(crate) received_packets: u64,
    pub(crate) received_bytes: u64,
}

impl Totals {
    pub(crate) fn sum(counters: &[Counters]) -> Totals {
        counters.iter().map(Counters::snapshot).fold(Totals::default(), |a, b| Totals {
            sent_packets: a.sent_packets + b.sent_packets,
            sent_bytes: a.sent_bytes + b.sent_bytes,
            received_packets: a.received_packets + b.received_packets,
            received_bytes: a.received_bytes + b.received_bytes,
        })
    }

    /// Packets sent and not received, as a fraction of those sent.
    pub(crate) fn loss(&self) -> f64 {
        if self.sent_packets == 0 {
            return 0.0;
        }
        (1.0 - self.received_packets as f64 / self.sent_packets as f64).max(0.0)
    }
}

impl Sub for Totals {
    type Output = Totals;
    fn sub(self, o: Totals) -> Totals {
        Totals {
            sent_packets: self.sent_packets.saturating_sub(o.sent_packets),
            sent_bytes: self.sent_bytes.saturating_sub(o.sent_bytes),
            received_packets: self.received_packets.saturating_sub(o.received_packets),
            received_bytes: self.received_bytes.saturating_sub(o.received_bytes),
        }
    }
}

fn bps(bytes: u64, over: Duration) -> f64 {
    if over.is_zero() { 0.0 } else { bytes as f64 * 8.0 / over.as_secs_f64() }
}

fn mbit(bps: f64) -> String {
    format!("{:.2} Mbit/s", bps / 1e6)
}

/// The once-a-second line on stderr.
pub(crate) fn live_line(elapsed: Duration, up: usize, total: usize, delta: Totals, over: Duration) -> String {
    format!(
        "[{:>4.0}s] allocations {up}/{total} up  sent {}  received {}  loss {:.2}%",
        elapsed.as_secs_f64(),
        mbit(bps(delta.sent_bytes, over)),
        mbit(bps(delta.received_bytes, over)),
        delta.loss() * 100.0
    )
}

/// What became of each allocation, and the distinct failures seen.
#[derive(Debug)]
pub(crate) struct Tally {
    state: Vec<Fate>,
    setup: Vec<Duration>,
    /// message → (code, count)
    errors: BTreeMap<String, (Option<u16>, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Pending,
    Up,
    /// Never came up.
    Failed,
    /// Came up, then failed.
    Lost,
    Closed,
}

impl Tally {
    pub(crate) fn new(n: usize) -> Self {
        Tally { state: vec![Fate::Pending; n], setup: Vec::new(), errors: BTreeMap::new() }
    }

    pub(crate) fn ready(&mut self, idx: usize, setup: Duration) {
        self.state[idx] = Fate::Up;
        self.setup.push(setup);
    }

    /// Record a failure; true when the allocation had been up (it was lost).
    pub(crate) fn failed(&mut self, idx: usize, f: Failure) -> bool {
        let lost = self.state[idx] == Fate::Up;
        self.state[idx] = if lost { Fate::Lost } else { Fate::Failed };
        self.errors.entry(f.message).or_insert((f.code, 0)).1 += 1;
        lost
    }

    pub(crate) fn closed(&mut self, idx: usize) {
        if matches!(self.state[idx], Fate::Up | Fate::Pending) {
            self.state[idx] = Fate::Closed;
        }
    }

    fn count(&self, fate: Fate) -> usize {
        self.state.iter().filter(|&&s| s == fate).count()
    }

    pub(crate) fn pending(&self) -> usize {
        self.count(Fate::Pending)
    }

    pub(crate) fn up(&self) -> usize {
        self.count(Fate::Up)
    }

    /// Indices of the allocations up now.
    pub(crate) fn up_indices(&self) -> Vec<usize> {
        (0..self.state.len()).filter(|&i| self.state[i] == Fate::Up).collect()
    }

    pub(crate) fn failed_count(&self) -> usize {
        self.count(Fate::Failed)
    }
}

/// Holding: how the relay checks went.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HoldReport {
    pub(crate) held: usize,
    pub(crate) checks: usize,
    pub(crate) last_relaying: Option<usize>,
}

/// Everything the run measured.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) server: SocketAddr,
    pub(crate) transport: &'static str,
    pub(crate) requested_allocations: usize,
    pub(crate) requested_bps: u64,
    pub(crate) packet_size: usize,
    /// How long the load phase actually ran.
    pub(crate) elapsed: Duration,
    pub(crate) load: Totals,
    /// Packets at the peer from addresses that are no allocation's relayed address.
    pub(crate) stray_packets: u64,
    pub(crate) tally: Tally,
    pub(crate) hold: Option<HoldReport>,
    pub(crate) interrupted: bool,
}

impl Summary {
    fn ok(&self) -> usize {
        self.tally.setup.len()
    }

    fn lost(&self) -> usize {
        self.tally.count(Fate::Lost)
    }

    fn setup_quantile(&self, q: f64) -> Option<Duration> {
        let mut v = self.tally.setup.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).copied()
    }

    pub(crate) fn text(&self) -> String {
        let s = &self.load;
        let mut out = String::new();
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
        let _ = writeln!(
            out,
            "TURN load: {} {}, {} allocations, {} requested, {}-byte packets, ran {:.1} s{}",
            self.transport,
            self.server,
            self.requested_allocations,
            mbit(self.requested_bps as f64),
            self.packet_size,
            self.elapsed.as_secs_f64(),
            if self.interrupted { " (interrupted)" } else { "" }
        );
        let _ = writeln!(
            out,
            "allocations  {} ok, {} failed, {} lost after setup (setup p50 {}, max {})",
            self.ok(),
            self.tally.failed_count(),
            self.lost(),
            ms(self.setup_quantile(0.5)),
            ms(self.setup_quantile(1.0)),
        );
        let rate = |b| mbit(bps(b, self.elapsed));
        let _ =
            writeln!(out, "sent         {} packets, {} bytes, {}", s.sent_packets, s.sent_bytes, rate(s.sent_bytes));
        let _ = writeln!(
            out,
            "received     {} packets, {} bytes, {} ({:.1}% of requested)",
            s.received_packets,
            s.received_bytes,
            rate(s.received_bytes),
            self.achieved_ratio() * 100.0
        );
        let _ = writeln!(out, "loss         {:.3}%", s.loss() * 100.0);
        if self.stray_packets > 0 {
            let _ = writeln!(
                out,
                "stray        {} packets from unknown sources (a relayed address the server announces but does not send from?)",
                self.stray_packets
            );
        }
        if let Some(h) = &self.hold {
            let last = h.last_relaying.map_or("no check".into(), |n| format!("last {n}/{} relaying", h.held));
            let _ = writeln!(out, "hold         {} allocations held, {} checks, {last}", h.held, h.checks);
        }
        for (message, (_, count)) in &self.tally.errors {
            let _ = writeln!(out, "error        {count} × {message}");
        }
        out
    }

    fn achieved_ratio(&self) -> f64 {
        if self.requested_bps == 0 {
            0.0
        } else {
            bps(self.load.received_bytes, self.elapsed) / self.requested_bps as f64
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        let s = &self.load;
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        json!({
            "server": self.server.to_string(),
            "transport": self.transport,
            "requested": {
                "allocations": self.requested_allocations,
                "bps": self.requested_bps,
                "packetSize": self.packet_size,
            },
            "durationSeconds": self.elapsed.as_secs_f64(),
            "interrupted": self.interrupted,
            "allocations": {
                "ok": self.ok(),
                "failed": self.tally.failed_count(),
                "lost": self.lost(),
                "setupSecondsP50": secs(self.setup_quantile(0.5)),
                "setupSecondsMax": secs(self.setup_quantile(1.0)),
            },
            "errors": self.tally.errors.iter().map(|(message, (code, count))| json!({
                "code": code, "count": count, "message": message,
            })).collect::<Vec<_>>(),
            "sent": { "packets": s.sent_packets, "bytes": s.sent_bytes, "bps": bps(s.sent_bytes, self.elapsed) },
            "received": { "packets": s.received_packets, "bytes": s.received_bytes, "bps": bps(s.received_bytes, self.elapsed) },
            "lossRatio": s.loss(),
            "strayPackets": self.stray_packets,
            "hold": self.hold.map(|h| json!({ "held": h.held, "checks": h.checks, "lastRelaying": h.last_relaying })),
        })
    }

    /// Ok, or why the run counts as failed.
    pub(crate) fn verdict(&self, max_loss_percent: f64) -> anyhow::Result<()> {
        let failed = self.tally.failed_count() + self.lost();
        if failed > 0 {
            let why: Vec<&str> = self.tally.errors.keys().map(String::as_str).take(3).collect();
            anyhow::bail!("{failed} of {} allocations failed: {}", self.requested_allocations, why.join("; "));
        }
        if self.ok() == 0 {
            anyhow::bail!("no allocation came up");
        }
        let loss = self.load.loss() * 100.0;
        if loss > max_loss_percent {
            anyhow::bail!("loss {loss:.2}% is above --max-loss {max_loss_percent}%");
        }
        if let Some(HoldReport { held, last_relaying: Some(n), .. }) = self.hold
            && n < held
        {
            anyhow::bail!("at the last check only {n} of {held} held allocations relayed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_rates() {
        let t = Totals { sent_packets: 200, sent_bytes: 200_000, received_packets: 198, received_bytes: 198_000 };
        assert!((t.loss() - 0.01).abs() < 1e-9);
        assert_eq!(Totals::default().loss(), 0.0);
        assert_eq!(t - t, Totals::default());
        let line = live_line(Duration::from_secs(3), 4, 4, t, Duration::from_secs(1));
        assert_eq!(line, "[   3s] allocations 4/4 up  sent 1.60 Mbit/s  received 1.58 Mbit/s  loss 1.00%");
    }

    #[test]
    fn failures_are_grouped_and_fail_the_run() {
        let mut tally = Tally::new(3);
        tally.ready(0, Duration::from_millis(2));
        let f = Failure { code: Some(403), message: "403: denied".into() };
        assert!(!tally.failed(1, f.clone()));
        assert!(!tally.failed(2, f));
        let summary = Summary {
            server: "127.0.0.1:3478".parse().unwrap(),
            transport: "udp",
            requested_allocations: 3,
            requested_bps: 1_000_000,
            packet_size: 1000,
            elapsed: Duration::from_secs(1),
            load: Totals::default(),
            stray_packets: 0,
            tally,
            hold: None,
            interrupted: false,
        };
        assert_eq!(summary.json()["errors"], json!([{ "code": 403, "count": 2, "message": "403: denied" }]));
        assert!(summary.text().contains("error        2 × 403: denied"));
        assert_eq!(summary.verdict(1.0).unwrap_err().to_string(), "2 of 3 allocations failed: 403: denied");
    }
}
