#!/usr/bin/env python3
"""Drives `wgmitm mcp` over stdio: initialize, then each tool call given as
NAME=JSON-ARGUMENTS, one request and one answer at a time; prints each
answer's text on one line (prefixed "ERROR " when the tool failed).
  mcp_stdio.py WGMITM NAME=JSON ...   (WGMITM_HOME in the environment)"""
import json
import subprocess
import sys

p = subprocess.Popen([sys.argv[1], "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def rpc(msg):
    p.stdin.write(json.dumps(msg) + "\n")
    p.stdin.flush()
    if "id" not in msg:
        return None
    line = p.stdout.readline()
    if not line:
        sys.exit("wgmitm mcp closed")
    return json.loads(line)


rpc({"jsonrpc": "2.0", "id": 0, "method": "initialize",
     "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "e2e", "version": "1"}}})
rpc({"jsonrpc": "2.0", "method": "notifications/initialized"})
for i, call in enumerate(sys.argv[2:], 1):
    name, _, args = call.partition("=")
    a = rpc({"jsonrpc": "2.0", "id": i, "method": "tools/call",
             "params": {"name": name, "arguments": json.loads(args or "{}")}})
    r = a.get("result", {})
    text = " ".join(c.get("text", "") for c in r.get("content", []))
    print(("ERROR " if r.get("isError") or "error" in a else "") + text.replace("\n", " "))
p.stdin.close()
p.wait(10)
