//! Peer filtering: which addresses a client may relay to.
//!
//! Deny by default every range the IANA special-purpose address registries
//! (RFC 6890 and its successors) mark as not globally reachable, plus
//! multicast, reserved space and the node's own relay address. [`IPV4_RULES`]
//! and [`IPV6_RULES`] are that policy, one table each, first match wins;
//! turn-node's README prints the same tables (a test keeps them equal).
//!
//! IPv6 forms that carry an IPv4 destination are judged by the IPv4 rules as
//! well: IPv4-mapped `::ffff:a.b.c.d` *is* an IPv4 destination (a dual-stack
//! socket sends IPv4) and is unwrapped first; SIIT `::ffff:0:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`,
//! Teredo `2001::/32` (server and client) and ISATAP interface identifiers
//! reach the IPv4 address they embed through a translator or tunnel, so the
//! IPv6 address is permitted only when every IPv4 address it embeds is. That
//! closes the `::ffff:127.0.0.1` and `2002:7f00:1::` classes of bypasses.
//!
//! Explicit allow CIDRs win over every deny rule (gateway mode allows the SFU
//! pod CIDR); extra deny CIDRs add to the defaults.
//!
//! One rule no allow CIDR overrides: the server's own UDP listener addresses.
//! In gateway mode the allowed pod CIDR contains the TURN pod itself, and a
//! relay pointed at its own listener would loop TURN through TURN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// What the built-in rules say about a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Never a relay destination unless an allow CIDR covers it.
    Denied,
    /// Globally reachable: permitted unless a deny CIDR covers it.
    Reachable,
    /// Carries IPv4 addresses: permitted only when each of them is.
    Embeds(Embedding),
}

/// Where an IPv6 address carries an IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Embedding {
    /// The last 32 bits (SIIT, IPv4-compatible, NAT64 well-known prefix).
    Last32,
    /// Bits 16–47 (6to4, RFC 3056).
    SixToFour,
    /// The server in bits 32–63 and the client, inverted, in the last 32 bits (RFC 4380).
    Teredo,
    /// The last 32 bits when the interface identifier is ISATAP's
    /// `0:5efe` or `200:5efe` (RFC 5214); other addresses embed nothing.
    Isatap,
}

impl Embedding {
    /// The IPv4 addresses `ip` carries in this form (none, one or two).
    pub fn decode(self, ip: Ipv6Addr) -> impl Iterator<Item = Ipv4Addr> {
        let s = ip.segments();
        let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        let (a, b) = match self {
            Embedding::Last32 => (Some(v4(s[6], s[7])), None),
            Embedding::SixToFour => (Some(v4(s[1], s[2])), None),
            Embedding::Teredo => (Some(v4(s[2], s[3])), Some(v4(!s[6], !s[7]))),
            Embedding::Isatap => ((s[4] & 0xfcff == 0 && s[5] == 0x5efe).then(|| v4(s[6], s[7])), None),
        };
        a.into_iter().chain(b)
    }
}

/// One row of the built-in policy.
#[derive(Clone, Copy, Debug)]
pub struct Rule<A> {
    /// First address of the range.
    pub addr: A,
    /// Prefix length.
    pub len: u8,
    /// What the range is.
    pub name: &'static str,
    /// Where it is defined.
    pub rfc: &'static str,
    /// Denied, reachable, or judged by the IPv4 addresses it carries.
    pub verdict: Verdict,
}

impl Rule<Ipv4Addr> {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl Rule<Ipv6Addr> {
    fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
        u128::from(ip) & mask == u128::from(self.addr) & mask
    }
}

const fn v4(n: [u8; 5], name: &'static str, rfc: &'static str, verdict: Verdict) -> Rule<Ipv4Addr> {
    Rule { addr: Ipv4Addr::new(n[0], n[1], n[2], n[3]), len: n[4], name, rfc, verdict }
}

