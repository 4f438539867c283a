// @switchyard/client in headless Chromium against a real `switchyard dev`: media both
// ways, mute events, screen share, data, a resumed socket, adaptive stream's layer choice.
// One dev server for the file, a room per test. About 60–90 s in all.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  audioEnergy, blankPage, framesAdvanceBy, joinWithSdk, launch, startDev, startProxy, waitFor,
} from "./support.mjs";

const PORT = 18200 + Math.floor(Math.random() * 50) * 10;
// 640x360 keeps the encoders cheap; the field trial keeps Chromium from dropping layers
// of small sources, so the camera is sent as the three layers q/h/f (160x90 … 640x360).
const CAMERA = { videoCaptureDefaults: { width: 640, height: 360 } };
let dev;
let browser;

before(async () => {
  dev = await startDev(PORT);
  browser = await launch(["--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/"]);
});
after(async () => {
  await browser?.close();
  dev?.stop();
});

async function pages(n) {
  const context = await browser.newContext({ permissions: ["camera", "microphone"] });
  const out = [];
  for (let i = 0; i < n; i++) out.push(await blankPage(context, dev.base));
  return { context, pages: out };
}

const subscribed = (who, source) => (events) => events.some((e) => e[0] === "trackSubscribed" && e[1] === who && e[2] === source);
const has = (page, pred, what, ms = 30_000) =>
  waitFor(page, ([src]) => new Function("events", `return (${src})(events)`)(window.events), [pred.toString()], ms, what);

test("two participants see and hear each other; mute and unmute arrive as events", { timeout: 120_000 }, async () => {
  const { context, pages: [alice, bob] } = await pages(2);
  try {
    await joinWithSdk(alice, { url: dev.ws, room: "av", identity: "alice", options: CAMERA });
    await joinWithSdk(bob, { url: dev.ws, room: "av", identity: "bob", options: CAMERA });
    for (const [page, other] of [[alice, "bob"], [bob, "alice"]]) {
      await waitFor(page, (o) => window.events.some((e) => e[0] === "trackSubscribed" && e[1] === o && e[2] === "camera"), other, 30_000, `${other}'s camera`);
      await waitFor(page, (o) => window.events.some((e) => e[0] === "trackSubscribed" && e[1] === o && e[2] === "microphone"), other, 30_000, `${other}'s microphone`);
      // Frames really decode and audio really carries energy (the fake microphone beeps).
      await waitFor(page, (o) => document.querySelector(`video[data-identity="${o}"]`)?.getVideoPlaybackQuality().totalVideoFrames > 0, other, 30_000, `${other}'s first frame`);
      const [f1, f2] = await framesAdvanceBy(page, other, "camera");
      assert.ok(f2 > f1, `${other}'s video advances: ${f1} → ${f2} frames`);
      const [e1, e2] = await audioEnergy(page, other, 2000);
      assert.ok(e2 > e1, `${other}'s audio carries energy: ${e1} → ${e2}`);
    }
    await bob.evaluate(() => window.room.localParticipant.setMicrophoneEnabled(false));
    await waitFor(alice, () => window.events.some((e) => e[0] === "trackMuted" && e[1] === "bob" && e[2] === "microphone"), null, 10_000, "bob's mute");
    await bob.evaluate(() => window.room.localParticipant.setMicrophoneEnabled(true));
    await waitFor(alice, () => window.events.some((e) => e[0] === "trackUnmuted" && e[1] === "bob" && e[2] === "microphone"), null, 10_000, "bob's unmute");
    await bob.evaluate(() => window.room.localParticipant.setCameraEnabled(false));
    await waitFor(alice, () => window.events.some((e) => e[0] === "trackMuted" && e[1] === "bob" && e[2] === "camera"), null, 10_000, "bob's camera off");
    const bobSees = await bob.evaluate(() => window.room.localParticipant.isCameraEnabled);
    assert.equal(bobSees, false);
  } finally {
    await context.close();
  }
});

