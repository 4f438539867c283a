// Participants and their track publications, as the application sees them.

import type { ClientMessage, ConnectionQuality, ParticipantInfo, TrackInfo, TrackKind, TrackSource, VideoQuality } from "./protocol.js";

/** What `Room` gives a publication to talk to the server and the peer connection. */
export interface PublicationLink {
  send(msg: import("./protocol.js").ClientMessage): void;
  adaptiveStream: boolean;
  /** Called when a local publication's mute state changes. */
  localMuteChanged(pub: LocalTrackPublication): void;
}

export abstract class TrackPublication {
  info: TrackInfo;
  constructor(info: TrackInfo) {
    this.info = info;
  }
  get sid(): string {
    return this.info.sid;
  }
  get name(): string {
    return this.info.name;
  }
  get kind(): TrackKind {
    return this.info.kind;
  }
  get source(): TrackSource {
    return this.info.source;
  }
  get isMuted(): boolean {
    return this.info.muted;
  }
  /** The media, when there is some here (published by us, or subscribed). */
  abstract get track(): MediaStreamTrack | undefined;
}

export class LocalTrackPublication extends TrackPublication {
  readonly mediaTrack: MediaStreamTrack;
  sender?: RTCRtpSender;
  readonly #link: PublicationLink;

  constructor(info: TrackInfo, track: MediaStreamTrack, link: PublicationLink) {
    super(info);
    this.mediaTrack = track;
    this.#link = link;
  }
  override get track(): MediaStreamTrack {
    return this.mediaTrack;
  }
  /** Stop sending media (the track keeps running for a quick unmute) and tell the room. */
  mute(): void {
    this.#setMuted(true);
  }
  unmute(): void {
    this.#setMuted(false);
  }
  #setMuted(muted: boolean): void {
    if (this.info.muted === muted) return;
    this.mediaTrack.enabled = !muted;
    this.info = { ...this.info, muted };
    if (this.info.sid) this.#link.send({ type: "mute_track", trackSid: this.info.sid, muted });
    this.#link.localMuteChanged(this);
  }
}

export class RemoteTrackPublication extends TrackPublication {
  /** The received track, while subscribed. */
  mediaTrack?: MediaStreamTrack;
  /** Whether the server forwards this track to us. */
  subscribed = false;
  /** The server paused its video (`stream_state`), and why. */
  streamState: "active" | "paused" = "active";
  pauseReason?: string;
  /** The layer the server last said it sends (absent until it says). */
  quality?: VideoQuality;
  readonly participantSid: string;
  readonly #link: PublicationLink;
  readonly #elements = new Set<HTMLMediaElement>();
  readonly #visible = new Map<HTMLMediaElement, boolean>();
  #resize?: ResizeObserver;
  #intersect?: IntersectionObserver;
  #timer?: ReturnType<typeof setTimeout>;
  #lastSettings = "";
  #onVisibility = () => this.#schedule();

  constructor(info: TrackInfo, participantSid: string, link: PublicationLink) {
    super(info);
    this.participantSid = participantSid;
    this.#link = link;
  }
  override get track(): MediaStreamTrack | undefined {
    return this.mediaTrack;
  }

  /** Subscribe or unsubscribe (with `autoSubscribe: false`, nothing is received until this). */
  setSubscribed(subscribed: boolean): void {
    this.#link.send({ type: "update_subscription", trackSids: [this.sid], subscribe: subscribed });
  }

  /** The best layer wanted (adaptive stream picks by size otherwise). */
  setVideoQuality(quality: VideoQuality): void {
    this.#link.send({ type: "update_track_settings", trackSids: [this.sid], quality });
  }

  /** Show the track in `element` (a new `<video>` or `<audio>` when absent). With adaptive
   * stream, the element's size and visibility choose the layer the server sends. */
  attach(element?: HTMLMediaElement): HTMLMediaElement {
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
  detach(element?: HTMLMediaElement): HTMLMediaElement[] {
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

  get attachedElements(): HTMLMediaElement[] {
    return [...this.#elements];
  }

  /** A new received track (subscribe, or a reconnect): every attached element gets it. */
  setMediaTrack(track: MediaStreamTrack | undefined): void {
    this.mediaTrack = track;
    this.subscribed = track !== undefined;
    for (const el of this.#elements) el.srcObject = track ? new MediaStream([track]) : null;
    this.#lastSettings = "";
    this.#schedule();
  }

  #observe(el: HTMLMediaElement): void {
    this.#resize ??= new ResizeObserver(() => this.#schedule());
    this.#intersect ??= new IntersectionObserver((entries) => {
      for (const e of entries) this.#visible.set(e.target as HTMLMediaElement, e.isIntersecting);
      this.#schedule();
    });
    this.#resize.observe(el);
    this.#intersect.observe(el);
    if (this.#elements.size === 1) document.addEventListener("visibilitychange", this.#onVisibility);
    this.#schedule();
  }

  #schedule(): void {
    if (this.kind !== "video" || !this.#link.adaptiveStream || !this.info.sid) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#report(), 100);
  }

  /** Tell the server the largest size this track is shown at, or that it is not shown. */
  #report(): void {
    if (!this.subscribed) return;
    const shown = [...this.#elements].filter(
      (el) => this.#visible.get(el) !== false && document.visibilityState !== "hidden" && el.isConnected,
    );
    const dpr = globalThis.devicePixelRatio || 1;
    let width = 0;
    let height = 0;
    for (const el of shown) {
      width = Math.max(width, Math.round(el.clientWidth * dpr));
      height = Math.max(height, Math.round(el.clientHeight * dpr));
    }
    if (this.#elements.size === 0 && this.#lastSettings === "") return;
    const msg: ClientMessage =
      shown.length === 0 || width === 0 || height === 0
        ? { type: "update_track_settings", trackSids: [this.sid], disabled: true }
        : { type: "update_track_settings", trackSids: [this.sid], disabled: false, width, height };
    const key = JSON.stringify(msg);
    if (key === this.#lastSettings) return;
    this.#lastSettings = key;
    this.#link.send(msg);
  }
}

export abstract class Participant {
  info: ParticipantInfo;
  audioLevel = 0;
  isSpeaking = false;
  connectionQuality: ConnectionQuality | "unknown" = "unknown";
  constructor(info: ParticipantInfo) {
    this.info = info;
  }
  get sid(): string {
    return this.info.sid;
  }
  get identity(): string {
    return this.info.identity;
  }
  get name(): string {
    return this.info.name ?? this.info.identity;
  }
  get metadata(): string | undefined {
    return this.info.metadata;
  }
  abstract get isLocal(): boolean;
  abstract get trackPublications(): TrackPublication[];
  /** The publication of `source`, if any. */
  getTrackPublication(source: TrackSource): TrackPublication | undefined {
    return this.trackPublications.find((p) => p.source === source);
  }
  get isCameraEnabled(): boolean {
    const p = this.getTrackPublication("camera");
    return !!p && !p.isMuted;
  }
  get isMicrophoneEnabled(): boolean {
    const p = this.getTrackPublication("microphone");
    return !!p && !p.isMuted;
  }
  get isScreenShareEnabled(): boolean {
    return !!this.getTrackPublication("screen_share");
  }
}

export class RemoteParticipant extends Participant {
  readonly tracks = new Map<string, RemoteTrackPublication>();
  override get isLocal(): false {
    return false;
  }
  override get trackPublications(): RemoteTrackPublication[] {
    return [...this.tracks.values()];
  }
}
