//! Session resume: a participant whose signaling socket dropped is held for the resume
//! window, with its `Rtc`, tracks and subscriptions, and a new socket takes it back with
//! `resume`. The WebRTC transport never depended on the socket, so media keeps flowing.
//!
//! ```text
//!  socket lost ── Detach ──► held (until now + window) ── Resume (token ok) ──► attached
//!                                   │                       └─ new token, `resumed` snapshot
//!                                   └─ window ran out ──► leave(timeout): participant_left,
//!                                                          tracks unpublished
//! ```
//!
//! Invariants:
//! - A held participant is a member like any other: the room sees no leave, its tracks
//!   stay published and forwarded, subscriptions to it stay.
//! - Messages for a held participant are dropped, not queued: `resumed` is a fresh
//!   snapshot, and an offer still awaiting its answer is sent again after it.
//! - A reconnect token is spent by the resume that presents it: every `resumed` carries a
//!   new one. Tokens are compared in constant time.
//! - Only the session now attached can detach its participant or make it leave: a late
//!   `Detach` or `Leave` from a socket that a resume replaced is ignored.

use std::time::Instant;

use subtle::ConstantTimeEq;
use switchyard_api::signal::{ErrorCode, IceServer, JoinResponse, LeaveReason, ServerMessage};
use switchyard_api::token::Claims;

use super::{Engine, Output, Pid, Route, err};

/// A participant's resume state.
#[derive(Debug)]
pub(super) struct Resumable {
    /// What the next `resume` must present.
    token: String,
    /// The session (its own id) that the participant is attached to.
    session: Pid,
    /// Held for a resume until then (its socket is gone).
    pub(super) held_until: Option<Instant>,
}

impl Resumable {
    pub(super) fn new(session: Pid, token: String) -> Self {
        Self { token, session, held_until: None }
    }

    /// The token matches, in time independent of where they differ.
    fn token_matches(&self, presented: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), presented.as_bytes());
        // Lengths are not secret (every token has the same), contents are.
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

/// A `resume` on a new socket, already authenticated by the session.
#[derive(Debug, Clone)]
pub struct ResumeArgs {
    /// The new session's own id (its outbox is registered under it).
    pub session: Pid,
    /// The room the socket's access token grants.
    pub room: String,
    /// The socket's verified token claims.
    pub claims: Claims,
    /// The participant sid from `resume`.
    pub participant_sid: String,
    /// The reconnect token from `resume`.
    pub reconnect_token: String,
    /// The token the client presents next time.
    pub next_token: String,
    /// STUN/TURN servers for this participant (fresh credentials).
    pub ice_servers: Vec<IceServer>,
}

/// Why a resume failed: the metric label (bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFailure {
    /// No such participant in that room here: it never was, or its window ran out.
    UnknownSession,
    /// The token is wrong or spent.
    BadToken,
    /// The socket's access token is for another identity.
    WrongIdentity,
}

impl ResumeFailure {
    /// All of them, in label order.
    pub const ALL: [ResumeFailure; 3] =
        [ResumeFailure::UnknownSession, ResumeFailure::BadToken, ResumeFailure::WrongIdentity];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeFailure::UnknownSession => "unknown_session",
            ResumeFailure::BadToken => "bad_token",
            ResumeFailure::WrongIdentity => "wrong_identity",
        }
    }
}

impl Engine {
    /// `pid`'s socket (session `session`) is gone: hold it for the resume window, or let
    /// it leave at once when resume is off.
    pub(super) fn detach(&mut self, now: Instant, pid: Pid, session: Pid) {
        let window = self.cfg.resume_window;
        let Some(peer) = self.peers.get_mut(&pid) else { return };
        if peer.resume.session != session {
            return; // A resume replaced that socket already.
        }
        if window.is_zero() {
            return self.leave(now, pid, LeaveReason::Timeout);
        }
        peer.resume.held_until = Some(now + window);
        tracing::debug!(pid, window_ms = window.as_millis() as u64, "socket lost: held for resume");
    }

