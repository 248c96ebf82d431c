#!/usr/bin/env python3
"""Test hosts and clients for the network stack tests (stdlib only).

Servers (listen on every IPv4 and IPv6 address):
  hosts.py http DIR PORT        GET /NAME serves DIR/NAME; PUT/POST reads the
                                body and answers its sha256 (hex); GET
                                /stream/N?hold=FILE sends 64 KiB of N bytes,
                                waits for FILE to exist, then the rest
  hosts.py https DIR PORT CERT KEY   the same over TLS (ALPN http/1.1)
                                (both: /git/REPO... is git's smart HTTP for
                                the bare repositories in DIR)
  hosts.py tcpecho PORT         echoes every byte back
  hosts.py halfclose PORT       reads to EOF, then answers "N SHA256" and closes
  hosts.py udpecho PORT         echoes every datagram
  hosts.py holdserver PORT      echo without a thread per connection (10,000s)

Clients (bounded in time; exit 0 on success):
  hosts.py parallel HOST PORT N       N concurrent echo connections, each checked
  hosts.py halfclose-client HOST PORT sends, shuts down writing, reads the reply
  hosts.py udp-client HOST PORT N     N datagrams, every echo checked
  hosts.py slowread HOST PORT PATH SECONDS  reads a download at 64 KiB/s
  hosts.py setup-rate HOST PORT SECONDS    sequential connect/echo/close rate
  hosts.py hold HOST PORT N SECONDS        N idle connections held open
"""
import hashlib
import json
import http.server
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import urllib.parse
import threading
import time


class DualStackMixin:
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class ThreadingHTTPServer(DualStackMixin, socketserver.ThreadingMixIn, http.server.HTTPServer):
    request_queue_size = 1024

    def server_bind(self):
        # HTTPServer's own server_bind looks the address up (getfqdn): a
        # reverse DNS query that, in a namespace with a default route and
        # no resolver behind it, takes seconds to time out.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]


class ThreadingTCPServer(DualStackMixin, socketserver.ThreadingTCPServer):
    request_queue_size = 1024


