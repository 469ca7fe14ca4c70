// The page: DOM, the api (fetch) and the gateway WebSocket. The protocol
// logic (dedupe, resume, history, members) is in chat_state.js.

import { ChatState, backoffMs, describeError, reconnectOnUnauthorized, refreshDelayMs } from "./chat_state.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "rtmc.session";
const ROOMS_KEY = "rtmc.rooms"; // the rooms joined, so a reload joins them again

const ui = {
  connection: $("connection"),
  whoami: $("whoami"),
  userName: $("user-name"),
  logout: $("logout"),
  alert: $("alert"),
  alertText: $("alert-text"),
  alertClose: $("alert-close"),
  loginView: $("login-view"),
  loginForm: $("login-form"),
  loginUser: $("login-user"),
  loginPassword: $("login-password"),
  registerButton: $("register-button"),
  chatView: $("chat-view"),
  joinForm: $("join-form"),
  joinRoom: $("join-room"),
  roomList: $("room-list"),
  roomTitle: $("room-title"),
  leaveButton: $("leave-button"),
  messages: $("messages"),
  olderButton: $("older-button"),
  historyStart: $("history-start"),
  messageList: $("message-list"),
  composer: $("composer"),
  composerInput: $("composer-input"),
  sendButton: $("send-button"),
  memberList: $("member-list"),
};

let session = null; // {user, token, expiresAt}
let config = null; // {ws_urls}
let state = new ChatState();
let current = null; // the room shown
let socket = null;
let urlIndex = 0;
let attempt = 0;
let reconnectTimer = null;
let refreshTimer = null;
let pingTimer = null;
let lastFrameAt = 0;
let socketAuth = null; // {token, expiresAt} the current connection holds
const retryTimers = new Set(); // join and refresh frames sent again after a backoff
let refreshRetries = 0;
let stableTimer = null; // resets the reconnect backoff once a connection proved itself
const STABLE_MS = 10000;
let pendingJoin = null; // the room the person just asked to join: shown once joined
let focusComposer = false;
let connections = 0; // authenticated connections so far (for the tests)
let refreshed = 0; // `refreshed` frames so far (for the tests)

// ------------------------------------------------------------------ errors

function showError(text) {
  ui.alertText.textContent = text;
  ui.alert.hidden = false;
}
function clearError() {
  ui.alert.hidden = true;
  ui.alertText.textContent = "";
}
ui.alertClose.addEventListener("click", clearError);

function setConnection(stateName, text) {
  ui.connection.dataset.state = stateName;
  ui.connection.textContent = text;
}

// ------------------------------------------------------------------ api

class ApiError extends Error {
  constructor(code, message, retryAfter) {
    super(message);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function api(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError("network", "network error");
  }
  if (response.status === 204) return null;
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null;
  }
  if (!response.ok) {
    throw new ApiError(json?.error ?? `http_${response.status}`, json?.message ?? response.statusText, response.headers.get("Retry-After"));
  }
  return json;
}

function apiErrorText(error, what) {
  let text = describeError(error.code, error.message, what);
  if (error.code === "rate_limited" && error.retryAfter) text = `Too many attempts; try again in ${error.retryAfter} s.`;
  return text;
}

async function loadConfig() {
  if (config) return config;
  config = await api("GET", "/config.json");
  if (!Array.isArray(config?.ws_urls) || config.ws_urls.length === 0) throw new ApiError("unavailable", "no WebSocket URL configured");
  urlIndex = Math.floor(Math.random() * config.ws_urls.length);
  return config;
}

// ------------------------------------------------------------------ login

function saveSession() {
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
}

function saveRooms() {
  if (session) sessionStorage.setItem(ROOMS_KEY, JSON.stringify({ rooms: [...state.rooms.keys()], current }));
  else sessionStorage.removeItem(ROOMS_KEY);
}

