//! Peer filtering: which addresses a client may relay to.
//!
//! Deny by default for everything that reaches the node itself or its
//! neighbourhood rather than the Internet: loopback, unspecified/"this
//! network", link-local (incl. the 169.254.169.254 metadata service),
//! multicast, broadcast/reserved, IPv6 ULA, and the node's own relay address.
//! IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`) are unwrapped first and
//! judged as the IPv4 address they reach, which closes the `::ffff:127.0.0.1`
//! class of bypasses. Explicit allow CIDRs win over every deny rule (gateway
//! mode allows the SFU pod CIDR); extra deny CIDRs add to the defaults.
//!
//! One rule no allow CIDR overrides: the server's own UDP listener addresses.
//! In gateway mode the allowed pod CIDR contains the TURN pod itself, and a
//! relay pointed at its own listener would loop TURN through TURN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// The peer filter.
#[derive(Clone, Debug, Default)]
pub struct PeerFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    own: Vec<IpAddr>,
    blocked: Vec<SocketAddr>,
    only: Vec<SocketAddr>,
}

/// Unwrap IPv6 addresses that carry an IPv4 destination.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            // IPv4-compatible (deprecated): ::a.b.c.d, but not :: and ::1.
            if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
                return IpAddr::V4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
            }
            // NAT64 well-known prefix 64:ff9b::/96.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return IpAddr::V4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
            }
            ip
        }
    }
}

fn denied_by_default(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || o[0] == 0 // "this network", incl. 0.0.0.0
                || v4.is_link_local()
                || v4.is_multicast()
                || o[0] >= 240 // reserved + 255.255.255.255 broadcast
        }
        IpAddr::V6(v6) => {
            let s0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s0 & 0xffc0) == 0xfe80 // link-local
                || (s0 & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s0 & 0xfe00) == 0xfc00 // ULA
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)
        }
    }
}

/// The filter a running server checks, replaced whole when its config file's `peers`
/// change (the operator edits the allow list as SFU pods come and go).
#[derive(Debug, Default)]
pub struct LiveFilter(std::sync::RwLock<PeerFilter>);

impl From<PeerFilter> for LiveFilter {
    fn from(f: PeerFilter) -> Self {
        LiveFilter(std::sync::RwLock::new(f))
    }
}

impl LiveFilter {
    fn current(&self) -> std::sync::RwLockReadGuard<'_, PeerFilter> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`PeerFilter::permits_addr`] of the current rules.
    pub fn permits_addr(&self, addr: SocketAddr) -> bool {
        self.current().permits_addr(addr)
    }

    /// Replace the allow and deny CIDRs (the server's own addresses stay refused).
    /// Returns false when they were already these.
    pub fn set_rules(&self, allow: Vec<IpNet>, deny: Vec<IpNet>) -> bool {
        let mut f = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if f.allow == allow && f.deny == deny {
            return false;
        }
        f.allow = allow;
        f.deny = deny;
        true
    }
}

