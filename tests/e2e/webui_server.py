#!/usr/bin/env python3
"""The upstream of the web UI's end-to-end test (stdlib only).

  webui_server.py PORT

GET /user.json (JSON), /hello.txt, /gzip.json (gzip-encoded JSON),
/pixel.png (a real PNG), and hostile answers: /page.html (script and
markup, hostile response headers), /img.svg (an SVG with script),
/fake.png (HTML declared as a PNG); /missing* is a 404, anything else a
short text. POST answers a JSON echo of the body's length.
"""
import gzip
import http.server
import socket
import socketserver
import sys
import zlib
import struct

HOSTILE = b'<script>window.__pwned="body"</script><img src=x onerror="window.__pwned=\'img\'">' \
    b'<a href="javascript:window.__pwned=\'link\'">click</a><iframe src="javascript:alert(1)"></iframe>'


def png_1x1():
    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)
    raw = b"\x00\xff\x00\x00"
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


FILES = {
    "/user.json": ("application/json", b'{"user": "alice", "roles": ["admin", "dev"], "nested": {"deep": {"x": 1}}}', {}),
    "/hello.txt": ("text/plain", b"hello\n", {}),
    "/gzip.json": ("application/json", gzip.compress(b'{"compressed": "yes, gzip"}'), {"Content-Encoding": "gzip"}),
    "/pixel.png": ("image/png", png_1x1(), {}),
    "/page.html": ("text/html", HOSTILE, {"X-Evil": "<script>window.__pwned='header'</script>",
                                           "Link": "<javascript:window.__pwned='linkheader'>; rel=preload"}),
    "/img.svg": ("image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned=\'svg\'">'
                 b'<script>window.__pwned="svgscript"</script><rect width="4" height="4"/></svg>', {}),
    "/fake.png": ("image/png", HOSTILE, {}),
}


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, status, ctype, body, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in FILES:
            ctype, body, extra = FILES[path]
            self.answer(200, ctype, body, extra)
        elif path.startswith("/missing"):
            self.answer(404, "text/plain", b"not here\n")
        else:
            self.answer(200, "text/plain", b"ok\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n) if n else b""
        self.answer(200, "application/json", b'{"received": %d}' % len(body))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    Server(("::", int(sys.argv[1])), Handler).serve_forever()
