// ../demo/app.ts
import {
  Room,
  createLocalTracks,
  defaultSignalingUrl,
  getLocalDevices
} from "/switchyard.js";
var $ = (id) => document.getElementById(id);
var params = new URLSearchParams(location.search);
var log = (s) => {
  $("log").textContent += `${s}
`;
};
var demo = { data: [] };
window.demo = demo;
$("room").value = params.get("room") ?? "demo";
$("name").value = params.get("identity") ?? `guest-${Math.random().toString(36).slice(2, 6)}`;
$("url").value = params.get("url") ?? "";
$("token").value = params.get("token") ?? "";
$("token-endpoint").value = params.get("tokenEndpoint") ?? "";
if (params.get("url") || params.get("token") || params.get("tokenEndpoint")) $("cluster").open = true;
var preview = [];
async function startPreview() {
  for (const t of preview) t.stop();
  const cam = $("camera").value;
  const mic = $("mic").value;
  preview = await createLocalTracks({
    video: { width: 1280, height: 720, ...cam ? { deviceId: { exact: cam } } : {} },
    audio: mic ? { deviceId: { exact: mic } } : true
  });
  $("preview").srcObject = new MediaStream(preview.filter((t) => t.kind === "video"));
}
async function listDevices() {
  for (const [kind, id] of [["videoinput", "camera"], ["audioinput", "mic"]]) {
    const sel = $(id);
    const current = sel.value;
    sel.replaceChildren(
      ...(await getLocalDevices(kind)).map((d, i) => new Option(d.label || `${kind} ${i + 1}`, d.deviceId, false, d.deviceId === current))
    );
  }
}
function signalingUrl() {
  const given = $("url").value.trim();
  if (given) return given;
  return defaultSignalingUrl(location);
}
async function token(room, identity) {
  const given = $("token").value.trim();
  if (given) return given;
  const endpoint = $("token-endpoint").value.trim() || "/dev/token";
  const u = new URL(endpoint, location.href);
  u.searchParams.set("room", room);
  u.searchParams.set("identity", identity);
  const r = await fetch(u);
  if (!r.ok) throw new Error(`token endpoint ${u.origin}${u.pathname} answered ${r.status}: ${await r.text()}`);
  const body = await r.text();
  try {
    const j = JSON.parse(body);
    return j.token ?? j.accessToken ?? body;
  } catch {
    return body.trim();
  }
}
function tile(p) {
  let el = document.querySelector(`.tile[data-sid="${p.sid}"]`);
  if (el) return el;
  el = document.createElement("div");
  el.className = "tile";
  el.dataset.sid = p.sid;
  el.dataset.identity = p.identity;
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = p.isLocal ? `${p.name} (you)` : p.name;
  const stats = document.createElement("span");
  stats.className = "stats";
  el.append(video, name, stats);
  $("grid").append(el);
  return el;
}
function render(room) {
  const local = room.localParticipant;
  if (local) {
    const v = tile(local).querySelector("video");
    const cam = local.getTrackPublication("screen_share") ?? local.getTrackPublication("camera");
    const track = cam?.mediaTrack;
    if (track && v.srcObject?.getVideoTracks()[0] !== track) v.srcObject = new MediaStream([track]);
    $("mute-mic").textContent = local.isMicrophoneEnabled ? "Mute" : "Unmute";
    $("mute-mic").classList.toggle("off", !local.isMicrophoneEnabled);
    $("toggle-camera").textContent = local.isCameraEnabled ? "Stop camera" : "Start camera";
    $("toggle-camera").classList.toggle("off", !local.isCameraEnabled);
    $("share-screen").textContent = local.isScreenShareEnabled ? "Stop sharing" : "Share screen";
  }
  for (const el of document.querySelectorAll(".tile")) {
    const sid = el.dataset.sid;
    const here = sid === local?.sid || room.remoteParticipants.has(sid);
    if (!here) el.remove();
    else el.classList.toggle("speaking", room.activeSpeakers.some((p) => p.sid === sid));
  }
}
function attach(room, pub, p) {
  if (pub.kind === "audio") {
    const a = pub.attach();
    a.dataset.sid = pub.sid;
    document.body.append(a);
    return;
  }
  const t = tile(p);
  if (pub.source === "screen_share") {
    let s = document.querySelector(`.tile[data-track="${pub.sid}"]`);
    if (!s) {
      s = t.cloneNode(true);
      s.dataset.sid = p.sid;
      s.dataset.track = pub.sid;
      s.querySelector(".name").textContent = `${p.name} (screen)`;
      $("grid").append(s);
    }
    pub.attach(s.querySelector("video"));
  } else pub.attach(t.querySelector("video"));
  render(room);
}
async function showStats(room) {
  const s = await room.getStats();
  demo.stats = s;
  const kbps = (b) => `${Math.round(b / 1e3)} kbit/s`;
  const local = room.localParticipant;
  for (const el of document.querySelectorAll(".tile")) {
    const sid = el.dataset.sid;
    const lines = [];
    if (sid === local?.sid) {
      for (const o of s.outbound.filter((o2) => o2.kind === "video"))
        lines.push(`\u2191 ${o.rid ?? "-"} ${o.frameWidth ?? 0}x${o.frameHeight ?? 0} ${kbps(o.bitrateBps)} ${o.codec ?? ""}`);
      lines.push(`rtt ${s.rttMs ?? "?"} ms`);
    } else {
      const p = room.remoteParticipants.get(sid);
      for (const i of s.inbound.filter((i2) => i2.participantIdentity === p?.identity))
        lines.push(`\u2193 ${i.kind} ${i.codec ?? ""} ${kbps(i.bitrateBps)} loss ${(i.lossFraction * 100).toFixed(1)}%${i.quality ? ` ${i.quality}` : ""}${i.frameHeight ? ` ${i.frameWidth}x${i.frameHeight}` : ""}`);
    }
    el.querySelector(".stats").textContent = lines.join("\n");
  }
}
function chatLine(s) {
  demo.data.push(s);
  const div = document.createElement("div");
  div.textContent = s;
  $("chat").append(div);
  $("chat").scrollTop = 1e9;
}
async function join() {
  const roomName = $("room").value.trim();
  const identity = $("name").value.trim();
  $("status").textContent = "connecting\u2026";
  const room = new Room({
    videoCaptureDefaults: $("camera").value ? { deviceId: { exact: $("camera").value } } : {}
  });
  demo.room = room;
  window.switchyardRoom = room;
  room.on("connectionStateChanged", (s) => $("status").textContent = `${s} \u2014 room ${roomName} as ${identity}`);
  room.on("participantConnected", (p) => {
    log(`${p.identity} joined`);
    tile(p);
    render(room);
  });
  room.on("participantDisconnected", (p, reason) => {
    log(`${p.identity} left (${reason})`);
    render(room);
  });
  room.on("trackSubscribed", (_t, pub, p) => attach(room, pub, p));
  room.on("trackUnsubscribed", (_t, pub) => {
    for (const el of pub.detach()) if (el instanceof HTMLAudioElement) el.remove();
    document.querySelector(`.tile[data-track="${pub.sid}"]`)?.remove();
  });
  room.on("trackMuted", (pub, p) => log(`${p.identity} muted ${pub.source}`));
  room.on("trackUnmuted", (pub, p) => log(`${p.identity} unmuted ${pub.source}`));
  room.on("activeSpeakersChanged", () => render(room));
  room.on("localTrackPublished", () => render(room));
  room.on("localTrackUnpublished", () => render(room));
  room.on("dataReceived", (payload, p, info) => {
    if (info.topic === "chat") chatLine(`${p?.name ?? info.identity}: ${new TextDecoder().decode(payload)}`);
  });
  room.on("reconnecting", () => log("reconnecting\u2026"));
  room.on("reconnected", (how) => log(`reconnected (${how})`));
  room.on("disconnected", (reason) => {
    log(`disconnected (${reason})`);
    $("status").textContent = `disconnected (${reason})`;
  });
  room.on("error", (e) => log(`error ${e.message}`));
  try {
    await room.connect(signalingUrl(), await token(roomName, identity));
  } catch (e) {
    $("status").textContent = `could not join: ${e.message}`;
    log(`could not join: ${e.message}`);
    return;
  }
  $("prejoin").style.display = "none";
  $("call").style.display = "grid";
  log(`joined ${room.name} on ${room.session.joined?.node} with ${room.remoteParticipants.size} others`);
  for (const p of room.remoteParticipants.values()) tile(p);
  $("preview").srcObject = null;
  const local = room.localParticipant;
  await Promise.all(preview.map((t) => local.publishTrack(t, { source: t.kind === "video" ? "camera" : "microphone" })));
  preview = [];
  render(room);
  setInterval(() => void showStats(room), 1e3);
}
$("join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  void join();
});
$("camera").addEventListener("change", () => void startPreview());
$("mic").addEventListener("change", () => void startPreview());
$("mute-mic").onclick = async () => {
  const l = demo.room?.localParticipant;
  if (l) await l.setMicrophoneEnabled(!l.isMicrophoneEnabled);
  if (demo.room) render(demo.room);
};
$("toggle-camera").onclick = async () => {
  const l = demo.room?.localParticipant;
  if (l) await l.setCameraEnabled(!l.isCameraEnabled);
  if (demo.room) render(demo.room);
};
$("share-screen").onclick = async () => {
  const l = demo.room?.localParticipant;
  if (l) await l.setScreenShareEnabled(!l.isScreenShareEnabled).catch((e) => log(`screen share: ${e.message}`));
  if (demo.room) render(demo.room);
};
$("toggle-stats").onclick = () => document.body.classList.toggle("show-stats");
$("leave").onclick = () => {
  demo.room?.disconnect();
  $("grid").replaceChildren();
};
$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("chat-text");
  if (!input.value || !demo.room) return;
  demo.room.localParticipant?.publishData(input.value, { topic: "chat" });
  chatLine(`${demo.room.localParticipant?.name ?? "me"} (you): ${input.value}`);
  input.value = "";
});
try {
  await startPreview();
  await listDevices();
} catch (e) {
  log(`no camera or microphone: ${e.message}`);
}
if (params.get("identity")) await join();
