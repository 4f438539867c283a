// The WebRTC layer: one RTCPeerConnection per session, driven by the protocol layer
// (`Session`). Publishing sends `publish_track` (cid = the MediaStreamTrack id, which the
// browser writes into `a=msid`), adds the track and offers, without waiting for
// `track_published` (the server sends it when the offer's line arrives). Received tracks
// are mapped to publisher and track by their line's `a=msid:<participantSid> <trackSid>`.

import { Emitter } from "./events.js";
import { LocalTrackPublication, Participant, RemoteParticipant, RemoteTrackPublication, type PublicationLink } from "./participant.js";
import {
  SIMULCAST_RIDS,
  type ClientMessage,
  type Codec,
  type ConnectionQuality,
  type IceCandidateInit,
  type JoinResponse,
  type LeaveReason,
  type ParticipantInfo,
  type SimulcastLayer,
  type TrackInfo,
  type TrackSource,
  type VideoQuality,
} from "./protocol.js";
import { msidByMid } from "./sdp.js";
import {
  Session,
  SwitchyardError,
  type ConnectionState,
  type DataPacket,
  type DisconnectReason,
  type SessionHost,
  type SessionOptions,
} from "./session.js";
import { summarizeStats, type ConnectionStats, type InboundStats, type OutboundStats } from "./stats.js";

export interface RoomOptions extends SessionOptions {
  /** Observe the size and visibility of attached video elements and tell the server (default true). */
  adaptiveStream?: boolean;
  /** Stop encoding simulcast layers nobody receives (default true). */
  dynacast?: boolean;
  /** Publish camera video in three layers (default true; VP9 and AV1 are sent as one). */
  simulcast?: boolean;
  /** Preferred video codec; the room's allowed codecs win (default: the browser's order). */
  videoCodec?: Exclude<Codec, "opus">;
  /** Capture defaults for setCameraEnabled / setMicrophoneEnabled. */
  videoCaptureDefaults?: MediaTrackConstraints;
  audioCaptureDefaults?: MediaTrackConstraints;
  /** Extra RTCConfiguration (the ICE servers come from the server). */
  rtcConfig?: RTCConfiguration;
}

export interface PublishOptions {
  name?: string;
  source?: TrackSource;
  /** Video only: send three layers (default: on for camera). */
  simulcast?: boolean;
  videoCodec?: Exclude<Codec, "opus">;
}

export interface TrackStats {
  trackSid?: string;
  participantIdentity?: string;
  /** The simulcast layer received (from its size) or sent (its rid). */
  quality?: VideoQuality;
}

export interface RoomStats extends ConnectionStats {
  outbound: (OutboundStats & TrackStats)[];
  inbound: (InboundStats & TrackStats)[];
}

export interface RoomEvents {
  connectionStateChanged: (state: ConnectionState) => void;
  participantConnected: (p: RemoteParticipant) => void;
  participantDisconnected: (p: RemoteParticipant, reason: LeaveReason) => void;
  participantMetadataChanged: (p: Participant) => void;
  trackPublished: (pub: RemoteTrackPublication, p: RemoteParticipant) => void;
  trackUnpublished: (pub: RemoteTrackPublication, p: RemoteParticipant) => void;
  trackSubscribed: (track: MediaStreamTrack, pub: RemoteTrackPublication, p: RemoteParticipant) => void;
  trackUnsubscribed: (track: MediaStreamTrack, pub: RemoteTrackPublication, p: RemoteParticipant) => void;
  trackSubscriptionFailed: (trackSid: string, code: string) => void;
  trackMuted: (pub: RemoteTrackPublication | LocalTrackPublication, p: Participant) => void;
  trackUnmuted: (pub: RemoteTrackPublication | LocalTrackPublication, p: Participant) => void;
  trackStreamStateChanged: (pub: RemoteTrackPublication, state: "active" | "paused", p: RemoteParticipant) => void;
  localTrackPublished: (pub: LocalTrackPublication) => void;
  localTrackUnpublished: (pub: LocalTrackPublication) => void;
  activeSpeakersChanged: (speakers: Participant[]) => void;
  connectionQualityChanged: (quality: ConnectionQuality, p: Participant) => void;
  dataReceived: (payload: Uint8Array, p: RemoteParticipant | undefined, info: Omit<DataPacket, "payload" | "participant">) => void;
  reconnecting: () => void;
  reconnected: (how: "resume" | "rejoin") => void;
  disconnected: (reason: DisconnectReason) => void;
  mediaDevicesChanged: () => void;
  error: (e: SwitchyardError) => void;
}

