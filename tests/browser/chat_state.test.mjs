// Unit tests of web/chat_state.js (no browser, no server): node --test.
import assert from "node:assert/strict";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const { ChatState, backoffMs, refreshDelayMs, describeError, reconnectOnUnauthorized } = await import(path.join(here, "../../web/chat_state.js"));

const msg = (room, seq, from = "bob", body = `m${seq}`) => ({ type: "message", room, seq, id: `i${seq}`, from, body, ts: 1700000000000 + seq });

function authed(user = "alice") {
  const state = new ChatState();
  state.handle({ type: "auth_ok", user, heartbeat_s: 15 });
  return state;
}

// Joins `room` fresh (the server says seq) and returns what was sent back.
function joinFresh(state, room, seq) {
  const join = state.joinFrame(room);
  assert.deepEqual({ ...join, ref: 0 }, { type: "join", room, ref: 0 });
  return state.handle({ type: "joined", room, seq, ref: join.ref });
}

test("a fresh join asks for members and the latest history before the joined seq", () => {
  const state = authed();
  const { send } = joinFresh(state, "lobby", 7);
  const history = send.find((f) => f.type === "history");
  assert.equal(history.before_seq, 8);
  assert.ok(send.some((f) => f.type === "members" && f.room === "lobby"));
  assert.equal(state.room("lobby").lastSeq, 7);
});

test("a fresh room has no history to ask for", () => {
  const state = authed();
  const { send } = joinFresh(state, "new", 0);
  assert.equal(send.filter((f) => f.type === "history").length, 0);
  assert.equal(state.room("new").historyDone, true);
});

test("messages are kept once per seq, in seq order, whatever their source", () => {
  const state = authed();
  const { send } = joinFresh(state, "r", 3);
  const history = send.find((f) => f.type === "history");
  state.handle(msg("r", 4));
  state.handle(msg("r", 5));
  state.handle(msg("r", 4)); // a duplicate
  state.handle({ type: "history", room: "r", ref: history.ref, messages: [msg("r", 2), msg("r", 3)] });
  assert.deepEqual(state.room("r").messageSeqs(), [2, 3, 4, 5]);
  assert.equal(state.room("r").lastSeq, 5);
});

test("scroll-back pages with before_seq = the oldest seq held until an empty page", () => {
  const state = authed();
  const first = joinFresh(state, "r", 120).send.find((f) => f.type === "history");
  const page = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => msg("r", from + i));
  state.handle({ type: "history", room: "r", ref: first.ref, messages: page(71, 120) });
  const second = state.historyFrame("r");
  assert.equal(second.before_seq, 71);
  assert.equal(state.historyFrame("r"), null, "one page in flight at a time");
  state.handle({ type: "history", room: "r", ref: second.ref, messages: page(21, 70) });
  const third = state.historyFrame("r");
  assert.equal(third.before_seq, 21);
  state.handle({ type: "history", room: "r", ref: third.ref, messages: page(1, 20) });
  assert.equal(state.room("r").historyDone, true);
  assert.equal(state.historyFrame("r"), null);
  assert.equal(state.room("r").messageSeqs().length, 120);
});

test("after a reconnect every room is joined with since = the last seq shown, and unacked sends go again", () => {
  const state = authed();
  joinFresh(state, "a", 0);
  joinFresh(state, "b", 10);
  state.handle(msg("a", 1));
  state.handle(msg("a", 2));
  const sent = state.sendFrame("a", "hello", "id-1");
  state.handle({ type: "ack", id: "id-0", room: "a" });
  state.connectionLost();
  assert.equal(state.room("a").joined, false);
  const { send } = state.handle({ type: "auth_ok", user: "alice", heartbeat_s: 15 });
  const joins = send.filter((f) => f.type === "join");
  assert.deepEqual(
    joins.map((f) => [f.room, f.since]),
    [
      ["a", 2],
      ["b", 10],
    ],
  );
  const resend = send.find((f) => f.type === "send");
  assert.equal(resend.id, sent.id);
  assert.equal(resend.body, "hello");
  // A replay after a recovered join adds only what is new.
  const joinA = joins[0];
  state.handle({ type: "joined", room: "a", seq: 4, recovered: true, ref: joinA.ref });
  for (const seq of [3, 4]) state.handle(msg("a", seq));
  assert.deepEqual(state.room("a").messageSeqs(), [1, 2, 3, 4]);
  state.handle({ type: "ack", id: sent.id, room: "a" });
  assert.equal(state.unacked.size, 0);
});

