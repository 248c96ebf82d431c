// The web UI at scale: time to the first rows, to the far end of the
// list, to a filtered list and to an open flow, in headless chromium.
//   node bench/webui/bench.mjs BASE TOKEN
// Prints "first_rows_ms N", "end_ms N", "filter_ms N", "open_ms N", "heap_mb N".
import { createRequire } from "node:module";
const require = createRequire(new URL("../../tests/browser/package.json", import.meta.url));
const puppeteer = require("puppeteer-core");

const [BASE, TOKEN] = process.argv.slice(2);
const browser = await puppeteer.launch({ executablePath: "/usr/bin/chromium", headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"], defaultViewport: { width: 1400, height: 900 } });
const page = await browser.newPage();
page.setDefaultTimeout(120000);
const visible = () => document.querySelectorAll(".row.flow:not([hidden])").length > 0;
let t = Date.now();
await page.goto(`${BASE}/login?token=${TOKEN}`);
await page.waitForFunction(visible, { polling: "raf" });
console.log(`first_rows_ms ${Date.now() - t}`);
t = Date.now();
await page.evaluate(() => [...document.querySelectorAll(".quick button")].find((b) => b.textContent === "End").click());
await page.waitForFunction(() => [...document.querySelectorAll(".row.flow:not([hidden]) .c-path")].some((e) => e.textContent === "/v1/items/0?page=0"), { polling: "raf" });
console.log(`end_ms ${Date.now() - t}`);
// Scroll upward from the end for a while: the window fetches and trims.
for (let i = 0; i < 40; i++) {
  await page.evaluate(() => { document.getElementById("flowlist").scrollTop -= 2400; });
  await new Promise((r) => setTimeout(r, 25));
}
t = Date.now();
await page.$eval("#filter", (e) => { e.value = "~c 404 & ~d ^auth\\.example\\.com$"; });
await page.click(".filterbar button[type=submit]");
await page.waitForFunction(() => {
  const r = [...document.querySelectorAll(".row.flow:not([hidden])")];
  return r.length > 0 && r.every((x) => x.querySelector(".c-status").textContent === "404" && x.querySelector(".c-host").textContent === "auth.example.com");
}, { polling: "raf" });
console.log(`filter_ms ${Date.now() - t}`);
t = Date.now();
await page.click(".row.flow:not([hidden])");
await page.waitForFunction(() => (document.querySelector("#detail .viewer") || {}).textContent?.includes("item"), { polling: "raf" });
console.log(`open_ms ${Date.now() - t}`);
const m = await page.metrics();
console.log(`heap_mb ${(m.JSHeapUsedSize / 1048576).toFixed(1)}`);
console.log(`rows_held ${await page.evaluate(() => document.querySelector(".info").textContent)}`);
await browser.close();
