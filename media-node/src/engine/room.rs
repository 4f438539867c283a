//! Rooms: admission (a join creates the room or is refused), leave, close, the empty
//! timeout and the drain. A refused join is answered with an error and a
//! [`Route::Refused`], so the router drops the room's reservation.

use std::time::Instant;

use str0m::media::MediaKind;
use str0m::{Candidate, Rtc, RtcConfig};
use switchyard_api::room::Codec;
use switchyard_api::signal::{
    ErrorCode, IceServer, JoinResponse, LeaveReason, ParticipantEvent, ParticipantInfo, ParticipantLeft, Reconnect,
    RoomInfo, ServerLeave, ServerMessage,
};

use super::participant::Peer;
use super::quality;
use super::speakers::Speakers;
use super::subscription::Sub;
use super::{Engine, JoinArgs, Output, Pid, RoomEvent, RoomSettings, Route, Who, err};

pub(super) struct Room {
    pub(super) sid: String,
    pub(super) settings: RoomSettings,
    pub(super) members: Vec<Pid>,
    pub(super) created_at_ms: u64,
    pub(super) empty_since: Option<Instant>,
    /// Who speaks, and when to look again.
    pub(super) speakers: Speakers,
    /// When the room next scores its participants' connections; `None` while empty.
    pub(super) quality_tick: Option<Instant>,
}

impl Engine {
    fn refuse(&mut self, pid: Pid, room: &str, code: ErrorCode, message: String) {
        self.signal(pid, err(code, message, "join"));
        self.out.push_back(Output::Route(Route::Refused { pid, room: room.to_owned() }));
    }

    pub(super) fn rtc_config(&self, settings: &RoomSettings) -> RtcConfig {
        let allowed = |c: Codec| settings.allowed_codecs.is_empty() || settings.allowed_codecs.contains(&c);
        RtcConfig::new()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_dtls_cert(self.dtls_cert.clone())
            .clear_codecs()
            .enable_opus(allowed(Codec::Opus), false)
            .enable_vp8(allowed(Codec::VP8))
            .enable_vp9(allowed(Codec::VP9))
            .enable_h264(allowed(Codec::H264))
            .enable_av1(allowed(Codec::AV1))
            .set_stats_interval(Some(quality::STATS_INTERVAL))
            // The subscriber's downlink estimate (TWCC) feeds the layer allocation.
            .enable_bwe(Some(str0m::bwe::Bitrate::bps(super::allocation::INITIAL_ESTIMATE_BPS)))
    }

