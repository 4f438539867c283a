// The demo app as `switchyard dev` serves it (embedded in the binary), in headless
// Chromium: three participants, chat, mute, leave; ICE-TCP and relay-only calls; a late
// joiner slow to apply its answer; a cluster's signaling URL and token. About 2 minutes.
//
// A screenshot of the three-participant call goes to $ARTIFACTS_DIR (default
// $CARGO_TARGET_DIR/../artifacts, else test/artifacts) as demo-three-participants.png.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { launch, startDev, waitFor } from "./support.mjs";

const PORT = 18700 + Math.floor(Math.random() * 50) * 10;
const ARTIFACTS =
  process.env.ARTIFACTS_DIR ??
  (process.env.CARGO_TARGET_DIR ? join(process.env.CARGO_TARGET_DIR, "..", "artifacts") : new URL("../artifacts", import.meta.url).pathname);
const FLAGS = ["--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/"];

/** Remote tiles of `page` whose video decoded at least one frame. */
const playingTiles = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll(".tile")].filter((t) => {
      const v = t.querySelector("video");
      return v && v.getVideoPlaybackQuality().totalVideoFrames > 0;
    }).length,
  );

async function waitDemo(page, fn, arg, ms, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 250 });
  } catch {
    const log = await page.evaluate(() => document.getElementById("log")?.textContent).catch(() => "?");
    throw new Error(`${what} did not happen within ${ms} ms; page log:\n${log}`);
  }
}

test("demo: three participants, pre-join, chat, mute, active speaker, a departure; screenshot", { timeout: 180_000 }, async () => {
  const dev = await startDev(PORT);
  const browser = await launch(FLAGS);
  try {
    const context = await browser.newContext({ permissions: ["camera", "microphone"], viewport: { width: 1280, height: 800 } });
    const alice = await context.newPage();
    const bob = await context.newPage();
    await alice.goto(`${dev.base}/?room=trio&identity=alice`);
    await bob.goto(`${dev.base}/?room=trio&identity=bob`);
    // Carol goes through the pre-join screen: preview, device lists, name and room.
    const carol = await context.newPage();
    await carol.goto(`${dev.base}/`);
    await waitDemo(carol, () => document.getElementById("preview").videoWidth > 0, null, 20_000, "the camera preview");
    const devices = await carol.evaluate(() => [document.getElementById("camera").options.length, document.getElementById("mic").options.length]);
    assert.ok(devices[0] >= 1 && devices[1] >= 1, `device choices: ${devices}`);
    await carol.fill("#name", "carol");
    await carol.fill("#room", "trio");
    await carol.click("#join");
    for (const [who, page] of [["alice", alice], ["bob", bob], ["carol", carol]]) {
      await waitDemo(page, () => document.querySelectorAll(".tile").length === 3, null, 45_000, `${who} showing three tiles`);
      await waitDemo(page, () => [...document.querySelectorAll(".tile video")].every((v) => v.getVideoPlaybackQuality().totalVideoFrames > 0), null, 45_000, `${who} playing every tile`);
    }
    assert.equal(await playingTiles(alice), 3);
    // The fake microphones beep: somebody is highlighted as speaking.
    await waitDemo(alice, () => document.querySelector(".tile.speaking") !== null, null, 20_000, "an active speaker highlighted");
    // Chat over data messages, typed into the form.
    await bob.fill("#chat-text", "hi all");
    await bob.press("#chat-text", "Enter");
    for (const page of [alice, carol]) await waitDemo(page, () => window.demo.data.includes("bob: hi all"), null, 10_000, "bob's chat line");
    // Mute: the button flips, and the others learn it.
    await bob.click("#mute-mic");
    await waitDemo(bob, () => document.getElementById("mute-mic").textContent === "Unmute", null, 5_000, "bob's mute button");
    await waitDemo(alice, () => {
      const p = [...window.switchyardRoom.remoteParticipants.values()].find((p) => p.identity === "bob");
      return p && !p.isMicrophoneEnabled;
    }, null, 10_000, "alice seeing bob muted");
    await alice.click("#toggle-stats");
    await new Promise((r) => setTimeout(r, 1500));
    const overlay = await alice.evaluate(() => document.querySelector('.tile[data-identity="bob"] .stats').textContent);
    assert.match(overlay, /video\/VP8 \d+ kbit\/s loss \d+\.\d%/, `stats overlay: ${overlay}`);
    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, "demo-three-participants.png");
    await alice.screenshot({ path: shot });
    console.log(`# screenshot: ${shot}`);
    // Carol leaves: her tile goes away on the others.
    await carol.click("#leave");
    for (const page of [alice, bob]) await waitDemo(page, () => document.querySelectorAll(".tile").length === 2 && !document.querySelector('.tile[data-identity="carol"]'), null, 15_000, "carol's tile removed");
  } finally {
    await browser.close();
    dev.stop();
  }
});

/** alice and bob in a call through the demo under `extra` dev flags; alice's selected candidate pair. */
async function callAndSelectedPair(port, extra, room) {
  const dev = await startDev(port, extra);
  const browser = await launch(FLAGS);
  try {
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const alice = await context.newPage();
    const bob = await context.newPage();
    await alice.goto(`${dev.base}/?room=${room}&identity=alice`);
    await bob.goto(`${dev.base}/?room=${room}&identity=bob`);
    await waitDemo(alice, () => document.querySelectorAll(".tile").length === 2 && [...document.querySelectorAll(".tile video")].every((v) => v.getVideoPlaybackQuality().totalVideoFrames > 0), null, 45_000, `alice playing bob's video (${extra})`);
    await new Promise((r) => setTimeout(r, 2000));
    return await alice.evaluate(async () => {
      const stats = await window.switchyardRoom.pc.getStats();
      let selected;
      stats.forEach((s) => { if (s.type === "transport") selected = s.selectedCandidatePairId; });
      const p = stats.get(selected);
      const local = stats.get(p.localCandidateId);
      const remote = stats.get(p.remoteCandidateId);
      return { local: local.protocol, remote: remote.protocol, localType: local.candidateType, bytes: p.bytesReceived };
    });
  } finally {
    await browser.close();
    dev.stop();
  }
}

