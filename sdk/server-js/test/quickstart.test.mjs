// The README's backend quick start, run as written: its code block is copied out of
// README.md, started with node beside `switchyard dev`, and must hand out a token that
// joins a call and then log that call's webhooks (and refuse a forged one).

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { freePort, join, startDev, waitForHttp } from "./support.mjs";

const README = new URL("../../../README.md", import.meta.url);

function quickstart() {
  const text = readFileSync(README, "utf8");
  const marker = text.indexOf("<!-- quickstart:backend -->");
  assert.ok(marker >= 0, "README has the backend quick start");
  const start = text.indexOf("```js\n", marker) + "```js\n".length;
  return text.slice(start, text.indexOf("```\n", start));
}

test("the README's backend quick start mints a token that joins and receives the call's webhooks", { timeout: 90_000 }, async () => {
  // Inside the package, so `@switchyard/server` resolves to this package and express to its devDependency.
  const file = fileURLToPath(new URL(`../.quickstart-${process.pid}.mjs`, import.meta.url));
  const port = await freePort();
  const dev = await startDev({ apiKey: "devkey", apiSecret: "devsecret", extra: ["--webhook", `http://127.0.0.1:${port}/webhooks`] });
  writeFileSync(file, quickstart());
  const backend = spawn(process.execPath, [file], {
    env: { ...process.env, SWITCHYARD_API_KEY: "devkey", SWITCHYARD_API_SECRET: "devsecret", PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  backend.stdout.on("data", (d) => (log += d));
  backend.stderr.on("data", (d) => (log += d));
  try {
    await waitForHttp(`http://127.0.0.1:${port}/token?identity=probe&room=probe`, 20_000).catch((e) => {
      throw new Error(`${e.message}; backend printed:\n${log}`);
    });
    const { token } = await (await fetch(`http://127.0.0.1:${port}/token?identity=alice&room=demo`)).json();
    const { first, ws } = await join(dev.url, token);
    assert.equal(first.type, "joined", JSON.stringify(first));
    assert.equal(first.participant.identity, "alice");
    ws.send(JSON.stringify({ type: "leave" }));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && !log.includes("webhook participant_left demo alice")) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(log, /webhook room_started demo -\n/);
    assert.match(log, /webhook participant_joined demo alice\n/);
    assert.match(log, /webhook participant_left demo alice\n/);

    const forged = await fetch(`http://127.0.0.1:${port}/webhooks`, {
      method: "POST",
      headers: { "content-type": "application/webhook+json", authorization: "Bearer a.b.c" },
      body: "{}",
    });
    assert.equal(forged.status, 401);
    assert.equal((await forged.json()).code, "malformed");
  } finally {
    backend.kill();
    await dev.stop();
    rmSync(file, { force: true });
  }
});
