#!/usr/bin/env python3
"""Idle keep-alive clients.

Usage: idle.py HOST PORT COUNT HOLD_SECONDS
Opens COUNT keep-alive connections and completes one GET / on each, prints
"held COUNT", keeps them all idle for HOLD_SECONDS, then sends a second GET /
on each and prints "answered N FAILURES" (N: second requests answered 200; then each
failure as "index:reason").
"""
import http.client
import sys
import time


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    count, hold = int(sys.argv[3]), float(sys.argv[4])
    conns = []
    for _ in range(count):
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", "/")
        conn.getresponse().read()
        conns.append(conn)
    print(f"held {len(conns)}", flush=True)
    time.sleep(hold)
    answered, failures = 0, []
    for n, conn in enumerate(conns):
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                answered += 1
            else:
                failures.append(f"{n}:status={response.status}")
        except (OSError, http.client.HTTPException) as error:
            failures.append(f"{n}:{type(error).__name__}:{error}")
    print(f"answered {answered} {' '.join(failures)}".strip(), flush=True)


if __name__ == "__main__":
    main()
