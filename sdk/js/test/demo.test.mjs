// Two headless Chromium tabs hold a call through `switchyard dev`: each plays the
// other's audio and video, and a data message crosses. Chromium's fake camera and
// microphone stand in for devices.
//
// SWITCHYARD_BIN=path/to/switchyard CHROMIUM=/usr/bin/chromium node --test test/

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chromium } from "playwright-core";

const BIN = process.env.SWITCHYARD_BIN;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PORT = 17980 + Math.floor(Math.random() * 100);

async function waitForHttp(url, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up`);
}

async function waitFor(page, predicate, ms, what) {
  try {
    await page.waitForFunction(predicate, null, { timeout: ms, polling: 200 });
  } catch (e) {
    const log = await page.evaluate(() => document.getElementById("log").textContent);
    throw new Error(`${what} did not happen; page log:\n${log}`);
  }
}

function startDev(port, extra = []) {
  assert.ok(BIN, "set SWITCHYARD_BIN to the switchyard binary");
  const args = ["dev", "--port", String(port), "--udp-port", String(port + 2), "--turn-port", String(port + 5)];
  const server = spawn(BIN, [...args, ...extra], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  server.printed = "";
  server.stdout.on("data", (d) => (server.printed += d));
  return server;
}

function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--autoplay-policy=no-user-gesture-required", ...extraArgs,
    ],
  });
}

test("two tabs see and hear each other through switchyard dev", { timeout: 120_000 }, async () => {
  const server = startDev(PORT);
  const browser = await launch();
  try {
    await waitForHttp(`http://127.0.0.1:${PORT}/healthz`, 30_000);
    const printed = server.printed;
    assert.match(printed, /token\s+ey/, "dev prints a ready-to-use token");
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const alice = await context.newPage();
    const bob = await context.newPage();
    await alice.goto(`http://localhost:${PORT}/?room=e2e&identity=alice`);
    await bob.goto(`http://localhost:${PORT}/?room=e2e&identity=bob`);
    for (const [name, page] of [["alice", alice], ["bob", bob]]) {
      await waitFor(page, () => window.switchyardStats && window.switchyardStats.tracks >= 2, 45_000, `${name} receiving 2 tracks`);
      await waitFor(page, () => window.switchyardStats.playing >= 2, 45_000, `${name} playing local and remote video`);
    }
    // Frames really arrive: the remote <video> reports decoded frames that keep increasing.
    const decoded = () => alice.evaluate(() => {
      const remote = [...document.querySelectorAll("video")].find((v) => !v.muted);
      return remote.getVideoPlaybackQuality().totalVideoFrames;
    });
    const f1 = await decoded();
    await new Promise((r) => setTimeout(r, 2000));
    const f2 = await decoded();
    assert.ok(f2 > f1 + 10, `remote video advanced ${f1} → ${f2} frames`);
    // Audio from bob reaches alice as an inbound-rtp stream with packets.
    const audioPackets = await alice.evaluate(async () => {
      const stats = await window.switchyardRoom.pc.getStats();
      let n = 0;
      stats.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "audio") n += s.packetsReceived; });
      return n;
    });
    assert.ok(audioPackets > 50, `alice received ${audioPackets} audio packets`);
    await bob.evaluate(() => window.switchyardRoom.sendData("hi alice"));
    await waitFor(alice, () => window.switchyardStats.data.includes("bob: hi alice"), 10_000, "data message");
    if (process.env.SCREENSHOT) await alice.screenshot({ path: process.env.SCREENSHOT });
  } finally {
    await browser.close();
    server.kill("SIGINT");
  }
});

/** Start `switchyard dev` with `extra` flags, put alice and bob in a call, and return
 * alice's selected ICE candidate pair once bob's video has played for two seconds. */
async function callAndSelectedPair(port, extra, room) {
  const server = startDev(port, extra);
  const browser = await launch();
  try {
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 30_000);
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const alice = await context.newPage();
    const bob = await context.newPage();
    await alice.goto(`http://localhost:${port}/?room=${room}&identity=alice`);
    await bob.goto(`http://localhost:${port}/?room=${room}&identity=bob`);
    await waitFor(alice, () => window.switchyardStats && window.switchyardStats.playing >= 2, 45_000, `alice playing bob's video (${extra})`);
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
    server.kill("SIGINT");
  }
}