async function login(register) {
  clearError();
  const user = ui.loginUser.value.trim();
  const password = ui.loginPassword.value;
  if (!user || !password) {
    showError("Enter a user name and a password.");
    (user ? ui.loginPassword : ui.loginUser).focus();
    return;
  }
  ui.loginForm.setAttribute("aria-busy", "true");
  try {
    if (register) await api("POST", "/register", { user, password });
    const reply = await api("POST", "/login", { user, password });
    await loadConfig();
    session = { user: reply.user, token: reply.token, expiresAt: reply.expires_at };
    saveSession();
    ui.loginPassword.value = "";
    enterChat();
  } catch (error) {
    showError(apiErrorText(error, register && error.code !== "unauthorized" ? "register" : "login"));
    ui.loginPassword.focus();
  } finally {
    ui.loginForm.removeAttribute("aria-busy");
  }
}

ui.loginForm.addEventListener("submit", (event) => {
  event.preventDefault();
  login(false);
});
ui.registerButton.addEventListener("click", () => login(true));

function enterChat() {
  ui.loginView.hidden = true;
  ui.chatView.hidden = false;
  ui.whoami.hidden = false;
  ui.userName.textContent = session.user;
  scheduleRefresh();
  connect();
  ui.joinRoom.focus();
}

async function logout() {
  const token = session?.token;
  leaveChat();
  if (token) {
    try {
      await api("POST", "/logout", undefined, token);
    } catch (error) {
      if (error.code !== "unauthorized") showError(apiErrorText(error, "logout"));
    }
  }
}
ui.logout.addEventListener("click", logout);

// Back to the login form (logout, or a session the server refused).
function leaveChat() {
  session = null;
  saveSession();
  clearTimeout(refreshTimer);
  clearTimeout(reconnectTimer);
  clearInterval(pingTimer);
  clearTimeout(stableTimer);
  clearRetries();
  attempt = 0;
  if (socket) {
    const old = socket;
    socket = null;
    old.close(1000, "logout");
  }
  state = new ChatState();
  current = null;
  saveRooms();
  render();
  setConnection("offline", "Not connected");
  ui.chatView.hidden = true;
  ui.whoami.hidden = true;
  ui.loginView.hidden = false;
  ui.loginUser.focus();
}

// ------------------------------------------------------------------ token refresh

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session) return;
  refreshTimer = setTimeout(refreshToken, refreshDelayMs(session.expiresAt));
}

async function refreshToken() {
  if (!session) return;
  try {
    const reply = await api("POST", "/refresh", undefined, session.token);
    session = { user: reply.user, token: reply.token, expiresAt: reply.expires_at };
    saveSession();
    // The open connection moves to the new token, or it would be cut when
    // the old one expires; a new connection authenticates with it anyway.
    refreshRetries = 0;
    if (socket && socket.readyState === WebSocket.OPEN && state.user) sendFrame(state.refreshFrame(session.token, session.expiresAt));
    scheduleRefresh();
  } catch (error) {
    if (error.code === "unauthorized") {
      leaveChat();
      showError(describeError("unauthorized", null, "session"));
      return;
    }
    // Unreachable or unavailable: try again soon, while the token lasts.
    refreshTimer = setTimeout(refreshToken, 5000);
  }
}

// ------------------------------------------------------------------ WebSocket

function connect() {
  clearTimeout(reconnectTimer);
  if (!session || !config) return;
  const url = config.ws_urls[urlIndex % config.ws_urls.length];
  setConnection("connecting", attempt === 0 ? "Connecting…" : `Reconnecting (attempt ${attempt + 1})…`);
  let ws;
  try {
    ws = new WebSocket(url);
  } catch {
    scheduleReconnect();
    return;
  }
  socket = ws;
  ws.addEventListener("open", () => {
    if (socket !== ws) return;
    lastFrameAt = Date.now();
    socketAuth = { token: session.token, expiresAt: session.expiresAt };
    ws.send(JSON.stringify({ type: "auth", token: session.token }));
  });
  ws.addEventListener("message", (event) => {
    if (socket !== ws) return;
    lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    onFrame(frame);
  });
  ws.addEventListener("close", () => {
    if (socket === ws) connectionLost();
  });
}

