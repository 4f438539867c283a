// The protocol layer: one signaling session over a socket, with no WebRTC in it. It owns
// the view of the room (participants and their tracks), the order of negotiation (one
// offer of ours in flight; glare: the server yields, so a server offer that crosses ours
// is dropped), keepalive, and reconnecting (resume first, then a full rejoin with backoff
// and jitter). The WebRTC side is a `SessionHost` (the `Room`); tests use fakes of both
// the socket and the host.
//
//   connect ── join ──► joined ─► host.prepare("join") ─► connected
//   socket lost ─► reconnecting ─► resume ─► resumed ─► host.prepare("resume") ─► connected
//                               └► resume_failed / attempts spent ─► join ─► host.prepare("rejoin")
//   leave {canReconnect: false} or attempts spent ─► disconnected(reason)

import { Emitter } from "./events.js";
import {
  PROTOCOL_VERSION,
  type ClientMessage,
  type ConnectionQuality,
  type DataKind,
  type ErrorCode,
  type IceCandidateInit,
  type JoinResponse,
  type LeaveReason,
  type ParticipantInfo,
  type RoomInfo,
  type ServerLeave,
  type ServerMessage,
  type ServerMessageOf,
  type TrackInfo,
} from "./protocol.js";
import { DEFAULT_RECONNECT_POLICY, nextStep, type ReconnectPolicy } from "./reconnect.js";

export const SDK_VERSION = "0.1.0";

/** What the session needs of a WebSocket (the browser's `WebSocket` fits). */
export interface SignalSocket {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}
export type SocketFactory = (url: string) => SignalSocket;

/** The WebRTC side of a session. Every call is made in message order, one at a time. */
export interface SessionHost {
  /** A session was established: build (`join`, `rejoin`) or keep (`resume`) the peer connection. */
  prepare(joined: JoinResponse, how: "join" | "resume" | "rejoin"): Promise<void>;
  /** Create an offer, apply it locally, return its SDP. */
  createOffer(): Promise<string>;
  applyAnswer(sdp: string): Promise<void>;
  /** Apply a remote offer, create and apply the answer, return its SDP. */
  answerOffer(sdp: string): Promise<string>;
  /** Drop a local offer the server refused. */
  rollback(): Promise<void>;
  /** An offer of ours awaits its answer. */
  hasLocalOffer(): boolean;
  addCandidate(candidate: IceCandidateInit): Promise<void>;
}

export type ConnectionState = "disconnected" | "connecting" | "connected" | "reconnecting";

/** Why a room ended: a server `leave` reason, `client_request`, or a failure. */
export type DisconnectReason = LeaveReason | "signal_lost" | ErrorCode;

export class SwitchyardError extends Error {
  constructor(
    readonly code: ErrorCode | "connect_failed" | "closed",
    message: string,
    /** Set when the server says a retry may succeed (placement, draining, rate limits). */
    readonly retryAfterMs?: number,
  ) {
    super(`${code}: ${message}`);
    this.name = "SwitchyardError";
  }
}

export interface DataPacket {
  payload: Uint8Array;
  kind: DataKind;
  topic?: string;
  /** The sender (undefined if it left since). */
  participant?: ParticipantInfo;
  identity: string;
}

export interface SessionEvents {
  /** Every server message after the handshake, once handled (for logs and tests). */
  message: (msg: ServerMessage) => void;
  connectionStateChanged: (state: ConnectionState) => void;
  participantConnected: (p: ParticipantInfo) => void;
  participantDisconnected: (p: ParticipantInfo, reason: LeaveReason) => void;
  participantUpdated: (p: ParticipantInfo) => void;
  trackPublished: (track: TrackInfo, p: ParticipantInfo) => void;
  trackUnpublished: (track: TrackInfo, p: ParticipantInfo) => void;
  trackMuted: (track: TrackInfo, p: ParticipantInfo) => void;
  trackUnmuted: (track: TrackInfo, p: ParticipantInfo) => void;
  /** `track_published` for one of ours: the server's sid for the `cid` we announced. */
  localTrackPublished: (cid: string, track: TrackInfo) => void;
  localTrackUnpublished: (trackSid: string) => void;
  activeSpeakersChanged: (speakers: { participant: ParticipantInfo; level: number }[]) => void;
  connectionQualityChanged: (p: ParticipantInfo, quality: ConnectionQuality, score: number) => void;
  dataReceived: (packet: DataPacket) => void;
  streamStateChanged: (msg: ServerMessageOf<"stream_state">) => void;
  subscribedLayers: (msg: ServerMessageOf<"subscribed_layers">) => void;
  subscriptionUpdated: (msg: ServerMessageOf<"subscription_updated">) => void;
  roomUpdated: (room: RoomInfo) => void;
  reconnecting: () => void;
  reconnected: (how: "resume" | "rejoin") => void;
  disconnected: (reason: DisconnectReason) => void;
  error: (e: SwitchyardError) => void;
}

