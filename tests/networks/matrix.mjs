// Switchyard's network matrix: two browsers, each in its own network namespace behind a
// router that NATs, filters or impairs its link, call each other through `switchyard dev`
// (in a third namespace). Each row records whether both directions got media, the selected
// candidate pair, join → first decoded frame, frames decoded in 10 s and residual loss.
//
//   sudo SWITCHYARD_BIN=target/debug/switchyard node tests/networks/matrix.mjs [--only a,b] [--json out.json]
//
// Prints a table and the JSON; exits 1 when a row that must connect did not (or connected
// on a path its network forbids). Namespaces are always torn down, also on failure.

import { spawn } from "node:child_process";
import { readFileSync, writeFileSync, mkdtempSync, chmodSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { Net, SERVER_IP } from "./netns.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.SWITCHYARD_BIN;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SIGNALING_PORT = 7880;
const TURN_PORT = 3478;
const TURN_TLS_PORT = 443;
const WINDOW_MS = 10_000;
const CONNECT_MS = 30_000;
const MIN_FRAMES = 30;

const direct = { nat: "none" };
/** The rows. `expect` checks the selected pair: what the row's network allows. */
export const ROWS = [
  { name: "direct", clients: [direct, direct], filter: "none" },
  { name: "endpoint-independent NAT (both)", clients: [{ nat: "eim" }, { nat: "eim" }], filter: "none" },
  { name: "symmetric NAT (alice)", clients: [{ nat: "symmetric" }, direct], filter: "none" },
  { name: "symmetric NAT (both)", clients: [{ nat: "symmetric" }, { nat: "symmetric" }], filter: "none" },
  {
    name: "UDP blocked (both)", clients: [{ nat: "eim" }, { nat: "eim" }], filter: "no-udp",
    expect: (p) => p.local.endsWith("/tcp") || p.local === "relay/tls",
    expectText: "a TCP path (ICE-TCP or TURN/TCP or TURN/TLS)",
  },
  {
    name: "only TCP 443 out (both)", clients: [{ nat: "eim" }, { nat: "eim" }], filter: "tcp-443",
    expect: (p) => p.local === "relay/tls", expectText: "relay/tls (TURN over TLS on 443)",
  },
  { name: "5 % loss (alice, both ways)", clients: [{ nat: "eim", impair: { loss: 5 } }, direct], filter: "none" },
  {
    name: "100 ms ± 30 ms (alice, both ways)", clients: [{ nat: "eim", impair: { delayMs: 100, jitterMs: 30 } }, direct],
    filter: "none",
  },
  { name: "500 kbit/s cap (alice, both ways)", clients: [{ nat: "eim", impair: { rateKbit: 500 } }, direct], filter: "none" },
];
const NOT_RUN = [{ name: "IPv6-only client", why: "turn-node allocations are single-family (no RFC 8656 ADDITIONAL-ADDRESS-FAMILY yet)" }];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function startDev(net) {
  const args = [
    "netns", "exec", net.srv, BIN, "dev", "--bind", SERVER_IP, "--allow-lan-tokens", "--advertise-ip", SERVER_IP,
    "--port", String(SIGNALING_PORT), "--udp-port", "7882", "--turn-port", String(TURN_PORT),
    "--turn-tls-port", String(TURN_TLS_PORT),
  ];
  const server = spawn("ip", args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" } });
  server.printed = "";
  server.stdout.on("data", (d) => (server.printed += d));
  server.stderr.on("data", (d) => (server.printed += d));
  return server;
}

async function waitForPrinted(server, re, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const m = server.printed.match(re);
    if (m) return m;
    if (server.exitCode != null) break;
    await sleep(50);
  }
  throw new Error(`switchyard dev did not print ${re}:\n${server.printed}`);
}

/** A headless Chromium whose every process runs in namespace `ns`. */
async function launchChromium(ns, tmp, spki) {
  const wrapper = join(tmp, `chromium-${ns}`);
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`);
  chmodSync(wrapper, 0o755);
  const origin = `http://${SERVER_IP}:${SIGNALING_PORT}`;
  return chromium.launch({
    executablePath: wrapper,
    timeout: 30_000,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--autoplay-policy=no-user-gesture-required",
      // getUserMedia needs a secure context; the page comes over plain HTTP from the server.
      `--unsafely-treat-insecure-origin-as-secure=${origin}`,
      // The TURN/TLS certificate is dev's self-signed one: trust exactly its key.
      `--ignore-certificate-errors-spki-list=${spki}`,
    ],
  });
}

