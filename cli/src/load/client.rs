//! One TURN allocation seen from the client, sans-IO.
//!
//! ```text
//!  Allocate ─401─► Allocate (credentials) ─► CreatePermission ─► ChannelBind ─► Ready
//!                                                                  │  Refresh at half the lifetime
//!                                                                  │  ChannelBind again every 4 min
//!                                                     close() ─────┴► Refresh(LIFETIME 0) ─► Closed
//! ```
//! [`Client`] takes `(Instant, bytes)` and timeouts and yields messages to send,
//! events and its next deadline; it owns no socket and reads no clock, so its
//! retransmissions, nonce handling and refresh schedule are tested against
//! turn-node's own sans-IO engine on a virtual clock. One request is in flight
//! at a time. ChannelData is not its business: once [`State::Ready`], the
//! driver frames payloads with [`Client::channel`] itself.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard_turn_node::auth::{Key, long_term_key};
use switchyard_turn_node::stun::{self, Class, MessageWriter, attr, method};

/// First retransmission timeout on UDP (RFC 8489 §6.2.1); doubles per try.
const RTO: Duration = Duration::from_millis(500);
/// Transmissions of one request on UDP before giving up.
const MAX_SENDS: u32 = 5;
/// How long a request may go unanswered: 0.5 + 1 + 2 + 4 + 8 s.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_millis(15_500);
/// 438 Stale Nonce answers accepted in a row before giving up.
const MAX_STALE_NONCES: u32 = 3;
/// Permissions last 300 s and channels 600 s (RFC 8656 §9, §12); a ChannelBind
/// refreshes both, so one every 4 minutes keeps the path open.
const REBIND_EVERY: Duration = Duration::from_secs(240);
/// Used when a success response carries no LIFETIME (RFC 8656 default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// REQUESTED-TRANSPORT value for UDP.
const PROTO_UDP: u8 = 17;

/// Long-term credentials.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
    /// Overrides the realm the server announces.
    pub(crate) realm: Option<String>,
    /// What to tell the user when the server refuses them, e.g. "check --secret".
    pub(crate) on_401: &'static str,
}

/// Realm and nonce from a 401/438: shared so the other allocations skip the
/// unauthenticated round trip (and the server's rate limit on it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) realm: String,
    pub(crate) nonce: Vec<u8>,
}

/// Why an allocation stopped working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The TURN error code, if the server answered with one.
    pub(crate) code: Option<u16>,
    pub(crate) message: String,
}

/// Where the allocation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Setup,
    Ready,
    Closing,
    Closed,
    Failed,
}

/// What happened, for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A fresh realm/nonce the other allocations may use.
    Challenge(Challenge),
    /// Allocated, permitted and bound: ChannelData may flow.
    Ready {
        relayed: SocketAddr,
    },
    Failed(Failure),
    /// Deallocated (or nothing to deallocate).
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Allocate,
    CreatePermission,
    ChannelBind,
    Refresh(u32),
}

impl Request {
    fn name(self) -> &'static str {
        match self {
            Request::Allocate => "Allocate",
            Request::CreatePermission => "CreatePermission",
            Request::ChannelBind => "ChannelBind",
            Request::Refresh(_) => "Refresh",
        }
    }
}

#[derive(Debug)]
struct Pending {
    request: Request,
    tid: [u8; 12],
    bytes: Vec<u8>,
    authenticated: bool,
    sends: u32,
    resend_at: Instant,
    give_up_at: Instant,
}

/// One allocation's control plane.
#[derive(Debug)]
pub(crate) struct Client {
    creds: Credentials,
    peer: SocketAddr,
    channel: u16,
    /// Stream transport: no retransmissions.
    reliable: bool,
    challenge: Option<Challenge>,
    key: Option<Key>,
    state: State,
    pending: Option<Pending>,
    queue: VecDeque<Request>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    relayed: Option<SocketAddr>,
    lifetime: Duration,
    refresh_at: Option<Instant>,
    rebind_at: Option<Instant>,
    stale_nonces: u32,
    /// Refreshes (LIFETIME > 0) the server accepted.
    refreshes: u32,
    /// Ask for a permission and a channel after allocating (off: ready once allocated).
    bind: bool,
}