export interface SessionOptions {
  /** Subscribe to every track automatically (default true). */
  autoSubscribe?: boolean;
  reconnect?: Partial<ReconnectPolicy>;
  /** Times a refused join that carries a retry hint is tried again (default 3). */
  joinRetries?: number;
  /** For tests: the socket, the timers and the randomness. */
  socketFactory?: SocketFactory;
  setTimeout?: (f: () => void, ms: number) => unknown;
  clearTimeout?: (t: unknown) => void;
  random?: () => number;
}

type Handshake = { kind: "join" } | { kind: "resume"; participantSid: string; reconnectToken: string };

/** Error codes after which a retry is pointless. */
const FINAL: ReadonlySet<string> = new Set(["unauthorized", "permission_denied", "room_not_found", "room_closed", "room_full"]);

function base64Encode(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function base64Decode(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** `url` (ws://, wss://, http:// or https://, with or without `/rtc`) with the token. */
export function signalingUrl(url: string, token: string): string {
  let u = url.trim().replace(/\/+$/, "");
  u = u.replace(/^http(s?):\/\//, "ws$1://");
  if (!/^wss?:\/\//.test(u)) throw new TypeError(`signaling URL must start with ws://, wss://, http:// or https://: ${url}`);
  if (!u.endsWith("/rtc")) u += "/rtc";
  return `${u}?access_token=${encodeURIComponent(token)}`;
}

/** The signaling URL of a page served by the signaling host itself: `wss://` when the
 * page is https (a `ws://` socket from an https page is blocked as mixed content). */
export function defaultSignalingUrl(location: { protocol: string; host: string }): string {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
}

export class Session extends Emitter<SessionEvents> {
  state: ConnectionState = "disconnected";
  room?: RoomInfo;
  local?: ParticipantInfo;
  /** Everyone else, by participant sid. */
  readonly participants = new Map<string, ParticipantInfo>();
  /** Round-trip time of the signaling socket, from ping/pong. */
  rttMs?: number;
  joined?: JoinResponse;

  readonly #host: SessionHost;
  readonly #policy: ReconnectPolicy;
  readonly #opts: SessionOptions;
  readonly #socketFactory: SocketFactory;
  readonly #setTimeout: (f: () => void, ms: number) => unknown;
  readonly #clearTimeout: (t: unknown) => void;
  readonly #random: () => number;
  #url = "";
  #token = "";
  #socket?: SignalSocket;
  #queue: Promise<void> = Promise.resolve();
  #offerId = 0;
  #offerInFlight = false;
  #wantOffer = false;
  #lastOfferSdp?: string;
  #pinger?: unknown;
  #watchdog?: unknown;
  #leaveHint?: ServerLeave;
  #closed = false;
  #epoch = 0;

  constructor(host: SessionHost, opts: SessionOptions = {}) {
    super();
    this.#host = host;
    this.#opts = opts;
    this.#policy = { ...DEFAULT_RECONNECT_POLICY, ...opts.reconnect };
    this.#socketFactory = opts.socketFactory ?? ((url) => new WebSocket(url) as unknown as SignalSocket);
    this.#setTimeout = opts.setTimeout ?? ((f, ms) => setTimeout(f, ms));
    this.#clearTimeout = opts.clearTimeout ?? ((t) => clearTimeout(t as ReturnType<typeof setTimeout>));
    this.#random = opts.random ?? Math.random;
  }

  /** Join the room the token names. A refusal with a retry hint is retried after the hint. */
  async connect(url: string, token: string): Promise<JoinResponse> {
    this.#url = url;
    this.#token = token;
    signalingUrl(url, token); // a bad URL fails here, before any socket
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
  send(msg: ClientMessage): void {
    if (this.#socket && this.#socket.readyState === 1) this.#socket.send(JSON.stringify(msg));
  }

  /** Ask for an offer of ours: made as soon as none is in flight. */
  negotiate(): void {
    this.#wantOffer = true;
    this.#maybeOffer();
  }

  publishData(payload: Uint8Array | string, opts: { reliable?: boolean; to?: string[]; topic?: string } = {}): void {
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    const msg: ClientMessage = { type: "data", kind: opts.reliable === false ? "lossy" : "reliable", payload: base64Encode(bytes) };
    if (opts.topic !== undefined) msg.topic = opts.topic;
    if (opts.to?.length) msg.destinationIdentities = opts.to;
    this.send(msg);
  }

  /** Leave the room (sends `leave`, closes the socket). */
  disconnect(reason: DisconnectReason = "client_request"): void {
    if (this.#closed) return;
    this.send({ type: "leave" });
    this.#end(reason);
  }

  /** Run `task` after every message and offer queued before it. */
  serialize<T>(task: () => Promise<T> | T): Promise<T> {
    const run = this.#queue.then(task);
    this.#queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  #setState(s: ConnectionState): void {
    if (this.state === s) return;
    this.state = s;
    this.emit("connectionStateChanged", s);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((r) => this.#setTimeout(r, ms));
  }

  /** Open a socket and run the handshake: the first message decides. */
  #open(h: Handshake, how: "join" | "resume" | "rejoin"): Promise<JoinResponse> {
    const socket = this.#socketFactory(signalingUrl(this.#url, this.#token));
    const epoch = ++this.#epoch;
    return new Promise<JoinResponse>((resolve, reject) => {
      let refused: SwitchyardError | undefined;
      socket.onopen = () => {
        const msg: ClientMessage =
          h.kind === "join"
            ? {
                type: "join",
                protocolVersion: PROTOCOL_VERSION,
                autoSubscribe: this.#opts.autoSubscribe ?? true,
                sdk: { name: "js", version: SDK_VERSION },
              }
            : { type: "resume", participantSid: h.participantSid, reconnectToken: h.reconnectToken };
        socket.send(JSON.stringify(msg));
      };
      socket.onerror = () => {};
      socket.onclose = (e) =>
        reject(refused ?? new SwitchyardError("connect_failed", `socket closed with ${e.code} ${e.reason} before joining`));
      socket.onmessage = (e) => {
        let msg: ServerMessage;
        try {
          msg = JSON.parse(String(e.data)) as ServerMessage;
        } catch {
          return;
        }
        if (msg.type === "joined" || msg.type === "resumed") {
          // Queued before any message behind it on this socket.
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
  #bind(socket: SignalSocket, epoch: number): void {
    this.#socket = socket;
    socket.onmessage = (e) => {
      let msg: ServerMessage;
      try {
        msg = JSON.parse(String(e.data)) as ServerMessage;
      } catch {
        return;
      }
      this.#heard();
      this.serialize(async () => {
        await this.#handle(msg);
        this.emit("message", msg);
      }).catch((err: unknown) =>
        this.emit("error", err instanceof SwitchyardError ? err : new SwitchyardError("internal", String(err))),
      );
    };
    socket.onclose = () => {
      if (epoch === this.#epoch) this.serialize(() => this.#lost());
    };
  }

  async #established(joined: JoinResponse, how: "join" | "resume" | "rejoin"): Promise<void> {
    await this.serialize(async () => {
      const before = new Map(this.participants);
      this.joined = joined;
      this.room = joined.room;
      this.local = joined.participant;
      this.participants.clear();
      for (const p of joined.otherParticipants) this.participants.set(p.sid, p);
      if (how === "rejoin") {
        // A new peer connection: nothing of the old one is in flight.
        this.#offerInFlight = false;
        this.#lastOfferSdp = undefined;
      }
      await this.#host.prepare(joined, how);
      this.#startPing(joined);
      this.#setState("connected");
      this.#diff(before);
      if (how === "resume" && this.#offerInFlight && this.#lastOfferSdp && this.#host.hasLocalOffer()) {
        // Our offer may have been lost with the socket: send it again, same id.
        this.send({ type: "offer", sdp: this.#lastOfferSdp, id: this.#offerId });
      }
    });
    if (how !== "join") this.emit("reconnected", how);
    this.#maybeOffer();
  }

  /** Events for what changed between the view before a snapshot and the snapshot. */
  #diff(before: Map<string, ParticipantInfo>): void {
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

  #diffTracks(old: ParticipantInfo, now: ParticipantInfo): void {
    const was = new Map(old.tracks.map((t) => [t.sid, t]));
    for (const t of now.tracks) {
      const o = was.get(t.sid);
      if (!o) this.emit("trackPublished", t, now);
      else if (o.muted !== t.muted) this.emit(t.muted ? "trackMuted" : "trackUnmuted", t, now);
      was.delete(t.sid);
    }
    for (const t of was.values()) this.emit("trackUnpublished", t, now);
  }

  #startPing(joined: JoinResponse): void {
    if (this.#pinger !== undefined) this.#clearTimeout(this.#pinger);
    const every = Math.max(1, joined.pingIntervalSeconds) * 1000;
    const tick = () => {
      this.send({ type: "ping", timestampMs: Date.now(), ...(this.rttMs !== undefined ? { rttMs: this.rttMs } : {}) });
      this.#pinger = this.#setTimeout(tick, every);
    };
    this.#pinger = this.#setTimeout(tick, every);
    this.#heard();
  }

  /** A frame arrived: the server is alive. Silence for the ping timeout means the socket is dead. */
  #heard(): void {
    if (this.#watchdog !== undefined) this.#clearTimeout(this.#watchdog);
    const timeout = (this.joined?.pingTimeoutSeconds ?? 15) * 1000;
    const socket = this.#socket;
    this.#watchdog = this.#setTimeout(() => {
      if (socket === this.#socket && !this.#closed) {
        this.#epoch++;
        socket?.close(4408, "no frame within the ping timeout");
        this.serialize(() => this.#lost());
      }
    }, timeout);
  }

  #maybeOffer(): void {
    if (!this.#wantOffer || this.#offerInFlight || this.state !== "connected") return;
    this.serialize(async () => {
      if (!this.#wantOffer || this.#offerInFlight || this.state !== "connected") return;
      this.#wantOffer = false;
      const sdp = await this.#host.createOffer();
      this.#offerInFlight = true;
      this.#lastOfferSdp = sdp;
      this.send({ type: "offer", sdp, id: ++this.#offerId });
    }).catch((e: unknown) => this.emit("error", new SwitchyardError("negotiation_failed", String(e))));
  }

  #participant(sid: string): ParticipantInfo | undefined {
    return this.participants.get(sid) ?? (this.local?.sid === sid ? this.local : undefined);
  }

  async #handle(msg: ServerMessage): Promise<void> {
    switch (msg.type) {
      case "answer":
        if (msg.id === this.#offerId && this.#offerInFlight) {
          this.#offerInFlight = false;
          if (this.#host.hasLocalOffer()) await this.#host.applyAnswer(msg.sdp);
          this.#maybeOffer();
        }
        break;
      case "offer": {
        // Glare: the server withdrew this offer when it got ours; it offers again later.
        if (this.#offerInFlight || this.#host.hasLocalOffer()) break;
        const sdp = await this.#host.answerOffer(msg.sdp);
        this.send({ type: "answer", sdp, id: msg.id });
        break;
      }
      case "trickle":
        if (msg.candidate) await this.#host.addCandidate(msg.candidate).catch(() => {});
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
        const t = p?.tracks.find((t) => t.sid === msg.trackSid);
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
        const packet: DataPacket = { payload: base64Decode(msg.payload), kind: msg.kind, identity: msg.identity };
        const from = this.participants.get(msg.participantSid);
        if (from) packet.participant = from;
        if (msg.topic !== undefined) packet.topic = msg.topic;
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
        // Otherwise the server closes the socket next, and #lost follows the hint.
        break;
      case "error": {
        const e = new SwitchyardError(msg.code, msg.message, msg.retryAfterMs);
        if (msg.requestType === "offer" && this.#offerInFlight) {
          // The server could not apply our offer: roll back and let the next change offer again.
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
  async #lost(): Promise<void> {
    if (this.#closed || this.state === "reconnecting") return;
    this.#socket = undefined;
    const hint = this.#leaveHint;
    this.#leaveHint = undefined;
    if (hint && !hint.canReconnect) return this.#end(hint.reason);
    this.#setState("reconnecting");
    this.emit("reconnecting");
    let resumable = hint?.reconnect !== "rejoin" && this.local !== undefined && this.joined !== undefined;
    const floor = hint?.retryAfterMs ?? 0;
    let resumes = 0;
    let rejoins = 0;
    // Run outside the queue: messages of the new socket must be handled while it waits.
    void (async () => {
      for (;;) {
        const step = nextStep(resumes, rejoins, resumable, this.#policy, this.#random, floor);
        if (step.kind === "give_up") return this.#end(hint?.reason ?? "signal_lost");
        await this.#sleep(step.delayMs);
        if (this.#closed) return;
        try {
          if (step.kind === "resume") {
            resumes++;
            const h: Handshake = { kind: "resume", participantSid: this.local!.sid, reconnectToken: this.joined!.reconnectToken };
            await this.#open(h, "resume");
          } else {
            rejoins++;
            await this.#open({ kind: "join" }, "rejoin");
          }
          return;
        } catch (e) {
          const code = e instanceof SwitchyardError ? e.code : "connect_failed";
          if (code === "resume_failed") resumable = false;
          else if (FINAL.has(code)) return this.#end(code as ErrorCode);
        }
      }
    })();
  }

  #end(reason: DisconnectReason): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#epoch++;
    if (this.#pinger !== undefined) this.#clearTimeout(this.#pinger);
    if (this.#watchdog !== undefined) this.#clearTimeout(this.#watchdog);
    this.#socket?.close(1000, "leave");
    this.#socket = undefined;
    this.#setState("disconnected");
    this.emit("disconnected", reason);
  }
}