/** Camera layers: `q` a quarter, `h` half, `f` the full size, with bitrate caps. */
const CAMERA_BITRATES: Record<string, number> = { q: 150_000, h: 500_000, f: 1_700_000 };

export function simulcastLayers(width: number, height: number): SimulcastLayer[] {
  return SIMULCAST_RIDS.map((l) => ({
    rid: l.rid,
    quality: l.quality,
    width: Math.round(width / l.scaleDown),
    height: Math.round(height / l.scaleDown),
    maxBitrateBps: CAMERA_BITRATES[l.rid] ?? 1_000_000,
  }));
}

/** The layer of `layers` nearest to a received frame height. */
export function layerForHeight(layers: SimulcastLayer[] | undefined, height: number | undefined): VideoQuality | undefined {
  if (!layers?.length || !height) return undefined;
  return layers.reduce((best, l) => (Math.abs(l.height - height) < Math.abs(best.height - height) ? l : best)).quality;
}

/** Camera and/or microphone tracks, e.g. for a preview before joining. */
export async function createLocalTracks(c: { audio?: boolean | MediaTrackConstraints; video?: boolean | MediaTrackConstraints }): Promise<MediaStreamTrack[]> {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: c.audio ?? false, video: c.video ?? false });
  return stream.getTracks();
}

/** Capture devices of a kind (labels appear once the page has a permission). */
export async function getLocalDevices(kind?: MediaDeviceKind): Promise<MediaDeviceInfo[]> {
  const all = await navigator.mediaDevices.enumerateDevices();
  return kind ? all.filter((d) => d.kind === kind) : all;
}

export class LocalParticipant extends Participant {
  readonly tracks = new Map<string, LocalTrackPublication>(); // by cid until published, then also by sid
  readonly #room: Room;
  constructor(info: ParticipantInfo, room: Room) {
    super(info);
    this.#room = room;
  }
  override get isLocal(): true {
    return true;
  }
  override get trackPublications(): LocalTrackPublication[] {
    return [...new Set(this.tracks.values())];
  }
  override getTrackPublication(source: TrackSource): LocalTrackPublication | undefined {
    return this.trackPublications.find((p) => p.source === source);
  }

  /** Publish `track`; resolves when the server has accepted it (its `sid` is known). */
  publishTrack(track: MediaStreamTrack, opts: PublishOptions = {}): Promise<LocalTrackPublication> {
    return this.#room._publish(track, opts);
  }

  /** Stop publishing (and stop the track unless `stop` is false). */
  unpublishTrack(trackOrPub: MediaStreamTrack | LocalTrackPublication, stop = true): void {
    this.#room._unpublish(trackOrPub, stop);
  }

  setCameraEnabled(enabled: boolean, constraints?: MediaTrackConstraints): Promise<LocalTrackPublication | undefined> {
    return this.#toggle("camera", enabled, constraints);
  }

  setMicrophoneEnabled(enabled: boolean, constraints?: MediaTrackConstraints): Promise<LocalTrackPublication | undefined> {
    return this.#toggle("microphone", enabled, constraints);
  }

  /** Share a screen (the browser asks which); disabling unpublishes and stops it. */
  async setScreenShareEnabled(enabled: boolean): Promise<LocalTrackPublication | undefined> {
    const pub = this.getTrackPublication("screen_share");
    if (!enabled) {
      if (pub) this.unpublishTrack(pub);
      return undefined;
    }
    if (pub) return pub;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    if (!track) throw new SwitchyardError("internal", "getDisplayMedia returned no video track");
    // The browser's "stop sharing" ends the track: unpublish it.
    track.addEventListener("ended", () => {
      const p = this.trackPublications.find((p) => p.mediaTrack === track);
      if (p) this.unpublishTrack(p);
    });
    return this.publishTrack(track, { source: "screen_share", name: "screen", simulcast: false });
  }

  /** Send data to everyone, or to the identities in `to`. `reliable: false` marks it lossy
   * (latest wins). Travels over the signaling socket; see docs/protocol.md. */
  publishData(data: Uint8Array | string, opts: { reliable?: boolean; to?: string[]; topic?: string } = {}): void {
    this.#room.session.publishData(data, opts);
  }

