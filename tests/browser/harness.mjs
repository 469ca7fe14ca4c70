// Support for the browser tests: the real rtmc-api and rtmc-gateway as child
// processes on the e2e ports (shifted by RTMC_E2E_PORT_OFFSET), a line
// client for the gateway's TCP protocol, headless Debian Chromium through
// playwright-core (never a downloaded browser), and screenshots.
//
// Environment (ctest sets the binaries and the output folder; scripts/test.sh
// the services): RTMC_TEST_REDIS, RTMC_TEST_AMQP, RTMC_TEST_PG,
// RTMC_API_BIN, RTMC_GATEWAY_BIN, RTMC_BROWSER_OUTPUT (screenshots and
// logs), RTMC_E2E_PORT_OFFSET, RTMC_CHROMIUM (default /usr/bin/chromium).
// Every wait has a deadline, so nothing here can hang a test.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { chromium } from "playwright-core";

// Each test file has its own folder (ctest sets it), emptied at its start so
// that what is there is this run's.
export const outputDir = path.resolve(process.env.RTMC_BROWSER_OUTPUT ?? "test-output");
fs.rmSync(outputDir, { recursive: true, force: true });
fs.mkdirSync(outputDir, { recursive: true });

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run through ctest: scripts/test.sh -L e2e -R browser)`);
  return value;
}

const offset = Number(process.env.RTMC_E2E_PORT_OFFSET ?? 0);
export const port = (base) => base + offset;

export const uniqueName = (prefix) => `${prefix}${randomBytes(4).toString("hex")}`;

export function services() {
  return { redis: required("RTMC_TEST_REDIS"), amqp: required("RTMC_TEST_AMQP"), pg: required("RTMC_TEST_PG") };
}

export async function waitFor(what, check, timeoutMs = 15000, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------- processes

export class Server {
  constructor(name, binary, args, env) {
    this.name = name;
    this.binary = binary;
    this.args = args;
    this.env = env;
    this.logPath = path.join(outputDir, `${name}.log`);
    this.child = null;
  }

  start() {
    const log = fs.openSync(this.logPath, "a");
    fs.writeSync(log, `---- ${new Date().toISOString()} ${this.binary} ${this.args.join(" ")}\n`);
    this.child = spawn(this.binary, this.args, { env: { ...process.env, ...this.env }, stdio: ["ignore", log, log] });
    fs.closeSync(log);
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
    this.logStart = fs.statSync(this.logPath).size;
    return this;
  }

  log() {
    return fs.readFileSync(this.logPath, "utf8");
  }

  running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  async waitForLog(needle, timeoutMs = 60000) {
    await waitFor(`'${needle}' in ${this.logPath}`, () => {
      if (!this.running()) throw new Error(`${this.name} exited; log tail:\n${this.log().slice(-2000)}`);
      return this.log().indexOf(needle, this.logStart) >= 0;
    }, timeoutMs, 100);
  }

  async stop(signal = "SIGTERM", graceMs = 10000) {
    if (!this.running()) return;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

function serverEnv(jwtSecret) {
  const s = services();
  return { RTMC_REDIS: s.redis, RTMC_AMQP: s.amqp, RTMC_PG: s.pg, RTMC_JWT_SECRET: jwtSecret, RTMC_LOG_LEVEL: "info" };
}

async function portOpen(p) {
  return new Promise((resolve) => {
    const socket = net.connect(p, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

async function requireFree(p) {
  if (await portOpen(p)) throw new Error(`port ${p} is in use before the test started its server (a leftover process?)`);
}

// A test stack: one api and the gateways it names, sharing a JWT secret.
export class Stack {
  constructor() {
    this.secret = randomBytes(32).toString("hex");
    this.servers = [];
  }

  async startApi({ apiPort = port(18080), wsUrls, args = [] } = {}) {
    await requireFree(apiPort);
    const flags = ["--listen", `127.0.0.1:${apiPort}`, "--threads", "2"];
    for (const url of wsUrls) flags.push("--ws-url", url);
    const api = new Server(`api-${apiPort}`, required("RTMC_API_BIN"), [...flags, ...args], serverEnv(this.secret)).start();
    this.servers.push(api);
    api.port = apiPort;
    api.url = `http://127.0.0.1:${apiPort}`;
    await waitFor("the api's /healthz", async () => {
      if (!api.running()) throw new Error(`api exited; log:\n${api.log().slice(-2000)}`);
      const response = await fetch(`${api.url}/healthz`).catch(() => null);
      if (!response || response.status !== 200) return false;
      return (await response.json()).amqp_connected !== false;
    }, 60000, 100);
    return api;
  }

  // A gateway on TCP `tcpPort`, HTTP (and WebSocket) on tcpPort + 1000, its
  // WebSocket open to `origin`.
  async startGateway({ tcpPort, origin, args = [] }) {
    const httpPort = tcpPort + 1000;
    await requireFree(tcpPort);
    await requireFree(httpPort);
    const flags = ["--listen", `127.0.0.1:${tcpPort}`, "--http-listen", `127.0.0.1:${httpPort}`, "--threads", "2", "--ws-origins", origin];
    const gateway = new Server(`gateway-${tcpPort}`, required("RTMC_GATEWAY_BIN"), [...flags, ...args], serverEnv(this.secret));
    gateway.tcpPort = tcpPort;
    gateway.httpPort = httpPort;
    gateway.wsUrl = `ws://127.0.0.1:${httpPort}/ws`;
    this.servers.push(gateway);
    await this.restart(gateway);
    return gateway;
  }

  async restart(gateway) {
    gateway.start();
    await gateway.waitForLog("fanout: consuming");
    await gateway.waitForLog("sequencer: consuming");
    await waitFor(`gateway port ${gateway.httpPort}`, () => portOpen(gateway.httpPort), 30000, 100);
  }

  async stop() {
    await Promise.all(this.servers.map((server) => server.stop()));
  }
}