test("reliable, lossy and addressed data arrive; a subscribe-only participant receives media", { timeout: 120_000 }, async () => {
  const { context, pages: [alice, bob, carol] } = await pages(3);
  try {
    await joinWithSdk(alice, { url: dev.ws, room: "data", identity: "alice", options: CAMERA });
    await joinWithSdk(bob, { url: dev.ws, room: "data", identity: "bob", publish: {} });
    // Carol publishes nothing and never offers: the server offers first.
    await joinWithSdk(carol, { url: dev.ws, room: "data", identity: "carol", publish: {} });
    await waitFor(carol, () => window.events.some((e) => e[0] === "trackSubscribed" && e[1] === "alice" && e[2] === "camera"), null, 30_000, "carol receiving alice");
    await waitFor(carol, () => document.querySelector('video[data-identity="alice"]')?.getVideoPlaybackQuality().totalVideoFrames > 0, null, 30_000, "carol decoding alice");
    await bob.evaluate(() => {
      const lp = window.room.localParticipant;
      lp.publishData("hello all", { topic: "chat" });
      lp.publishData(new TextEncoder().encode("pos 1,2"), { reliable: false, topic: "cursor" });
      lp.publishData("just alice", { topic: "dm", to: ["alice"] });
    });
    await waitFor(alice, () => window.events.filter((e) => e[0] === "data").length >= 3, null, 10_000, "alice's three messages");
    const got = await alice.evaluate(() => window.events.filter((e) => e[0] === "data"));
    assert.deepEqual(got, [
      ["data", "bob", "reliable", "chat", "hello all"],
      ["data", "bob", "lossy", "cursor", "pos 1,2"],
      ["data", "bob", "reliable", "dm", "just alice"],
    ]);
    await waitFor(carol, () => window.events.filter((e) => e[0] === "data").length >= 2, null, 10_000, "carol's two messages");
    await new Promise((r) => setTimeout(r, 500));
    const carolGot = await carol.evaluate(() => window.events.filter((e) => e[0] === "data").map((e) => e[4]));
    assert.deepEqual(carolGot, ["hello all", "pos 1,2"], "the addressed message reached only alice");
  } finally {
    await context.close();
  }
});

test("a screen share arrives as its own track and goes away when stopped", { timeout: 120_000 }, async () => {
  const { context, pages: [alice, bob] } = await pages(2);
  try {
    await joinWithSdk(alice, { url: dev.ws, room: "screen", identity: "alice", publish: {} });
    await joinWithSdk(bob, { url: dev.ws, room: "screen", identity: "bob", publish: {} });
    await bob.evaluate(() => window.room.localParticipant.setScreenShareEnabled(true));
    await waitFor(alice, () => window.events.some((e) => e[0] === "trackSubscribed" && e[1] === "bob" && e[2] === "screen_share"), null, 30_000, "bob's screen");
    await waitFor(alice, () => document.querySelector('video[data-source="screen_share"]')?.getVideoPlaybackQuality().totalVideoFrames > 0, null, 30_000, "a decoded screen frame");
    await bob.evaluate(() => window.room.localParticipant.setScreenShareEnabled(false));
    await waitFor(alice, () => window.events.some((e) => e[0] === "trackUnpublished" && e[1] === "bob" && e[2] === "screen_share"), null, 10_000, "the screen share ending");
  } finally {
    await context.close();
  }
});

test("a signaling socket cut mid-call resumes: same session, media keeps flowing, nobody sees a departure", { timeout: 120_000 }, async () => {
  const proxy = await startProxy(PORT);
  const { context, pages: [alice, bob] } = await pages(2);
  try {
    await joinWithSdk(alice, { url: `ws://localhost:${proxy.port}`, room: "resume", identity: "alice", publish: {} });
    await joinWithSdk(bob, { url: dev.ws, room: "resume", identity: "bob", options: CAMERA });
    await waitFor(alice, () => document.querySelector('video[data-identity="bob"]')?.getVideoPlaybackQuality().totalVideoFrames > 0, null, 30_000, "alice decoding bob");
    const sidBefore = await alice.evaluate(() => window.room.localParticipant.sid);
    proxy.cut();
    await waitFor(alice, () => window.events.some((e) => e[0] === "reconnected"), null, 20_000, "alice reconnected");
    const events = await alice.evaluate(() => window.events.filter((e) => e[0] === "reconnecting" || e[0] === "reconnected"));
    assert.deepEqual(events, [["reconnecting"], ["reconnected", "resume"]]);
    assert.equal(await alice.evaluate(() => window.room.localParticipant.sid), sidBefore, "the same participant");
    const [f1, f2] = await framesAdvanceBy(alice, "bob", "camera");
    assert.ok(f2 > f1, `bob's video still advances after the resume: ${f1} → ${f2}`);
    // The resumed socket carries signaling again.
    await bob.evaluate(() => window.room.localParticipant.publishData("after", { topic: "t" }));
    await waitFor(alice, () => window.events.some((e) => e[0] === "data" && e[4] === "after"), null, 10_000, "data after the resume");
    const left = await bob.evaluate(() => window.events.filter((e) => e[0] === "participantDisconnected"));
    assert.deepEqual(left, [], "bob saw alice stay");
  } finally {
    await context.close();
    proxy.close();
  }
});