  async #toggle(source: "camera" | "microphone", enabled: boolean, constraints?: MediaTrackConstraints) {
    const pub = this.getTrackPublication(source);
    if (pub) {
      if (enabled) pub.unmute();
      else pub.mute();
      return pub;
    }
    if (!enabled) return undefined;
    const o = this.#room.options;
    const c = source === "camera" ? { width: 1280, height: 720, ...o.videoCaptureDefaults, ...constraints } : { ...o.audioCaptureDefaults, ...constraints };
    const [track] = await createLocalTracks(source === "camera" ? { video: c } : { audio: c });
    if (!track) throw new SwitchyardError("internal", `no ${source} track`);
    return this.publishTrack(track, { source });
  }
}

export class Room extends Emitter<RoomEvents> implements SessionHost {
  readonly options: RoomOptions;
  readonly session: Session;
  localParticipant?: LocalParticipant;
  readonly remoteParticipants = new Map<string, RemoteParticipant>();
  activeSpeakers: Participant[] = [];
  pc?: RTCPeerConnection;
  /** Received tracks whose publication we have not heard of yet, by track sid. */
  readonly #early = new Map<string, MediaStreamTrack>();
  #prevStats?: Map<string, any>;
  readonly #waiting = new Map<string, (t: TrackInfo) => void>();
  readonly #link: PublicationLink;