test("a resume the server cannot replay is filled from history after_seq, page by page", () => {
  const state = authed();
  joinFresh(state, "r", 5);
  state.connectionLost();
  const join = state.handle({ type: "auth_ok", user: "alice", heartbeat_s: 15 }).send.find((f) => f.type === "join");
  assert.equal(join.since, 5);
  const { send } = state.handle({ type: "joined", room: "r", seq: 300, recovered: false, ref: join.ref });
  const fill = send.find((f) => f.type === "history");
  assert.equal(fill.after_seq, 5);
  assert.equal(state.room("r").lastSeq, 300);
  const page = Array.from({ length: 100 }, (_, i) => msg("r", 6 + i));
  const next = state.handle({ type: "history", room: "r", ref: fill.ref, messages: page }).send[0];
  assert.equal(next.after_seq, 105);
  state.handle(msg("r", 301)); // live meanwhile
  const last = Array.from({ length: 195 }, (_, i) => msg("r", 106 + i));
  const done = state.handle({ type: "history", room: "r", ref: next.ref, messages: last });
  assert.equal(done.send.length, 0);
  const seqs = state.room("r").messageSeqs();
  assert.equal(seqs.length, 296);
  assert.equal(seqs[0], 6);
  assert.equal(seqs.at(-1), 301);
});

test("a fill cut off by a reconnect is asked again from where it stopped", () => {
  const state = authed();
  joinFresh(state, "r", 5);
  state.connectionLost();
  const join = state.handle({ type: "auth_ok", user: "alice", heartbeat_s: 15 }).send.find((f) => f.type === "join");
  const fill = state.handle({ type: "joined", room: "r", seq: 300, recovered: false, ref: join.ref }).send.find((f) => f.type === "history");
  assert.equal(fill.after_seq, 5);
  // The first page arrives, the second request is lost with the connection.
  const page = Array.from({ length: 100 }, (_, i) => msg("r", 6 + i));
  const second = state.handle({ type: "history", room: "r", ref: fill.ref, messages: page }).send[0];
  assert.equal(second.after_seq, 105);
  state.connectionLost();
  const resume = state.handle({ type: "auth_ok", user: "alice", heartbeat_s: 15 }).send;
  assert.equal(resume.find((f) => f.type === "join").since, 300);
  const again = resume.filter((f) => f.type === "history");
  assert.equal(again.length, 1);
  assert.equal(again[0].after_seq, 105);
  state.handle({ type: "joined", room: "r", seq: 300, recovered: true, ref: resume.find((f) => f.type === "join").ref });
  const rest = Array.from({ length: 195 }, (_, i) => msg("r", 106 + i));
  const done = state.handle({ type: "history", room: "r", ref: again[0].ref, messages: rest });
  assert.equal(done.send.length, 0);
  assert.deepEqual(state.room("r").fills, []);
  assert.equal(state.room("r").messageSeqs().length, 295);
  // Nothing left to fill: the next resume asks for no history.
  state.connectionLost();
  const third = state.handle({ type: "auth_ok", user: "alice", heartbeat_s: 15 }).send;
  assert.equal(third.filter((f) => f.type === "history").length, 0);
});

test("gaps are kept in place and move the resume point", () => {
  const state = authed();
  joinFresh(state, "r", 0);
  state.handle(msg("r", 1));
  const { changes } = state.handle({ type: "gap", room: "r", from: 2, to: 4 });
  state.handle(msg("r", 5));
  assert.equal(changes[0].kind, "gap");
  assert.deepEqual(
    state.room("r").sorted().map((e) => e.kind),
    ["message", "gap", "message"],
  );
  assert.equal(state.room("r").lastSeq, 5);
});

