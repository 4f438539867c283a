//! A mocked apiserver (tower-test) and a fake fleet for the controllers' tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use serde_json::{Value, json};
use switchyard_api::node::{MediaNodeStatus, TurnNodeStatus};
use switchyard_api::{MediaCluster, Room};

use super::Context;
use crate::metrics::Metrics;
use crate::nodes::{Closed, NodeAddr, NodeApi};
use crate::render::Images;
use crate::{Error, Result};

/// One request the controller sent.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) content_type: String,
    pub(crate) body: Value,
}

impl Seen {
    /// `METHOD /path` (no query).
    pub(crate) fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

pub(crate) fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

pub(crate) fn list(kind: &str, items: Vec<Value>) -> (u16, Value) {
    (200, json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}))
}

/// Answers requests with `respond` until every client is dropped; returns what it saw.
pub(crate) fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    respond: impl Fn(&Seen) -> (u16, Value) + Send + 'static,
) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let s = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, value) = respond(&s);
            seen.push(s);
            send.send_response(
                Response::builder().status(status).body(Body::from(serde_json::to_vec(&value).unwrap())).unwrap(),
            );
        }
        seen
    })
}

/// The object a write returns: the sent body made whole enough to deserialize (a
/// status patch has no metadata, a JSON patch is not an object at all).
fn written_object(s: &Seen) -> Value {
    let mut v = if s.body.is_object() { s.body.clone() } else { json!({}) };
    let segments: Vec<&str> = s.path.trim_end_matches("/status").split('/').collect();
    let name = segments.last().copied().unwrap_or_default();
    if v.get("metadata").is_none() {
        v["metadata"] = json!({ "name": name, "namespace": "media" });
    }
    if s.path.contains("/rooms/") && v.get("spec").is_none() {
        v["spec"] = json!({ "clusterRef": "edge" });
    }
    if s.path.contains("/mediaclusters/") && v.get("spec").is_none() {
        v["spec"] = json!({});
    }
    v
}

/// Default answers: writes echo what was written, reads find nothing, lists are empty.
pub(crate) fn echo(s: &Seen) -> (u16, Value) {
    match s.method.as_str() {
        "POST" => (201, written_object(s)),
        "PATCH" | "PUT" | "DELETE" => (200, written_object(s)),
        "GET" if s.path.ends_with("/pods") => list("PodList", vec![]),
        _ => not_found(),
    }
}

/// A fleet of fake nodes: answers status from maps, records every call.
#[derive(Debug, Default)]
pub(crate) struct FakeNodes {
    pub(crate) media: Mutex<HashMap<String, MediaNodeStatus>>,
    pub(crate) turn: Mutex<HashMap<String, TurnNodeStatus>>,
    pub(crate) calls: Mutex<Vec<String>>,
}

impl FakeNodes {
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
    fn missing(node: NodeAddr<'_>) -> Error {
        Error::Node { node: node.name.into(), message: "connection refused".into() }
    }
}

impl NodeApi for FakeNodes {
    fn media_status<'a>(&'a self, node: NodeAddr<'a>) -> BoxFuture<'a, Result<MediaNodeStatus>> {
        let r = self.media.lock().unwrap().get(node.name).cloned().ok_or_else(|| Self::missing(node));
        Box::pin(async move { r })
    }
    fn turn_status<'a>(&'a self, node: NodeAddr<'a>) -> BoxFuture<'a, Result<TurnNodeStatus>> {
        let r = self.turn.lock().unwrap().get(node.name).cloned().ok_or_else(|| Self::missing(node));
        Box::pin(async move { r })
    }
    fn drain<'a>(&'a self, node: NodeAddr<'a>) -> BoxFuture<'a, Result<()>> {
        self.record(format!("drain {} {}", node.name, node.ip));
        Box::pin(async { Ok(()) })
    }
    /// Closes a room the node reports open; any other is not open there (media-node's 404).
    fn close_room<'a>(&'a self, node: NodeAddr<'a>, room: &'a str) -> BoxFuture<'a, Result<Closed>> {
        self.record(format!("close {room} on {} {}", node.name, node.ip));
        let open = self.media.lock().unwrap().get(node.name).is_some_and(|s| s.room_names.iter().any(|r| r == room));
        Box::pin(async move { Ok(if open { Closed::Closed } else { Closed::NotOpen }) })
    }
}

/// A context on a mocked apiserver, with reflector stores the test fills.
pub(crate) fn context(
    respond: impl Fn(&Seen) -> (u16, Value) + Send + 'static,
    nodes: Arc<FakeNodes>,
    clusters: &[MediaCluster],
    rooms: &[Room],
) -> (Arc<Context>, tokio::task::JoinHandle<Vec<Seen>>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = serve(handle, respond);
    let client = Client::new(service, "default");
    let reporter = Reporter { controller: "switchyard-operator".into(), instance: None };
    let mut mc_writer = Writer::<MediaCluster>::default();
    for c in clusters {
        mc_writer.apply_watcher_event(&watcher::Event::Apply(c.clone()));
    }
    let mut room_writer = Writer::<Room>::default();
    for r in rooms {
        room_writer.apply_watcher_event(&watcher::Event::Apply(r.clone()));
    }
    let ctx = Context::new(
        client,
        reporter,
        Arc::new(Metrics::new()),
        nodes,
        Images { media_node: "media-node:test".into(), turn_node: "turn-node:test".into() },
        false,
        room_writer.as_reader(),
        mc_writer.as_reader(),
        7,
    );
    (Arc::new(ctx), server)
}

/// Finish: drop the context (closing the mock) and collect the requests.
pub(crate) async fn finish(ctx: Arc<Context>, server: tokio::task::JoinHandle<Vec<Seen>>) -> Vec<Seen> {
    drop(ctx);
    server.await.unwrap()
}
