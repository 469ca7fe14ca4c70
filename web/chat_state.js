// The chat's state and protocol logic, apart from the DOM and the socket so
// that it runs (and is tested) in Node.js as in the browser.
//
// ChatState turns server frames (docs/protocol.md) into state and tells the
// caller which frames to send back; app.js renders the state and owns the
// WebSocket. Rules it keeps:
// - Each room keeps its messages by seq: a seq is shown once, whether it
//   came live, from a resume replay or from history (dedupe by seq).
// - `lastSeq` is the last seq of the live stream (a message, the end of a
//   gap, or the seq a fresh `joined` reported). After a reconnect each room
//   is joined again with since = lastSeq; when the server cannot replay
//   (`recovered: false`) the missing range is fetched with `history`
//   after_seq pages, so nothing is lost either way.
// - History scroll-back pages with before_seq = the oldest seq held.
// - Members: `members` is the truth after every join; `presence` events
//   follow it. Users who left stay listed as offline.

export const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const HISTORY_PAGE = 50;
const FILL_PAGE = 100;

export class RoomState {
  constructor(name) {
    this.name = name;
    this.entries = new Map(); // seq -> {kind:"message", seq, id, from, body, ts}
    // from -> {kind:"gap", seq, from, to}: apart from the messages, as a gap
    // at a seq must neither hide nor be hidden by a message held there.
    this.gaps = new Map();
    this.lastSeq = null; // null until the first `joined`
    this.joined = false; // joined on the current connection
    this.historyDone = false; // the oldest message has been reached
    this.historyPending = false;
    // Ranges {after, to} still to fetch with `history` after_seq: kept until
    // their last page arrived, so a fill cut off by a reconnect is asked
    // again (the resume's since is already past it).
    this.fills = [];
    this.members = new Map(); // user -> {online, lastSeen}
    this.unread = 0;
  }

  // Oldest seq held (messages or gaps), or null.
  oldestSeq() {
    let oldest = null;
    for (const entry of this.entries.values()) if (oldest === null || entry.seq < oldest) oldest = entry.seq;
    for (const gap of this.gaps.values()) if (oldest === null || gap.from < oldest) oldest = gap.from;
    return oldest;
  }

  // True when the message was new (not a duplicate).
  addMessage(frame) {
    if (!Number.isInteger(frame.seq) || this.entries.has(frame.seq)) return false;
    this.entries.set(frame.seq, {
      kind: "message",
      seq: frame.seq,
      id: frame.id,
      from: frame.from,
      body: frame.body,
      ts: frame.ts,
    });
    return true;
  }

  addGap(frame) {
    // Messages already held for part of the range (from history) stay.
    if (!Number.isInteger(frame.from) || !Number.isInteger(frame.to)) return;
    this.gaps.set(frame.from, { kind: "gap", seq: frame.from, from: frame.from, to: frame.to });
  }

  // Messages and gaps oldest first; a gap before a message at its seq.
  sorted() {
    return [...this.gaps.values(), ...this.entries.values()].sort((a, b) => a.seq - b.seq || (a.kind === "gap" ? -1 : 0) - (b.kind === "gap" ? -1 : 0));
  }

  messageSeqs() {
    return this.sorted()
      .filter((entry) => entry.kind === "message")
      .map((entry) => entry.seq);
  }

  setMembers(users, self) {
    const online = new Set(users);
    for (const [user, info] of this.members) {
      if (!online.has(user) && info.online) this.members.set(user, { online: false, lastSeen: info.lastSeen });
    }
    for (const user of online) this.members.set(user, { online: true, lastSeen: null });
    if (self) this.members.set(self, { online: true, lastSeen: null });
  }

  // Members sorted: online first, then by name (byte order, as the server).
  memberList() {
    return [...this.members.entries()]
      .map(([user, info]) => ({ user, ...info }))
      .sort((a, b) => (a.online !== b.online ? (a.online ? -1 : 1) : a.user < b.user ? -1 : a.user > b.user ? 1 : 0));
  }
}

// What a frame changed, for the renderer: {room?, kind, ...}.
export class ChatState {
  constructor() {
    this.user = null;
    this.rooms = new Map();
    this.nextRef = 1;
    this.pending = new Map(); // ref -> {what, room, ...}
    this.unacked = new Map(); // send id -> {room, body}: resent after a reconnect
    this.heartbeatS = null;
  }

