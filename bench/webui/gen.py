#!/usr/bin/env python3
"""Writes N synthetic http records (flows.md's format) to stdout, for the web UI's benchmark."""
import sys

n = int(sys.argv[1])
out = sys.stdout
hosts = ["api.example.com", "cdn.example.net", "img.example.org", "auth.example.com", "ads.example.io"]
for i in range(n):
    s = 1700000000 + i // 200
    us = (i % 200) * 5000
    t0 = f"2023-11-14T22:{(s // 60) % 60:02d}:{s % 60:02d}.{us:06d}Z"
    host = hosts[i % 5]
    status = 404 if i % 17 == 0 else 200
    out.write('{"type":"http","id":"bench-%d","peer":"phone","client":"10.66.77.2:%d","server":"203.0.113.10:443",'
              '"start":"%s","end":"%s","bytes_up":0,"bytes_down":18,"end_reason":"complete","conn":"c-%d",'
              '"tls":null,"http_version":"HTTP/1.1","method":"GET","url":"https://%s/v1/items/%d?page=%d",'
              '"request":{"headers":[["host","%s"]],"body":{"text":"","size":0}},'
              '"response":{"status":%d,"reason":"OK","headers":[["content-type","application/json"]],'
              '"body":{"text":"{\\"item\\": %d}\\n","size":18}},'
              '"timings":{"start":"%s","request_end":"%s","response_start":"%s","end":"%s"}}\n'
              % (i, 10000 + i % 50000, t0, t0, i, host, i, i % 10, host, status, i, t0, t0, t0, t0))
