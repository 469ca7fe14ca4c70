// A gateway restart while the room talks: the page's only gateway stops
// (SIGTERM: server_shutdown) and comes back while a TCP client on a second
// gateway keeps sending; the page reconnects by itself, resumes the room
// with `since`, and shows every message once and in order. Its member list
// is right again after the reconnect.
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
  members,
  openPage,
  outputDir,
  port,
  screenshot,
  shownMessages,
  uniqueName,
  waitFor,
  waitForShown,
} from "./harness.mjs";

const stack = new Stack();
let api;
let pageGateway;
let otherGateway;
let browser;
let page;

before(async () => {
  const apiPort = port(18080);
  const origin = `http://127.0.0.1:${apiPort}`;
  const pagePort = port(17001);
  [api, pageGateway, otherGateway, browser] = await Promise.all([
    stack.startApi({ apiPort, wsUrls: [`ws://127.0.0.1:${pagePort + 1000}/ws`] }),
    stack.startGateway({ tcpPort: pagePort, origin }),
    stack.startGateway({ tcpPort: port(17002), origin }),
    launchBrowser(),
  ]);
  console.log(`# screenshots and logs: ${outputDir}`);
});

after(() => closeAll(stack, browser, [page]));

test("the page reconnects after its gateway restarts and misses nothing", async () => {
  const room = uniqueName("restart");
  const viewer = await makeUser(api.url, "viewer");
  const talker = await makeUser(api.url, "talker");
  page = await openPage(browser, api.url, { label: "viewer" });
  await loginInPage(page, viewer.user, viewer.password);
  await joinInPage(page, room);

  const tcp = new LineClient(otherGateway.tcpPort);
  await tcp.auth(talker.token);
  await tcp.join(room);
  let sent = 0;
  const send = () => {
    sent += 1;
    tcp.send({ type: "send", room, id: `r${sent}`, body: `tick ${sent}` });
  };
  for (let i = 0; i < 10; i++) send();
  await waitForShown(page, 10);
  await waitFor("the talker in the member list", async () => (await members(page)).some(([u, online]) => u === talker.user && online));
  await screenshot(page, "restart-before");

  // The room keeps talking through the restart.
  const ticker = setInterval(send, 100);
  try {
    await pageGateway.stop("SIGTERM");
    await page.waitForSelector('#connection[data-state="connecting"]', { timeout: 15000 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    await screenshot(page, "restart-gateway-down");
    await stack.restart(pageGateway);
    await page.waitForSelector('#connection[data-state="online"]', { timeout: 30000 });
  } finally {
    clearInterval(ticker);
  }
  for (let i = 0; i < 5; i++) send();
  await waitFor(`the TCP client to see all ${sent} messages`, () => tcp.messages(room).length === sent);
  const shown = await waitForShown(page, sent, 30000);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const final = await shownMessages(page);
  assert.equal(final.length, sent, `shown ${final.length} of ${sent}`);
  assert.deepEqual(final, shown.slice(0, sent));
  assert.deepEqual(
    final.map((m) => [m.seq, m.body]),
    tcp.messages(room).map((m) => [m.seq, m.body]),
  );
  assert.deepEqual(
    [...final.map((m) => m.body)].sort(),
    Array.from({ length: sent }, (_, i) => `tick ${i + 1}`).sort(),
  );
  assert.ok(await page.evaluate(() => window.rtmc.connections) >= 2, "the page made a new connection");
  await waitFor("members right after the reconnect", async () => {
    const list = await members(page);
    return list.some(([u, online]) => u === talker.user && online) && list.some(([u, online]) => u === viewer.user && online);
  });
  await screenshot(page, "restart-after");
  tcp.close();
});
