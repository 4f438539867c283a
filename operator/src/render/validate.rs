//! What [`super::render`] refuses before it renders anything: specs that would produce
//! objects the apiserver rejects, or nodes that cannot start or are unsafe.
//!
//! The CRD's CEL rules refuse all of these at `kubectl apply` time; these checks exist for
//! objects stored before a rule existed (the apiserver does not re-validate them) and
//! say the same things, so the controller can put them in the MediaCluster's conditions
//! and an Event instead of only its log. Each problem names the field and what to change.

use std::net::IpAddr;

use switchyard_api::MediaCluster;
use switchyard_api::media_cluster::{ADMIN_PORT, BUILT_IN_DENIED, MAX_CLUSTER_NAME, TurnProtocol};

/// Every problem of `mc`'s spec, in field order; empty when it can be rendered.
pub fn validate(mc: &MediaCluster) -> Vec<String> {
    let s = &mc.spec;
    let mut out = Vec::new();
    let name = mc.metadata.name.as_deref().unwrap_or_default();
    if !is_label(name, MAX_CLUSTER_NAME) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.push(format!(
            "metadata.name {name:?} cannot prefix the cluster's object names (<name>-sfu, <name>-turn-admin): \
             recreate the MediaCluster with at most {MAX_CLUSTER_NAME} lowercase letters, digits and '-', starting with a letter"
        ));
    }
    for (field, image) in [("sfu.image", &s.sfu.image), ("turn.image", &s.turn.image)] {
        if let Some(image) = image.as_deref().filter(|i| i.is_empty() || i.contains(char::is_whitespace)) {
            out.push(format!("{field} {image:?} names no image: set an image reference, or remove the field"));
        }
    }
    if s.signaling.port == s.media.tcp_port {
        out.push(format!(
            "signaling.port and media.tcpPort are both {}: media-node cannot listen twice on one TCP port; change one",
            s.signaling.port
        ));
    }
    for (field, port) in [("signaling.port", s.signaling.port), ("media.tcpPort", s.media.tcp_port)] {
        if port == ADMIN_PORT {
            out.push(format!("{field} is {ADMIN_PORT}, media-node's admin port: choose another port"));
        }
    }
    let listeners = &s.turn.listeners;
    for (i, l) in listeners.iter().enumerate() {
        if listeners[..i].iter().any(|m| m.name == l.name) {
            out.push(format!("turn.listeners[{i}].name {:?} is used twice: give each listener its own name", l.name));
        }
        if l.protocol != TurnProtocol::UDP && l.port == ADMIN_PORT {
            out.push(format!(
                "turn.listeners[{i}] ({}) uses port {ADMIN_PORT}, turn-node's admin port: choose another port",
                l.name
            ));
        }
    }
    for (i, a) in s.turn.service.external_addresses.iter().enumerate() {
        if a.parse::<IpAddr>().is_err() && !is_dns_name(a) {
            out.push(format!(
                "turn.service.externalAddresses[{i}] {a:?} is neither a DNS name nor an IP address: \
                 clients would get it in their TURN URIs; write a host name or IP without port or path"
            ));
        }
    }
    if !s.turn.peers.unsafe_lift_built_in_denies {
        for (i, c) in s.turn.peers.allow.iter().enumerate() {
            if BUILT_IN_DENIED.iter().any(|b| overlaps(c, b)) {
                out.push(format!(
                    "turn.peers.allow[{i}] {c:?} overlaps the built-in denies (loopback, link-local and metadata \
                     addresses, multicast…): narrow it, or set turn.peers.unsafeLiftBuiltInDenies: true if clients \
                     really may relay there"
                ));
            }
        }
    }
    for (i, w) in s.webhooks.iter().enumerate() {
        if url_host(&w.url).is_none_or(str::is_empty) {
            out.push(format!(
                "webhooks[{i}].url {:?} has no host: media-node cannot start with it; write an http(s) URL with a host",
                w.url
            ));
        }
    }
    out
}

/// A DNS label of at most `max` characters (lowercase letters, digits, inner '-').
fn is_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS name: labels of up to 63 characters, the last one starting with a letter (so
/// `999.1.1.1` is not a name).
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| is_label(l, 63))
        && s.rsplit('.').next().is_some_and(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
}

/// The host of an `http://` or `https://` URL (brackets of an IPv6 literal removed).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    })
}

/// `addr/len` as the address's bits and the prefix length; `None` if it is no CIDR.
fn cidr(s: &str) -> Option<(u128, u32, u32)> {
    let (addr, len) = s.split_once('/')?;
    let len: u32 = len.parse().ok()?;
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if len <= 32 => Some((u128::from(u32::from(v4)), 32, len)),
        IpAddr::V6(v6) if len <= 128 => Some((u128::from(v6), 128, len)),
        _ => None,
    }
}