impl Client {
    /// Start allocating; `challenge` (from another allocation) saves the first 401.
    pub(crate) fn new(
        now: Instant,
        creds: Credentials,
        peer: SocketAddr,
        channel: u16,
        reliable: bool,
        challenge: Option<Challenge>,
    ) -> Self {
        let mut c = Client {
            creds,
            peer,
            channel,
            reliable,
            challenge: None,
            key: None,
            state: State::Setup,
            pending: None,
            queue: VecDeque::from([Request::Allocate]),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            relayed: None,
            lifetime: DEFAULT_LIFETIME,
            refresh_at: None,
            rebind_at: None,
            stale_nonces: 0,
            refreshes: 0,
            bind: true,
        };
        if let Some(ch) = challenge {
            c.set_challenge(ch);
        }
        c.start_next(now);
        c
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// An allocation without a permission or channel, ready once allocated: what
    /// `switchyard doctor` checks, since a server's peer policy decides which peers it
    /// relays to (and the SFU's address is not known before ICE).
    pub(crate) fn allocate_only(now: Instant, creds: Credentials, reliable: bool) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut c = Client::new(now, creds, unspecified, 0, reliable, None);
        c.bind = false;
        c
    }

    /// The relayed transport address, once allocated.
    pub(crate) fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    /// Refreshes the server accepted so far.
    pub(crate) fn refreshes(&self) -> u32 {
        self.refreshes
    }

    /// Refresh now instead of at half the lifetime (`switchyard doctor` checks that it works).
    pub(crate) fn refresh_now(&mut self, now: Instant) {
        if self.state == State::Ready {
            self.refresh_at = None;
            self.queue.push_back(Request::Refresh(self.lifetime.as_secs() as u32));
            self.start_next(now);
        }
    }

    /// The bound channel number (valid once ready).
    pub(crate) fn channel(&self) -> u16 {
        self.channel
    }