// The current connection is gone (closed, or found dead): forget it at once
// (a dead one may take long to report its close) and reconnect.
function connectionLost() {
  const old = socket;
  socket = null;
  clearInterval(pingTimer);
  clearTimeout(stableTimer);
  clearRetries();
  state.connectionLost();
  render();
  if (old && old.readyState !== WebSocket.CLOSED) old.close();
  if (session) scheduleReconnect();
}

function scheduleReconnect() {
  clearTimeout(reconnectTimer);
  const delay = backoffMs(attempt);
  attempt += 1;
  // The next attempt goes to the next gateway, if there are several.
  urlIndex += 1;
  setConnection("connecting", `Disconnected; reconnecting in ${Math.ceil(delay / 1000)} s…`);
  reconnectTimer = setTimeout(connect, delay);
}

// Runs `action` after a backoff if the connection is still the current one.
function retryLater(tries, action) {
  const ws = socket;
  const timer = setTimeout(() => {
    retryTimers.delete(timer);
    if (socket === ws && socket && state.user) action();
  }, backoffMs(tries));
  retryTimers.add(timer);
}

function clearRetries() {
  for (const timer of retryTimers) clearTimeout(timer);
  retryTimers.clear();
}

function sendFrame(frame) {
  if (frame && socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
}

// Pings every heartbeat period; a connection silent for 2.5 periods is dead
// (the server would have answered a ping) and is replaced.
function startHeartbeat(seconds) {
  clearInterval(pingTimer);
  const period = Math.max(1, seconds) * 1000;
  pingTimer = setInterval(() => {
    if (!socket) return;
    if (Date.now() - lastFrameAt > period * 2.5) {
      connectionLost();
      return;
    }
    sendFrame({ type: "ping" });
  }, period);
}

function onFrame(frame) {
  const { changes, send } = state.handle(frame);
  for (const out of send) sendFrame(out);
  let rerender = false;
  for (const change of changes) {
    switch (change.kind) {
      case "authenticated": {
        // Not a reset of the backoff yet: a connection cut right after auth
        // would otherwise be retried every 125-250 ms forever. It resets once
        // the connection stayed up for a while or every room is joined again.
        clearTimeout(stableTimer);
        const ws = socket;
        stableTimer = setTimeout(() => {
          if (socket === ws) attempt = 0;
        }, STABLE_MS);
        connections += 1;
        setConnection("online", "Connected");
        startHeartbeat(state.heartbeatS ?? 15);
        rerender = true;
        break;
      }
      case "joined":
        if (state.allJoined()) attempt = 0;
        if (change.room === pendingJoin) {
          current = change.room;
          pendingJoin = null;
          focusComposer = true;
        } else if (current === null) current = change.room;
        rerender = true;
        break;
      case "left":
        if (current === change.room) current = state.rooms.keys().next().value ?? null;
        rerender = true;
        break;
      case "refreshed":
        refreshed += 1;
        refreshRetries = 0;
        if (change.token) socketAuth = { token: change.token, expiresAt: change.expiresAt };
        break;
      case "error":
        onError(change);
        rerender = true;
        break;
      default:
        rerender = true;
    }
  }
  if (changes.some((c) => c.kind === "joined" || c.kind === "left")) saveRooms();
  if (rerender) render(changes);
  if (focusComposer) {
    focusComposer = false;
    ui.composerInput.focus();
  }
}

function onError(change) {
  if (change.code === "unauthorized") {
    // This connection's token may have expired while a newer one is stored
    // (its refresh frame failed): a new connection authenticates with that.
    if (session && reconnectOnUnauthorized(session, socketAuth)) {
      setConnection("connecting", "Session renewed; reconnecting…");
      connectionLost();
      return;
    }
    leaveChat();
    showError(change.message);
    return;
  }
  if (change.request?.what === "send" && !ui.composerInput.value) ui.composerInput.value = change.request.body;
  if (change.retry === "reconnect") {
    // The auth could not be checked now: a new connection, after the backoff.
    setConnection("connecting", change.message);
    connectionLost();
    return;
  }
  if (change.retry === "join") {
    const room = change.request.room;
    const tries = (change.request.tries ?? 0) + 1;
    retryLater(tries, () => {
      if (state.rooms.has(room) && !state.rooms.get(room).joined) {
        const join = state.joinFrame(room);
        Object.assign(state.pending.get(join.ref), { resume: true, tries });
        sendFrame(join);
      }
    });
    return;
  }
  if (change.retry === "refresh" && refreshRetries < 5) {
    refreshRetries += 1;
    retryLater(refreshRetries, () => {
      if (session && session.expiresAt > Date.now()) sendFrame(state.refreshFrame(session.token, session.expiresAt));
    });
    return;
  }
  if (change.code === "server_shutdown" || change.code === "slow_consumer") {
    setConnection("connecting", change.message);
    return; // the close that follows reconnects
  }
  showError(change.message);
}

// ------------------------------------------------------------------ rooms and messages

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  clearError();
  const name = ui.joinRoom.value.trim();
  if (!name) {
    showError("Enter a room name.");
    ui.joinRoom.focus();
    return;
  }
  if (state.rooms.get(name)?.joined) {
    current = name;
    ui.joinRoom.value = "";
    render();
    return;
  }
  if (!socket || !state.user) {
    showError("Not connected yet; try again in a moment.");
    return;
  }
  pendingJoin = name;
  state.room(name);
  sendFrame(state.joinFrame(name));
  ui.joinRoom.value = "";
});