  constructor(options: RoomOptions = {}) {
    super();
    this.options = options;
    this.session = new Session(this, options);
    this.#link = {
      send: (m: ClientMessage) => this.session.send(m),
      adaptiveStream: options.adaptiveStream ?? true,
      localMuteChanged: (pub) => {
        if (this.localParticipant) this.emit(pub.isMuted ? "trackMuted" : "trackUnmuted", pub, this.localParticipant);
      },
    };
    this.#wire();
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.emit("mediaDevicesChanged"));
  }

  /** Connect to `url` (the signaling URL: ws://, wss://, or http(s):// of it) with an access token. */
  static async connect(url: string, token: string, options: RoomOptions = {}): Promise<Room> {
    const room = new Room(options);
    await room.connect(url, token);
    return room;
  }

  async connect(url: string, token: string): Promise<void> {
    await this.session.connect(url, token);
  }

  get name(): string | undefined {
    return this.session.room?.name;
  }
  get state(): ConnectionState {
    return this.session.state;
  }
  /** Every participant, the local one first. */
  get participants(): Participant[] {
    return [...(this.localParticipant ? [this.localParticipant] : []), ...this.remoteParticipants.values()];
  }

  disconnect(): void {
    this.session.disconnect();
  }

  /** Switch the camera or microphone to `deviceId` without renegotiating. */
  async switchActiveDevice(kind: "videoinput" | "audioinput", deviceId: string): Promise<void> {
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
    (pub as { mediaTrack: MediaStreamTrack }).mediaTrack = track;
  }

  /** Bitrate, loss, RTT, codec and layer of every stream, from getStats. */
  async getStats(): Promise<RoomStats> {
    if (!this.pc) return { outbound: [], inbound: [], timestampMs: Date.now() };
    const report = await this.pc.getStats();
    const { stats, raw } = summarizeStats(report.values() as Iterable<any>, this.#prevStats);
    this.#prevStats = raw;
    const msid = msidByMid(this.pc.remoteDescription?.sdp ?? "");
    const inbound = stats.inbound.map((s) => {
      const m = s.mid ? msid.get(s.mid) : undefined;
      const p = m ? this.remoteParticipants.get(m.stream) : undefined;
      const pub = m ? p?.tracks.get(m.track) : undefined;
      const quality = s.kind === "video" ? layerForHeight(pub?.info.layers, s.frameHeight) : undefined;
      return { ...s, trackSid: m?.track, participantIdentity: p?.identity, quality };
    });
    const outbound = stats.outbound.map((s) => {
      const pub = this.localParticipant?.trackPublications.find((p) => p.mediaTrack.id === s.trackId || p.sender?.track?.id === s.trackId);
      const quality = s.rid ? SIMULCAST_RIDS.find((l) => l.rid === s.rid)?.quality : undefined;
      return { ...s, trackSid: pub?.sid, participantIdentity: this.localParticipant?.identity, quality };
    });
    return { ...stats, inbound, outbound };
  }

  // ---- SessionHost: called by the protocol layer in message order ----

  async prepare(joined: JoinResponse, how: "join" | "resume" | "rejoin"): Promise<void> {
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
        for (const pub of p.tracks.values()) this.#setReceived(pub, p, undefined);
    }
    this.pc = this.#newPeerConnection(joined);
    if (how === "rejoin") {
      // A new session: announce and send every local track again.
      const pubs = this.localParticipant.trackPublications;
      this.localParticipant.tracks.clear();
      for (const pub of pubs) void this._publish(pub.mediaTrack, { name: pub.name, source: pub.source }, pub);
    }
  }

  async createOffer(): Promise<string> {
    const pc = this.pc!;
    await pc.setLocalDescription(await pc.createOffer());
    return pc.localDescription!.sdp;
  }

  async applyAnswer(sdp: string): Promise<void> {
    await this.pc!.setRemoteDescription({ type: "answer", sdp });
  }

  async answerOffer(sdp: string): Promise<string> {
    const pc = this.pc!;
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this.#sweepInactive();
    return pc.localDescription!.sdp;
  }

  async rollback(): Promise<void> {
    if (this.pc?.signalingState === "have-local-offer") await this.pc.setLocalDescription({ type: "rollback" });
  }

  hasLocalOffer(): boolean {
    return this.pc?.signalingState === "have-local-offer";
  }

  async addCandidate(c: IceCandidateInit): Promise<void> {
    await this.pc?.addIceCandidate(c);
  }

  // ---- internals ----

  #newPeerConnection(joined: JoinResponse): RTCPeerConnection {
    const pc = new RTCPeerConnection({
      ...this.options.rtcConfig,
      iceServers: joined.iceServers,
      iceTransportPolicy: joined.iceTransportPolicy === "relay" ? "relay" : "all",
    });
    pc.onicecandidate = (e) => {
      if (e.candidate) this.session.send({ type: "trickle", candidate: e.candidate.toJSON() as IceCandidateInit });
    };
    pc.ontrack = (e) => {
      const mid = e.transceiver.mid;
      const m = mid ? msidByMid(pc.remoteDescription?.sdp ?? "").get(mid) : undefined;
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
  #sweepInactive(): void {
    const msid = msidByMid(this.pc?.remoteDescription?.sdp ?? "");
    const live = new Set<string>();
    for (const t of this.pc?.getTransceivers() ?? []) {
      const m = t.mid ? msid.get(t.mid) : undefined;
      if (m && (t.currentDirection === "recvonly" || t.currentDirection === "sendrecv")) live.add(m.track);
    }
    for (const p of this.remoteParticipants.values())
      for (const pub of p.tracks.values()) if (pub.subscribed && !live.has(pub.sid)) this.#setReceived(pub, p, undefined);
  }

  #setReceived(pub: RemoteTrackPublication, p: RemoteParticipant, track: MediaStreamTrack | undefined): void {
    const old = pub.mediaTrack;
    if (old === track) return;
    pub.setMediaTrack(track);
    if (old) this.emit("trackUnsubscribed", old, pub, p);
    if (track) this.emit("trackSubscribed", track, pub, p);
  }

  /** @internal */
  async _publish(track: MediaStreamTrack, opts: PublishOptions, reuse?: LocalTrackPublication): Promise<LocalTrackPublication> {
    const local = this.localParticipant;
    const pc = this.pc;
    if (!local || !pc) throw new SwitchyardError("not_joined", "connect before publishing");
    const kind = track.kind === "video" ? "video" : "audio";
    const source: TrackSource = opts.source ?? (kind === "audio" ? "microphone" : "camera");
    const settings = track.getSettings();
    const codec = opts.videoCodec ?? this.options.videoCodec;
    // Simulcast by default for the camera in VP8 and H.264. VP9 and AV1 go as one stream:
    // browsers encode their simulcast unevenly, and the server does not yet switch their
    // layers (it forwards such a track as one layer).
    const layered = codec !== "vp9" && codec !== "av1";
    const simulcast =
      kind === "video" && (opts.simulcast ?? (source === "camera" && layered && (this.options.simulcast ?? true)));
    const layers = simulcast && settings.width && settings.height ? simulcastLayers(settings.width, settings.height) : [];
    const info: TrackInfo = { sid: "", name: opts.name ?? (track.label || source), kind, source, muted: !track.enabled };
    if (settings.width) info.width = settings.width;
    if (settings.height) info.height = settings.height;
    if (layers.length) info.layers = layers;
    const pub = reuse ?? new LocalTrackPublication(info, track, this.#link);
    pub.info = { ...info, muted: reuse?.isMuted ?? info.muted };
    local.tracks.set(track.id, pub);
    const req: ClientMessage = { type: "publish_track", cid: track.id, name: info.name, kind, source, muted: pub.isMuted };
    if (info.width) req.width = info.width;
    if (info.height) req.height = info.height;
    if (layers.length) req.layers = layers;
    const published = new Promise<TrackInfo>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(track.id);
        reject(new SwitchyardError("internal", `no track_published for ${track.id} within 15 s`));
      }, 15_000);
      this.#waiting.set(track.id, (t) => {
        clearTimeout(timer);
        resolve(t);
      });
    });
    this.session.send(req);
    const init: RTCRtpTransceiverInit = { direction: "sendonly", streams: [new MediaStream([track])] };
    if (layers.length)
      init.sendEncodings = layers.map((l) => ({
        rid: l.rid,
        scaleResolutionDownBy: (info.height ?? l.height) / l.height,
        maxBitrate: l.maxBitrateBps,
      }));
    const transceiver = pc.addTransceiver(track, init);
    pub.sender = transceiver.sender;
    if (kind === "video") this.#preferCodec(transceiver, codec);
    this.session.negotiate();
    await published;
    return pub;
  }

  /** Put the preferred codec first, among the codecs the room allows. */
  #preferCodec(transceiver: RTCRtpTransceiver, preferred?: string): void {
    const caps = RTCRtpSender.getCapabilities?.("video")?.codecs;
    if (!caps || !transceiver.setCodecPreferences) return;
    const allowed = new Set((this.session.room?.enabledCodecs ?? []).map((c) => `video/${c}`.toLowerCase()));
    const media = caps.filter((c) => !/rtx|red|ulpfec|flexfec/i.test(c.mimeType));
    const ok = media.filter((c) => allowed.size === 0 || allowed.has(c.mimeType.toLowerCase()));
    if (ok.length === 0) return; // the server answers codec_not_allowed, with the list
    const want = preferred ? `video/${preferred}`.toLowerCase() : undefined;
    ok.sort((a, b) => Number(b.mimeType.toLowerCase() === want) - Number(a.mimeType.toLowerCase() === want));
    const rest = caps.filter((c) => /rtx|red|ulpfec|flexfec/i.test(c.mimeType));
    transceiver.setCodecPreferences([...ok, ...rest]);
  }

  /** @internal */
  _unpublish(trackOrPub: MediaStreamTrack | LocalTrackPublication, stop: boolean): void {
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

  readonly #layerUpdates = new WeakMap<LocalTrackPublication, Promise<void>>();

  /** Dynacast: encode only the layers somebody receives. One setParameters at a time per
   * sender, each on fresh parameters (overlapping calls fail in the browser). */
  #setActiveLayers(pub: LocalTrackPublication, layers: { rid: string; active: boolean }[]): void {
    const run = async () => {
      const sender = pub.sender;
      if (!sender) return;
      const params = sender.getParameters();
      let changed = false;
      for (const enc of params.encodings ?? []) {
        const l = layers.find((l) => l.rid === enc.rid);
        if (l && enc.active !== l.active) {
          enc.active = l.active;
          changed = true;
        }
      }
      if (changed) await sender.setParameters(params);
    };
    const next = (this.#layerUpdates.get(pub) ?? Promise.resolve()).then(run).catch((e: unknown) =>
      this.emit("error", new SwitchyardError("internal", `setting active layers: ${String(e)}`)),
    );
    this.#layerUpdates.set(pub, next);
  }

  #remote(info: ParticipantInfo): RemoteParticipant {
    let p = this.remoteParticipants.get(info.sid);
    if (!p) this.remoteParticipants.set(info.sid, (p = new RemoteParticipant(info)));
    else p.info = info;
    return p;
  }

  #wire(): void {
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
      this.#setReceived(pub, p, undefined);
      pub.detach();
      p.tracks.delete(t.sid);
      this.emit("trackUnpublished", pub, p);
    });
    const mute = (muted: boolean) => (t: TrackInfo, info: ParticipantInfo) => {
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
        this.localParticipant!.tracks.set(t.sid, pub);
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
      if (p && pub && !m.subscribed) this.#setReceived(pub, p, undefined);
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
      const all = new Map<string, Participant>(this.participants.map((p) => [p.sid, p]));
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
      this.emit("dataReceived", payload, participant ? this.remoteParticipants.get(participant.sid) : undefined, info);
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
}
