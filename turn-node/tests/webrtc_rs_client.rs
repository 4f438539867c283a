//! Interop with the webrtc-rs `turn` client: a different TURN implementation
//! allocates on our server, gets a permission and channel, and relays to a UDP
//! echo peer on loopback; the data must come back intact.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

async fn client(server: std::net::SocketAddr, username: String, password: String) -> Client {
    let local = if server.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" };
    let conn = tokio::net::UdpSocket::bind(local).await.unwrap();
    let cfg = ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username,
        password,
        realm: REALM.into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(conn),
        vnet: None,
    };
    let c = Client::new(cfg).await.expect("client");
    c.listen().await.expect("listen");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_through_allocation_to_echo_peer_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(loopback_config(dir.path())).await;
    let peer = echo_peer().await;
    let (user, pass) = rest_credentials(SECRET, "webrtc-rs", Duration::from_secs(600));
    let c = client(server.addrs().udp[0], user, pass).await;

    let mapped = c.send_binding_request().await.expect("STUN binding");
    assert_eq!(mapped.ip().to_string(), "127.0.0.1");

    let relay = c.allocate().await.expect("allocate");
    let relay_addr = relay.local_addr().unwrap();
    assert_eq!(relay_addr.ip().to_string(), "127.0.0.1");
    assert_eq!(server.status().allocations, 1);

    // The first send creates the permission (and then a channel binding);
    // later packets travel as ChannelData.
    let mut buf = vec![0u8; 2048];
    for i in 0..50u32 {
        let payload: Vec<u8> = (0..(100 + i as usize * 20)).map(|b| (b as u32 ^ i) as u8).collect();
        relay.send_to(&payload, peer).await.expect("send through relay");
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("echo {i} did not come back"))
            .expect("recv");
        assert_eq!(from, peer);
        assert_eq!(&buf[..n], &payload[..], "packet {i} intact");
    }

    let m = server.metrics();
    use switchyard_turn_node::metrics::Direction;
    assert!(m.relayed_packets(Direction::ClientToPeer) >= 50);
    assert!(m.relayed_packets(Direction::PeerToClient) >= 50);
    assert!(m.channels.get() >= 1, "the client bound a channel");

    relay.close().await.unwrap();
    c.close().await.unwrap();
    server.shutdown();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(loopback_config(dir.path())).await;
    let (user, _) = rest_credentials(SECRET, "webrtc-rs", Duration::from_secs(600));
    let c = client(server.addrs().udp[0], user, "forged".into()).await;
    let err = c.allocate().await.err().expect("allocation must fail");
    assert!(err.to_string().contains("401") || err.to_string().to_lowercase().contains("unauthorized"), "{err}");
    assert_eq!(server.status().allocations, 0);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_over_ipv6_loopback() {
    use switchyard_turn_node::config::{Listener, Protocol};
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(dir.path());
    config.listeners = vec![Listener { protocol: Protocol::Udp, address: "[::1]:0".parse().unwrap() }];
    config.relay.address = Some("::1".parse().unwrap());
    config.peers.allow = vec!["::1/128".parse().unwrap()];
    let server = start(config).await;
    let peer_sock = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
    let peer = peer_sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = peer_sock.recv_from(&mut buf).await {
            let _ = peer_sock.send_to(&buf[..n], from).await;
        }
    });
    let (user, pass) = rest_credentials(SECRET, "v6", Duration::from_secs(600));
    let c = client(server.addrs().udp[0], user, pass).await;
    let relay = c.allocate().await.expect("allocate over IPv6");
    assert!(relay.local_addr().unwrap().is_ipv6());
    let mut buf = vec![0u8; 2048];
    for i in 0..10u8 {
        let payload = vec![i; 300];
        relay.send_to(&payload, peer).await.unwrap();
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
            .await
            .expect("echo over IPv6")
            .unwrap();
        assert_eq!((from, &buf[..n]), (peer, &payload[..]));
    }
    relay.close().await.unwrap();
    c.close().await.unwrap();
    server.shutdown();
}
