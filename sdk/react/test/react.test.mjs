// @switchyard/react in headless Chromium against a real `switchyard dev`: a tiny React app
// (test/app.tsx, bundled here with React) renders a tile per participant, plays the other's
// video, follows mute and chat, and drops a departed participant's tile. About 30 s.
//
// SWITCHYARD_BIN=path/to/switchyard node --test test/

import { test } from "node:test";
import assert from "node:assert/strict";
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import { blankPage, launch, startDev } from "../../client-js/test/browser/support.mjs";

const PORT = 19300 + Math.floor(Math.random() * 50) * 10;

async function bundle() {
  const r = await build({
    entryPoints: [fileURLToPath(new URL("./app.tsx", import.meta.url))],
    bundle: true,
    format: "esm",
    target: "es2022",
    jsx: "automatic",
    write: false,
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "warning",
  });
  return r.outputFiles[0].text;
}

async function openApp(context, base, identity) {
  const page = await blankPage(context, base);
  await page.evaluate((c) => (window.testConfig = c), { url: base.replace("http", "ws"), room: "react", identity });
  await page.addScriptTag({ content: await appJs, type: "module" });
  return page;
}

const appJs = bundle();

async function wait(page, fn, arg, ms, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 250 });
  } catch {
    const html = await page.evaluate(() => document.body.innerHTML.slice(0, 2000)).catch(() => "?");
    throw new Error(`${what} did not happen within ${ms} ms; page:\n${html}`);
  }
}

test("a tiny React app renders a tile per participant and follows the room", { timeout: 120_000 }, async () => {
  const dev = await startDev(PORT);
  const browser = await launch();
  try {
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const alice = await openApp(context, dev.base, "alice");
    const bob = await openApp(context, dev.base, "bob");
    for (const [who, page, other] of [["alice", alice, "bob"], ["bob", bob, "alice"]]) {
      await wait(page, () => document.querySelectorAll("[data-participant]").length === 2, null, 30_000, `${who} rendering two tiles`);
      await wait(page, (o) => document.querySelector(`[data-participant="${o}"] video`)?.getVideoPlaybackQuality().totalVideoFrames > 0, other, 30_000, `${who} playing ${other}'s video`);
      const status = await page.evaluate(() => ({ ...document.getElementById("status").dataset }));
      assert.equal(status.state, "connected");
      assert.equal(status.camera, "true");
      await wait(page, () => document.querySelectorAll("audio").length === 1, null, 10_000, `${who}'s RoomAudioRenderer`);
    }
    // The control bar mutes; the other side's tile shows it.
    await bob.click('[data-control="microphone"]');
    await wait(alice, () => document.querySelector('[data-participant="bob"]').textContent.includes("🔇"), null, 10_000, "bob shown muted");
    await alice.evaluate(() => window.sendChat("hello from react"));
    await wait(bob, () => document.getElementById("chat").textContent.includes("alice: hello from react"), null, 10_000, "the chat message");
    // Bob leaves: alice renders one tile.
    await bob.click('[data-control="leave"]');
    await wait(alice, () => document.querySelectorAll("[data-participant]").length === 1, null, 15_000, "bob's tile removed");
  } finally {
    await browser.close();
    dev.stop();
  }
});