impl PeerFilter {
    /// A filter with allow CIDRs (win), extra deny CIDRs, and the node's own
    /// addresses (denied unless allowed, so a client cannot loop the relay
    /// back into the server).
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>, own: Vec<IpAddr>) -> Self {
        PeerFilter { allow, deny, own: own.into_iter().map(canonical).collect(), blocked: Vec::new(), only: Vec::new() }
    }

    /// Transport addresses never relayed to, whatever the allow list says
    /// (the server's own UDP listeners).
    pub fn with_blocked(mut self, blocked: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.blocked = blocked.into_iter().map(|a| SocketAddr::new(canonical(a.ip()), a.port())).collect();
        self
    }

    /// When not empty, the only transport addresses ever relayed to, checked before every
    /// other rule (`switchyard dev`: the SFU's own media ports, nothing else on its host).
    pub fn with_only(mut self, only: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.only = only.into_iter().map(|a| SocketAddr::new(canonical(a.ip()), a.port())).collect();
        self
    }

    /// True when relaying to this exact transport address is permitted.
    pub fn permits_addr(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        if !self.only.is_empty() && !self.only.contains(&SocketAddr::new(ip, addr.port())) {
            return false;
        }
        if self.blocked.iter().any(|b| b.ip() == ip && b.port() == addr.port()) {
            return false;
        }
        self.permits(ip)
    }

    /// True when relaying to `ip` is permitted.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        !(denied_by_default(ip) || self.own.contains(&ip) || self.deny.iter().any(|n| n.contains(&ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Every address form the security tests also try end to end.
    pub(crate) const DENIED: &[&str] = &[
        "127.0.0.1",
        "127.1.2.3",
        "0.0.0.0",
        "0.1.2.3",
        "169.254.169.254",
        "169.254.0.1",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "ff02::1",
        "fc00::1",
        "fd12:3456::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:0.0.0.0",
        "::ffff:224.0.0.1",
        "::ffff:255.255.255.255",
        "::127.0.0.1",
        "::169.254.169.254",
        "64:ff9b::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
    ];

    #[test]
    fn default_denies_every_local_form() {
        let f = PeerFilter::default();
        for a in DENIED {
            assert!(!f.permits(ip(a)), "{a} must be denied");
        }
        assert!(f.permits(ip("8.8.8.8")));
        assert!(f.permits(ip("2001:4860::8888")));
        assert!(f.permits(ip("10.1.2.3")));
    }

    #[test]
    fn allow_wins_and_deny_adds() {
        let f = PeerFilter::new(
            vec!["127.0.0.0/8".parse().unwrap()],
            vec!["10.96.0.0/12".parse().unwrap()],
            vec![ip("192.0.2.10")],
        );
        assert!(f.permits(ip("127.0.0.1")));
        assert!(f.permits(ip("::ffff:127.0.0.1")));
        assert!(!f.permits(ip("10.96.0.1")));
        assert!(!f.permits(ip("::ffff:10.96.0.1")));
        assert!(!f.permits(ip("192.0.2.10")));
        assert!(!f.permits(ip("::1")));
    }

    #[test]
    fn own_listener_is_blocked_even_when_allowed() {
        let f = PeerFilter::new(vec!["10.244.0.0/16".parse().unwrap()], vec![], vec![])
            .with_blocked(["10.244.1.7:3478".parse().unwrap()]);
        assert!(!f.permits_addr("10.244.1.7:3478".parse().unwrap()));
        assert!(!f.permits_addr("[::ffff:10.244.1.7]:3478".parse().unwrap()));
        assert!(f.permits_addr("10.244.1.7:50000".parse().unwrap()), "relay ports stay reachable");
        assert!(f.permits_addr("10.244.2.9:3478".parse().unwrap()));
    }

    #[test]
    fn an_only_list_permits_exactly_its_addresses() {
        let f = PeerFilter::new(vec!["127.0.0.1/32".parse().unwrap()], vec![], vec![])
            .with_only(["127.0.0.1:7882".parse().unwrap()]);
        assert!(f.permits_addr("127.0.0.1:7882".parse().unwrap()));
        assert!(f.permits_addr("[::ffff:127.0.0.1]:7882".parse().unwrap()));
        for other in ["127.0.0.1:22", "127.0.0.1:7880", "127.0.0.1:7883", "192.0.2.1:7882"] {
            assert!(!f.permits_addr(other.parse().unwrap()), "{other}");
        }
    }

    #[test]
    fn live_rules_change_while_running() {
        let live = LiveFilter::from(
            PeerFilter::new(vec![], vec!["0.0.0.0/0".parse().unwrap()], vec!["10.0.0.9".parse().unwrap()])
                .with_blocked(["10.0.0.9:3478".parse().unwrap()]),
        );
        let sfu: SocketAddr = "10.244.1.7:7882".parse().unwrap();
        assert!(!live.permits_addr(sfu), "Gateway mode before the SFU pod's IP is known");
        assert!(live.set_rules(vec!["10.244.1.7/32".parse().unwrap()], vec!["0.0.0.0/0".parse().unwrap()]));
        assert!(live.permits_addr(sfu));
        assert!(!live.set_rules(vec!["10.244.1.7/32".parse().unwrap()], vec!["0.0.0.0/0".parse().unwrap()]));
        assert!(live.set_rules(vec!["10.0.0.0/8".parse().unwrap()], vec![]));
        assert!(!live.permits_addr("10.0.0.9:3478".parse().unwrap()), "own listener stays blocked");
    }
}