def http_server(root, port, cert=None, key=None):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def stream(self):
            url = urllib.parse.urlsplit(self.path)
            n = int(url.path.rsplit("/", 1)[1])
            hold = urllib.parse.parse_qs(url.query).get("hold", [None])[0]
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            first = min(n, 65536)
            self.wfile.write(b"\x00" * first)
            self.wfile.flush()
            deadline = time.time() + 60
            while hold and not os.path.exists(hold) and time.time() < deadline:
                time.sleep(0.05)
            left = n - first
            block = b"\x01" * (1 << 16)
            while left > 0:
                k = min(left, len(block))
                self.wfile.write(block[:k])
                left -= k

        def git(self):
            """git http-backend as a CGI program."""
            url = urllib.parse.urlsplit(self.path)
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1",
                       PATH_INFO=url.path[len("/git"):], QUERY_STRING=url.query,
                       REQUEST_METHOD=self.command, CONTENT_LENGTH=str(len(body)),
                       CONTENT_TYPE=self.headers.get("Content-Type", ""),
                       REMOTE_ADDR=self.client_address[0],
                       GIT_PROTOCOL=self.headers.get("Git-Protocol", ""),
                       HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding", ""))
            out = subprocess.run(["git", "http-backend"], input=body, env=env,
                                 capture_output=True, timeout=30).stdout
            sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
            head, _, rest = out.partition(sep)
            status, hdrs = 200, []
            for line in head.decode("latin-1").splitlines():
                k, _, v = line.partition(":")
                if k.lower() == "status":
                    status = int(v.split()[0])
                elif k:
                    hdrs.append((k, v.strip()))
            self.send_response(status)
            for k, v in hdrs:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            self.wfile.write(rest)

        def do_GET(self):
            if self.path.startswith("/git/"):
                self.git()
                return
            if self.path.startswith("/headers"):
                body = json.dumps([[k, v] for k, v in self.headers.items()]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if self.path.startswith("/stream/"):
                self.stream()
                return
            path = os.path.join(root, os.path.basename(urllib.parse.urlsplit(self.path).path))
            if not os.path.isfile(path):
                self.send_error(404)
                return
            size = os.path.getsize(path)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(path, "rb") as f:
                while True:
                    chunk = f.read(1 << 16)
                    if not chunk:
                        break
                    self.wfile.write(chunk)

        def do_PUT(self):
            if self.path.startswith("/git/"):
                self.git()
                return
            n = int(self.headers.get("Content-Length", "0"))
            h = hashlib.sha256()
            while n > 0:
                chunk = self.rfile.read(min(n, 1 << 16))
                if not chunk:
                    break
                h.update(chunk)
                n -= len(chunk)
            body = (h.hexdigest() + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_PUT

    srv = ThreadingHTTPServer(("::", port), Handler)
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


def tcp_server(port, handler_fn):
    class H(socketserver.BaseRequestHandler):
        def handle(self):
            handler_fn(self.request)

    ThreadingTCPServer(("::", port), H).serve_forever()


def echo(sock):
    while True:
        data = sock.recv(65536)
        if not data:
            return
        sock.sendall(data)


def halfclose(sock):
    h = hashlib.sha256()
    n = 0
    while True:
        data = sock.recv(65536)
        if not data:
            break
        h.update(data)
        n += len(data)
    sock.sendall(("%d %s\n" % (n, h.hexdigest())).encode())
    sock.close()


def udpecho(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        data, addr = s.recvfrom(65535)
        s.sendto(data, addr)


def parallel(host, port, n):
    errors = []
    barrier = threading.Barrier(n, timeout=60)

    def one(i):
        try:
            s = socket.create_connection((host, port), timeout=60)
            barrier.wait()  # all n connections open at once
            msg = ("connection %d " % i).encode() * 50
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            s.close()
            if got != msg:
                errors.append("connection %d: echo mismatch (%d bytes)" % (i, len(got)))
        except Exception as e:  # noqa: BLE001
            errors.append("connection %d: %s" % (i, e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    if errors:
        print("%d of %d failed; first: %s" % (len(errors), n, errors[0]))
        sys.exit(1)
    print("%d connections ok" % n)


def halfclose_client(host, port):
    s = socket.create_connection((host, port), timeout=20)
    data = os.urandom(300000)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    want = "%d %s\n" % (len(data), hashlib.sha256(data).hexdigest())
    if reply.decode() != want:
        print("bad reply %r, want %r" % (reply, want))
        sys.exit(1)
    print("half-close ok")


def udp_client(host, port, n):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(2)
    ok = 0
    for i in range(n):
        msg = os.urandom(1 + (i * 37) % 1300)
        for _ in range(3):  # UDP may drop; retry a little
            s.sendto(msg, (host, port))
            try:
                data = s.recv(65535)
            except socket.timeout:
                continue
            if data == msg:
                ok += 1
                break
    print("%d of %d echoed" % (ok, n))
    sys.exit(0 if ok == n else 1)


def slowread(host, port, path, seconds):
    s = socket.create_connection((host, port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(("GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    end = time.monotonic() + seconds
    got = 0
    while time.monotonic() < end:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += len(chunk)
        time.sleep(1)
    print(got)


def holdserver(port):
    """Accepts any number of connections without a thread each; echoes."""
    import resource
    import selectors
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sel = selectors.DefaultSelector()
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::", port))
    ls.listen(4096)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is ls:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
                continue
            try:
                data = key.fileobj.recv(65536)
            except (BlockingIOError, ConnectionError):
                data = b""
            if data:
                try:
                    key.fileobj.send(data)
                except (BlockingIOError, ConnectionError):
                    pass
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()


def setup_rate(host, port, seconds):
    """Sequential connect + one echo byte + close for SECONDS; prints conn/s."""
    n = 0
    end = time.monotonic() + seconds
    start = time.monotonic()
    while time.monotonic() < end:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"x")
        s.recv(1)
        s.close()
        n += 1
    print("%.0f" % (n / (time.monotonic() - start)))


def hold(host, port, n, seconds):
    """Opens N idle connections, prints "open" and holds them SECONDS."""
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    for _ in range(n):
        socks.append(socket.create_connection((host, port), timeout=30))
    print("open", flush=True)
    time.sleep(seconds)


if __name__ == "__main__":
    a = sys.argv[1:]
    cmd = a[0] if a else ""
    if cmd == "http":
        http_server(a[1], int(a[2]))
    elif cmd == "https":
        http_server(a[1], int(a[2]), a[3], a[4])
    elif cmd == "tcpecho":
        tcp_server(int(a[1]), echo)
    elif cmd == "halfclose":
        tcp_server(int(a[1]), halfclose)
    elif cmd == "udpecho":
        udpecho(int(a[1]))
    elif cmd == "parallel":
        parallel(a[1], int(a[2]), int(a[3]))
    elif cmd == "halfclose-client":
        halfclose_client(a[1], int(a[2]))
    elif cmd == "udp-client":
        udp_client(a[1], int(a[2]), int(a[3]))
    elif cmd == "slowread":
        slowread(a[1], int(a[2]), a[3], float(a[4]))
    elif cmd == "setup-rate":
        setup_rate(a[1], int(a[2]), float(a[3]))
    elif cmd == "holdserver":
        holdserver(int(a[1]))
    elif cmd == "hold":
        hold(a[1], int(a[2]), int(a[3]), float(a[4]))
    else:
        sys.exit(__doc__)

