// @switchyard/react: React bindings for @switchyard/client.
//
//   <RoomProvider serverUrl="ws://localhost:7880" token={token} video audio>
//     <GridLayout />
//     <ControlBar />
//     <RoomAudioRenderer />
//   </RoomProvider>
//
// Hooks re-render on the room events that change what they return; components attach
// tracks to their elements (so adaptive stream sees their size) and detach on unmount.

import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  type CSSProperties,
  type ReactNode,
} from "react";
import {
  RemoteTrackPublication,
  Room,
  type ConnectionState,
  type DisconnectReason,
  type LocalParticipant,
  type Participant,
  type RoomEvents,
  type RoomOptions,
  type TrackPublication,
  type TrackSource,
} from "@switchyard/client";

const RoomContext = createContext<Room | undefined>(undefined);

export interface RoomProviderProps {
  /** A room you manage; or give `serverUrl` and `token` and the provider connects one. */
  room?: Room;
  serverUrl?: string;
  token?: string;
  options?: RoomOptions;
  /** Publish the camera / microphone once connected. */
  video?: boolean;
  audio?: boolean;
  onConnected?: (room: Room) => void;
  onDisconnected?: (reason: DisconnectReason) => void;
  onError?: (e: Error) => void;
  children?: ReactNode;
}

/** Provides a Room to the hooks and components below it; connects it when given a URL and
 * token, and disconnects it on unmount. */
export function RoomProvider(props: RoomProviderProps) {
  const { serverUrl, token, video, audio } = props;
  const own = useMemo(() => props.room ?? new Room(props.options), [props.room]);
  const callbacks = useRef(props);
  callbacks.current = props;
  useEffect(() => {
    if (props.room || !serverUrl || !token) return;
    let cancelled = false;
    const offDisconnected = own.on("disconnected", (r) => callbacks.current.onDisconnected?.(r));
    own
      .connect(serverUrl, token)
      .then(async () => {
        if (cancelled) return;
        callbacks.current.onConnected?.(own);
        if (audio) await own.localParticipant?.setMicrophoneEnabled(true);
        if (video) await own.localParticipant?.setCameraEnabled(true);
      })
      .catch((e: Error) => callbacks.current.onError?.(e));
    return () => {
      cancelled = true;
      offDisconnected();
      own.disconnect();
    };
  }, [own, serverUrl, token]);
  return <RoomContext.Provider value={own}>{props.children}</RoomContext.Provider>;
}

/** The room of the nearest RoomProvider. */
export function useRoom(): Room {
  const room = useContext(RoomContext);
  if (!room) throw new Error("useRoom: no <RoomProvider> above this component");
  return room;
}

/** Re-render when any of `events` fires on the room. */
function useRoomEvents(room: Room, events: (keyof RoomEvents)[]): number {
  const [version, setVersion] = useState(0);
  useEffect(() => {
    const bump = () => setVersion((v) => v + 1);
    const offs = events.map((e) => room.on(e, bump as RoomEvents[typeof e]));
    return () => offs.forEach((off) => off());
  }, [room, events.join()]);
  return version;
}

const PARTICIPANT_EVENTS: (keyof RoomEvents)[] = [
  "connectionStateChanged",
  "participantConnected",
  "participantDisconnected",
  "participantMetadataChanged",
  "trackPublished",
  "trackUnpublished",
  "trackSubscribed",
  "trackUnsubscribed",
  "trackMuted",
  "trackUnmuted",
  "localTrackPublished",
  "localTrackUnpublished",
  "activeSpeakersChanged",
  "connectionQualityChanged",
  "reconnected",
];

export function useConnectionState(): ConnectionState {
  const room = useRoom();
  useRoomEvents(room, ["connectionStateChanged"]);
  return room.state;
}

/** Everyone in the room, the local participant first. */
export function useParticipants(): Participant[] {
  const room = useRoom();
  useRoomEvents(room, PARTICIPANT_EVENTS);
  return room.participants;
}

export interface LocalParticipantState {
  localParticipant?: LocalParticipant;
  isMicrophoneEnabled: boolean;
  isCameraEnabled: boolean;
  isScreenShareEnabled: boolean;
}

export function useLocalParticipant(): LocalParticipantState {
  const room = useRoom();
  useRoomEvents(room, ["connectionStateChanged", "localTrackPublished", "localTrackUnpublished", "trackMuted", "trackUnmuted"]);
  const lp = room.localParticipant;
  return {
    localParticipant: lp,
    isMicrophoneEnabled: lp?.isMicrophoneEnabled ?? false,
    isCameraEnabled: lp?.isCameraEnabled ?? false,
    isScreenShareEnabled: lp?.isScreenShareEnabled ?? false,
  };
}

export function useActiveSpeakers(): Participant[] {
  const room = useRoom();
  useRoomEvents(room, ["activeSpeakersChanged", "participantDisconnected"]);
  return room.activeSpeakers;
}

export interface TrackReference {
  participant: Participant;
  publication: TrackPublication;
  source: TrackSource;
}

/** Publications with media here (ours, or subscribed), of the given sources. */
export function useTracks(sources: TrackSource[] = ["camera", "microphone", "screen_share"]): TrackReference[] {
  const room = useRoom();
  useRoomEvents(room, PARTICIPANT_EVENTS);
  return room.participants.flatMap((participant) =>
    participant.trackPublications
      .filter((publication) => sources.includes(publication.source) && publication.track)
      .map((publication) => ({ participant, publication, source: publication.source })),
  );
}

export interface DataMessage {
  from?: Participant;
  identity: string;
  topic?: string;
  payload: Uint8Array;
  text: string;
}

