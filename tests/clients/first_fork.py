#!/usr/bin/env python3
"""Polls keyed requests until each key reaches its fork, for benchmarks.

Usage: first_fork.py HOST PORT TIMEOUT_SECONDS KEY=EXPECTED...

For every KEY, sends GET / with `baggage: detour-routing-key=KEY` on a new
connection, round-robin over the keys still waiting, until the response's
X-Served-By starts with EXPECTED. Prints "<KEY> <unix time>" for each key at
its first such response, and "<KEY> timeout" for those that never got one.
"""
import http.client
import sys
import time


def main():
    host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    waiting = dict(arg.split("=", 1) for arg in sys.argv[4:])
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for key, expected in list(waiting.items()):
            conn = http.client.HTTPConnection(host, port, timeout=2)
            try:
                conn.request("GET", "/", headers={"baggage": f"detour-routing-key={key}"})
                response = conn.getresponse()
                response.read()
                if (response.getheader("X-Served-By") or "").startswith(expected):
                    print(f"{key} {time.time():.3f}", flush=True)
                    del waiting[key]
            except OSError:
                pass
            finally:
                conn.close()
        time.sleep(0.01)
    for key in waiting:
        print(f"{key} timeout", flush=True)


if __name__ == "__main__":
    main()
