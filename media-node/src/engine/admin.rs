//! The Room service's operations on this engine's rooms. Each is one [`Admin`] command
//! whose answer the driver takes with [`Engine::take_reply`] after draining the outputs
//! it caused, so routing and events are applied before the HTTP answer leaves.
//!
//! Permission changes apply to the live session: revoking `canPublish` unpublishes the
//! participant's tracks, revoking `canSubscribe` ends its subscriptions, and the
//! participant itself hears `participant_updated` with its new permissions.

use std::time::Instant;

use switchyard_api::room_service::{ApiError, ApiErrorCode, SendDataRequest, UpdateParticipantRequest};
use switchyard_api::signal::{
    DataReceived, LeaveReason, ParticipantEvent, ParticipantInfo, RoomInfo, RoomUpdated, ServerLeave, ServerMessage,
    TrackInfo, TrackMuted,
};

use super::{Engine, Pid, RoomSettings};

/// One Room service operation.
#[derive(Debug, Clone)]
pub enum Admin {
    /// Open a room with no one in it (its empty timeout runs from now). `exclusive`:
    /// refuse with `room_exists` if it is open already.
    OpenRoom {
        /// The room.
        room: String,
        /// Its settings.
        settings: RoomSettings,
        /// Refuse an open room instead of returning it.
        exclusive: bool,
    },
    /// Every open room.
    ListRooms,
    /// One room.
    GetRoom {
        /// The room.
        room: String,
    },
    /// Set a room's metadata and tell its participants.
    UpdateRoom {
        /// The room.
        room: String,
        /// The new metadata.
        metadata: String,
    },
    /// Close a room: everyone leaves.
    CloseRoom {
        /// The room.
        room: String,
    },
    /// Everyone in a room.
    ListParticipants {
        /// The room.
        room: String,
    },
    /// One participant.
    GetParticipant {
        /// The room.
        room: String,
        /// The identity.
        identity: String,
    },
    /// Change a participant's name, metadata or permissions.
    UpdateParticipant {
        /// The room.
        room: String,
        /// The identity.
        identity: String,
        /// What changes.
        update: UpdateParticipantRequest,
    },
    /// Remove a participant.
    RemoveParticipant {
        /// The room.
        room: String,
        /// The identity.
        identity: String,
    },
    /// Mute or unmute a published track.
    MuteTrack {
        /// The room.
        room: String,
        /// The publisher's identity.
        identity: String,
        /// The track.
        track_sid: String,
        /// Muted or not.
        muted: bool,
    },
    /// A data message from the server.
    SendData {
        /// The room.
        room: String,
        /// The message.
        data: SendDataRequest,
    },
}

impl Admin {
    /// The room the operation is about (`None` for [`Admin::ListRooms`]).
    pub fn room(&self) -> Option<&str> {
        match self {
            Admin::ListRooms => None,
            Admin::OpenRoom { room, .. }
            | Admin::GetRoom { room }
            | Admin::UpdateRoom { room, .. }
            | Admin::CloseRoom { room }
            | Admin::ListParticipants { room }
            | Admin::GetParticipant { room, .. }
            | Admin::UpdateParticipant { room, .. }
            | Admin::RemoveParticipant { room, .. }
            | Admin::MuteTrack { room, .. }
            | Admin::SendData { room, .. } => Some(room),
        }
    }
}

/// What an operation answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A room.
    Room(RoomInfo),
    /// Rooms.
    Rooms(Vec<RoomInfo>),
    /// A participant.
    Participant(ParticipantInfo),
    /// Participants.
    Participants(Vec<ParticipantInfo>),
    /// A track.
    Track(TrackInfo),
    /// A data message reached this many participants.
    Sent(u32),
    /// Done; nothing to say.
    Done,
}

/// An operation's outcome.
pub type Reply = Result<Answer, ApiError>;

impl Engine {
    /// The answer to the last [`super::Command::Admin`].
    pub fn take_reply(&mut self) -> Option<Reply> {
        self.reply.take()
    }

