// The web UI's JS heap over a while: the flow list open and following, in
// headless chromium, for SECONDS while whatever traffic there is arrives.
//   node bench/webui/soak.mjs BASE TOKEN SECONDS
// Prints "heap_start_mb N", "heap_end_mb N" (each after a garbage
// collection), "rows_held TEXT" and "flows_seen N" (the live flows the page
// was sent, from its row counter).
import { createRequire } from "node:module";
const require = createRequire(new URL("../../tests/browser/package.json", import.meta.url));
const puppeteer = require("puppeteer-core");

const [BASE, TOKEN, SECONDS] = process.argv.slice(2);
const browser = await puppeteer.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"], defaultViewport: { width: 1400, height: 900 } });
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(60000);
  const cdp = await page.createCDPSession();
  const heap = async () => {
    await cdp.send("HeapProfiler.collectGarbage");
    const m = await page.metrics();
    return (m.JSHeapUsedSize / 1048576).toFixed(2);
  };
  await page.goto(`${BASE}/login?token=${TOKEN}`);
  await page.waitForFunction(() => document.getElementById("conn").textContent === "live");
  await new Promise((r) => setTimeout(r, 2000));
  console.log(`heap_start_mb ${await heap()}`);
  const end = Date.now() + Number(SECONDS) * 1000;
  let peak = 0;
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, Math.min(5000, Math.max(end - Date.now(), 0))));
    const m = await page.metrics();
    peak = Math.max(peak, m.JSHeapUsedSize / 1048576);
  }
  console.log(`heap_end_mb ${await heap()}`);
  console.log(`heap_peak_mb ${peak.toFixed(2)}`);
  console.log(`rows_held ${await page.evaluate(() => (document.querySelector(".info") || {}).textContent || "")}`);
  console.log(`dom_nodes ${await page.evaluate(() => document.getElementsByTagName("*").length)}`);
} finally {
  await browser.close();
}
