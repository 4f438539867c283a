//! Shared helpers for the integration tests: a real server on loopback with
//! ephemeral ports, REST credentials, a UDP echo peer, and coturn tool lookup.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_turn_node::config::{Listener, Protocol, TlsConfig};
use switchyard_turn_node::{Config, TurnHandle, TurnServer};

pub const SECRET: &str = "integration-secret";
pub const REALM: &str = "switchyard.test";

/// A self-signed certificate for `localhost`/127.0.0.1 written to a temp dir.
pub fn self_signed(dir: &Path) -> TlsConfig {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("generate certificate");
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    TlsConfig { cert_file, key_file }
}

/// A loopback config: UDP, TCP and TLS listeners on ephemeral ports, relay on
/// 127.0.0.1 with kernel-chosen ports, and 127.0.0.0/8 explicitly allowed
/// (loopback is denied by default; every test here runs on loopback).
pub fn loopback_config(tls_dir: &Path) -> Config {
    let any = |protocol| Listener { protocol, address: "127.0.0.1:0".parse().unwrap() };
    let mut c = Config {
        realm: REALM.into(),
        listeners: vec![any(Protocol::Udp), any(Protocol::Tcp), any(Protocol::Tls)],
        tls: Some(self_signed(tls_dir)),
        admin_address: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        ..Config::default()
    };
    c.relay.address = Some("127.0.0.1".parse().unwrap());
    c.relay.port_min = 0;
    c.relay.port_max = 0;
    c.auth.secrets = vec![SECRET.into()];
    c.peers.allow = vec!["127.0.0.0/8".parse().unwrap()];
    c
}

pub async fn start(config: Config) -> TurnHandle {
    TurnServer::start(config).await.expect("server starts")
}

/// TURN REST API credentials valid for `ttl`.
pub fn rest_credentials(secret: &str, user: &str, ttl: Duration) -> (String, String) {
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + ttl;
    switchyard_api::turn_rest::mint(secret.as_bytes(), user, expiry.as_secs())
}

/// A UDP echo peer on 127.0.0.1; returns its address.
pub async fn echo_peer() -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// Path of a coturn tool. Panics with a clear message when it is missing:
/// these tests must never pass silently without the real client.
pub fn coturn_tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "coturn tool `{name}` not found: install the Debian package `coturn` \
         (apt-get install -y coturn); CI installs it and these tests need the real client"
    );
}

/// A free UDP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free UDP port below the kernel's ephemeral range (32768+), so that no other test's
/// `bind(0)` takes it while a test releases and re-acquires it.
pub fn free_udp_port_outside_ephemeral_range() -> u16 {
    let start = 20_000 + (std::process::id() % 5_000) as u16;
    (start..32_000).find(|&p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()).expect("a free port below 32000")
}

/// GET/POST on the admin API; returns (status, body).
pub async fn http(method: &str, addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Value of one metric line (exact series name with labels) in `/metrics`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}