const fn v6(s: [u16; 8], len: u8, name: &'static str, rfc: &'static str, verdict: Verdict) -> Rule<Ipv6Addr> {
    Rule { addr: Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), len, name, rfc, verdict }
}

use Verdict::{Denied, Embeds, Reachable};

/// The built-in IPv4 policy, first match wins, and the last row covers
/// everything. Rows follow the IANA IPv4 Special-Purpose Address Registry
/// (every block it marks not globally reachable), plus multicast.
pub const IPV4_RULES: &[Rule<Ipv4Addr>] = &[
    v4([0, 0, 0, 0, 8], "\"this network\", incl. 0.0.0.0", "RFC 791, RFC 1122", Denied),
    v4([10, 0, 0, 0, 8], "private use", "RFC 1918", Denied),
    v4([100, 64, 0, 0, 10], "shared address space (carrier-grade NAT)", "RFC 6598", Denied),
    v4([127, 0, 0, 0, 8], "loopback", "RFC 1122", Denied),
    v4([169, 254, 0, 0, 16], "link-local, incl. the 169.254.169.254 metadata service", "RFC 3927", Denied),
    v4([172, 16, 0, 0, 12], "private use", "RFC 1918", Denied),
    v4([192, 0, 0, 9, 32], "Port Control Protocol anycast", "RFC 7723", Reachable),
    v4([192, 0, 0, 10, 32], "TURN anycast", "RFC 8155", Reachable),
    v4([192, 0, 0, 0, 24], "IETF protocol assignments (DS-Lite, dummy address, NAT64 discovery)", "RFC 6890", Denied),
    v4([192, 0, 2, 0, 24], "documentation (TEST-NET-1)", "RFC 5737", Denied),
    v4([192, 88, 99, 0, 24], "deprecated 6to4 relay anycast", "RFC 7526", Denied),
    v4([192, 168, 0, 0, 16], "private use", "RFC 1918", Denied),
    v4([198, 18, 0, 0, 15], "benchmarking", "RFC 2544", Denied),
    v4([198, 51, 100, 0, 24], "documentation (TEST-NET-2)", "RFC 5737", Denied),
    v4([203, 0, 113, 0, 24], "documentation (TEST-NET-3)", "RFC 5737", Denied),
    v4([224, 0, 0, 0, 4], "multicast", "RFC 5771", Denied),
    v4([240, 0, 0, 0, 4], "reserved, incl. 255.255.255.255 limited broadcast", "RFC 1112, RFC 919", Denied),
    v4([0, 0, 0, 0, 0], "everything else: globally reachable", "RFC 6890", Reachable),
];

/// The built-in IPv6 policy, applied after IPv4-mapped addresses were
/// unwrapped; first match wins, and the last row covers everything. Rows
/// follow the IANA IPv6 Special-Purpose Address Registry (every block it
/// marks not globally reachable) and the IPv6 address space registry
/// (global unicast is 2000::/3).
pub const IPV6_RULES: &[Rule<Ipv6Addr>] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified", "RFC 4291", Denied),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback", "RFC 4291", Denied),
    v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, "SIIT IPv4-translated", "RFC 7915", Embeds(Embedding::Last32)),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible (deprecated)", "RFC 4291", Embeds(Embedding::Last32)),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "NAT64 well-known prefix", "RFC 6052", Embeds(Embedding::Last32)),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local-use NAT64", "RFC 8215", Denied),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only", "RFC 6666", Denied),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128, "Port Control Protocol anycast", "RFC 7723", Reachable),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128, "TURN anycast", "RFC 8155", Reachable),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, "AMT", "RFC 7450", Reachable),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, "AS112-v6", "RFC 7535", Reachable),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "ORCHIDv2", "RFC 7343", Reachable),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo", "RFC 4380", Embeds(Embedding::Teredo)),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments (benchmarking 2001:2::/48, ORCHID)",
        "RFC 2928, RFC 5180",
        Denied,
    ),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation", "RFC 3849", Denied),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4", "RFC 3056", Embeds(Embedding::SixToFour)),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation", "RFC 9637", Denied),
    v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3, "global unicast", "RFC 4291", Embeds(Embedding::Isatap)),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local", "RFC 4193", Denied),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local", "RFC 4291", Denied),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local (deprecated)", "RFC 3879", Denied),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast", "RFC 4291", Denied),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 0, "everything else: not allocated for global unicast", "RFC 4291", Denied),
];