/** Messages of `topic` (every topic when absent), and a `send` for it. */
export function useDataChannel(topic?: string, onMessage?: (m: DataMessage) => void) {
  const room = useRoom();
  const [messages, setMessages] = useState<DataMessage[]>([]);
  const cb = useRef(onMessage);
  cb.current = onMessage;
  useEffect(
    () =>
      room.on("dataReceived", (payload, from, info) => {
        if (topic !== undefined && info.topic !== topic) return;
        const m: DataMessage = { from, identity: info.identity, topic: info.topic, payload, text: new TextDecoder().decode(payload) };
        setMessages((all) => [...all, m]);
        cb.current?.(m);
      }),
    [room, topic],
  );
  const send = useCallback(
    (data: string | Uint8Array, opts: { reliable?: boolean; to?: string[] } = {}) =>
      room.localParticipant?.publishData(data, { ...opts, ...(topic !== undefined ? { topic } : {}) }),
    [room, topic],
  );
  return { messages, send };
}

function useAttached<E extends HTMLMediaElement>(publication: TrackPublication | undefined) {
  const ref = useRef<E>(null);
  const track = publication?.track;
  useEffect(() => {
    const el = ref.current;
    if (!el || !publication || !track) return;
    if (publication instanceof RemoteTrackPublication) {
      // Through the SDK, so adaptive stream follows this element's size and visibility.
      publication.attach(el);
      return () => void publication.detach(el);
    }
    el.srcObject = new MediaStream([track]);
    return () => void (el.srcObject = null);
  }, [publication, track]);
  return ref;
}

export function VideoTrack(props: { trackRef?: TrackReference; publication?: TrackPublication; className?: string; style?: CSSProperties }) {
  const pub = props.publication ?? props.trackRef?.publication;
  const ref = useAttached<HTMLVideoElement>(pub);
  return <video ref={ref} autoPlay playsInline muted className={props.className} style={props.style} data-track={pub?.sid} />;
}

export function AudioTrack(props: { trackRef?: TrackReference; publication?: TrackPublication }) {
  const pub = props.publication ?? props.trackRef?.publication;
  const ref = useAttached<HTMLAudioElement>(pub);
  return <audio ref={ref} autoPlay data-track={pub?.sid} />;
}

/** One participant: its camera (or screen share), its name, speaking and muted marks. */
export function ParticipantTile(props: { participant: Participant; source?: TrackSource; className?: string }) {
  const { participant } = props;
  const room = useRoom();
  useRoomEvents(room, PARTICIPANT_EVENTS);
  const pub = participant.getTrackPublication(props.source ?? "camera");
  const shown = pub?.track && !pub.isMuted;
  return (
    <div
      className={props.className ?? "sy-tile"}
      data-participant={participant.identity}
      data-speaking={participant.isSpeaking || undefined}
      style={{ position: "relative", background: "#000", aspectRatio: "16 / 9", outline: participant.isSpeaking ? "3px solid #3ad07a" : undefined }}
    >
      {shown ? <VideoTrack publication={pub} style={{ width: "100%", height: "100%", objectFit: "cover" }} /> : null}
      <span style={{ position: "absolute", left: 8, bottom: 6, color: "#fff", background: "#000a", padding: "0 4px" }}>
        {participant.name}
        {participant.isLocal ? " (you)" : ""}
        {participant.isMicrophoneEnabled ? "" : " 🔇"}
      </span>
    </div>
  );
}

/** A tile per participant (and per screen share), in a responsive grid. */
export function GridLayout(props: { className?: string; style?: CSSProperties }) {
  const participants = useParticipants();
  const tiles = participants.flatMap((p) => [
    <ParticipantTile key={`${p.sid}:camera`} participant={p} />,
    ...(p.isScreenShareEnabled ? [<ParticipantTile key={`${p.sid}:screen`} participant={p} source="screen_share" />] : []),
  ]);
  return (
    <div
      className={props.className ?? "sy-grid"}
      style={{ display: "grid", gridTemplateColumns: "repeat(auto-fill, minmax(240px, 1fr))", gap: 8, ...props.style }}
    >
      {tiles}
    </div>
  );
}

/** Microphone, camera, screen share and leave buttons for the local participant. */
export function ControlBar(props: { className?: string }) {
  const room = useRoom();
  const { localParticipant, isMicrophoneEnabled, isCameraEnabled, isScreenShareEnabled } = useLocalParticipant();
  const run = (f?: () => Promise<unknown>) => () => void f?.().catch((e: Error) => room.emit("error", e as never));
  return (
    <div className={props.className ?? "sy-controls"} style={{ display: "flex", gap: 8 }}>
      <button data-control="microphone" onClick={run(() => localParticipant!.setMicrophoneEnabled(!isMicrophoneEnabled))} disabled={!localParticipant}>
        {isMicrophoneEnabled ? "Mute" : "Unmute"}
      </button>
      <button data-control="camera" onClick={run(() => localParticipant!.setCameraEnabled(!isCameraEnabled))} disabled={!localParticipant}>
        {isCameraEnabled ? "Stop camera" : "Start camera"}
      </button>
      <button data-control="screen" onClick={run(() => localParticipant!.setScreenShareEnabled(!isScreenShareEnabled))} disabled={!localParticipant}>
        {isScreenShareEnabled ? "Stop sharing" : "Share screen"}
      </button>
      <button data-control="leave" onClick={() => room.disconnect()}>
        Leave
      </button>
    </div>
  );
}

/** Plays every remote participant's audio (renders hidden <audio> elements). */
export function RoomAudioRenderer() {
  const tracks = useTracks(["microphone", "screen_share_audio"]).filter((t) => !t.participant.isLocal);
  return (
    <div style={{ display: "none" }}>
      {tracks.map((t) => (
        <AudioTrack key={t.publication.sid} trackRef={t} />
      ))}
    </div>
  );
}

export { RoomContext };