  room(name) {
    let room = this.rooms.get(name);
    if (!room) {
      room = new RoomState(name);
      this.rooms.set(name, room);
    }
    return room;
  }

  request(frame, purpose) {
    const ref = this.nextRef++;
    this.pending.set(ref, purpose);
    return { ...frame, ref };
  }

  // The join for a room the person asked for (new or already known).
  joinFrame(name) {
    const known = this.rooms.get(name);
    if (known && known.lastSeq !== null) {
      return this.request({ type: "join", room: name, since: known.lastSeq }, { what: "join", room: name, since: known.lastSeq });
    }
    return this.request({ type: "join", room: name }, { what: "join", room: name });
  }

  leaveFrame(name) {
    return this.request({ type: "leave", room: name }, { what: "leave", room: name });
  }

  sendFrame(name, body, id = randomId()) {
    this.unacked.set(id, { room: name, body });
    return this.request({ type: "send", room: name, id, body }, { what: "send", room: name, id, body });
  }

  historyFrame(name) {
    const room = this.room(name);
    if (room.historyDone || room.historyPending) return null;
    const oldest = room.oldestSeq();
    const before = oldest ?? (room.lastSeq ?? 0) + 1;
    if (before <= 1) {
      room.historyDone = true;
      return null;
    }
    room.historyPending = true;
    return this.request(
      { type: "history", room: name, before_seq: before, limit: HISTORY_PAGE },
      { what: "history", room: name },
    );
  }

  // Starts fetching (after, to] and remembers the range until it is done.
  fillFrame(name, after, to) {
    const range = { after, to };
    this.room(name).fills.push(range);
    return this.fillPageFrame(name, range);
  }

  fillPageFrame(name, range) {
    return this.request({ type: "history", room: name, after_seq: range.after, limit: FILL_PAGE }, { what: "fill", room: name, to: range.to, range });
  }

  // `expiresAt` of the token, so that the caller knows, once `refreshed`
  // came, which token the connection now holds.
  refreshFrame(token, expiresAt = null) {
    return this.request({ type: "refresh", token }, { what: "refresh", token, expiresAt });
  }

  // The frames a new connection sends after auth_ok: every known room joined
  // again (with since), then the sends that were never acknowledged.
  resumeFrames() {
    const frames = [];
    for (const room of this.rooms.values()) {
      room.joined = false;
      const join = this.joinFrame(room.name);
      this.pending.get(join.ref).resume = true;
      frames.push(join);
      // Fills the last connection did not finish (history needs no join).
      for (const range of room.fills) frames.push(this.fillPageFrame(room.name, range));
    }
    for (const [id, send] of this.unacked) {
      if (this.rooms.has(send.room)) {
        frames.push(this.request({ type: "send", room: send.room, id, body: send.body }, { what: "send", room: send.room, id, body: send.body }));
      }
    }
    return frames;
  }

  // True when there are rooms and the current connection has joined each.
  allJoined() {
    if (this.rooms.size === 0) return false;
    for (const room of this.rooms.values()) if (!room.joined) return false;
    return true;
  }

  // The connection ended: requests in flight will get no answer.
  connectionLost() {
    for (const purpose of this.pending.values()) {
      if (purpose.what === "history") this.room(purpose.room).historyPending = false;
    }
    this.pending.clear();
    for (const room of this.rooms.values()) {
      room.joined = false;
      for (const [user, info] of room.members) if (info.online) room.members.set(user, { online: false, lastSeen: info.lastSeen });
    }
  }