// ---------------------------------------------------------------- api and TCP clients

export async function postJson(baseUrl, pathName, body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(baseUrl + pathName, { method: "POST", headers, body: JSON.stringify(body ?? {}) });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : null };
}

export async function makeUser(baseUrl, prefix) {
  const user = uniqueName(prefix);
  const password = "password-" + randomBytes(4).toString("hex");
  const registered = await postJson(baseUrl, "/register", { user, password });
  if (registered.status !== 201) throw new Error(`register ${user}: ${registered.status} ${JSON.stringify(registered.json)}`);
  const login = await postJson(baseUrl, "/login", { user, password });
  if (login.status !== 200) throw new Error(`login ${user}: ${login.status}`);
  return { user, password, token: login.json.token };
}

// The gateway's TCP line protocol; keeps every frame it reads.
export class LineClient {
  constructor(tcpPort) {
    this.frames = [];
    this.buffer = "";
    this.waiters = [];
    this.closed = false;
    this.socket = net.connect(tcpPort, "127.0.0.1");
    this.socket.setEncoding("utf8");
    this.socket.on("data", (chunk) => {
      this.buffer += chunk;
      let newline;
      while ((newline = this.buffer.indexOf("\n")) >= 0) {
        const line = this.buffer.slice(0, newline);
        this.buffer = this.buffer.slice(newline + 1);
        if (line.trim()) this.frames.push(JSON.parse(line));
      }
    });
    this.socket.on("close", () => (this.closed = true));
    this.socket.on("error", () => (this.closed = true));
  }

  send(frame) {
    this.socket.write(JSON.stringify(frame) + "\n");
  }

  async next(predicate, what, timeoutMs = 15000) {
    return waitFor(what, () => this.frames.find(predicate), timeoutMs, 20);
  }

  messages(room) {
    return this.frames.filter((f) => f.type === "message" && f.room === room);
  }

  async auth(token) {
    this.send({ type: "auth", token });
    return this.next((f) => f.type === "auth_ok" || f.type === "error", "auth_ok");
  }

  async join(room) {
    this.send({ type: "join", room });
    return this.next((f) => f.type === "joined" && f.room === room, `joined ${room}`);
  }

  close() {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------- browser

// The flags the machine notes list for Debian Chromium as root in a closed
// network: no sandbox (root), and no background connections to Google.
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

// Every browser test's last step: what its pages logged, then the browser
// and the servers.
export async function closeAll(stack, browser, pages) {
  for (const page of pages) if (page?.consoleLines.length) console.log(page.consoleLines.join("\n"));
  await browser?.close();
  await stack.stop();
}

export async function launchBrowser() {
  const executablePath = process.env.RTMC_CHROMIUM || "/usr/bin/chromium";
  if (!fs.existsSync(executablePath)) throw new Error(`${executablePath} is missing: scripts/install-deps.sh installs Debian's chromium`);
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 60000 });
}

let shotNumber = 0;
// A screenshot into the output folder, numbered in the order taken.
export async function screenshot(page, name) {
  shotNumber += 1;
  const file = path.join(outputDir, `${String(shotNumber).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file });
  console.log(`# screenshot ${file}`);
  return file;
}

// A new page (own context: own sessionStorage) with its console kept for
// diagnostics.
export async function openPage(browser, baseUrl, { width = 1100, height = 720, label = "page" } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.consoleLines = [];
  page.on("console", (message) => page.consoleLines.push(`[${label}] ${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => page.consoleLines.push(`[${label}] pageerror: ${error.message}`));
  await page.goto(baseUrl + "/");
  return page;
}

export async function loginInPage(page, user, password, { register = false } = {}) {
  await page.fill("#login-user", user);
  await page.fill("#login-password", password);
  if (register) await page.click("#register-button");
  else await page.press("#login-password", "Enter");
  await page.waitForSelector("#chat-view:not([hidden])", { timeout: 15000 });
  await page.waitForSelector('#connection[data-state="online"]', { timeout: 15000 });
}

export async function joinInPage(page, room) {
  await page.fill("#join-room", room);
  await page.press("#join-room", "Enter");
  await page.waitForSelector(`#room-list button[data-room="${room}"][aria-current="true"]`, { timeout: 15000 });
  await page.waitForFunction((r) => window.rtmc.state.rooms.get(r)?.joined, room, { timeout: 15000 });
}

export async function sendInPage(page, body) {
  await page.fill("#composer-input", body);
  await page.press("#composer-input", "Enter");
}

// Seqs and bodies of the messages the page shows for the current room.
export async function shownMessages(page) {
  return page.$$eval("#message-list li.msg", (items) =>
    items.map((li) => ({ seq: Number(li.dataset.seq), from: li.dataset.from, body: li.querySelector(".body").textContent })),
  );
}

export async function waitForShown(page, count, timeoutMs = 15000) {
  await page.waitForFunction((n) => document.querySelectorAll("#message-list li.msg").length >= n, count, { timeout: timeoutMs });
  return shownMessages(page);
}

export async function members(page) {
  return page.$$eval("#member-list li", (items) => items.map((li) => [li.dataset.user, li.dataset.online === "true"]));
}
