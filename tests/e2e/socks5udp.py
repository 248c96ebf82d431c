#!/usr/bin/env python3
"""SOCKS5 UDP ASSOCIATE (RFC 1928 section 7) and plain UDP clients for
test_ns_udp_listen.sh. Every wait is bounded; each command prints one JSON
line (what it sent and got, its UDP address) and exits 0 when every check
held, 1 with the reason on stderr otherwise.

  socks5udp.py [--user U:P] PORT echo N PROBE DEST...
      DEST is HOST:PORT (a name, an IPv4 address or [IPv6]): N datagrams to
      each, every echo checked, payload and header (ATYP, the address the
      answer names as its source); then the control connection is closed
      and the association must be gone: datagrams to PROBE (an echo of its
      own, so that the DESTs' counts stay exact) are no longer answered.
  socks5udp.py [--user U:P] PORT fragment DEST
      a datagram with FRAG 1 gets nothing; a whole one is echoed.
  socks5udp.py [--user U:P] PORT foreign DEST
      the first datagram's port is locked onto: another port of the same
      address gets nothing, the first is still echoed.
  socks5udp.py [--user U:P] PORT declared DEST
      the request declares the client's port: another port gets nothing,
      even first; the declared one is echoed.
  socks5udp.py [--user U:P] PORT refused DEST N
      N datagrams to DEST, none answered (the policy refuses it).
  socks5udp.py [--user U:P] PORT noauth
      offers only "no authentication": expects method 0xff (with --users).
  socks5udp.py plain HOST PORT N
      N datagrams straight to HOST:PORT (a UDP forward), every echo checked.
  socks5udp.py plain-refused HOST PORT N
      N datagrams to HOST:PORT, none answered.
"""
import json
import os
import socket
import struct
import sys

PROXY = "127.0.0.1"
WAIT = 2.0  # seconds for one echo
QUIET = 1.0  # seconds of silence that mean "not relayed"


def die(msg):
    sys.stderr.write("socks5udp: %s\n" % msg)
    sys.exit(1)


def recvn(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            die("the proxy closed after %d of %d bytes" % (len(buf), n))
        buf += d
    return buf


def split_dest(d):
    if d.startswith("["):
        host, _, port = d[1:].partition("]:")
    else:
        host, _, port = d.rpartition(":")
    return host, int(port)


def udp_header(host, port, frag=0):
    head = b"\0\0" + bytes([frag])
    try:
        head += b"\x01" + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        if ":" in host:
            head += b"\x04" + socket.inet_pton(socket.AF_INET6, host)
        else:
            name = host.encode()
            head += b"\x03" + bytes([len(name)]) + name
    return head + struct.pack(">H", port)


def parse_answer(d):
    """(source address text, port, data) of an answer, or die."""
    if len(d) < 10 or d[:3] != b"\0\0\0":
        die("answer header %r" % d[:10])
    if d[3] == 1:
        return socket.inet_ntop(socket.AF_INET, d[4:8]), struct.unpack(">H", d[8:10])[0], d[10:]
    if d[3] == 4 and len(d) >= 22:
        return socket.inet_ntop(socket.AF_INET6, d[4:20]), struct.unpack(">H", d[20:22])[0], d[22:]
    die("answer ATYP %d" % d[3])


def associate(port, cred, declared_port=0):
    """The control connection and the relay's address (BND)."""
    t = socket.create_connection((PROXY, port), 5)
    t.settimeout(5)
    method = 2 if cred else 0
    t.sendall(bytes([5, 1, method]))
    got = recvn(t, 2)
    if got != bytes([5, method]):
        die("greeting answered %r" % got)
    if cred:
        u, _, p = cred.partition(":")
        t.sendall(bytes([1, len(u)]) + u.encode() + bytes([len(p)]) + p.encode())
        got = recvn(t, 2)
        if got != b"\x01\x00":
            die("credentials refused: %r" % got)
    t.sendall(bytes([5, 3, 0, 1]) + socket.inet_aton("0.0.0.0") + struct.pack(">H", declared_port))
    rep = recvn(t, 4)
    if rep[0] != 5 or rep[1] != 0:
        die("UDP ASSOCIATE answered %r" % rep)
    if rep[3] == 1:
        host = socket.inet_ntop(socket.AF_INET, recvn(t, 4))
    elif rep[3] == 4:
        host = socket.inet_ntop(socket.AF_INET6, recvn(t, 16))
    else:
        die("BND ATYP %d" % rep[3])
    bport = struct.unpack(">H", recvn(t, 2))[0]
    if bport == 0:
        die("BND.PORT 0")
    return t, (host, bport)


def udp_socket():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((PROXY, 0))
    return u


def addr_text(u):
    h, p = u.getsockname()[:2]
    return "%s:%d" % (h, p)


def expected_source(host):
    """What the answer's header should name: the address (a name's: any)."""
    try:
        socket.inet_pton(socket.AF_INET, host)
        return host
    except OSError:
        pass
    if ":" in host:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, host))
    return None


def echo_once(u, bnd, host, port, msg, tries=3):
    """Sends until the echo comes (at most `tries` times): (sent, got)."""
    sent = 0
    for _ in range(tries):
        u.sendto(udp_header(host, port) + msg, bnd)
        sent += 1
        u.settimeout(WAIT)
        try:
            while True:
                d = u.recv(65535)
                src, sport, data = parse_answer(d)
                want = expected_source(host)
                if want is not None and src != want:
                    die("the answer names %s, not %s" % (src, want))
                if sport != port:
                    die("the answer names port %d, not %d" % (sport, port))
                if data == msg:
                    return sent, 1
        except socket.timeout:
            continue
    return sent, 0