/// The built-in verdict for an address (IPv4-mapped addresses are judged as IPv4).
pub fn builtin_verdict(ip: IpAddr) -> Verdict {
    match canonical(ip) {
        IpAddr::V4(v4) => IPV4_RULES.iter().find(|r| r.contains(v4)).map_or(Denied, |r| r.verdict),
        IpAddr::V6(v6) => IPV6_RULES.iter().find(|r| r.contains(v6)).map_or(Denied, |r| r.verdict),
    }
}

/// The IPv4 addresses an IPv6 address carries, by the rule that covers it.
fn embedded(v6: Ipv6Addr) -> impl Iterator<Item = Ipv4Addr> {
    let embedding = match builtin_verdict(IpAddr::V6(v6)) {
        Embeds(e) => Some(e),
        _ => None,
    };
    embedding.into_iter().flat_map(move |e| e.decode(v6))
}

/// The peer filter.
#[derive(Clone, Debug, Default)]
pub struct PeerFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    own: Vec<IpAddr>,
    blocked: Vec<SocketAddr>,
    only: Vec<SocketAddr>,
}

/// The address a socket really sends to: IPv4-mapped IPv6 addresses are
/// IPv4 destinations. Permissions are kept, and families compared, in this form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The filter a running server checks, replaced whole when its config file's `peers`
/// change (the operator edits the allow list as SFU pods come and go). The `only` list
/// never changes while running, so the peer → client path reads it without the lock.
#[derive(Debug, Default)]
pub struct LiveFilter {
    rules: std::sync::RwLock<PeerFilter>,
    only: Vec<SocketAddr>,
}

impl From<PeerFilter> for LiveFilter {
    fn from(f: PeerFilter) -> Self {
        LiveFilter { only: f.only.clone(), rules: std::sync::RwLock::new(f) }
    }
}

impl LiveFilter {
    fn current(&self) -> std::sync::RwLockReadGuard<'_, PeerFilter> {
        self.rules.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`PeerFilter::permits_addr`] of the current rules.
    pub fn permits_addr(&self, addr: SocketAddr) -> bool {
        self.current().permits_addr(addr)
    }

    /// [`PeerFilter::permits_permission`] of the current rules.
    pub fn permits_permission(&self, ip: IpAddr) -> bool {
        self.current().permits_permission(ip)
    }

    /// [`PeerFilter::relays_from`], without taking the lock.
    #[inline]
    pub fn relays_from(&self, addr: SocketAddr) -> bool {
        only_admits(&self.only, addr)
    }

    /// Replace the allow and deny CIDRs (the server's own addresses stay refused).
    /// Returns false when they were already these.
    pub fn set_rules(&self, allow: Vec<IpNet>, deny: Vec<IpNet>) -> bool {
        let mut f = self.rules.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if f.allow == allow && f.deny == deny {
            return false;
        }
        f.allow = allow;
        f.deny = deny;
        true
    }
}

