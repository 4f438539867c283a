// WebhookReceiver on its own: a genuine request verifies, and forged, stale, altered or
// malformed ones are refused with the codes of the Rust receiver. The event kinds and
// required fields are checked against the generated schema, so the SDK cannot drift from
// what media-node sends.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { WEBHOOK_EVENTS, WebhookError, WebhookReceiver, bodyHash } from "../dist/index.js";
import { signHs256 } from "../dist/jwt.js";

const NOW = 1_800_000_000;
const body = JSON.stringify({
  id: "EV_7f3k2m9q", event: "participant_joined", createdAt: NOW, room: { name: "standup", sid: "RM_1abc" },
  participant: { identity: "alice", sid: "PA_2def" }, node: "edge-sfu-0", cluster: "edge",
});
const signature = (b, { key = "APIkey1", secret = "secret-one", iat = NOW, iss = key } = {}) =>
  signHs256({ iss, iat, exp: iat + 300, sha256: createHash("sha256").update(b).digest("base64") }, secret, key);
const receiver = () => new WebhookReceiver({ APIkey1: "secret-one", APIkey2: "secret-two" });
const code = (fn) => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof WebhookError, `${e} is a WebhookError`);
    return e.code;
  }
  assert.fail("no error");
};

test("a genuine request verifies and returns the typed event", async () => {
  const event = await receiver().receive(body, signature(body), { now: NOW + 10 });
  assert.equal(event.event, "participant_joined");
  assert.equal(event.participant.identity, "alice");
  const single = new WebhookReceiver("APIkey2", "secret-two");
  assert.equal(single.verify(Buffer.from(body), signature(body, { key: "APIkey2", secret: "secret-two" }), { now: NOW }).id, "EV_7f3k2m9q");
});

test("a Bearer prefix is accepted in any case", () => {
  for (const scheme of ["Bearer ", "bearer ", "BEARER  "]) {
    assert.equal(receiver().verify(body, scheme + signature(body), { now: NOW }).room.name, "standup");
  }
});

test("forged, stale, altered and unknown-key requests are refused", () => {
  assert.equal(code(() => receiver().verify(body, signature(body, { secret: "wrong" }), { now: NOW })), "bad_signature");
  assert.equal(code(() => receiver().verify(body, signature(body), { now: NOW + 301 })), "expired");
  assert.equal(code(() => receiver().verify(body.replace("alice", "mallory"), signature(body), { now: NOW })), "body_hash_mismatch");
  assert.equal(code(() => receiver().verify(body, signature(body, { key: "APIkey9", secret: "x" }), { now: NOW })), "unknown_key");
  assert.equal(code(() => receiver().verify(body, signature(body, { iss: "APIkey2" }), { now: NOW })), "malformed");
});

test("malformed headers and bodies get malformed, with a reason", () => {
  for (const auth of [undefined, "", "abc", "a.b.c.d", `${Buffer.from('{"alg":"none"}').toString("base64url")}.e30.`]) {
    assert.equal(code(() => receiver().verify(body, auth, { now: NOW })), "malformed", String(auth));
  }
  for (const b of ["not json", "[]", '{"id":"x"}', JSON.stringify({ ...JSON.parse(body), event: "room_exploded" })]) {
    assert.throws(() => receiver().verify(b, signature(b), { now: NOW }), (e) => e.code === "malformed" && /^body/.test(e.message), b);
  }
});

test("bodyHash is base64 SHA-256 of the exact bytes", () => {
  assert.equal(bodyHash(""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
  assert.equal(bodyHash(Buffer.from(body)), bodyHash(body));
});

test("event kinds and required fields match schema/webhook-v1.schema.json", () => {
  const schema = JSON.parse(readFileSync(new URL("../../../schema/webhook-v1.schema.json", import.meta.url), "utf8"));
  const kinds = schema.$defs.WebhookEvent.oneOf.map((k) => k.const);
  assert.deepEqual([...WEBHOOK_EVENTS], kinds);
  assert.deepEqual(new Set(schema.required), new Set(["id", "event", "createdAt", "room", "node", "cluster"]));
  assert.deepEqual(Object.keys(schema.properties).sort(), ["cluster", "createdAt", "event", "id", "node", "participant", "room", "track"]);
});
