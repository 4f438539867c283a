//! Hostile and unlucky clients on the signaling port: clients that never read, flood,
//! hold half-sent requests or many connections, and names and headers at the edges.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use switchyard_api::signal::{ErrorCode, ServerMessage};
use switchyard_media_node::NodeHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const JOIN: &str = r#"{"type":"join","protocolVersion":1}"#;

async fn joined(node: &NodeHandle, identity: &str, room: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(node, &token(identity, room, |_| {}))).await.unwrap();
    ws.send(Message::text(JOIN)).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let ServerMessage::Joined(_) = serde_json::from_str(&t).unwrap() {
                    return ws;
                }
            }
            other => panic!("expected joined, got {other:?}"),
        }
    }
}

/// Participants on the node, from the admin port.
async fn participants(node: &NodeHandle) -> u64 {
    let (_, body) = http(node.admin_addr, "GET", "/internal/status").await;
    serde_json::from_str::<switchyard_api::node::MediaNodeStatus>(&body).unwrap().participants
}

/// The value of one series on the admin port's `/metrics`.
async fn metric(node: &NodeHandle, series: &str) -> f64 {
    let (_, body) = http(node.admin_addr, "GET", "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `talker` sends 15 KiB data messages to the room until `stop` says so; it reads its own
/// socket all along and returns how many pongs it got for its pings in between.
fn flood(talker: Ws) -> (tokio::task::JoinHandle<(u64, Ws)>, tokio::sync::watch::Sender<bool>) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let (mut tx, mut rx) = talker.split();
        let payload = "A".repeat(15 * 1024);
        let data = format!(r#"{{"type":"data","kind":"reliable","payload":"{payload}"}}"#);
        let mut pongs = 0;
        let mut i = 0u64;
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                m = rx.next() => match m {
                    Some(Ok(Message::Text(t))) if t.contains(r#""type":"pong""#) => pongs += 1,
                    Some(Ok(_)) => {}
                    other => panic!("the talker's session ended: {other:?}"),
                },
                _ = tokio::time::sleep(Duration::from_millis(2)) => {
                    i += 1;
                    let frame = if i.is_multiple_of(50) { format!(r#"{{"type":"ping","timestampMs":{i}}}"#) } else { data.clone() };
                    tx.send(Message::text(frame)).await.unwrap();
                }
            }
        }
        (pongs, tx.reunite(rx).unwrap())
    });
    (task, stop)
}

/// A client that joins and then never reads (nor sends) must not hold the node: it is
/// dropped once its socket stops taking frames, while the room's talker goes on.
#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_the_room_goes_on() {
    let node = start_node_with(|c| {
        // The session ends on time; its participant leaves at once only with resume off
        // (otherwise it is held for the resume window, like any lost socket).
        c.resume_window_seconds = 0;
        c.messages_per_second = 10_000;
        c.send_timeout_seconds = 1;
        c.session_queue = 64;
    })
    .await;
    let talker = joined(&node, "talker", "r").await;
    let _sleeper = joined(&node, "sleeper", "r").await;
    assert_eq!(participants(&node).await, 2);
    let (task, stop) = flood(talker);
    let started = Instant::now();
    let dropped = async {
        while participants(&node).await > 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let dropped = tokio::time::timeout(Duration::from_secs(15), dropped).await.is_ok();
    let _ = stop.send(true);
    let (pongs, mut talker) = task.await.unwrap();
    assert!(dropped, "the non-reading client is still a participant after 15 s");
    eprintln!("non-reader dropped after {:?}", started.elapsed());
    assert!(pongs > 0, "the talker kept getting answers");
    talker.send(Message::text(r#"{"type":"ping","timestampMs":7}"#)).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = talker.next().await {
            if let Message::Text(t) = m
                && t.contains(r#""timestampMs":7"#)
            {
                return true;
            }
        }
        false
    });
    assert!(pong.await.unwrap(), "the talker's session is unaffected");
    let slow = metric(&node, r#"switchyard_media_signal_slow_clients_total{reason="queue_full"}"#).await
        + metric(&node, r#"switchyard_media_signal_slow_clients_total{reason="send_timeout"}"#).await;
    assert_eq!(slow, 1.0, "counted as one slow client");
    node.shutdown().await;
}

/// The keepalive fires for a client that neither reads nor sends, even while the node
/// has frames for it that its socket does not take (the send timeout is longer here).
#[tokio::test]
async fn the_keepalive_fires_for_a_client_whose_socket_is_full() {
    let node = start_node_with(|c| {
        // The session ends on time; its participant leaves at once only with resume off
        // (otherwise it is held for the resume window, like any lost socket).
        c.resume_window_seconds = 0;
        c.messages_per_second = 10_000;
        c.send_timeout_seconds = 60;
        c.session_queue = 100_000;
        c.ping_timeout_seconds = 3;
    })
    .await;
    let talker = joined(&node, "talker", "r").await;
    let _sleeper = joined(&node, "sleeper", "r").await;
    let (task, stop) = flood(talker);
    let started = Instant::now();
    let dropped = async {
        while participants(&node).await > 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // The talker sends frames all along, so only the sleeper's keepalive can run out.
    let dropped = tokio::time::timeout(Duration::from_secs(12), dropped).await.is_ok();
    let _ = stop.send(true);
    let _ = task.await.unwrap();
    assert!(dropped, "the 3 s keepalive did not end the session within 12 s");
    eprintln!("keepalive ended the non-reader after {:?}", started.elapsed());
    node.shutdown().await;
}

/// A client that floods is told `rate_limited` and gets close code 4429 (and the pongs
/// before it), not a TCP reset, even while its frames are still arriving.
#[tokio::test]
async fn a_flooding_client_gets_its_close_code_not_a_reset() {
    let node = start_node_with(|c| c.messages_per_second = 20).await;
    for round in 0..3 {
        let ws = joined(&node, "flood", &format!("r{round}")).await;
        let (mut tx, mut rx) = ws.split();
        let writer = tokio::spawn(async move {
            for i in 0..20_000 {
                let ping = format!(r#"{{"type":"ping","timestampMs":{i},"pad":"{}"}}"#, "x".repeat(200));
                if tx.send(Message::text(ping)).await.is_err() {
                    break;
                }
            }
        });
        let (mut pongs, mut limited, mut close) = (0, false, None);
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.next()).await.expect("the server answers") {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerMessage>(&t).unwrap() {
                    ServerMessage::Pong(_) => pongs += 1,
                    ServerMessage::Error(e) if e.code == ErrorCode::RateLimited => limited = true,
                    other => panic!("{other:?}"),
                },
                Some(Ok(Message::Close(frame))) => {
                    close = frame.map(|f| u16::from(f.code));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("round {round}: the socket failed instead of closing: {e}"),
                None => break,
            }
        }
        writer.abort();
        assert!(limited, "round {round}: rate_limited error");
        assert_eq!(close, Some(4429), "round {round}");
        assert!(pongs > 0, "round {round}: the pongs before the limit arrive");
    }
    node.shutdown().await;
}

/// Read until the server closes the connection (or `within` passes); the bytes read.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = vec![];
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().map(|()| String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn a_request_whose_headers_never_finish_is_cut() {
    let node = start_node_with(|c| c.header_timeout_seconds = 1).await;
    let mut held = vec![];
    for _ in 0..5 {
        let mut s = TcpStream::connect(node.http_addr).await.unwrap();
        s.write_all(b"GET /rtc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await.unwrap();
        held.push(s);
    }
    // And one that sends nothing at all.
    held.push(TcpStream::connect(node.http_addr).await.unwrap());
    for s in &mut held {
        assert!(read_until_closed(s, Duration::from_secs(5)).await.is_some(), "a partial request was held 5 s");
    }
    assert_eq!(metric(&node, r#"switchyard_media_http_connections_refused_total{reason="header_timeout"}"#).await, 6.0);
    // A complete request is still served.
    assert_eq!(http(node.http_addr, "GET", "/healthz").await.0, 200);
    node.shutdown().await;
}

#[tokio::test]
async fn connections_are_capped_per_address_and_in_total() {
    let node = start_node_with(|c| {
        c.max_connections_per_ip = 3;
        c.max_connections = 0;
    })
    .await;
    let mut held = vec![];
    for _ in 0..3 {
        held.push(TcpStream::connect(node.http_addr).await.unwrap());
    }
    // A WebSocket counts too, for as long as it is open.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(metric(&node, "switchyard_media_http_connections").await, 3.0);
    let mut over = TcpStream::connect(node.http_addr).await.unwrap();
    let answer = read_until_closed(&mut over, Duration::from_secs(2)).await.expect("refused at once");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 429"), "{answer:?}");
    assert_eq!(metric(&node, r#"switchyard_media_http_connections_refused_total{reason="per_ip_limit"}"#).await, 1.0);
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ws = joined(&node, "alice", "r").await;
    assert_eq!(metric(&node, "switchyard_media_http_connections").await, 3.0, "two held and one WebSocket");
    drop(ws);
    drop(held);
    let released = async {
        while metric(&node, "switchyard_media_http_connections").await > 0.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), released).await.expect("every slot is released");
    node.shutdown().await;

    let node = start_node_with(|c| {
        c.max_connections_per_ip = 0;
        c.max_connections = 2;
    })
    .await;
    let _held = [TcpStream::connect(node.http_addr).await.unwrap(), TcpStream::connect(node.http_addr).await.unwrap()];
    let mut over = TcpStream::connect(node.http_addr).await.unwrap();
    let answer = read_until_closed(&mut over, Duration::from_secs(2)).await.expect("refused at once");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert_eq!(metric(&node, r#"switchyard_media_http_connections_refused_total{reason="total_limit"}"#).await, 1.0);
    assert_eq!(http(node.admin_addr, "GET", "/healthz").await.0, 200, "the admin port has no such limit");
    node.shutdown().await;
}

/// A WebSocket to `/rtc` whose request says `X-Forwarded-For: xff`.
async fn forwarded_for(node: &NodeHandle, xff: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url(node, &token("alice", "r", |_| {})).into_client_request().unwrap();
    req.headers_mut().insert("x-forwarded-for", xff.parse().unwrap());
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

fn status(r: Result<Ws, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match r {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

/// Behind an ingress (here: the test client on 127.0.0.1 is the trusted proxy) the
/// per-address cap applies to the clients the proxy names, not to the proxy; without
/// `--trusted-proxies` the header is ignored and the proxy is the client.
#[tokio::test]
async fn behind_a_trusted_proxy_the_cap_counts_forwarded_clients() {
    let node = start_node_with(|c| {
        c.max_connections_per_ip = 2;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let mut open = vec![];
    for _ in 0..2 {
        open.push(forwarded_for(&node, "198.51.100.1, 203.0.113.7").await.expect("within the client's cap"));
    }
    assert_eq!(status(forwarded_for(&node, "203.0.113.7").await), 429, "the client's third WebSocket");
    assert_eq!(status(forwarded_for(&node, "198.51.100.1, 203.0.113.7").await), 429, "a spoofed left entry");
    for _ in 0..2 {
        open.push(forwarded_for(&node, "203.0.113.8").await.expect("another client, same proxy"));
    }
    assert_eq!(status(forwarded_for(&node, "not-an-address").await), 400);
    assert_eq!(metric(&node, r#"switchyard_media_http_connections_refused_total{reason="per_ip_limit"}"#).await, 2.0);
    drop(open.pop());
    let again = async {
        while forwarded_for(&node, "203.0.113.8").await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), again).await.expect("the slot is released with its session");
    node.shutdown().await;

    let node = start_node_with(|c| c.max_connections_per_ip = 2).await;
    let _held =
        [forwarded_for(&node, "203.0.113.1").await.unwrap(), forwarded_for(&node, "203.0.113.2").await.unwrap()];
    assert!(forwarded_for(&node, "203.0.113.3").await.is_err(), "an untrusted X-Forwarded-For is ignored");
    assert_eq!(metric(&node, r#"switchyard_media_http_connections_refused_total{reason="per_ip_limit"}"#).await, 1.0);
    node.shutdown().await;
}

#[tokio::test]
async fn metrics_are_not_on_the_signaling_port_unless_asked() {
    let node = start_node().await;
    assert_eq!(http(node.http_addr, "GET", "/metrics").await.0, 404);
    assert_eq!(http(node.admin_addr, "GET", "/metrics").await.0, 200);
    node.shutdown().await;
    let node = start_node_with(|c| c.public_metrics = true).await;
    let (status, body) = http(node.http_addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("switchyard_media_participants"));
    node.shutdown().await;
}

/// A token signed correctly but with names `mint` would refuse (another JWT library).
fn raw_token(identity: &str, room: &str) -> String {
    let mut claims = switchyard_api::token::Claims::new(KEY, "placeholder", now(), 600)
        .with_grants(switchyard_api::token::Grants::join("placeholder"));
    claims.sub = identity.to_owned();
    claims.grants.room = Some(room.to_owned());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(KEY.into());
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

async fn refusal(node: &NodeHandle, url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body: serde_json::Value = serde_json::from_slice(r.body().as_deref().unwrap_or_default()).unwrap();
            (r.status().as_u16(), body["code"].as_str().unwrap_or_default().to_owned())
        }
        Ok(_) => panic!("{url} was accepted on {}", node.http_addr),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn room_names_and_identities_outside_the_rules_are_refused_before_the_upgrade() {
    let node = start_node().await;
    let long = "x".repeat(8192);
    for (identity, room, code) in [
        ("alice", "", "invalid_room_name"),
        ("alice", "../../etc", "invalid_room_name"),
        ("alice", "a\0b", "invalid_room_name"),
        ("alice", "line\nbreak", "invalid_room_name"),
        ("alice", long.as_str(), "invalid_room_name"),
        ("", "r", "invalid_identity"),
        ("al\nice", "r", "invalid_identity"),
        ("al\0ice", "r", "invalid_identity"),
        (long.as_str(), "r", "invalid_identity"),
    ] {
        let (status, got) = refusal(&node, &url(&node, &raw_token(identity, room))).await;
        assert_eq!((status, got.as_str()), (401, code), "identity {:.20?}, room {:.20?}", identity, room);
    }
    // A `?room=` outside the rules is a bad request (not a wrong room).
    let (status, got) = refusal(&node, &format!("{}&room=..%2Fetc", url(&node, &token("alice", "r", |_| {})))).await;
    assert_eq!((status, got.as_str()), (400, "invalid_room_name"));
    assert_eq!(participants(&node).await, 0, "no room was created");
    node.shutdown().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let node = start_node().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let mut req = format!("ws://{}/rtc", node.http_addr).into_client_request().unwrap();
        let value = format!("{scheme} {}", token("alice", "r", |_| {}));
        req.headers_mut().insert("authorization", value.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap_or_else(|e| panic!("{scheme}: {e}"));
        ws.send(Message::text(JOIN)).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert!(first.to_text().unwrap().contains(r#""type":"joined""#), "{scheme}: {first:?}");
        ws.close(None).await.unwrap();
    }
    node.shutdown().await;
}
