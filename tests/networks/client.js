// The network matrix's minimal WebRTC client: joins a room over the signaling protocol v1
// (schema/signal-v1.schema.json) with one RTCPeerConnection, and nothing else (no
// simulcast, no adaptive stream, no reconnect), so a row measures the network and the
// server rather than client logic. Apps use @switchyard/client (sdk/client-js).
//
//   const room = await connect("ws://host:7880", token, { publish: stream, onTrack: (track, streamId) => … });
//
// Negotiation: the client sends the first offer (with its tracks and a data channel);
// afterwards the server offers whenever subscriptions change. Signaling messages and the
// client's own offers are handled one at a time, in order: an answer is fully applied
// before the offer that follows it is looked at, and the client never offers while a
// server offer is being answered. Glare (both sides offered): the server yields, so a
// server offer that arrives while our own offer awaits its answer was withdrawn by the
// server, which offers again after answering ours; it is dropped here. An offer the
// server does not get an answer to is sent again, unchanged and under the same id.

export class SwitchyardError extends Error {
  constructor(code, message, retryAfterMs = null) {
    super(`${code}: ${message}`);
    this.code = code;
    /** Set when the server says a retry may succeed (placement, draining, rate limits). */
    this.retryAfterMs = retryAfterMs;
  }
}

export class Room {
  constructor(ws, options) {
    this.ws = ws;
    this.options = options;
    this.participants = new Map(); // sid -> info
    this.pendingOfferId = 0;
    this.offerId = 0;
    this.closed = false;
    this.pc = null;
    this.joined = null;
    this.channel = null;
    this.tracksBySid = new Map(); // publisher track sid -> participant sid
    // Every message and every local offer runs after the previous one has finished.
    this.queue = Promise.resolve();
  }

  /** Run `task` after everything queued before it (messages, offers). */
  serialize(task) {
    const run = this.queue.then(task);
    this.queue = run.catch(() => {});
    return run;
  }

  send(msg) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  async handle(msg) {
    const o = this.options;
    switch (msg.type) {
      case "answer":
        if (this.pc.signalingState === "have-local-offer") {
          await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        }
        break;
      case "offer": {
        // Glare: the server withdrew this offer when it got ours; it offers again.
        if (this.pc.signalingState === "have-local-offer") break;
        await this.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
        const answer = await this.pc.createAnswer();
        await this.pc.setLocalDescription(answer);
        this.send({ type: "answer", sdp: this.pc.localDescription.sdp, id: msg.id });
        break;
      }
      case "trickle":
        if (msg.candidate) await this.pc.addIceCandidate(msg.candidate).catch(() => {});
        break;
      case "participant_joined":
      case "participant_updated":
        this.participants.set(msg.participant.sid, msg.participant);
        for (const t of msg.participant.tracks || []) this.tracksBySid.set(t.sid, msg.participant.sid);
        if (msg.type === "participant_joined") o.onParticipantJoined?.(msg.participant);
        o.onParticipant?.(msg.participant);
        break;
      case "participant_left":
        this.participants.delete(msg.participantSid);
        o.onParticipantLeft?.(msg);
        break;
      case "track_muted":
        o.onTrackMuted?.(msg);
        break;
      case "data":
        o.onData?.(msg.identity, atob(msg.payload), msg.topic);
        break;
      case "ping":
        this.send({ type: "pong", timestampMs: msg.timestampMs });
        break;
      case "leave":
        o.onLeave?.(msg);
        this.close();
        break;
      case "error":
        o.onError?.(new SwitchyardError(msg.code, msg.message, msg.retryAfterMs));
        break;
    }
  }

  /** Publish every track of a MediaStream. */
  async publish(stream, source) {
    for (const track of stream.getTracks()) {
      this.send({
        type: "publish_track",
        cid: track.id,
        name: track.label || track.kind,
        kind: track.kind,
        source: source || (track.kind === "audio" ? "microphone" : "camera"),
      });
      this.pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    }
    await this.negotiate();
  }

  negotiate() {
    return this.serialize(async () => {
      const offer = await this.pc.createOffer();
      await this.pc.setLocalDescription(offer);
      this.send({ type: "offer", sdp: this.pc.localDescription.sdp, id: ++this.offerId });
    });
  }

  /** Send text to everyone, or to the given identities. */
  sendData(text, to = [], topic = "chat") {
    this.send({ type: "data", kind: "reliable", topic, payload: btoa(text), destinationIdentities: to });
  }

  setMuted(trackSid, muted) {
    this.send({ type: "mute_track", trackSid, muted });
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pinger);
    this.send({ type: "leave" });
    this.ws.close();
    this.pc?.close();
  }
}

function openAndJoin(url, token) {
  const ws = new WebSocket(`${url.replace(/\/$/, "")}/rtc?access_token=${encodeURIComponent(token)}`);
  return new Promise((resolve, reject) => {
    let refused = null;
    ws.onerror = () => reject(refused || new SwitchyardError("connect_failed", "WebSocket refused (bad token or server down)"));
    ws.onclose = (e) => reject(refused || new SwitchyardError("closed", `closed with ${e.code} ${e.reason}`));
    ws.onopen = () => ws.send(JSON.stringify({ type: "join", protocolVersion: 1, sdk: { name: "js", version: "0.1.0" } }));
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type === "joined") resolve({ ws, joined: msg });
      else if (msg.type === "error") {
        refused = new SwitchyardError(msg.code, msg.message, msg.retryAfterMs);
        reject(refused);
      }
    };
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Connect to `url` (ws:// or wss://, the signaling endpoint's origin) with an access token.
 * A refusal that carries a retry hint (the room is being placed or moved, the node drains)
 * is retried up to `options.retries` times (default 3) after the hinted delay.
 */
export async function connect(url, token, options = {}) {
  const retries = options.retries ?? 3;
  let ws, joined;
  for (let attempt = 0; ; attempt++) {
    try {
      ({ ws, joined } = await openAndJoin(url, token));
      break;
    } catch (e) {
      if (e.retryAfterMs == null || attempt >= retries) throw e;
      options.onRetry?.(e, attempt + 1);
      await sleep(e.retryAfterMs);
    }
  }
  const room = new Room(ws, options);
  room.joined = joined;
  for (const p of joined.otherParticipants) room.participants.set(p.sid, p);
  room.pc = new RTCPeerConnection({
    iceServers: joined.iceServers,
    iceTransportPolicy: joined.iceTransportPolicy === "relay" ? "relay" : "all",
  });
  room.pc.onicecandidate = (e) => {
    if (e.candidate) room.send({ type: "trickle", candidate: e.candidate.toJSON() });
  };
  room.pc.ontrack = (e) => {
    // The server names each media line's stream after the publisher's participant sid.
    options.onTrack?.(e.track, e.streams[0]?.id);
  };
  room.channel = room.pc.createDataChannel("reliable");
  room.channel.onmessage = (e) => options.onChannelData?.(e.data);
  // One message at a time: handle() awaits SDP operations, and an offer looked at while
  // the preceding answer is still being applied would be taken for glare and dropped.
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    room.serialize(() => room.handle(msg)).catch((err) => options.onError?.(err));
  };
  ws.onclose = (e) => options.onClose?.(e.code, e.reason);
  room.pinger = setInterval(() => room.send({ type: "ping", timestampMs: Date.now() }), joined.pingIntervalSeconds * 1000);
  if (options.publish) await room.publish(options.publish);
  else await room.negotiate();
  return room;
}

export const Switchyard = { connect };
