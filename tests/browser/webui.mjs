// The web UI in a real browser (Debian's chromium, or firefox-esr, through
// puppeteer-core), against a running wgmitm whose peer browses through a
// real tunnel. Run by tests/e2e/test_ns_webui.sh (and, with BROWSER=firefox,
// test_ns_webui_firefox.sh) inside the endpoint's namespace:
//
//   node webui.mjs  (environment: BROWSER, BASE, TOKEN, CLI_NS, UPSTREAM,
//                    TLS_HOST, WGCA, WWW_FP, WS_URL, WS_JS, DNS_SERVER,
//                    DNS_NAME, DNS_ADDR, OUT)
//
// BROWSER=chromium (the default, CHROMIUM its path) runs every step;
// BROWSER=firefox (FIREFOX its path, driven over WebDriver BiDi) a focused
// pass: the login link and its cookie, a live flow, filtering and a syntax
// error, a flow's body, hostile content and the devices view's QR code.
//
// BASE is the API (http://127.0.0.1:8081), CLI_NS the client namespace
// whose curl makes the traffic, UPSTREAM the test server behind the tunnel
// (http://203.0.113.10:8080), TLS_HOST an HTTPS upstream as curl's
// --resolve takes it (www.test:8443:203.0.113.10) whose certificate has
// the SHA-256 fingerprint WWW_FP, WGCA wgmitm's CA (PEM) for curl, WS_URL
// a wss echo server that tests/e2e/ws.js (WS_JS) talks to, DNS_SERVER the
// endpoint's DNS address where dig asks for DNS_NAME (answer DNS_ADDR), OUT
// a folder for screenshots. Prints one
// "ok: ..." line per step; exits 1 at the first failure. Every wait is
// bounded (WAIT_MS).
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import puppeteer from "puppeteer-core";

const { BASE, TOKEN, CLI_NS, UPSTREAM, TLS_HOST, WGCA, WWW_FP, OUT } = process.env;
const { WS_URL, WS_JS, DNS_SERVER, DNS_NAME, DNS_ADDR } = process.env;
const WAIT_MS = 20000;
const [tlsName, tlsPort] = (TLS_HOST || "").split(":");
const FIREFOX = process.env.BROWSER === "firefox";
const FULL = !FIREFOX;
let made = 0; // requests the peer made (each is at least one flow)

function ok(msg) {
  console.log(`ok: ${msg}`);
}
function die(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}
function check(cond, msg) {
  if (!cond) die(msg);
}

// A program in the client namespace (its traffic goes through the tunnel), bounded.
function inClient(cmd, args, env = {}) {
  return new Promise((resolve, reject) => {
    execFile("ip", ["netns", "exec", CLI_NS, "env", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), "timeout", "30", cmd, ...args],
      (err, stdout, stderr) => (err ? reject(new Error(`${cmd} ${args.join(" ")}: ${stderr || err.message}`)) : resolve(stdout)));
  });
}

// curl in the client namespace, through the tunnel.
function curl(args) {
  made++;
  return inClient("curl", ["-sS", "--max-time", "10", "-o", "/dev/null", ...args]);
}

// Filters the list and opens its first row of `type`.
async function openFirst(page, filter, type) {
  await setFilter(page, filter);
  const h = await page.waitForFunction((t) => [...document.querySelectorAll(".row.flow")]
    .find((r) => !r.hidden && r.querySelector(".c-type").textContent.startsWith(t)), {}, type);
  const id = await h.evaluate((r) => r.dataset.id);
  await clickRow(page, id);
  return id;
}

const browser = await puppeteer.launch(FIREFOX ? {
  browser: "firefox",
  executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
  headless: true,
  defaultViewport: { width: 1400, height: 900 },
} : {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--window-size=1400,900"],
  defaultViewport: { width: 1400, height: 900 },
});
console.log(`browser: ${await browser.version()}`);
const timer = setTimeout(() => die("the browser test took more than 4 minutes"), 240000);
let current = null; // the page a failure is shown of
try {
  await run();
} catch (e) {
  if (current) {
    await current.screenshot({ path: `${OUT}/failed.png` }).catch(() => {});
    const errs = current.errors || [];
    if (errs.length) console.error(`page errors: ${errs.join(" | ")}`);
  }
  die(e.stack || String(e));
} finally {
  clearTimeout(timer);
  await browser.close().catch(() => {});
}