test("a gap and a message at the same seq are both kept", () => {
  const state = authed();
  joinFresh(state, "r", 0);
  // History delivered seq 2 before the live gap 2..4 arrived, and the other way round.
  state.handle(msg("r", 1));
  state.room("r").addMessage(msg("r", 2));
  state.handle({ type: "gap", room: "r", from: 2, to: 4 });
  state.handle({ type: "gap", room: "r", from: 6, to: 7 });
  const { changes } = state.handle(msg("r", 6));
  assert.equal(changes[0]?.kind, "message", "a message at a gap's seq is new, not a duplicate");
  assert.deepEqual(
    state.room("r").sorted().map((e) => `${e.kind}${e.seq}`),
    ["message1", "gap2", "message2", "gap6", "message6"],
  );
  assert.deepEqual(state.room("r").messageSeqs(), [1, 2, 6]);
  assert.equal(state.room("r").gaps.size, 2);
});

test("members follow the members frame and presence events; who left stays, offline", () => {
  const state = authed("alice");
  joinFresh(state, "r", 0);
  state.handle({ type: "members", room: "r", users: ["alice", "bob"] });
  state.handle({ type: "presence", room: "r", user: "carol", event: "join" });
  const leave = state.handle({ type: "presence", room: "r", user: "bob", event: "leave" });
  assert.ok(leave.send.some((f) => f.type === "status" && f.user === "bob"));
  state.handle({ type: "status", user: "bob", status: "offline", last_seen: 42 });
  assert.deepEqual(state.room("r").memberList(), [
    { user: "alice", online: true, lastSeen: null },
    { user: "carol", online: true, lastSeen: null },
    { user: "bob", online: false, lastSeen: 42 },
  ]);
  // After a dropped connection the members frame is the truth again.
  state.connectionLost();
  assert.ok(state.room("r").memberList().every((m) => !m.online));
  state.handle({ type: "members", room: "r", users: ["alice", "bob"] });
  assert.deepEqual(
    state.room("r").memberList().map((m) => [m.user, m.online]),
    [
      ["alice", true],
      ["bob", true],
      ["carol", false],
    ],
  );
});

test("errors carry a sentence for the person and the request they answer", () => {
  const state = authed();
  const join = state.joinFrame("bad room!");
  const { changes } = state.handle({ type: "error", code: "bad_room", message: "room", ref: join.ref });
  assert.equal(changes[0].kind, "error");
  assert.match(changes[0].message, /Room name refused/);
  assert.equal(state.rooms.has("bad room!"), false);
  joinFresh(state, "r", 0);
  const send = state.sendFrame("r", "hi");
  const limited = state.handle({ type: "error", code: "rate_limited", message: "slow down", ref: send.ref });
  assert.match(limited.changes[0].message, /too fast/);
  assert.equal(limited.changes[0].request.body, "hi");
  assert.equal(state.unacked.size, 0);
  assert.equal(state.handle({ type: "error", code: "unauthorized", message: "x" }).changes[0].fatal, true);
  assert.equal(describeError("unauthorized", "x", "login"), "Wrong user name or password.");
});

test("a since the server refuses (its seq went back) becomes a fresh join", () => {
  const state = authed();
  joinFresh(state, "r", 50);
  state.connectionLost();
  const join = state.handle({ type: "auth_ok", user: "alice", heartbeat_s: 15 }).send[0];
  const { send } = state.handle({ type: "error", code: "bad_frame", message: "since", ref: join.ref });
  assert.deepEqual({ ...send[0], ref: 0 }, { type: "join", room: "r", ref: 0 });
});

