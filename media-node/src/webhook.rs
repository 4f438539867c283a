//! Webhook delivery: room events from the shards, POSTed to every configured receiver.
//!
//! ```text
//! shard ── notify(RoomEvent) ──┬─ try_send ─► queue (bounded) ─► receiver task ── POST ──► app
//!   payload built, serialised  │  full: drop the event, count it   one event at a time:
//!   once, given its id         └─ … one queue and task per receiver   sign, send, retry
//! ```
//!
//! A shard never waits: `notify` only enqueues. A room lives on one shard, which emits its
//! events in order, and each receiver's task delivers its queue serially, so a receiver
//! sees every room's events in order. A receiver that is down delays only its own queue.
//! Each attempt is signed afresh ([`switchyard_api::webhook::sign`]); the event's `id`
//! stays the same, so receivers can drop the duplicates a retry may cause.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use switchyard_api::media_cluster::WebhookSpec;
use switchyard_api::webhook::{self, EventKind, WebhookEvent, WebhookParticipant, WebhookRoom, WebhookTrack};
use tokio::sync::mpsc;

use crate::engine::{RoomEvent, Who};
use crate::metrics::{Metrics, WebhookResult};
use crate::{Error, Result};

/// Events waiting for one receiver; beyond this, new events for it are dropped.
const QUEUE: usize = 1024;
/// One POST, from connecting to the end of the response.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per event, the first included.
const ATTEMPTS: u32 = 5;
/// The wait before the second attempt; it doubles before each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Response bodies are read (so connections are reused) up to this size.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A receiver with its signing key resolved.
#[derive(Clone)]
pub(crate) struct Receiver {
    url: hyper::Uri,
    events: Vec<EventKind>,
    api_key: String,
    api_secret: String,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Receiver").field("url", &self.url).field("events", &self.events).finish()
    }
}

impl Receiver {
    /// The URL without its query (which may carry a token), for logs.
    fn display_url(&self) -> String {
        format!(
            "{}://{}{}",
            self.url.scheme_str().unwrap_or("http"),
            self.url.authority().map_or("", |a| a.as_str()),
            self.url.path()
        )
    }

    fn wants(&self, kind: EventKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }
}

/// Resolve receivers: parse each URL and find the secret of its API key (the first key
/// when it names none). Errors name the receiver.
pub(crate) fn receivers(specs: &[WebhookSpec], api_keys: &[(String, String)]) -> Result<Vec<Receiver>> {
    specs
        .iter()
        .map(|s| {
            let bad = |why: String| Error::Config(format!("webhook {:?}: {why}", s.url));
            let url: hyper::Uri = s.url.parse().map_err(|e| bad(format!("{e}")))?;
            if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
                return Err(bad("must be an http:// or https:// URL".into()));
            }
            let (api_key, api_secret) = match &s.api_key {
                Some(k) => {
                    api_keys.iter().find(|(key, _)| key == k).ok_or_else(|| bad(format!("unknown apiKey {k:?}")))?
                }
                None => api_keys.first().ok_or_else(|| bad("no API key to sign with".into()))?,
            };
            Ok(Receiver { url, events: s.events.clone(), api_key: api_key.clone(), api_secret: api_secret.clone() })
        })
        .collect()
}

/// The metric label of an event kind.
fn event_label(kind: EventKind) -> &'static str {
    match kind {
        EventKind::RoomStarted => "room_started",
        EventKind::RoomFinished => "room_finished",
        EventKind::ParticipantJoined => "participant_joined",
        EventKind::ParticipantLeft => "participant_left",
        EventKind::TrackPublished => "track_published",
        EventKind::TrackUnpublished => "track_unpublished",
    }
}