test("adaptive stream: a small element gets the low simulcast layer", { timeout: 120_000 }, async () => {
  const { context, pages: [alice, bob] } = await pages(2);
  try {
    await joinWithSdk(bob, { url: dev.ws, room: "layers", identity: "bob", options: CAMERA, publish: { camera: true } });
    await joinWithSdk(alice, { url: dev.ws, room: "layers", identity: "alice", publish: {} });
    // Bob announced three layers under the server's rids.
    const layers = await bob.evaluate(() => window.room.localParticipant.getTrackPublication("camera").info.layers.map((l) => `${l.rid}:${l.width}x${l.height}`));
    assert.deepEqual(layers, ["q:160x90", "h:320x180", "f:640x360"]);
    await waitFor(alice, () => document.querySelector('video[data-identity="bob"]')?.getVideoPlaybackQuality().totalVideoFrames > 0, null, 30_000, "alice decoding bob");
    // Shown at 640x360, then at 120x68: the server caps alice at the smallest layer that
    // covers the element, and tells bob (dynacast) that only `q` is still received.
    await waitFor(alice, async () => {
      const s = await window.room.getStats();
      return s.inbound.find((i) => i.kind === "video" && i.participantIdentity === "bob")?.frameHeight > 90;
    }, null, 20_000, "alice receiving more than the low layer at 640x360");
    await alice.evaluate(() => (document.querySelector('video[data-identity="bob"]').style.cssText = "width: 120px; height: 68px"));
    await waitFor(
      bob,
      () => window.messages.filter((m) => m.type === "subscribed_layers").at(-1)?.layers.map((l) => `${l.rid}:${l.active}`).join() === "q:true,h:false,f:false",
      null, 20_000, "bob told only q is received",
    );
    await waitFor(alice, async () => {
      const s = await window.room.getStats();
      const v = s.inbound.find((i) => i.kind === "video" && i.participantIdentity === "bob");
      return v?.frameHeight === 90 && v.quality === "low";
    }, null, 20_000, "alice receiving 160x90 (q)");
  } finally {
    await context.close();
  }
});

