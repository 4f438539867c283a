// One Firefox ESR client of a matrix row, run inside the client's network namespace:
//
//   ip netns exec <ns> node firefox-agent.mjs <page URL>
//
// Firefox is driven over WebDriver BiDi (puppeteer-core), whose socket is on the
// namespace's own loopback, so the driver cannot reach it from outside; this agent opens
// the page and then answers the driver's questions: each line on stdin is a JSON string, a
// JavaScript expression evaluated in the page; each line on stdout is {"value"} or {"error"}.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const FIREFOX = process.env.FIREFOX || "/usr/bin/firefox-esr";
const url = process.argv[2];
if (!url) {
  console.error("usage: firefox-agent.mjs <page URL>");
  process.exit(2);
}

// The TURN/TLS certificate is dev's self-signed one: the profile's NSS database trusts
// exactly it (as its own anchor, "C": Firefox's certificate verifier takes no
// trusted-peer entry for a self-signed leaf), and nothing the default profile would not.
const profile = mkdtempSync(join(tmpdir(), "sy-firefox-"));
process.on("exit", () => rmSync(profile, { recursive: true, force: true }));
if (process.env.TRUST_CERT) {
  execFileSync("certutil", ["-N", "-d", `sql:${profile}`, "--empty-password"]);
  execFileSync("certutil", ["-A", "-d", `sql:${profile}`, "-n", "switchyard-dev-turn", "-t", "C,,", "-i", process.env.TRUST_CERT]);
}

const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: FIREFOX,
  userDataDir: profile,
  headless: true,
  timeout: 60_000,
  extraPrefsFirefox: {
    // Fake camera and microphone, no permission prompt.
    "media.navigator.streams.fake": true,
    "media.navigator.permission.disabled": true,
    // The page comes over plain HTTP from the server (as the Chromium clients' does).
    "media.devices.insecure.enabled": true,
    "media.getusermedia.insecure.enabled": true,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    // Real host addresses in candidates, as Chromium's with camera permission.
    "media.peerconnection.ice.obfuscate_host_addresses": false,
    "network.captive-portal-service.enabled": false,
    "network.connectivity-service.enabled": false,
  },
});
let page;
try {
  page = await browser.newPage();
  // The page and the SDK come from this checkout, as for the Chromium clients.
  await page.setRequestInterception(true);
  page.on("request", (req) => {
    const u = new URL(req.url());
    if (u.pathname === "/networks/call.html") {
      req.respond({ status: 200, contentType: "text/html", body: readFileSync(join(HERE, "call.html"), "utf8") });
    } else if (u.pathname === "/networks/switchyard.js") {
      req.respond({ status: 200, contentType: "text/javascript", body: readFileSync(join(HERE, "client.js"), "utf8") });
    } else {
      req.continue();
    }
  });
  await page.goto(url);
  process.stdout.write(JSON.stringify({ value: "ready" }) + "\n");
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e.stack || e) }) + "\n");
  await browser.close();
  process.exit(1);
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let reply;
  try {
    const value = await page.evaluate(`(async () => (${JSON.parse(line)}))()`);
    reply = { value: value === undefined ? null : value };
  } catch (e) {
    reply = { error: String(e.message || e) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
await browser.close();
