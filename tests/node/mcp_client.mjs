// The official MCP TypeScript SDK (installed next to this file by
// scripts/setup) driving wgmitm: `wgmitm mcp` over stdio,
// or the API's /mcp over streamable HTTP.
//
//   node mcp_client.mjs stdio WGMITM HOME EXPECT_HOST
//   node mcp_client.mjs http URL TOKEN EXPECT_HOST
//
// Lists the tools, reads the status, finds a flow to EXPECT_HOST with
// list_flows and search_flows, reads it with get_flow and its response body
// with get_body, adds a peer (config text and a QR image) and removes it.
// Prints what it checked; exits non-zero on the first failure.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [mode, a, b, host] = process.argv.slice(2);
const fail = (msg) => {
  console.error(`mcp_client (${mode}): ${msg}`);
  process.exit(1);
};
const text = (r) => (r.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");

let transport;
if (mode === "stdio") {
  transport = new StdioClientTransport({
    command: a,
    args: ["mcp"],
    env: { ...process.env, WGMITM_HOME: b },
    stderr: "inherit",
  });
} else if (mode === "http") {
  transport = new StreamableHTTPClientTransport(new URL(a), {
    requestInit: { headers: { Authorization: `Bearer ${b}` } },
  });
} else {
  fail("mode is stdio or http");
}

const client = new Client({ name: "wgmitm-e2e", version: "1.0.0" });
const timer = setTimeout(() => fail("timed out"), 60000);
await client.connect(transport);
const version = client.getServerVersion();
if (!version || version.name !== "wgmitm") fail(`server is ${JSON.stringify(version)}`);

const { tools } = await client.listTools();
const names = tools.map((t) => t.name);
for (const want of ["status", "list_flows", "search_flows", "get_flow", "get_body", "list_peers",
  "add_peer", "remove_peer", "get_config", "start", "configure", "export_har", "clear_flows"]) {
  if (!names.includes(want)) fail(`no tool ${want} in ${names}`);
}
console.log(`tools: ${names.length}`);

const call = async (name, args = {}) => {
  const r = await client.callTool({ name, arguments: args });
  if (r.isError) fail(`${name}: ${text(r)}`);
  return r;
};

const status = await call("status");
if (!text(status).includes("\"version\"")) fail(`status: ${text(status)}`);

const list = await call("list_flows", { filter: `~d ${host} & ~http`, limit: 10 });
const page = list.structuredContent;
if (!page || !Array.isArray(page.flows) || page.flows.length === 0)
  fail(`list_flows found nothing for ${host}: ${text(list)}`);
const flow = page.flows[0];
if (flow.host !== host) fail(`list_flows returned ${flow.host}`);
console.log(`list_flows: ${page.flows.length} flows to ${host}`);

const found = await call("search_flows", { text: host, limit: 5 });
if (!text(found).includes(flow.id)) fail(`search_flows did not find ${flow.id}`);

const one = await call("get_flow", { id: flow.id });
const rec = one.structuredContent;
if (!rec || rec.id !== flow.id || !rec.response) fail(`get_flow: ${text(one).slice(0, 300)}`);
const body = await call("get_body", { id: flow.id, part: "response", length: 64 });
if (!/^bytes 0-/.test(text(body))) fail(`get_body: ${text(body).slice(0, 200)}`);
console.log(`get_flow and get_body: ${flow.id}`);

const peer = `mcp-${mode}`;
const added = await call("add_peer", { name: peer, apps: ["org.example.app"] });
if (!text(added).includes("[Interface]")) fail("add_peer: no config");
const img = (added.content || []).find((c) => c.type === "image");
if (!img || img.mimeType !== "image/png" || Buffer.from(img.data, "base64").subarray(1, 4).toString() !== "PNG")
  fail("add_peer: no PNG QR code");
const peers = await call("list_peers");
if (!text(peers).includes(peer)) fail("list_peers does not show the new peer");
await call("remove_peer", { name: peer });
console.log(`add_peer, list_peers, remove_peer: ${peer}`);

// A bad filter is a tool error naming the column, not a protocol error.
const bad = await client.callTool({ name: "list_flows", arguments: { filter: "~c abc" } });
if (!bad.isError || !/column/.test(text(bad))) fail(`bad filter: ${text(bad)}`);

clearTimeout(timer);
await client.close();
console.log("ok");