// Chromium has one usable fake camera (its second, with device-count=2, delivers Y16 depth
// frames its encoder does not take), so the switch goes to that camera by its device id:
// a new capture, the sent track replaced, the old one stopped.
test("switching the camera replaces the sent track without renegotiating; stats give bitrate, RTT, codec and layer", { timeout: 120_000 }, async () => {
  const { context, pages: [alice, bob] } = await pages(2);
  try {
    await joinWithSdk(bob, { url: dev.ws, room: "devices", identity: "bob", options: CAMERA, publish: { camera: true } });
    await joinWithSdk(alice, { url: dev.ws, room: "devices", identity: "alice", publish: {} });
    await waitFor(alice, () => document.querySelector('video[data-identity="bob"]')?.getVideoPlaybackQuality().totalVideoFrames > 0, null, 30_000, "alice decoding bob");
    const before = await bob.evaluate(async () => {
      const cams = await window.sy.getLocalDevices("videoinput");
      const pub = window.room.localParticipant.getTrackPublication("camera");
      return { cams: cams.map((d) => d.deviceId), current: pub.mediaTrack.getSettings().deviceId, track: pub.mediaTrack.id };
    });
    assert.ok(before.cams.includes(before.current), `the camera is listed: ${before.cams}`);
    const sdpBefore = await bob.evaluate(() => window.room.pc.localDescription.sdp);
    await bob.evaluate((id) => {
      window.oldTrack = window.room.localParticipant.getTrackPublication("camera").mediaTrack;
      return window.room.switchActiveDevice("videoinput", id);
    }, before.current);
    const after = await bob.evaluate(() => {
      const pub = window.room.localParticipant.getTrackPublication("camera");
      return {
        device: pub.mediaTrack.getSettings().deviceId,
        track: pub.mediaTrack.id,
        sent: pub.sender.track === pub.mediaTrack,
        oldStopped: window.oldTrack.readyState === "ended",
        sdp: window.room.pc.localDescription.sdp,
      };
    });
    assert.equal(after.device, before.current);
    assert.notEqual(after.track, before.track, "a new capture");
    assert.ok(after.sent, "the sender carries the new track");
    assert.ok(after.oldStopped, "the old capture is stopped");
    assert.equal(after.sdp, sdpBefore, "no new offer");
    const [f1, f2] = await framesAdvanceBy(alice, "bob", "camera");
    assert.ok(f2 > f1, `bob's video goes on from the new capture: ${f1} → ${f2}`);
    // Two samples a second apart: rates appear.
    await alice.evaluate(() => window.room.getStats());
    await new Promise((r) => setTimeout(r, 1000));
    const s = await alice.evaluate(() => window.room.getStats());
    const v = s.inbound.find((i) => i.kind === "video");
    assert.ok(v.bitrateBps > 0, `inbound video bitrate ${v.bitrateBps}`);
    assert.match(v.codec, /^video\//);
    assert.ok(["low", "medium", "high"].includes(v.quality), `layer ${v.quality}`);
    assert.equal(typeof v.lossFraction, "number");
    assert.equal(typeof s.rttMs, "number", "RTT of the selected candidate pair");
  } finally {
    await context.close();
  }
});

test("a server that restarts loses the session: resume fails, the SDK rejoins and media flows again", { timeout: 120_000 }, async () => {
  const port = PORT + 5000;
  // The same secret on both runs, so the tokens the pages hold stay valid.
  const flags = ["--api-secret", "restart-test-secret"];
  let node = await startDev(port, flags);
  const context = await browser.newContext({ permissions: ["camera", "microphone"] });
  try {
    const alice = await blankPage(context, node.base);
    const bob = await blankPage(context, node.base);
    const frames = [];
    alice.on("websocket", (ws) => ws.on("framesent", (f) => frames.push(JSON.parse(String(f.payload)).type)));
    await joinWithSdk(alice, { url: node.ws, room: "restart", identity: "alice", options: CAMERA, publish: { camera: true } });
    await joinWithSdk(bob, { url: node.ws, room: "restart", identity: "bob", options: CAMERA, publish: { camera: true } });
    await waitFor(bob, () => document.querySelector('video[data-identity="alice"]')?.getVideoPlaybackQuality().totalVideoFrames > 0, null, 30_000, "bob decoding alice");
    const sid = await alice.evaluate(() => window.room.localParticipant.sid);
    node.kill("SIGKILL");
    await new Promise((r) => node.once("exit", r));
    node = await startDev(port, flags);
    for (const [who, page, other] of [["alice", alice, "bob"], ["bob", bob, "alice"]]) {
      await waitFor(page, () => window.events.some((e) => e[0] === "reconnected"), null, 45_000, `${who} reconnected`);
      assert.deepEqual(
        await page.evaluate(() => window.events.filter((e) => e[0] === "reconnecting" || e[0] === "reconnected")),
        [["reconnecting"], ["reconnected", "rejoin"]],
      );
      // A new session: the camera is published again and reaches the other side.
      await waitFor(page, (o) => [...document.querySelectorAll(`video[data-identity="${o}"]`)].some((v) => v.srcObject && v.getVideoPlaybackQuality().totalVideoFrames > 0 && v.srcObject.getVideoTracks()[0]?.readyState === "live"), other, 45_000, `${who} decoding ${other} after the rejoin`);
    }
    assert.notEqual(await alice.evaluate(() => window.room.localParticipant.sid), sid, "a new participant sid");
    assert.ok(frames.includes("resume"), `resume was tried first: ${frames}`);
    assert.ok(frames.lastIndexOf("join") > frames.indexOf("resume"), `then a join: ${frames}`);
  } finally {
    await context.close();
    node.stop();
  }
});

test("codec preference picks VP9 (one layer); with autoSubscribe off nothing arrives until setSubscribed", { timeout: 120_000 }, async () => {
  const { context, pages: [alice, bob] } = await pages(2);
  try {
    await joinWithSdk(bob, { url: dev.ws, room: "codec", identity: "bob", options: { ...CAMERA, videoCodec: "vp9" }, publish: { camera: true } });
    await joinWithSdk(alice, { url: dev.ws, room: "codec", identity: "alice", options: { autoSubscribe: false }, publish: {} });
    const mime = await bob.evaluate(() => window.room.localParticipant.getTrackPublication("camera").info.mimeType);
    assert.equal(mime?.toLowerCase(), "video/vp9", "the server negotiated the preferred codec");
    const layers = await bob.evaluate(() => window.room.localParticipant.getTrackPublication("camera").info.layers ?? []);
    assert.deepEqual(layers, [], "VP9 goes as one stream");
    await waitFor(alice, () => window.events.some((e) => e[0] === "trackPublished" && e[1] === "bob"), null, 10_000, "bob's publication");
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(!(await alice.evaluate(() => window.events.some((e) => e[0] === "trackSubscribed"))), "not subscribed before asking");
    await alice.evaluate(() => {
      const bob = [...window.room.remoteParticipants.values()].find((p) => p.identity === "bob");
      bob.getTrackPublication("camera").setSubscribed(true);
    });
    await waitFor(alice, () => document.querySelector('video[data-identity="bob"]')?.getVideoPlaybackQuality().totalVideoFrames > 0, null, 30_000, "alice decoding bob after subscribing");
    const codec = await alice.evaluate(async () => (await window.room.getStats()).inbound.find((i) => i.kind === "video")?.codec);
    assert.equal(codec?.toLowerCase(), "video/vp9");
  } finally {
    await context.close();
  }
});
