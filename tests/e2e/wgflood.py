#!/usr/bin/env python3
"""Hostile traffic for a WireGuard port, bounded in count and time.

  wgflood.py junk HOST PORT COUNT
      COUNT datagrams: random bytes of random length, truncated and
      oversized messages of every type, transport messages for unknown
      indices. Prints how many were sent.

  wgflood.py junkinit HOST PORT RATE SECONDS [--bind ADDR]
      Initiation-sized type-1 datagrams of random bytes (so a wrong MAC1)
      at RATE per second for SECONDS (at most RATE * SECONDS of them).
      Prints "ready" once RATE * 2 / 3 are out, then at the end "sent N
      replies M" (M: datagrams that came back, none expected).

  wgflood.py initiations HOST PORT SERVER_PUBKEY_B64 SECONDS [--bind ADDR]
      Initiations with a valid MAC1 (and garbage inside, so they fail
      after MAC1) for SECONDS; counts the cookie replies that come back.
      Prints "sent N cookies M".
"""
import base64
import hashlib
import os
import random
import socket
import sys
import time


def junk(host, port, count):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    rnd = random.Random(1234)
    sizes = {1: 148, 2: 92, 3: 64, 4: 32}
    sent = 0
    deadline = time.monotonic() + 60
    for i in range(count):
        kind = i % 4
        if kind == 0:  # random bytes, random length
            msg = os.urandom(rnd.randrange(0, 300))
        elif kind == 1:  # a known type with a wrong size
            t = rnd.randrange(1, 5)
            n = sizes[t] + rnd.choice([-1, 1, -10, 7]) if t != 4 else rnd.randrange(4, 32)
            msg = bytes([t, 0, 0, 0]) + os.urandom(max(0, n - 4))
        elif kind == 2:  # a right-sized handshake message with garbage MACs
            t = rnd.randrange(1, 4)
            msg = bytes([t, 0, 0, 0]) + os.urandom(sizes[t] - 4)
        else:  # transport for an index nobody holds
            msg = bytes([4, 0, 0, 0]) + os.urandom(rnd.randrange(28, 1450))
        try:
            s.sendto(msg, (host, port))
            sent += 1
        except (BlockingIOError, OSError):
            time.sleep(0.001)
        if i % 1000 == 0:
            time.sleep(0.002)  # keep the socket buffers from overflowing
            if time.monotonic() > deadline:
                break
    print(sent)


def junkinit(host, port, rate, seconds, bind=None):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if bind:
        s.bind((bind, 0))
    s.setblocking(False)
    count = int(rate * seconds)
    ready_at = min(count, max(1, int(rate * 2 / 3)))
    sent = replies = 0
    start = time.monotonic()
    deadline = start + seconds + 5
    for i in range(count):
        # Paced: datagram i leaves at start + i / rate.
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() > deadline:
            break
        try:
            s.sendto(bytes([1, 0, 0, 0]) + os.urandom(144), (host, port))
            sent += 1
        except (BlockingIOError, OSError):
            pass
        if sent == ready_at:
            print("ready", flush=True)
        while True:
            try:
                s.recv(2048)
                replies += 1
            except (BlockingIOError, OSError):
                break
    print("sent %d replies %d" % (sent, replies), flush=True)


def initiations(host, port, pub_b64, seconds, bind=None):
    pub = base64.b64decode(pub_b64)
    mac1_key = hashlib.blake2s(b"mac1----" + pub).digest()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if bind:
        s.bind((bind, 0))
    s.setblocking(False)
    sent = cookies = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(50):
            body = bytes([1, 0, 0, 0]) + os.urandom(112)
            mac1 = hashlib.blake2s(body, key=mac1_key, digest_size=16).digest()
            try:
                s.sendto(body + mac1 + bytes(16), (host, port))
                sent += 1
            except (BlockingIOError, OSError):
                break
        while True:
            try:
                data = s.recv(2048)
            except (BlockingIOError, OSError):
                break
            if len(data) == 64 and data[0] == 3:
                cookies += 1
        time.sleep(0.01)  # about 5,000 initiations per second
    print("sent %d cookies %d" % (sent, cookies))


if __name__ == "__main__":
    a = sys.argv
    if len(a) >= 5 and a[1] == "junk":
        junk(a[2], int(a[3]), int(a[4]))
    elif len(a) >= 6 and a[1] == "junkinit":
        bind = a[a.index("--bind") + 1] if "--bind" in a else None
        junkinit(a[2], int(a[3]), float(a[4]), float(a[5]), bind)
    elif len(a) >= 6 and a[1] == "initiations":
        bind = a[a.index("--bind") + 1] if "--bind" in a else None
        initiations(a[2], int(a[3]), a[4], float(a[5]), bind)
    else:
        sys.exit(__doc__)
