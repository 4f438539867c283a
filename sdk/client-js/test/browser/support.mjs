// Shared by the browser tests: a `switchyard dev` on loopback, headless Chromium with fake
// devices, pages at the dev server's origin that load the SDK from /switchyard.js, and a
// TCP proxy whose connections can be cut without a close frame.
//
// SWITCHYARD_BIN=path/to/switchyard CHROMIUM=/usr/bin/chromium node --test test/browser/

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import { chromium } from "playwright-core";

export const BIN = process.env.SWITCHYARD_BIN;
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export async function waitForHttp(url, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up`);
}

/** `switchyard dev` on `port` (media on port+2, TURN on port+5, admin on port+7). */
export async function startDev(port, extra = []) {
  assert.ok(BIN, "set SWITCHYARD_BIN to the switchyard binary");
  const args = ["dev", "--port", String(port), "--udp-port", String(port + 2), "--turn-port", String(port + 5), "--admin-addr", `127.0.0.1:${port + 7}`];
  const server = spawn(BIN, [...args, ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  server.printed = "";
  server.logs = "";
  server.stdout.on("data", (d) => (server.printed += d));
  server.stderr.on("data", (d) => (server.logs += d));
  server.base = `http://localhost:${port}`;
  server.ws = `ws://localhost:${port}`;
  server.stop = () => server.kill("SIGINT");
  await waitForHttp(`http://127.0.0.1:${port}/healthz`, 30_000);
  return server;
}

export function launch(extraArgs = []) {
  const fakeDevices = extraArgs.find((a) => a.startsWith("--use-fake-device-for-media-stream")) ?? "--use-fake-device-for-media-stream";
  extraArgs = extraArgs.filter((a) => a !== fakeDevices);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      fakeDevices, "--use-fake-ui-for-media-stream",
      "--auto-select-desktop-capture-source=Entire screen", "--autoplay-policy=no-user-gesture-required",
      ...extraArgs,
    ],
  });
}

/** A page at the dev server's origin (so `/switchyard.js` and `/dev/token` are same-origin).
 * It is the real `/healthz` document: a page Playwright made up would count as a public
 * address to Chromium's local-network checks, which then block its sockets to loopback. */
export async function blankPage(context, base) {
  const page = await context.newPage();
  // While changing the SDK: serve the fresh build instead of the bundle embedded in the binary.
  if (process.env.SDK_FROM_DISK)
    await page.route(`${base}/switchyard.js`, (r) => r.fulfill({ contentType: "text/javascript", path: new URL("../../../demo/assets/switchyard.js", import.meta.url).pathname }));
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await page.goto(`${base}/healthz`);
  return page;
}

/**
 * Join `room` as `identity` through the SDK in `page`: every room event goes to
 * `window.events`, subscribed tracks are attached to elements (`data-track` = track sid,
 * `data-identity`), `window.room` is the Room.
 */
export async function joinWithSdk(page, { url, room, identity, options = {}, publish = { camera: true, microphone: true } }) {
  await page.evaluate(
    async ({ url, room, identity, options, publish }) => {
      const sy = await import("/switchyard.js");
      window.sy = sy;
      const token = await (await fetch(`/dev/token?room=${encodeURIComponent(room)}&identity=${encodeURIComponent(identity)}`)).text();
      const r = new sy.Room(options);
      window.room = r;
      window.events = [];
      const push = (...e) => window.events.push(e);
      r.on("participantConnected", (p) => push("participantConnected", p.identity));
      r.on("participantDisconnected", (p, why) => push("participantDisconnected", p.identity, why));
      r.on("trackPublished", (pub, p) => push("trackPublished", p.identity, pub.source));
      r.on("trackUnpublished", (pub, p) => push("trackUnpublished", p.identity, pub.source));
      r.on("trackMuted", (pub, p) => push("trackMuted", p.identity, pub.source));
      r.on("trackUnmuted", (pub, p) => push("trackUnmuted", p.identity, pub.source));
      r.on("trackUnsubscribed", (_t, pub, p) => push("trackUnsubscribed", p.identity, pub.source));
      r.on("dataReceived", (payload, p, info) => push("data", p?.identity, info.kind, info.topic, new TextDecoder().decode(payload)));
      r.on("reconnecting", () => push("reconnecting"));
      r.on("reconnected", (how) => push("reconnected", how));
      r.on("disconnected", (why) => push("disconnected", why));
      window.messages = [];
      r.session.on("message", (m) => window.messages.push(m));
      r.on("activeSpeakersChanged", (s) => push("activeSpeakers", s.map((p) => p.identity).join(",")));
      r.on("trackSubscribed", (_t, pub, p) => {
        push("trackSubscribed", p.identity, pub.source, pub.kind);
        const el = pub.attach();
        el.muted = pub.kind === "video";
        el.dataset.track = pub.sid;
        el.dataset.identity = p.identity;
        el.dataset.source = pub.source;
        if (el instanceof HTMLVideoElement) el.style.cssText = "width: 640px; height: 360px";
        document.body.append(el);
      });
      await r.connect(url, token);
      if (publish.microphone) await r.localParticipant.setMicrophoneEnabled(true);
      if (publish.camera) await r.localParticipant.setCameraEnabled(true);
    },
    { url, room, identity, options, publish },
  );
}