/// The payload of a room event, without its id, time and origin.
fn describe(e: &RoomEvent) -> (EventKind, WebhookRoom, Option<WebhookParticipant>, Option<WebhookTrack>) {
    let room = |name: &str, sid: &str| WebhookRoom { name: name.to_owned(), sid: sid.to_owned() };
    let who =
        |w: &Who, leave_reason| WebhookParticipant { identity: w.identity.clone(), sid: w.sid.clone(), leave_reason };
    let track = |sid: &str| Some(WebhookTrack { sid: sid.to_owned() });
    match e {
        RoomEvent::RoomStarted { room: r, room_sid } => (EventKind::RoomStarted, room(r, room_sid), None, None),
        RoomEvent::RoomFinished { room: r, room_sid } => (EventKind::RoomFinished, room(r, room_sid), None, None),
        RoomEvent::ParticipantJoined { room: r, room_sid, participant } => {
            (EventKind::ParticipantJoined, room(r, room_sid), Some(who(participant, None)), None)
        }
        RoomEvent::ParticipantLeft { room: r, room_sid, participant, reason } => {
            (EventKind::ParticipantLeft, room(r, room_sid), Some(who(participant, Some(*reason))), None)
        }
        RoomEvent::TrackPublished { room: r, room_sid, participant, track_sid } => {
            (EventKind::TrackPublished, room(r, room_sid), Some(who(participant, None)), track(track_sid))
        }
        RoomEvent::TrackUnpublished { room: r, room_sid, participant, track_sid } => {
            (EventKind::TrackUnpublished, room(r, room_sid), Some(who(participant, None)), track(track_sid))
        }
    }
}

fn event_id() -> String {
    format!("EV_{}", switchyard_api::random::token(&mut rand::rng(), 20))
}

/// One event on its way to one receiver.
#[derive(Debug)]
struct Queued {
    kind: EventKind,
    body: Bytes,
    at: Instant,
}

#[derive(Debug)]
struct Queue {
    receiver: Receiver,
    tx: mpsc::Sender<Arc<Queued>>,
}

#[derive(Clone, Debug)]
struct Counters {
    results: Family<WebhookResult, Counter>,
    seconds: Histogram,
}

impl Counters {
    fn count(&self, kind: EventKind, result: &'static str) {
        self.results.get_or_create(&WebhookResult { event: event_label(kind), result }).inc();
    }
}

/// Hands room events to the receivers' delivery tasks.
#[derive(Debug)]
pub(crate) struct Notifier {
    node: String,
    cluster: String,
    queues: Vec<Queue>,
    /// Events queued or being delivered, over all receivers.
    pending: Arc<AtomicUsize>,
    counters: Counters,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn http_client() -> HttpClient {
    // Explicit provider: with both of rustls's providers compiled in it cannot pick one.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no CA certificates found: https webhooks will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("the provider supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let https = tls.https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https)
}

impl Notifier {
    /// Start one delivery task per receiver.
    pub(crate) fn start(receivers: Vec<Receiver>, node: String, cluster: String, metrics: &Metrics) -> Self {
        Self::with_queue(receivers, node, cluster, metrics, QUEUE)
    }

    fn with_queue(receivers: Vec<Receiver>, node: String, cluster: String, metrics: &Metrics, size: usize) -> Self {
        let counters = Counters { results: metrics.webhooks.clone(), seconds: metrics.webhook_seconds.clone() };
        let pending = Arc::new(AtomicUsize::new(0));
        let client = (!receivers.is_empty()).then(http_client);
        let queues = receivers
            .into_iter()
            .map(|receiver| {
                let (tx, rx) = mpsc::channel(size);
                let client = client.clone().expect("built when there are receivers");
                tokio::spawn(deliver_queue(client, receiver.clone(), rx, pending.clone(), counters.clone()));
                Queue { receiver, tx }
            })
            .collect();
        Self { node, cluster, queues, pending, counters }
    }

    /// Queue `e` for every receiver that wants it; never waits.
    pub(crate) fn notify(&self, e: &RoomEvent) {
        let (kind, room, participant, track) = describe(e);
        if !self.queues.iter().any(|q| q.receiver.wants(kind)) {
            return;
        }
        let event = WebhookEvent {
            id: event_id(),
            event: kind,
            created_at: crate::node::unix_now(),
            room,
            participant,
            track,
            node: self.node.clone(),
            cluster: self.cluster.clone(),
        };
        let body = Bytes::from(serde_json::to_vec(&event).expect("a webhook event serialises"));
        let queued = Arc::new(Queued { kind, body, at: Instant::now() });
        for q in self.queues.iter().filter(|q| q.receiver.wants(kind)) {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if q.tx.try_send(queued.clone()).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.counters.count(kind, "dropped");
                tracing::warn!(receiver = %q.receiver.display_url(), event = %event, "webhook queue full: event dropped");
            }
        }
    }

