// The protocol layer (Session) against a fake socket and a fake WebRTC host, on a virtual clock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Session, SwitchyardError } from "../../dist/index.js";
import { Clock, FakeHost, FakeSocket, joined, participant, settle, track } from "./fakes.mjs";

function setup(opts = {}) {
  const clock = new Clock();
  const host = new FakeHost();
  const sockets = [];
  const session = new Session(host, {
    socketFactory: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    ...opts,
  });
  const events = [];
  for (const e of [
    "connectionStateChanged", "participantConnected", "participantDisconnected", "trackPublished", "trackUnpublished",
    "trackMuted", "trackUnmuted", "localTrackPublished", "activeSpeakersChanged", "connectionQualityChanged",
    "reconnecting", "reconnected", "disconnected", "error",
  ]) {
    session.on(e, (...args) => events.push([e, ...args.map((a) => (a && typeof a === "object" ? (a.sid ?? a.participant?.sid ?? a.code ?? a) : a))]));
  }
  return { clock, host, sockets, session, events };
}

async function connected(t = setup(), others = []) {
  const p = t.session.connect("ws://node.test:7880", "tok en");
  await settle();
  t.sockets[0].open();
  t.sockets[0].receive(joined("PA_me", others));
  await p;
  await settle();
  return t;
}

test("connect puts the token in ?access_token=, sends join, and prepares the peer connection first", async () => {
  const t = setup();
  const p = t.session.connect("https://node.test:7880/", "tok en");
  await settle();
  const s = t.sockets[0];
  assert.equal(s.url, "wss://node.test:7880/rtc?access_token=tok%20en");
  s.open();
  assert.deepEqual(s.sent[0], { type: "join", protocolVersion: 1, autoSubscribe: true, sdk: { name: "js", version: "0.1.0" } });
  // A server offer right behind `joined` must find the peer connection already built.
  s.receive(joined("PA_me", [participant("PA_bob", "bob", [track("TR_a")])]));
  s.receive({ type: "offer", sdp: "server-offer", id: 1 });
  const j = await p;
  await settle();
  assert.equal(j.participant.sid, "PA_me");
  assert.deepEqual(t.host.calls.slice(0, 2), [["prepare", "join", "PA_me"], ["answerOffer", "server-offer"]]);
  assert.deepEqual(s.sent.at(-1), { type: "answer", sdp: "answer-to-server-offer", id: 1 });
  assert.equal(t.session.state, "connected");
  assert.ok(t.events.some(([e, sid]) => e === "participantConnected" && sid === "PA_bob"));
  assert.ok(t.events.some(([e, sid]) => e === "trackPublished" && sid === "TR_a"));
});

test("a refused join carries the server's code; a retry hint is waited for, then the join is tried again", async () => {
  const t = setup({ joinRetries: 1 });
  const p = t.session.connect("ws://n", "t");
  await settle();
  t.sockets[0].open();
  t.sockets[0].receive({ type: "error", code: "node_full", message: "full", retryAfterMs: 700 });
  await settle();
  assert.equal(t.sockets.length, 1, "no second socket before the hint elapsed");
  await t.clock.advance(699);
  assert.equal(t.sockets.length, 1);
  await t.clock.advance(1);
  t.sockets[1].open();
  t.sockets[1].receive({ type: "error", code: "node_full", message: "still full", retryAfterMs: 700 });
  await assert.rejects(p, (e) => e instanceof SwitchyardError && e.code === "node_full" && e.retryAfterMs === 700);
  assert.equal(t.session.state, "disconnected");
});