export async function waitFor(page, fn, arg, ms, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 200 });
  } catch {
    const events = await page.evaluate(() => JSON.stringify(window.events ?? [])).catch(() => "?");
    throw new Error(`${what} did not happen within ${ms} ms; events: ${events}`);
  }
}

/** Decoded frames of the received video of `identity`'s `source`, sampled twice `ms` apart. */
export async function framesAdvance(page, identity, source = "camera", ms = 1500) {
  const frames = () =>
    page.evaluate(
      ({ identity, source }) => {
        const v = document.querySelector(`video[data-identity="${identity}"][data-source="${source}"]`);
        return v ? v.getVideoPlaybackQuality().totalVideoFrames : -1;
      },
      { identity, source },
    );
  const a = await frames();
  await new Promise((r) => setTimeout(r, ms));
  const b = await frames();
  return [a, b];
}

/** Wait until the received video of `identity`'s `source` decodes `by` more frames than
 * now (a busy machine gets time; a stalled stream fails). Returns [before, after]. */
export async function framesAdvanceBy(page, identity, source = "camera", by = 5, ms = 20_000) {
  const [start] = await framesAdvance(page, identity, source, 0);
  await waitFor(
    page,
    ({ identity, source, target }) => {
      const v = document.querySelector(`video[data-identity="${identity}"][data-source="${source}"]`);
      return v && v.getVideoPlaybackQuality().totalVideoFrames >= target;
    },
    { identity, source, target: start + by },
    ms,
    `${identity}'s ${source} decoding ${by} more frames than ${start}`,
  );
  return [start, (await framesAdvance(page, identity, source, 0))[1]];
}

/** Received audio energy from `identity` (getStats totalAudioEnergy), sampled twice. */
export async function audioEnergy(page, identity, ms = 1500) {
  const energy = () =>
    page.evaluate(async (identity) => {
      const s = await window.room.getStats();
      return s.inbound.filter((i) => i.kind === "audio" && i.participantIdentity === identity).reduce((n, i) => n + (i.totalAudioEnergy ?? 0), 0);
    }, identity);
  const a = await energy();
  await new Promise((r) => setTimeout(r, ms));
  return [a, await energy()];
}

/** A TCP proxy to 127.0.0.1:`target`; `cut()` destroys every open connection (no close frame). */
export async function startProxy(target) {
  const conns = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    conns.add(client);
    conns.add(upstream);
    client.pipe(upstream).pipe(client);
    const done = () => {
      client.destroy();
      upstream.destroy();
      conns.delete(client);
      conns.delete(upstream);
    };
    client.on("error", done).on("close", done);
    upstream.on("error", done).on("close", done);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: server.address().port,
    cut() {
      for (const c of conns) c.resetAndDestroy ? c.resetAndDestroy() : c.destroy();
      conns.clear();
    },
    close() {
      this.cut();
      server.close();
    },
  };
}
