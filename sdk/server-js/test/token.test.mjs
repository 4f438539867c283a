// AccessToken and TokenVerifier on their own: every claim round-trips, and every way a
// token can be wrong is refused with the code media-node uses for it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { AccessToken, TokenError, TokenVerifier, parseTtl } from "../dist/index.js";

const NOW = 1_800_000_000;
const verifier = () => new TokenVerifier({ APIkey1: "secret-one", APIkey2: "secret-two" }, { leewaySeconds: 5 });
const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
const sign = (input, secret) => createHmac("sha256", secret).update(input).digest("base64url");
const code = (fn) => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof TokenError, `${e} is a TokenError`);
    return e.code;
  }
  assert.fail("no error");
};

function alice() {
  const at = new AccessToken("APIkey1", "secret-one", { identity: "alice", name: "Alice", metadata: '{"team":"a"}', ttl: "10m" });
  at.addGrant({ room: "standup", roomJoin: true }).addGrant({ canPublishSources: ["camera", "microphone"], hidden: true });
  return at;
}

test("every claim round-trips and omitted grants take their defaults", async () => {
  const token = await alice().toJwt(NOW);
  const [header] = token.split(".");
  assert.deepEqual(JSON.parse(Buffer.from(header, "base64url")), { typ: "JWT", alg: "HS256", kid: "APIkey1" });
  const c = verifier().verify(token, NOW + 10);
  assert.equal(c.iss, "APIkey1");
  assert.equal(c.sub, "alice");
  assert.equal(c.name, "Alice");
  assert.equal(c.metadata, '{"team":"a"}');
  assert.equal(c.iat, NOW);
  assert.equal(c.nbf, NOW);
  assert.equal(c.exp, NOW + 600);
  assert.match(c.jti, /^[A-Za-z0-9_-]{16}$/);
  assert.deepEqual(c.grants, {
    room: "standup", roomJoin: true, roomCreate: false, roomList: false, roomAdmin: false,
    canPublish: true, canSubscribe: true, canPublishData: true,
    canPublishSources: ["camera", "microphone"], hidden: true,
  });
});

test("every token gets its own jti", () => {
  const at = alice();
  assert.notEqual(verifier().verify(at.toJwtSync(NOW), NOW).jti, verifier().verify(at.toJwtSync(NOW), NOW).jti);
});

test("either rotated key verifies", () => {
  const token = new AccessToken("APIkey2", "secret-two", { identity: "bob" }).toJwtSync(NOW);
  assert.equal(verifier().verify(token, NOW).sub, "bob");
});

test("expiry and not-before honour the leeway, then refuse", () => {
  const token = alice().toJwtSync(NOW);
  assert.ok(verifier().verify(token, NOW + 605));
  assert.equal(code(() => verifier().verify(token, NOW + 606)), "token_expired");
  assert.ok(verifier().verify(token, NOW - 5));
  assert.equal(code(() => verifier().verify(token, NOW - 6)), "token_not_yet_valid");
});

test("forged, tampered and unknown-key tokens are refused", () => {
  const forged = new AccessToken("APIkey1", "not-the-secret", { identity: "alice" }).toJwtSync(NOW);
  assert.equal(code(() => verifier().verify(forged, NOW)), "bad_signature");
  const [h, p, s] = alice().toJwtSync(NOW).split(".");
  const payload = JSON.parse(Buffer.from(p, "base64url"));
  payload.grants.roomAdmin = true;
  assert.equal(code(() => verifier().verify(`${h}.${b64(payload)}.${s}`, NOW)), "bad_signature");
  const stranger = new AccessToken("APIkey9", "whatever", { identity: "mallory" }).toJwtSync(NOW);
  assert.equal(code(() => verifier().verify(stranger, NOW)), "unknown_key");
});

test("alg none and other algorithms are refused before any key lookup", () => {
  const payload = b64({ iss: "APIkey1", sub: "eve", iat: NOW, nbf: NOW, exp: NOW + 60 });
  for (const alg of ["none", "NoNe"]) {
    assert.equal(code(() => verifier().verify(`${b64({ alg })}.${payload}.`, NOW)), "alg_none");
  }
  assert.equal(code(() => verifier().verify(`${b64({ alg: "RS256", kid: "APIkey1" })}.${payload}.c2ln`, NOW)), "unsupported_algorithm");
});

test("garbage is malformed, and kid and iss must agree", () => {
  for (const t of ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", `${b64({ alg: "HS256" })}.e30.`]) {
    assert.equal(code(() => verifier().verify(t, NOW)), "malformed_token", t);
  }
  const input = `${b64({ alg: "HS256", kid: "APIkey2" })}.${b64({ iss: "APIkey1", sub: "eve", iat: NOW, nbf: NOW, exp: NOW + 60 })}`;
  assert.throws(
    () => verifier().verify(`${input}.${sign(input, "secret-two")}`, NOW),
    (e) => e instanceof TokenError && e.code === "malformed_token" && /iss does not match/.test(e.message),
  );
});

test("a token needs an identity, a join grant needs its room, and ttl must be a duration", () => {
  assert.throws(() => new AccessToken("k", "s").toJwtSync(NOW), /identity is required/);
  assert.throws(() => new AccessToken("k", "s", { identity: "a" }).addGrant({ roomJoin: true }).toJwtSync(NOW), /needs room/);
  assert.throws(() => new AccessToken(undefined, undefined, { identity: "a" }), /API key and secret/);
  assert.deepEqual(["90", "90s", "15m", "6h", "7d"].map(parseTtl), [90, 90, 900, 21600, 604800]);
  for (const bad of ["", "1w", "-5", "h", 0, 1.5]) assert.throws(() => parseTtl(bad), RangeError, String(bad));
});

test("the key and secret come from the environment when not given", () => {
  process.env.SWITCHYARD_API_KEY = "APIkey2";
  process.env.SWITCHYARD_API_SECRET = "secret-two";
  try {
    const token = new AccessToken(undefined, undefined, { identity: "env" }).toJwtSync(NOW);
    assert.equal(verifier().verify(token, NOW).iss, "APIkey2");
  } finally {
    delete process.env.SWITCHYARD_API_KEY;
    delete process.env.SWITCHYARD_API_SECRET;
  }
});