test("demo: media flows over ICE-TCP when UDP cannot reach the node", { timeout: 120_000 }, async () => {
  const pair = await callAndSelectedPair(PORT + 10, ["--ice-tcp-only"], "tcp");
  assert.deepEqual([pair.local, pair.remote], ["tcp", "tcp"], JSON.stringify(pair));
  assert.ok(pair.bytes > 10_000, `received ${pair.bytes} bytes over TCP`);
});

test("demo: relay-only, all media goes through the embedded TURN server", { timeout: 120_000 }, async () => {
  const pair = await callAndSelectedPair(PORT + 20, ["--relay-only"], "relay");
  assert.equal(pair.localType, "relay", JSON.stringify(pair));
  assert.ok(pair.bytes > 10_000, `received ${pair.bytes} bytes through TURN`);
});

// A late joiner whose browser is slow to apply the server's answer to its first offer:
// the server's own offer arrives while that answer is still being applied. Messages are
// handled in order, so it is not taken for glare, and every published track arrives.
test("demo: a late joiner slow to apply its answer still gets every published track", { timeout: 120_000 }, async () => {
  const dev = await startDev(PORT + 30);
  const browser = await launch(FLAGS);
  try {
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const alice = await context.newPage();
    await alice.goto(`${dev.base}/?room=late&identity=alice`);
    await waitDemo(alice, () => window.switchyardRoom?.localParticipant?.trackPublications.filter((p) => p.sid).length === 2, null, 45_000, "alice publishing");
    await new Promise((r) => setTimeout(r, 1000));
    const bob = await context.newPage();
    await bob.addInitScript(() => {
      const apply = RTCPeerConnection.prototype.setRemoteDescription;
      RTCPeerConnection.prototype.setRemoteDescription = async function (d) {
        if (d && d.type === "answer") await new Promise((r) => setTimeout(r, 300));
        return apply.call(this, d);
      };
    });
    await bob.goto(`${dev.base}/?room=late&identity=bob`);
    await waitDemo(bob, () => {
      const a = [...(window.switchyardRoom?.remoteParticipants.values() ?? [])].find((p) => p.identity === "alice");
      return a && a.trackPublications.filter((t) => t.subscribed).length === 2;
    }, null, 20_000, "bob receiving alice's 2 tracks");
    await waitDemo(bob, () => document.querySelector('.tile[data-identity="alice"] video')?.getVideoPlaybackQuality().totalVideoFrames > 0, null, 20_000, "bob playing alice's video");
  } finally {
    await browser.close();
    dev.stop();
  }
});

test("demo: joins with the signaling URL and token it is given, as against a cluster", { timeout: 120_000 }, async () => {
  const port = PORT + 40;
  const dev = await startDev(port, ["--room", "given"]);
  const browser = await launch(FLAGS);
  try {
    const token = dev.printed.match(/token\s+(ey[\w.-]+)/)?.[1];
    assert.ok(token, `dev printed a token:\n${dev.printed}`);
    assert.match(dev.printed, new RegExp(`admin\\s+http://127\\.0\\.0\\.1:${port + 7}`), "the banner names the admin address");
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const page = await context.newPage();
    const requests = [];
    const sockets = [];
    page.on("request", (r) => requests.push(r.url()));
    page.on("websocket", (ws) => sockets.push(ws.url()));
    // The page comes from `localhost`, the signaling URL names 127.0.0.1: the socket must follow the URL.
    const url = encodeURIComponent(`ws://127.0.0.1:${port}`);
    await page.goto(`${dev.base}/?room=given&identity=you&token=${token}&url=${url}`);
    await waitDemo(page, () => window.switchyardRoom?.state === "connected", null, 45_000, "joined with the given token");
    assert.ok(!requests.some((u) => u.includes("/dev/token")), `no /dev/token request: ${requests.join(" ")}`);
    assert.ok(sockets.some((u) => u.startsWith(`ws://127.0.0.1:${port}/rtc?access_token=`)), `signaling through the given URL: ${sockets.join(" ")}`);

    // A token endpoint of the app's backend, on another port, answering JSON.
    const asked = [];
    const backend = createServer(async (req, res) => {
      const q = new URL(req.url, "http://x").searchParams;
      asked.push(`${q.get("room")}/${q.get("identity")}`);
      const t = await (await fetch(`http://127.0.0.1:${port}/dev/token?room=${q.get("room")}&identity=${q.get("identity")}`)).text();
      res.writeHead(200, { "content-type": "application/json", "access-control-allow-origin": "*" }).end(JSON.stringify({ token: t }));
    });
    await new Promise((r) => backend.listen(0, "127.0.0.1", r));
    try {
      const other = await context.newPage();
      const endpoint = encodeURIComponent(`http://localhost:${backend.address().port}/token`);
      await other.goto(`${dev.base}/?room=given&identity=bob&tokenEndpoint=${endpoint}&url=${url}`);
      await waitDemo(other, () => window.switchyardRoom?.state === "connected", null, 45_000, "joined with the endpoint's token");
      assert.deepEqual(asked, ["given/bob"]);
      await waitDemo(page, () => document.querySelector('.tile[data-identity="bob"]') !== null, null, 20_000, "the first page showing bob");
    } finally {
      backend.close();
    }
  } finally {
    await browser.close();
    dev.stop();
  }
});