    /// The session `session` of `pid` ended with a leave (the client's `leave`, a close
    /// frame, a fatal error). Only the session now attached speaks for the participant.
    pub(super) fn session_left(&mut self, now: Instant, pid: Pid, session: Pid, reason: LeaveReason) {
        if self.peers.get(&pid).is_some_and(|p| p.resume.session != session) {
            return; // A resume replaced that socket already.
        }
        self.leave(now, pid, reason);
    }

    /// Let the participants whose resume window ran out leave.
    pub(super) fn expire_held(&mut self, now: Instant) {
        let expired: Vec<Pid> = self
            .peers
            .iter()
            .filter(|(_, p)| p.resume.held_until.is_some_and(|t| t <= now))
            .map(|(&pid, _)| pid)
            .collect();
        for pid in expired {
            self.leave(now, pid, LeaveReason::Timeout);
        }
    }

    /// Participants held for a resume.
    pub(super) fn held(&self) -> u64 {
        self.peers.values().filter(|p| p.resume.held_until.is_some()).count() as u64
    }

    /// A new socket takes a participant back: check who and the token, attach the
    /// session, answer with a fresh snapshot and replay an unanswered offer.
    pub(super) fn resume(&mut self, now: Instant, args: ResumeArgs) {
        match self.try_resume(now, &args) {
            Ok(()) => self.stats.resumes += 1,
            Err(failure) => {
                self.stats.resume_failures[failure as usize] += 1;
                let message = match failure {
                    ResumeFailure::UnknownSession => {
                        "no session to resume here (its window may have run out); join again"
                    }
                    ResumeFailure::BadToken | ResumeFailure::WrongIdentity => "cannot resume that session; join again",
                };
                self.signal(args.session, err(ErrorCode::ResumeFailed, message, "resume"));
                self.out.push_back(Output::Route(Route::Closed { pid: args.session }));
            }
        }
    }

    fn try_resume(&mut self, now: Instant, args: &ResumeArgs) -> Result<(), ResumeFailure> {
        let pid = self
            .rooms
            .get(&args.room)
            .into_iter()
            .flat_map(|r| r.members.iter())
            .copied()
            .find(|m| self.peers.get(m).is_some_and(|p| p.sid == args.participant_sid))
            .ok_or(ResumeFailure::UnknownSession)?;
        let peer = self.peers.get_mut(&pid).expect("a member");
        // The token first: whether the identity matches is not told to a token guesser.
        if !peer.resume.token_matches(&args.reconnect_token) {
            return Err(ResumeFailure::BadToken);
        }
        if peer.identity != args.claims.sub {
            return Err(ResumeFailure::WrongIdentity);
        }
        // Spent: the next resume needs the token sent in this `resumed`.
        peer.resume = Resumable::new(args.session, args.next_token.clone());
        let replay = peer.replay_pending(now);
        // The old socket (if it is still open) closes; the new one takes its place.
        self.out.push_back(Output::Route(Route::Resumed { session: args.session, pid }));
        let response = self.snapshot(pid, args);
        self.signal(pid, ServerMessage::Resumed(response));
        if let Some(offer) = replay {
            self.signal(pid, offer);
        }
        // Changes the participant missed an offer for while held.
        self.mark_renegotiate(pid);
        Ok(())
    }

    /// `resumed`: the room as it is now.
    fn snapshot(&self, pid: Pid, args: &ResumeArgs) -> JoinResponse {
        let peer = &self.peers[&pid];
        let others = self.rooms[&peer.room]
            .members
            .iter()
            .filter(|&&m| m != pid)
            .filter_map(|m| self.peers.get(m))
            .filter(|p| !p.grants.hidden)
            .map(super::participant::Peer::info)
            .collect();
        self.join_response(&peer.room, peer.info(), others, args.ice_servers.clone(), args.next_token.clone())
    }
}
