//! `switchyard load`: synthetic load against a deployment, to watch the
//! autoscaler work and to size pods.
//!
//! `switchyard load turn` opens N allocations on a TURN server and sends
//! ChannelData through each, paced, to a UDP peer socket of its own that
//! counts what arrives per allocation (by source address, which is the
//! allocation's relayed address):
//!
//! ```text
//!  allocation task × N ──ChannelData──► TURN server ──UDP (from relayed addr)──► peer socket
//!    client::Client (sans-IO control)                                             counts per allocation
//!    pace::Pacer (interval ticks)
//!  controller: phases setup → load → (hold) → deallocate; live line each second; summary
//! ```

pub(crate) mod client;
mod pace;
mod report;
pub(crate) mod sfu;
mod turn;

use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    #[command(subcommand)]
    target: Target,
}

#[derive(Debug, clap::Subcommand)]
enum Target {
    /// Allocations on a TURN server relaying paced ChannelData to a local counting peer.
    Turn(turn::TurnArgs),
    /// Rooms of publishers and subscribers sending synthetic VP8 and Opus through an SFU.
    Sfu(sfu::SfuArgs),
}

pub(crate) fn run(args: LoadArgs) -> anyhow::Result<()> {
    match args.target {
        Target::Turn(args) => turn::run(args),
        Target::Sfu(args) => sfu::run(args),
    }
}

/// A bit rate: `500k`, `4M`, `1.5G`, or plain bits per second.
fn parse_rate(s: &str) -> Result<u64, String> {
    let err = || format!("{s:?} is not a rate such as 500k, 4M or 1G (bits per second)");
    let (number, scale) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('m' | 'M') => (&s[..s.len() - 1], 1e6),
        Some('g' | 'G') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    let n: f64 = number.parse().map_err(|_| err())?;
    if !n.is_finite() || n < 0.0 {
        return Err(err());
    }
    Ok((n * scale).round() as u64)
}

/// A duration: `500ms`, `30s`, `2m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("{s:?} is not a duration such as 500ms, 30s, 2m or 1h");
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| err())?;
    let secs = match unit {
        "ms" => n / 1e3,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(secs).ok().filter(|d| !d.is_zero()).ok_or_else(err)
}

/// A percentage: `1`, `0.5%`.
fn parse_percent(s: &str) -> Result<f64, String> {
    s.trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("{s:?} is not a percentage between 0 and 100"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(parse_rate("4M"), Ok(4_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("4Mbps").is_err());
        assert!(parse_rate("-1M").is_err());
        assert!(parse_rate("M").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("1"), Ok(1.0));
        assert_eq!(parse_percent("0.5%"), Ok(0.5));
        assert!(parse_percent("101").is_err());
    }
}
