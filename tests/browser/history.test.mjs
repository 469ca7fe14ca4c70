// Scroll-back across the Redis/PostgreSQL boundary: a gateway keeping only
// 20 messages per room in Redis (--room-log-length 20), 60 messages written
// to PostgreSQL by the test stack's syncer; the page shows the latest page
// (stitched from both) on joining, then pages back to seq 1 when scrolled to
// the top, each message once and in order.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  LineClient,
  Stack,
  joinInPage,
  launchBrowser,
  loginInPage,
  makeUser,
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
let gateway;
let browser;
let page;

before(async () => {
  const apiPort = port(18080);
  const tcpPort = port(17001);
  [api, gateway, browser] = await Promise.all([
    stack.startApi({ apiPort, wsUrls: [`ws://127.0.0.1:${tcpPort + 1000}/ws`] }),
    stack.startGateway({ tcpPort, origin: `http://127.0.0.1:${apiPort}`, args: ["--room-log-length", "20"] }),
    launchBrowser(),
  ]);
  console.log(`# screenshots and logs: ${outputDir}`);
});

after(async () => {
  if (page?.consoleLines.length) console.log(page.consoleLines.join("\n"));
  await browser?.close();
  await stack.stop();
});

test("scroll-back pages from the Redis window into PostgreSQL down to the first message", async () => {
  const room = uniqueName("hist");
  const writer = await makeUser(api.url, "writer");
  const reader = await makeUser(api.url, "reader");
  const tcp = new LineClient(gateway.tcpPort);
  await tcp.auth(writer.token);
  await tcp.join(room);
  const total = 60;
  for (let i = 1; i <= total; i++) tcp.send({ type: "send", room, id: `h${i}`, body: `history ${i}` });
  await waitFor("every send acknowledged", () => tcp.frames.filter((f) => f.type === "ack").length === total);
  await waitFor(`seq ${total} delivered`, () => tcp.messages(room).length === total);
  tcp.close();

  // Older than the window is only in PostgreSQL: wait for the syncer to have
  // written the room up to its last seq (GET /rooms reads its rooms table).
  // A prefix of the name sorts before it in any collation.
  const after = room.slice(0, -1);
  await waitFor("the syncer to store the room in PostgreSQL", async () => {
    const response = await fetch(`${api.url}/rooms?limit=5&after=${after}`, { headers: { Authorization: `Bearer ${writer.token}` } });
    const body = await response.json();
    return body.rooms?.some((r) => r.room === room && r.last_seq === total);
  }, 30000, 200);

  page = await openPage(browser, api.url, { label: "reader", height: 600 });
  await loginInPage(page, reader.user, reader.password);
  await joinInPage(page, room);
  // The latest page: 50 before the joined seq, 20 from Redis, 30 from PostgreSQL.
  const latest = await waitForShown(page, 50);
  assert.deepEqual(latest.map((m) => m.seq), Array.from({ length: 50 }, (_, i) => 11 + i));
  assert.equal(await page.isVisible("#older-button"), true);
  await screenshot(page, "history-latest-page");

  // Scrolling to the top loads the rest.
  await page.$eval("#messages", (box) => {
    box.scrollTop = 0;
  });
  await page.waitForSelector("#history-start:not([hidden])", { timeout: 15000 });
  const all = await shownMessages(page);
  assert.deepEqual(all.map((m) => m.seq), Array.from({ length: total }, (_, i) => i + 1));
  assert.deepEqual(all.map((m) => m.body), Array.from({ length: total }, (_, i) => `history ${i + 1}`));
  assert.ok(all.every((m) => m.from === writer.user));
  assert.equal(await page.isVisible("#older-button"), false);
  await screenshot(page, "history-start-of-room");
});