ui.leaveButton.addEventListener("click", () => {
  if (current) sendFrame(state.leaveFrame(current));
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const body = ui.composerInput.value;
  if (!current || !body.trim()) return;
  if (!socket || !state.user) {
    showError("Not connected; your message was kept. It can be sent once the connection is back.");
    return;
  }
  clearError();
  sendFrame(state.sendFrame(current, body));
  ui.composerInput.value = "";
});

// Send on Enter (Shift+Enter is not needed: the box is one line).
ui.composerInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

function loadOlder() {
  if (!current) return;
  const frame = state.historyFrame(current);
  if (frame) sendFrame(frame);
  render();
}
ui.olderButton.addEventListener("click", loadOlder);
ui.messages.addEventListener("scroll", () => {
  if (ui.messages.scrollTop < 40) loadOlder();
});

// ------------------------------------------------------------------ rendering

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function formatTime(ms) {
  const date = new Date(ms);
  const today = new Date();
  return date.toDateString() === today.toDateString() ? timeFormat.format(date) : dateFormat.format(date);
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function render(changes = []) {
  if (current !== null && !state.rooms.has(current)) current = null;
  if (current === null && state.rooms.size > 0) current = state.rooms.keys().next().value;
  renderRooms();
  renderMessages(changes);
  renderMembers();
  const room = current ? state.rooms.get(current) : null;
  ui.roomTitle.textContent = room ? `# ${room.name}` : "No room yet";
  ui.leaveButton.disabled = !room;
  const canSend = !!room && room.joined && !!socket;
  ui.composerInput.disabled = !room;
  ui.sendButton.disabled = !canSend;
  ui.composerInput.placeholder = room ? `Message #${room.name} (Enter to send)` : "Join a room to chat";
}

function renderRooms() {
  // The list is rebuilt: a keyboard user's focus on a room stays on it.
  const focused = document.activeElement?.closest?.("#room-list button")?.dataset.room;
  ui.roomList.replaceChildren(
    ...[...state.rooms.values()].map((room) => {
      if (room.name === current) room.unread = 0;
      const button = el(
        "button",
        { type: "button", dataset: { room: room.name } },
        el("span", {}, `# ${room.name}`),
      );
      if (room.unread > 0) button.append(el("span", { className: "badge", title: "unread" }, String(room.unread)));
      if (room.name === current) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => {
        current = room.name;
        render();
        ui.composerInput.focus();
      });
      return el("li", {}, button);
    }),
  );
  if (focused !== undefined) ui.roomList.querySelector(`button[data-room="${CSS.escape(focused)}"]`)?.focus();
}

