//! Data: the signaling `data` message (to the room or named identities) and WebRTC data
//! channels (relayed to the channel of the same label on every other participant), both
//! within [`MAX_DATA_PAYLOAD_BYTES`] and the publisher's `canPublishData`.

use base64::Engine as _;
use switchyard_api::signal::{DataMessage, DataReceived, ErrorCode, MAX_DATA_PAYLOAD_BYTES, ServerMessage};

use super::{Engine, Pid, err};

impl Engine {
    pub(super) fn relay_data(&mut self, pid: Pid, d: DataMessage) {
        let peer = &self.peers[&pid];
        if let Err(e) = peer.claims_authorize_data() {
            return self.signal(pid, err(ErrorCode::PermissionDenied, e.to_string(), "data"));
        }
        let len = base64::engine::general_purpose::STANDARD.decode(&d.payload).map(|b| b.len());
        match len {
            Err(_) => return self.signal(pid, err(ErrorCode::BadRequest, "payload is not base64", "data")),
            Ok(n) if n > MAX_DATA_PAYLOAD_BYTES => {
                return self.signal(
                    pid,
                    err(
                        ErrorCode::BadRequest,
                        format!("payload is {n} bytes; the limit is {MAX_DATA_PAYLOAD_BYTES}"),
                        "data",
                    ),
                );
            }
            Ok(_) => {}
        }
        let msg = ServerMessage::Data(DataReceived {
            participant_sid: peer.sid.clone(),
            identity: peer.identity.clone(),
            kind: d.kind,
            topic: d.topic,
            payload: d.payload,
        });
        for m in self.room_members(pid) {
            let wanted = self.peers.get(&m).is_some_and(|p| {
                m != pid && (d.destination_identities.is_empty() || d.destination_identities.contains(&p.identity))
            });
            if wanted {
                self.signal(m, msg.clone());
            }
        }
    }

    pub(super) fn relay_channel(&mut self, from: Pid, data: str0m::channel::ChannelData) {
        let Some(peer) = self.peers.get(&from) else { return };
        if !peer.grants.can_publish_data || data.data.len() > MAX_DATA_PAYLOAD_BYTES {
            return;
        }
        let Some(label) = peer.channels.iter().find(|(c, _)| *c == data.id).map(|(_, l)| l.clone()) else { return };
        for m in self.room_members(from) {
            if m == from {
                continue;
            }
            let Some(p) = self.peers.get_mut(&m) else { continue };
            let Some(&(cid, _)) = p.channels.iter().find(|(_, l)| *l == label) else { continue };
            if let Some(mut ch) = p.rtc.channel(cid) {
                let _ = ch.write(data.binary, &data.data);
            }
            self.drain(m);
        }
    }
}
