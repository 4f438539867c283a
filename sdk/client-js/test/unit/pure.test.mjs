// Pure parts: backoff, the msid map, stats, URLs, the wire types against the schema, the
// checked-in demo bundles against a fresh build.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import {
  CLIENT_MESSAGE_TYPES, DEFAULT_RECONNECT_POLICY, SERVER_MESSAGE_TYPES, SIMULCAST_RIDS, backoffDelay, layerForHeight,
  defaultSignalingUrl, msidByMid, nextStep, signalingUrl, simulcastLayers, summarizeStats,
} from "../../dist/index.js";

const root = fileURLToPath(new URL("../../../../", import.meta.url));

test("backoff doubles, caps, and spreads by the jitter; a retry hint is a floor", () => {
  const p = { ...DEFAULT_RECONNECT_POLICY, baseDelayMs: 100, maxDelayMs: 1000, jitter: 0.5 };
  assert.deepEqual([0, 1, 2, 3, 4].map((a) => backoffDelay(a, p, () => 0.5)), [100, 200, 400, 800, 1000]);
  assert.equal(backoffDelay(2, p, () => 0), 200);
  assert.equal(backoffDelay(2, p, () => 0.999999), 600);
  assert.equal(backoffDelay(0, p, () => 0.5, 5000), 5000);
});

test("reconnect steps: resume at once, resume with backoff, then rejoin, then give up", () => {
  const p = { resumeAttempts: 2, rejoinAttempts: 2, baseDelayMs: 100, maxDelayMs: 1000, jitter: 0 };
  const r = () => 0.5;
  assert.deepEqual(nextStep(0, 0, true, p, r), { kind: "resume", attempt: 0, delayMs: 0 });
  assert.deepEqual(nextStep(1, 0, true, p, r), { kind: "resume", attempt: 1, delayMs: 100 });
  assert.deepEqual(nextStep(2, 0, true, p, r), { kind: "rejoin", attempt: 0, delayMs: 100 });
  assert.deepEqual(nextStep(0, 0, false, p, r), { kind: "rejoin", attempt: 0, delayMs: 100 }, "not resumable: rejoin");
  assert.deepEqual(nextStep(2, 2, true, p, r), { kind: "give_up" });
});

test("a received line maps to its publisher and track by a=msid", () => {
  const sdp = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:PA_bob TR_cam\r\n";
  assert.deepEqual([...msidByMid(sdp)], [["1", { stream: "PA_bob", track: "TR_cam" }]]);
});

test("stats: bitrate from two samples, loss since the last sample, RTT, codec", () => {
  const at = (t, bytes, recv, lost) => [
    { id: "c", type: "codec", timestamp: t, mimeType: "video/VP8" },
    { id: "p", type: "candidate-pair", timestamp: t, nominated: true, state: "succeeded", currentRoundTripTime: 0.012 },
    { id: "in", type: "inbound-rtp", timestamp: t, kind: "video", mid: "1", codecId: "c", bytesReceived: bytes, packetsReceived: recv, packetsLost: lost, frameHeight: 180 },
  ];
  const a = summarizeStats(at(1000, 0, 100, 0));
  assert.equal(a.stats.inbound[0].bitrateBps, 0, "no rate from one sample");
  const b = summarizeStats(at(2000, 125_000, 190, 10), a.raw).stats;
  assert.equal(b.rttMs, 12);
  assert.equal(b.inbound[0].bitrateBps, 1_000_000);
  assert.equal(b.inbound[0].lossFraction, 0.1);
  assert.equal(b.inbound[0].codec, "video/VP8");
});

test("simulcast: three layers under the server's rids, lowest first; a frame height names its layer", () => {
  assert.deepEqual(SIMULCAST_RIDS.map((l) => l.rid), ["q", "h", "f"]);
  const layers = simulcastLayers(1280, 720);
  assert.deepEqual(layers.map((l) => [l.rid, l.quality, l.width, l.height]), [["q", "low", 320, 180], ["h", "medium", 640, 360], ["f", "high", 1280, 720]]);
  assert.equal(layerForHeight(layers, 176), "low");
  assert.equal(layerForHeight(layers, 720), "high");
});

test("signaling URLs: ws, wss, http(s) → ws(s), /rtc once, the token escaped", () => {
  assert.equal(signalingUrl("ws://a:1", "t"), "ws://a:1/rtc?access_token=t");
  assert.equal(signalingUrl("https://a/rtc/", "a+b"), "wss://a/rtc?access_token=a%2Bb");
  assert.throws(() => signalingUrl("ftp://a", "t"), TypeError);
  assert.equal(defaultSignalingUrl({ protocol: "https:", host: "meet.example:8443" }), "wss://meet.example:8443");
  assert.equal(defaultSignalingUrl({ protocol: "http:", host: "localhost:7880" }), "ws://localhost:7880");
});

test("the SDK's message types are exactly the schema's", () => {
  const schema = JSON.parse(readFileSync(`${root}schema/signal-v1.schema.json`, "utf8"));
  const types = (def) => schema.$defs[def].oneOf.map((v) => v.properties.type.const ?? v.properties.type.enum[0]);
  assert.deepEqual([...CLIENT_MESSAGE_TYPES].sort(), types("ClientMessage").sort());
  assert.deepEqual([...SERVER_MESSAGE_TYPES].sort(), types("ServerMessage").sort());
});

test("the demo bundles checked in under sdk/demo/assets are what the sources build to", () => {
  execFileSync(process.execPath, [fileURLToPath(new URL("../../build.mjs", import.meta.url)), "--check"], { stdio: "pipe" });
});
