#!/usr/bin/env python3
"""Paced HTTP/1.1 requests for the web UI's soak (stdlib only).

  load.py HOST PORT RATE SECONDS

RATE requests a second (GET /soak/N) for SECONDS, from 8 threads with a
keep-alive connection each, on a fixed schedule (a late request does not
make the next ones come sooner than their time; a thread that falls
behind sends what is due at once). Prints "sent N, failed M in S s".
"""
import http.client
import sys
import threading
import time

host, port, rate, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
THREADS = 8
total = int(rate * secs)
counts = [[0, 0] for _ in range(THREADS)]
t0 = time.monotonic()


def worker(k):
    conn = None
    for i in range(k, total, THREADS):
        due = t0 + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/soak/%d" % i)
            conn.getresponse().read()
            counts[k][0] += 1
        except (OSError, http.client.HTTPException):
            counts[k][1] += 1
            if conn is not None:
                conn.close()
            conn = None


threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("sent %d, failed %d in %.1f s" % (sum(c[0] for c in counts), sum(c[1] for c in counts), time.monotonic() - t0))
