// src/events.ts
var Emitter = class {
  #listeners = /* @__PURE__ */ new Map();
  on(event, listener) {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, set = /* @__PURE__ */ new Set());
    set.add(listener);
    return () => this.off(event, listener);
  }
  once(event, listener) {
    const off = this.on(event, ((...args) => {
      off();
      listener(...args);
    }));
    return off;
  }
  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }
  /** Call every listener of `event`; a listener that throws does not stop the others. */
  emit(event, ...args) {
    for (const l of [...this.#listeners.get(event) ?? []]) {
      try {
        l(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
};

// src/protocol.ts
var PROTOCOL_VERSION = 1;
var CLIENT_MESSAGE_TYPES = [
  "join",
  "resume",
  "offer",
  "answer",
  "trickle",
  "publish_track",
  "unpublish_track",
  "update_subscription",
  "update_track_settings",
  "mute_track",
  "update_metadata",
  "data",
  "leave",
  "ping",
  "pong"
];
var SERVER_MESSAGE_TYPES = [
  "joined",
  "resumed",
  "offer",
  "answer",
  "trickle",
  "track_published",
  "track_unpublished",
  "participant_joined",
  "participant_left",
  "participant_updated",
  "track_muted",
  "subscription_updated",
  "stream_state",
  "subscribed_layers",
  "room_updated",
  "data",
  "active_speakers",
  "connection_quality",
  "leave",
  "ping",
  "pong",
  "error"
];
var SIMULCAST_RIDS = [
  { rid: "q", quality: "low", scaleDown: 4 },
  { rid: "h", quality: "medium", scaleDown: 2 },
  { rid: "f", quality: "high", scaleDown: 1 }
];

// src/reconnect.ts
var DEFAULT_RECONNECT_POLICY = {
  resumeAttempts: 3,
  rejoinAttempts: 5,
  baseDelayMs: 300,
  maxDelayMs: 8e3,
  jitter: 0.3
};
function backoffDelay(attempt, policy, random, floorMs = 0) {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt));
  const spread = exp * policy.jitter;
  const delay = exp - spread + 2 * spread * random();
  return Math.max(floorMs, Math.round(delay));
}
function nextStep(resumes, rejoins, resumable, policy, random, floorMs = 0) {
  if (resumable && resumes < policy.resumeAttempts) {
    const delayMs = resumes === 0 ? floorMs : backoffDelay(resumes - 1, policy, random, floorMs);
    return { kind: "resume", attempt: resumes, delayMs };
  }
  if (rejoins < policy.rejoinAttempts) {
    return { kind: "rejoin", attempt: rejoins, delayMs: backoffDelay(rejoins, policy, random, floorMs) };
  }
  return { kind: "give_up" };
}

// src/sdp.ts
function msidByMid(sdp) {
  const out = /* @__PURE__ */ new Map();
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const mid = /^a=mid:(\S+)/m.exec(section)?.[1];
    const msid = /^a=msid:(\S+) (\S+)/m.exec(section);
    if (mid && msid?.[1] && msid[2]) out.set(mid, { stream: msid[1], track: msid[2] });
  }
  return out;
}

// src/stats.ts
function summarizeStats(entries, previous) {
  const raw = /* @__PURE__ */ new Map();
  for (const e of entries) raw.set(e.id, e);
  const codec = (id) => id ? raw.get(id)?.mimeType : void 0;
  const rate = (e, field) => {
    const p = previous?.get(e.id);
    if (!p || e.timestamp <= p.timestamp) return 0;
    return Math.max(0, Math.round((e[field] - p[field]) * 8 * 1e3 / (e.timestamp - p.timestamp)));
  };
  const stats = { outbound: [], inbound: [], timestampMs: 0 };
  for (const e of raw.values()) {
    stats.timestampMs = Math.max(stats.timestampMs, e.timestamp);
    if (e.type === "candidate-pair" && (e.nominated || e.selected) && e.state === "succeeded") {
      if (typeof e.currentRoundTripTime === "number") stats.rttMs = Math.round(e.currentRoundTripTime * 1e3);
      if (typeof e.availableOutgoingBitrate === "number") stats.availableOutgoingBitrateBps = e.availableOutgoingBitrate;
    } else if (e.type === "outbound-rtp") {
      stats.outbound.push({
        kind: e.kind,
        trackId: e.trackIdentifier,
        rid: e.rid,
        codec: codec(e.codecId),
        bitrateBps: rate(e, "bytesSent"),
        frameWidth: e.frameWidth,
        frameHeight: e.frameHeight,
        framesPerSecond: e.framesPerSecond,
        qualityLimitationReason: e.qualityLimitationReason,
        active: e.active
      });
    } else if (e.type === "inbound-rtp") {
      const p = previous?.get(e.id);
      const lost = (e.packetsLost ?? 0) - (p?.packetsLost ?? 0);
      const got = (e.packetsReceived ?? 0) - (p?.packetsReceived ?? 0);
      stats.inbound.push({
        kind: e.kind,
        trackId: e.trackIdentifier,
        mid: e.mid,
        codec: codec(e.codecId),
        bitrateBps: rate(e, "bytesReceived"),
        packetsReceived: e.packetsReceived ?? 0,
        packetsLost: e.packetsLost ?? 0,
        lossFraction: lost + got > 0 ? Math.max(0, lost) / (Math.max(0, lost) + got) : 0,
        jitterMs: typeof e.jitter === "number" ? Math.round(e.jitter * 1e3) : void 0,
        frameWidth: e.frameWidth,
        frameHeight: e.frameHeight,
        framesDecoded: e.framesDecoded,
        framesPerSecond: e.framesPerSecond,
        audioLevel: e.audioLevel,
        totalAudioEnergy: e.totalAudioEnergy
      });
    }
  }
  return { stats, raw };
}

// src/session.ts
var SDK_VERSION = "0.1.0";
var SwitchyardError = class extends Error {
  constructor(code, message, retryAfterMs) {
    super(`${code}: ${message}`);
    this.code = code;
    this.retryAfterMs = retryAfterMs;
    this.name = "SwitchyardError";
  }
  code;
  retryAfterMs;
};
var FINAL = /* @__PURE__ */ new Set(["unauthorized", "permission_denied", "room_not_found", "room_closed", "room_full"]);
function base64Encode(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 32768) s += String.fromCharCode(...bytes.subarray(i, i + 32768));
  return btoa(s);
}
function base64Decode(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
function signalingUrl(url, token) {
  let u = url.trim().replace(/\/+$/, "");
  u = u.replace(/^http(s?):\/\//, "ws$1://");
  if (!/^wss?:\/\//.test(u)) throw new TypeError(`signaling URL must start with ws://, wss://, http:// or https://: ${url}`);
  if (!u.endsWith("/rtc")) u += "/rtc";
  return `${u}?access_token=${encodeURIComponent(token)}`;
}
function defaultSignalingUrl(location) {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
}
var Session = class extends Emitter {
  state = "disconnected";
  room;
  local;
  /** Everyone else, by participant sid. */
  participants = /* @__PURE__ */ new Map();
  /** Round-trip time of the signaling socket, from ping/pong. */
  rttMs;
  joined;
  #host;
  #policy;
  #opts;
  #socketFactory;
  #setTimeout;
  #clearTimeout;
  #random;
  #url = "";
  #token = "";
  #socket;
  #queue = Promise.resolve();
  #offerId = 0;
  #offerInFlight = false;
  #wantOffer = false;
  #lastOfferSdp;
  #pinger;
  #watchdog;
  #leaveHint;
  #closed = false;
  #epoch = 0;
  constructor(host, opts = {}) {
    super();
    this.#host = host;
    this.#opts = opts;
    this.#policy = { ...DEFAULT_RECONNECT_POLICY, ...opts.reconnect };
    this.#socketFactory = opts.socketFactory ?? ((url) => new WebSocket(url));
    this.#setTimeout = opts.setTimeout ?? ((f, ms) => setTimeout(f, ms));
    this.#clearTimeout = opts.clearTimeout ?? ((t) => clearTimeout(t));
    this.#random = opts.random ?? Math.random;
  }
  /** Join the room the token names. A refusal with a retry hint is retried after the hint. */
  async connect(url, token) {
    this.#url = url;
    this.#token = token;
    signalingUrl(url, token);
    this.#setState("connecting");
    const retries = this.#opts.joinRetries ?? 3;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#open({ kind: "join" }, "join");
      } catch (e) {
        const err = e instanceof SwitchyardError ? e : new SwitchyardError("connect_failed", String(e));
        if (this.#closed || err.retryAfterMs == null || attempt >= retries) {
          this.#setState("disconnected");
          throw err;
        }
        await this.#sleep(err.retryAfterMs);
      }
    }
  }
  /** Send a message now (dropped when the socket is not open: the snapshot after a
   * reconnect replaces what was lost). */
  send(msg) {
    if (this.#socket && this.#socket.readyState === 1) this.#socket.send(JSON.stringify(msg));
  }
  /** Ask for an offer of ours: made as soon as none is in flight. */
  negotiate() {
    this.#wantOffer = true;
    this.#maybeOffer();
  }
  publishData(payload, opts = {}) {
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    const msg = { type: "data", kind: opts.reliable === false ? "lossy" : "reliable", payload: base64Encode(bytes) };
    if (opts.topic !== void 0) msg.topic = opts.topic;
    if (opts.to?.length) msg.destinationIdentities = opts.to;
    this.send(msg);
  }
  /** Leave the room (sends `leave`, closes the socket). */
  disconnect(reason = "client_request") {
    if (this.#closed) return;
    this.send({ type: "leave" });
    this.#end(reason);
  }
  /** Run `task` after every message and offer queued before it. */
  serialize(task) {
    const run = this.#queue.then(task);
    this.#queue = run.then(
      () => void 0,
      () => void 0
    );
    return run;
  }
  #setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.emit("connectionStateChanged", s);
  }
  #sleep(ms) {
    return new Promise((r) => this.#setTimeout(r, ms));
  }
  /** Open a socket and run the handshake: the first message decides. */
  #open(h, how) {
    const socket = this.#socketFactory(signalingUrl(this.#url, this.#token));
    const epoch = ++this.#epoch;
    return new Promise((resolve, reject) => {
      let refused;
      socket.onopen = () => {
        const msg = h.kind === "join" ? {
          type: "join",
          protocolVersion: PROTOCOL_VERSION,
          autoSubscribe: this.#opts.autoSubscribe ?? true,
          sdk: { name: "js", version: SDK_VERSION }
        } : { type: "resume", participantSid: h.participantSid, reconnectToken: h.reconnectToken };
        socket.send(JSON.stringify(msg));
      };
      socket.onerror = () => {
      };
      socket.onclose = (e) => reject(refused ?? new SwitchyardError("connect_failed", `socket closed with ${e.code} ${e.reason} before joining`));
      socket.onmessage = (e) => {
        let msg;
        try {
          msg = JSON.parse(String(e.data));
        } catch {
          return;
        }
        if (msg.type === "joined" || msg.type === "resumed") {
          this.#bind(socket, epoch);
          resolve(this.#established(msg, how).then(() => msg));
        } else if (msg.type === "error") {
          refused = new SwitchyardError(msg.code, msg.message, msg.retryAfterMs);
          socket.close();
          reject(refused);
        }
      };
    });
  }
  /** The handshake is done: messages go through the queue, a lost socket reconnects. */
  #bind(socket, epoch) {
    this.#socket = socket;
    socket.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(String(e.data));
      } catch {
        return;
      }
      this.#heard();
      this.serialize(async () => {
        await this.#handle(msg);
        this.emit("message", msg);
      }).catch(
        (err) => this.emit("error", err instanceof SwitchyardError ? err : new SwitchyardError("internal", String(err)))
      );
    };
    socket.onclose = () => {
      if (epoch === this.#epoch) this.serialize(() => this.#lost());
    };
  }
  async #established(joined, how) {
    await this.serialize(async () => {
      const before = new Map(this.participants);
      this.joined = joined;
      this.room = joined.room;
      this.local = joined.participant;
      this.participants.clear();
      for (const p of joined.otherParticipants) this.participants.set(p.sid, p);
      if (how === "rejoin") {
        this.#offerInFlight = false;
        this.#lastOfferSdp = void 0;
      }
      await this.#host.prepare(joined, how);
      this.#startPing(joined);
      this.#setState("connected");
      this.#diff(before);
      if (how === "resume" && this.#offerInFlight && this.#lastOfferSdp && this.#host.hasLocalOffer()) {
        this.send({ type: "offer", sdp: this.#lastOfferSdp, id: this.#offerId });
      }
    });
    if (how !== "join") this.emit("reconnected", how);
    this.#maybeOffer();
  }
  /** Events for what changed between the view before a snapshot and the snapshot. */
  #diff(before) {
    for (const [sid, old] of before) {
      const now = this.participants.get(sid);
      if (!now) {
        for (const t of old.tracks) this.emit("trackUnpublished", t, old);
        this.emit("participantDisconnected", old, "timeout");
      } else this.#diffTracks(old, now);
    }
    for (const [sid, p] of this.participants) {
      if (before.has(sid)) continue;
      this.emit("participantConnected", p);
      for (const t of p.tracks) this.emit("trackPublished", t, p);
    }
  }
  #diffTracks(old, now) {
    const was = new Map(old.tracks.map((t) => [t.sid, t]));
    for (const t of now.tracks) {
      const o = was.get(t.sid);
      if (!o) this.emit("trackPublished", t, now);
      else if (o.muted !== t.muted) this.emit(t.muted ? "trackMuted" : "trackUnmuted", t, now);
      was.delete(t.sid);
    }
    for (const t of was.values()) this.emit("trackUnpublished", t, now);
  }
  #startPing(joined) {
    if (this.#pinger !== void 0) this.#clearTimeout(this.#pinger);
    const every = Math.max(1, joined.pingIntervalSeconds) * 1e3;
    const tick = () => {
      this.send({ type: "ping", timestampMs: Date.now(), ...this.rttMs !== void 0 ? { rttMs: this.rttMs } : {} });
      this.#pinger = this.#setTimeout(tick, every);
    };
    this.#pinger = this.#setTimeout(tick, every);
    this.#heard();
  }
  /** A frame arrived: the server is alive. Silence for the ping timeout means the socket is dead. */
  #heard() {
    if (this.#watchdog !== void 0) this.#clearTimeout(this.#watchdog);
    const timeout = (this.joined?.pingTimeoutSeconds ?? 15) * 1e3;
    const socket = this.#socket;
    this.#watchdog = this.#setTimeout(() => {
      if (socket === this.#socket && !this.#closed) {
        this.#epoch++;
        socket?.close(4408, "no frame within the ping timeout");
        this.serialize(() => this.#lost());
      }
    }, timeout);
  }
  #maybeOffer() {
    if (!this.#wantOffer || this.#offerInFlight || this.state !== "connected") return;
    this.serialize(async () => {
      if (!this.#wantOffer || this.#offerInFlight || this.state !== "connected") return;
      this.#wantOffer = false;
      const sdp = await this.#host.createOffer();
      this.#offerInFlight = true;
      this.#lastOfferSdp = sdp;
      this.send({ type: "offer", sdp, id: ++this.#offerId });
    }).catch((e) => this.emit("error", new SwitchyardError("negotiation_failed", String(e))));
  }
  #participant(sid) {
    return this.participants.get(sid) ?? (this.local?.sid === sid ? this.local : void 0);
  }
  async #handle(msg) {
    switch (msg.type) {
      case "answer":
        if (msg.id === this.#offerId && this.#offerInFlight) {
          this.#offerInFlight = false;
          if (this.#host.hasLocalOffer()) await this.#host.applyAnswer(msg.sdp);
          this.#maybeOffer();
        }
        break;
      case "offer": {
        if (this.#offerInFlight || this.#host.hasLocalOffer()) break;
        const sdp = await this.#host.answerOffer(msg.sdp);
        this.send({ type: "answer", sdp, id: msg.id });
        break;
      }
      case "trickle":
        if (msg.candidate) await this.#host.addCandidate(msg.candidate).catch(() => {
        });
        break;
      case "track_published":
        if (this.local) this.local = { ...this.local, tracks: [...this.local.tracks.filter((t) => t.sid !== msg.track.sid), msg.track] };
        this.emit("localTrackPublished", msg.cid, msg.track);
        break;
      case "track_unpublished":
        if (this.local) this.local = { ...this.local, tracks: this.local.tracks.filter((t) => t.sid !== msg.trackSid) };
        this.emit("localTrackUnpublished", msg.trackSid);
        break;
      case "participant_joined": {
        const old = this.participants.get(msg.participant.sid);
        this.participants.set(msg.participant.sid, msg.participant);
        if (old) this.#diffTracks(old, msg.participant);
        else {
          this.emit("participantConnected", msg.participant);
          for (const t of msg.participant.tracks) this.emit("trackPublished", t, msg.participant);
        }
        break;
      }
      case "participant_updated": {
        if (msg.participant.sid === this.local?.sid) {
          this.local = msg.participant;
          break;
        }
        const old = this.participants.get(msg.participant.sid);
        this.participants.set(msg.participant.sid, msg.participant);
        if (!old) {
          this.emit("participantConnected", msg.participant);
          for (const t of msg.participant.tracks) this.emit("trackPublished", t, msg.participant);
        } else this.#diffTracks(old, msg.participant);
        this.emit("participantUpdated", msg.participant);
        break;
      }
      case "participant_left": {
        const p = this.participants.get(msg.participantSid);
        if (!p) break;
        this.participants.delete(msg.participantSid);
        for (const t of p.tracks) this.emit("trackUnpublished", t, p);
        this.emit("participantDisconnected", p, msg.reason);
        break;
      }
      case "track_muted": {
        const p = this.#participant(msg.participantSid);
        const t = p?.tracks.find((t2) => t2.sid === msg.trackSid);
        if (!p || !t) break;
        t.muted = msg.muted;
        this.emit(msg.muted ? "trackMuted" : "trackUnmuted", t, p);
        break;
      }
      case "subscription_updated":
        this.emit("subscriptionUpdated", msg);
        break;
      case "stream_state":
        this.emit("streamStateChanged", msg);
        break;
      case "subscribed_layers":
        this.emit("subscribedLayers", msg);
        break;
      case "room_updated":
        this.room = msg.room;
        this.emit("roomUpdated", msg.room);
        break;
      case "data": {
        const packet = { payload: base64Decode(msg.payload), kind: msg.kind, identity: msg.identity };
        const from = this.participants.get(msg.participantSid);
        if (from) packet.participant = from;
        if (msg.topic !== void 0) packet.topic = msg.topic;
        this.emit("dataReceived", packet);
        break;
      }
      case "active_speakers": {
        const speakers = msg.speakers.flatMap((s) => {
          const p = this.#participant(s.participantSid);
          return p ? [{ participant: p, level: s.level }] : [];
        });
        this.emit("activeSpeakersChanged", speakers);
        break;
      }
      case "connection_quality":
        for (const u of msg.updates) {
          const p = this.#participant(u.participantSid);
          if (p) this.emit("connectionQualityChanged", p, u.quality, u.score);
        }
        break;
      case "ping":
        this.send({ type: "pong", timestampMs: msg.timestampMs });
        break;
      case "pong":
        this.rttMs = Math.max(0, Date.now() - msg.timestampMs);
        break;
      case "leave":
        this.#leaveHint = msg;
        if (!msg.canReconnect) this.#end(msg.reason);
        break;
      case "error": {
        const e = new SwitchyardError(msg.code, msg.message, msg.retryAfterMs);
        if (msg.requestType === "offer" && this.#offerInFlight) {
          this.#offerInFlight = false;
          await this.#host.rollback();
        }
        this.emit("error", e);
        break;
      }
      case "joined":
      case "resumed":
        break;
    }
  }
  /** The socket is gone without our leave: resume, then rejoin, or give up. */
  async #lost() {
    if (this.#closed || this.state === "reconnecting") return;
    this.#socket = void 0;
    const hint = this.#leaveHint;
    this.#leaveHint = void 0;
    if (hint && !hint.canReconnect) return this.#end(hint.reason);
    this.#setState("reconnecting");
    this.emit("reconnecting");
    let resumable = hint?.reconnect !== "rejoin" && this.local !== void 0 && this.joined !== void 0;
    const floor = hint?.retryAfterMs ?? 0;
    let resumes = 0;
    let rejoins = 0;
    void (async () => {
      for (; ; ) {
        const step = nextStep(resumes, rejoins, resumable, this.#policy, this.#random, floor);
        if (step.kind === "give_up") return this.#end(hint?.reason ?? "signal_lost");
        await this.#sleep(step.delayMs);
        if (this.#closed) return;
        try {
          if (step.kind === "resume") {
            resumes++;
            const h = { kind: "resume", participantSid: this.local.sid, reconnectToken: this.joined.reconnectToken };
            await this.#open(h, "resume");
          } else {
            rejoins++;
            await this.#open({ kind: "join" }, "rejoin");
          }
          return;
        } catch (e) {
          const code = e instanceof SwitchyardError ? e.code : "connect_failed";
          if (code === "resume_failed") resumable = false;
          else if (FINAL.has(code)) return this.#end(code);
        }
      }
    })();
  }
  #end(reason) {
    if (this.#closed) return;
    this.#closed = true;
    this.#epoch++;
    if (this.#pinger !== void 0) this.#clearTimeout(this.#pinger);
    if (this.#watchdog !== void 0) this.#clearTimeout(this.#watchdog);
    this.#socket?.close(1e3, "leave");
    this.#socket = void 0;
    this.#setState("disconnected");
    this.emit("disconnected", reason);
  }
};

// src/participant.ts
var TrackPublication = class {
  info;
  constructor(info) {
    this.info = info;
  }
  get sid() {
    return this.info.sid;
  }
  get name() {
    return this.info.name;
  }
  get kind() {
    return this.info.kind;
  }
  get source() {
    return this.info.source;
  }
  get isMuted() {
    return this.info.muted;
  }
};
var LocalTrackPublication = class extends TrackPublication {
  mediaTrack;
  sender;
  #link;
  constructor(info, track, link) {
    super(info);
    this.mediaTrack = track;
    this.#link = link;
  }
  get track() {
    return this.mediaTrack;
  }
  /** Stop sending media (the track keeps running for a quick unmute) and tell the room. */
  mute() {
    this.#setMuted(true);
  }
  unmute() {
    this.#setMuted(false);
  }
  #setMuted(muted) {
    if (this.info.muted === muted) return;
    this.mediaTrack.enabled = !muted;
    this.info = { ...this.info, muted };
    if (this.info.sid) this.#link.send({ type: "mute_track", trackSid: this.info.sid, muted });
    this.#link.localMuteChanged(this);
  }
};
var RemoteTrackPublication = class extends TrackPublication {
  /** The received track, while subscribed. */
  mediaTrack;
  /** Whether the server forwards this track to us. */
  subscribed = false;
  /** The server paused its video (`stream_state`), and why. */
  streamState = "active";
  pauseReason;
  /** The layer the server last said it sends (absent until it says). */
  quality;
  participantSid;
  #link;
  #elements = /* @__PURE__ */ new Set();
  #visible = /* @__PURE__ */ new Map();
  #resize;
  #intersect;
  #timer;
  #lastSettings = "";
  #onVisibility = () => this.#schedule();
  constructor(info, participantSid, link) {
    super(info);
    this.participantSid = participantSid;
    this.#link = link;
  }
  get track() {
    return this.mediaTrack;
  }
  /** Subscribe or unsubscribe (with `autoSubscribe: false`, nothing is received until this). */
  setSubscribed(subscribed) {
    this.#link.send({ type: "update_subscription", trackSids: [this.sid], subscribe: subscribed });
  }
  /** The best layer wanted (adaptive stream picks by size otherwise). */
  setVideoQuality(quality) {
    this.#link.send({ type: "update_track_settings", trackSids: [this.sid], quality });
  }
  /** Show the track in `element` (a new `<video>` or `<audio>` when absent). With adaptive
   * stream, the element's size and visibility choose the layer the server sends. */
  attach(element) {
    const el = element ?? document.createElement(this.kind === "video" ? "video" : "audio");
    el.autoplay = true;
    if (el instanceof HTMLVideoElement) el.playsInline = true;
    if (this.mediaTrack) el.srcObject = new MediaStream([this.mediaTrack]);
    if (!this.#elements.has(el)) {
      this.#elements.add(el);
      if (this.kind === "video" && this.#link.adaptiveStream) this.#observe(el);
    }
    return el;
  }
  /** Stop showing the track in `element` (every element when absent); returns them. */
  detach(element) {
    const els = element ? [element] : [...this.#elements];
    for (const el of els) {
      el.srcObject = null;
      this.#elements.delete(el);
      this.#visible.delete(el);
      this.#resize?.unobserve(el);
      this.#intersect?.unobserve(el);
    }
    if (this.#elements.size === 0) document.removeEventListener("visibilitychange", this.#onVisibility);
    this.#schedule();
    return els;
  }
  get attachedElements() {
    return [...this.#elements];
  }
  /** A new received track (subscribe, or a reconnect): every attached element gets it. */
  setMediaTrack(track) {
    this.mediaTrack = track;
    this.subscribed = track !== void 0;
    for (const el of this.#elements) el.srcObject = track ? new MediaStream([track]) : null;
    this.#lastSettings = "";
    this.#schedule();
  }
  #observe(el) {
    this.#resize ??= new ResizeObserver(() => this.#schedule());
    this.#intersect ??= new IntersectionObserver((entries) => {
      for (const e of entries) this.#visible.set(e.target, e.isIntersecting);
      this.#schedule();
    });
    this.#resize.observe(el);
    this.#intersect.observe(el);
    if (this.#elements.size === 1) document.addEventListener("visibilitychange", this.#onVisibility);
    this.#schedule();
  }
  #schedule() {
    if (this.kind !== "video" || !this.#link.adaptiveStream || !this.info.sid) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#report(), 100);
  }
  /** Tell the server the largest size this track is shown at, or that it is not shown. */
  #report() {
    if (!this.subscribed) return;
    const shown = [...this.#elements].filter(
      (el) => this.#visible.get(el) !== false && document.visibilityState !== "hidden" && el.isConnected
    );
    const dpr = globalThis.devicePixelRatio || 1;
    let width = 0;
    let height = 0;
    for (const el of shown) {
      width = Math.max(width, Math.round(el.clientWidth * dpr));
      height = Math.max(height, Math.round(el.clientHeight * dpr));
    }
    if (this.#elements.size === 0 && this.#lastSettings === "") return;
    const msg = shown.length === 0 || width === 0 || height === 0 ? { type: "update_track_settings", trackSids: [this.sid], disabled: true } : { type: "update_track_settings", trackSids: [this.sid], disabled: false, width, height };
    const key = JSON.stringify(msg);
    if (key === this.#lastSettings) return;
    this.#lastSettings = key;
    this.#link.send(msg);
  }
};
var Participant = class {
  info;
  audioLevel = 0;
  isSpeaking = false;
  connectionQuality = "unknown";
  constructor(info) {
    this.info = info;
  }
  get sid() {
    return this.info.sid;
  }
  get identity() {
    return this.info.identity;
  }
  get name() {
    return this.info.name ?? this.info.identity;
  }
  get metadata() {
    return this.info.metadata;
  }
  /** The publication of `source`, if any. */
  getTrackPublication(source) {
    return this.trackPublications.find((p) => p.source === source);
  }
  get isCameraEnabled() {
    const p = this.getTrackPublication("camera");
    return !!p && !p.isMuted;
  }
  get isMicrophoneEnabled() {
    const p = this.getTrackPublication("microphone");
    return !!p && !p.isMuted;
  }
  get isScreenShareEnabled() {
    return !!this.getTrackPublication("screen_share");
  }
};
var RemoteParticipant = class extends Participant {
  tracks = /* @__PURE__ */ new Map();
  get isLocal() {
    return false;
  }
  get trackPublications() {
    return [...this.tracks.values()];
  }
};

// src/room.ts
var CAMERA_BITRATES = { q: 15e4, h: 5e5, f: 17e5 };
function simulcastLayers(width, height) {
  return SIMULCAST_RIDS.map((l) => ({
    rid: l.rid,
    quality: l.quality,
    width: Math.round(width / l.scaleDown),
    height: Math.round(height / l.scaleDown),
    maxBitrateBps: CAMERA_BITRATES[l.rid] ?? 1e6
  }));
}
function layerForHeight(layers, height) {
  if (!layers?.length || !height) return void 0;
  return layers.reduce((best, l) => Math.abs(l.height - height) < Math.abs(best.height - height) ? l : best).quality;
}
async function createLocalTracks(c) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: c.audio ?? false, video: c.video ?? false });
  return stream.getTracks();
}
async function getLocalDevices(kind) {
  const all = await navigator.mediaDevices.enumerateDevices();
  return kind ? all.filter((d) => d.kind === kind) : all;
}
var LocalParticipant = class extends Participant {
  tracks = /* @__PURE__ */ new Map();
  // by cid until published, then also by sid
  #room;
  constructor(info, room) {
    super(info);
    this.#room = room;
  }
  get isLocal() {
    return true;
  }
  get trackPublications() {
    return [...new Set(this.tracks.values())];
  }
  getTrackPublication(source) {
    return this.trackPublications.find((p) => p.source === source);
  }
  /** Publish `track`; resolves when the server has accepted it (its `sid` is known). */
  publishTrack(track, opts = {}) {
    return this.#room._publish(track, opts);
  }
  /** Stop publishing (and stop the track unless `stop` is false). */
  unpublishTrack(trackOrPub, stop = true) {
    this.#room._unpublish(trackOrPub, stop);
  }
  setCameraEnabled(enabled, constraints) {
    return this.#toggle("camera", enabled, constraints);
  }
  setMicrophoneEnabled(enabled, constraints) {
    return this.#toggle("microphone", enabled, constraints);
  }
  /** Share a screen (the browser asks which); disabling unpublishes and stops it. */
  async setScreenShareEnabled(enabled) {
    const pub = this.getTrackPublication("screen_share");
    if (!enabled) {
      if (pub) this.unpublishTrack(pub);
      return void 0;
    }
    if (pub) return pub;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    if (!track) throw new SwitchyardError("internal", "getDisplayMedia returned no video track");
    track.addEventListener("ended", () => {
      const p = this.trackPublications.find((p2) => p2.mediaTrack === track);
      if (p) this.unpublishTrack(p);
    });
    return this.publishTrack(track, { source: "screen_share", name: "screen", simulcast: false });
  }
  /** Send data to everyone, or to the identities in `to`. `reliable: false` marks it lossy
   * (latest wins). Travels over the signaling socket; see docs/protocol.md. */
  publishData(data, opts = {}) {
    this.#room.session.publishData(data, opts);
  }
  async #toggle(source, enabled, constraints) {
    const pub = this.getTrackPublication(source);
    if (pub) {
      if (enabled) pub.unmute();
      else pub.mute();
      return pub;
    }
    if (!enabled) return void 0;
    const o = this.#room.options;
    const c = source === "camera" ? { width: 1280, height: 720, ...o.videoCaptureDefaults, ...constraints } : { ...o.audioCaptureDefaults, ...constraints };
    const [track] = await createLocalTracks(source === "camera" ? { video: c } : { audio: c });
    if (!track) throw new SwitchyardError("internal", `no ${source} track`);
    return this.publishTrack(track, { source });
  }
};
var Room = class _Room extends Emitter {
  options;
  session;
  localParticipant;
  remoteParticipants = /* @__PURE__ */ new Map();
  activeSpeakers = [];
  pc;
  /** Received tracks whose publication we have not heard of yet, by track sid. */
  #early = /* @__PURE__ */ new Map();
  #prevStats;
  #waiting = /* @__PURE__ */ new Map();
  #link;
  constructor(options = {}) {
    super();
    this.options = options;
    this.session = new Session(this, options);
    this.#link = {
      send: (m) => this.session.send(m),
      adaptiveStream: options.adaptiveStream ?? true,
      localMuteChanged: (pub) => {
        if (this.localParticipant) this.emit(pub.isMuted ? "trackMuted" : "trackUnmuted", pub, this.localParticipant);
      }
    };
    this.#wire();
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.emit("mediaDevicesChanged"));
  }
  /** Connect to `url` (the signaling URL: ws://, wss://, or http(s):// of it) with an access token. */
  static async connect(url, token, options = {}) {
    const room = new _Room(options);
    await room.connect(url, token);
    return room;
  }
  async connect(url, token) {
    await this.session.connect(url, token);
  }
  get name() {
    return this.session.room?.name;
  }
  get state() {
    return this.session.state;
  }
  /** Every participant, the local one first. */
  get participants() {
    return [...this.localParticipant ? [this.localParticipant] : [], ...this.remoteParticipants.values()];
  }
  disconnect() {
    this.session.disconnect();
  }
  /** Switch the camera or microphone to `deviceId` without renegotiating. */
  async switchActiveDevice(kind, deviceId) {
    const source = kind === "videoinput" ? "camera" : "microphone";
    if (kind === "videoinput") this.options.videoCaptureDefaults = { ...this.options.videoCaptureDefaults, deviceId: { exact: deviceId } };
    else this.options.audioCaptureDefaults = { ...this.options.audioCaptureDefaults, deviceId: { exact: deviceId } };
    const pub = this.localParticipant?.getTrackPublication(source);
    if (!pub?.sender) return;
    const c = kind === "videoinput" ? this.options.videoCaptureDefaults : this.options.audioCaptureDefaults;
    const [track] = await createLocalTracks(kind === "videoinput" ? { video: c ?? true } : { audio: c ?? true });
    if (!track) return;
    track.enabled = !pub.isMuted;
    await pub.sender.replaceTrack(track);
    pub.mediaTrack.stop();
    pub.mediaTrack = track;
  }
  /** Bitrate, loss, RTT, codec and layer of every stream, from getStats. */
  async getStats() {
    if (!this.pc) return { outbound: [], inbound: [], timestampMs: Date.now() };
    const report = await this.pc.getStats();
    const { stats, raw } = summarizeStats(report.values(), this.#prevStats);
    this.#prevStats = raw;
    const msid = msidByMid(this.pc.remoteDescription?.sdp ?? "");
    const inbound = stats.inbound.map((s) => {
      const m = s.mid ? msid.get(s.mid) : void 0;
      const p = m ? this.remoteParticipants.get(m.stream) : void 0;
      const pub = m ? p?.tracks.get(m.track) : void 0;
      const quality = s.kind === "video" ? layerForHeight(pub?.info.layers, s.frameHeight) : void 0;
      return { ...s, trackSid: m?.track, participantIdentity: p?.identity, quality };
    });
    const outbound = stats.outbound.map((s) => {
      const pub = this.localParticipant?.trackPublications.find((p) => p.mediaTrack.id === s.trackId || p.sender?.track?.id === s.trackId);
      const quality = s.rid ? SIMULCAST_RIDS.find((l) => l.rid === s.rid)?.quality : void 0;
      return { ...s, trackSid: pub?.sid, participantIdentity: this.localParticipant?.identity, quality };
    });
    return { ...stats, inbound, outbound };
  }
  // ---- SessionHost: called by the protocol layer in message order ----
  async prepare(joined, how) {
    if (!this.localParticipant) this.localParticipant = new LocalParticipant(joined.participant, this);
    else this.localParticipant.info = { ...joined.participant };
    if (how === "resume") {
      const ice = this.pc?.iceConnectionState;
      if (ice === "failed" || ice === "disconnected") {
        this.pc?.restartIce();
        this.session.negotiate();
      }
      return;
    }
    if (how === "rejoin") {
      this.pc?.close();
      for (const p of this.remoteParticipants.values())
        for (const pub of p.tracks.values()) this.#setReceived(pub, p, void 0);
    }
    this.pc = this.#newPeerConnection(joined);
    if (how === "rejoin") {
      const pubs = this.localParticipant.trackPublications;
      this.localParticipant.tracks.clear();
      for (const pub of pubs) void this._publish(pub.mediaTrack, { name: pub.name, source: pub.source }, pub);
    }
  }
  async createOffer() {
    const pc = this.pc;
    await pc.setLocalDescription(await pc.createOffer());
    return pc.localDescription.sdp;
  }
  async applyAnswer(sdp) {
    await this.pc.setRemoteDescription({ type: "answer", sdp });
  }
  async answerOffer(sdp) {
    const pc = this.pc;
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this.#sweepInactive();
    return pc.localDescription.sdp;
  }
  async rollback() {
    if (this.pc?.signalingState === "have-local-offer") await this.pc.setLocalDescription({ type: "rollback" });
  }
  hasLocalOffer() {
    return this.pc?.signalingState === "have-local-offer";
  }
  async addCandidate(c) {
    await this.pc?.addIceCandidate(c);
  }
  // ---- internals ----
  #newPeerConnection(joined) {
    const pc = new RTCPeerConnection({
      ...this.options.rtcConfig,
      iceServers: joined.iceServers,
      iceTransportPolicy: joined.iceTransportPolicy === "relay" ? "relay" : "all"
    });
    pc.onicecandidate = (e) => {
      if (e.candidate) this.session.send({ type: "trickle", candidate: e.candidate.toJSON() });
    };
    pc.ontrack = (e) => {
      const mid = e.transceiver.mid;
      const m = mid ? msidByMid(pc.remoteDescription?.sdp ?? "").get(mid) : void 0;
      const trackSid = m?.track ?? e.track.id;
      const participantSid = m?.stream ?? e.streams[0]?.id ?? "";
      const p = this.remoteParticipants.get(participantSid);
      const pub = p?.tracks.get(trackSid);
      if (p && pub) this.#setReceived(pub, p, e.track);
      else this.#early.set(trackSid, e.track);
    };
    return pc;
  }
  /** Lines the server stopped sending on (unsubscribed, unpublished) end their subscription. */
  #sweepInactive() {
    const msid = msidByMid(this.pc?.remoteDescription?.sdp ?? "");
    const live = /* @__PURE__ */ new Set();
    for (const t of this.pc?.getTransceivers() ?? []) {
      const m = t.mid ? msid.get(t.mid) : void 0;
      if (m && (t.currentDirection === "recvonly" || t.currentDirection === "sendrecv")) live.add(m.track);
    }
    for (const p of this.remoteParticipants.values())
      for (const pub of p.tracks.values()) if (pub.subscribed && !live.has(pub.sid)) this.#setReceived(pub, p, void 0);
  }
  #setReceived(pub, p, track) {
    const old = pub.mediaTrack;
    if (old === track) return;
    pub.setMediaTrack(track);
    if (old) this.emit("trackUnsubscribed", old, pub, p);
    if (track) this.emit("trackSubscribed", track, pub, p);
  }
  /** @internal */
  async _publish(track, opts, reuse) {
    const local = this.localParticipant;
    const pc = this.pc;
    if (!local || !pc) throw new SwitchyardError("not_joined", "connect before publishing");
    const kind = track.kind === "video" ? "video" : "audio";
    const source = opts.source ?? (kind === "audio" ? "microphone" : "camera");
    const settings = track.getSettings();
    const codec = opts.videoCodec ?? this.options.videoCodec;
    const layered = codec !== "vp9" && codec !== "av1";
    const simulcast = kind === "video" && (opts.simulcast ?? (source === "camera" && layered && (this.options.simulcast ?? true)));
    const layers = simulcast && settings.width && settings.height ? simulcastLayers(settings.width, settings.height) : [];
    const info = { sid: "", name: opts.name ?? (track.label || source), kind, source, muted: !track.enabled };
    if (settings.width) info.width = settings.width;
    if (settings.height) info.height = settings.height;
    if (layers.length) info.layers = layers;
    const pub = reuse ?? new LocalTrackPublication(info, track, this.#link);
    pub.info = { ...info, muted: reuse?.isMuted ?? info.muted };
    local.tracks.set(track.id, pub);
    const req = { type: "publish_track", cid: track.id, name: info.name, kind, source, muted: pub.isMuted };
    if (info.width) req.width = info.width;
    if (info.height) req.height = info.height;
    if (layers.length) req.layers = layers;
    const published = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(track.id);
        reject(new SwitchyardError("internal", `no track_published for ${track.id} within 15 s`));
      }, 15e3);
      this.#waiting.set(track.id, (t) => {
        clearTimeout(timer);
        resolve(t);
      });
    });
    this.session.send(req);
    const init = { direction: "sendonly", streams: [new MediaStream([track])] };
    if (layers.length)
      init.sendEncodings = layers.map((l) => ({
        rid: l.rid,
        scaleResolutionDownBy: (info.height ?? l.height) / l.height,
        maxBitrate: l.maxBitrateBps
      }));
    const transceiver = pc.addTransceiver(track, init);
    pub.sender = transceiver.sender;
    if (kind === "video") this.#preferCodec(transceiver, codec);
    this.session.negotiate();
    await published;
    return pub;
  }
  /** Put the preferred codec first, among the codecs the room allows. */
  #preferCodec(transceiver, preferred) {
    const caps = RTCRtpSender.getCapabilities?.("video")?.codecs;
    if (!caps || !transceiver.setCodecPreferences) return;
    const allowed = new Set((this.session.room?.enabledCodecs ?? []).map((c) => `video/${c}`.toLowerCase()));
    const media = caps.filter((c) => !/rtx|red|ulpfec|flexfec/i.test(c.mimeType));
    const ok = media.filter((c) => allowed.size === 0 || allowed.has(c.mimeType.toLowerCase()));
    if (ok.length === 0) return;
    const want = preferred ? `video/${preferred}`.toLowerCase() : void 0;
    ok.sort((a, b) => Number(b.mimeType.toLowerCase() === want) - Number(a.mimeType.toLowerCase() === want));
    const rest = caps.filter((c) => /rtx|red|ulpfec|flexfec/i.test(c.mimeType));
    transceiver.setCodecPreferences([...ok, ...rest]);
  }
  /** @internal */
  _unpublish(trackOrPub, stop) {
    const local = this.localParticipant;
    if (!local) return;
    const pub = trackOrPub instanceof LocalTrackPublication ? trackOrPub : local.tracks.get(trackOrPub.id);
    if (!pub) return;
    for (const [k, v] of local.tracks) if (v === pub) local.tracks.delete(k);
    if (pub.sid) this.session.send({ type: "unpublish_track", trackSid: pub.sid });
    const sender = pub.sender;
    if (sender && this.pc && this.pc.signalingState !== "closed") {
      this.pc.removeTrack(sender);
      this.session.negotiate();
    }
    if (stop) pub.mediaTrack.stop();
    this.emit("localTrackUnpublished", pub);
  }
  #layerUpdates = /* @__PURE__ */ new WeakMap();
  /** Dynacast: encode only the layers somebody receives. One setParameters at a time per
   * sender, each on fresh parameters (overlapping calls fail in the browser). */
  #setActiveLayers(pub, layers) {
    const run = async () => {
      const sender = pub.sender;
      if (!sender) return;
      const params = sender.getParameters();
      let changed = false;
      for (const enc of params.encodings ?? []) {
        const l = layers.find((l2) => l2.rid === enc.rid);
        if (l && enc.active !== l.active) {
          enc.active = l.active;
          changed = true;
        }
      }
      if (changed) await sender.setParameters(params);
    };
    const next = (this.#layerUpdates.get(pub) ?? Promise.resolve()).then(run).catch(
      (e) => this.emit("error", new SwitchyardError("internal", `setting active layers: ${String(e)}`))
    );
    this.#layerUpdates.set(pub, next);
  }
  #remote(info) {
    let p = this.remoteParticipants.get(info.sid);
    if (!p) this.remoteParticipants.set(info.sid, p = new RemoteParticipant(info));
    else p.info = info;
    return p;
  }
  #wire() {
    const s = this.session;
    s.on("connectionStateChanged", (st) => this.emit("connectionStateChanged", st));
    s.on("participantConnected", (info) => this.emit("participantConnected", this.#remote(info)));
    s.on("participantDisconnected", (info, reason) => {
      const p = this.remoteParticipants.get(info.sid);
      if (!p) return;
      this.remoteParticipants.delete(info.sid);
      this.activeSpeakers = this.activeSpeakers.filter((x) => x !== p);
      this.emit("participantDisconnected", p, reason);
    });
    s.on("participantUpdated", (info) => this.emit("participantMetadataChanged", this.#remote(info)));
    s.on("trackPublished", (t, info) => {
      const p = this.#remote(info);
      const pub = new RemoteTrackPublication(t, p.sid, this.#link);
      p.tracks.set(t.sid, pub);
      this.emit("trackPublished", pub, p);
      const early = this.#early.get(t.sid);
      if (early) {
        this.#early.delete(t.sid);
        this.#setReceived(pub, p, early);
      }
    });
    s.on("trackUnpublished", (t, info) => {
      const p = this.remoteParticipants.get(info.sid);
      const pub = p?.tracks.get(t.sid);
      if (!p || !pub) return;
      this.#setReceived(pub, p, void 0);
      pub.detach();
      p.tracks.delete(t.sid);
      this.emit("trackUnpublished", pub, p);
    });
    const mute = (muted) => (t, info) => {
      const p = this.remoteParticipants.get(info.sid);
      const pub = p?.tracks.get(t.sid);
      if (!p || !pub) return;
      pub.info = { ...pub.info, muted };
      this.emit(muted ? "trackMuted" : "trackUnmuted", pub, p);
    };
    s.on("trackMuted", mute(true));
    s.on("trackUnmuted", mute(false));
    s.on("localTrackPublished", (cid, t) => {
      const pub = this.localParticipant?.tracks.get(cid);
      if (pub) {
        pub.info = { ...t, muted: pub.isMuted };
        this.localParticipant.tracks.set(t.sid, pub);
        if (t.muted !== pub.isMuted) this.session.send({ type: "mute_track", trackSid: t.sid, muted: pub.isMuted });
        this.emit("localTrackPublished", pub);
      }
      this.#waiting.get(cid)?.(t);
      this.#waiting.delete(cid);
    });
    s.on("localTrackUnpublished", (sid) => {
      const pub = this.localParticipant?.tracks.get(sid);
      if (pub) this._unpublish(pub, true);
    });
    s.on("subscriptionUpdated", (m) => {
      const p = this.remoteParticipants.get(m.participantSid);
      const pub = p?.tracks.get(m.trackSid);
      if (m.error) this.emit("trackSubscriptionFailed", m.trackSid, m.error);
      if (p && pub && !m.subscribed) this.#setReceived(pub, p, void 0);
    });
    s.on("streamStateChanged", (m) => {
      const p = this.remoteParticipants.get(m.participantSid);
      const pub = p?.tracks.get(m.trackSid);
      if (!p || !pub) return;
      pub.streamState = m.state;
      pub.pauseReason = m.reason;
      if (m.quality) pub.quality = m.quality;
      this.emit("trackStreamStateChanged", pub, m.state, p);
    });
    s.on("subscribedLayers", (m) => {
      if (this.options.dynacast === false) return;
      const pub = this.localParticipant?.tracks.get(m.trackSid);
      if (pub) this.#setActiveLayers(pub, m.layers);
    });
    s.on("activeSpeakersChanged", (speakers) => {
      const all = new Map(this.participants.map((p) => [p.sid, p]));
      for (const p of all.values()) {
        p.isSpeaking = false;
        p.audioLevel = 0;
      }
      this.activeSpeakers = speakers.flatMap(({ participant, level }) => {
        const p = all.get(participant.sid);
        if (!p) return [];
        p.isSpeaking = true;
        p.audioLevel = level;
        return [p];
      });
      this.emit("activeSpeakersChanged", this.activeSpeakers);
    });
    s.on("connectionQualityChanged", (info, quality) => {
      const p = info.sid === this.localParticipant?.sid ? this.localParticipant : this.remoteParticipants.get(info.sid);
      if (!p) return;
      p.connectionQuality = quality;
      this.emit("connectionQualityChanged", quality, p);
    });
    s.on("dataReceived", (d) => {
      const { payload, participant, ...info } = d;
      this.emit("dataReceived", payload, participant ? this.remoteParticipants.get(participant.sid) : void 0, info);
    });
    s.on("reconnecting", () => this.emit("reconnecting"));
    s.on("reconnected", (how) => this.emit("reconnected", how));
    s.on("disconnected", (reason) => {
      this.pc?.close();
      for (const pub of this.localParticipant?.trackPublications ?? []) pub.mediaTrack.stop();
      this.emit("disconnected", reason);
    });
    s.on("error", (e) => this.emit("error", e));
  }
};
export {
  CLIENT_MESSAGE_TYPES,
  DEFAULT_RECONNECT_POLICY,
  Emitter,
  LocalParticipant,
  LocalTrackPublication,
  PROTOCOL_VERSION,
  Participant,
  RemoteParticipant,
  RemoteTrackPublication,
  Room,
  SDK_VERSION,
  SERVER_MESSAGE_TYPES,
  SIMULCAST_RIDS,
  Session,
  SwitchyardError,
  TrackPublication,
  backoffDelay,
  createLocalTracks,
  defaultSignalingUrl,
  getLocalDevices,
  layerForHeight,
  msidByMid,
  nextStep,
  signalingUrl,
  simulcastLayers,
  summarizeStats
};