  // Handles one server frame. Returns {changes: [...], send: [frames]}:
  // changes = {kind, room?, ...} for the renderer; send = frames to send now.
  handle(frame) {
    const out = { changes: [], send: [] };
    const purpose = frame.ref !== undefined ? this.pending.get(frame.ref) : undefined;
    if (purpose && frame.type !== "message") this.pending.delete(frame.ref);
    switch (frame.type) {
      case "auth_ok":
        this.user = frame.user;
        this.heartbeatS = frame.heartbeat_s;
        out.changes.push({ kind: "authenticated", user: frame.user });
        out.send.push(...this.resumeFrames());
        break;
      case "joined": {
        const room = this.room(frame.room);
        const since = purpose && purpose.what === "join" ? purpose.since : undefined;
        room.joined = true;
        if (room.lastSeq === null || since === undefined) {
          // A fresh join: the stream starts after frame.seq; older ones come
          // from history.
          if (room.lastSeq === null) room.lastSeq = frame.seq;
          else if (frame.seq > room.lastSeq) {
            out.send.push(this.fillFrame(room.name, room.lastSeq, frame.seq));
            room.lastSeq = frame.seq;
          }
          const history = this.historyFrame(room.name);
          if (history) out.send.push(history);
        } else if (frame.recovered === false && frame.seq > since) {
          // Too old to replay: fetch (since, seq] page by page.
          out.send.push(this.fillFrame(room.name, since, frame.seq));
          room.lastSeq = Math.max(room.lastSeq, frame.seq);
        }
        out.send.push(this.request({ type: "members", room: room.name }, { what: "members", room: room.name }));
        out.changes.push({ kind: "joined", room: room.name });
        break;
      }
      case "left": {
        this.rooms.delete(frame.room);
        for (const [id, send] of this.unacked) if (send.room === frame.room) this.unacked.delete(id);
        out.changes.push({ kind: "left", room: frame.room });
        break;
      }
      case "message": {
        const room = this.rooms.get(frame.room);
        if (!room) break;
        if (room.addMessage(frame)) {
          room.unread += 1;
          out.changes.push({ kind: "message", room: room.name, seq: frame.seq });
        }
        if (room.lastSeq === null || frame.seq > room.lastSeq) room.lastSeq = frame.seq;
        break;
      }
      case "gap": {
        const room = this.rooms.get(frame.room);
        if (!room) break;
        room.addGap(frame);
        if (room.lastSeq === null || frame.to > room.lastSeq) room.lastSeq = frame.to;
        out.changes.push({ kind: "gap", room: room.name, from: frame.from, to: frame.to });
        break;
      }
      case "ack":
        this.unacked.delete(frame.id);
        break;
      case "history": {
        const room = this.rooms.get(frame.room);
        if (!room) break;
        let added = 0;
        for (const message of frame.messages ?? []) if (room.addMessage(message)) added += 1;
        if (purpose && purpose.what === "fill") {
          const seqs = (frame.messages ?? []).map((m) => m.seq);
          const last = seqs.length ? Math.max(...seqs) : null;
          const range = purpose.range;
          if (last !== null && last < range.to) {
            range.after = Math.max(range.after, last);
            out.send.push(this.fillPageFrame(room.name, range));
          } else {
            // The last page (or nothing more exists): the range is done.
            room.fills = room.fills.filter((r) => r !== range);
          }
          out.changes.push({ kind: "filled", room: room.name, added });
        } else {
          room.historyPending = false;
          if ((frame.messages ?? []).length === 0 || room.oldestSeq() <= 1) room.historyDone = true;
          out.changes.push({ kind: "history", room: room.name, added });
        }
        break;
      }
      case "members": {
        const room = this.rooms.get(frame.room);
        if (!room) break;
        room.setMembers(frame.users ?? [], this.user);
        out.changes.push({ kind: "members", room: room.name });
        break;
      }
      case "presence": {
        const room = this.rooms.get(frame.room);
        if (!room) break;
        if (frame.event === "join") room.members.set(frame.user, { online: true, lastSeen: null });
        else {
          room.members.set(frame.user, { online: false, lastSeen: Date.now() });
          out.send.push(this.request({ type: "status", user: frame.user }, { what: "status", user: frame.user }));
        }
        out.changes.push({ kind: "members", room: room.name });
        break;
      }
      case "status": {
        for (const room of this.rooms.values()) {
          const info = room.members.get(frame.user);
          if (info && !info.online && frame.status === "offline") {
            room.members.set(frame.user, { online: false, lastSeen: frame.last_seen ?? info.lastSeen });
            out.changes.push({ kind: "members", room: room.name });
          }
        }
        break;
      }
      case "refreshed":
        out.changes.push({ kind: "refreshed", expiresAt: frame.expires_at, token: purpose?.what === "refresh" ? purpose.token : null });
        break;
      case "pong":
        break;
      case "error":
        this.handleError(frame, purpose, out);
        break;
      default:
        break;
    }
    return out;
  }