/// An empty `only` list admits everything; otherwise exactly its transport addresses.
fn only_admits(only: &[SocketAddr], addr: SocketAddr) -> bool {
    only.is_empty() || only.contains(&SocketAddr::new(canonical(addr.ip()), addr.port()))
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

    /// When not empty, the only transport addresses data is ever relayed to or from,
    /// checked before every other rule (`switchyard dev`: the SFU's own media ports,
    /// nothing else on its host). A permission is per IP (RFC 8656 §9: its port means
    /// nothing), so permissions are granted for the IPs of the list
    /// ([`Self::permits_permission`]) and the ports are enforced on the data: Send
    /// indications and channel bindings ([`Self::permits_addr`]) and what peers send
    /// back ([`Self::relays_from`]).
    pub fn with_only(mut self, only: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.only = only.into_iter().map(|a| SocketAddr::new(canonical(a.ip()), a.port())).collect();
        self
    }

    /// True when a permission for `ip` may be installed: an `only` list names it (at any
    /// port), and the address rules permit it.
    pub fn permits_permission(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if !self.only.is_empty() && !self.only.iter().any(|a| a.ip() == ip) {
            return false;
        }
        self.permits(ip)
    }

    /// True when data a peer sent from `addr` may reach the client: the `only` list
    /// (when set) names this exact transport address. The address itself was judged
    /// when its permission was installed.
    pub fn relays_from(&self, addr: SocketAddr) -> bool {
        only_admits(&self.only, addr)
    }

    /// True when relaying to this exact transport address is permitted.
    pub fn permits_addr(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        if !only_admits(&self.only, addr) {
            return false;
        }
        if self.blocked.iter().any(|b| b.ip() == ip && b.port() == addr.port()) {
            return false;
        }
        self.permits(ip)
    }

    /// True when relaying to `ip` is permitted: an allow CIDR covers it, or
    /// neither it nor any IPv4 address it carries is denied.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allowed(ip) {
            return true;
        }
        if self.denied(ip) {
            return false;
        }
        match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => embedded(v6).map(IpAddr::V4).all(|v4| self.allowed(v4) || !self.denied(v4)),
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(&ip))
    }

    fn denied(&self, ip: IpAddr) -> bool {
        builtin_verdict(ip) == Denied || self.own.contains(&ip) || self.deny.iter().any(|n| n.contains(&ip))
    }
}