let renderedRoom = null;

function renderMessages(changes) {
  const room = current ? state.rooms.get(current) : null;
  const box = ui.messages;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30;
  const oldHeight = box.scrollHeight;
  const switched = renderedRoom !== current;
  renderedRoom = current;
  ui.messageList.dataset.room = current ?? "";
  if (!room) {
    ui.messageList.replaceChildren();
    ui.olderButton.hidden = true;
    ui.historyStart.hidden = true;
    return;
  }
  room.unread = 0;
  ui.messageList.replaceChildren(
    ...room.sorted().map((entry) => {
      if (entry.kind === "gap") {
        return el(
          "li",
          { className: "gap", dataset: { gapFrom: String(entry.from), gapTo: String(entry.to) } },
          `Messages ${entry.from}–${entry.to} could not be delivered.`,
        );
      }
      const item = el(
        "li",
        { className: entry.from === state.user ? "msg mine" : "msg", dataset: { seq: String(entry.seq), from: entry.from } },
        el("div", { className: "meta" }, el("span", { className: "from" }, entry.from), el("time", { className: "time", dateTime: new Date(entry.ts).toISOString() }, formatTime(entry.ts))),
        el("p", { className: "body" }, entry.body),
      );
      return item;
    }),
  );
  ui.olderButton.hidden = room.historyDone;
  ui.olderButton.disabled = room.historyPending;
  ui.olderButton.textContent = room.historyPending ? "Loading…" : "Load older messages";
  ui.historyStart.hidden = !room.historyDone;
  const prepended = changes.some((c) => c.kind === "history" && c.room === current && c.added > 0);
  if (switched || (atBottom && !prepended)) box.scrollTop = box.scrollHeight;
  else if (prepended) box.scrollTop += box.scrollHeight - oldHeight;
}

function renderMembers() {
  const room = current ? state.rooms.get(current) : null;
  ui.memberList.replaceChildren(
    ...(room ? room.memberList() : []).map((member) => {
      const item = el(
        "li",
        { dataset: { user: member.user, online: String(member.online) } },
        el("span", { className: "dot", "aria-hidden": "true" }, "●"),
        el("span", { className: "name" }, member.user),
        el("span", { className: "visually-hidden" }, member.online ? "online" : "offline"),
      );
      if (!member.online && member.lastSeen) item.append(el("span", { className: "seen" }, `last seen ${formatTime(member.lastSeen)}`));
      return item;
    }),
  );
}

// ------------------------------------------------------------------ start

function restore() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
    if (saved && saved.expiresAt > Date.now() + 5000) return saved;
  } catch {
    // a broken entry is ignored
  }
  return null;
}

async function start() {
  const saved = restore();
  if (!saved) {
    ui.loginUser.focus();
    return;
  }
  try {
    await loadConfig();
    session = saved;
    // Joined afresh on connecting (the latest page of history, then live).
    const rooms = JSON.parse(sessionStorage.getItem(ROOMS_KEY) ?? "null");
    for (const name of rooms?.rooms ?? []) state.room(name);
    if (rooms?.current && state.rooms.has(rooms.current)) current = rooms.current;
    enterChat();
  } catch (error) {
    showError(apiErrorText(error, "config"));
  }
}

// For the browser tests and the curious: the state, read-only by convention.
window.rtmc = {
  get state() {
    return state;
  },
  get session() {
    return session;
  },
  get socket() {
    return socket;
  },
  get connections() {
    return connections;
  },
  get refreshed() {
    return refreshed;
  },
};

start();
