// The README's frontend quick start, run as written: its app.jsx is copied out of
// README.md, bundled with the packages as an app would install them, served from another
// port of localhost (as an app's own dev server would), and two tabs of it must see each
// other through `switchyard dev`. The one change: the README's port 7880 becomes the test's.
// About 20 s.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { launch, startDev } from "../../client-js/test/browser/support.mjs";

const README = new URL("../../../README.md", import.meta.url);
const PORT = 19600 + Math.floor(Math.random() * 50) * 10;

function quickstart() {
  const text = readFileSync(README, "utf8");
  const marker = text.indexOf("<!-- quickstart:frontend -->");
  assert.ok(marker >= 0, "README has the frontend quick start");
  const start = text.indexOf("```jsx\n", marker) + "```jsx\n".length;
  return text.slice(start, text.indexOf("```\n", start));
}

test("the README's frontend quick start joins two tabs into one call", { timeout: 120_000 }, async () => {
  const source = quickstart();
  assert.match(source, /localhost:7880/);
  // Inside the package, so `@switchyard/react` and `@switchyard/client` resolve as installed.
  const file = fileURLToPath(new URL(`../.quickstart-${process.pid}.jsx`, import.meta.url));
  writeFileSync(file, source.replaceAll("localhost:7880", `localhost:${PORT}`));
  let js;
  try {
    const r = await build({
      entryPoints: [file],
      bundle: true,
      format: "esm",
      target: "es2022",
      jsx: "automatic",
      write: false,
      alias: { "@switchyard/react": fileURLToPath(new URL("../dist/index.js", import.meta.url)) },
      define: { "process.env.NODE_ENV": '"production"' },
      logLevel: "warning",
    });
    js = r.outputFiles[0].text;
  } finally {
    rmSync(file, { force: true });
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
