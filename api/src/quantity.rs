//! Kubernetes quantities as plain numbers: `200M` bits/s → 200_000_000.
//!
//! The CRDs carry bandwidths as quantities (what `kubectl` users write); the autoscaler
//! and placement need integers. Decimal SI (`k M G T P E`, `m`), binary SI (`Ki … Ei`)
//! and exponents (`1e6`) are accepted, as in Kubernetes.

use crate::{Error, Result};

/// Parse a quantity to a whole number, rounding fractions up (as Kubernetes does for
/// values it cannot represent exactly). Negative quantities are refused.
pub fn parse_quantity(s: &str) -> Result<u64> {
    let bad = || Error::InvalidQuantity(s.to_owned());
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let number = number.strip_prefix('+').unwrap_or(number);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let (multiplier, divisor): (f64, f64) = match suffix {
        "" => (1.0, 1.0),
        "m" => (1.0, 1000.0),
        "k" => (1e3, 1.0),
        "M" => (1e6, 1.0),
        "G" => (1e9, 1.0),
        "T" => (1e12, 1.0),
        "P" => (1e15, 1.0),
        "E" => (1e18, 1.0),
        "Ki" => (1024.0, 1.0),
        "Mi" => (1024f64.powi(2), 1.0),
        "Gi" => (1024f64.powi(3), 1.0),
        "Ti" => (1024f64.powi(4), 1.0),
        "Pi" => (1024f64.powi(5), 1.0),
        "Ei" => (1024f64.powi(6), 1.0),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| bad())?;
            if !(-18..=18).contains(&exp) {
                return Err(bad());
            }
            (10f64.powi(exp), 1.0)
        }
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scaled = (value * multiplier / divisor).ceil();
    if !scaled.is_finite() || scaled > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(scaled as u64)
}

/// Format bits/s for people: `12.5M`, `800k`, `3G`.
pub fn format_bandwidth(bps: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1_000_000_000_000, "T"), (1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")];
    for (scale, unit) in UNITS {
        if bps >= scale {
            let tenths = (bps * 10 + scale / 2) / scale;
            return if tenths.is_multiple_of(10) {
                format!("{}{unit}", tenths / 10)
            } else {
                format!("{}.{}{unit}", tenths / 10, tenths % 10)
            };
        }
    }
    bps.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_forms() {
        for (input, want) in [
            ("200M", 200_000_000),
            ("1.5G", 1_500_000_000),
            ("800k", 800_000),
            ("1Ki", 1024),
            ("2Mi", 2 * 1024 * 1024),
            ("1e6", 1_000_000),
            ("1500m", 2),
            ("42", 42),
            ("+7", 7),
            ("0", 0),
        ] {
            assert_eq!(parse_quantity(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn refuses_garbage_with_the_input_in_the_message() {
        for input in ["", "M", "-5M", "1.2.3", "12X", "1e99", "."] {
            let err = parse_quantity(input).unwrap_err();
            assert_eq!(err, Error::InvalidQuantity(input.into()));
            assert!(err.to_string().contains("such as 200M"));
        }
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_bandwidth(12_500_000), "12.5M");
        assert_eq!(format_bandwidth(800_000), "800k");
        assert_eq!(format_bandwidth(3_000_000_000), "3G");
        assert_eq!(format_bandwidth(999), "999");
    }
}
