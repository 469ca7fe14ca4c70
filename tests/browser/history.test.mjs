// Scroll-back across the Redis/PostgreSQL boundary: a gateway keeping 120
// messages per room in Redis (--room-log-length 120, the least it takes
// is 100), 150 messages, all written to PostgreSQL by the test stack's
// syncer. The page shows the latest 50 on joining, then pages back (50 a
// page) each time it is scrolled to the top: 51-100 from Redis, then 1-50,
// whose 1-30 only PostgreSQL holds (the page straddles the boundary), each
// message once and in order.
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
    stack.startGateway({ tcpPort, origin: `http://127.0.0.1:${apiPort}`, args: ["--room-log-length", "120"] }),
    launchBrowser(),
  ]);
  console.log(`# screenshots and logs: ${outputDir}`);
});

after(() => closeAll(stack, browser, [page]));

test("scroll-back pages from the Redis window into PostgreSQL down to the first message", async () => {
  const room = uniqueName("hist");
  const writer = await makeUser(api.url, "writer");
  const reader = await makeUser(api.url, "reader");
  const tcp = new LineClient(gateway.tcpPort);
  await tcp.auth(writer.token);
  await tcp.join(room);
  const total = 150;
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
  // The latest page: the 50 up to the joined seq.
  const latest = await waitForShown(page, 50);
  assert.deepEqual(latest.map((m) => m.seq), Array.from({ length: 50 }, (_, i) => 101 + i));
  assert.equal(await page.isVisible("#older-button"), true);
  await screenshot(page, "history-latest-page");

  // Each scroll to the top loads the page before (the view stays where it
  // was, so the person scrolls up again).
  for (const shown of [100, 150]) {
    await page.$eval("#messages", (box) => {
      box.scrollTop = 0;
    });
    await waitForShown(page, shown);
    if (shown === 100) await screenshot(page, "history-second-page");
  }
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