/// The policy tables as markdown rows (`| range | what | where | verdict |`),
/// the form turn-node's README prints them in.
pub fn policy_table() -> String {
    fn verdict(v: Verdict) -> &'static str {
        match v {
            Denied => "denied",
            Reachable => "permitted",
            Embeds(Embedding::Last32) => "as the IPv4 address in its last 32 bits",
            Embeds(Embedding::SixToFour) => "as the IPv4 address in bits 16–47",
            Embeds(Embedding::Teredo) => "as its server and client IPv4 addresses",
            Embeds(Embedding::Isatap) => {
                "permitted, but an ISATAP interface identifier (`…:0:5efe:a.b.c.d`, RFC 5214) as its IPv4 address"
            }
        }
    }
    let mut out = String::from("| range | what | defined in | relaying to it is |\n| --- | --- | --- | --- |\n");
    let rows = IPV4_RULES
        .iter()
        .map(|r| (format!("{}/{}", r.addr, r.len), r.name, r.rfc, r.verdict))
        .chain([("::ffff:0:0/96".to_owned(), "IPv4-mapped", "RFC 4291", Embeds(Embedding::Last32))])
        .chain(IPV6_RULES.iter().map(|r| (format!("{}/{}", r.addr, r.len), r.name, r.rfc, r.verdict)));
    for (range, name, rfc, v) in rows {
        out.push_str(&format!("| `{range}` | {name} | {rfc} | {} |\n", verdict(v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Every address form the security tests also try end to end, and every
    /// one the probe found granted (6to4, local-use NAT64, SIIT,
    /// Teredo, discard-only, documentation, shared, IETF, benchmarking).
    pub(crate) const DENIED: &[&str] = &[
        "127.0.0.1",
        "127.1.2.3",
        "0.0.0.0",
        "0.1.2.3",
        "10.1.2.3",
        "100.64.0.1",
        "100.127.255.254",
        "169.254.169.254",
        "169.254.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.1",
        "192.0.0.8",
        "192.0.0.170",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.1",
        "203.0.113.1",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "fc00::1",
        "fd12:3456::1",
        "100::1",
        "100::ffff:ffff:ffff:ffff",
        "2001:db8::1",
        "2001:2::1",
        "2001:10::1",
        "3fff::1",
        "5f00::1",
        "4000::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:0.0.0.0",
        "::ffff:10.0.0.1",
        "::ffff:100.64.0.1",
        "::ffff:224.0.0.1",
        "::ffff:255.255.255.255",
        "::ffff:0:7f00:1",
        "::ffff:0:a9fe:a9fe",
        "::127.0.0.1",
        "::169.254.169.254",
        "::192.168.0.1",
        "64:ff9b::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::10.0.0.1",
        "64:ff9b::198.18.0.1",
        "64:ff9b:1::7f00:1",
        "64:ff9b:1::808:808",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::",
        "2002:a00:1::1",
        "2002:c0a8:101::1",
        // Teredo: server 127.0.0.1 / client 8.8.8.8, and server 8.8.8.8 / client 10.0.0.1.
        "2001:0:7f00:1::f7f7:f7f7",
        "2001:0:808:808::f5ff:fffe",
        // Teredo with a zero server and an all-ones client (0.0.0.0 inverted).
        "2001::ffff:ffff",
        // ISATAP interface identifiers carrying loopback and link-local.
        "2a01:4f8::5efe:7f00:1",
        "2a01:4f8::200:5efe:a9fe:a9fe",
    ];

    /// Globally reachable destinations, and embedded forms of them.
    const PERMITTED: &[&str] = &[
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.1",
        "192.0.0.9",
        "192.0.0.10",
        "192.0.3.1",
        "192.31.196.1",
        "198.20.0.1",
        "223.255.255.255",
        "2001:4860::8888",
        "2a00:1450::1",
        "2001:1::1",
        "2001:1::2",
        "2001:3::1",
        "2001:4:112::1",
        "2001:20::1",
        "::ffff:8.8.8.8",
        "::ffff:0:808:808",
        "::8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
        // Teredo: server 8.8.8.8, client 1.1.1.1 (stored inverted).
        "2001:0:808:808::fefe:fefe",
        "2a01:4f8::5efe:808:808",
    ];

    #[test]
    fn default_denies_every_non_global_form() {
        let f = PeerFilter::default();
        for a in DENIED {
            assert!(!f.permits(ip(a)), "{a} must be denied");
        }
    }

    #[test]
    fn default_permits_global_addresses_and_their_embedded_forms() {
        let f = PeerFilter::default();
        for a in PERMITTED {
            assert!(f.permits(ip(a)), "{a} must be permitted");
        }
    }

    #[test]
    fn every_row_decides_part_of_its_range() {
        // First match wins: a row wholly shadowed by earlier rows would be dead.
        // Samples: the first, the last and a patterned address of each range.
        for (i, r) in IPV4_RULES.iter().enumerate() {
            let host = u32::MAX.checked_shr(u32::from(r.len)).unwrap_or(0);
            let base = u32::from(r.addr) & !host;
            let decided = [base, base | host, base | (host & 0x5555_5555)]
                .map(Ipv4Addr::from)
                .iter()
                .any(|&a| IPV4_RULES.iter().position(|x| x.contains(a)) == Some(i));
            assert!(decided, "{}/{} is shadowed", r.addr, r.len);
        }
        for (i, r) in IPV6_RULES.iter().enumerate() {
            let host = u128::MAX.checked_shr(u32::from(r.len)).unwrap_or(0);
            let base = u128::from(r.addr) & !host;
            let decided = [base, base | host, base | (host & 0x5555_5555_5555_5555_5555_5555_5555_5555)]
                .map(Ipv6Addr::from)
                .iter()
                .any(|&a| IPV6_RULES.iter().position(|x| x.contains(a)) == Some(i));
            assert!(decided, "{}/{} is shadowed", r.addr, r.len);
        }
    }

    #[test]
    fn embedded_addresses_decode() {
        let d = |e: Embedding, s: &str| e.decode(s.parse().unwrap()).collect::<Vec<_>>();
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(d(Embedding::SixToFour, "2002:a9fe:a9fe::"), [a("169.254.169.254")]);
        assert_eq!(d(Embedding::Last32, "64:ff9b::7f00:1"), [a("127.0.0.1")]);
        assert_eq!(d(Embedding::Teredo, "2001:0:4136:e378:8000:63bf:3fff:fdd2"), [a("65.54.227.120"), a("192.0.2.45")]);
        assert_eq!(d(Embedding::Isatap, "2001:db8::200:5efe:c000:21e"), [a("192.0.2.30")]);
        assert!(d(Embedding::Isatap, "2001:db8::1:5efe:c000:21e").is_empty(), "not an ISATAP identifier");
    }

    #[test]
    fn readme_prints_the_same_table() {
        let readme = include_str!("../README.md");
        let table = policy_table();
        assert!(readme.contains(&table), "turn-node/README.md must contain the peer policy table:\n{table}");
    }

    #[test]
    fn allow_wins_and_deny_adds() {
        let f = PeerFilter::new(
            vec!["127.0.0.0/8".parse().unwrap(), "2002:a9fe::/32".parse().unwrap()],
            vec!["10.96.0.0/12".parse().unwrap(), "2a00:1450::/32".parse().unwrap(), "8.8.4.0/24".parse().unwrap()],
            vec![ip("192.0.2.10")],
        );
        assert!(f.permits(ip("127.0.0.1")));
        assert!(f.permits(ip("::ffff:127.0.0.1")));
        assert!(f.permits(ip("2002:7f00:1::")), "the IPv4 it carries is allowed");
        assert!(f.permits(ip("2002:a9fe:a9fe::")), "the IPv6 form itself is allowed");
        assert!(!f.permits(ip("10.96.0.1")));
        assert!(!f.permits(ip("::ffff:10.96.0.1")));
        assert!(!f.permits(ip("2a00:1450::1")));
        assert!(!f.permits(ip("64:ff9b::8.8.4.4")), "deny CIDRs apply to embedded IPv4 too");
        assert!(!f.permits(ip("2002:808:404::")));
        assert!(!f.permits(ip("192.0.2.10")));
        assert!(!f.permits(ip("::1")));
        assert!(!f.permits(ip("10.0.0.1")), "private use stays denied");
    }

    #[test]
    fn own_address_is_denied_in_embedded_forms() {
        let f = PeerFilter::new(vec![], vec![], vec![ip("8.8.8.8")]);
        assert!(!f.permits(ip("8.8.8.8")));
        assert!(!f.permits(ip("2002:808:808::1")));
        assert!(!f.permits(ip("64:ff9b::808:808")));
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
    fn an_only_list_grants_permissions_by_ip_and_relays_data_by_port() {
        let f = PeerFilter::new(vec!["127.0.0.1/32".parse().unwrap(), "192.0.2.0/24".parse().unwrap()], vec![], vec![])
            .with_only(["127.0.0.1:7882".parse().unwrap()]);
        assert!(f.permits_permission(ip("127.0.0.1")), "a permission carries no port");
        assert!(f.permits_permission(ip("::ffff:127.0.0.1")));
        assert!(!f.permits_permission(ip("192.0.2.1")), "allowed by CIDR, but not in the list");
        let live = LiveFilter::from(f);
        assert!(live.permits_permission(ip("127.0.0.1")));
        assert!(live.relays_from("127.0.0.1:7882".parse().unwrap()));
        assert!(live.relays_from("[::ffff:127.0.0.1]:7882".parse().unwrap()));
        assert!(!live.relays_from("127.0.0.1:7883".parse().unwrap()), "another port of the SFU's host");
        assert!(!live.permits_addr("127.0.0.1:7883".parse().unwrap()));
        let open = LiveFilter::from(PeerFilter::default());
        assert!(open.relays_from("203.0.113.9:5000".parse().unwrap()), "no list: the permission decides");
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
