// Shared by the tests that run against a real `switchyard dev` (SWITCHYARD_BIN).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { request } from "node:http";
import { createServer } from "node:net";

export const BIN = process.env.SWITCHYARD_BIN;

/** A TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Wait until `url` answers 2xx, or fail after `ms`. */
export async function waitForHttp(url, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up in ${ms} ms`);
}

/** Run `switchyard dev` on free ports with a fixed key and secret; resolves once it serves. */
export async function startDev({ apiKey = "devkey", apiSecret, extra = [] }) {
  assert.ok(BIN, "set SWITCHYARD_BIN to the switchyard binary");
  const port = await freePort();
  const udp = await freePort();
  const args = ["dev", "--port", String(port), "--udp-port", String(udp), "--turn-port", "0",
    "--api-key", apiKey, "--api-secret", apiSecret, ...extra];
  const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
  child.output = "";
  child.stdout.on("data", (d) => (child.output += d));
  child.stderr.on("data", (d) => (child.output += d));
  const stop = () => new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill("SIGINT");
    setTimeout(() => child.kill("SIGKILL"), 5000).unref();
  });
  try {
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 30_000);
  } catch (e) {
    await stop();
    throw new Error(`${e.message}; switchyard dev printed:\n${child.output}`);
  }
  return { url: `ws://127.0.0.1:${port}`, http: `http://127.0.0.1:${port}`, child, stop };
}

/**
 * Open the signaling socket with `token` and send `join`; resolves with the first
 * server message (`joined`, or an `error`) and the socket, or rejects when the upgrade
 * is refused (the node refuses bad tokens before upgrading).
 */
export function join(url, token) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/rtc?access_token=${encodeURIComponent(token)}`);
    const timer = setTimeout(() => reject(new Error("no answer to join in 10 s")), 10_000);
    ws.onopen = () => ws.send(JSON.stringify({ type: "join", protocolVersion: 1, sdk: { name: "server-js-test", version: "0" } }));
    ws.onmessage = (m) => {
      clearTimeout(timer);
      resolve({ first: JSON.parse(m.data), ws });
    };
    ws.onerror = () => {
      clearTimeout(timer);
      reject(new Error("WebSocket refused"));
    };
  });
}

/** The HTTP status and JSON body a refused upgrade gets (status 101 when it is accepted). */
export function refusal(http, token) {
  return new Promise((resolve, reject) => {
    const req = request(`${http}/rtc?access_token=${encodeURIComponent(token)}`, {
      headers: { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" },
    });
    req.on("upgrade", (_res, socket) => {
      socket.destroy();
      resolve({ status: 101, body: null });
    });
    req.on("response", (res) => {
      let text = "";
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(text) }));
    });
    req.on("error", reject);
    req.end();
  });
}