/// Two CIDRs of one family share an address exactly when their common prefix matches.
fn overlaps(a: &str, b: &str) -> bool {
    let (Some((a, wa, la)), Some((b, wb, lb))) = (cidr(a), cidr(b)) else { return false };
    if wa != wb {
        return false;
    }
    let shift = wa - la.min(lb);
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::cluster;
    use switchyard_api::media_cluster::{TurnListener, WebhookSpec};

    fn named(name: &str, spec: serde_json::Value) -> MediaCluster {
        let mut mc = cluster(spec);
        mc.metadata.name = Some(name.into());
        mc
    }

    #[test]
    fn a_default_spec_has_no_problem() {
        assert_eq!(validate(&cluster(serde_json::json!({}))), Vec::<String>::new());
    }

    /// Issue 18, finding 4: each of these rendered objects the apiserver refused, and
    /// the only trace was the operator's log.
    #[test]
    fn the_specs_the_operator_could_not_render_are_named() {
        let mut two_udp = cluster(serde_json::json!({}));
        two_udp.spec.turn.listeners[1].name = "udp".into();
        let mut turn_on_admin = cluster(serde_json::json!({}));
        turn_on_admin.spec.turn.listeners.push(TurnListener {
            name: "alt".into(),
            protocol: TurnProtocol::TCP,
            port: 9090,
            tls_secret_ref: None,
        });
        let cases = [
            (named("edge.v2", serde_json::json!({})), "metadata.name \"edge.v2\" cannot prefix"),
            (named(&"a".repeat(64), serde_json::json!({})), "cannot prefix the cluster's object names"),
            (two_udp, "turn.listeners[1].name \"udp\" is used twice: give each listener its own name"),
            (
                cluster(serde_json::json!({"signaling": {"port": 7881}})),
                "signaling.port and media.tcpPort are both 7881",
            ),
            (turn_on_admin, "turn.listeners[2] (alt) uses port 9090, turn-node's admin port"),
            (cluster(serde_json::json!({"sfu": {"image": ""}})), "sfu.image \"\" names no image"),
        ];
        for (mc, want) in cases {
            let got = validate(&mc);
            assert_eq!(got.len(), 1, "{want}: {got:?}");
            assert!(got[0].contains(want), "{got:?} should contain {want:?}");
        }
    }

    #[test]
    fn addresses_urls_and_peer_ranges() {
        let mut mc = cluster(serde_json::json!({"turn": {"service": {"externalAddresses":
            ["turn.example.com", "203.0.113.9", "2001:db8::1", "not a host!", "10.0.0.0/8", "999.1.1.1", "host/path?x=1"]}}}));
        mc.spec.webhooks = ["https://hooks.example.com/x", "http://", "http://[::1]:8080/x", "https://:80/"]
            .map(|u| WebhookSpec { url: u.into(), events: vec![], api_key: None })
            .to_vec();
        mc.spec.turn.peers.allow =
            ["10.0.0.0/8", "0.0.0.0/0", "169.254.169.254/32", "fd00::/8"].map(String::from).to_vec();
        let got = validate(&mc);
        let fields: Vec<&str> = got.iter().map(|p| p.split(' ').next().unwrap()).collect();
        assert_eq!(
            fields,
            vec![
                "turn.service.externalAddresses[3]",
                "turn.service.externalAddresses[4]",
                "turn.service.externalAddresses[5]",
                "turn.service.externalAddresses[6]",
                "turn.peers.allow[1]",
                "turn.peers.allow[2]",
                "turn.peers.allow[3]",
                "webhooks[1].url",
                "webhooks[3].url",
            ],
            "{got:#?}"
        );
        mc.spec.turn.peers.unsafe_lift_built_in_denies = true;
        assert!(validate(&mc).iter().all(|p| !p.starts_with("turn.peers")));
    }

    #[test]
    fn cidr_overlap() {
        assert!(overlaps("0.0.0.0/0", "127.0.0.0/8"));
        assert!(overlaps("127.0.0.1/32", "127.0.0.0/8"));
        assert!(overlaps("128.0.0.0/1", "224.0.0.0/4"));
        assert!(!overlaps("10.0.0.0/8", "127.0.0.0/8"));
        assert!(!overlaps("::/0", "127.0.0.0/8"), "families never overlap");
        assert!(overlaps("::/0", "::1/128"));
        assert!(!overlaps("2001:db8::/32", "fc00::/7"));
    }
}