    pub(super) fn admin(&mut self, now: Instant, req: Admin) -> Reply {
        match req {
            Admin::OpenRoom { room, settings, exclusive } => {
                if self.rooms.contains_key(&room) {
                    if exclusive {
                        return Err(ApiError::new(ApiErrorCode::RoomExists, format!("room {room:?} exists")));
                    }
                } else {
                    self.open_room(now, &room, settings);
                    self.rooms.get_mut(&room).expect("just opened").empty_since = Some(now);
                }
                Ok(Answer::Room(self.room_info(&room)))
            }
            Admin::ListRooms => {
                let mut names: Vec<&String> = self.rooms.keys().collect();
                names.sort();
                Ok(Answer::Rooms(names.into_iter().map(|n| self.room_info(n)).collect()))
            }
            Admin::GetRoom { room } => {
                self.open(&room)?;
                Ok(Answer::Room(self.room_info(&room)))
            }
            Admin::UpdateRoom { room, metadata } => {
                self.open(&room)?;
                self.rooms.get_mut(&room).expect("checked").settings.metadata = Some(metadata);
                let info = self.room_info(&room);
                for m in self.rooms[&room].members.clone() {
                    self.signal(m, ServerMessage::RoomUpdated(RoomUpdated { room: info.clone() }));
                }
                Ok(Answer::Room(info))
            }
            Admin::CloseRoom { room } => {
                self.open(&room)?;
                self.close_room(now, &room);
                Ok(Answer::Done)
            }
            Admin::ListParticipants { room } => {
                self.open(&room)?;
                let members = &self.rooms[&room].members;
                Ok(Answer::Participants(members.iter().filter_map(|m| self.peers.get(m)).map(|p| p.info()).collect()))
            }
            Admin::GetParticipant { room, identity } => {
                let pid = self.member(&room, &identity)?;
                Ok(Answer::Participant(self.peers[&pid].info()))
            }
            Admin::UpdateParticipant { room, identity, update } => {
                let pid = self.member(&room, &identity)?;
                Ok(Answer::Participant(self.update_participant(now, pid, update)))
            }
            Admin::RemoveParticipant { room, identity } => {
                let pid = self.member(&room, &identity)?;
                self.signal(
                    pid,
                    ServerMessage::Leave(ServerLeave {
                        reason: LeaveReason::Removed,
                        can_reconnect: false,
                        retry_after_ms: None,
                        reconnect: None,
                        message: "removed from the room by its administrator".into(),
                    }),
                );
                self.leave(now, pid, LeaveReason::Removed);
                Ok(Answer::Done)
            }
            Admin::MuteTrack { room, identity, track_sid, muted } => {
                let pid = self.member(&room, &identity)?;
                let peer = self.peers.get_mut(&pid).expect("a member");
                let Some(track) = peer.published.iter_mut().find(|t| t.sid == track_sid) else {
                    return Err(ApiError::new(
                        ApiErrorCode::TrackNotFound,
                        format!("{identity:?} publishes no track {track_sid:?}"),
                    ));
                };
                track.muted = muted;
                let info = track.info();
                let event = TrackMuted { participant_sid: peer.sid.clone(), track_sid, muted };
                // The publisher hears it too: its client shows the track as muted.
                for m in self.rooms[&room].members.clone() {
                    self.signal(m, ServerMessage::TrackMuted(event.clone()));
                }
                Ok(Answer::Track(info))
            }
            Admin::SendData { room, data } => {
                self.open(&room)?;
                let msg = ServerMessage::Data(DataReceived {
                    participant_sid: String::new(),
                    identity: String::new(),
                    kind: data.kind,
                    topic: data.topic,
                    payload: data.payload,
                });
                let to: Vec<Pid> = self.rooms[&room]
                    .members
                    .iter()
                    .copied()
                    .filter(|m| {
                        self.peers.get(m).is_some_and(|p| {
                            data.destination_identities.is_empty() || data.destination_identities.contains(&p.identity)
                        })
                    })
                    .collect();
                for &m in &to {
                    self.signal(m, msg.clone());
                }
                Ok(Answer::Sent(to.len() as u32))
            }
        }
    }

    fn open(&self, room: &str) -> Result<(), ApiError> {
        if self.rooms.contains_key(room) { Ok(()) } else { Err(ApiError::room_not_found(room)) }
    }

    fn member(&self, room: &str, identity: &str) -> Result<Pid, ApiError> {
        self.open(room)?;
        self.rooms[room]
            .members
            .iter()
            .copied()
            .find(|m| self.peers.get(m).is_some_and(|p| p.identity == identity))
            .ok_or_else(|| ApiError::participant_not_found(room, identity))
    }

    fn update_participant(&mut self, now: Instant, pid: Pid, u: UpdateParticipantRequest) -> ParticipantInfo {
        let peer = self.peers.get_mut(&pid).expect("a member");
        if let Some(name) = u.name {
            peer.name = Some(name);
        }
        if let Some(metadata) = u.metadata {
            peer.metadata = Some(metadata);
        }
        let p = u.permission.unwrap_or_default();
        if let Some(v) = p.can_publish_data {
            peer.grants.can_publish_data = v;
        }
        if let Some(v) = p.can_publish {
            peer.grants.can_publish = v;
        }
        if let Some(v) = p.can_subscribe {
            peer.grants.can_subscribe = v;
        }
        if p.can_publish == Some(false) {
            let tracks: Vec<String> = peer.published.iter().map(|t| t.sid.clone()).collect();
            for t in tracks {
                self.unpublish(pid, &t);
            }
        }
        if p.can_subscribe == Some(false) {
            let subs: Vec<String> = self.peers[&pid].subs.iter().map(|s| s.track_sid.clone()).collect();
            for t in subs {
                self.update_subscription(now, pid, &t, false, None);
            }
        }
        let peer = &self.peers[&pid];
        let info = peer.info();
        let hidden = peer.grants.hidden;
        self.signal(pid, ServerMessage::ParticipantUpdated(ParticipantEvent { participant: info.clone() }));
        if !hidden {
            self.broadcast(pid, ServerMessage::ParticipantUpdated(ParticipantEvent { participant: info.clone() }));
        }
        info
    }
}
