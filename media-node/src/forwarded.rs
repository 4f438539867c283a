//! Who the client is when a trusted proxy stands in front of the signaling port.
//!
//! Behind an ingress controller or a load balancer that rewrites source addresses, every
//! connection comes from a few proxy addresses, so a per-address connection cap would
//! count the whole audience as one client. A connection from a trusted proxy
//! (`--trusted-proxies`, and in Kubernetes mode the fleet's own media-node pods, which
//! proxy signaling to each other) is therefore counted toward the total only when it is
//! accepted; its WebSocket is counted per address under the client that the proxy names
//! in `X-Forwarded-For`: the right-most entry that is not itself a trusted proxy (entries
//! to its left were written by the client and prove nothing). `X-Forwarded-For` from any
//! other peer is ignored.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The configured trusted proxies.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub(crate) fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses are the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`192.0.2.1:5000`,
/// `[2001:db8::1]:5000`).
fn entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip())).map(canonical)
}

/// The client a trusted proxy forwarded, from every `X-Forwarded-For` value in order:
/// the right-most entry that `trusted` does not cover. `Ok(None)` when the proxy named
/// nobody (no header, or only trusted hops); an entry that is not an address is an error
/// naming it, since the hop that wrote it is the one we trust.
pub(crate) fn forwarded_client<'a>(
    values: impl IntoIterator<Item = &'a str>,
    trusted: impl Fn(IpAddr) -> bool,
) -> Result<Option<IpAddr>, String> {
    let entries: Vec<&str> = values.into_iter().flat_map(|v| v.split(',')).collect();
    for raw in entries.into_iter().rev() {
        let ip = entry(raw).ok_or_else(|| format!("X-Forwarded-For entry {:?} is not an address", raw.trim()))?;
        if !trusted(ip) {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let trusted = |a| proxies.contains(a);
        let client = |values: &[&str]| forwarded_client(values.iter().copied(), trusted);
        assert_eq!(client(&["203.0.113.7"]), Ok(Some(ip("203.0.113.7"))));
        // A client cannot hide behind an entry it wrote itself: the proxy appends the
        // address it saw, which is the one counted.
        assert_eq!(client(&["198.51.100.1, 203.0.113.7"]), Ok(Some(ip("203.0.113.7"))));
        assert_eq!(client(&["198.51.100.1", "203.0.113.7, 10.1.2.3"]), Ok(Some(ip("203.0.113.7"))), "two hops");
        assert_eq!(client(&["203.0.113.7:5000"]), Ok(Some(ip("203.0.113.7"))));
        assert_eq!(client(&["[2001:db8::7]:5000"]), Ok(Some(ip("2001:db8::7"))));
        assert_eq!(client(&["::ffff:203.0.113.7"]), Ok(Some(ip("203.0.113.7"))));
        assert_eq!(client(&[]), Ok(None), "no header");
        assert_eq!(client(&["10.1.2.3"]), Ok(None), "only trusted hops");
        assert!(client(&["203.0.113.7, unknown"]).unwrap_err().contains("\"unknown\""));
        // Left of the first untrusted hop nothing is read, garbage included.
        assert_eq!(client(&["junk, 203.0.113.7"]), Ok(Some(ip("203.0.113.7"))));
    }

    #[test]
    fn trusted_proxies_match_mapped_addresses() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(proxies.contains(ip("10.9.8.7")));
        assert!(proxies.contains(ip("::ffff:10.9.8.7")));
        assert!(!proxies.contains(ip("192.0.2.1")));
        assert!(!TrustedProxies::default().contains(ip("10.9.8.7")));
    }
}