test("media flows over ICE-TCP when UDP cannot reach the node", { timeout: 120_000 }, async () => {
  // The node advertises only its passive ICE-TCP candidate, as behind a TCP-only path.
  const pair = await callAndSelectedPair(PORT + 10, ["--ice-tcp-only"], "tcp");
  assert.deepEqual([pair.local, pair.remote], ["tcp", "tcp"], JSON.stringify(pair));
  assert.ok(pair.bytes > 10_000, `received ${pair.bytes} bytes over TCP`);
});

test("relay-only: all media goes through the embedded TURN server", { timeout: 120_000 }, async () => {
  const pair = await callAndSelectedPair(PORT + 20, ["--relay-only"], "relay");
  assert.equal(pair.localType, "relay", JSON.stringify(pair));
  assert.ok(pair.bytes > 10_000, `received ${pair.bytes} bytes through TURN`);
});

// A late joiner whose browser is slow to apply the server's answer to its first offer:
// the server's own offer (with the tracks already published) arrives while that answer is
// still being applied. The SDK used to take it for glare and drop it, and the late joiner
// never received anything. Messages are now handled in order, and the server sends an
// unanswered offer again.
test("a late joiner slow to apply its answer still gets every published track", { timeout: 120_000 }, async () => {
  const port = PORT + 30;
  const server = startDev(port);
  const browser = await launch();
  try {
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 30_000);
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const alice = await context.newPage();
    await alice.goto(`http://localhost:${port}/?room=late&identity=alice`);
    await waitFor(alice, () => window.switchyardStats && window.switchyardStats.playing >= 1, 45_000, "alice publishing");
    await new Promise((r) => setTimeout(r, 1000));
    const bob = await context.newPage();
    await bob.addInitScript(() => {
      const apply = RTCPeerConnection.prototype.setRemoteDescription;
      RTCPeerConnection.prototype.setRemoteDescription = async function (d) {
        if (d && d.type === "answer") await new Promise((r) => setTimeout(r, 300));
        return apply.call(this, d);
      };
    });
    await bob.goto(`http://localhost:${port}/?room=late&identity=bob`);
    await waitFor(bob, () => window.switchyardStats && window.switchyardStats.tracks >= 2, 20_000, "bob receiving alice's 2 tracks");
    await waitFor(bob, () => window.switchyardStats.playing >= 2, 20_000, "bob playing alice's video");
  } finally {
    await browser.close();
    server.kill("SIGINT");
  }
});

test("the demo page joins with the token and signaling URL it is given, as against a cluster", { timeout: 120_000 }, async () => {
  const port = PORT + 40;
  const server = startDev(port, ["--room", "given"]);
  const browser = await launch();
  try {
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 30_000);
    const token = server.printed.match(/token\s+(ey[\w.-]+)/)?.[1];
    assert.ok(token, `dev printed a token:\n${server.printed}`);
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const page = await context.newPage();
    const requests = [];
    const sockets = [];
    page.on("request", (r) => requests.push(r.url()));
    page.on("websocket", (ws) => sockets.push(ws.url()));
    // The page comes from `localhost`, the signaling URL names 127.0.0.1: the socket must follow the URL.
    const url = encodeURIComponent(`ws://127.0.0.1:${port}`);
    await page.goto(`http://localhost:${port}/?room=given&token=${token}&url=${url}`);
    await waitFor(page, () => window.switchyardRoom !== undefined, 45_000, "joined with the given token");
    assert.ok(!requests.some((u) => u.includes("/dev/token")), `no /dev/token request: ${requests.join(" ")}`);
    assert.ok(sockets.some((u) => u.startsWith(`ws://127.0.0.1:${port}/rtc`)), `signaling through the given URL: ${sockets.join(" ")}`);
  } finally {
    await browser.close();
    server.kill("SIGINT");
  }
});