  handleError(frame, purpose, out) {
    const what = purpose?.what;
    // What the caller should do again after a backoff: "reconnect" (the
    // auth, which has no ref, could not be checked now: the server would cut
    // the connection at its auth timeout), "join" (a resume join: the room
    // stays and is joined again), "refresh" (the connection would keep its
    // old token and be cut when that expires), or null.
    let retry = null;
    if (frame.code === "unavailable" && purpose === undefined && this.user === null) retry = "reconnect";
    if (what === "join") {
      if (purpose.since !== undefined && frame.code === "bad_frame") {
        // `since` above the room's seq (the server lost data): join afresh.
        const room = this.rooms.get(purpose.room);
        if (room) room.lastSeq = null;
        out.send.push(this.request({ type: "join", room: purpose.room }, { what: "join", room: purpose.room }));
        return;
      }
      const room = this.rooms.get(purpose.room);
      if (frame.code === "unavailable" && room && (purpose.resume || room.lastSeq !== null)) retry = "join";
      else if (room && room.lastSeq === null) this.rooms.delete(purpose.room);
    } else if (what === "refresh") {
      if (frame.code === "unavailable" || frame.code === "bad_frame") retry = "refresh";
    } else if (what === "send") {
      // Not delivered; the text goes back to the person with the reason.
      this.unacked.delete(purpose.id);
    } else if (what === "history") {
      const room = this.rooms.get(purpose.room);
      if (room) room.historyPending = false;
    }
    out.changes.push({
      kind: "error",
      code: frame.code,
      message: describeError(frame.code, frame.message, what),
      fatal: FATAL.has(frame.code),
      request: purpose ?? null,
      retry,
    });
  }
}

const FATAL = new Set(["unauthorized", "frame_too_large", "slow_consumer", "server_full", "server_shutdown"]);

// A sentence for the person, by error code (WebSocket and HTTP alike).
export function describeError(code, serverMessage, what) {
  switch (code) {
    case "bad_room":
      return "Room name refused: use 1–64 letters, digits, '_', '.' or '-'.";
    case "unauthorized":
      return what === "login" ? "Wrong user name or password." : "Your session has ended; please log in again.";
    case "rate_limited":
      return what === "send" ? "You are sending too fast; wait a moment and send again." : "Too many attempts; wait a moment and try again.";
    case "unavailable":
    case "server_full":
      return "The chat server is unavailable right now; try again shortly.";
    case "server_shutdown":
      return "The chat server is restarting; reconnecting…";
    case "body_too_large":
      return "That message is too long.";
    case "too_many_rooms":
      return "You are in too many rooms; leave one first.";
    case "not_joined":
      return "You are not in that room.";
    case "user_taken":
      return "That user name is taken.";
    case "bad_user":
      return "User names are 1–32 letters, digits, '_', '.' or '-', starting with a letter or digit.";
    case "bad_password":
      return "Passwords are 8–256 characters long.";
    case "network":
      return "Cannot reach the server; check your connection and try again.";
    case "bad_frame":
      return what === "refresh" ? "Could not renew the session on the live connection." : `Request refused: ${serverMessage ?? code}`;
    default:
      return serverMessage ? `${serverMessage} (${code})` : `Error: ${code}`;
  }
}

// Reconnect delay after `attempt` failures in a row: 0.25 s doubling up to
// 10 s, with up to 50 % random jitter so many pages do not return at once.
export function backoffMs(attempt, random = Math.random) {
  const base = Math.min(10000, 250 * 2 ** Math.min(attempt, 16));
  return Math.round(base * (0.5 + random() * 0.5));
}

// After `unauthorized` on a connection that authenticated (or refreshed) with
// `connected` ({token, expiresAt}): true when the stored token `stored` is a
// newer one that has not expired, so a new connection (not a logout) is due.
export function reconnectOnUnauthorized(stored, connected, now = Date.now()) {
  if (!stored || !connected || stored.token === connected.token) return false;
  return stored.expiresAt > now && stored.expiresAt > (connected.expiresAt ?? 0);
}

// When to renew a token expiring at `expiresAt` (ms): at three quarters of
// its remaining life, and at least 1 s from now.
export function refreshDelayMs(expiresAt, now = Date.now()) {
  return Math.max(1000, Math.floor((expiresAt - now) * 0.75));
}

export function randomId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return "w" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