async function newPage(ctx) {
  const page = await ctx.newPage();
  current = page;
  page.dialogs = [];
  page.errors = [];
  page.on("dialog", async (d) => {
    page.dialogs.push(d.message());
    await d.dismiss().catch(() => {});
  });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") page.errors.push(m.text()); });
  // Any attempt the CSP refuses is counted: nothing should even try.
  await page.evaluateOnNewDocument(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  page.setDefaultTimeout(WAIT_MS);
  return page;
}

// The visible rows of the flow list, as [path, host, status] texts.
async function rows(page) {
  return page.$$eval(".row.flow", (rs) => rs.filter((r) => !r.hidden).map((r) => ({
    id: r.dataset.id, path: r.querySelector(".c-path").textContent, host: r.querySelector(".c-host").textContent,
    status: r.querySelector(".c-status").textContent, top: r.getBoundingClientRect().top,
  })).sort((a, b) => a.top - b.top));
}

// Waits for a visible row whose path holds `text`, and opens it.
async function openRow(page, text) {
  const h = await page.waitForFunction((t) => [...document.querySelectorAll(".row.flow")]
    .find((r) => !r.hidden && r.querySelector(".c-path").textContent.includes(t)), {}, text);
  const id = await h.evaluate((r) => r.dataset.id);
  await clickRow(page, id);
}

// Does `action` (which applies a filter) and waits until the list shows
// its result or its error: until then the rows are the last filter's.
async function applied(page, action) {
  const before = await page.$eval("#flowlist", (e) => Number(e.dataset.applied || 0));
  await action();
  await page.waitForFunction((b) => Number(document.getElementById("flowlist").dataset.applied || 0) > b, {}, before);
}

async function setFilter(page, text) {
  await applied(page, async () => {
    await page.$eval("#filter", (e, t) => { e.value = t; }, text);
    await page.click(".filterbar button[type=submit]");
  });
}

// Opens the row of flow `id`. Found and clicked in one task of the page: a
// live flow entering at the top moves the rows down (the reader at the top
// sees it), so a mouse click at where the row was found may open another.
async function clickRow(page, id) {
  await page.$eval(`.row.flow[data-id="${id}"]:not([hidden])`, (r) => r.click());
  await page.waitForFunction((i) => document.getElementById("detail").dataset.flow === i, {}, id);
}

async function run() {
  // ---- Login --------------------------------------------------------------
  if (FULL) {
    const anon = await browser.createBrowserContext();
    const p0 = await newPage(anon);
    const r0 = await p0.goto(`${BASE}/`);
    check(r0.status() === 401, `/ without the token: HTTP ${r0.status()}`);
    check(await p0.$("#token") && !(await p0.$("#nav")), "/ without the token is not the login page");
    const csp0 = r0.headers()["content-security-policy"] || "";
    check(csp0.includes("script-src 'self'"), `the login page's CSP: ${csp0}`);
    const r0b = await p0.goto(`${BASE}/ui/js/app.js`);
    check(r0b.status() === 401 && (await p0.$("#token")), "the app's script without the token");
    // The form with a wrong token, then the right one.
    await p0.goto(`${BASE}/`);
    await p0.type("#token", "x".repeat(40));
    await Promise.all([p0.waitForNavigation(), p0.click("button[type=submit]")]);
    check((await p0.content()).includes("not the right one"), "a wrong token is not said to be wrong");
    await p0.type("#token", TOKEN);
    await Promise.all([p0.waitForNavigation(), p0.click("button[type=submit]")]);
    await p0.waitForSelector("#nav");
    await anon.close();
    ok("without the token / and the app's files get the login page (401, CSP set); the form logs in");
  }

  const ctx = await browser.createBrowserContext();
  const page = await newPage(ctx);
  const resp = await page.goto(`${BASE}/login?token=${TOKEN}`);
  check(new URL(page.url()).pathname === "/", `the login link ends at ${page.url()}`);
  check(resp.status() === 200, `the app after login: HTTP ${resp.status()}`);
  const csp = resp.headers()["content-security-policy"] || "";
  for (const d of ["default-src 'self'", "script-src 'self'", "object-src 'none'", "frame-ancestors 'none'"])
    check(csp.includes(d), `CSP lacks ${d}: ${csp}`);
  check(resp.headers()["x-content-type-options"] === "nosniff", "no nosniff on the app");
  const cookie = (await ctx.cookies ? await ctx.cookies() : await page.cookies()).find((c) => c.name === "wgmitm_token");
  check(cookie && cookie.httpOnly && cookie.sameSite === "Strict", `the login cookie: ${JSON.stringify(cookie)}`);
  check(!(await page.evaluate(() => document.cookie)).includes("wgmitm_token"), "the page's script can read the token");
  ok(`the login link sets an HttpOnly SameSite=Strict cookie and opens the app (CSP: ${csp})`);

  // ---- The live list --------------------------------------------------------
  await page.waitForFunction(() => document.getElementById("conn").textContent === "live");
  await page.waitForSelector("#flowlist");
  const marker = `live${Date.now()}`;
  const t0 = Date.now();
  const req = curl([`${UPSTREAM}/user.json?m=${marker}`]);
  await page.waitForFunction((m) => [...document.querySelectorAll(".row.flow")].some((r) => !r.hidden && r.querySelector(".c-path").textContent.includes(m)), { timeout: WAIT_MS, polling: "raf" }, marker);
  const ms = Date.now() - t0;
  await req;
  // At the top: only its connection's record (written when it closes) may be above it.
  const top = (await rows(page)).slice(0, 2);
  check(top.some((r) => r.path.includes(marker)), `the new flow is not at the top: ${JSON.stringify(top)}`);
  ok(`a new flow appeared at the top of the list ${ms} ms after the request was started`);
  writeFileSync(`${OUT}/ms.txt`, `${ms}\n`);

  // ---- Filtering --------------------------------------------------------------
  for (let i = 0; i < 4; i++) await curl([`${UPSTREAM}/hello.txt?f=${i}`]);
  await curl([`${UPSTREAM}/missing-one`]);
  await page.waitForFunction(() => [...document.querySelectorAll(".row.flow .c-path")].filter((e) => e.textContent.includes("hello.txt?f=")).length >= 4);
  const before = (await rows(page)).length;
  await setFilter(page, "~u user\\.json");
  await page.waitForFunction(() => {
    const r = [...document.querySelectorAll(".row.flow")].filter((x) => !x.hidden);
    return r.length > 0 && r.every((x) => x.querySelector(".c-path").textContent.includes("user.json"));
  });
  const after = (await rows(page)).length;
  check(after < before, `the filter did not narrow the list: ${before} -> ${after}`);
  ok(`the filter ~u user\\.json narrowed the list from ${before} to ${after} rows`);
  if (FULL) {
    // The filter is live too: a new matching flow arrives, a non-matching one does not.
    const m2 = `f${Date.now()}`;
    await curl([`${UPSTREAM}/hello.txt?${m2}`]);
    await curl([`${UPSTREAM}/user.json?${m2}`]);
    await page.waitForFunction((m) => [...document.querySelectorAll(".row.flow .c-path")].some((e) => e.textContent.includes(`user.json?${m}`)), {}, m2);
    check(!(await rows(page)).some((r) => r.path.includes(`hello.txt?${m2}`)), "a flow outside the filter entered the list");
    ok("live flows follow the filter (filtered on the server)");
    // Quick filter: status class.
    await setFilter(page, "");
    await applied(page, () => page.select(".quick select[aria-label=status]", "4xx"));
    await page.waitForFunction(() => {
      const r = [...document.querySelectorAll(".row.flow")].filter((x) => !x.hidden);
      return r.length > 0 && r.every((x) => x.querySelector(".c-status").textContent.startsWith("4"));
    });
    await applied(page, () => page.select(".quick select[aria-label=status]", ""));
    ok("the quick filter 4xx shows only 4xx responses");
  }
  // A syntax error, at its column.
  await setFilter(page, "~c 404 & (~m GET");
  await page.waitForSelector(".filter-error:not([hidden])");
  const col = await page.$eval(".filter-error", (e) => [e.dataset.column, e.textContent]);
  check(Number(col[0]) > 0 && /column/.test(col[1]), `the syntax error: ${col}`);
  ok(`a syntax error is shown at its column (${col[0]}): ${col[1].split("\n")[0]}`);

  // ---- One flow -------------------------------------------------------------
  await setFilter(page, "~u user\\.json");
  await openRow(page, "user.json");
  await page.waitForFunction(() => {
    const b = document.querySelector("#detail .body[data-part=response] .viewer");
    return b && b.textContent.includes("alice");
  });
  const mode = await page.$eval("#detail .body[data-part=response] .viewer", (e) => e.dataset.mode);
  check(mode === "json", `the JSON body shows as ${mode}`);
  // Folding: the tree's nodes are <details>.
  check(await page.$("#detail .body[data-part=response] .json details"), "no foldable JSON");
  await page.screenshot({ path: `${OUT}/flows.png` });
  ok("a flow's detail shows its response body (JSON, foldable, \"alice\")");
  if (FULL) {
    // A gzip body, decoded.
    await curl([`${UPSTREAM}/gzip.json`]);
    await setFilter(page, "~u gzip\\.json");
    await openRow(page, "gzip.json");
    await page.waitForFunction(() => {
      const b = document.querySelector("#detail .body[data-part=response] .viewer");
      return b && b.textContent.includes("yes, gzip");
    });
    ok("a gzip-encoded body is shown decoded");
    // An image body, through a blob URL.
    await curl([`${UPSTREAM}/pixel.png`]);
    await setFilter(page, "~u pixel\\.png");
    await openRow(page, "pixel.png");
    await page.waitForFunction(() => {
      const i = document.querySelector("#detail .body-img");
      return i && i.complete && i.naturalWidth === 1 && i.src.startsWith("blob:");
    });
    ok("an image body is shown from a blob URL");

    // The certificate the HTTPS upstream presented, in the connection's TLS view.
    await curl(["--cacert", WGCA, "--resolve", TLS_HOST, `https://${tlsName}:${tlsPort}/tls.txt`]);
    await setFilter(page, "~u tls\\.txt");
    await openRow(page, "tls.txt");
    await page.waitForSelector("#detail .conn-rec .cert");
    const cert = await page.$eval("#detail .conn-rec .cert", (e) => ({
      text: e.textContent, verified: e.querySelector("[data-verified]").dataset.verified,
    }));
    for (const want of ["CN=www.test", "CN=upstream test CA", "DNS:www.test", "IP:203.0.113.10", WWW_FP])
      check(cert.text.includes(want), `the upstream certificate view lacks ${want}: ${cert.text}`);
    check(cert.verified === "true", `the upstream certificate is not shown verified: ${cert.text}`);
    for (const s of await page.$$("#detail details.sec:not([open]) > summary")) await s.click();
    await page.screenshot({ path: `${OUT}/tls.png` });
    ok("an HTTPS flow's connection shows the upstream's certificate (subject, issuer, names, SHA-256, verified)");

    // ---- WebSocket messages ---------------------------------------------------------
    // 3 text and 3 binary messages each way, every echo checked by the client.
    await inClient("node", [WS_JS, "client", WS_URL, WGCA, "3"], { NODE_PATH: "/usr/share/nodejs" });
    // The messages may come in more than one batch (record): all of them
    // count, and the one with the most is opened.
    // (the last is written when the connection ends: waited for).
    const wsRecs = await (await page.waitForFunction(async () => {
      const l = await (await fetch("/api/flows?filter=" + encodeURIComponent("~websocket & !~http"))).json();
      const recs = await Promise.all(l.flows.map(async (f) => (await (await fetch(`/api/flows/${encodeURIComponent(f.id)}`)).json())));
      const data = recs.flatMap((r) => r.messages || []).filter((m) => m.opcode === "text" || m.opcode === "binary");
      const n = (d) => data.filter((m) => m.dir === d).length;
      return n("up") >= 6 && n("down") >= 6 && recs.some((r) => r.close) ? recs : false;
    }, { polling: 250 })).jsonValue();
    const all = wsRecs.flatMap((r) => r.messages || []).filter((m) => m.opcode === "text" || m.opcode === "binary");
    check(all.filter((m) => m.dir === "up").length === 6 && all.filter((m) => m.dir === "down").length === 6,
      `the WebSocket records: ${JSON.stringify(wsRecs.map((r) => (r.messages || []).map((m) => m.dir + ":" + m.opcode)))}`);
    const big = wsRecs.reduce((a, b) => ((b.messages || []).length > (a.messages || []).length ? b : a));
    await setFilter(page, "~websocket & !~http");
    await page.waitForSelector(`.row.flow[data-id="${big.id}"]:not([hidden])`);
    await clickRow(page, big.id);
    await page.waitForSelector("#detail .ws-msgs .ws-msg");
    const ws = await page.$$eval("#detail .ws-msgs .ws-msg", (ms) => ms.map((m) => ({
      dir: m.classList.contains("up") ? "up" : m.classList.contains("down") ? "down" : "?",
      text: m.textContent,
    })));
    // Each row as in the record, in its order: direction, opcode and text.
    check(ws.length === big.messages.length && ws.every((m, i) => m.dir === big.messages[i].dir &&
      m.text.includes(big.messages[i].opcode) && (typeof big.messages[i].body.text !== "string" || m.text.includes(big.messages[i].body.text.slice(0, 40)))),
    `the WebSocket view: ${JSON.stringify(ws)} for ${JSON.stringify(big.messages)}`);
    // A message opens its body.
    const at = big.messages.findIndex((m) => m.opcode === "text");
    check(at >= 0, "no text message in the WebSocket record");
    const want = big.messages[at].body.text;
    await (await page.$$("#detail .ws-msgs .ws-msg"))[at].click();
    await page.waitForFunction((w) => {
      const b = document.querySelector("#detail .ws-msgs .ws-body:not([hidden]) .viewer");
      return b && b.textContent.includes(w);
    }, {}, want);
    await page.screenshot({ path: `${OUT}/websocket.png` });
    ok(`WebSocket messages: 6 each way in ${wsRecs.length} record(s); the view lists ${ws.length} in order with direction and opcode, and one opens its body`);

    // ---- DNS answers -------------------------------------------------------------------
    const answer = (await inClient("dig", ["+short", "+time=3", "+tries=2", `@${DNS_SERVER}`, DNS_NAME, "A"])).trim();
    check(answer === DNS_ADDR, `dig through the tunnel answered ${answer}`);
    await openFirst(page, `~dns & ~d ${DNS_NAME.replace(/\./g, "\\.")}`, "dns");
    await page.waitForSelector("#detail table.grid td");
    const dns = await page.$eval("#detail table.grid", (t) => [...t.querySelectorAll("tr")].map((r) => [...r.children].map((c) => c.textContent)));
    check(dns.some((r) => r[0].startsWith(DNS_NAME) && r[1] === "A" && r[3] === DNS_ADDR), `the DNS answers: ${JSON.stringify(dns)}`);
    ok(`a DNS query's record shows its answers (${DNS_NAME} A ${DNS_ADDR})`);
  }

  // ---- Hostile content --------------------------------------------------------
  const hostile = [
    ["--path-as-is", `${UPSTREAM}/h/<script>window.__pwned='url'</script>`],
    ["--path-as-is", `${UPSTREAM}/h/<img/src=x/onerror=window.__pwned='urlimg'>`],
    ["-H", "X-Evil: <img src=x onerror=window.__pwned='reqheader'>", "-H", "Referer: javascript:window.__pwned='ref'", `${UPSTREAM}/page.html`],
    [`${UPSTREAM}/img.svg`],
    [`${UPSTREAM}/fake.png`],
    ["-H", "Host: <b>pwned</b>", `${UPSTREAM}/hosted`],
    ["-H", "Content-Type: application/x-www-form-urlencoded", "--data-binary", "a=<script>window.__pwned='form'</script>&b=javascript:alert(1)", `${UPSTREAM}/h/form`],
    ["-H", "Content-Type: application/json", "--data-binary", '{"k": "<script>window.__pwned=\'json\'</script>", "<img src=x onerror=alert(1)>": 1}', `${UPSTREAM}/h/json`],
  ];
  for (const a of hostile) await curl(a);
  await setFilter(page, "~u /h/ | ~u page\\.html | ~u img\\.svg | ~u fake\\.png | ~u hosted");
  await page.waitForFunction(() => document.querySelectorAll(".row.flow:not([hidden])").length >= 8);
  const ids = (await rows(page)).map((r) => r.id);
  for (const id of ids) {
    await clickRow(page, id);
    // Every viewer of every body.
    await page.waitForFunction(() => ![...document.querySelectorAll("#detail .body")].some((b) => b.textContent.includes("loading…")));
    for (const b of await page.$$("#detail .viewer .tabs button")) {
      await b.click();
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const s of await page.$$("#detail details.sec:not([open]) > summary")) await s.click();
    await new Promise((r) => setTimeout(r, 100));
  }
  await page.screenshot({ path: `${OUT}/hostile.png` });
  const verdict = await page.evaluate(() => ({
    pwned: window.__pwned,
    scripts: document.querySelectorAll("script").length,
    handlers: [...document.querySelectorAll("*")].filter((e) => [...e.attributes].some((a) => /^on/i.test(a.name))).map((e) => e.outerHTML.slice(0, 80)),
    frames: document.querySelectorAll("iframe, object, embed").length,
    jsLinks: [...document.querySelectorAll("a[href]")].filter((a) => /^\s*javascript:/i.test(a.getAttribute("href"))).length,
    shown: document.body.innerText.includes("<script>window.__pwned="),
    violations: window.__violations,
  }));
  check(verdict.pwned === undefined, `hostile content ran: window.__pwned = ${verdict.pwned}`);
  check(page.dialogs.length === 0, `a dialog opened: ${page.dialogs}`);
  check(verdict.scripts === 1, `${verdict.scripts} script elements`);
  check(verdict.handlers.length === 0, `elements with handlers: ${verdict.handlers}`);
  check(verdict.frames === 0 && verdict.jsLinks === 0, "a frame or a javascript: link was made");
  check(verdict.shown, "the hostile markup is not shown as text");
  check(verdict.violations.length === 0, `CSP violations (something tried): ${verdict.violations}`);
  ok(`hostile URLs, headers, hosts and bodies (${ids.length} flows, every viewer) render as text: nothing ran, no dialog, no CSP violation`);

  // ---- Devices ------------------------------------------------------------------
  await page.goto(`${BASE}/#/devices`);
  await page.waitForSelector("tr[data-peer=phone]");
  // The phone's flow count, from the store: every request above made some.
  const shownFlows = Number((await page.$eval("tr[data-peer=phone] .c-flows", (e) => e.textContent)).replace(/,/g, ""));
  const lastFlow = await page.$eval("tr[data-peer=phone] .c-lastflow", (e) => e.textContent);
  const apiPeers = await page.evaluate(async () => (await (await fetch("/api/peers")).json()).peers);
  const phone = apiPeers.find((p) => p.name === "phone");
  check(Number.isInteger(shownFlows) && shownFlows >= made && phone.flows >= shownFlows,
    `the phone's flow count: ${shownFlows} shown after ${made} requests, ${phone.flows} in /api/peers`);
  check(lastFlow !== "none" && typeof phone.last_flow === "string", `the phone's last flow: ${lastFlow}, ${phone.last_flow}`);
  await page.type("#dev-name", "tablet");
  await page.click("#dev-add");
  await page.waitForFunction(() => {
    const i = document.getElementById("qr");
    return i && i.complete && i.naturalWidth > 0;
  });
  await page.waitForSelector("tr[data-peer=tablet]");
  const qr = await page.$("#qr");
  await qr.screenshot({ path: `${OUT}/qr.png` });
  await page.screenshot({ path: `${OUT}/devices.png` });
  check((await page.$eval("tr[data-peer=tablet] .c-flows", (e) => e.textContent)) === "0", "a new device has flows");
  ok(`"add device" shows a QR code on screen (saved as ${OUT}/qr.png); the phone shows ${shownFlows} flows (last ${lastFlow}), the new device 0`);
  if (FULL) {
    // Android per-app options reach the configuration.
    await page.type("#dev-name", "androidapp");
    await page.select("#dev-mode", "apps");
    await page.type("#dev-apps", "com.example.one, org.example.two");
    await page.click("#dev-add");
    await page.waitForFunction(() => document.querySelector(".qr-box h3") && document.querySelector(".qr-box h3").textContent.includes("androidapp"));
    const conf = await page.$eval(".qr-box pre.config", (e) => e.textContent);
    check(/IncludedApplications\s*=\s*com\.example\.one,\s*org\.example\.two/.test(conf), `the per-app config: ${conf}`);
    ok("Android per-app tunnelling reaches the configuration (IncludedApplications)");
    // Remove it (two clicks).
    await page.waitForSelector("tr[data-peer=androidapp] button.danger");
    await page.click("tr[data-peer=androidapp] button.danger");
    await page.click("tr[data-peer=androidapp] button.danger");
    await page.waitForFunction(() => !document.querySelector("tr[data-peer=androidapp]"));
    ok("a device removed in the UI is gone");
  }

  if (FULL) {
    // ---- Certificates ---------------------------------------------------------------
    await page.goto(`${BASE}/#/certs`);
    await page.waitForFunction(() => /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/i.test((document.getElementById("ca-fp") || {}).textContent || ""));
    await page.screenshot({ path: `${OUT}/certs.png` });
    ok("the certificates page shows the CA fingerprint");
    // A client that does not trust wgmitm's CA (a pinned app): it refuses our
    // certificate, its host is listed, and one click passes it through.
    const pinned = `pinned.test:${tlsPort}:${TLS_HOST.split(":").slice(2).join(":")}`;
    await curl(["--resolve", pinned, `https://pinned.test:${tlsPort}/tls.txt`]).then(() => die("curl accepted wgmitm's certificate without its CA"), () => {});
    // The page lists what the store holds when it loads: wait for the record
    // (written when the connection ends, then stored) before loading it.
    await page.waitForFunction(async () => {
      const l = (await (await fetch("/api/flows?filter=" + encodeURIComponent("~tcp & ~d ^pinned\\.test$"))).json()).flows;
      return l.length >= 1;
    }, { polling: 250 });
    await page.reload();
    await page.waitForSelector(".rejected tr[data-host='pinned.test'] .pass-btn");
    await page.screenshot({ path: `${OUT}/rejected.png` });
    await page.click(".rejected tr[data-host='pinned.test'] .pass-btn");
    await page.waitForFunction(() => [...document.querySelectorAll(".passlist code")].some((c) => c.textContent === "pinned.test"));
    const cfg = await page.evaluate(async () => (await (await fetch("/api/config")).json()).tls_passthrough);
    check(cfg.includes("pinned.test"), `tls_passthrough after the click: ${JSON.stringify(cfg)}`);
    // The next connection is relayed untouched: the upstream's own certificate
    // reaches the client (-k: it names www.test, not pinned.test).
    await curl(["-k", "--resolve", pinned, `https://pinned.test:${tlsPort}/tls.txt`]);
    // (its tcp record is written when the connection ends: waited for)
    const again = await (await page.waitForFunction(async () => {
      const l = (await (await fetch("/api/flows?filter=" + encodeURIComponent("~tcp & ~d ^pinned\\.test$"))).json()).flows;
      return l.length >= 2 ? (await fetch(`/api/flows/${encodeURIComponent(l[0].id)}`)).json() : false;
    }, { polling: 250 })).jsonValue();
    check(again.proto === "tls-passthrough" && again.passthrough === "rule:pinned.test" && again.end_reason !== "tls:client_rejected",
      `the connection after the click: ${JSON.stringify(again)}`);
    ok("a host whose certificate a client rejected is listed; Pass through adds it to tls_passthrough, and its next connection is relayed untouched");

    // ---- Configuration ----------------------------------------------------------------
    await page.goto(`${BASE}/#/config`);
    await page.waitForSelector("input[name=max_connections]");
    await page.$eval("input[name=max_connections]", (e) => { e.value = "-5"; });
    await page.click("#cfg-save");
    await page.waitForSelector(".field[data-field=max_connections] .field-error:not([hidden])");
    const ferr = await page.$eval(".field[data-field=max_connections] .field-error", (e) => e.textContent);
    ok(`a refused value is shown at its field: ${ferr}`);
    await page.click(".config-form button[type=button]"); // revert
    await page.waitForFunction(() => document.querySelector("input[name=max_connections]").value !== "-5");
    await page.$eval("textarea[name=tls_passthrough]", (e) => { e.value = "*.pinned.test"; });
    await page.click("#cfg-save");
    await page.waitForFunction(() => document.querySelector(".form-note").textContent.startsWith("saved"));
    ok("a change is saved with merge semantics");

    // ---- Events ---------------------------------------------------------------------
    await page.goto(`${BASE}/#/events`);
    await page.waitForSelector(".counters .layer");
    await page.screenshot({ path: `${OUT}/events.png` });
    ok("live counters on the events page");
  }
  check(page.dialogs.length === 0, `a dialog opened: ${page.dialogs}`);
  const errs = page.errors.filter((e) => !/status of 40[0-9]/.test(e));
  check(errs.length === 0, `errors in the page: ${errs.join(" | ")}`);
  ok("no script error in the page");
}