test("unavailable answers say what to retry: the auth by reconnecting, a resume join, a refresh", () => {
  // The auth (no ref) before auth_ok: reconnect after a backoff.
  const fresh = new ChatState();
  const auth = fresh.handle({ type: "error", code: "unavailable", message: "redis" }).changes[0];
  assert.equal(auth.retry, "reconnect");
  assert.equal(auth.fatal, false);
  // A resume join: the room stays, not joined, and is to be joined again.
  const state = authed();
  joinFresh(state, "r", 9);
  state.connectionLost();
  const join = state.handle({ type: "auth_ok", user: "alice", heartbeat_s: 15 }).send.find((f) => f.type === "join");
  const failed = state.handle({ type: "error", code: "unavailable", message: "redis", ref: join.ref }).changes[0];
  assert.equal(failed.retry, "join");
  assert.equal(failed.request.room, "r");
  assert.equal(state.room("r").joined, false);
  const again = state.joinFrame("r");
  assert.equal(again.since, 9);
  // A room restored after a page reload (no seq yet) is kept as well.
  const reloaded = authed();
  reloaded.room("x");
  reloaded.connectionLost();
  const rjoin = reloaded.handle({ type: "auth_ok", user: "alice", heartbeat_s: 15 }).send.find((f) => f.type === "join");
  assert.equal(reloaded.handle({ type: "error", code: "unavailable", ref: rjoin.ref }).changes[0].retry, "join");
  assert.equal(reloaded.rooms.has("x"), true);
  // A room the person just asked for is dropped with the error, as before.
  const asked = state.joinFrame("new");
  const refused = state.handle({ type: "error", code: "unavailable", ref: asked.ref }).changes[0];
  assert.equal(refused.retry, null);
  assert.equal(state.rooms.has("new"), false);
  // An error without ref after auth_ok is no auth failure.
  assert.equal(state.handle({ type: "error", code: "unavailable" }).changes[0].retry, null);
  // A refresh refused or not checked now is sent again; `refreshed` names the token.
  for (const code of ["unavailable", "bad_frame"]) {
    const refresh = state.refreshFrame("t2", 2000);
    assert.equal(state.handle({ type: "error", code, ref: refresh.ref }).changes[0].retry, "refresh");
  }
  const refresh = state.refreshFrame("t3", 3000);
  const done = state.handle({ type: "refreshed", user: "alice", expires_at: 3000, ref: refresh.ref }).changes[0];
  assert.deepEqual(done, { kind: "refreshed", expiresAt: 3000, token: "t3" });
});

test("unauthorized with a newer, live stored token means reconnect, else log out", () => {
  const connected = { token: "old", expiresAt: 1000 };
  assert.equal(reconnectOnUnauthorized({ token: "new", expiresAt: 5000 }, connected, 2000), true);
  assert.equal(reconnectOnUnauthorized({ token: "old", expiresAt: 1000 }, connected, 2000), false, "the same token");
  assert.equal(reconnectOnUnauthorized({ token: "new", expiresAt: 1500 }, connected, 2000), false, "expired too");
  assert.equal(reconnectOnUnauthorized({ token: "new", expiresAt: 900 }, connected, 500), false, "not newer");
  assert.equal(reconnectOnUnauthorized(null, connected, 0), false);
});

test("all rooms joined again only once every resume join is answered (the backoff resets then)", () => {
  const state = authed();
  assert.equal(state.allJoined(), false, "no rooms: nothing proves the connection");
  joinFresh(state, "a", 1);
  joinFresh(state, "b", 1);
  assert.equal(state.allJoined(), true);
  state.connectionLost();
  const joins = state.handle({ type: "auth_ok", user: "alice", heartbeat_s: 15 }).send.filter((f) => f.type === "join");
  assert.equal(state.allJoined(), false, "auth_ok alone is not enough");
  state.handle({ type: "joined", room: "a", seq: 1, recovered: true, ref: joins[0].ref });
  assert.equal(state.allJoined(), false);
  state.handle({ type: "joined", room: "b", seq: 1, recovered: true, ref: joins[1].ref });
  assert.equal(state.allJoined(), true);
});

test("backoff doubles to a cap, with jitter; refresh comes before expiry", () => {
  assert.equal(backoffMs(0, () => 1), 250);
  assert.equal(backoffMs(1, () => 1), 500);
  assert.equal(backoffMs(30, () => 1), 10000);
  assert.equal(backoffMs(30, () => 0), 5000);
  assert.equal(refreshDelayMs(100_000, 0), 75_000);
  assert.equal(refreshDelayMs(500, 0), 1000);
});
