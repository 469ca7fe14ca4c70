// Staying logged in past the token's lifetime: with tokens that live 20 s and
// a gateway that checks sessions every second, the page renews its token
// (POST /refresh) and moves its open connection to it ({"type":"refresh"}),
// so it stays on the same connection for three lifetimes and can still
// send. A TCP client with an unrenewed token of the same lifetime is cut
// (unauthorized), which shows the lifetime is really enforced.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  LineClient,
  Stack,
  closeAll,
  joinInPage,
  launchBrowser,
  loginInPage,
  makeUser,
  openPage,
  outputDir,
  port,
  postJson,
  screenshot,
  sendInPage,
  uniqueName,
  waitFor,
  waitForShown,
} from "./harness.mjs";

// Long enough that the page's renewal at 3/4 of the lifetime leaves seconds
// before the old token's expiry on a loaded machine: 10 s (2.5 s left) was
// once not enough beside a cold sanitizer build (the page was cut
// unauthorized before its renewal landed).
const TTL_S = 20;
const stack = new Stack();
let api;
let gateway;
let browser;
let page;

before(async () => {
  const apiPort = port(18080);
  const tcpPort = port(17001);
  [api, gateway, browser] = await Promise.all([
    stack.startApi({ apiPort, wsUrls: [`ws://127.0.0.1:${tcpPort + 1000}/ws`], args: ["--token-ttl-s", String(TTL_S)] }),
    stack.startGateway({ tcpPort, origin: `http://127.0.0.1:${apiPort}`, args: ["--heartbeat-s", "1"] }),
    launchBrowser(),
  ]);
  console.log(`# screenshots and logs: ${outputDir}`);
});

after(() => closeAll(stack, browser, [page]));

test("the page renews its token and keeps its connection past the token's lifetime", async () => {
  const room = uniqueName("refresh");
  const user = await makeUser(api.url, "renew");
  const control = await makeUser(api.url, "control");
  page = await openPage(browser, api.url, { label: "renew" });
  await loginInPage(page, user.user, user.password);
  await joinInPage(page, room);
  const firstToken = await page.evaluate(() => window.rtmc.session.token);

  // A fresh token for the control connection (the first may be near its end).
  const controlToken = (await postJson(api.url, "/login", { user: control.user, password: control.password })).json.token;
  const tcp = new LineClient(gateway.tcpPort);
  assert.equal((await tcp.auth(controlToken)).type, "auth_ok");
  await tcp.join(room);

  // The control connection, pinging every half second (or the 2.5 s idle
  // cut would come first), is cut once its token expires.
  const pinger = setInterval(() => tcp.send({ type: "ping" }), 500);
  try {
    const cut = await tcp.next((f) => f.type === "error", "the control connection's unauthorized", (TTL_S + 5) * 1000);
    assert.equal(cut.code, "unauthorized");
  } finally {
    clearInterval(pinger);
  }

  // The page outlives three lifetimes on its first connection (one had
  // passed when the control connection was cut).
  await new Promise((resolve) => setTimeout(resolve, 2 * TTL_S * 1000));
  assert.equal(await page.evaluate(() => window.rtmc.connections), 1, "the page had to reconnect");
  assert.equal(await page.getAttribute("#connection", "data-state"), "online");
  assert.notEqual(await page.evaluate(() => window.rtmc.session.token), firstToken);
  assert.ok(await page.evaluate(() => window.rtmc.refreshed) >= 2, "refreshed frames");
  await sendInPage(page, "still here");
  const shown = await waitForShown(page, 1);
  assert.equal(shown[0].body, "still here");
  assert.equal(await page.isVisible("#alert"), false);
  await screenshot(page, "refresh-still-connected");
  tcp.close();
});
