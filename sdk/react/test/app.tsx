// A tiny React app on @switchyard/react, as an app author would write it: the provider
// connects and publishes, the grid renders a tile per participant.
import { createRoot } from "react-dom/client";
import {
  ControlBar,
  GridLayout,
  RoomAudioRenderer,
  RoomProvider,
  useActiveSpeakers,
  useConnectionState,
  useDataChannel,
  useLocalParticipant,
  useParticipants,
  useTracks,
} from "../src/index.js";

declare global {
  interface Window {
    testConfig: { url: string; room: string; identity: string };
    sendChat?: (text: string) => void;
  }
}

function Status() {
  const state = useConnectionState();
  const participants = useParticipants();
  const speakers = useActiveSpeakers();
  const { isCameraEnabled } = useLocalParticipant();
  const video = useTracks(["camera"]);
  return (
    <p id="status" data-state={state} data-participants={participants.length} data-videos={video.length} data-camera={String(isCameraEnabled)}>
      {state}: {participants.map((p) => p.identity).join(", ")}; speaking: {speakers.map((p) => p.identity).join(", ")}
    </p>
  );
}

function Chat() {
  const { messages, send } = useDataChannel("chat");
  window.sendChat = (t) => send(t);
  return (
    <ul id="chat">
      {messages.map((m, i) => (
        <li key={i}>
          {m.identity}: {m.text}
        </li>
      ))}
    </ul>
  );
}

const { url, room, identity } = window.testConfig;
const token = await (await fetch(`/dev/token?room=${room}&identity=${identity}`)).text();
const root = document.createElement("div");
document.body.append(root);
createRoot(root).render(
  <RoomProvider serverUrl={url} token={token} video audio options={{ videoCaptureDefaults: { width: 640, height: 360 } }}>
    <Status />
    <GridLayout />
    <ControlBar />
    <RoomAudioRenderer />
    <Chat />
  </RoomProvider>,
);
