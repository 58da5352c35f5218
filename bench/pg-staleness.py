#!/usr/bin/env python3
"""How long after a DELETE on master A a GET on master B still redirects.

    bench/pg-staleness.py http://127.0.0.1:3000 http://127.0.0.1:3010 [ROUNDS]

Each round: PUT a fresh key on A, GET it twice on B (cached there), DELETE
it on A (204), then GET it on B every millisecond until B answers 404. The
time from the 204 to that 404 is the staleness of B's cache for that
change: bounded by B's --coherence-ms, typically the notification's
delivery. Prints p50, p99 and max over ROUNDS (default 200). Standard
library only.
"""
import http.client
import sys
import time
import urllib.parse


def connect(url):
    parsed = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)


def call(connection, method, path, body=None):
    connection.request(method, path, body=body)
    response = connection.getresponse()
    response.read()
    return response.status


def main():
    a, b = connect(sys.argv[1]), connect(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    stale = []
    run = int(time.time())
    for number in range(rounds):
        path = f"/staleness/{run}-{number}"
        assert call(a, "PUT", path, b"value") == 201
        assert call(b, "GET", path) == 302 and call(b, "GET", path) == 302
        assert call(a, "DELETE", path) == 204
        deleted = time.monotonic()
        while call(b, "GET", path) != 404:
            time.sleep(0.001)
        stale.append((time.monotonic() - deleted) * 1000)
    stale.sort()
    pick = lambda q: stale[min(len(stale) - 1, int(q * len(stale)))]
    print(f"staleness after DELETE, {rounds} rounds: p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {stale[-1]:.1f} ms")


main()
