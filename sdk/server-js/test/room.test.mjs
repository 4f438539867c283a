// RoomServiceClient against a real `switchyard dev` (SWITCHYARD_BIN): every call, the
// errors' codes and reasons, and changes a joined participant sees over signaling.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { AccessToken, ROOM_SERVICE_ERROR_CODES, RoomServiceClient, RoomServiceError } from "../dist/index.js";
import { join, startDev } from "./support.mjs";

const KEY = "APIrooms";
const SECRET = "room-service-test-secret";

/** The next message of `type` on `ws`, within 10 s. */
function next(ws, type) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} in 10 s`)), 10_000);
    const onMessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === type) {
        clearTimeout(timer);
        ws.removeEventListener("message", onMessage);
        resolve(msg);
      }
    };
    ws.addEventListener("message", onMessage);
  });
}

const rejectsWith = (promise, status, code, reason) =>
  assert.rejects(promise, (e) => e instanceof RoomServiceError && e.status === status && e.code === code &&
    (reason === undefined || e.reason === reason));

test("every call of the Room service, against switchyard dev", { timeout: 60_000 }, async () => {
  const dev = await startDev({ apiKey: KEY, apiSecret: SECRET });
  try {
    const rooms = new RoomServiceClient(`${dev.url}/rtc`, KEY, SECRET);
    const created = await rooms.createRoom({ name: "standup", maxParticipants: 5, metadata: "m0", allowedCodecs: ["VP8", "Opus"] });
    assert.equal(created.name, "standup");
    assert.equal(created.maxParticipants, 5);
    assert.deepEqual(created.enabledCodecs, ["VP8", "Opus"]);
    assert.match(created.sid, /^RM_/);
    await rejectsWith(rooms.createRoom({ name: "standup" }), 409, "room_exists");
    await rejectsWith(rooms.createRoom({ name: "Not A Name" }), 400, "bad_request");
    await rooms.createRoom({ name: "retro" });
    assert.deepEqual((await rooms.listRooms()).map((r) => r.name), ["retro", "standup"]);
    assert.deepEqual((await rooms.listRooms(["retro"])).map((r) => r.name), ["retro"]);
    assert.equal((await rooms.getRoom("standup")).sid, created.sid);
    await rejectsWith(rooms.getRoom("nope"), 404, "room_not_found");

    const at = (identity) => new AccessToken(KEY, SECRET, { identity }).addGrant({ room: "standup", roomJoin: true }).toJwtSync();
    const alice = await join(dev.url, at("alice"));
    const bob = await join(dev.url, at("bob"));
    assert.equal(alice.first.type, "joined");
    assert.equal(alice.first.room.sid, created.sid, "the join lands in the created room");
    assert.deepEqual((await rooms.listParticipants("standup")).map((p) => p.identity), ["alice", "bob"]);
    assert.equal((await rooms.getParticipant("standup", "bob")).identity, "bob");
    await rejectsWith(rooms.getParticipant("standup", "carol"), 404, "participant_not_found");

    const updated = next(alice.ws, "participant_updated");
    const p = await rooms.updateParticipant("standup", "alice", { name: "Alice", metadata: "host", permission: { canPublishData: false } });
    assert.equal(p.permission.canPublishData, false);
    const seen = await updated;
    assert.equal(seen.participant.identity, "alice");
    assert.equal(seen.participant.permission.canPublishData, false, "alice sees her permission change");

    const roomUpdated = next(bob.ws, "room_updated");
    assert.equal((await rooms.updateRoomMetadata("standup", "agenda")).metadata, "agenda");
    assert.equal((await roomUpdated).room.metadata, "agenda");

    const data = next(bob.ws, "data");
    assert.equal(await rooms.sendData("standup", "hello", { topic: "ops", destinationIdentities: ["bob"] }), 1);
    const got = await data;
    assert.equal(Buffer.from(got.payload, "base64").toString(), "hello");
    assert.equal(got.topic, "ops");

    await rejectsWith(rooms.mutePublishedTrack("standup", "alice", "TR_none", true), 404, "track_not_found");

    const removed = next(bob.ws, "leave");
    await rooms.removeParticipant("standup", "bob");
    assert.equal((await removed).reason, "removed");

    const closed = next(alice.ws, "leave");
    await rooms.deleteRoom("standup");
    assert.equal((await closed).reason, "room_closed");
    await rejectsWith(rooms.getRoom("standup"), 404, "room_not_found");
    alice.ws.close();
    bob.ws.close();
  } finally {
    await dev.stop();
  }
});

test("a token without the grant is refused with 403 and the reason; a wrong secret with 401", { timeout: 60_000 }, async () => {
  const dev = await startDev({ apiKey: KEY, apiSecret: SECRET });
  try {
    const joinOnly = new AccessToken(KEY, SECRET, { identity: "alice" }).addGrant({ room: "standup", roomJoin: true }).toJwtSync();
    const r = await fetch(`${dev.http}/api/v1/rooms`, { headers: { authorization: `Bearer ${joinOnly}` } });
    assert.equal(r.status, 403);
    const body = await r.json();
    assert.equal(body.code, "permission_denied");
    assert.equal(body.reason, "missing_grant");
    assert.match(body.message, /roomList/);
    await rejectsWith(new RoomServiceClient(dev.http, KEY, "not-the-secret").listRooms(), 401, "unauthorized", "bad_signature");
    assert.throws(() => new RoomServiceClient("localhost:7880", KEY, SECRET), TypeError);
  } finally {
    await dev.stop();
  }
});

test("the client has a method for every operation of schema/room-service-v1.openapi.json, and its error codes", () => {
  const doc = JSON.parse(readFileSync(new URL("../../../schema/room-service-v1.openapi.json", import.meta.url), "utf8"));
  const ids = Object.values(doc.paths).flatMap((methods) => Object.values(methods).map((op) => op.operationId));
  assert.equal(ids.length, 11);
  for (const id of ids) {
    const method = id[0].toLowerCase() + id.slice(1);
    assert.equal(typeof RoomServiceClient.prototype[method], "function", `RoomServiceClient.${method} for ${id}`);
  }
  assert.deepEqual([...ROOM_SERVICE_ERROR_CODES], doc.components.schemas.ApiErrorCode.oneOf.map((c) => c.const));
});
