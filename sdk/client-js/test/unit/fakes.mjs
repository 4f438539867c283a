// A fake socket, a fake WebRTC host and a virtual clock for the protocol layer's tests.

export const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

export class Clock {
  now = 0;
  timers = [];
  delays = [];
  setTimeout = (f, ms) => {
    const t = { at: this.now + ms, f };
    this.delays.push(ms);
    this.timers.push(t);
    return t;
  };
  clearTimeout = (t) => {
    this.timers = this.timers.filter((x) => x !== t);
  };
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const t = this.timers[0];
      if (!t || t.at > end) break;
      this.timers.shift();
      this.now = t.at;
      t.f();
      await settle();
    }
    this.now = end;
    await settle();
  }
}

export class FakeSocket {
  readyState = 0;
  sent = [];
  closed = null;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  constructor(url) {
    this.url = url;
  }
  send(d) {
    this.sent.push(JSON.parse(d));
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.closed = { code, reason };
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  /** The connection dies without a close frame. */
  drop() {
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: "" });
  }
  types() {
    return this.sent.map((m) => m.type);
  }
}

export class FakeHost {
  calls = [];
  signalingState = "stable";
  offers = 0;
  async prepare(joined, how) {
    this.calls.push(["prepare", how, joined.participant.sid]);
  }
  async createOffer() {
    this.signalingState = "have-local-offer";
    return `offer-sdp-${++this.offers}`;
  }
  async applyAnswer(sdp) {
    this.calls.push(["applyAnswer", sdp]);
    this.signalingState = "stable";
  }
  async answerOffer(sdp) {
    this.calls.push(["answerOffer", sdp]);
    return `answer-to-${sdp}`;
  }
  async rollback() {
    this.calls.push(["rollback"]);
    this.signalingState = "stable";
  }
  hasLocalOffer() {
    return this.signalingState === "have-local-offer";
  }
  async addCandidate(c) {
    this.calls.push(["addCandidate", c.candidate]);
  }
}

export function participant(sid, identity, tracks = []) {
  return {
    sid,
    identity,
    state: "active",
    tracks,
    permission: { canPublish: true, canSubscribe: true, canPublishData: true, hidden: false },
    joinedAtMs: 1,
  };
}

export function track(sid, kind = "audio", muted = false) {
  return { sid, name: kind, kind, source: kind === "audio" ? "microphone" : "camera", muted };
}

export function joined(sid = "PA_me", others = [], token = "rt-1") {
  return {
    type: "joined",
    room: { sid: "RM_1", name: "r", maxParticipants: 0, emptyTimeoutSeconds: 300, numParticipants: 1 + others.length, enabledCodecs: [], createdAtMs: 1 },
    participant: participant(sid, "me"),
    otherParticipants: others,
    iceServers: [],
    iceTransportPolicy: "all",
    protocolVersion: 1,
    serverVersion: "test",
    node: "n1",
    pingIntervalSeconds: 5,
    pingTimeoutSeconds: 15,
    reconnectToken: token,
  };
}