test("bad signaling URLs fail with a clear error before any socket", async () => {
  const t = setup();
  await assert.rejects(t.session.connect("node.test:7880", "t"), /must start with ws:\/\/, wss:\/\/, http:\/\/ or https:\/\//);
  assert.equal(t.sockets.length, 0);
});

test("one offer of ours in flight at a time; a stale answer is ignored", async () => {
  const t = await connected();
  const s = t.sockets[0];
  t.session.negotiate();
  await settle();
  t.session.negotiate();
  await settle();
  const offers = () => s.sent.filter((m) => m.type === "offer");
  assert.equal(offers().length, 1, "the second change waits for the first answer");
  assert.equal(offers()[0].id, 1);
  s.receive({ type: "answer", sdp: "old", id: 0 });
  await settle();
  assert.equal(offers().length, 1, "an answer to another offer id is not ours");
  s.receive({ type: "answer", sdp: "a1", id: 1 });
  await settle();
  assert.deepEqual(t.host.calls.filter((c) => c[0] === "applyAnswer"), [["applyAnswer", "a1"]]);
  assert.equal(offers().length, 2);
  assert.equal(offers()[1].id, 2);
});

test("glare: a server offer that crosses ours is dropped (the server yields), the next one is answered", async () => {
  const t = await connected();
  const s = t.sockets[0];
  t.session.negotiate();
  await settle();
  s.receive({ type: "offer", sdp: "crossing", id: 4 });
  await settle();
  assert.ok(!s.sent.some((m) => m.type === "answer"), "no answer to a withdrawn offer");
  s.receive({ type: "answer", sdp: "a1", id: 1 });
  s.receive({ type: "offer", sdp: "again", id: 5 });
  await settle();
  assert.deepEqual(s.sent.filter((m) => m.type === "answer"), [{ type: "answer", sdp: "answer-to-again", id: 5 }]);
});

test("an offer the server refuses is rolled back, and the next change offers again", async () => {
  const t = await connected();
  const s = t.sockets[0];
  t.session.negotiate();
  await settle();
  s.receive({ type: "error", code: "negotiation_failed", message: "bad sdp", requestType: "offer" });
  await settle();
  assert.ok(t.host.calls.some((c) => c[0] === "rollback"));
  assert.ok(t.events.some(([e, c]) => e === "error" && c === "negotiation_failed"));
  t.session.negotiate();
  await settle();
  assert.equal(s.sent.filter((m) => m.type === "offer").length, 2);
});

test("room events: joins, tracks, mutes, speakers, quality, departures", async () => {
  const t = await connected(setup(), [participant("PA_bob", "bob")]);
  const s = t.sockets[0];
  s.receive({ type: "participant_joined", participant: participant("PA_eve", "eve", [track("TR_e1")]) });
  s.receive({ type: "participant_updated", participant: participant("PA_bob", "bob", [track("TR_b1", "video")]) });
  s.receive({ type: "track_muted", participantSid: "PA_bob", trackSid: "TR_b1", muted: true });
  s.receive({ type: "track_muted", participantSid: "PA_bob", trackSid: "TR_b1", muted: false });
  s.receive({ type: "active_speakers", speakers: [{ participantSid: "PA_eve", level: 0.8 }, { participantSid: "PA_gone", level: 0.1 }] });
  s.receive({ type: "connection_quality", updates: [{ participantSid: "PA_me", quality: "good", score: 3.5 }] });
  s.receive({ type: "participant_left", participantSid: "PA_eve", identity: "eve", reason: "client_request" });
  s.receive({ type: "track_published", cid: "local-track-id", track: track("TR_mine", "video") });
  await settle();
  const names = t.events.filter(([e]) => e !== "connectionStateChanged").map(([e, x]) => `${e}:${typeof x === "string" ? x : ""}`);
  assert.deepEqual(names, [
    "participantConnected:PA_bob",
    "participantConnected:PA_eve",
    "trackPublished:TR_e1",
    "trackPublished:TR_b1",
    "trackMuted:TR_b1",
    "trackUnmuted:TR_b1",
    "activeSpeakersChanged:",
    "connectionQualityChanged:PA_me",
    "trackUnpublished:TR_e1",
    "participantDisconnected:PA_eve",
    "localTrackPublished:local-track-id",
  ]);
  const speakers = t.events.find(([e]) => e === "activeSpeakersChanged")[1];
  assert.deepEqual(speakers.map((x) => x.participant.sid), ["PA_eve"], "unknown sids are left out");
  assert.deepEqual([...t.session.participants.keys()], ["PA_bob"]);
  assert.deepEqual(t.session.local.tracks.map((x) => x.sid), ["TR_mine"]);
});

test("data: payloads are base64 on the wire, lossy and addressed sends say so, received bytes come back", async () => {
  const t = await connected(setup(), [participant("PA_bob", "bob")]);
  const s = t.sockets[0];
  t.session.publishData("héllo", { topic: "chat" });
  t.session.publishData(new Uint8Array([0, 255, 7]), { reliable: false, to: ["bob"] });
  assert.deepEqual(s.sent.slice(-2), [
    { type: "data", kind: "reliable", payload: Buffer.from("héllo").toString("base64"), topic: "chat" },
    { type: "data", kind: "lossy", payload: "AP8H", destinationIdentities: ["bob"] },
  ]);
  let got;
  t.session.on("dataReceived", (d) => (got = d));
  s.receive({ type: "data", participantSid: "PA_bob", identity: "bob", kind: "lossy", topic: "pos", payload: "AP8H" });
  await settle();
  assert.deepEqual([...got.payload], [0, 255, 7]);
  assert.equal(got.participant.identity, "bob");
  assert.equal(got.kind, "lossy");
  assert.equal(got.topic, "pos");
});

test("keepalive: pings at the server's interval, answers its pings", async () => {
  const t = await connected();
  const s = t.sockets[0];
  await t.clock.advance(5000);
  assert.ok(s.sent.some((m) => m.type === "ping"));
  s.receive({ type: "ping", timestampMs: 42 });
  await settle();
  assert.deepEqual(s.sent.at(-1), { type: "pong", timestampMs: 42 });
});

test("a dropped socket resumes with the reconnect token; the snapshot's changes arrive as events", async () => {
  const t = await connected(setup(), [participant("PA_bob", "bob", [track("TR_b")]), participant("PA_eve", "eve")]);
  t.sockets[0].drop();
  await settle();
  assert.equal(t.session.state, "reconnecting");
  await t.clock.advance(0);
  const s2 = t.sockets[1];
  assert.ok(s2, "a new socket at once: the session is still on the server");
  s2.open();
  assert.deepEqual(s2.sent[0], { type: "resume", participantSid: "PA_me", reconnectToken: "rt-1" });
  // While we were away: eve left, bob muted his track.
  s2.receive({ ...joined("PA_me", [participant("PA_bob", "bob", [track("TR_b", "audio", true)])], "rt-2"), type: "resumed" });
  await settle();
  assert.equal(t.session.state, "connected");
  const after = t.events.slice(t.events.findIndex(([e]) => e === "reconnecting"));
  assert.deepEqual(after.map(([e, x]) => `${e}:${typeof x === "string" ? x : ""}`), [
    "reconnecting:",
    "connectionStateChanged:connected",
    "trackMuted:TR_b",
    "participantDisconnected:PA_eve",
    "reconnected:resume",
  ]);
  assert.deepEqual(t.host.calls.filter((c) => c[0] === "prepare").map((c) => c[1]), ["join", "resume"]);
  // The next resume presents the new token.
  s2.drop();
  await settle();
  await t.clock.advance(0);
  t.sockets[2].open();
  assert.equal(t.sockets[2].sent[0].reconnectToken, "rt-2");
});

test("resume_failed: the client joins again as a new session, after a backoff", async () => {
  const t = await connected();
  t.sockets[0].drop();
  await settle();
  await t.clock.advance(0);
  t.sockets[1].open();
  t.sockets[1].receive({ type: "error", code: "resume_failed", message: "gone" });
  await settle();
  assert.equal(t.sockets.length, 2);
  await t.clock.advance(300);
  const s3 = t.sockets[2];
  assert.ok(s3, "rejoin after the first backoff step (300 ms at jitter midpoint)");
  s3.open();
  assert.equal(s3.sent[0].type, "join");
  s3.receive(joined("PA_me2"));
  await settle();
  assert.deepEqual(t.host.calls.filter((c) => c[0] === "prepare").map((c) => c.slice(1)), [["join", "PA_me"], ["rejoin", "PA_me2"]]);
  assert.ok(t.events.some(([e, how]) => e === "reconnected" && how === "rejoin"));
});

test("a draining node's leave says rejoin: no resume, a join after the retry hint", async () => {
  const t = await connected();
  const s = t.sockets[0];
  s.receive({ type: "leave", reason: "node_draining", canReconnect: true, retryAfterMs: 1000, reconnect: "rejoin", message: "draining" });
  await settle();
  s.close(4503, "draining");
  await settle();
  await t.clock.advance(999);
  assert.equal(t.sockets.length, 1, "waits for retryAfterMs");
  await t.clock.advance(1);
  t.sockets[1].open();
  assert.equal(t.sockets[1].sent[0].type, "join");
});

test("a leave that cannot reconnect ends the room with its reason; so do spent attempts", async () => {
  const t = await connected();
  t.sockets[0].receive({ type: "leave", reason: "removed", canReconnect: false, message: "bye" });
  await settle();
  assert.deepEqual(t.events.at(-1), ["disconnected", "removed"]);
  assert.equal(t.session.state, "disconnected");

  const u = await connected(setup({ reconnect: { resumeAttempts: 1, rejoinAttempts: 1 } }));
  u.sockets[0].drop();
  await settle();
  await u.clock.advance(0);
  u.sockets[1].close(1006);
  await settle();
  await u.clock.advance(10_000);
  u.sockets[2].close(1006);
  await settle();
  await u.clock.advance(10_000);
  assert.equal(u.sockets.length, 3);
  assert.deepEqual(u.events.at(-1), ["disconnected", "signal_lost"]);
});

test("disconnect sends leave and closes; nothing reconnects", async () => {
  const t = await connected();
  t.session.disconnect();
  assert.equal(t.sockets[0].sent.at(-1).type, "leave");
  assert.equal(t.sockets[0].closed.code, 1000);
  await t.clock.advance(60_000);
  assert.equal(t.sockets.length, 1);
  assert.deepEqual(t.events.at(-1), ["disconnected", "client_request"]);
});

test("silence for the ping timeout counts as a lost socket", async () => {
  const t = await connected();
  await t.clock.advance(15_000);
  assert.equal(t.sockets[0].closed?.code, 4408);
  assert.ok(t.events.some(([e]) => e === "reconnecting"));
});