async function openClient(browser, room, identity) {
  const context = await browser.newContext({ permissions: ["camera", "microphone"] });
  const page = await context.newPage();
  // The page and the SDK come from this checkout; everything else (token, signaling,
  // media) goes over the namespaces' network to the server.
  await page.route("**/networks/call.html*", (r) => r.fulfill({ contentType: "text/html", body: readFileSync(join(HERE, "call.html")) }));
  await page.route("**/networks/switchyard.js", (r) =>
    r.fulfill({ contentType: "text/javascript", body: readFileSync(join(HERE, "../../sdk/js/switchyard.js")) }));
  await page.goto(`http://${SERVER_IP}:${SIGNALING_PORT}/networks/call.html?room=${room}&identity=${identity}`);
  return page;
}

async function waitFirstFrame(page, ms) {
  try {
    await page.waitForFunction(() => window.net && (window.net.firstFrameMs != null || window.net.error), null, { timeout: ms, polling: 100 });
  } catch {}
  return page.evaluate(() => window.net);
}

const ratio = (lost, got) => (lost + got > 0 ? lost / (lost + got) : null);

async function runRow(row, index, tmp) {
  const prefix = `nm${process.pid % 100000}r${index}`;
  const net = new Net(prefix, { ...row, signalingPort: SIGNALING_PORT });
  const result = { row: row.name, mustConnect: true, connected: false, clients: {} };
  const browsers = [];
  let server;
  const t0 = Date.now();
  try {
    await net.up();
    server = startDev(net);
    const spki = (await waitForPrinted(server, /--ignore-certificate-errors-spki-list=(\S+)/, 30_000))[1];
    await waitForPrinted(server, /token\s+ey/, 30_000);
    const names = ["alice", "bob"];
    for (const ns of net.clients) browsers.push(await launchChromium(ns, tmp, spki));
    // Both join at once: join → first frame then includes the other side's publishing.
    const pages = await Promise.all(browsers.map((b, i) => openClient(b, `row${index}`, names[i])));
    const firsts = await Promise.all(pages.map((p) => waitFirstFrame(p, CONNECT_MS)));
    const before = await Promise.all(pages.map((p, i) => (firsts[i].joinedMs != null ? p.evaluate(() => window.netStats()) : null)));
    if (firsts.every((f) => f.firstFrameMs != null)) await sleep(WINDOW_MS);
    const after = await Promise.all(pages.map((p, i) => (firsts[i].joinedMs != null ? p.evaluate(() => window.netStats()) : null)));
    for (const [i, name] of names.entries()) {
      const f = firsts[i], a = before[i], b = after[i];
      const c = { browser: "chromium", joinMs: f.joinedMs != null ? Math.round(f.joinedMs) : null, error: f.error, ice: f.ice };
      c.firstFrameMs = f.firstFrameMs != null ? Math.round(f.firstFrameMs) : null;
      if (a && b) {
        c.pair = b.pair;
        c.framesDecoded10s = b.video.framesDecoded - a.video.framesDecoded;
        const vl = ratio(b.video.packetsLost - a.video.packetsLost, b.video.packetsReceived - a.video.packetsReceived);
        const al = ratio(b.audio.packetsLost - a.audio.packetsLost, b.audio.packetsReceived - a.audio.packetsReceived);
        // packetsLost is what the receiver's sequence numbers miss; packets a NACK brought
        // back come on the RTX stream. Lost minus retransmissions received estimates what
        // stayed lost (an upper bound on recovery: a retransmission may repeat one).
        const lost = b.video.packetsLost - a.video.packetsLost, got = b.video.packetsReceived - a.video.packetsReceived;
        const rtx = b.video.retransmitted - a.video.retransmitted;
        c.videoLoss = vl;
        c.videoResidualLoss = ratio(Math.max(0, lost - rtx), got + rtx);
        c.audioLoss = al;
        c.videoNacksSent = b.video.nackCount - a.video.nackCount;
        c.videoRetransmissionsReceived = b.video.retransmitted - a.video.retransmitted;
        c.videoFreezes = b.video.freezes - a.video.freezes;
        c.codecs = [...new Set([...b.video.codecs, ...b.audio.codecs])];
      }
      result.clients[name] = c;
    }
    const cs = Object.values(result.clients);
    // Media flows: each side decoded a first frame, then at least 3 frames a second.
    result.connected = cs.every((c) => c.firstFrameMs != null && c.framesDecoded10s >= MIN_FRAMES);
    if (result.connected && row.expect) {
      result.pathOk = cs.every((c) => c.pair && row.expect(c.pair));
      if (!result.pathOk) result.problem = `expected ${row.expectText}`;
    }
    if (!result.connected) result.problem = `no media both ways; server said:\n${server.printed.slice(-2000)}`;
  } catch (e) {
    result.problem = String(e.stack || e);
  } finally {
    for (const b of browsers) await b.close().catch(() => {});
    if (server && server.exitCode == null) server.kill("SIGKILL");
    net.down();
    result.seconds = Math.round((Date.now() - t0) / 100) / 10;
  }
  return result;
}

