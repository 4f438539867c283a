// The SDK against the real server: tokens minted here are accepted (and forged ones
// refused with the same reasons) by media-node's Rust verifier, tokens minted by
// `switchyard token` verify here, and webhooks signed by media-node verify here.
//
// SWITCHYARD_BIN=path/to/switchyard node --experimental-websocket --test test/

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { AccessToken, TokenVerifier, WebhookReceiver } from "../dist/index.js";
import { BIN, freePort, join, refusal, startDev } from "./support.mjs";

const KEY = "APIinterop";
const SECRET = "interop-secret-0123456789";

test("a token minted in TypeScript joins through media-node; forged ones get their reasons", { timeout: 60_000 }, async () => {
  const dev = await startDev({ apiKey: KEY, apiSecret: SECRET });
  try {
    const at = new AccessToken(KEY, SECRET, { identity: "ts-alice", name: "Alice", ttl: "5m" }).addGrant({ room: "interop", roomJoin: true });
    const { first, ws } = await join(dev.url, await at.toJwt());
    assert.equal(first.type, "joined", JSON.stringify(first));
    assert.equal(first.participant.identity, "ts-alice");
    assert.equal(first.room.name, "interop");
    ws.close();

    const forged = new AccessToken(KEY, "wrong-secret", { identity: "eve" }).addGrant({ room: "interop", roomJoin: true });
    assert.deepEqual((await refusal(dev.http, forged.toJwtSync())).body.code, "bad_signature");
    const now = Math.floor(Date.now() / 1000);
    const old = new AccessToken(KEY, SECRET, { identity: "late", ttl: 60 }).addGrant({ room: "interop", roomJoin: true });
    assert.equal((await refusal(dev.http, old.toJwtSync(now - 3600))).body.code, "token_expired");
    const other = new AccessToken("APIother", SECRET, { identity: "x" }).addGrant({ room: "interop", roomJoin: true });
    assert.equal((await refusal(dev.http, other.toJwtSync())).status, 401);
    const noJoin = new AccessToken(KEY, SECRET, { identity: "viewer" }).addGrant({ room: "interop" });
    const refused = await refusal(dev.http, noJoin.toJwtSync());
    assert.equal(refused.status, 403);
    assert.equal(refused.body.code, "missing_grant");
  } finally {
    await dev.stop();
  }
});

test("a token minted by `switchyard token` verifies here with every grant", () => {
  assert.ok(BIN, "set SWITCHYARD_BIN");
  const token = execFileSync(BIN, ["token", "--api-key", KEY, "--api-secret", SECRET, "--identity", "rust-bob",
    "--name", "Bob", "--room", "standup", "--ttl", "15m", "--admin", "--list", "--source", "microphone"], { encoding: "utf8" }).trim();
  const claims = new TokenVerifier({ [KEY]: SECRET }).verify(token);
  assert.equal(claims.sub, "rust-bob");
  assert.equal(claims.name, "Bob");
  assert.equal(claims.exp - claims.iat, 900);
  assert.deepEqual(claims.grants, {
    room: "standup", roomJoin: true, roomCreate: false, roomList: true, roomAdmin: true,
    canPublish: true, canSubscribe: true, canPublishData: true, canPublishSources: ["microphone"], hidden: false,
  });
  assert.throws(() => new TokenVerifier({ [KEY]: "another" }).verify(token), (e) => e.code === "bad_signature");
});

test("webhooks signed by media-node verify here, and an altered body does not", { timeout: 60_000 }, async () => {
  const received = [];
  const receiver = new WebhookReceiver(KEY, SECRET);
  const hook = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      received.push({ body: Buffer.concat(chunks), auth: req.headers.authorization, type: req.headers["content-type"] });
      res.writeHead(200).end();
    });
  });
  const port = await freePort();
  await new Promise((r) => hook.listen(port, "127.0.0.1", r));
  const dev = await startDev({ apiKey: KEY, apiSecret: SECRET, extra: ["--webhook", `http://127.0.0.1:${port}/hooks`] });
  try {
    const at = new AccessToken(KEY, SECRET, { identity: "hooked" }).addGrant({ room: "hooks", roomJoin: true });
    const { first, ws } = await join(dev.url, at.toJwtSync());
    assert.equal(first.type, "joined");
    ws.send(JSON.stringify({ type: "leave" }));
    const deadline = Date.now() + 20_000;
    const events = () => received.map((r) => receiver.verify(r.body, r.auth));
    while (Date.now() < deadline && !events().some((e) => e.event === "participant_left")) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const kinds = events().map((e) => `${e.event}:${e.participant?.identity ?? ""}`);
    assert.deepEqual(kinds.slice(0, 3), ["room_started:", "participant_joined:hooked", "participant_left:hooked"]);
    for (const e of events()) assert.equal(e.room.name, "hooks");
    // Every event names the room's sid (one room, one sid) and the session's sid.
    assert.equal(new Set(events().map((e) => e.room.sid)).size, 1);
    assert.match(events()[0].room.sid, /^RM_/);
    const [joined, left] = [events()[1], events()[2]];
    assert.match(joined.participant.sid, /^PA_/);
    assert.equal(left.participant.sid, joined.participant.sid);
    assert.equal(left.participant.leaveReason, "client_request");
    assert.equal(joined.participant.leaveReason, undefined);
    assert.ok(received.every((r) => r.type === "application/webhook+json"));
    const { body, auth } = received[1];
    const altered = Buffer.from(body.toString().replace("hooked", "spoofed"));
    assert.throws(() => receiver.verify(altered, auth), (e) => e.code === "body_hash_mismatch");
    assert.throws(() => new WebhookReceiver(KEY, "not-it").verify(body, auth), (e) => e.code === "bad_signature");
  } finally {
    await dev.stop();
    hook.close();
  }
});