    /// Wait until every queued event is delivered or given up, for at most `within`.
    pub(crate) async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.pending.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(pending = self.pending.load(Ordering::SeqCst), "webhooks still pending at shutdown");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn deliver_queue(
    client: HttpClient,
    receiver: Receiver,
    mut rx: mpsc::Receiver<Arc<Queued>>,
    pending: Arc<AtomicUsize>,
    counters: Counters,
) {
    while let Some(q) = rx.recv().await {
        let result = deliver(&client, &receiver, &q).await;
        counters.count(q.kind, result);
        if result == "delivered" {
            counters.seconds.observe(q.at.elapsed().as_secs_f64());
        }
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What to do after one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Delivered,
    Retry,
    GiveUp,
}

/// 2xx is delivered; network errors, timeouts (`None`), 5xx and 429 are worth a retry;
/// any other status would only be refused again.
fn verdict(status: Option<StatusCode>) -> Verdict {
    match status {
        Some(s) if s.is_success() => Verdict::Delivered,
        None => Verdict::Retry,
        Some(s) if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => Verdict::Retry,
        Some(_) => Verdict::GiveUp,
    }
}

/// The wait after failed attempt `attempt` (1-based): 0.5 s, 1 s, 2 s, 4 s.
fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1))
}

/// Deliver one event with retries; the result is a metric label.
async fn deliver(client: &HttpClient, receiver: &Receiver, q: &Queued) -> &'static str {
    for attempt in 1..=ATTEMPTS {
        let status = post(client, receiver, &q.body).await;
        match verdict(status.as_ref().ok().copied()) {
            Verdict::Delivered => return "delivered",
            Verdict::GiveUp => {
                tracing::warn!(receiver = %receiver.display_url(), status = ?status, attempt, "webhook refused");
                return "failed";
            }
            Verdict::Retry if attempt == ATTEMPTS => {
                tracing::warn!(receiver = %receiver.display_url(), result = ?status, attempts = attempt, "webhook failed");
                return "failed";
            }
            Verdict::Retry => {
                tracing::debug!(receiver = %receiver.display_url(), result = ?status, attempt, "webhook retry");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    "failed"
}

/// One POST; the status, or why there is none.
async fn post(client: &HttpClient, receiver: &Receiver, body: &Bytes) -> std::result::Result<StatusCode, String> {
    let auth = webhook::sign(body, &receiver.api_key, &receiver.api_secret, crate::node::unix_now());
    let req = hyper::Request::post(receiver.url.clone())
        .header(CONTENT_TYPE, webhook::CONTENT_TYPE)
        .header(AUTHORIZATION, auth)
        .header(USER_AGENT, concat!("switchyard-media-node/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the (small) answer so the connection can be reused; its content is unused.
        let _ = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES).collect().await;
        Ok(status)
    };
    tokio::time::timeout(TIMEOUT, exchange).await.unwrap_or_else(|_| Err(format!("no answer within {TIMEOUT:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, api_key: Option<&str>) -> WebhookSpec {
        WebhookSpec { url: url.into(), events: vec![], api_key: api_key.map(Into::into) }
    }

    fn keys() -> Vec<(String, String)> {
        vec![("k1".into(), "s1".into()), ("k2".into(), "s2".into())]
    }

    #[test]
    fn retries_network_errors_5xx_and_429_only() {
        assert_eq!(verdict(Some(StatusCode::OK)), Verdict::Delivered);
        assert_eq!(verdict(Some(StatusCode::NO_CONTENT)), Verdict::Delivered);
        assert_eq!(verdict(None), Verdict::Retry);
        assert_eq!(verdict(Some(StatusCode::INTERNAL_SERVER_ERROR)), Verdict::Retry);
        assert_eq!(verdict(Some(StatusCode::SERVICE_UNAVAILABLE)), Verdict::Retry);
        assert_eq!(verdict(Some(StatusCode::TOO_MANY_REQUESTS)), Verdict::Retry);
        assert_eq!(verdict(Some(StatusCode::BAD_REQUEST)), Verdict::GiveUp);
        assert_eq!(verdict(Some(StatusCode::UNAUTHORIZED)), Verdict::GiveUp);
        assert_eq!(verdict(Some(StatusCode::NOT_FOUND)), Verdict::GiveUp);
        assert_eq!(verdict(Some(StatusCode::MOVED_PERMANENTLY)), Verdict::GiveUp, "redirects are not followed");
    }

    #[test]
    fn backoff_doubles_from_half_a_second() {
        let waits: Vec<_> = (1..ATTEMPTS).map(backoff).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000].map(Duration::from_millis));
    }

    #[test]
    fn receivers_sign_with_their_key_or_the_first() {
        let r = receivers(&[spec("http://app:8080/hook", None), spec("https://x.example/h?t=1", Some("k2"))], &keys())
            .unwrap();
        assert_eq!((r[0].api_key.as_str(), r[0].api_secret.as_str()), ("k1", "s1"));
        assert_eq!((r[1].api_key.as_str(), r[1].api_secret.as_str()), ("k2", "s2"));
        assert_eq!(r[1].display_url(), "https://x.example/h", "the query stays out of logs");
        assert!(!format!("{r:?}").contains("s2"), "Debug never prints secrets");
    }

    #[test]
    fn bad_receivers_are_named() {
        let err = receivers(&[spec("http://app/hook", Some("k9"))], &keys()).unwrap_err().to_string();
        assert!(err.contains("http://app/hook") && err.contains("k9"), "{err}");
        for url in ["ftp://app/hook", "not a url", "/relative"] {
            let err = receivers(&[spec(url, None)], &keys()).unwrap_err().to_string();
            assert!(err.contains("webhook"), "{url}: {err}");
        }
    }

    #[test]
    fn events_map_to_payloads() {
        let alice = Who { identity: "alice".into(), sid: "PA_1".into() };
        let e = RoomEvent::TrackPublished {
            room: "r".into(),
            room_sid: "RM_1".into(),
            participant: alice.clone(),
            track_sid: "TR_1".into(),
        };
        let (kind, room, participant, track) = describe(&e);
        assert_eq!((kind, room.name.as_str(), room.sid.as_str()), (EventKind::TrackPublished, "r", "RM_1"));
        assert_eq!(participant.unwrap().sid, "PA_1");
        assert_eq!(track.unwrap().sid, "TR_1");
        let left = RoomEvent::ParticipantLeft {
            room: "r".into(),
            room_sid: "RM_1".into(),
            participant: alice,
            reason: switchyard_api::signal::LeaveReason::Removed,
        };
        let (kind, _, participant, _) = describe(&left);
        assert_eq!(kind, EventKind::ParticipantLeft);
        assert_eq!(participant.unwrap().leave_reason, Some(switchyard_api::signal::LeaveReason::Removed));
        let (kind, _, participant, track) =
            describe(&RoomEvent::RoomFinished { room: "r".into(), room_sid: "RM_1".into() });
        assert_eq!((kind, participant, track), (EventKind::RoomFinished, None, None));
        assert_ne!(event_id(), event_id());
    }

    /// A receiver that accepts connections and never answers holds its first event in
    /// flight; the queue then fills and further events are dropped and counted, while
    /// `notify` returns at once.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut conns = vec![];
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let metrics = Metrics::new();
        let r = receivers(&[spec(&format!("http://{addr}/hook"), None)], &keys()).unwrap();
        let n = Notifier::with_queue(r, "node-0".into(), "edge".into(), &metrics, 2);
        let joined = RoomEvent::ParticipantJoined {
            room: "r".into(),
            room_sid: "RM_1".into(),
            participant: Who { identity: "a".into(), sid: "PA_1".into() },
        };
        n.notify(&joined);
        // Let the task take the first event off the queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..5 {
            n.notify(&joined);
        }
        let dropped = metrics.webhooks.get_or_create(&WebhookResult { event: "participant_joined", result: "dropped" });
        assert_eq!(dropped.get(), 3, "one in flight, two queued, three dropped");
        assert_eq!(n.pending.load(Ordering::SeqCst), 3);
        let start = tokio::time::Instant::now();
        n.flush(Duration::from_millis(200)).await;
        assert!(start.elapsed() >= Duration::from_millis(200), "flush waits for pending events, up to its limit");
    }
}