    /// The next message to send to the server.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] next has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let pending = self
            .pending
            .as_ref()
            .map(|p| if !self.reliable && p.sends < MAX_SENDS { p.resend_at.min(p.give_up_at) } else { p.give_up_at });
        [pending, self.refresh_at, self.rebind_at].into_iter().flatten().min()
    }

    /// Deallocate (Refresh with LIFETIME 0), or just stop if nothing was allocated.
    pub(crate) fn close(&mut self, now: Instant) {
        match self.state {
            State::Closing | State::Closed | State::Failed => {}
            _ if self.relayed.is_none() => self.finish(State::Closed, Event::Closed),
            _ => {
                self.state = State::Closing;
                self.pending = None;
                self.queue = VecDeque::from([Request::Refresh(0)]);
                self.refresh_at = None;
                self.rebind_at = None;
                self.start_next(now);
            }
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = &mut self.pending {
            if now >= p.give_up_at {
                let request = p.request;
                let secs = REQUEST_TIMEOUT.as_secs_f64();
                return if request == Request::Refresh(0) {
                    self.finish(State::Closed, Event::Closed)
                } else {
                    self.fail(None, format!("no response from the server within {secs} s ({})", request.name()))
                };
            }
            if !self.reliable && p.sends < MAX_SENDS && now >= p.resend_at {
                p.sends += 1;
                p.resend_at = now + RTO * (1 << (p.sends - 1));
                self.transmit.push_back(p.bytes.clone());
            }
        }
        if self.state == State::Ready {
            if self.refresh_at.is_some_and(|t| now >= t) {
                self.refresh_at = None;
                self.queue.push_back(Request::Refresh(self.lifetime.as_secs() as u32));
            }
            if self.rebind_at.is_some_and(|t| now >= t) {
                self.rebind_at = None;
                self.queue.push_back(Request::ChannelBind);
            }
        }
        self.start_next(now);
    }

    /// A STUN message from the server (ChannelData and indications are ignored).
    pub(crate) fn handle_input(&mut self, now: Instant, data: &[u8]) {
        let Ok(msg) = stun::parse(data) else {
            return;
        };
        let Some(p) = &self.pending else {
            return;
        };
        if msg.transaction_id != p.tid || !matches!(msg.class, Class::Success | Class::Error) {
            return;
        }
        let request = p.request;
        let authenticated = p.authenticated;
        if msg.class == Class::Success {
            // A success must be signed with our key; anything else is not the server's answer.
            if let Some(key) = &self.key
                && !stun::verify_integrity(&msg, key)
            {
                return;
            }
            self.pending = None;
            self.stale_nonces = 0;
            self.on_success(now, request, msg.relayed, msg.lifetime);
            return self.start_next(now);
        }
        self.pending = None;
        let code = msg.error_code.unwrap_or(0);
        if request == Request::Refresh(0) {
            // Whatever the answer, the allocation is gone or going.
            return self.finish(State::Closed, Event::Closed);
        }
        let fresh = match (msg.realm, msg.nonce) {
            (Some(realm), Some(nonce)) => {
                Some(Challenge { realm: String::from_utf8_lossy(realm).into_owned(), nonce: nonce.to_vec() })
            }
            _ => None,
        };
        match (code, fresh) {
            (401, Some(ch)) if !authenticated => {
                self.set_challenge(ch.clone());
                self.events.push_back(Event::Challenge(ch));
                self.queue.push_front(request);
                self.start_next(now);
            }
            (438, Some(ch)) if self.stale_nonces < MAX_STALE_NONCES => {
                self.stale_nonces += 1;
                self.set_challenge(ch.clone());
                self.events.push_back(Event::Challenge(ch));
                self.queue.push_front(request);
                self.start_next(now);
            }
            (401, fresh) => {
                let server_realm = fresh.map(|c| c.realm);
                let message = match (&self.creds.realm, server_realm) {
                    (Some(ours), Some(theirs)) if *ours != theirs => {
                        format!("401 after credentials: the server's realm is {theirs:?}, not --realm {ours:?}")
                    }
                    _ => format!("401 after credentials: {}", self.creds.on_401),
                };
                self.fail(Some(401), format!("{message} ({})", request.name()));
            }
            (code, _) => {
                let message = match code {
                    403 => format!(
                        "403: peer address denied by the server's peer policy ({} to {})",
                        request.name(),
                        self.peer
                    ),
                    486 => format!(
                        "486 allocation quota reached: the server's per-user or per-node limit \
                         (--user-id 'load-{{i}}' spreads allocations over user ids; {})",
                        request.name()
                    ),
                    508 => format!(
                        "508 insufficient capacity (server draining, or out of relay ports or permissions; {})",
                        request.name()
                    ),
                    437 => format!(
                        "437 allocation mismatch: the server no longer has this allocation ({})",
                        request.name()
                    ),
                    438 => format!("438 stale nonce {MAX_STALE_NONCES} times in a row ({})", request.name()),
                    0 => format!("error response without ERROR-CODE ({})", request.name()),
                    _ => format!("{code} {} ({})", reason_phrase(msg.raw), request.name()),
                };
                self.fail(Some(code).filter(|&c| c != 0), message);
            }
        }
    }

    fn on_success(&mut self, now: Instant, request: Request, relayed: Option<SocketAddr>, lifetime: Option<u32>) {
        match request {
            Request::Allocate => {
                let Some(relayed) = relayed else {
                    return self.fail(None, "Allocate success without XOR-RELAYED-ADDRESS".into());
                };
                self.relayed = Some(relayed);
                self.set_lifetime(now, lifetime);
                if self.bind {
                    self.queue.extend([Request::CreatePermission, Request::ChannelBind]);
                } else {
                    self.state = State::Ready;
                    self.events.push_back(Event::Ready { relayed });
                }
            }
            Request::CreatePermission => {}
            Request::ChannelBind => {
                self.rebind_at = Some(now + REBIND_EVERY);
                if self.state == State::Setup {
                    self.state = State::Ready;
                    let relayed = self.relayed.expect("bound after allocating");
                    self.events.push_back(Event::Ready { relayed });
                }
            }
            Request::Refresh(0) => self.finish(State::Closed, Event::Closed),
            Request::Refresh(_) => {
                self.refreshes += 1;
                self.set_lifetime(now, lifetime);
            }
        }
    }

    fn set_lifetime(&mut self, now: Instant, granted: Option<u32>) {
        self.lifetime = granted.map_or(DEFAULT_LIFETIME, |s| Duration::from_secs(u64::from(s)));
        self.refresh_at = Some(now + self.lifetime / 2);
    }

    fn set_challenge(&mut self, ch: Challenge) {
        let realm = self.creds.realm.clone().unwrap_or_else(|| ch.realm.clone());
        self.key = Some(long_term_key(&self.creds.username, &realm, &self.creds.password));
        self.challenge = Some(ch);
    }

    fn start_next(&mut self, now: Instant) {
        if self.pending.is_some() || matches!(self.state, State::Closed | State::Failed) {
            return;
        }
        let Some(request) = self.queue.pop_front() else {
            return;
        };
        let tid: [u8; 12] = rand::random();
        let bytes = self.encode(request, tid);
        self.transmit.push_back(bytes.clone());
        self.pending = Some(Pending {
            request,
            tid,
            bytes,
            authenticated: self.key.is_some(),
            sends: 1,
            resend_at: now + RTO,
            give_up_at: now + REQUEST_TIMEOUT,
        });
    }

    fn encode(&self, request: Request, tid: [u8; 12]) -> Vec<u8> {
        let m = match request {
            Request::Allocate => method::ALLOCATE,
            Request::CreatePermission => method::CREATE_PERMISSION,
            Request::ChannelBind => method::CHANNEL_BIND,
            Request::Refresh(_) => method::REFRESH,
        };
        let mut buf = Vec::with_capacity(160);
        let mut w = MessageWriter::new(&mut buf, m, Class::Request, tid);
        match request {
            Request::Allocate => w.attr(attr::REQUESTED_TRANSPORT, &[PROTO_UDP, 0, 0, 0]),
            Request::CreatePermission => w.xor_addr(attr::XOR_PEER_ADDRESS, self.peer),
            Request::ChannelBind => {
                let [hi, lo] = self.channel.to_be_bytes();
                w.attr(attr::CHANNEL_NUMBER, &[hi, lo, 0, 0]).xor_addr(attr::XOR_PEER_ADDRESS, self.peer)
            }
            Request::Refresh(lifetime) => w.u32(attr::LIFETIME, lifetime),
        };
        if let (Some(ch), Some(key)) = (&self.challenge, &self.key) {
            let realm = self.creds.realm.as_deref().unwrap_or(&ch.realm);
            w.attr(attr::USERNAME, self.creds.username.as_bytes())
                .attr(attr::REALM, realm.as_bytes())
                .attr(attr::NONCE, &ch.nonce)
                .integrity(key);
        }
        w.finish_with_fingerprint();
        buf
    }

    fn fail(&mut self, code: Option<u16>, message: String) {
        self.finish(State::Failed, Event::Failed(Failure { code, message }));
    }

    fn finish(&mut self, state: State, event: Event) {
        self.state = state;
        self.pending = None;
        self.queue.clear();
        self.refresh_at = None;
        self.rebind_at = None;
        self.events.push_back(event);
    }
}

/// The reason phrase of an ERROR-CODE attribute (the parser keeps only the number).
fn reason_phrase(raw: &[u8]) -> String {
    let mut pos = stun::HEADER_LEN;
    while pos + 4 <= raw.len() {
        let typ = u16::from_be_bytes([raw[pos], raw[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([raw[pos + 2], raw[pos + 3]]));
        let value = raw.get(pos + 4..pos + 4 + len).unwrap_or_default();
        if typ == attr::ERROR_CODE && value.len() >= 4 {
            return String::from_utf8_lossy(&value[4..]).into_owned();
        }
        pos += 4 + len.next_multiple_of(4);
    }
    String::new()
}

#[cfg(test)]
mod tests;