def silent(u, what):
    u.settimeout(QUIET)
    try:
        d = u.recv(65535)
        die("%s was answered: %r" % (what, d[:40]))
    except socket.timeout:
        pass


def cmd_echo(port, cred, n, probe, dests):
    t, bnd = associate(port, cred)
    u = udp_socket()
    out = {"client": addr_text(u), "bnd": "%s:%d" % bnd, "dests": {}}
    ok = True
    for d in dests:
        host, dport = split_dest(d)
        sent = got = 0
        for i in range(n):
            s, g = echo_once(u, bnd, host, dport, os.urandom(1 + (i * 37) % 1200))
            sent += s
            got += g
        out["dests"][d] = {"sent": sent, "got": got}
        ok &= got == n
    t.close()
    # The association is gone with its control connection: its port no
    # longer answers (give the endpoint a moment to close it).
    host, dport = split_dest(probe)
    for _ in range(20):
        u.sendto(udp_header(host, dport) + b"after close", bnd)
        u.settimeout(0.25)
        try:
            u.recv(65535)
        except socket.timeout:
            break
        except ConnectionRefusedError:
            break
    else:
        die("the association still answers after its control connection closed")
    print(json.dumps(out))
    if not ok:
        die("not every datagram was echoed: %s" % out)


def cmd_fragment(port, cred, dest):
    t, bnd = associate(port, cred)
    u = udp_socket()
    host, dport = split_dest(dest)
    u.sendto(udp_header(host, dport, frag=1) + b"fragment", bnd)
    silent(u, "a fragment")
    sent, got = echo_once(u, bnd, host, dport, b"whole")
    print(json.dumps({"client": addr_text(u), "sent": sent, "got": got}))
    t.close()
    if not got:
        die("the whole datagram after a fragment was not echoed")


def cmd_foreign(port, cred, dest):
    t, bnd = associate(port, cred)
    a, b = udp_socket(), udp_socket()
    host, dport = split_dest(dest)
    s1, g1 = echo_once(a, bnd, host, dport, b"first")
    if not g1:
        die("the first datagram was not echoed")
    b.sendto(udp_header(host, dport) + b"from another port", bnd)
    silent(b, "a datagram from another port")
    s2, g2 = echo_once(a, bnd, host, dport, b"first again")
    print(json.dumps({"client": addr_text(a), "foreign": addr_text(b), "sent": s1 + s2, "got": g1 + g2}))
    t.close()
    if not g2:
        die("the locked port is no longer echoed")


def cmd_declared(port, cred, dest):
    a, b = udp_socket(), udp_socket()
    t, bnd = associate(port, cred, declared_port=a.getsockname()[1])
    host, dport = split_dest(dest)
    b.sendto(udp_header(host, dport) + b"not declared", bnd)
    silent(b, "a datagram from a port not declared")
    s, g = echo_once(a, bnd, host, dport, b"declared")
    print(json.dumps({"client": addr_text(a), "foreign": addr_text(b), "sent": s, "got": g}))
    t.close()
    if not g:
        die("the declared port was not echoed")


def cmd_refused(port, cred, dest, n):
    t, bnd = associate(port, cred)
    u = udp_socket()
    host, dport = split_dest(dest)
    for i in range(n):
        u.sendto(udp_header(host, dport) + b"refused %d" % i, bnd)
        silent(u, "a datagram to a refused destination")
    print(json.dumps({"client": addr_text(u), "sent": n}))
    t.close()


def cmd_noauth(port):
    t = socket.create_connection((PROXY, port), 5)
    t.settimeout(5)
    t.sendall(b"\x05\x01\x00")
    got = recvn(t, 2)
    if got != b"\x05\xff":
        die("no-auth offer answered %r, not 05 ff" % got)
    print(json.dumps({"method": got[1]}))


def plain_socket(host):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind(("::1" if fam == socket.AF_INET6 else "127.0.0.1", 0))
    return u


def cmd_plain(host, port, n):
    u = plain_socket(host)
    sent = got = 0
    for i in range(n):
        msg = os.urandom(1 + (i * 37) % 1300)
        for _ in range(3):
            u.sendto(msg, (host, port))
            sent += 1
            u.settimeout(WAIT)
            try:
                if u.recv(65535) == msg:
                    got += 1
                    break
            except socket.timeout:
                pass
    h, p = u.getsockname()[:2]
    print(json.dumps({"client": ("[%s]:%d" if ":" in h else "%s:%d") % (h, p), "sent": sent, "got": got}))
    if got != n:
        die("%d of %d echoed" % (got, n))


def cmd_plain_refused(host, port, n):
    u = plain_socket(host)
    for i in range(n):
        u.sendto(b"refused %d" % i, (host, port))
        silent(u, "a datagram through a refused forward")
    h, p = u.getsockname()[:2]
    print(json.dumps({"client": "%s:%d" % (h, p), "sent": n}))


def main(a):
    if a and a[0] == "plain":
        return cmd_plain(a[1], int(a[2]), int(a[3]))
    if a and a[0] == "plain-refused":
        return cmd_plain_refused(a[1], int(a[2]), int(a[3]))
    cred = None
    if a and a[0] == "--user":
        cred, a = a[1], a[2:]
    port, cmd, rest = int(a[0]), a[1], a[2:]
    if cmd == "echo":
        return cmd_echo(port, cred, int(rest[0]), rest[1], rest[2:])
    if cmd == "fragment":
        return cmd_fragment(port, cred, rest[0])
    if cmd == "foreign":
        return cmd_foreign(port, cred, rest[0])
    if cmd == "declared":
        return cmd_declared(port, cred, rest[0])
    if cmd == "refused":
        return cmd_refused(port, cred, rest[0], int(rest[1]))
    if cmd == "noauth":
        return cmd_noauth(port)
    die("unknown command %s" % cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
