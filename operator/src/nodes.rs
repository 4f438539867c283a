//! Talking to the nodes' internal admin endpoints (port 9090, pod network, plain HTTP).
//!
//! Behind a trait so the controllers' tests can fake a fleet without sockets.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use switchyard_api::node::{MediaNodeStatus, TurnNodeStatus};

use crate::render::ADMIN_PORT;
use crate::{Error, Result};

/// One node to call: its pod name (for errors) and pod IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddr<'a> {
    /// Pod name.
    pub name: &'a str,
    /// Pod IP.
    pub ip: IpAddr,
}

/// The internal node API the operator uses.
pub trait NodeApi: Send + Sync + 'static {
    /// `GET /internal/status` of a media-node.
    fn media_status<'a>(&'a self, node: NodeAddr<'a>) -> BoxFuture<'a, Result<MediaNodeStatus>>;
    /// `GET /internal/status` of a turn-node.
    fn turn_status<'a>(&'a self, node: NodeAddr<'a>) -> BoxFuture<'a, Result<TurnNodeStatus>>;
    /// `POST /drain`: stop taking new rooms/allocations.
    fn drain<'a>(&'a self, node: NodeAddr<'a>) -> BoxFuture<'a, Result<()>>;
    /// `POST /internal/rooms/<room>/close` on a media-node.
    fn close_room<'a>(&'a self, node: NodeAddr<'a>, room: &'a str) -> BoxFuture<'a, Result<Closed>>;
}

/// What closing a room on its node found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The room was open and is closing: its participants get `room_closed`.
    Closed,
    /// The node does not have the room open (media-node opens a room on its first join,
    /// and forgets it when it closes): it is already closed, there is nothing to do.
    NotOpen,
}

/// The real implementation: HTTP/1.1 over the pod network with a short timeout, so one
/// hung node cannot stall a reconcile.
#[derive(Clone, Debug)]
pub struct HttpNodeApi {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    port: u16,
}

impl HttpNodeApi {
    /// A client with the given per-request timeout.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self { client: Client::builder(TokioExecutor::new()).build(connector), timeout, port: ADMIN_PORT as u16 }
    }

    /// Call another port than the admin port (tests on loopback).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn url(&self, node: NodeAddr<'_>, path: &str) -> String {
        let port = self.port;
        match node.ip {
            IpAddr::V4(ip) => format!("http://{ip}:{port}{path}"),
            IpAddr::V6(ip) => format!("http://[{ip}]:{port}{path}"),
        }
    }

    async fn call(&self, node: NodeAddr<'_>, method: http::Method, path: &str) -> Result<Bytes> {
        let (status, body) = self.call_status(node, method, path).await?;
        if !status.is_success() {
            return Err(Error::Node { node: node.name.to_owned(), message: format!("{path}: HTTP {status}") });
        }
        Ok(body)
    }

    /// The status code and body of one request; only transport failures are errors.
    async fn call_status(
        &self,
        node: NodeAddr<'_>,
        method: http::Method,
        path: &str,
    ) -> Result<(http::StatusCode, Bytes)> {
        let err = |message: String| Error::Node { node: node.name.to_owned(), message };
        let req = http::Request::builder()
            .method(method)
            .uri(self.url(node, path))
            .body(Full::new(Bytes::new()))
            .map_err(|e| err(e.to_string()))?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| err(format!("{path}: {e}")))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| err(format!("{path}: {e}")))?.to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| err(format!("{path}: timed out")))?
    }

    async fn get_json<T: DeserializeOwned>(&self, node: NodeAddr<'_>, path: &str) -> Result<T> {
        let body = self.call(node, http::Method::GET, path).await?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::Node { node: node.name.to_owned(), message: format!("{path}: {e}") })
    }
}