const pct = (x) => (x == null ? "–" : `${(x * 100).toFixed(1)} %`);
function table(results) {
  const head = ["row", "ok", "alice pair (local → SFU)", "bob pair", "RTT ms (a/b)", "join→frame ms (a/b)", "frames/10 s (a/b)",
    "video lost (a/b)", "after RTX (a/b)", "audio lost (a/b)"];
  const rows = results.map((r) => {
    if (r.notRun) return [r.row, "not run", r.why, "", "", "", "", "", "", ""];
    const a = r.clients.alice || {}, b = r.clients.bob || {};
    const pair = (c) => (c.pair ? `${c.pair.local} → ${c.pair.remote}` : "–");
    const ok = r.connected && r.pathOk !== false ? "yes" : "NO";
    const rtt = (c) => (c.pair?.rttMs != null ? Math.round(c.pair.rttMs) : "–");
    return [r.row, ok, pair(a), pair(b), `${rtt(a)} / ${rtt(b)}`, `${a.firstFrameMs ?? "–"} / ${b.firstFrameMs ?? "–"}`,
      `${a.framesDecoded10s ?? "–"} / ${b.framesDecoded10s ?? "–"}`, `${pct(a.videoLoss)} / ${pct(b.videoLoss)}`,
      `${pct(a.videoResidualLoss)} / ${pct(b.videoResidualLoss)}`, `${pct(a.audioLoss)} / ${pct(b.audioLoss)}`];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => "| " + cells.map((c, i) => String(c).padEnd(widths[i])).join(" | ") + " |";
  return [line(head), "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|", ...rows.map(line)].join("\n");
}

async function main() {
  if (!BIN) throw new Error("set SWITCHYARD_BIN to the switchyard binary");
  if (process.getuid?.() !== 0) throw new Error("the matrix builds network namespaces: run it as root");
  const argv = process.argv.slice(2);
  const only = argv.includes("--only") ? argv[argv.indexOf("--only") + 1].split(",") : null;
  const jsonOut = argv.includes("--json") ? argv[argv.indexOf("--json") + 1] : null;
  const tmp = mkdtempSync(join(tmpdir(), "sy-matrix-"));
  const results = [];
  const started = Date.now();
  try {
    for (const [i, row] of ROWS.entries()) {
      if (only && !only.some((o) => row.name.includes(o))) continue;
      const r = await runRow(row, i, tmp);
      console.error(`matrix: ${row.name}: ${r.connected ? "connected" : "NOT connected"} (${r.seconds} s)`);
      results.push(r);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  if (!only) for (const n of NOT_RUN) results.push({ row: n.name, notRun: true, why: n.why });
  console.log(table(results));
  const seconds = Math.round((Date.now() - started) / 1000);
  const json = `{"seconds": ${seconds}, "rows": [\n${results.map((r) => "  " + JSON.stringify(r)).join(",\n")}\n]}`;
  console.log(json);
  if (jsonOut) writeFileSync(jsonOut, json);
  const failed = results.filter((r) => !r.notRun && r.mustConnect && !(r.connected && r.pathOk !== false));
  for (const f of failed) console.error(`matrix: FAILED ${f.row}: ${f.problem}`);
  // The test suite's closing line counts these, as it counts node's test runner.
  console.log(`# pass ${results.filter((r) => !r.notRun).length - failed.length}`);
  console.log(`# fail ${failed.length}`);
  process.exit(failed.length ? 1 : 0);
}

for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));
await main();
