// The README's frontend quick start, run as written: its `npm install` line runs in a
// fresh app directory (with this checkout for /path/to/switchyard; npm's cache makes it
// quick after the first run), its app.jsx is bundled there, served from another port of
// localhost (as an app's own dev server would), and two tabs of it must see each other
// through `switchyard dev`. The one change: the README's port 7880 becomes the test's.
// About 30 s.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { launch, startDev } from "../../client-js/test/browser/support.mjs";

const README = new URL("../../../README.md", import.meta.url);
const PORT = 19600 + Math.floor(Math.random() * 50) * 10;

function block(marker, lang) {
  const text = readFileSync(README, "utf8");
  const at = text.indexOf(`<!-- ${marker} -->`);
  assert.ok(at >= 0, `README has ${marker}`);
  const start = text.indexOf("```" + lang + "\n", at) + lang.length + 4;
  return text.slice(start, text.indexOf("```\n", start));
}

/** The README's `cd my-app && npm install …` in a fresh directory, this checkout as /path/to/switchyard. */
function installApp() {
  const line = block("quickstart:frontend-install", "sh").split("\n").find((l) => l.startsWith("cd my-app && npm install"));
  assert.ok(line, "the README installs into my-app");
  const root = fileURLToPath(new URL("../../..", import.meta.url)).replace(/\/$/, "");
  const args = line.replace("cd my-app && npm install", "").trim().split(/\s+/).map((a) => a.replace("/path/to/switchyard", root));
  const dir = mkdtempSync(join(tmpdir(), "switchyard-quickstart-"));
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "my-app", private: true, type: "module" }));
  execFileSync("npm", ["install", ...args, "--no-audit", "--no-fund", "--prefer-offline", "--silent"], { cwd: dir, stdio: "inherit" });
  return dir;
}

test("the README's frontend quick start joins two tabs into one call", { timeout: 120_000 }, async () => {
  const source = block("quickstart:frontend", "jsx");
  assert.match(source, /localhost:7880/);
  const app = installApp();
  let js;
  try {
    const file = join(app, "app.jsx");
    writeFileSync(file, source.replaceAll("localhost:7880", `localhost:${PORT}`));
    const r = await build({
      entryPoints: [file],
      absWorkingDir: app,
      bundle: true,
      format: "esm",
      target: "es2022",
      jsx: "automatic",
      write: false,
      define: { "process.env.NODE_ENV": '"production"' },
      logLevel: "warning",
    });
    js = r.outputFiles[0].text;
    // One React: the app's, not a development copy from the checkout.
    const copies = js.match(/^\/\/ .*react\/cjs\/react\.production\.js$/gm) ?? [];
    assert.equal(copies.length, 1, `exactly one copy of React in the bundle: ${copies}`);
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
  const site = createServer((req, res) => {
    if (req.url.startsWith("/app.js")) res.writeHead(200, { "content-type": "text/javascript" }).end(js);
    else res.writeHead(200, { "content-type": "text/html" }).end('<!doctype html><div id="root"></div><script type="module" src="app.js"></script>');
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  const dev = await startDev(PORT);
  const browser = await launch();
  try {
    const context = await browser.newContext({ permissions: ["camera", "microphone"] });
    const tabs = [];
    for (const identity of ["alice", "bob"]) {
      const page = await context.newPage();
      await page.goto(`http://localhost:${site.address().port}/?identity=${identity}`);
      tabs.push([identity, page]);
    }
    for (const [identity, page] of tabs) {
      const other = identity === "alice" ? "bob" : "alice";
      await page
        .waitForFunction((o) => document.querySelector(`[data-participant="${o}"] video`)?.getVideoPlaybackQuality().totalVideoFrames > 0, other, { timeout: 45_000, polling: 250 })
        .catch(async () => {
          throw new Error(`${identity} never played ${other}'s video; page:\n${await page.evaluate(() => document.body.innerHTML.slice(0, 1500))}`);
        });
      assert.equal(await page.evaluate(() => document.querySelectorAll("[data-participant]").length), 2);
      assert.ok(await page.evaluate(() => document.querySelectorAll('[data-control="leave"]').length === 1), "the control bar");
    }
  } finally {
    await browser.close();
    dev.stop();
    site.close();
  }
});