    /// Admission: open the room (or refuse), replace a duplicate identity, check the
    /// room's limit, then create the participant and subscribe it to what is published.
    pub(super) fn join(&mut self, now: Instant, args: JoinArgs) {
        let pid = args.pid;
        if !self.rooms.contains_key(&args.room) {
            if !args.may_create {
                let message = format!("room {:?} does not exist", args.room);
                return self.refuse(pid, &args.room, ErrorCode::RoomNotFound, message);
            }
            self.open_room(now, &args.room, args.settings.clone());
        }
        // A second session of the same identity replaces the first.
        let duplicate = self.rooms[&args.room]
            .members
            .iter()
            .copied()
            .find(|m| self.peers.get(m).is_some_and(|p| p.identity == args.claims.sub));
        if let Some(old) = duplicate {
            self.signal(
                old,
                ServerMessage::Leave(ServerLeave {
                    reason: LeaveReason::DuplicateIdentity,
                    can_reconnect: false,
                    retry_after_ms: None,
                    reconnect: None,
                    message: "the same identity joined from another session".into(),
                }),
            );
            self.leave(now, old, LeaveReason::DuplicateIdentity);
        }
        let room = &self.rooms[&args.room];
        let visible = room.members.iter().filter(|m| self.peers.get(m).is_some_and(|p| !p.grants.hidden)).count();
        if room.settings.max_participants > 0 && visible as u32 >= room.settings.max_participants {
            let max = room.settings.max_participants;
            let message = format!("room {:?} is full ({max} participants)", args.room);
            return self.refuse(pid, &args.room, ErrorCode::RoomFull, message);
        }

        let ufrag = self.random_token(8);
        let creds = str0m::IceCreds { ufrag: ufrag.clone(), pass: self.random_token(24) };
        let mut rtc: Rtc =
            self.rtc_config(&self.rooms[&args.room].settings).set_local_ice_credentials(creds).build(now);
        for &addr in &self.cfg.udp_candidates {
            if let Ok(c) = Candidate::host(addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        for &addr in &self.cfg.tcp_candidates {
            if let Ok(c) = Candidate::builder().tcp().host(addr).tcptype(str0m::net::TcpType::Passive).build() {
                rtc.add_local_candidate(c);
            }
        }
        let sid = self.new_sid("PA");
        let mut peer = Peer::new(pid, sid, &args, ufrag.clone(), rtc, now, self.clock.unix_ms(now));
        peer.first_offer_at = Some(now + super::participant::FIRST_OFFER_GRACE);
        peer.relay = self.joining_relay.take().filter(|(p, _)| *p == pid).map(|(_, side)| side);
        let info = peer.info();
        let hidden = peer.grants.hidden;
        let can_subscribe = peer.grants.can_subscribe && args.auto_subscribe;
        self.peers.insert(pid, peer);
        self.drain(pid);
        self.out.push_back(Output::Route(Route::Admitted { pid, room: args.room.clone(), ufrag }));

        let room = self.rooms.get_mut(&args.room).expect("room exists");
        room.members.push(pid);
        room.quality_tick.get_or_insert(now + quality::EVAL_INTERVAL);
        room.empty_since = None;
        let members = room.members.clone();
        let others: Vec<_> = members
            .iter()
            .filter(|&&m| m != pid)
            .filter_map(|m| self.peers.get(m))
            .filter(|p| !p.grants.hidden)
            .map(Peer::info)
            .collect();
        let response = self.join_response(&args.room, info.clone(), others, args.ice_servers, args.reconnect_token);
        self.signal(pid, ServerMessage::Joined(response));
        if !hidden {
            for &m in members.iter().filter(|&&m| m != pid) {
                self.signal(m, ServerMessage::ParticipantJoined(ParticipantEvent { participant: info.clone() }));
            }
        }
        if let Some((room, room_sid, participant)) = self.who(pid).filter(|_| self.announces(pid)) {
            self.out.push_back(Output::Event(RoomEvent::ParticipantJoined { room, room_sid, participant }));
        }
        if can_subscribe {
            let tracks: Vec<(Pid, String, str0m::media::Mid, MediaKind, String)> = members
                .iter()
                .filter(|&&m| m != pid)
                .filter_map(|m| self.peers.get(m))
                .flat_map(|p| {
                    p.published.iter().map(move |t| (p.pid, p.sid.clone(), t.mid, t.media_kind(), t.sid.clone()))
                })
                .collect();
            for (publisher, publisher_sid, mid, kind, track_sid) in tracks {
                let sub = Sub::new(publisher, publisher_sid, mid, kind, track_sid, &mut self.rng);
                self.peers.get_mut(&pid).expect("just inserted").subs.push(sub);
            }
            self.mark_renegotiate(pid);
        }
    }

    /// Open `name` (not open yet) with `settings`: a new sid, and `room_started`.
    pub(super) fn open_room(&mut self, now: Instant, name: &str, settings: RoomSettings) {
        let sid = settings.sid.clone().unwrap_or_else(|| self.new_sid("RM"));
        let created_at_ms = self.clock.unix_ms(now);
        let room = Room {
            sid: sid.clone(),
            settings,
            members: vec![],
            created_at_ms,
            empty_since: None,
            speakers: Speakers::default(),
            quality_tick: None,
        };
        self.rooms.insert(name.to_owned(), room);
        self.out.push_back(Output::Event(RoomEvent::RoomStarted { room: name.to_owned(), room_sid: sid }));
    }

    /// The room and room sid of `pid`'s room, and who `pid` is, for an event.
    pub(super) fn who(&self, pid: Pid) -> Option<(String, String, Who)> {
        let p = self.peers.get(&pid)?;
        let room_sid = self.rooms.get(&p.room).map(|r| r.sid.clone()).unwrap_or_default();
        Some((p.room.clone(), room_sid, Who { identity: p.identity.clone(), sid: p.sid.clone() }))
    }

    /// `joined` (and `resumed`): the room, the participant, the others it may see, and
    /// the session settings.
    pub(super) fn join_response(
        &self,
        room: &str,
        participant: ParticipantInfo,
        others: Vec<ParticipantInfo>,
        ice_servers: Vec<IceServer>,
        reconnect_token: String,
    ) -> JoinResponse {
        JoinResponse {
            room: self.room_info(room),
            participant,
            other_participants: others,
            ice_servers,
            ice_transport_policy: self.cfg.ice_transport_policy,
            protocol_version: switchyard_api::signal::PROTOCOL_VERSION,
            server_version: env!("CARGO_PKG_VERSION").into(),
            node: self.cfg.node.clone(),
            ping_interval_seconds: self.cfg.ping_interval_seconds,
            ping_timeout_seconds: self.cfg.ping_timeout_seconds,
            reconnect_token,
        }
    }

    pub(super) fn room_info(&self, name: &str) -> RoomInfo {
        let room = &self.rooms[name];
        let codecs = if room.settings.allowed_codecs.is_empty() {
            Codec::ALL.to_vec()
        } else {
            room.settings.allowed_codecs.clone()
        };
        RoomInfo {
            sid: room.sid.clone(),
            name: name.to_owned(),
            metadata: room.settings.metadata.clone(),
            max_participants: room.settings.max_participants,
            empty_timeout_seconds: room.settings.empty_timeout.as_secs() as u32,
            num_participants: room.members.len() as u32,
            enabled_codecs: codecs,
            created_at_ms: room.created_at_ms,
        }
    }

    /// Remove a participant: its tracks leave the index and every subscriber's offer,
    /// the room hears why, the router forgets it.
    pub(super) fn leave(&mut self, now: Instant, pid: Pid, reason: LeaveReason) {
        let Some((room, room_sid, who)) = self.who(pid) else { return };
        let announces = self.announces(pid);
        let mut peer = self.peers.remove(&pid).expect("who found it");
        for t in peer.published.iter().filter(|_| announces) {
            self.out.push_back(Output::Event(RoomEvent::TrackUnpublished {
                room: room.clone(),
                room_sid: room_sid.clone(),
                participant: who.clone(),
                track_sid: t.sid.clone(),
            }));
        }
        peer.rtc.disconnect();
        // The close (RTCP BYE, DTLS close_notify) still goes out; its events do not matter.
        let mut ignored = std::collections::VecDeque::new();
        super::drain_rtc(pid, &mut peer, &mut self.out, &mut ignored, &mut Vec::new());
        self.index.remove_publisher(pid, peer.published.iter().map(|t| t.mid));
        for sub in &peer.subs {
            self.index.unsubscribe(sub.publisher, sub.pub_mid, pid);
        }
        self.out.push_back(Output::Route(Route::Closed { pid }));
        let Some(r) = self.rooms.get_mut(&peer.room) else { return };
        r.members.retain(|&m| m != pid);
        if r.members.is_empty() {
            r.empty_since = Some(now);
        }
        let members = r.members.clone();
        for &m in &members {
            if let Some(p) = self.peers.get_mut(&m) {
                p.drop_publisher(pid);
            }
            if !peer.grants.hidden {
                self.signal(
                    m,
                    ServerMessage::ParticipantLeft(ParticipantLeft {
                        participant_sid: peer.sid.clone(),
                        identity: peer.identity.clone(),
                        reason,
                    }),
                );
            }
            self.mark_renegotiate(m);
        }
        if announces {
            self.out.push_back(Output::Event(RoomEvent::ParticipantLeft { room, room_sid, participant: who, reason }));
        }
    }

    pub(super) fn close_room(&mut self, now: Instant, room: &str) {
        let Some(r) = self.rooms.get(room) else { return };
        for m in r.members.clone() {
            self.signal(
                m,
                ServerMessage::Leave(ServerLeave {
                    reason: LeaveReason::RoomClosed,
                    can_reconnect: false,
                    retry_after_ms: None,
                    reconnect: None,
                    message: format!("room {room:?} was closed"),
                }),
            );
            self.leave(now, m, LeaveReason::RoomClosed);
        }
        if let Some(r) = self.rooms.remove(room) {
            self.out.push_back(Output::Event(RoomEvent::RoomFinished { room: room.to_owned(), room_sid: r.sid }));
        }
    }

    /// Close the rooms whose empty timeout ran out.
    pub(super) fn expire_rooms(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.members.is_empty() && r.empty_since.is_some_and(|t| t + r.settings.empty_timeout <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for room in expired {
            if let Some(r) = self.rooms.remove(&room) {
                self.out.push_back(Output::Event(RoomEvent::RoomFinished { room, room_sid: r.sid }));
            }
        }
    }

    /// Tell everyone to reconnect elsewhere.
    pub(super) fn drain_node(&mut self) {
        let pids: Vec<Pid> = self.peers.keys().copied().collect();
        for pid in pids {
            self.signal(
                pid,
                ServerMessage::Leave(ServerLeave {
                    reason: LeaveReason::NodeDraining,
                    can_reconnect: true,
                    retry_after_ms: Some(1000),
                    // Nothing is kept here for a resume: the room moves to another node.
                    reconnect: Some(Reconnect::Rejoin),
                    message: "this node is draining; join again through the signaling URL to be placed on another"
                        .into(),
                }),
            );
        }
    }
}