impl NodeApi for HttpNodeApi {
    fn media_status<'a>(&'a self, node: NodeAddr<'a>) -> BoxFuture<'a, Result<MediaNodeStatus>> {
        Box::pin(self.get_json(node, "/internal/status"))
    }
    fn turn_status<'a>(&'a self, node: NodeAddr<'a>) -> BoxFuture<'a, Result<TurnNodeStatus>> {
        Box::pin(self.get_json(node, "/internal/status"))
    }
    fn drain<'a>(&'a self, node: NodeAddr<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.call(node, http::Method::POST, "/drain").await.map(drop) })
    }
    fn close_room<'a>(&'a self, node: NodeAddr<'a>, room: &'a str) -> BoxFuture<'a, Result<Closed>> {
        Box::pin(async move {
            // Room names are DNS subdomain names, so they need no escaping in a path.
            let path = format!("/internal/rooms/{room}/close");
            match self.call_status(node, http::Method::POST, &path).await? {
                (status, _) if status.is_success() => Ok(Closed::Closed),
                // A room nobody joined was never opened; one that closed is gone.
                (http::StatusCode::NOT_FOUND, _) => Ok(Closed::NotOpen),
                (status, _) => {
                    Err(Error::Node { node: node.name.to_owned(), message: format!("{path}: HTTP {status}") })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn urls_bracket_ipv6() {
        let api = HttpNodeApi::new(Duration::from_secs(1));
        let v6 = NodeAddr { name: "n", ip: "fd00::5".parse().unwrap() };
        assert_eq!(api.url(v6, "/drain"), "http://[fd00::5]:9090/drain");
        let v4 = NodeAddr { name: "n", ip: "10.0.0.5".parse().unwrap() };
        assert_eq!(api.url(v4, "/internal/status"), "http://10.0.0.5:9090/internal/status");
    }

    /// A one-shot HTTP server on loopback: answers once and returns the request line.
    async fn serve_once(listener: TcpListener, status: &'static str, body: &'static str) -> String {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = sock.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned();
        let resp = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        sock.write_all(resp.as_bytes()).await.unwrap();
        head
    }

    async fn loopback(status: &'static str, body: &'static str) -> (HttpNodeApi, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (HttpNodeApi::new(Duration::from_secs(5)).with_port(port), tokio::spawn(serve_once(listener, status, body)))
    }

    const LOCAL: NodeAddr<'static> =
        NodeAddr { name: "edge-sfu-0", ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) };

    #[tokio::test]
    async fn parses_media_status() {
        let (api, server) = loopback(
            "200 OK",
            r#"{"rooms":2,"participants":7,"bandwidthBps":900,"draining":true,"roomNames":["a","b"]}"#,
        )
        .await;
        let status = api.media_status(LOCAL).await.unwrap();
        assert_eq!((status.rooms, status.participants, status.bandwidth_bps, status.draining), (2, 7, 900, true));
        assert_eq!(status.room_names, vec!["a", "b"]);
        assert_eq!(server.await.unwrap(), "GET /internal/status HTTP/1.1");
    }

    #[tokio::test]
    async fn posts_close_and_drain() {
        let (api, server) = loopback("202 Accepted", "").await;
        assert_eq!(api.close_room(LOCAL, "standup").await.unwrap(), Closed::Closed);
        assert_eq!(server.await.unwrap(), "POST /internal/rooms/standup/close HTTP/1.1");
        let (api, server) = loopback("200 OK", "").await;
        api.drain(LOCAL).await.unwrap();
        assert_eq!(server.await.unwrap(), "POST /drain HTTP/1.1");
    }

    /// media-node answers 404 for a room it does not have open (nobody ever joined it):
    /// that room is already closed, so deleting its Room must not retry forever.
    #[tokio::test]
    async fn closing_a_room_the_node_does_not_have_is_done() {
        let (api, server) = loopback("404 Not Found", "").await;
        assert_eq!(api.close_room(LOCAL, "never-joined").await.unwrap(), Closed::NotOpen);
        assert_eq!(server.await.unwrap(), "POST /internal/rooms/never-joined/close HTTP/1.1");
        let (api, server) = loopback("500 Internal Server Error", "").await;
        let err = api.close_room(LOCAL, "standup").await.unwrap_err();
        server.await.unwrap();
        assert_eq!(err.to_string(), "node edge-sfu-0: /internal/rooms/standup/close: HTTP 500 Internal Server Error");
    }

    #[tokio::test]
    async fn http_errors_and_bad_bodies_are_node_errors() {
        let (api, server) = loopback("503 Service Unavailable", "").await;
        let err = api.turn_status(LOCAL).await.unwrap_err();
        server.await.unwrap();
        assert_eq!(err.label(), "node");
        assert_eq!(err.to_string(), "node edge-sfu-0: /internal/status: HTTP 503 Service Unavailable");
        let (api, server) = loopback("200 OK", "not json").await;
        let err = api.turn_status(LOCAL).await.unwrap_err();
        server.await.unwrap();
        assert!(err.to_string().starts_with("node edge-sfu-0: /internal/status: expected"), "{err}");
    }
}
